"""Database failures as operators see them: one line, no personal data, the right exit code.

A database error's text can quote the row (PostgreSQL's DETAIL "Failing row
contains (3, emma.moreau3@...)", a trigger's message, MySQL's "Duplicate
entry '...'"), and a traceback prints the statement's parameters. Every
test here makes a real statement fail on a row holding an e-mail address
and checks that the address appears nowhere: not in the CLI's output, not
in the logs, not in ``retention_runs.error``. Faults: a constraint the
engine's change violates, a trigger that refuses with the row in its
message, the work session terminated by the server, a full disk (SQLite's
``max_page_count``), and a table locked by another session.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from engine_events import on_database
from scaffold import events_pack

from retention.cli import main
from retention.errors import describe_database_error
from retention.store import tables as store

EMAIL = "emma.moreau3@example.com"
ENV = {"RETENTION_PSEUDONYM_KEY": "errors-test-key"}
AS_OF = "2026-06-01"

CUSTOMERS = """\
  customers:
    table: customers
    key: id
    basis: one year
    keep:
      - clock: {column: seen, type: timestamp}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {active: ACTIVE}
"""
PACK = events_pack("errs", batch_size=500, more=CUSTOMERS)


def build(engine: sa.Engine, events: int = 30) -> None:
    """Customers with e-mail addresses (all due), and ``events`` old events (all due)."""
    md = sa.MetaData()
    customers = sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("seen", sa.DateTime, index=True),
    )
    table = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", sa.DateTime, index=True),
    )
    md.create_all(engine)
    old = dt.datetime(2020, 3, 1, 12, 0)
    with engine.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {
                    "id": i,
                    "email": f"emma.moreau{i}@example.com",
                    "name": f"Emma Moreau {i}",
                    "active": True,
                    "seen": old,
                }
                for i in range(1, 6)
            ],
        )
        conn.execute(table.insert(), [{"id": i, "collected": old} for i in range(1, events + 1)])


def write_pack(tmp_path: Path, active: str = "false") -> Path:
    path = tmp_path / f"errs-{active}.yaml"
    path.write_text(PACK.replace("ACTIVE", active), encoding="utf-8")
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", *args], env=ENV, prog_name="retention")


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def run_record(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(store.runs).where(store.runs.c.mode == "run").order_by(store.runs.c.started_at.desc())
        ).first()


def assert_clean(engine: sa.Engine, *outputs: str) -> None:
    """No e-mail address in any output, in any run record or in any log line."""
    for output in outputs:
        assert "@example.com" not in output
    with engine.connect() as conn:
        errors = conn.execute(sa.select(store.runs.c.error)).scalars().all()
    for error in errors:
        assert error is None or "@example.com" not in error


def json_logs(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"')]


# The line each database gives for deactivate setting a NOT NULL column to NULL
NOT_NULL = {
    "postgresql": "dataset customers: UPDATE on table customers failed: NotNullViolation "
    "(SQLSTATE 23502; a NOT NULL constraint; column active)",
    "mariadb": "dataset customers: UPDATE on table customers failed: IntegrityError "
    "(SQLSTATE 23000, error 1048; a NOT NULL column)",
    "sqlite": "dataset customers: UPDATE on table customers failed: IntegrityError "
    "(SQLITE_CONSTRAINT_NOTNULL; on customers.active)",
}


def test_a_failing_dataset_is_one_line_without_the_row(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """NOT NULL violated: the run table, the JSON output, the logs and the run record name class,
    code, table and statement kind; PostgreSQL's DETAIL (the whole row, e-mail included) is nowhere."""
    build(migrated)
    result = invoke("run", "--rules", str(write_pack(tmp_path, "null")), "--db", db_url, "--as-of", AS_OF)
    assert result.exit_code == 3, result.output
    assert_clean(migrated, result.output)
    failed = [e for e in json_logs(result.stderr) if e["event"] == "dataset_failed"]
    assert [(e["dataset"], e["error"]) for e in failed] == [("customers", NOT_NULL[dialect])]
    assert json.loads(run_record(migrated).error) == {"customers": NOT_NULL[dialect]}
    assert count(migrated, "events") == 0  # the other dataset went on

    again = invoke(
        "run", "--rules", str(write_pack(tmp_path, "null")), "--db", db_url, "--as-of", AS_OF, "--format", "json"
    )
    assert again.exit_code == 3
    rows = json.loads(again.stdout)
    assert rows == [{"dataset": "customers", "transition": "FAILED", "count": None, "error": NOT_NULL[dialect]}]
    assert_clean(migrated, again.output)


TRIGGERS = {
    "postgresql": [
        """CREATE FUNCTION refuse_deactivation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'refusing to deactivate %', OLD.email
                USING DETAIL = 'row ' || OLD.email || ' ' || OLD.name, HINT = 'ask ' || OLD.email;
        END $$""",
        """CREATE TRIGGER refuse_deactivation BEFORE UPDATE ON customers
           FOR EACH ROW EXECUTE FUNCTION refuse_deactivation()""",
    ],
    "mariadb": [
        """CREATE TRIGGER refuse_deactivation BEFORE UPDATE ON customers FOR EACH ROW
        BEGIN
            DECLARE message VARCHAR(200);
            SET message = CONCAT('refusing to deactivate ', OLD.email);
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = message;
        END""",
    ],
}
TRIGGER_LINE = {
    "postgresql": "dataset customers: UPDATE on table customers failed: RaiseException (SQLSTATE P0001)",
    "mariadb": "dataset customers: UPDATE on table customers failed: OperationalError (SQLSTATE 45000, error 1644)",
}


@pytest.mark.only_on("postgresql", "mariadb")  # SQLite's RAISE() takes a literal message: it cannot quote a row
def test_a_trigger_message_quoting_the_row_is_not_repeated(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """A trigger refusing the change with the e-mail in its message, DETAIL and HINT: none of it is shown or kept."""
    build(migrated)
    with migrated.begin() as conn:
        for statement in TRIGGERS[dialect]:
            conn.execute(sa.text(statement))
    result = invoke("run", "--rules", str(write_pack(tmp_path)), "--db", db_url, "--as-of", AS_OF, "--format", "json")
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)[-1] == {
        "dataset": "customers",
        "transition": "FAILED",
        "count": None,
        "error": TRIGGER_LINE[dialect],
    }
    assert_clean(migrated, result.output)
    assert json.loads(run_record(migrated).error) == {"customers": TRIGGER_LINE[dialect]}


@contextmanager
def work_session_killed_at(engine: sa.Engine, prefix: str) -> Iterator[list[str]]:
    """Terminate the session that is about to run the first statement starting with ``prefix`` (or a WITH holding it).

    The listener is on every engine, so it catches the CLI's own; the kill
    comes from the test's engine, as a failover or an administrator would.
    """
    killed: list[str] = []

    def kill(conn: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        text = statement.lstrip().upper()
        # PostgreSQL's purge batch is one WITH statement whose DELETE is a CTE (engine/set_purge.py).
        if killed or not (text.startswith(prefix) or (text.startswith("WITH") and prefix in text)):
            return
        if conn.engine is engine:
            return
        driver = conn.connection.dbapi_connection
        assert driver is not None
        with engine.connect() as admin:
            if engine.dialect.name == "postgresql":
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": driver.info.backend_pid})
            else:
                admin.execute(sa.text(f"KILL CONNECTION {int(driver.thread_id())}"))
        killed.append(prefix.split()[0])

    # Only connections to the test's database: the background thread preparing the next tests' databases
    # (db_templates.py) must never see its session killed.
    with on_database(engine.url, "before_cursor_execute", kill):
        yield killed


LOST = {
    "postgresql": "DELETE on table events failed: AdminShutdown (SQLSTATE 57P01; the server terminated the connection)",
    "mariadb": "DELETE on table events failed: OperationalError (error 2013; the connection was lost)",
}


@pytest.mark.only_on("postgresql", "mariadb")
def test_a_lost_connection_is_one_line_exit_1_and_the_next_run_resumes(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """The work session terminated mid-run: exit 1, one line naming the failure; the rerun finishes cleanly."""
    build(migrated, events=1200)
    pack = str(write_pack(tmp_path))
    with work_session_killed_at(migrated, "DELETE FROM EVENTS") as killed:
        result = invoke("run", "--rules", pack, "--db", db_url, "--as-of", AS_OF)
    assert killed == ["DELETE"]
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert failures(result.stderr) == [LOST[dialect]]
    record = run_record(migrated)
    assert record.status == "failed"
    assert record.error == LOST[dialect]
    assert_clean(migrated, result.output)
    assert count(migrated, "events") == 1200  # the batch died with its session: nothing half-applied

    with work_session_killed_at(migrated, "DELETE FROM EVENTS"):
        shown = invoke("--traceback", "run", "--rules", pack, "--db", db_url, "--as-of", AS_OF)
    assert isinstance(shown.exception, sa.exc.DBAPIError)  # --traceback gives the operator the whole error

    resumed = invoke("run", "--rules", pack, "--db", db_url, "--as-of", AS_OF)
    assert resumed.exit_code == 0, resumed.output
    assert count(migrated, "events") == 0
    with migrated.connect() as conn:
        entries = conn.execute(
            sa.select(sa.func.sum(store.ledger.c.count)).where(store.ledger.c.dataset == "events")
        ).scalar_one()
    assert entries == 1200
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0


@contextmanager
def disk_full(engine: sa.Engine) -> Iterator[None]:
    """Every new connection to ``engine``'s SQLite file may not grow it past its current size (a full disk).

    The listener is on every engine (the CLI makes its own), so it limits only
    connections to this file: the suite prepares the next tests' databases
    in a background thread meanwhile, and a PRAGMA sent to those (PostgreSQL,
    MariaDB, another SQLite file) broke them.
    """
    with engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    path = str(Path(str(engine.url.database)).resolve())

    def limit(dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        files = {row[2] for row in dbapi_connection.execute("PRAGMA database_list")}
        if path in files:
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    sa.event.listen(sa.Engine, "connect", limit)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, "connect", limit)


DISK_FULL = {
    # The set-based purge (retention/engine/set_purge.py) fails in its block INSERT ... SELECT, which it names;
    # the per-record path's failing statement carries no table it can name.
    "1": "INSERT on table retention_ledger_blocks failed: OperationalError (SQLITE_FULL; the database or disk is full)",
    "0": "a database operation failed: OperationalError (SQLITE_FULL; the database or disk is full)",
}


def failures(stderr: str) -> list[str]:
    """The error of each failed command: with --log-format json it is a `command_failed` log event."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith('{"')]
    return [e["error"] for e in events if e.get("event") == "command_failed"]


@pytest.mark.only_on("sqlite")
@pytest.mark.parametrize("set_based", ["1", "0"], ids=["set_based", "per_record"])
def test_a_full_disk_is_one_line_exit_1_twice_and_the_next_run_resumes(
    migrated: sa.Engine, db_url: str, tmp_path: Path, set_based: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full during a run and again at the next run: one line, exit 1 each time; with space, the run finishes."""
    monkeypatch.setenv("RETENTION_SET_BASED", set_based)
    build(migrated, events=3000)
    pack = str(write_pack(tmp_path))
    for _ in range(2):
        migrated.dispose()
        with disk_full(migrated):
            result = invoke("run", "--rules", pack, "--db", db_url, "--as-of", AS_OF)
        assert result.exit_code == 1, result.output
        assert failures(result.stderr) == [DISK_FULL[set_based]]
    assert count(migrated, "events") == 3000
    resumed = invoke("run", "--rules", pack, "--db", db_url, "--as-of", AS_OF)
    assert resumed.exit_code == 0, resumed.output
    assert count(migrated, "events") == 0
    with migrated.connect() as conn:
        entries = conn.execute(
            sa.select(sa.func.sum(store.ledger.c.count)).where(store.ledger.c.dataset == "events")
        ).scalar_one()
    assert entries == 3000
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0


LOCKED = {
    "postgresql": "dataset customers: SELECT on table customers failed: LockNotAvailable "
    "(SQLSTATE 55P03; the lock wait timed out)",
    "mariadb": "dataset customers: SELECT on table customers failed: OperationalError "
    "(SQLSTATE HY000, error 1205; the lock wait timed out)",
}
HOLD_LOCK = {
    "postgresql": "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE",
    "mariadb": "LOCK TABLES customers WRITE",
    "sqlite": "BEGIN IMMEDIATE",
}


def test_a_table_locked_elsewhere_fails_that_dataset_after_the_lock_timeout(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """Another session holds a table lock: with --lock-timeout 2 the run stops waiting.

    PostgreSQL and MariaDB: that dataset fails (exit 3), the others are
    applied. SQLite has one write lock for the whole database, so the run
    cannot start its work and exits 1 with one line.
    """
    build(migrated)
    holder = migrated.connect()
    try:
        if dialect == "sqlite":
            holder.connection.dbapi_connection.execute(HOLD_LOCK[dialect])  # type: ignore[union-attr]
        else:
            holder.begin()
            holder.execute(sa.text(HOLD_LOCK[dialect]))
        command = [sys.executable, "-m", "retention.cli", "--log-format", "json", "run", "--rules"]
        command += [str(write_pack(tmp_path)), "--db", db_url, "--as-of", AS_OF, "--lock-timeout", "2"]
        command += ["--format", "json"]
        done = subprocess.run(
            command, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=180, check=False
        )
    finally:
        if dialect == "mariadb":
            holder.execute(sa.text("UNLOCK TABLES"))
        if dialect == "sqlite":
            holder.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
        else:
            holder.rollback()
        holder.close()
    if dialect == "sqlite":
        assert done.returncode == 1, done.stderr
        assert failures(done.stderr) == [
            "INSERT on table retention_run_lock failed: OperationalError (SQLITE_BUSY; the database is locked "
            "by another connection)"
        ]
        assert count(migrated, "events") == 30
        return
    assert done.returncode == 3, done.stderr
    rows = json.loads(done.stdout)
    assert {"dataset": "events", "transition": "active->purged", "count": 30} in rows
    assert {"dataset": "customers", "transition": "FAILED", "count": None, "error": LOCKED[dialect]} in rows
    assert count(migrated, "events") == 0


def test_a_data_modifying_with_is_named_by_its_first_change() -> None:
    """PostgreSQL's purge batch is one ``WITH``: its failure names the DELETE and its table, as the old batch did."""
    batch = (
        'WITH k AS (SELECT events.ctid AS a, events.id AS k FROM "events" WHERE events.at < %(x)s LIMIT 5), '
        'd AS (DELETE FROM "events" WHERE events.ctid = ANY (ARRAY(SELECT k.a FROM k)) RETURNING events.id), '
        "i AS (INSERT INTO retention_ledger_items (entry_seq) SELECT 1 FROM d RETURNING idx) SELECT count(*) FROM k"
    )
    locking = "WITH k AS (SELECT id FROM events FOR UPDATE SKIP LOCKED) SELECT id FROM k"
    lost = OSError("the server said: emma@example.org")
    assert describe_database_error(sa.exc.OperationalError(batch, {}, lost), "events") == (
        "dataset events: DELETE on table events failed: OSError"
    )
    assert describe_database_error(sa.exc.OperationalError(locking, {}, lost)) == (
        "SELECT on table events failed: OSError"
    )
