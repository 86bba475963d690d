"""How the command line prints: tables that fit a console, JSON and CSV for machines, instants in a zone."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# Off a terminal (cron, pipes, tests) tables are laid out for 100 columns, the
# width every table is designed to fit without cutting a name.
TABLE_WIDTH = 100
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else TABLE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else TABLE_WIDTH)


def plan_rows(summary: Any) -> list[dict[str, Any]]:
    return list(summary.rows())


PLAN_COLUMNS = [
    "dataset",
    "transition",
    "count",
    "change",
    "due_from",
    "due_to",
    "clock_from",
    "clock_to",
    "sample_keys",
    "anomalies",
    "held_back",
]


def print_plan_table(summary: Any, zone: str) -> None:
    """The plan for people, fit for 100 columns: one row per dataset and transition.

    Due dates and clock dates are ranges shown as two lines (from, to) in the
    pack's timezone; what belongs to a dataset rather than a transition
    (anomalies, records awaiting review) follows the table once per dataset.
    """
    columns = ["dataset", "transition", "count", *(["change"] if summary.previous else []), "due", "clocks", "samples"]
    table = _table(columns, zone, caption=True)
    for row in plan_rows(summary):
        cells = {
            "dataset": row["dataset"],
            "transition": row["transition"],
            "count": str(row["count"]),
            "change": "" if row.get("change") is None else f"{row['change']:+d}",
            "due": _range(row.get("due_from"), row.get("due_to"), zone),
            "clocks": _range(row.get("clock_from"), row.get("clock_to"), zone, dates=True),
            "samples": row.get("sample_keys") or "",
        }
        table.add_row(*(cells[c] for c in columns))
    console.print(table)
    noted: set[str] = set()
    for row in plan_rows(summary):
        dataset = row["dataset"]
        if dataset in noted:
            continue
        noted.add(dataset)
        if row.get("anomalies"):
            console.print(f"{dataset}: skipped, never moved: {row['anomalies']} clocks", highlight=False)
        if row.get("awaiting_review"):
            console.print(
                f"{dataset}: {row['awaiting_review']} due purges go to review (retention review list)",
                highlight=False,
            )


def _range(low: dt.datetime | None, high: dt.datetime | None, zone: str, dates: bool = False) -> str:
    """``from`` and ``to`` on two lines (one when equal); clock ranges as local dates only."""
    if low is None or high is None:
        return ""
    show: Callable[[dt.datetime], str] = (
        (lambda v: _local(v, zone).strftime("%Y-%m-%d")) if dates else (lambda v: _cell(v, zone))
    )
    first, last = show(low), show(high)
    return first if first == last else f"{first}\n{last}"


# Free text and long identifiers wrap to make a table fit; every other cell (names
# people copy into --dataset or --transition, dates, counts) stays whole on one line.
WRAPPING_COLUMNS = frozenset(
    {
        "action",
        "anomalies",
        "basis",
        "clocks",
        "due",
        "error",
        "moved",
        "note",
        "reason",
        "record_key",
        "record_pseudonym",
        "run_id",
        "sample_keys",
        "samples",
        "subject_key",
    }
)


NUMBER_COLUMNS = frozenset({"count", "change", "items", "id", "seq", "hold_id", "exit", "transitions", "seconds"})


# Shorter headers for people (JSON and CSV keep the field names).
HEADERS = {
    "decided_by": "by",
    "extended_on": "extended",
    "placed_at": "placed",
    "placed_by": "by",
    "received_on": "received",
    "record_key": "record",
    "released_at": "released",
    "subject_key": "subject",
}


# Identifiers shown by their first characters in tables, as pack digests are.
ABBREVIATED = {"run_id": 8, "record_pseudonym": 12}


def _table(
    columns: list[str], zone: str | None = None, caption: bool = False, instants: frozenset[str] = frozenset()
) -> Table:
    """A table that fits the console: names, dates and counts whole, free text wrapped, nothing cut.

    Columns of instants may break between the date and the time of day.
    """
    table = Table(caption=f"times in {zone}" if caption and zone else None, caption_justify="left")
    for column in columns:
        header = HEADERS.get(column, column)
        wraps = column in WRAPPING_COLUMNS or column in instants
        table.add_column(
            header,
            no_wrap=not wraps,
            min_width=(10 if column in instants else min(len(header), 12)) if wraps else None,
            overflow="fold",
            justify="right" if column in NUMBER_COLUMNS else "left",
        )
    return table


def print_rows(
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: str,
    title: str | None = None,
    zone: str = "UTC",
) -> None:
    """Print rows as a rich table (instants in ``zone``), JSON or CSV (instants in UTC, ISO 8601)."""
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=_json_default))
        return
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    instants = frozenset(c for c in columns if any(isinstance(row.get(c), dt.datetime) for row in rows))
    table = _table(columns, zone, caption=bool(instants), instants=instants)
    table.title = title
    for row in rows:
        cells = []
        for column in columns:
            cell = _cell(row.get(column), zone)
            cells.append(cell[: ABBREVIATED[column]] if column in ABBREVIATED else cell)
        table.add_row(*cells)
    console.print(table)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _local(value: dt.datetime, zone: str) -> dt.datetime:
    from retention.timing.clock import zone as tz

    if value.tzinfo is None:  # the engine stores UTC; some drivers hand it back naive
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC if zone == "UTC" else tz(zone))


def _cell(value: Any, zone: str = "UTC") -> str:
    """Table cells for people: instants in ``zone`` to the minute (a local midnight as its date)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        local = _local(value, zone)
        if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
            return local.strftime("%Y-%m-%d")
        return local.strftime("%Y-%m-%d %H:%M")
    return str(value)


def when(value: dt.datetime, zone: str) -> str:
    """An instant in a sentence: to the minute, with its zone's abbreviation (CET, CEST, UTC)."""
    return _local(value, zone).strftime("%Y-%m-%d %H:%M %Z")


def display_zone(rules: Path | None, pack_id: str | None, utc: bool) -> str:
    """The zone instants are shown in: the pack's, unless --utc or no single pack names one."""
    if utc or rules is None:
        return "UTC"
    from retention.policy import load_catalog

    zones = {p.pack.timezone for p in load_catalog(rules).packs if pack_id is None or p.id == pack_id}
    return zones.pop() if len(zones) == 1 else "UTC"
