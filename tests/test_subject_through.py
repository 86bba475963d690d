"""``subject:`` through joins: orders carry the lookup table's customer id, the person is its user id.

Holds, erasure requests and the ledger's subject pseudonyms all use the
person's id, on every database. The expected sets are read by hand from
the rows below.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.errors import PackError
from retention.ledger import items as ledger_items
from retention.policy import load_file
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"subject-through-key"
PACK = """\
pack: through
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  orders:
    table: orders
    key: order_id
    subject:
      column: customer_id
      through:
        - {table: customer_lookup, key: customer_id, column: user_id}
    basis: policy
    keep:
      - clock: {column: created, type: date}
        period: P1Y
    on_erasure: purged
    lifecycle:
      - to: purged
        action: delete
"""
OLD, RECENT = dt.date(2020, 3, 1), dt.date(2024, 5, 1)
LOOKUP = {898: 4, 899: 5, 900: None}  # customer id -> WordPress user id (900: a guest)
ORDERS = {2707: (898, OLD), 2708: (899, OLD), 2709: (898, OLD), 2710: (900, OLD), 2711: (898, RECENT)}


def create(engine: sa.Engine) -> None:
    md = sa.MetaData()
    lookup = sa.Table(
        "customer_lookup",
        md,
        sa.Column("customer_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, unique=True),
    )
    orders = sa.Table(
        "orders",
        md,
        sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, index=True),
        sa.Column("created", sa.Date, index=True),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(lookup.insert(), [{"customer_id": c, "user_id": u} for c, u in LOOKUP.items()])
        conn.execute(orders.insert(), [{"order_id": o, "customer_id": c, "created": d} for o, (c, d) in ORDERS.items()])


def remaining(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT order_id FROM orders")).scalars())


def test_holds_erasure_and_ledger_use_the_persons_id(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A hold on user 4 holds orders of customer 898; erasure of user 4 reaches them; lookup finds them."""
    create(migrated)
    path = tmp_path / "through.yaml"
    path.write_text(PACK, encoding="utf-8")
    loaded = load_file(path)
    person = {o: LOOKUP[c] for o, (c, _) in ORDERS.items()}
    assert [o for o, p in person.items() if p == 4] == [2707, 2709, 2711]

    with migrated.begin() as conn:
        hold = subjects.place_hold(
            conn, scope="subject", reason="case", placed_by="t", secret=SECRET, subject_key="4", pack=loaded.pack
        )
        # The lookup's own id is not a person: a hold on it holds nothing.
        subjects.place_hold(
            conn, scope="subject", reason="case", placed_by="t", secret=SECRET, subject_key="898", pack=loaded.pack
        )
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    due = {o for o, (_, d) in ORDERS.items() if d < dt.date(2023, 6, 1)}
    moving = sorted(o for o in due if person[o] != 4)
    assert moving == [2708, 2710]
    summary = execute.plan(migrated, loaded, as_of)
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert summary.transitions["orders"] == result.counts["orders"] == {"active->purged": len(moving)}
    assert remaining(migrated) == set(ORDERS) - set(moving)

    with migrated.begin() as conn:
        subjects.release_hold(conn, hold, released_by="t", reason="closed", secret=SECRET)
        subjects.add_request(conn, subject_key="4", received=dt.date(2024, 6, 2), pack=loaded.pack)
    later = dt.datetime(2024, 6, 3, tzinfo=UTC)
    summary = execute.plan(migrated, loaded, later)
    result = execute.run(migrated, loaded, later, secret=SECRET)
    assert summary.transitions["orders"] == result.counts["orders"] == {"active->purged": 3}  # 2711 by erasure
    assert remaining(migrated) == set()

    with migrated.connect() as conn:
        by_subject = ledger_items.lookup(conn, SECRET, dataset=None, record_key=None, subject_key="4")
        by_record = [
            ledger_items.lookup(conn, SECRET, dataset="orders", record_key=str(o), subject_key=None)
            for o in (2707, 2709, 2711)
        ]
        by_lookup_id = ledger_items.lookup(conn, SECRET, dataset=None, record_key=None, subject_key="898")
    items = {(r["seq"], r["item"]) for r in by_subject if r.get("dataset") == "orders"}
    assert items == {(r["seq"], r["item"]) for rows in by_record for r in rows}
    assert len(items) == 3
    assert not [r for r in by_lookup_id if r.get("dataset") == "orders"]


def test_check_db_names_a_missing_join(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A missing lookup column or a key that is not unique is an error naming table.column."""
    create(engine)
    path = tmp_path / "through.yaml"
    path.write_text(PACK.replace("column: user_id}", "column: wp_user}"), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--rules", str(path), "--db", db_url])
    assert result.exit_code == 2
    assert "error: customer_lookup.wp_user: no such column (subject through column)" in result.output
    path.write_text(PACK.replace("key: customer_id, column: user_id", "key: user_id, column: customer_id"))
    result = CliRunner().invoke(main, ["check", "--rules", str(path), "--db", db_url])
    assert result.exit_code == 0, result.output  # user_id is unique too
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE guests (id INTEGER PRIMARY KEY, email VARCHAR(100), ref INTEGER)"))
    path.write_text(
        PACK.replace("table: customer_lookup, key: customer_id, column: user_id", "table: guests, key: ref, column: id")
    )
    result = CliRunner().invoke(main, ["check", "--rules", str(path), "--db", db_url])
    assert result.exit_code == 2
    assert "error: guests.ref: subject through key is not unique" in result.output


def test_subject_and_subject_key_exclude_each_other(tmp_path: Path) -> None:
    """One way to name the person: a column or a chain of joins, located by line."""
    path = tmp_path / "through.yaml"
    path.write_text(PACK.replace("    subject:\n", "    subject_key: customer_id\n    subject:\n"), encoding="utf-8")
    with pytest.raises(PackError) as err:
        load_file(path)
    assert str(err.value) == (
        f"{path}:11: datasets.orders.subject: give 'subject_key' (a column) or 'subject' (through joins), not both"
    )
