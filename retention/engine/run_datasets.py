"""Running a pack's datasets batch by batch: retries, guards, erasure requests, closing the run.

:func:`retention.engine.execute.run` and :func:`retention.engine.shard_run.run_shard`
both drive their datasets through :func:`_run_datasets`; the run record and its
result (:class:`RunResult`) are shared by whole and sharded runs.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
import structlog

from retention.engine import erasure_mask, partitions, set_archive, set_purge
from retention.engine.apply import RunContext, _Interrupted, _shred_keys, apply_batch, witness
from retention.engine.null_keys import NullKeyNote, null_key_requests, stored_anomalies
from retention.engine.plan import (
    Batch,
    DatasetPlanner,
    EngineTables,
    Move,
    PlanContext,
    PlanSummary,
    build_planners,
)
from retention.engine.run_lock import RunLock, reading
from retention.engine.schema import check_schema
from retention.errors import (
    ConcurrentChangeError,
    SchemaError,
    describe_database_error,
)
from retention.ledger import chain as ledger
from retention.ledger import evidence, pseudonyms
from retention.policy import LoadedPack
from retention.policy.model import Guard
from retention.store import migrate, tally
from retention.store import tables as store
from retention.timing.clock import utcnow

log = structlog.get_logger("retention")


def _require_schema(conn: sa.Connection, loaded: LoadedPack, *, for_reflection: bool = False) -> None:
    errors = [f for f in check_schema(conn, loaded.pack, for_reflection=for_reflection) if f.level == "error"]
    if errors:
        raise SchemaError([str(f) for f in errors])


def engine_tables_missing(conn: sa.Connection) -> str | None:
    """Why the engine's tables cannot be read (not created, outdated, no privilege), or None.

    ``plan`` goes on without them (a read-only role, or a database where
    ``retention db upgrade`` never ran); everything else needs them.
    """
    head = migrate.head_revision()
    try:
        revision = migrate.revision_on(conn)
        if revision != head:
            return f"the engine's tables are at revision {revision or 'none'}, not {head} (retention db upgrade)"
        # One statement reads a row of each (a plan's round trips are its fixed cost): any it may not read fails it.
        tables = (store.holds, store.erasure_requests, store.record_states, store.review_batches, store.review_items)
        conn.execute(
            sa.select(*(sa.select(sa.literal(1)).select_from(t).limit(1).scalar_subquery() for t in tables))
        ).all()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        conn.rollback()  # nothing was written; PostgreSQL needs a fresh transaction after an error
        return "the engine's tables cannot be read by this database role"
    return None


def planners_at(
    conn: sa.Connection, loaded: LoadedPack, as_of: dt.datetime
) -> tuple[dict[str, DatasetPlanner], str | None]:
    """The planners :func:`plan` walks at ``as_of``, in execution order (for a caller that counts its own way).

    Also which of the engine's tables are missing, if any: then they plan as
    a first run would find them (no holds, no erasure requests, no records
    in later states).
    """
    # The planners reflect from what the check read, in this same transaction (rowfilter.read_catalog). A run
    # cannot: it checks in a transaction of its own and commits (its lock, its run record) before it plans.
    # The engine tables first: where this role may not read them, their check rolls back, which would end the
    # transaction the schema check's read is kept for.
    missing = engine_tables_missing(conn)
    _require_schema(conn, loaded, for_reflection=True)
    ctx = PlanContext(loaded, as_of, tables=EngineTables() if missing is None else EngineTables.absent())
    return build_planners(conn, ctx), missing


@dataclass
class RunResult:
    """The outcome of one run, as recorded in ``retention_runs``."""

    run_id: str
    status: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    guarded: dict[str, str] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    anomalies: dict[str, dict[str, int]] = field(default_factory=dict)
    erased: dict[int, int] = field(default_factory=dict)  # erasure request -> records it moved in this run
    batches: int = 0
    ledger_lock: dict[str, Any] = field(default_factory=dict)  # appends, wait_s, hold_s, hold_max_s
    shard: str | None = None  # "I/N" of a sharded run
    attempts: int = 1  # a shard: how many processes started it, this one included (reruns, redeliveries)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    waiting: dict[str, str] = field(default_factory=dict)  # dataset -> why it waits for a version's notice
    notes: list[str] = field(default_factory=list)  # what an operator must act on (counts only, no data)
    # Erasure requests that rows with no key hold open: the run record keeps them (ids and counts only).
    open_requests: list[NullKeyNote] = field(default_factory=list)
    metrics_error: str | None = None  # the run committed but its --metrics-file could not be written (one line)


@dataclass(frozen=True)
class GuardTrip:
    """A transition that would move more than its guard allows."""

    dataset: str
    transition: str
    count: int
    rows: int
    max_share: float
    max_count: int | None

    @property
    def share(self) -> float:
        return self.count / self.rows if self.rows else 1.0

    def __str__(self) -> str:
        return guard_message(self.dataset, [self])

    def describe(self, guarded: str) -> str:
        """This trip without the dataset the guard refused (named once by :func:`guard_message`)."""
        limit = f"max {self.max_share:.0%}"
        if self.max_count is not None:
            limit += f" or {self.max_count} records"
        what = self.transition if self.dataset == guarded else f"{self.dataset} {self.transition}"
        return f"{what} would move {self.count} of {self.rows} records ({self.share:.1%}; {limit})"


def guard_message(dataset: str, trips: Sequence[GuardTrip]) -> str:
    """One sentence per refused dataset, naming it once however many transitions tripped."""
    return (
        f"guard tripped for dataset {dataset}: {', '.join(t.describe(dataset) for t in trips)}; "
        f"rerun with --allow-mass {dataset} if this is intended"
    )


def guard_trips(conn: sa.Connection, loaded: LoadedPack, planner: DatasetPlanner) -> list[GuardTrip]:
    """Count what ``planner`` would move (followers included) and compare with its guards.

    Nothing is counted when no guard involved can trip: a share of 100 %
    and no count limit refuse nothing (a transition never moves more
    records than the dataset holds), and counting the due rows and the
    table's rows read every row of both, which on a partition drop was most
    of the run at 10M rows (bench/RESULTS.md).
    """
    if not any(_can_trip(loaded.pack.guard_for(name)) for name in _guarded_names(planner)):
        return []
    counts: dict[str, dict[str, int]] = {}
    summary = PlanSummary(loaded.id, loaded.digest, planner.ctx.as_of)
    planner.summarize(conn, summary, sample_size=0, counts_only=True)
    counts = {name: per for name, per in summary.transitions.items() if per}
    planners = {planner.name: planner, **{f.name: f for f in planner.followers}}
    trips = []
    for name, per in counts.items():
        guard = loaded.pack.guard_for(name)
        rows = planners[name].table_rows(conn) if name in planners else 0
        for transition, count in per.items():
            over_share = rows > 0 and count / rows > guard.max_share
            over_count = guard.max_count is not None and count > guard.max_count
            if over_share or over_count:
                trips.append(GuardTrip(name, transition, count, rows, guard.max_share, guard.max_count))
    return trips


def _guarded_names(planner: DatasetPlanner) -> Iterator[str]:
    """The datasets whose moves ``planner``'s passes count: itself and its followers, theirs in turn."""
    yield planner.name
    for follower in planner.followers:
        yield from _guarded_names(follower)


def _can_trip(guard: Guard) -> bool:
    return guard.max_share < 1.0 or guard.max_count is not None


def _short_notice_entry(
    ctx: RunContext, detail: dict[str, Any], transition: str = "short_notice_accepted"
) -> ledger.EntryDraft:
    """The operator's acceptance of a version applied before its notice ran out (or the datasets it holds back)."""
    return ledger.EntryDraft(
        run_id=ctx.run_id,
        pack_id=ctx.loaded.id,
        pack_digest=ctx.loaded.digest,
        dataset=None,
        transition=transition,
        action=None,
        basis=None,
        due_at=None,
        record_pseudonym=None,
        subject_pseudonym=None,
        count=0,
        detail=detail,
    )


def _record_pack(conn: sa.Connection, loaded: LoadedPack, now: dt.datetime) -> None:
    pv = store.policy_versions
    exists = conn.execute(sa.select(pv.c.digest).where(pv.c.digest == loaded.digest)).first()
    if exists is None:
        conn.execute(
            pv.insert().values(
                digest=loaded.digest,
                pack_id=loaded.id,
                version=loaded.pack.version,
                effective_from=loaded.pack.effective_from,
                first_seen_at=now,
                content=loaded.text,
            )
        )


def _close_run(
    conn: sa.Connection,
    engine: sa.Engine,
    ctx: RunContext,
    planners: dict[str, DatasetPlanner],
    erased: dict[int, int],
) -> list[NullKeyNote]:
    """What a run does once every dataset is done: archive sweep, erasure requests, minimising.

    Returns why erasure requests stay open (rows with no key), for the operator and the run record.

    Not the ledger's lookup rows: each batch wrote its own
    (:func:`retention.ledger.items.index_items`), so closing a run or a
    shard group costs nothing per item.
    """
    ctx.archive.sweep(engine, ctx.secret)  # after the guards; only payloads whose purge the ledger records
    if ctx.archive_keys is not None:
        ctx.archive_keys = _shred_keys(conn, ctx)
    notes = _settle_erasure_requests(conn, ctx, planners, erased)
    with conn.begin():
        minimised = evidence.minimise(conn, ctx.loaded.pack, ctx.as_of, ctx.secret, ctx.now())
        if minimised is not None:
            minimised = replace(minimised, run_id=ctx.run_id, pack_digest=ctx.loaded.digest)
            ledger.append(conn, [minimised], ctx.now(), secret=ctx.secret)
            log.info("engine_records_minimised", count=minimised.count, run_id=ctx.run_id)
    return notes


def _rounded(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()}


def _run_datasets(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    plan_ctx: PlanContext,
    planners: dict[str, DatasetPlanner],
    result: RunResult,
    on_batch: Callable[[Batch], None] | None,
    allow_mass: Sequence[str],
) -> None:
    """Every dataset in order: guards, passes, anomalies; a dataset that fails leaves the others running."""
    bound = log.bind(run_id=ctx.run_id, pack=ctx.loaded.id)
    _mask_passes(conn, lock, ctx, plan_ctx, planners, result)
    for name, planner in planners.items():
        if name in plan_ctx.skipped:
            continue
        if ctx.should_stop is not None and ctx.should_stop():
            raise _Interrupted
        try:
            if not _guard_passes(conn, ctx, planner, result, allow_mass):
                plan_ctx.skipped.add(name)
                continue
            _run_dataset(conn, lock, ctx, planner, result, on_batch)
            with reading(conn):
                counts = planner.anomaly_counts(conn)
            if any(counts.values()):
                result.anomalies[name] = {str(k): v for k, v in counts.items()}
                bound.warning("clock_anomalies", dataset=name, anomalies=dict(counts))
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or _disk_full(exc):
                raise
            plan_ctx.skipped.add(name)
            result.failures[name] = describe_database_error(exc, name)
            bound.error(
                "dataset_failed",
                dataset=name,
                error_type=type(exc.orig).__name__,
                error=result.failures[name],
            )
        except ConcurrentChangeError as exc:
            plan_ctx.skipped.add(name)
            result.failures[name] = str(exc)
            bound.error("dataset_failed", dataset=name, error_type=type(exc).__name__)
        plan_ctx.finished.add(name)


def _mask_passes(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    plan_ctx: PlanContext,
    planners: dict[str, DatasetPlanner],
    result: RunResult,
) -> None:
    """Partial erasures first, for every dataset: a record archived later in this run keeps only masked values.

    One transaction per batch holds the UPDATE, the masked marks, the ledger
    entry and the run's counts (retention/engine/erasure_mask.py).
    """
    for name, planner in planners.items():
        if name in plan_ctx.skipped or not erasure_mask.masks(planner):
            continue
        after: Any = None
        while True:
            try:
                with conn.begin():
                    lock.verify()
                    per_request, scanned, after, drafts = erasure_mask.next_batch(
                        planner,
                        conn,
                        after,
                        run_id=ctx.run_id,
                        now=ctx.now,
                        secret=ctx.secret,
                        digest=ctx.loaded.digest,
                    )
                    if not scanned:
                        break
                    ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)
                    counts = {name: {erasure_mask.TRANSITION: scanned}}
                    tally.add(conn, ctx.run_id, ctx.shard, counts, per_request)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated or _disk_full(exc):
                    raise
                plan_ctx.skipped.add(name)
                result.failures[name] = describe_database_error(exc, name)
                log.error("dataset_failed", dataset=name, error_type=type(exc.orig).__name__, run_id=ctx.run_id)
                break
            _note_ledger_lock(conn, result)
            result.batches += 1
            totals = result.counts.setdefault(name, {})
            totals[erasure_mask.TRANSITION] = totals.get(erasure_mask.TRANSITION, 0) + scanned
            for request, masked in per_request.items():
                result.erased[request] = result.erased.get(request, 0) + masked
            log.info("erasure_masked", dataset=name, count=scanned, run_id=ctx.run_id)
            if scanned < planner.batch_size:
                break


_RETRIES = 5


def _disk_full(exc: sa.exc.DBAPIError) -> bool:
    """The database ran out of space: the run's failure (exit 1), not its dataset's (docs/reliability.md).

    Every later batch, of any dataset, needs space too. (The lookup rows
    written at the close used to surface it there; each batch writes its
    own now, so the batch that meets the full disk says so.)
    """
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    args = getattr(orig, "args", ())
    number = args[0] if args and isinstance(args[0], int) else None
    return code == "53100" or number in (1021, 1114) or getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL"


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock or lock timeout that rolled the batch back whole: running it again is safe."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40P01", "40001"):
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1213, 1205):  # MariaDB: deadlock found, lock wait timeout
        return True
    return "database is locked" in str(orig)


def _note_ledger_lock(conn: sa.Connection, result: RunResult) -> None:
    """Add the append lock's wait and hold of the transaction that just ended to the run's stats."""
    timing = ledger.lock_timing(conn)
    if timing is None:
        return
    wait, hold = timing
    stats = result.ledger_lock
    stats["appends"] = stats.get("appends", 0) + 1
    stats["wait_s"] = stats.get("wait_s", 0.0) + wait
    stats["hold_s"] = stats.get("hold_s", 0.0) + hold
    stats["hold_max_s"] = max(stats.get("hold_max_s", 0.0), hold)


def _run_dataset(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    planner: DatasetPlanner,
    result: RunResult,
    on_batch: Callable[[Batch], None] | None,
) -> None:
    """Every pass of one dataset, one transaction per batch on the run's connection."""
    for origin in planner.origins():
        # A shard leaves whole partitions alone: they hold every shard's rows (docs/scaling.md).
        if origin == "active" and planner.in_shard is None and partitions.eligible(planner, conn):

            def counted(within: sa.Connection, rows: int, name: str = planner.name) -> None:
                # Committed with the drops and their ledger entry (retention.store.tally).
                tally.add(within, ctx.run_id, ctx.shard, {name: {"active->purged": rows}}, {})

            dropped = partitions.drop_due_partitions(
                conn,
                planner,
                run_id=ctx.run_id,
                pack_digest=ctx.loaded.digest,
                now=ctx.now,
                secret=ctx.secret,
                record=counted,
            )
            if dropped:
                totals = result.counts.setdefault(planner.name, {})
                totals["active->purged"] = totals.get("active->purged", 0) + dropped
        purge: set_purge.SetPurge | None = None
        if origin == "active":
            start = set_archive.start if set_archive.applies(planner) else set_purge.start
            purge = start(conn, ctx, planner)
        try:
            _run_pass(conn, lock, ctx, planner, origin, purge, result, on_batch)
        finally:
            if purge is not None:
                purge.days.drop(conn)
        if isinstance(purge, set_archive.SetArchive) and "purged" in planner.dataset.states:
            # Records due for both archived and purged: moved through both by the per-record pass, as before.
            _run_pass(conn, lock, ctx, planner, origin, None, result, on_batch)


def _run_pass(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    planner: DatasetPlanner,
    origin: str,
    purge: set_purge.SetPurge | None,
    result: RunResult,
    on_batch: Callable[[Batch], None] | None,
) -> None:
    """One pass, batch by batch: set-based where ``purge`` is given, else record by record."""
    after: Any = None
    attempts = 0
    while True:
        try:
            try:
                with conn.begin():
                    lock.verify()
                    erased: dict[int, int] = {}
                    if purge is not None:
                        done = purge.batch(conn, after)
                        if done is None:
                            break
                        batch, counts, resume = done
                        applied = batch
                    else:
                        found, resume = planner.next_batch(conn, origin, after)
                        if found is None:
                            break
                        batch = found
                        applied = witness(conn, ctx, planner, batch)
                        counts = apply_batch(conn, ctx, planner, applied)
                    for move in _all_moves(applied):
                        if move.request_id is not None:
                            erased[move.request_id] = erased.get(move.request_id, 0) + 1
                    # Committed with the batch: a killed attempt's work is counted once (retention.store.tally).
                    tally.add(conn, ctx.run_id, ctx.shard, counts, erased)
            except BaseException:
                ctx.archive.after_rollback()  # the batch's payload deletions rolled back with it
                raise
        except sa.exc.DBAPIError as exc:
            ledger.lock_timing(conn)
            # Concurrent shards on MariaDB or SQLite may deadlock or find the
            # database locked; the batch was rolled back whole, so run it again.
            if not ctx.retry or exc.connection_invalidated or not _retryable(exc) or attempts >= _RETRIES:
                raise
            attempts += 1
            log.warning("batch_retried", dataset=planner.name, attempt=attempts, run_id=ctx.run_id)
            time.sleep(0.05 * attempts)
            continue
        attempts = 0
        after = resume
        _note_ledger_lock(conn, result)
        ctx.archive.after_commit()
        ctx.statistics.after_commit(conn)
        result.batches += 1
        for name, per in counts.items():
            totals = result.counts.setdefault(name, {})
            for transition, count in per.items():
                totals[transition] = totals.get(transition, 0) + count
        for request, moved in erased.items():
            result.erased[request] = result.erased.get(request, 0) + moved
        log.info("batch_applied", dataset=planner.name, counts=counts, run_id=ctx.run_id)
        if on_batch is not None:
            on_batch(applied)
        if ctx.should_stop is not None and ctx.should_stop():
            raise _Interrupted
        if batch.scanned < planner.batch_size:
            break


def _all_moves(batch: Batch) -> Iterator[Move]:
    yield from batch.moves
    for follower in batch.followers:
        yield from _all_moves(follower)


def _guard_passes(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    result: RunResult,
    allow_mass: Sequence[str],
) -> bool:
    """False when a guard refuses this dataset; overrides are recorded and let it pass."""
    with reading(conn):
        trips = guard_trips(conn, ctx.loaded, planner)
    if not trips:
        return True
    if "*" not in allow_mass and planner.name not in allow_mass:
        result.guarded[planner.name] = guard_message(planner.name, trips)
        for trip in trips:
            log.warning(
                "guard_tripped",
                dataset=trip.dataset,
                transition=trip.transition,
                count=trip.count,
                share=round(trip.share, 4),
                run_id=ctx.run_id,
            )
        return False
    pack = ctx.loaded.pack
    drafts = []
    for trip in trips:
        override = {
            "dataset": trip.dataset,
            "transition": trip.transition,
            "count": trip.count,
            "rows": trip.rows,
            "share": round(trip.share, 6),
            "max_share": trip.max_share,
            "max_count": trip.max_count,
        }
        result.overrides.append(override)
        drafts.append(
            ledger.EntryDraft(
                run_id=ctx.run_id,
                pack_id=pack.pack,
                pack_digest=ctx.loaded.digest,
                dataset=trip.dataset,
                transition="guard_overridden",
                action=None,
                basis=None,
                due_at=None,
                record_pseudonym=None,
                subject_pseudonym=None,
                count=trip.count,
                detail=override,
            )
        )
        log.warning(
            "guard_overridden",
            dataset=trip.dataset,
            transition=trip.transition,
            count=trip.count,
            run_id=ctx.run_id,
        )
    with conn.begin():
        ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)
    return True


def _settle_erasure_requests(
    conn: sa.Connection, ctx: RunContext, planners: dict[str, DatasetPlanner], erased: dict[int, int]
) -> list[NullKeyNote]:
    """Mark requests processed once none of the subject's records is left to move; say why others stay open.

    A request whose subject still has records under a legal hold stays open,
    so that releasing the hold lets the next run finish the erasure. The
    outcome says what the request did: ``erased`` (records moved in this
    run), ``nothing to move`` (the subject's records were already where the
    pack puts them), or ``no records found`` (no dataset knows the subject);
    a ledger entry records it.
    """
    er = store.erasure_requests
    erasing = [p for p in planners.values() if p.dataset.erasure_state and p.identified]
    masking = [p for p in planners.values() if erasure_mask.masks(p)]
    if not planners:
        return []
    today = next(iter(planners.values())).today
    pack = ctx.loaded.pack
    with conn.begin():
        requests = conn.execute(
            sa.select(er.c.id, er.c.subject_key, er.c.email, er.c.email_pseudonym).where(
                er.c.status == "open", er.c.received_on <= today
            )
        ).all()
        drafts = []
        for request in requests:
            if any(p.pending_for_subject(conn, request) for p in erasing):
                continue
            if any(erasure_mask.pending(p, conn, request) for p in masking):
                continue
            moved = erased.get(request.id, 0)
            if moved:
                outcome = "erased"
            elif any(p.knows_subject(conn, request) for p in planners.values()):
                outcome = "nothing to move"
            else:
                outcome = "no records found"
            conn.execute(
                er.update()
                .where(er.c.id == request.id)
                .values(status="processed", processed_run_id=ctx.run_id, outcome=outcome)
            )
            drafts.append(
                ledger.EntryDraft(
                    run_id=ctx.run_id,
                    pack_id=pack.pack,
                    pack_digest=ctx.loaded.digest,
                    dataset=None,
                    transition="erasure_processed",
                    action=None,
                    basis=pack.erasure.basis,
                    due_at=None,
                    record_pseudonym=None,
                    subject_pseudonym=(
                        pseudonyms.subject_pseudonym(ctx.secret, request.subject_key)
                        if request.subject_key
                        else request.email_pseudonym
                    ),
                    count=moved,
                    detail={"erasure_request": request.id, "outcome": outcome},
                )
            )
        ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)
        for planner in masking:
            erasure_mask.forget_gone(planner, conn)
        notes = null_key_requests(conn, planners.values())
    for note in notes:
        log.warning("erasure_request_open", run_id=ctx.run_id, reason=note.sentence)  # ids and counts only
    return notes


def _close_abandoned_runs(conn: sa.Connection) -> None:
    """Whole runs left 'running' by a killed process: we hold the lock, so they are over.

    Run groups are not touched: a group is closed by its last shard or by
    :func:`retention.engine.groups.close_stale` (a whole run does not start while one is open).
    """
    conn.execute(
        store.runs.update()
        .where(store.runs.c.status == "running", store.runs.c.mode == "run", store.runs.c.run_group.is_(None))
        .values(status="abandoned", error="the process ended without finishing (killed or lost)")
    )


def _anomalies_json(anomalies: dict[str, dict[str, int]], notes: list[NullKeyNote]) -> str | None:
    """The run record's ``anomalies``: the anomalies and why requests stay open (:func:`stored_anomalies`)."""
    merged = stored_anomalies(anomalies, notes)
    return json.dumps(merged, sort_keys=True) if merged else None


def _finish(engine: sa.Engine, result: RunResult, error: str | None = None, swallow: bool = False) -> None:
    values: dict[str, Any] = {
        "finished_at": utcnow(),
        "status": result.status,
        "counts": json.dumps(result.counts, sort_keys=True),
        "error": error
        or (
            json.dumps({**result.failures, **result.guarded}, sort_keys=True)
            if result.failures or result.guarded
            else None
        ),
        "overrides": json.dumps(result.overrides, sort_keys=True) if result.overrides else None,
        "anomalies": _anomalies_json(result.anomalies, result.open_requests),
    }
    try:
        with engine.begin() as conn:
            conn.execute(store.runs.update().where(store.runs.c.id == result.run_id).values(**values))
    except sa.exc.DBAPIError:
        if not swallow:
            raise
        log.error("run_record_failed", run_id=result.run_id)
