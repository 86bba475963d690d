"""A deliberately naive model of docs/rules.md, written for the tests.

The differential test and the production-shaped schemas hold the engine to
this model. It shares no code with ``retention.engine.plan``, ``retention.engine.evaluate``,
``retention.engine.execute`` or ``retention.timing.clock`` (nor with ``retention.policy``,
which builds on the clock module): it reads the rule pack as the plain data
of its YAML, every row of every table as Python values, and applies the
section "How a run decides: the semantics" of docs/rules.md record by
record, with its own period arithmetic (Regulation 1182/71 art. 3 as the
docs state it) and its own parser of SQLite's text datetimes. Only the
standard library's ``datetime``, ``calendar`` and ``zoneinfo`` are used.

Being naive is the point: no SQL, no cutoffs, no caches; each record's due
instants are computed forward from its clock values, every reason of every
state is listed and the earliest wins. Where docs/rules.md leaves a choice
open, the comment at that line says which reading this model takes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

UTC = dt.UTC
STATES = ("active", "inactive", "archived", "purged")
FLOOR_DAY = dt.date(1900, 1, 1)
FLOOR_WALL = dt.datetime(1900, 1, 1)

# --------------------------------------------------------------------------
# Time: periods and days (docs/rules.md "Time semantics")
# --------------------------------------------------------------------------

_PERIOD = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?")


def add_period(event: dt.date, period: str) -> dt.date:
    """The last day of ``period`` counted from the ``event`` day, which does not count.

    Months and years land on the same date, or on the month's last day when
    that date does not exist there; weeks and days are then added as days.
    """
    match = _PERIOD.fullmatch(period)
    if match is None or period == "P":
        raise ValueError(f"not a calendar period: {period!r}")
    years, months, weeks, days = (int(g) if g else 0 for g in match.groups())
    index = event.year * 12 + (event.month - 1) + 12 * years + months
    year, month0 = divmod(index, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    moved = dt.date(year, month0 + 1, min(event.day, last_day))
    return moved + dt.timedelta(days=7 * weeks + days)


def local_day(instant: dt.datetime, tz: str) -> dt.date:
    """The calendar date of an aware instant in ``tz``."""
    return instant.astimezone(ZoneInfo(tz)).date()


def midnight(day: dt.date, tz: str) -> dt.datetime:
    """00:00 local of ``day`` in ``tz``, as an aware UTC instant."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def due_after(event_day: dt.date, period: str, tz: str) -> dt.datetime:
    """Due at 00:00 local the day after the last kept day of ``period`` from ``event_day``."""
    return midnight(add_period(event_day, period) + dt.timedelta(days=1), tz)


def year_close(day: dt.date, year_end: str) -> dt.date:
    """The last day of the financial year (``MM-DD`` end) that contains ``day``."""
    month, dom = (int(p) for p in year_end.split("-"))
    end = dt.date(day.year, month, dom)
    return end if day <= end else dt.date(day.year + 1, month, dom)


# --------------------------------------------------------------------------
# Reading a stored value
# --------------------------------------------------------------------------

# The stored text forms docs/rules.md ("Stored values") accepts on SQLite:
# YYYY-MM-DD, optionally followed by ' ' or 'T' and HH:MM, HH:MM:SS or
# HH:MM:SS.f (1 to 6 fraction digits), and, for timestamptz only, after a time,
# 'Z' or +HH:MM / -HH:MM (hours 00-14). Fields must exist (proleptic
# Gregorian calendar; year 0 is a leap year).
_SQLITE_TEXT = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[ T](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?",
    re.ASCII,
)
_EPOCH_TEXT = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class Parsed:
    """A stored value: ``null``, ``zero``, ``invalid``, or ``value`` with ``at``.

    ``at`` is an aware UTC instant, or a ``date`` for date clocks.
    """

    kind: str
    at: dt.datetime | dt.date | None = None


def parse_text(text: str) -> tuple[dt.datetime, dt.timedelta | None] | str:
    """A SQLite text datetime as (wall time, offset or None), or 'zero' / 'invalid'."""
    if text.startswith("0000-00-00"):
        return "zero"
    match = _SQLITE_TEXT.fullmatch(text)
    if match is None:
        return "invalid"
    g = match.groupdict()
    fraction = (g["f"] or "").ljust(6, "0")
    year = int(g["y"])
    try:
        wall = dt.datetime(
            # Year 0 (a leap year, like 2000) is before 1900: check its fields on 2000.
            year or 2000,
            int(g["mo"]),
            int(g["d"]),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int(fraction),
        )
    except ValueError:
        return "invalid"
    if year == 0:
        return "zero"
    suffix = g["tz"]
    if suffix is None:
        return wall, None
    if suffix == "Z":
        return wall, dt.timedelta(0)
    sign = 1 if suffix[0] == "+" else -1
    hours, minutes = int(suffix[1:3]), int(suffix[4:6])
    if hours > 14 or minutes > 59:
        return "invalid"
    return wall, sign * dt.timedelta(hours=hours, minutes=minutes)


def parse_value(kind: str, raw: Any, column_tz: str = "UTC") -> Parsed:
    """What a raw database value of a clock of ``kind`` holds (no as-of involved)."""
    if raw is None:
        return Parsed("null")
    if kind in ("epoch", "epoch_text"):
        if kind == "epoch_text":
            text = raw if isinstance(raw, str) else str(raw)
            if not _EPOCH_TEXT.fullmatch(text):
                return Parsed("invalid")
            seconds = int(text)
        else:
            seconds = int(raw)  # int, or Decimal/float from a NUMERIC column
        if seconds <= 0:
            return Parsed("zero")
        return Parsed("value", dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds))
    if kind == "date":
        if isinstance(raw, dt.datetime):
            day = raw.date()
        elif isinstance(raw, dt.date):
            day = raw
        else:
            parsed = parse_text(str(raw))
            if isinstance(parsed, str):
                return Parsed(parsed)
            if len(str(raw)) != 10:
                return Parsed("invalid")  # a date column holds a date, nothing more
            day = parsed[0].date()
        return Parsed("zero") if day < FLOOR_DAY else Parsed("value", day)
    # timestamptz and timestamp
    offset: dt.timedelta | None
    if isinstance(raw, dt.datetime):
        wall, offset = raw.replace(tzinfo=None), raw.utcoffset()
    elif isinstance(raw, dt.date):
        wall, offset = dt.datetime(raw.year, raw.month, raw.day), None
    else:
        parsed = parse_text(str(raw))
        if isinstance(parsed, str):
            return Parsed(parsed)
        wall, offset = parsed
        if offset is not None and kind != "timestamptz":
            return Parsed("invalid")  # a naive column holds a wall time, no zone
    if wall < FLOOR_WALL:
        return Parsed("zero")
    if offset is not None:
        instant = (wall - offset).replace(tzinfo=UTC)
    elif kind == "timestamptz":
        instant = wall.replace(tzinfo=UTC)  # MySQL and SQLite values are read as UTC
    else:
        # A naive wall time in the column's zone; the tests never store a wall
        # time that a DST change skips or repeats in that zone.
        instant = wall.replace(tzinfo=ZoneInfo(column_tz)).astimezone(UTC)
    if instant < dt.datetime(1900, 1, 1, tzinfo=UTC):
        return Parsed("zero")
    return Parsed("value", instant)


@dataclass(frozen=True)
class Reading:
    """One clock of one record at an as-of instant: an anomaly, or its local date."""

    anomaly: str | None  # None, 'null', 'zero', 'invalid', 'future', or 'live' (an expiry still ahead: no anomaly)
    day: dt.date | None = None
    at: dt.datetime | None = None  # the instant, for an expiry clock (``expires: true``)


def judge(kind: str, parsed: Parsed, as_of: dt.datetime, tz: str, expires: bool = False) -> Reading:
    """Classify a parsed clock at ``as_of``: future values are an anomaly, except an expiry still ahead."""
    if parsed.kind != "value":
        return Reading(parsed.kind)
    at = parsed.at
    if isinstance(at, dt.datetime):
        if at > as_of:
            return Reading("live" if expires else "future")
        return Reading(None, local_day(at, tz), at)
    assert isinstance(at, dt.date)
    if midnight(at, tz) > as_of:
        return Reading("future")
    return Reading(None, at)


def aggregate(kind: str, values: Iterable[Parsed], ignore_invalid: bool = False) -> Parsed:
    """``max`` over related rows: NULLs skipped; any invalid value makes the clock invalid.

    Issue 10 case 4: an invalid value inside an aggregate clock is not
    dropped; the record becomes an ``invalid`` anomaly. Zero values lose
    against any real value; with only zeros the clock is zero. Issue 26
    clause 1: with ``invalid_rows: ignore`` an invalid value is skipped like
    a NULL (the max of the readable rows; none readable: NULL).
    """
    best: Parsed | None = None
    zero = False
    for value in values:
        if value.kind == "invalid":
            if ignore_invalid:
                continue
            return value
        if value.kind == "zero":
            zero = True
        elif value.kind == "value":
            assert value.at is not None
            if best is None or _order(value.at) > _order(best.at):
                best = value
    if best is not None:
        return best
    return Parsed("zero") if zero else Parsed("null")


def _order(at: dt.datetime | dt.date | None) -> tuple[int, float]:
    if isinstance(at, dt.datetime):
        return (0, at.timestamp())
    assert at is not None
    return (0, float(at.toordinal()))


# --------------------------------------------------------------------------
# The world: tables, states, holds, erasure requests
# --------------------------------------------------------------------------


@dataclass
class Hold:
    """A legal hold as the oracle knows it."""

    scope: str  # subject, dataset or record
    dataset: str | None = None
    record_key: str | None = None
    subject_key: str | None = None
    active: bool = True
    email: str | None = None  # normalised


@dataclass
class Request:
    """An erasure request: the lowest id among the open requests naming one of a record's identities counts."""

    id: int
    subject_key: str | None
    received_on: dt.date
    email: str | None = None  # normalised


@dataclass
class State:
    """A record's state row: where it is, since when, whose it is."""

    state: str
    since: dt.datetime
    subject: str | None
    email: str | None = None  # the engine keeps its pseudonym; equal addresses, equal pseudonyms


@dataclass(frozen=True)
class Step:
    from_state: str
    to_state: str
    at: dt.datetime


@dataclass
class World:
    """Everything a run reads, kept by the oracle from run to run.

    ``tables`` maps a table name to its rows by key (text); ``keys`` names
    each table's key column. Rows are the raw Python values read from the
    database before the first run; the oracle then applies its own
    predictions to them (deletes, masks, deactivations).
    """

    pack: Mapping[str, Any]
    tables: dict[str, dict[str, dict[str, Any]]]
    keys: dict[str, str]
    states: dict[tuple[str, str], State] = field(default_factory=dict)
    archive: set[tuple[str, str]] = field(default_factory=set)
    holds: list[Hold] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    masked: set[tuple[str, str]] = field(default_factory=set)  # records a partial erasure masked (clause 4)

    @property
    def tz(self) -> str:
        return str(self.pack.get("timezone", "UTC"))

    @property
    def year_end(self) -> str:
        return str(self.pack.get("financial_year_end", "12-31"))

    def datasets(self) -> dict[str, Mapping[str, Any]]:
        return dict(self.pack["datasets"])


def key_text(value: Any) -> str:
    """A key or subject as text, as the engine's tables hold it.

    PostgreSQL pads CHAR(n) values with spaces that its comparisons ignore
    (WooCommerce's ``session_key CHAR(32)``); they are not part of the key.
    """
    return value.rstrip(" ") if isinstance(value, str) else str(value)


def lifecycle_states(ds: Mapping[str, Any]) -> list[str]:
    """The dataset's states in order, starting with active."""
    return ["active", *(step["to"] for step in ds["lifecycle"])]


def _step(ds: Mapping[str, Any], state: str) -> Mapping[str, Any]:
    return next(step for step in ds["lifecycle"] if step["to"] == state)


def leaders_first(datasets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Dataset names with every followed dataset before its followers."""
    order: list[str] = []
    remaining = list(datasets)
    while remaining:
        for name in remaining:
            follows = datasets[name].get("follows")
            if follows is None or follows["dataset"] in order:
                order.append(name)
                remaining.remove(name)
                break
        else:  # pragma: no cover - packs that follow in a cycle are refused by check
            raise ValueError("follows form a cycle")
    return order


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run does: each record's steps, and counts per dataset and transition."""

    steps: dict[tuple[str, str], list[Step]]
    anomalies: dict[tuple[str, str], str]
    masks: set[tuple[str, str]] = field(default_factory=set)  # masked by a partial erasure in this run

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for dataset, _ in sorted(self.masks):
            per = result.setdefault(dataset, {})
            per["erasure_mask"] = per.get("erasure_mask", 0) + 1
        for (dataset, _), steps in sorted(self.steps.items()):
            for step in steps:
                name = f"{step.from_state}->{step.to_state}"
                per = result.setdefault(dataset, {})
                per[name] = per.get(name, 0) + 1
        return result


def clock_readings(world: World, name: str, row: Mapping[str, Any], as_of: dt.datetime) -> list[Reading]:
    """Each keep rule's clock for one row, read from the tables as they are now."""
    ds = world.datasets()[name]
    readings = []
    for rule in ds.get("keep", []):
        clock = rule["clock"]
        kind = clock.get("type", "timestamptz")
        column_tz = clock.get("timezone") or "UTC"
        if clock.get("aggregate") == "max":
            reference = row[clock.get("references") or ds["key"]]
            where = clock.get("where") or {}
            related = [
                parse_value(kind, other[clock["column"]], column_tz)
                for other in world.tables[clock["table"]].values()
                if reference is not None
                and other[clock["on"]] is not None
                and key_text(other[clock["on"]]) == key_text(reference)
                # The same column conditions as a dataset's where (issue 26 clause 1).
                and all(_passes(other[k], v) for k, v in where.items())
            ]
            parsed = aggregate(kind, related, clock.get("invalid_rows") == "ignore")
        else:
            parsed = parse_value(kind, row[clock["column"]], column_tz)
        readings.append(judge(kind, parsed, as_of, world.tz, bool(clock.get("expires"))))
    return readings


def clock_due(world: World, name: str, readings: Sequence[Reading]) -> tuple[dt.datetime | None, str | None]:
    """The first state's due instant by the record's own clocks, or the anomaly that bars it.

    Kept while any justification holds: the latest per-clock due instant.
    A zero, invalid or future value in any clock bars the clock reason (the
    first such clock in keep order names the anomaly); only NULL clocks
    bar it as ``null``.
    """
    ds = world.datasets()[name]
    for reading in readings:
        if reading.anomaly in ("zero", "invalid", "future"):
            return None, reading.anomaly
    if not readings or all(r.anomaly == "null" for r in readings):
        return None, "null" if readings else None
    if any(r.anomaly == "live" for r in readings):
        return None, None  # kept until its expiry, which is no anomaly
    first_after = ds["lifecycle"][0].get("after", "P0D")
    latest: dt.datetime | None = None
    for rule, reading in zip(ds["keep"], readings, strict=True):
        if reading.day is None:
            continue
        if rule["clock"].get("expires"):  # due at the very instant (the oracle models no delay after it)
            assert first_after == "P0D" and reading.at is not None, "the oracle models bare expiry clocks only"
            latest = reading.at if latest is None else max(latest, reading.at)
            continue
        start = year_close(reading.day, world.year_end) if rule.get("anchor") == "financial_year_end" else reading.day
        last_kept = add_period(start, rule["period"])
        due = due_after(last_kept, first_after, world.tz)
        latest = due if latest is None else max(latest, due)
    return latest, None


# --------------------------------------------------------------------------
# Which rows are records: ``where`` (docs/rules.md "Which rows: where")
# --------------------------------------------------------------------------


def _as_day_or_moment(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _comparable(stored: Any, wanted: Any) -> tuple[Any, Any]:
    """Both values in one Python type: numbers as numbers, dates as dates, else text."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return int(stored), int(wanted)
    if isinstance(stored, int | float) and isinstance(wanted, int | float):
        return stored, wanted
    if hasattr(stored, "as_integer_ratio") and isinstance(wanted, int | float):  # Decimal
        return float(stored), float(wanted)
    if isinstance(stored, dt.datetime):
        moment = _as_day_or_moment(wanted)
        if isinstance(moment, dt.date) and not isinstance(moment, dt.datetime):
            moment = dt.datetime(moment.year, moment.month, moment.day)
        return stored.replace(tzinfo=None), moment
    if isinstance(stored, dt.date):
        day = _as_day_or_moment(wanted)
        return stored, day.date() if isinstance(day, dt.datetime) else day
    return str(stored), str(wanted)


def _passes(stored: Any, spec: Any) -> bool:
    """One column's condition, read from the YAML as written."""
    if spec is None:
        return stored is None
    if isinstance(spec, list):
        return stored is not None and any(_passes(stored, v) for v in spec)
    if not isinstance(spec, dict):
        if stored is None:
            return False
        a, b = _comparable(stored, spec)
        return bool(a == b)
    for op, wanted in spec.items():
        if op == "not":
            # Every value but the ones named, NULL included; `not: null` is "has a value".
            ok = stored is not None if wanted is None else stored is None or not _passes(stored, wanted)
        elif stored is None:
            ok = False
        elif op == "contains":
            ok = str(wanted) in str(stored)
        else:
            a, b = _comparable(stored, wanted)
            ok = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        if not ok:
            return False
    return True


def matches(world: World, ds: Mapping[str, Any], row: Mapping[str, Any], which: str = "where") -> bool:
    """Whether a source row is one of the dataset's records (``which="erasure_where"``: in erasure's reach)."""
    where = ds.get(which)
    if not where:
        return True
    for column, spec in where.items():
        if column != "related":
            if not _passes(row[column], spec):
                return False
            continue
        for related in spec if isinstance(spec, list) else [spec]:
            reference = row[related.get("references") or ds["key"]]
            found = any(
                reference is not None
                and other[related["on"]] is not None
                and key_text(other[related["on"]]) == key_text(reference)
                and all(_passes(other[c], v) for c, v in (related.get("where") or {}).items())
                for other in world.tables[related["table"]].values()
            )
            if found != related.get("exists", True):
                return False
    return True


def has_subject(ds: Mapping[str, Any]) -> bool:
    return ds.get("subject_key") is not None or ds.get("subject") is not None


def _through(world: World, value: Any, hops: Sequence[Mapping[str, str]]) -> Any:
    for hop in hops:
        if value is None:
            break
        found = [
            other
            for other in world.tables[hop["table"]].values()
            if other[hop["key"]] is not None and key_text(other[hop["key"]]) == key_text(value)
        ]
        value = found[0][hop["column"]] if found else None
    return value


def subject_of(world: World, ds: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    """The person a row belongs to: its subject column, or the end of the ``subject.through`` lookups."""
    if ds.get("subject_key") is not None:
        value = row[ds["subject_key"]]
    elif ds.get("subject") is not None:
        value = _through(world, row[ds["subject"]["column"]], ds["subject"]["through"])
    else:
        return None
    return None if value is None else key_text(value)


def normal_email(address: str | None) -> str | None:
    """Spaces around trimmed, lower-cased; an empty address is none (docs/rules.md, "Identities")."""
    if address is None:
        return None
    normal = str(address).strip(" ").lower()
    return normal or None


def email_of(world: World, ds: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    """The row's normalised e-mail address: its ``email`` column, or the end of ``email.through``."""
    spec = ds.get("email")
    if spec is None:
        return None
    if isinstance(spec, str):
        return normal_email(row[spec])
    return normal_email(_through(world, row[spec["column"]], spec["through"]))


def leader_by_email(world: World, leader: str, address: str | None) -> str | None:
    """``follows: {by: email}`` (issue 26): the leader's record carrying ``address``, the greatest key if several.

    Only rows of the leader's table that are its records (its ``where``), with
    their address as it is now (a masked address matches no longer).
    """
    if address is None:
        return None
    ds = world.datasets()[leader]
    table = world.tables[ds["table"]]
    found = [key for key, row in table.items() if matches(world, ds, row) and email_of(world, ds, row) == address]
    return max(found, key=_natural) if found else None


def _held(world: World, name: str, key: str, subject: str | None, email: str | None = None) -> bool:
    subject_dataset = has_subject(world.datasets()[name])
    for hold in world.holds:
        if not hold.active:
            continue
        if hold.scope == "dataset" and hold.dataset == name:
            return True
        if hold.scope == "record" and hold.dataset == name and hold.record_key == key:
            return True
        if hold.scope == "subject" and subject_dataset and subject is not None and hold.subject_key == subject:
            return True
        if hold.scope == "subject" and email is not None and hold.email == email:
            return True
    return False


def _erasure(
    world: World, name: str, subject: str | None, today: dt.date, email: str | None = None
) -> tuple[str, dt.datetime] | None:
    """(target state, due instant) when an open request received by today names the subject or e-mail."""
    ds = world.datasets()[name]
    target = erasure_state(ds)
    if target is None:
        return None
    request = _request(world, ds, subject, today, email)
    return None if request is None else (target, midnight(request.received_on, world.tz))


def erasure_state(ds: Mapping[str, Any]) -> str | None:
    """The state ``on_erasure`` names; None without one, or for a partial erasure (a mapping: clause 4)."""
    target = ds.get("on_erasure")
    return target if isinstance(target, str) else None


def _request(
    world: World, ds: Mapping[str, Any], subject: str | None, today: dt.date, email: str | None
) -> Request | None:
    """The open request (lowest id) received by today naming the subject or the e-mail address."""
    if not has_subject(ds):
        subject = None
    open_requests = [
        r
        for r in world.requests
        if r.received_on <= today
        and ((subject is not None and r.subject_key == subject) or (email is not None and r.email == email))
    ]
    return min(open_requests, key=lambda r: r.id) if open_requests else None


def _masks_now(world: World, name: str, key: str, row: Mapping[str, Any] | None, today: dt.date) -> bool:
    """Partial erasure (docs/rules.md "Partial erasure"): a record the mask pass masks in this run.

    Its source row is one of the dataset's records, an open request received
    by today names the row's identities as they are now (not a state row's),
    no hold covers it, and it was not masked before.
    """
    ds = world.datasets()[name]
    if not isinstance(ds.get("on_erasure"), Mapping) or row is None or (name, key) in world.masked:
        return False
    if not matches(world, ds, row):
        return False
    subject, email = subject_of(world, ds, row), email_of(world, ds, row)
    if _request(world, ds, subject, today, email) is None:
        return False
    return not _held(world, name, key, subject, email)


def _marks(before: State | None, steps: Sequence[Step], leader_states: Sequence[str]) -> dict[str, dt.datetime]:
    """When the leader entered each state it holds after the run or passed through.

    States passed in earlier runs count at the since of the state held
    before this run; states entered in this run at the step's instant.
    """
    marks: dict[str, dt.datetime] = {}
    if before is not None:
        for state in leader_states[1 : leader_states.index(before.state) + 1]:
            marks[state] = before.since
    for step in steps:
        marks[step.to_state] = step.at
    return marks


def plan_run(world: World, as_of: dt.datetime) -> Outcome:
    """Every record's steps at ``as_of``, all decided on the world as it is at the start."""
    tz = world.tz
    today = local_day(as_of, tz)
    datasets = world.datasets()
    outcome = Outcome({}, {})
    for name in leaders_first(datasets):
        ds = datasets[name]
        table = world.tables[ds["table"]]
        states = lifecycle_states(ds)
        keys = set(table) | {k for (d, k) in world.states if d == name}
        for key in sorted(keys, key=_natural):
            row = table.get(key)
            if _masks_now(world, name, key, row, today):
                outcome.masks.add((name, key))
            before = world.states.get((name, key))
            if before is not None:
                subject, email = before.subject, before.email
            elif row is not None:
                subject, email = subject_of(world, ds, row), email_of(world, ds, row)
            else:
                subject = email = None
            current = before.state if before is not None else "active"
            if current == states[-1]:
                continue
            # Issue 26 clause 6: erasure reaches the rows of erasure_where when the
            # dataset has one, else its records; where scopes clocks and lifecycle.
            in_where = row is None or matches(world, ds, row)
            which = "erasure_where" if ds.get("erasure_where") else "where"
            in_reach = row is None or matches(world, ds, row, which)
            erasure = _erasure(world, name, subject, today, email) if in_reach else None
            target_index = states.index(erasure_state(ds) or "active")
            outside = not in_where and erasure is not None and states.index(current) < target_index
            if not in_where and not outside:
                continue  # not a record of the dataset: it never moves (a later state: it stays)
            if _held(world, name, key, subject, email):
                continue
            # The reasons, as (first state it reaches, last state, instant) or per state.
            clock_instant: dt.datetime | None = None
            if current == "active" and ds.get("keep") and row is not None and not outside:
                readings = clock_readings(world, name, row, as_of)
                clock_instant, anomaly = clock_due(world, name, readings)
                if anomaly is not None:
                    outcome.anomalies[(name, key)] = anomaly
            upto: list[tuple[str, dt.datetime]] = []  # (furthest state, instant) reached by erasure/follow
            if erasure is not None:
                upto.append(erasure)
            follows = ds.get("follows")
            if follows is not None and not outside:
                leader_key: str | None
                if follows.get("via"):
                    value = row[follows["via"]] if row is not None else None
                    leader_key = None if value is None else key_text(value)
                elif follows.get("by") == "email":
                    address = email_of(world, ds, row) if row is not None else None
                    leader_key = leader_by_email(world, follows["dataset"], address)
                else:
                    leader_key = subject
                if leader_key is not None:
                    leader = follows["dataset"]
                    leader_states = lifecycle_states(datasets[leader])
                    marks = _marks(
                        world.states.get((leader, leader_key)),
                        outcome.steps.get((leader, leader_key), []),
                        leader_states,
                    )
                    for leader_state, instant in marks.items():
                        own = follows["on"].get(leader_state)
                        if own is not None:
                            upto.append((own, instant))
            steps: list[Step] = []
            entered = before.since if before is not None else None
            for target in states[states.index(current) + 1 :]:
                candidates = [instant for last, instant in upto if states.index(target) <= states.index(last)]
                if target == states[1]:
                    if clock_instant is not None:
                        candidates.append(clock_instant)
                else:
                    assert entered is not None
                    event_day = local_day(entered, tz) - dt.timedelta(days=1)
                    candidates.append(due_after(event_day, _step(ds, target).get("after", "P0D"), tz))
                if not candidates:
                    break
                when = min(candidates)
                if when > as_of:
                    break
                if outside and states.index(target) > target_index:
                    break  # outside where: the erasure takes it to on_erasure, no further
                steps.append(Step(current, target, when))
                current, entered = target, when
            if steps:
                outcome.steps[(name, key)] = steps
    return outcome


def _natural(key: str) -> tuple[int, str]:
    return (int(key), "") if key.lstrip("-").isdigit() else (0, key)


def apply(world: World, outcome: Outcome) -> None:
    """Carry out ``outcome`` on the oracle's copy of the data and states.

    A run masks (partial erasure) before any lifecycle step, so a record
    archived or moved in the same run carries masked values and identities.
    """
    datasets = world.datasets()
    for name, key in sorted(outcome.masks):
        _mask(world.tables[datasets[name]["table"]][key], datasets[name]["on_erasure"]["mask"])
        world.masked.add((name, key))
    for (name, key), steps in outcome.steps.items():
        ds = datasets[name]
        table = world.tables[ds["table"]]
        before = world.states.get((name, key))
        subject = before.subject if before is not None else subject_of(world, ds, table[key])
        email = before.email if before is not None else email_of(world, ds, table[key])
        keep_state = True
        for step in steps:
            spec = _step(ds, step.to_state)
            action = spec.get("action")
            if step.to_state == "inactive":
                table[key].update(spec.get("set") or {})
            elif step.to_state == "archived":
                world.archive.add((name, key))
                if spec["then"] == "delete":
                    del table[key]
                    world.masked.discard((name, key))
                else:
                    _mask(table[key], spec["mask"])
            elif step.from_state == "archived":  # purging an archived record: its payload goes
                world.archive.discard((name, key))
                keep_state = _step(ds, "archived")["then"] == "anonymise"
            elif action in ("delete", "drop_partition"):
                del table[key]
                world.masked.discard((name, key))
                keep_state = False
            else:
                assert action == "anonymise", action
                _mask(table[key], spec["mask"])
        if keep_state:
            world.states[(name, key)] = State(steps[-1].to_state, steps[-1].at, subject, email)
        else:
            world.states.pop((name, key), None)


def _mask(row: dict[str, Any], mask: Mapping[str, Any]) -> None:
    """The masks the tests use: ``null`` and ``fixed``."""
    for column, strategy in mask.items():
        if strategy is None or strategy == "null" or (isinstance(strategy, dict) and strategy["strategy"] == "null"):
            row[column] = None
        elif isinstance(strategy, dict) and strategy["strategy"] == "fixed":
            row[column] = strategy["value"]
        else:  # pragma: no cover - the oracle predicts only what it can compute
            raise ValueError(f"the oracle does not model mask {strategy!r}")
