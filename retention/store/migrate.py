"""Applying the engine's Alembic migrations from the CLI or from Python.

Alembic (and Mako, which it imports) is imported only by the functions that
migrate: every ``retention`` process checks the tables' revision before it
runs, and importing Alembic for that was a tenth of a second of each CLI
subprocess. The check reads the revision table and the shipped files'
``revision`` lines directly, and defers to Alembic wherever that reading
would be a guess (several rows, a branch, a file it cannot read).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.resources import migrations_folder

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic's default version table, which migrations/env.py keeps (no version_table or schema option).
VERSION_TABLE = "alembic_version"

_REVISION = re.compile(r"""^revision\s*(?::\s*str\s*)?=\s*["']([^"']+)["']\s*$""", re.MULTILINE)
_DOWN_REVISION = re.compile(r"""^down_revision\s*(?::[^=]*)?=\s*(None|["']([^"']+)["'])\s*$""", re.MULTILINE)


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at the shipped migrations."""
    from alembic.config import Config

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
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return revision_on(conn)


def revision_on(conn: sa.Connection) -> str | None:
    """The engine tables' revision as this connection sees it (None: never upgraded).

    What Alembic's ``MigrationContext.get_current_revision`` returns, read
    with one query; a table holding several rows (branches) is left to
    Alembic, which refuses it with its own message.
    """
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    query = sa.select(sa.column("version_num", sa.String)).select_from(sa.table(VERSION_TABLE))
    rows: list[str] = list(conn.execute(query).scalars())
    if len(rows) <= 1:
        return rows[0] if rows else None
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def scanned_head(versions: Path) -> str | None:
    """The one revision no shipped file names as its ``down_revision``, read from the files' text.

    None when the reading would be a guess: a file without exactly one
    plain ``revision`` and ``down_revision`` line (a merge's tuple, a
    computed value), or not exactly one head.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0][0] != "None":
            parents.add(down[0][1])
    heads = revisions - parents
    if len(heads) != 1 or not parents <= revisions:
        return None
    return heads.pop()


@functools.cache
def head_revision() -> str | None:
    """The newest shipped revision; read once per process.

    Alembic executes every migration file to find it (60 ms, a fifth of a
    ``plan`` at 300k rows on PostgreSQL, plus the import of Alembic itself),
    and the files shipped with the package do not change while it runs: the
    files' ``revision`` lines give it, and Alembic is asked only when they
    do not (:func:`scanned_head`).
    """
    head = scanned_head(migrations_folder() / "versions")
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
