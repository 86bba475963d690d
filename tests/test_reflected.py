"""Reflected source tables are reused while unchanged, so a later plan or run compiles no statement again.

SQLAlchemy's compiled cache keys statements by the identity of their Table
objects: with a fresh reflection per run, every run compiled every
statement again (most of a short run's client time, and of the test
suite's). retention.engine.reflected hands back the earlier Table when the
reflection is the same, and a new one when anything in it changed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from test_engine import build, loaded_pack
from test_fixed_cost import _schema

from retention.engine import execute, reflected
from retention.engine.clock_sql import reflect_table
from retention.engine.rowfilter import one_reflection

UTC = dt.UTC


def _misses(engine: sa.Engine) -> tuple[list[str], Any]:
    """The SQL of every statement executed on ``engine`` that was compiled anew, and the listener to remove."""
    compiled: list[str] = []

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if context is not None and getattr(context, "cache_hit", None) is conn.dialect.CACHE_MISS:
            compiled.append(statement)

    sa.event.listen(engine, "after_cursor_execute", after)
    return compiled, after


def test_an_unchanged_table_is_the_same_object_a_changed_one_is_not(migrated: sa.Engine) -> None:
    with migrated.begin() as conn:
        conn.execute(sa.text("CREATE TABLE reflected_t (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
    with migrated.connect() as conn:
        first = reflect_table(conn, "reflected_t")
        assert reflect_table(conn, "reflected_t") is first
    with migrated.begin() as conn:
        conn.execute(sa.text("DROP TABLE reflected_t"))
        conn.execute(sa.text("CREATE TABLE reflected_t (id INTEGER PRIMARY KEY, name VARCHAR(30))"))
    with migrated.connect() as conn:
        wider = reflect_table(conn, "reflected_t")
        assert wider is not first
        assert wider.c.name.type.length == 30  # type: ignore[attr-defined]
    with migrated.begin() as conn:
        conn.execute(sa.text("ALTER TABLE reflected_t ADD COLUMN extra INTEGER"))
    with migrated.connect() as conn:
        added = reflect_table(conn, "reflected_t")
        assert added is not wider
        assert [c.name for c in added.columns] == ["id", "name", "extra"]


def test_one_reflection_reads_each_table_once_and_a_later_block_sees_a_changed_table(migrated: sa.Engine) -> None:
    """In one block a table (here also the target of another's foreign key) is read once; the next block reads anew.

    The planners of one build share a block (build_planners); a scheduler
    runs many builds on the pooled connections of one process, so what one
    block read must not outlive it: a column added between two builds is in
    the second build's table.
    """
    with migrated.begin() as conn:
        conn.execute(sa.text("CREATE TABLE reflected_parent (id INTEGER PRIMARY KEY)"))
        conn.execute(
            sa.text(
                "CREATE TABLE reflected_child (id INTEGER PRIMARY KEY, "
                "parent_id INTEGER REFERENCES reflected_parent (id))"
            )
        )
    read: list[str] = []

    def column_reflect(inspector: Any, table: sa.Table, info: Any) -> None:
        read.append(f"{table.name}.{info['name']}")

    sa.event.listen(sa.Table, "column_reflect", column_reflect)
    try:
        with migrated.connect() as conn, one_reflection(conn):
            child = reflect_table(conn, "reflected_child")
            parent = reflect_table(conn, "reflected_parent")  # reflected with the child, as its key's target
            assert reflect_table(conn, "reflected_child") is child
            assert reflect_table(conn, "reflected_parent") is parent
        assert sorted(read) == ["reflected_child.id", "reflected_child.parent_id", "reflected_parent.id"]
        with migrated.begin() as conn:
            conn.execute(sa.text("ALTER TABLE reflected_parent ADD COLUMN extra INTEGER"))
        with migrated.connect() as conn, one_reflection(conn):
            again = reflect_table(conn, "reflected_parent")
    finally:
        sa.event.remove(sa.Table, "column_reflect", column_reflect)
    assert [c.name for c in again.columns] == ["id", "extra"]
    assert again is not parent


def test_a_second_plan_and_run_compile_no_statement_again(migrated: sa.Engine) -> None:
    """The second plan at the same as-of runs only statements compiled by the first (none compiled anew)."""
    build(migrated, 7)
    pack = loaded_pack()
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    execute.plan(migrated, pack, as_of)
    compiled, listener = _misses(migrated)
    try:
        second = execute.plan(migrated, pack, as_of)
    finally:
        sa.event.remove(migrated, "after_cursor_execute", listener)
    assert sum(sum(v.values()) for v in second.transitions.values()) > 0  # the plan did select records
    source = [s for s in compiled if any(t in s for t in ("accounts", "visits", "logs"))]
    assert source == [], f"{len(source)} statements on the source tables compiled again, e.g. {source[0][:200]}"


def test_a_tables_fingerprint_does_not_depend_on_the_order_its_pack_is_reflected_in(engine: sa.Engine) -> None:
    """``users`` reflected first, or first as the target of ``orders``' foreign key: one fingerprint, one Table.

    PostgreSQL's reflection gives a foreign key's target the option it was
    read with (``postgresql_ignore_search_path``); a fingerprint holding it
    depended on the order (a hash seed's set order once made it differ).
    """
    _schema(engine)
    with engine.connect() as conn:
        alone = reflected.fingerprint(sa.Table("users", sa.MetaData(), autoload_with=conn))
        for order_ in (["users", "orders"], ["orders", "users"]):
            md = sa.MetaData()
            for name in order_:
                sa.Table(name, md, autoload_with=conn)
            assert reflected.fingerprint(md.tables["users"]) == alone, order_
