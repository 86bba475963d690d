"""A test's copy of the session's migrated template is what the migrations make (see db_templates.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import isolated_database, migrate_isolated

from retention.store import migrate
from retention.store.config import create_engine


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns, keys, indexes, foreign keys and triggers, as the database reports them."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        shape: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            shape[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")), c.get("comment"))
                    for c in inspector.get_columns(table)
                ],
                "primary key": inspector.get_pk_constraint(table),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(table)
                ),
                "foreign keys": sorted(
                    (f["name"], tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in inspector.get_foreign_keys(table)
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
                ),
            }
        shape["triggers"] = sorted(_triggers(conn))
        shape["alembic_version"] = migrate.revision_on(conn)
    return shape


def _triggers(conn: sa.Connection) -> list[tuple[str, ...]]:
    name = conn.dialect.name
    if name == "sqlite":
        return [
            tuple(r)
            for r in conn.exec_driver_sql("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
        ]
    if name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
        )
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        return [(r[0], r[1], r[2].replace(f"{schema}.", "").replace(f'"{schema}".', "")) for r in rows]
    rows = conn.exec_driver_sql("SHOW TRIGGERS")
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]  # name, event, table, statement, timing


def test_a_copy_of_the_template_is_what_the_migrations_make(engine: sa.Engine, dialect: str, tmp_path: Path) -> None:
    """Same tables, columns, keys, indexes, foreign keys, triggers and revision as a database migrated for real."""
    migrate.upgrade(engine)
    with isolated_database(dialect, tmp_path) as url:
        copy = create_engine(url)
        try:
            migrate_isolated(copy)
            copied = _schema(copy)
        finally:
            copy.dispose()
    assert copied == _schema(engine)
    assert copied["alembic_version"] == migrate.head_revision()
