"""Reading one stored clock value in Python: the value classes (NULL, zero, invalid, future, valid)
and the instant or day a valid value stands for.

Shared by the per-record evaluator (:mod:`retention.engine.evaluate`) and by
``explain`` (:mod:`retention.engine.clock_sql`); never raises on a database value.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from retention.policy.model import Clock
from retention.timing import datetext
from retention.timing.clock import Period, Schedule, as_aware, local_date, start_of_day, zone

Anomaly = Literal["null", "zero", "invalid", "future"]
ANOMALIES: tuple[Anomaly, ...] = ("null", "zero", "invalid", "future")
IGNORED_ROWS = "ignored_rows"
"""The count beside the anomalies: unreadable related rows an ``invalid_rows: ignore`` clock left out."""
NULL_KEYS = "null_key"
"""The count beside the anomalies: rows whose key is NULL. A record is known by its key (ledger items, state rows,
batches resuming after the last key), so such a row is never a record and never moves; counted so it is not silent."""

FLOOR_DATE = dt.date(1900, 1, 1)
FLOOR_NAIVE = dt.datetime(1900, 1, 1)  # noqa: DTZ001 - compared with naive column values
FLOOR_INSTANT = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_EPOCH_TEXT = re.compile(r"[1-9][0-9]*")
# An epoch string this long is past year 9999: no need to read it as a number
# (and SQL need not cast it, which PostgreSQL would refuse above bigint).
EPOCH_TEXT_DIGITS = 18
EPOCH_TEXT_HUGE = 10**EPOCH_TEXT_DIGITS
_DATETIME_KINDS = ("timestamptz", "timestamp", "date")
# How far a zone suffix can move a SQLite text value from its wall-clock date.
_OFFSET_MARGIN = dt.timedelta(hours=datetext.MAX_OFFSET_HOURS + 1)


@dataclass(slots=True)
class ClockReading:
    """One clock of one record, classified.

    ``detail`` says what is wrong with an invalid value (never the value
    itself), for ``explain``.
    """

    label: str
    raw: Any
    anomaly: Anomaly | None
    day: dt.date | None  # local date in the policy timezone
    instant: dt.datetime | None
    detail: str | None = None
    ignored: int = 0  # related rows left out as unreadable (invalid_rows: ignore)

    def moment(self, policy_tz: str) -> dt.datetime | None:
        """When the clock reads: its instant, or the start of its local day for a date."""
        if self.instant is not None:
            return self.instant
        return start_of_day(self.day, policy_tz) if self.day is not None else None


def _effective_type(clock: Clock) -> str:
    # max() over epoch strings is taken numerically, so the result is an epoch.
    return "epoch" if clock.aggregate and clock.type == "epoch_text" else clock.type


def read_clock(clock: Clock, raw: Any, as_of: dt.datetime, policy_tz: str) -> ClockReading:
    """Classify a clock's raw database value and find its local date; never raises."""
    return read_value(_effective_type(clock), clock.label(), clock.naive_timezone, raw, as_of, policy_tz)


def read_value(kind: str, label: str, naive_zone: str, raw: Any, as_of: dt.datetime, policy_tz: str) -> ClockReading:
    """Classify one stored value of a ``kind`` clock (see the module docstring)."""
    if raw is None:
        return ClockReading(label, raw, "null", None, None)
    if kind in ("timestamptz", "timestamp"):
        return _read_datetime(kind, label, naive_zone, raw, as_of, policy_tz)
    if kind == "date":
        return _read_date(label, raw, as_of, policy_tz)
    if kind == "epoch_text":
        text = _epoch_text(raw)
        if text is None or not _EPOCH_TEXT.fullmatch(text):
            return ClockReading(label, raw, "invalid", None, None, "not digits without a leading zero")
        if len(text) > EPOCH_TEXT_DIGITS:
            return ClockReading(label, raw, "future", None, None)
        return _read_epoch(label, raw, int(text), as_of, policy_tz)
    if isinstance(raw, int | float | Decimal):
        return _read_epoch(label, raw, raw, as_of, policy_tz)
    return ClockReading(label, raw, "invalid", None, None, "not a number")


def _epoch_text(raw: Any) -> str | None:
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return None
    return str(raw)


def _read_epoch(label: str, raw: Any, value: float | Decimal, as_of: dt.datetime, policy_tz: str) -> ClockReading:
    # NaN sorts above every number in PostgreSQL, so SQL finds it in the future.
    if (isinstance(value, float) and math.isnan(value)) or (isinstance(value, Decimal) and value.is_nan()):
        return ClockReading(label, raw, "future", None, None)
    if value <= 0:
        return ClockReading(label, raw, "zero", None, None)
    # The same integer the SQL compares with: a fraction of a second counts.
    if value > int(as_of.timestamp()):
        return ClockReading(label, raw, "future", None, None)
    instant = dt.datetime.fromtimestamp(int(value), dt.UTC)
    return ClockReading(label, raw, None, local_date(instant, policy_tz), instant)


_PLAIN_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?")


def _stored_datetime(raw: Any, kind: str) -> dt.datetime | tuple[Anomaly, str | None]:
    """A datetime (naive, or aware when the value carried its zone), or its class."""
    if isinstance(raw, dt.datetime):
        return raw
    if isinstance(raw, dt.date):
        return dt.datetime(raw.year, raw.month, raw.day)  # noqa: DTZ001 - naive by nature
    if not isinstance(raw, str):
        return ("invalid", "a number, not a datetime" if isinstance(raw, int | float | Decimal) else "not text")
    if raw.startswith(datetext.ZERO_PREFIX):
        return ("zero", None)
    if _PLAIN_DATETIME.fullmatch(raw):
        # SQLite's own form and the normal form (every value a batch fetches):
        # the C parser, where the grammar's regular expression costs several times more.
        try:
            return dt.datetime.fromisoformat(raw)
        except ValueError:
            pass  # a field out of range or year 0: the grammar says which
    parsed = datetext.parse(raw, "timestamptz" if kind == "timestamptz" else "timestamp")
    if isinstance(parsed, str):
        return ("invalid", parsed)
    naive = parsed.naive()
    if naive is None:  # year 0
        return ("zero", None)
    if parsed.offset is None:
        return naive
    try:
        return naive.replace(tzinfo=dt.timezone(parsed.offset)).astimezone(dt.UTC)
    except OverflowError:  # the offset carries it past year 1 or 9999
        return ("zero", None) if parsed.year < 5000 else ("future", None)


def _read_datetime(
    kind: str, label: str, naive_zone: str, raw: Any, as_of: dt.datetime, policy_tz: str
) -> ClockReading:
    value = _stored_datetime(raw, kind)
    if isinstance(value, tuple):
        return ClockReading(label, raw, value[0], None, None, value[1])
    if kind == "timestamptz":
        instant = as_aware(value, "UTC")
        if instant < FLOOR_INSTANT:
            return ClockReading(label, raw, "zero", None, None)
        if instant > as_of:
            return ClockReading(label, raw, "future", None, instant)
        return ClockReading(label, raw, None, local_date(instant, policy_tz), instant)
    naive = value.replace(tzinfo=None) if value.tzinfo else value
    if naive < FLOOR_NAIVE:
        return ClockReading(label, raw, "zero", None, None)
    # Wall-clock comparison in the column's own zone: a naive reading is in
    # the future when it is later than the as-of instant's reading there.
    if naive > _naive_in(as_of, naive_zone):
        return ClockReading(label, raw, "future", None, None)
    instant = as_aware(naive, naive_zone)
    day = naive.date() if naive_zone == policy_tz else local_date(instant, policy_tz)
    return ClockReading(label, raw, None, day, instant)


def _read_date(label: str, raw: Any, as_of: dt.datetime, policy_tz: str) -> ClockReading:
    if isinstance(raw, dt.datetime):
        day = raw.date()
    elif isinstance(raw, dt.date):
        day = raw
    elif not isinstance(raw, str):
        detail = "a number, not a date" if isinstance(raw, int | float | Decimal) else "not text"
        return ClockReading(label, raw, "invalid", None, None, detail)
    elif raw.startswith(datetext.ZERO_PREFIX):
        return ClockReading(label, raw, "zero", None, None)
    else:
        parsed = datetext.parse(raw, "date")
        if isinstance(parsed, str):
            return ClockReading(label, raw, "invalid", None, None, parsed)
        if parsed.year == 0:
            return ClockReading(label, raw, "zero", None, None)
        day = dt.date(parsed.year, parsed.month, parsed.day)
    if day < FLOOR_DATE:
        return ClockReading(label, raw, "zero", None, None)
    if day > local_date(as_of, policy_tz):
        return ClockReading(label, raw, "future", None, None)
    return ClockReading(label, raw, None, day, None)


def _naive_in(instant: dt.datetime, zone_name: str) -> dt.datetime:
    """The wall-clock reading of ``instant`` in ``zone_name``, naive on purpose."""
    return instant.astimezone(zone(zone_name)).replace(tzinfo=None)


def combine_related(label: str, rows: Sequence[ClockReading], *, ignore_invalid: bool = False) -> ClockReading:
    """An aggregate clock's reading from the readings of its related rows.

    An invalid row makes the clock invalid (with ``ignore_invalid``,
    ``invalid_rows: ignore``, it is left out and counted in ``ignored``);
    otherwise it reads as the latest readable row (future above valid above
    zero), as ``max`` does in SQL.
    """
    invalid = [r for r in rows if r.anomaly == "invalid"]
    if invalid and not ignore_invalid:
        detail = f"{len(invalid)} of {len(rows)} related rows invalid: {invalid[0].detail}"
        return ClockReading(label, invalid[0].raw, "invalid", None, None, detail)
    note: str | None = None
    if invalid:
        note = f"{len(invalid)} of {len(rows)} related rows invalid, ignored (invalid_rows: ignore)"
        note += f": {invalid[0].detail}"
    for category in ("future", None, "zero"):
        found = [r for r in rows if r.anomaly == category]
        if found:
            if category is None:
                best = max(found, key=lambda r: (r.instant or dt.datetime.min.replace(tzinfo=dt.UTC), r.day))
            else:
                best = found[0]
            shown = best.detail if note is None else note
            return ClockReading(label, best.raw, best.anomaly, best.day, best.instant, shown, len(invalid))
    return ClockReading(label, None, "null", None, None, note, len(invalid))


def _delayed(schedule: Schedule) -> bool:
    return any(delay != Period() for delay in schedule.delays)
