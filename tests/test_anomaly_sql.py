"""The counts' SQL for invalid and due clocks against the Python classifier, over values of every class.

``plan`` counts the invalid values and the due rows without the per-row test
where it can (MariaDB: :func:`retention.dialects.mysql_clocks.month_gaps`, the index
ranges that hold every impossible date; the due count by subtraction,
:func:`clock_counts.count`; SQLite: one read of the rows not in its own form,
:func:`clock_counts.text_tallies`). Those are other SQL expressions than the batches'
per-row test, so each is held here to the Python classifier (the reading
``explain`` gives) row by row: valid values on both sides of every month end,
impossible days, day and month 0, the zero date, year 0, NULL, the far ends,
SQLite's own form and others; tables whose least or greatest value is itself
impossible (the ranges start and end from them).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from retention.engine import clock_counts
from retention.engine.clock_sql import ClockSQL, dataset_sql
from retention.policy import validate_pack

AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
# Last local dates the due condition is built for: through February's end, a month's middle, all of the past.
LAST_DAYS = (dt.date(2020, 2, 28), dt.date(2020, 2, 29), dt.date(2020, 3, 15), dt.date(2026, 10, 31))

VALUES: dict[str, list[Any]] = {
    "mariadb": [
        "2020-02-29 23:59:59.500000",  # valid, in the last second of the month
        "2020-02-29 12:00:00",
        "2020-02-30 10:00:00",  # invalid day
        "2020-03-00 05:00:00",  # day 0
        "2020-03-01 00:00:00",
        "2021-02-29 00:00:00",  # not a leap year
        "2020-04-31 08:00:00",
        "2020-00-15 01:00:00",  # month 0: sorts after December
        "2020-00-00 00:00:00",
        "2019-12-31 23:59:59",
        "0000-00-00 00:00:00",  # the zero date: zero, not invalid
        "0000-02-29 00:00:00",  # year 0 is leap for the grammar
        "0000-01-15 00:00:00",
        "0000-00-05 00:00:00",
        "1899-12-31 23:00:00",
        "2031-01-01 00:00:00",  # future
        None,
    ],
    "sqlite": [
        "2020-02-29 23:59:59",
        "2020-02-29T09:00:00+01:00",
        "2020-02-29 23:30:00-01:00",
        "2020-02-30",
        "2020-02-30 10:00:00",
        "2020-03-00 05:00:00",
        "2020-01-01garbage",
        "2020-01-01 25:00:00",
        "0000-00-00 00:00:00",
        "2031-01-01T00:00Z",
        "2020-01-01T10:00:00+99:00",
        "2020-03-01",
        "2020-03-01 00:00:00.123456",
        20200101,
        None,
        # shaped as SQLite's own form (the cheap validity test, datetext._plainly_valid): invalid, then valid
        "2021-02-29 10:00:00",
        "2020-13-05 10:00:00",
        "2020-02-27 24:00:00",
        "2020-02-27 10:00:00\x00x",
        b"2020-02-27 10:00:00",
        "2020-02-27 10:00:00",
    ],
    "postgresql": [
        "2020-02-29 08:00:00+00",
        "2020-02-29 23:30:00+00",
        "-infinity",
        "infinity",
        "0044-03-15 10:00:00+00 BC",
        "1899-12-31 23:00:00+00",
        "10000-01-01 00:00:00+00",
        "2026-10-31 23:00:00+00",
        None,
    ],
}
# MariaDB tables whose least or greatest value is impossible: the month ranges start and end from them.
MARIADB_EDGES = [
    ["2020-03-00 05:00:00", "2020-03-15 00:00:00", "2020-05-31 00:00:00", "2020-06-00 00:00:00"],
    ["2020-00-15 01:00:00", "2020-02-30 00:00:00", "2021-00-10 00:00:00"],
    ["2020-02-30 00:00:00", "2020-02-31 00:00:00"],
    ["0000-00-00 00:00:00", "0000-02-30 00:00:00"],
    # 9,000 years of months: no ranges, the per-row test alone (narrowed is False)
    ["1000-01-01 00:00:00", "2020-02-30 00:00:00", "9999-12-31 23:59:59"],
]


def _pack(kind: str) -> Any:
    return validate_pack(
        {
            "pack": "anomaly-sql",
            "version": "1",
            "effective_from": dt.date(2000, 1, 1),
            "timezone": "Europe/Paris",
            "guard": {"max_share": 1.0},
            "datasets": {
                "events": {
                    "table": "events",
                    "key": "id",
                    "basis": "test",
                    "keep": [{"clock": {"column": "seen", "type": kind}, "period": "P1Y"}],
                    "lifecycle": [{"to": "purged", "action": "delete"}],
                }
            },
        },
        Path("<test>"),
        "",
    ).pack


def _store(engine: sa.Engine, dialect: str, values: list[Any], column_type: Any) -> None:
    md = sa.MetaData()
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", column_type, index=True),
    )
    md.drop_all(engine)
    md.create_all(engine)
    placeholder = "CAST(:seen AS timestamptz)" if dialect == "postgresql" else ":seen"
    with engine.begin() as conn:
        if dialect == "mariadb":
            conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        rows = [{"id": k, "seen": v} for k, v in enumerate(values, 1)]
        conn.execute(sa.text(f"INSERT INTO events (id, seen) VALUES (:id, {placeholder})"), rows)
        if dialect == "mariadb":
            conn.exec_driver_sql("SET SESSION sql_mode = DEFAULT")


def _keys(conn: sa.Connection, clock: ClockSQL, where: sa.ColumnElement[bool]) -> set[int]:
    table = clock.value.table  # type: ignore[attr-defined]
    return set(conn.execute(sa.select(table.c.id).where(where)).scalars())


def _check(engine: sa.Engine, kind: str, count: int, *, narrowed: bool) -> None:
    """Invalid and due counts (the counts' SQL) against the Python reading of every row."""
    pack = _pack(kind)
    with engine.connect() as conn:
        sql = dataset_sql(conn, pack, "events")
        clock = sql.clocks[0]
        readings = sql.readings_many(conn, list(range(1, count + 1)), AS_OF)
        assert len(readings) == count
        invalid = {k for k, r in readings.items() if r[0].anomaly == "invalid"}
        assert _keys(conn, clock, clock_counts.invalid_for_count(clock, conn)) == invalid
        assert _keys(conn, clock, clock.anomaly("invalid", AS_OF)) == invalid
        for last_day in LAST_DAYS:
            due = {k for k, r in readings.items() if r[0].anomaly is None and r[0].day and r[0].day <= last_day}
            condition = sa.and_(clock.before_day_after(last_day), sql.key > 0)
            assert _keys(conn, clock, condition) == due, last_day
            assert clock_counts.count(clock, conn, sql.table, condition) == len(due), last_day
            found, low, high = clock_counts.tally(clock, conn, sql.table, condition)
            assert found == len(due), last_day
            assert (low is None) == (not due)
            if due and not clock.dialect.datetimes_as_text:  # SQLite's come back in its normal form
                raws = [readings[k][0].raw for k in due]
                assert (low, high) == (min(raws), max(raws)), last_day
            shared = clock_counts.text_tallies(
                clock, conn, sql.table, [condition, clock.before_day_after(last_day)], []
            )
            if clock.dialect.datetimes_as_text and kind != "date":
                # SQLite: one read for the tallies and the invalid count, against the row-by-row answers above.
                assert shared is not None
                assert shared[1] == len(invalid)
                for found_here, low_here, high_here in shared[0]:
                    assert found_here == len(due), last_day
                    ends = clock_counts._text_extremes(clock, conn, sql.table, condition) if due else (None, None)
                    assert (low_here, high_here) == ends, last_day
            else:
                assert shared is None
            # The subtraction only where the readable test is a top-level term: under a NOT it must not apply.
            assert (clock_counts._unreadable_split(clock, conn, condition) is not None) == narrowed
            negated = sa.not_(clock.before_day_after(last_day))
            assert clock_counts._unreadable_split(clock, conn, negated) is None
            assert clock_counts.count(clock, conn, sql.table, negated) == len(_keys(conn, clock, negated))


@pytest.mark.parametrize("kind", ["timestamptz", "date"])
def test_counts_match_the_classifier(engine: sa.Engine, dialect: str, kind: str) -> None:
    """Every class on each database, a datetime and a date clock: the counts' SQL agrees with Python row by row."""
    values = VALUES[dialect]
    if kind == "date" and dialect != "sqlite":
        column_type: Any = sa.Date()
        if dialect == "postgresql":
            values = ["2020-02-29", "2020-03-01", "-infinity", "infinity", "0044-03-15 BC", "1899-12-31", None]
        else:
            values = [*sorted({v[:10] for v in values if v is not None}), None]
    else:
        column_type = {"sqlite": sa.DateTime(), "mariadb": mysql.DATETIME(fsp=6)}.get(
            dialect, sa.DateTime(timezone=True)
        )
    if dialect == "postgresql" and kind == "date":
        _store_pg_dates(engine, values)
    else:
        _store(engine, dialect, values, column_type)
    _check(engine, kind, len(values), narrowed=dialect == "mariadb")


@pytest.mark.only_on("mariadb")
@pytest.mark.parametrize(
    "values", MARIADB_EDGES, ids=["day0-least", "month0-ends", "one-month", "year0-only", "too-many-months"]
)
def test_month_ranges_start_and_end_at_impossible_values(engine: sa.Engine, dialect: str, values: list[str]) -> None:
    """The least or greatest stored value impossible (day 0, month 0), year 0 alone, a span too long to write out."""
    _store(engine, dialect, values, mysql.DATETIME(fsp=0))
    _check(engine, "timestamptz", len(values), narrowed=values[-1] < "9999")


def _store_pg_dates(engine: sa.Engine, values: list[Any]) -> None:
    md = sa.MetaData()
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", sa.Date(), index=True),
    )
    md.drop_all(engine)
    md.create_all(engine)
    with engine.begin() as conn:
        rows = [{"id": k, "seen": v} for k, v in enumerate(values, 1)]
        conn.execute(sa.text("INSERT INTO events (id, seen) VALUES (:id, CAST(:seen AS date))"), rows)
