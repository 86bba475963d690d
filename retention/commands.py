"""One public function per CLI command: the library behind ``retention``.

Everything the CLI does is callable from Python; the CLI only parses,
prints and exits.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pendulum
import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.engine import backups, execute, notice, shred
from retention.engine.archive import SeparateArchive
from retention.engine.coverage import CoverageReport
from retention.engine.coverage import scan as coverage_scan
from retention.engine.plan import Batch, PlanSummary
from retention.engine.schema import Finding, check_schema
from retention.engine.shards import ShardSpec
from retention.errors import ConfigError, RetentionError, SchemaError
from retention.ledger import chain as ledger
from retention.ledger import pseudonyms
from retention.ledger.pseudonyms import normalise_email
from retention.policy import LoadedPack, load_catalog
from retention.policy.model import Dataset
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine
from retention.store.connect import connect_error, open_engine
from retention.subjects import events as subjects
from retention.timing.clock import AsOf, Period, utcnow

MAX_HORIZON = Period(years=5)
"""The longest forecast of ``report``: it plans once for every week."""


@dataclass
class CheckReport:
    """What ``check`` found: the packs it validated and schema findings."""

    packs: list[LoadedPack]
    findings: list[Finding] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # versions taking effect before their notice ran out

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "packs": [
                {
                    "file": str(p.source),
                    "pack": p.id,
                    "version": p.pack.version,
                    "effective_from": p.pack.effective_from.isoformat(),
                    "digest": p.digest,
                }
                for p in self.packs
            ],
            "findings": [
                {
                    "level": f.level,
                    "dataset": f.dataset,
                    "table": f.table,
                    "column": f.column,
                    "message": f.message,
                }
                for f in self.findings
            ],
            "notices": self.notices,
        }


def check(rules: Path, db_url: str | None = None) -> CheckReport:
    """Validate every pack under ``rules``; with a database, check its schema too."""
    catalog = load_catalog(rules)
    report = CheckReport(list(catalog.packs))
    if db_url is None:
        return report
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            for loaded in catalog.packs:
                report.findings.extend(check_schema(conn, loaded.pack))
        versions = sight_versions(engine, catalog.packs, "check")
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    finally:
        engine.dispose()
    report.notices = [f"warning: {v.sentence()}" for v in versions or () if v.short]
    return report


def coverage(rules: Path, db_url: str, pack_id: str | None = None) -> CoverageReport:
    """The personal-looking columns of the live schema and how the pack in force today covers them."""
    loaded, _ = load_pack(rules, None, pack_id)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return coverage_scan(conn, loaded.pack, loaded.id)
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    finally:
        engine.dispose()


def _archive_keys_required() -> shred.ArchiveKeys:
    key_file = shred.configured_key_file()
    if key_file is None:
        raise ConfigError(f"archive encryption is not configured; point {shred.KEK_FILE_ENV} at a key file")
    return shred.ArchiveKeys(key_file)


def archive_keygen(key_file: Path) -> str:
    """Create the archive's key-encryption key file; its public id."""
    return shred.kek_id(shred.keygen(key_file).current)


def archive_show(db_url: str, dataset: str, record_key: str) -> str:
    """One archived payload, decrypted under the live keys when it is sealed."""
    key_file = shred.configured_key_file()
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            payload = shred.read_payload(
                conn, None if key_file is None else shred.ArchiveKeys(key_file), dataset, record_key
            )
    finally:
        engine.dispose()
    if payload is None:
        raise ConfigError(f"no archived payload for dataset {dataset} and that key")
    return payload


@contextmanager
def _no_run_beside(engine: sa.Engine) -> Iterator[None]:
    """Hold the run lock: a run creating data keys under the old key-encryption key must not overlap a rotation."""
    with engine.connect() as conn:
        lock = execute.RunLock(conn, f"archive-{uuid.uuid4()}")
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


def archive_encrypt(db_url: str) -> int:
    """Seal the plain payloads of the main database's archive (written before encryption was configured)."""
    keys = _archive_keys_required()
    engine = open_engine(db_url)
    try:
        with _no_run_beside(engine):
            keys = shred.ArchiveKeys(shred.finish_rotation(engine, keys.key_file))
            return shred.seal_plain(engine, keys)
    finally:
        engine.dispose()


def archive_rotate_key(db_url: str) -> str:
    """A new key-encryption key: every data key rewrapped under it, the old key erased from the file."""
    keys = _archive_keys_required()
    engine = open_engine(db_url)
    try:
        with _no_run_beside(engine):
            done = shred.rotate(engine, shred.finish_rotation(engine, keys.key_file))
    finally:
        engine.dispose()
    return shred.kek_id(done.current)


def sight_versions(engine: sa.Engine, packs: Sequence[LoadedPack], seen_by: str) -> list[notice.VersionNotice] | None:
    """Record the first sighting of each version and return every version's notice status.

    None where the engine's tables are missing or cannot be read; a role
    that can read but not write them (a read-only ``plan``) records nothing.
    """
    with engine.connect() as conn:
        if execute.engine_tables_missing(conn) is not None:
            return None
        conn.rollback()
        try:
            with conn.begin():
                notice.record(conn, packs, utcnow(), seen_by)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
        result = notice.statuses(conn, packs)
        conn.rollback()
        return result


def pack_history(rules: Path, db_url: str) -> list[notice.VersionNotice]:
    """Every version under ``rules`` with its first sighting and notice status (records sightings)."""
    catalog = load_catalog(rules)
    engine = open_engine(db_url)
    try:
        return sight_versions(engine, catalog.packs, "check") or []
    finally:
        engine.dispose()


def _unknown_revision(revision: str) -> ConfigError:
    return ConfigError(
        f"unknown revision {revision!r}; valid: head, base or a shipped revision (newest: {migrate.head_revision()})"
    )


def db_upgrade(db_url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the engine's migrations; return the revisions before and after."""
    from alembic.util import CommandError

    engine = create_engine(db_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        return before, migrate.current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    except CommandError:
        raise _unknown_revision(revision) from None
    finally:
        engine.dispose()


def db_current(db_url: str) -> tuple[str | None, str | None]:
    engine = create_engine(db_url)
    try:
        return migrate.current_revision(engine), migrate.head_revision()
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    finally:
        engine.dispose()


def db_downgrade(db_url: str, revision: str) -> None:
    from alembic.util import CommandError

    engine = create_engine(db_url)
    try:
        migrate.downgrade(engine, revision)
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    except CommandError:
        raise _unknown_revision(revision) from None
    finally:
        engine.dispose()


# --------------------------------------------------------------------------
# plan, run, explain
# --------------------------------------------------------------------------


def load_pack(rules: Path, as_of: AsOf | str | None, pack_id: str | None) -> tuple[LoadedPack, dt.datetime]:
    """The pack version in force at the as-of instant, and that instant in UTC (now when ``as_of`` is None).

    A date means midnight in the pack's timezone, known only once a pack is
    chosen: the version is chosen at the UTC reading, then again in its zone.
    """
    catalog = load_catalog(rules)
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
    engine = open_engine(db_url, lock_timeout, engine_tables=False)
    try:
        versions = sight_versions(engine, load_catalog(rules).packs, "plan") if record else None
        summary = execute.plan(engine, loaded, when, on_batch=on_batch, record=record)
        for version in versions or ():
            if version.loaded.digest == loaded.digest and version.refuses(when):
                summary.notes.append(f"{version.sentence()}: run refuses it without --accept-short-notice")
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
) -> execute.RunResult:
    """Apply every transition due at ``as_of``; optionally write Prometheus metrics.

    A pack version whose notice has not run out is refused (exit 2) unless
    ``accept_short_notice``, which the ledger records. With ``shard``, only
    that shard of the run group ``run_group`` (docs/scaling.md); without an
    explicit ``as_of`` it runs as of the instant the group started.
    """
    given = AsOf.given(as_of)
    loaded, when = load_pack(rules, given, pack_id)
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url, lock_timeout)
    short = None
    try:
        for version in sight_versions(engine, load_catalog(rules).packs, "run") or ():
            if version.loaded.digest == loaded.digest and version.refuses(when):
                short = version
    except BaseException:
        engine.dispose()
        raise
    if short is not None and not accept_short_notice:
        engine.dispose()
        raise ConfigError(f"{short.sentence()}; to apply it now anyway: --accept-short-notice")
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
                )
        except (RetentionError, sa.exc.SQLAlchemyError):
            if metrics_file is not None:
                _write_metrics(metrics_file, execute.RunResult("-", "failed"), loaded.id, started, utcnow())
            raise
        ledger.record_run_head(engine, result.run_id)
        if metrics_file is not None:
            _write_metrics(
                metrics_file,
                result,
                loaded.id,
                result.started_at or started,
                result.finished_at or utcnow(),
            )
        return result
    finally:
        engine.dispose()
        if archive_engine is not None:
            archive_engine.dispose()


def _write_metrics(
    path: Path, result: execute.RunResult, pack: str, started: dt.datetime, finished: dt.datetime
) -> None:
    from retention.reporting.metrics import write_run_metrics

    write_run_metrics(path, result, pack=pack, started=started, finished=finished, anomalies=result.anomalies)


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
    from retention.engine.evaluate import NOT_YET, dataset_sql, evaluate_readings
    from retention.engine.plan import PlanContext, build_planners, steps_from_active, steps_from_state

    loaded, when = load_pack(rules, as_of, pack_id)
    pack = loaded.pack
    if dataset not in pack.datasets:
        raise ConfigError(f"no dataset {dataset!r} in pack {pack.pack}; valid: {', '.join(pack.datasets)}")
    ds = pack.datasets[dataset]
    engine = open_engine(db_url)
    far = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    clocks: list[dict[str, Any]] = []
    due: dict[str, dt.datetime] = {}
    anomaly = None
    upcoming: tuple[Any, ...] = ()
    try:
        with engine.connect() as conn:
            planners = build_planners(conn, PlanContext(loaded, when))
            planner = planners[dataset]
            native = _native_key(planner.key, key, dataset)
            outcome = planner.outcomes(conn, [key]).get(key)
            subject = None
            if planner.subject is not None:
                subject_value = conn.execute(
                    sa.select(planner.subject).where(planner.key == native)
                ).scalar_one_or_none()
                subject = None if subject_value is None else str(subject_value)
            rs = store.record_states
            state_row = conn.execute(sa.select(rs).where(rs.c.dataset == dataset, rs.c.record_key == key)).first()
            if subject is None and state_row is not None:
                subject = state_row.subject_key
            email = None
            if planner.email is not None:
                email = conn.execute(sa.select(planner.email).where(planner.key == native)).scalar_one_or_none()
            mail_pseudonym = state_row.email_pseudonym if state_row is not None else None
            holds = _holds_covering(conn, dataset, key, _Named(subject, email, mail_pseudonym))
            excluded = planner.is_excluded(conn, native)
            if outcome is not None and outcome.state == "active" and ds.keep:
                sql = dataset_sql(conn, pack, dataset)
                readings = sql.readings(conn, native, when)
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
                                "basis": rule.basis or ds.basis,
                            }
                        )
                    if anomaly is None:
                        upcoming = tuple(s for s in steps_from_active(ds, far_dues, far) if s.due_at != NOT_YET)
            elif outcome is not None and outcome.since is not None:
                clock_day = state_row.clock_day if state_row is not None else None
                upcoming = steps_from_state(pack, ds, outcome.state, outcome.since, far, clock_day)
                due = {s.to_state: s.due_at for s in upcoming}
            conn.rollback()
    finally:
        engine.dispose()
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
        clocks=clocks,
        anomaly=anomaly,
        due={} if excluded else due,
        holds=holds,
        next_transition=next_transition,
        due_now=due_now,
        excluded=excluded,
    )


STATE_ONLY = "record the state only (source row unchanged)"


def step_action(ds: Dataset, state: str) -> str:
    """What entering ``state`` does, in words for ``explain``."""
    action = ds.step_to(state).action
    if action is not None:
        return action
    return STATE_ONLY if state == "inactive" else "purge archive payload"


def _native_key(column: Any, key: str, dataset: str) -> Any:
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


class _Named(NamedTuple):
    """A person as a request names them: subject id, normalised e-mail, the e-mail's pseudonym."""

    subject_key: str | None
    email: str | None
    email_pseudonym: str | None


def _holds_covering(conn: sa.Connection, dataset: str, key: str, person: _Named) -> list[dict[str, Any]]:
    h = store.holds
    covers = [
        sa.and_(h.c.scope == "dataset", h.c.dataset == dataset),
        sa.and_(h.c.scope == "record", h.c.dataset == dataset, h.c.record_key == key),
    ]
    for column, value in zip((h.c.subject_key, h.c.email, h.c.email_pseudonym), person, strict=True):
        if value is not None:
            covers.append(sa.and_(h.c.scope == "subject", column == value))
    rows = conn.execute(
        sa.select(h.c.id, h.c.scope, h.c.reason, h.c.placed_by, h.c.placed_at).where(
            h.c.released_at.is_(None), sa.or_(*covers)
        )
    ).all()
    return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------
# holds and erasure requests
# --------------------------------------------------------------------------


def hold_add(
    db_url: str,
    *,
    scope: subjects.Scope,
    reason: str,
    placed_by: str,
    dataset: str | None = None,
    record_key: str | None = None,
    subject_key: str | None = None,
    email: str | None = None,
    rules: Path | None = None,
) -> int:
    """Place a legal hold (recorded in the ledger); a subject hold by id, e-mail address or both."""
    pack = load_catalog(rules).in_force(utcnow().date()).pack if rules else None
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            return subjects.place_hold(
                conn,
                scope=scope,
                reason=reason,
                placed_by=placed_by,
                secret=secret,
                dataset=dataset,
                record_key=record_key,
                subject_key=subject_key,
                email=email,
                pack=pack,
            )
    finally:
        engine.dispose()


def hold_release(db_url: str, hold_id: int, *, reason: str, released_by: str) -> None:
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            subjects.release_hold(conn, hold_id, released_by=released_by, reason=reason, secret=secret)
    finally:
        engine.dispose()


def hold_list(db_url: str, *, include_released: bool = False) -> list[dict[str, Any]]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return subjects.list_holds(conn, include_released=include_released)
    finally:
        engine.dispose()


def _parse_day(text: str | dt.date, option: str) -> dt.date:
    if isinstance(text, dt.date):
        return text
    parsed = AsOf.given(text, option)
    if parsed is None or parsed.day is None:
        raise ConfigError(f"{option} {text!r} is not a date (YYYY-MM-DD)")
    return parsed.day


def erasure_add(
    db_url: str,
    rules: Path,
    pack_id: str | None,
    *,
    subject_key: str | None,
    received: str | dt.date,
    note: str | None,
    email: str | None = None,
) -> tuple[int, dt.date, str]:
    """Record a request; return its id, its deadline, and which days moved the deadline ('' if none)."""
    day = _parse_day(received, "--received")
    pack = load_catalog(rules).in_force(day, pack_id).pack
    secret = pseudonyms.pseudonym_secret() if email else None
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            request_id = subjects.add_request(
                conn, subject_key=subject_key, received=day, pack=pack, note=note, email=email, secret=secret
            )
        deadline, skipped = subjects.deadline_moves(day, pack, extended=False)
        return request_id, deadline, subjects.describe_moves(skipped)
    finally:
        engine.dispose()


def subject_known(
    db_url: str, rules: Path, pack_id: str | None, subject_key: str | None, email: str | None = None
) -> bool | None:
    """Whether any dataset of the pack in force today holds a record of the person (live or archived).

    None when the database cannot say (the pack's tables are not all there).
    """
    from retention.engine.plan import PlanContext, build_planners

    loaded = load_catalog(rules).in_force(utcnow().date(), pack_id)
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            try:
                planners = build_planners(conn, PlanContext(loaded, utcnow()))
            except SchemaError:
                return None
            named = _Named(subject_key, normalise_email(email) if email else None, None)
            if email:
                named = named._replace(email_pseudonym=pseudonyms.email_pseudonym(pseudonyms.pseudonym_secret(), email))
            return any(p.knows_subject(conn, named) for p in planners.values())
    finally:
        engine.dispose()


def erasure_list(
    db_url: str, *, include_closed: bool = False, rules: Path | None = None, pack_id: str | None = None
) -> list[dict[str, Any]]:
    """Requests with their deadlines; with ``rules``, why each deadline moved (weekends, holidays)."""
    today = utcnow().date()
    pack = load_catalog(rules).in_force(today, pack_id).pack if rules is not None else None
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return subjects.list_requests(conn, today, include_closed=include_closed, pack=pack)
    finally:
        engine.dispose()


def erasure_extend(
    db_url: str, rules: Path, pack_id: str | None, request_id: int, *, reason: str
) -> tuple[dt.date, str]:
    """Extend a request once; return the new deadline and which days moved it ('' if none)."""
    pack = load_catalog(rules).in_force(utcnow().date(), pack_id).pack
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            deadline = subjects.extend_request(conn, request_id, reason=reason, pack=pack)
            received = conn.execute(
                sa.select(store.erasure_requests.c.received_on).where(store.erasure_requests.c.id == request_id)
            ).scalar_one()
        _, skipped = subjects.deadline_moves(received, pack, extended=True)
        return deadline, subjects.describe_moves(skipped)
    finally:
        engine.dispose()


def erasure_close(db_url: str, request_id: int) -> None:
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            subjects.close_request(conn, request_id)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------
# ledger and demo
# --------------------------------------------------------------------------


def ledger_verify(
    db_url: str, checkpoint_file: Path | None = None, public_key: Path | None = None
) -> ledger.VerifyResult:
    """Verify the chain, and with a checkpoint file that the signed head still stands."""
    import json

    if checkpoint_file is None:
        engine = open_engine(db_url)
        try:
            return ledger.verify(engine)
        finally:
            engine.dispose()
    public = ledger.configured_public_key(public_key)  # never the key the checkpoint carries
    try:
        document = json.loads(checkpoint_file.read_bytes()[:1_000_000].decode("utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not JSON"
        raise ConfigError(f"cannot read checkpoint {checkpoint_file}: {reason}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"checkpoint {checkpoint_file} is not a checkpoint (a JSON object)")
    engine = open_engine(db_url)
    try:
        return ledger.verify_checkpoint(engine, document, public)
    finally:
        engine.dispose()


def _instant_option(text: AsOf | str | None, name: str) -> dt.datetime | None:
    parsed = AsOf.given(text, name)
    return None if parsed is None else parsed.resolve("UTC")


def ledger_entries(
    db_url: str,
    *,
    since: AsOf | str | None = None,
    until: AsOf | str | None = None,
    dataset: str | None = None,
    transition: str | None = None,
    run_id: str | None = None,
    limit: int = 0,
    record_pseudonym: str | None = None,
    subject_pseudonym: str | None = None,
) -> list[dict[str, Any]]:
    """Entries matching the filters, oldest first (at most ``limit``; 0 for all)."""
    engine = open_engine(db_url)
    try:
        result = []
        for row in ledger.entries(
            engine,
            since=_instant_option(since, "--since"),
            until=_instant_option(until, "--until"),
            dataset=dataset,
            transition=transition,
            run_id=run_id,
            record_pseudonym=record_pseudonym,
            subject_pseudonym=subject_pseudonym,
        ):
            result.append(row)
            if limit and len(result) >= limit:
                break
        return result
    finally:
        engine.dispose()


def ledger_export(db_url: str, fmt: str, output: Path | None, **filters: Any) -> int:
    import sys

    engine = open_engine(db_url)
    converted = {
        "since": _instant_option(filters.pop("since", None), "--since"),
        "until": _instant_option(filters.pop("until", None), "--until"),
        **filters,
    }
    try:
        if output is None:
            return ledger.export(engine, fmt, sys.stdout, **converted)
        with output.open("w", encoding="utf-8", newline="") as out:
            return ledger.export(engine, fmt, out, **converted)
    finally:
        engine.dispose()


def ledger_lookup(
    db_url: str,
    *,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    email: str | None = None,
) -> list[dict[str, Any]]:
    """Entries of one record (dataset and key), one subject or one e-mail address, found by their pseudonym."""
    if subject_key is None and email is None and (dataset is None or record_key is None):
        raise ConfigError("give --subject ID, --email ADDRESS, or --dataset and --key")
    if subject_key is not None and email is not None:
        raise ConfigError("give --subject or --email, not both (look each up in turn)")
    secret = pseudonyms.pseudonym_secret()
    from retention.ledger import items as ledger_items

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = ledger_items.lookup(
                conn, secret, dataset=dataset, record_key=record_key, subject_key=subject_key, email=email
            )
            backups.annotate(conn, rows)
            return rows
    finally:
        engine.dispose()


def ledger_checkpoint(db_url: str, key_file: Path | None) -> dict[str, Any]:
    key = ledger.load_signing_key(key_file)
    engine = open_engine(db_url)
    try:
        return ledger.checkpoint(engine, key, utcnow())
    finally:
        engine.dispose()


def ledger_keygen(key_file: Path) -> bytes:
    return ledger.generate_signing_key(key_file)


def _read_json(path: Path, what: str) -> Any:
    import json

    try:
        return json.loads(path.read_bytes()[:200_000_000].decode("utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not JSON"
        raise ConfigError(f"cannot read {what} {path}: {reason}") from None


def ledger_prove(
    db_url: str,
    checkpoint_file: Path,
    *,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
) -> dict[str, Any]:
    """The inclusion proof of one record or subject up to a signed checkpoint (see :mod:`retention.ledger.proof`)."""
    from retention.ledger import proof as ledger_proof

    if subject_key is None and (dataset is None or record_key is None):
        raise ConfigError("give --subject ID, or --dataset and --key")
    document = _read_json(checkpoint_file, "checkpoint")
    if not isinstance(document, dict):
        raise ConfigError(f"checkpoint {checkpoint_file} is not a checkpoint (a JSON object)")
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return ledger_proof.build(
                conn, secret, document, dataset=dataset, record_key=record_key, subject_key=subject_key
            )
    finally:
        engine.dispose()


def ledger_verify_proof(
    proof_file: Path,
    public_key: Path | None,
    *,
    dataset: str | None = None,
    record_key: str | None = None,
) -> Any:
    """Check a proof file offline: no database, the signer's key as the verifier configured it."""
    import json

    from retention.ledger import proof as ledger_proof

    public = ledger.configured_public_key(public_key)
    if (dataset is None) != (record_key is None):
        raise ConfigError("give both --dataset and --key to check which record the proof is about")
    secret = pseudonyms.pseudonym_secret() if record_key is not None else None
    try:
        text = proof_file.read_bytes()[:200_000_000]
    except OSError as exc:
        raise ConfigError(f"cannot read proof {proof_file}: {exc.strerror}") from None
    try:
        document = json.loads(text.decode("utf-8"))
    except ValueError:  # a damaged proof is a rejected one, not a usage error
        return ledger_proof.ProofResult(False, "the file is not JSON (damaged, or not a proof)")
    return ledger_proof.verify(document, public, secret=secret, dataset=dataset, record_key=record_key)


def demo_key_file(folder: Path) -> Path:
    """A random pseudonym key for the demo, in a 0600 file (kept across demos)."""
    import secrets

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pseudonym.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def demo_build(db_url: str, *, customers: int, seed: int) -> dict[str, int]:
    """Rebuild the sample shop and the engine's tables from scratch."""
    from retention.demo import build_shop

    url = sa.engine.make_url(db_url)
    file = dialect_for(url).database_file(url)
    if file is not None:
        file.unlink(missing_ok=True)
    engine = create_engine(db_url)
    try:
        migrate.downgrade(engine, "base") if migrate.current_revision(engine) else None
        migrate.upgrade(engine)
        summary = build_shop(engine, seed=seed, customers=customers, end=utcnow().date())
        return dict(summary.rows)
    except sa.exc.OperationalError as exc:
        if exc.statement is None or exc.connection_invalidated:
            raise connect_error(db_url, exc) from None
        raise
    finally:
        engine.dispose()


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def report(
    rules: Path,
    db_url: str,
    as_of: AsOf | str | None,
    horizon: Period | str,
    html_file: Path,
    pack_id: str | None = None,
    lock_timeout: int | None = None,
) -> tuple[PlanSummary, Any]:
    """Write the HTML report (plan now and a weekly forecast); return the plan and forecast."""
    from retention.reporting import report as report_module
    from retention.timing.clock import PeriodSyntaxError

    try:
        period = horizon if isinstance(horizon, Period) else Period.parse(horizon)
    except PeriodSyntaxError as exc:
        raise ConfigError(f"horizon: {exc}") from None
    if not period.within(MAX_HORIZON):
        raise ConfigError(f"horizon {period} is longer than {MAX_HORIZON}, the longest forecast (one plan a week)")
    loaded, when = load_pack(rules, as_of, pack_id)
    engine = open_engine(db_url, lock_timeout)
    try:
        summary = execute.plan(engine, loaded, when)
        forecast = report_module.forecast(engine, loaded, when, period)
    finally:
        engine.dispose()
    basis = {name: ds.basis or "" for name, ds in loaded.pack.datasets.items()}
    try:
        html_file.write_text(report_module.render(summary, forecast, period, basis), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {html_file}: {exc.strerror}") from None
    return summary, forecast


# --------------------------------------------------------------------------
# disposition review
# --------------------------------------------------------------------------


def review_list(db_url: str, *, include_done: bool = False) -> list[dict[str, Any]]:
    from retention.subjects import review

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return review.list_batches(conn, include_done=include_done)
    finally:
        engine.dispose()


def review_show(db_url: str, batch_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from retention.subjects import review

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return review.show_batch(conn, batch_id)
    finally:
        engine.dispose()


def review_decide(db_url: str, batch_id: int, *, approve: bool, by: str, reason: str) -> None:
    from retention.subjects import review

    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            review.decide(conn, batch_id, approve=approve, by=by, reason=reason)
    finally:
        engine.dispose()


def init(db_url: str, folder: Path) -> list[Path]:
    """Key files for a new installation (never overwritten) and the engine's tables."""
    created = []
    key = folder / "pseudonym.key"
    signing = folder / "signing.pem"
    try:
        if not key.exists():
            demo_key_file(folder)
            created.append(key)
        if not signing.exists():
            ledger.generate_signing_key(signing)
            created.append(signing)
    except OSError as exc:
        raise ConfigError(f"cannot create the key files in {folder}: {exc.strerror}") from None
    db_upgrade(db_url)
    return created
