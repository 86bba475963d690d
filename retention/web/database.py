"""The console's two connections: one that cannot write, one for its own tables.

The engine's tables are read through an engine whose sessions the database
itself keeps read-only (PostgreSQL ``SET SESSION CHARACTERISTICS AS
TRANSACTION READ ONLY``, MariaDB ``SET SESSION TRANSACTION READ ONLY``,
SQLite ``PRAGMA query_only``), so a bug in a page cannot change application
data. A second, writable engine serves the console's own tables (accounts,
access log, login failures) and review decisions, which go through
:func:`retention.subjects.review.decide` exactly as ``retention review approve`` does.
For stronger separation, point the console at a database role that may
only SELECT the engine's tables and write the console's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from retention.dialects import Dialect, dialect_for
from retention.store.config import create_engine
from retention.store.connect import refuse_missing_sqlite_file


def _read_only_statement(dialect: Dialect) -> str:
    if dialect.read_only_session_sql is None:
        raise ValueError(f"no read-only session setting known for {dialect.name}")
    return dialect.read_only_session_sql


def read_only_engine(url: str) -> sa.Engine:
    """An engine whose every connection the database refuses to write with."""
    engine = create_engine(url)
    refuse_missing_sqlite_file(engine, url)  # serve: a typo'd path would leave an empty database behind
    dialect = dialect_for(engine)
    statement = _read_only_statement(dialect)
    commit = dialect.read_only_needs_commit

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(statement)
        cursor.close()
        if commit:  # the SET opened a transaction on drivers without autocommit; keep its effect
            dbapi_conn.commit()

    sa.event.listen(engine, "connect", on_connect)
    return engine


def writable_engine(url: str) -> sa.Engine:
    """The engine for the console's own tables and review decisions (never creates a SQLite file)."""
    engine = create_engine(url)
    refuse_missing_sqlite_file(engine, url)
    return engine
