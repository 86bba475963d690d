"""MariaDB and MySQL clock SQL: zero and impossible dates (2020-00-00, 2020-02-30), which the server stores.

The MariaDB/MySQL overrides of :class:`~retention.dialects.clock_values.ClockValueSQL`'s
hooks, in a base class of :class:`~retention.dialects.mysql.MySQLDialect`, as
:mod:`retention.dialects.mysql_items` holds its item SQL: what the dialect class
holds stays under the ~300-line bar for a class (issue 22), and the date tests
the hooks share (:func:`bad_date`, :func:`month_gaps`) stand beside them.
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import DATETIME_KINDS
from retention.dialects.clock_values import ClockValueSQL


def bad_date(v: ColumnElement[Any]) -> ColumnElement[bool]:
    """A MySQL date that does not exist (2020-00-00, 2020-02-30), the zero date excepted.

    ``LAST_DAY`` takes year 0 as common; the grammar (and SQLite) as leap.
    Every selection of a due clock tests it per row, and a set-based batch
    selects three times (its range, its items, its delete): the terms are
    ordered so that a valid date decides after three cheap calls (month 0,
    day 0, day 28 or less), ``LAST_DAY`` and the zero date's test only for
    the last days of a month: ``bad_date`` alone in a range scan over 500k
    rows, 0.61 µs a row with its terms in the former order, 0.37 in this one
    (``bench/RESULTS.md``, the MariaDB purge section).
    """
    year, month, day = sa.func.year(v), sa.func.month(v), sa.func.dayofmonth(v)
    zero_date = sa.and_(year == 0, month == 0, day == 0)
    year0_leap_day = sa.and_(year == 0, month == 2, day == 29)
    past_month_end = sa.and_(day > 28, day > sa.func.dayofmonth(sa.func.last_day(v)), sa.not_(year0_leap_day))
    return sa.and_(sa.or_(month == 0, day == 0, past_month_end), sa.not_(zero_date))


_MONTH_GAPS_MAX = 2400
"""Months (200 years) of gaps :func:`month_gaps` writes into one statement; beyond, the per-row test."""


def month_gaps(conn: sa.Connection, value: ColumnElement[Any]) -> ColumnElement[bool] | None:
    """Ranges of ``value`` that hold every impossible date of the column (see :func:`bad_date`), and few others.

    MariaDB and MySQL order DATE and DATETIME values by (year, month, day,
    time) as stored, impossible ones included: 2020-02-30 and 2020-03-00
    sort after 2020-02-29 23:59:59 and before 2020-03-01, 2020-00-15 after
    2019-12-31 and before 2020-01-01, year 0 before 0001-01-01. So every
    impossible date lies before year 1 or in a gap between a month's last
    second and the next month's first day, from the month before the
    column's least value from year 1 on to the month of its greatest (two
    index seeks; the zero date, common in old MySQL tables, does not stretch
    the span); an index on the column reads those ranges alone: one second a
    month of valid values, and the invalid ones. None past :data:`_MONTH_GAPS_MAX` months (a statement too long to
    be worth it). ``tests/test_anomaly_sql.py`` compares ``bad_date`` within
    these ranges with ``bad_date`` alone over values of every class.
    """
    year_one = sa.literal(dt.datetime(1, 1, 1), sa.DateTime())  # noqa: DTZ001 - a naive column's bound
    low = sa.select(sa.func.min(value)).where(value >= year_one).scalar_subquery()
    high = sa.select(sa.func.max(value)).scalar_subquery()
    row = conn.execute(sa.select(sa.func.year(low), sa.func.month(low), sa.func.year(high), sa.func.month(high))).one()
    # Year 0 (the zero date, 0000-00-05, 0000-02-30) sorts before 0001-01-01: one range for all of it.
    ranges: list[ColumnElement[bool]] = [value < year_one]
    if row[0] is None:
        return ranges[0]
    first = (row[0], row[1] - 1) if row[1] > 1 else (row[0] - 1, 12)  # the gap before the least value's month
    last = (row[2], row[3]) if row[3] >= 1 else (row[2] - 1, 12)  # month 0 sorts in December's gap
    first = max(first, (1, 1))
    months = (last[0] - first[0]) * 12 + last[1] - first[1] + 1
    if months > _MONTH_GAPS_MAX:
        return None
    year, month = first
    for _ in range(max(months, 0)):
        end = dt.datetime(year, month, calendar.monthrange(year, month)[1], 23, 59, 59)  # noqa: DTZ001 - naive
        gap = [value >= sa.literal(end, sa.DateTime())]
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)
        if year <= 9999:
            gap.append(value < sa.literal(dt.datetime(year, month, 1), sa.DateTime()))  # noqa: DTZ001 - naive
        ranges.append(sa.and_(*gap))
    return sa.or_(*ranges)


class MySQLClockSQL(ClockValueSQL):
    """Clock SQL of MariaDB and MySQL: a DATE or DATETIME column may hold dates that do not exist."""

    def stored_date(self, value: ColumnElement[Any], kind: str, column_type: Any) -> ColumnElement[Any]:
        return sa.func.date(value)

    def clock_invalid(self, value: ColumnElement[Any], kind: str) -> ColumnElement[bool]:
        if kind in DATETIME_KINDS:
            return bad_date(value)
        return sa.false()

    def clock_readable(self, value: ColumnElement[Any], kind: str) -> list[ColumnElement[bool]]:
        if kind in DATETIME_KINDS:
            return [sa.not_(bad_date(value))]
        return []

    def invalid_within(self, conn: sa.Connection, value: ColumnElement[Any], kind: str) -> ColumnElement[bool] | None:
        return month_gaps(conn, value) if kind in DATETIME_KINDS else None

    def clock_is_null(self, value: ColumnElement[Any], kind: str) -> ColumnElement[bool]:
        if kind in DATETIME_KINDS:
            # MySQL matches zero dates of NOT NULL columns with `IS NULL`;
            # the null-safe comparison does not.
            return value.is_not_distinct_from(None)
        return value.is_(None)

    def aggregate_measure(
        self, rel_col: ColumnElement[Any], kind: str
    ) -> tuple[ColumnElement[Any], ColumnElement[bool] | None]:
        if kind in DATETIME_KINDS:
            bad = bad_date(rel_col)
            return sa.case((bad, None), else_=rel_col), bad
        return rel_col, None
