"""SQL fragments compiled once per process (retention/timing/sql_fragments.py).

The cache is safe only if a fragment's SQL text depends on nothing but the
dialect, the fragment and the column it reads: these tests compile the same
grammar both ways, over columns of different tables, names and dialects, and
compare the text; and they run both on SQLite over values of every class.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from retention.timing import datetext, sql_fragments

DIALECTS = [sqlite.dialect(), postgresql.dialect(), mysql.dialect()]
KINDS: list[datetext.TextKind] = ["timestamptz", "timestamp", "date"]
FRAGMENTS: dict[str, tuple[Any, Any]] = {
    "valid": (datetext.sql_valid, datetext._valid),
    "normal": (datetext.sql_normal, datetext._normal),
    "zero_date": (lambda v, kind: datetext.sql_zero_date(v), datetext._zero_date),
}

_md = sa.MetaData()
_TABLES = [
    sa.Table("events", _md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", sa.String)),
    sa.Table("orders", _md, sa.Column("ref", sa.String, primary_key=True), sa.Column("placed on", sa.String)),
]


def _columns() -> list[ColumnElement[Any]]:
    plain = [table.c[1] for table in _TABLES]
    return [*plain, _TABLES[1].alias("agg_orders").c["placed on"]]


def _text(element: ColumnElement[Any], dialect: sa.Dialect) -> str:
    return str(element.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


@pytest.mark.parametrize("sql_dialect", DIALECTS, ids=lambda d: d.name)
def test_fragment_text_is_the_expression_text(sql_dialect: sa.Dialect) -> None:
    for (name, (cached, built)), kind, column in itertools.product(FRAGMENTS.items(), KINDS, _columns()):
        fragment = cached(column, kind)
        if name == "normal" and kind == "date":
            assert fragment is column  # a date's normal form is itself
            continue
        assert isinstance(fragment, sql_fragments.Fragment), (name, kind)
        # The fragment is always parenthesised.
        want = f"({_text(built(column, kind), sql_dialect)})"
        assert _text(fragment, sql_dialect) == want, (sql_dialect.name, name, kind)


def test_each_fragment_is_compiled_once_per_dialect(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = sql_fragments._BUILDERS["datetext.valid"]

    def counting(v: ColumnElement[Any], kind: str) -> ColumnElement[Any]:
        calls.append(kind)
        return original(v, kind)

    monkeypatch.setitem(sql_fragments._BUILDERS, "datetext.valid", counting)
    monkeypatch.setattr(sql_fragments, "_TEMPLATES", {})
    dialect = sqlite.dialect()
    for _ in range(3):
        for column in _columns():
            for kind in KINDS:
                _text(sa.select(datetext.sql_valid(column, kind)), dialect)
    assert sorted(calls) == sorted(KINDS)


def test_an_adapter_repoints_the_fragment_column() -> None:
    table = _TABLES[0]
    alias = table.alias("agg_events")
    adapted = sa.sql.util.ClauseAdapter(alias).traverse(datetext.sql_valid(table.c.at, "timestamp"))
    text = _text(adapted, sqlite.dialect())
    assert "agg_events.at" in text
    assert "events.at" not in text.replace("agg_events.at", "")


def test_a_column_with_a_bound_value_is_built_as_is() -> None:
    table = _TABLES[0]
    expression = table.c.at + sa.literal("x")
    assert not isinstance(datetext.sql_valid(expression, "timestamp"), sql_fragments.Fragment)


VALUES = [
    None,
    "2024-03-01 12:00:00",
    "2024-03-01 12:00:00.123456",
    "2024-03-01T12:00",
    "2024-03-01",
    "2024-02-30 00:00:00",
    "2024-03-01 12:00:00+02:00",
    "2024-03-01 12:00:00Z",
    "2024-03-01 12:00:00+15:00",
    "0000-00-00 00:00:00",
    "now",
    "2024-03-01 12:00:00.1",
]


@pytest.mark.parametrize("kind", KINDS)
def test_fragment_and_expression_agree_on_sqlite(kind: datetext.TextKind) -> None:
    engine = sa.create_engine("sqlite://")
    md = sa.MetaData()
    table = sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", sa.String))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "at": v} for i, v in enumerate(VALUES)])
        # ``+at``: the column as a planner reads it to keep SQLite off its index
        unary = sa.sql.elements.UnaryExpression(table.c.at, operator=sa.sql.operators.custom_op("+"), type_=sa.String())
        for (name, (cached, built)), column in itertools.product(FRAGMENTS.items(), [table.c.at, unary]):
            got = conn.execute(sa.select(table.c.id, cached(column, kind)).order_by(table.c.id)).all()
            want = conn.execute(sa.select(table.c.id, built(column, kind)).order_by(table.c.id)).all()
            assert got == want, (name, kind)
            assert len({row[1] for row in want}) > 1  # the values tell the classes apart
    engine.dispose()
