"""The set-based purge's batches within one run: what changes between them reaches the next batch.

On PostgreSQL the one-statement batch is built once per run and run again
with the next entry position and range start (``BatchStatements._one_statement``,
:mod:`retention.engine.set_batches`);
the planner's probe before each batch may add a condition (a hold placed,
state rows written) that the statement must then carry. MariaDB and SQLite
build their three statements once per run the same way
(``BatchStatements._three_statements``). Every database runs these.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from retention.dialects import dialect_for
from retention.engine import execute, set_batches
from retention.engine.plan_values import Batch
from retention.ledger import chain as ledger
from retention.policy import validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects

KEY = bytes(range(32))

PACK = """
pack: batches
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
batch_size: 2
datasets:
  events:
    table: spb_events
    key: id
    subject_key: user_id
    basis: one year
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def _events(engine: sa.Engine, rows: int) -> sa.Table:
    events = sa.Table(
        "spb_events",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.String(40)),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    events.create(engine)
    old = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": f"u{i}", "collected": old} for i in range(rows)])
    return events


def after_the_first_locking_read(monkeypatch: pytest.MonkeyPatch, engine: sa.Engine, then: Callable[[], None]) -> None:
    """Run ``then`` once, right after a run's first batch has read (and locked) its keys, inside that batch."""
    dialect = type(dialect_for(engine))
    original = dialect.last_of_batch
    done: list[bool] = []

    def read_then(self: Any, conn: sa.Connection, query: Any, size: int, parameters: Any = None) -> tuple[Any, int]:
        found = original(self, conn, query, size, parameters)
        if not done:
            done.append(True)
            then()
        return found

    monkeypatch.setattr(dialect, "last_of_batch", read_then)


def test_a_hold_placed_between_batches_stops_the_next_batches(migrated: sa.Engine) -> None:
    """Eight due records, two a batch; a dataset hold placed after the second batch keeps the other four.

    After the second: the first batch has a statement of its own (no range
    start), the second builds the one the later batches reuse.
    """
    events = _events(migrated, 8)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    batches: list[int] = []

    def hold_after_the_second(batch: Batch) -> None:
        batches.append(batch.moved)
        if len(batches) == 2:
            with migrated.begin() as conn:
                subjects.place_hold(
                    conn, scope="dataset", dataset="events", reason="case 7", placed_by="test", secret=KEY
                )

    result = execute.run(
        migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY, on_batch=hold_after_the_second
    )
    assert result.counts["events"] == {"active->purged": 4}
    assert batches == [2, 2]
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 4
        assert conn.execute(sa.select(sa.func.sum(store.ledger_blocks.c["items"]))).scalar_one() == 4
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one() == 0
        assert ledger.verify(conn, secret=KEY).ok


def test_the_batch_statements_are_built_once_while_nothing_changes(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven due records, two a batch: four batches, and their SQL built twice, not four times.

    PostgreSQL builds its one statement, SQLite and MariaDB their three
    (locking read, block, delete): once for the first batch (no range
    start), once for the three after it, which share it (the range's ends
    and the entry's position are parameters). Built per batch, the list
    would hold four builds (``BatchStatements._reuse`` bypassed: checked).
    """
    _events(migrated, 7)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    built: list[tuple[str, bool]] = []

    def counting(form: str, name: str) -> None:
        original = getattr(set_batches.BatchStatements, name)

        def counted(self: set_batches.BatchStatements, conn: sa.Connection, selected: Any, first: bool) -> Any:
            built.append((form, first))
            return original(self, conn, selected, first)

        monkeypatch.setattr(set_batches.BatchStatements, name, counted)

    counting("one", "_build_one_statement")
    counting("three", "_build_three_statements")
    result = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": 7}
    form = "one" if migrated.dialect.name == "postgresql" else "three"
    assert built == [(form, True), (form, False)]
    with migrated.connect() as conn:
        assert ledger.verify(conn, secret=KEY).ok
        entries = conn.execute(sa.select(store.ledger.c["items"]).where(store.ledger.c["items"] > 0)).scalars().all()
        assert sorted(entries) == [1, 2, 2, 2]


def _whole_range_choices(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per batch that counts its range (``whole_range_delete``): whether it took the range alone."""
    by_range: list[bool] = []  # per batch with a locking count: whether it took the range alone
    original = set_batches.BatchStatements._build_three_statements

    class Recording:
        """The built whole-range statements, noting which a batch reads (its count always, the rest if chosen)."""

        def __init__(self, whole: Any) -> None:
            self._whole = whole

        @property
        def count(self) -> Any:
            by_range.append(False)
            return self._whole.count

        @property
        def items(self) -> Any:
            by_range[-1] = True
            return self._whole.items

        @property
        def delete(self) -> Any:
            return self._whole.delete

    def build(self: set_batches.BatchStatements, conn: sa.Connection, selected: Any, first: bool) -> Any:
        built = original(self, conn, selected, first)
        return built if built.whole is None else dataclasses.replace(built, whole=Recording(built.whole))

    monkeypatch.setattr(set_batches.BatchStatements, "_build_three_statements", build)
    return by_range


def test_a_range_holding_a_record_not_due_is_deleted_by_the_predicate(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten records, 3 and 6 not due, two due a batch: the ranges 2..4 and 5..7 hold a record the run keeps.

    Where the dialect has ``whole_range_delete`` (MariaDB, SQLite), a batch
    whose range is all due deletes by the range alone (0..1, 8..9) and the
    two others by the predicate again: records 3 and 6 stay, and the ledger
    holds one item per record deleted. Deleting every range by its bounds
    would delete them (and the batch would roll back: 2 items, 3 rows).
    PostgreSQL's batch is one statement that deletes by row address.
    """
    events = _events(migrated, 10)
    recent = dt.datetime(2024, 12, 1, 12, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.update().where(events.c.id.in_([3, 6])).values(collected=recent))
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    by_range = _whole_range_choices(monkeypatch)
    result = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": 8}
    expected = {"mysql": [True, False, False, True], "sqlite": [True, False, False, True], "postgresql": []}
    assert by_range == expected[migrated.dialect.name]
    with migrated.connect() as conn:
        assert conn.execute(sa.select(events.c.id).order_by(events.c.id)).scalars().all() == [3, 6]
        assert conn.execute(sa.select(sa.func.sum(store.ledger_blocks.c["items"]))).scalar_one() == 8
        assert ledger.verify(conn, secret=KEY).ok


def test_with_holds_in_place_sqlite_still_takes_whole_ranges_and_the_held_record_stays(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six due records, two a batch, record 3's subject held: the range 2..4 holds it and is not whole.

    SQLite's batch holds the write lock, so no hold can arrive between its
    count and its delete: it takes the ranges 0..1 and 5..5 by the range
    alone, a hold in place or not. MariaDB, whose holds can be committed by
    another session meanwhile, counts no range while a hold is in place.
    Either way record 3 stays and gets no item.
    """
    events = _events(migrated, 6)
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", subject_key="u3", reason="x", placed_by="test", secret=KEY)
    by_range = _whole_range_choices(monkeypatch)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": 5}
    assert by_range == ([True, False, True] if migrated.dialect.name == "sqlite" else [])
    with migrated.connect() as conn:
        assert conn.execute(sa.select(events.c.id)).scalars().all() == [3]
        assert conn.execute(sa.select(sa.func.sum(store.ledger_blocks.c["items"]))).scalar_one() == 5
        assert ledger.verify(conn, secret=KEY).ok


@pytest.mark.only_on("mariadb")  # the one dialect with whole_range_delete; PostgreSQL's batch is one statement
@pytest.mark.parametrize("isolation", [None, "READ COMMITTED"])
def test_a_hold_committed_after_the_locking_read_stops_the_batch(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, isolation: str | None
) -> None:
    """A hold on record 1's subject committed by another session after the first batch's locking read keeps it.

    A hold already placed (on another subject) keeps the holds' anti-join
    in the predicate; the block and the delete must evaluate it again, as
    they do by the predicate. Before, the range's locking count (every row
    of 0..1 selected) sent the batch down the range alone and record 1 was
    purged (review `engine`, finding 1), under REPEATABLE READ and READ
    COMMITTED (shards) alike.
    """
    events = _events(migrated, 4)
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", subject_key="nobody", reason="x", placed_by="test", secret=KEY)

    def hold() -> None:
        with migrated.begin() as other:
            subjects.place_hold(other, scope="subject", subject_key="u1", reason="y", placed_by="test", secret=KEY)

    after_the_first_locking_read(monkeypatch, migrated, hold)
    engine = migrated.execution_options(isolation_level=isolation) if isolation else migrated
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(engine, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": 3}
    with migrated.connect() as conn:
        assert conn.execute(sa.select(events.c.id)).scalars().all() == [1]
        assert ledger.verify(conn, secret=KEY).ok


def test_ranges_holding_records_not_due_three_times_in_a_row_stop_the_counting(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve records, every third not due (keys that do not follow time): three ranges counted, then none.

    On MariaDB each count under READ COMMITTED keeps the range's rows that are
    not due locked until the batch commits; there and on SQLite a run whose
    ranges keep holding one stops paying for counts that never succeed. The run still purges exactly the
    due records, by the predicate.
    """
    events = _events(migrated, 12)
    recent = dt.datetime(2024, 12, 1, 12, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.update().where(events.c.id.in_([1, 4, 7, 10])).values(collected=recent))
    by_range = _whole_range_choices(monkeypatch)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": 8}
    assert by_range == ([] if migrated.dialect.name == "postgresql" else [False, False, False])
    with migrated.connect() as conn:
        assert conn.execute(sa.select(events.c.id).order_by(events.c.id)).scalars().all() == [1, 4, 7, 10]
        assert ledger.verify(conn, secret=KEY).ok
