"""A plan's catalog read lives as long as its transaction, not as long as the process.

The schema check of ``plan`` keeps its bulk catalog read for the planners
of the same transaction (``rowfilter.read_catalog``, PostgreSQL). The
console and the scheduler are long-lived processes that plan again and
again: once the transaction is over, neither the read nor the connection
may stay reachable. SQLite and MariaDB keep no read (``bulk_reflection``):
there the tests assert that nothing is kept at all, and that no
connection outlives its plan either.
"""

from __future__ import annotations

import datetime as dt
import gc
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from scaffold import utc_pack

from retention.engine import execute, rowfilter
from retention.engine.rowfilter import CatalogRead, bulk_reflection, kept_read
from retention.policy import LoadedPack, validate_pack

PACK = utc_pack(
    "lifetime",
    """  users:
    table: users
    key: id
    subject_key: id
    basis: test
    keep:
      - clock: {column: created_at, type: timestamp}
        period: P1Y
    lifecycle:
      - {to: purged, action: delete}
  orders:
    table: orders
    key: id
    basis: test
    keep:
      - clock: {column: placed_at, type: timestamp}
        period: P1Y
    lifecycle:
      - {to: purged, action: delete}
""",
)

AS_OF = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)


def _loaded() -> LoadedPack:
    return validate_pack(yaml.safe_load(PACK), Path("<test>"), "test pack")


def _schema(engine: sa.Engine) -> None:
    md = sa.MetaData()
    sa.Table(
        "users",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime, index=True),
    )
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), index=True),
        sa.Column("placed_at", sa.DateTime, index=True),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (id, created_at) VALUES (1, :t)"), {"t": dt.datetime(2020, 1, 1)})
        placed = {"t": dt.datetime(2020, 2, 1)}
        conn.execute(sa.text("INSERT INTO orders (id, user_id, placed_at) VALUES (1, 1, :t)"), placed)


def _live_reads() -> int:
    """How many catalog reads the process still holds, after a collection."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is CatalogRead)


def _live_connections(engine: sa.Engine) -> int:
    """How many connections of ``engine`` the process still holds (a worker's other threads have their own)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is sa.Connection and o.engine is engine)


def test_a_plans_catalog_read_and_connection_are_freed_when_its_transaction_ends(migrated: sa.Engine) -> None:
    """Kept for the planners while the transaction lasts (bulk dialects), gone with it, connection and all."""
    _schema(migrated)
    loaded = _loaded()
    conn = migrated.connect()
    try:
        planners, _ = execute.planners_at(conn, loaded, AS_OF)
        assert set(planners) == {"users", "orders"}
        read = kept_read(conn, None, {"users", "orders"})
        if bulk_reflection(migrated.dialect):
            assert read is not None  # the hand-off this test is about did happen
            assert len(rowfilter._CATALOG_READS) >= 1
        else:
            assert read is None
        del read, planners
    finally:
        conn.close()
    gone = weakref.ref(conn)
    del conn
    gc.collect()
    assert gone() is None, "the closed connection is still reachable"
    assert len(rowfilter._CATALOG_READS) == 0
    assert _live_reads() == 0


def test_plans_in_one_long_lived_process_keep_no_more_connections_or_reads(migrated: sa.Engine) -> None:
    """The console's and the scheduler's shape: plan after plan, the live connections and reads do not grow."""
    _schema(migrated)
    loaded = _loaded()
    execute.plan(migrated, loaded, AS_OF)  # the first plan's one-off objects (compiled caches...) are not counted
    connections, reads = _live_connections(migrated), _live_reads()
    for _ in range(5):
        planned = execute.plan(migrated, loaded, AS_OF)
        assert planned.transitions == {"users": {"active->purged": 1}, "orders": {"active->purged": 1}}
    assert (_live_connections(migrated), _live_reads()) == (connections, reads)
    assert reads == 0


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_the_read_is_dropped_however_the_transaction_ends(migrated: sa.Engine, end: str) -> None:
    """Commit, rollback or a close that rolls back: each frees the kept read with the transaction."""
    _schema(migrated)
    loaded = _loaded()
    conn = migrated.connect()
    try:
        execute.planners_at(conn, loaded, AS_OF)
        kept = len(rowfilter._CATALOG_READS)
        assert kept == (1 if bulk_reflection(migrated.dialect) else 0)
        getattr(conn, end)()
        gc.collect()
        assert len(rowfilter._CATALOG_READS) == 0
        # Nor is it handed to the connection's next transaction: a change of structure may have come in between.
        assert kept_read(conn, None, {"users", "orders"}) is None
    finally:
        conn.close()
