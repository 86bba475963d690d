"""SQL evaluation and per-record Python evaluation agree, on every database.

For every clock storage kind, hypothesis draws clocks clustered around month
ends, 29 February and the Europe/Paris DST changes, stores them in a real
table, and draws an as-of instant near the interesting boundaries. The keys
the SQL predicate selects for each lifecycle state must equal the keys the
Python evaluator says are due, and the anomaly counts must match.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql

from retention.evaluate import ANOMALIES, dataset_sql, evaluate_record
from retention.policy import validate_pack
from retention.policy.model import Pack

UTC = dt.UTC
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

# kind -> (sqlalchemy column type, keep rule clock dict)
KINDS: dict[str, tuple[Any, dict[str, Any]]] = {
    "timestamptz": (
        sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        {"column": "clock", "type": "timestamptz"},
    ),
    "timestamp_utc": (
        sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        {"column": "clock", "type": "timestamp", "timezone": "UTC"},
    ),
    "timestamp_paris": (
        sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        {"column": "clock", "type": "timestamp", "timezone": "Europe/Paris"},
    ),
    "date": (sa.Date(), {"column": "clock", "type": "date"}),
    "epoch": (sa.BigInteger(), {"column": "clock", "type": "epoch"}),
    "epoch_text": (sa.String(20), {"column": "clock", "type": "epoch_text"}),
}


def _pack(keep: list[dict[str, Any]], periods_anchor: list[tuple[str, str]]) -> Pack:
    data = {
        "pack": "prop",
        "version": "1",
        "effective_from": dt.date(2000, 1, 1),
        "timezone": "Europe/Paris",
        "datasets": {
            "records": {
                "table": "records",
                "key": "id",
                "basis": "test",
                "keep": [
                    {"clock": clock, "period": period, "anchor": anchor}
                    for clock, (period, anchor) in zip(keep, periods_anchor, strict=True)
                ],
                "lifecycle": [
                    {"to": "inactive", "action": "deactivate", "set": {"active": False}},
                    {
                        "to": "archived",
                        "after": "P1M",
                        "action": "archive",
                        "columns": ["id"],
                        "then": "delete",
                    },
                    {"to": "purged", "after": "P1Y"},
                ],
            }
        },
    }
    return validate_pack(data, Path("<test>"), "").pack


@st.composite
def instants(draw: st.DrawFn) -> dt.datetime:
    """An aware instant within ±36 hours of an interesting local date."""
    day = draw(st.sampled_from(INTERESTING))
    minutes = draw(st.integers(-36 * 60, 36 * 60))
    seconds = draw(st.sampled_from([0, 0, 0, 1, 59]))
    micro = draw(st.sampled_from([0, 0, 0, 1, 999_999]))
    base = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    return (base + dt.timedelta(minutes=minutes, seconds=seconds, microseconds=micro)).astimezone(UTC)


@st.composite
def clock_values(draw: st.DrawFn, kind: str) -> Any:
    """A raw value for a column of ``kind``, sometimes NULL, zero or in the future."""
    choice = draw(st.sampled_from(["ok"] * 8 + ["null", "zero", "future"]))
    if choice == "null":
        return None
    instant = draw(instants())
    if choice == "zero":
        instant = dt.datetime(1899, 12, 31, 12, tzinfo=UTC) if kind not in ("epoch", "epoch_text") else None
        if instant is None:
            return 0 if kind == "epoch" else draw(st.sampled_from(["0", "abc", "", "-5", "0123"]))
    if choice == "future":
        instant = dt.datetime(2031, 5, 17, 10, tzinfo=UTC)
    return to_storage(kind, instant)


def to_storage(kind: str, instant: dt.datetime) -> Any:
    if kind == "timestamptz":
        return instant
    if kind == "timestamp_utc":
        return instant.astimezone(UTC).replace(tzinfo=None)
    if kind == "timestamp_paris":
        import pendulum

        local = pendulum.instance(instant).in_timezone("Europe/Paris")
        return dt.datetime(
            local.year,
            local.month,
            local.day,
            local.hour,
            local.minute,
            local.second,
            local.microsecond,
        )
    if kind == "date":
        import pendulum

        return pendulum.instance(instant).in_timezone("Europe/Paris").date()
    seconds = int(instant.timestamp())
    return seconds if kind == "epoch" else str(seconds)


def _store(dialect: str, kind: str, value: Any) -> Any:
    """Adapt a value to how the column stores it on ``dialect``."""
    if kind == "timestamptz" and value is not None and dialect != "postgresql":
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


AS_OF_SHIFTS = [dt.timedelta(days=d) for d in (0, 1, 31, 365, 366 + 31, 3 * 365 + 1, 397, 800, 1200)]


@st.composite
def as_ofs(draw: st.DrawFn) -> dt.datetime:
    base = draw(instants())
    return base + draw(st.sampled_from(AS_OF_SHIFTS))


def _compare(conn: sa.Connection, pack: Pack, raws_by_key: dict[int, list[Any]], as_of: dt.datetime) -> None:
    ds = dataset_sql(conn, pack, "records")
    dataset = pack.datasets["records"]
    evaluations = {k: evaluate_record(pack, dataset, raws, as_of) for k, raws in raws_by_key.items()}
    for state in ("inactive", "archived", "purged"):
        sql_keys = set(conn.execute(sa.select(ds.key).where(ds.due(state, as_of))).scalars())
        py_keys = {k for k, e in evaluations.items() if e.anomaly is None and e.due[state] <= as_of}
        assert sql_keys == py_keys, (state, as_of, {k: raws_by_key[k] for k in sql_keys ^ py_keys})
    for category in ANOMALIES:
        sql_keys = set(conn.execute(sa.select(ds.key).where(ds.anomaly(category, as_of))).scalars())
        py_keys = {k for k, e in evaluations.items() if e.anomaly == category}
        assert sql_keys == py_keys, (
            category,
            as_of,
            {k: raws_by_key[k] for k in sql_keys ^ py_keys},
        )


def _read_back(conn: sa.Connection, table: sa.Table) -> dict[int, Any]:
    return {row.id: row.clock for row in conn.execute(sa.select(table.c.id, table.c.clock))}


SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    ("period", "anchor"),
    [("P3Y", "event"), ("P13M", "event"), ("P8D", "event"), ("P10Y", "financial_year_end")],
)
def test_column_clock_sql_equals_python(engine: sa.Engine, kind: str, period: str, anchor: str) -> None:
    """For a single column clock of each storage kind, SQL and Python select the same keys."""
    col_type, clock = KINDS[kind]
    table = sa.Table(
        "records",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("clock", col_type),
    )
    table.create(engine)
    pack = _pack([clock], [(period, anchor)])

    @SETTINGS
    @given(values=st.lists(clock_values(kind), min_size=1, max_size=25), as_of=as_ofs())
    def check(values: list[Any], as_of: dt.datetime) -> None:
        with engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(
                table.insert(),
                [{"id": i, "clock": _store(engine.dialect.name, kind, v)} for i, v in enumerate(values, start=1)],
            )
            stored = _read_back(conn, table)
            _compare(conn, pack, {k: [v] for k, v in stored.items()}, as_of)

    check()


@pytest.mark.parametrize("kind", ["timestamptz", "epoch_text", "date"])
def test_latest_of_aggregate_and_column_agree(engine: sa.Engine, kind: str) -> None:
    """Latest-of a column clock (P3Y) and max over a related table (P6Y): SQL equals Python."""
    col_type, _ = KINDS[kind]
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
        sa.Column("at", col_type),
    )
    md.create_all(engine)
    pack = _pack(
        [
            {"column": "clock", "type": "timestamp"},
            {
                "aggregate": "max",
                "table": "events",
                "on": "record_id",
                "column": "at",
                "type": kind if kind != "timestamp_utc" else "timestamp",
                "where": {"kind": "visit"},
            },
        ],
        [("P3Y", "event"), ("P6Y", "event")],
    )
    dialect = engine.dialect.name

    @SETTINGS
    @given(
        parents=st.lists(clock_values("timestamp_utc"), min_size=1, max_size=12),
        children=st.lists(
            st.tuples(st.integers(1, 12), st.sampled_from(["visit", "visit", "other"]), clock_values(kind)),
            max_size=30,
        ),
        as_of=as_ofs(),
    )
    def check(parents: list[Any], children: list[tuple[int, str, Any]], as_of: dt.datetime) -> None:
        with engine.begin() as conn:
            conn.execute(child.delete())
            conn.execute(parent.delete())
            conn.execute(parent.insert(), [{"id": i, "clock": v} for i, v in enumerate(parents, start=1)])
            if children:
                conn.execute(
                    child.insert(),
                    [
                        {"id": n, "record_id": r, "kind": k, "at": _store(dialect, kind, v)}
                        for n, (r, k, v) in enumerate(children, start=1)
                    ],
                )
            own = _read_back(conn, parent)
            related = conn.execute(sa.select(child.c.record_id, child.c.at).where(child.c.kind == "visit")).all()
            raws = {k: [v, _python_max(kind, [at for rid, at in related if rid == k])] for k, v in own.items()}
            _compare(conn, pack, raws, as_of)

    check()


def _python_max(kind: str, values: list[Any]) -> Any:
    """The aggregate the engine documents, computed independently from raw rows."""
    present = [v for v in values if v is not None]
    if kind == "epoch_text":
        numbers = [int(v) for v in present if v.isdigit() and not v.startswith("0")]
        return max(numbers) if numbers else None
    if kind == "timestamptz":
        present = [v.replace(tzinfo=UTC) if v.tzinfo is None else v for v in present]
    return max(present) if present else None
