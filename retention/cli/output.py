"""How the command line prints: tables that fit a console, JSON and CSV for machines, instants in a zone."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from retention.timing import display

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
    from retention.engine.evaluate import IGNORED_ROWS, NULL_KEYS  # the engine only for a plan's table

    noted: set[str] = set()
    for row in plan_rows(summary):
        dataset = row["dataset"]
        if dataset in noted:
            continue
        noted.add(dataset)
        found = summary.anomalies.get(dataset, {})
        skipped = {k: v for k, v in found.items() if v and k not in (IGNORED_ROWS, NULL_KEYS)}
        if skipped:
            listed = ", ".join(f"{k} {v}" for k, v in skipped.items())
            console.print(f"{dataset}: skipped, never moved: {listed} clocks", highlight=False)
        if found.get(NULL_KEYS):
            console.print(f"{dataset}: skipped, never moved: key is NULL ({found[NULL_KEYS]} rows)", highlight=False)
        ignored = found.get(IGNORED_ROWS)
        if ignored:
            console.print(
                f"{dataset}: {ignored} unreadable related rows left out of aggregate clocks (invalid_rows: ignore)",
                highlight=False,
            )
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


# Free text wraps between words to make a table fit; every other cell (names and
# ids people copy into --dataset or --key, dates, counts) stays whole on one line.
WRAPPING_COLUMNS = frozenset(
    {
        "action",
        "anomalies",
        "basis",
        "below",
        "clocks",
        "counts",
        "due",
        "error",
        "from",
        "moved",
        "note",
        "outcome",
        "reason",
        "sample_keys",
        "samples",
    }
)


# Values without spaces that may break anywhere rather than be cut.
FOLDING_COLUMNS = frozenset({"email"})


# `plan --shards`: the columns a narrow table leaves out first (counts repeat records and transitions per kind).
SHARD_COLUMNS = ["dataset", "shard", "key_space", "from", "below", "records", "transitions", "counts"]
SHARD_DROP_ORDER = ("counts", "key_space")


NUMBER_COLUMNS = frozenset(
    {"count", "change", "items", "id", "seq", "hold_id", "exit", "transitions", "seconds", "records"}
)


# Shorter headers for people (JSON and CSV keep the field names).
HEADERS = {
    "decided_by": "by",
    "due_at": "due",
    "recorded_at": "recorded",
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
    columns: list[str],
    zone: str | None = None,
    caption: bool = False,
    instants: frozenset[str] = frozenset(),
    widths: dict[str, int] | None = None,
) -> Table:
    """A table that fits the console: names, dates and counts whole, free text wrapped, nothing cut.

    Columns of instants may break between the date and the time of day.
    With ``widths`` (from :func:`retention.tables.fit`), every column has its width.
    """
    table = Table(caption=f"times in {zone}" if caption and zone else None, caption_justify="left")
    for column in columns:
        header = HEADERS.get(column, column)
        wraps = column in WRAPPING_COLUMNS or column in FOLDING_COLUMNS or column in instants
        fixed = widths.get(column) if widths is not None else None
        table.add_column(
            header,
            no_wrap=not wraps,
            width=fixed,
            min_width=None if fixed else (10 if column in instants else min(len(header), 12)) if wraps else None,
            overflow="fold",
            justify="right" if column in NUMBER_COLUMNS else "left",
        )
    return table


def print_rows(
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: str,
    title: str | None = None,
    zone: str | None = None,
    drop_order: Sequence[str] = (),
) -> None:
    """Print rows as a rich table (instants in ``zone``), JSON or CSV (instants in UTC, ISO 8601).

    Without ``zone``: the zone asked for (--tz, RETENTION_TZ, TZ), else UTC.
    The table fits ``COLUMNS`` (else the terminal, else 100 columns) without
    cutting a value (:mod:`retention.tables`); if it cannot, the columns of
    ``drop_order`` are left out, first to last, and a line says which.
    """
    from retention.cli import tables

    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=json_default))
        return
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    if zone is None:
        zone = display_zone(None, None, utc=False)
    instants = frozenset(c for c in columns if any(isinstance(row.get(c), dt.datetime) for row in rows))
    cells = {
        column: [
            _cell(row.get(column), zone)[: ABBREVIATED[column]]
            if column in ABBREVIATED
            else _cell(row.get(column), zone)
            for row in rows
        ]
        for column in columns
    }
    kinds: dict[str, tables.Kind] = {
        c: "instant"
        if c in instants
        else "fold"
        if c in FOLDING_COLUMNS
        else "words"
        if c in WRAPPING_COLUMNS
        else "whole"
        for c in columns
    }
    width = tables.terminal_width(console.is_terminal)
    layout = tables.fit(columns, {c: HEADERS.get(c, c) for c in columns}, cells, kinds, width, drop_order)
    table = _table(layout.columns, zone, caption=bool(instants), instants=instants, widths=layout.widths)
    table.title = title
    for index in range(len(rows)):
        table.add_row(*(cells[column][index] for column in layout.columns))
    console.width = max(width, sum(layout.widths.values()) + 3 * len(layout.columns) + 1)
    console.print(table)
    if layout.dropped:
        names = ", ".join(HEADERS.get(c, c) for c in layout.dropped)
        for line in left_out_note(names, width):
            console.print(line, highlight=False, soft_wrap=True)


def left_out_note(names: str, width: int) -> list[str]:
    """The line under a table that names the columns left out, within ``width``.

    The longest wording that fits on one line; when even the shortest does
    not (many columns left out on a narrow terminal), it is wrapped between
    words here, so no terminal breaks a column's name.
    """
    import textwrap

    wordings = [
        f"left out to fit {width} columns: {names} (a wider terminal, or --format json or csv, shows them)",
        f"left out to fit {width} columns: {names} (--format json or csv shows them)",
        f"left out to fit {width} columns: {names} (--format json shows them)",
    ]
    for text in wordings:
        if len(text) <= width:
            return [text]
    return textwrap.wrap(wordings[-1], width, break_long_words=False, break_on_hyphens=False)


def _kind(column: str, instants: frozenset[str]) -> Any:
    if column in instants:
        return "instant"
    if column in FOLDING_COLUMNS:
        return "fold"
    return "words" if column in WRAPPING_COLUMNS else "whole"


def json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _local(value: dt.datetime, zone: str) -> dt.datetime:
    return display.local(value, zone)


def _cell(value: Any, zone: str = "UTC") -> str:
    """Table cells for people: instants in ``zone`` to the minute (a local midnight as its date)."""
    return display.cell(value, zone)


def when(value: dt.datetime, zone: str) -> str:
    """An instant in a sentence: to the minute, with its zone's abbreviation (CET, CEST, UTC)."""
    return display.when(value, zone)


def display_zone(rules: Path | None, pack_id: str | None, utc: bool) -> str:
    """The zone instants are shown in: --utc; --tz, RETENTION_TZ or TZ; the pack's; else UTC."""
    if utc:
        return "UTC"
    ctx = click.get_current_context(silent=True)  # None when the library prints a table outside a command
    asked = display.chosen(ctx.find_root().meta.get("retention.tz") if ctx is not None else None)
    if asked is not None or rules is None:
        return asked or "UTC"
    from retention.policy import load_catalog

    return catalog_zone(load_catalog(rules), pack_id)


def catalog_zone(catalog: Any, pack_id: str | None) -> str:
    """The zone of the packs of a catalog already read (``--pack`` picks one), UTC when they differ.

    A ``--pack`` naming none of them is refused: it used to match nothing and the instants came out in UTC.
    """
    if pack_id is not None and pack_id not in catalog.ids():
        from retention.errors import PackError, PackProblem

        raise PackError([PackProblem("--pack", None, f"no pack {pack_id!r}; valid: {', '.join(catalog.ids())}")])
    return display.resolve(None, (p.pack.timezone for p in catalog.packs if pack_id is None or p.id == pack_id), {})
