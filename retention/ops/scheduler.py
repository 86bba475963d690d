"""The built-in nightly scheduler: ``run`` on a cron schedule, with APScheduler.

One job, from a cron expression in a timezone; at most one instance at a
time (a trigger that fires while a run is still going is skipped), missed
triggers coalesced into one. SIGTERM or SIGINT stop the scheduler and ask a
running job to stop after its current batch, so the run is recorded as
interrupted with everything it did committed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from retention import commands
from retention.errors import ConfigError, RetentionError, describe_failure, is_database_error
from retention.ledger import pseudonyms
from retention.logs import get_logger
from retention.policy import load_catalog
from retention.store.connect import open_engine
from retention.timing.clock import iana_zone

log = structlog.get_logger("retention")


def trigger_for(cron: str, timezone: str) -> CronTrigger:
    """A trigger from 5 crontab fields, or 6 with seconds first (for short test intervals)."""
    fields = cron.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(cron, timezone=timezone)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=timezone,
            )
    except (ValueError, LookupError) as exc:
        raise ConfigError(f"invalid schedule {cron!r} in timezone {timezone!r}: {exc}") from None
    raise ConfigError(f"invalid schedule {cron!r}: expected 5 crontab fields (or 6 with seconds first)")


def serve(job: Callable[[threading.Event], Any], cron: str, timezone: str) -> None:
    """Run ``job`` on the schedule until SIGTERM/SIGINT; ``job`` receives the stop event."""
    trigger = trigger_for(cron, timezone)
    stop = threading.Event()
    scheduler = BackgroundScheduler(
        timezone=timezone,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600},
    )

    def nightly() -> None:
        if not stop.is_set():
            job(stop)

    scheduler.add_job(nightly, trigger, id="retention-run", name="retention run")

    def on_signal(signum: int, _frame: Any) -> None:
        # Only flag it: the main thread shuts the scheduler down, never the handler.
        log.info("scheduler_stopping", status=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheduler.start()
    job_ = scheduler.get_job("retention-run")
    log.info("scheduler_started", job=cron, next_run=str(job_.next_run_time if job_ else None))
    while not stop.wait(1.0):
        pass
    scheduler.shutdown(wait=True)  # a running job stops after its current batch
    log.info("scheduler_stopped")


def scheduled_runs(
    rules: Path,
    db_url: str,
    cron: str,
    timezone: str,
    pack_id: str | None = None,
    archive_url: str | None = None,
    metrics_file: Path | None = None,
    lock_timeout: int | None = None,
) -> None:
    """Run ``run`` on a cron schedule until SIGTERM: what ``retention scheduler`` does.

    Everything a night would find wrong (the pack, the timezone, the pseudonym
    key, the database and its tables) is checked now, not at 2 am.
    """
    load_catalog(rules)  # a broken pack fails now, not at 2 am
    try:
        iana_zone(timezone)
    except ValueError as exc:
        raise ConfigError(f"--timezone: {exc}") from None
    pseudonyms.pseudonym_secret()
    open_engine(db_url, lock_timeout).dispose()
    log = get_logger()

    def job(stop: threading.Event) -> None:
        try:
            result = commands.run(
                rules,
                db_url,
                None,
                pack_id,
                archive_url,
                metrics_file=metrics_file,
                should_stop=stop.is_set,
                lock_timeout=lock_timeout,
            )
            log.info("scheduled_run_done", run_id=result.run_id, status=result.status)
        except Exception as exc:  # the next night's run must still happen; the error is logged without data
            if not (isinstance(exc, RetentionError) or is_database_error(exc)):
                raise
            log.error("scheduled_run_failed", error_type=type(exc).__name__, error=describe_failure(exc)[:500])

    serve(job, cron, timezone)
