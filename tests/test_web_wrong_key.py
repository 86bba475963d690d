"""The console under another environment's pseudonym key, on every database: a 503 page naming the setting.

Any non-empty key is a valid HMAC key, so a console started with a wrong
key file turned every typed id into a pseudonym the ledger never held: the
lookup and person pages said "no records", the registers showed pseudonyms
nothing matches. Each page that needs the key now refuses, once logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from console_world import SECRET, World, csrf_of, sign_in

from retention.ledger import pseudonyms
from retention.subjects import events as subjects
from retention.web import create_app
from retention.web.key_check import KeyCheck, KeyRefused

WRONG = "another-environments-key"
TICKET = re.compile(r'name="ticket" value="([^"]+)"')
REFUSAL = "is not the one this database&#39;s ledger was begun with"


def _key_file(folder: Path, text: str) -> Path:
    path = folder / "pseudonym.key"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_every_page_that_needs_the_key_refuses_another_key(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Lookup, person, proof, registers, review and audit: 503 naming the setting, never the key or a pseudonym.

    They used to answer 200: "no entry under that pseudonym" for a person
    the ledger holds. The refusal is logged once, not per request, and the
    right key is accepted again at once.
    """
    customer = str(world.customer_with_entries)
    app = create_app(world.settings)
    c = sign_in(app, "auditor")
    token = csrf_of(c)
    found = c.post("/person", data={"csrf_token": token, "kind": "subject", "key": customer})
    assert found.status_code == 200, found.text
    ticket = TICKET.search(found.text)
    assert ticket is not None
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "")
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(_key_file(tmp_path, WRONG)))
    requests = [
        ("GET", "/lookup", None),
        ("POST", "/lookup", {"kind": "subject", "key": customer}),
        ("POST", "/lookup", {"kind": "record", "dataset": "customers", "key": customer}),
        ("GET", "/person", None),
        ("POST", "/person", {"kind": "subject", "key": customer}),
        ("POST", "/person/proof", {"ticket": ticket.group(1)}),
        ("GET", "/erasure", None),
        ("GET", "/holds", None),
        ("GET", f"/reviews/{world.review_id}", None),
        ("POST", "/audit", {}),
    ]
    hidden = [WRONG, SECRET.decode()] + [
        pseudonyms.subject_pseudonym(k, customer)[:12] for k in (SECRET, WRONG.encode())
    ]
    with structlog.testing.capture_logs() as logs:
        for method, path, form in requests:
            page = c.get(path) if method == "GET" else c.post(path, data={"csrf_token": token, **(form or {})})
            assert page.status_code == 503, (path, page.status_code, page.text[:300])
            assert "Wrong pseudonym key" in page.text, path
            assert f"the pseudonym key from RETENTION_PSEUDONYM_KEY_FILE {REFUSAL}" in page.text, path
            assert not [h for h in hidden if h in page.text], path
    refused = [e for e in logs if e["event"] == "console_pseudonym_key_refused"]
    assert len(refused) == 1, refused
    assert refused[0]["setting"] == "RETENTION_PSEUDONYM_KEY_FILE"
    assert not [h for h in hidden if h in str(refused[0])]
    # The verify page names the failing MAC itself, as `ledger verify` does: it is not refused.
    assert c.get("/verify").status_code == 200
    _key_file(tmp_path, SECRET.decode())  # the file put right: the next request is answered
    again = c.post("/lookup", data={"csrf_token": token, "kind": "subject", "key": customer})
    assert again.status_code == 200, again.text
    assert "ledger entries for the subject you typed" in again.text
    assert "The ledger holds no entry under that pseudonym" not in again.text


def test_the_verdict_is_kept_per_key_and_decided_only_by_an_authenticated_entry(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ledger entry: any key passes and nothing is kept; once one exists, one read per key, then none.

    The kept verdict is keyed by the key read, not by the file's mtime: a
    file replaced by the right key (same mtime) is answered at once.
    """
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "retention_ledger" in statement:
            reads.append(statement)

    sa.event.listen(migrated, "before_cursor_execute", count)
    key_file = _key_file(tmp_path, WRONG)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "")
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(key_file))
    check = KeyCheck()
    assert check.secret(migrated) == WRONG.encode()  # an empty ledger: nothing to refuse it by
    assert check.secret(migrated) == WRONG.encode()
    assert len(reads) == 2  # and asked again each time: the engine's next write may begin the ledger
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", reason="r", placed_by="t", secret=SECRET, subject_key="1")
    reads.clear()
    for _ in range(3):
        with pytest.raises(KeyRefused, match="RETENTION_PSEUDONYM_KEY_FILE"):
            check.secret(migrated)
    assert len(reads) == 1
    stamp = key_file.stat()
    _key_file(tmp_path, SECRET.decode())
    os.utime(key_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # copied with its timestamp
    assert check.secret(migrated) == SECRET
    assert check.secret(migrated) == SECRET
    assert len(reads) == 2


def test_requests_arriving_together_make_one_ledger_read_and_one_log_line(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Eight requests at once under a wrong key: one ledger read, one log line; again so when the verdict expires.

    The lock used to guard only the kept verdict, so concurrent first
    requests (and those just after each expiry) each read the ledger, which
    is up to half a second on an upgraded one, and each logged (review
    keycheck3, SHOULD 1).
    """
    import threading
    import time

    from retention.ledger import mac as ledger_mac
    from retention.web import key_check

    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", reason="r", placed_by="t", secret=SECRET, subject_key="1")
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "")
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(_key_file(tmp_path, WRONG)))
    reads: list[int] = []
    real = ledger_mac.key_verdict

    def slow(engine: sa.Engine, secret: bytes) -> ledger_mac.KeyVerdict:
        reads.append(1)
        time.sleep(0.2)  # the walk of an upgraded ledger to its first MAC'd entry takes this long at 1M entries
        return real(engine, secret)

    monkeypatch.setattr(ledger_mac, "key_verdict", slow)
    check = KeyCheck()
    refused: list[str] = []

    def request() -> None:
        try:
            check.secret(migrated)
        except KeyRefused as exc:
            refused.append(exc.reason)

    def together() -> None:
        threads = [threading.Thread(target=request) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with structlog.testing.capture_logs() as logs:
        together()
        assert (len(reads), len(refused)) == (1, 8)
        monkeypatch.setattr(key_check, "RECHECK_SECONDS", 0.0)  # every kept verdict has expired
        together()
    assert (len(reads), len(refused)) == (1 + 8, 16)  # each expired request reads once, one at a time
    assert len([e for e in logs if e["event"] == "console_pseudonym_key_refused"]) == 1
    reads.clear()
    monkeypatch.setattr(key_check, "RECHECK_SECONDS", 300.0)
    kept = check._kept
    assert kept is not None
    check._kept = (kept[0], kept[1], kept[2] - 301.0)  # the verdict of five minutes ago
    together()
    assert len(reads) == 1  # the first request after the expiry reads; the seven waiting take its verdict


@pytest.mark.parametrize("broken", ["missing", "too open", "empty"], ids=["missing", "mode-0644", "empty"])
def test_a_key_setting_that_is_set_but_broken_is_refused_not_absent(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broken: str
) -> None:
    """A set key file that is missing, mode 0644 or empty: a 503 naming the setting, one log line; as the CLI exits 2.

    It used to read as "not configured": the lookup page said so and the
    registers dropped their pseudonyms, with nothing in the log (review
    keycheck3, SHOULD 2). The key is absent only when neither setting is set.
    """
    from click.testing import CliRunner

    from retention.cli import main

    key_file = tmp_path / "pseudonym.key"
    if broken != "missing":
        key_file.write_text("" if broken == "empty" else SECRET.decode(), encoding="utf-8")
        key_file.chmod(0o644 if broken == "too open" else 0o600)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "")
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(key_file))
    cli = CliRunner().invoke(main, ["ledger", "verify", "--db", world.db_url], prog_name="retention")
    assert cli.exit_code == 2, cli.output  # the CLI refuses the same setting
    app = create_app(world.settings)
    c = sign_in(app, "auditor")
    token = csrf_of(c)
    customer = str(world.customer_with_entries)
    with structlog.testing.capture_logs() as logs:
        for method, path, form in [
            ("GET", "/lookup", None),
            ("POST", "/lookup", {"kind": "subject", "key": customer}),
            ("GET", "/erasure", None),
            ("GET", "/holds", None),
            ("POST", "/verify", {}),
        ]:
            page = c.get(path) if method == "GET" else c.post(path, data={"csrf_token": token, **(form or {})})
            assert page.status_code == 503, (path, page.status_code, page.text[:300])
            assert "Pseudonym key unreadable" in page.text, path
            assert "the pseudonym key from RETENTION_PSEUDONYM_KEY_FILE cannot be read" in page.text, path
            assert "not configured" not in page.text, path
            assert SECRET.decode() not in page.text and str(tmp_path) not in page.text, path
    unreadable = [e for e in logs if e["event"] == "console_pseudonym_key_unreadable"]
    assert len(unreadable) == 1, unreadable
    assert unreadable[0]["setting"] == "RETENTION_PSEUDONYM_KEY_FILE"
    assert SECRET.decode() not in str(unreadable[0])
    _key_file(tmp_path, SECRET.decode())  # put right: answered at once
    assert c.get("/lookup").status_code == 200


def test_no_key_setting_at_all_is_still_not_configured(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither setting set: the lookup page says the key is not configured (its own 503), and nothing is logged."""
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "")
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", "")
    app = create_app(world.settings)
    c = sign_in(app, "auditor")
    token = csrf_of(c)
    with structlog.testing.capture_logs() as logs:
        page = c.post("/lookup", data={"csrf_token": token, "kind": "subject", "key": "1"})
    assert page.status_code == 503, page.text[:300]
    assert "The pseudonym key is not configured on this server" in page.text
    assert "Pseudonym key unreadable" not in page.text
    assert not [e for e in logs if e["event"].startswith("console_pseudonym_key")]
