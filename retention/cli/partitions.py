"""``retention partitions``: row counts kept as partitions are written (PostgreSQL; docs/performance.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from retention import commands
from retention.cli.options import db_option, format_option, group, handled, rules_option
from retention.cli.output import console, print_rows
from retention.store.config import database_url

_DATASET = click.option(
    "--dataset", "datasets", multiple=True, metavar="NAME", help="Only this dataset (repeatable; default: every one)."
)


@group()
def partitions() -> None:
    """Keep each partition's row count as rows are written, so a drop_partition purge need not count them.

    PostgreSQL only. `track` installs statement-level triggers on each
    drop_partition dataset's table and partitions: every INSERT, DELETE and
    UPDATE statement on them also appends one row per quarter hour of the
    clock to retention_partition_rows (its cost is measured in
    docs/performance.md). A partition whose count is not known to be whole
    (created after `track`, detached, truncated, a trigger disabled or
    dropped) is counted by a scan at the drop, as before, and plan says why.
    """


@partitions.command("track")
@rules_option()
@db_option
@_DATASET
@format_option
@handled
def partitions_track(rules: Path, db: str | None, datasets: tuple[str, ...], fmt: str) -> None:
    """Install the counting triggers and count each partition not yet tracked once (SHARE lock: writes wait).

    Idempotent: run it again after creating partitions, from the job that
    creates them; partitions already tracked are left as they are.
    """
    lines = commands.partitions_track(rules, database_url(db), datasets)
    print_rows([dataclasses.asdict(line) for line in lines], ["dataset", "partition", "outcome", "rows"], fmt)


@partitions.command("status")
@rules_option()
@db_option
@_DATASET
@format_option
@handled
def partitions_status(rules: Path, db: str | None, datasets: tuple[str, ...], fmt: str) -> None:
    """How a drop would count each partition now: kept, or scanned and why (reads the catalog only)."""
    lines = commands.partitions_status(rules, database_url(db), datasets)
    print_rows([dataclasses.asdict(line) for line in lines], ["dataset", "partition", "outcome"], fmt)


@partitions.command("untrack")
@db_option
@handled
def partitions_untrack(db: str | None) -> None:
    """Remove every counting trigger and the kept counts (drops then count every partition by a scan)."""
    removed = commands.partitions_untrack(database_url(db))
    console.print(f"removed {removed} counting triggers and the kept counts", highlight=False)
