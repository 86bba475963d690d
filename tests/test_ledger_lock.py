"""A lock on the ledger table fails the datasets that need it (exit 3), not the whole run; lost connections say so.

The review held ``LOCK TABLE retention_ledger`` in another session during a
run on PostgreSQL: the run exited 1 instead of failing the dataset. And a
connection lost between statements was reported as
``DELETE ... failed: OperationalError`` without saying the connection was
lost.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from scaffold import events_pack, make_events

from retention.cli import main
from retention.errors import describe_database_error
from retention.store.config import create_engine

ENV = {"RETENTION_PSEUDONYM_KEY": "lock-test-key", "RETENTION_PSEUDONYM_KEY_FILE": "", "RETENTION_DATABASE_URL": ""}

PACK = events_pack("locks")


@pytest.mark.only_on("postgresql")
def test_a_locked_ledger_fails_the_dataset_not_the_run(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    events = make_events(migrated, range(1, 9), subject=False, collected=lambda i: dt.datetime(2020, 3, i))
    pack = tmp_path / "locks.yaml"
    pack.write_text(PACK, encoding="utf-8")
    holder = migrated.connect()
    try:
        holder.begin()
        holder.execute(sa.text("LOCK TABLE retention_ledger IN ACCESS EXCLUSIVE MODE"))
        result = CliRunner().invoke(
            main,
            ["run", "--rules", str(pack), "--db", db_url, "--as-of", "2022-01-01", "--lock-timeout", "1"],
            env=ENV,
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 3, result.output
    assert "dataset events: " in result.output
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 8  # nothing moved
    again = CliRunner().invoke(main, ["run", "--rules", str(pack), "--db", db_url, "--as-of", "2022-01-01"], env=ENV)
    assert again.exit_code == 0, again.output
    verified = CliRunner().invoke(main, ["ledger", "verify", "--db", db_url], env=ENV)
    assert verified.exit_code == 0, verified.output


@pytest.mark.only_on("postgresql", "mariadb")
def test_a_lost_connection_is_named(migrated: sa.Engine, db_url: str) -> None:
    """The session killed between two statements: the error line says the connection was lost."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn, migrated.connect() as admin:
            if engine.dialect.name == "postgresql":
                # The network gone under the session (no message from the server: no SQLSTATE either).
                driver = conn.connection.dbapi_connection
                assert driver is not None
                socket.socket(fileno=os.dup(driver.pgconn.socket)).shutdown(socket.SHUT_RDWR)
            else:
                pid = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one()
                admin.execute(sa.text(f"KILL CONNECTION {int(pid)}"))
            with pytest.raises(sa.exc.DBAPIError) as caught:
                conn.execute(sa.text("DELETE FROM retention_holds WHERE id = 0"))
    finally:
        engine.dispose()
    line = describe_database_error(caught.value, "events")
    assert line.startswith("dataset events: DELETE on table retention_holds failed: ")
    assert "the connection was lost" in line, line
