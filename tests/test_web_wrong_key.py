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
