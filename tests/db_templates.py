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

A copy is exactly what the migrations make, in an empty database and beside
an application's table (tests/test_templates.py compares them from the
catalogs); tests/test_migrations.py keeps running the migrations themselves.

A template can also hold data: ``populated`` builds a migrated database once
per session, fills it with a builder (the console tests' world: a shop, two
runs, review batches, accounts, a checkpoint; 5-8 s a build) and copies it the
same way, rows included, with the files the builder wrote next to it.
A database that already holds some of the engine's tables (or, on SQLite,
any table) is migrated the ordinary way, so a test never loses what it
made before asking for the engine's tables (``upgrade``).

Under xdist the workers share the templates (``share``): the first worker to
need one builds it under a file lock in a folder the controller made, and
the others load it from there (the console world took 8-17 s a worker and
database to build under ``-n 2``, each worker building its own). A shared
template's database outlives the worker that made it (another may copy it
later), so the controller drops it when every worker is done
(``drop_shared``).

On PostgreSQL and MariaDB a test that asks for ``migrated`` gets a database
that a background thread created and filled a little ahead (READY of them),
and its database is dropped in that thread too: the server's DDL then
overlaps with the Python of the tests before it instead of adding to it.
A test that asks for a plain ``db_url`` or ``engine`` there gets an empty
database made and dropped the same way (``empty_database``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine

IsolatedDatabase = Callable[[str, Path], AbstractContextManager[str]]
Populate = Callable[[sa.Engine, str, Path], object]  # fills a migrated database; returns what tests need of it


@dataclass
class Template:
    """A migrated database of the session and how to copy it into an empty one."""

    dialect: str
    url: str
    statements: list[str]  # PostgreSQL: one script; MariaDB: DDL and row copies in order; SQLite: none
    collation: str | None = None  # MariaDB: the database's default, which the migrated tables take
    files: Path | None = None  # populated templates: the folder of the files the builder wrote
    made: object = None  # populated templates: what the builder returned

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
            schema = pg_schema(engine.url)
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


_templates: dict[tuple[str, str], Template | None] = {}  # (dialect, "migrated" or a populated template's name)
CreateDatabase = Callable[[str, Path], str]  # a database on the dialect, not dropped by this process: its URL
_shared: list[tuple[Path, CreateDatabase]] = []  # xdist: the controller's folder of templates, and how to make one
_stack = ExitStack()
READY = 2
_ready: dict[tuple[str, str], deque[Future[tuple[str, ExitStack]]]] = {}
_worker: ThreadPoolExecutor | None = None
_head: list[str | None] = []


def pg_schema(url: sa.URL) -> str:
    """PostgreSQL: the schema a test's URL names (``-csearch_path=...`` among the ``options``)."""
    for option in str(url.query["options"]).split():
        if option.startswith("-csearch_path="):
            return option.removeprefix("-csearch_path=")
    raise ValueError("no search_path in the URL's options")


def dialect_name(engine: sa.Engine) -> str:
    name = engine.dialect.name
    return "mariadb" if name in ("mysql", "mariadb") else name


_ENGINE_TABLES = frozenset({"alembic_version", *store.metadata.tables})


def upgrade(engine: sa.Engine, isolated_database: IsolatedDatabase) -> None:
    """``migrate.upgrade(engine)`` for a test's own database: a copy of the session's template when it has none of
    the engine's tables.

    On PostgreSQL and MariaDB the copy adds tables beside the application's
    (replayed DDL and rows), so a database that holds only an application's
    tables gets one too: the migrations took 0.8-0.9 s (PostgreSQL) and
    0.7-3.5 s (MariaDB, with its server's load) there, the copy 0.2-0.3 and
    0.4-1.0 s (bench/suite_setup_costs.py, 2026-12-07). On SQLite the copy
    replaces the whole file (the backup API), so only an empty file gets one.
    A database with any of the engine's tables (a test's own older revision)
    is migrated the ordinary way.
    """
    dialect = dialect_name(engine)
    if not _head:
        _head.append(migrate.head_revision())
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        if "alembic_version" in tables and migrate.revision_on(conn) == _head[0]:
            return  # a copy made ahead (migrated_database), or a database migrated already
        copyable = not tables or (dialect != "sqlite" and not set(tables) & _ENGINE_TABLES)
        collation = collation_of(conn)
    template = _template(dialect, isolated_database) if copyable else None
    if template is None or template.collation != collation:
        migrate.upgrade(engine)
    else:
        template.copy_into(engine)


def empty(engine: sa.Engine) -> None:
    """Everything in a test's own database dropped (tables, triggers, functions), as if it were just created.

    For a test that needs a fresh migrated database more than once (a Hypothesis
    example each): ``empty`` then ``upgrade`` copies the template again, where
    ``migrate.downgrade(engine, "base")`` and ``migrate.upgrade(engine)`` ran
    every migration twice (1-5 s on PostgreSQL and MariaDB). The engine's pooled
    connections are closed: a MariaDB session whose database was dropped has
    none any more.
    """
    dialect = dialect_name(engine)
    engine.dispose()
    if dialect == "sqlite":
        path = Path(engine.url.database or "")
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            file.unlink(missing_ok=True)
        return
    with engine.connect() as conn:
        if dialect == "postgresql":
            schema = pg_schema(engine.url)
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        else:
            name, collation = engine.url.database, collation_of(conn)
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {collation}")
        conn.commit()
    engine.dispose()


@contextmanager
def migrated_database(dialect: str, isolated_database: IsolatedDatabase) -> Iterator[str]:
    """PostgreSQL and MariaDB: an isolated database with a copy of the template, made ahead and dropped behind."""
    with copied_database(dialect, "migrated", _template(dialect, isolated_database), isolated_database) as url:
        yield url


@contextmanager
def copied_database(
    dialect: str, name: str, template: Template | None, isolated_database: IsolatedDatabase
) -> Iterator[str]:
    """PostgreSQL and MariaDB: an isolated database with a copy of ``template``, made ahead and dropped behind.

    An empty one where there is no template (no pg_dump, or ``empty_database``):
    the caller then builds what it needs itself.
    """
    global _worker
    if _worker is None:
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rt-template")
    queue = _ready.setdefault((dialect, name if template is not None else "empty"), deque())
    while len(queue) <= READY:
        queue.append(_worker.submit(_prepare, dialect, template, isolated_database))
    url, stack = queue.popleft().result()
    try:
        yield url
    finally:
        _worker.submit(stack.close)


@contextmanager
def empty_database(dialect: str, isolated_database: IsolatedDatabase) -> Iterator[str]:
    """PostgreSQL and MariaDB: an empty isolated database, created ahead and dropped behind (see ``copied_database``).

    A test's own ``CREATE SCHEMA`` / ``CREATE DATABASE`` and its drop (with
    every table the test made: on MariaDB a file per table to unlink) were
    server round trips on the test's own time, before and after each
    PostgreSQL and MariaDB test that does not ask for the engine's tables
    (5-9 ms a test at a load of 3, 20-90 ms at a load of 10; bench/RESULTS.md);
    here they overlap with the tests' Python instead.
    """
    with copied_database(dialect, "empty", None, isolated_database) as url:
        yield url


def _prepare(dialect: str, template: Template | None, isolated_database: IsolatedDatabase) -> tuple[str, ExitStack]:
    stack = ExitStack()
    url = stack.enter_context(isolated_database(dialect, Path(tempfile.gettempdir())))
    if template is None:
        return url, stack
    try:
        engine = create_engine(url)
        try:
            template.copy_into(engine)
        finally:
            engine.dispose()
    except BaseException:
        stack.close()
        raise
    return url, stack


def _template(dialect: str, isolated_database: IsolatedDatabase) -> Template | None:
    """The session's template on ``dialect`` (built on first use), or None where none can be made."""

    def build(url: str, _directory: Path) -> Template | None:
        engine = create_engine(url)
        try:
            migrate.upgrade(engine)
            assert migrate.current_revision(engine) == migrate.head_revision()
            return _build(dialect, engine)
        finally:
            engine.dispose()

    return _session_template(dialect, "migrated", build, isolated_database)


def populated(dialect: str, name: str, populate: Populate, isolated_database: IsolatedDatabase) -> Template | None:
    """The session's template ``name`` on ``dialect``: migrated, then filled by ``populate`` (built on first use).

    ``populate(engine, url, folder)`` writes its files in ``folder``; each copy
    gets its own copy of them (``copy_files``). None where no template can be
    made (no pg_dump): the caller then populates each test's database itself.
    """

    def build(url: str, directory: Path) -> Template | None:
        engine = create_engine(url)
        try:
            upgrade(engine, isolated_database)
            files = directory / "files"
            files.mkdir()
            made = populate(engine, url, files)
            template = _build(dialect, engine)
            if template is not None:
                template.files, template.made = files, made
            return template
        finally:
            engine.dispose()

    return _session_template(dialect, name, build, isolated_database)


def _session_template(
    dialect: str, name: str, build: Callable[[str, Path], Template | None], isolated_database: IsolatedDatabase
) -> Template | None:
    """Template ``name`` on ``dialect``: this process's, else the workers' shared one, else built now.

    ``build(url, folder)`` fills the empty database at ``url``, writing any
    files in ``folder``, and returns the template.
    """
    key = (dialect, name)
    if key not in _templates:
        if _shared:
            _templates[key] = _shared_template(dialect, name, build)
        else:
            directory = Path(_stack.enter_context(tempfile.TemporaryDirectory(prefix=f"rt-{name}-")))
            _templates[key] = build(_stack.enter_context(isolated_database(dialect, directory)), directory)
    return _templates[key]


def share(folder: Path, create: CreateDatabase) -> None:
    """xdist, in a worker: templates are shared with the other workers through ``folder`` (the controller's).

    ``create(dialect, directory)`` makes a database that this worker does not
    drop: another worker may copy the template after this one has finished.
    """
    _shared[:] = [(folder, create)]


def _shared_template(dialect: str, name: str, build: Callable[[str, Path], Template | None]) -> Template | None:
    """The template the first worker built (under an exclusive file lock), or built here and saved for the others.

    The others wait on the lock while it is built: each would otherwise build
    its own, on the same two cores. A template that cannot be saved (what
    its builder returned does not pickle) is this worker's alone; it is
    built again by each worker that needs it.
    """
    folder, create = _shared[0]
    stem = f"{dialect}-{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}"
    saved = folder / f"{stem}.pickle"
    with (folder / f"{stem}.lock").open("w") as lock:
        _lock_within(lock, SHARED_BUILD_WAIT)  # released when the file is closed, also if this worker dies
        if saved.exists():
            return pickle.loads(saved.read_bytes())  # written by this run's workers, in the controller's folder
        directory = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=folder))
        url = create(dialect, directory)
        # Recorded before it is filled, so that a build that fails still has its database dropped.
        (directory / "database.json").write_text(json.dumps({"dialect": dialect, "url": url}), encoding="utf-8")
        template = build(url, directory)
        try:
            data = pickle.dumps(template)
        except (pickle.PicklingError, TypeError, AttributeError):
            return template
        partial = saved.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(saved)
        return template


SHARED_BUILD_WAIT = 900.0
"""Seconds a worker waits for another's template build: the longest seen is under a minute; a build that hangs
would otherwise hold the waiting worker too, with no word, until CI's limit."""


def _lock_within(lock: IO[str], seconds: float) -> None:
    """An exclusive lock on ``lock``, or an error naming its file once ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"another worker held {lock.name} for over {seconds:.0f} s: its template build hangs"
                ) from None
            time.sleep(0.05)


def drop_shared(folder: Path, drop: Callable[[str, str], None]) -> None:
    """In the controller, every worker done: drops the shared templates' databases (``drop(dialect, url)``).

    One database that cannot be dropped is warned about, not raised: the
    others are still dropped, and a run whose tests passed does not fail here.
    """
    for record in sorted(folder.glob("*/database.json")):
        made = json.loads(record.read_text(encoding="utf-8"))
        try:
            drop(made["dialect"], made["url"])
        except Exception as error:  # clean-up: warn and go on with the next
            warnings.warn(
                f"could not drop the shared {made['dialect']} template database: {type(error).__name__}",
                stacklevel=1,
            )


def copy_sqlite(template: Template, url: str) -> None:
    """SQLite: the template into the (empty) database file of ``url``."""
    engine = create_engine(url)
    try:
        template.copy_into(engine)
    finally:
        engine.dispose()


def copy_files(template: Template, folder: Path) -> None:
    """The files a populated template's builder wrote, copied into a test's own ``folder``."""
    assert template.files is not None
    shutil.copytree(template.files, folder, dirs_exist_ok=True)


def _build(dialect: str, engine: sa.Engine) -> Template | None:
    url = engine.url.render_as_string(hide_password=False)
    if dialect == "sqlite":
        return Template(dialect, url, [])
    if dialect == "postgresql":
        script = _pg_dump(engine.url)
        return None if script is None else Template(dialect, url, [script])
    with engine.connect() as conn:
        collation = collation_of(conn)
    return Template(dialect, url, list(_mariadb_statements(engine)), collation)


def collation_of(conn: sa.Connection) -> str | None:
    """MariaDB: the database's default collation (a copy made elsewhere would keep the template's)."""
    if dialect_name(conn.engine) != "mariadb":
        return None
    return str(conn.exec_driver_sql("SELECT @@collation_database").scalar_one())


def _pg_dump(url: sa.URL) -> str | None:
    """The template schema as one SQL script naming the schema as ``{schema}``; None without pg_dump."""
    if shutil.which("pg_dump") is None:
        return None
    schema = pg_schema(url)
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
    """Drops the databases made ahead and unused, waits for the drops, then drops the templates."""
    global _worker
    for queue in _ready.values():
        for made in queue:
            if made.exception() is None:
                made.result()[1].close()
    _ready.clear()
    if _worker is not None:
        _worker.shutdown(wait=True)
        _worker = None
    _templates.clear()
    _stack.close()
