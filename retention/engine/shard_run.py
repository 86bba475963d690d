"""Sharded runs: one logical run of N shards (docs/scaling.md).

Each shard joins its run group, waits for the group's key bounds, runs its
own share of every dataset, and the last shard to finish closes the group.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
import structlog

from retention.dialects import dialect_for
from retention.engine.apply import RunContext, _archive_keys, _for_update, _Interrupted
from retention.engine.archive import ArchiveStore, SameDatabaseArchive
from retention.engine.null_keys import NullKeyNote
from retention.engine.plan import (
    Batch,
    EngineTables,
    PlanContext,
    PlanSummary,
    build_planners,
)
from retention.engine.run_datasets import (
    _RETRIES,
    RunResult,
    _anomalies_json,
    _close_run,
    _record_pack,
    _require_schema,
    _retryable,
    _rounded,
    _run_datasets,
    _short_notice_entry,
    planners_at,
)
from retention.engine.run_lock import RunLock, _owner, reading
from retention.engine.shards import Bounds, ShardFilter, ShardSpec, compute_bounds
from retention.errors import (
    ConfigError,
    describe_failure,
)
from retention.ledger import chain as ledger
from retention.policy import LoadedPack
from retention.store import tables as store
from retention.store import tally
from retention.timing.clock import utcnow

log = structlog.get_logger("retention")


_GROUPS = uuid.UUID("5d1e4f0a-8f3b-4d6c-9a57-3c2b1e0f9d42")
_DONE = ("succeeded", "partial", "guarded")  # a shard in any other state runs again


def group_run_id(run_group: str) -> str:
    """The logical run of a run group: the same id in every shard's process."""
    return str(uuid.uuid5(_GROUPS, run_group))


def default_run_group(as_of: dt.datetime, shards: int) -> str:
    """The group shards join when none is named: the as-of day and the shard count."""
    return f"{as_of.astimezone(dt.UTC):%Y-%m-%d}-{shards}"


def _join_group(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    run_group: str,
    shard: ShardSpec,
    as_of_fixed: bool,
    short_notice: dict[str, Any] | None,
) -> tuple[Bounds, int]:
    """Read the group's bounds and as-of, creating the group (bounds from this snapshot) if this shard is first.

    Returns the bounds and this shard's attempt number (1 for its first process).

    Shards that start together race to create it: the database keeps one
    row (primary key), the others roll back and read it. The row is created
    first, without bounds, in a short transaction; its creator then computes
    them once (:func:`_group_bounds`) while the other shards wait for them.
    """
    runs, loaded = store.runs, ctx.loaded
    claimed = False
    for attempt in range(_RETRIES + 1):
        try:
            with conn.begin():
                lock.verify()  # SQLite: the write lock first, so concurrent shards take turns
                row = conn.execute(sa.select(runs).where(runs.c.id == ctx.run_id)).first()
                bounds_text: str | None = None
                if row is None:
                    _record_pack(conn, loaded, ctx.now())
                    conn.execute(
                        runs.insert().values(
                            id=ctx.run_id,
                            mode="run",
                            pack_id=loaded.id,
                            pack_digest=loaded.digest,
                            as_of=ctx.as_of,
                            started_at=ctx.now(),
                            status="running",
                            run_group=run_group,
                            shards=shard.count,
                            shard_bounds=None,
                        )
                    )
                    claimed = True
                    if short_notice is not None:
                        ledger.append(conn, [_short_notice_entry(ctx, short_notice)], ctx.now(), secret=ctx.secret)
                    log.info("run_group_started", run_group=run_group, shards=shard.count, run_id=ctx.run_id)
                else:
                    if row.pack_digest != loaded.digest or row.shards != shard.count or row.shards is None:
                        raise ConfigError(
                            f"run group {run_group!r} was started with "
                            + (
                                f"{row.shards} shards and pack {row.pack_id} ({row.pack_digest[:12]})"
                                if row.shards is not None
                                else "no shards"
                            )
                            + f"; this shard names {shard.count} shards and pack {loaded.id} ({loaded.digest[:12]})"
                        )
                    if row.status == "abandoned":
                        raise ConfigError(
                            f"run group {run_group!r} was closed as abandoned; start the shards under a new group"
                        )
                    if as_of_fixed and row.as_of != ctx.as_of:
                        raise ConfigError(
                            f"run group {run_group!r} runs as of {row.as_of.isoformat()}, not {ctx.as_of.isoformat()}"
                        )
                    ctx.as_of = row.as_of
                    bounds_text = row.shard_bounds
                rs = store.run_shards
                mine = (rs.c.run_id == ctx.run_id) & (rs.c.shard == shard.index)
                before = conn.execute(sa.select(rs.c.attempts).where(mine)).first()
                attempts = 1 if before is None else int(before.attempts or 1) + 1
                conn.execute(rs.delete().where(mine))
                conn.execute(
                    rs.insert().values(
                        run_id=ctx.run_id,
                        shard=shard.index,
                        status="running",
                        owner=_owner(),
                        started_at=ctx.now(),
                        attempts=attempts,
                    )
                )
            ledger.lock_timing(conn)
            if bounds_text is not None:
                return Bounds.from_json(bounds_text), attempts
            return _group_bounds(conn, lock, ctx, shard, claimed), attempts
        except sa.exc.DBAPIError as exc:
            ledger.lock_timing(conn)
            if exc.connection_invalidated or attempt >= _RETRIES:
                raise
            if not isinstance(exc, sa.exc.IntegrityError) and not _retryable(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


BOUNDS_WAIT = 600.0
"""Seconds a shard waits for the group's creator to record the bounds before it computes them itself."""


def _group_bounds(conn: sa.Connection, lock: RunLock, ctx: RunContext, shard: ShardSpec, claimed: bool) -> Bounds:
    """The group's bounds: computed here once if this shard created the group, else waited for.

    A shard that waits past :data:`BOUNDS_WAIT` (its creator died before
    recording them) computes them itself; the first to record them wins
    (``WHERE shard_bounds IS NULL``) and every shard uses the recorded ones.
    """
    runs = store.runs
    deadline = time.monotonic() + BOUNDS_WAIT
    pause = 0.05
    while not claimed and time.monotonic() < deadline:
        with reading(conn):
            text = conn.execute(sa.select(runs.c.shard_bounds).where(runs.c.id == ctx.run_id)).scalar()
        if text is not None:
            return Bounds.from_json(text)
        if ctx.should_stop is not None and ctx.should_stop():
            raise _Interrupted
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    for attempt in range(_RETRIES + 1):
        try:
            with conn.begin():
                lock.verify()
                # A transaction of its own, no schema check in it: no catalog read to reflect from (planners_at).
                planners = build_planners(conn, PlanContext(ctx.loaded, ctx.as_of))
                bounds = compute_bounds(conn, planners, shard.count)
                recorded = conn.execute(
                    runs.update()
                    .where(runs.c.id == ctx.run_id, runs.c.shard_bounds.is_(None))
                    .values(shard_bounds=bounds.to_json())
                ).rowcount
                if recorded != 1:
                    text = conn.execute(sa.select(runs.c.shard_bounds).where(runs.c.id == ctx.run_id)).scalar_one()
                    bounds = Bounds.from_json(text)
            log.info("shard_bounds_recorded" if recorded == 1 else "shard_bounds_read", run_id=ctx.run_id)
            return bounds
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or attempt >= _RETRIES or not _retryable(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _shard_done(conn: sa.Connection, lock: RunLock, ctx: RunContext, result: RunResult, shard: ShardSpec) -> bool:
    """Record this shard's outcome; True when it is the last of its group to finish (it then closes the run).

    The group's run row is locked first, so two shards finishing together
    take turns and exactly one of them sees every shard done.
    """
    runs, rs = store.runs, store.run_shards
    for attempt in range(_RETRIES + 1):
        try:
            with conn.begin():
                lock.verify()
                # (nothing to lock where the batch holds the write lock: _for_update is then a plain read)
                conn.execute(_for_update(conn, sa.select(runs.c.id).where(runs.c.id == ctx.run_id))).first()
                conn.execute(
                    rs.update()
                    .where(rs.c.run_id == ctx.run_id, rs.c.shard == shard.index)
                    .values(**_shard_values(result, committed=(conn, ctx.run_id, shard.index)))
                )
                statuses = conn.execute(
                    _for_update(conn, sa.select(rs.c.shard, rs.c.status).where(rs.c.run_id == ctx.run_id))
                ).all()
                done = len(statuses) == shard.count and all(r.status in _DONE for r in statuses)
                if not done:
                    return False
                claimed = conn.execute(
                    runs.update().where(runs.c.id == ctx.run_id, runs.c.status == "running").values(status="closing")
                ).rowcount
                return claimed == 1
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or attempt >= _RETRIES or not _retryable(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _shard_values(
    result: RunResult, error: str | None = None, committed: tuple[sa.Connection, str, int] | None = None
) -> dict[str, Any]:
    """The shard's row; ``committed`` (connection, run, shard): its counts from every attempt, not this one's only."""
    stats = {"batches": result.batches, "ledger_lock": _rounded(result.ledger_lock), "attempts": result.attempts}
    counts, erased = result.counts, result.erased
    if committed is not None:
        counts, erased = tally.counts(*committed), tally.erased(*committed)
    return {
        "status": result.status,
        "finished_at": utcnow(),
        "counts": json.dumps(counts, sort_keys=True),
        "erased": json.dumps({str(k): v for k, v in erased.items()}, sort_keys=True),
        "stats": json.dumps(stats, sort_keys=True),
        "error": error
        or (
            json.dumps({**result.failures, **result.guarded}, sort_keys=True)
            if result.failures or result.guarded
            else None
        ),
    }


_WORST = ("failed", "partial", "guarded", "succeeded")


def _close_group(conn: sa.Connection, engine: sa.Engine, ctx: RunContext) -> list[NullKeyNote]:
    """The last shard closes the logical run: erasure requests, minimising, the totals.

    Returns why erasure requests stay open, which the closing shard reports
    as an unsharded run would (only it settles the requests); the group's
    record keeps them as a whole run's does (its anomalies stay per shard).
    """
    rs, runs = store.run_shards, store.runs
    with reading(conn):
        rows = conn.execute(sa.select(rs).where(rs.c.run_id == ctx.run_id)).all()
        planners = build_planners(conn, PlanContext(ctx.loaded, ctx.as_of))
        # What every attempt of every shard committed, each record once (retention.store.tally).
        erased = tally.erased(conn, ctx.run_id)
        counts = tally.counts(conn, ctx.run_id)
    errors: dict[str, Any] = {}
    for row in rows:
        if row.error:
            errors[f"shard {row.shard}"] = json.loads(row.error)
    notes = _close_run(conn, engine, ctx, planners, erased)
    status: str = min((str(r.status) for r in rows), key=lambda s: _WORST.index(s) if s in _WORST else 0)
    with conn.begin():
        conn.execute(
            runs.update()
            .where(runs.c.id == ctx.run_id)
            .values(
                status=status,
                finished_at=utcnow(),
                counts=json.dumps(counts, sort_keys=True),
                error=json.dumps(errors, sort_keys=True) if errors else None,
                anomalies=_anomalies_json({}, notes),
            )
        )
    log.info("run_group_finished", run_id=ctx.run_id, status=status, counts=counts)
    return notes


def run_shard(
    engine: sa.Engine,
    loaded: LoadedPack,
    as_of: dt.datetime,
    *,
    secret: bytes,
    shard: ShardSpec,
    run_group: str | None = None,
    as_of_fixed: bool = True,
    archive: ArchiveStore | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    allow_mass: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
    short_notice: dict[str, Any] | None = None,
) -> RunResult:
    """Apply shard ``shard`` of the run group ``run_group``: every pass of every dataset, this shard's keys only.

    The shards of a group make one logical run (one row in ``retention_runs``,
    its ledger entries under one run id); each holds its own lock, so they
    run side by side, and the last one to finish closes the run. Without
    ``as_of_fixed`` a shard takes the as-of the group started with.
    """
    group = run_group or default_run_group(as_of, shard.count)
    run_id = group_run_id(group)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    store_ = archive or SameDatabaseArchive()
    ctx = RunContext(loaded, run_id, as_of, secret, store_, should_stop=should_stop, retry=True, shard=shard.index)
    result = RunResult(run_id, "running", started_at=ctx.now(), shard=str(shard))
    joined = False
    try:
        with engine.connect() as conn:
            isolation = dialect_for(conn).shard_isolation_level
            if isolation is not None:
                conn = conn.execution_options(isolation_level=isolation)
            lock = RunLock(conn, run_id, shard)
            lock.acquire()
            try:
                with conn.begin():
                    _require_schema(conn, loaded)
                bounds, result.attempts = _join_group(conn, lock, ctx, group, shard, as_of_fixed, short_notice)
                joined = True
                lock.check_whole_run_free()  # again, now that the group is visible (retention.store.run_groups)
                log.info(
                    "shard_started",
                    shard=str(shard),
                    run_group=group,
                    as_of=ctx.as_of.isoformat(),
                    attempt=result.attempts,
                )
                store_.bind(engine)
                # Shards run side by side: only the group's closing shard may rotate the key file.
                ctx.archive_keys = _archive_keys(engine, finish_rotation=False)
                plan_ctx = PlanContext(loaded, ctx.as_of, shard=ShardFilter(shard, bounds))
                # Not from a schema check's catalog read (planners_at): the check above is made without
                # for_reflection, so it keeps no read to hand over; these planners read their own.
                with reading(conn):
                    planners = build_planners(conn, plan_ctx)
                _run_datasets(conn, lock, ctx, plan_ctx, planners, result, on_batch, allow_mass)
                result.status = "partial" if result.failures else "guarded" if result.guarded else "succeeded"
                if _shard_done(conn, lock, ctx, result, shard):
                    result.open_requests = _close_group(conn, engine, ctx)
                    result.notes += [note.sentence for note in result.open_requests]
            finally:
                lock.release()
    except _Interrupted:
        result.status = "interrupted"
        log.warning("run_interrupted", batches=result.batches, shard=str(shard))
        _record_shard(engine, ctx, result, shard, None)
    except BaseException as exc:
        if joined and result.status == "running":
            result.status = "failed"
            _record_shard(engine, ctx, result, shard, describe_failure(exc))
        raise
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
    result.finished_at = utcnow()
    log.info(
        "shard_finished",
        run_id=run_id,
        shard=str(shard),
        status=result.status,
        counts=result.counts,
        batches=result.batches,
        ledger_lock=_rounded(result.ledger_lock),
    )
    return result


def _record_shard(engine: sa.Engine, ctx: RunContext, result: RunResult, shard: ShardSpec, error: str | None) -> None:
    rs = store.run_shards
    try:
        with engine.begin() as conn:
            conn.execute(
                rs.update()
                .where(rs.c.run_id == ctx.run_id, rs.c.shard == shard.index)
                .values(**_shard_values(result, error))
            )
    except sa.exc.DBAPIError:
        log.error("run_record_failed", run_id=ctx.run_id, shard=str(shard))


def plan_shards(engine: sa.Engine, loaded: LoadedPack, as_of: dt.datetime, shards: int) -> list[dict[str, Any]]:
    """How ``--shard I/N`` splits the run: per dataset and shard, the key range and what moves.

    The bounds are computed from the database as it is now, as the first
    shard of a group would compute them.
    """
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        planners, missing = planners_at(conn, loaded, as_of)  # reflected from the check's catalog read
        tables = EngineTables() if missing is None else EngineTables.absent()
        bounds = compute_bounds(conn, planners, shards)
        for index in range(shards):
            spec = ShardSpec(index, shards)
            shard = ShardFilter(spec, bounds)
            ctx = PlanContext(loaded, as_of, tables=tables, shard=shard)
            summary = PlanSummary(loaded.id, loaded.digest, as_of)
            for name, planner in build_planners(conn, ctx).items():
                planner.summarize(conn, summary, sample_size=0)
                _, low, high = shard.range_of(name)
                per = summary.transitions.get(name, {})
                rows.append(
                    {
                        "dataset": name,
                        "shard": str(spec),
                        "key_space": bounds.datasets[name],
                        "from": low,
                        "below": high,
                        "records": planner.table_rows(conn),
                        "transitions": sum(per.values()),
                        "counts": dict(per),
                    }
                )
        conn.rollback()
    return rows
