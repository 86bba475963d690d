"""`check --db` (and so `run`) refuses a dataset table that is the engine's own or a system catalog (issue 28).

The adversarial review's packs: `table: retention_holds` passed `check --db`
and `run` deleted the legal hold; `retention_runs` and `pg_catalog.pg_authid`
passed too. Expected lines are written here by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.store import tables as store

ENV = {"RETENTION_PSEUDONYM_KEY": "guard-test-key", "RETENTION_PSEUDONYM_KEY_FILE": "", "RETENTION_DATABASE_URL": ""}

PACK = """
pack: hostile
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {{max_share: 1.0}}
datasets:
  victims:
    table: {table}
{schema}    key: {key}
    basis: none
    keep:
      - clock: {{column: {clock}, type: timestamp}}
        period: P1D
    lifecycle:
      - to: purged
        action: delete
"""


def pack(tmp_path: Path, table: str, *, schema: str | None = None, key: str = "id", clock: str = "placed_at") -> Path:
    path = tmp_path / "hostile.yaml"
    text = PACK.format(table=table, schema=f"    schema: {schema}\n" if schema else "", key=key, clock=clock)
    path.write_text(text, encoding="utf-8")
    return path


def check(db_url: str, path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["check", "--rules", str(path), "--db", db_url], env=ENV)
    return result.exit_code, [line for line in result.output.splitlines() if not line.startswith("ok: ")]


ENGINE = (
    "is a table of the retention engine itself: a pack cannot retain it "
    "(its own records follow engine_retention); remove the dataset"
)


@pytest.mark.parametrize("table", ["retention_holds", "retention_runs", "RETENTION_LEDGER", "alembic_version"])
def test_an_engine_table_is_refused(migrated: sa.Engine, db_url: str, tmp_path: Path, table: str) -> None:
    assert check(db_url, pack(tmp_path, table)) == (2, [f"error: {table}: {ENGINE} (dataset victims)"])


def test_a_run_over_the_holds_table_deletes_no_hold(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """The issue's run: the pack names retention_holds; the run refuses (exit 2) and the hold stays."""
    holds = store.holds
    with migrated.begin() as conn:
        conn.execute(
            holds.insert().values(
                scope="dataset", dataset="customers", reason="litigation", placed_by="dpo",
                placed_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            )
        )  # fmt: skip
    result = CliRunner().invoke(
        main,
        ["run", "--rules", str(pack(tmp_path, "retention_holds")), "--db", db_url, "--as-of", "2026-01-01"],
        env=ENV,
    )
    assert result.exit_code == 2, result.output
    assert ENGINE in result.output
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(holds)).scalar_one() == 1


@pytest.mark.only_on("sqlite")
def test_sqlite_system_tables_are_refused(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    assert check(db_url, pack(tmp_path, "sqlite_master", key="name", clock="sql")) == (
        2,
        ["error: sqlite_master: this is an SQLite system table, never a dataset (dataset victims)"],
    )


@pytest.mark.only_on("postgresql")
def test_postgresql_catalogs_are_refused(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """pg_authid by the search path (pg_catalog comes first), and explicit system schemas."""
    assert check(db_url, pack(tmp_path, "pg_authid", key="oid", clock="rolvaliduntil")) == (
        2,
        [
            "error: pg_authid: this table resolves to the system schema pg_catalog (searched first), never a "
            "dataset (dataset victims)"
        ],
    )
    for schema, table in (("pg_catalog", "pg_class"), ("information_schema", "tables")):
        assert check(db_url, pack(tmp_path, table, schema=schema, key="oid")) == (
            2,
            [f"error: {table}: schema {schema} is a system schema of the server, never a dataset's (dataset victims)"],
        )


@pytest.mark.only_on("mariadb")
def test_mariadb_system_schemas_are_refused(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    for schema, table in (("mysql", "user"), ("information_schema", "TABLES"), ("performance_schema", "threads")):
        assert check(db_url, pack(tmp_path, table, schema=schema, key="User")) == (
            2,
            [f"error: {table}: schema {schema} is a system schema of the server, never a dataset's (dataset victims)"],
        )


def test_one_rule_refuses_every_engine_table(tmp_path: Path) -> None:
    """check's refusal and schema_guard.engine_table are one rule (by the engine's metadata), with one message."""
    from retention.engine import schema_guard
    from retention.engine.schema import refuse_engine_tables
    from retention.policy import load_file

    names = [*store.metadata.tables, "retention_archive_owner", "alembic_version"]
    for name in names:
        assert schema_guard.engine_table(name) == ENGINE, name
        assert schema_guard.engine_table(name.upper()) == ENGINE, name
    assert schema_guard.engine_table("retentions") is None and schema_guard.engine_table("orders") is None
    loaded = load_file(pack(tmp_path, "retention_holds"))
    assert [(f.table, f.message) for f in refuse_engine_tables(loaded.pack)] == [("retention_holds", ENGINE)]
