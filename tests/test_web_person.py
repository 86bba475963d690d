"""The console's person and audit pages on every database: what the CLI says of one person, their proof, the claims.

The page must agree with ``ledger lookup``, ``explain`` and ``ledger
verify-proof`` (the library functions they call are what the page calls),
never echo the id or address typed, and reject its own proof once the live
data contradicts it.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from console_world import SECRET, World, client, csrf_of, sign_in

from retention.cli import main
from retention.demo import shop_metadata
from retention.ledger import items as ledger_items
from retention.web import create_app
from retention.web.security import PersonTicket

TICKET = re.compile(r'name="ticket" value="([^"]+)"')


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_person_page_agrees_with_the_cli(world: World, migrated: sa.Engine, tmp_path: Path) -> None:
    """Ledger records per dataset as `ledger lookup --subject`; each live record's state and next step as `explain`."""
    customer = str(world.customer_with_entries)
    c = sign_in(create_app(world.settings), "auditor")
    response = c.post("/person", data={"csrf_token": csrf_of(c), "kind": "subject", "key": customer})
    assert response.status_code == 200, response.text
    page = response.text
    looked_up = json.loads(_cli("ledger", "lookup", "--db", world.db_url, "--subject", customer, "--format", "json"))
    assert f"{len(looked_up)} ledger record(s) about them" in page
    per_dataset: dict[str, int] = {}
    for row in looked_up:
        if row["dataset"]:
            per_dataset[row["dataset"]] = per_dataset.get(row["dataset"], 0) + 1
    assert per_dataset  # the chosen customer has moved records
    cells = re.findall(r'<td><a href="#ds-\d+">([^<]+)</a></td>.*?<td class="num">(\d+)</td>', page, re.S)
    rows = {html.unescape(name): n for name, n in cells}
    assert set(rows) >= set(per_dataset)
    assert {name: int(n) for name, n in rows.items() if int(n)} == per_dataset
    # The customer row itself, as `explain` sees it, where the customer is still a live record.
    explained = json.loads(
        _cli(
            "explain",
            "--rules",
            str(world.settings.rules),
            "--db",
            world.db_url,
            "--dataset",
            "customers",
            "--key",
            customer,
            "--format",
            "json",
        )
    )
    state = explained["state"] if explained["exists"] else "gone"
    section = page.split(">customers</h2>", 1)[1].split("</section>", 1)[0]
    assert f"<td>{state}" in section
    assert f'value="{customer}"' not in page
    assert "proof ok" in page


def test_person_proof_downloads_what_verify_proof_accepts(world: World, tmp_path: Path) -> None:
    """One click: the JSON file passes `ledger verify-proof --db --rules`; the ticket is the viewer's own."""
    customer = str(world.customer_with_entries)
    app = create_app(world.settings)
    c = sign_in(app, "auditor")
    page = c.post("/person", data={"csrf_token": csrf_of(c), "kind": "subject", "key": customer}).text
    ticket = TICKET.search(page)
    assert ticket is not None
    assert world.settings.secret is not None  # the ticket opens only under the console's own secret
    assert PersonTicket(world.settings.secret).read("ada.auditor", ticket.group(1)) == ("subject", customer)
    assert PersonTicket(b"another console secret").read("ada.auditor", ticket.group(1)) is None
    download = c.post("/person/proof", data={"csrf_token": csrf_of(c), "ticket": ticket.group(1)})
    assert download.status_code == 200, download.text
    assert download.headers["content-disposition"].startswith('attachment; filename="proof-to-entry-')
    proof_file = tmp_path / "proof.json"
    proof_file.write_bytes(download.content)
    out = _cli(
        "ledger",
        "verify-proof",
        str(proof_file),
        "--public-key",
        str(world.settings.public_key),
        "--db",
        world.db_url,
        "--rules",
        str(world.settings.rules),
    )
    assert out.startswith("proof ok")
    # Another account cannot use it, nor can anyone with a forged or stale one.
    other = sign_in(app, "approver")
    refused = other.post("/person/proof", data={"csrf_token": csrf_of(other), "ticket": ticket.group(1)})
    assert refused.status_code == 400
    forged = PersonTicket(b"another console secret").issue("ada.auditor", "subject", customer)
    assert c.post("/person/proof", data={"csrf_token": csrf_of(c), "ticket": forged}).status_code == 400
    stale = PersonTicket(world.settings.secret or b"", max_age_seconds=-1)
    assert stale.read("ada.auditor", ticket.group(1)) is None


def _put_back_a_purged_row(world: World, migrated: sa.Engine) -> int:
    """An analytics row of the world's customer that the run deleted, inserted again (a restore, a superuser).

    Its id is found as the gap in the table whose pseudonym under the run's
    key is the one the ledger names; the id is returned.
    """
    customer = world.customer_with_entries
    with migrated.connect() as conn:
        found = ledger_items.lookup(conn, SECRET, subject_key=str(customer))
        claims = [e for e in found if e["dataset"] == "analytics_events"]
        live = set(conn.execute(sa.text("SELECT id FROM analytics_events")).scalars())
    assert claims, "the chosen customer has no purged analytics row"
    key = ledger_items.run_key(SECRET, claims[0]["run_id"])
    victim = next(
        i
        for i in range(1, max(live) + 200)
        if i not in live
        and ledger_items.record_pseudonym(key, "analytics_events", str(i)) == claims[0]["record_pseudonym"]
    )
    events = shop_metadata().tables["analytics_events"]
    with migrated.begin() as conn:
        conn.execute(events.insert().values(id=victim, customer_id=customer, collected_at=dt.datetime(2020, 1, 1)))
    return victim


def test_person_proof_is_rejected_when_the_live_table_contradicts_it(world: World, migrated: sa.Engine) -> None:
    """A deleted row of the person put back: the page's verdict on their proof names the claim."""
    customer = str(world.customer_with_entries)
    c = sign_in(create_app(world.settings), "auditor")
    before = c.post("/person", data={"csrf_token": csrf_of(c), "kind": "subject", "key": customer}).text
    assert "proof ok" in before
    _put_back_a_purged_row(world, migrated)
    after = c.post("/person", data={"csrf_token": csrf_of(c), "kind": "subject", "key": customer}).text
    assert "proof rejected:</b> the live data contradicts it: dataset analytics_events" in after
    assert "but the live table still holds that record" in after


def test_audit_page_says_what_ledger_audit_says(world: World, migrated: sa.Engine) -> None:
    """Clean after the run, in the CLI's words; a purged row put back is named as `ledger audit` names it."""
    rules = str(world.settings.rules)
    c = sign_in(create_app(world.settings), "auditor")
    clean = c.post("/audit", data={"csrf_token": csrf_of(c)}).text
    cli_clean = _cli("ledger", "audit", "--rules", rules, "--db", world.db_url).strip().splitlines()[-1]
    assert cli_clean.startswith("ledger audit ok: ")
    assert cli_clean in html.unescape(clean)
    _put_back_a_purged_row(world, migrated)
    broken = html.unescape(c.post("/audit", data={"csrf_token": csrf_of(c)}).text)
    result = CliRunner().invoke(main, ["ledger", "audit", "--rules", rules, "--db", world.db_url])
    assert result.exit_code == 6
    named = [line for line in result.output.splitlines() if line.startswith("claim does not hold: ")]
    assert len(named) == 1 and "analytics_events" in named[0]
    assert named[0] in broken
    assert result.output.strip().splitlines()[-1] in broken  # "ledger audit failed: 1 of N claims checked ..."
    sampled = html.unescape(c.post("/audit", data={"csrf_token": csrf_of(c), "sample": "5"}).text)
    assert re.search(r"claims checked \(a sample of [1-5] of \d+\)", sampled)  # 5 drawn; other packs' not checked
    assert c.post("/audit", data={"csrf_token": csrf_of(c), "sample": "five"}).status_code == 400


def test_person_by_e_mail_is_not_echoed(world: World, migrated: sa.Engine) -> None:
    """An address typed in appears nowhere on the page (nor its local part)."""
    with migrated.connect() as conn:
        email = conn.execute(sa.text("SELECT email FROM customers ORDER BY id")).scalars().first()
    assert email
    c = sign_in(create_app(world.settings), "auditor")
    page = c.post("/person", data={"csrf_token": csrf_of(c), "kind": "email", "key": email}).text
    assert "The person you typed" in page
    assert email not in page and email.split("@")[0] not in page


def test_person_page_needs_a_csrf_token_and_a_sign_in(world: World) -> None:
    """A POST without the form's token is refused; without a session the page sends to sign-in."""
    app = create_app(world.settings)
    c = sign_in(app, "auditor")
    assert c.post("/person", data={"kind": "subject", "key": "1"}).status_code == 403
    assert client(app).get("/person").status_code == 303
