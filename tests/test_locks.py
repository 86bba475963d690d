"""One run at a time for real, and a ledger that never claims what did not happen (issue 11, items 1-3).

A run that loses its lock (its session killed on PostgreSQL/MariaDB, its lock
row taken over as stale on SQLite) must stop before its next batch, and in
every case the ledger must hold exactly one entry per row that was really
changed: checked here against the source tables, by recomputing the
pseudonyms of the deleted keys.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from ledger_view import record_moves
from test_engine import SECRET, UTC, build, loaded_pack

from retention.engine import execute
from retention.engine.plan import PlanContext, build_planners
from retention.errors import ConcurrentChangeError, LockHeldError, LockLostError
from retention.ledger import chain as ledger
from retention.store import tables as store
from retention.store.config import create_engine

AS_OF = dt.datetime(2026, 6, 1, tzinfo=UTC)


def _pack() -> Any:
    """The engine test pack with small batches, so a run takes several."""
    pack = loaded_pack()
    return pack


def _visits(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT id FROM visits")).scalars())


def _visit_moves(engine: sa.Engine, keys: set[int]) -> list[tuple[str, str, str, Any]]:
    """The ledger's per-record moves of visits (items mapped back to their keys)."""
    return [m for m in record_moves(engine, SECRET, {"visits": keys}) if m[0] == "visits"]


def assert_ledger_matches_deletions(engine: sa.Engine, before: set[int]) -> None:
    """One entry per visit really deleted, none for a visit still there, none twice."""
    after = _visits(engine)
    deleted = before - after
    keys = [m[1] for m in _visit_moves(engine, before)]
    assert len(keys) == len(set(keys)), "a deletion was recorded twice"
    assert set(keys) == {str(k) for k in deleted}
    with engine.connect() as conn:
        assert ledger.verify(conn).ok


def _connection_ids(engine: sa.Engine) -> list[int]:
    """Server-side ids of every connection ``engine`` opens (recorded as they connect)."""
    ids: list[int] = []

    def remember(dbapi_conn: Any, _record: Any) -> None:
        if engine.dialect.name == "postgresql":
            ids.append(int(dbapi_conn.info.backend_pid))
        else:
            ids.append(int(dbapi_conn.thread_id()))

    sa.event.listen(engine, "connect", remember)
    return ids


@pytest.mark.only_on("postgresql", "mariadb")
def test_a_run_whose_session_is_killed_stops_and_the_next_run_finishes(db_url: str, migrated: sa.Engine) -> None:
    """Killing the session that holds the run lock ends the run at once; a second run completes; ledger == rows.

    (Before the lock lived on the run's own connection, the run went on
    without its lock and a second run worked beside it.)
    """
    build(migrated, 21, n=120)
    before = _visits(migrated)
    first = create_engine(db_url)
    ids = _connection_ids(first)
    killed: list[int] = []

    def kill_own_session(batch: Any) -> None:
        if killed or batch.dataset != "visits":
            return
        # Only the session that holds the run lock: that is the one a pooler or a failover drops.
        with migrated.connect() as admin:
            if migrated.dialect.name == "postgresql":
                holders = admin.execute(
                    sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ANY(:p)"),
                    {"p": ids},
                ).scalars()
                for pid in holders:
                    admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    killed.append(pid)
            else:
                pid = admin.execute(sa.text("SELECT IS_USED_LOCK(CONCAT('retention:', DATABASE()))")).scalar()
                if pid is not None:
                    admin.execute(sa.text(f"KILL CONNECTION {int(pid)}"))
                    killed.append(int(pid))

    with pytest.raises(sa.exc.DBAPIError):
        execute.run(first, _pack(), AS_OF, secret=SECRET, on_batch=kill_own_session, allow_mass=("*",))
    first.dispose()
    assert killed
    partial = before - _visits(migrated)
    assert partial and partial != set(range(1, 360)), "the first run should have stopped part way"
    second = execute.run(migrated, _pack(), AS_OF, secret=SECRET, allow_mass=("*",))
    assert second.status == "succeeded"
    assert_ledger_matches_deletions(migrated, before)


@pytest.mark.only_on("sqlite")
def test_a_run_whose_lock_is_taken_over_as_stale_stops_before_its_next_batch(migrated: sa.Engine) -> None:
    """A lock row from another machine with an old heartbeat is taken over; the first run stops at its next batch.

    (The row is made to name another host: on this machine a live holder
    keeps its lock whatever its heartbeat says, see the next test.)
    """
    build(migrated, 22, n=120)
    before = _visits(migrated)
    second: list[Any] = []

    def take_over(batch: Any) -> None:
        if second or batch.dataset != "visits":
            return
        with migrated.begin() as conn:
            conn.execute(
                store.run_lock.update().values(
                    owner="another-host:4242", heartbeat_at=dt.datetime.now(UTC) - dt.timedelta(hours=7)
                )
            )
        second.append(execute.run(migrated, _pack(), AS_OF, secret=SECRET, allow_mass=("*",)))

    with pytest.raises(LockLostError, match="lost the database lock"):
        execute.run(migrated, _pack(), AS_OF, secret=SECRET, on_batch=take_over, allow_mass=("*",))
    assert second and second[0].status == "succeeded"
    assert_ledger_matches_deletions(migrated, before)
    with migrated.connect() as conn:
        statuses = {r.status for r in conn.execute(sa.select(store.runs.c.status).where(store.runs.c.mode == "run"))}
    assert statuses == {"succeeded", "failed"}


@pytest.mark.only_on("sqlite")
def test_the_heartbeat_moves_with_every_batch(migrated: sa.Engine) -> None:
    """A long run keeps its lock row fresh, so a second run never finds it stale while it works."""
    build(migrated, 23, n=60)
    beats: list[dt.datetime] = []

    def read_heartbeat(_batch: Any) -> None:
        with migrated.connect() as conn:
            beats.append(conn.execute(sa.select(store.run_lock.c.heartbeat_at)).scalar_one())

    execute.run(migrated, _pack(), AS_OF, secret=SECRET, on_batch=read_heartbeat, allow_mass=("*",))
    assert len(beats) >= 3
    assert beats == sorted(beats) and beats[0] < beats[-1]


@pytest.mark.only_on("postgresql", "mariadb")
def test_rows_deleted_under_a_batch_get_no_entry(migrated: sa.Engine, db_url: str) -> None:
    """Rows another session deletes between selection and change are left out of the ledger.

    (SQLite cannot get there: see the next test.)
    """
    build(migrated, 24, n=40)
    pack = _pack()
    before = _visits(migrated)
    other = create_engine(db_url)
    try:
        with migrated.connect() as conn:
            planners = build_planners(conn, PlanContext(pack, AS_OF))
            conn.rollback()
            planner = planners["visits"]
            ctx = execute.RunContext(pack, "manual", AS_OF, SECRET, execute.SameDatabaseArchive())
            trans = conn.begin()
            batch, _ = planner.next_batch(conn, "active", None)
            assert batch is not None and len(batch.moves) > 2
            stolen = [m.key for m in batch.moves[:2]]
            with other.begin() as thief:
                thief.execute(sa.text("DELETE FROM visits WHERE id IN (:a, :b)"), {"a": stolen[0], "b": stolen[1]})
            applied = execute.witness(conn, ctx, planner, batch)
            execute.apply_batch(conn, ctx, planner, applied)
            trans.commit()
            assert len(applied.moves) == len(batch.moves) - 2
    finally:
        other.dispose()
    recorded = {m[1] for m in _visit_moves(migrated, before)}
    assert recorded.isdisjoint({str(k) for k in stolen})
    assert len(recorded) == len(batch.moves) - 2
    assert len(before - _visits(migrated)) == len(batch.moves)


@pytest.mark.only_on("sqlite")
def test_no_session_writes_between_a_batchs_selection_and_its_change(migrated: sa.Engine, db_url: str) -> None:
    """SQLite: a batch transaction writes the lock's heartbeat first, so it holds the only write lock
    from before the selection to the commit; another session's DELETE fails (busy), which is why the
    witness re-read is skipped there."""
    build(migrated, 26, n=40)
    pack = _pack()
    other = create_engine(db_url, lock_timeout_seconds=1)
    try:
        with migrated.connect() as conn:
            planners = build_planners(conn, PlanContext(pack, AS_OF))
            conn.rollback()
            lock = execute.RunLock(conn, "manual")
            lock.acquire()
            try:
                with conn.begin():
                    lock.verify()
                    batch, _ = planners["visits"].next_batch(conn, "active", None)
                    assert batch is not None and batch.moves
                    with pytest.raises(sa.exc.OperationalError, match="locked"), other.begin() as thief:
                        thief.execute(sa.text("DELETE FROM visits WHERE id = :a"), {"a": batch.moves[0].key})
            finally:
                lock.release()
    finally:
        other.dispose()
    assert batch.moves[0].key in _visits(migrated)


def test_a_state_row_written_twice_rolls_the_batch_back(migrated: sa.Engine) -> None:
    """Two transactions recording the same transition: the state row's key refuses the second."""
    build(migrated, 25, n=40)
    pack = _pack()
    as_of = dt.datetime(2021, 6, 1, tzinfo=UTC)
    with migrated.connect() as conn:
        planners = build_planners(conn, PlanContext(pack, as_of))
        conn.rollback()
        planner = planners["accounts"]
        ctx = execute.RunContext(pack, "manual", as_of, SECRET, execute.SameDatabaseArchive())
        with conn.begin():
            batch, _ = planner.next_batch(conn, "active", None)
            assert batch is not None and batch.moves
            conn.rollback()
        with conn.begin():
            execute.apply_batch(conn, ctx, planner, batch)
        ledger_after_first = _all_entries(migrated)
        with pytest.raises((sa.exc.IntegrityError, ConcurrentChangeError)), conn.begin():
            execute.apply_batch(conn, ctx, planner, batch)
    assert _all_entries(migrated) == ledger_after_first


def _all_entries(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one())


@pytest.mark.only_on("postgresql", "mariadb")
def test_concurrent_starts_one_runs_one_exits(db_url: str, migrated: sa.Engine) -> None:
    """Two runs started together: exactly one works, the other gets the lock error; ledger == rows."""
    build(migrated, 26, n=120)
    before = _visits(migrated)
    outcomes: list[Any] = []
    barrier = threading.Barrier(2)

    def start() -> None:
        engine = create_engine(db_url)
        try:
            barrier.wait()
            outcomes.append(execute.run(engine, _pack(), AS_OF, secret=SECRET, allow_mass=("*",)).status)
        except Exception as exc:  # the loser's LockHeldError, recorded for the assertion
            outcomes.append(type(exc).__name__)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["LockHeldError", "succeeded"]
    assert_ledger_matches_deletions(migrated, before)


@pytest.mark.only_on("sqlite")
def test_a_live_holder_keeps_its_lock_however_old_its_heartbeat(migrated: sa.Engine) -> None:
    """A clock jump ages the lock row while its run (on this machine) is alive: a second run is refused, exit 5.

    (It used to take the lock over as stale after 6 hours of heartbeat, so
    a live run lost its lock to a clock jump and failed.)
    """
    build(migrated, 27, n=60)
    before = _visits(migrated)
    refused: list[BaseException] = []

    def second_run_after_a_clock_jump(batch: Any) -> None:
        if refused or batch.dataset != "visits":
            return
        with migrated.begin() as conn:
            conn.execute(store.run_lock.update().values(heartbeat_at=dt.datetime.now(UTC) - dt.timedelta(days=30)))
        with pytest.raises(LockHeldError, match="another retention run holds the lock") as caught:
            execute.run(migrated, _pack(), AS_OF, secret=SECRET, allow_mass=("*",))
        refused.append(caught.value)

    first = execute.run(
        migrated, _pack(), AS_OF, secret=SECRET, on_batch=second_run_after_a_clock_jump, allow_mass=("*",)
    )
    assert refused and first.status == "succeeded"
    assert_ledger_matches_deletions(migrated, before)
