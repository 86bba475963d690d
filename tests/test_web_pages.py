"""Console pages over HTTP on every database: what each shows, and that none shows personal data."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import html
import io
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner
from console_world import SECRET, USERS, XSS_BASIS, XSS_DATASET, World, csrf_of, sign_in

from retention import logs
from retention.cli import main
from retention.ledger.query import PAGE_SIZE
from retention.store import tables as store
from retention.subjects import review
from retention.web import create_app

SEQ_CELL = re.compile(r'<tr>\s*<td class="num">(\d+)</td>')


def seqs(page: str) -> list[int]:
    return [int(s) for s in SEQ_CELL.findall(page)]


def link(page: str, rel: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(match.group(1)) if match else None


def test_ledger_pages_walk_every_filtered_entry_once(world: World, migrated: sa.Engine) -> None:
    """Following 'Older' from the first page lists each matching entry once, newest first; 'Newer' goes back."""
    c = sign_in(create_app(world.settings), "auditor")
    with migrated.connect() as conn:
        expected = list(
            conn.execute(
                sa.text("SELECT seq FROM retention_ledger WHERE transition = 'active->purged' ORDER BY seq DESC")
            ).scalars()
        )
    assert len(expected) > PAGE_SIZE  # more than one page
    url: str | None = "/ledger?transition=active-%3Epurged"
    pages: list[tuple[str, list[int]]] = []
    while url is not None:
        page = c.get(url).text
        pages.append((url, seqs(page)))
        url = link(page, "next")
    assert [s for _, p in pages for s in p] == expected
    assert all(len(p) == 50 for _, p in pages[:-1])
    second = c.get(pages[1][0]).text
    back = link(second, "prev")
    assert back is not None
    assert seqs(c.get(back).text) == pages[0][1]
    assert link(c.get("/ledger?transition=active-%3Epurged").text, "prev") is None


def test_ledger_filters_by_transition_run_and_dates(world: World, migrated: sa.Engine) -> None:
    """Transition, run and date filters select what SQL selects; a bad date is a sentence, not a crash."""
    c = sign_in(create_app(world.settings), "auditor")
    with migrated.connect() as conn:
        holds = list(
            conn.execute(
                sa.text("SELECT seq FROM retention_ledger WHERE transition = 'hold_placed' ORDER BY seq DESC")
            ).scalars()
        )
        in_run = conn.execute(
            sa.text("SELECT count(*) FROM retention_ledger WHERE run_id = :r"), {"r": world.xss_run_id}
        ).scalar_one()
    assert seqs(c.get("/ledger?transition=hold_placed").text) == holds
    assert len(seqs(c.get(f"/ledger?run={world.xss_run_id}").text)) == in_run
    assert seqs(c.get("/ledger?since=2099-01-01").text) == []
    assert len(seqs(c.get("/ledger?until=2099-01-01").text)) == 50
    bad = c.get("/ledger?since=yesterday")
    assert bad.status_code == 200
    assert "“since” must be a date (YYYY-MM-DD) or an ISO 8601 instant" in bad.text


def test_export_is_the_cli_export(world: World, tmp_path: Path) -> None:
    """The CSV and JSONL downloads of a filtered view are byte for byte what `ledger export` writes."""
    c = sign_in(create_app(world.settings), "auditor")
    runner = CliRunner()
    for fmt in ("csv", "jsonl"):
        download = c.get(f"/ledger/export?format={fmt}&dataset=customers&transition=active-%3Einactive")
        assert download.status_code == 200
        assert download.headers["content-disposition"].startswith('attachment; filename="retention-ledger-')
        cli = runner.invoke(
            main,
            [
                "ledger",
                "export",
                "--format",
                fmt,
                "--dataset",
                "customers",
                "--transition",
                "active->inactive",
                "--db",
                world.db_url,
                "--output",
                str(tmp_path / f"export.{fmt}"),
            ],
        )
        assert cli.exit_code == 0, cli.output
        assert download.content == (tmp_path / f"export.{fmt}").read_bytes()
    rows = list(csv.DictReader(io.StringIO(c.get("/ledger/export?format=csv&dataset=customers").text)))
    assert rows and {r["dataset"] for r in rows} == {"customers"}


def _seqs_of(conn: sa.Connection, message: bytes) -> list[int]:
    """Entry seqs naming ``message``, once per v1 entry and once per v2 item (HMAC under the key, or under each
    run's key for items), computed here with hmac."""
    found = list(
        conn.execute(
            sa.text("SELECT seq FROM retention_ledger WHERE subject_pseudonym = :p OR record_pseudonym = :p"),
            {"p": hmac.new(SECRET, message, hashlib.sha256).hexdigest()},
        ).scalars()
    )
    for run_id in conn.execute(sa.text("SELECT DISTINCT run_id FROM retention_ledger WHERE items > 0")).scalars():
        run_key = hmac.new(SECRET, b"run\x1f" + run_id.encode(), hashlib.sha256).digest()
        found += list(
            conn.execute(
                sa.text(
                    "SELECT entry_seq FROM retention_ledger_items WHERE record_pseudonym = :p OR subject_pseudonym = :p"
                ),
                {"p": hmac.new(run_key, message, hashlib.sha256).hexdigest()},
            ).scalars()
        )
        # Format 5 (set-based batches): the run's blocks, 91-byte items with the record pseudonym at byte 0 and
        # the subject pseudonym at byte 32.
        raw = hmac.new(run_key, message, hashlib.sha256).digest()
        blocks = conn.execute(
            sa.text(
                "SELECT b.entry_seq, b.body FROM retention_ledger_blocks b"
                " JOIN retention_ledger l ON l.seq = b.entry_seq WHERE l.run_id = :r"
            ),
            {"r": run_id},
        )
        for seq, body in blocks:
            body = bytes(body)
            found += [seq for at in range(0, len(body), 91) if raw in (body[at : at + 32], body[at + 32 : at + 64])]
    return sorted(found)


def test_lookup_lists_the_subjects_entries(world: World, migrated: sa.Engine) -> None:
    """A customer id typed in finds exactly the entries under its HMAC pseudonym, and is not echoed."""
    c = sign_in(create_app(world.settings), "auditor")
    customer = str(world.customer_with_entries)
    with migrated.connect() as conn:
        expected = _seqs_of(conn, b"subject\x1f" + customer.encode())
    assert expected
    page = c.post("/lookup", data={"csrf_token": csrf_of(c), "kind": "subject", "key": customer}).text
    assert f"{len(expected)} ledger entries for the subject you typed" in page
    assert seqs(page) == expected
    assert f'value="{customer}"' not in page
    record = c.post(
        "/lookup",
        data={"csrf_token": csrf_of(c), "kind": "record", "dataset": "customers", "key": customer},
    ).text
    with migrated.connect() as conn:
        by_record = _seqs_of(conn, f"record\x1fcustomers\x1f{customer}".encode())
    assert seqs(record) == by_record
    missing = c.post("/lookup", data={"csrf_token": csrf_of(c), "kind": "record", "key": customer})
    assert missing.status_code == 400
    assert "Type an id; for a record, choose its dataset too." in missing.text


def test_lookup_without_the_key_says_so(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no pseudonym key configured, lookups answer 503 with the setting to fix."""
    monkeypatch.delenv("RETENTION_PSEUDONYM_KEY")
    c = sign_in(create_app(world.settings), "auditor")
    response = c.post("/lookup", data={"csrf_token": csrf_of(c), "kind": "subject", "key": "3"})
    assert response.status_code == 503
    assert "The pseudonym key is not configured on this server (RETENTION_PSEUDONYM_KEY_FILE)" in response.text


def test_review_decision_writes_what_the_cli_writes(world: World, migrated: sa.Engine) -> None:
    """Approving in the console and rejecting with `review reject` leave ledger entries of the same shape."""
    c = sign_in(create_app(world.settings), "approver")
    with migrated.connect() as conn:
        other = next(b for b in review.list_batches(conn) if b["id"] != world.review_id)
        _, items = review.show_batch(conn, world.review_id)
    response = c.post(
        f"/reviews/{world.review_id}/decision",
        data={"csrf_token": csrf_of(c), "decision": "approve", "reason": "three years are over"},
    )
    assert response.status_code == 303
    page = c.get(response.headers["location"]).text
    assert "approved" in page and "three years are over" in page
    cli = CliRunner().invoke(
        main,
        ["review", "reject", str(other["id"]), "--reason", "keep", "--by", "cli.user", "--db", world.db_url],
    )
    assert cli.output == f"review batch {other['id']} rejected\n"
    with migrated.connect() as conn:
        entries = conn.execute(
            sa.select(store.ledger).where(store.ledger.c.transition.in_(["review_approved", "review_rejected"]))
        ).all()
    by_transition = {e.transition: e for e in entries}
    approved, rejected = by_transition["review_approved"], by_transition["review_rejected"]
    assert json.loads(approved.detail) == {
        "review_id": world.review_id,
        "by": USERS["approver"],
        "reason": "three years are over",
    }
    assert approved.count == len(items) and approved.dataset == "payment_tokens"
    assert json.loads(rejected.detail) == {"review_id": other["id"], "by": "cli.user", "reason": "keep"}
    shape = ("run_id", "pack_id", "pack_digest", "action", "basis", "due_at", "record_pseudonym", "subject_pseudonym")
    assert [getattr(approved, k) for k in shape] == [getattr(rejected, k) for k in shape] == [None] * len(shape)
    again = c.post(
        f"/reviews/{world.review_id}/decision",
        data={"csrf_token": csrf_of(c), "decision": "reject", "reason": "changed my mind"},
    )
    assert again.status_code == 409
    assert f"review batch {world.review_id} is approved, not pending" in again.text


def test_certificate_states_counts_range_and_checkpoint(world: World, migrated: sa.Engine) -> None:
    """The certificate lists records per dataset, transition and basis, the ledger range, head hash and signature."""
    c = sign_in(create_app(world.settings), "auditor")
    page = html.unescape(c.get(f"/runs/{world.run_id}/certificate").text)
    with migrated.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT dataset, transition, basis, sum(count) FROM retention_ledger WHERE run_id = :r "
                "AND transition LIKE '%->%' GROUP BY dataset, transition, basis"
            ),
            {"r": world.run_id},
        ).all()
        first, last = conn.execute(
            sa.text("SELECT min(seq), max(seq) FROM retention_ledger WHERE run_id = :r"), {"r": world.run_id}
        ).one()
        head = conn.execute(sa.text("SELECT hash FROM retention_ledger WHERE seq = :s"), {"s": last}).scalar_one()
    assert rows
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    for dataset, transition, basis, count in rows:
        assert f"{dataset} {transition}" in text
        assert f"{basis} {int(count)}" in text
    assert f"sequence {first} to {last}" in text
    assert head in text
    checkpoint = json.loads(next((Path(world.settings.checkpoints or ".")).glob("*.json")).read_text())
    assert checkpoint["signature"] in text
    assert "valid for the configured public key" in text
    assert "matches the signed hash" in text


def _horizon(recorded: dt.datetime) -> str:
    """The sentence for a purge recorded at ``recorded`` (UTC), counted by hand in Europe/Paris."""
    day = (recorded if recorded.tzinfo else recorded.replace(tzinfo=dt.UTC)).astimezone(ZoneInfo("Europe/Paris")).date()
    return f"removed from the live database on {day}; gone from backups by {day + dt.timedelta(days=35)} ({day} + P35D)"


def test_certificate_states_the_backup_horizon(world: World, migrated: sa.Engine) -> None:
    """Each purge of the run says when it left the live database and when it is gone from the backups."""
    c = sign_in(create_app(world.settings), "auditor")
    text = re.sub(r"\s+", " ", html.unescape(c.get(f"/runs/{world.run_id}/certificate").text))
    with migrated.connect() as conn:
        entries = store.ledger
        rows = conn.execute(
            sa.select(entries.c.dataset, entries.c.transition, entries.c.recorded_at).where(
                entries.c.run_id == world.run_id, entries.c.transition.like("%->purged")
            )
        ).all()
    latest: dict[tuple[str, str], dt.datetime] = {}
    for dataset, transition, recorded in rows:
        latest[(dataset, transition)] = max(recorded, latest.get((dataset, transition), recorded))
    assert rows
    assert "backups of this database are kept for P35D" in text
    for (dataset, transition), recorded in latest.items():
        assert f"{dataset} ({transition}, " in text
        assert _horizon(recorded) in text
    other = re.sub(r"\s+", " ", html.unescape(c.get(f"/runs/{world.xss_run_id}/certificate").text))
    assert "The rule pack declares no backup retention" in other
    assert "gone from backups" not in other


def test_lookup_states_the_backup_horizon(world: World, migrated: sa.Engine) -> None:
    """The person page lists, for each purge among the person's entries, when it is gone from backups."""
    c = sign_in(create_app(world.settings), "auditor")
    customer = str(world.customer_with_entries)
    page = html.unescape(c.post("/lookup", data={"csrf_token": csrf_of(c), "kind": "subject", "key": customer}).text)
    text = re.sub(r"\s+", " ", page)
    shown = seqs(page)
    with migrated.connect() as conn:
        purges = conn.execute(
            sa.select(store.ledger.c.seq, store.ledger.c.recorded_at, store.ledger.c.run_id).where(
                store.ledger.c.seq.in_(shown), store.ledger.c.transition.like("%->purged")
            )
        ).all()
    mine = [(seq, recorded) for seq, recorded, run_id in purges if run_id == world.run_id]
    assert mine, "the test customer needs a purge among its entries"
    for seq, recorded in mine:
        assert f"Entry {seq}, record " in text
        assert _horizon(recorded) in text
    # The hostile pack declares no backups: its purges promise nothing about them.
    for seq in {seq for seq, _, run_id in purges if run_id != world.run_id}:
        assert f"Entry {seq}," not in text


def test_certificate_as_pdf(world: World) -> None:
    """With WeasyPrint installed the certificate downloads as a PDF document."""
    pytest.importorskip("weasyprint", exc_type=ImportError)
    c = sign_in(create_app(world.settings), "auditor")
    response = c.get(f"/runs/{world.run_id}/certificate.pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert len(response.content) > 5000


def test_overview_shows_runs_requests_schedule_and_checkpoint(world: World) -> None:
    """The overview names the last run, the overdue request, the next scheduled run and the checkpoint."""
    c = sign_in(create_app(world.settings), "auditor")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c.get("/").text))
    assert "1 overdue" in text
    assert "request 1: deadline 2026-10-01" in text
    assert re.search(r"Next scheduled run: \d{4}-\d\d-\d\d 0[01]:30 UTC", text)
    assert re.search(r"Latest signed checkpoint: entry \d+, signed", text)
    assert world.run_id[:12] in text
    assert "2 batches await a decision" in text


def test_forecast_page_draws_the_report_chart(world: World) -> None:
    """The forecast page embeds the report's weekly chart with one legend row per series."""
    c = sign_in(create_app(world.settings), "auditor")
    # The pack's zone: as of the start of its today, read before and after the request: near midnight in Paris
    # (23:00 UTC in winter) the page may be drawn on the other side of it.
    before = dt.datetime.now(ZoneInfo("Europe/Paris")).date()
    page = c.get("/forecast").text
    after = dt.datetime.now(ZoneInfo("Europe/Paris")).date()
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page
    assert 'aria-label="Upcoming transitions per week"' in page
    text = re.sub(r"\s+", " ", page)
    told = "Pack marketplace 2026.1, over P1M from the start of {} (Europe/Paris)."
    assert any(told.format(day) in text for day in (before, after)), text[:2000]


def test_verify_page_runs_verification_and_logs_it(world: World, migrated: sa.Engine) -> None:
    """Verifying from the console checks the chain against the signed checkpoint and records the verdict."""
    c = sign_in(create_app(world.settings), "auditor")
    page = re.sub(r"\s+", " ", c.post("/verify", data={"csrf_token": csrf_of(c)}).text)
    with migrated.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM retention_ledger")).scalar_one()
    assert "<h2>Verified</h2>" in page
    assert f"{count} entries; head entry {count}" in page
    assert "the signed checkpoint of entry" in page
    overview = c.get("/").text
    assert f"{USERS['auditor']}: <b>ok: {count} entries, checkpoint of entry" in overview


@pytest.mark.only_on("sqlite")
def test_verify_page_names_the_first_broken_entry(world: World, migrated: sa.Engine) -> None:
    """A tampered entry fails verification on the page, naming its sequence number."""
    with migrated.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER retention_ledger_no_update"))
        conn.execute(sa.text("UPDATE retention_ledger SET basis = 'rewritten' WHERE seq = 5"))
    c = sign_in(create_app(world.settings), "auditor")
    page = re.sub(r"\s+", " ", c.post("/verify", data={"csrf_token": csrf_of(c)}).text)
    assert "<h2>Verification failed</h2>" in page
    assert "First broken entry: <b>5</b>. entry 5: hash does not match its content" in page


def test_no_personal_data_on_any_page_log_or_access_log(world: World, migrated: sa.Engine) -> None:
    """After a scripted session over every page, no PII value, looked-up id or secret is in HTML, logs or access log."""
    out = io.StringIO()
    logs.configure(json=True, level="debug", stream=out)
    try:
        app = create_app(world.settings)
        c = sign_in(app, "admin")
        token = csrf_of(c)
        canary = "canary-customer-90210"
        pages = [c.get(p).text for p in ("/", "/runs", "/erasure", "/holds", "/reviews", "/forecast", "/verify")]
        pages += [c.get(p).text for p in ("/users", "/access-log", "/lookup")]
        url: str | None = "/ledger"
        while url is not None:
            page = c.get(url).text
            pages.append(page)
            url = link(page, "next")
        pages += [c.get(f"/ledger/export?format={fmt}").text for fmt in ("csv", "jsonl")]
        for run_id in (world.run_id, world.xss_run_id):
            pages += [c.get(f"/runs/{run_id}").text, c.get(f"/runs/{run_id}/certificate").text]
        with migrated.connect() as conn:
            batch_ids = [b["id"] for b in review.list_batches(conn, include_done=True)]
        pages += [c.get(f"/reviews/{b}").text for b in batch_ids]
        with migrated.connect() as conn:
            email = conn.execute(sa.text("SELECT email FROM customers ORDER BY id")).scalars().first()
        for key in (canary, str(world.customer_with_entries)):
            pages.append(c.post("/lookup", data={"csrf_token": token, "kind": "subject", "key": key}).text)
            pages.append(c.post("/person", data={"csrf_token": token, "kind": "subject", "key": key}).text)
            pages.append(
                c.post("/lookup", data={"csrf_token": token, "kind": "record", "dataset": "customers", "key": key}).text
            )
        person = c.post("/person", data={"csrf_token": token, "kind": "email", "key": email}).text
        pages.append(person)
        ticket = re.search(r'name="ticket" value="([^"]+)"', person)
        if ticket is not None:  # the person has ledger records: their proof too
            pages.append(c.post("/person/proof", data={"csrf_token": token, "ticket": ticket.group(1)}).text)
        pages.append(
            c.post(
                f"/reviews/{world.review_id}/decision",
                data={"csrf_token": token, "decision": "approve", "reason": "period over"},
            ).text
        )
        pages.append(c.post("/verify", data={"csrf_token": token}).text)
        pages.append(c.get("/access-log").text)
    finally:
        structlog.reset_defaults()
    log_text = out.getvalue()
    assert '"event": "console_request"' in log_text
    with migrated.connect() as conn:
        access = "\n".join(repr(tuple(r)) for r in conn.execute(sa.select(store.console_access_log)))
    assert "lookup_subject" in access and "lookup_record" in access and "person_email" in access
    haystack = "\n".join([*pages, log_text, access])
    tokens = set(re.findall(r"[\w@.+*/?=-]+", haystack))
    leaked = [v for v in world.pii if (v in haystack if len(v) >= 6 else v in tokens)]
    assert leaked == []
    secrets = [SECRET.decode(), "console-test-cookie-secret", *world.signing_key.read_text().splitlines()[1:-1]]
    assert [s for s in secrets if s in haystack] == []
    assert canary not in haystack
    assert XSS_DATASET not in haystack.replace(html.escape(XSS_DATASET), "")  # escaped wherever it appears
    assert XSS_BASIS not in "\n".join(pages)


def test_erasure_page_shows_a_request_s_outcome(world: World, migrated: sa.Engine) -> None:
    """Issue 23: a request closed as 'no records found' showed as plain 'processed', like one that erased."""
    er = store.erasure_requests
    with migrated.begin() as conn:
        conn.execute(er.update().where(er.c.id == 1).values(status="processed", outcome="no records found"))
    c = sign_in(create_app(world.settings), "auditor")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c.get("/erasure").text))
    assert "processed: no records found" in text
