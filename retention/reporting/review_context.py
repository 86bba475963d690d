"""What a reviewer needs to decide on a batch of purges, without identifying anyone.

A review batch lists records by pseudonym: enough to audit, not enough to
judge. :func:`review_context` reads the batch's records from the live
table, set-based (one query per 500 keys), and summarises them by what the
pack says is safe to show: the dates of the dataset's clocks (first, last,
records per year, in the pack's zone), and the ``review_columns`` the pack
names (``docs/rules.md``): totals, smallest and largest of numeric columns
(amounts), the commonest values of the others, and a sample of rows by
pseudonym. The pack refuses, at load, review columns that are the key, an
identity or a masked column; nothing here reads them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from retention.engine.evaluate import dataset_sql, read_clock, reflect_table
from retention.engine.plan import as_text
from retention.errors import SchemaError
from retention.ledger import pseudonyms
from retention.policy import LoadedPack

SAMPLE_ROWS = 20
_CHUNK = 500
_TOP_VALUES = 5


@dataclass
class ClockSummary:
    """One clock over the batch's records: its dates in the pack's zone."""

    label: str
    first: dt.date | None = None
    last: dt.date | None = None
    per_year: dict[int, int] = field(default_factory=dict)
    unreadable: int = 0  # null or invalid readings (counted, never shown)


@dataclass
class ColumnSummary:
    """One review column over the batch's records: numbers summed, other values counted."""

    name: str
    numeric: bool
    total: Decimal | float | int | None = None
    smallest: Any = None
    largest: Any = None
    common: list[tuple[str, int]] = field(default_factory=list)  # the commonest values, for text columns
    empty: int = 0


@dataclass
class ReviewContext:
    """The batch's records as the reviewer may see them."""

    found: int  # records of the batch still in the live table
    gone: int  # records no longer there (moved by other means since the batch was filed)
    clocks: list[ClockSummary]
    columns: list[ColumnSummary]
    sample: list[dict[str, Any]]  # {"pseudonym", "days": [...], "values": [...]}, first SAMPLE_ROWS by key
    missing_columns: list[str]  # review columns the table does not have
    problem: str | None = None  # the table cannot be read: one sentence


def _is_number(column: sa.ColumnElement[Any]) -> bool:
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return False
    return kind in (int, float, Decimal) and kind is not bool


def review_context(
    conn: sa.Connection,
    loaded: LoadedPack,
    dataset_name: str,
    keys: list[str],
    as_of: dt.datetime,
    secret: bytes | None,
) -> ReviewContext:
    """Dates, amounts, counts per year and a sample of the named non-personal columns of ``keys``' records."""
    pack = loaded.pack
    dataset = pack.datasets[dataset_name]
    try:
        sql = dataset_sql(conn, pack, dataset_name) if dataset.keep else None
        table = sql.table if sql is not None else reflect_table(conn, dataset.table, dataset.schema_)
    except SchemaError as exc:
        return ReviewContext(0, len(keys), [], [], [], [], problem=str(exc))
    clocks = [c.clock for c in sql.clocks] if sql is not None else []
    wanted = [name for name in dataset.review_columns or () if name in table.c]
    missing = [name for name in dataset.review_columns or () if name not in table.c]
    key_text = as_text(conn, table.c[dataset.key])
    selected: list[sa.ColumnElement[Any]] = [key_text, *(sql.values() if sql is not None else [])]
    selected += [table.c[name] for name in wanted]
    summaries = [ClockSummary(c.label()) for c in clocks]
    columns = [ColumnSummary(name, _is_number(table.c[name])) for name in wanted]
    counters: list[Counter[str]] = [Counter() for _ in wanted]
    sample: list[dict[str, Any]] = []
    found = 0
    ordered = sorted(set(keys))
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        rows = conn.execute(sa.select(*selected).where(key_text.in_(chunk)).order_by(key_text)).all()
        for row in rows:
            found += 1
            days = []
            for index, clock in enumerate(clocks):
                reading = read_clock(clock, row[1 + index], as_of, pack.timezone)
                summary = summaries[index]
                day = reading.day if reading.anomaly is None else None
                days.append(day)
                if day is None:
                    summary.unreadable += 1
                    continue
                summary.first = day if summary.first is None else min(summary.first, day)
                summary.last = day if summary.last is None else max(summary.last, day)
                summary.per_year[day.year] = summary.per_year.get(day.year, 0) + 1
            values = list(row[1 + len(clocks) :])
            for column, counter, value in zip(columns, counters, values, strict=True):
                _tally(column, counter, value)
            if len(sample) < SAMPLE_ROWS:
                pseudonym = pseudonyms.record_pseudonym(secret, dataset_name, str(row[0])) if secret else None
                sample.append({"pseudonym": pseudonym, "days": days, "values": values})
    for column, counter in zip(columns, counters, strict=True):
        column.common = counter.most_common(_TOP_VALUES)
    for summary in summaries:
        summary.per_year = dict(sorted(summary.per_year.items()))
    return ReviewContext(found, len(set(keys)) - found, summaries, columns, sample, missing)


def _tally(column: ColumnSummary, counter: Counter[str], value: Any) -> None:
    if value is None:
        column.empty += 1
        return
    if column.numeric and not isinstance(value, bool):
        column.total = value if column.total is None else column.total + value
        column.smallest = value if column.smallest is None else min(column.smallest, value)
        column.largest = value if column.largest is None else max(column.largest, value)
        return
    counter[str(value)[:80]] += 1


__all__ = ["SAMPLE_ROWS", "ClockSummary", "ColumnSummary", "ReviewContext", "review_context"]
