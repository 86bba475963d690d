"""Database fixtures: every database test runs on SQLite, PostgreSQL and MariaDB.

Each test gets its own isolated database (a temporary SQLite file, a fresh
PostgreSQL schema, a fresh MariaDB database) and it is dropped afterwards.
Under ``CI=true`` an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention.store import migrate
from retention.store.config import create_engine

DIALECTS = ("sqlite", "postgresql", "mariadb")
SERVER_URLS = {
    "postgresql": os.environ.get("RETENTION_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("RETENTION_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
MARIADB_COLLATION = os.environ.get("RETENTION_TEST_MARIADB_COLLATION", "utf8mb4_unicode_520_ci")
_counter = itertools.count()
_RUN = uuid.uuid4().hex[:8]
_reachable: dict[str, str | None] = {}


def _selected() -> list[str]:
    wanted = os.environ.get("RETENTION_TEST_DATABASES")
    return [d.strip() for d in wanted.split(",")] if wanted else list(DIALECTS)


def _check_server(dialect: str) -> str | None:
    """None when the server answers, else the reason."""
    if dialect not in _reachable:
        engine = sa.create_engine(SERVER_URLS[dialect])
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[dialect] = None
        except sa.exc.OperationalError as exc:
            _reachable[dialect] = f"{dialect} unreachable at {SERVER_URLS[dialect]}: {exc.orig}"
        finally:
            engine.dispose()
    return _reachable[dialect]


def _require(dialect: str) -> None:
    reason = _check_server(dialect) if dialect != "sqlite" else None
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dialect" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("only_on")
        dialects = [d for d in _selected() if only is None or d in only.args]
        metafunc.parametrize("dialect", dialects, scope="function")


@contextmanager
def isolated_database(dialect: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on ``dialect`` (a schema on PostgreSQL), dropped afterwards."""
    _require(dialect)
    name = f"rt_{_RUN}_{os.getpid()}_{next(_counter)}"
    if dialect == "sqlite":
        yield f"sqlite:///{directory / (name + '.sqlite')}"
        return
    admin = sa.create_engine(SERVER_URLS[dialect], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
                url = make_url(SERVER_URLS[dialect]).update_query_dict({"options": f"-csearch_path={name}"})
            else:
                # Not the server's default collation: the engine's key columns and an
                # application's tables often differ there, and mixing them must work.
                conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {MARIADB_COLLATION}"))
                url = make_url(SERVER_URLS[dialect]).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def db_url(dialect: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on ``dialect``, dropped after the test."""
    with isolated_database(dialect, tmp_path) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the isolated database, with the engine's session settings."""
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def migrated(engine: sa.Engine) -> sa.Engine:
    """The isolated database with the engine's tables at head."""
    migrate.upgrade(engine)
    return engine


@pytest.fixture
def collated_db_url(dialect: str) -> Iterator[str]:
    """A fresh MariaDB database created with COLLATE utf8mb4_unicode_520_ci (WordPress's default).

    Issue 10 case 6: a non-default collation made plan exit with "Illegal mix
    of collations"; the suite keeps one such database in every CI run.
    """
    if dialect != "mariadb":
        pytest.skip("a collation fixture for MariaDB only")
    _require(dialect)
    name = f"rt_{_RUN}_{os.getpid()}_{next(_counter)}_520"
    admin = sa.create_engine(SERVER_URLS[dialect], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"))
        yield make_url(SERVER_URLS[dialect]).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
