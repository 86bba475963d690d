"""Time: the one source of "now", ISO 8601 periods and Regulation 1182/71.

Every due instant in the engine is computed here, on calendar dates in the
policy's timezone, so that the SQL cutoffs and the per-record evaluator share
one arithmetic. Article 3 of Regulation (EEC, Euratom) No 1182/71 fixes the
rules: the day of the event does not count, a period in months or years ends
at the end of the day bearing the same date in the last month or year (or of
that month's last day when the date does not exist there), and a deadline for
acting that ends on a Saturday, a Sunday or a public holiday moves to the next
working day (art. 3(4); public holidays of the pack's country, from the
``holidays`` package).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pendulum

from retention.errors import ConfigError

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<years>\d{1,7})Y)?(?:(?P<months>\d{1,7})M)?(?:(?P<weeks>\d{1,7})W)?(?:(?P<days>\d{1,7})D)?$"
)

EARLIEST_DAY = dt.date(1900, 1, 1)
"""The earliest as-of date (clocks before 1900 are zero-date anomalies anyway)."""
LATEST_DAY = dt.date(8998, 12, 31)
"""The latest as-of date: with schedules of at most :data:`MAX_SPAN_YEARS`, every due date
computed for a clock on or before it falls within year 9999, where Python's dates end."""
MAX_SPAN_YEARS = 1000
"""The longest schedule: a clock on 31 December 1999 must fall due by 1 January 3000."""
_SPAN_FROM, _SPAN_UNTIL = dt.date(1999, 12, 31), dt.date(3000, 1, 1)


def utcnow() -> dt.datetime:
    """The engine's only source of the current instant (tests freeze it)."""
    return dt.datetime.now(dt.UTC)


class PeriodSyntaxError(ValueError):
    """A period is not an ISO 8601 calendar duration."""


@dataclass(frozen=True, order=True)
class Period:
    """A calendar period: years and months first (clamped), then days."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``P3Y``, ``P13M``, ``P8D``, ``P1Y6M``, ``P2W``, ``P0D``.

        Time components (``PT12H``) and negative or fractional values are
        refused: retention periods are counted in whole calendar days.
        """
        if not isinstance(text, str):
            raise PeriodSyntaxError(f"expected an ISO 8601 duration such as P3Y, got {text!r}")
        match = _DURATION.match(text.strip())
        if match is None:
            hint = ""
            if text.strip().startswith("-"):
                hint = " (periods cannot be negative)"
            elif "T" in text.upper():
                hint = " (time components are not allowed; use days)"
            raise PeriodSyntaxError(f"{text!r} is not an ISO 8601 duration such as P3Y, P13M or P8D{hint}")
        parts = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
        return cls(
            years=parts["years"],
            months=parts["months"],
            days=parts["days"] + 7 * parts["weeks"],
        )

    def __str__(self) -> str:
        text = "P"
        text += f"{self.years}Y" if self.years else ""
        text += f"{self.months}M" if self.months else ""
        text += f"{self.days}D" if self.days or text == "P" else ""
        return text

    def add_to(self, day: dt.date) -> dt.date:
        """The date that ends this period counted from ``day`` (art. 3(2)(c))."""
        return _add_period(self, day)

    def _add_uncached(self, day: dt.date) -> dt.date:
        moved = pendulum.date(day.year, day.month, day.day)
        if self.years or self.months:
            moved = moved.add(years=self.years, months=self.months)
        if self.days:
            moved = moved.add(days=self.days)
        return dt.date(moved.year, moved.month, moved.day)

    def max_days(self) -> int:
        """An upper bound of the period's length in days, for searches."""
        return self.years * 366 + self.months * 31 + self.days

    def within(self, longest: Period) -> bool:
        """Whether this period, counted from 31 Dec 1999, ends no later than ``longest`` does."""
        return Schedule(self).fits(Schedule(longest).due_date(_SPAN_FROM))


@dataclass(frozen=True)
class YearEnd:
    """The last day of a financial year, as month and day (default 31 December)."""

    month: int = 12
    day: int = 31

    @classmethod
    def parse(cls, text: str) -> YearEnd:
        """Parse ``MM-DD``; 29 February is refused since most years lack it."""
        match = re.fullmatch(r"(\d{2})-(\d{2})", text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r} is not a year end in MM-DD form such as 12-31")
        month, day = int(match.group(1)), int(match.group(2))
        try:
            dt.date(2021, month, day)
        except ValueError:
            raise ValueError(f"{text!r} is not a day that exists every year") from None
        return cls(month, day)

    def close_of(self, day: dt.date) -> dt.date:
        """The last day of the financial year that contains ``day``."""
        end = dt.date(day.year, self.month, self.day)
        return end if day <= end else dt.date(day.year + 1, self.month, self.day)


Anchor = Literal["event", "financial_year_end"]
AfterFrom = Literal["previous", "clock", "entry"]


def chain_delay(delay: Period, after_from: AfterFrom, last_kept: dt.date, start: dt.date | None) -> dt.date:
    """The last kept day of a state whose previous state's last kept day is ``last_kept``.

    The previous state began at 00:00 the day after ``last_kept``.
    ``previous``: the delay continues the previous period (art. 3 counts it
    from that event's day exclusive, so from ``last_kept`` itself).
    ``entry``: it runs from the day the record entered the previous state,
    that day not counted (art. 3(1)). ``clock``: it runs from the original
    event ``start`` (the clock's day, or its financial year's close), and a
    state never comes before the previous one (without ``start``, as
    ``previous``).
    """
    if after_from == "entry":
        return delay.add_to(last_kept + dt.timedelta(days=1))
    if after_from == "clock" and start is not None:
        return max(last_kept, delay.add_to(start))
    return delay.add_to(last_kept)


@dataclass(frozen=True)
class Schedule:
    """How the due date of a lifecycle state follows from a clock's local date.

    ``period`` runs from the clock (or from the close of its financial year);
    each of ``delays`` then runs from the previous state's due date. The result
    is the local date at whose first instant the record becomes due.
    """

    period: Period
    delays: tuple[Period, ...] = ()
    year_end: YearEnd | None = None
    after_from: tuple[AfterFrom, ...] = ()  # one per delay; missing ones are "previous"

    def due_date(self, event: dt.date) -> dt.date:
        """Local date at 00:00 of which the record becomes due."""
        start = self.year_end.close_of(event) if self.year_end else event
        last_kept = self.period.add_to(start)
        for index, delay in enumerate(self.delays):
            last_kept = chain_delay(delay, self._from(index), last_kept, start)
        return last_kept + dt.timedelta(days=1)

    def _from(self, index: int) -> AfterFrom:
        return self.after_from[index] if index < len(self.after_from) else "previous"

    def fits(self, until: dt.date | None = None) -> bool:
        """Whether a clock on 31 Dec 1999 falls due by ``until`` (default 1 Jan 3000).

        The default is the engine's limit (:data:`MAX_SPAN_YEARS`): with as-of
        dates up to :data:`LATEST_DAY` it keeps every due date within year 9999.
        """
        try:
            return self.due_date(_SPAN_FROM) <= (until or _SPAN_UNTIL)
        except (ValueError, OverflowError):  # past year 9999
            return False

    def span_days(self) -> int:
        """An upper bound of ``due_date(d) - d`` in days."""
        total = self.period.max_days() + sum(d.max_days() + 1 for d in self.delays) + 2
        return total + (366 if self.year_end else 0)

    def last_event_due_by(self, today: dt.date) -> dt.date:
        """The latest clock date whose due date is on or before ``today``.

        ``due_date`` is monotone non-decreasing, so a binary search finds the
        exact boundary even where month-end clamping maps several clock dates
        to one due date (29 Feb and 28 Feb + P1Y are both due on 1 Mar).
        """
        lo = today.toordinal() - self.span_days() - 2
        hi = today.toordinal() - 1
        if self.due_date(dt.date.fromordinal(lo)) > today:  # pragma: no cover - span is an upper bound
            raise AssertionError("period search bound too small")
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.due_date(dt.date.fromordinal(mid)) <= today:
                lo = mid
            else:
                hi = mid - 1
        return dt.date.fromordinal(lo)


@lru_cache(maxsize=65536)
def _add_period(period: Period, day: dt.date) -> dt.date:
    # Records cluster on few dates, so caching makes per-record evaluation cheap.
    return period._add_uncached(day)


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    # The system's zoneinfo folder also holds files that are not zone names.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "posixrules"})


def iana_zone(name: str) -> str:
    """``name`` if it is an IANA zone name; ``localtime`` and paths would depend on the machine."""
    if name not in _iana_names():
        raise ValueError(f"unknown timezone {name!r}; use an IANA name such as Europe/Paris or UTC")
    return name


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """A timezone by IANA name, loaded once."""
    return ZoneInfo(name)


def local_date(instant: dt.datetime, tz: str) -> dt.date:
    """The calendar date of an aware instant in ``tz``."""
    if instant.tzinfo is None:
        raise ValueError("local_date needs an aware datetime")
    return instant.astimezone(zone(tz)).date()


@lru_cache(maxsize=65536)
def start_of_day(day: dt.date, tz: str) -> dt.datetime:
    """The first instant of ``day`` in ``tz``, as an aware UTC datetime.

    A midnight that a DST change skips resolves to the first instant after
    the gap (zoneinfo's fold=0 reading), as pendulum does.
    """
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone(tz)).astimezone(dt.UTC)


def due_instant(due_day: dt.date, tz: str) -> dt.datetime:
    """When a record due on ``due_day`` (local) becomes due, in UTC."""
    return start_of_day(due_day, tz)


@dataclass(frozen=True)
class WorkingDays:
    """Which days count for a deadline to act: not Saturdays, Sundays or public holidays.

    Regulation 1182/71 art. 2(2) counts as working days all days other than
    public holidays, Sundays and Saturdays; the public holidays are those of
    the country (and subdivision) where the act is done, as the pack names it.
    Without a country only weekends are skipped.
    """

    country: str | None = None
    subdivision: str | None = None

    def closed(self, day: dt.date) -> str | None:
        """Why ``day`` is not a working day (a holiday's name, "Saturday", "Sunday"), else None."""
        if self.country is not None:
            name = public_holidays(self.country, self.subdivision).get(day)
            if name:
                return str(name)
        if day.weekday() >= 5:
            return ("Saturday", "Sunday")[day.weekday() - 5]
        return None

    def next_working_day(self, day: dt.date) -> tuple[dt.date, list[tuple[dt.date, str]]]:
        """``day`` or the first working day after it, with every day skipped and why."""
        skipped: list[tuple[dt.date, str]] = []
        while (reason := self.closed(day)) is not None:
            skipped.append((day, reason))
            day += dt.timedelta(days=1)
        return day, skipped


@lru_cache(maxsize=32)
def public_holidays(country: str, subdivision: str | None = None) -> Any:
    """The ``holidays`` calendar of a country (English names where the package has them).

    The calendar fills in years on first lookup; one object per country is kept.
    """
    import holidays

    cls = type(holidays.country_holidays(country, subdiv=subdivision))
    language = "en_US" if "en_US" in getattr(cls, "supported_languages", ()) else None
    return holidays.country_holidays(country, subdiv=subdivision, language=language)


def action_deadline(received: dt.date, period: Period, calendar: WorkingDays | None = None) -> dt.date:
    """Last day to act on a request (art. 3(4): a weekend or public holiday moves to the next working day)."""
    last, _ = (calendar or WorkingDays()).next_working_day(period.add_to(received))
    return last


def as_aware(value: dt.datetime, assume_tz: str = "UTC") -> dt.datetime:
    """Attach ``assume_tz`` to a naive datetime; leave aware ones alone."""
    if value.tzinfo is not None:
        return value
    if assume_tz == "UTC":
        return value.replace(tzinfo=dt.UTC)
    # fold=0: an ambiguous wall time is its first occurrence, a skipped one moves forward.
    return value.replace(tzinfo=zone(assume_tz)).astimezone(dt.UTC)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?", re.ASCII)


@dataclass(frozen=True)
class AsOf:
    """An evaluation moment as an operator gives it: a calendar date or an exact instant.

    A date means its first instant in the pack's timezone, which is only
    known once the pack is chosen, hence :meth:`resolve`. Dates outside
    :data:`EARLIEST_DAY` .. :data:`LATEST_DAY` are refused at parse time so
    that the date arithmetic after them cannot leave Python's calendar.
    """

    day: dt.date | None = None
    instant: dt.datetime | None = None  # aware, or naive: a wall-clock time in the pack's timezone

    @classmethod
    def parse(cls, text: str) -> AsOf:
        """``YYYY-MM-DD`` or an ISO 8601 date and time (``2026-01-01T02:30``, ``...Z``, ``...+01:00``)."""
        value = text.strip()
        if _DAY.fullmatch(value):
            try:
                day = dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{text!r} is not a date that exists") from None
            return cls(day=_in_range(day, text))
        if not _INSTANT.fullmatch(value):
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date and time")
        try:
            instant = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{text!r} is not a date and time that exists") from None
        _in_range(instant.date(), text)
        return cls(instant=instant)

    @classmethod
    def now(cls) -> AsOf:
        """The as-of of a run started now: this instant, read once."""
        return cls(instant=utcnow())

    @classmethod
    def given(cls, value: AsOf | str | None, what: str = "as-of") -> AsOf | None:
        """What a library caller passed, as an :class:`AsOf`: the CLI's is parsed already, text is parsed here.

        The one place where a bad as-of from Python becomes a one-line
        :class:`ConfigError` naming the option (``what``); None stays None (now).
        """
        if value is None or isinstance(value, AsOf):
            return value
        try:
            return cls.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None

    def text(self) -> str:
        """The as-of as it was given (a date, or an ISO 8601 instant): what a subprocess or a task parses back."""
        if self.day is not None:
            return self.day.isoformat()
        assert self.instant is not None
        return self.instant.isoformat()

    def resolve(self, timezone: str) -> dt.datetime:
        """The aware UTC instant, a date or a naive time being read in ``timezone``."""
        if self.day is not None:
            return start_of_day(self.day, timezone)
        assert self.instant is not None
        return as_aware(self.instant, timezone).astimezone(dt.UTC)


def _in_range(day: dt.date, text: str) -> dt.date:
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise ValueError(f"{text!r} is outside the dates the engine computes ({EARLIEST_DAY} to {LATEST_DAY})")
    return day
