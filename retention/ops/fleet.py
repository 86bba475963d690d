"""Fleets of databases: one unit of work per target, each with its own lock, ledger and exit status.

A fleet file names targets (a SaaS with one database per tenant, several
shops): each with its database URL read from an environment variable or a
file (never written in the fleet file), its rule pack, an optional archive
database and pseudonym key (same sources), and the timezone its times are
shown in. :func:`run_target` runs one target as ``retention run`` would and
returns a :class:`TargetOutcome`; that function is the unit both executors
call: the local one in a subprocess per target (``python -m retention.ops.fleet``,
so one target's crash cannot take the others down) and the Celery task
(:mod:`retention.ops.workers`).

The fleet's exit status is the worst of its targets' (:func:`worst_exit`);
a target whose database cannot be reached counts as a partial failure (3):
the others were applied.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import rfc8785
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url

from retention.dialects import dialect_for
from retention.errors import ConfigError, PackError, PackProblem, RetentionError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_PARTIAL, EXIT_GUARD, EXIT_LOCKED, EXIT_LEDGER = 0, 1, 2, 3, 4, 5, 6
SEVERITY = (EXIT_OK, EXIT_GUARD, EXIT_LOCKED, EXIT_PARTIAL, EXIT_FAILURE, EXIT_LEDGER, EXIT_CONFIG)
"""Exit codes from the mildest to the worst: the fleet exits with the worst of its targets'."""
ENV_FLEET_FILE = "RETENTION_FLEET_FILE"
DEFAULT_PARALLEL = 2
MAX_TARGETS = 10_000
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


# --------------------------------------------------------------------------
# The fleet file
# --------------------------------------------------------------------------


class SecretSource(BaseModel):
    """Where a secret value (a database URL, a key) is read: an environment variable or a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, pattern=_ENV_NAME)
    file: str | None = Field(default=None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (an environment variable) or file (a 0600 file)")
        return self


def _no_inline_secret(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "a URL or key is never written in the fleet file; write {env: VARIABLE} or {file: PATH} instead"
        )
    return value


class Target(BaseModel):
    """One database of the fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    database: SecretSource
    pack: str = Field(min_length=1, max_length=4096)
    pack_id: str | None = Field(default=None, min_length=1, max_length=100)
    archive: SecretSource | None = None
    pseudonym_key: SecretSource | None = None
    timezone: str = "UTC"

    _inline = field_validator("database", "archive", "pseudonym_key", mode="before")(_no_inline_secret)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from retention.timing.clock import iana_zone

        iana_zone(value)  # a ValueError names the zone and says what is valid
        return value

    def digest(self) -> str:
        """What the target says, hashed: a worker refuses a task whose target it defines differently."""
        return hashlib.sha256(rfc8785.dumps(self.model_dump(mode="json"))).hexdigest()


class FleetFile(BaseModel):
    """A fleet file: targets with unique names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fleet: str | None = Field(default=None, pattern=_NAME)
    targets: list[Target] = Field(min_length=1, max_length=MAX_TARGETS)

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[Target]) -> list[Target]:
        seen: set[str] = set()
        for index, target in enumerate(targets):
            if target.name in seen:
                raise ValueError(f"@{index}.name: target name {target.name!r} appears twice")
            seen.add(target.name)
        return targets


_VALID_KEYS = {
    "": "fleet, targets",
    "target": ", ".join(Target.model_fields),
    "source": "env, file",
}


@dataclass(frozen=True)
class Fleet:
    """A loaded fleet file: its targets and the folder relative paths start from."""

    path: Path
    spec: FleetFile

    @property
    def folder(self) -> Path:
        return self.path.resolve().parent

    def names(self) -> list[str]:
        return [t.name for t in self.spec.targets]

    def target(self, name: str) -> Target:
        for target in self.spec.targets:
            if target.name == name:
                return target
        raise ConfigError(f"{self.path}: no target named {name!r}; targets: {', '.join(self.names())}")

    def resolve(self, path: str) -> Path:
        """A path of the fleet file, relative to the file's folder; ``builtin:NAME`` stays as is."""
        if path.startswith("builtin:"):
            return Path(path)
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.folder / candidate


def _describe(error: Any, path: tuple[str | int, ...]) -> str:
    from retention.policy.loader import _dotted

    where = _dotted(path)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = path[:-1]
        shape = "" if not parent else "source" if parent[-1] in ("database", "archive", "pseudonym_key") else "target"
        place = _dotted(parent) or "the fleet file"
        return f"unknown key {path[-1]!r} in {place}; valid: {_VALID_KEYS[shape]}"
    if kind == "missing":
        return f"{_dotted(path[:-1]) or 'the fleet file'} is missing required key {path[-1]!r}"
    if kind == "value_error":
        return f"{where}: {error.get('ctx', {}).get('error', error['msg'])}"
    # Pydantic's own sentence, never the input: a misplaced value could be a secret.
    message = str(error["msg"])
    return f"{where}: {message[0].lower() + message[1:]}" if where else message


def load_fleet(path: Path) -> Fleet:
    """Read and validate a fleet file; every mistake is ``file:line: sentence`` (exit 2)."""
    from retention.policy.loader import _line_for, _read_yaml, _strip_union_tags, read_pack_text

    name = str(path)
    text = read_pack_text(path)
    located = _read_yaml(path, text)
    problems = [p for p in located.problems if "a rule pack must be a mapping" not in p.message]
    if not problems and not isinstance(located.data, dict):
        problems = [PackProblem(name, 1, "a fleet file must be a mapping with 'targets'")]
    if problems:
        raise PackError(problems)
    try:
        spec = FleetFile.model_validate(located.data)
    except ValidationError as exc:
        found: list[PackProblem] = []
        for error in exc.errors():
            where = _strip_union_tags(error["loc"])
            message = _describe(error, where)
            if error["type"] == "value_error":
                text_ = str(error.get("ctx", {}).get("error", error["msg"]))
                if text_.startswith("@"):
                    sub, _, text_ = text_[1:].partition(": ")
                    where = where + tuple(int(p) if p.isdigit() else p for p in sub.split("."))
                    from retention.policy.loader import _dotted

                    message = f"{_dotted(where)}: {text_}"
            problem = PackProblem(name, _line_for(located.lines, where), message)
            if str(problem) not in {str(p) for p in found}:
                found.append(problem)
        raise PackError(found) from None
    return Fleet(path, spec)


def fleet_path(flag: Path | None) -> Path:
    """The fleet file: ``--targets``, else ``RETENTION_FLEET_FILE``."""
    if flag is not None:
        return flag
    value = os.environ.get(ENV_FLEET_FILE)
    if not value:
        raise ConfigError(f"no fleet file; pass --targets FILE or set {ENV_FLEET_FILE}")
    return Path(value)


def read_source(fleet: Fleet, target: Target, source: SecretSource, what: str) -> str:
    """The value a source names, read now (by the process that runs the target, never sent)."""
    from retention.store.config import read_secret_file

    if source.env is not None:
        value = os.environ.get(source.env, "").strip()
        if not value:
            raise ConfigError(f"target {target.name}: the {what} is not configured; set {source.env}")
        return value
    assert source.file is not None
    return read_secret_file(f"{what} of target {target.name}", fleet.resolve(source.file)).decode().strip()


# --------------------------------------------------------------------------
# One target: the unit of work
# --------------------------------------------------------------------------


@dataclass
class TargetOutcome:
    """What one target's run came to; safe to print, log, store and send (no URL, no data)."""

    target: str
    status: str
    exit_code: int
    run_id: str | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    guarded: dict[str, str] = field(default_factory=dict)
    batches: int = 0
    error: str | None = None
    pack: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float = 0.0
    attempts: int = 1  # a shard: processes that started it, this one included (a rerun, a redelivered task)
    redelivered: bool = False  # a Celery task the broker delivered again (its first worker died or timed out)
    notes: list[str] = field(default_factory=list)  # the run's, as `retention run` prints them (counts only)

    @property
    def transitions(self) -> int:
        return sum(c for per in self.counts.values() for c in per.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetOutcome:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _reachable(url: str, lock_timeout: int | None) -> str | None:
    """None when the target's database answers, else why not (one line, no URL, no data).

    A SQLite target whose file does not exist is unreachable: a fleet never
    creates a tenant's database (a mistyped path would otherwise start empty).
    """
    from retention.errors import describe_database_error
    from retention.store.config import create_engine

    parsed = make_url(url)
    dialect = dialect_for(parsed)
    if dialect.embedded:
        file = dialect.database_file(parsed)
        if file is None or str(file) == ":memory:" or not file.is_file():
            return "the SQLite database file does not exist"
    engine = create_engine(url, lock_timeout_seconds=lock_timeout)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        return describe_database_error(exc).replace("a database operation failed", "cannot connect")
    finally:
        engine.dispose()
    return None


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for one target's run, and put the old values back after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _run_status(result: Any) -> int:
    """A run's exit code as ``retention run`` gives it: 1 interrupted, 3 partial, 4 guarded, else 0."""
    if result.status == "interrupted":
        return EXIT_FAILURE
    if result.failures:
        return EXIT_PARTIAL
    if result.guarded:
        return EXIT_GUARD
    return EXIT_OK


def run_target(
    fleet: Fleet,
    name: str,
    *,
    as_of: str | None = None,
    lock_timeout: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    expected_digest: str | None = None,
    allow_mass: Sequence[str] = (),
) -> TargetOutcome:
    """Run one target, as ``retention run`` would on its database; never raises a RetentionError.

    ``expected_digest`` (from a task): the target must be defined here as it
    was where the task was sent, or it is refused (exit 2).
    """
    from retention import commands
    from retention.logs import get_logger

    def apply() -> Any:
        target = fleet.target(name)
        if expected_digest is not None and target.digest() != expected_digest:
            raise ConfigError(f"target {name} is defined differently in {fleet.path} here than where the task was sent")
        url = read_source(fleet, target, target.database, "database URL")
        archive = read_source(fleet, target, target.archive, "archive database URL") if target.archive else None
        env = {}
        if target.pseudonym_key is not None:
            env["RETENTION_PSEUDONYM_KEY"] = read_source(fleet, target, target.pseudonym_key, "pseudonym key")
        unreachable = _reachable(url, lock_timeout)
        if unreachable is not None:
            get_logger().error("target_unreachable", error=unreachable)
            return TargetOutcome(name, "unreachable", EXIT_PARTIAL, error=unreachable)
        with _environment(env):
            return commands.run(
                fleet.resolve(target.pack),
                url,
                as_of,
                target.pack_id,
                archive,
                should_stop=should_stop,
                lock_timeout=lock_timeout,
                allow_mass=tuple(allow_mass),
            )

    return run_unit(name, apply)


def shard_name(index: int, count: int) -> str:
    return f"shard {index}/{count}"


def run_shard(
    index: int,
    count: int,
    run_group: str,
    *,
    rules: Path | None,
    db_url: str,
    archive_url: str | None = None,
    as_of: str | None = None,
    pack_id: str | None = None,
    lock_timeout: int | None = None,
    allow_mass: Sequence[str] = (),
    accept_short_notice: bool = False,
    should_stop: Callable[[], bool] | None = None,
    allow_future_as_of: bool = False,
) -> TargetOutcome:
    """Shard ``index`` of ``count`` of run group ``run_group``, as ``retention run --shard`` runs it."""
    from retention import commands
    from retention.engine.shards import ShardSpec

    def apply() -> Any:
        if rules is None:
            raise ConfigError("no rule pack for the shard; give --rules or set RETENTION_RULES")
        return commands.run(
            rules,
            db_url,
            as_of,
            pack_id,
            archive_url,
            allow_mass=tuple(allow_mass),
            should_stop=should_stop,
            lock_timeout=lock_timeout,
            accept_short_notice=accept_short_notice,
            shard=ShardSpec(index, count),
            run_group=run_group,
            allow_future_as_of=allow_future_as_of,
        )

    return run_unit(shard_name(index, count), apply)


def run_unit(name: str, apply: Callable[[], Any]) -> TargetOutcome:
    """One unit of work (a fleet target, a shard) as a :class:`TargetOutcome`; never raises a RetentionError.

    ``apply`` returns the run's :class:`~retention.engine.execute.RunResult` (or an
    outcome of its own); an error the engine raises on purpose, and a
    database error, become the unit's status and exit code, in one line
    that quotes no data. Log events meanwhile carry ``target``.
    """
    import structlog

    from retention.errors import LockHeldError, describe_failure, is_database_error
    from retention.logs import get_logger
    from retention.timing.clock import utcnow

    log = get_logger()
    started = utcnow()
    clock = time.monotonic()
    structlog.contextvars.bind_contextvars(target=name)
    outcome: TargetOutcome
    try:
        result = apply()
        if isinstance(result, TargetOutcome):
            outcome = result
        else:
            outcome = TargetOutcome(
                name,
                result.status,
                _run_status(result),
                run_id=result.run_id,
                counts=result.counts,
                failures=result.failures,
                guarded=result.guarded,
                batches=result.batches,
                attempts=getattr(result, "attempts", 1),
                notes=list(getattr(result, "notes", [])),
                started_at=_iso(result.started_at),
                finished_at=_iso(result.finished_at),
            )
    except RetentionError as exc:
        status = "locked" if isinstance(exc, LockHeldError) else "config error" if exc.exit_code == 2 else "failed"
        outcome = TargetOutcome(name, status, exc.exit_code, error=str(exc).splitlines()[0][:500])
    except Exception as exc:
        if not is_database_error(exc):
            raise
        outcome = TargetOutcome(name, "failed", EXIT_FAILURE, error=describe_failure(exc)[:500])
    finally:
        structlog.contextvars.unbind_contextvars("target")
    outcome.started_at = outcome.started_at or _iso(started)
    outcome.finished_at = outcome.finished_at or _iso(utcnow())
    outcome.seconds = round(time.monotonic() - clock, 3)
    log.info("target_finished", target=name, status=outcome.status, exit_code=outcome.exit_code)
    return outcome


def worst_exit(outcomes: Sequence[TargetOutcome]) -> int:
    """The fleet's exit code: the worst of its targets' (see :data:`SEVERITY`)."""
    codes = [o.exit_code if o.exit_code in SEVERITY else EXIT_FAILURE for o in outcomes]
    return max(codes, key=SEVERITY.index, default=EXIT_OK)


# --------------------------------------------------------------------------
# Local execution: a bounded pool of subprocesses
# --------------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    started: float
    output: IO[bytes]  # the child's stdout (its outcome), a temporary file: a pipe could fill up


def _crashed(name: str, code: int, started: float) -> TargetOutcome:
    how = f"killed by signal {-code}" if code < 0 else f"exit {code} without a result"
    return TargetOutcome(
        name, "crashed", EXIT_FAILURE, error=f"the target's process ended: {how}", seconds=time.monotonic() - started
    )


def run_local(
    fleet: Fleet,
    names: Sequence[str],
    *,
    parallel: int = DEFAULT_PARALLEL,
    as_of: str | None = None,
    lock_timeout: int | None = None,
    allow_mass: Sequence[str] = (),
    log_format: str = "json",
    log_level: str = "info",
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[TargetOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TargetOutcome]:
    """Run fleet targets ``names`` in subprocesses, at most ``parallel`` at a time (see :func:`run_pool`)."""
    specs = {
        name: {
            "kind": "target",
            "fleet": str(fleet.path),
            "target": name,
            "as_of": as_of,
            "lock_timeout": lock_timeout,
            "allow_mass": list(allow_mass),
            "log_format": log_format,
            "log_level": log_level,
        }
        for name in names
    }
    return run_pool(specs, parallel=parallel, on_start=on_start, on_done=on_done, should_stop=should_stop)


def run_pool(
    specs: dict[str, dict[str, Any]],
    *,
    parallel: int = DEFAULT_PARALLEL,
    env: dict[str, str] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[TargetOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TargetOutcome]:
    """Run units in subprocesses, at most ``parallel`` at a time; outcomes in the order of ``specs``.

    Each unit runs in ``python -m retention.ops.fleet SPEC`` (its stderr is this
    process's, so its log lines carry ``target``; ``env`` adds settings such
    as a database URL, kept off the command line); a process that dies
    without a result (a crash, the OOM killer) is that unit's failure
    (exit 1) and the others go on. ``should_stop``: start no more units and
    ask the running ones to stop after their current batch (SIGTERM).
    """
    import signal

    waiting = list(specs)
    running: list[_Child] = []
    done: dict[str, TargetOutcome] = {}
    stopping = False
    child_env = {**os.environ, **(env or {})}
    while waiting or running:
        if should_stop is not None and should_stop() and not stopping:
            stopping = True
            for child in running:
                child.process.send_signal(signal.SIGTERM)
            for name in waiting:
                done[name] = TargetOutcome(name, "not started", EXIT_FAILURE, error="the run was stopped")
            waiting.clear()
        while waiting and len(running) < parallel:
            name = waiting.pop(0)
            output = tempfile.TemporaryFile()  # noqa: SIM115 - closed when its child has ended
            process = subprocess.Popen(
                [sys.executable, "-m", "retention.ops.fleet", json.dumps(specs[name])],
                stdout=output,
                stdin=subprocess.DEVNULL,
                env=child_env,
            )
            running.append(_Child(name, process, time.monotonic(), output))
            if on_start is not None:
                on_start(name)
        time.sleep(0.05)
        for child in list(running):
            code = child.process.poll()
            if code is None:
                continue
            running.remove(child)
            child.output.seek(0)
            out = child.output.read().decode("utf-8", "replace").strip().splitlines()
            child.output.close()
            try:
                outcome = TargetOutcome.from_dict(json.loads(out[-1]))
            except (IndexError, ValueError, TypeError):
                outcome = _crashed(child.name, code, child.started)
            done[child.name] = outcome
            if on_done is not None:
                on_done(outcome)
    return [done[name] for name in specs]


def _child_main(argv: list[str]) -> int:
    """``python -m retention.ops.fleet SPEC``: run one target or shard, print its outcome as JSON, exit with code."""
    import signal
    import threading

    from retention import logs

    spec = json.loads(argv[0])
    fmt = spec.get("log_format", "json")
    # For people (a terminal): no line per batch, the parent shows a bar of units done.
    quiet = frozenset({"batch_applied"}) if fmt == "console" else frozenset()
    logs.configure(json=None if fmt == "auto" else fmt == "json", level=spec.get("log_level", "info"), quiet=quiet)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if spec.get("kind") == "shard":
        from retention.store.config import database_url

        rules = os.environ.get("RETENTION_RULES")
        outcome = run_shard(
            spec["index"],
            spec["count"],
            spec["run_group"],
            rules=Path(rules) if rules else None,
            db_url=database_url(None),
            archive_url=os.environ.get("RETENTION_ARCHIVE_DATABASE_URL") or None,
            as_of=spec.get("as_of"),
            pack_id=spec.get("pack_id"),
            lock_timeout=spec.get("lock_timeout"),
            allow_mass=spec.get("allow_mass", ()),
            accept_short_notice=spec.get("accept_short_notice", False),
            should_stop=stop.is_set,
            allow_future_as_of=spec.get("allow_future_as_of", False),
        )
    else:
        try:
            fleet = load_fleet(Path(spec["fleet"]))
            outcome = run_target(
                fleet,
                spec["target"],
                as_of=spec.get("as_of"),
                lock_timeout=spec.get("lock_timeout"),
                should_stop=stop.is_set,
                allow_mass=spec.get("allow_mass", ()),
            )
        except RetentionError as exc:  # the fleet file changed since the parent read it
            name = spec["target"]
            outcome = TargetOutcome(name, "config error", exc.exit_code, error=str(exc).splitlines()[0][:500])
    sys.stdout.write(json.dumps(outcome.as_dict()) + "\n")
    sys.stdout.flush()
    return outcome.exit_code


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def _last_successes(path: Path) -> dict[str, float]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    found = re.finditer(
        r'^retention_fleet_last_success_timestamp_seconds\{target="([^"]+)"\} (\S+)$', text, re.MULTILINE
    )
    return {m.group(1): float(m.group(2)) for m in found}


def write_fleet_metrics(path: Path, outcomes: Sequence[TargetOutcome]) -> None:
    """The fleet's figures as a node_exporter textfile, every series labelled by target.

    The names start with ``retention_fleet_``: node_exporter refuses one
    metric name with two label sets or two help texts, as ``run``'s own
    textfile in the same folder would give it.
    """
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    moved = Gauge(
        "retention_fleet_records_transitioned",
        "Records moved by the last fleet run, per target, dataset and transition.",
        ["target", "dataset", "transition"],
        registry=registry,
    )
    failures = Gauge(
        "retention_fleet_dataset_failures",
        "Datasets that failed at the last fleet run, per target.",
        ["target", "dataset"],
        registry=registry,
    )
    guards = Gauge(
        "retention_fleet_guard_trips",
        "Datasets refused by a mass-deletion guard at the last fleet run, per target.",
        ["target", "dataset"],
        registry=registry,
    )
    status = Gauge(
        "retention_fleet_target_status",
        "1 for the status of the target's last run.",
        ["target", "status"],
        registry=registry,
    )
    exit_code = Gauge(
        "retention_fleet_target_exit_code",
        "The target's exit code at the last fleet run.",
        ["target"],
        registry=registry,
    )
    duration = Gauge(
        "retention_fleet_run_duration_seconds", "Wall time of the target's last run.", ["target"], registry=registry
    )
    success = Gauge(
        "retention_fleet_last_success_timestamp_seconds",
        "When the target's run last succeeded (unix time).",
        ["target"],
        registry=registry,
    )
    previous = _last_successes(path)
    now = time.time()
    for outcome in outcomes:
        name = outcome.target
        for dataset, per in outcome.counts.items():
            for transition, count in per.items():
                moved.labels(name, dataset, transition).set(count)
        for dataset in outcome.failures:
            failures.labels(name, dataset).set(1)
        for dataset in outcome.guarded:
            guards.labels(name, dataset).set(1)
        status.labels(name, outcome.status).set(1)
        exit_code.labels(name).set(outcome.exit_code)
        duration.labels(name).set(outcome.seconds)
        last = now if outcome.status == "succeeded" else previous.get(name)
        if last is not None:
            success.labels(name).set(last)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


if __name__ == "__main__":  # pragma: no cover - exercised through run_local's subprocesses
    sys.exit(_child_main(sys.argv[1:]))
