"""SQLAlchemy event listeners on every engine, limited to the connections to one test's database.

A test that watches what a CLI command sends cannot listen on the command's
engine (the command makes its own), so it listens on ``sa.Engine``: every
engine of the process. The suite's own background thread (db_templates.py)
meanwhile creates, fills and drops the next tests' schemas and databases in
the same process, and a process-wide listener saw those statements too: it
counted them (tests/faults: the golden run's statement count, from which the
kill points are drawn), acted on them (test_errors: a PRAGMA sent to
PostgreSQL and MariaDB failed two runs in CI) or let them satisfy an
"at least one statement was seen" assert. ``on_database`` passes on only the
events of connections to the test's own database.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url


@functools.lru_cache(maxsize=256)  # called for every statement of the process while a listener is on
def database_key(url: sa.URL | str) -> tuple[str, ...]:
    """What names one test's database: the backend, server and database; on PostgreSQL the schema too; on SQLite
    the file (resolved: the CLI may be given another spelling of the same path)."""
    url = make_url(url) if isinstance(url, str) else url
    backend = url.get_backend_name()
    if backend == "sqlite":
        return (backend, str(Path(url.database or "").resolve()))
    schema = ""
    for option in str(url.query.get("options", "")).split():
        if option.startswith("-csearch_path="):
            schema = option.removeprefix("-csearch_path=")
    backend = "mysql" if backend == "mariadb" else backend
    return (backend, url.host or "", str(url.port or ""), url.database or "", schema)


@contextmanager
def on_database(url: sa.URL | str, identifier: str, listener: Callable[..., Any]) -> Iterator[None]:
    """``listener`` on event ``identifier`` of every engine, called only for connections to ``url``'s database.

    For the events whose first argument is a ``Connection`` (``before_cursor_execute``,
    ``after_cursor_execute``, ``begin``...); a ``connect`` listener has no
    engine to look at (test_errors.disk_full asks the SQLite connection).
    """
    wanted = database_key(url)

    def scoped(conn: sa.Connection, *args: Any, **kwargs: Any) -> Any:
        if database_key(conn.engine.url) == wanted:
            return listener(conn, *args, **kwargs)
        return None

    sa.event.listen(sa.Engine, identifier, scoped)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, identifier, scoped)
