"""drop_partition: whole partitions past the cutoff dropped on PostgreSQL, the rest row by row."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ledger_view import record_moves

from retention.engine import execute, partitions
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"partition-test-key"
AS_OF = dt.datetime(2026, 11, 1, tzinfo=UTC)
# P6M in Europe/Paris before 1 Nov 2026: collected before 1 May 2026 00:00 Paris.
CUTOFF = dt.datetime(2026, 4, 30, 22, tzinfo=UTC)

PACK: dict[str, Any] = {
    "pack": "partition-test",
    "version": "1",
    "effective_from": dt.date(2000, 1, 1),
    "timezone": "Europe/Paris",
    "batch_size": 50,
    "guard": {"max_share": 1.0},
    "datasets": {
        "access": {
            "table": "access_log",
            "key": "id",
            "subject_key": "user_id",
            "basis": "six months of access logs",
            "partitioned": True,
            "keep": [{"clock": {"column": "at", "type": "timestamptz"}, "period": "P6M"}],
            "lifecycle": [{"to": "purged", "action": "drop_partition"}],
        }
    },
}


def loaded() -> LoadedPack:
    return validate_pack(PACK, Path("<test>"), "test pack")


def months() -> list[dt.datetime]:
    """First instants (UTC) of January 2024 up to and including January 2027."""
    result, day = [], dt.datetime(2024, 1, 1, tzinfo=UTC)
    while day <= dt.datetime(2027, 1, 1, tzinfo=UTC):
        result.append(day)
        day = (day + dt.timedelta(days=32)).replace(day=1)
    return result


def build_partitioned(engine: sa.Engine, seed: int = 1, n: int = 900) -> list[tuple[int, int, dt.datetime]]:
    """A monthly range-partitioned access log (UTC bounds); returns the rows (id, user, at)."""
    rng = random.Random(seed)
    bounds = months()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE access_log (id BIGINT NOT NULL, user_id INTEGER NOT NULL, "
                "at TIMESTAMPTZ NOT NULL, path VARCHAR(200), PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
            )
        )
        for low, high in itertools.pairwise(bounds):
            conn.execute(
                sa.text(
                    f"CREATE TABLE access_log_{low:%Y_%m} PARTITION OF access_log "
                    f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
                )
            )
        span = int((dt.datetime(2026, 10, 31, tzinfo=UTC) - bounds[0]).total_seconds())
        rows = [(i, rng.randint(1, 40), bounds[0] + dt.timedelta(seconds=rng.randrange(span))) for i in range(1, n + 1)]
        # A few rows right around the cutoff, inside the partition that straddles it.
        rows += [
            (n + 1, 7, CUTOFF - dt.timedelta(seconds=1)),
            (n + 2, 7, CUTOFF),
            (n + 3, 8, CUTOFF + dt.timedelta(hours=1)),
        ]
        conn.execute(
            sa.text("INSERT INTO access_log (id, user_id, at, path) VALUES (:id, :u, :at, '/')"),
            [{"id": i, "u": u, "at": at} for i, u, at in rows],
        )
    return rows


def partition_names(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = to_regclass('access_log')"
                )
            ).scalars()
        )


def ledger_entries(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.ledger).where(store.ledger.c.dataset == "access")))


@pytest.mark.only_on("postgresql")
def test_whole_partitions_past_the_cutoff_are_dropped(migrated: sa.Engine) -> None:
    rows = build_partitioned(migrated)
    due = [r for r in rows if r[2] < CUTOFF]
    whole = {
        f"access_log_{low:%Y_%m}": (low, high)
        for low, high in zip(months(), months()[1:], strict=False)
        if high <= CUTOFF
    }
    in_whole = {name: sum(1 for r in rows if low <= r[2] < high) for name, (low, high) in whole.items()}
    partial = [r for r in due if not any(low <= r[2] < high for low, high in whole.values())]
    assert whole and partial  # the data exercises both paths

    pack = loaded()
    planned = execute.plan(migrated, pack, AS_OF)
    assert planned.transitions["access"] == {"active->purged": len(due)}
    assert {d["partition"].rsplit(".", 1)[1]: d["rows"] for d in planned.partitions["access"]} == in_whole
    result = execute.run(migrated, pack, AS_OF, secret=SECRET)
    assert result.status == "succeeded"
    assert result.counts["access"] == {"active->purged": len(due)}

    assert partition_names(migrated).isdisjoint(whole)  # dropped
    assert "access_log_2026_04" in partition_names(migrated)  # straddles the cutoff: kept
    with migrated.connect() as conn:
        left = set(conn.execute(sa.text("SELECT id FROM access_log")).scalars())
    assert left == {r[0] for r in rows if r[2] >= CUTOFF}

    entries = ledger_entries(migrated)
    drops = [e for e in entries if e.action == "drop_partition"]
    assert len(drops) == 1  # one transaction and one entry for the run's drops, each partition's count in it
    (drop,) = drops
    assert {k.rsplit(".", 1)[1]: n for k, n in json.loads(drop.detail)["partitions"].items()} == in_whole
    assert drop.count == sum(in_whole.values())
    in_dropped = [r[2] for r in rows if any(low <= r[2] < high for low, high in whole.values())]
    assert (drop.clock_min, drop.clock_max) == (min(in_dropped), max(in_dropped))
    assert drop.record_pseudonym is None
    deletes = [m for m in record_moves(migrated, SECRET, {"access": [r[0] for r in rows]}) if m[1] != "*"]
    assert sorted(m[1] for m in deletes) == sorted(str(r[0]) for r in partial)
    assert ledger.verify(migrated).ok


@pytest.mark.only_on("postgresql")
def test_a_partition_holding_a_held_record_is_purged_row_by_row(migrated: sa.Engine) -> None:
    rows = build_partitioned(migrated, seed=2)
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", subject_key="3", reason="case 7", placed_by="t", secret=SECRET)
    held_months = {f"access_log_{r[2]:%Y_%m}" for r in rows if r[1] == 3 and r[2] < CUTOFF}
    result = execute.run(migrated, loaded(), AS_OF, secret=SECRET)
    assert result.status == "succeeded"
    assert held_months <= partition_names(migrated)  # not dropped
    with migrated.connect() as conn:
        left = set(conn.execute(sa.text("SELECT id FROM access_log")).scalars())
    assert left == {r[0] for r in rows if r[2] >= CUTOFF or r[1] == 3}
    dropped = {
        name.rsplit(".", 1)[1]
        for e in ledger_entries(migrated)
        if e.action == "drop_partition"
        for name in json.loads(e.detail)["partitions"]
    }
    assert dropped and dropped.isdisjoint(held_months)
    assert ledger.verify(migrated).ok


def build_plain(migrated: sa.Engine) -> list[tuple[int, int, dt.datetime]]:
    """An ordinary (unpartitioned) access log on any database; returns the rows (id, user, at)."""
    rng = random.Random(3)
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True) if migrated.dialect.name == "postgresql" else sa.DateTime()
    table = sa.Table(
        "access_log",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("at", ts, nullable=False, index=True),
    )
    md.create_all(migrated)
    start = dt.datetime(2025, 1, 1, tzinfo=UTC)
    rows = [(i, rng.randint(1, 9), start + dt.timedelta(hours=rng.randrange(15000))) for i in range(1, 200)]
    fix = (lambda v: v) if migrated.dialect.name == "postgresql" else (lambda v: v.replace(tzinfo=None))
    with migrated.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "user_id": u, "at": fix(at)} for i, u, at in rows])
    return rows


def test_drop_partition_on_a_plain_table_deletes_row_by_row(migrated: sa.Engine) -> None:
    """Without partitions (SQLite, MariaDB, or an ordinary PostgreSQL table) every due row is deleted and ledgered."""
    rows = build_plain(migrated)
    result = execute.run(migrated, loaded(), AS_OF, secret=SECRET)
    due = [r for r in rows if r[2] < CUTOFF]
    assert due and result.counts["access"] == {"active->purged": len(due)}
    entries = ledger_entries(migrated)
    assert {e.action for e in entries} == {"delete"} and sum(e.count for e in entries) == len(due)


@pytest.mark.only_on("postgresql")
@pytest.mark.parametrize(
    ("column_type", "clock"),
    [
        ("DATE", {"column": "at", "type": "date"}),
        ("TIMESTAMP", {"column": "at", "type": "timestamp", "timezone": "Europe/Paris"}),
    ],
)
def test_partition_bounds_of_naive_clocks(migrated: sa.Engine, column_type: str, clock: dict[str, Any]) -> None:
    """DATE and naive (Paris) TIMESTAMP partitions: everything before 1 May 2026 is due, by hand."""
    rng = random.Random(5)
    first_kept = dt.datetime(2026, 5, 1)  # P6M before 1 Nov 2026, local wall time
    starts = [dt.datetime(2024 + (m // 12), m % 12 + 1, 1) for m in range(0, 36)]
    with migrated.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE access_log (id BIGINT NOT NULL, user_id INTEGER NOT NULL, at {column_type} NOT NULL, "
                "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
            )
        )
        for low, high in itertools.pairwise(starts):
            conn.execute(
                sa.text(
                    f"CREATE TABLE access_log_{low:%Y_%m} PARTITION OF access_log "
                    f"FOR VALUES FROM ('{low:%Y-%m-%d}') TO ('{high:%Y-%m-%d}')"
                )
            )
        values = [starts[0] + dt.timedelta(hours=rng.randrange(24 * 1000)) for _ in range(300)]
        values += [first_kept - dt.timedelta(seconds=1), first_kept, first_kept + dt.timedelta(days=3)]
        if column_type == "DATE":
            values = [v.replace(hour=0, minute=0, second=0) for v in values]
        conn.execute(
            sa.text("INSERT INTO access_log (id, user_id, at) VALUES (:id, 1, :at)"),
            [{"id": i, "at": v} for i, v in enumerate(values)],
        )
    data = {**PACK, "datasets": {"access": {**PACK["datasets"]["access"], "keep": [{"clock": clock, "period": "P6M"}]}}}
    result = execute.run(migrated, validate_pack(data, Path("<test>"), ""), AS_OF, secret=SECRET)
    due = [v for v in values if v < first_kept]
    assert result.counts["access"] == {"active->purged": len(due)}
    whole = {f"access_log_{low:%Y_%m}" for low, high in itertools.pairwise(starts) if high <= first_kept}
    assert partition_names(migrated).isdisjoint(whole)
    assert "access_log_2026_05" in partition_names(migrated)
    entries = ledger_entries(migrated)
    assert {e.action for e in entries} == {"drop_partition"}  # the cutoff falls on a bound: nothing row by row
    assert sum(e.count for e in entries) == len(due)
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM access_log")).scalar_one() == len(values) - len(due)


@pytest.mark.only_on("postgresql")
def test_a_drop_that_fails_before_its_commit_leaves_every_partition_and_no_entry(migrated: sa.Engine) -> None:
    """The drops, their ledger entry and the run's counts are one transaction: a failure at its end undoes them all."""
    rows = build_partitioned(migrated, seed=4)
    before = partition_names(migrated)
    with migrated.begin() as conn:
        # The last statement of the drop's transaction (the run's counts) fails, after the DROP and the ledger insert.
        conn.execute(
            sa.text(
                "CREATE FUNCTION refuse_counts() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no space left for counts'; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse_counts BEFORE INSERT ON retention_run_counts "
                "FOR EACH ROW EXECUTE FUNCTION refuse_counts()"
            )
        )
    result = execute.run(migrated, loaded(), AS_OF, secret=SECRET)
    assert result.status == "partial" and "access" in result.failures
    assert partition_names(migrated) == before
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM access_log")).scalar_one() == len(rows)
    assert not [e for e in ledger_entries(migrated) if e.action == "drop_partition"]
    assert ledger.verify(migrated).ok

    with migrated.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_counts ON retention_run_counts"))
    result = execute.run(migrated, loaded(), AS_OF, secret=SECRET)
    assert result.status == "succeeded"
    assert result.counts["access"] == {"active->purged": sum(1 for r in rows if r[2] < CUTOFF)}
    assert len(partition_names(migrated)) < len(before)


def test_a_guard_that_cannot_trip_counts_nothing_and_one_that_can_counts_exactly(migrated: sa.Engine) -> None:
    """max_share 1.0 without max_count refuses nothing: no statement; at 0.5 the trip names the exact counts."""
    rows = build_plain(migrated)
    due = [r for r in rows if r[2] < CUTOFF]
    assert len(due) / len(rows) > 0.5  # the data trips a 50 % guard
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    for guard, expected in (
        ({"max_share": 1.0}, []),
        ({"max_share": 0.5}, [("access", "active->purged", len(due), len(rows))]),
        ({"max_share": 1.0, "max_count": len(due) - 1}, [("access", "active->purged", len(due), len(rows))]),
    ):
        pack = validate_pack({**PACK, "guard": guard}, Path("<test>"), "")
        with migrated.connect() as conn:
            planners, missing = execute.planners_at(conn, pack, AS_OF)
            assert missing is None
            statements.clear()
            sa.event.listen(migrated, "before_cursor_execute", seen)
            try:
                trips = execute.guard_trips(conn, pack, planners["access"])
            finally:
                sa.event.remove(migrated, "before_cursor_execute", seen)
        assert [(t.dataset, t.transition, t.count, t.rows) for t in trips] == expected
        assert bool(statements) == bool(expected), statements


@pytest.mark.only_on("postgresql")
def test_the_partition_count_leaves_the_transactions_settings_as_it_found_them(migrated: sa.Engine) -> None:
    """Serial scans for the count alone: plan counts its other datasets in the same transaction afterwards."""
    rows = build_partitioned(migrated, seed=6)
    pack = loaded()
    with migrated.connect() as conn:
        planners, _ = execute.planners_at(conn, pack, AS_OF)
        conn.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 3"))
        found = partitions.droppable(conn, planners["access"])
        counted = partitions.tally(conn, found, "at")
        assert conn.execute(sa.text("SHOW max_parallel_workers_per_gather")).scalar_one() == "3"
    bounds = {f"access_log_{low:%Y_%m}": (low, high) for low, high in itertools.pairwise(months())}
    expected = {p.label: sum(1 for r in rows if bounds[p.name][0] <= r[2] < bounds[p.name][1]) for p in found}
    assert len(expected) > 10  # the data fills many whole partitions before the cutoff
    assert counted.rows == expected and counted.total == sum(expected.values())
