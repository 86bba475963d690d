"""A pinned, ticking clock for tests that compare dates of "today" with what the engine writes later.

A test that reads today's date (to write a pack's ``effective_from``, or to
spell the expected warning) and then has the engine read the clock again (a
``check`` recording a version's first sighting) fails when the run crosses
midnight between the two reads, and CI may run at 23:50-00:30 UTC.
:func:`pinned_clock` gives the test and the engine one date. The clock starts
at noon UTC on a fixed day and keeps ticking, so durations and instants
still move forward. No test runs for twelve hours, so the date never changes.

freezegun replaces ``datetime.datetime.now``, which
``retention.timing.clock.utcnow`` (the engine's only "now") reads, and the
``time`` functions. No statement reads the database server's clock, so the
servers need nothing. The ``time`` functions stay real in the modules that run
beside the test (:data:`REAL_TIME_IN`). pytest times the phases with them.
The drivers' connect deadlines are ``time.monotonic`` readings, and the
templates' background thread (db_templates.py) may be in the middle of a
connection when the clock is pinned or released: a deadline read on one
clock and checked on the other would expire at once or never.

psycopg is imported before the clock is pinned. Its C extension keeps the
``datetime`` types it finds at import for the whole process: imported first
while pinned, it would keep freezegun's (Python warns "datetime.date size
changed").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg  # noqa: F401  (imported before any pin: see the module's docstring)
from freezegun import freeze_time

from retention.timing import clock

PINNED = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
"""Noon UTC (14:00 in Paris): half a day from midnight on either side, in UTC and in Europe/Paris."""

REAL_TIME_IN = ["_pytest", "pluggy", "xdist", "execnet", "concurrent", "psycopg", "pymysql", "db_templates"]
"""Modules (name prefixes) whose ``time`` readings stay real while the clock is pinned."""


@contextmanager
def pinned_clock(at: dt.datetime = PINNED) -> Iterator[dt.date]:
    """The clock at ``at`` and ticking, inside the block; yields the UTC date the engine sees there."""
    try:
        with freeze_time(at, tick=True, ignore=REAL_TIME_IN):
            yield at.astimezone(dt.UTC).date()
    finally:
        _forget_pinned_dates()


def _forget_pinned_dates() -> None:
    """The clock module's caches emptied: dates made while pinned (freezegun's FakeDate) must not come back to the
    worker's later tests as cached answers (review trio)."""
    for value in vars(clock).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
