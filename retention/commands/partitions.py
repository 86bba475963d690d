"""``retention partitions``: keep each partition's row count as it is written, so a drop need not count it.

PostgreSQL only (:mod:`retention.engine.partition_counts`); elsewhere every
subcommand refuses (exit 2), as no other database drops partitions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from retention.commands.runs import load_pack
from retention.dialects import dialect_for
from retention.engine import execute, partition_counts, partitions
from retention.errors import ConfigError
from retention.store.connect import open_engine


@dataclass(frozen=True)
class PartitionLine:
    """One partition of a dataset and what was done to it, or how a drop would count it now."""

    dataset: str
    partition: str
    outcome: str
    rows: int | None = None


def _refuse_unless_postgresql(engine: sa.Engine) -> None:
    if not dialect_for(engine).tracks_partitions:
        raise ConfigError(partition_counts.UNSUPPORTED)


def _partitioned(
    engine: sa.Engine, rules: Path, datasets: tuple[str, ...]
) -> list[tuple[str, str, str, str, list[partitions.Partition]]]:
    """(dataset, quoted table, clock column, its kind, partitions) of each drop_partition dataset."""
    loaded, when = load_pack(rules, None, None)
    unknown = sorted(set(datasets) - set(loaded.pack.datasets))
    if unknown:
        raise ConfigError(f"no dataset {', '.join(unknown)} in pack {loaded.id}")
    found = []
    with engine.connect() as conn:
        planners, _missing = execute.planners_at(conn, loaded, when)
        for name, planner in planners.items():
            if datasets and name not in datasets:
                continue
            if not partitions.eligible(planner, conn):
                if datasets:
                    raise ConfigError(f"dataset {name} is not purged by dropping partitions (drop_partition)")
                continue
            assert planner.sql is not None
            clock = planner.sql.clocks[0]
            table = conn.dialect.identifier_preparer.format_table(planner.sql.table)
            found.append(
                (
                    name,
                    table,
                    clock.clock.column,
                    clock.kind,
                    partitions.range_partitions(conn, planner.sql.table, clock),
                )
            )
    if not found:
        raise ConfigError(f"pack {loaded.id} purges no dataset by dropping partitions: nothing to track")
    return found


def partitions_track(rules: Path, db_url: str, datasets: tuple[str, ...] = ()) -> list[PartitionLine]:
    """Install the counting triggers on each drop_partition dataset's table and start each partition's count."""
    engine = open_engine(db_url)
    try:
        _refuse_unless_postgresql(engine)
        lines = []
        for name, table, column, kind, found in _partitioned(engine, rules, datasets):
            now = dt.datetime.now(dt.UTC)
            for outcome in partition_counts.track(engine, table, column, kind, found, now):
                text = outcome.outcome if outcome.reason is None else f"{outcome.outcome}: {outcome.reason}"
                lines.append(PartitionLine(name, outcome.label, text, outcome.rows))
        return lines
    finally:
        engine.dispose()


def partitions_status(rules: Path, db_url: str, datasets: tuple[str, ...] = ()) -> list[PartitionLine]:
    """How a drop would count each partition now: ``kept`` or ``scanned: why`` (reads the catalog only)."""
    engine = open_engine(db_url)
    try:
        _refuse_unless_postgresql(engine)
        lines = []
        for name, _table, _column, _kind, found in _partitioned(engine, rules, datasets):
            with engine.connect() as conn:
                counting = partition_counts.counting(conn, found, sums=False)
            lines += [PartitionLine(name, p.label, counting.how(p.label)) for p in found]
        return lines
    finally:
        engine.dispose()


def partitions_untrack(db_url: str) -> int:
    """Remove every counting trigger and function and the kept counts; returns the triggers removed."""
    engine = open_engine(db_url)
    try:
        _refuse_unless_postgresql(engine)
        with engine.begin() as conn:
            return partition_counts.untrack_all(conn)
    finally:
        engine.dispose()
