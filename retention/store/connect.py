"""Opening the engine's database: one line when it cannot be reached, a refusal when its tables are old.

Every command that works on the engine's tables opens its database here, so
that "cannot connect" and "run: retention db upgrade" read the same everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.errors import ConfigError, connection_failure
from retention.store import migrate
from retention.store.config import create_engine, safe_url


def connect_error(url: str, exc: sa.exc.OperationalError) -> ConfigError:
    """One line for a database that cannot be reached: the URL without its password, the driver's reason."""
    return ConfigError(f"cannot connect to {safe_url(url)}: {connection_failure(exc.orig)}")


def open_engine(db_url: str, lock_timeout: int | None = None, engine_tables: bool = True) -> sa.Engine:
    """An engine on ``db_url``, refused unless the engine's tables are at head.

    ``engine_tables=False`` (plan, a dry run): only the connection is checked;
    plan then works without those tables (read-only role, never upgraded).
    """
    engine = create_engine(db_url, lock_timeout_seconds=lock_timeout)
    refuse_missing_sqlite_file(engine, db_url)
    try:
        if not engine_tables:
            with engine.connect():
                return engine
        current = migrate.current_revision(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise connect_error(db_url, exc) from None
    if current != migrate.head_revision():
        engine.dispose()
        raise ConfigError(
            f"the engine's tables are at revision {current or 'none'}, not "
            f"{migrate.head_revision()}; run: retention db upgrade"
        )
    return engine


def refuse_missing_sqlite_file(engine: sa.Engine, db_url: str) -> None:
    """A SQLite URL naming no file is a typo: refused before SQLite creates an empty file there.

    Why: connecting creates the file, so a mistyped path left an empty
    database behind and the error said "run: retention db upgrade", which
    would have put the engine's tables into that new file. Every command
    opening its database here needs one that exists; ``db upgrade``,
    ``init`` and ``demo`` create theirs through :func:`create_engine`.
    In-memory databases and ``file:`` URIs are left to SQLite.
    """
    url = engine.url
    path = dialect_for(url).database_file(url)  # None: a server database, or an embedded one with no file name
    if path is None or str(path) == ":memory:" or str(path).startswith("file:") or "uri" in url.query:
        return
    if path.exists():
        return
    engine.dispose()
    raise ConfigError(
        f"{safe_url(db_url)}: no such SQLite database file (nothing was created); check the path, "
        "or create the engine's tables there with retention db upgrade"
    )
