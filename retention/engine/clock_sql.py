"""Clocks to due dates as set-based SQL over the whole table (see :mod:`retention.engine.evaluate`).

Each (keep rule, target state) cutoff is computed once in Python and the
clock column compared against it as a range, so an index on the column
serves the query; a dataset's compiled clocks are a :class:`DatasetSQL`.
Also ``explain``'s safe read of one record's clocks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BooleanClauseList, ColumnElement, Grouping
from sqlalchemy.types import NullType

from retention.dialects import Dialect, dialect_for
from retention.engine.clock_read import (
    _DATETIME_KINDS,
    _OFFSET_MARGIN,
    ANOMALIES,
    EPOCH_TEXT_DIGITS,
    EPOCH_TEXT_HUGE,
    FLOOR_DATE,
    FLOOR_INSTANT,
    FLOOR_NAIVE,
    Anomaly,
    ClockReading,
    _delayed,
    _effective_type,
    _naive_in,
    combine_related,
    read_value,
)
from retention.engine.rowfilter import reflect_table as reflect_table  # re-exported: callers import it from here
from retention.engine.rowfilter import related_condition
from retention.errors import SchemaError
from retention.policy.model import Clock, Dataset, Pack
from retention.timing import datetext
from retention.timing.clock import Schedule, local_date, start_of_day


def column_of(table: sa.Table, name: str, role: str) -> sa.ColumnElement[Any]:
    try:
        return table.c[name]
    except KeyError:
        valid = ", ".join(table.c.keys())
        raise SchemaError([f"table {table.name!r} has no column {name!r} ({role}); columns: {valid}"]) from None


@dataclass
class ClockSQL:
    """The SQL value of one clock for a row of the dataset's table, and its comparisons.

    ``value`` is the column of a plain clock, or for an aggregate the max
    over the related rows' readable values, already in a form that orders
    as time does (``invalid_flag`` then says whether any related row is
    unreadable, and ``related`` holds the related column and join
    conditions, for ``explain``). On SQLite a plain datetime column holds
    text in any form of :mod:`retention.timing.datetext`; an aggregate's value is
    in its normal form.
    """

    clock: Clock
    value: ColumnElement[Any]
    kind: str
    dialect: Dialect
    policy_tz: str
    invalid_flag: ColumnElement[bool] | None = None
    aggregate: bool = False
    related: tuple[ColumnElement[Any], tuple[ColumnElement[bool], ...]] | None = None
    ignored_count: ColumnElement[Any] | None = None  # invalid_rows: ignore: unreadable related rows per record
    _readable_terms: list[ColumnElement[bool]] | None = field(default=None, init=False, repr=False, compare=False)
    _valid: ColumnElement[bool] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def _sqlite_text(self) -> bool:
        return self.dialect.datetimes_as_text and self.kind in _DATETIME_KINDS

    @property
    def _raw_text(self) -> bool:
        """A plain SQLite column of text datetimes, compared through windows."""
        return self._sqlite_text and not self.aggregate

    def _text_kind(self) -> datetext.TextKind:
        assert self.kind in _DATETIME_KINDS
        return self.kind  # type: ignore[return-value]

    # -- what a caller fetches ---------------------------------------------
    def select(self) -> ColumnElement[Any]:
        """The value to fetch for a due row; :func:`read_clock` reads it exactly.

        SQLite text comes back in its normal form (ordered as time, so
        ``min``/``max`` over it are right), every other value as the driver
        returns it. For rows that are not due use :func:`explain_clock_values`.
        """
        if self._raw_text:
            # A NULL clock of a record that another clock makes due stays NULL.
            return sa.case((self.value.is_(None), sa.null()), else_=datetext.sql_normal(self.value, self._text_kind()))
        return sa.type_coerce(self.value, NullType())

    def select_due(self) -> ColumnElement[Any]:
        """:meth:`select` for a row the due test has selected, so its value is valid.

        SQLite text in its own form (``YYYY-MM-DD HH:MM:SS``, nearly every
        stored value) takes its normal form by a concatenation instead of
        the normal-form expression (a ``datetime()`` call per use, and a
        batch's items use it three times per row); a valid value of 19
        characters with a space at the 11th has no zone suffix, so it is in
        that form (see :func:`retention.engine.clock_counts._text_extremes`). Not for rows that may be invalid.
        """
        if not self._raw_text or self.kind == "date":
            return self.select()
        v = self.value
        own_form = sa.and_(sa.func.length(v) == 19, sa.func.substr(v, 11, 1) == sa.literal(" ", sa.String))
        return sa.case(
            (own_form, v.op("||", return_type=sa.String)(sa.literal(".000000", sa.String))), else_=self.select()
        )

    def _valid_term(self) -> ColumnElement[bool]:
        """SQLite text: the grammar's validity test of the due range, built once (``clock_counts`` finds it)."""
        if self._valid is None:
            self._valid = datetext.sql_valid(self.value, self._text_kind())
        return self._valid

    # -- bounds rendered for this column's storage ------------------------
    def _moment(self, instant: dt.datetime) -> dt.datetime:
        """An aware instant as this column stores it (PostgreSQL tz: aware; else naive)."""
        if self.kind == "timestamptz":
            if self.dialect.aware_timestamptz:
                return instant
            return instant.astimezone(dt.UTC).replace(tzinfo=None)
        return _naive_in(instant, self.clock.naive_timezone)

    def _floor(self) -> dt.datetime | dt.date:
        if self.kind == "date":
            return FLOOR_DATE
        if self.kind == "timestamptz" and self.dialect.aware_timestamptz:
            return FLOOR_INSTANT
        return FLOOR_NAIVE

    def _literal(self, bound: dt.datetime | dt.date) -> ColumnElement[Any]:
        if self._sqlite_text:
            return sa.literal(datetext.normal_text(bound), sa.String)
        if isinstance(bound, dt.datetime):
            return sa.literal(bound, sa.DateTime(timezone=bound.tzinfo is not None))
        return sa.literal(bound, sa.Date())

    # -- SQLite text: a range on the raw text, exact inside narrow windows --
    def _window(self, bound: dt.datetime | dt.date, *, exact_at_midnight: bool) -> tuple[str, str]:
        """Dates (as text) outside of which a valid value's text alone orders it against ``bound``.

        A value whose text sorts below the first is earlier than ``bound``,
        at or above the second is not earlier; between them the normal form
        decides. A zone suffix moves a value by less than 15 hours; without
        one, ``' '`` or ``'T'`` and the fraction only matter within a day,
        and not at all when ``bound`` is a midnight (for ``<`` and ``>=``).
        """
        if not isinstance(bound, dt.datetime):
            return bound.isoformat(), bound.isoformat()
        margin = _OFFSET_MARGIN if self.kind == "timestamptz" else dt.timedelta(0)
        low = (bound - margin).date()
        if exact_at_midnight and not margin and bound == dt.datetime.combine(low, dt.time()):
            return low.isoformat(), low.isoformat()
        return low.isoformat(), ((bound + margin).date() + dt.timedelta(days=1)).isoformat()

    def _normal(self) -> ColumnElement[Any]:
        return datetext.sql_normal(self.value, self._text_kind())

    def _text_less(self, bound: dt.datetime | dt.date) -> ColumnElement[bool]:
        """Valid raw text earlier than ``bound`` (exact)."""
        v = self.value
        low, high = self._window(bound, exact_at_midnight=True)
        if low == high:
            return v < sa.literal(low, sa.String)
        # ``v < high`` stands alone (low <= high) so an index can bound the rows.
        return sa.and_(
            v < sa.literal(high, sa.String),
            sa.or_(v < sa.literal(low, sa.String), self._normal() < self._literal(bound)),
        )

    def _text_greater(self, bound: dt.datetime | dt.date) -> ColumnElement[bool]:
        """Valid raw text later than ``bound`` (exact)."""
        v = self.value
        if not isinstance(bound, dt.datetime):
            return v > sa.literal(bound.isoformat(), sa.String)
        low, high = self._window(bound, exact_at_midnight=False)
        return sa.or_(
            v >= sa.literal(high, sa.String),
            sa.and_(v >= sa.literal(low, sa.String), self._normal() > self._literal(bound)),
        )

    def _text_range(self, lower: dt.datetime | dt.date, upper: dt.datetime | dt.date) -> ColumnElement[bool]:
        """Valid raw text in ``[lower, upper)``: one range on the column, exact checks at its ends."""
        v = self.value
        low_lo, low_hi = self._window(lower, exact_at_midnight=True)
        up_lo, up_hi = self._window(upper, exact_at_midnight=True)
        conditions = [
            v >= sa.literal(low_lo, sa.String),
            v < sa.literal(up_hi, sa.String),
            self._valid_term(),
        ]
        if low_lo != low_hi:
            conditions.append(sa.or_(v >= sa.literal(low_hi, sa.String), self._normal() >= self._literal(lower)))
        if up_lo != up_hi:
            conditions.append(sa.or_(v < sa.literal(up_lo, sa.String), self._normal() < self._literal(upper)))
        return sa.and_(*conditions)

    # -- epoch text ----------------------------------------------------------
    def epoch_text_valid(self) -> ColumnElement[bool]:
        return self.dialect.epoch_text_valid(self.value)

    def _epoch_text_cmp(self, seconds: int, op: str) -> ColumnElement[bool]:
        value = self.dialect.epoch_text_operand(self.value)
        text = str(seconds)
        length = sa.func.length(value)
        n = len(text)
        if op == "<":
            ordered = sa.or_(length < n, sa.and_(length == n, value < text))
        else:
            ordered = sa.or_(length > n, sa.and_(length == n, value > text))
        return sa.and_(self.epoch_text_valid(), ordered)

    # -- validity ------------------------------------------------------------
    def _invalid(self) -> ColumnElement[bool]:
        """Rows whose clock cannot be read as its kind."""
        v = self.value
        if self.aggregate:
            return self.invalid_flag if self.invalid_flag is not None else sa.false()
        if self.kind == "epoch_text":
            return sa.and_(v.is_not(None), sa.not_(self.epoch_text_valid()))
        return self.dialect.clock_invalid(v, self.kind)

    def _readable(self) -> list[ColumnElement[bool]]:
        """Residual conditions that make a value in range a valid reading (for ``due``).

        Built once per clock: :func:`retention.engine.clock_counts.count` finds the term by identity.
        """
        if self.aggregate:
            return [] if self.invalid_flag is None else [sa.not_(self.invalid_flag)]
        if self._readable_terms is None:
            self._readable_terms = self.dialect.clock_readable(self.value, self.kind)
        return self._readable_terms

    def _numeric(self) -> list[ColumnElement[bool]]:
        """Where an epoch column may hold text (SQLite), which sorts above every number."""
        return [] if self.aggregate else self.dialect.clock_numeric(self.value, self.kind)

    # -- predicates --------------------------------------------------------
    def is_null(self) -> ColumnElement[bool]:
        """The clock reads NULL (for an aggregate: no related row with a readable value)."""
        null = self.dialect.clock_is_null(self.value, self.kind)
        if self.aggregate and self.invalid_flag is not None:
            return sa.and_(null, sa.not_(self.invalid_flag))
        return null

    def before_day_after(self, last_day: dt.date) -> ColumnElement[bool]:
        """Valid clock whose local date is on or before ``last_day``."""
        next_day = last_day + dt.timedelta(days=1)
        if self.kind in ("epoch", "epoch_text"):
            seconds = int(start_of_day(next_day, self.policy_tz).timestamp())
            if self.kind == "epoch_text":
                return self._epoch_text_cmp(seconds, "<")
            return sa.and_(self.value > 0, self.value < seconds, *self._readable())
        upper: dt.datetime | dt.date
        if self.kind == "date":
            upper = next_day
        elif self.kind == "timestamp" and self.clock.naive_timezone == self.policy_tz:
            upper = dt.datetime(next_day.year, next_day.month, next_day.day)  # noqa: DTZ001
        else:
            upper = self._moment(start_of_day(next_day, self.policy_tz))
        if self._raw_text:
            return self._text_range(self._floor(), upper)
        v = self.value
        return sa.and_(v >= self._literal(self._floor()), v < self._literal(upper), *self._readable())

    def expired(self, as_of: dt.datetime) -> ColumnElement[bool]:
        """Valid clock whose value is on or before ``as_of`` (an expiry clock's own due test).

        Exactly the values that are neither NULL, zero, invalid nor future.
        """
        v = self.value
        if self.kind == "epoch_text":
            return self._epoch_text_cmp(int(as_of.timestamp()) + 1, "<")
        if self.kind == "epoch":
            return sa.and_(*self._numeric(), v > 0, v <= int(as_of.timestamp()), *self._readable())
        bound = local_date(as_of, self.policy_tz) if self.kind == "date" else self._moment(as_of)
        if self._raw_text:
            return sa.and_(
                v < sa.literal(_text_ceiling(bound), sa.String),
                datetext.sql_valid(v, self._text_kind()),
                sa.not_(self._text_less(self._floor())),
                sa.not_(self._text_greater(bound)),
            )
        return sa.and_(v >= self._literal(self._floor()), v <= self._literal(bound), *self._readable())

    def anomaly(self, category: Anomaly, as_of: dt.datetime) -> ColumnElement[bool]:
        """Rows whose clock falls in ``category``."""
        v = self.value
        if category == "null":
            return self.is_null()
        if category == "invalid":
            return self._invalid()
        if category == "future" and self.clock.is_expiry:
            return sa.false()  # a live session: not due yet, nothing wrong with it
        if self.kind == "epoch_text":
            if category == "future":
                return self._epoch_text_cmp(int(as_of.timestamp()), ">")
            return sa.false()  # a valid epoch string is at least 1
        if self.kind == "epoch":
            compared = v <= 0 if category == "zero" else v > int(as_of.timestamp())
            return sa.and_(*self._numeric(), compared, *self._readable())
        bound = local_date(as_of, self.policy_tz) if self.kind == "date" else self._moment(as_of)
        if self._raw_text:
            valid = datetext.sql_valid(v, self._text_kind())
            if category == "zero":
                return sa.or_(datetext.sql_zero_date(v), sa.and_(valid, self._text_less(self._floor())))
            return sa.and_(valid, self._text_greater(bound))
        if category == "zero":
            return sa.and_(v < self._literal(self._floor()), *self._readable())
        return sa.and_(v > self._literal(bound), *self._readable())


def _own_normal(text: str | None) -> str | None:
    """The normal form of a value in SQLite's own form."""
    return None if text is None else f"{text}.000000"


def _swap(
    condition: ColumnElement[bool], term: ColumnElement[bool], replacement: ColumnElement[bool]
) -> ColumnElement[bool]:
    """``condition`` with ``term`` (by identity) replaced."""

    def replace(element: Any, **kw: Any) -> Any:
        return replacement if element is term else None

    opts: dict[str, Any] = {}
    return visitors.replacement_traverse(condition, opts, replace)


def _only_conjunct(condition: ColumnElement[bool], term: ColumnElement[bool]) -> bool:
    """``term`` occurs in ``condition``, and only as a conjunct of its top-level ``AND`` (nested ``AND`` flattened)."""
    top = 0
    pending: list[Any] = [condition]
    while pending:
        element = pending.pop()
        if element is term:
            top += 1
        elif isinstance(element, BooleanClauseList) and element.operator is operators.and_:
            pending.extend(element.clauses)
        elif isinstance(element, Grouping):
            pending.append(element.element)
    return top > 0 and top == sum(1 for e in visitors.iterate(condition) if e is term)


def _text_ceiling(bound: dt.datetime | dt.date) -> str:
    """Text above every valid SQLite value not later than ``bound`` (a zone suffix moves it < 15 h)."""
    day = bound.date() if isinstance(bound, dt.datetime) else bound
    return (day + dt.timedelta(days=2)).isoformat()


def _measured(rel_col: ColumnElement[Any], clock: Clock, dialect: Dialect) -> tuple[Any, ColumnElement[bool] | None]:
    """(what max() runs over, which related rows are invalid) for an aggregate clock.

    The measured value is NULL for unreadable rows and orders as time does:
    SQLite text in its normal form, the zero date below every date, epoch
    strings as numbers (past bigint: one number in the far future).
    """
    kind = clock.type
    if kind == "epoch_text":
        valid = dialect.epoch_text_valid(rel_col)
        text = dialect.epoch_text_operand(rel_col)
        measured = sa.case(
            (sa.and_(valid, sa.func.length(text) <= EPOCH_TEXT_DIGITS), sa.cast(text, sa.BigInteger())),
            (valid, sa.literal(EPOCH_TEXT_HUGE, sa.BigInteger())),
            else_=None,
        )
        return measured, sa.and_(rel_col.is_not(None), sa.not_(valid))
    return dialect.aggregate_measure(rel_col, kind)


def clock_sql(conn: sa.Connection, table: sa.Table, dataset: Dataset, clock: Clock, policy_tz: str) -> ClockSQL:
    """Build the SQL value of ``clock`` for rows of ``table``."""
    dialect = dialect_for(conn)
    if clock.aggregate is None:
        value: ColumnElement[Any] = column_of(table, clock.column, "clock")
        return ClockSQL(clock, value, clock.type, dialect, policy_tz)
    assert clock.table is not None and clock.on is not None
    related = reflect_table(conn, clock.table, dataset.schema_)
    rel_col = column_of(related, clock.column, f"clock of {dataset.table}")
    on_col = column_of(related, clock.on, "aggregate join")
    ref_col = column_of(table, clock.references or dataset.key, "aggregate reference")
    conditions = [on_col == ref_col]
    for test in clock.related_tests:
        # The same comparisons (and value checks) as a dataset's where.
        conditions.append(related_condition(column_of(related, test.column, "aggregate filter"), clock.table, test))
    measured, invalid = _measured(rel_col, clock, dialect)
    ignored = None
    if clock.ignores_invalid:
        # max() already skips unreadable rows (they measure NULL): only the
        # flag that would invalidate the clock goes; they are counted instead.
        ignored, invalid = invalid, None
    related_alias = related.alias(f"agg_{clock.table}")
    # Re-point the correlated columns at the alias so the same table can be used twice.
    adapt = sa.sql.util.ClauseAdapter(related_alias)
    where = [adapt.traverse(c) for c in conditions]
    subquery = sa.select(sa.func.max(adapt.traverse(measured))).where(*where).scalar_subquery()
    flag = None
    if invalid is not None:
        flag_alias = related.alias(f"bad_{clock.table}")
        flag_adapt = sa.sql.util.ClauseAdapter(flag_alias)
        flag = sa.exists().where(*(flag_adapt.traverse(c) for c in conditions), flag_adapt.traverse(invalid))
    ignored_count = None
    if ignored is not None:
        count_alias = related.alias(f"ign_{clock.table}")
        count_adapt = sa.sql.util.ClauseAdapter(count_alias)
        ignored_count = (
            sa.select(sa.func.count())
            .select_from(count_alias)
            .where(*(count_adapt.traverse(c) for c in conditions), count_adapt.traverse(ignored))
            .scalar_subquery()
        )
    return ClockSQL(
        clock,
        subquery,
        _effective_type(clock),
        dialect,
        policy_tz,
        invalid_flag=flag,
        aggregate=True,
        related=(rel_col, tuple(conditions)),
        ignored_count=ignored_count,
    )


@dataclass
class DatasetSQL:
    """Set-based evaluation of one dataset's active records."""

    pack: Pack
    dataset: Dataset
    table: sa.Table
    key: ColumnElement[Any]
    clocks: list[ClockSQL]
    # Built once per (state, as_of): a run asks in every batch, and building
    # SQLite's text-datetime expressions costs more than running them.
    _due: dict[tuple[str, dt.datetime], ColumnElement[bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def values(self) -> list[ColumnElement[Any]]:
        """One expression per clock to fetch for rows that ``due`` selects.

        :func:`evaluate_record` reads the fetched values exactly as ``due``
        saw them (SQLite text in normal form, an aggregate's max over
        readable values). A row that is not due may hold a value the driver
        cannot load (PostgreSQL ``infinity``): read such rows with
        :func:`explain_clock_values`.
        """
        return [c.select() for c in self.clocks]

    def due(self, state: str, as_of: dt.datetime) -> ColumnElement[bool]:
        """Rows (taken as active) that have reached ``state`` by ``as_of``."""
        found = self._due.get((state, as_of))
        if found is None:
            found = self._due[(state, as_of)] = self._build_due(state, as_of)
        return found

    def _build_due(self, state: str, as_of: dt.datetime) -> ColumnElement[bool]:
        today = local_date(as_of, self.pack.timezone)
        schedules: list[Schedule] = self.dataset.schedules(state, self.pack.financial_year_end)
        if len(self.clocks) == 1:
            # One clock: its range test already excludes NULL (and MySQL zero
            # dates), and a bare range lets an index on the clock serve it.
            return _clock_due(self.clocks[0], schedules[0], today, as_of)
        each = [
            sa.or_(c.is_null(), _clock_due(c, s, today, as_of)) for c, s in zip(self.clocks, schedules, strict=True)
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

    def readings_many(self, conn: sa.Connection, keys: list[Any], as_of: dt.datetime) -> dict[Any, list[ClockReading]]:
        """The clocks of many records read safely, one query for the rows and one per aggregate clock.

        Only keys whose value comes back equal, from exactly one row, are
        answered: a key the database matched another way (a case-insensitive
        collation) or to several rows is left out, and the caller reads it
        with :meth:`readings`, whose ``first()`` row is then the one it saw.
        """
        dialect = dialect_for(conn)
        tz = self.pack.timezone
        columns: list[ColumnElement[Any]] = [self.key]
        spans: list[tuple[int, int]] = []
        for c in self.clocks:
            safe = [] if c.aggregate else dialect.safe_clock_columns(c.value, c.kind)
            spans.append((len(columns), len(columns) + len(safe)))
            columns.extend(safe)
        wanted = set(keys)
        rows: dict[Any, Any] = {}
        repeated: set[Any] = set()
        for row in conn.execute(sa.select(*columns).where(self.key.in_(list(dict.fromkeys(keys))))):
            if row[0] in rows:
                repeated.add(row[0])
            rows[row[0]] = row
        found = {k: r for k, r in rows.items() if k in wanted and k not in repeated}
        related_rows: list[dict[Any, list[ClockReading]]] = []
        for c in self.clocks:
            if not c.aggregate:
                continue
            assert c.related is not None
            rel_col, conditions = c.related
            label = c.clock.label()
            safe = dialect.safe_clock_columns(rel_col, c.clock.type)
            by_key: dict[Any, list[ClockReading]] = {}
            query = sa.select(self.key, *safe).where(*conditions, self.key.in_(list(found)))
            for r in conn.execute(query) if found else ():
                by_key.setdefault(r[0], []).append(_safe_reading(tuple(r[1:]), c.clock.type, label, c.clock, as_of, tz))
            related_rows.append(by_key)
        result: dict[Any, list[ClockReading]] = {}
        for key, row in found.items():
            readings = []
            aggregates = iter(related_rows)
            for c, (start, end) in zip(self.clocks, spans, strict=True):
                label = c.clock.label()
                if not c.aggregate:
                    readings.append(_safe_reading(tuple(row[start:end]), c.kind, label, c.clock, as_of, tz))
                    continue
                related = next(aggregates).get(key, [])
                readings.append(combine_related(label, related, ignore_invalid=c.clock.ignores_invalid))
            result[key] = readings
        return result

    def readings(self, conn: sa.Connection, key: Any, as_of: dt.datetime) -> list[ClockReading] | None:
        """One record's clocks read safely (see :func:`explain_clock_values`)."""
        dialect = dialect_for(conn)
        tz = self.pack.timezone
        columns: list[ColumnElement[Any]] = [sa.literal(1)]
        spans: list[tuple[int, int]] = []
        for c in self.clocks:
            safe = [] if c.aggregate else dialect.safe_clock_columns(c.value, c.kind)
            spans.append((len(columns), len(columns) + len(safe)))
            columns.extend(safe)
        row = conn.execute(sa.select(*columns).where(self.key == key)).first()
        if row is None:
            return None
        readings = []
        for c, (start, end) in zip(self.clocks, spans, strict=True):
            label = c.clock.label()
            if not c.aggregate:
                readings.append(_safe_reading(row[start:end], c.kind, label, c.clock, as_of, tz))
                continue
            assert c.related is not None
            rel_col, conditions = c.related
            safe = dialect.safe_clock_columns(rel_col, c.clock.type)
            rows = conn.execute(sa.select(*safe).where(*conditions, self.key == key)).all()
            related = [_safe_reading(tuple(r), c.clock.type, label, c.clock, as_of, tz) for r in rows]
            readings.append(combine_related(label, related, ignore_invalid=c.clock.ignores_invalid))
        return readings


def _clock_due(clock: ClockSQL, schedule: Schedule, today: dt.date, as_of: dt.datetime) -> ColumnElement[bool]:
    """One clock makes its state due by ``as_of`` (see :func:`expiry_due` for expiry clocks)."""
    if not clock.clock.is_expiry:
        return clock.before_day_after(schedule.last_event_due_by(today))
    expired = clock.expired(as_of)
    if not _delayed(schedule):
        return expired  # due at the value itself
    # The delays run from the value's local date D as from an event on D - 1.
    return sa.and_(expired, clock.before_day_after(schedule.last_event_due_by(today) + dt.timedelta(days=1)))


def dataset_sql(conn: sa.Connection, pack: Pack, name: str) -> DatasetSQL:
    """Reflect a dataset's table and compile its clocks."""
    dataset = pack.datasets[name]
    table = reflect_table(conn, dataset.table, dataset.schema_)
    key = column_of(table, dataset.key, "key")
    clocks = [clock_sql(conn, table, dataset, rule.clock, pack.timezone) for rule in dataset.keep]
    return DatasetSQL(pack, dataset, table, key, clocks)


# --------------------------------------------------------------------------
# explain: one record's clocks, read safely on every database
# --------------------------------------------------------------------------


def _safe_reading(
    values: Sequence[Any], kind: str, label: str, clock: Clock, as_of: dt.datetime, policy_tz: str
) -> ClockReading:
    reading = read_value(kind, label, clock.naive_timezone, values[0], as_of, policy_tz)
    if len(values) > 1 and values[1] is not None:
        reading.raw = values[1]
    return reading


def explain_clock_values(
    conn: sa.Connection, pack: Pack, dataset_name: str, key: Any, as_of: dt.datetime
) -> list[ClockReading] | None:
    """Read one record's clocks, one reading per keep rule; None when no row has ``key``.

    Every stored value reads without error on every database; an aggregate
    clock reads its related rows one by one (an invalid row shows which kind
    of problem it has). :func:`evaluate_readings` on the result gives what
    ``plan`` and ``run`` decide for the record. ``key`` is in the key
    column's type.
    """
    return dataset_sql(conn, pack, dataset_name).readings(conn, key, as_of)
