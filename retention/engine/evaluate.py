"""Clocks to due dates, twice: as set-based SQL and per record in Python.

The SQL side never puts a function on a clock column as its only condition:
for each (keep rule, target state) the exact cutoff is computed once in
Python with :class:`retention.timing.clock.Schedule` and the column is compared
against it as a range, so an index on the column serves the query; checks
that need a function (is the stored value readable at all, where exactly in
a day does a SQLite text value fall) only filter the rows inside that range.
The Python side computes each record's due instants forward from its clock
values. A property test holds the two to the same answer on every database.

Every stored value falls in exactly one class, on both sides alike
(docs/rules.md, "Clocks and periods"): NULL (justifies nothing; a record
whose clocks are all NULL is skipped), *zero* (the zero date, a date before
1900, an epoch <= 0), *invalid* (anything that cannot be read as the
declared kind: garbage text, a day that does not exist, a number in a text
datetime column, in any related row of an aggregate), *future* (later than
the as-of instant), or a valid reading. A zero, invalid or future value in
any clock makes the record skipped and counted, never moved. The Python
side never raises on a database value.

This module is the Python side; reading one stored value is
:mod:`~retention.engine.clock_read`, the SQL side :mod:`~retention.engine.clock_sql`
(both re-exported from here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retention.engine.clock_read import (
    ANOMALIES,
    EPOCH_TEXT_DIGITS,
    EPOCH_TEXT_HUGE,
    FLOOR_DATE,
    FLOOR_INSTANT,
    FLOOR_NAIVE,
    IGNORED_ROWS,
    NULL_KEYS,
    Anomaly,
    ClockReading,
    _delayed,
    combine_related,
    read_clock,
    read_value,
)
from retention.engine.clock_sql import (
    ClockSQL,
    DatasetSQL,
    clock_sql,
    column_of,
    dataset_sql,
    explain_clock_values,
    reflect_table,
)
from retention.policy.model import Dataset, Pack
from retention.timing.clock import Schedule, due_instant

# --------------------------------------------------------------------------
# Python: one record
# --------------------------------------------------------------------------


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

    ``raws`` are the values of :meth:`DatasetSQL.values` (or of the plain
    clock columns); see :func:`evaluate_readings`.
    """
    tz = pack.timezone
    keep = dataset.keep
    if len(raws) != len(keep):
        raise ValueError(f"dataset has {len(keep)} clocks, got {len(raws)} values")
    if len(keep) == 1:
        return evaluate_readings(pack, dataset, (read_clock(keep[0].clock, raws[0], as_of, tz),), cache)
    readings = tuple(read_clock(rule.clock, raw, as_of, tz) for rule, raw in zip(keep, raws, strict=True))
    return evaluate_readings(pack, dataset, readings, cache)


def evaluate_readings(
    pack: Pack,
    dataset: Dataset,
    readings: Sequence[ClockReading],
    cache: DueCache | None = None,
) -> RecordEvaluation:
    """Evaluate an active record from its classified clocks (one per keep rule).

    The record is kept while any justification holds, so each state is due
    at the latest of the per-clock due instants; NULL clocks hold nothing,
    and the first zero, invalid or future clock in keep order makes the
    record an anomaly. Due dates depend on the clocks' local dates only, and
    a batch's records share few dates, so a caller evaluating many records
    of one dataset passes a ``cache`` (keyed by those dates) that it keeps
    between calls.
    """
    tz = pack.timezone
    readings = tuple(readings)
    expiring = any(rule.clock.is_expiry for rule in dataset.keep)
    if len(readings) == 1 and not expiring:  # the common case, kept lean: a purge evaluates every record it moves
        if readings[0].anomaly is not None:
            return RecordEvaluation(readings, readings[0].anomaly)
    else:
        blocking = [
            r.anomaly
            for r, rule in zip(readings, dataset.keep, strict=True)
            if r.anomaly not in (None, "null") and not (r.anomaly == "future" and rule.clock.is_expiry)
        ]
        if blocking:
            return RecordEvaluation(readings, blocking[0])
        if all(r.anomaly == "null" for r in readings):
            return RecordEvaluation(readings, "null")
    key: tuple[Any, ...] = tuple(r.moment(tz) if r.anomaly is None else r.anomaly for r in readings)
    if not expiring:
        key = tuple(r.day for r in readings)
    if cache is not None:
        known = cache.get(key)
        if known is not None:
            return RecordEvaluation(readings, None, known[0], known[1])
    due: dict[str, dt.datetime] = {}
    governing: dict[str, int] = {}
    for step in dataset.lifecycle:
        schedules = dataset.schedules(step.to, pack.financial_year_end)
        best: tuple[dt.datetime, int] | None = None
        for index, (reading, schedule, rule) in enumerate(zip(readings, schedules, dataset.keep, strict=True)):
            if rule.clock.is_expiry:
                if reading.anomaly == "future":
                    when = NOT_YET  # a live session: due at its expiry, after any as-of instant seen so far
                elif reading.day is None:
                    continue
                else:
                    when = expiry_due(reading, schedule, tz)
            elif reading.day is None:
                continue
            else:
                when = due_instant(schedule.due_date(reading.day), tz)
            if best is None or when > best[0]:
                best = (when, index)
        assert best is not None
        due[step.to] = best[0]
        governing[step.to] = best[1]
    if cache is not None and len(cache) < 100_000:
        cache[key] = (due, governing)
    return RecordEvaluation(readings, None, due, governing)


NOT_YET = dt.datetime.max.replace(tzinfo=dt.UTC)
"""The due instant of a state an expiry clock in the future holds back: later than any as-of instant."""


def expiry_due(reading: ClockReading, schedule: Schedule, tz: str) -> dt.datetime:
    """When a state falls due by an expiry clock with a valid value.

    At the value itself (a ``date`` at 00:00 local that day); the lifecycle's
    ``after`` delays run from the value's local date as they run from the
    day a state is entered, so ``P0D`` keeps the value's instant.
    """
    assert reading.day is not None
    moment = reading.moment(tz)
    assert moment is not None
    if not _delayed(schedule):
        return moment
    return max(moment, due_instant(schedule.due_date(reading.day - dt.timedelta(days=1)), tz))


# --------------------------------------------------------------------------
# SQL: the whole table
# --------------------------------------------------------------------------


# The names this module held before it was split keep working from here (re-exported).
__all__ = [
    "ANOMALIES",
    "EPOCH_TEXT_DIGITS",
    "EPOCH_TEXT_HUGE",
    "FLOOR_DATE",
    "FLOOR_INSTANT",
    "FLOOR_NAIVE",
    "IGNORED_ROWS",
    "NOT_YET",
    "NULL_KEYS",
    "Anomaly",
    "ClockReading",
    "ClockSQL",
    "DatasetSQL",
    "DueCache",
    "RecordEvaluation",
    "clock_sql",
    "column_of",
    "combine_related",
    "dataset_sql",
    "evaluate_readings",
    "evaluate_record",
    "expiry_due",
    "explain_clock_values",
    "read_clock",
    "read_value",
    "reflect_table",
]
