"""Per-database SQL in one place: one class per database (see docs/dialects.md).

``dialect_for(conn)`` gives the :class:`Dialect` of a connection, engine,
SQLAlchemy dialect, URL or dialect name; the rest of the engine asks it
instead of branching on ``conn.dialect.name``.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

import sqlalchemy as sa

from retention.dialects.base import DATETIME_KINDS, Dialect, registry
from retention.dialects.mysql import MySQLDialect
from retention.dialects.postgresql import PostgreSQLDialect
from retention.dialects.sqlite import SQLiteDialect

__all__ = [
    "DATETIME_KINDS",
    "Dialect",
    "MySQLDialect",
    "PostgreSQLDialect",
    "SQLiteDialect",
    "dialect_for",
    "registry",
    "same_database",
]


# A database added as one more module here registers itself on import.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


@functools.cache
def _by_name(name: str) -> Dialect:
    return registry().get(name, Dialect)(name)


def dialect_for(target: sa.Connection | sa.Engine | sa.Dialect | sa.URL | str) -> Dialect:
    """The dialect of ``target``; the generic :class:`Dialect` for a database without its own module."""
    if isinstance(target, str):
        name = target
    elif isinstance(target, sa.URL):
        name = target.get_backend_name()
    elif isinstance(target, sa.Connection | sa.Engine):
        name = target.dialect.name
    else:
        name = target.name
    return _by_name(name)


def same_database(first: sa.URL, second: sa.URL) -> bool:
    """Whether two URLs name the same database: the same backend, then :meth:`Dialect.same_database`."""
    mine = dialect_for(first)
    if mine.name != dialect_for(second).name:
        return False
    return mine.same_database(first, second)
