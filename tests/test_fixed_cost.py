"""The fixed cost of a plan or run (issue 20): reading a pack's tables ahead, together, changes no answer.

On PostgreSQL the schema check and the planners read the catalog for all
of a pack's tables at once (``_Inspector.read_ahead``,
``rowfilter.reflect_ahead``); SQLite and MariaDB read a table at a time as
before. Each test runs on all three databases: the answers must be those
of reading one table at a time, everywhere; the number of catalog queries
is asserted where reading ahead applies. The CPU saved is measured by
bench/fixed_cost.py, not here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from scaffold import utc_pack

from retention.engine import execute, order, reflected, rowfilter, schema
from retention.engine.rowfilter import bulk_reflection, one_reflection, pack_tables, reflect_ahead, reflect_table
from retention.engine.schema import _Inspector, check_schema
from retention.errors import SchemaError
from retention.policy import LoadedPack, validate_pack

PACK = utc_pack(
    "fixed-cost",
    """  users:
    table: users
    key: id
    subject_key: id
    basis: test
    where:
      related: {table: user_meta, "on": user_id, where: {k: role, v: admin}, exists: false}
    keep:
      - clock: {column: created_at, type: timestamp}
        period: P1Y
    lifecycle:
      - {to: purged, action: delete}
  orders:
    table: orders
    key: id
    subject:
      column: user_id
      through: [{table: lookups, key: user_id, column: code}]
    basis: test
    keep:
      - clock: {aggregate: max, table: events, "on": order_id, column: at, type: timestamp}
        period: P1Y
    lifecycle:
      - {to: purged, action: delete}
""",
)

TABLES = ["events", "lookups", "orders", "user_meta", "users"]


def _pack(extra: dict[str, Any] | None = None) -> LoadedPack:
    data = yaml.safe_load(PACK)
    data["datasets"].update(extra or {})
    return validate_pack(data, Path("<test>"), "test pack")


def _schema(engine: sa.Engine) -> None:
    """Five tables with what reflection reads (keys, a foreign key, indexes, unique and check constraints), a view."""
    md = sa.MetaData()
    sa.Table(
        "users",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100), unique=True),
        sa.Column("created_at", sa.DateTime, index=True, comment="when the account was opened"),
    )
    sa.Table(
        "user_meta",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, index=True),
        sa.Column("k", sa.String(50)),
        sa.Column("v", sa.String(50)),
    )
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
        sa.Column("total", sa.Numeric(10, 2)),
        sa.CheckConstraint("total >= 0", name="orders_total_positive"),
    )
    # Not unique on user_id, and events.order_id has no index: the check warns/errs, read ahead or not.
    sa.Table("lookups", md, sa.Column("code", sa.Integer, primary_key=True), sa.Column("user_id", sa.Integer))
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer),
        sa.Column("at", sa.DateTime),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW users_view AS SELECT id, email FROM users"))


@contextmanager
def _statements(conn: sa.Connection) -> Iterator[list[str]]:
    """The SQL statements ``conn`` sends to the database within the block."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    sa.event.listen(conn, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(conn, "before_cursor_execute", record)


def test_pack_tables_names_every_table_the_pack_reads() -> None:
    """Datasets' tables, an aggregate clock's, a related condition's and a subject join's, once each."""
    assert pack_tables(_pack().pack.datasets.values()) == {None: TABLES}


def test_tables_reflected_ahead_are_those_reflected_one_at_a_time(engine: sa.Engine) -> None:
    """Same structure (fingerprint) and, through ``reflected.reuse``, the very same Table objects."""
    _schema(engine)
    with engine.connect() as conn:
        alone = {name: reflected.fingerprint(sa.Table(name, sa.MetaData(), autoload_with=conn)) for name in TABLES}
        with one_reflection(conn):
            reflect_ahead(conn, {None: [*TABLES, "users_view", "nothing_here"]})
            ahead = {name: reflect_table(conn, name) for name in TABLES}
            # A view is no table to reading ahead, and a missing table none at all: each is read (or refused) alone.
            assert list(reflect_table(conn, "users_view").c.keys()) == ["id", "email"]
            with pytest.raises(SchemaError, match="'nothing_here' does not exist"):
                reflect_table(conn, "nothing_here")
        assert {name: reflected.fingerprint(table) for name, table in ahead.items()} == alone
        assert ahead["orders"].c.user_id.references(ahead["users"].c.id)
        assert [c.name for c in ahead["users"].primary_key] == ["id"]
        again = {name: reflect_table(conn, name) for name in TABLES}  # one at a time, outside the block
        assert all(again[name] is ahead[name] for name in TABLES)


def test_reflecting_ahead_takes_no_more_queries_for_five_tables_than_for_one(engine: sa.Engine) -> None:
    """Where the database reads in bulk; elsewhere nothing is read ahead and each table costs its own queries."""
    _schema(engine)

    def queries(names: list[str]) -> int:
        with engine.connect() as conn, one_reflection(conn):
            conn.execute(sa.text("SELECT 1"))  # the connection's own first statements are not counted
            with _statements(conn) as sent:
                reflect_ahead(conn, {None: names})
                for name in names:
                    reflect_table(conn, name)
            return len(sent)

    one, five = queries(["events"]), queries(TABLES)
    if bulk_reflection(engine.dialect):
        assert five <= one
    else:
        assert five > one


def _answers(inspect: _Inspector, name: str) -> list[str]:
    """Everything the schema check reads of a table, as text (reflected types compare by their repr)."""
    columns = inspect.columns(name, None)
    if columns is None:
        return ["missing"]
    return [
        repr(columns),
        repr(inspect.primary_key(name, None)),
        repr(inspect.indexes(name, None)),
        repr(inspect.unique_constraints(name, None)),
        repr(inspect.foreign_keys(name, None)),
        repr(inspect.leading_index_columns(name, None)),
    ]


def test_the_check_reading_ahead_answers_as_the_inspector_does_alone(engine: sa.Engine) -> None:
    """Columns, keys, indexes, uniques and foreign keys of each table: equal, and read ahead where that applies."""
    _schema(engine)
    names = [*TABLES, "users_view", "nothing_here"]
    with engine.connect() as conn:
        plain = _Inspector(conn)
        alone = {name: _answers(plain, name) for name in names}
        ahead = _Inspector(conn)
        ahead.read_ahead({None: names})
        with _statements(conn) as sent:
            together = {name: _answers(ahead, name) for name in TABLES}
        assert len(sent) == 0 if bulk_reflection(engine.dialect) else len(sent) > 0
        together.update({name: _answers(ahead, name) for name in ["users_view", "nothing_here"]})
    assert together == alone
    assert alone["nothing_here"] == ["missing"]
    assert "'referred_table': 'users'" in alone["orders"][4]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "viewed": {
                "table": "users_view",
                "key": "id",
                "basis": "test",
                "keep": [{"clock": {"column": "email", "type": "timestamp"}, "period": "P1Y"}],
                "lifecycle": [{"to": "purged", "action": "delete"}],
            },
            "gone": {
                "table": "nothing_here",
                "key": "id",
                "basis": "test",
                "keep": [{"clock": {"column": "at", "type": "timestamp"}, "period": "P1Y"}],
                "lifecycle": [{"to": "purged", "action": "delete"}],
            },
        },
    ],
    ids=["tables", "with-a-view-and-a-missing-table"],
)
@pytest.mark.parametrize("for_reflection", [False, True], ids=["check", "plan"])
def test_check_schema_finds_the_same_with_and_without_reading_ahead(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], for_reflection: bool
) -> None:
    """Every finding, in order, equal to the check's one table at a time (reading ahead switched off).

    Whether the check reads for itself (``check``) or also keeps its read for reflection (``plan``).
    """
    _schema(engine)
    loaded = _pack(extra)
    with engine.connect() as conn:
        ahead = [str(f) for f in check_schema(conn, loaded.pack, for_reflection=for_reflection)]
    with monkeypatch.context() as patch:
        patch.setattr(_Inspector, "read_ahead", lambda self, tables, **kw: None)
        with engine.connect() as conn:
            alone = [str(f) for f in check_schema(conn, loaded.pack)]
    assert ahead == alone
    expected = (
        ["nothing_here: table does not exist (dataset gone)"]
        if extra
        else [
            "events.order_id: no index starts with order_id",
            "lookups.user_id: subject through key is not unique",
        ]
    )
    for line in expected:
        assert any(line.split(" (dataset ")[0] in f for f in ahead), (line, ahead)


def test_dataset_order_reads_foreign_keys_ahead_with_the_same_edges(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order's foreign-key edges, read for all datasets at once (PostgreSQL), equal those read one by one."""
    _schema(engine)
    pack = _pack().pack
    with engine.connect() as conn:
        with _statements(conn) as sent:
            ahead = order.order_edges(conn, pack)
        with monkeypatch.context() as patch:
            patch.setattr(order, "_foreign_keys_ahead", lambda *args: {})
            with _statements(conn) as sent_alone:
                alone = order.order_edges(conn, pack)
    assert ahead == alone
    assert order.OrderEdge("orders", "users", "orders references users, whose rows users deletes") in ahead
    if bulk_reflection(engine.dialect):
        assert len(sent) < len(sent_alone)


def test_the_check_orders_datasets_with_its_own_inspector(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset order's foreign keys come from what the schema check read (MariaDB, SQLite); same findings.

    PostgreSQL reads them in bulk either way (no more statements).
    """
    _schema(engine)
    pack = _pack().pack

    def check() -> tuple[int, list[str]]:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            with _statements(conn) as sent:
                findings = [str(f) for f in check_schema(conn, pack)]
            return len(sent), findings

    check()  # the engine's first look at the catalog (PostgreSQL: its types) is not counted
    shared = check()
    with monkeypatch.context() as patch:
        own = order.dataset_order
        patch.setattr(schema, "dataset_order", lambda conn, pack, inspector=None: own(conn, pack))
        alone = check()
    assert shared[1] == alone[1]
    if bulk_reflection(engine.dialect):
        assert shared[0] <= alone[0]
    else:
        assert shared[0] < alone[0]


def test_the_planners_reflect_what_the_check_read_in_the_same_transaction(engine: sa.Engine) -> None:
    """Plan's check keeps its catalog read; the planners' tables from it equal those reflected alone, at no query.

    PostgreSQL only reads ahead; elsewhere nothing is kept and reflection reads as before.
    """
    _schema(engine)
    pack = _pack().pack
    with engine.connect() as conn:
        alone = {name: reflected.fingerprint(sa.Table(name, sa.MetaData(), autoload_with=conn)) for name in TABLES}
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        check_schema(conn, pack, for_reflection=True)
        with one_reflection(conn), _statements(conn) as sent:
            reflect_ahead(conn, pack_tables(pack.datasets.values()))
            shared = {name: reflect_table(conn, name) for name in TABLES}
            edges = order.order_edges(conn, pack)
    assert {name: reflected.fingerprint(table) for name, table in shared.items()} == alone
    assert shared["orders"].c.user_id.references(shared["users"].c.id)
    if engine.dialect.supports_comments:
        assert shared["users"].c.created_at.comment == "when the account was opened"
    assert {c.name for c in shared["orders"].constraints if isinstance(c, sa.CheckConstraint)} == {
        "orders_total_positive"
    }
    with engine.connect() as conn:
        assert edges == order.order_edges(conn, pack)
    catalog = [s for s in sent if "pg_catalog" in s]
    if bulk_reflection(engine.dialect):
        assert catalog == [], catalog
    else:
        assert len(sent) > 0


def test_a_catalog_read_of_an_ended_transaction_is_not_used(engine: sa.Engine) -> None:
    """After the check's transaction ends, a change of structure is seen: the planners read the catalog again."""
    _schema(engine)
    pack = _pack().pack
    with engine.connect() as conn:
        check_schema(conn, pack, for_reflection=True)
        conn.rollback()
        conn.execute(sa.text("ALTER TABLE events ADD COLUMN added_later INTEGER"))
        conn.commit()
        with one_reflection(conn):
            reflect_ahead(conn, pack_tables(pack.datasets.values()))
            events = reflect_table(conn, "events")
        assert "added_later" in events.c
        edges = order.order_edges(conn, pack)
    with engine.connect() as conn:
        assert edges == order.order_edges(conn, pack)


def test_a_plan_from_the_checks_catalog_read_counts_what_a_plan_reading_its_own_does(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transitions, anomalies and holds of ``plan``: equal with the hand-off and without it (each table read again)."""
    import datetime as dt

    from retention.engine import execute, rowfilter

    _schema(migrated)
    old, new = dt.datetime(2020, 1, 1), dt.datetime(2024, 6, 1)
    with migrated.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO users (id, email, created_at) VALUES (1, 'a', :o), (2, 'b', :n), (3, 'c', NULL)"),
            {"o": old, "n": new},
        )
        conn.execute(sa.text("INSERT INTO user_meta (id, user_id, k, v) VALUES (1, 1, 'role', 'user')"))
        conn.execute(sa.text("INSERT INTO lookups (code, user_id) VALUES (10, 1), (20, 2)"))
        conn.execute(sa.text("INSERT INTO orders (id, user_id, total) VALUES (5, 1, 3), (6, 2, 4)"))
        conn.execute(
            sa.text("INSERT INTO events (id, order_id, at) VALUES (1, 5, :o), (2, 6, :n)"), {"o": old, "n": new}
        )
    data = yaml.safe_load(PACK)
    del data["datasets"]["orders"]["subject"]  # the schema's lookups are not unique on user_id: an error
    loaded = validate_pack(data, Path("<test>"), "test pack")
    as_of = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)

    def summary() -> tuple[Any, ...]:
        planned = execute.plan(migrated, loaded, as_of)
        return planned.transitions, planned.anomalies, planned.held_back

    shared = summary()
    with monkeypatch.context() as patch:
        patch.setattr(rowfilter, "kept_read", lambda *args: None)
        patch.setattr(order, "kept_read", lambda *args: None)
        alone = summary()
    assert shared == alone
    assert shared[0] == {"users": {"active->purged": 1}, "orders": {"active->purged": 1}}


def test_plan_shards_reflects_from_the_checks_catalog_read(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plan --shards`` plans as ``plan`` does (execute.planners_at): same rows, fewer catalog queries (PostgreSQL)."""
    _schema(migrated)
    with migrated.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO users (id, email, created_at) VALUES (1, 'a', :o), (2, 'b', :o)"),
            {"o": dt.datetime(2020, 1, 1)},
        )
    data = yaml.safe_load(PACK)
    del data["datasets"]["orders"]  # one dataset is enough to split
    loaded = validate_pack(data, Path("<test>"), "test pack")
    as_of = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)

    def shards() -> tuple[list[dict[str, Any]], int]:
        sent: list[str] = []

        def record(*args: Any) -> None:
            sent.append(args[2])

        sa.event.listen(migrated, "before_cursor_execute", record)
        try:
            rows = execute.plan_shards(migrated, loaded, as_of, 2)
        finally:
            sa.event.remove(migrated, "before_cursor_execute", record)
        return rows, sum(1 for s in sent if "pg_catalog" in s)

    shards()  # the engine's first look at the catalog (its types) is not counted
    shared = shards()
    with monkeypatch.context() as patch:
        patch.setattr(rowfilter, "kept_read", lambda *args: None)
        patch.setattr(order, "kept_read", lambda *args: None)
        alone = shards()
    assert shared[0] == alone[0]
    assert sum(row["transitions"] for row in shared[0]) == 2
    if bulk_reflection(migrated.dialect):
        assert shared[1] < alone[1], (shared[1], alone[1])
    else:
        assert shared[1] == alone[1] == 0


def test_tables_built_from_a_catalog_read_are_those_metadata_reflect_builds(engine: sa.Engine) -> None:
    """Pins the SQLAlchemy behaviour ``rowfilter._reflect_from`` relies on: an upgrade that changes it fails here.

    ``_reflect_from`` builds tables from ``Inspector._get_reflection_info``
    through ``Table``'s private ``_reflect_info``, as ``MetaData.reflect``
    does inside: the tables (and the foreign keys' targets) must be the
    ones ``MetaData.reflect`` builds, column, type, key, constraint and
    index alike. On every database: the read itself is SQLAlchemy's
    everywhere, only PostgreSQL's is one query per kind.
    """
    _schema(engine)
    with engine.connect() as conn:
        by_sqlalchemy = sa.MetaData()
        by_sqlalchemy.reflect(bind=conn, only=["orders", "events"])
        conn.rollback()
        rowfilter.read_catalog(conn, sa.inspect(conn), None, ["orders", "events", "users_view", "nothing_here"])
        read = rowfilter.kept_read(conn, None, {"orders", "events"})
        assert read is not None
        built = sa.MetaData()
        rowfilter._reflect_from(conn, built, read, {"orders", "events", "users_view", "nothing_here"})
    # users: the target of orders' foreign key, not in the read: read by the inspector, as MetaData.reflect does.
    assert sorted(built.tables) == sorted(by_sqlalchemy.tables) == ["events", "orders", "users"]
    for name, table in built.tables.items():
        assert reflected.fingerprint(table) == reflected.fingerprint(by_sqlalchemy.tables[name]), name
    orders = built.tables["orders"]
    (fk,) = orders.foreign_keys
    assert (fk.parent.name, fk.target_fullname, fk.ondelete) == ("user_id", "users.id", "CASCADE")
    assert fk.column.table is built.tables["users"]
    assert [c.name for c in orders.primary_key] == ["id"]
    assert {i.name for i in orders.indexes} == {"ix_orders_user_id"}
    assert "orders_total_positive" in {c.name for c in orders.constraints if isinstance(c, sa.CheckConstraint)}
    assert str(orders.c.total.type).startswith(("NUMERIC(10, 2)", "DECIMAL(10, 2)")), orders.c.total.type
