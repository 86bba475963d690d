"""SQLite's validity test of text that looks like its own form, against the Python grammar.

The due predicate, the batches and plan's one read take a value for valid
where ``datetime(v, '+0 days') = v`` (:func:`retention.timing.datetext.sql_canonical`),
and test the others by the grammar. Both must call valid exactly what the
Python side (:func:`retention.timing.datetext.parse`, what the per-record
evaluator reads) does, and the round trip must hold only for valid text.
A cheaper first test of such text (GLOB and ``substr``) was measured and
dropped: one GLOB costs more than the ``datetime()`` call (bench/RESULTS.md,
branch sqlitedate); these cases stay for any such test. The values are
the ones that look like SQLite's own form: every field drawn from all two-digit
values (month 13, day 00 and 31 of a 30-day month, 29 February of a
common year, hour 24, minute 60), a NUL and bytes after it, the same
bytes as a BLOB, and numbers; in columns of text and of numeric affinity.
SQLite only: it is SQLite's grammar (in-memory databases, no server).
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
import sqlalchemy as sa
from hypothesis import given, settings

from retention.timing import datetext

KINDS: list[datetext.TextKind] = ["timestamptz", "timestamp", "date"]
AFFINITIES = ["TEXT", "DATETIME"]  # text affinity, numeric affinity (what SQLAlchemy's DateTime declares)

_two = st.integers(0, 99).map(lambda n: f"{n:02d}")
_year = st.one_of(st.integers(0, 9999), st.sampled_from([0, 999, 1000, 1900, 2000, 2020, 2021, 2100, 9999])).map(
    lambda n: f"{n:04d}"
)


@st.composite
def own_form_lookalikes(draw: st.DrawFn) -> Any:
    """Text shaped like ``YYYY-MM-DD[ HH:MM:SS]`` with any digits, sometimes with a tail, a BLOB or a number."""
    day = f"{draw(_year)}-{draw(_two)}-{draw(_two)}"
    text = day if draw(st.booleans()) else f"{day} {draw(_two)}:{draw(_two)}:{draw(_two)}"
    tail = draw(st.sampled_from(["", "", "", "\x00", "\x00x", ".5", "Z", "T"]))
    text += tail
    form = draw(st.sampled_from(["text"] * 6 + ["blob", "number"]))
    if form == "blob":
        return text.encode()
    if form == "number":
        return int(text[:4]) if text[:4].isdigit() else 0
    return text


def _python_valid(value: Any, kind: datetext.TextKind) -> bool:
    return isinstance(value, str) and isinstance(datetext.parse(value, kind), datetext.TextDateTime)


def _sql(values: list[Any], affinity: str, kind: datetext.TextKind) -> list[tuple[bool, bool]]:
    """Per value: (the whole validity test, SQLite's own-form round trip)."""
    engine = sa.create_engine("sqlite://")
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("v"))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {affinity})")
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
        v = table.c.v
        rows = conn.execute(
            sa.select(
                sa.func.coalesce(datetext.sql_valid(v, kind), sa.false()),
                sa.func.coalesce(datetext.sql_canonical(v, kind), sa.false()),
            ).order_by(table.c.id)
        ).all()
    engine.dispose()
    return [(bool(a), bool(b)) for a, b in rows]


EDGES = [
    *("2021-02-28 23:59:59", "2021-02-29 00:00:00", "2020-02-29 00:00:00", "2100-02-29 12:00:00"),
    *("2020-04-31 00:00:00", "2020-13-01 00:00:00", "2020-00-01 00:00:00", "2020-01-00 00:00:00"),
    *("2020-01-01 24:00:00", "2020-01-01 23:60:00", "2020-01-01 23:59:60", "2020-01-01 29:00:00"),
    *("1000-01-01 00:00:00", "0999-12-31 23:59:59", "9999-12-28 23:59:59", "0000-01-01 00:00:00"),
    *("2020-01-01 10:00:00\x00", "2020-01-01 10:00:00\x00junk", "2020-01-01\x00", b"2020-01-01 10:00:00"),
    *(b"2020-01-01", "2020-01-01", "2021-02-29", "2020-19-19", "2020-01-39", "2020-01-28", "２０２０-01-01"),
    *("2020-01-01T10:00:00", "2020-01-01 10:00:00.000000", "2020-01-01 10:00:00+01:00", 20200101, 2020.5),
]


@pytest.mark.parametrize("affinity", AFFINITIES)
@pytest.mark.parametrize("kind", KINDS)
def test_own_form_lookalikes_at_the_edges_are_valid_as_in_python(kind: datetext.TextKind, affinity: str) -> None:
    """Each edge: valid in SQL exactly when in Python; in SQLite's own form only if valid."""
    results = _sql(EDGES, affinity, kind)
    for value, (valid, canonical) in zip(EDGES, results, strict=True):
        python = _python_valid(value, kind)
        assert valid == python, (value, kind, affinity)
        assert python or not canonical, (value, kind, affinity)
    # Not vacuous: the plain values of each kind are valid and in own form.
    plain = dict(zip(EDGES, results, strict=True))
    assert plain["2020-01-28"] == ((True, True) if kind == "date" else (True, False))
    assert plain["2021-02-28 23:59:59"] == ((False, False) if kind == "date" else (True, True))


@settings(max_examples=100, deadline=None)
@given(st.lists(own_form_lookalikes(), min_size=50, max_size=50))
def test_own_form_lookalikes_drawn_at_random_are_valid_as_in_python(values: list[Any]) -> None:
    """Random look-alikes, each kind and affinity: the same two properties as at the edges."""
    for kind in KINDS:
        for affinity in AFFINITIES:
            for value, (valid, canonical) in zip(values, _sql(values, affinity, kind), strict=True):
                python = _python_valid(value, kind)
                assert valid == python, (value, kind, affinity)
                assert python or not canonical, (value, kind, affinity)
