"""The purge of a plain dataset as set-based SQL: Python holds a batch's key range, counts and leaves.

The per-record path (:mod:`retention.engine.apply`) fetches every candidate
row, evaluates its due dates and keys its pseudonyms in Python. For the
commonest dataset (``active -> purged`` by ``delete``, one instant clock, an
integer or text key, item ledger, nothing following it) every one of those
values is a function the database can compute:

- the selection is the planner's own active-pass predicate
  (:meth:`~retention.engine.plan_base.PlannerBase.reaching`: due by the SQL
  due expression, included, not held, not erasing, not moved), so what the
  plan counts and what the run moves are one expression;
- the due instant depends only on the clock's local date, so a table of the
  run's days (:class:`DueDays`, filled by the same evaluator the per-record
  path uses) gives it by an index probe;
- the items are ``INSERT INTO items SELECT`` with pseudonyms computed by the
  database under the run's key (the dialect's ``hmac_hex``), byte for byte
  what :mod:`retention.ledger.bulk` computes; their lookup rows likewise;
- the rows are deleted by the same predicate over the batch's key range, and
  the items must match the deletions one to one, or the batch rolls back;
- Python reads back only the 32-byte leaves (the dialect's ``leaf`` over the
  stored item, the RFC 8785 document of format 2) to build the Merkle root
  and the chained entry (:func:`retention.ledger.chain.append_written`).

Every other dataset takes the per-record path, and :func:`why_not` says why
(logged once per dataset and run): the choice is explicit, never silent.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine.apply import RunContext
from retention.engine.clock_sql import ClockSQL
from retention.engine.evaluate import DueCache, evaluate_record
from retention.engine.plan import Batch, DatasetPlanner
from retention.errors import ConcurrentChangeError
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.store import tables as store
from retention.timing.clock import local_date, start_of_day
from retention.timing.datetext import normal_text

log = structlog.get_logger("retention")

SWITCH = "RETENTION_SET_BASED"
"""Environment variable: ``0`` sends every dataset through the per-record path (before/after measurements)."""

_TRANSITION = "active->purged"
_DAY_KINDS = ("timestamptz", "timestamp", "date")
"""Clock kinds whose local day :class:`DueDays` finds by comparing the stored value with the day's first moment."""


def why_not(conn: sa.Connection, planner: DatasetPlanner) -> str | None:
    """Why ``planner``'s active pass cannot run as set-based SQL, or None when it can."""
    if os.environ.get(SWITCH, "1") == "0":
        return f"turned off ({SWITCH}=0)"
    if not dialect_for(conn).set_based_items:
        return "this database does not compute ledger items"
    dataset = planner.dataset
    if list(dataset.states) != ["active", "purged"]:
        return "its lifecycle is not active -> purged"
    if dataset.step_to("purged").action not in ("delete", "drop_partition"):
        return "its purge does not delete rows"
    if dataset.ledger == "summary":
        return "its ledger is a summary"
    if not planner.is_simple():
        return "records follow, are followed or are reviewed"
    if planner.email is not None:
        return "records carry e-mail identities (their pseudonyms need the long-lived key)"
    sql = planner.sql
    if sql is None or len(sql.clocks) != 1:
        return "it has more than one clock"
    clock = sql.clocks[0]
    if clock.kind not in _DAY_KINDS or clock.aggregate or clock.clock.is_expiry or planner.ctx.as_of.tzinfo is None:
        return "its clock is not a plain date or date-time column"
    for role, column in (("key", planner.key), ("subject", planner.subject)):
        if column is not None and _python_type(column) not in (int, str):
            return f"its {role} is neither an integer nor text"
    return None


def _python_type(column: ColumnElement[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def start(conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner) -> SetPurge | None:
    """The set-based purge of ``planner``'s active pass, or None (the per-record path; the log says why)."""
    reason = why_not(conn, planner)
    if reason is not None:
        log.info("purge_per_record", dataset=planner.name, reason=reason, run_id=ctx.run_id)
        return None
    dialect_for(conn).prepare_items(conn)
    with conn.begin():
        days = DueDays.create(conn, ctx, planner)
    log.info("purge_set_based", dataset=planner.name, days=days.count, run_id=ctx.run_id)
    return SetPurge(ctx, planner, days)


@dataclass
class DueDays:
    """The run's due instant per local day of the clock, as a temporary table keyed by the day's first instant.

    Due dates depend on the clock's local date only (the per-record path
    caches them by it); each day from the earliest due clock to ``as_of``'s
    is evaluated once by :func:`~retention.engine.evaluate.evaluate_record`,
    so the database's due instant is the evaluator's by construction.
    """

    table: sa.Table
    count: int
    buckets: sa.Table | None = None  # the same days by stored date, where a range probe per row is a scan

    @classmethod
    def create(cls, conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner) -> DueDays:
        assert planner.sql is not None
        clock = planner.sql.clocks[0]
        dialect = dialect_for(conn)
        moment_type: Any = sa.DateTime(timezone=dialect.aware_timestamptz).with_variant(
            sa.dialects.mysql.DATETIME(fsp=6), "mysql", "mariadb"
        )
        if clock.kind == "date":
            moment_type = sa.Date()
        if dialect.datetimes_as_text:
            moment_type = sa.String(26)  # the clock's normal form (retention.timing.datetext)
        table = sa.Table(
            f"{store.PREFIX}due_days",
            sa.MetaData(),
            sa.Column("lo", moment_type, primary_key=True),
            sa.Column("due_at", store.UTCDateTime, nullable=False),
            prefixes=["TEMPORARY"],
        )
        table.drop(conn, checkfirst=True)
        table.create(conn)
        pack, dataset, as_of = ctx.loaded.pack, planner.dataset, ctx.as_of
        tz = pack.timezone
        _, lowest, _ = clock.tally(conn, planner.table, planner.sql.due("purged", as_of))
        rows: list[dict[str, Any]] = []
        if lowest is not None:
            day, last = _first_day(lowest, tz), local_date(as_of, tz)
            cache: DueCache = {}
            while day <= last:
                begins = _first_moment(clock, day, tz)
                evaluation = evaluate_record(pack, dataset, [begins], as_of, cache)
                if evaluation.anomaly is None:
                    lo = normal_text(begins) if dialect.datetimes_as_text else begins
                    rows.append({"lo": lo, "due_at": evaluation.due["purged"]})
                day += dt.timedelta(days=1)
        if rows:
            conn.execute(table.insert(), rows)
        buckets = None if dialect.correlated_range_probe else _buckets(conn, rows, moment_type)
        return cls(table, len(rows), buckets)

    def due_at(self, clock: ColumnElement[Any]) -> ColumnElement[Any]:
        """The due instant of a row whose clock is ``clock`` (NULL below the first day: the insert then fails)."""
        b = self.buckets
        if b is not None:
            pick = sa.case(
                (sa.and_(b.c.s2.is_not(None), clock >= b.c.s2), b.c.d2),
                (sa.and_(b.c.s1.is_not(None), clock >= b.c.s1), b.c.d1),
                else_=b.c.d0,
            )
            return sa.select(pick).where(b.c.u == sa.func.date(clock)).scalar_subquery()
        t = self.table
        return sa.select(t.c.due_at).where(t.c.lo <= clock).order_by(t.c.lo.desc()).limit(1).scalar_subquery()

    def drop(self, conn: sa.Connection) -> None:
        """Drop the tables; a session that is gone took its temporary tables with it (nothing to report)."""
        for table in (self.table, self.buckets):
            if table is not None:
                with contextlib.suppress(sa.exc.DBAPIError), conn.begin():
                    table.drop(conn, checkfirst=True)


def _buckets(conn: sa.Connection, rows: list[dict[str, Any]], moment_type: Any) -> sa.Table:
    """The day table keyed by stored date (``DATE(clock)``): an equality probe per row instead of a range.

    MariaDB probes a correlated range (``lo <= clock ORDER BY lo DESC
    LIMIT 1``) by walking the index from its end, once per row. A stored
    date holds at most two local-day starts (days are 23 to 25 hours), so
    each date row has the due instant at its midnight (``d0``) and at each
    start inside it (``s1``/``d1``, ``s2``/``d2``).
    """
    table = sa.Table(
        f"{store.PREFIX}due_buckets",
        sa.MetaData(),
        sa.Column("u", sa.Date, primary_key=True),
        sa.Column("d0", store.UTCDateTime),
        sa.Column("s1", moment_type),
        sa.Column("d1", store.UTCDateTime),
        sa.Column("s2", moment_type),
        sa.Column("d2", store.UTCDateTime),
        prefixes=["TEMPORARY"],
    )
    table.drop(conn, checkfirst=True)
    table.create(conn)
    if not rows:
        return table

    def moment(value: dt.datetime | dt.date) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=None)
        return dt.datetime(value.year, value.month, value.day)  # noqa: DTZ001 - a stored date's midnight

    starts = [moment(r["lo"]) for r in rows]
    out: list[dict[str, Any]] = []
    day, last = starts[0].date(), starts[-1].date()
    while day <= last:
        midnight = dt.datetime(day.year, day.month, day.day)  # noqa: DTZ001 - as stored
        covering = bisect.bisect_right(starts, midnight) - 1
        inside = range(covering + 1, bisect.bisect_left(starts, midnight + dt.timedelta(days=1)))
        if len(inside) > 2:  # pragma: no cover - days are at least 23 hours long
            raise AssertionError("more than two local days start on one stored date")
        bucket: dict[str, Any] = {"u": day, "d0": rows[covering]["due_at"] if covering >= 0 else None}
        for n in (1, 2):
            k = inside[n - 1] if len(inside) >= n else None
            bucket[f"s{n}"] = None if k is None else rows[k]["lo"]
            bucket[f"d{n}"] = None if k is None else rows[k]["due_at"]
        out.append(bucket)
        day += dt.timedelta(days=1)
    conn.execute(table.insert(), out)
    return table


def _first_day(lowest: Any, tz: str) -> dt.date:
    """A local day on or before that of the least due clock value (a day early: the table only grows)."""
    if isinstance(lowest, str):  # SQLite: the normal form
        lowest = dt.date.fromisoformat(lowest) if len(lowest) == 10 else dt.datetime.fromisoformat(lowest)
    if isinstance(lowest, dt.datetime):
        instant = lowest if lowest.tzinfo is not None else lowest.replace(tzinfo=dt.UTC)
        return local_date(instant, tz) - dt.timedelta(days=1)
    assert isinstance(lowest, dt.date)
    return lowest - dt.timedelta(days=1)


def _first_moment(clock: ClockSQL, day: dt.date, tz: str) -> dt.datetime | dt.date:
    """The least stored value whose local day is ``day``, as :meth:`ClockSQL.before_day_after` bounds days."""
    if clock.kind == "date":
        return day
    if clock.kind == "timestamp" and clock.clock.naive_timezone == tz:
        return dt.datetime(day.year, day.month, day.day)  # noqa: DTZ001 - naive in the policy's own zone
    return clock._moment(start_of_day(day, tz))


@dataclass
class SetPurge:
    """One dataset's active pass, batch by batch (key ranges), in the caller's transactions."""

    ctx: RunContext
    planner: DatasetPlanner
    days: DueDays

    def batch(self, conn: sa.Connection, after: Any) -> tuple[Batch, dict[str, dict[str, int]], Any] | None:
        """Purge the next key range after ``after``: (the batch for progress, counts, key to resume from).

        None when no due record is left. The range is the keys of the next
        batch-size due records, locked; items, lookup rows and the delete
        all take the same predicate over that range.
        """
        planner, ctx = self.planner, self.ctx
        assert planner.sql is not None
        planner.probe(conn)
        key = planner.key
        selected = planner.reaching(conn, planner.sql, 1, per_row=True)
        query = sa.select(key).where(selected)
        if after is not None:
            query = query.where(key > after)
        query = dialect_for(conn).for_update(query.order_by(key).limit(planner.batch_size), planner.table)
        keys = conn.execute(query).scalars().all()
        if not keys:
            return None
        in_range = [selected, key <= keys[-1]] + ([key > after] if after is not None else [])
        pack = ctx.loaded.pack
        draft = ledger_items.BatchItems(
            ctx.run_id,
            pack.pack,
            ctx.loaded.digest,
            planner.name,
            _TRANSITION,
            "delete",
            planner.dataset.basis_for("purged"),
            ctx.secret,
            [],
        )
        moved = ledger.append_written(
            conn, draft, ctx.now(), lambda seq: self._write(conn, seq, in_range), secret=ctx.secret
        )
        counts = {planner.name: {_TRANSITION: moved} if moved else {}}
        return Batch(planner.name, "active", [], scanned=len(keys), moved=moved), counts, keys[-1]

    def _write(
        self, conn: sa.Connection, seq: int, in_range: list[ColumnElement[bool]]
    ) -> tuple[list[bytes], dt.datetime | None]:
        """Items, deletions and lookup rows of the range at entry ``seq``; its leaves and latest due instant."""
        planner, ctx = self.planner, self.ctx
        assert planner.sql is not None
        dialect = dialect_for(conn)
        key = ledger_items.run_key(ctx.secret, ctx.run_id)
        items, lookup = store.ledger_items, store.ledger_lookup
        record_text = planner.key if _python_type(planner.key) is str else sa.cast(planner.key, sa.String)
        record = dialect.hmac_hex(key, f"record\x1f{planner.name}\x1f".encode(), record_text)
        subject: ColumnElement[Any] = sa.null()
        if planner.subject is not None:
            subject_text = sa.func.nullif(planner.text(conn, planner.subject), "")
            subject = sa.case(
                (subject_text.is_(None), sa.null()), else_=dialect.hmac_hex(key, b"subject\x1f", subject_text)
            )
        rows = sa.select(
            sa.literal(seq, store.SEQ),
            sa.func.row_number().over(order_by=planner.key) - 1,
            record,
            subject,
            self.days.due_at(planner.sql.clocks[0].select()),
            sa.null(),
            sa.null(),
            sa.null(),
        ).where(*in_range)
        insert = items.insert().from_select(ledger_items.ITEM_COLUMNS, rows)
        written = conn.execute(insert.execution_options(preserve_rowcount=True)).rowcount
        deleted = conn.execute(planner.table.delete().where(*in_range)).rowcount
        if written != deleted:
            raise ConcurrentChangeError(
                f"dataset {planner.name}: {written} items for {deleted} rows deleted in one key range; rolled back"
            )
        if not written:
            return [], None
        mine = items.c.entry_seq == seq
        for pseudonym in (items.c.record_pseudonym, items.c.subject_pseudonym):
            conn.execute(
                lookup.insert().from_select(
                    ["run_id", "pseudonym", "entry_seq", "idx"],
                    sa.select(
                        sa.literal(ctx.run_id, lookup.c.run_id.type), pseudonym, items.c.entry_seq, items.c.idx
                    ).where(mine, pseudonym.is_not(None)),
                )
            )
        leaves = [
            bytes(leaf) for leaf in conn.execute(sa.select(_leaf(conn)).where(mine).order_by(items.c.idx)).scalars()
        ]
        due = conn.execute(sa.select(sa.func.max(items.c.due_at)).where(mine)).scalar()
        return leaves, due


def _leaf(conn: sa.Connection) -> ColumnElement[Any]:
    """A stored item's Merkle leaf, from its columns.

    The leaf hashes the RFC 8785 document of :func:`~retention.ledger.items.item_document`.

    Only for items without request, review or e-mail (the set-based purge
    writes no other).
    """
    dialect = dialect_for(conn)
    t = store.ledger_items
    subject = sa.case(
        (t.c.subject_pseudonym.is_(None), sa.literal("null", sa.String)),
        else_=dialect.concat_text(sa.literal('"', sa.String), t.c.subject_pseudonym, sa.literal('"', sa.String)),
    )
    document = dialect.concat_text(
        sa.literal('{"due_at":"', sa.String),
        dialect.instant_text(t.c.due_at),
        sa.literal('","idx":', sa.String),
        sa.cast(t.c.idx, sa.String),
        sa.literal(',"record":"', sa.String),
        t.c.record_pseudonym,
        sa.literal('","request":null,"review":null,"subject":', sa.String),
        subject,
        sa.literal("}", sa.String),
    )
    return dialect.leaf(document)


__all__ = ["SWITCH", "DueDays", "SetPurge", "start", "why_not"]
