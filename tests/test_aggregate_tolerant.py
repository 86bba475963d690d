"""Issue 26 clause 1: tolerant aggregate clocks and their full ``where``, on every database.

"2 years after the last visit (WooCommerce's last-active meta ...)": one
unreadable meta row must not keep a customer for ever when the pack says
``invalid_rows: ignore``; and an aggregate's ``where`` takes the operators of
a dataset's ``where`` (comparison, ``in``, ``not``, null tests). Expected sets
are read by hand from the rows below, never computed by the engine.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.commands import explain
from retention.engine import execute
from retention.errors import PackError
from retention.policy import load_file
from retention.store import tables as store

UTC = dt.UTC
SECRET = b"aggregate-tolerant-key"
AS_OF = dt.datetime(2024, 6, 1, tzinfo=UTC)

PACK = """\
pack: tolerant
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: policy
    keep:
      - clock:
          aggregate: max
          table: usermeta
          on: user_id
          column: meta_value
          type: epoch_text
          where: {meta_key: wc_last_active}
          invalid_rows: ignore
        period: P2Y
    lifecycle:
      - to: inactive
  shoppers:
    table: shoppers
    key: id
    basis: policy
    keep:
      - clock:
          aggregate: max
          table: shop_orders
          on: shopper_id
          column: created_at
          where:
            status: {not: [trash, failed]}
            total: {gt: 0}
            refunded_at: null
        period: P2Y
    lifecycle:
      - to: inactive
"""

JAN_2020 = "1577836800"  # 2020-01-01 00:00 UTC
JAN_2024 = "1704067200"  # 2024-01-01 00:00 UTC
# (umeta_id, user_id, meta_key, meta_value)
META = [
    (1, 1, "wc_last_active", JAN_2020),
    (2, 1, "wc_last_active", " 1700000000"),  # unreadable: a leading space
    (3, 2, "wc_last_active", "a:1:{}"),  # unreadable, and the only row of 2
    (4, 3, "wc_last_active", JAN_2020),
    (5, 3, "wc_last_active", JAN_2024),  # 3 was seen in 2024: kept
    (6, 4, "wc_last_active", "0"),  # unreadable: zero with a leading zero rule
    (7, 4, "wc_last_active", JAN_2020),
    (8, 5, "other_key", "x"),  # unreadable, but outside the where
    (9, 5, "wc_last_active", JAN_2020),
]
CUSTOMERS = [1, 2, 3, 4, 5, 6]  # 6 has no meta row at all

OLD = dt.datetime(2020, 1, 10, 12, tzinfo=UTC)
NEW = dt.datetime(2024, 3, 1, 12, tzinfo=UTC)
# (order id, shopper, status, total, refunded_at, created_at)
ORDERS = [
    (1, 1, "completed", 10, None, OLD),
    (2, 1, "trash", 10, None, NEW),  # not: [trash, failed] leaves it out
    (3, 2, "completed", 10, None, OLD),
    (4, 2, "completed", 5, None, NEW),  # counts: 2 is kept
    (5, 3, "completed", 10, None, OLD),
    (6, 3, "completed", 0, None, NEW),  # total gt 0 leaves it out
    (7, 4, "completed", 10, None, OLD),
    (8, 4, None, 5, None, NEW),  # a NULL status is "not trash": counts, 4 is kept
    (9, 5, "completed", 10, None, OLD),
    (10, 5, "completed", 5, NEW, NEW),  # refunded_at: null leaves it out
    (11, 6, "failed", 5, None, OLD),  # 6 has no counted order: a NULL clock
]
SHOPPERS = [1, 2, 3, 4, 5, 6]


def create(engine: sa.Engine) -> None:
    md = sa.MetaData()
    customers = sa.Table("customers", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))
    meta = sa.Table(
        "usermeta",
        md,
        sa.Column("umeta_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, index=True),
        sa.Column("meta_key", sa.String(255)),
        sa.Column("meta_value", sa.Text),
    )
    shoppers = sa.Table("shoppers", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))
    orders = sa.Table(
        "shop_orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("shopper_id", sa.Integer, index=True),
        sa.Column("status", sa.String(20)),
        sa.Column("total", sa.Integer),
        sa.Column("refunded_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(customers.insert(), [{"id": i} for i in CUSTOMERS])
        conn.execute(
            meta.insert(), [{"umeta_id": i, "user_id": u, "meta_key": k, "meta_value": v} for i, u, k, v in META]
        )
        conn.execute(shoppers.insert(), [{"id": i} for i in SHOPPERS])
        conn.execute(
            orders.insert(),
            [
                {"id": i, "shopper_id": s, "status": st, "total": t, "refunded_at": r, "created_at": c}
                for i, s, st, t, r, c in ORDERS
            ],
        )


def write(tmp_path: Path, text: str = PACK) -> Path:
    path = tmp_path / "tolerant.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def states(engine: sa.Engine, dataset: str) -> set[str]:
    rs = store.record_states
    with engine.connect() as conn:
        return set(conn.execute(sa.select(rs.c.record_key).where(rs.c.dataset == dataset)).scalars())


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


@pytest.mark.parametrize(
    ("invalid_rows", "moved", "anomalies"),
    [
        # ignore: 1 and 4 by their readable 2020 row, 5 (its bad row is another key's);
        # 2 (only an unreadable row) and 6 (none) read NULL; rows 2, 3 and 6 are ignored.
        ("ignore", {"1", "4", "5"}, {"null": 2, "ignored_rows": 3}),
        # strict (today's default): one unreadable row makes 1, 2 and 4 invalid.
        ("strict", {"5"}, {"null": 1, "invalid": 3}),
    ],
)
def test_unreadable_related_rows(
    migrated: sa.Engine, tmp_path: Path, invalid_rows: str, moved: set[str], anomalies: dict[str, int]
) -> None:
    """``invalid_rows: ignore`` takes the max of the readable rows and counts the others."""
    create(migrated)
    loaded = load_file(write(tmp_path, PACK.replace("invalid_rows: ignore", f"invalid_rows: {invalid_rows}")))
    summary = execute.plan(migrated, loaded, AS_OF)
    walked = execute.plan(migrated, loaded, AS_OF, on_batch=lambda batch: None)
    assert summary.transitions["customers"] == {"active->inactive": len(moved)}
    assert walked.transitions["customers"] == summary.transitions["customers"]
    assert nonzero(summary.anomalies["customers"]) == anomalies
    assert nonzero(walked.anomalies["customers"]) == anomalies
    result = execute.run(migrated, loaded, AS_OF, secret=SECRET)
    assert result.status == "succeeded"
    assert result.counts["customers"] == {"active->inactive": len(moved)}
    assert states(migrated, "customers") == moved


def test_aggregate_where_operators(migrated: sa.Engine, tmp_path: Path) -> None:
    """``not`` with a list (NULL passes), a comparison and a null test pick the related rows."""
    create(migrated)
    loaded = load_file(write(tmp_path))
    summary = execute.plan(migrated, loaded, AS_OF)
    moved = {"1", "3", "5"}  # their 2024 order is left out; 2 and 4 have one that counts
    assert summary.transitions["shoppers"] == {"active->inactive": len(moved)}
    assert nonzero(summary.anomalies["shoppers"]) == {"null": 1}  # 6: no counted order
    result = execute.run(migrated, loaded, AS_OF, secret=SECRET)
    assert result.counts["shoppers"] == {"active->inactive": len(moved)}
    assert states(migrated, "shoppers") == moved


def test_explain_counts_the_ignored_rows(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """explain shows how many related rows were ignored and why, never their values."""
    create(migrated)
    path = write(tmp_path)
    one = explain(path, db_url, "customers", "1", "2024-06-01")
    assert one.anomaly is None
    (clock,) = one.clocks
    assert clock["ignored_rows"] == 1
    assert (
        clock["detail"]
        == "1 of 2 related rows invalid, ignored (invalid_rows: ignore): not digits without a leading zero"
    )
    assert clock["local_date"] == dt.date(2020, 1, 1)
    assert [s["transition"] for s in one.due_now] == ["active->inactive"]
    two = explain(path, db_url, "customers", "2", "2024-06-01")
    assert two.anomaly == "null" and two.clocks[0]["ignored_rows"] == 1
    out = CliRunner().invoke(
        main, ["explain", "--rules", str(path), "--db", db_url, "--dataset", "customers", "--key", "4"]
    )
    assert out.exit_code == 0, out.output
    assert "ignored related rows: 1" in out.output
    assert "a:1:{}" not in out.output and " 1700000000" not in out.output
    out = CliRunner().invoke(main, ["plan", "--rules", str(path), "--db", db_url, "--as-of", "2024-06-01"])
    assert out.exit_code == 0, out.output
    assert "customers: 3 unreadable related rows left out of aggregate clocks (invalid_rows: ignore)" in out.output


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "invalid_rows: ignore",
            "invalid_rows: skip",
            "20: unknown value 'skip' for datasets.customers.keep[0].clock.invalid_rows; valid: strict, ignore",
        ),
        (
            "refunded_at: null\n",
            "refunded_at: null\n            related: {table: x, on: y}\n",
            "datasets.shoppers.keep[0].clock.where.related: an aggregate clock's where takes column conditions only",
        ),
        (
            "total: {gt: 0}",
            "total: {like: 0}",
            "36: datasets.shoppers.keep[0].clock.where.total.like: unknown operator 'like'",
        ),
    ],
)
def test_grammar_errors_name_file_and_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    """A bad aggregate ``where`` or ``invalid_rows`` is refused at load time, located by file and line."""
    assert old in PACK
    path = write(tmp_path, PACK.replace(old, new))
    with pytest.raises(PackError) as err:
        load_file(path)
    assert str(err.value).startswith(f"{path}:"), str(err.value)
    assert message in str(err.value)


def test_invalid_rows_needs_an_aggregate(tmp_path: Path) -> None:
    text = PACK.replace(
        "  shoppers:",
        "  plain:\n    table: plain\n    key: id\n    basis: b\n    keep:\n"
        "      - clock: {column: at, invalid_rows: ignore}\n        period: P1Y\n"
        "    lifecycle:\n      - to: inactive\n  shoppers:",
    )
    with pytest.raises(PackError, match="invalid_rows only apply to aggregate clocks"):
        load_file(write(tmp_path, text))


def test_old_packs_keep_their_digest(tmp_path: Path) -> None:
    """A pack without ``invalid_rows`` dumps as before (the key is left out while unset)."""
    loaded = load_file(write(tmp_path, PACK.replace("          invalid_rows: ignore\n", "")))
    clock: dict[str, Any] = loaded.pack.model_dump(by_alias=True)["datasets"]["customers"]["keep"][0]["clock"]
    assert "invalid_rows" not in clock
    assert clock["where"] == {"meta_key": "wc_last_active"}


def test_check_db_checks_aggregate_where_values(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A value that does not fit its column is an error naming table and column."""
    create(engine)
    result = CliRunner().invoke(
        main,
        ["check", "--rules", str(write(tmp_path, PACK.replace("total: {gt: 0}", "total: {gt: ten}"))), "--db", db_url],
    )
    assert result.exit_code == 2, result.output
    assert "error: shop_orders.total: aggregate where: is INTEGER; the value 'ten' does not fit" in result.output
