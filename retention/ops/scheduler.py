"""The built-in nightly scheduler: APScheduler wiring only.

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
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from retention.errors import ConfigError

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
