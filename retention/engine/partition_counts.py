"""Row counts kept as partitions are written, so a partition drop need not count its rows (PostgreSQL).

A drop's ledger entry gives each dropped partition's exact row count, and
counting a partition reads every row: at 10M rows half of a drop run
(bench/RESULTS.md). ``retention partitions track`` makes the count kept as the
rows are written:

- statement-level triggers on the partitioned table (``AFTER INSERT``,
  ``AFTER DELETE``, ``AFTER UPDATE``, each with its transition table) append
  one row per statement and quarter hour of the clock to
  ``retention_partition_rows``: the owner is the table, the bucket
  ``floor(epoch / 900)``, the delta the rows added or removed. A quarter hour,
  not the partition, because a statement-level trigger cannot tell which
  partition a row went to, and a bucket is computed from the value alone
  (no lookup that an old snapshot could get wrong); every partition whose
  bounds fall on quarter hours (every time zone's midnights do) is the sum
  of its buckets. Appended, never updated: no counter row serialises the
  application's writes;
- the same triggers on each partition (``INSERT``, ``DELETE``; an update
  through a partition cannot move a row out of it) for statements that name
  the partition itself, whose rows the table's triggers never see: owner the
  partition, no bucket;
- each partition is counted exactly once when tracked, under a ``SHARE`` lock
  (no write to it in flight): the deltas already in its range are replaced by
  that count, and ``retention_partition_tracking`` keeps what the catalog said
  then (the partition's ``pg_class`` and ``pg_inherits`` rows, each trigger's
  ``pg_trigger`` row and function, by ``xmin``);
- each ``track`` after that counts only partitions not yet tracked, and folds
  each tracked partition's deltas into one row (:func:`compact`, no lock).

At the drop, under the table's ``ACCESS EXCLUSIVE`` lock (no write in flight),
a partition whose catalog rows are the same as when it was tracked is counted
as the sum of its deltas: two index range scans (:func:`kept_counts`), a few
rows whatever the partition's size, with or without statistics on the
deltas table (nothing analyses it). Any change falls back to ``count(*)``, with the
reason logged and shown by ``plan``: a partition created or attached since
(not tracked), one detached and attached again (a new ``pg_inherits`` row),
truncated or altered (a new ``pg_class`` row), a trigger dropped, disabled, or
disabled and enabled again (a new ``pg_trigger`` row, so the window in
between cannot go unseen), a function replaced. The triggers are enabled
``ALWAYS``, so they also fire for sessions with ``session_replication_role =
replica``; logical replication's apply fires row triggers only, so a
partition (or table) a subscription writes is always scanned. So a count that
is not known to be whole is never used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog

from retention.store import tables as store

log = structlog.get_logger("retention")

BUCKET_SECONDS = 900
"""A bucket is a quarter hour: every time zone's offset, so every zone's midnight, is a whole number of them."""

VACUUM_AFTER = 10_000
"""Dead rows in the deltas table from which ``track`` vacuums it (about four months of a bulk load's quarter
hours). A dead row costs the drop's sums about 0.4 µs (140,000 of them, 54 ms for 35 partitions against 2.8 ms
vacuumed; bench/RESULTS.md): fewer than this cost a drop 4 ms at most. Counted across calls and whatever deleted
them (``pg_stat_user_tables.n_dead_tup``, kept with autovacuum off), or this call's deletes if more (the
statistics may not have them yet)."""

TRIGGER_PREFIX = "retention_rows_"
PARTITION_FUNCTION = "retention_rows_partition"
_TABLE_TRIGGERS = {
    "retention_rows_insert": ("INSERT", "NEW TABLE AS new_rows"),
    "retention_rows_delete": ("DELETE", "OLD TABLE AS old_rows"),
    "retention_rows_update": ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
}
_PARTITION_TRIGGERS = {name: events for name, events in _TABLE_TRIGGERS.items() if events[0] != "UPDATE"}

UNSUPPORTED = "partition tracking is supported on PostgreSQL only (its statement-level triggers with transition tables)"


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _rows_table(conn: sa.Connection, schema: str) -> str:
    return f"{_quote(conn, schema)}.{_quote(conn, store.partition_rows.name)}"


def table_function(column: str, kind: str) -> str:
    """The table trigger's function for this clock: one per column name and kind, its SQL static.

    Static, so PL/pgSQL plans it once per session: a dynamic ``EXECUTE
    format(...)`` of the same statement cost about 250 µs more per one-row
    ``INSERT`` (bench/RESULTS.md).
    """
    return f"retention_rows_table_{hashlib.sha256(f'{kind}:{column}'.encode()).hexdigest()[:16]}"


def _function_sources(conn: sa.Connection, schema: str, column: str, kind: str) -> dict[str, str]:
    """The two trigger functions' bodies; the engine's schema is written into them (they run as their owner)."""
    rows = _rows_table(conn, schema)
    col = _quote(conn, column)
    # date_bin (integer arithmetic) per row and the epoch (numeric) per group: a third of the trigger's cost
    # against floor(extract(epoch ...) / 900) per row (2M rows: 0.62 s against 1.78 s, bench/RESULTS.md).
    # A naive timestamp's epoch reads it as UTC, a date is its midnight, as bucket_of computes the bounds'.
    if kind == "date":
        binned = f"{col}::timestamp"
    elif kind == "timestamp":
        binned = f"date_bin(interval '{BUCKET_SECONDS} seconds', {col}, timestamp '1970-01-01')"
    else:
        binned = f"date_bin(interval '{BUCKET_SECONDS} seconds', {col}, timestamptz '1970-01-01 00:00+00')"
    epoch = f"(extract(epoch FROM g.b) / {BUCKET_SECONDS})::bigint"
    insert = f"INSERT INTO {rows} (owner, bucket, delta) SELECT TG_RELID::bigint, {epoch}"
    table = f"""
BEGIN
  IF TG_OP = 'INSERT' THEN
    {insert}, g.n FROM (SELECT {binned} AS b, count(*) AS n FROM new_rows GROUP BY 1) g;
  ELSIF TG_OP = 'DELETE' THEN
    {insert}, -g.n FROM (SELECT {binned} AS b, count(*) AS n FROM old_rows GROUP BY 1) g;
  ELSE
    {insert}, g.n FROM (SELECT m.b, sum(m.d) AS n FROM (SELECT {binned} AS b, -1 AS d FROM old_rows
                  UNION ALL SELECT {binned}, 1 FROM new_rows) m GROUP BY m.b HAVING sum(m.d) <> 0) g;
  END IF;
  RETURN NULL;
END
"""
    partition = f"""
DECLARE
  n bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT count(*) INTO n FROM new_rows;
  ELSE
    SELECT -count(*) INTO n FROM old_rows;
  END IF;
  IF n <> 0 THEN
    INSERT INTO {rows} (owner, bucket, delta) VALUES (TG_RELID::bigint, NULL, n);
  END IF;
  RETURN NULL;
END
"""
    return {table_function(column, kind): table, PARTITION_FUNCTION: partition}


def _ensure_functions(conn: sa.Connection, schema: str, column: str, kind: str) -> None:
    """Create the trigger functions, or replace one whose body differs (replacing one untracks every partition)."""
    for name, source in _function_sources(conn, schema, column, kind).items():
        found = conn.execute(
            sa.text(
                "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = :schema AND p.proname = :name"
            ),
            {"schema": schema, "name": name},
        ).scalar()
        if found == source:
            continue
        # SECURITY DEFINER: the application's role writes through the triggers without a grant on the
        # engine's table; a fixed search_path so no caller's schema can stand in for pg_catalog.
        conn.execute(
            sa.text(
                f"CREATE OR REPLACE FUNCTION {_quote(conn, schema)}.{_quote(conn, name)}() RETURNS trigger "
                "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS " + _dollar(source)
            )
        )


def _dollar(source: str) -> str:
    return "$retention$" + source + "$retention$"


def bucket_of(value: Any) -> int | None:
    """A bound's bucket as the triggers compute a value's (``date_bin`` to the quarter hour, its epoch / 900),
    or None unless the bound is on a quarter hour (a bucket would straddle two partitions).

    A naive timestamp's epoch reads it as UTC, as PostgreSQL's does; a date is its midnight.
    """
    if isinstance(value, dt.datetime):
        naive = value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
        delta = naive - dt.datetime(1970, 1, 1)  # noqa: DTZ001
    elif isinstance(value, dt.date):
        delta = dt.timedelta(days=(value - dt.date(1970, 1, 1)).days)
    else:
        return None
    seconds = delta.days * 86_400 + delta.seconds
    if delta.microseconds or seconds % BUCKET_SECONDS:
        return None
    return seconds // BUCKET_SECONDS


def partition_buckets(partition: Any) -> tuple[int, int] | None:
    """A partition's bounds as buckets (first, end exclusive), or None unless both are on quarter hours."""
    low, high = bucket_of(partition.lower), bucket_of(partition.upper)
    return None if low is None or high is None else (low, high)


_SIGNATURE = """
SELECT n.i AS i, c.oid::bigint AS relid, i.inhparent::bigint AS parent, c.relkind AS relkind,
       c.xmin::text AS class_row, i.xmin::text AS inherits_row,
       (SELECT string_agg(t.tgname || ':' || t.oid || ':' || t.xmin || ':' || t.tgenabled::text || ':' || p.xmin, ','
                          ORDER BY t.tgrelid = c.oid, t.tgname)
          FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE t.tgrelid IN (c.oid, i.inhparent) AND t.tgname LIKE 'retention\\_rows\\_%') AS triggers,
       (SELECT count(*) FROM pg_trigger t
         WHERE t.tgrelid IN (c.oid, i.inhparent) AND t.tgname LIKE 'retention\\_rows\\_%'
           AND t.tgenabled <> 'A') AS not_always,
       EXISTS (SELECT 1 FROM pg_subscription_rel s WHERE s.srrelid IN (c.oid, i.inhparent)) AS subscribed
  FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS n(name, i)
  JOIN pg_class c ON c.oid = to_regclass(n.name)
  JOIN pg_inherits i ON i.inhrelid = c.oid
"""


def _signatures(conn: sa.Connection, names: Sequence[str]) -> dict[int, Any]:
    """The catalog rows that make a kept count whole, per position in ``names`` (quoted, qualified names)."""
    if not names:
        return {}
    rows = conn.execute(sa.text(_SIGNATURE), {"names": list(names)}).all()
    return {int(row.i) - 1: row for row in rows}


def _signature(row: Any) -> str:
    return f"class {row.class_row}; inherits {row.inherits_row}; triggers {row.triggers or ''}"


@dataclass
class Counting:
    """How each partition is counted at a drop: by its kept count (``kept``) or by a scan (``scanned``)."""

    kept: dict[str, int] = field(default_factory=dict)
    """label -> its row count, the sum of its deltas (:func:`kept_counts`); empty when not summed
    (``counting(..., sums=False)``): every partition not in ``scanned`` is then counted by its kept count."""
    scanned: dict[str, str] = field(default_factory=dict)
    """label -> why its kept count is not used."""
    relids: dict[str, int] = field(default_factory=dict)
    """label -> oid of each partition whose deltas and tracking rows the drop removes with it: every one found,
    when the table has counting triggers and the engine's tracking tables are readable; else none."""

    def how(self, label: str) -> str:
        return f"scanned: {self.scanned[label]}" if label in self.scanned else "kept"


def counting(conn: sa.Connection, partitions: Sequence[Any], sums: bool = True) -> Counting:
    """Which of ``partitions`` (retention.engine.partitions.Partition) have a kept count that is whole.

    Called under the partitioned table's ``ACCESS EXCLUSIVE`` lock, so no
    write is in flight and the kept counts summed here are the rows the drop
    removes. ``sums=False`` (``partitions status``): which ones only, from
    the catalog and the tracking rows, without summing their deltas.
    """
    result = Counting()
    if not partitions:
        return result
    found = _signatures(conn, [p.quoted(conn) for p in partitions])
    if not any(row.triggers for row in found.values()):
        for p in partitions:
            result.scanned[p.label] = "not tracked (retention partitions track)"
        return result
    readable = conn.execute(
        sa.text(
            "SELECT bool_and(coalesce(has_table_privilege(to_regclass(t), 'SELECT'), false)) "
            "FROM unnest(CAST(:tables AS text[])) AS t"
        ),
        {"tables": [store.partition_tracking.name, store.partition_rows.name]},
    ).scalar()
    if not readable:
        # plan against a read-only role, or a database whose engine tables are older: counted as before.
        for p in partitions:
            result.scanned[p.label] = "the engine's partition tracking tables are not readable here"
        return result
    result.relids = {partitions[i].label: int(row.relid) for i, row in found.items()}
    tracking = store.partition_tracking
    relids = [int(row.relid) for row in found.values()]
    tracked = {
        int(row.relid): row
        for row in conn.execute(sa.select(tracking).where(tracking.c.relid.in_(relids))).all()  # few dozen oids
    }
    whole: dict[str, tuple[int, int, int, int]] = {}
    for index, partition in enumerate(partitions):
        row = found.get(index)
        recorded = tracked.get(int(row.relid)) if row is not None else None
        reason = _why_not(row, recorded, partition_buckets(partition))
        if reason is not None:
            result.scanned[partition.label] = reason
            continue
        assert row is not None and recorded is not None
        whole[partition.label] = (int(row.parent), int(recorded.first_bucket), int(recorded.end_bucket), int(row.relid))
    if sums:
        result.kept = kept_counts(conn, whole)
    return result


def kept_counts(conn: sa.Connection, wanted: dict[str, tuple[int, int, int, int]]) -> dict[str, int]:
    """Partitions' kept counts, in one statement: label -> (parent, first bucket, end bucket, partition oid).

    Each count is the table's deltas in the partition's buckets plus its
    own, two sums each an equality on ``owner`` (and a range of ``bucket``):
    a range scan of the ``(owner, bucket)`` index whatever the planner knows
    of the table, statistics or none (autovacuum may be off, and nothing
    analyses it). One plan for every partition (a ``VALUES`` list, the sums
    correlated to it): a scalar subquery per partition planned each one
    again. For 35 partitions: 2.8 ms, against 7.1 ms for d003a03's ``OR``
    form and 14.7 ms for two scalar subqueries a partition
    (bench/RESULTS.md).
    """
    if not wanted:
        return {}
    labels = sorted(wanted)
    rows = _rows_sql(conn)
    values = ", ".join(
        f"({i}, CAST({int(p)} AS bigint), CAST({int(a)} AS bigint), CAST({int(b)} AS bigint), CAST({int(r)} AS bigint))"
        for i, (p, a, b, r) in enumerate(wanted[label] for label in labels)
    )
    found = conn.execute(
        sa.text(
            f"SELECT v.i, (SELECT coalesce(sum(d.delta), 0) FROM {rows} d WHERE d.owner = v.parent "
            "AND d.bucket >= v.first_bucket AND d.bucket < v.end_bucket) "
            f"+ (SELECT coalesce(sum(d.delta), 0) FROM {rows} d WHERE d.owner = v.relid) "
            f"FROM (VALUES {values}) AS v(i, parent, first_bucket, end_bucket, relid)"
        )
    ).all()
    return {labels[int(i)]: int(count) for i, count in found}


def _why_not(row: Any, recorded: Any, buckets: tuple[int, int] | None) -> str | None:
    """Why a partition's kept count may be incomplete, or None when it is whole."""
    if row is None:
        return "not found in the catalog"
    if recorded is None:
        return "not tracked (retention partitions track)"
    if row.relkind != "r":
        return "not a plain table (partitioned further)"
    if row.subscribed:
        return "a subscription writes it (logical replication's apply fires no statement trigger)"
    if (
        int(recorded.parent) != int(row.parent)
        or buckets is None
        or tuple(buckets)
        != (
            int(recorded.first_bucket),
            int(recorded.end_bucket),
        )
    ):
        return "its bounds or its table changed since it was tracked"
    if row.not_always:
        return "a counting trigger is disabled"
    then = recorded.signature.split("; ")
    now = _signature(row).split("; ")
    if then[1] != now[1]:  # before the class row, which an attach also rewrites
        return "detached or attached again since it was tracked"
    if then[0] != now[0]:
        return "altered, truncated or rewritten since it was tracked"
    if then[2] != now[2]:
        return "a counting trigger was dropped, replaced, or disabled and enabled again since it was tracked"
    return None


@dataclass(frozen=True)
class TrackOutcome:
    """What ``track`` did to one partition: ``tracked`` (counted now), ``already`` (kept since), or ``skipped``."""

    label: str
    outcome: str
    rows: int | None = None
    reason: str | None = None


def _ensure_triggers(
    conn: sa.Connection,
    relation: str,
    relid: int,
    triggers: dict[str, tuple[str, str]],
    function: str,
    schema: str,
) -> None:
    """Create the counting triggers of ``relation`` missing or not enabled ALWAYS (each change untracks it)."""
    present = {
        row.tgname: row
        for row in conn.execute(
            sa.text(
                "SELECT tgname, tgenabled, p.proname, encode(tgargs, 'escape') AS args FROM pg_trigger t "
                "JOIN pg_proc p ON p.oid = t.tgfoid WHERE tgrelid = :relid AND tgname LIKE 'retention\\_rows\\_%'"
            ),
            {"relid": relid},
        ).all()
    }
    for name, (event, referencing) in triggers.items():
        found = present.get(name)
        if found is not None and (found.tgenabled, found.proname, found.args) == ("A", function, ""):
            continue
        if found is not None:
            conn.execute(sa.text(f"DROP TRIGGER {_quote(conn, name)} ON {relation}"))
        conn.execute(
            sa.text(
                f"CREATE TRIGGER {_quote(conn, name)} AFTER {event} ON {relation} REFERENCING {referencing} "
                "FOR EACH STATEMENT "
                f"EXECUTE FUNCTION {_quote(conn, schema)}.{_quote(conn, function)}()"
            )
        )
        # ALWAYS: also for sessions with session_replication_role = replica, which skip ordinary triggers.
        conn.execute(sa.text(f"ALTER TABLE {relation} ENABLE ALWAYS TRIGGER {_quote(conn, name)}"))


def track(
    engine: sa.Engine, parent: str, column: str, kind: str, partitions: Iterable[Any], now: dt.datetime
) -> list[TrackOutcome]:
    """Install the counting triggers on ``parent`` (quoted, qualified) and start the kept count of each partition.

    ``kind``: the clock column's type as the engine reads it (``timestamptz``, ``timestamp`` or ``date``).

    One transaction for the table's triggers, then one per partition not yet
    tracked: its triggers, a ``SHARE`` lock (writes to it wait, reads do
    not), its exact ``count(*)`` in place of the deltas in its range, and its
    catalog rows. A partition already tracked, whose catalog rows are
    unchanged, is left as it is (no count). Then each tracked partition's
    deltas are folded into one row (:func:`compact`), and the deltas table is
    vacuumed if it holds ``VACUUM_AFTER`` dead rows or more (from this call
    or earlier ones). Idempotent: run it after creating partitions (or from
    the job that creates them).
    """
    outcomes: list[TrackOutcome] = []
    deleted = 0  # deltas this call deletes: dead rows the statistics may not count yet

    def note(outcome: TrackOutcome) -> None:
        # Logged as each partition's transaction ends: a track killed later still leaves what it did in the log.
        outcomes.append(outcome)
        log.info(
            "partition_tracking",
            partition=outcome.label,
            outcome=outcome.outcome,
            rows=outcome.rows,
            reason=outcome.reason,
        )

    with engine.begin() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        _ensure_functions(conn, schema, column, kind)
        parent_oid = int(conn.execute(sa.text("SELECT to_regclass(:p)::oid::bigint"), {"p": parent}).scalar_one())
        _ensure_triggers(conn, parent, parent_oid, _TABLE_TRIGGERS, table_function(column, kind), schema)
    for partition in partitions:
        buckets = partition_buckets(partition)
        if buckets is None:
            note(TrackOutcome(partition.label, "skipped", reason="its bounds are not on quarter hours"))
            continue
        with engine.begin() as conn:
            quoted = partition.quoted(conn)
            row = _signatures(conn, [quoted]).get(0)
            if row is None or row.relkind != "r":
                note(TrackOutcome(partition.label, "skipped", reason="not a plain table"))
                continue
            tracking = store.partition_tracking
            recorded = conn.execute(sa.select(tracking).where(tracking.c.relid == int(row.relid))).first()
            if _why_not(row, recorded, buckets) is None:
                note(TrackOutcome(partition.label, "already"))
                continue
            _ensure_triggers(conn, quoted, int(row.relid), _PARTITION_TRIGGERS, PARTITION_FUNCTION, schema)
            # Writers to it (through the table or not) hold ROW EXCLUSIVE: SHARE waits for them and holds off
            # the next ones, so the count below and the deltas it replaces are the same rows.
            conn.execute(sa.text(f"LOCK TABLE {quoted} IN SHARE MODE"))
            rows = int(conn.execute(sa.text(f"SELECT count(*) FROM {quoted}")).scalar_one())
            deltas = store.partition_rows
            deleted += conn.execute(
                sa.delete(deltas).where(
                    sa.or_(
                        sa.and_(
                            deltas.c.owner == parent_oid,
                            deltas.c.bucket >= buckets[0],
                            deltas.c.bucket < buckets[1],
                        ),
                        deltas.c.owner == int(row.relid),
                    )
                )
            ).rowcount
            # Another partition once tracked in this range (detached since) no longer owns these buckets.
            conn.execute(
                sa.delete(tracking).where(
                    sa.or_(
                        tracking.c.relid == int(row.relid),
                        sa.and_(
                            tracking.c.parent == parent_oid,
                            tracking.c.first_bucket < buckets[1],
                            tracking.c.end_bucket > buckets[0],
                        ),
                    )
                )
            )
            conn.execute(sa.insert(deltas).values(owner=int(row.relid), bucket=None, delta=rows))
            signed = _signatures(conn, [quoted])[0]  # after the triggers, in this transaction
            conn.execute(
                sa.insert(tracking).values(
                    relid=int(row.relid),
                    parent=parent_oid,
                    label=partition.label,
                    first_bucket=buckets[0],
                    end_bucket=buckets[1],
                    signature=_signature(signed),
                    tracked_at=now,
                )
            )
        note(TrackOutcome(partition.label, "tracked", rows=rows))  # after its commit
    with engine.begin() as conn:
        deleted += compact(conn, parent_oid)
        dead = conn.execute(
            sa.text("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = to_regclass(:rows)"),
            {"rows": _rows_sql(conn)},
        ).scalar()
    if max(int(dead or 0), deleted) >= VACUUM_AFTER:
        # Deleted deltas are dead rows until a vacuum, and autovacuum may be off or late: the drop's index scans
        # would visit them (about 0.4 µs each), and their space would stay taken. They pile up across calls (each
        # nightly fold leaves a few, forget_dropped more), so the table's count decides, not this call's. No
        # ANALYZE: the drop's sums are index range scans without statistics (kept_counts), and nothing else
        # reads the table.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM {_rows_sql(conn)}"))
    return outcomes


def compact(conn: sa.Connection, parent: int) -> int:
    """Fold each tracked partition's deltas into one row, and remove the table's deltas no partition tracks.

    A bulk load leaves a delta per quarter hour (~35,000 a year) and an
    application writing one row per statement one per statement; the drop
    reads every delta of the partitions it drops. Folding keeps each sum:
    the rows deleted are exactly the rows summed (``DELETE ... RETURNING``),
    and a write committing meanwhile adds a delta this statement neither
    sees nor deletes. So no lock: the application's writes go on. Returns
    the rows deleted (dead until a vacuum).
    """
    rows, tracking = _rows_sql(conn), conn.dialect.identifier_preparer.format_table(store.partition_tracking)
    folded = conn.execute(
        sa.text(
            f"WITH gone AS (DELETE FROM {rows} r USING {tracking} t WHERE t.parent = :parent "
            "AND ((r.owner = :parent AND r.bucket >= t.first_bucket AND r.bucket < t.end_bucket) OR r.owner = t.relid) "
            "RETURNING t.relid, r.delta), "
            f"kept AS (INSERT INTO {rows} (owner, bucket, delta) SELECT relid, NULL, sum(delta) FROM gone "
            "GROUP BY relid) "
            "SELECT count(*) FROM gone"
        ),
        {"parent": parent},
    ).scalar_one()
    stray = conn.execute(
        sa.text(
            f"DELETE FROM {rows} r WHERE r.owner = :parent AND NOT EXISTS (SELECT 1 FROM {tracking} t "
            "WHERE t.parent = :parent AND r.bucket >= t.first_bucket AND r.bucket < t.end_bucket)"
        ),
        {"parent": parent},
    ).rowcount
    return int(folded) + int(stray)


def _rows_sql(conn: sa.Connection) -> str:
    return conn.dialect.identifier_preparer.format_table(store.partition_rows)


def forget_dropped(conn: sa.Connection, relids: Sequence[int]) -> None:
    """Remove the tracking rows and own deltas of partitions just dropped (in the drop's transaction).

    The table's deltas in their ranges stay: deleting them cost the drop
    about a row per quarter hour of data (~35,000 a year, whatever the rows),
    and nothing reads them once no tracked partition covers them; the next
    ``track`` removes them (:func:`compact`).
    """
    if not relids:
        return
    deltas, tracking = store.partition_rows, store.partition_tracking
    conn.execute(sa.delete(deltas).where(deltas.c.owner.in_(relids)))
    conn.execute(sa.delete(tracking).where(tracking.c.relid.in_(relids)))


def untrack_all(conn: sa.Connection) -> int:
    """Drop every counting trigger, the functions in this schema and the kept counts; returns the triggers dropped.

    For ``retention partitions untrack``. ``db downgrade`` below 0019 drops
    the same triggers and functions with its own copy of this SQL (a
    migration does not import the engine): a trigger left behind would fail
    the application's writes once the table it writes is gone.
    """
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    functions = "p.proname LIKE 'retention\\_rows\\_%'"
    dropped = conn.execute(
        sa.text(
            "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            f"JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :schema AND {functions}"
        ),
        {"schema": schema},
    ).all()
    for relation, name in dropped:
        conn.execute(sa.text(f"DROP TRIGGER {_quote(conn, name)} ON {relation}"))
    for (name,) in conn.execute(
        sa.text(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            f"WHERE n.nspname = :schema AND {functions}"
        ),
        {"schema": schema},
    ).all():
        conn.execute(sa.text(f"DROP FUNCTION {_quote(conn, schema)}.{_quote(conn, name)}()"))
    exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": store.partition_tracking.name}).scalar()
    if exists is not None:
        conn.execute(sa.delete(store.partition_tracking))
        conn.execute(sa.delete(store.partition_rows))
    return len(dropped)
