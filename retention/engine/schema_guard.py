"""Tables a pack may never name as a dataset: the engine's own, and the database's system catalogs.

A dataset's table is one the engine deletes from, masks and archives. A
pack naming ``retention_holds`` would let a run delete the legal holds that
protect records; one naming ``pg_catalog.pg_authid`` or ``mysql.user``
would point the engine at the server's accounts. ``check`` and ``run``
refuse both (:func:`retention.schema.check_schema`), whatever the spelling
(case, an explicit schema, or PostgreSQL's search path, which looks in
``pg_catalog`` first).
"""

from __future__ import annotations

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.store import tables as store

_ENGINE_TABLES = frozenset(
    {*(name.lower() for name in store.metadata.tables), "retention_archive_owner", "alembic_version"}
)
ENGINE_TABLE = (
    "is a table of the retention engine itself: a pack cannot retain it "
    "(its own records follow engine_retention); remove the dataset"
)
"""Why a dataset over an engine table is refused (``check`` prints it after the table's name)."""


def created_by_engine(table: str) -> bool:
    """Whether ``table`` is one the engine itself creates (exact names, any case; not the prefix).

    Their foreign keys point only at each other, so a scan for tables that
    reference a pack's tables can leave them out: a quarter of the tables
    of a small database, reflected one by one on MariaDB and SQLite.
    """
    return table.lower() in _ENGINE_TABLES


def engine_table(table: str) -> str | None:
    """Why ``table`` is refused as one of the engine's own tables, else None: the one rule, for ``check`` and ``run``.

    A run would rewrite the evidence the engine keeps (hash a request's
    subject, null its note, delete ledger rows or legal holds) while
    ``ledger verify`` stays OK: the engine's tables are retained by
    ``engine_retention``, never by a pack. Matched by the engine's metadata
    (every table it creates, Alembic's revision table, the archive store's
    owner table) in any case and any schema, so a quoted or upper-cased
    spelling cannot slip through; and by the engine's prefix, for the tables
    a later version adds that this one's metadata does not list yet.
    """
    name = table.lower()
    if name in _ENGINE_TABLES or name.startswith(store.PREFIX):
        return ENGINE_TABLE
    return None


def system_table(conn: sa.Connection, table: str, schema: str | None) -> str | None:
    """Why ``schema.table`` is refused as a system catalog (outside the application's schema), else None."""
    return dialect_for(conn).system_table(conn, table, schema)


def refused_table(conn: sa.Connection, table: str, schema: str | None) -> str | None:
    """Why a dataset may not name this table (engine table or system catalog), else None."""
    return engine_table(table) or system_table(conn, table, schema)


__all__ = ["ENGINE_TABLE", "engine_table", "refused_table", "system_table"]
