"""Database fixtures and the test tiers: every database test runs on SQLite, PostgreSQL and MariaDB.

Tiers: plain ``pytest`` (README's command) is the fast tier and leaves out
the tests marked ``slow``; ``pytest -m slow`` runs the slow tier (the long
differential, the long fuzz, the full fault matrix...), and any ``-m``
expression is taken as given (``-m "slow or not slow"``: both tiers).

Each test gets its own isolated database (a temporary SQLite file, a fresh
PostgreSQL schema, a fresh MariaDB database) and it is dropped afterwards.
Under ``CI=true`` an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import db_templates
import pytest
import sqlalchemy as sa
from console_world import SECRET, World, build_world, relocated
from pinned_clock import pinned_clock
from sqlalchemy.engine import make_url

from retention.store.config import create_engine


def _temporary_files_in_memory() -> None:
    """``tmp_path`` (and so every SQLite test database) under /dev/shm, a tmpfs, where the machine has one.

    SQLite's default rollback journal makes every commit wait for fsync: 7 ms
    a commit under /tmp on the CI machine against 0.3 ms on /dev/shm
    (2026-12-06), and a test commits once per batch of the engine, per DDL,
    per ledger entry written alone. pytest takes its temporary root from
    ``PYTEST_DEBUG_TEMPROOT`` (the numbered ``pytest-of-USER/pytest-N``
    folders and their clean-up stay pytest's); a value already set wins, and
    ``RETENTION_TEST_TMP=disk`` keeps the default (/tmp).
    """
    shm = Path("/dev/shm")
    if os.environ.get("RETENTION_TEST_TMP", "") == "disk" or "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(shm)


_temporary_files_in_memory()


def _cheap_password_hashes() -> None:
    """The console's argon2 hasher, in this process, at argon2's lowest cost (t=1, m=8 KiB, p=1).

    The default (t=3, m=64 MiB, p=4) costs ~190 ms of CPU per hash and per
    verification, by design; every in-process sign-in and every account a test
    world makes paid it (about 15 CPU-s of the fast tier, 2026-12-07). The
    code path is the same (argon2id, ``verify``, ``check_needs_rehash``, the
    dummy hash for unknown names); only the cost parameters differ. Processes
    the tests start (``retention serve``, ``retention user``) keep the real
    ones; ``RETENTION_TEST_ARGON2=default`` keeps them here too.
    """
    if os.environ.get("RETENTION_TEST_ARGON2", "") == "default":
        return
    from argon2 import PasswordHasher

    from retention.web import accounts

    accounts._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    accounts._DUMMY_HASH = accounts._hasher.hash("retention-console-no-such-account")


_cheap_password_hashes()

DIALECTS = ("sqlite", "postgresql", "mariadb")
SERVER_URLS = {
    "postgresql": os.environ.get("RETENTION_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("RETENTION_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
MARIADB_COLLATION = os.environ.get("RETENTION_TEST_MARIADB_COLLATION", "utf8mb4_unicode_520_ci")
_counter = itertools.count()
_RUN = uuid.uuid4().hex[:8]
_reachable: dict[str, str | None] = {}
_admins: dict[str, sa.Engine] = {}


PG_NO_FLUSH = "-csynchronous_commit=off"


def pg_options(schema: str) -> str:
    """PostgreSQL's ``options`` for a test's schema: its search path, and commits that do not wait for the disk.

    A commit waited 6-8 ms for the WAL's fsync on the CI machine against
    about 1 ms without (2026-12-06): a test's database is dropped after it,
    so a crash losing its last commits costs nothing, and a test commits
    once per batch of the engine, per DDL and per copy of the template.
    ``synchronous_commit`` changes when a commit returns, not what it does
    (the same locks, the same visibility, the same rows). db_templates.pg_schema
    reads the schema back.
    """
    return f"-csearch_path={schema} {PG_NO_FLUSH}"


def _admin(dialect: str) -> sa.Engine:
    """The session's engine that creates and drops the tests' databases (a pool: no connect per test)."""
    if dialect not in _admins:
        connect_args = {"options": PG_NO_FLUSH} if dialect == "postgresql" else {}
        _admins[dialect] = sa.create_engine(
            SERVER_URLS[dialect], isolation_level="AUTOCOMMIT", pool_pre_ping=True, connect_args=connect_args
        )
    return _admins[dialect]


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


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers at most (fewer with fewer cores).

    Measured on the 2-core CI machine (README's Testing section): two
    workers beat one process, as the tests' own Python is most of the time
    and a worker's database waits overlap the other's CPU; more workers than
    that were not measured, and each adds its templates and connections.
    """
    return min(2, os.cpu_count() or 1)


# PostgreSQL's catalog tables that every test's schema adds rows to and its drop leaves dead.
_BLOATED_CATALOGS = (
    "pg_attribute", "pg_depend", "pg_class", "pg_type", "pg_index", "pg_constraint", "pg_description", "pg_trigger",
    "pg_attrdef", "pg_proc", "pg_namespace",
)  # fmt: skip


def pytest_sessionstart(session: pytest.Session) -> None:
    """Once per run, in the controller: VACUUM the test database's catalogs where dead rows pile up.

    Each test makes and drops a schema (tables, indexes, triggers), so each run
    leaves about 590,000 dead catalog rows (265,000 of them in ``pg_attribute``)
    in the PostgreSQL test database (a full fast tier, 2026-12-07). Where
    autovacuum is off (this machine's CI configuration sets ``autovacuum = off``)
    nothing removes them, and every catalog read the tests and the engine make
    (reflection, the schema check, ``pg_dump`` of the template) wades through
    more of them each run: after a few runs, 1.5M dead ``pg_attribute`` rows,
    and the same PostgreSQL tests cost the server 9.5 CPU-s against 5.2 s after
    a VACUUM (3 s). A plain VACUUM takes no lock that blocks a reader.
    """
    if hasattr(session.config, "workerinput"):
        return
    try:
        engine = sa.create_engine(SERVER_URLS["postgresql"], isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            dead = (
                conn.execute(
                    sa.text(
                        "SELECT relname FROM pg_stat_sys_tables WHERE schemaname = 'pg_catalog' "
                        "AND relname = ANY(:names) AND n_dead_tup > 10000"
                    ),
                    {"names": list(_BLOATED_CATALOGS)},
                )
                .scalars()
                .all()
            )
            if dead:
                conn.exec_driver_sql("VACUUM " + ", ".join(f"pg_catalog.{name}" for name in sorted(dead)))
        engine.dispose()
    except sa.exc.OperationalError:
        return  # no server: the database fixtures say so (a failure under CI=true)


_TERMINAL_SIZE = ("COLUMNS", "LINES")


_shared_templates: list[Path] = []  # xdist, in the controller: the folder of the templates the workers share


def pytest_configure_node(node: Any) -> None:
    """xdist, in the controller: hand each worker the terminal size variables as they are here, and the folder
    of the templates the workers share (db_templates.share; dropped in pytest_sessionfinish)."""
    node.workerinput["terminal_size"] = {name: os.environ.get(name) for name in _TERMINAL_SIZE}
    if not _shared_templates:
        root = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
        _shared_templates.append(Path(tempfile.mkdtemp(prefix=f"rt-{_RUN}-templates-", dir=root)))
    node.workerinput["shared_templates"] = str(_shared_templates[0])


def pytest_configure(config: pytest.Config) -> None:
    """xdist, in a worker: the terminal size variables as the controller had them.

    A worker starts with ``COLUMNS=80`` and ``LINES=24`` set in its
    environment although nobody asked for them, and the CLI's tables fit
    ``COLUMNS`` when it is set (retention/cli/tables.py): tests of the
    default width then failed under ``-n 2`` only.
    """
    shared = getattr(config, "workerinput", {}).get("shared_templates")
    if shared is not None:
        db_templates.share(Path(shared), _create_database)
    sizes = getattr(config, "workerinput", {}).get("terminal_size")
    if sizes is None:
        return
    for name, value in sizes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# The fast tier's longest tests (`pytest --durations`, 2026-12-06: 10-30 s each on a quiet machine, the table
# tests 15-20 s; the last five 20-40 s each under a load of 10), run first: see pytest_collection_modifyitems.
# A test id starting with one of these.
LONG_FIRST = (
    "tests/test_differential.py::test_plan_run_and_oracle_agree",
    "tests/test_web_browser.py::",
    "tests/test_web_zone_browser.py::",
    "tests/test_tables.py::",
    "tests/test_subjects.py::test_holds_stop_transitions_and_release_restores_the_plan",
    "tests/test_cli_docs.py::test_every_doc_command_line_runs",
    "tests/test_fleet.py::test_a_fleet_with_an_unreachable_target_runs_the_others_and_exits_3",
    "tests/test_fleet_celery.py::",
    "tests/test_operations.py::test_exit_1_and_clean_stop_on_sigterm",
    "tests/faults/test_faults.py::test_sigkill_at_random_statements",
    "tests/test_lifecycle.py::test_twelve_years_of_a_shop",
    "tests/test_lifecycle.py::test_no_personal_data_in_ledger_or_logs",
    "tests/test_locks.py::test_a_run_whose_session_is_killed_stops_and_the_next_run_finishes",
    # Added from a full fast tier's `--durations=0` under a load of 5-10 (2026-12-07, 15:41-16:20 UTC, 18-45 s each
    # there; /work/notes/fasttier-durations-before.txt): long tests that were queued in file order, some of them late.
    "tests/test_shard_progress.py::test_a_killed_shard_rerun_counts_each_record_once",
    "tests/test_plan_aggregate.py::test_aggregate_summary_equals_the_record_walk",
    "tests/test_schemas.py::test_schema_plan_run_and_expected_sets_agree",
    "tests/test_report.py::test_chart_data_equal_plans_at_each_week",
    "tests/test_forecast_one_plan.py::test_one_plan_forecast_equals_the_plan_per_week_forecast",
    "tests/test_deploy.py::test_the_cron_line_starts_the_engine_with_the_environment_file",
    "tests/test_explain_many.py::test_explain_records_equals_explain_per_record",
    "tests/faults/test_faults.py::test_work_session_terminated",
    "tests/faults/test_faults.py::test_table_lock_held_until_the_lock_timeout",
    "tests/faults/test_faults.py::test_a_second_run_is_refused_while_the_first_works",
    "tests/test_demo.py::test_demo_runs_end_to_end",
    "tests/test_catalog_read_lifetime.py::test_plans_in_one_long_lived_process_keep_no_more_connections_or_reads",
    "tests/test_real_schema_cases.py::test_case6_non_default_collation_plans_and_runs",
    "tests/test_run_status.py::test_a_refused_run_reads_no_pack_and_a_run_reads_it_once",
    "tests/test_run_groups.py::test_whole_run_refused_while_a_group_is_open",
)


def _long_first_rank(item: pytest.Item) -> int:
    return next((rank for rank, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), len(LONG_FIRST))


def _slow_tier_ids() -> dict[str, bool]:
    """tests/slow_tier_ids.txt: each id, and whether it is a ``tiers`` ``fast`` variant (its ``slow`` sibling runs)."""
    ids = {}
    for line in (Path(__file__).parent / "slow_tier_ids.txt").read_text(encoding="utf-8").splitlines():
        nodeid = line.split("#", 1)[0].strip()
        if nodeid:
            params = nodeid.partition("[")[2].rstrip("]").split("-")
            ids[nodeid] = "fast" in params
    return ids


SLOW_TIER_IDS = _slow_tier_ids()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``-m``, the slow tier is deselected (reported as deselected, not skipped); the longest tests go first.

    The ids in tests/slow_tier_ids.txt (the fast tier's longest, by measured
    time) are marked ``slow`` here, before ``-m`` selects: README's command
    stays under 10 minutes, and CI's slow tier runs them. One that is the
    ``fast`` variant of a test with a ``slow`` sibling (:func:`tiers`) runs
    in neither tier: the sibling is the same test at full size.

    Two workers finish together only if no long test starts near the end:
    in file order the browser tests (test_web_*browser.py, 15-20 s each)
    came last, and one worker ran them while the other sat idle. Under
    ``--dist worksteal`` (pyproject.toml) the queue is split in two halves
    and an idle worker takes the tail of the other's, so the long tests,
    first in the queue, start early and the short ones fill the end. The
    order of the rest stays the files' (a stable sort).
    """
    items.sort(key=_long_first_rank)
    for item in items:
        if item.nodeid in SLOW_TIER_IDS:
            item.add_marker(pytest.mark.slow)
    if config.option.markexpr:
        sized_down = [item for item in items if SLOW_TIER_IDS.get(item.nodeid)]
        if sized_down:
            config.hook.pytest_deselected(items=sized_down)
            items[:] = [item for item in items if not SLOW_TIER_IDS.get(item.nodeid)]
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


def tiers(fast: object, slow: object) -> list[Any]:
    """Parameters for a test that runs small in the fast tier and at full size in the slow tier."""
    return [pytest.param(fast, id="fast"), pytest.param(slow, id="slow", marks=pytest.mark.slow)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dialect" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("only_on")
        dialects = [d for d in _selected() if only is None or d in only.args]
        metafunc.parametrize("dialect", dialects, scope="function")


@contextmanager
def isolated_database(dialect: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on ``dialect`` (a schema on PostgreSQL), dropped afterwards."""
    url = _create_database(dialect, directory)
    try:
        yield url
    finally:
        _drop_database(dialect, url)


def _create_database(dialect: str, directory: Path) -> str:
    """The URL of a new, empty database on ``dialect`` (a schema on PostgreSQL; a file in ``directory`` on SQLite)."""
    _require(dialect)
    name = f"rt_{_RUN}_{os.getpid()}_{next(_counter)}"
    if dialect == "sqlite":
        return f"sqlite:///{directory / (name + '.sqlite')}"
    with _admin(dialect).connect() as conn:
        if dialect == "postgresql":
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
            url = make_url(SERVER_URLS[dialect]).update_query_dict({"options": pg_options(name)})
        else:
            # Not the server's default collation: the engine's key columns and an
            # application's tables often differ there, and mixing them must work.
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {MARIADB_COLLATION}"))
            url = make_url(SERVER_URLS[dialect]).set(database=name)
    return url.render_as_string(hide_password=False)


def _drop_database(dialect: str, url: str) -> None:
    """Drops what ``_create_database`` made (a SQLite file stays: it lives in a temporary folder)."""
    if dialect == "sqlite":
        return
    with _admin(dialect).connect() as conn:
        if dialect == "postgresql":
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{db_templates.pg_schema(make_url(url))}" CASCADE'))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))


@pytest.fixture
def db_url(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh database on ``dialect``, dropped after the test.

    Empty, unless the test asks for ``world``: then it holds a copy of the
    session's console world (see the ``world`` fixture); or for ``migrated``:
    then on PostgreSQL and MariaDB it already holds a copy of the migrated
    template, made ahead (see db_templates.py). On PostgreSQL and MariaDB
    every one is created ahead and dropped behind the test, in the templates'
    background thread (db_templates.empty_database).
    """
    if "world" in request.fixturenames:
        _require(dialect)
        template = _world_template(dialect)
        if dialect == "sqlite":
            with isolated_database(dialect, tmp_path) as url:
                if template is not None:
                    db_templates.copy_sqlite(template, url)
                yield url
            return
        with db_templates.copied_database(dialect, WORLD, template, isolated_database) as url:
            yield url
        return
    if dialect != "sqlite" and "migrated" in request.fixturenames:
        _require(dialect)
        with db_templates.migrated_database(dialect, isolated_database) as url:
            yield url
        return
    if dialect != "sqlite":
        _require(dialect)
        with db_templates.empty_database(dialect, isolated_database) as url:
            yield url
        return
    with isolated_database(dialect, tmp_path) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the isolated database, with the engine's session settings."""
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def migrate_isolated(engine: sa.Engine) -> None:
    """The engine's tables at head in a test's isolated database: a copy of the session's migrated template.

    For tests whose subject is not the migrations (those call ``migrate.upgrade``
    themselves); see db_templates.py for why and how.
    """
    db_templates.upgrade(engine, isolated_database)


@pytest.fixture
def pinned_today() -> Iterator[dt.date]:
    """The clock pinned at noon UTC on a fixed day, ticking, until the test's teardown (pinned_clock.py).

    For a test that computes dates from today and compares them with what the engine writes later: read
    unpinned, the test and the engine see different days when a run crosses midnight between them. Ask for it
    after the database fixtures (``migrated``), so their setup and teardown run on the real clock.
    """
    with pinned_clock() as day:
        yield day


@pytest.fixture
def migrated(engine: sa.Engine) -> sa.Engine:
    """The isolated database with the engine's tables at head (a copy of the session's migrated template)."""
    migrate_isolated(engine)
    return engine


WORLD = "console-world"


def _populate_world(engine: sa.Engine, url: str, folder: Path) -> World:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
        return build_world(engine, url, folder)


def _world_template(dialect: str) -> db_templates.Template | None:
    return db_templates.populated(dialect, WORLD, _populate_world, isolated_database)


@pytest.fixture
def world(db_url: str, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """The console tests' populated database (console_world.py) in the test's own database, with its files.

    Building it takes 5-8 s a test (a shop, two runs, review batches, argon2
    accounts, a signed checkpoint), so it is built once per session and
    database and each test gets a copy (db_url; db_templates.populated).
    Without a template (no pg_dump) it is built in the test's database.
    """
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
    template = _world_template(dialect)
    if template is None:
        engine = create_engine(db_url)
        try:
            migrate_isolated(engine)
            return build_world(engine, db_url, tmp_path)
        finally:
            engine.dispose()
    db_templates.copy_files(template, tmp_path)
    assert isinstance(template.made, World)
    return relocated(template.made, db_url, tmp_path)


def sqlite_world(folder: Path) -> World:
    """A copy of the session's SQLite console world in ``folder`` (its database and files), for a module's fixture.

    tests/test_web_browser.py serves one world to Chromium for the whole
    module; it built its own (5-8 s) although the worker had the template.
    """
    template = _world_template("sqlite")
    assert template is not None and isinstance(template.made, World)  # SQLite always has a template
    url = f"sqlite:///{folder / 'console.sqlite'}"
    db_templates.copy_sqlite(template, url)
    db_templates.copy_files(template, folder)
    return relocated(template.made, url, folder)


def pytest_sessionfinish() -> None:
    db_templates.close()
    for folder in _shared_templates:  # the controller: every worker is done with the templates they shared
        db_templates.drop_shared(folder, _drop_database)
        shutil.rmtree(folder, ignore_errors=True)
    _shared_templates.clear()
    for admin in _admins.values():
        admin.dispose()
    _admins.clear()


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
    admin = _admin(dialect)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"))
        yield make_url(SERVER_URLS[dialect]).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
