"""Issue 26 clause 3: several datasets on one table, with disjoint ``where`` filters, on every database.

"Invoices 10 years from the invoice date" for orders with an invoice, two
years for the orders without one: two kinds of records in one table, two
policies. Each row belongs to at most one dataset; ``check --db``, ``plan``
and ``run`` refuse filters that overlap on the data, naming a sample key.
Expected sets are read by hand from the rows below.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.errors import PackError, SchemaError
from retention.policy import load_file
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"shared-table-key"

PACK = """\
pack: shared
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  invoices:
    table: orders
    key: order_id
    subject_key: customer_id
    basis: tax law
    where: {invoice_no: {not: null}}
    keep:
      - clock: {column: created_at, type: timestamptz}
        period: P10Y
    lifecycle:
      - to: purged
        action: delete
  orders:
    table: orders
    key: order_id
    subject_key: customer_id
    basis: contract
    where: {invoice_no: null}
    on_erasure: purged
    keep:
      - clock: {column: created_at, type: timestamptz}
        period: P2Y
    lifecycle:
      - to: purged
        action: delete
"""

OLD = dt.datetime(2015, 3, 1, 12, tzinfo=UTC)
MID = dt.datetime(2020, 1, 10, 12, tzinfo=UTC)
NEW = dt.datetime(2023, 12, 1, 12, tzinfo=UTC)
# order_id, customer_id, invoice_no, status, created_at
ROWS = [
    (1, 5, "F-2015-1", "completed", OLD),  # invoice: kept 10 years, to 2025-03-01
    (2, 7, "F-2020-1", "completed", MID),  # invoice of the erased customer: kept (no on_erasure)
    (3, 5, None, "completed", MID),  # no invoice: 2 years, due 2022-01-11
    (4, 7, None, "completed", NEW),  # no invoice, not due; its customer is erased
    (5, 6, None, "trash", OLD),  # no invoice, due
]


def create(engine: sa.Engine) -> None:
    md = sa.MetaData()
    orders = sa.Table(
        "orders",
        md,
        sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("invoice_no", sa.String(20)),
        sa.Column("status", sa.String(20)),
        sa.Column("created_at", sa.DateTime(timezone=True), index=True),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            orders.insert(),
            [
                {"order_id": o, "customer_id": c, "invoice_no": i, "status": s, "created_at": at}
                for o, c, i, s, at in ROWS
            ],
        )


def write(tmp_path: Path, text: str = PACK) -> Path:
    path = tmp_path / "shared.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def left(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT order_id FROM orders")).scalars())


def purges_per_dataset(engine: sa.Engine) -> dict[str, int]:
    """Ledger entries ``active->purged`` per dataset (records are pseudonymous there)."""
    ledger = store.ledger
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.c.dataset, sa.func.sum(ledger.c.count))
            .where(ledger.c.transition == "active->purged")
            .group_by(ledger.c.dataset)
        ).all()
    return {r[0]: r[1] for r in rows}


def test_two_policies_on_one_table(migrated: sa.Engine, tmp_path: Path) -> None:
    """Each dataset moves its own rows only, by its own clock and erasure rule."""
    create(migrated)
    loaded = load_file(write(tmp_path))
    with migrated.begin() as conn:
        subjects.add_request(conn, subject_key="7", received=dt.date(2024, 5, 1), pack=loaded.pack, secret=SECRET)
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    summary = execute.plan(migrated, loaded, as_of)
    assert summary.transitions.get("invoices", {}) == {}
    assert summary.transitions["orders"] == {"active->purged": 3}  # 3 and 5 by their clock, 4 by erasure
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert result.status == "succeeded"
    assert result.counts["orders"] == {"active->purged": 3}
    assert left(migrated) == {1, 2}
    assert purges_per_dataset(migrated) == {"orders": 3}

    later = dt.datetime(2026, 1, 1, tzinfo=UTC)
    result = execute.run(migrated, loaded, later, secret=SECRET)
    assert result.counts["invoices"] == {"active->purged": 1}  # 1: ten years over on 2025-03-02
    assert result.counts.get("orders", {}) == {}
    assert left(migrated) == {2}
    assert purges_per_dataset(migrated) == {"orders": 3, "invoices": 1}


OVERLAP = PACK.replace("where: {invoice_no: null}", "where: {status: {not: trash}}")


def test_overlap_is_refused_naming_a_key(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Filters that both take a row: check --db, plan and run refuse, naming the least such key only."""
    create(migrated)
    path = write(tmp_path, OVERLAP)
    message = (
        "datasets invoices and orders share table orders and their where filters overlap: the row with "
        "order_id 1 matches both; make the filters disjoint (a row belongs to at most one dataset)"
    )
    check = CliRunner().invoke(main, ["check", "--rules", str(path), "--db", db_url])
    assert check.exit_code == 2, check.output
    assert f"error: orders.order_id: {message}" in check.output
    assert "F-2015-1" not in check.output and "completed" not in check.output
    loaded = load_file(path)
    with pytest.raises(SchemaError) as err:
        execute.plan(migrated, loaded, dt.datetime(2024, 6, 1, tzinfo=UTC))
    assert str(err.value) == f"orders.order_id: {message} (dataset orders)"
    run = CliRunner().invoke(
        main,
        ["run", "--rules", str(path), "--db", db_url, "--as-of", "2024-06-01"],
        env={"RETENTION_PSEUDONYM_KEY": "shared-test-key", "RETENTION_PSEUDONYM_KEY_FILE": ""},
    )
    assert run.exit_code == 2, run.output
    assert message in run.output and "Traceback" not in run.output
    assert left(migrated) == {1, 2, 3, 4, 5}


def test_check_db_accepts_disjoint_filters(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    create(migrated)
    check = CliRunner().invoke(main, ["check", "--rules", str(write(tmp_path)), "--db", db_url])
    assert "overlap" not in check.output
    assert check.exit_code == 0, check.output


def test_a_shared_table_needs_where_on_every_dataset(tmp_path: Path) -> None:
    """Without a where, a dataset would take every row of the table: refused at load time, file and line."""
    path = write(tmp_path, PACK.replace("    where: {invoice_no: null}\n", ""))
    with pytest.raises(PackError) as err:
        load_file(path)
    assert str(err.value) == (
        f"{path}:20: table 'orders' is already the table of dataset 'invoices': datasets sharing a table each "
        "need a 'where' saying which rows are theirs (a row belongs to at most one dataset); without one: orders"
    )
