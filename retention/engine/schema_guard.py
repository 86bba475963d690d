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

from retention.store import tables as store

_ENGINE_TABLES = frozenset(
    {*(name.lower() for name in store.metadata.tables), "retention_archive_owner", "alembic_version"}
)
_MYSQL_SYSTEM = frozenset({"mysql", "performance_schema", "sys", "information_schema"})
_POSTGRES_SYSTEM = frozenset({"pg_catalog", "information_schema"})


def engine_table(table: str) -> str | None:
    """Why ``table`` is refused as one of the engine's own tables, else None."""
    if table.lower() in _ENGINE_TABLES:
        return "this is one of the engine's own tables, never a dataset (a run would delete from it)"
    return None


def system_table(conn: sa.Connection, table: str, schema: str | None) -> str | None:
    """Why ``schema.table`` is refused as a system catalog (outside the application's schema), else None."""
    name = conn.dialect.name
    if name == "sqlite":
        if table.lower().startswith("sqlite_") or (schema or "").lower().startswith("sqlite_"):
            return "this is an SQLite system table, never a dataset"
        return None
    if name in ("mysql", "mariadb"):
        if schema is not None and schema.lower() in _MYSQL_SYSTEM:
            return f"schema {schema} is a system schema of the server, never a dataset's"
        return None
    if name == "postgresql":
        if schema is not None and (schema.lower() in _POSTGRES_SYSTEM or schema.lower().startswith("pg_")):
            return f"schema {schema} is a system schema of the server, never a dataset's"
        preparer = conn.dialect.identifier_preparer
        qualified = preparer.quote(table) if schema is None else f"{preparer.quote(schema)}.{preparer.quote(table)}"
        found = conn.execute(
            sa.text(
                "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(:name)"
            ),
            {"name": qualified},
        ).scalar()
        if found is not None and (found in _POSTGRES_SYSTEM or str(found).startswith("pg_")):
            return f"this table resolves to the system schema {found} (searched first), never a dataset"
    return None


def refused_table(conn: sa.Connection, table: str, schema: str | None) -> str | None:
    """Why a dataset may not name this table (engine table or system catalog), else None."""
    return engine_table(table) or system_table(conn, table, schema)


__all__ = ["engine_table", "refused_table", "system_table"]
