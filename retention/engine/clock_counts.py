"""``plan``'s and the guard's counts over one clock: the rows a batch predicate selects, without its per-row test.

The batches test each row's clock for being readable (SQLite's datetime
grammar, MariaDB's impossible dates); a count over a large table pays that
test per row (1M rows: most of ``plan``'s time, bench/RESULTS.md, issue 22
plan3). These functions count the same rows where the test can be confined
to a few: the rows meeting the predicate without its readable term, less
those among them whose term is not true, found within index ranges
(:func:`count`, MariaDB) or among the rows not in SQLite's own form, read
once for every transition and the invalid count (:func:`text_tallies`).
Split from :class:`~retention.engine.clock_sql.ClockSQL` (issue 22: no class
above ~300 lines); ``tests/test_anomaly_sql.py`` holds them to the Python
classifier.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.clock_sql import ClockSQL, _only_conjunct, _own_normal, _swap
from retention.timing import datetext


def tally(
    clock: ClockSQL, conn: sa.Connection, table: Any, condition: ColumnElement[bool], at_most: int | None = None
) -> tuple[int, Any, Any]:
    """How many rows meet ``condition``, and the least and greatest of :meth:`ClockSQL.select` over them.

    ``at_most``: the count stops there (a caller that only compares it with
    a batch size). A set-based purge's full count paid the per-row date test
    over every due row once more before its batches did (SQLite 1M rows: about
    6 % of the purge's CPU, bench/RESULTS.md, branch sqlitep).

    A plain typed column: :func:`count`, then the first row of the
    clock's index each way (one statement, two scalar subqueries), where
    ``condition`` runs on the rows read until one passes; only after a
    count above zero, since with no row passing each walk would read the
    whole index (PostgreSQL 1M rows: count, min and max in one pass
    took 0.18 s where the raw count took 0.14 s; on MariaDB the count
    then needs no per-row date test at all). SQLite
    text: the count, then the extremes by :func:`_text_extremes`; SQLite
    pays about 0.5 µs per row for each ``min``/``max`` beside a
    ``count``, more than that walk costs (300k rows: 0.61 s folded
    against 0.29 s). An aggregate clock (a subquery per row, no index to
    walk): count, min and max in one pass.
    """
    counting = sa.func.count()
    if clock._raw_text and clock.kind != "date":
        found = _count_at_most(conn, table, condition, at_most)
        if not found:
            return 0, None, None
        return found, *_text_extremes(clock, conn, table, condition)
    value = clock.select()
    if not clock.aggregate:
        found = (
            count(clock, conn, table, condition) if at_most is None else _count_at_most(conn, table, condition, at_most)
        )
        if not found:
            return 0, None, None
        # Both walks in one statement (one round trip fewer per plan; each is still its own index walk).
        first, last = (
            sa.select(value).select_from(table).where(condition).order_by(order).limit(1).scalar_subquery()
            for order in (clock.value.asc(), clock.value.desc())
        )
        low, high = conn.execute(sa.select(first, last)).one()
        return found, low, high
    row = conn.execute(
        sa.select(counting, sa.func.min(value), sa.func.max(value)).select_from(table).where(condition)
    ).one()
    return int(row[0]), row[1], row[2]


def _count_at_most(conn: sa.Connection, table: Any, condition: ColumnElement[bool], at_most: int | None) -> int:
    """How many rows meet ``condition``, counting no further than ``at_most`` (None: all)."""
    if at_most is None:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(condition)).scalar_one())
    first = sa.select(sa.literal(1).label("one")).select_from(table).where(condition).limit(at_most).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(first)).scalar_one())


def count(clock: ClockSQL, conn: sa.Connection, table: Any, condition: ColumnElement[bool]) -> int:
    """How many rows meet ``condition`` (a batch predicate built from this clock).

    Where the clock's readable test is a top-level term of ``condition``
    and the dialect can narrow the invalid values to index ranges
    (:meth:`Dialect.invalid_within`, MariaDB): the rows meeting the rest of
    ``condition``, less those among them whose readable test is not true,
    found within those ranges. The same set as the batches select (the
    test is not true outside the ranges for a non-NULL value, and NULL
    rows are subtracted too), counted by an index range instead of a
    per-row date test (MariaDB 1M rows: 0.72 s -> 0.16 s, bench/RESULTS.md).
    """
    split = _unreadable_split(clock, conn, condition)
    if split is not None:
        return _count_split(conn, table, *split)
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(condition)).scalar_one())


def _count_split(conn: sa.Connection, table: Any, rest: ColumnElement[bool], failing: ColumnElement[bool]) -> int:
    counts = [sa.select(sa.func.count()).select_from(table).where(c).scalar_subquery() for c in (rest, failing)]
    row = conn.execute(sa.select(*counts)).one()
    return int(row[0]) - int(row[1])


def _unreadable_split(
    clock: ClockSQL, conn: sa.Connection, condition: ColumnElement[bool]
) -> tuple[ColumnElement[bool], ColumnElement[bool]] | None:
    """(``condition`` without the readable test, the same with the test failing), or None.

    None unless the one readable term of this clock occurs in
    ``condition`` only as a top-level conjunct (then the count of
    ``condition`` is the first count less the second; anywhere else, as
    under a NOT or an OR, the subtraction would not hold).
    """
    if clock.aggregate or clock._sqlite_text:
        return None
    terms = clock._readable()
    if len(terms) != 1 or not _only_conjunct(condition, terms[0]):
        return None
    within = clock.dialect.invalid_within(conn, clock.value, clock.kind)
    if within is None:
        return None
    term = terms[0]
    # Not true: false, or NULL (a NULL value); outside ``within`` a
    # non-NULL value is readable, so those two cover every failing row.
    # Grouped: a replacement is pasted in without the parentheses building the AND would have added.
    failing = sa.or_(
        sa.and_(within, sa.not_(sa.func.coalesce(term, sa.false()))),
        clock.dialect.clock_is_null(clock.value, clock.kind),
    ).self_group()
    return _swap(condition, term, sa.true()), _swap(condition, term, failing)


def invalid_for_count(clock: ClockSQL, conn: sa.Connection) -> ColumnElement[bool]:
    """:meth:`anomaly` ``invalid`` for a count: the same rows, within the dialect's index ranges if any."""
    invalid = clock._invalid()
    if clock.aggregate or clock.kind == "epoch_text" or clock._sqlite_text:
        return invalid
    within = clock.dialect.invalid_within(conn, clock.value, clock.kind)
    return invalid if within is None else sa.and_(within, invalid)


def text_tallies(
    clock: ClockSQL,
    conn: sa.Connection,
    table: Any,
    conditions: list[ColumnElement[bool]],
    active: list[ColumnElement[bool]],
) -> tuple[list[tuple[int, Any, Any]], int] | None:
    """SQLite text: :func:`tally` of each condition and the invalid count of ``active`` rows, in one read.

    A validity test per row was paid three times by ``plan`` (the due
    count over the due range, the invalid count over the table, the
    extremes' shape test over the range: 1M rows, 0.69 + 0.85 + 0.41 s).
    Here the table is read once for its odd rows, those not in SQLite's
    own form (one ``datetime()`` call per row; every row whose validity
    test is not true is one, so is every valid row the clock index does
    not order as time): on them alone the failing, invalid and extreme
    values are worked out. Each due count is then the rows meeting the
    condition without its validity test (the clock index alone) less the
    odd ones failing it, the same rows the batches select; the extremes
    the first own-form row of the index each way and the odd rows'
    normal forms. One statement, so one snapshot. None where the
    validity test is not a top-level term of every condition.
    """
    if not clock._raw_text or clock.kind == "date":
        return None
    term = clock._valid_term()
    if not all(_only_conjunct(c, term) for c in conditions):
        return None
    v = clock.value
    odd = sa.not_(sa.func.coalesce(datetext.sql_canonical(v, clock._text_kind()), sa.false()))
    failing = sa.not_(sa.func.coalesce(term, sa.false()))
    normal = clock._normal()
    own_form = sa.and_(sa.func.length(v) == 19, sa.func.substr(v, 11, 1) == " ")
    inner: list[ColumnElement[Any]] = [sa.func.count(sa.case((sa.and_(clock._invalid(), *active), 1))).label("n")]
    outer: list[ColumnElement[Any]] = []
    for i, c in enumerate(conditions):
        rest = _swap(c, term, sa.true())
        inner += [
            sa.func.count(sa.case((sa.and_(rest, failing), 1))).label(f"f{i}"),
            sa.func.min(sa.case((c, normal))).label(f"lo{i}"),
            sa.func.max(sa.case((c, normal))).label(f"hi{i}"),
        ]
        outer.append(sa.select(sa.func.count()).select_from(table).where(rest).scalar_subquery())
        for order in (v.asc(), v.desc()):
            first = sa.select(v).select_from(table).where(c, own_form).order_by(order).limit(1)
            outer.append(first.scalar_subquery())
    scan = sa.select(*inner).select_from(table).where(odd).subquery("odd_rows")
    row = conn.execute(sa.select(*scan.c, *outer)).one()
    per = 1 + 3 * len(conditions)
    tallies = []
    for i in range(len(conditions)):
        found = int(row[per + 3 * i]) - int(row[1 + 3 * i])
        lows = [x for x in (row[2 + 3 * i], _own_normal(row[per + 3 * i + 1])) if x is not None]
        highs = [x for x in (row[3 + 3 * i], _own_normal(row[per + 3 * i + 2])) if x is not None]
        tallies.append((found, min(lows, default=None), max(highs, default=None)) if found else (0, None, None))
    return tallies, int(row[0])


def _text_extremes(clock: ClockSQL, conn: sa.Connection, table: Any, condition: ColumnElement[bool]) -> tuple[Any, Any]:
    """The least and greatest normal form over SQLite text rows meeting ``condition``.

    Rows in SQLite's own form (nearly all) order as their normal form
    does, so the clock's index gives their extremes at once; only the
    other rows are read, in one scan for both ends, with a cheap shape
    test (a valid row of 19 characters with a space at 11 is always in
    SQLite's own form).
    """
    v = clock.value
    own_form = sa.and_(sa.func.length(v) == 19, sa.func.substr(v, 11, 1) == " ")
    own = []
    for order in (v.asc(), v.desc()):
        first = conn.execute(
            sa.select(v).select_from(table).where(condition, own_form).order_by(order).limit(1)
        ).scalar()
        own.append(None if first is None else f"{first}.000000")
    # the shape test first: SQLite checks the terms in this order
    low, high = conn.execute(
        sa.select(sa.func.min(clock.select()), sa.func.max(clock.select()))
        .select_from(table)
        .where(sa.not_(own_form), condition)
    ).one()
    lows = [x for x in (own[0], low) if x is not None]
    highs = [x for x in (own[1], high) if x is not None]
    return min(lows, default=None), max(highs, default=None)
