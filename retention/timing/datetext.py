"""Datetimes stored as text: one grammar, read in Python and tested in SQLite SQL.

SQLite has no datetime type, so a clock column holds text, and its own date
functions accept far more than a retention engine should trust (days that
do not exist, ``24:00``, julian day numbers, ``now``). The engine accepts a
strict subset, the same on both sides:

- ``YYYY-MM-DD``, alone or followed by ``' '`` or ``'T'`` and ``HH:MM``,
  ``HH:MM:SS`` or ``HH:MM:SS.f`` (1 to 6 fraction digits);
- for a ``timestamptz`` clock only, after a time, a zone suffix ``Z`` or
  ``+HH:MM``/``-HH:MM`` (hours 00-14, minutes 00-59): the value is that instant;
- every field in range: a date that exists in the proleptic Gregorian
  calendar (year 0 is a leap year, as in SQLite), hours 00-23, minutes and
  seconds 00-59;
- a ``date`` clock accepts ``YYYY-MM-DD`` only.

Anything else is *invalid*, except text beginning with ``0000-00-00`` (the
MySQL zero date), which is *zero*. :func:`parse` is the Python side; the
``sql_*`` builders are the SQLite side, used by :mod:`retention.engine.evaluate`.
Both are tested against each other by ``tests/test_evaluate_property.py``.

In SQL, a valid value's *normal form* (:func:`sql_normal`) is
``YYYY-MM-DD HH:MM:SS.ffffff`` (26 characters, UTC for ``timestamptz``;
``YYYY-MM-DD`` for dates): fixed width, so it orders as time does, and it
is itself in the grammar, so Python reads it back to the same instant.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.timing import sql_fragments

TextKind = Literal["timestamptz", "timestamp", "date"]

ZERO_PREFIX = "0000-00-00"
MAX_OFFSET_HOURS = 14
_FORM = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[ T](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,6}))?)?"
    r"(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_leap(year: int) -> bool:
    """Proleptic Gregorian leap years, year 0 included (it is one)."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and is_leap(year) else _DAYS[month - 1]


@dataclass(frozen=True, slots=True)
class TextDateTime:
    """The fields of a value in the grammar; ``offset`` is None without a zone suffix."""

    year: int
    month: int
    day: int
    hour: int = 0
    minute: int = 0
    second: int = 0
    microsecond: int = 0
    offset: dt.timedelta | None = None

    def naive(self) -> dt.datetime | None:
        """The wall-clock datetime, or None for year 0 (Python has none)."""
        if self.year == 0:
            return None
        return dt.datetime(  # noqa: DTZ001 - the wall-clock reading, zone applied by the caller
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.microsecond
        )


def parse(text: str, kind: TextKind) -> TextDateTime | str:
    """Read ``text`` in the grammar for a ``kind`` clock; a string says why it is invalid.

    The reason names the problem, never the value (it is shown by ``explain``).
    """
    match = _FORM.fullmatch(text)
    if match is None:
        return "not in the form YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]"
    parts = match.groupdict()
    if kind == "date" and parts["hour"] is not None:
        return "a date and time in a date clock"
    zone = parts["zone"]
    if zone is not None and kind != "timestamptz":
        return "a zone suffix on a clock without a zone"
    year, month, day = int(parts["year"]), int(parts["month"]), int(parts["day"])
    if not 1 <= month <= 12:
        return "month out of range"
    if not 1 <= day <= days_in_month(year, month):
        return "day out of range"
    hour = int(parts["hour"] or 0)
    minute = int(parts["minute"] or 0)
    second = int(parts["second"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return "time out of range"
    fraction = parts["fraction"] or ""
    offset = None
    if zone is not None and zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > MAX_OFFSET_HOURS or minutes > 59:
            return "zone offset out of range"
        offset = dt.timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    elif zone == "Z":
        offset = dt.timedelta(0)
    return TextDateTime(year, month, day, hour, minute, second, int(fraction.ljust(6, "0") or 0), offset)


# --------------------------------------------------------------------------
# SQLite: the same grammar in SQL
# --------------------------------------------------------------------------


def _glob(value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    return value.op("GLOB", is_comparison=True)(sa.literal(pattern, sa.String))


def _text(value: str) -> ColumnElement[Any]:
    return sa.literal(value, sa.String)


def _substr(v: ColumnElement[Any], start: Any, length: Any | None = None) -> ColumnElement[Any]:
    args = (v, start) if length is None else (v, start, length)
    return sa.func.substr(*args, type_=sa.String)


def _cat(*parts: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQLite's ``||`` (a ``+`` between strings would be an addition)."""
    result = parts[0]
    for part in parts[1:]:
        result = result.op("||", return_type=sa.String)(part)
    return result


def _zone_length(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[Any]:
    """Characters of the zone suffix at the end of ``v`` (0, 1 for Z, 6 for an offset)."""
    if kind != "timestamptz":
        return sa.literal(0, sa.Integer)
    return sa.case(
        (_glob(v, "*Z"), 1),
        (_glob(v, "*[+-][0-9][0-9]:[0-9][0-9]"), 6),
        else_=0,
    )


def _core_length(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[Any]:
    """Characters before the zone suffix: 10, 16, 19 or 21-26 in the grammar."""
    if kind != "timestamptz":
        return sa.func.length(v)
    return sa.func.length(v) - _zone_length(v, kind)


def _wall_seconds(v: ColumnElement[Any], n: ColumnElement[Any]) -> ColumnElement[Any]:
    """``YYYY-MM-DD HH:MM:SS`` from the date and time fields (fraction and zone left out)."""
    time = sa.case(
        (n == 10, _text("00:00:00")),
        (n == 16, _cat(_substr(v, 12, 5), _text(":00"))),
        else_=_substr(v, 12, 8),
    )
    return _cat(_substr(v, 1, 10), _text(" "), time)


def _fraction6(v: ColumnElement[Any], n: ColumnElement[Any]) -> ColumnElement[Any]:
    digits = sa.case((n > 20, _substr(v, 21, n - 20)), else_=_text(""))
    return _substr(_cat(digits, _text("000000")), 1, 6)


def _round_trip(fmt: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """``value`` as SQLite normalises it ('' where it cannot read it, so the test is never NULL)."""
    return sa.func.coalesce(sa.func.strftime(_text(fmt), value, _text("+0 days")), _text(""), type_=sa.String)


_DAY_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_SECONDS_GLOB = _DAY_GLOB + " [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
_MICROS_GLOB = _SECONDS_GLOB + ".[0-9][0-9][0-9][0-9][0-9][0-9]"


def _common(v: ColumnElement[Any]) -> ColumnElement[bool]:
    """The forms most columns hold: ``YYYY-MM-DD HH:MM:SS`` with six fraction digits or none.

    Tested first, by one GLOB each, so a large range of them costs one
    round trip per row instead of the general grammar's dozen functions.
    """
    return sa.or_(_glob(v, _MICROS_GLOB), _glob(v, _SECONDS_GLOB))


def _canonical(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[bool]:
    """``v`` is exactly what SQLite writes for its own datetimes (``YYYY-MM-DD HH:MM:SS``, or the day).

    One C function call per row, where the grammar's checks take a dozen:
    nearly every stored value has this form, and it is valid for every kind
    (the round trip through ``'+0 days'`` normalises a field out of range,
    so such text differs; a non-text value never equals the text result).
    NULL where SQLite cannot read ``v`` at all, which a CASE takes as false.
    """
    function = sa.func.date if kind == "date" else sa.func.datetime
    return function(v, _text("+0 days"), type_=sa.String) == v


def sql_canonical(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[bool]:
    """:func:`_canonical`: ``v`` is in SQLite's own form (one ``datetime()`` call; NULL where unreadable)."""
    return _canonical(v, kind)


def _one_of(value: ColumnElement[Any], options: Sequence[Any]) -> ColumnElement[bool]:
    # Not IN (...): a list would become an expanding parameter.
    return sa.or_(*(value == option for option in options))


def sql_valid(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[bool]:
    """:func:`_valid` over ``v``, compiled once per dialect (:mod:`retention.timing.sql_fragments`)."""
    return sql_fragments.fragment("datetext.valid", kind, v, sa.Boolean())  # type: ignore[no-any-return]


def _valid(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[bool]:
    """``v`` is text in the grammar for a ``kind`` clock (false, never NULL, for a non-NULL ``v``).

    The fields are checked by a round trip through ``strftime(..., '+0 days')``,
    which normalises a day or hour out of range (2020-02-30 becomes 03-01) so
    the text no longer matches; the fraction and the zone suffix by GLOB.
    ASCII only: a multi-byte or NUL character makes the byte length differ.
    """
    canonical = _canonical(v, kind)
    text_ascii = [
        sa.func.typeof(v) == _text("text"),
        sa.func.length(sa.cast(v, sa.LargeBinary)) == sa.func.length(v),
    ]
    if kind == "date":
        general_date = sa.and_(*text_ascii, sa.func.length(v) == 10, _round_trip("%Y-%m-%d", v) == v)
        return sa.case((canonical, sa.true()), else_=general_date)
    n = _core_length(v, kind)
    wall = _wall_seconds(v, n)
    shape = sa.or_(
        n == 10,
        sa.and_(
            _one_of(_substr(v, 11, 1), [_text(" "), _text("T")]),
            sa.or_(
                _one_of(n, [16, 19]),
                sa.and_(
                    n.between(21, 26),
                    _substr(v, 20, 1) == _text("."),
                    sa.not_(_glob(_substr(v, 21, n - 20), "*[^0-9]*")),
                ),
            ),
        ),
    )
    general = [shape, _round_trip("%Y-%m-%d %H:%M:%S", wall) == wall]
    if kind == "timestamptz":
        z = _zone_length(v, kind)
        offset_ok = sa.and_(
            _substr(v, n + 2, 2) <= _text(f"{MAX_OFFSET_HOURS:02d}"),
            _substr(v, n + 5, 2) <= _text("59"),
        )
        general.append(sa.or_(z == 0, sa.and_(n > 10, sa.or_(z == 1, offset_ok))))
    seconds = _substr(v, 1, 19)
    fields = sa.case(
        (_common(v), _round_trip("%Y-%m-%d %H:%M:%S", seconds) == seconds),
        (_glob(v, _DAY_GLOB), _round_trip("%Y-%m-%d", v) == v),
        else_=sa.and_(*general),
    )
    return sa.case((canonical, sa.true()), else_=sa.and_(*text_ascii, fields))


def sql_zero_date(v: ColumnElement[Any]) -> ColumnElement[bool]:
    """:func:`_zero_date` over ``v``, compiled once per dialect."""
    return sql_fragments.fragment("datetext.zero_date", "", v, sa.Boolean())  # type: ignore[no-any-return]


def _zero_date(v: ColumnElement[Any], _: str) -> ColumnElement[bool]:
    """Text beginning with the MySQL zero date ``0000-00-00``."""
    # The range says the same as the GLOB for text (binary order) and lets the
    # clock's index find these rows instead of a scan of the table.
    return sa.and_(
        v >= _text(ZERO_PREFIX),
        v < _text(ZERO_PREFIX[:-1] + "1"),
        sa.func.typeof(v) == _text("text"),
        _glob(v, ZERO_PREFIX + "*"),
    )


NORMAL_MAX = "9999-12-31 23:59:59.999999"
NORMAL_ZERO = "0000-00-00 00:00:00.000000"


def sql_normal(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[Any]:
    """:func:`_normal` of ``v``, compiled once per dialect."""
    if kind == "date":
        return v
    return sql_fragments.fragment("datetext.normal", kind, v, sa.String())  # type: ignore[no-any-return]


def _normal(v: ColumnElement[Any], kind: TextKind) -> ColumnElement[Any]:
    """The normal form of a valid ``v``: fixed width, UTC for ``timestamptz``.

    An offset that carries the instant past year 9999 has no normal form in
    SQLite (``strftime`` returns NULL) and one before year 0 a negative year:
    they read as the greatest normal form and as the zero date instead, so
    they stay in the future and zero on both sides.
    """
    if kind == "date":
        return v
    common = sa.case(
        (_canonical(v, kind), _cat(v, _text(".000000"))),
        (_glob(v, _MICROS_GLOB), v),
        (_glob(v, _SECONDS_GLOB), _cat(v, _text(".000000"))),
        else_=None,
    )
    n = _core_length(v, kind)
    wall = _wall_seconds(v, n)
    if kind == "timestamptz":
        zone = _substr(v, n + 1)
        utc = sa.func.strftime(_text("%Y-%m-%d %H:%M:%S"), _cat(wall, zone), type_=sa.String)
        # Two-argument max() is SQLite's scalar greatest: year -1 becomes the zero form.
        at_least_zero = sa.func.max(_cat(utc, _text("."), _fraction6(v, n)), _text(NORMAL_ZERO), type_=sa.String)
        return sa.func.coalesce(common, at_least_zero, _text(NORMAL_MAX), type_=sa.String)
    return sa.func.coalesce(common, _cat(wall, _text("."), _fraction6(v, n)), type_=sa.String)


sql_fragments.register("datetext.valid", _valid)  # type: ignore[arg-type]
sql_fragments.register("datetext.zero_date", _zero_date)
sql_fragments.register("datetext.normal", _normal)  # type: ignore[arg-type]


def normal_text(value: dt.datetime | dt.date) -> str:
    """A bound in normal form (naive datetimes as they read; dates as ``YYYY-MM-DD``)."""
    day = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, dt.datetime):
        return f"{day} {value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    return day
