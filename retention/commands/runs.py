"""What is due and doing it: the library behind ``plan``, ``run``, ``explain`` and ``report``.

Everything the CLI does is callable from Python; the CLI only parses,
prints and exits.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pendulum
import sqlalchemy as sa
import structlog

from retention.commands import files
from retention.commands.subjects import Named, holds_covering
from retention.engine import erasure_mask, execute, notice, set_purge
from retention.engine.archive import SeparateArchive, refuse_the_main_database
from retention.engine.notice import VersionNotice, sight_versions
from retention.engine.null_keys import NO_KEY, subject_null_keys
from retention.engine.plan import Batch, PlanSummary
from retention.engine.shards import ShardSpec
from retention.errors import ConfigError, RetentionError
from retention.ledger import chain as ledger
from retention.ledger import mac as ledger_mac
from retention.ledger import pseudonyms
from retention.policy import Catalog, LoadedPack, load_catalog, refusals
from retention.policy.loader import pack_files
from retention.policy.model import Dataset
from retention.store import tables as store
from retention.store.config import create_engine
from retention.store.connect import open_engine
from retention.timing.clock import AsOf, Period, utcnow

log = structlog.get_logger("retention")

MAX_HORIZON = Period(years=5)
"""The longest forecast of ``report``: its SQL tests every week boundary (260 in five years)."""


def load_pack(rules: Path, as_of: AsOf | str | None, pack_id: str | None) -> tuple[LoadedPack, dt.datetime]:
    """The pack version in force at the as-of instant, and that instant in UTC (now when ``as_of`` is None).

    A date means midnight in the pack's timezone, known only once a pack is
    chosen: the version is chosen at the UTC reading, then again in its zone.
    """
    return _in_force(load_catalog(rules), as_of, pack_id)


def _log_pack_warnings(loaded: LoadedPack, command: str) -> None:
    """The version's check warnings, so a user who upgrades and never runs ``check`` still sees them.

    Each names a file, a line and a clause of the pack, never a value from the database.
    """
    for problem in loaded.warnings:
        log.warning(
            "pack_warning",
            command=command,
            pack=loaded.pack.pack,
            version=loaded.pack.version,
            warning=str(problem),
        )


def _in_force(catalog: Catalog, as_of: AsOf | str | None, pack_id: str | None) -> tuple[LoadedPack, dt.datetime]:
    """:func:`load_pack` on a catalog already read (a run reads its pack files once)."""
    given = AsOf.given(as_of) or AsOf.now()
    loaded = catalog.in_force(given.resolve("UTC").date(), pack_id)
    instant = given.resolve(loaded.pack.timezone)
    # A date near midnight may fall on another day in the pack's zone: re-select.
    loaded = catalog.in_force(instant.astimezone(pendulum.timezone(loaded.pack.timezone)).date(), pack_id)
    return loaded, instant


def plan(
    rules: Path,
    db_url: str,
    as_of: AsOf | str | None = None,
    pack_id: str | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    record: bool = True,
    lock_timeout: int | None = None,
) -> PlanSummary:
    """Dry run: what ``run`` would do at ``as_of``, compared with the previous plan."""
    loaded, when = load_pack(rules, as_of, pack_id)
    _log_pack_warnings(loaded, "plan")
    engine = open_engine(db_url, lock_timeout, engine_tables=False)
    try:
        notes: list[str] = []
        versions = sight_versions(engine, load_catalog(rules).packs, "plan", notes=notes) if record else None
        summary = execute.plan(engine, loaded, when, on_batch=on_batch, record=record)
        summary.notes.extend(notes)
        for version in versions or ():
            if version.loaded.digest == loaded.digest and version.refuses(when):
                waiting = _waiting(version, versions or [], when)
                if waiting is None:
                    summary.notes.append(f"{version.sentence()}: run refuses it without --accept-short-notice")
                else:
                    summary.notes.append(
                        f"{version.sentence()}: without --accept-short-notice, run leaves datasets "
                        f"{', '.join(waiting.names)} waiting and runs the others under version "
                        f"{waiting.previous.pack.version}"
                    )
        return summary
    finally:
        engine.dispose()


def plan_shards(
    rules: Path, db_url: str, shards: int, as_of: AsOf | str | None = None, pack_id: str | None = None
) -> list[dict[str, Any]]:
    """How ``run --shard I/N`` splits the work: per dataset and shard, key range and counts."""
    loaded, when = load_pack(rules, as_of, pack_id)
    engine = open_engine(db_url, engine_tables=False)
    try:
        return execute.plan_shards(engine, loaded, when, shards)
    finally:
        engine.dispose()


def run(
    rules: Path,
    db_url: str,
    as_of: AsOf | str | None = None,
    pack_id: str | None = None,
    archive_url: str | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    allow_mass: tuple[str, ...] = (),
    metrics_file: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    lock_timeout: int | None = None,
    accept_short_notice: bool = False,
    shard: ShardSpec | None = None,
    run_group: str | None = None,
    allow_future_as_of: bool = False,
    on_locked: Callable[[], None] | None = None,
    on_pack: Callable[[Catalog], None] | None = None,
) -> execute.RunResult:
    """Apply every transition due at ``as_of``; optionally write Prometheus metrics.

    A pack version whose notice has not run out is refused (exit 2) unless
    ``accept_short_notice``, which the ledger records. With ``shard``, only
    that shard of the run group ``run_group`` (docs/scaling.md); without an
    explicit ``as_of`` it runs as of the instant the group started. An as-of
    still to come is refused unless ``allow_future_as_of``: it would apply
    transitions before their term; an ``allow_mass`` name that is no dataset
    is refused as it would override nothing.
    ``on_locked``: called once the run holds the lock (see :func:`execute.run`).
    ``on_pack``: called with the pack files once read (the CLI names their zone in its logs).

    The lock comes first, before the pack is read: a run refused it (exit 5)
    has only checked what needs no pack (the --rules path names pack files,
    the archive database is not the main one, RETENTION_SET_BASED, the pseudonym key, the database and its tables'
    revision; and an --as-of in the future, for which the pack is read
    before the lock, once) and exits at once; everything the pack decides (the pack
    itself, --allow-mass names, the notice period) is
    checked once the lock is held (README, "A run takes the lock").
    """
    # Before the lock: what the options and the environment say on their own (exit 2 even while another
    # run holds the lock, so a bad cron line is told at once). After it: everything the pack decides.
    pack_files(rules)  # the --rules path names pack files (not read yet): a typo is exit 2, not exit 5
    if archive_url:
        refuse_the_main_database(db_url, archive_url)
    given = AsOf.given(as_of)
    catalog = None
    if given is not None and not allow_future_as_of:
        # A future --as-of is a bad option (exit 2 before anything else), but only the pack's zone says
        # when a date starts: the pack is read here, once, and kept. Without --as-of it waits for the lock.
        catalog = load_catalog(rules)
        loaded, when = _in_force(catalog, given, pack_id)
        refusals.refuse_future_as_of(when, utcnow(), False, loaded.pack.timezone)
    set_purge.enabled()  # a bad RETENTION_SET_BASED is exit 2 before the lock, not exit 5 or a failure mid-run
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url, lock_timeout)
    work = functools.partial(
        _run,
        rules,
        engine,
        given,
        pack_id,
        archive_url,
        secret,
        allow_mass,
        shard,
        catalog,
        on_batch=on_batch,
        metrics_file=metrics_file,
        should_stop=should_stop,
        lock_timeout=lock_timeout,
        accept_short_notice=accept_short_notice,
        run_group=run_group,
        allow_future_as_of=allow_future_as_of,
        on_locked=on_locked,
        on_pack=on_pack,
    )
    try:
        ledger_mac.refuse_other_key(engine, secret)
        if shard is not None:
            return work(None)  # a shard takes its own lock (execute.run_shard)
        with execute.holding_lock(engine) as lock:
            return work(lock)
    finally:
        engine.dispose()


def _run(
    rules: Path,
    engine: sa.Engine,
    given: AsOf | None,
    pack_id: str | None,
    archive_url: str | None,
    secret: bytes,
    allow_mass: tuple[str, ...],
    shard: ShardSpec | None,
    catalog: Catalog | None,
    lock: execute.RunLock | None,
    /,
    *,
    on_batch: Callable[[Batch], None] | None,
    metrics_file: Path | None,
    should_stop: Callable[[], bool] | None,
    lock_timeout: int | None,
    accept_short_notice: bool,
    run_group: str | None,
    allow_future_as_of: bool,
    on_locked: Callable[[], None] | None,
    on_pack: Callable[[Catalog], None] | None,
) -> execute.RunResult:
    """:func:`run` once the lock is held (``lock``; a shard takes its own): the pack, read once, and the run."""
    catalog = catalog or load_catalog(rules)
    if on_pack is not None:
        on_pack(catalog)
    loaded, when = _in_force(catalog, given, pack_id)
    _log_pack_warnings(loaded, "run")
    refusals.refuse_unknown_datasets(loaded.pack, allow_mass, "--allow-mass")
    refusals.refuse_future_as_of(when, utcnow(), allow_future_as_of, loaded.pack.timezone)
    short = None
    versions = sight_versions(engine, catalog.packs, "run", must_record=True) or []
    for version in versions:
        if version.loaded.digest == loaded.digest and version.refuses(when):
            short = version
    waiting: _Waiting | None = None
    if short is not None and not accept_short_notice:
        waiting = None if shard is not None else _waiting(short, versions, when)
        if waiting is None:
            raise ConfigError(f"{short.sentence()}; to apply it now anyway: --accept-short-notice")
        loaded, short = waiting.previous, None
    accepted = None
    if short is not None:
        accepted = {
            "version": loaded.pack.version,
            "effective_from": loaded.pack.effective_from.isoformat(),
            "first_seen": str(short.first_seen_day),
            "notice": str(loaded.pack.notice),
            "not_before": str(short.not_before),
        }
    archive_engine = create_engine(archive_url, lock_timeout_seconds=lock_timeout) if archive_url else None
    started = utcnow()
    try:
        store_ = SeparateArchive(archive_engine) if archive_engine else None
        try:
            if shard is not None:
                result = execute.run_shard(
                    engine,
                    loaded,
                    when,
                    secret=secret,
                    shard=shard,
                    run_group=run_group,
                    as_of_fixed=given is not None,
                    archive=store_,
                    on_batch=on_batch,
                    allow_mass=allow_mass,
                    should_stop=should_stop,
                    short_notice=accepted,
                )
            else:
                result = execute.run(
                    engine,
                    loaded,
                    when,
                    secret=secret,
                    archive=store_,
                    on_batch=on_batch,
                    allow_mass=allow_mass,
                    should_stop=should_stop,
                    short_notice=accepted,
                    on_locked=on_locked,
                    lock=lock,
                    datasets=None if waiting is None else waiting.running,
                    notice_waiting=None if waiting is None else waiting.detail,
                )
                if waiting is not None:
                    result.waiting = {name: waiting.message for name in waiting.names}
        except (RetentionError, sa.exc.SQLAlchemyError):
            if metrics_file is not None:
                try:
                    _write_metrics(metrics_file, execute.RunResult("-", "failed"), loaded.id, started, utcnow())
                except OSError as exc:  # the run's own error is the one to report
                    _not_written(metrics_file, exc)
            raise
        ledger.record_run_head(engine, result.run_id)
        if metrics_file is not None:
            try:
                _write_metrics(
                    metrics_file,
                    result,
                    loaded.id,
                    result.started_at or started,
                    result.finished_at or utcnow(),
                )
            except OSError as exc:  # committed work stands; the caller says so and exits non-zero
                result.metrics_error = _not_written(metrics_file, exc)
        return result
    finally:
        if archive_engine is not None:
            archive_engine.dispose()


@dataclass(frozen=True)
class _Waiting:
    """A run during a notice refusal: the version in force before, without the datasets that wait."""

    previous: LoadedPack
    names: tuple[str, ...]  # datasets the refused version changes (or adds): they do not run
    running: tuple[str, ...]  # the previous version's other datasets
    message: str
    detail: dict[str, Any]


def _waiting(short: VersionNotice, versions: list[VersionNotice], when: dt.datetime) -> _Waiting | None:
    """What a run may still do while ``short`` is refused; None when every dataset must wait.

    The datasets whose rules the refused version does not change run under
    the version in force before it (the same rules for them); the others
    wait for the notice to run out. Nothing runs when the version changes a
    pack-wide key, every dataset, or when the version before it is refused
    as well.
    """
    loaded = short.loaded
    previous = notice.previous_version(loaded, [v.loaded for v in versions])
    if previous is None or any(v.loaded.digest == previous.digest and v.refuses(when) for v in versions):
        return None
    names = notice.waiting_datasets(loaded, previous)
    if names is None:
        return None
    running = tuple(n for n in previous.pack.datasets if n not in names)
    pack = loaded.pack
    message = (
        f"{short.sentence()}; datasets {', '.join(sorted(names))} wait for it, the others ran under "
        f"version {previous.pack.version}; to apply it now anyway: --accept-short-notice"
    )
    detail = {
        "version": pack.version,
        "effective_from": pack.effective_from.isoformat(),
        "first_seen": str(short.first_seen_day),
        "announced": None if pack.announced is None else pack.announced.isoformat(),
        "notice": str(pack.notice),
        "not_before": str(short.not_before),
        "waiting": sorted(names),
        "in_force": previous.pack.version,
    }
    return _Waiting(previous, tuple(sorted(names)), running, message, detail)


def lock_status(db_url: str, now: dt.datetime) -> list[Any]:
    """The lock's holders, whether each still holds it, and how far each run got (``retention status``)."""
    from retention.engine import run_status

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return run_status.lock_states(conn, now, execute.holder_gone)
    finally:
        engine.dispose()


def _write_metrics(
    path: Path, result: execute.RunResult, pack: str, started: dt.datetime, finished: dt.datetime
) -> None:
    from retention.reporting.metrics import write_run_metrics

    write_run_metrics(path, result, pack=pack, started=started, finished=finished, anomalies=result.anomalies)


def _not_written(path: Path, exc: OSError) -> str:
    from retention.reporting.metrics import not_written

    return not_written(path, exc)


@dataclass
class Explanation:
    """One record: its clocks, due dates, state, holds, and what happens next."""

    dataset: str
    key: str
    as_of: dt.datetime
    exists: bool
    state: str
    since: dt.datetime | None
    clocks: list[dict[str, Any]]
    anomaly: str | None
    due: dict[str, dt.datetime]
    holds: list[dict[str, Any]]
    next_transition: dict[str, Any] | None
    due_now: list[dict[str, Any]]
    excluded: bool = False  # the source row fails the dataset's ``where``: it never moves
    # When the run that moved it there ran (its as-of): ``since`` is the instant that made
    # the move due, which for an erasure is the request's receipt, not the move.
    moved_at: dt.datetime | None = None
    # Partial erasure (issue 26 clause 4): masked by a request, or due to be, and kept to its term.
    erasure_mask: dict[str, Any] | None = None
    # The record's person's rows in this dataset whose key is NULL: no records, so no explain of
    # their own, yet they hold that person's data and keep an erasure request open (null_keys.NO_KEY).
    subject_null_keys: int = 0

    def as_dict(self) -> dict[str, Any]:
        def enc(v: Any) -> Any:
            return v.isoformat() if isinstance(v, dt.datetime | dt.date) else v

        return {
            "dataset": self.dataset,
            "key": self.key,
            "as_of": enc(self.as_of),
            "exists": self.exists,
            "state": self.state,
            "since": enc(self.since),
            "clocks": [{k: enc(v) for k, v in c.items()} for c in self.clocks],
            "anomaly": self.anomaly,
            "due": {k: enc(v) for k, v in self.due.items()},
            "holds": [{k: enc(v) for k, v in h.items()} for h in self.holds],
            "next_transition": ({k: enc(v) for k, v in self.next_transition.items()} if self.next_transition else None),
            "due_now": [{k: enc(v) for k, v in d.items()} for d in self.due_now],
            "excluded_by_where": self.excluded,
            "moved_at": enc(self.moved_at),
            "erasure_mask": ({k: enc(v) for k, v in self.erasure_mask.items()} if self.erasure_mask else None),
            "subject_null_keys": self.subject_null_keys,
        }


def explain(
    rules: Path,
    db_url: str,
    dataset: str,
    key: str,
    as_of: AsOf | str | None = None,
    pack_id: str | None = None,
) -> Explanation:
    """One record, evaluated by the planner's own code (the steps ``plan`` and ``run`` take)."""
    loaded, when = load_pack(rules, as_of, pack_id)
    pack = loaded.pack
    if dataset not in pack.datasets:
        raise ConfigError(f"no dataset {dataset!r} in pack {pack.pack}; valid: {', '.join(pack.datasets)}")
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return explain_in(conn, loaded, when, dataset, key)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class RecordFacts:
    """What ``explain`` reads of one record besides its clocks (read per record, or for many in a few queries)."""

    native: Any  # the key in the key column's type
    outcome: Any  # the planner's Outcome, None when the record is not found
    subject: str | None
    email: str | None
    state_row: Any  # its row in the engine's record states, if any
    holds: list[dict[str, Any]]
    excluded: bool
    moved_at: dt.datetime | None
    null_keys: int = 0  # the person's rows in the dataset whose key is NULL (null_keys.subject_null_keys)


def explain_in(
    conn: sa.Connection,
    loaded: LoadedPack,
    when: dt.datetime,
    dataset: str,
    key: str,
    planners: dict[str, Any] | None = None,
    outcomes: dict[str, Any] | None = None,
) -> Explanation:
    """:func:`explain` on an open connection, one record's facts read one query at a time.

    ``outcomes``: the planner's outcomes of several records of ``dataset``
    read in one query (``planner.outcomes(conn, keys)``). A page that
    explains many records of a dataset uses
    :func:`retention.commands.explain_many.explain_records` (a few queries
    for all of them; a test holds the two equal). Reads only; the
    transaction is rolled back before returning.
    """
    from retention.engine.plan import PlanContext, build_planners

    pack = loaded.pack
    if planners is None:
        planners = build_planners(conn, PlanContext(loaded, when))
    planner = planners[dataset]
    native = native_key(planner.key, key, dataset)
    outcome = (outcomes if outcomes is not None else planner.outcomes(conn, [key])).get(key)
    subject = None
    if planner.subject is not None:
        subject_value = conn.execute(sa.select(planner.subject).where(planner.key == native)).scalar_one_or_none()
        subject = None if subject_value is None else str(subject_value)
    rs = store.record_states
    state_row = conn.execute(sa.select(rs).where(rs.c.dataset == dataset, rs.c.record_key == key)).first()
    if subject is None and state_row is not None:
        subject = state_row.subject_key
    email = None
    if planner.email is not None:
        email = conn.execute(sa.select(planner.email).where(planner.key == native)).scalar_one_or_none()
    mail_pseudonym = state_row.email_pseudonym if state_row is not None else None
    holds = holds_covering(conn, dataset, key, Named(subject, email, mail_pseudonym))
    excluded = planner.is_excluded(conn, native)
    moved_at = None
    if state_row is not None:
        moved_at = conn.execute(
            sa.select(store.runs.c.as_of).where(store.runs.c.id == state_row.run_id)
        ).scalar_one_or_none()
    identity = (subject, email, mail_pseudonym)
    (null_keys,) = subject_null_keys(conn, planner, [identity]) if any(identity) else (0,)
    facts = RecordFacts(native, outcome, subject, email, state_row, holds, excluded, moved_at, null_keys)
    sql = None
    if outcome is not None and outcome.state == "active" and pack.datasets[dataset].keep:
        from retention.engine.evaluate import dataset_sql

        sql = dataset_sql(conn, pack, dataset)
    return explanation_of(conn, loaded, when, dataset, key, facts, sql, planner)


def explanation_of(
    conn: sa.Connection,
    loaded: LoadedPack,
    when: dt.datetime,
    dataset: str,
    key: str,
    facts: RecordFacts,
    sql: Any,
    planner: Any,
) -> Explanation:
    """The explanation of one record from its facts; its clocks are read here (``sql``: the dataset's clocks).

    ``planner`` is the dataset's planner, for a partial erasure's mask (issue 26 clause 4).
    """
    from retention.engine.evaluate import NOT_YET, evaluate_readings
    from retention.engine.plan import steps_from_active, steps_from_state

    pack = loaded.pack
    ds = pack.datasets[dataset]
    far = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    clocks: list[dict[str, Any]] = []
    due: dict[str, dt.datetime] = {}
    anomaly = None
    upcoming: tuple[Any, ...] = ()
    outcome, state_row, holds, excluded = facts.outcome, facts.state_row, facts.holds, facts.excluded
    if outcome is not None and outcome.state == "active" and ds.keep:
        readings = sql.readings(conn, facts.native, when)
        if readings is not None:
            evaluation = evaluate_readings(pack, ds, readings)
            anomaly = evaluation.anomaly
            # A state an expiry in the future holds back has no date to show yet.
            due = {state: at for state, at in evaluation.due.items() if at != NOT_YET}
            far_dues = evaluation.due
            for rule, reading in zip(ds.keep, evaluation.readings, strict=True):
                invalid = reading.anomaly == "invalid"  # shown by its kind of problem, not its value
                pending = rule.clock.is_expiry and reading.anomaly == "future"
                clocks.append(
                    {
                        "clock": reading.label,
                        "value": None if reading.raw is None or invalid else str(reading.raw),
                        "local_date": reading.day,
                        "period": "expires" if rule.clock.is_expiry else str(rule.period),
                        "anchor": rule.anchor,
                        # A future expiry is a live record, not an anomaly.
                        "anomaly": None if pending else reading.anomaly,
                        "pending": pending,
                        "detail": reading.detail,
                        "ignored_rows": reading.ignored,  # invalid_rows: ignore (issue 26)
                        "basis": rule.basis or ds.basis,
                    }
                )
            if anomaly is None:
                upcoming = tuple(s for s in steps_from_active(ds, far_dues, far) if s.due_at != NOT_YET)
    elif outcome is not None and outcome.since is not None:
        clock_day = state_row.clock_day if state_row is not None else None
        upcoming = steps_from_state(pack, ds, outcome.state, outcome.since, far, clock_day)
        due = {s.to_state: s.due_at for s in upcoming}
    masking = erasure_mask.explain(planner, conn, facts.native)
    conn.rollback()
    steps = outcome.steps if outcome is not None else ()
    held = bool(holds)
    due_now = [
        {
            "transition": f"{s.from_state}->{s.to_state}",
            "due_at": s.due_at,
            "basis": ds.basis_for(s.to_state),
            "held": held,
            "action": step_action(ds, s.to_state),
        }
        for s in steps
    ]
    later = [s for s in upcoming if s.due_at > when]
    next_transition = (
        {
            "transition": f"{later[0].from_state}->{later[0].to_state}",
            "due_at": later[0].due_at,
            "action": step_action(ds, later[0].to_state),
            "basis": ds.basis_for(later[0].to_state),
        }
        if later and not excluded
        else None
    )
    return Explanation(
        dataset=dataset,
        key=key,
        as_of=when,
        exists=outcome is not None,
        state=outcome.state if outcome is not None else "active",
        since=outcome.since if outcome is not None else None,
        moved_at=facts.moved_at,
        clocks=clocks,
        anomaly=anomaly,
        due={} if excluded else due,
        holds=holds,
        next_transition=next_transition,
        due_now=due_now,
        excluded=excluded,
        erasure_mask=masking,
        subject_null_keys=facts.null_keys,
    )


STATE_ONLY = "record the state only (source row unchanged)"

NULL_KEY_ROWS = NO_KEY
"""What ``explain`` prints after the count of its record's person's rows with no key (the person page says the same)."""


def step_action(ds: Dataset, state: str) -> str:
    """What entering ``state`` does, in words for ``explain``."""
    action = ds.step_to(state).action
    if action is not None:
        return action
    return STATE_ONLY if state == "inactive" else "purge archive payload"


def native_key(column: Any, key: str, dataset: str) -> Any:
    """The key as the key column's type: an integer column takes only a 64-bit integer."""
    from retention.engine.plan import key_to_native

    integer = _typed(column) and column.type.python_type is int
    if integer and not (re.fullmatch(r"-?[0-9]{1,19}", key) and -(2**63) <= int(key) < 2**63):
        raise ConfigError(f"{key!r} is not a key of dataset {dataset}: its key column holds integers")
    return key_to_native(column, key)


def _typed(column: Any) -> bool:
    try:
        column.type.python_type  # noqa: B018 - some types have none
    except NotImplementedError:
        return False
    return True


def report(
    rules: Path,
    db_url: str,
    as_of: AsOf | str | None,
    horizon: Period | str,
    html_file: Path,
    pack_id: str | None = None,
    lock_timeout: int | None = None,
    zone: str | None = None,
) -> tuple[PlanSummary, Any]:
    """Write the HTML report (plan now and a weekly forecast); return the plan and forecast.

    Dates are shown in ``zone`` (default the pack's timezone), as the CLI shows them.
    """
    from retention.reporting import report as report_module
    from retention.timing.clock import PeriodSyntaxError

    try:
        period = horizon if isinstance(horizon, Period) else Period.parse(horizon)
    except PeriodSyntaxError as exc:
        raise ConfigError(f"horizon: {exc}") from None
    if not period.within(MAX_HORIZON):
        raise ConfigError(f"horizon {period} is longer than {MAX_HORIZON}, the longest forecast")
    loaded, when = load_pack(rules, as_of, pack_id)
    engine = open_engine(db_url, lock_timeout)
    try:
        summary = execute.plan(engine, loaded, when)
        forecast = report_module.forecast(engine, loaded, when, period)
    finally:
        engine.dispose()
    basis = {name: ds.basis or "" for name, ds in loaded.pack.datasets.items()}
    try:
        page = report_module.render(summary, forecast, period, basis, zone or loaded.pack.timezone)
        html_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise files.cannot_write(html_file, exc) from None
    return summary, forecast
