"""Several identities per dataset (issue 14): a person known by id and by e-mail address.

A shop whose orders may be a customer's (``customer_id``) or a guest's (only
an e-mail address), and whose newsletter knows subscribers by address alone,
archived and then deleted. Through the CLI, on every database:

* ``erasure add --email`` (typed with blanks and capitals) reaches the
  customer row, the customer's order and the guest order carrying the
  address, and the subscriber whose source row is gone (known only by the
  pseudonym its state row kept); ``--subject`` reaches the id's records;
* ``hold add --email`` holds a guest's records against a request for them;
* plan's counts are run's; the sets are worked out by hand below;
* ``ledger lookup --email`` finds the person's items and the request's
  entry, ``--subject`` those of the id;
* no engine table holds an address in clear but the open request and the
  hold in place, and settled requests lose theirs after ``engine_retention``
  (keeping its pseudonym).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.ledger import pseudonyms
from retention.policy import load_file
from retention.store import tables as store

KEY = "identities-test-key"
ENV = {"RETENTION_PSEUDONYM_KEY": KEY}
PACK = """\
pack: shop
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    email: email
    basis: Account
    keep:
      - clock: {column: last_seen, type: timestamp}
        period: P5Y
    on_erasure: purged
    lifecycle:
      - to: purged
        action: anonymise
        mask: {email: null}
  orders:
    table: orders
    key: id
    subject_key: customer_id   # NULL for a guest order
    email: email
    basis: Orders
    keep:
      - clock: {column: created, type: timestamp}
        period: P10Y
    on_erasure: purged
    lifecycle:
      - to: purged
        action: delete
  subscribers:
    table: subscribers
    key: id
    email: email               # no account: the address is the only identity
    basis: Newsletter
    keep:
      - clock: {column: subscribed_at, type: timestamp}
        period: P1Y
    on_erasure: purged
    lifecycle:
      - to: archived
        action: archive
        columns: [id]
        then: delete
      - to: purged
        after: P5Y
"""
# Run 1 (2026-01-01): only subscriber 20 (2020 + P1Y) is due: archived, its row deleted.
# Then: hold on carol@example.com; requests by e-mail " Alice@EXAMPLE.com" and carol, by subject 2.
# Run 2 (2026-02-01), by hand:
#   customers 1 ("Alice@Example.com " is alice@example.com) and 2 (subject 2) -> purged;
#   orders 10 (customer 1's, alice's address), 11 (a guest's, " ALICE@example.com") and 13
#   (customer 2's) -> purged; 12 (carol's guest order) is held;
#   subscribers: 20 (archived, row gone: its state row's e-mail pseudonym) -> purged;
#   21 (carol) is held; 22 (dave) has no request.
EXPECTED = {
    "customers": {"active->purged": {"1", "2"}},
    "orders": {"active->purged": {"10", "11", "13"}},
    "subscribers": {"archived->purged": {"20"}},
}


def _schema(engine: sa.Engine) -> None:
    metadata = sa.MetaData()
    customers = sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(320)),
        sa.Column("last_seen", sa.DateTime),
    )
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("email", sa.String(320)),
        sa.Column("created", sa.DateTime),
    )
    subscribers = sa.Table(
        "subscribers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(320)),
        sa.Column("subscribed_at", sa.DateTime),
    )
    metadata.create_all(engine)
    recent = dt.datetime(2025, 6, 1)
    with engine.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {"id": 1, "email": "Alice@Example.com ", "last_seen": recent},
                {"id": 2, "email": "bob@x.test", "last_seen": recent},
            ],
        )
        conn.execute(
            orders.insert(),
            [
                {"id": 10, "customer_id": 1, "email": "alice@example.com", "created": recent},
                {"id": 11, "customer_id": None, "email": " ALICE@example.com", "created": recent},
                {"id": 12, "customer_id": None, "email": "carol@example.com", "created": recent},
                {"id": 13, "customer_id": 2, "email": "bob@x.test", "created": recent},
            ],
        )
        conn.execute(
            subscribers.insert(),
            [
                {"id": 20, "email": "alice@example.com", "subscribed_at": dt.datetime(2020, 1, 1)},
                {"id": 21, "email": "Carol@Example.com", "subscribed_at": recent},
                {"id": 22, "email": "dave@example.com", "subscribed_at": recent},
            ],
        )


def _states(engine: sa.Engine) -> dict[tuple[str, str], str]:
    rs = store.record_states
    with engine.connect() as conn:
        return {(r.dataset, r.record_key): r.state for r in conn.execute(sa.select(rs))}


def _live(engine: sa.Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {
            (name, str(key))
            for name in ("customers", "orders", "subscribers")
            for key in conn.execute(sa.select(sa.column("id")).select_from(sa.table(name))).scalars()
        }


def _clear_addresses(engine: sa.Engine) -> dict[str, list[tuple[str, str]]]:
    """Every engine-table value containing an '@', per table (the archive's payloads hold ids only)."""
    found: dict[str, list[tuple[str, str]]] = {}
    with engine.connect() as conn:
        for table in store.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                for column, value in row.items():
                    if isinstance(value, str) and "@" in value:
                        found.setdefault(table.name, []).append((column, value))
    return found


def test_erasure_and_holds_by_email_reach_guest_rows_and_the_ledger_finds_them(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    _schema(migrated)
    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK)
    runner = CliRunner()
    base = ["--rules", str(rules), "--db", db_url]

    def cli(*args: str) -> str:
        result = runner.invoke(main, list(args), env=ENV)
        assert result.exit_code == 0, result.output
        return result.output

    cli("run", *base, "--no-progress", "--as-of", "2026-01-01")
    assert _states(migrated) == {("subscribers", "20"): "archived"}
    assert ("subscribers", "20") not in _live(migrated)

    cli("hold", "add", "--db", db_url, "--email", " Carol@example.com", "--reason", "case 7")
    cli("erasure", "add", *base, "--email", " Alice@EXAMPLE.com", "--received", "2026-01-02")
    cli("erasure", "add", *base, "--email", "carol@example.com", "--received", "2026-01-02")
    cli("erasure", "add", *base, "--subject", "2", "--received", "2026-01-02")

    loaded = load_file(rules)
    as_of = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    planned = {
        d: {t: n for t, n in per.items() if n} for d, per in execute.plan(migrated, loaded, as_of).transitions.items()
    }
    before, live_before = _states(migrated), _live(migrated)
    cli("run", *base, "--no-progress", "--as-of", "2026-02-01")
    after, live_after = _states(migrated), _live(migrated)
    moved: dict[str, dict[str, set[str]]] = {}
    for dataset, key in live_before | set(before):
        start = before.get((dataset, key), "active")
        end = after.get((dataset, key), "active" if (dataset, key) in live_after else "purged")
        if start != end:
            moved.setdefault(dataset, {}).setdefault(f"{start}->{end}", set()).add(key)
    assert moved == EXPECTED
    assert planned == {d: {t: len(keys) for t, keys in per.items()} for d, per in EXPECTED.items()}

    er = store.erasure_requests
    with migrated.connect() as conn:
        requests = {r.id: r for r in conn.execute(sa.select(er).order_by(er.c.id))}
    alice, carol, bob = requests.values()
    assert (alice.email, alice.subject_key, alice.status, alice.outcome) == (
        "alice@example.com",
        None,
        "processed",
        "erased",
    )
    assert (carol.email, carol.status) == ("carol@example.com", "open")  # its records are held
    assert (bob.subject_key, bob.email, bob.status) == ("2", None, "processed")
    assert alice.email_pseudonym == pseudonyms.email_pseudonym(KEY.encode(), "alice@example.com")

    found = json.loads(cli("ledger", "lookup", "--db", db_url, "--email", "ALICE@example.com ", "--format", "json"))
    items = sorted((e["dataset"], e["transition"]) for e in found if e["item"] is not None)
    assert items == [
        ("customers", "active->purged"),
        ("orders", "active->purged"),
        ("orders", "active->purged"),
        ("subscribers", "active->archived"),
        ("subscribers", "archived->purged"),
    ]
    assert [e["transition"] for e in found if e["item"] is None] == ["erasure_processed"]
    by_id = json.loads(cli("ledger", "lookup", "--db", db_url, "--subject", "1", "--format", "json"))
    assert sorted(e["dataset"] for e in by_id) == ["customers", "orders"]  # customer 1 and order 10
    assert json.loads(cli("ledger", "lookup", "--db", db_url, "--email", "dave@example.com", "--format", "json")) == []

    # Addresses in clear: only in the open request and the hold in place.
    clear = _clear_addresses(migrated)
    assert set(clear) == {store.erasure_requests.name, store.holds.name}, clear
    assert clear[store.holds.name] == [("email", "carol@example.com")]
    # After engine_retention (P3Y from settling), the settled request keeps only the pseudonym.
    cli("run", *base, "--no-progress", "--as-of", "2030-01-01")
    with migrated.connect() as conn:
        settled = conn.execute(sa.select(er).where(er.c.id == alice.id)).one()
        still_open = conn.execute(sa.select(er).where(er.c.id == carol.id)).one()
    assert (settled.email, settled.email_pseudonym, settled.outcome) == (None, alice.email_pseudonym, "erased")
    assert still_open.email == "carol@example.com"
    assert _clear_addresses(migrated)[store.erasure_requests.name] == [("email", "carol@example.com")]
