"""Applying the engine's Alembic migrations from the CLI or from Python."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from retention.errors import ConfigError
from retention.resources import migrations_folder


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at the shipped migrations."""
    folder = migrations_folder()
    if not (folder / "env.py").exists():
        raise ConfigError(f"the migrations in {folder} are incomplete (no env.py); reinstall retention")
    config = Config()
    config.set_main_option("script_location", str(folder))
    if connection is not None:
        config.attributes["connection"] = connection
    if url is not None:
        config.attributes["database_url"] = url
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the engine's tables to ``revision`` in one transaction where the database allows."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return revision_on(conn)


def revision_on(conn: sa.Connection) -> str | None:
    """The engine tables' revision as this connection sees it (None: never upgraded)."""
    return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def head_revision() -> str | None:
    """The newest shipped revision; read once per process.

    Alembic executes every migration file to find it (60 ms, a fifth of a
    ``plan`` at 300k rows on PostgreSQL), and the files shipped with the
    package do not change while it runs.
    """
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
