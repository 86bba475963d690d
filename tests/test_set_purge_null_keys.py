"""Rows whose key is NULL, the due-count cap's boundary and SQLite's write lock in the set-based purge's batches.

A record is known by its key (its ledger item, its state row, the next batch
starting after the last key), so a row whose key is NULL is no record: plan,
run and the record-by-record passes all leave it out and count it under the
dataset's anomalies as ``null_key`` (``clock_read.NULL_KEYS``). Before, the
first batch's locking read could choose one (SQLite and MariaDB sort NULL
first) and its count then balanced a range's count that held a record not
due or held, which the range alone then deleted (review ``sqlitep``, must-fix
1); a first batch of NULL keys alone never moved on (should-fix 4). Such a
key needs a key column that is not a NOT NULL primary key: a unique column
here, on every database; SQLite also lets a text primary key hold NULL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from test_set_purge_batches import KEY, PACK, _events, after_the_first_locking_read

from retention.cli import main
from retention.engine import execute, set_purge
from retention.engine.plan_values import Batch
from retention.ledger import chain as ledger
from retention.policy import validate_pack
from retention.subjects import events as subjects

AS_OF = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
OLD = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
NEW = dt.datetime(2024, 12, 1, 12, tzinfo=dt.UTC)
THREE = PACK.replace("batch_size: 2", "batch_size: 3")


def _keyed(engine: sa.Engine, rows: list[tuple[str | None, dt.datetime]], *, text_primary: bool = False) -> sa.Table:
    """``spb_events`` keyed by a nullable unique text column ``id`` (the row's own primary key is ``n``).

    ``text_primary``: ``id`` is the primary key itself, declared without
    NOT NULL (SQLite's legacy quirk lets it hold NULL; no ``n``).
    """
    own = [] if text_primary else [sa.Column("n", sa.Integer, primary_key=True, autoincrement=False)]
    key = sa.Column("id", sa.String(10), primary_key=text_primary, nullable=True, unique=not text_primary)
    columns = [*own, key, sa.Column("user_id", sa.String(40)), sa.Column("collected", sa.DateTime(timezone=True))]
    events = sa.Table("spb_events", sa.MetaData(), *columns)
    events.create(engine)
    values = [{"id": key, "user_id": f"u{key}", "collected": at} for key, at in rows]
    with engine.begin() as conn:
        conn.execute(events.insert(), [{**v, "n": n} for n, v in enumerate(values)] if own else values)
    return events


def _left(engine: sa.Engine, events: sa.Table) -> list[str | None]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(events.c.id)).scalars().all(), key=lambda k: (k is not None, k or ""))


@pytest.mark.parametrize("set_based", ["1", "0"])
@pytest.mark.parametrize("why", ["held", "not_due"])
def test_a_null_key_never_balances_a_range_holding_a_record_the_run_keeps(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, why: str, set_based: str
) -> None:
    """Rows NULL, a, b, c, all due but b (held or not due), three a batch: a and c purged, b and NULL stay.

    Before the fix, on SQLite (and MariaDB for ``not_due``) the first
    locking read chose NULL, a and c, the range's count (a, b, c) matched,
    and the range alone deleted b: held b purged and ledgered, or not-due b
    rolling the batch back (3 rows, 2 items) on every run. Plan, the
    set-based run and the record-by-record run (``set_based`` 0) agree.
    """
    monkeypatch.setenv(set_purge.SWITCH, set_based)
    events = _keyed(migrated, [(None, OLD), ("a", OLD), ("b", NEW if why == "not_due" else OLD), ("c", OLD)])
    if why == "held":
        with migrated.begin() as conn:
            subjects.place_hold(conn, scope="subject", subject_key="ub", reason="x", placed_by="t", secret=KEY)
    loaded = validate_pack(yaml.safe_load(THREE), Path("<test>"), THREE)
    planned = execute.plan(migrated, loaded, AS_OF)
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert planned.transitions["events"] == {"active->purged": 2}
    assert result.counts["events"] == {"active->purged": 2}
    assert not result.failures
    assert planned.anomalies["events"]["null_key"] == 1
    assert result.anomalies["events"]["null_key"] == 1
    assert _left(migrated, events) == [None, "b"]
    with migrated.connect() as conn:
        assert ledger.verify(conn, secret=KEY).ok


@pytest.mark.parametrize("set_based", ["1", "0"])
def test_a_first_batch_of_null_keys_alone_ends(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, set_based: str
) -> None:
    """Three NULL keys then a, three a batch: one batch purges a and the run ends (before, the batch came back).

    The NULL keys' batch had no last key, so the next batch started where
    it did, for ever (review ``sqlitep``, should-fix 4; on main too).
    """
    monkeypatch.setenv(set_purge.SWITCH, set_based)
    events = _keyed(migrated, [(None, OLD), (None, OLD), (None, OLD), ("a", OLD)])
    loaded = validate_pack(yaml.safe_load(THREE), Path("<test>"), THREE)
    seen: list[int] = []

    def bounded(batch: Batch) -> None:
        seen.append(batch.moved)
        if len(seen) > 5:
            raise RuntimeError(f"looping: {seen}")

    result = execute.run(migrated, loaded, AS_OF, secret=KEY, on_batch=bounded)
    assert result.counts["events"] == {"active->purged": 1}
    assert result.anomalies["events"]["null_key"] == 3
    assert _left(migrated, events) == [None, None, None]


@pytest.mark.only_on("sqlite")
def test_sqlite_a_text_primary_key_holding_null(migrated: sa.Engine) -> None:
    """SQLite's legacy quirk: a text primary key declared without NOT NULL holds NULL; counted, never moved."""
    events = _keyed(migrated, [(key, OLD) for key in (None, "a", "b", "c")], text_primary=True)
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", subject_key="ub", reason="x", placed_by="t", secret=KEY)
    loaded = validate_pack(yaml.safe_load(THREE), Path("<test>"), THREE)
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert result.counts["events"] == {"active->purged": 2}
    assert result.anomalies["events"]["null_key"] == 1
    assert _left(migrated, events) == [None, "b"]


def test_plan_says_how_many_rows_are_not_purged_for_a_null_key(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """The plan's table is followed by one line for the dataset, a count and no key or value."""
    _keyed(migrated, [(None, OLD), (None, NEW), ("a", OLD)])
    path = tmp_path / "pack.yaml"
    path.write_text(THREE)
    out = CliRunner().invoke(main, ["plan", "--rules", str(path), "--db", db_url, "--as-of", "2025-01-01"])
    assert out.exit_code == 0, out.output
    assert "events: skipped, never moved: key is NULL (2 rows)" in out.output


def test_a_key_without_null_lists_no_null_key_count(migrated: sa.Engine) -> None:
    """The count is listed only when a row has a NULL key: plan's and the run's stored anomalies stay as they were.

    A NULL clock makes the run store its anomalies (it stores none when all are zero).
    """
    events = _keyed(migrated, [("a", OLD), ("b", NEW), ("c", OLD)])
    with migrated.begin() as conn:
        conn.execute(events.update().where(events.c.id == "c").values(collected=None))
    loaded = validate_pack(yaml.safe_load(THREE), Path("<test>"), THREE)
    planned = execute.plan(migrated, loaded, AS_OF)
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert result.counts["events"] == {"active->purged": 1}
    expected = {"null": 1, "zero": 0, "invalid": 0, "future": 0}
    assert planned.anomalies["events"] == expected
    assert result.anomalies["events"] == expected


@pytest.mark.only_on("sqlite")  # the one dialect that walks the key order (samples_by_key_order)
@pytest.mark.parametrize(("due", "by_key_order"), [(2, False), (3, True)])
def test_more_than_a_batch_due_walks_the_key_order(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, due: int, by_key_order: bool
) -> None:
    """Two a batch: two due records keep the clock's index, three walk the key order (the due count's cap).

    The count stops at a batch and one row (``DueDays.create``); stopping at
    a batch (``at_most=batch_size``) would never walk the key order and bring
    back SQLite's quadratic purge (review ``sqlitep``, should-fix 3).
    """
    events = _events(migrated, 4)
    with migrated.begin() as conn:
        conn.execute(events.update().where(events.c.id >= due).values(collected=NEW))
    walks: list[bool] = []
    original = set_purge._without_clock_index

    def recorded(sql: Any) -> Any:
        walks.append(True)
        return original(sql)

    monkeypatch.setattr(set_purge, "_without_clock_index", recorded)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert result.counts["events"] == {"active->purged": due}
    assert bool(walks) is by_key_order


@pytest.mark.only_on("sqlite")
def test_sqlite_a_hold_from_another_connection_waits_for_the_batch(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection's hold, tried after the first batch's locking read, is refused: the batch holds the lock.

    With holds in place SQLite still takes whole ranges because nothing can
    commit a hold before the batch does (``batch_holds_write_lock``); if the
    run lock's UPDATE stopped opening each batch, this hold would commit
    and the range could delete its record (review ``sqlitep``, should-fix 5).
    """
    events = _events(migrated, 4)
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", subject_key="nobody", reason="x", placed_by="test", secret=KEY)
    outcome: list[str] = []
    other = sa.create_engine(migrated.url, connect_args={"timeout": 0.3})

    def hold() -> None:
        try:
            with other.begin() as second:
                subjects.place_hold(second, scope="subject", subject_key="u1", reason="y", placed_by="t", secret=KEY)
            outcome.append("committed")
        except sa.exc.OperationalError as exc:
            outcome.append(f"refused: {exc.orig}")

    after_the_first_locking_read(monkeypatch, migrated, hold)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    try:
        result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    finally:
        other.dispose()
    assert outcome == ["refused: database is locked"]
    assert result.counts["events"] == {"active->purged": 4}
    with migrated.connect() as conn:
        assert conn.execute(sa.select(events.c.id)).scalars().all() == []
        assert ledger.verify(conn, secret=KEY).ok
