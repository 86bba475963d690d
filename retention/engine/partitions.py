"""Whole-partition purges on PostgreSQL (SPEC section 4, "drop partition").

An append-only table range-partitioned by its clock (access logs,
analytics) is purged by dropping each partition whose every row is due: its
lower bound is a valid date and its exclusive upper bound is at or before
the purge cutoff. Dropping a partition costs the same for a thousand rows or
a hundred million, where deleting them costs per row. A run drops a
dataset's partitions in one transaction holding the parent's lock, the
drops and one ledger entry (total row count, clock range, and each
partition's name with its exact row count, ``detail.partitions``). The partition that straddles the cutoff, and any
partition holding a record that must stay (a hold, an erasure request still
open, a record already in another state), go through the ordinary batches,
row by row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import sqlalchemy as sa
import structlog

from retention.dialects import dialect_for
from retention.engine import partition_counts
from retention.engine.clock_read import _naive_in
from retention.engine.evaluate import FLOOR_DATE, FLOOR_INSTANT, FLOOR_NAIVE, ClockSQL, evaluate_record
from retention.engine.lifecycle import _next_states
from retention.engine.plan import DatasetPlanner
from retention.ledger import chain as ledger
from retention.timing.clock import as_aware, start_of_day

log = structlog.get_logger("retention")


@dataclass(frozen=True)
class Partition:
    """One range partition of a dataset's table, its bounds read as the clock's Python type."""

    schema: str
    name: str
    lower: Any  # None for MINVALUE
    upper: Any  # None for MAXVALUE; exclusive

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def quoted(self, conn: sa.Connection) -> str:
        """The schema-qualified name, quoted for SQL text."""
        return conn.dialect.identifier_preparer.format_table(sa.Table(self.name, sa.MetaData(), schema=self.schema))


def eligible(planner: DatasetPlanner, conn: sa.Connection) -> bool:
    """Whether ``planner``'s dataset may be purged by dropping partitions at all.

    A database that can drop partitions (PostgreSQL), a dataset declared ``partitioned`` whose only transition is
    ``drop_partition`` to purged, one plain clock, no review (each purge
    needs a decision) and no followers (they move with each subject).
    """
    dataset = planner.dataset
    sql = planner.sql
    return (
        dialect_for(conn).supports_partition_drop
        and dataset.partitioned
        and _next_states(dataset, "active") == ["purged"]
        and dataset.step_to("purged").action == "drop_partition"
        and sql is not None
        and len(sql.clocks) == 1
        and sql.clocks[0].clock.aggregate is None
        and sql.clocks[0].kind in ("timestamptz", "timestamp", "date")
        and not sql.clocks[0].clock.is_expiry
        and not dataset.review
        and not planner.followers
    )


def _parse_bound(text: str, kind: str) -> Any:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    if text.startswith("'") and text.endswith("'"):
        text = text[1:-1].replace("''", "'")
    if kind == "date":
        return dt.date.fromisoformat(text[:10])
    value = dt.datetime.fromisoformat(text)
    if kind == "timestamptz":
        return as_aware(value, "UTC")
    return value.replace(tzinfo=None)


def range_partitions(conn: sa.Connection, table: sa.Table, clock: ClockSQL) -> list[Partition]:
    """The table's range partitions on the clock column, or none if it is not partitioned so."""
    parent = conn.dialect.identifier_preparer.format_table(table)
    partitions = []
    for schema, name, lower, upper in dialect_for(conn).range_partitions(conn, parent, clock.clock.column):
        partitions.append(Partition(schema, name, _parse_bound(lower, clock.kind), _parse_bound(upper, clock.kind)))
    return partitions


def _bounds(clock: ClockSQL, last_day: dt.date) -> tuple[Any, Any]:
    """(floor, cutoff) in the column's Python type: rows in [floor, cutoff) are due.

    The same bounds as :meth:`ClockSQL.before_day_after` uses in SQL.
    """
    next_day = last_day + dt.timedelta(days=1)
    if clock.kind == "date":
        return FLOOR_DATE, next_day
    cutoff = start_of_day(next_day, clock.policy_tz)
    if clock.kind == "timestamptz":
        return FLOOR_INSTANT, cutoff
    if clock.clock.naive_timezone == clock.policy_tz:
        return FLOOR_NAIVE, dt.datetime(next_day.year, next_day.month, next_day.day)  # noqa: DTZ001
    return FLOOR_NAIVE, _naive_in(cutoff, clock.clock.naive_timezone)


def candidates(conn: sa.Connection, planner: DatasetPlanner) -> list[Partition]:
    """Partitions whose bounds put every row they can hold in the due range (the catalog alone, no row read)."""
    sql = planner.sql
    assert sql is not None
    clock = sql.clocks[0]
    schedule = planner.dataset.schedules("purged", planner.ctx.pack.financial_year_end)[0]
    floor, cutoff = _bounds(clock, schedule.last_event_due_by(planner.today))
    return [
        partition
        for partition in range_partitions(conn, sql.table, clock)
        if partition.lower is not None
        and partition.upper is not None
        and partition.lower >= floor
        and partition.upper <= cutoff
    ]


def droppable(conn: sa.Connection, planner: DatasetPlanner, among: list[Partition] | None = None) -> list[Partition]:
    """Partitions whose every row is due and none must stay (``among``: candidates already read)."""
    chosen = []
    found = candidates(conn, planner) if among is None else among
    if found:
        planner.probe(conn)
    for partition in found:
        if _has_record_to_keep(conn, planner, partition):
            log.info("partition_kept", dataset=planner.name, partition=partition.label)
            continue
        chosen.append(partition)
    return chosen


@dataclass(frozen=True)
class Tally:
    """Each partition's exact row count, and the least and greatest clock over them all (None when all are empty)."""

    rows: dict[str, int]
    low: Any
    high: Any
    counting: partition_counts.Counting | None = None

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    @cached_property
    def how(self) -> dict[str, str]:
        """For each partition, ``kept`` (its count kept as it was written,
        :mod:`retention.engine.partition_counts`) or ``scanned: <why not kept>``.

        Built once (callers index it in loops over the partitions)."""
        counting = self.counting
        return {} if counting is None else {label: counting.how(label) for label in self.rows}


def tally(conn: sa.Connection, partitions: list[Partition], column: str) -> Tally:
    """Count every partition and find the clock's extremes in one statement (and one for the kept counts).

    A partition whose count is kept as it is written, whole since it was
    tracked, is the sum of its deltas, summed for all such partitions in one
    statement first (:func:`partition_counts.counting`): a few hundred rows
    of an index each, whatever its size. Any other is counted by
    ``count(*)``, a scan of the partition that skips per-row visibility
    checks on pages vacuum has marked all-visible (old partitions, the ones
    dropped, are). One scalar subquery per partition and measure, so each is
    planned alone: ``min`` and ``max`` are one probe of the clock's index each
    (in one scan together they would read every row). One round trip instead
    of three per partition: the per partition statements were most of a drop
    run (bench/RESULTS.md).
    """
    if not partitions:
        return Tally({}, None, None)
    counting = partition_counts.counting(conn, partitions)
    quoted = conn.dialect.identifier_preparer.quote(column)
    parts = []
    for index, partition in enumerate(partitions):
        table = partition.quoted(conn)
        kept = counting.kept.get(partition.label)
        count = f"SELECT count(*) FROM {table}" if kept is None else str(int(kept))
        parts += [
            f"({count}) AS c{index}",
            f"(SELECT min({quoted}) FROM {table}) AS l{index}",
            f"(SELECT max({quoted}) FROM {table}) AS h{index}",
        ]
    # Serial scans (PostgreSQL): a parallel count starts its workers once per partition, which cost more than
    # they saved; for this statement only, as plan goes on counting other datasets in the same transaction.
    with dialect_for(conn).serial_scans(conn):
        row = conn.execute(sa.text("SELECT " + ", ".join(parts))).one()
    counts = {p.label: int(row[3 * i]) for i, p in enumerate(partitions)}
    lows = [row[3 * i + 1] for i in range(len(partitions)) if row[3 * i + 1] is not None]
    highs = [row[3 * i + 2] for i in range(len(partitions)) if row[3 * i + 2] is not None]
    return Tally(counts, min(lows, default=None), max(highs, default=None), counting)


def null_keys(conn: sa.Connection, planner: DatasetPlanner, dropped: list[Partition]) -> int:
    """The rows with a NULL key that dropping ``dropped`` removes, within ``where``.

    Such a row is no record, so plan's passes leave it out and count it as
    ``null_key``; but a drop takes every row of the partition, and run and
    the ledger count it among the purged (run counts its anomalies after the
    drop). Plan moves it from one count to the other so that it says what run does.
    """
    sql = planner.sql
    if not dropped or sql is None or not planner.key.nullable:
        return 0
    value = sql.clocks[0].value
    within = sa.or_(*[sa.and_(value >= p.lower, value < p.upper) for p in dropped])
    query = sa.select(sa.func.count()).select_from(sql.table).where(planner.key.is_(None), planner.reach(), within)
    return int(conn.execute(query).scalar_one())


def _has_record_to_keep(conn: sa.Connection, planner: DatasetPlanner, partition: Partition) -> bool:
    """A held record, one under an open erasure request, or one already in another state."""
    sql = planner.sql
    assert sql is not None
    if not (planner._holds or planner._erasures or planner._states):
        return False  # probed: no hold, no open request, no state row; the query below could find nothing
    value = sql.clocks[0].value
    key_text = planner.text(conn, sql.key)
    who = planner.live_who(conn)
    rs = planner.ctx.tables.record_states
    stays = [~planner.not_held(key_text, who), ~planner.no_open_erasure(who)]
    if planner._states:
        stays.append(sa.exists().where(rs.c.dataset == planner.name, rs.c.record_key == key_text))
    query = (
        sa.select(sa.literal(1))
        .select_from(sql.table)
        .where(value >= partition.lower, value < partition.upper, sa.or_(*stays))
        .limit(1)
    )
    return conn.execute(query).first() is not None


def drop_due_partitions(
    conn: sa.Connection,
    planner: DatasetPlanner,
    *,
    run_id: str,
    pack_digest: str,
    now: Callable[[], dt.datetime],
    secret: bytes | None = None,
    record: Callable[[sa.Connection, int], None] | None = None,
) -> int:
    """Drop every droppable partition of the dataset in one transaction; returns the rows purged.

    The transaction holds the parent's lock, the keep checks, the counts,
    the drops, one ledger entry listing each partition with its exact row
    count, and ``record(conn, rows)`` (the run's counts): a killed run
    leaves all of it or none of it. The parent is locked first, so no row
    can arrive or leave between the count and the drop, and the count in the
    ledger is exactly what was dropped. One transaction and one entry per
    dataset, not per partition: each cost a lock of the ledger's head, a
    commit and a run-head update, which made the drop of a month's
    partitions slower than deleting their rows (bench/RESULTS.md).
    """
    assert planner.sql is not None
    with conn.begin():
        found = candidates(conn, planner)
    if not found:
        return 0
    pack = planner.ctx.pack
    dataset = planner.dataset
    parent = conn.dialect.identifier_preparer.format_table(planner.sql.table)
    with conn.begin():
        # The drop needs the parent's strongest lock anyway; taking it first
        # (parent before partition, as readers do) cannot deadlock them, and
        # no row can arrive between the keep checks, the count and the drop.
        conn.execute(sa.text(dialect_for(conn).lock_for_partition_drop(parent)))
        partitions = droppable(conn, planner, found)
        if not partitions:
            return 0
        counted = tally(conn, partitions, planner.sql.clocks[0].clock.column)
        clock_min = clock_max = due = None
        if counted.total:
            first = evaluate_record(pack, dataset, [counted.low], planner.ctx.as_of)
            last = evaluate_record(pack, dataset, [counted.high], planner.ctx.as_of)
            due = last.due["purged"]
            clock_min = first.readings[0].moment(pack.timezone)
            clock_max = last.readings[0].moment(pack.timezone)
        conn.execute(sa.text("DROP TABLE " + ", ".join(p.quoted(conn) for p in partitions)))
        kept = counted.counting
        if kept is not None:
            # Their deltas and tracking rows go with them, in the same transaction (none when not tracked).
            partition_counts.forget_dropped(conn, [kept.relids[p.label] for p in partitions if p.label in kept.relids])
        ledger.append(
            conn,
            [
                ledger.EntryDraft(
                    run_id=run_id,
                    pack_id=pack.pack,
                    pack_digest=pack_digest,
                    dataset=planner.name,
                    transition="active->purged",
                    action="drop_partition",
                    basis=dataset.basis_for("purged"),
                    due_at=due,
                    record_pseudonym=None,
                    subject_pseudonym=None,
                    count=counted.total,
                    clock_min=clock_min,
                    clock_max=clock_max,
                    detail={"partitions": counted.rows},
                )
            ],
            now(),
            secret=secret,
        )
        if record is not None:
            record(conn, counted.total)
    for label, count in counted.rows.items():
        log.info("partition_dropped", dataset=planner.name, partition=label, count=count, counted=counted.how[label])
    return counted.total
