"""SQL evaluation and per-record Python evaluation agree, on every database, for every stored value.

For every clock storage kind, hypothesis draws values clustered around month
ends, 29 February, the Europe/Paris DST changes and 1900-01-01 (the zero
floor), stored in every form the database can hold: on SQLite every text
form of the grammar (``T`` or space, minutes to microseconds, ``Z`` and
offsets) and garbage, numbers and blobs in text columns; on MariaDB zero
dates, zero-in-date and days that do not exist (inserted under a permissive
``sql_mode``); on PostgreSQL ``infinity``, BC dates and years after 9999;
NaN, infinite, negative and huge epochs, and garbage epoch strings. The
keys the SQL predicate selects for each lifecycle state must equal the keys
the Python evaluator says are due (reading each record safely, as
``explain`` does), the anomaly categories must match, and the values
``DatasetSQL.values()`` fetches for due rows must evaluate the same.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql

from retention.engine.evaluate import (
    ANOMALIES,
    DatasetSQL,
    dataset_sql,
    evaluate_readings,
    evaluate_record,
    explain_clock_values,
    read_value,
)
from retention.policy import validate_pack
from retention.policy.model import Pack
from retention.store.config import create_engine

UTC = dt.UTC
PARIS = "Europe/Paris"
PARIS_DST = [  # days of the Europe/Paris changes
    dt.date(2019, 3, 31),
    dt.date(2019, 10, 27),
    dt.date(2020, 3, 29),
    dt.date(2020, 10, 25),
    dt.date(2023, 3, 26),
    dt.date(2023, 10, 29),
    dt.date(2024, 3, 31),
    dt.date(2024, 10, 27),
]
INTERESTING = [
    *PARIS_DST,
    dt.date(2016, 2, 29),
    dt.date(2020, 2, 29),
    dt.date(2024, 2, 29),
    dt.date(2021, 2, 28),
    dt.date(2021, 1, 31),
    dt.date(2021, 3, 31),
    dt.date(2022, 12, 31),
    dt.date(2023, 1, 1),
    dt.date(2022, 4, 30),
    dt.date(2023, 8, 31),
    dt.date(2019, 12, 31),
]
VALUE_DAYS = [*INTERESTING, dt.date(1900, 1, 1)]  # and the zero floor

_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_INSTANT = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# kind -> (column type, keep rule clock). On SQLite the datetime columns are
# declared TEXT, DATETIME and TIMESTAMP (text and numeric affinity).
KINDS: dict[str, tuple[Any, dict[str, Any]]] = {
    "timestamptz": (
        sa.DateTime(timezone=True)
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
        .with_variant(sa.Text(), "sqlite"),
        {"column": "clock", "type": "timestamptz"},
    ),
    "timestamp_utc": (_DATETIME, {"column": "clock", "type": "timestamp", "timezone": "UTC"}),
    "timestamp_paris": (
        _DATETIME.with_variant(sa.TIMESTAMP(), "sqlite"),
        {"column": "clock", "type": "timestamp", "timezone": PARIS},
    ),
    "date": (sa.Date(), {"column": "clock", "type": "date"}),
    "epoch": (sa.BigInteger(), {"column": "clock", "type": "epoch"}),
    "epoch_float": (sa.Float(53), {"column": "clock", "type": "epoch"}),
    "epoch_text": (sa.Text(), {"column": "clock", "type": "epoch_text"}),
}
PG_CAST = {"timestamptz": "timestamptz", "timestamp_utc": "timestamp", "timestamp_paris": "timestamp", "date": "date"}

# Stored values that are not plain valid readings, per database. Each is
# classified by the engine; the test checks that both sides agree.
SQLITE_ODD = [
    *("2020-02-30", "2020-02-30 10:00:00", "2021-02-29T00:00", "2020-13-01", "2020-00-10", "2020-01-00"),
    *("2020-01-01 24:00:00", "2020-01-01 23:60", "2020-01-01 10:00:60", "2020-01-01 10:00:00."),
    *("2020-01-01 10:00:00.1234567", "2020-01-01 10", "2020-01-01T10:00:00+15:00", "2020-01-01T10:00:00+99:00"),
    *("2020-01-01 10:00:00+01:60", "2020-01-01 10:00:00+0100", "2020-01-01 10:00:00 +01:00", "2020-01-01Z"),
    *("2020-01-01+01:00", "2020-01-01garbage", "2020-01-01 10:00:00garbage", " 2020-01-01", "2020-01-01 "),
    *("2020-1-1", "20200101", "now", "10:00:00", "", "garbage", "2020-01-01t10:00", "2020-01-01  10:00"),
    *("2020-01-01TT10:00", "2020-01-01 10:00:00z", "２０２０-01-01", "2020-01-01\x0010:00", "2020-01-01 10:00\n"),
    *(2459000.5, 20200101, 1600000000, b"2020-01-01"),
    *("0000-00-00", "0000-00-00 00:00:00", "0000-00-00 10:00", "0000-01-01", "0000-02-29", "0999-05-01T12:00"),
    *("1899-12-31 23:59:59.999999", "0001-01-01 00:00:00+01:00", "1900-01-01 00:30+01:00", "0000-12-31 23:00:00-02:00"),
    *("0000-01-01 00:00+01:00", "9999-12-31 23:59:59", "2031-05-17 10:00", "9999-12-31 23:59:59.999999"),
    *("9999-12-31T23:00-14:00", "2031-05-17T10:00:00Z", "2020-02-29T23:30:00-14:59", "2020-02-29T00:30:00+14:59"),
    # In SQLite's own form's shape, for the cheap validity test (datetext._plainly_valid): invalid, then valid.
    *("2021-02-29 10:00:00", "2020-04-31 10:00:00", "2020-13-05 10:00:00", "2020-00-05 10:00:00"),
    *("2020-05-00 10:00:00", "2020-05-05 24:00:00", "2020-05-05 10:00:00\x00x", b"2020-05-05 10:00:00"),
    *("2021-02-28 23:59:59", "1000-01-01 00:00:00", "2020-02-29 23:59:59"),
]
MARIADB_ODD = [
    *("0000-00-00 00:00:00", "0000-00-00 10:00:00", "0000-01-01 00:00:00", "0000-02-29 00:00:00"),
    *("1899-12-31 23:59:59.999999", "2020-00-00 00:00:00", "2020-01-00 10:00:00", "0000-00-05 00:00:00"),
    *("2021-02-29 10:00:00", "2020-04-31 00:00:00", "2020-02-30 23:59:59", "9999-12-31 23:59:59.999999"),
    *("2031-05-17 10:00:00", "0999-05-01 12:00:00", "0000-04-31 00:00:00", "1000-01-01 00:00:00"),
]
PG_ODD = [
    *("infinity", "-infinity", "0044-03-15 10:00:00+00 BC", "0001-01-01 00:00:00+00", "1899-12-31 23:59:59.999999+00"),
    *("10000-01-01 00:00:00+00", "294276-12-31 23:59:59+00", "9999-12-31 23:59:59.999999+00", "2031-05-17 10:00:00+00"),
]
PG_ODD_DATE = ["infinity", "-infinity", "0044-03-15 BC", "5874897-12-31", "10000-01-01", "0001-01-01", "9999-12-31"]
EPOCH_ODD = [0, -5, -(10**12), 10**15, 2**62, 1]
EPOCH_ODD_SQLITE = ["abc", "12abc", b"\x01\x02", 1600000000.5, " ", ""]
EPOCH_FLOAT_ODD = [0.0, -0.5, 1e300, 1600000000.75, 0.5, 1.0, -1e300]
EPOCH_TEXT_ODD = [
    *("0", "-5", "0123", "", "abc", " 123", "123 ", "123\n", "١٢٣", "1e9", "12.5", "+123"),
    *("9" * 25, "9" * 19, "1" + "0" * 18, "9" * 5000, "12\x003", "1600000000.0"),
]


def _pack(
    keep: list[dict[str, Any]],
    periods_anchor: list[tuple[str, str]],
    first_after: str = "P0D",
    after_from: tuple[str, str] = ("previous", "previous"),
) -> Pack:
    data = {
        "pack": "prop",
        "version": "1",
        "effective_from": dt.date(2000, 1, 1),
        "timezone": PARIS,
        "datasets": {
            "records": {
                "table": "records",
                "key": "id",
                "basis": "test",
                "keep": [
                    {"clock": clock, "anchor": anchor} | ({} if clock.get("expires") else {"period": period})
                    for clock, (period, anchor) in zip(keep, periods_anchor, strict=True)
                ],
                "lifecycle": [
                    {"to": "inactive", "action": "deactivate", "set": {"active": False}, "after": first_after},
                    {
                        "to": "archived",
                        "after": "P1M",
                        "after_from": after_from[0],
                        "action": "archive",
                        "columns": ["id"],
                        "then": "delete",
                    },
                    {"to": "purged", "after": "P1Y", "after_from": after_from[1]},
                ],
            }
        },
    }
    return validate_pack(data, Path("<test>"), "").pack


# The strategies the composites below draw from, made once: a strategy made per draw (thousands per test) was
# validated and labelled afresh each time, a third of these tests' CPU on SQLite. The same arguments make the
# same strategy, so hypothesis draws the same examples as before.
_DAYS = {id(days): st.sampled_from(days) for days in (INTERESTING, VALUE_DAYS)}
_MINUTES = st.integers(-36 * 60, 36 * 60)
_SECONDS = st.sampled_from([0, 0, 0, 1, 59])
_MICROS = st.sampled_from([0, 0, 0, 1, 999_999, 500_000])
_ZONES = st.sampled_from(["", "", "Z", "offset"])
_OFFSETS = st.integers(-(14 * 60 + 59), 14 * 60 + 59)
_SEPARATORS = st.sampled_from([" ", "T"])
_PRECISIONS = st.sampled_from(["date", "minute", "second", "second", 1, 3, 6, 6])
_CHOICES = st.sampled_from(["ok"] * 6 + ["null", "odd", "odd", "future"])
_ODD: dict[tuple[str, str], st.SearchStrategy[Any]] = {}  # (dialect, kind) -> sampled_from(_odd(dialect, kind))


@st.composite
def instants(draw: st.DrawFn, days: list[dt.date] = INTERESTING) -> dt.datetime:
    """An aware instant within ±36 hours of an interesting local date."""
    days_strategy = _DAYS.get(id(days))
    day = draw(st.sampled_from(days) if days_strategy is None else days_strategy)
    minutes = draw(_MINUTES)
    seconds = draw(_SECONDS)
    micro = draw(_MICROS)
    base = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    return (base + dt.timedelta(minutes=minutes, seconds=seconds, microseconds=micro)).astimezone(UTC)


_INSTANTS = instants()
_VALUE_INSTANTS = instants(VALUE_DAYS)


def _wall(kind: str, instant: dt.datetime) -> dt.datetime:
    """The naive reading a column of ``kind`` stores for ``instant``."""
    zone = PARIS if kind == "timestamp_paris" else "UTC"
    local = pendulum.instance(instant).in_timezone(zone)
    return dt.datetime(local.year, local.month, local.day, local.hour, local.minute, local.second, local.microsecond)


@st.composite
def sqlite_text(draw: st.DrawFn, kind: str, instant: dt.datetime) -> str:
    """``instant`` in a random form of the text grammar (and a random zone for timestamptz)."""
    if kind == "date":
        return pendulum.instance(instant).in_timezone(PARIS).date().isoformat()
    wall = _wall(kind, instant)
    suffix = ""
    if kind == "timestamptz":
        zone = draw(_ZONES)
        if zone == "Z":
            suffix = "Z"
        elif zone == "offset":
            minutes = draw(_OFFSETS)
            wall += dt.timedelta(minutes=minutes)
            sign = "-" if minutes < 0 else "+"
            suffix = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    sep = draw(_SEPARATORS)
    precision = draw(_PRECISIONS)
    day = wall.date().isoformat()
    if precision == "date":
        return day  # a zone suffix needs a time
    text = f"{day}{sep}{wall.hour:02d}:{wall.minute:02d}"
    if precision != "minute":
        text += f":{wall.second:02d}"
    if isinstance(precision, int):
        text += "." + f"{wall.microsecond:06d}"[:precision]
    return text + suffix


@st.composite
def stored_values(draw: st.DrawFn, dialect: str, kind: str) -> Any:
    """A value to insert into a ``kind`` column on ``dialect``: sometimes NULL, odd or in the future."""
    choice = draw(_CHOICES)
    if choice == "null":
        return None
    if choice == "odd":
        odd = _ODD.get((dialect, kind))
        if odd is None:
            odd = _ODD[dialect, kind] = st.sampled_from(_odd(dialect, kind))
        return draw(odd)
    instant = draw(_VALUE_INSTANTS)
    if choice == "future":
        instant = dt.datetime(2031, 5, 17, 10, tzinfo=UTC)
    if kind == "epoch":
        return int(instant.timestamp())
    if kind == "epoch_float":
        return instant.timestamp()
    if kind == "epoch_text":
        return str(int(instant.timestamp()))
    if dialect == "sqlite":
        return draw(sqlite_text(kind, instant))
    if kind == "date":
        return pendulum.instance(instant).in_timezone(PARIS).date().isoformat()
    if dialect == "postgresql" and kind == "timestamptz":
        return instant.isoformat()
    return _wall(kind, instant).isoformat(sep=" ")


def _odd(dialect: str, kind: str) -> list[Any]:
    if kind == "epoch":
        return EPOCH_ODD + (EPOCH_ODD_SQLITE if dialect == "sqlite" else [])
    if kind == "epoch_float":
        special = {"postgresql": [math.nan, math.inf, -math.inf], "sqlite": [math.inf, -math.inf, "abc"]}
        return EPOCH_FLOAT_ODD + special.get(dialect, [])
    if kind == "epoch_text":
        return [t for t in EPOCH_TEXT_ODD if dialect != "postgresql" or "\x00" not in t]
    if dialect == "sqlite":
        return SQLITE_ODD
    if dialect == "postgresql":
        if kind == "date":
            return PG_ODD_DATE
        return PG_ODD if kind == "timestamptz" else [v.replace("+00", "") for v in PG_ODD]
    return sorted({v[:10] for v in MARIADB_ODD}) if kind == "date" else MARIADB_ODD


def _placeholder(dialect: str, kind: str, name: str) -> str:
    if dialect == "postgresql" and kind in PG_CAST:
        return f"CAST(:{name} AS {PG_CAST[kind]})"
    return f":{name}"


def _insert(conn: sa.Connection, table: str, kinds: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """Insert raw values the way a careless application would (MariaDB: a permissive sql_mode)."""
    if not rows:
        return
    dialect = conn.dialect.name
    names = list(rows[0])
    values = ", ".join(_placeholder(dialect, kinds.get(n, ""), n) for n in names)
    statement = sa.text(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({values})")
    if dialect in ("mysql", "mariadb"):
        mode = conn.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar_one()
        conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        try:
            conn.execute(statement, rows)
        finally:
            conn.exec_driver_sql(f"SET SESSION sql_mode = '{mode}'")
    else:
        conn.execute(statement, rows)


AS_OF_SHIFTS = [dt.timedelta(days=d) for d in (0, 1, 31, 365, 366 + 31, 3 * 365 + 1, 397, 800, 1200)]


_SHIFTS = st.sampled_from(AS_OF_SHIFTS)


@st.composite
def as_ofs(draw: st.DrawFn) -> dt.datetime:
    base = draw(_INSTANTS)
    return base + draw(_SHIFTS)


def _compare(conn: sa.Connection, ds: DatasetSQL, stored: dict[int, Any], as_of: dt.datetime) -> None:
    """SQL's due keys and anomalies == the Python evaluation of each record read as explain does.

    ``ds`` is compiled once per test: its reflected tables keep SQLAlchemy's
    statement cache warm across examples.
    """
    pack, dataset = ds.pack, ds.dataset
    if conn.dialect.name == "postgresql":
        # A tiny table never analysed looks costly enough to JIT-compile each
        # query (~80 ms); the answer is the same without.
        conn.exec_driver_sql("SET LOCAL jit = off")
    evaluations = {}
    for key in stored:
        readings = ds.readings(conn, key, as_of)
        assert readings is not None, key
        evaluations[key] = evaluate_readings(pack, dataset, readings)
    for state in ("inactive", "archived", "purged"):
        sql_keys = set(conn.execute(sa.select(ds.key).where(ds.due(state, as_of))).scalars())
        py_keys = {k for k, e in evaluations.items() if e.anomaly is None and e.due[state] <= as_of}
        assert sql_keys == py_keys, (state, as_of, {k: stored[k] for k in sql_keys ^ py_keys})
        _check_values(conn, ds, state, as_of, evaluations, stored)
    for category in ANOMALIES:
        sql_keys = set(conn.execute(sa.select(ds.key).where(ds.anomaly(category, as_of))).scalars())
        py_keys = {k for k, e in evaluations.items() if e.anomaly == category}
        assert sql_keys == py_keys, (category, as_of, {k: stored[k] for k in sql_keys ^ py_keys})


def _check_values(
    conn: sa.Connection, ds: DatasetSQL, state: str, as_of: dt.datetime, evaluations: dict[Any, Any], stored: Any
) -> None:
    """What plan and run fetch for due rows evaluates as explain's reading of the record.

    The set-based batches' shortcut for a due row's value (``select_due``,
    SQLite's own form by concatenation) must fetch exactly what ``values`` does.
    """
    rows = conn.execute(sa.select(ds.key, *ds.values()).where(ds.due(state, as_of))).all()
    shortcut = conn.execute(sa.select(ds.key, *(c.select_due() for c in ds.clocks)).where(ds.due(state, as_of)))
    assert {r[0]: tuple(r[1:]) for r in shortcut} == {r[0]: tuple(r[1:]) for r in rows}, (state, stored)
    for row in rows:
        evaluation = evaluate_record(ds.pack, ds.dataset, row[1:], as_of)
        expected = evaluations[row[0]]
        assert evaluation.anomaly is None and evaluation.due == expected.due, (row, stored[row[0]])
        days = [r.day for r in evaluation.readings]
        assert days == [r.day for r in expected.readings], (row, stored[row[0]])


SETTINGS = settings(
    max_examples=int(os.environ.get("RETENTION_PROPERTY_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def _records_table(kind: str) -> sa.Table:
    col_type, _ = KINDS[kind]
    return sa.Table(
        "records",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("clock", col_type),
    )


PERIODS = [("P3Y", "event"), ("P13M", "event"), ("P8D", "event"), ("P10Y", "financial_year_end")]
# Epochs store instants as numbers: storage is what differs between them, not
# calendar arithmetic, which the datetime kinds cover with every period.
COLUMN_CASES = [(k, p, a) for k in KINDS for p, a in PERIODS if not k.startswith("epoch") or p in ("P3Y", "P10Y")]


@pytest.mark.parametrize(("kind", "period", "anchor"), COLUMN_CASES)
def test_column_clock_sql_equals_python(engine: sa.Engine, kind: str, period: str, anchor: str) -> None:
    """For a single column clock of each storage kind and every stored form, SQL and Python agree."""
    _check_column(engine, kind, period, anchor)


@pytest.mark.slow  # the long variant (300 examples per kind); the fast tier runs every case at 30
@pytest.mark.parametrize("kind", list(KINDS))
def test_column_clock_sql_equals_python_long(engine: sa.Engine, kind: str) -> None:
    """The same with ten times the examples (run with -m slow)."""
    _check_column(engine, kind, "P13M", "event", settings(SETTINGS, max_examples=300))


# Expiry clocks (``expires: true``): due at the value itself, future values normal. A
# naive ``timestamp`` expiry must be in UTC, so timestamp_paris is not among them.
EXPIRY_KINDS = ["timestamptz", "timestamp_utc", "date", "epoch", "epoch_float", "epoch_text"]


@pytest.mark.parametrize("first_after", ["P0D", "P1D"])
@pytest.mark.parametrize("kind", EXPIRY_KINDS)
def test_expiry_clock_sql_equals_python(engine: sa.Engine, kind: str, first_after: str) -> None:
    """An expiry clock alone, due at its value (or a delay after it): SQL and Python agree, future is no anomaly."""
    _check_column(engine, kind, "", "event", expires=True, first_after=first_after)


@pytest.mark.parametrize("kind", ["timestamptz", "epoch", "date"])
def test_expiry_and_period_clocks_sql_equals_python(engine: sa.Engine, kind: str) -> None:
    """A period clock and an expiry clock together: due at the later of the two, on both sides."""
    md = sa.MetaData()
    table = sa.Table(
        "records",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("clock", KINDS["timestamp_utc"][0]),
        sa.Column("expiry", KINDS[kind][0]),
    )
    md.create_all(engine)
    expiry = {**KINDS[kind][1], "column": "expiry", "expires": True}
    pack = _pack([{"column": "clock", "type": "timestamp"}, expiry], [("P8D", "event"), ("", "event")])
    dialect = engine.dialect.name
    with engine.connect() as conn:
        ds = dataset_sql(conn, pack, "records")

    @SETTINGS
    @given(
        rows=st.lists(
            st.tuples(stored_values(dialect, "timestamp_utc"), stored_values(dialect, kind)), min_size=1, max_size=20
        ),
        as_of=as_ofs(),
    )
    def check(rows: list[tuple[Any, Any]], as_of: dt.datetime) -> None:
        with engine.begin() as conn:
            conn.execute(table.delete())
            stored = dict(enumerate(rows, start=1))
            _insert(
                conn,
                "records",
                {"clock": "timestamp_utc", "expiry": kind},
                [{"id": k, "clock": c, "expiry": e} for k, (c, e) in stored.items()],
            )
            _compare(conn, ds, stored, as_of)

    check()


@pytest.mark.parametrize("after_from", [("clock", "entry"), ("entry", "clock")])
@pytest.mark.parametrize(
    ("kind", "period", "anchor"), [("date", "P13M", "event"), ("timestamptz", "P10Y", "financial_year_end")]
)
def test_after_from_sql_equals_python(
    engine: sa.Engine, kind: str, period: str, anchor: str, after_from: tuple[str, str]
) -> None:
    """Lifecycle delays counted from the clock or from the entry day: SQL and Python agree."""
    _check_column(engine, kind, period, anchor, after_from=after_from)


def _check_column(
    engine: sa.Engine,
    kind: str,
    period: str,
    anchor: str,
    settings_: Any = SETTINGS,
    expires: bool = False,
    first_after: str = "P0D",
    after_from: tuple[str, str] = ("previous", "previous"),
) -> None:
    table = _records_table(kind)
    table.create(engine)
    clock = {**KINDS[kind][1], "expires": True} if expires else KINDS[kind][1]
    pack = _pack([clock], [(period, anchor)], first_after, after_from)
    dialect = engine.dialect.name
    with engine.connect() as conn:
        ds = dataset_sql(conn, pack, "records")

    @settings_
    @given(values=st.lists(stored_values(dialect, kind), min_size=1, max_size=25), as_of=as_ofs())
    def check(values: list[Any], as_of: dt.datetime) -> None:
        with engine.begin() as conn:
            conn.execute(table.delete())
            stored = dict(enumerate(values, start=1))
            _insert(conn, "records", {"clock": kind}, [{"id": k, "clock": v} for k, v in stored.items()])
            _compare(conn, ds, stored, as_of)

    check()


def _latest_of_tables(kind: str) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    md = sa.MetaData()
    parent = sa.Table(
        "records",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("clock", KINDS["timestamp_utc"][0]),
    )
    child = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("record_id", sa.Integer, index=True),
        sa.Column("kind", sa.String(20)),
        sa.Column("at", KINDS[kind][0]),
    )
    return md, parent, child


def _latest_of_pack(kind: str) -> Pack:
    aggregate = {**KINDS[kind][1], "column": "at"}
    aggregate.update(aggregate="max", table="events", on="record_id", where={"kind": "visit"})
    return _pack(
        [{"column": "clock", "type": "timestamp"}, aggregate],
        [("P3Y", "event"), ("P6Y", "event")],
    )


def _check_latest_of(engine: sa.Engine, kind: str, settings_: Any = SETTINGS) -> None:
    md, parent, child = _latest_of_tables(kind)
    md.create_all(engine)
    pack = _latest_of_pack(kind)
    dialect = engine.dialect.name
    with engine.connect() as conn:
        ds = dataset_sql(conn, pack, "records")

    @settings_
    @given(
        parents=st.lists(stored_values(dialect, "timestamp_utc"), min_size=1, max_size=12),
        children=st.lists(
            st.tuples(st.integers(1, 12), st.sampled_from(["visit", "visit", "other"]), stored_values(dialect, kind)),
            max_size=30,
        ),
        as_of=as_ofs(),
    )
    def check(parents: list[Any], children: list[tuple[int, str, Any]], as_of: dt.datetime) -> None:
        with engine.begin() as conn:
            conn.execute(child.delete())
            conn.execute(parent.delete())
            stored = dict(enumerate(parents, start=1))
            _insert(conn, "records", {"clock": "timestamp_utc"}, [{"id": k, "clock": v} for k, v in stored.items()])
            _insert(
                conn,
                "events",
                {"at": kind},
                [{"id": n, "record_id": r, "kind": k, "at": v} for n, (r, k, v) in enumerate(children, start=1)],
            )
            shown = {k: (v, [(e[1], e[2]) for e in children if e[0] == k]) for k, v in stored.items()}
            _compare(conn, ds, shown, as_of)

    check()


@pytest.mark.parametrize("kind", ["timestamptz", "epoch_text", "date", "epoch_float"])
def test_latest_of_aggregate_and_column_agree(engine: sa.Engine, kind: str) -> None:
    """Latest-of a column clock (P3Y) and max over related rows (P6Y), invalid related rows included."""
    _check_latest_of(engine, kind)


@pytest.mark.slow  # the long variant (300 examples per kind); the fast tier runs four kinds at 30
@pytest.mark.parametrize("kind", ["timestamptz", "timestamp_paris", "epoch_text", "date", "epoch", "epoch_float"])
def test_latest_of_aggregate_and_column_agree_long(engine: sa.Engine, kind: str) -> None:
    """The same over every kind with ten times the examples (run with -m slow)."""
    _check_latest_of(engine, kind, settings(SETTINGS, max_examples=300))


def test_explain_clock_values_reads_an_aggregate_row_by_row(engine: sa.Engine) -> None:
    """One garbage meta value among valid ones makes the clock invalid; explain says why, not what."""
    _latest_of_tables("epoch_text")[0].create_all(engine)
    pack = _latest_of_pack("epoch_text")
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        _insert(conn, "records", {}, [{"id": 1, "clock": None}, {"id": 2, "clock": None}, {"id": 3, "clock": None}])
        events = [(1, "visit", "1500000000"), (1, "visit", "not a date"), (2, "visit", "1500000000")]
        events += [(2, "other", "junk"), (2, "visit", "1600000000")]
        _insert(
            conn,
            "events",
            {},
            [{"id": n, "record_id": r, "kind": k, "at": v} for n, (r, k, v) in enumerate(events, start=1)],
        )
        first = explain_clock_values(conn, pack, "records", 1, as_of)
        second = explain_clock_values(conn, pack, "records", 2, as_of)
        assert explain_clock_values(conn, pack, "records", 3, as_of) is not None
        assert explain_clock_values(conn, pack, "records", 4, as_of) is None
    assert first is not None and second is not None
    assert first[1].anomaly == "invalid"
    assert first[1].detail == "1 of 2 related rows invalid: not digits without a leading zero"
    assert second[1].anomaly is None
    assert second[1].instant == dt.datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)  # 1600000000, 'junk' filtered out
    dataset = pack.datasets["records"]
    assert evaluate_readings(pack, dataset, first).anomaly == "invalid"
    assert evaluate_readings(pack, dataset, second).due["inactive"] == dt.datetime(2026, 9, 13, 22, tzinfo=UTC)


# --------------------------------------------------------------------------
# Hand-written expectations: the documented forms, read the documented way
# --------------------------------------------------------------------------

AS_OF = dt.datetime(2030, 1, 1, tzinfo=UTC)
# (stored value, clock type, expected class, expected instant (UTC) or date for a valid one)
SQLITE_FORMS: list[tuple[Any, str, str | None, dt.datetime | dt.date | None]] = [
    ("2020-02-29T09:00:00+01:00", "timestamptz", None, dt.datetime(2020, 2, 29, 8, tzinfo=UTC)),
    ("2020-02-29 09:00", "timestamptz", None, dt.datetime(2020, 2, 29, 9, tzinfo=UTC)),
    ("2020-02-29T23:30:00-01:00", "timestamptz", None, dt.datetime(2020, 3, 1, 0, 30, tzinfo=UTC)),
    ("2020-02-29T09:00:00.5Z", "timestamptz", None, dt.datetime(2020, 2, 29, 9, 0, 0, 500000, tzinfo=UTC)),
    ("2020-02-29T09:00:00.000001-14:59", "timestamptz", None, dt.datetime(2020, 2, 29, 23, 59, 0, 1, tzinfo=UTC)),
    ("2020-02-29", "timestamptz", None, dt.datetime(2020, 2, 29, tzinfo=UTC)),
    ("2020-02-29 09:00:00.123456", "timestamp", None, dt.datetime(2020, 2, 29, 9, 0, 0, 123456, tzinfo=UTC)),
    ("2020-02-29T09:00", "timestamp", None, dt.datetime(2020, 2, 29, 9, tzinfo=UTC)),
    ("2020-02-29", "date", None, dt.date(2020, 2, 29)),
    ("1899-12-31T23:30-01:00", "timestamptz", None, dt.datetime(1900, 1, 1, 0, 30, tzinfo=UTC)),
    ("2020-02-29 00:00", "date", "invalid", None),
    ("2020-02-29T09:00:00+01:00", "timestamp", "invalid", None),
    ("2020-02-30", "timestamptz", "invalid", None),
    ("2021-02-29", "date", "invalid", None),
    ("2020-01-01 24:00", "timestamptz", "invalid", None),
    ("2020-01-01T10:00+15:00", "timestamptz", "invalid", None),
    ("2020-01-01T10:00+01:60", "timestamptz", "invalid", None),
    ("2020-01-01Z", "timestamptz", "invalid", None),
    ("2020-01-01 10:00:00.1234567", "timestamptz", "invalid", None),
    ("2020-01-01t10:00", "timestamptz", "invalid", None),
    ("2020-01-01garbage", "timestamp", "invalid", None),
    ("now", "timestamptz", "invalid", None),
    ("10:00:00", "timestamp", "invalid", None),
    (20200101, "timestamptz", "invalid", None),
    (2459000.5, "date", "invalid", None),
    (b"2020-01-01", "date", "invalid", None),
    ("0000-00-00 00:00:00", "timestamptz", "zero", None),
    ("0000-00-00", "date", "zero", None),
    ("0000-02-29", "date", "zero", None),
    ("1900-01-01T00:30+01:00", "timestamptz", "zero", None),
    ("1899-12-31 23:59:59.999999", "timestamp", "zero", None),
    ("9999-12-31T23:00-14:00", "timestamptz", "future", None),
    ("2031-05-17", "date", "future", None),
]


@pytest.mark.parametrize(("text", "kind", "expected", "when"), SQLITE_FORMS)
def test_sqlite_text_forms_read_as_documented(
    tmp_path: Path, text: Any, kind: str, expected: str | None, when: Any
) -> None:
    """Each documented SQLite form reads as docs/rules.md says, in Python and in SQL alike."""
    engine = create_engine(f"sqlite:///{tmp_path / 'forms.sqlite'}")
    reading = read_value(kind, "clock", "UTC", text, AS_OF, "UTC")
    assert reading.anomaly == expected
    if isinstance(when, dt.datetime):
        assert reading.instant == when
    elif when is not None:
        assert reading.day == when
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE records (id INTEGER PRIMARY KEY, clock TEXT)")
        engine.dispose()  # nothing pooled outlives the test (the connection is checked out)
        conn.exec_driver_sql("INSERT INTO records VALUES (1, ?)", (text,))
        pack = _pack([{"column": "clock", "type": kind}], [("P0D", "event")])
        ds = dataset_sql(conn, pack, "records")
        found = [c for c in ANOMALIES if conn.execute(sa.select(ds.key).where(ds.anomaly(c, AS_OF))).first()]
        assert found == ([expected] if expected else [])
        due = conn.execute(sa.select(*ds.values()).where(ds.due("purged", AS_OF))).first()
        assert (due is not None) == (expected is None)
        if isinstance(when, dt.datetime):
            assert due is not None and due[0] == when.strftime("%Y-%m-%d %H:%M:%S.%f")  # the normal form


@pytest.mark.only_on("mariadb")
def test_mariadb_zero_in_date_and_missing_days_are_invalid(engine: sa.Engine) -> None:
    """Zero-in-date and days that do not exist are invalid on both sides; the zero date stays zero."""
    expected = {
        "2020-00-00 00:00:00": "invalid",
        "2020-01-00 10:00:00": "invalid",
        "2021-02-29 10:00:00": "invalid",
        "2020-04-31 00:00:00": "invalid",
        "0000-00-05 00:00:00": "invalid",
        "0000-00-00 00:00:00": "zero",
        "0000-02-29 00:00:00": "zero",
        "2020-02-29 10:00:00": None,
    }
    _records_table("timestamp_utc").create(engine)
    pack = _pack([KINDS["timestamp_utc"][1]], [("P0D", "event")])
    stored = dict(enumerate(expected, start=1))
    with engine.begin() as conn:
        _insert(conn, "records", {}, [{"id": k, "clock": v} for k, v in stored.items()])
        ds = dataset_sql(conn, pack, "records")
        for category in ANOMALIES:
            keys = set(conn.execute(sa.select(ds.key).where(ds.anomaly(category, AS_OF))).scalars())
            assert {stored[k] for k in keys} == {v for v, c in expected.items() if c == category}, category
        due = conn.execute(sa.select(ds.key, *ds.values()).where(ds.due("purged", AS_OF))).all()
        assert [(stored[k], v) for k, v in due] == [("2020-02-29 10:00:00", dt.datetime(2020, 2, 29, 10))]
        for key, text in stored.items():
            readings = ds.readings(conn, key, AS_OF)
            assert readings is not None and readings[0].anomaly == expected[text], text


@pytest.mark.only_on("postgresql")
def test_postgresql_values_psycopg_cannot_load(engine: sa.Engine) -> None:
    """infinity, BC dates and years after 9999 are classified in SQL and read safely by explain."""
    expected = {
        "infinity": "future",
        "-infinity": "zero",
        "0044-03-15 10:00:00+00 BC": "zero",
        "10000-01-01 00:00:00+00": "future",
        "2020-02-29 10:00:00+00": None,
    }
    _records_table("timestamptz").create(engine)
    pack = _pack([KINDS["timestamptz"][1]], [("P0D", "event")])
    stored = dict(enumerate(expected, start=1))
    with engine.begin() as conn:
        _insert(conn, "records", {"clock": "timestamptz"}, [{"id": k, "clock": v} for k, v in stored.items()])
        ds = dataset_sql(conn, pack, "records")
        for category in ANOMALIES:
            keys = set(conn.execute(sa.select(ds.key).where(ds.anomaly(category, AS_OF))).scalars())
            assert {stored[k] for k in keys} == {v for v, c in expected.items() if c == category}, category
        due = conn.execute(sa.select(ds.key, *ds.values()).where(ds.due("purged", AS_OF))).all()
        assert [(stored[k], v) for k, v in due] == [
            ("2020-02-29 10:00:00+00", dt.datetime(2020, 2, 29, 10, tzinfo=UTC))
        ]
        shown = {}
        for key, text in stored.items():
            readings = ds.readings(conn, key, AS_OF)
            assert readings is not None and readings[0].anomaly == expected[text], text
            shown[text] = readings[0].raw
    assert shown["infinity"] == "infinity" and shown["-infinity"] == "-infinity"
    assert shown["0044-03-15 10:00:00+00 BC"] == "0044-03-15 10:00:00+00 BC"


# --------------------------------------------------------------------------
# A MariaDB database with a non-default collation
# --------------------------------------------------------------------------


@pytest.fixture
def collated_engine(engine: sa.Engine) -> sa.Engine:
    """The isolated MariaDB database, switched to COLLATE utf8mb4_unicode_520_ci before any table exists."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE `{engine.url.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"
        )
    engine.dispose()  # new connections see the new default
    return engine


FEW = settings(SETTINGS, max_examples=10)


@pytest.mark.only_on("mariadb")
@pytest.mark.parametrize("kind", ["epoch_text", "timestamptz"])
def test_mariadb_unicode_520_collation(collated_engine: sa.Engine, kind: str) -> None:
    """On a utf8mb4_unicode_520_ci database, SQL and Python still agree (text clocks and aggregates)."""
    with collated_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@collation_database").scalar_one() == "utf8mb4_unicode_520_ci"
    _check_latest_of(collated_engine, kind, FEW)


# --------------------------------------------------------------------------
# The due predicate stays index-friendly
# --------------------------------------------------------------------------


@pytest.mark.only_on("sqlite", "postgresql")
@pytest.mark.parametrize("kind", ["timestamptz", "timestamp_paris", "date"])
def test_due_predicate_uses_the_clock_index(engine: sa.Engine, kind: str) -> None:
    """The due range on a plain column clock is served by the clock's index, not a scan."""
    table = _records_table(kind)
    sa.Index("ix_records_clock", table.c.clock)
    table.metadata.create_all(engine)
    pack = _pack([KINDS[kind][1]], [("P3Y", "event")])
    with engine.begin() as conn:
        ds = dataset_sql(conn, pack, "records")
        query = sa.select(ds.key).where(ds.due("inactive", dt.datetime(2024, 3, 31, 12, tzinfo=UTC)))
        compiled = query.compile(conn)
        params = compiled.construct_params()
        if conn.dialect.name == "sqlite":
            positional = tuple(params[name] for name in compiled.positiontup or [])
            plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional))
            assert "USING INDEX ix_records_clock (clock>? AND clock<?)" in plan or (
                "USING COVERING INDEX ix_records_clock (clock>? AND clock<?)" in plan
            ), plan
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}", params))
            assert "ix_records_clock" in plan and "Index Cond: ((clock >= " in plan, plan
