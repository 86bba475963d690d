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
  what :mod:`retention.ledger.bulk` computes; format 4 writes no lookup rows;
- the rows are deleted by the same predicate over the batch's key range, and
  the items must match the deletions one to one, or the batch rolls back;
- the insert returns each stored item's 32-byte leaf (``RETURNING`` the
  dialect's ``leaf`` over the format-4 bytes, :func:`retention.ledger.items.item_bytes`),
  from which Python builds the Merkle root and the chained entry
  (:func:`retention.ledger.chain.append_written`).

Every other dataset takes the per-record path, and :func:`why_not` says why
(logged once per dataset and run): the choice is explicit, never silent.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine.apply import RunContext
from retention.engine.clock_sql import ClockSQL
from retention.engine.evaluate import DueCache, RecordEvaluation, evaluate_record
from retention.engine.plan import Batch, DatasetPlanner
from retention.errors import ConcurrentChangeError, ConfigError
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.store import tables as store
from retention.timing.clock import local_date, start_of_day
from retention.timing.datetext import normal_text

log = structlog.get_logger("retention")

SWITCH = "RETENTION_SET_BASED"
"""Environment variable: ``0`` sends every dataset through the per-record path (before/after measurements)."""

_DAY_KINDS = ("timestamptz", "timestamp", "date")
"""Clock kinds whose local day :class:`DueDays` finds by comparing the stored value with the day's first moment."""


def enabled() -> bool:
    """Whether ``RETENTION_SET_BASED`` lets a purge run set-based: unset or ``1`` yes, ``0`` no.

    Any other value is refused rather than read as one or the other: an
    operator who wrote ``false`` to turn the path off must not get it on.
    """
    value = os.environ.get(SWITCH, "").strip()
    if value in ("", "1"):
        return True
    if value == "0":
        return False
    raise ConfigError(f"{SWITCH} must be 0 (every purge record by record) or 1 (the default, set-based where it can)")


def why_not(conn: sa.Connection, planner: DatasetPlanner) -> str | None:
    """Why ``planner``'s active pass cannot run as set-based SQL, or None when it can."""
    if not enabled():
        return f"turned off ({SWITCH}=0)"
    if not dialect_for(conn).set_based_items:
        return "this database does not compute ledger items"
    if ledger_items.FORMAT in ledger_items.LOOKUP_FORMATS:
        return f"the ledger writes format {ledger_items.FORMAT} (the database computes format-4 items only)"
    dataset = planner.dataset
    if list(dataset.states) != ["active", "purged"]:
        return "its lifecycle is not active -> purged"
    if dataset.step_to("purged").action not in ("delete", "drop_partition"):
        return "its purge does not delete rows"
    return why_not_records(planner)


def why_not_records(planner: DatasetPlanner) -> str | None:
    """Why ``planner``'s records cannot move by set-based SQL whatever the step (ledger, clock, keys), or None."""
    dataset = planner.dataset
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
    """The run's due instant per local day of the clock, as a temporary table keyed by stored date.

    Due dates depend on the clock's local date only (the per-record path
    caches them by it); each day from the earliest due clock to ``as_of``'s
    is evaluated once by :func:`~retention.engine.evaluate.evaluate_record`,
    so the database's due instant is the evaluator's by construction. Rows
    find theirs by an equality join on the date the value is stored on
    (UTC for instants): no time zone is converted in SQL, and a join on a
    key is a hash join or a primary-key probe on every database (a
    correlated ``lo <= value ORDER BY lo DESC LIMIT 1`` cost 11 µs a row on
    PostgreSQL and a scan of the table per row on MariaDB). A stored date
    holds at most two local-day starts (days last 23 to 25 hours), so each
    row has the due instant at the date's midnight (``d0``) and at each
    start inside it (``s1``/``d1``, ``s2``/``d2``).
    """

    table: sa.Table
    count: int

    @classmethod
    def create(
        cls,
        conn: sa.Connection,
        ctx: RunContext,
        planner: DatasetPlanner,
        state: str = "purged",
        extra: Sequence[DayValue] = (),
    ) -> DueDays:
        """The table of the due instant of ``state`` per day, with each of ``extra``'s values per day start."""
        assert planner.sql is not None
        clock = planner.sql.clocks[0]
        dialect = dialect_for(conn)
        moment_type: Any = sa.DateTime(timezone=dialect.aware_timestamptz).with_variant(
            sa.dialects.mysql.DATETIME(fsp=6), "mysql", "mariadb"
        )
        if dialect.datetimes_as_text:
            moment_type = sa.String(26)  # the clock's normal form (retention.timing.datetext)
        table = sa.Table(
            f"{store.PREFIX}due_days",
            sa.MetaData(),
            sa.Column("u", sa.Date, primary_key=True),
            sa.Column("d0", store.UTCDateTime),
            sa.Column("s1", moment_type),
            sa.Column("d1", store.UTCDateTime),
            sa.Column("s2", moment_type),
            sa.Column("d2", store.UTCDateTime),
            *(sa.Column(f"{v.name}{n}", v.type) for v in extra for n in range(3)),
            prefixes=["TEMPORARY"],
        )
        table.drop(conn, checkfirst=True)
        table.create(conn)
        pack, dataset, as_of = ctx.loaded.pack, planner.dataset, ctx.as_of
        tz = pack.timezone
        _, lowest, _ = clock.tally(conn, planner.table, planner.sql.due(state, as_of))
        starts: list[tuple[Any, tuple[Any, ...]]] = []  # (the day's first stored value, (due instant, *extra))
        if lowest is not None:
            day, last = _first_day(lowest, tz), local_date(as_of, tz)
            cache: DueCache = {}
            while day <= last:
                begins = _first_moment(clock, day, tz)
                evaluation = evaluate_record(pack, dataset, [begins], as_of, cache)
                if evaluation.anomaly is None:
                    starts.append((begins, (evaluation.due[state], *(v.of(evaluation) for v in extra))))
                day += dt.timedelta(days=1)
        stored = normal_text if dialect.datetimes_as_text else (lambda value: value)
        rows = _by_stored_date(starts, stored, ["d", *(v.name for v in extra)])
        if rows:
            conn.execute(table.insert(), rows)
        return cls(table, len(starts))

    def joined(self, conn: sa.Connection, source: sa.Table, clock: ClockSQL) -> sa.Join:
        """``source`` with each row's day (outer: a row below the first day gets no due instant, and fails)."""
        stored_date = dialect_for(conn).stored_date(clock.select(), clock.kind, clock.value.type)
        return source.outerjoin(self.table, self.table.c.u == stored_date)

    def due_at(self, clock: ColumnElement[Any]) -> ColumnElement[Any]:
        """The due instant of a row of :meth:`joined` whose clock is ``clock``."""
        return self.value_at(clock, "d")

    def value_at(self, clock: ColumnElement[Any], name: str) -> ColumnElement[Any]:
        """The day value ``name`` (``d``: the due instant, or a :class:`DayValue`'s) of a row of :meth:`joined`."""
        t = self.table
        return sa.case(
            (sa.and_(t.c.s2.is_not(None), clock >= t.c.s2), t.c[f"{name}2"]),
            (sa.and_(t.c.s1.is_not(None), clock >= t.c.s1), t.c[f"{name}1"]),
            else_=t.c[f"{name}0"],
        )

    def drop(self, conn: sa.Connection) -> None:
        """Drop the table; a session that is gone took its temporary table with it (nothing to report)."""
        with contextlib.suppress(sa.exc.DBAPIError), conn.begin():
            self.table.drop(conn, checkfirst=True)


@dataclass(frozen=True)
class DayValue:
    """Another value :class:`DueDays` keeps per local day, from the evaluation of the day's first moment."""

    name: str
    type: Any
    of: Callable[[RecordEvaluation], Any]


def _by_stored_date(
    starts: list[tuple[Any, tuple[Any, ...]]], stored: Any, names: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per stored date from the first day's to the last's (see :class:`DueDays`)."""
    if not starts:
        return []

    def moment(value: dt.datetime | dt.date) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
        return dt.datetime(value.year, value.month, value.day)  # noqa: DTZ001 - a stored date's midnight

    points = [moment(value) for value, _ in starts]
    out: list[dict[str, Any]] = []
    day, last = points[0].date(), points[-1].date()
    while day <= last:
        midnight = dt.datetime(day.year, day.month, day.day)  # noqa: DTZ001 - as stored
        covering = bisect.bisect_right(points, midnight) - 1
        inside = range(covering + 1, bisect.bisect_left(points, midnight + dt.timedelta(days=1)))
        if len(inside) > 2:  # pragma: no cover - days are at least 23 hours long
            raise AssertionError("more than two local days start on one stored date")
        row: dict[str, Any] = {"u": day}
        for i, name in enumerate(names):
            row[f"{name}0"] = starts[covering][1][i] if covering >= 0 else None
        for n in (1, 2):
            k = inside[n - 1] if len(inside) >= n else None
            row[f"s{n}"] = None if k is None else stored(starts[k][0])
            for i, name in enumerate(names):
                row[f"{name}{n}"] = None if k is None else starts[k][1][i]
        out.append(row)
        day += dt.timedelta(days=1)
    return out


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
    state: str = "purged"
    action: str = "delete"
    keys: Sequence[Any] = ()  # the batch's keys, selected and locked (only where needs_keys)
    needs_keys = False
    """Whether :meth:`change` needs the batch's keys, not just its range (the dialect may skip fetching them)."""

    @property
    def transition(self) -> str:
        return f"active->{self.state}"

    def selected(self, conn: sa.Connection) -> ColumnElement[bool]:
        """The active-pass records this pass moves: the planner's own predicate for the first state."""
        assert self.planner.sql is not None
        return self.planner.reaching(conn, self.planner.sql, 1, per_row=True)

    def change(self, conn: sa.Connection, in_range: list[ColumnElement[bool]]) -> int:
        """Carry out the move of the range's records after their items are written; how many moved."""
        return int(conn.execute(self.planner.table.delete().where(*in_range)).rowcount)

    def batch(self, conn: sa.Connection, after: Any) -> tuple[Batch, dict[str, dict[str, int]], Any] | None:
        """Purge the next key range after ``after``: (the batch for progress, counts, key to resume from).

        None when no due record is left. The range is the keys of the next
        batch-size due records, locked; the items and the delete take the
        same predicate over that range.
        """
        planner, ctx = self.planner, self.ctx
        assert planner.sql is not None
        planner.probe(conn)
        key = planner.key
        selected = self.selected(conn)
        query = sa.select(key).where(selected)
        if after is not None:
            query = query.where(key > after)
        query = dialect_for(conn).for_update(query.order_by(key).limit(planner.batch_size), planner.table)
        if self.needs_keys:
            self.keys = conn.execute(query).scalars().all()
            last, scanned = (self.keys[-1], len(self.keys)) if self.keys else (None, 0)
        else:
            last, scanned = dialect_for(conn).last_of_batch(conn, query, planner.batch_size)
        if not scanned:
            return None
        in_range = [selected, key <= last] + ([key > after] if after is not None else [])
        pack = ctx.loaded.pack
        draft = ledger_items.BatchItems(
            ctx.run_id,
            pack.pack,
            ctx.loaded.digest,
            planner.name,
            self.transition,
            self.action,
            planner.dataset.basis_for(self.state),
            ctx.secret,
            [],
        )
        moved = ledger.append_written(
            conn, draft, ctx.now(), lambda seq: self._write(conn, seq, in_range), secret=ctx.secret
        )
        counts = {planner.name: {self.transition: moved} if moved else {}}
        return Batch(planner.name, "active", [], scanned=scanned, moved=moved), counts, last

    def _write(
        self, conn: sa.Connection, seq: int, in_range: list[ColumnElement[bool]]
    ) -> tuple[list[bytes], dt.datetime | None]:
        """Items and deletions of the range at entry ``seq``; its leaves and latest due instant."""
        planner, ctx = self.planner, self.ctx
        assert planner.sql is not None
        dialect = dialect_for(conn)
        key = ledger_items.run_key(ctx.secret, ctx.run_id)
        items = store.ledger_items
        record_text = planner.key if _python_type(planner.key) is str else sa.cast(planner.key, sa.String)
        record = dialect.hmac_hex(key, f"record\x1f{planner.name}\x1f".encode(), record_text)
        subject: ColumnElement[Any] = sa.null()
        if planner.subject is not None:
            subject_text = sa.func.nullif(planner.text(conn, planner.subject), "")
            subject = sa.case(
                (subject_text.is_(None), sa.null()), else_=dialect.hmac_hex(key, b"subject\x1f", subject_text)
            )
        clock = planner.sql.clocks[0]
        rows = (
            sa.select(
                sa.literal(seq, store.SEQ),
                sa.func.row_number().over(order_by=planner.key) - 1,
                record,
                subject,
                self.days.due_at(clock.select()),
                sa.null(),
                sa.null(),
                sa.null(),
            )
            .select_from(self.days.joined(conn, planner.table, clock))
            .where(*in_range)
        )
        # The leaves come back from the insert itself (RETURNING over the stored row): no read per batch.
        insert = items.insert().from_select(ledger_items.ITEM_COLUMNS, rows).returning(items.c.idx, _leaf(conn))
        written = sorted((int(idx), bytes(leaf)) for idx, leaf in conn.execute(insert))
        deleted = self.change(conn, in_range)
        if len(written) != deleted:
            raise ConcurrentChangeError(
                f"dataset {planner.name}: {len(written)} items for {deleted} rows deleted in one key range; rolled back"
            )
        if not written:
            return [], None
        due = conn.execute(sa.select(sa.func.max(items.c.due_at)).where(items.c.entry_seq == seq)).scalar()
        return [leaf for _, leaf in written], due


def _leaf(conn: sa.Connection) -> ColumnElement[Any]:
    """A stored item's format-4 Merkle leaf from its columns: the bytes of ``ledger_items.item_bytes``.

    Only for items without request, review or e-mail (the set-based purge
    writes no other): those fields are constants here.
    """
    dialect = dialect_for(conn)
    t = store.ledger_items
    absent = sa.literal(ledger_items.ABSENT, sa.String)
    document = dialect.concat_text(
        dialect.instant_text(t.c.due_at),
        t.c.record_pseudonym,
        sa.func.coalesce(t.c.subject_pseudonym, absent),
        absent,
        sa.cast(t.c.idx, sa.String),
        sa.literal("::", sa.String),
    )
    return dialect.leaf(document)


__all__ = ["SWITCH", "DayValue", "DueDays", "SetPurge", "start", "why_not", "why_not_records"]
