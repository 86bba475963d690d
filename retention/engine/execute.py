"""Runs: the lock, batches, transactions and the run record.

Each batch is one transaction on one connection: it selects the records due
(so selection and change see one snapshot), changes the data, records the
new states and appends the ledger entries. Killing the process at any moment
therefore loses nothing and leaves nothing half done; the next run picks up
what remains, and a second run for the same as-of finds nothing to do.

This module is :func:`plan` and :func:`run`; the lock is
:mod:`~retention.engine.run_lock`, one batch's transaction
:mod:`~retention.engine.apply`, running the datasets batch by batch
:mod:`~retention.engine.run_datasets`, sharded runs
:mod:`~retention.engine.shard_run` (their public names re-exported from here).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
import structlog

from retention.engine import erasure_mask, partitions, set_purge
from retention.engine.apply import (
    RunContext,
    _archive_keys,
    _Interrupted,
    apply_batch,
    witness,
)
from retention.engine.archive import ArchiveStore, SameDatabaseArchive
from retention.engine.clock_read import NULL_KEYS
from retention.engine.null_keys import null_key_notes
from retention.engine.plan import (
    Batch,
    PlanContext,
    PlanSummary,
    build_planners,
)
from retention.engine.run_datasets import (
    GuardTrip,
    RunResult,
    _close_abandoned_runs,
    _close_run,
    _finish,
    _record_pack,
    _require_schema,
    _rounded,
    _run_datasets,
    _short_notice_entry,
    engine_tables_missing,
    guard_message,
    guard_trips,
    planners_at,
)
from retention.engine.run_lock import (
    LOCK_NAME,
    STALE_AFTER,
    RunLock,
    holder_gone,
    holding_lock,
    reading,
    run_lock,
)
from retention.engine.shard_run import (
    BOUNDS_WAIT,
    default_run_group,
    group_run_id,
    plan_shards,
    run_shard,
)
from retention.errors import describe_failure
from retention.ledger import chain as ledger
from retention.policy import LoadedPack
from retention.store import run_groups
from retention.store import tables as store
from retention.timing.clock import utcnow

log = structlog.get_logger("retention")


# --------------------------------------------------------------------------
# Plan and run
# --------------------------------------------------------------------------


def plan(
    engine: sa.Engine,
    loaded: LoadedPack,
    as_of: dt.datetime,
    *,
    on_batch: Callable[[Batch], None] | None = None,
    datasets: Sequence[str] | None = None,
    record: bool = False,
) -> PlanSummary:
    """A dry run: every transition ``run`` would perform at ``as_of``.

    It never writes to source tables. With ``record`` it keeps its counts in
    the engine's runs table and compares them with the previous plan.
    """
    summary = PlanSummary(loaded.id, loaded.digest, as_of)
    with engine.connect() as conn:
        planners, missing = planners_at(conn, loaded, as_of)
        if missing is not None:
            record = False
            summary.notes.append(
                f"{missing}: planned as a first run would find them (no holds, no erasure requests, "
                "no records in later states), and without the change since the last plan"
            )
        for name, planner in planners.items():
            if datasets is not None and name not in datasets:
                continue
            if erasure_mask.masks(planner) and (masked := erasure_mask.count(planner, conn)):
                # Run masks these before any lifecycle pass (retention/engine/erasure_mask.py).
                summary.transitions.setdefault(name, {})[erasure_mask.TRANSITION] = masked
            planner.summarize(conn, summary, on_batch=on_batch)
            if partitions.eligible(planner, conn):
                # Counted above with the other records; this says how run will purge them.
                assert planner.sql is not None
                dropped = partitions.droppable(conn, planner)
                counted = partitions.tally(conn, dropped, planner.sql.clocks[0].clock.column)
                summary.partitions[name] = [
                    {"partition": p.label, "rows": counted.rows[p.label], "counted": counted.how[p.label]}
                    for p in dropped
                ]
            anomalies = {str(k): v for k, v in planner.anomaly_counts(conn).items()}
            if name in summary.partitions and (nulls := partitions.null_keys(conn, planner, dropped)):
                # The drop takes the NULL-key rows with the rest, and run and the ledger count them purged.
                moves = summary.transitions.setdefault(name, {})
                moves["active->purged"] = moves.get("active->purged", 0) + nulls
                anomalies[NULL_KEYS] -= nulls
                if not anomalies[NULL_KEYS]:
                    del anomalies[NULL_KEYS]
            summary.anomalies[name] = anomalies
            summary.held_back.extend(planner.held_back(conn))
        # Every dataset, as the run's settle step looks at every one; a counted one without NULL keys costs nothing.
        summary.notes += null_key_notes(conn, planners.values(), summary.anomalies)
        conn.rollback()
    if record:
        try:
            _record_plan(engine, summary)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            summary.notes.append(
                "this plan was not recorded: this database role cannot write the engine's runs table "
                "(--no-record says so explicitly)"
            )
    return summary


def _record_plan(engine: sa.Engine, summary: PlanSummary) -> None:
    """Keep this plan's counts so that the next plan can say what changed."""
    runs = store.runs
    now = utcnow()
    with engine.begin() as conn:
        previous = conn.execute(
            sa.select(runs.c.id, runs.c.as_of, runs.c.counts)
            .where(runs.c.mode == "plan", runs.c.pack_id == summary.pack_id)
            .order_by(runs.c.started_at.desc())
            .limit(1)
        ).first()
        if previous is not None:
            summary.previous = {
                "run_id": previous.id,
                "as_of": previous.as_of,
                "counts": json.loads(previous.counts or "{}"),
            }
        conn.execute(
            runs.insert().values(
                id=str(uuid.uuid4()),
                mode="plan",
                pack_id=summary.pack_id,
                pack_digest=summary.pack_digest,
                as_of=summary.as_of,
                started_at=now,
                finished_at=now,
                status="planned",
                counts=json.dumps(summary.transitions, sort_keys=True),
            )
        )


def run(
    engine: sa.Engine,
    loaded: LoadedPack,
    as_of: dt.datetime,
    *,
    secret: bytes,
    archive: ArchiveStore | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    datasets: Sequence[str] | None = None,
    allow_mass: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
    short_notice: dict[str, Any] | None = None,
    on_locked: Callable[[], None] | None = None,
    notice_waiting: dict[str, Any] | None = None,
    lock: RunLock | None = None,
) -> RunResult:
    """Apply every transition due at ``as_of``, one transaction per batch.

    ``allow_mass`` names datasets (or ``*``) whose mass-deletion guards the
    operator overrides for this run; each override is recorded in the run
    and in the ledger. ``short_notice``: the operator applies a pack version
    before its notice ran out (the dates, recorded in the ledger).
    ``notice_waiting``: a later version is refused for its notice and the
    datasets it changes wait (``datasets`` names the others; the dates and
    the waiting datasets are recorded in the ledger).
    ``on_locked`` is called once the lock is held and the run recorded,
    before any planning: what a progress display plans to know its totals
    then costs nothing to a run that would be refused the lock.
    ``lock``: the lock already held (:func:`holding_lock`; the run is then
    ``lock.run_id``, works on ``lock.conn`` and releases it when done);
    without it the run takes one of its own.
    """
    set_purge.enabled()  # a bad RETENTION_SET_BASED is refused before the lock, not found mid-run
    if lock is None:
        with holding_lock(engine) as own:
            return run(
                engine,
                loaded,
                as_of,
                secret=secret,
                archive=archive,
                on_batch=on_batch,
                datasets=datasets,
                allow_mass=allow_mass,
                should_stop=should_stop,
                short_notice=short_notice,
                on_locked=on_locked,
                notice_waiting=notice_waiting,
                lock=own,
            )
    run_id = lock.run_id
    bound = log.bind(run_id=run_id, pack=loaded.id)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    store_ = archive or SameDatabaseArchive()
    ctx = RunContext(loaded, run_id, as_of, secret, store_, should_stop=should_stop)
    result = RunResult(run_id, "running", started_at=ctx.now())
    conn = lock.conn
    try:
        try:
            with conn.begin():
                _require_schema(conn, loaded)
                run_groups.refuse_beside_open_group(conn)  # one rule on every database (retention.store.run_groups)
                _record_pack(conn, loaded, ctx.now())
                _close_abandoned_runs(conn)
                conn.execute(
                    store.runs.insert().values(
                        id=run_id,
                        mode="run",
                        pack_id=loaded.id,
                        pack_digest=loaded.digest,
                        as_of=as_of,
                        started_at=ctx.now(),
                        status="running",
                    )
                )
                if short_notice is not None:
                    ledger.append(conn, [_short_notice_entry(ctx, short_notice)], ctx.now(), secret=ctx.secret)
                if notice_waiting is not None:
                    entry = _short_notice_entry(ctx, notice_waiting, "notice_waiting")
                    ledger.append(conn, [entry], ctx.now(), secret=ctx.secret)
            bound.info("run_started", as_of=as_of.isoformat(), mode="run")
            if notice_waiting is not None:
                bound.warning(
                    "notice_waiting",
                    version=notice_waiting["version"],
                    not_before=notice_waiting["not_before"],
                    waiting=notice_waiting["waiting"],
                )
            if on_locked is not None:
                on_locked()
            store_.bind(engine)  # a store of another main database is refused before any payload moves
            ctx.archive_keys = _archive_keys(engine)
            plan_ctx = PlanContext(loaded, as_of)
            with reading(conn):
                planners = build_planners(conn, plan_ctx)
            if datasets is not None:
                plan_ctx.skipped |= {n for n in planners if n not in datasets}
            _run_datasets(conn, lock, ctx, plan_ctx, planners, result, on_batch, allow_mass)
            result.open_requests = _close_run(conn, engine, ctx, planners, result.erased)
            result.notes += [note.sentence for note in result.open_requests]
            result.status = "partial" if result.failures else "guarded" if result.guarded else "succeeded"
        finally:
            lock.release()  # before the run is closed, as a lock of its own would be
    except _Interrupted:
        result.status = "interrupted"
        bound.warning("run_interrupted", batches=result.batches)
    except BaseException as exc:
        if result.status == "running":
            result.status = "failed"
            _finish(engine, result, error=describe_failure(exc), swallow=True)
        raise
    _finish(engine, result)
    bound.info(
        "run_finished",
        status=result.status,
        counts=result.counts,
        batches=result.batches,
        ledger_lock=_rounded(result.ledger_lock),
    )
    structlog.contextvars.unbind_contextvars("run_id")
    return result


# The names this module held before it was split keep working from here (re-exported).
__all__ = [
    "BOUNDS_WAIT",
    "LOCK_NAME",
    "STALE_AFTER",
    "Batch",
    "GuardTrip",
    "RunContext",
    "RunLock",
    "RunResult",
    "SameDatabaseArchive",
    "apply_batch",
    "default_run_group",
    "engine_tables_missing",
    "group_run_id",
    "guard_message",
    "guard_trips",
    "holder_gone",
    "holding_lock",
    "plan",
    "plan_shards",
    "planners_at",
    "reading",
    "run",
    "run_lock",
    "run_shard",
    "witness",
]
