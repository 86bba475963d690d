"""Clocks to due dates, twice: as set-based SQL and per record in Python.

The SQL side never applies a date function to a clock column: for each
(keep rule, target state) the exact cutoff is computed once in Python with
:class:`retention.clock.Schedule` and the column is compared against it, so
an index on the column serves the query. The Python side (used by
``explain``) computes each record's due instants forward from its clock
values. A property test holds the two to the same answer on every database.

Anomalies: a NULL clock justifies nothing (a record whose clocks are all
NULL is skipped); a zero date (before 1900, epoch <= 0), an unparsable epoch
string or a clock in the future relative to the as-of instant makes the
record skipped and counted, never moved.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.clock import Schedule, as_aware, due_instant, local_date, start_of_day, zone
from retention.errors import SchemaError
from retention.policy.model import Clock, Dataset, Pack

Anomaly = Literal["null", "zero", "invalid", "future"]
ANOMALIES: tuple[Anomaly, ...] = ("null", "zero", "invalid", "future")

FLOOR_DATE = dt.date(1900, 1, 1)
FLOOR_NAIVE = dt.datetime(1900, 1, 1)  # noqa: DTZ001 - compared with naive column values
FLOOR_INSTANT = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_EPOCH_TEXT = re.compile(r"[1-9][0-9]*")


# --------------------------------------------------------------------------
# Python: one record
# --------------------------------------------------------------------------


@dataclass(slots=True)
class ClockReading:
    """One clock of one record, classified."""

    label: str
    raw: Any
    anomaly: Anomaly | None
    day: dt.date | None  # local date in the policy timezone
    instant: dt.datetime | None

    def moment(self, policy_tz: str) -> dt.datetime | None:
        """When the clock reads: its instant, or the start of its local day for a date."""
        if self.instant is not None:
            return self.instant
        return start_of_day(self.day, policy_tz) if self.day is not None else None


def _effective_type(clock: Clock) -> str:
    # max() over epoch strings is taken numerically, so the result is an epoch.
    return "epoch" if clock.aggregate and clock.type == "epoch_text" else clock.type


def _to_datetime(raw: Any) -> dt.datetime | str:
    if isinstance(raw, dt.datetime):
        return raw
    if isinstance(raw, dt.date):
        return dt.datetime(raw.year, raw.month, raw.day)  # noqa: DTZ001 - naive by nature
    text = str(raw)
    if text.startswith("0000-00-00"):
        return text
    return dt.datetime.fromisoformat(text)


def read_clock(clock: Clock, raw: Any, as_of: dt.datetime, policy_tz: str) -> ClockReading:
    """Classify a clock's raw database value and find its local date."""
    kind = _effective_type(clock)
    label = clock.label()
    if raw is None:
        return ClockReading(label, raw, "null", None, None)
    if kind in ("timestamptz", "timestamp"):
        value = _to_datetime(raw)
        if isinstance(value, str):  # MySQL zero date comes back as text
            return ClockReading(label, raw, "zero", None, None)
        if kind == "timestamptz":
            instant = as_aware(value, "UTC")
            if instant < FLOOR_INSTANT:
                return ClockReading(label, raw, "zero", None, None)
            if instant > as_of:
                return ClockReading(label, raw, "future", None, instant)
            return ClockReading(label, raw, None, local_date(instant, policy_tz), instant)
        naive = value.replace(tzinfo=None) if value.tzinfo else value
        naive_zone = clock.naive_timezone
        if naive < FLOOR_NAIVE:
            return ClockReading(label, raw, "zero", None, None)
        # Wall-clock comparison in the column's own zone: a naive reading is in
        # the future when it is later than the as-of instant's reading there.
        if naive > _naive_in(as_of, naive_zone):
            return ClockReading(label, raw, "future", None, None)
        instant = as_aware(naive, naive_zone)
        day = naive.date() if naive_zone == policy_tz else local_date(instant, policy_tz)
        return ClockReading(label, raw, None, day, instant)
    if kind == "date":
        if isinstance(raw, dt.datetime):
            day = raw.date()
        elif isinstance(raw, dt.date):
            day = raw
        else:
            text = str(raw)
            if text.startswith("0000-00-00"):
                return ClockReading(label, raw, "zero", None, None)
            day = dt.date.fromisoformat(text[:10])
        if day < FLOOR_DATE:
            return ClockReading(label, raw, "zero", None, None)
        if day > local_date(as_of, policy_tz):
            return ClockReading(label, raw, "future", None, None)
        return ClockReading(label, raw, None, day, None)
    # epoch and epoch_text
    if kind == "epoch_text":
        text = str(raw)
        if not _EPOCH_TEXT.fullmatch(text):
            return ClockReading(label, raw, "invalid", None, None)
        seconds = int(text)
    else:
        seconds = int(raw) if not isinstance(raw, float | Decimal) else int(float(raw))
    if seconds <= 0:
        return ClockReading(label, raw, "zero", None, None)
    if seconds > int(as_of.timestamp()):
        return ClockReading(label, raw, "future", None, None)
    instant = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return ClockReading(label, raw, None, local_date(instant, policy_tz), instant)


def _naive_in(instant: dt.datetime, zone_name: str) -> dt.datetime:
    """The wall-clock reading of ``instant`` in ``zone_name``, naive on purpose."""
    return instant.astimezone(zone(zone_name)).replace(tzinfo=None)


@dataclass(slots=True)
class RecordEvaluation:
    """Why and when one record becomes due for each state of its lifecycle."""

    readings: tuple[ClockReading, ...]
    anomaly: Anomaly | None
    due: dict[str, dt.datetime] = field(default_factory=dict)  # state -> due instant
    governing: dict[str, int] = field(default_factory=dict)  # state -> keep rule index

    def reached(self, as_of: dt.datetime) -> list[str]:
        """States whose due instant is on or before ``as_of``, in order."""
        return [state for state, when in self.due.items() if when <= as_of]


DueCache = dict[tuple[dt.date | None, ...], tuple[dict[str, dt.datetime], dict[str, int]]]


def evaluate_record(
    pack: Pack,
    dataset: Dataset,
    raws: Sequence[Any],
    as_of: dt.datetime,
    cache: DueCache | None = None,
) -> RecordEvaluation:
    """Evaluate an active record from its raw clock values (one per keep rule).

    The record is kept while any justification holds, so each state is due
    at the latest of the per-clock due instants; NULL clocks hold nothing.
    Due dates depend on the clocks' local dates only, and a batch's records
    share few dates, so a caller evaluating many records of one dataset
    passes a ``cache`` (keyed by those dates) that it keeps between calls.
    """
    tz = pack.timezone
    keep = dataset.keep
    if len(keep) == 1:  # the common case, kept lean: a purge evaluates every record it moves
        if len(raws) != 1:
            raise ValueError(f"dataset has one clock, got {len(raws)} values")
        reading = read_clock(keep[0].clock, raws[0], as_of, tz)
        readings: tuple[ClockReading, ...] = (reading,)
        if reading.anomaly is not None:
            return RecordEvaluation(readings, reading.anomaly)
        days: tuple[dt.date | None, ...] = (reading.day,)
    else:
        readings = tuple(read_clock(rule.clock, raw, as_of, tz) for rule, raw in zip(keep, raws, strict=True))
        blocking = [r.anomaly for r in readings if r.anomaly not in (None, "null")]
        if blocking:
            return RecordEvaluation(readings, blocking[0])
        if all(r.anomaly == "null" for r in readings):
            return RecordEvaluation(readings, "null")
        days = tuple(r.day for r in readings)
    if cache is not None:
        known = cache.get(days)
        if known is not None:
            return RecordEvaluation(readings, None, known[0], known[1])
    due: dict[str, dt.datetime] = {}
    governing: dict[str, int] = {}
    for step in dataset.lifecycle:
        schedules = dataset.schedules(step.to, pack.financial_year_end)
        best: tuple[dt.date, int] | None = None
        for index, (reading, schedule) in enumerate(zip(readings, schedules, strict=True)):
            if reading.day is None:
                continue
            day = schedule.due_date(reading.day)
            if best is None or day > best[0]:
                best = (day, index)
        assert best is not None
        due[step.to] = due_instant(best[0], tz)
        governing[step.to] = best[1]
    if cache is not None and len(cache) < 100_000:
        cache[days] = (due, governing)
    return RecordEvaluation(readings, None, due, governing)


# --------------------------------------------------------------------------
# SQL: the whole table
# --------------------------------------------------------------------------


def reflect_table(conn: sa.Connection, name: str, schema: str | None = None) -> sa.Table:
    """Reflect a source table, or raise a SchemaError naming it."""
    try:
        return sa.Table(name, sa.MetaData(), autoload_with=conn, schema=schema)
    except sa.exc.NoSuchTableError:
        where = f"{schema}.{name}" if schema else name
        raise SchemaError([f"table {where!r} does not exist"]) from None


def column_of(table: sa.Table, name: str, role: str) -> sa.ColumnElement[Any]:
    try:
        return table.c[name]
    except KeyError:
        valid = ", ".join(table.c.keys())
        raise SchemaError([f"table {table.name!r} has no column {name!r} ({role}); columns: {valid}"]) from None


@dataclass
class ClockSQL:
    """The SQL value of one clock for a row of the dataset's table, and its comparisons."""

    clock: Clock
    value: ColumnElement[Any]
    kind: str
    dialect: str
    policy_tz: str

    # -- bounds rendered for this column's storage ------------------------
    def _instant_bound(self, instant: dt.datetime, *, upper: bool = True) -> ColumnElement[Any]:
        """Bind an instant the way this column stores it.

        ``upper`` says the column is compared with ``<`` (cutoffs, always whole
        seconds); otherwise with ``>`` (the as-of instant, any microsecond).
        """
        if self.kind == "timestamptz":
            if self.dialect == "postgresql":
                return sa.literal(instant, sa.DateTime(timezone=True))
            naive = instant.astimezone(dt.UTC).replace(tzinfo=None)
        else:  # naive timestamp in its declared zone
            naive = _naive_in(instant, self.clock.naive_timezone)
        return self._naive_bound(naive, upper=upper)

    def _naive_bound(self, naive: dt.datetime, *, upper: bool) -> ColumnElement[Any]:
        if self.dialect != "sqlite":
            return sa.literal(naive, sa.DateTime())
        # SQLite compares text. Below a whole-second cutoff, render it without
        # a fraction so both '..:00' and '..:00.000000' sort at or above it;
        # above a bound, render all six fraction digits so a stored '.000000'
        # equal to it does not sort above it.
        if upper and naive.microsecond == 0:
            return sa.literal(naive.strftime("%Y-%m-%d %H:%M:%S"), sa.String)
        return sa.literal(naive.strftime("%Y-%m-%d %H:%M:%S.%f"), sa.String)

    def _date_bound(self, day: dt.date) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return sa.literal(day.isoformat(), sa.String)
        return sa.literal(day, sa.Date())

    def epoch_text_valid(self) -> ColumnElement[bool]:
        v = self.value
        if self.dialect == "sqlite":
            return sa.and_(
                v.op("GLOB", is_comparison=True)("[1-9]*"),
                sa.not_(v.op("GLOB", is_comparison=True)("*[^0-9]*")),
            )
        if self.dialect == "postgresql":
            return v.op("~", is_comparison=True)("^[1-9][0-9]*$")
        return v.op("REGEXP", is_comparison=True)("^[1-9][0-9]*$")

    def _epoch_text_cmp(self, seconds: int, op: str) -> ColumnElement[bool]:
        text = str(seconds)
        length = sa.func.length(self.value)
        n = len(text)
        if op == "<":
            ordered = sa.or_(length < n, sa.and_(length == n, self.value < text))
        else:
            ordered = sa.or_(length > n, sa.and_(length == n, self.value > text))
        return sa.and_(self.epoch_text_valid(), ordered)

    # -- predicates --------------------------------------------------------
    def is_null(self) -> ColumnElement[bool]:
        if self.dialect in ("mysql", "mariadb") and self.kind in (
            "timestamp",
            "timestamptz",
            "date",
        ):
            # MySQL matches zero dates of NOT NULL columns with `IS NULL`;
            # the null-safe comparison does not.
            return self.value.is_not_distinct_from(None)
        return self.value.is_(None)

    def before_day_after(self, last_day: dt.date) -> ColumnElement[bool]:
        """Valid clock whose local date is on or before ``last_day``."""
        next_day = last_day + dt.timedelta(days=1)
        if self.kind == "date":
            return sa.and_(self.value >= self._date_bound(FLOOR_DATE), self.value < self._date_bound(next_day))
        cutoff = start_of_day(next_day, self.policy_tz)
        if self.kind == "timestamp" and self.clock.naive_timezone == self.policy_tz:
            naive_cut = dt.datetime(next_day.year, next_day.month, next_day.day)  # noqa: DTZ001
            bound = self._naive_bound(naive_cut, upper=True)
            return sa.and_(self.value >= self._instant_floor(), self.value < bound)
        if self.kind in ("timestamp", "timestamptz"):
            return sa.and_(self.value >= self._instant_floor(), self.value < self._instant_bound(cutoff))
        seconds = int(cutoff.timestamp())
        if self.kind == "epoch_text":
            return self._epoch_text_cmp(seconds, "<")
        return sa.and_(self.value > 0, self.value < seconds)

    def _instant_floor(self) -> ColumnElement[Any]:
        if self.kind == "timestamptz" and self.dialect == "postgresql":
            return sa.literal(FLOOR_INSTANT, sa.DateTime(timezone=True))
        if self.dialect == "sqlite":
            return sa.literal("1900-01-01 00:00:00", sa.String)
        return sa.literal(FLOOR_NAIVE, sa.DateTime())

    def anomaly(self, category: Anomaly, as_of: dt.datetime) -> ColumnElement[bool]:
        """Rows whose clock falls in ``category``."""
        v = self.value
        if category == "null":
            return self.is_null()
        if self.kind == "epoch_text":
            if category == "invalid":
                return sa.and_(v.is_not(None), sa.not_(self.epoch_text_valid()))
            if category == "future":
                return self._epoch_text_cmp(int(as_of.timestamp()), ">")
            return sa.false()
        if category == "invalid":
            return sa.false()
        if self.kind == "epoch":
            return v <= 0 if category == "zero" else v > int(as_of.timestamp())
        if self.kind == "date":
            if category == "zero":
                return v < self._date_bound(FLOOR_DATE)
            return v > self._date_bound(local_date(as_of, self.policy_tz))
        if category == "zero":
            return v < self._instant_floor()
        return v > self._instant_bound(as_of, upper=False)


def clock_sql(conn: sa.Connection, table: sa.Table, dataset: Dataset, clock: Clock, policy_tz: str) -> ClockSQL:
    """Build the SQL value of ``clock`` for rows of ``table``."""
    dialect = conn.dialect.name
    if clock.aggregate is None:
        value: ColumnElement[Any] = column_of(table, clock.column, "clock")
        return ClockSQL(clock, value, clock.type, dialect, policy_tz)
    assert clock.table is not None and clock.on is not None
    related = reflect_table(conn, clock.table, dataset.schema_)
    rel_col = column_of(related, clock.column, f"clock of {dataset.table}")
    on_col = column_of(related, clock.on, "aggregate join")
    ref_col = column_of(table, clock.references or dataset.key, "aggregate reference")
    conditions = [on_col == ref_col]
    for name, wanted in (clock.where or {}).items():
        conditions.append(column_of(related, name, "aggregate filter") == wanted)
    measured: ColumnElement[Any] = rel_col
    if clock.type == "epoch_text":
        probe = ClockSQL(clock, rel_col, "epoch_text", dialect, policy_tz)
        # MySQL casts to SIGNED, the others to BIGINT; SQLAlchemy renders both from BigInteger.
        measured = sa.case((probe.epoch_text_valid(), sa.cast(rel_col, sa.BigInteger())), else_=None)
    related_alias = related.alias(f"agg_{clock.table}")
    # Re-point the correlated columns at the alias so the same table can be used twice.
    adapt = sa.sql.util.ClauseAdapter(related_alias)
    subquery = (
        sa.select(sa.func.max(adapt.traverse(measured)))
        .where(*(adapt.traverse(c) for c in conditions))
        .scalar_subquery()
    )
    return ClockSQL(clock, subquery, _effective_type(clock), dialect, policy_tz)


@dataclass
class DatasetSQL:
    """Set-based evaluation of one dataset's active records."""

    pack: Pack
    dataset: Dataset
    table: sa.Table
    key: ColumnElement[Any]
    clocks: list[ClockSQL]

    def due(self, state: str, as_of: dt.datetime) -> ColumnElement[bool]:
        """Rows (taken as active) that have reached ``state`` by ``as_of``."""
        today = local_date(as_of, self.pack.timezone)
        schedules: list[Schedule] = self.dataset.schedules(state, self.pack.financial_year_end)
        if len(self.clocks) == 1:
            # One clock: its range test already excludes NULL (and MySQL zero
            # dates), and a bare range lets an index on the clock serve it.
            return self.clocks[0].before_day_after(schedules[0].last_event_due_by(today))
        each = [
            sa.or_(c.is_null(), c.before_day_after(s.last_event_due_by(today)))
            for c, s in zip(self.clocks, schedules, strict=True)
        ]
        some_clock = sa.or_(*(sa.not_(c.is_null()) for c in self.clocks))
        return sa.and_(*each, some_clock)

    def anomaly(self, category: Anomaly, as_of: dt.datetime) -> ColumnElement[bool]:
        """Rows skipped for ``category``, with the same precedence as the Python side."""
        if category == "null":
            return sa.and_(*(c.is_null() for c in self.clocks))
        blocking = [a for a in ANOMALIES if a != "null"]
        hits = []
        for index, c in enumerate(self.clocks):
            # The Python side reports the first blocking clock in keep order;
            # a clock's categories exclude each other, so this is exact.
            clear_before = [
                sa.not_(sa.and_(sa.not_(p.is_null()), sa.or_(*(p.anomaly(a, as_of) for a in blocking))))
                for p in self.clocks[:index]
            ]
            hits.append(sa.and_(*clear_before, c.anomaly(category, as_of)))
        return sa.or_(*hits)


def dataset_sql(conn: sa.Connection, pack: Pack, name: str) -> DatasetSQL:
    """Reflect a dataset's table and compile its clocks."""
    dataset = pack.datasets[name]
    table = reflect_table(conn, dataset.table, dataset.schema_)
    key = column_of(table, dataset.key, "key")
    clocks = [clock_sql(conn, table, dataset, rule.clock, pack.timezone) for rule in dataset.keep]
    return DatasetSQL(pack, dataset, table, key, clocks)
