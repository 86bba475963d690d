"""Opening the engine's database: one line when it cannot be reached, a refusal when its tables are old.

Every command that works on the engine's tables opens its database here, so
that "cannot connect" and "run: retention db upgrade" read the same everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.store import migrate
from retention.store.config import create_engine, safe_url


def connect_error(url: str, exc: sa.exc.OperationalError) -> ConfigError:
    """One line for a database that cannot be reached: the URL without its password, the driver's reason."""
    reason = " ".join(str(exc.orig).split())  # drivers write several lines; one is enough
    return ConfigError(f"cannot connect to {safe_url(url)}: {reason}")


def open_engine(db_url: str, lock_timeout: int | None = None, engine_tables: bool = True) -> sa.Engine:
    """An engine on ``db_url``, refused unless the engine's tables are at head.

    ``engine_tables=False`` (plan, a dry run): only the connection is checked;
    plan then works without those tables (read-only role, never upgraded).
    """
    engine = create_engine(db_url, lock_timeout_seconds=lock_timeout)
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
