"""Running in production: ``scheduler``, ``fleet run`` over many databases, Celery ``worker``s, ``run-groups``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from retention import logs
from retention.cli import params
from retention.cli.dispatch import FleetProgress, exit_after_metrics, print_fleet, say_unwritten, write_fleet_metrics
from retention.cli.options import (
    as_of_option,
    command,
    db_option,
    dispatch_options,
    format_option,
    group,
    handled,
    json_logs,
    lock_timeout_option,
    log_settings,
    pack_option,
    refuse_ignored_dispatch,
    rules_option,
    with_celery_options,
)
from retention.cli.output import console, err_console
from retention.errors import ConfigError
from retention.store.config import database_url
from retention.timing.clock import AsOf


@command()
@rules_option()
@db_option
@pack_option
@click.option(
    "--cron",
    envvar="RETENTION_SCHEDULE",
    type=params.CRON,
    default="30 2 * * *",
    show_default=True,
    help="When to run: 5 crontab fields (or 6 with seconds first); or RETENTION_SCHEDULE.",
)
@click.option(
    "--timezone",
    "timezone",
    envvar="RETENTION_SCHEDULE_TIMEZONE",
    type=params.ZONE,
    default=None,
    help="Timezone of the cron expression; or RETENTION_SCHEDULE_TIMEZONE; default the pack's timezone.",
)
@click.option(
    "--archive-db",
    "archive_url",
    envvar="RETENTION_ARCHIVE_DATABASE_URL",
    default=None,
    help="Separate database for the intermediate archive.",
)
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Prometheus textfile written after each run.",
)
@lock_timeout_option
@handled
def scheduler(
    rules: Path,
    db: str | None,
    pack_id: str | None,
    cron: str,
    timezone: str | None,
    archive_url: str | None,
    metrics_file: Path | None,
    lock_timeout: int | None,
) -> None:
    """Run `retention run` on a cron schedule (no overlap, missed runs coalesced) until SIGTERM."""
    from retention.ops import scheduler as scheduler_module

    scheduler_module.scheduled_runs(
        rules, database_url(db), cron, timezone, pack_id, archive_url, metrics_file, lock_timeout=lock_timeout
    )


@group()
def fleet() -> None:
    """Fleets of databases: one run per target database, each with its own lock, ledger and exit status."""


@fleet.command("run")
@click.option(
    "--targets",
    "targets",
    envvar="RETENTION_FLEET_FILE",
    required=True,
    type=click.Path(path_type=Path),
    help="Fleet file (YAML) naming the target databases (or RETENTION_FLEET_FILE).",
)
@click.option(
    "--target",
    "only",
    multiple=True,
    type=params.NAME,
    metavar="NAME",
    help="Run only this target (repeatable); default every target of the file.",
)
@as_of_option
@dispatch_options("targets")
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Write Prometheus metrics here, every series labelled by target.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output for people (table) or machines (json, csv).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json (refused with another --format).")
@click.option(
    "--allow-mass",
    "allow_mass",
    multiple=True,
    metavar="DATASET",
    help="Override the mass-deletion guard of DATASET on every target ('*' for all), e.g. for a first backlog "
    "night; recorded in each target's ledger.",
)
@lock_timeout_option
@handled
def fleet_run(
    targets: Path,
    only: tuple[str, ...],
    as_of: AsOf | None,
    parallel: int,
    via: str,
    queue: str,
    broker: str | None,
    result_backend: str | None,
    timeout: float | None,
    metrics_file: Path | None,
    fmt: str,
    as_json: bool,
    allow_mass: tuple[str, ...],
    lock_timeout: int | None,
) -> None:
    """Run every target of a fleet file: one unit of work per database, then a summary.

    Each target gets its own run (lock, ledger, exit status) as `retention run`
    would give it; locally each runs in its own process, at most --parallel at
    once, so one target's crash does not stop the others. With --via celery
    one task per target goes to the queue and `retention worker` processes run
    them. Exits with the worst target's code (2 > 6 > 1 > 3 > 5 > 4 > 0); a
    target whose database cannot be reached counts as 3.
    """
    import signal
    import threading

    from retention.ops import fleet as fleet_module

    refuse_ignored_dispatch(via, "--targets")
    if (
        as_json
        and fmt != "json"
        and click.get_current_context().get_parameter_source("fmt") is not ParameterSource.DEFAULT
    ):
        # --json won silently over the --format typed beside it: the summary came out in a format not asked for
        raise ConfigError(f"--json and --format {fmt} name two formats: give one")
    loaded = fleet_module.load_fleet(targets)
    names = list(only) or loaded.names()
    for name in names:
        loaded.target(name)  # an unknown --target is refused before anything runs
    fmt = "json" if as_json else fmt
    as_of_text = as_of.text() if as_of is not None else None
    log = logs.get_logger()
    settings = log_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FleetProgress(names, bar=fmt == "table" and err_console.is_terminal and not json_logs()) as progress:
        if via == "local":
            outcomes = fleet_module.run_local(
                loaded,
                names,
                parallel=parallel,
                as_of=as_of_text,
                lock_timeout=lock_timeout,
                allow_mass=allow_mass,
                log_format="json" if json_logs() else "console",
                log_level=settings["level"],
                on_start=lambda name: progress.state(name, "STARTED"),
                on_done=lambda outcome: progress.state(outcome.target, "SUCCESS"),
                should_stop=stop.is_set,
            )
        else:
            from retention.ops import workers

            app = workers.make_app(broker, result_backend)
            workers.check_broker(app)
            results = workers.enqueue_fleet(
                app,
                loaded,
                names,
                queue=queue,
                as_of=as_of_text,
                lock_timeout=lock_timeout,
                allow_mass=allow_mass,
                timeout=timeout,
            )
            log.info("fleet_enqueued", targets=len(names), queue=queue)
            outcomes = workers.wait(results, timeout=timeout, on_state=progress.state)
    unwritten = write_fleet_metrics(metrics_file, outcomes)
    code = exit_after_metrics(fleet_module.worst_exit(outcomes), unwritten)
    log.info(
        "fleet_finished",
        targets=len(outcomes),
        failed=[o.target for o in outcomes if o.exit_code != 0],
        exit_code=code,
    )
    zones = {t.name: t.timezone for t in loaded.spec.targets}
    print_fleet(outcomes, fmt, code, zones)
    say_unwritten(unwritten)
    sys.exit(code)


@command()
@click.option(
    "--targets",
    "targets",
    envvar="RETENTION_FLEET_FILE",
    default=None,
    type=click.Path(path_type=Path),
    help="Fleet file the fleet tasks resolve their targets in (or RETENTION_FLEET_FILE).",
)
@rules_option(required=False)
@db_option
@with_celery_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Tasks this worker runs at once, each in a child process.",
)
@handled
def worker(
    targets: Path | None,
    rules: Path | None,
    db: str | None,
    queue: str,
    broker: str | None,
    result_backend: str | None,
    concurrency: int,
) -> None:
    """Start a Celery worker that runs the tasks `fleet run --via celery` enqueues (until SIGTERM).

    Tasks are acknowledged when they finish, one at a time per process: if this
    worker dies mid-task the broker gives the task to another worker, which
    runs it again from what the database holds (nothing is done twice).
    Database URLs and keys come from this worker's own fleet file, --rules,
    --db and environment; tasks carry target names, shard numbers and run
    groups only.
    """
    from retention.ops import workers

    if rules is not None:
        from retention.policy import load_catalog

        load_catalog(rules)  # a broken pack fails now, not at the first task
    workers.start_worker(
        fleet_file=targets,
        rules=rules,
        db_url=db,
        queue=queue,
        concurrency=concurrency,
        broker=broker,
        backend=result_backend,
        log_level=log_settings()["level"],
    )


@command("run-groups")
@db_option
@click.option(
    "--close-stale",
    is_flag=True,
    help="Close open groups whose shards no process holds (each shard's lock is taken as the evidence).",
)
@click.option("--run-group", "run_group", type=params.RUN_GROUP_FILTER, default=None, help="Only this group.")
@format_option
@handled
def run_groups(db: str | None, close_stale: bool, run_group: str | None, fmt: str) -> None:
    """Open run groups (shards done, attempts); --close-stale closes those left by dead shards."""
    from retention.engine import groups
    from retention.store import run_groups as open_groups
    from retention.store.connect import open_engine

    engine = open_engine(database_url(db))
    try:
        if close_stale:
            closed = groups.close_stale(engine, run_group)
            if fmt == "json":
                console.print_json(json.dumps([c.__dict__ for c in closed]))
            elif not closed:
                console.print("no open run group", highlight=False)
            for item in closed if fmt != "json" else []:
                console.print(f"{item.run_group}: {item.reason}", highlight=False)
            return
        with engine.connect() as conn:
            found = [g for g in open_groups.open_groups(conn) if run_group is None or g.run_group == run_group]
        rows = [
            {
                "run_group": g.run_group,
                "shards": g.shards,
                "done": g.done,
                "attempts": g.attempts,
                "started_at": g.started_at.isoformat(),
            }
            for g in found
        ]
        if fmt == "json":
            console.print_json(json.dumps(rows))
        elif fmt == "csv":
            console.print("run_group,shards,done,attempts,started_at", highlight=False)
            for r in rows:
                console.print(",".join(str(v) for v in r.values()), highlight=False, soft_wrap=True)
        elif not rows:
            console.print("no open run group", highlight=False)
        else:
            for r in rows:
                console.print(
                    f"{r['run_group']}: {r['done']} of {r['shards']} shards done, {r['attempts']} attempts, "
                    f"started {r['started_at']}",
                    highlight=False,
                    soft_wrap=True,
                )
    finally:
        engine.dispose()
