"""Time travel over a generated shop: every policy of SPEC section 2, on every database.

The expected states are computed here from the generated rows with plain
``datetime``, ``calendar`` and ``zoneinfo`` arithmetic written for this
test, never by calling the engine's clock or evaluator.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import structlog
from conftest import tiers

from retention import logs
from retention.demo import PII_COLUMNS, build_shop, shop_metadata
from retention.engine import execute
from retention.ledger import blocks
from retention.ledger import chain as ledger
from retention.policy import load_file
from retention.store import tables as store

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC
SECRET = b"lifecycle-test-key"
PACK = load_file(Path(__file__).resolve().parent.parent / "rules" / "marketplace.yaml")
AS_OFS = [
    dt.datetime(2016, 3, 1, tzinfo=UTC),
    dt.datetime(2019, 7, 14, 9, 30, tzinfo=UTC),
    dt.datetime(2022, 2, 28, 23, 30, tzinfo=UTC),
    dt.datetime(2024, 3, 31, 1, 15, tzinfo=UTC),
    dt.datetime(2026, 11, 1, tzinfo=UTC),
    dt.datetime(2029, 1, 1, 12, tzinfo=UTC),
    dt.datetime(2033, 6, 1, tzinfo=UTC),
]


# -- an independent implementation of the periods --------------------------


def add_months(day: dt.date, months: int) -> dt.date:
    """Same date ``months`` later, or that month's last day (Reg. 1182/71 art. 3(2)(c))."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=PARIS).astimezone(UTC)


def paris_day(instant: dt.datetime) -> dt.date:
    return instant.astimezone(PARIS).date()


def utc(value: Any) -> dt.datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_shop(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """The generated rows as the database returns them, typed by the shop's own metadata."""
    tables = shop_metadata().tables
    with engine.connect() as conn:
        return {
            name: [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]
            for name, table in tables.items()
        }


def expected_customers(shop: dict[str, list[dict[str, Any]]], as_of: dt.datetime) -> dict[int, str]:
    """3 years after last activity or 6 after the last order, whichever ends later; then 5 in archive."""
    last_order: dict[int, dt.datetime] = {}
    for order in shop["orders"]:
        when = utc(order["created_at"])
        cid = order["customer_id"]
        last_order[cid] = max(last_order.get(cid, when), when)
    states = {}
    for customer in shop["customers"]:
        ends = []
        activity = customer["last_activity_at"]
        future = False
        if activity is not None:
            activity = utc(activity)
            future = activity > as_of
            ends.append(add_months(paris_day(activity), 36))
        if customer["id"] in last_order:
            order = last_order[customer["id"]]
            future = future or order > as_of
            ends.append(add_months(paris_day(order), 72))
        if not ends or future:
            states[customer["id"]] = "active"
            continue
        last_kept = max(ends)
        inactive = midnight(last_kept + dt.timedelta(days=1))
        purged = midnight(add_months(last_kept, 60) + dt.timedelta(days=1))
        states[customer["id"]] = "purged" if purged <= as_of else "archived" if inactive <= as_of else "active"
    return states


def kept(rows: list[dict[str, Any]], due: Any, as_of: dt.datetime) -> set[int]:
    """Ids of rows not yet due (``due`` returns None for anomalies, which stay)."""
    result = set()
    for row in rows:
        when = due(row)
        if when is None or when > as_of:
            result.add(row["id"])
    return result


def clock_ok(instant: dt.datetime, as_of: dt.datetime) -> bool:
    return instant <= as_of


def expected_rows(shop: dict[str, list[dict[str, Any]]], as_of: dt.datetime) -> dict[str, set[int]]:
    def analytics(row: dict[str, Any]) -> dt.datetime | None:
        when = utc(row["collected_at"])
        if not clock_ok(when, as_of):
            return None
        return midnight(add_months(paris_day(when), 13) + dt.timedelta(days=1))

    def invoice(row: dict[str, Any]) -> dt.datetime | None:
        day = row["invoice_date"]
        if day > as_of.astimezone(PARIS).date():
            return None
        close = dt.date(day.year, 12, 31)
        return midnight(add_months(close, 120) + dt.timedelta(days=1))

    def access(row: dict[str, Any]) -> dt.datetime | None:
        local = row["visited_at"]  # naive Paris wall-clock time
        if local > as_of.astimezone(PARIS).replace(tzinfo=None):
            return None
        return midnight(local.date() + dt.timedelta(days=8 + 1))

    def token(row: dict[str, Any]) -> dt.datetime | None:
        when = dt.datetime.fromtimestamp(row["created_epoch"], UTC)
        if not clock_ok(when, as_of):
            return None
        return midnight(add_months(paris_day(when), 36) + dt.timedelta(days=1))

    return {
        "analytics_events": kept(shop["analytics_events"], analytics, as_of),
        "invoices": kept(shop["invoices"], invoice, as_of),
        "review_access_logs": kept(shop["review_access_logs"], access, as_of),
        "payment_tokens": kept(shop["payment_tokens"], token, as_of),
    }


def actual_states(engine: sa.Engine) -> dict[int, str]:
    rs = store.record_states
    with engine.connect() as conn:
        ids = set(conn.execute(sa.text("SELECT id FROM customers")).scalars())
        moved = {int(r.record_key): r.state for r in conn.execute(sa.select(rs).where(rs.c.dataset == "customers"))}
    return {i: moved.get(i, "active") for i in ids}


def remaining(engine: sa.Engine, table: str) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT id FROM {table}")).scalars())


# Fast tier: the same seven dates over a shop of 40 customers; slow tier: 150 (seconds per run per date).
@pytest.mark.parametrize("customers", tiers(40, 150))
def test_twelve_years_of_a_shop(migrated: sa.Engine, customers: int) -> None:
    """At each chosen date, every dataset holds exactly the records the policies say."""
    build_shop(migrated, seed=3, customers=customers)
    shop = read_shop(migrated)
    customers_by_id = {c["id"]: c for c in shop["customers"]}
    for as_of in AS_OFS:
        result = execute.run(migrated, PACK, as_of, secret=SECRET, allow_mass=("*",))
        assert result.status == "succeeded", result
        expected = expected_customers(shop, as_of)
        assert actual_states(migrated) == expected, as_of
        for table, ids in expected_rows(shop, as_of).items():
            assert remaining(migrated, table) == ids, (table, as_of)
        # Browsing data follows the account: gone once the customer left 'active'.
        browsing = {b["id"] for b in shop["browsing_events"] if expected[b["customer_id"]] == "active"}
        assert remaining(migrated, "browsing_events") == browsing, as_of
        # Deactivated accounts are flagged in place; archived ones are minimised.
        customers = shop_metadata().tables["customers"]
        with migrated.connect() as conn:
            rows = {r.id: r for r in conn.execute(sa.select(customers))}
        for cid, state in expected.items():
            row = rows[cid]
            assert bool(row.is_active) is (state == "active")
            if state in ("archived", "purged"):
                assert row.name is None and row.phone is None
                assert row.email != customers_by_id[cid]["email"]
    verdict = ledger.verify(migrated)
    assert verdict.ok, verdict.reason


# Fast tier: a shop of 40 customers; slow tier: 120 (more values that could leak).
@pytest.mark.parametrize("customers", tiers(40, 120))
def test_no_personal_data_in_ledger_or_logs(migrated: sa.Engine, customers: int) -> None:
    """No value of any PII column appears in a ledger row, in any other engine table, or in the run's log output."""
    build_shop(migrated, seed=5, customers=customers)
    shop = read_shop(migrated)
    values = {
        str(row[column])
        for table, columns in PII_COLUMNS.items()
        for row in shop[table]
        for column in columns
        if row[column] is not None
    }
    values |= {str(c["id"]) + "@" for c in shop["customers"]}  # guard against emails rebuilt by id
    out = io.StringIO()
    logs.configure(json=True, level="debug", stream=out)
    try:
        for as_of in AS_OFS[2:]:
            execute.run(migrated, PACK, as_of, secret=SECRET, allow_mass=("*",))
    finally:
        structlog.reset_defaults()
    with migrated.connect() as conn:
        entries = [dict(r._mapping) for r in conn.execute(sa.select(store.ledger))]
        # Every other engine table too (ledger items, states, runs, sightings...),
        # except the archive: its payloads are the intermediate archive, personal data kept by
        # design until the record is purged.
        others = [
            dict(r._mapping)
            for table in store.metadata.sorted_tables
            if table not in (store.ledger, store.archive)
            for r in conn.execute(sa.select(table))
        ]
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
        # Format 4 keeps no lookup rows (the items' pseudonym indexes serve lookups): nothing there to leak.
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger_lookup)).scalar_one() == 0
    assert entries
    hex64 = re.compile(r"[0-9a-f]{64}")
    texts = []
    for entry in entries:
        for name, value in entry.items():
            if name in (
                "hash",
                "prev_hash",
                "pack_digest",
                "record_pseudonym",
                "subject_pseudonym",
            ):
                assert value is None or hex64.fullmatch(value), (name, value)
            elif value is not None:
                texts.append(str(value))
    # Binary values are the format-5 block bodies (random pseudonym bytes and due instants), whose repr makes
    # chance tokens ("8@"): they are held to their layout instead (every byte a pseudonym or a due instant,
    # retention.ledger.blocks.check) and searched byte for byte for the values long enough not to occur by chance.
    binary = [bytes(v) for row in others for v in row.values() if isinstance(v, bytes | memoryview)]
    assert binary and all(blocks.check(body) is None for body in binary)
    assert [v for v in values if len(v) >= 6 and any(v.encode() in body for body in binary)] == []
    texts += [
        str(value)
        for row in others
        for value in row.values()
        if value is not None and not isinstance(value, bytes | memoryview)
    ]
    log_text = out.getvalue()
    assert log_text.strip()
    for line in log_text.splitlines():
        assert json.loads(line)["run_id"]
    haystack = "\n".join(texts) + "\n" + log_text
    tokens = set(re.findall(r"[\w@.+*/?=-]+", haystack))
    leaked = [v for v in values if (v in haystack if len(v) >= 6 else v in tokens)]
    assert leaked == []
