"""Subjects: erasure requests, legal holds and foreign-key cascades, on every database."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import db_templates
import pytest
import sqlalchemy as sa
from conftest import migrate_isolated, tiers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_view import record_moves
from sqlalchemy.dialects import mysql

from retention.demo import build_shop, shop_metadata
from retention.engine import execute
from retention.errors import ConfigError
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.ledger import pseudonyms
from retention.policy import load_file, validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects

ROOT = Path(__file__).resolve().parent.parent
MARKETPLACE = load_file(ROOT / "rules" / "marketplace.yaml")
SECRET = b"subjects-test-key"
UTC = dt.UTC


# --------------------------------------------------------------------------
# Erasure
# --------------------------------------------------------------------------


def _count(conn: sa.Connection, table: str, customer: int) -> int:
    return int(
        conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE customer_id = :c"), {"c": customer}).scalar_one()
    )


def test_erasure_request_moves_the_subject_at_the_next_run(migrated: sa.Engine) -> None:
    """Account inactive and archived at once; analytics, browsing and tokens purged; invoices kept."""
    build_shop(migrated, seed=8, customers=300, end=dt.date(2026, 11, 1))
    as_of = dt.datetime(2026, 11, 2, 10, tzinfo=UTC)
    tables = shop_metadata().tables
    with migrated.connect() as conn:
        # A recently active customer with data in every table: nothing of theirs is due on its own.
        candidates = (
            conn.execute(
                sa.select(tables["customers"].c.id)
                .where(tables["customers"].c.last_activity_at > dt.datetime(2026, 6, 1))
                .order_by(tables["customers"].c.id)
            )
            .scalars()
            .all()
        )
        chosen = next(
            c
            for c in candidates
            if all(_count(conn, t, c) for t in ("analytics_events", "browsing_events", "payment_tokens", "invoices"))
        )
        invoices_before = _count(conn, "invoices", chosen)
    with migrated.begin() as conn:
        request_id = subjects.add_request(
            conn, subject_key=str(chosen), received=dt.date(2026, 10, 30), pack=MARKETPLACE.pack, secret=SECRET
        )
    result = execute.run(migrated, MARKETPLACE, as_of, secret=SECRET, allow_mass=("*",))
    assert result.status == "succeeded"
    with migrated.connect() as conn:
        state = conn.execute(
            sa.select(store.record_states.c.state).where(
                store.record_states.c.dataset == "customers",
                store.record_states.c.record_key == str(chosen),
            )
        ).scalar_one()
        assert state == "archived"
        row = conn.execute(sa.select(tables["customers"]).where(tables["customers"].c.id == chosen)).one()
        assert row.is_active is False or row.is_active == 0
        assert row.name is None
        for table in ("analytics_events", "browsing_events", "payment_tokens"):
            assert _count(conn, table, chosen) == 0, table
        assert _count(conn, "invoices", chosen) == invoices_before
        request = conn.execute(sa.select(store.erasure_requests).where(store.erasure_requests.c.id == request_id)).one()
        assert request.status == "processed" and request.processed_run_id == result.run_id
        entries = [
            e
            for e in ledger_items.lookup(conn, SECRET, subject_key=str(chosen))
            if e["transition"] not in ("erasure_received", "erasure_processed")
        ]
    by_transition = {(e["dataset"], e["transition"]) for e in entries}
    assert ("customers", "active->inactive") in by_transition
    assert ("customers", "inactive->archived") in by_transition
    assert ("analytics_events", "active->purged") in by_transition
    assert ("payment_tokens", "active->purged") in by_transition
    assert all(e["request_id"] == request_id for e in entries if e["dataset"] != "browsing_events")
    assert all(e["due_at"] == dt.datetime(2026, 10, 29, 23, tzinfo=UTC) for e in entries if e["due_at"] is not None)
    # browsing_events keeps a summary ledger (no per-record pseudonyms), and it names the request too.
    with migrated.connect() as conn:
        summaries = (
            conn.execute(
                sa.select(store.ledger.c.detail).where(
                    store.ledger.c.dataset == "browsing_events",
                    store.ledger.c.run_id == result.run_id,
                )
            )
            .scalars()
            .all()
        )
    assert any(json.loads(d or "{}").get("erasure_request") == request_id for d in summaries)
    assert ledger.verify(migrated).ok


@pytest.mark.parametrize(
    ("received", "extended", "deadline"),
    [
        (dt.date(2021, 1, 31), False, dt.date(2021, 3, 1)),  # 28 Feb 2021 is a Sunday
        (dt.date(2024, 1, 31), False, dt.date(2024, 2, 29)),  # leap year: Thursday 29 Feb
        (dt.date(2024, 2, 29), False, dt.date(2024, 3, 29)),  # Friday
        (dt.date(2025, 2, 15), False, dt.date(2025, 3, 17)),  # 15 Mar 2025 is a Saturday
        (dt.date(2021, 1, 31), True, dt.date(2021, 4, 28)),  # 28 Feb + 2 months: Wednesday 28 Apr
        (
            dt.date(2024, 4, 6),
            True,
            dt.date(2024, 7, 8),
        ),  # 6 May + 2 months = Saturday 6 Jul -> Monday
    ],
)
def test_erasure_deadlines(received: dt.date, extended: bool, deadline: dt.date) -> None:
    """Hand-computed deadlines: 1 month, extended once by 2 months, weekends move to Monday."""
    assert subjects.deadline_for(received, MARKETPLACE.pack, extended=extended) == deadline


def test_erasure_list_flags_and_single_extension(migrated: sa.Engine) -> None:
    """`list` flags overdue and due-soon requests; a second extension is refused."""
    with migrated.begin() as conn:
        late = subjects.add_request(
            conn, subject_key="1", received=dt.date(2026, 9, 1), pack=MARKETPLACE.pack, secret=SECRET
        )
        soon = subjects.add_request(
            conn, subject_key="2", received=dt.date(2026, 11, 1), pack=MARKETPLACE.pack, secret=SECRET
        )
        calm = subjects.add_request(
            conn, subject_key="3", received=dt.date(2026, 11, 20), pack=MARKETPLACE.pack, secret=SECRET
        )
    with migrated.connect() as conn:
        flags = {r["id"]: r["flag"] for r in subjects.list_requests(conn, dt.date(2026, 11, 24))}
    assert flags == {late: "overdue", soon: "due soon", calm: ""}
    with migrated.begin() as conn:
        assert subjects.extend_request(
            conn, late, reason="many requests", pack=MARKETPLACE.pack, secret=SECRET
        ) == dt.date(2026, 12, 1)
    with migrated.begin() as conn, pytest.raises(ConfigError, match="allows one extension"):
        subjects.extend_request(conn, late, reason="again", pack=MARKETPLACE.pack, secret=SECRET)


# --------------------------------------------------------------------------
# Holds
# --------------------------------------------------------------------------

TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
HOLD_PACK = validate_pack(
    {
        "pack": "holds",
        "version": "1",
        "effective_from": dt.date(2000, 1, 1),
        "timezone": "Europe/Paris",
        "batch_size": 5,
        "guard": {"max_share": 1.0},
        "datasets": {
            "accounts": {
                "table": "accounts",
                "key": "id",
                "subject_key": "id",
                "basis": "policy",
                "keep": [{"clock": {"column": "seen", "type": "timestamptz"}, "period": "P1Y"}],
                "lifecycle": [
                    {"to": "inactive", "action": "deactivate", "set": {"active": False}},
                    {
                        "to": "archived",
                        "after": "P6M",
                        "action": "archive",
                        "columns": ["id"],
                        "then": "delete",
                    },
                    {"to": "purged", "after": "P1Y"},
                ],
            },
            "events": {
                "table": "events",
                "key": "id",
                "subject_key": "account_id",
                "basis": "policy",
                "keep": [{"clock": {"column": "at", "type": "timestamptz"}, "period": "P6M"}],
                "lifecycle": [{"to": "purged", "action": "delete"}],
            },
        },
    },
    Path("<holds>"),
    "",
)


def build_small(engine: sa.Engine, seed: int) -> None:
    md = sa.MetaData()
    accounts = sa.Table(
        "accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", TS),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.Integer),
        sa.Column("at", TS),
    )
    md.drop_all(engine)
    md.create_all(engine)
    rng = random.Random(seed)
    base = dt.datetime(2020, 1, 1, tzinfo=UTC)

    def when() -> dt.datetime:
        value = base + dt.timedelta(days=rng.randint(0, 1500), minutes=rng.randint(0, 1439))
        return value if engine.dialect.name == "postgresql" else value.replace(tzinfo=None)

    with engine.begin() as conn:
        conn.execute(accounts.insert(), [{"id": i, "seen": when(), "active": True} for i in range(1, 16)])
        conn.execute(
            events.insert(),
            [{"id": i, "account_id": rng.randint(1, 15), "at": when()} for i in range(1, 41)],
        )


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            "accounts": conn.execute(sa.text("SELECT id, active FROM accounts ORDER BY id")).all(),
            "events": conn.execute(sa.text("SELECT id FROM events ORDER BY id")).all(),
            "states": conn.execute(
                sa.select(
                    store.record_states.c.dataset,
                    store.record_states.c.record_key,
                    store.record_states.c.state,
                    store.record_states.c.since,
                ).order_by(store.record_states.c.dataset, store.record_states.c.record_key)
            ).all(),
            "archive": conn.execute(sa.select(store.archive.c.record_key).order_by(store.archive.c.record_key)).all(),
        }


def reset(engine: sa.Engine, seed: int) -> None:
    """A fresh migrated database holding the small world: the test's database emptied, the template copied in.

    (Not ``migrate.downgrade(engine, "base")`` then ``migrate.upgrade``: every
    migration twice per call, 16 calls a test; tests/test_migrations.py
    tests the migrations.)
    """
    db_templates.empty(engine)
    migrate_isolated(engine)
    build_small(engine, seed)


holds_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("subject"), st.integers(1, 15)),
        st.tuples(st.just("record"), st.sampled_from(["accounts", "events"]), st.integers(1, 40)),
        st.tuples(st.just("dataset"), st.sampled_from(["accounts", "events"])),
    ),
    max_size=4,
)


def test_holds_stop_transitions_and_release_restores_the_plan(migrated: sa.Engine) -> None:
    """No held record ever moves; after release, the next run equals a run that never had holds."""

    @settings(
        max_examples=8,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        seed=st.integers(0, 1000),
        holds=holds_strategy,
        days=st.lists(st.integers(100, 1500), min_size=1, max_size=3),
    )
    def check(seed: int, holds: list[tuple[Any, ...]], days: list[int]) -> None:
        as_ofs = [dt.datetime(2021, 1, 1, tzinfo=UTC) + dt.timedelta(days=d) for d in sorted(days)]
        reset(migrated, seed)
        for as_of in as_ofs:
            execute.run(migrated, HOLD_PACK, as_of, secret=SECRET)
        without = snapshot(migrated)

        reset(migrated, seed)
        before = snapshot(migrated)
        ids = []
        with migrated.begin() as conn:
            for hold in holds:
                kwargs: dict[str, Any] = {
                    "scope": hold[0],
                    "reason": "case 17",
                    "placed_by": "test",
                    "secret": SECRET,
                }
                if hold[0] == "subject":
                    kwargs["subject_key"] = str(hold[1])
                elif hold[0] == "record":
                    kwargs.update(dataset=hold[1], record_key=str(hold[2]))
                else:
                    kwargs["dataset"] = hold[1]
                ids.append(subjects.place_hold(conn, **kwargs))
        held = _held_keys(migrated, holds)
        for as_of in as_ofs:
            result = execute.run(migrated, HOLD_PACK, as_of, secret=SECRET)
            keys: dict[str, list[str]] = {}
            for d, k in held:
                keys.setdefault(d, []).append(k)
            moved = {(m[0], m[1]) for m in record_moves(migrated, SECRET, keys, result.run_id)}
            assert not moved & set(held)
        after_hold = snapshot(migrated)
        for dataset, key in held:
            assert _state_of(before, dataset, key) == _state_of(after_hold, dataset, key)
        with migrated.begin() as conn:
            for hold_id in ids:
                subjects.release_hold(conn, hold_id, released_by="test", reason="case closed", secret=SECRET)
        execute.run(migrated, HOLD_PACK, as_ofs[-1], secret=SECRET)
        assert snapshot(migrated) == without

    check()


def _held_keys(engine: sa.Engine, holds: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        accounts = [str(i) for i in conn.execute(sa.text("SELECT id FROM accounts")).scalars()]
        events = conn.execute(sa.text("SELECT id, account_id FROM events")).all()
    keys: set[tuple[str, str]] = set()
    for hold in holds:
        if hold[0] == "subject":
            keys |= {("accounts", k) for k in accounts if k == str(hold[1])}
            keys |= {("events", str(e.id)) for e in events if e.account_id == hold[1]}
        elif hold[0] == "record":
            keys.add((hold[1], str(hold[2])))
        else:
            pool = accounts if hold[1] == "accounts" else [str(e.id) for e in events]
            keys |= {(hold[1], k) for k in pool}
    return keys


def _entries(engine: sa.Engine, run_id: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(store.ledger).where(store.ledger.c.run_id == run_id)).all()


def _state_of(snap: dict[str, Any], dataset: str, key: str) -> tuple[Any, ...]:
    states = {(s.dataset, s.record_key): s.state for s in snap["states"]}
    present = {str(r[0]) for r in snap[dataset]}
    return (key in present, states.get((dataset, key)))


def test_hold_place_and_release_are_ledger_entries(migrated: sa.Engine) -> None:
    """Placing and releasing a hold each append an entry with the subject's pseudonym only."""
    with migrated.begin() as conn:
        hold_id = subjects.place_hold(
            conn,
            scope="subject",
            subject_key="42",
            reason="litigation",
            placed_by="dpo",
            secret=SECRET,
        )
    with migrated.begin() as conn:
        subjects.release_hold(conn, hold_id, released_by="dpo", reason="settled", secret=SECRET)
    rows = _all_entries(migrated)
    assert [(r.transition, r.action) for r in rows] == [
        ("hold_placed", "subject"),
        ("hold_released", "subject"),
    ]
    assert {r.subject_pseudonym for r in rows} == {pseudonyms.subject_pseudonym(SECRET, "42")}
    with migrated.begin() as conn, pytest.raises(ConfigError, match="already released"):
        subjects.release_hold(conn, hold_id, released_by="dpo", reason="again", secret=SECRET)


def _all_entries(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(store.ledger).order_by(store.ledger.c.seq)).all()


# --------------------------------------------------------------------------
# Cascades over real foreign keys
# --------------------------------------------------------------------------


def _accounts(table: str) -> dict[str, Any]:
    """A customer's books: kept ten years from the financial year's end, purged with the archived customer."""
    return {
        "table": table,
        "key": "id",
        "subject_key": "customer_id",
        "basis": "accounting",
        "keep": [
            {"clock": {"column": "created_at", "type": "timestamptz"}, "period": "P10Y", "anchor": "financial_year_end"}
        ],
        "follows": {"dataset": "customers", "on": {"archived": "purged"}},
        "lifecycle": [{"to": "purged", "action": "delete"}],
    }


def _gone_with_customer(table: str, basis: str) -> dict[str, Any]:
    """Rows with no clock of their own: purged as soon as their customer goes inactive."""
    return {
        "table": table,
        "key": "id",
        "subject_key": "customer_id",
        "basis": basis,
        "follows": {"dataset": "customers", "on": {"inactive": "purged"}},
        "lifecycle": [{"to": "purged", "action": "delete"}],
    }


CASCADE_PACK = validate_pack(
    {
        "pack": "cascade",
        "version": "1",
        "effective_from": dt.date(2000, 1, 1),
        "timezone": "Europe/Paris",
        "batch_size": 25,
        "guard": {"max_share": 1.0},
        "datasets": {
            "customers": {
                "table": "customers",
                "key": "id",
                "subject_key": "id",
                "basis": "policy",
                "keep": [
                    {"clock": {"column": "last_seen", "type": "timestamptz"}, "period": "P3Y"},
                    {
                        "clock": {
                            "aggregate": "max",
                            "table": "orders",
                            "on": "customer_id",
                            "column": "created_at",
                            "type": "timestamptz",
                        },
                        "period": "P6Y",
                    },
                ],
                "lifecycle": [
                    {"to": "inactive", "action": "deactivate", "set": {"active": False}},
                    {
                        "to": "archived",
                        "action": "archive",
                        "columns": ["id", "email"],
                        "then": "delete",
                    },
                    {"to": "purged", "after": "P5Y"},
                ],
            },
            "orders": _accounts("orders"),
            "order_lines": _accounts("order_lines"),
            "addresses": _gone_with_customer("addresses", "policy"),
            "newsletter": _gone_with_customer("newsletter", "consent"),
        },
    },
    Path("<cascade>"),
    "",
)


def build_cascade_shop(engine: sa.Engine, seed: int, customers: int = 120) -> None:
    md = sa.MetaData()
    sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100)),
        sa.Column("last_seen", TS, index=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Index("ix_orders_c", "customer_id", "created_at"),
    )
    sa.Table(
        "order_lines",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False, index=True),
    )
    sa.Table(
        "addresses",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
    )
    sa.Table(
        "newsletter",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
    )
    md.create_all(engine)
    rng = random.Random(seed)
    start = dt.datetime(2014, 1, 1, tzinfo=UTC)
    store_ts = (lambda v: v) if engine.dialect.name == "postgresql" else (lambda v: v.replace(tzinfo=None))
    rows: dict[str, list[dict[str, Any]]] = {
        t: [] for t in ("customers", "orders", "order_lines", "addresses", "newsletter")
    }
    for c in range(1, customers + 1):
        seen = start + dt.timedelta(days=rng.randint(0, 12 * 365))
        rows["customers"].append({"id": c, "email": f"c{c}@x.test", "last_seen": store_ts(seen), "active": True})
        for _ in range(rng.randint(0, 3)):
            order_at = start + dt.timedelta(days=rng.randint(0, 12 * 365))
            order_id = len(rows["orders"]) + 1
            rows["orders"].append({"id": order_id, "customer_id": c, "created_at": store_ts(order_at)})
            for _ in range(rng.randint(1, 3)):
                rows["order_lines"].append(
                    {
                        "id": len(rows["order_lines"]) + 1,
                        "order_id": order_id,
                        "customer_id": c,
                        "created_at": store_ts(order_at),
                    }
                )
        for _ in range(rng.randint(0, 2)):
            rows["addresses"].append({"id": len(rows["addresses"]) + 1, "customer_id": c})
        if rng.random() < 0.5:
            rows["newsletter"].append({"id": len(rows["newsletter"]) + 1, "customer_id": c})
    with engine.begin() as conn:
        for name in ("customers", "orders", "order_lines", "addresses", "newsletter"):
            if rows[name]:
                conn.execute(md.tables[name].insert(), rows[name])


# Fast tier: 40 customers; slow tier: 120 (26 yearly runs each).
@pytest.mark.parametrize("customers", tiers(40, 120))
def test_cascade_over_foreign_keys_for_twelve_years(
    migrated: sa.Engine, db_url: str, tmp_path: Path, customers: int
) -> None:
    """Yearly runs from 2015 to 2040 never hit an integrity error and end with no orphan."""
    build_cascade_shop(migrated, seed=13, customers=customers)
    as_of = dt.datetime(2015, 1, 1, tzinfo=UTC)
    seen_states = set()
    while as_of.year <= 2040:
        result = execute.run(migrated, CASCADE_PACK, as_of, secret=SECRET)
        assert result.status == "succeeded", (as_of, result.failures)
        for per in result.counts.values():
            seen_states |= set(per)
        as_of = as_of.replace(year=as_of.year + 1)
    assert {
        "active->inactive",
        "inactive->archived",
        "archived->purged",
        "active->purged",
    } <= seen_states
    with migrated.connect() as conn:
        for table in ("orders", "order_lines", "addresses", "newsletter"):
            orphans = conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                    "(SELECT 1 FROM customers c WHERE c.id = t.customer_id)"
                )
            ).scalar_one()
            assert orphans == 0, table
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one() < customers
    assert ledger.verify(migrated).ok


# --------------------------------------------------------------------------
# Working days: weekends and the pack's country's public holidays
# --------------------------------------------------------------------------


def _pack_in(country: str | None, subdivision: str | None = None) -> Any:
    data = MARKETPLACE.pack.model_dump(mode="json", by_alias=True)
    data.pop("country", None)
    if country is not None:
        data["country"] = country
    if subdivision is not None:
        data["subdivision"] = subdivision
    return validate_pack(data, Path(f"<{country}>"), "").pack


@pytest.mark.parametrize(
    ("country", "subdivision", "received", "deadline", "moved"),
    [
        # Dutch King's Day, Thursday 27 April 2023: not a holiday in France or Belgium.
        ("NL", None, dt.date(2023, 3, 27), dt.date(2023, 4, 28), "2023-04-27 King's Day"),
        ("FR", None, dt.date(2023, 3, 27), dt.date(2023, 4, 27), ""),
        ("BE", None, dt.date(2023, 3, 27), dt.date(2023, 4, 27), ""),
        # French National Day, Friday 14 July 2023, then the weekend: Monday 17 July.
        (
            "FR",
            None,
            dt.date(2023, 6, 14),
            dt.date(2023, 7, 17),
            "2023-07-14 National Day; 2023-07-15 Saturday; 2023-07-16 Sunday",
        ),
        ("NL", None, dt.date(2023, 6, 14), dt.date(2023, 7, 14), ""),
        # Belgian National Day, Friday 21 July 2023.
        (
            "BE",
            None,
            dt.date(2023, 6, 21),
            dt.date(2023, 7, 24),
            "2023-07-21 National Day; 2023-07-22 Saturday; 2023-07-23 Sunday",
        ),
        ("FR", None, dt.date(2023, 6, 21), dt.date(2023, 7, 21), ""),
        # Christmas, Thursday 25 December 2025: the Netherlands also rest on the 26th, so does Moselle.
        ("FR", None, dt.date(2025, 11, 25), dt.date(2025, 12, 26), "2025-12-25 Christmas Day"),
        ("BE", None, dt.date(2025, 11, 25), dt.date(2025, 12, 26), "2025-12-25 Christmas Day"),
        (
            "NL",
            None,
            dt.date(2025, 11, 25),
            dt.date(2025, 12, 29),
            "2025-12-25 Christmas Day; 2025-12-26 Second Day of Christmas; 2025-12-27 Saturday; 2025-12-28 Sunday",
        ),
        (
            "FR",
            "57",
            dt.date(2025, 11, 25),
            dt.date(2025, 12, 29),
            "2025-12-25 Christmas Day; 2025-12-26 Saint Stephen's Day; 2025-12-27 Saturday; 2025-12-28 Sunday",
        ),
        # Without a country only weekends move a deadline.
        (None, None, dt.date(2025, 11, 25), dt.date(2025, 12, 25), ""),
    ],
)
def test_erasure_deadlines_skip_public_holidays(
    country: str | None, subdivision: str | None, received: dt.date, deadline: dt.date, moved: str
) -> None:
    """Hand-computed deadlines in NL, BE and FR: a public holiday moves the deadline like a weekend, with why."""
    pack = _pack_in(country, subdivision)
    got, skipped = subjects.deadline_moves(received, pack, extended=False)
    assert (got, subjects.describe_moves(skipped)) == (deadline, moved)
    assert subjects.deadline_for(received, pack, extended=False) == deadline


def test_erasure_list_says_why_a_deadline_moved(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """`erasure add` and `erasure list --rules` name the holiday and weekend days a deadline skipped."""
    from click.testing import CliRunner

    from retention.cli import main

    pack = tmp_path / "nl.yaml"
    pack.write_text(
        (ROOT / "rules" / "marketplace.yaml")
        .read_text(encoding="utf-8")
        .replace("country: FR", "country: NL")
        .replace("effective_from: 2026-01-01", "effective_from: 2020-01-01"),
        encoding="utf-8",
    )
    runner = CliRunner(env={"RETENTION_PSEUDONYM_KEY": SECRET.decode()})
    added = runner.invoke(
        main,
        ["erasure", "add", "--db", db_url, "--rules", str(pack), "--subject", "7", "--received", "2023-03-27"],
    )
    assert added.exit_code == 0, added.output
    assert added.output.strip() == "erasure request 1: answer by 2023-04-28 (moved from 2023-04-27 King's Day)"
    listed = runner.invoke(main, ["erasure", "list", "--db", db_url, "--rules", str(pack), "--format", "csv"])
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()[:2]
    assert header == "id,subject_key,email,received_on,deadline,moved,flag,status,outcome,extended_on,note"
    assert row == "1,7,,2023-03-27,2023-04-28,2023-04-27 King's Day,overdue,open,,,"
    table = runner.invoke(main, ["erasure", "list", "--db", db_url, "--rules", str(pack)])
    assert table.output.splitlines()[-1] == "request 1: deadline moved from 2023-04-27 King's Day"
