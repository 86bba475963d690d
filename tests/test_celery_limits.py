"""Celery tasks carry time limits and an expiry (issue 25): a task never runs unwatched or a day late."""

from __future__ import annotations

import pytest
from test_fleet_celery import BACKEND, BROKER, queue, services  # noqa: F401  (fixtures)

from retention.errors import ConfigError
from retention.ops import workers


def _messages(app: object, queue_name: str, count: int) -> list[dict[str, object]]:
    """The headers of the messages waiting in ``queue_name`` (no worker consumes it)."""
    headers = []
    with app.connection_for_read() as conn:  # type: ignore[attr-defined]
        simple = conn.SimpleQueue(queue_name)
        try:
            for _ in range(count):
                message = simple.get(timeout=10)
                headers.append(dict(message.headers))
                message.ack()
        finally:
            simple.close()
    return headers


def test_shard_tasks_carry_limits_and_expiry(
    services: None,  # noqa: F811
    queue: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(workers.ENV_TIME_LIMIT, "7200")
    app = workers.make_app(BROKER, BACKEND)
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (7200, 7500)
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    workers.enqueue_shards(app, 2, run_group="g", queue=queue, as_of=None, pack_id=None, lock_timeout=None, timeout=900)
    for headers in _messages(app, queue, 2):
        assert headers["timelimit"] == [7500, 7200]
        assert headers["expires"]  # an ISO instant: 900 s after sending


def test_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.ENV_TIME_LIMIT, "soon")
    with pytest.raises(ConfigError, match=workers.ENV_TIME_LIMIT):
        workers.time_limits()
    monkeypatch.delenv(workers.ENV_TIME_LIMIT)
    assert workers.time_limits() == (21600, 21900)
    assert workers.expires(None) == 21600 and workers.expires(120) == 120
