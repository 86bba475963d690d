"""The Celery backend: ``retention worker`` and the tasks ``--via celery`` enqueues.

Broker RabbitMQ, results in Redis (URLs from settings, see :func:`broker_url`).
Tasks are acknowledged late (after they finish), a task whose worker
process dies is put back on the queue (``task_reject_on_worker_lost``), and
a worker takes one task at a time (prefetch 1): a worker killed mid-task
leaves its message unacknowledged, the broker hands it to another worker,
and that one runs the target again. That rerun is safe by design: the run
lock of a dead process is free again (PostgreSQL and MariaDB drop a dead
session's advisory lock; on SQLite the lock row names a dead process) and a
run starts from the records' states in the database, so what the killed run
committed is not done twice and what it did not commit is done once.

A task's payload holds nothing personal and no secret: the target's name,
the digest of its definition (a worker whose fleet file says otherwise
refuses it), the as-of date and the lock timeout. The worker reads the
database URL and keys from its own environment and files.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retention.errors import ConfigError
from retention.ops.fleet import EXIT_FAILURE, Fleet, TargetOutcome, fleet_path, load_fleet, run_target, shard_name

ENV_BROKER = "RETENTION_CELERY_BROKER_URL"
ENV_BACKEND = "RETENTION_CELERY_RESULT_BACKEND"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "retention"
FLEET_TASK = "retention.fleet_target"
SHARD_TASK = "retention.run_shard"
LOCK_WAIT = 60.0
"""Seconds a task waits for the run lock of a process that may still be dying before it reports exit 5."""


def broker_url(flag: str | None = None) -> str:
    """``--broker``, else ``RETENTION_CELERY_BROKER_URL``, else the local RabbitMQ."""
    return flag or os.environ.get(ENV_BROKER) or DEFAULT_BROKER


def backend_url(flag: str | None = None) -> str:
    """``--result-backend``, else ``RETENTION_CELERY_RESULT_BACKEND``, else the local Redis."""
    return flag or os.environ.get(ENV_BACKEND) or DEFAULT_BACKEND


def make_app(broker: str | None = None, backend: str | None = None) -> Any:
    """The Celery application with the settings the tasks' idempotence relies on."""
    from celery import Celery

    app = Celery("retention", broker=broker_url(broker), backend=backend_url(backend), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 86_400,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue=DEFAULT_QUEUE,
    )
    app.task(name=FLEET_TASK, bind=True)(_fleet_task)
    app.task(name=SHARD_TASK, bind=True)(_shard_task)
    return app


def _fleet_task(
    task: Any, target: str, digest: str, as_of: str | None = None, lock_timeout: int | None = None
) -> dict[str, Any]:
    """Run one fleet target on this worker (its URL and keys from this worker's fleet file)."""
    from retention.errors import RetentionError

    try:
        fleet = load_fleet(fleet_path(None))
    except RetentionError as exc:  # no fleet file on this worker, or a broken one: that target's exit 2
        return TargetOutcome(target, "config error", exc.exit_code, error=str(exc).splitlines()[0][:500]).as_dict()
    return _until_unlocked(
        lambda: run_target(fleet, target, as_of=as_of, lock_timeout=lock_timeout, expected_digest=digest)
    )


def _until_unlocked(run: Callable[[], TargetOutcome]) -> dict[str, Any]:
    """``run()``, again every 2 s for :data:`LOCK_WAIT` while it finds the lock held (exit 5).

    A redelivered task may start while the killed attempt's session is still
    being torn down (PostgreSQL notices a dead client at its next read).
    """
    from retention.ops.fleet import EXIT_LOCKED

    deadline = time.monotonic() + LOCK_WAIT
    while True:
        outcome = run()
        if outcome.exit_code != EXIT_LOCKED or time.monotonic() > deadline:
            return outcome.as_dict()
        time.sleep(2.0)


def _shard_task(
    task: Any,
    index: int,
    count: int,
    run_group: str,
    as_of: str | None = None,
    pack_id: str | None = None,
    lock_timeout: int | None = None,
    allow_mass: Sequence[str] = (),
    accept_short_notice: bool = False,
) -> dict[str, Any]:
    """Run shard ``index`` of ``count`` of run group ``run_group`` on this worker's database and rules.

    The worker's own settings name the database, the rules and the archive
    (``RETENTION_DATABASE_URL``, ``RETENTION_RULES``,
    ``RETENTION_ARCHIVE_DATABASE_URL``, as ``retention run`` reads them).
    """
    from retention.ops.fleet import run_shard
    from retention.store.config import database_url

    rules = os.environ.get("RETENTION_RULES")
    return _until_unlocked(
        lambda: run_shard(
            index,
            count,
            run_group,
            rules=Path(rules) if rules else None,
            db_url=database_url(None),
            archive_url=os.environ.get("RETENTION_ARCHIVE_DATABASE_URL") or None,
            as_of=as_of,
            pack_id=pack_id,
            lock_timeout=lock_timeout,
            allow_mass=allow_mass,
            accept_short_notice=accept_short_notice,
        )
    )


def enqueue_shards(
    app: Any,
    count: int,
    *,
    run_group: str,
    queue: str,
    as_of: str | None,
    pack_id: str | None,
    lock_timeout: int | None,
    allow_mass: Sequence[str] = (),
    accept_short_notice: bool = False,
) -> dict[str, Any]:
    """Send one task per shard of the run group; returns shard name -> AsyncResult."""
    return {
        shard_name(index, count): app.send_task(
            SHARD_TASK,
            kwargs={
                "index": index,
                "count": count,
                "run_group": run_group,
                "as_of": as_of,
                "pack_id": pack_id,
                "lock_timeout": lock_timeout,
                "allow_mass": list(allow_mass),
                "accept_short_notice": accept_short_notice,
            },
            queue=queue,
        )
        for index in range(count)
    }


def start_worker(
    *,
    fleet_file: Path | None,
    rules: Path | None = None,
    db_url: str | None = None,
    queue: str,
    concurrency: int,
    broker: str | None = None,
    backend: str | None = None,
    log_level: str = "info",
) -> None:
    """Run a Celery worker in this process until it is stopped (SIGTERM: warm shutdown)."""
    if fleet_file is not None:
        load_fleet(fleet_file)  # a broken fleet file fails now, not at the first task
        os.environ["RETENTION_FLEET_FILE"] = str(fleet_file.resolve())
    # The pool's children inherit these: shard tasks read them as `retention run` does.
    if rules is not None:
        os.environ["RETENTION_RULES"] = str(rules if str(rules).startswith("builtin:") else rules.resolve())
    if db_url is not None:
        os.environ["RETENTION_DATABASE_URL"] = db_url
    app = make_app(broker, backend)
    app.worker_main(
        [
            "worker",
            f"--loglevel={log_level.upper()}",
            f"--queues={queue}",
            f"--concurrency={concurrency}",
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=retention-{uuid.uuid4().hex[:8]}@%h",
        ]
    )


def enqueue_fleet(
    app: Any, fleet: Fleet, names: Sequence[str], *, queue: str, as_of: str | None, lock_timeout: int | None
) -> dict[str, Any]:
    """Send one task per target; returns target name -> AsyncResult."""
    results = {}
    for name in names:
        target = fleet.target(name)
        results[name] = app.send_task(
            FLEET_TASK,
            kwargs={"target": name, "digest": target.digest(), "as_of": as_of, "lock_timeout": lock_timeout},
            queue=queue,
        )
    return results


def wait(
    results: dict[str, Any],
    *,
    timeout: float | None = None,
    on_state: Callable[[str, str], None] | None = None,
    poll: float = 0.5,
) -> list[TargetOutcome]:
    """Wait for every task; outcomes in the order of ``results``. ``on_state(name, state)`` on each change.

    A task that failed (a bug in the worker) counts as that target's failure
    (exit 1, the exception's class only). Past ``timeout`` the unfinished
    targets are reported as such (exit 1); their tasks stay queued or running.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[str, str] = {}
    done: dict[str, TargetOutcome] = {}
    while len(done) < len(results):
        for name, result in results.items():
            if name in done:
                continue
            state = result.state
            if state != states.get(name):
                states[name] = state
                if on_state is not None:
                    on_state(name, state)
            if state == "SUCCESS":
                done[name] = TargetOutcome.from_dict(result.result)
            elif state in ("FAILURE", "REVOKED"):
                error = type(result.result).__name__ if state == "FAILURE" else "the task was revoked"
                done[name] = TargetOutcome(name, "failed", EXIT_FAILURE, error=f"the task failed: {error}")
        if len(done) < len(results):
            if deadline is not None and time.monotonic() > deadline:
                for name in results:
                    done.setdefault(
                        name,
                        TargetOutcome(name, "unfinished", EXIT_FAILURE, error=f"no result after {timeout:g} s"),
                    )
                break
            time.sleep(poll)
    return [done[name] for name in results]


def check_broker(app: Any) -> None:
    """Fail at once (exit 2) when the broker or the result backend does not answer, instead of waiting for ever."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises several types; the URL may hold a password
        raise ConfigError(f"the Celery broker does not answer ({type(exc).__name__}); see {ENV_BROKER}") from None
    client = getattr(app.backend, "client", None)  # Redis
    if client is not None:
        try:
            client.ping()
        except Exception as exc:  # redis-py's errors; the message may quote the URL
            raise ConfigError(
                f"the Celery result backend does not answer ({type(exc).__name__}); see {ENV_BACKEND}"
            ) from None
