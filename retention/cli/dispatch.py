"""Units of work run side by side: the shards of ``run --shards`` and the targets of ``fleet run``.

Both run their units in subprocesses here or as Celery tasks, show one line
per finished unit, and print the outcomes as one table; this is that part.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from retention import logs
from retention.cli.options import (
    EXIT_PARTIAL,
    json_logs,
    log_settings,
    machine_only,
)
from retention.cli.output import console, err_console, print_rows, when
from retention.timing.clock import AsOf


class FleetProgress:
    """A bar of targets done on a terminal (queued, running, done), else nothing."""

    def __init__(self, names: list[str], bar: bool) -> None:
        self._names = names
        self._bar = bar
        self._states: dict[str, str] = {}

    def __enter__(self) -> FleetProgress:
        if self._bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("targets"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[running]}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("targets", total=len(self._names), running="")
        return self

    def state(self, name: str, state: str) -> None:
        self._states[name] = state
        if not self._bar:
            return
        done = sum(s in ("SUCCESS", "FAILURE", "REVOKED") for s in self._states.values())
        running = sorted(n for n, s in self._states.items() if s == "STARTED")
        shown = ", ".join(running[:3]) + (f" +{len(running) - 3}" if len(running) > 3 else "")
        self._progress.update(self._task, completed=done, running=f"running: {shown}" if shown else "")

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._progress.stop()


def write_fleet_metrics(path: Path | None, outcomes: list[Any]) -> str | None:
    """Write the fleet's (or shards') metrics file; the one-line reason when it could not be written.

    Every target's run has committed by now, so a failure here must not end
    in a traceback that reads as if the work had failed.
    """
    if path is None:
        return None
    from retention.ops import fleet as fleet_module
    from retention.reporting.metrics import not_written

    try:
        fleet_module.write_fleet_metrics(path, outcomes)
    except OSError as exc:
        return not_written(path, exc)
    return None


def exit_after_metrics(code: int, unwritten: str | None) -> int:
    """``code``, or 3 (partial: the work stands, an output is missing) when it was 0 and the metrics failed.

    Computed before the summary and the finishing log event, so that the
    ``exit_code`` they carry is the process's own.
    """
    return code if unwritten is None else code or EXIT_PARTIAL


def say_unwritten(unwritten: str | None) -> None:
    """The one error line for a metrics file that could not be written (nothing when it was)."""
    if unwritten is not None and not machine_only():  # with --log-format json: metrics_not_written says it
        err_console.print(f"error: {unwritten}", highlight=False)


def print_fleet(outcomes: list[Any], fmt: str, code: int, zones: dict[str, str], what: str = "targets") -> None:
    """The fleet summary: one row per target, its finishing time in the target's timezone."""
    rows = [
        {
            "target": o.target,
            "status": o.status,
            "exit": o.exit_code,
            "finished": when(dt.datetime.fromisoformat(o.finished_at), zones.get(o.target, "UTC"))
            if o.finished_at
            else None,
            "transitions": o.transitions,
            "batches": o.batches,
            "seconds": f"{o.seconds:.1f}",
            "run_id": o.run_id,
            "error": o.error or "; ".join(f"{d}: {e}" for d, e in {**o.failures, **o.guarded}.items()) or None,
        }
        for o in outcomes
    ]
    if fmt == "json":
        click.echo(
            json.dumps(
                {"exit_code": code, what: [o.as_dict() | {"transitions": o.transitions} for o in outcomes]},
                indent=2,
            )
        )
        return
    columns = ["target", "status", "exit", "transitions", "seconds", "finished", "error"]
    if fmt == "csv":
        print_rows(rows, [*columns[:4], "batches", *columns[4:6], "run_id", "error"], fmt)
        return
    failed = [o.target for o in outcomes if o.exit_code != 0]
    head = "fleet" if what == "targets" else "run"
    print_rows(rows, columns, fmt, title=f"{head}: {len(outcomes)} {what}")
    if failed:
        err_console.print(
            f"{head}: {len(failed)} of {len(outcomes)} {what} failed: {', '.join(failed)} (exit {code})",
            highlight=False,
        )
    elif code:  # every target ran; an output (the metrics file) is missing
        err_console.print(f"{head}: all {len(outcomes)} {what} ran; exit {code}", highlight=False)
    else:
        console.print(f"{head}: all {len(outcomes)} {what} succeeded", highlight=False)
    again = [o for o in outcomes if o.attempts > 1 or o.redelivered]
    if again:
        listed = ", ".join(
            f"{o.target} ({o.attempts} attempts{', redelivered' if o.redelivered else ''})" for o in again
        )
        console.print(
            f"{head}: {len(again)} {what} ran more than once (reruns or redeliveries): {listed}", highlight=False
        )
    for o in outcomes:
        for note in o.notes:
            # As `retention run` prints them; a shard group's come from its closing shard only.
            err_console.print(f"note: {note}" if what == "shards" else f"note: {o.target}: {note}", highlight=False)


def run_shards(
    rules: Path,
    url: str,
    as_of: AsOf | None,
    pack_id: str | None,
    archive_url: str | None,
    count: int,
    *,
    run_group: str | None,
    via: str,
    parallel: int,
    celery: tuple[str, str | None, str | None, float | None],
    allow_mass: tuple[str, ...],
    accept_short_notice: bool,
    metrics_file: Path | None,
    fmt: str,
    lock_timeout: int | None,
    allow_future_as_of: bool = False,
) -> None:
    """`run --shards N`: every shard of one run group, here or on Celery, then a summary per shard."""
    import signal
    import threading
    import uuid

    from retention import commands
    from retention.ops import fleet as fleet_module
    from retention.policy import refusals
    from retention.timing.clock import utcnow

    # A broken pack, an unknown --allow-mass or a future --as-of fails here, not in N places.
    loaded, when = commands.load_pack(rules, as_of, pack_id)
    refusals.refuse_unknown_datasets(loaded.pack, allow_mass, "--allow-mass")
    refusals.refuse_future_as_of(when, utcnow(), allow_future_as_of, loaded.pack.timezone)
    # One explicit group for all N shards: each would otherwise derive it on its own (around midnight, two days).
    group = run_group or f"shards-{uuid.uuid4().hex[:12]}"
    as_of_text = as_of.text() if as_of is not None else None
    names = [fleet_module.shard_name(i, count) for i in range(count)]
    log = logs.get_logger()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FleetProgress(names, bar=fmt == "table" and err_console.is_terminal and not json_logs()) as progress:
        if via == "local":
            spec = {
                "kind": "shard",
                "count": count,
                "run_group": group,
                "as_of": as_of_text,
                "pack_id": pack_id,
                "lock_timeout": lock_timeout,
                "allow_mass": list(allow_mass),
                "accept_short_notice": accept_short_notice,
                "allow_future_as_of": allow_future_as_of,
                "log_format": "json" if json_logs() else "console",
                "log_level": log_settings()["level"],
            }
            env = {"RETENTION_DATABASE_URL": url, "RETENTION_RULES": str(rules)}  # off the command line
            if archive_url:
                env["RETENTION_ARCHIVE_DATABASE_URL"] = archive_url
            outcomes = fleet_module.run_pool(
                {name: {**spec, "index": i} for i, name in enumerate(names)},
                parallel=parallel,
                env=env,
                on_start=lambda name: progress.state(name, "STARTED"),
                on_done=lambda outcome: progress.state(outcome.target, "SUCCESS"),
                should_stop=stop.is_set,
            )
        else:
            from retention.ops import workers

            queue, broker, result_backend, timeout = celery
            app = workers.make_app(broker, result_backend)
            workers.check_broker(app)
            results = workers.enqueue_shards(
                app,
                count,
                run_group=group,
                queue=queue,
                as_of=as_of_text,
                pack_id=pack_id,
                lock_timeout=lock_timeout,
                allow_mass=allow_mass,
                accept_short_notice=accept_short_notice,
                allow_future_as_of=allow_future_as_of,
                timeout=timeout,
            )
            log.info("shards_enqueued", total=count, queue=queue, run_group=group)
            outcomes = workers.wait(results, timeout=timeout, on_state=progress.state)
    unwritten = write_fleet_metrics(metrics_file, outcomes)
    code = exit_after_metrics(fleet_module.worst_exit(outcomes), unwritten)
    log.info(
        "shards_finished",
        total=count,
        failed=[o.target for o in outcomes if o.exit_code],
        exit_code=code,
        attempts={o.target: o.attempts for o in outcomes},
        redeliveries=sum(1 for o in outcomes if o.redelivered),
    )
    if fmt != "json":
        console.print(f"run group {group}: {count} shards", highlight=False)
    print_fleet(outcomes, fmt, code, {}, what="shards")
    say_unwritten(unwritten)
    sys.exit(code)
