"""Connect and statement timeouts on every engine connection (docs/scaling.md, "Timeouts").

A database that accepts the TCP connection but never answers (a server
stuck in recovery, a proxy whose backend is gone) would otherwise hold a run,
a fleet target or a Celery task for as long as the kernel keeps the socket:
minutes to hours, long after the night's window. So every engine this
package creates gets, per dialect:

- a **connect timeout** (``RETENTION_CONNECT_TIMEOUT``, default 30 s): the
  driver gives up establishing the session (PostgreSQL: libpq's
  ``connect_timeout``; MariaDB/MySQL: PyMySQL's ``connect_timeout``);
- a **statement timeout** (``RETENTION_STATEMENT_TIMEOUT``, default 3600 s,
  0 for none): the server cancels any one statement running longer
  (PostgreSQL ``statement_timeout``; MariaDB ``max_statement_time``; MySQL
  ``max_execution_time``, which covers SELECTs only), and PyMySQL stops
  reading after that long plus a minute (after the connect timeout while
  connecting), so a server that stops answering mid-statement frees the
  client as well.

A value in the URL (``?connect_timeout=5``) wins over the setting. SQLite
has no server to wait for: its lock waits are bounded by the lock timeout
(``busy_timeout``) and nothing else applies.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.errors import ConfigError

ENV_CONNECT = "RETENTION_CONNECT_TIMEOUT"
ENV_STATEMENT = "RETENTION_STATEMENT_TIMEOUT"
DEFAULT_CONNECT = 30
DEFAULT_STATEMENT = 3600
MAX_SECONDS = 7 * 86_400


def _setting(value: int | None, env: str, default: int, allow_zero: bool) -> int:
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        if not text.isdigit():
            raise ConfigError(f"{env} {text!r} is not a whole number of seconds")
        value = int(text)
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_SECONDS:
        raise ConfigError(f"{env} must be between {low} and {MAX_SECONDS} seconds, not {value}")
    return value


def connect_timeout(seconds: int | None = None) -> int:
    """Seconds to establish a session: ``seconds``, else ``RETENTION_CONNECT_TIMEOUT``, else 30."""
    return _setting(seconds, ENV_CONNECT, DEFAULT_CONNECT, allow_zero=False)


def statement_timeout(seconds: int | None = None) -> int:
    """Seconds one statement may run (0: no limit): ``seconds``, else ``RETENTION_STATEMENT_TIMEOUT``, else 3600."""
    return _setting(seconds, ENV_STATEMENT, DEFAULT_STATEMENT, allow_zero=True)


def prepare(url: sa.URL, kwargs: dict[str, Any], connect: int, statement: int) -> Callable[[Any, Any], None] | None:
    """Put the connect timeout in the driver arguments of ``kwargs``; returns a listener setting the statement one."""
    return dialect_for(url).prepare_timeouts(url, kwargs, connect, statement)


__all__ = ["connect_timeout", "prepare", "statement_timeout"]
