"""The per-record evaluation of a batch, with the common case read without the general reader's dispatch.

A purge by clock evaluates every record it moves (:func:`evaluate_record`):
classify the stored value, find its local date, look the due dates up by
that date. For a dataset with one instant clock (``timestamptz``, not an
expiry, not an aggregate) almost every value a batch fetches is a plain
datetime (a ``datetime`` from PostgreSQL and MariaDB, SQLite's
``YYYY-MM-DD HH:MM:SS[.ffffff]`` text) inside the readable range, and its due
dates are already in the batch's cache for its local date. :func:`evaluator`
reads exactly those values inline and hands every other value (NULL, zero,
future, invalid, other forms, a date not cached yet) to
:func:`evaluate_record`, so the result is always what the general path
gives; ``tests/test_quick_evaluate.py`` holds the two equal on values of
every class, and the differential test holds the whole run to the oracle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from retention.engine.clock_read import _PLAIN_DATETIME, FLOOR_INSTANT, ClockReading
from retention.engine.evaluate import DueCache, RecordEvaluation, evaluate_record
from retention.policy.model import Dataset, Pack
from retention.timing.clock import zone

Evaluator = Callable[[Sequence[Any]], RecordEvaluation]


def evaluator(pack: Pack, dataset: Dataset, as_of: dt.datetime, cache: DueCache) -> Evaluator:
    """A function of a record's raw clock values giving :func:`evaluate_record`'s result, faster where it can."""

    def general(raws: Sequence[Any]) -> RecordEvaluation:
        return evaluate_record(pack, dataset, raws, as_of, cache)

    if len(dataset.keep) != 1:
        return general
    clock = dataset.keep[0].clock
    if clock.type != "timestamptz" or clock.is_expiry or clock.aggregate is not None or as_of.tzinfo is None:
        return general
    label = clock.label()
    policy_zone = zone(pack.timezone)
    fromisoformat = dt.datetime.fromisoformat
    plain = _PLAIN_DATETIME.fullmatch
    utc = dt.UTC

    def quick(raws: Sequence[Any]) -> RecordEvaluation:
        (raw,) = raws
        if type(raw) is str and plain(raw):
            try:
                value = fromisoformat(raw)
            except ValueError:
                return general(raws)
        elif type(raw) is dt.datetime:
            value = raw
        else:
            return general(raws)
        instant = value.replace(tzinfo=utc) if value.tzinfo is None else value
        if instant < FLOOR_INSTANT or instant > as_of:
            return general(raws)
        day = instant.astimezone(policy_zone).date()
        known = cache.get((day,))
        if known is None:
            return general(raws)
        return RecordEvaluation((ClockReading(label, raw, None, day, instant),), None, known[0], known[1])

    return quick


__all__ = ["Evaluator", "evaluator"]
