"""`retention check --db`: the pack against the live schema, each finding with table and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main

PACK = """
pack: shop
version: "1"
effective_from: 2026-01-01
timezone: Europe/Paris
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: policy
    keep:
      - clock: {column: last_seen, type: timestamptz}
        period: P3Y
    lifecycle:
      - to: purged
        action: delete
"""


def write_pack(tmp_path: Path, text: str = PACK) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def customers(
    md: sa.MetaData,
    *,
    clock_type: sa.types.TypeEngine | None = None,
    index: bool = True,
    pk: bool = True,
) -> sa.Table:
    return sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=pk, autoincrement=False),
        sa.Column("last_seen", clock_type or sa.DateTime(timezone=True), index=index),
    )


def check(db_url: str, pack: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["check", "--rules", str(pack), "--db", db_url])
    lines = [line for line in result.output.splitlines() if not line.startswith("ok: ")]
    return result.exit_code, lines


def test_clean_schema_has_no_findings(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Table, key, indexed clock of the right type: nothing to report, exit 0."""
    md = sa.MetaData()
    customers(md)
    md.create_all(engine)
    assert check(db_url, write_pack(tmp_path)) == (0, [])


def test_missing_table(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A dataset whose table does not exist is an error naming the table.

    The database exists (an application's does): on SQLite a file is made by the first connection, and ``check``
    refuses a path naming no file (a typo) before it would create an empty one.
    """
    with engine.connect():
        pass
    code, lines = check(db_url, write_pack(tmp_path))
    assert code == 2
    assert lines == ["error: customers: table does not exist (dataset customers)"]


def test_missing_clock_column(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A clock column that is not there is named with the columns that are."""
    md = sa.MetaData()
    sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", sa.DateTime(timezone=True)),
    )
    md.create_all(engine)
    code, lines = check(db_url, write_pack(tmp_path))
    assert code == 2
    assert lines == ["error: customers.last_seen: no such column (clock); columns: id, seen (dataset customers)"]


def test_missing_key_column(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A key column that is not there is an error."""
    md = sa.MetaData()
    customers(md)
    md.create_all(engine)
    code, lines = check(db_url, write_pack(tmp_path, PACK.replace("key: id\n", "key: customer_no\n", 1)))
    assert code == 2
    assert "error: customers.customer_no: no such column (key); columns: id, last_seen (dataset customers)" in lines


def test_text_clock_column(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A VARCHAR timestamp clock is refused, except on SQLite, where text is how datetimes are stored."""
    md = sa.MetaData()
    customers(md, clock_type=sa.String(30))
    md.create_all(engine)
    code, lines = check(db_url, write_pack(tmp_path))
    if engine.dialect.name == "sqlite":  # read in the forms of docs/rules.md, "Clocks and periods"
        assert code == 0 and not [line for line in lines if line.startswith("error")], lines
        return
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("error: customers.last_seen: clock column is VARCHAR")
    assert lines[0].endswith("which cannot hold a timestamptz clock (dataset customers)")


def test_unindexed_clock_column_is_a_warning(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """No index on the clock column: a warning, exit 0."""
    md = sa.MetaData()
    customers(md, index=False)
    md.create_all(engine)
    assert check(db_url, write_pack(tmp_path)) == (
        0,
        ["warning: customers.last_seen: clock column has no index; evaluation will scan the table (dataset customers)"],
    )


def test_table_without_primary_key_is_a_warning(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A table without primary key is reported; keys may repeat."""
    md = sa.MetaData()
    customers(md, pk=False)
    md.create_all(engine)
    code, lines = check(db_url, write_pack(tmp_path))
    assert code == 0
    assert lines == ["warning: customers: table has no primary key; keys may repeat (dataset customers)"]


@pytest.mark.only_on("postgresql")
def test_naive_column_declared_timestamptz(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """On PostgreSQL a TIMESTAMP WITHOUT TIME ZONE cannot be a timestamptz clock."""
    md = sa.MetaData()
    customers(md, clock_type=sa.DateTime(timezone=False))
    md.create_all(engine)
    code, lines = check(db_url, write_pack(tmp_path))
    assert code == 2
    assert lines == [
        "error: customers.last_seen: clock column is TIMESTAMP WITHOUT TIME ZONE; declare the clock "
        "'timestamp' with its timezone (dataset customers)"
    ]


def test_unhandled_child_table(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Deleting customers while orders (no dataset) still reference them is an error naming orders."""
    md = sa.MetaData()
    customers(md)
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
    )
    md.create_all(engine)
    code, lines = check(db_url, write_pack(tmp_path))
    assert code == 2
    assert lines == [
        "error: orders.customer_id: references customers, whose rows this pack deletes, but no dataset "
        "handles orders: deleting a customers row would violate the foreign key (add a dataset for "
        "orders, or ON DELETE CASCADE) (dataset customers)"
    ]


def test_cascading_child_table_is_fine(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """ON DELETE CASCADE children need no dataset."""
    md = sa.MetaData()
    customers(md)
    sa.Table(
        "sessions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE")),
    )
    md.create_all(engine)
    assert check(db_url, write_pack(tmp_path)) == (0, [])
