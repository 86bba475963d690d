"""Migrated templates: the engine's tables are built once per test session and database, then copied per test.

Running the ten Alembic migrations for every test cost about 0.45 s on
SQLite, 1.5 s on PostgreSQL and 5 s on MariaDB per test on the 2-core CI
machine (MariaDB's ALTER TABLE rebuilds tables). Instead the first test that
needs the engine's tables on a database migrates a template database of its
own with the real migrations, and every test gets a copy of it in its own
isolated database:

* SQLite: the template file is copied with SQLite's backup API;
* PostgreSQL: ``pg_dump --schema`` of the template schema, replayed in the
  test's schema in one transaction (``CREATE TABLE ... (LIKE ...)`` would
  miss the foreign keys, the triggers and their function);
* MariaDB: ``SHOW CREATE TABLE`` / ``SHOW CREATE TRIGGER`` of the template
  and its rows (``alembic_version``), replayed in the test's database
  (``CREATE TABLE ... LIKE`` would miss the foreign keys and the triggers).

A copy is exactly what the migrations make (tests/test_templates.py compares
them); tests/test_migrations.py keeps running the migrations themselves.
A database that already holds tables is migrated the ordinary way, so a
test never loses what it made before asking for the engine's tables.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention import migrate
from retention.config import create_engine

IsolatedDatabase = Callable[[str, Path], AbstractContextManager[str]]


@dataclass
class Template:
    """A migrated database of the session and how to copy it into an empty one."""

    dialect: str
    url: str
    statements: list[str]  # PostgreSQL: one script; MariaDB: DDL and row copies in order; SQLite: none

    def copy_into(self, engine: sa.Engine) -> None:
        if self.dialect == "sqlite":
            source = sqlite3.connect(make_url(self.url).database or "")
            try:
                with engine.connect() as conn:
                    source.backup(conn.connection.driver_connection)  # type: ignore[arg-type]
            finally:
                source.close()
            return
        statements = self.statements
        if self.dialect == "postgresql":
            schema = str(engine.url.query["options"]).removeprefix("-csearch_path=")
            statements = [s.replace("{schema}.", f'"{schema}".') for s in statements]
        with engine.connect() as conn:
            if self.dialect == "mariadb":
                conn.exec_driver_sql("SET foreign_key_checks = 0")
            try:
                for statement in statements:
                    conn.exec_driver_sql(statement)
                conn.commit()
            finally:
                if self.dialect == "mariadb":
                    conn.exec_driver_sql("SET foreign_key_checks = 1")


_templates: dict[str, Template | None] = {}
_stack = ExitStack()


def dialect_name(engine: sa.Engine) -> str:
    name = engine.dialect.name
    return "mariadb" if name in ("mysql", "mariadb") else name


def upgrade(engine: sa.Engine, isolated_database: IsolatedDatabase) -> None:
    """``migrate.upgrade(engine)`` for a test's own database: a copy of the session's template when it is empty."""
    dialect = dialect_name(engine)
    with engine.connect() as conn:
        empty = not sa.inspect(conn).get_table_names()
    template = _template(dialect, isolated_database) if empty else None
    if template is None:
        migrate.upgrade(engine)
    else:
        template.copy_into(engine)


def _template(dialect: str, isolated_database: IsolatedDatabase) -> Template | None:
    """The session's template on ``dialect`` (built on first use), or None where none can be made."""
    if dialect not in _templates:
        directory = Path(_stack.enter_context(tempfile.TemporaryDirectory(prefix="rt-template-")))
        url = _stack.enter_context(isolated_database(dialect, directory))
        engine = create_engine(url)
        try:
            migrate.upgrade(engine)
            assert migrate.current_revision(engine) == migrate.head_revision()
            _templates[dialect] = _build(dialect, engine)
        finally:
            engine.dispose()
    return _templates[dialect]


def _build(dialect: str, engine: sa.Engine) -> Template | None:
    url = engine.url.render_as_string(hide_password=False)
    if dialect == "sqlite":
        return Template(dialect, url, [])
    if dialect == "postgresql":
        script = _pg_dump(engine.url)
        return None if script is None else Template(dialect, url, [script])
    return Template(dialect, url, list(_mariadb_statements(engine)))


def _pg_dump(url: sa.URL) -> str | None:
    """The template schema as one SQL script naming the schema as ``{schema}``; None without pg_dump."""
    if shutil.which("pg_dump") is None:
        return None
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    args = ["pg_dump", "--schema", str(schema), "--inserts", "--no-owner", "--no-privileges"]
    args += ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    done = subprocess.run([*args, url.database or ""], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return None
    kept = []
    for line in done.stdout.splitlines():
        if line.startswith(("--", "\\", "CREATE SCHEMA", "ALTER SCHEMA", "SELECT pg_catalog.set_config('search_path'")):
            continue
        kept.append(line.replace(f"{schema}.", "{schema}."))
    return "\n".join(kept)


def _mariadb_statements(engine: sa.Engine) -> Iterator[str]:
    """The template's tables (foreign keys included), its rows, then its triggers."""
    source = engine.url.database
    with engine.connect() as conn:
        tables = [r[0] for r in conn.exec_driver_sql("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")]
        for table in tables:
            yield conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]
        for table in tables:
            if conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{table}`").scalar_one():
                yield f"INSERT INTO `{table}` SELECT * FROM `{source}`.`{table}`"
        for trigger in [r[0] for r in conn.exec_driver_sql("SHOW TRIGGERS")]:
            yield conn.exec_driver_sql(f"SHOW CREATE TRIGGER `{trigger}`").one()[2]


def close() -> None:
    """Drops the session's templates (at the end of the session)."""
    _templates.clear()
    _stack.close()
