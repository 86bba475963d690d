"""``plan`` is a true dry run (issue 13, check 5).

It needs only SELECT on the application's tables: with a read-only role,
and with or without the engine's tables (never upgraded, or not readable by
that role), it prints the plan a first run would follow, says why it could
not use the engine's tables, and leaves the database exactly as it was.
The expected counts are written out by hand from the rows below.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import db_templates
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import migrate_isolated
from sqlalchemy.engine import make_url

from retention.cli import main
from retention.store import migrate
from retention.store import tables as store

PACK = """\
pack: readonly
version: "1"
effective_from: "2000-01-01"
timezone: UTC
guard: {max_share: 1.0}
datasets:
  customers:
    table: ro_customers
    key: id
    subject_key: id
    basis: contract
    keep:
      - clock: {column: last_login, type: date}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {is_active: false}
      - to: purged
        after: P2Y
        action: delete
"""
AS_OF = "2026-06-01"
# Due (last_login + 1 year before 2026-06-01): ids 1, 2 and 3; 3 also reaches purged
# (inactive 2023-01-10, purged 2 years later); 4 logged in recently; 5 has no clock.
ROWS = [
    (1, dt.date(2025, 1, 10)),
    (2, dt.date(2024, 12, 31)),
    (3, dt.date(2022, 1, 10)),
    (4, dt.date(2026, 3, 1)),
    (5, None),
]
EXPECTED = {"active->inactive": 3, "inactive->purged": 1}


def _app_tables(url: str) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "ro_customers",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100)),
        sa.Column("is_active", sa.Boolean),
        sa.Column("last_login", sa.Date),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        rows = [{"id": k, "email": f"c{k}@example.test", "is_active": True, "last_login": d} for k, d in ROWS]
        conn.execute(table.insert(), rows)
    engine.dispose()


def _snapshot(url: str) -> tuple[list[str], list[tuple[object, ...]]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(sa.inspect(conn).get_table_names())
            rows = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM ro_customers ORDER BY id"))]
        return tables, rows
    finally:
        engine.dispose()


def _engine_rows(url: str) -> dict[str, int]:
    """The row count of each of the engine's tables (read with the admin URL)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in store.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def _grant(conn: sa.Connection, dialect: str, url: sa.URL, role: str | None, table: str, privileges: str) -> None:
    """GRANT ``privileges`` on ``table`` of the test's database (or schema) to ``role``."""
    assert role is not None
    if dialect == "postgresql":
        conn.execute(sa.text(f'GRANT {privileges} ON "{db_templates.pg_schema(url)}".{table} TO "{role}"'))
    else:
        for host in ("%", "localhost", "127.0.0.1"):
            conn.execute(sa.text(f"GRANT {privileges} ON `{url.database}`.{table} TO '{role}'@'{host}'"))


def _upgrade(db_url: str) -> None:
    """The engine's tables at head beside the application's: a copy of the session's migrated template.

    Not the migrations themselves (tests/test_migrations.py runs those, and
    test_what_plan_says_without_engine_tables_is_what_the_first_run_does runs
    them beside the application's table; test_templates.py compares a copy made
    beside one with them): on
    MariaDB they took 0.7-3.5 s a call (with the server's load) against
    0.4-1.0 s for the copy (conftest.migrate_isolated; bench/suite_setup_costs.py).
    """
    engine = sa.create_engine(db_url)
    try:
        migrate_isolated(engine)
    finally:
        engine.dispose()


def _upgrade_and_grant(
    dialect: str, app_db: str, read_only_url: str, privileges: Callable[[str], str | None], sequences: bool = False
) -> None:
    """The engine's tables at head, and the read-only role granted ``privileges(table)`` on each (None: nothing).

    With ``sequences``, PostgreSQL's sequences of the schema too (what a run's inserts need).
    """
    _upgrade(app_db)
    url = make_url(app_db)
    role = make_url(read_only_url).username
    engine = sa.create_engine(app_db)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ["alembic_version", "ro_customers", *(t.name for t in store.metadata.sorted_tables)]:
                granted = privileges(table)
                if granted is not None:
                    _grant(conn, dialect, url, role, table, granted)
            if sequences and dialect == "postgresql":
                schema = db_templates.pg_schema(url)
                conn.execute(sa.text(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))
    finally:
        engine.dispose()


def _select_all_but(withheld: str | None) -> Callable[[str], str | None]:
    """SELECT on every table but ``withheld``."""
    return lambda table: None if table == withheld else "SELECT"


def _plan(url: str, tmp_path: Path, text: str = PACK) -> tuple[int, str]:
    pack = tmp_path / "pack.yaml"
    pack.write_text(text)
    result = CliRunner().invoke(main, ["plan", "--rules", str(pack), "--db", url, "--as-of", AS_OF, "--format", "json"])
    return result.exit_code, result.output


def _counts(output: str) -> dict[str, int]:
    doc = json.loads(output)
    return {name: t["count"] for name, t in doc["datasets"]["customers"]["transitions"].items()}


@pytest.fixture
def app_db(db_url: str) -> str:
    """The isolated database holding the application table and its rows."""
    _app_tables(db_url)
    return db_url


@pytest.fixture
def read_only_url(dialect: str, app_db: str) -> Iterator[str]:
    """A role that may only SELECT the application table (PostgreSQL, MariaDB)."""
    if dialect == "sqlite":
        pytest.skip("SQLite has no roles (the never-upgraded case runs there)")
    db_url = app_db
    role = f"rt_ro_{os.getpid()}"
    url = make_url(db_url)
    admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if dialect == "postgresql":
            schema = db_templates.pg_schema(url)
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
            conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
            conn.execute(sa.text(f'GRANT SELECT ON "{schema}".ro_customers TO "{role}"'))
        else:
            for host in ("%", "localhost", "127.0.0.1"):
                conn.execute(sa.text(f"DROP USER IF EXISTS '{role}'@'{host}'"))
                conn.execute(sa.text(f"CREATE USER '{role}'@'{host}'"))
                conn.execute(sa.text(f"GRANT SELECT ON `{url.database}`.ro_customers TO '{role}'@'{host}'"))
    try:
        yield url.set(username=role, password=None).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
            else:
                for host in ("%", "localhost", "127.0.0.1"):
                    conn.execute(sa.text(f"DROP USER IF EXISTS '{role}'@'{host}'"))
        admin.dispose()


def test_plan_on_a_database_never_upgraded_writes_nothing(app_db: str, tmp_path: Path) -> None:
    db_url = app_db
    before = _snapshot(db_url)
    code, output = _plan(db_url, tmp_path)
    assert code == 0, output
    assert _counts(output) == EXPECTED
    notes = json.loads(output)["notes"]
    assert len(notes) == 1 and "revision none" in notes[0] and "first run" in notes[0]
    assert _snapshot(db_url) == before  # no engine table created, no row changed


@pytest.mark.parametrize("upgraded", [False, True], ids=["no-engine-tables", "engine-tables-unreadable"])
def test_plan_with_a_select_only_role(app_db: str, read_only_url: str, tmp_path: Path, upgraded: bool) -> None:
    db_url = app_db
    if upgraded:
        _upgrade(db_url)
    before = _snapshot(db_url)
    code, output = _plan(read_only_url, tmp_path)
    assert code == 0, output
    assert _counts(output) == EXPECTED
    assert "first run" in json.loads(output)["notes"][0]
    assert _snapshot(db_url) == before

    pack = tmp_path / "pack.yaml"
    table = CliRunner().invoke(main, ["plan", "--rules", str(pack), "--db", read_only_url, "--as-of", AS_OF])
    assert table.exit_code == 0, table.output
    assert "3 transitions" not in table.output and "4 transitions" in table.output
    assert "note: " in table.output


def test_what_plan_says_without_engine_tables_is_what_the_first_run_does(
    app_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real migrations here, not the template's copy the other tests get (``_upgrade``): this is what every
    first ``retention db upgrade`` does, beside an application's tables, so a migration that reads or touches
    every table of the database is caught here too."""
    db_url = app_db
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "plan-readonly-test-key")
    code, output = _plan(db_url, tmp_path)
    assert code == 0, output
    engine = sa.create_engine(db_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    pack = tmp_path / "pack.yaml"
    ran = CliRunner().invoke(main, ["run", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF, "--format", "json"])
    assert ran.exit_code == 0, ran.output
    rows = json.loads(ran.stdout)
    counts = {row["transition"]: row["count"] for row in rows if row["dataset"] == "customers"}
    assert counts == _counts(output) == EXPECTED


@pytest.mark.parametrize("withheld", ["retention_holds", "retention_review_items", "retention_pack_sightings", None])
def test_plan_with_a_role_that_may_not_read_one_engine_table(
    dialect: str, app_db: str, read_only_url: str, tmp_path: Path, withheld: str | None
) -> None:
    """The engine's tables at head and readable but one of those plan reads first: it plans as a first run would.

    With every one readable (``withheld`` None) the plan uses them, and says nothing of the kind.
    """
    _upgrade_and_grant(dialect, app_db, read_only_url, _select_all_but(withheld))
    code, output = _plan(read_only_url, tmp_path)
    assert code == 0, output
    assert _counts(output) == EXPECTED
    notes = json.loads(output)["notes"]
    unreadable = [n for n in notes if "cannot be read by this database role" in n]
    assert len(unreadable) == (0 if withheld is None else 1), notes
    if withheld == "retention_pack_sightings":
        # Only the notice check goes without: the versions count as first seen now, as on a first run.
        assert unreadable[0].startswith("retention_pack_sightings cannot be read"), notes
        assert "first seen now" in unreadable[0]
        assert not any("planned as a first run would find them" in n for n in notes), notes


@pytest.mark.parametrize("lacking", ["SELECT", "INSERT"])
def test_run_with_a_role_that_may_not_read_or_write_the_sightings_is_refused(
    dialect: str, app_db: str, read_only_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lacking: str
) -> None:
    """The notice check is never skipped silently: one line naming the table and the privilege, exit 2, no change.

    The role may do everything else a run does; the pack version is new, so
    the run must both read the sightings and write its first one.
    """
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "plan-readonly-test-key")
    other = {"SELECT": "INSERT, UPDATE, DELETE", "INSERT": "SELECT, UPDATE, DELETE"}[lacking]
    _upgrade_and_grant(
        dialect,
        app_db,
        read_only_url,
        lambda table: other if table == "retention_pack_sightings" else "ALL PRIVILEGES",
        sequences=True,
    )
    before = _snapshot(app_db), _engine_rows(app_db)
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK)
    ran = CliRunner().invoke(main, ["run", "--rules", str(pack), "--db", read_only_url, "--as-of", AS_OF])
    assert ran.exit_code == 2, ran.output
    lines = ran.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in ran.output, ran.output
    assert f"lacks the {lacking} privilege on retention_pack_sightings" in lines[0], ran.output
    after = _snapshot(app_db), _engine_rows(app_db)
    assert after == before  # no run record, sighting or ledger entry either
    assert before[1]["retention_pack_sightings"] == 0  # the version is new: the run had a sighting to write


# Version 2 changes the customers dataset (its basis) and takes effect a month before AS_OF; never seen before,
# it counts as first seen today (2026-12 or later), so it is back-dated and its notice not yet run out at AS_OF.
PACK_V2 = (
    PACK.replace('version: "1"', 'version: "2"')
    .replace('effective_from: "2000-01-01"', 'effective_from: "2026-05-01"\nnotice: P8D')
    .replace("basis: contract", "basis: contract (2026)")
)


@pytest.mark.parametrize(
    "withheld", ["retention_pack_sightings", None], ids=["sightings-unreadable", "sightings-read-only"]
)
def test_a_plan_that_cannot_record_a_new_version_predicts_the_run_refusing_it(
    dialect: str, app_db: str, read_only_url: str, tmp_path: Path, withheld: str | None
) -> None:
    """A role that may not write the sightings (or not even read them) plans as the run will count: from now."""
    _upgrade_and_grant(dialect, app_db, read_only_url, _select_all_but(withheld))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "v1.yaml").write_text(PACK)
    (rules / "v2.yaml").write_text(PACK_V2)
    before = _snapshot(app_db), _engine_rows(app_db)
    result = CliRunner().invoke(
        main, ["plan", "--rules", str(rules), "--db", read_only_url, "--as-of", AS_OF, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    notes = json.loads(result.output)["notes"]
    refused = [n for n in notes if n.endswith("run refuses it without --accept-short-notice")]
    assert len(refused) == 1 and "pack readonly version 2 " in refused[0], notes
    assert (_snapshot(app_db), _engine_rows(app_db)) == before


def test_check_with_a_role_that_may_not_read_the_sightings_is_refused(
    dialect: str, app_db: str, read_only_url: str, tmp_path: Path
) -> None:
    """``check`` counts notice from the sightings: without SELECT on them, one line naming it, exit 2."""
    _upgrade_and_grant(dialect, app_db, read_only_url, _select_all_but("retention_pack_sightings"))
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK)
    checked = CliRunner().invoke(main, ["check", "--rules", str(pack), "--db", read_only_url])
    assert checked.exit_code == 2, checked.output
    lines = checked.output.strip().splitlines()
    assert "Traceback" not in checked.output, checked.output
    assert "lacks the SELECT privilege on retention_pack_sightings" in lines[-1], checked.output
