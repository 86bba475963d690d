"""What is due and doing it: ``plan``, ``run``, ``explain`` and the ``report`` forecast."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from retention import commands, logs
from retention.cli import output, params
from retention.cli.dispatch import run_shards
from retention.cli.options import (
    EXIT_FAILURE,
    EXIT_GUARD,
    EXIT_PARTIAL,
    as_of_option,
    bind_zone,
    command,
    configure_logs,
    db_option,
    dispatch_options,
    format_option,
    handled,
    json_logs,
    lock_timeout_option,
    log_settings,
    machine_only,
    pack_option,
    refuse_ignored_dispatch,
    rules_option,
    utc_option,
    zone_after_pack,
    zone_options,
)
from retention.cli.output import (
    PLAN_COLUMNS,
    console,
    display_zone,
    err_console,
    json_default,
    plan_rows,
    print_plan_table,
    print_rows,
    when,
)
from retention.engine.shards import MAX_SHARDS
from retention.errors import ConfigError
from retention.store.config import database_url
from retention.timing.clock import AsOf, Period


@command()
@rules_option()
@db_option
@as_of_option
@pack_option
@format_option
@utc_option
@click.option("--no-record", is_flag=True, help="Do not keep this plan's counts for the next comparison.")
@click.option(
    "--shards",
    type=click.IntRange(1, MAX_SHARDS),
    default=None,
    metavar="N",
    help="Show how `run --shard I/N` splits the work: per dataset and shard, key range and counts.",
)
@lock_timeout_option
@handled
def plan(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    fmt: str,
    utc: bool,
    no_record: bool,
    shards: int | None,
    lock_timeout: int | None,
) -> None:
    """Dry run: list every transition `run` would perform, writing nothing.

    For the same database state and --as-of, `run` performs exactly these
    transitions. Anomalies (NULL, zero, invalid or future clocks) are counted,
    never moved. Due dates are shown in the pack's timezone (--utc for UTC).

    Plan never writes to the application's tables. It keeps its counts in
    the engine's runs table (unless --no-record) to show the change since
    the last plan. It needs only SELECT: where the engine's tables are
    missing or unreadable (a read-only role, a database never upgraded) it
    plans as a first run would, says so, and records nothing.
    """
    if shards is not None:
        split = commands.plan_shards(rules, database_url(db), shards, as_of, pack_id)
        if fmt == "json":
            click.echo(json.dumps(split, indent=2, default=str))
            return
        rows = [{**row, "counts": ", ".join(f"{t} {n}" for t, n in row["counts"].items()) or "-"} for row in split]
        print_rows(rows, output.SHARD_COLUMNS, fmt, drop_order=output.SHARD_DROP_ORDER)
        return
    summary = commands.plan(rules, database_url(db), as_of, pack_id, record=not no_record, lock_timeout=lock_timeout)
    if fmt == "json":
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    if fmt == "csv":
        print_rows(plan_rows(summary), [*PLAN_COLUMNS, "previous"], fmt)
        return
    zone = display_zone(rules, summary.pack_id, utc)
    since = f"; change since the plan as of {when(summary.previous['as_of'], zone)}" if summary.previous else ""
    console.print(
        f"plan for pack {summary.pack_id} ({summary.pack_digest[:12]}) as of "
        f"{when(summary.as_of, zone)}: {summary.total()} transitions{since}",
        highlight=False,
    )
    print_plan_table(summary, zone)
    for note in summary.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if fmt == "table":
        for dataset, dropped in summary.partitions.items():
            if dropped:
                rows = sum(d["rows"] for d in dropped)
                console.print(
                    f"{dataset}: {len(dropped)} partitions ({rows} of the records above) will be dropped whole: "
                    + ", ".join(d["partition"] for d in dropped),
                    highlight=False,
                )
                kept = [d for d in dropped if d.get("counted") == "kept"]
                scanned: dict[str, list[str]] = {}
                for d in dropped:
                    if d.get("counted", "kept") != "kept":
                        scanned.setdefault(d["counted"].removeprefix("scanned: "), []).append(d["partition"])
                console.print(
                    f"{dataset}: rows counted from kept counts: {len(kept)} partitions; by a scan: "
                    + ("; ".join(f"{', '.join(names)} ({why})" for why, names in scanned.items()) or "none"),
                    highlight=False,
                )
        for hold in summary.held_back:
            console.print(
                f"hold {hold['hold_id']} ({hold['scope']}: {hold['reason']}) holds back {hold['count']} "
                f"due records of {hold['dataset']}",
                highlight=False,
            )


@command()
@rules_option()
@db_option
@as_of_option
@pack_option
@click.option(
    "--archive-db",
    "archive_url",
    envvar="RETENTION_ARCHIVE_DATABASE_URL",
    default=None,
    help="Separate database for the intermediate archive (default: the engine's tables).",
)
@click.option(
    "--allow-mass",
    "allow_mass",
    multiple=True,
    metavar="DATASET",
    envvar="RETENTION_ALLOW_MASS",
    help="Override the mass-deletion guard of DATASET for this run ('*' for all; or RETENTION_ALLOW_MASS, "
    "space-separated); recorded in the ledger.",
)
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Write Prometheus metrics here (a .prom file in node_exporter's textfile folder).",
)
@click.option(
    "--accept-short-notice",
    is_flag=True,
    help="Apply a pack version whose notice period has not run out (see pack history); recorded in the ledger.",
)
@click.option(
    "--allow-future-as-of",
    is_flag=True,
    help="Accept an --as-of later than now (refused otherwise: it applies transitions before they are due).",
)
@format_option
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bars on a terminal (they need a plan first, to know each dataset's total).",
)
@click.option(
    "--shard",
    type=params.SHARD,
    default=None,
    metavar="I/N",
    help="Run shard I (0 to N-1) of N: every dataset's records in this shard's key range (docs/scaling.md).",
)
@click.option(
    "--run-group",
    envvar="RETENTION_RUN_GROUP",
    default=None,
    metavar="G",
    help="The run group the shard belongs to: its N shards make one logical run (default: the as-of day and N); "
    "a new group's name: letters, digits, '.', '_' and '-'.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, MAX_SHARDS),
    default=None,
    metavar="N",
    help="Run all N shards, one unit each: here in --parallel processes, or as Celery tasks with --via celery.",
)
@dispatch_options("shards", when="With --shards: ")
@lock_timeout_option
@handled
@zone_after_pack
def run(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    archive_url: str | None,
    allow_mass: tuple[str, ...],
    metrics_file: Path | None,
    accept_short_notice: bool,
    allow_future_as_of: bool,
    fmt: str,
    no_progress: bool,
    shard: Any,
    run_group: str | None,
    shards: int | None,
    via: str,
    parallel: int,
    queue: str,
    broker: str | None,
    result_backend: str | None,
    timeout: float | None,
    lock_timeout: int | None,
) -> None:
    """Apply every transition due, one transaction per batch, with ledger entries.

    Needs the pseudonym key (RETENTION_PSEUDONYM_KEY or RETENTION_PSEUDONYM_KEY_FILE).
    Exit 0 on success, 3 when some datasets failed (the others were applied) or
    the metrics file could not be written after the run, 4 when a mass-deletion
    guard refused a dataset, 5 when another run holds the lock.
    SIGTERM stops the run after its current batch (exit 1; the next run continues).

    On a terminal a bar per dataset shows transitions done, rate and time left;
    with JSON logs a run_progress event every 10 batches says the same. With
    --log-format json and no --format, the output is JSON log lines only
    (run_finished carries the counts).
    """
    import signal
    import threading

    if run_group is not None and (shard is not None or shards is not None):
        run_group = _group_name(run_group, db)
    if shards is not None:
        if shard is not None:
            raise ConfigError("--shards N runs every shard; --shard I/N runs one: give one of them")
        refuse_ignored_dispatch(via, "--shards")
        run_shards(
            rules,
            database_url(db),
            as_of,
            pack_id,
            archive_url,
            shards,
            run_group=run_group,
            via=via,
            parallel=parallel,
            celery=(queue, broker, result_backend, timeout),
            allow_mass=allow_mass,
            accept_short_notice=accept_short_notice,
            allow_future_as_of=allow_future_as_of,
            metrics_file=metrics_file,
            fmt=fmt,
            lock_timeout=lock_timeout,
        )
        return
    if via != "local":
        raise ConfigError("--via celery runs shards: give --shards N (a fleet: retention fleet run --via celery)")
    refuse_ignored_dispatch(via, None)
    ctx = click.get_current_context()
    if shard is None and ctx.get_parameter_source("run_group") == click.core.ParameterSource.COMMANDLINE:
        # From RETENTION_RUN_GROUP it is left alone, unchecked: a deployment may set it for every job.
        raise ConfigError("--run-group names the group of a sharded run: give --shard I/N or --shards N with it")
    quiet_output = machine_only() and ctx.get_parameter_source("fmt") == click.core.ParameterSource.DEFAULT
    url = database_url(db)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def apply(on_batch: _NoProgress | None) -> Any:
        return commands.run(
            rules,
            url,
            as_of,
            pack_id,
            archive_url,
            on_batch=on_batch,
            allow_mass=allow_mass,
            metrics_file=metrics_file,
            should_stop=stop.is_set,
            lock_timeout=lock_timeout,
            accept_short_notice=accept_short_notice,
            shard=shard,
            run_group=run_group,
            allow_future_as_of=allow_future_as_of,
            on_locked=on_batch.locked if on_batch is not None else None,
            on_pack=lambda catalog: bind_zone(catalog, pack_id),
        )

    bar = fmt == "table" and not no_progress and shard is None
    with _run_progress(rules, url, as_of, pack_id, bar=bar) as on_batch:
        result = apply(on_batch)
        on_batch.finish(result.counts)
    if quiet_output:
        _exit_for(result)
        return
    rows = [{"dataset": d, "transition": t, "count": c} for d, per in result.counts.items() for t, c in per.items()]
    rows += [{"dataset": d, "transition": "FAILED", "count": None, "error": e} for d, e in result.failures.items()]
    rows += [{"dataset": d, "transition": "GUARDED", "count": None, "error": e} for d, e in result.guarded.items()]
    rows += [{"dataset": d, "transition": "WAITING", "count": None, "error": e} for d, e in result.waiting.items()]
    if fmt != "table":
        print_rows(rows, ["dataset", "transition", "count", "error"], fmt)
        _exit_for(result)
        return
    part = f" shard {result.shard}" if result.shard else ""
    console.print(f"run {result.run_id}{part}: {result.status}, {result.batches} batches", highlight=False)
    print_rows(rows, ["dataset", "transition", "count"], fmt)
    for dataset, error in result.failures.items():
        err_console.print(f"dataset {dataset} failed: {error}", highlight=False)
    for message in result.guarded.values():
        err_console.print(message, highlight=False)
    for message in sorted(set(result.waiting.values())):
        err_console.print(f"warning: {message}", highlight=False)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False)
    _exit_for(result)


class _NoProgress:
    """What a run reports its batches to when nobody watches a bar."""

    def __init__(self, log_progress: Any = None) -> None:
        self._log_progress = log_progress

    def __call__(self, batch: Any) -> None:
        if self._log_progress is not None:
            self._log_progress.on_batch(batch)

    def locked(self) -> None:
        """The run holds the lock: nothing to prepare."""

    def finish(self, counts: Any) -> None:
        """Nothing to settle: the run's own summary follows."""

    def close(self) -> None:
        """Nothing to put away."""


class _BarProgress(_NoProgress):
    """Bars per dataset, set up once the run holds the lock (planning first would waste a refused run's time)."""

    def __init__(self, plan_totals: Callable[[], dict[str, int]]) -> None:
        super().__init__()
        self._plan_totals = plan_totals
        self._bars: Any = None

    def locked(self) -> None:
        from rich.file_proxy import FileProxy

        from retention.reporting.progress import BarProgress, planning_status

        with planning_status(err_console, "planning, to know how much each dataset has to move"):
            totals = self._plan_totals()
        self._bars = BarProgress(err_console, totals).__enter__()
        settings = log_settings()
        logs.configure(
            json=False,
            level=settings["level"],
            stream=FileProxy(self._bars.console, sys.stderr),  # type: ignore[arg-type]
            quiet=frozenset({"batch_applied"}),
        )

    def __call__(self, batch: Any) -> None:
        if self._bars is not None:
            self._bars.on_batch(batch)

    def finish(self, counts: Any) -> None:
        if self._bars is not None:
            self._bars.finish(counts)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.__exit__(None, None, None)
            self._bars = None
            configure_logs()


@contextmanager
def _run_progress(
    rules: Path, url: str, as_of: AsOf | str | None, pack_id: str | None, bar: bool
) -> Iterator[_NoProgress]:
    """Bars on a terminal (totals from a plan), run_progress log events with JSON logs, else nothing.

    The plan for the bars' totals is made once the run holds the lock
    (``locked``), with the time it takes shown: a run that another holds the
    lock against exits 5 at once. While the bars show, per-batch log events
    are not printed (the bars say the same) and other log lines are printed
    above the bars.
    """
    from retention.reporting.progress import LogProgress, totals_from_plan

    if json_logs():
        yield _NoProgress(LogProgress(logs.get_logger()))
        return
    if not (bar and err_console.is_terminal):
        yield _NoProgress()
        return

    def plan_totals() -> dict[str, int]:
        return totals_from_plan(commands.plan(rules, url, as_of, pack_id, record=False).transitions)

    progress = _BarProgress(plan_totals)
    try:
        yield progress
    finally:
        progress.close()


@command()
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@zone_options
@handled
def status(db: str | None, fmt: str, rules: Path | None, pack_id: str | None, utc: bool) -> None:
    """Which run holds the lock: its id, since when, host and pid, and how far it has got.

    How far: the batches and transitions it has committed (from the ledger)
    and when its last batch committed. A lock row whose holder is gone (a
    killed run) is shown as such: the next run takes the lock over.
    """
    from retention.timing.clock import utcnow

    now = utcnow()
    states = commands.lock_status(database_url(db), now)
    if fmt == "json":
        rows = [
            {
                "lock": s.holder.name,
                "run_id": s.holder.run_id,
                "since": s.holder.acquired_at,
                "host": s.holder.host,
                "pid": s.holder.pid,
                "holds": s.live,
                "pack": s.progress.pack_id,
                "batches": s.progress.batches,
                "transitions": s.progress.transitions,
                "last_batch_at": s.progress.last_batch_at,
            }
            for s in states
        ]
        click.echo(json.dumps(rows, indent=2, default=json_default))
        return
    zone = display_zone(rules, pack_id, utc)
    if not any(s.live for s in states):
        console.print("no run holds the lock on this database", highlight=False)
    for s in states:
        h, p = s.holder, s.progress
        what = "the lock on this database" if h.name == "run" else f"the lock of {h.name}"
        if not s.live:
            console.print(
                f"run {h.run_id} left its row for {what} (its process is gone); the next run takes it over",
                highlight=False,
            )
            continue
        console.print(
            f"run {h.run_id} holds {what} since {when(h.acquired_at, zone)} ({_ago(now - h.acquired_at)}), "
            f"on host {h.host}, pid {h.pid}",
            highlight=False,
        )
        last = (
            f"; the last at {when(p.last_batch_at, zone)} ({_ago(now - p.last_batch_at)})"
            if p.last_batch_at
            else "; planning or on its first batch"
        )
        console.print(
            f"  pack {p.pack_id or '?'}: {p.batches} batches committed, {p.transitions} transitions{last}",
            highlight=False,
        )


def _ago(delta: dt.timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min ago" if hours else f"{rest // 60} min {rest % 60} s ago"


def _group_name(name: str, db: str | None) -> str:
    """The group a shard (or ``--shards``) runs under: a new name must have the run-group form, a stored one not.

    Why here and not on the option: a whole run ignores ``RETENTION_RUN_GROUP``,
    so a value of another form must not refuse it; and a group recorded before
    the form was checked (``night 2026-12-07``) must still take its failed
    shards again under its own name, which is how such a group is finished.
    The database is read only when the name does not have the form.
    """
    ctx = click.get_current_context()
    param = next(p for p in ctx.command.params if p.name == "run_group")
    try:
        return str(params.RUN_GROUP.convert(name, param, ctx))
    except click.BadParameter:
        if _group_stored(name, db):
            return name
        raise


def _group_stored(name: str, db: str | None) -> bool:
    """Whether ``name`` is a recorded group; False when the database cannot say (no tables yet, unreachable)."""
    import sqlalchemy as sa

    from retention.errors import RetentionError
    from retention.store import run_groups
    from retention.store.connect import open_engine

    if len(name) > 191 or not name.strip():  # longer than the column, or blank: never stored
        return False
    try:
        engine = open_engine(database_url(db))
    except (RetentionError, sa.exc.SQLAlchemyError):
        return False
    try:
        with engine.connect() as conn:
            return run_groups.stored(conn, name)
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _exit_for(result: Any) -> None:
    """The run's exit code: 1 interrupted, 3 partial, 4 guarded, else 0; 3 also for a metrics file not written.

    A metrics file that fails after the run committed is exit 3, "partial":
    the data work and its ledger entries were applied and stand, one of the
    run's outputs was not. A worse code the run earned is kept.
    """
    if result.metrics_error is not None and not machine_only():  # JSON logs have metrics_not_written
        err_console.print(f"error: {result.metrics_error}", highlight=False)
    if result.status == "interrupted":
        if not machine_only():
            err_console.print("run interrupted after its current batch; the next run continues", highlight=False)
        sys.exit(EXIT_FAILURE)
    if result.failures:
        sys.exit(EXIT_PARTIAL)
    if result.guarded:
        sys.exit(EXIT_GUARD)
    if result.metrics_error is not None:
        sys.exit(EXIT_PARTIAL)


@command()
@rules_option()
@db_option
@click.option("--dataset", required=True, type=params.NAME, help="Dataset name from the pack.")
@click.option("--key", required=True, type=params.RECORD_KEY, help="The record's key (primary key value).")
@as_of_option
@pack_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@utc_option
@handled
def explain(
    rules: Path,
    db: str | None,
    dataset: str,
    key: str,
    as_of: AsOf | None,
    pack_id: str | None,
    fmt: str,
    utc: bool,
) -> None:
    """Explain one record: its clocks, due dates, state, holds and next transition.

    Instants are shown in the pack's timezone (--utc for UTC); JSON has them in UTC.
    """
    result = commands.explain(rules, database_url(db), dataset, key, as_of, pack_id)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    zone = display_zone(rules, pack_id, utc)
    console.print(f"{dataset} {key} as of {when(result.as_of, zone)}", highlight=False)
    if not result.exists:
        console.print("  no such record in the source table, and no engine state for it")
        return
    since = ""
    if result.moved_at is not None:
        since = f" since {when(result.moved_at, zone)} (the run that moved it)"
        if result.since is not None and result.since != result.moved_at:
            since += f"; due from {when(result.since, zone)}"
    elif result.since:
        since = f", due from {when(result.since, zone)}"
    console.print(f"  state: {result.state}{since}", highlight=False)
    for clock in result.clocks:
        console.print(
            f"  clock {clock['clock']} = {clock['value']}{_local_date(clock)}, "
            f"{_kept(clock)}"
            f"{'; anomaly: ' + clock['anomaly'] if clock['anomaly'] else ''}"
            f"{' (' + clock['detail'] + ')' if clock.get('detail') else ''}"
            f"{'; ignored related rows: ' + str(clock['ignored_rows']) if clock.get('ignored_rows') else ''}"
            f" — {clock['basis']}",
            highlight=False,
        )
    if result.excluded and result.due_now:
        console.print(
            f"  outside where: not a record of the lifecycle of dataset {dataset}; an erasure request reaches "
            "it (erasure_where) and moves it to on_erasure",
            highlight=False,
        )
    elif result.excluded:
        stays = "never moves" if result.state == "active" else f"stays {result.state}"
        console.print(f"  excluded by where: not a record of dataset {dataset}; {stays}", highlight=False)
    if result.anomaly and not result.excluded:  # a row outside where is no anomaly (docs/rules.md)
        console.print(f"  skipped: {result.anomaly} clock; never moved by a run", highlight=False)
    for state, due_at in result.due.items():
        console.print(f"  due for {state}: {when(due_at, zone)}", highlight=False)
    for hold in result.holds:
        console.print(f"  held by hold {hold['id']} ({hold['scope']}): {hold['reason']}", highlight=False)
    for step in result.due_now:
        held = " (held: will not move)" if step["held"] else ""
        console.print(
            f"  due now: {step['transition']} (due {when(step['due_at'], zone)}){held} — {step['basis']}",
            highlight=False,
        )
        if step["action"] == commands.STATE_ONLY:
            console.print(
                f"    {step['transition']} is recorded in the engine's tables only; the source row is not changed",
                highlight=False,
            )
    if result.erasure_mask is not None:
        mask = result.erasure_mask
        columns = ", ".join(mask["columns"])
        kept = f"kept until {mask['keep_until']} by its own clock"
        if mask["status"] == "masked":
            at = f" (the run of {when(mask['masked_at'], zone)})" if mask["masked_at"] else ""
            console.print(f"  masked by erasure request {mask['request']}{at}: {columns}; {kept}", highlight=False)
        else:
            console.print(f"  due now: erasure_mask (request {mask['request']}): {columns}; {kept}", highlight=False)
    if result.subject_null_keys:
        console.print(
            f"  this person in {dataset}: {result.subject_null_keys} {commands.NULL_KEY_ROWS}", highlight=False
        )
    if result.next_transition:
        nxt = result.next_transition
        console.print(
            f"  next: {nxt['transition']} on {when(nxt['due_at'], zone)} ({nxt['action']}) — {nxt['basis']}",
            highlight=False,
        )
    elif any(clock.get("pending") for clock in result.clocks) and not result.excluded:
        console.print("  next: when the expiry clock passes")
    elif not result.due_now and not result.excluded:
        console.print("  no further transition")


def _local_date(clock: dict[str, Any]) -> str:
    return "" if clock.get("pending") else f" (local date {clock['local_date']})"


def _kept(clock: dict[str, Any]) -> str:
    if clock["period"] == "expires":
        return "due when it passes (expiry clock)" + ("; not yet" if clock.get("pending") else "")
    return f"kept {clock['period']}{' from the financial year end' if clock['anchor'] != 'event' else ''}"


@command()
@rules_option()
@db_option
@as_of_option
@pack_option
@click.option(
    "--horizon",
    type=params.PeriodType(Period(years=5)),
    default="P6M",
    show_default=True,
    help="How far the weekly forecast looks ahead (P1D to P5Y).",
)
@click.option(
    "--html",
    "html_file",
    type=params.OUTPUT_FILE,
    required=True,
    help="Write the self-contained HTML report here.",
)
@lock_timeout_option
@handled
def report(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    horizon: Period,
    html_file: Path,
    lock_timeout: int | None,
) -> None:
    """HTML report: what is due now and a chart of upcoming transitions per week."""
    summary, forecast = commands.report(
        rules,
        database_url(db),
        as_of,
        horizon,
        html_file,
        pack_id,
        lock_timeout=lock_timeout,
        zone=display_zone(rules, pack_id, utc=False),
    )
    total = sum(sum(v) for v in forecast.series.values())
    console.print(
        f"{html_file}: {summary.total()} transitions due now, {total} more over {len(forecast.starts)} weeks",
        highlight=False,
    )
