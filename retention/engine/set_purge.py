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
- the items are one format-5 block row per batch (:mod:`retention.ledger.blocks`):
  ``INSERT INTO retention_ledger_blocks SELECT`` of the dialect's
  ``block_body`` aggregate over the rows, whose raw 32-byte pseudonyms the
  database computes under the run's key (``hmac_bytes``: the values of
  format 4, unencoded) and whose due text comes from the day table, or, where
  the dialect has ``keyed_blocks`` (SQLite), of ``keyed_block_body`` over the
  rows' key and subject texts, which keys them in the aggregate; no
  per-record index is written, which is what format 5 is for;
- the rows are deleted by the same predicate over the batch's key range, and
  the block must hold one item per deleted row, or the batch rolls back;
- the insert returns the stored body (91 bytes per record), from which
  Python hashes the chunk leaves, builds the Merkle root and chains the
  entry (:func:`retention.ledger.chain.append_blocks_written`).

Every other dataset takes the per-record path, and :func:`why_not` says why
(logged once per dataset and run): the choice is explicit, never silent.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa
import structlog
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.dialects.item_sql import BoundKey
from retention.engine import clock_counts
from retention.engine.apply import RunContext
from retention.engine.clock_sql import ClockSQL, DatasetSQL
from retention.engine.evaluate import DueCache, RecordEvaluation, evaluate_record
from retention.engine.plan import Batch, DatasetPlanner
from retention.engine.plan_values import _without_clock_index
from retention.engine.set_batches import BatchStatements
from retention.errors import ConcurrentChangeError, ConfigError, LedgerError
from retention.ledger import blocks
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.policy.model import Dataset, Pack
from retention.store import tables as store
from retention.timing.clock import local_date, start_of_day
from retention.timing.datetext import normal_text

log = structlog.get_logger("retention")

SWITCH = "RETENTION_SET_BASED"
"""Environment variable: ``0`` sends every dataset through the per-record path (before/after measurements)."""

RUN_KEY = BoundKey("retention_run_key")
"""The run's key in the batch statements: parameters each execution gives, so no cached statement keeps it."""

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
        return (
            f"the ledger writes format {ledger_items.FORMAT} (the database writes format-5 blocks beside format 4 only)"
        )
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
    dialect = dialect_for(conn)
    dialect.prepare_items(conn)
    with conn.begin():
        days = DueDays.create(conn, ctx, planner)
        address = dialect.row_address(conn, planner.table)
    log.info(
        "purge_set_based", dataset=planner.name, days=days.count, one_statement=address is not None, run_id=ctx.run_id
    )
    return SetPurge(ctx, planner, days, address=address)


@dataclass
class DueDays:
    """The run's due instant per local day of the clock, as a temporary table keyed by stored date.

    Due dates depend on the clock's local date only (the per-record path
    caches them by it); each day from the earliest due clock to the latest
    a row can be due from (:func:`_last_day`) is evaluated once by :func:`~retention.engine.evaluate.evaluate_record`,
    so the database's due instant is the evaluator's by construction. Rows
    find theirs by an equality join on the date the value is stored on
    (UTC for instants): no time zone is converted in SQL, and a join on a
    key is a hash join or a primary-key probe on every database (a
    correlated ``lo <= value ORDER BY lo DESC LIMIT 1`` cost 11 µs a row on
    PostgreSQL and a scan of the table per row on MariaDB). A stored date
    holds at most two local-day starts (days last 23 to 25 hours), so each
    row has the due instant at the date's midnight (``d0``) and at each
    start inside it (``s1``/``d1``, ``s2``/``d2``). Beside each due instant
    the table keeps its 27-byte text (``t0``-``t2``, as a format-5 item holds
    it), formatted here once per day rather than by the database per row.
    """

    table: sa.Table
    count: int
    due_rows: int = 0  # records due when the table was made (the clock's tally), counted up to a batch and one
    also: list[sa.Table] = field(default_factory=list)  # the pass's other temporary tables, dropped with it

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
        extra = (DayValue("t", DUE_TEXT, lambda evaluation: due_text(evaluation.due[state])), *extra)
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
        # Counted only as far as SetPurge.source compares it: a batch and one row more.
        due_rows, lowest, _ = clock_counts.tally(
            clock, conn, planner.table, planner.sql.due(state, as_of), at_most=planner.batch_size + 1
        )
        starts: list[tuple[Any, tuple[Any, ...]]] = []  # (the day's first stored value, (due instant, *extra))
        if lowest is not None:
            day, last = _first_day(lowest, tz), _last_day(clock, dataset, pack, state, as_of)
            cache = _due_cache(ctx.loaded.digest, planner.name)
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
        return cls(table, len(starts), due_rows)

    def joined(self, conn: sa.Connection, source: sa.Table, clock: ClockSQL) -> sa.Join:
        """``source`` with each row's day (outer: a row below the first day gets no due instant, and fails)."""
        stored_date = dialect_for(conn).stored_date(clock.select_due(), clock.kind, clock.value.type)
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
        """Drop the table (and :attr:`also`); a session that is gone took its temporary tables with it."""
        with contextlib.suppress(sa.exc.DBAPIError), conn.begin():
            for table in (self.table, *self.also):
                table.drop(conn, checkfirst=True)


DUE_TEXT = sa.LargeBinary().with_variant(sa.dialects.mysql.VARBINARY(blocks.DUE_SIZE), "mysql", "mariadb")
"""The day table's due text: bytes, so that the databases concatenate it with the pseudonyms as bytes."""


def due_text(instant: dt.datetime | None) -> bytes | None:
    """A due instant as a format-5 item holds it (:func:`retention.ledger.blocks.due_text`), None for none."""
    return None if instant is None else blocks.due_text(instant)


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


_DUE_CACHES: dict[tuple[str, str], DueCache] = {}
"""Per (pack digest, dataset): the evaluator's due instants by clock date, kept between runs of one process."""


def _due_cache(digest: str, dataset: str) -> DueCache:
    """The evaluations of ``dataset``'s days under the pack of ``digest``, shared by the process's runs.

    A day's due instants depend on the date and the pack alone (the cache's
    key in :func:`~retention.engine.evaluate.evaluate_readings`), and the
    digest covers the whole validated pack, so a scheduler's nightly runs
    (and the test suite's hundreds) evaluate each day once, not once per run.
    A few packs are kept; each cache is bounded by the evaluator.
    """
    key = (digest, dataset)
    cache = _DUE_CACHES.pop(key, None)
    if cache is None:
        cache = {}
        while len(_DUE_CACHES) >= 16:
            del _DUE_CACHES[next(iter(_DUE_CACHES))]
    _DUE_CACHES[key] = cache  # last in, last out
    return cache


def _last_day(clock: ClockSQL, dataset: Dataset, pack: Pack, state: str, as_of: dt.datetime) -> dt.date:
    """The last local day worth a row: two days past the latest clock date ``state`` can be due from by ``as_of``.

    The batches select by :meth:`DatasetSQL.due`, which for one plain clock
    is "local date on or before ``last_event_due_by(today)``" (the same
    :class:`~retention.timing.clock.Schedule` call), so no row the run moves
    has a later day: days up to ``as_of`` cost an evaluation each for
    nothing (a 13-month rule: 400 of them every run). Two days past it cover
    a stored date on either side of the local one (west or east of UTC).
    """
    today = local_date(as_of, pack.timezone)
    if clock.clock.is_expiry:  # pragma: no cover - why_not keeps expiry clocks on the per-record path
        return today
    schedule = dataset.schedules(state, pack.financial_year_end)[0]
    return min(today, schedule.last_event_due_by(today) + dt.timedelta(days=2))


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
    # The dialect's row address (Dialect.row_address): each batch is then one statement
    # (set_batches.BatchStatements.in_one_statement).
    address: ColumnElement[Any] | None = None
    _source: DatasetSQL | None = None
    _batches: BatchStatements | None = field(default=None, init=False, repr=False)  # see :meth:`statements`

    @property
    def transition(self) -> str:
        return f"active->{self.state}"

    def source(self, conn: sa.Connection) -> DatasetSQL:
        """The clocks the batch statements compare: the planner's, or the same off the clock's index.

        Each batch takes the keys of the next due records in key order, then
        its items and deletions over that key range. SQLite without
        statistics serves all three from the clock's index when the clock
        has one: every batch then reads every due record still in the table
        and sorts them by key (quadratic: 23 µs per record for the keys and
        as much for the delete at 300k rows against 4.6 at 50k). With more
        than one batch due it walks the key order instead, as plan's samples
        do; a few due records are still found through the index.
        """
        sql = self.planner.sql
        assert sql is not None
        if self._source is None:
            unindexed = self.days.due_rows > self.planner.batch_size and dialect_for(conn).samples_by_key_order
            self._source = _without_clock_index(sql) if unindexed else sql
        return self._source

    def selected(self, conn: sa.Connection) -> ColumnElement[bool]:
        """The active-pass records this pass moves: the planner's own predicate for the first state."""
        return self.planner.reaching(conn, self.source(conn), 1, per_row=True)

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
        if self.address is not None:
            return self.statements().in_one_statement(conn, after)
        if self.cached_batches:
            return self.statements().in_three_statements(conn, after)
        key = planner.key
        selected = self.selected(conn)
        query = sa.select(key).where(selected)
        if after is not None:
            query = query.where(key > after)
        query = dialect_for(conn).for_update(query.order_by(key).limit(planner.batch_size), planner.table)
        last, scanned = self.choose(conn, query, after)
        if not scanned:
            return None
        in_range = [selected, key <= last] + ([key > after] if after is not None else [])
        moved = ledger.append_blocks_written(
            conn, self._draft(), ctx.now(), lambda seq: self._write(conn, seq, in_range), secret=ctx.secret
        )
        counts = {planner.name: {self.transition: moved} if moved else {}}
        return Batch(planner.name, "active", [], scanned=scanned, moved=moved), counts, last

    cached_batches: ClassVar[bool] = True
    """Whether :meth:`batch` runs the three statements built once per run (:meth:`statements`).

    A subclass that overrides :meth:`choose` or :meth:`change` (the archive)
    builds them per batch instead, with the range's ends as values.
    """

    def statements(self) -> BatchStatements:
        """This pass's batches by statements built once per run (:mod:`~retention.engine.set_batches`), kept
        for the pass: they cache its statements, which a new object would build again."""
        if self._batches is None:
            self._batches = BatchStatements(self)
        return self._batches

    def choose(self, conn: sa.Connection, query: sa.Select[Any], after: Any) -> tuple[Any, int]:
        """Lock the batch ``query`` selects (its keys in order); its last key and how many (None, 0 for none)."""
        return dialect_for(conn).last_of_batch(conn, query, self.planner.batch_size)

    def _draft(self) -> ledger_items.BatchItems:
        """The entry's columns other than its items (which the database writes)."""
        ctx, planner = self.ctx, self.planner
        return ledger_items.BatchItems(
            ctx.run_id,
            ctx.loaded.pack.pack,
            ctx.loaded.digest,
            planner.name,
            self.transition,
            self.action,
            planner.dataset.basis_for(self.state),
            ctx.secret,
            [],
        )

    def _key_parameters(self, conn: sa.Connection) -> dict[str, Any]:
        """The execution parameters that give :data:`RUN_KEY` the run's key (never written into a statement)."""
        return dialect_for(conn).key_parameters(RUN_KEY, ledger_items.run_key(self.ctx.secret, self.ctx.run_id))

    def _pseudonym_texts(
        self, conn: sa.Connection
    ) -> tuple[BoundKey, tuple[bytes, bytes], ColumnElement[Any], ColumnElement[Any] | None]:
        """The run's key (:data:`RUN_KEY`), the record and subject prefixes, and the texts a row's pseudonyms key.

        The subject text is NULL for an empty subject (no subject), and None when the dataset has none.
        """
        planner = self.planner
        key = RUN_KEY
        record_text = planner.key if _python_type(planner.key) is str else sa.cast(planner.key, sa.String)
        subject_text: ColumnElement[Any] | None = None
        if planner.subject is not None and _python_type(planner.subject) is int and not dialect_for(conn).keyed_blocks:
            # An integer's text is never empty: no test per row (and MariaDB hashes the integer's digits as they
            # are). SQLite's keyed aggregate keeps the test: an INTEGER column there may hold any text, '' too.
            subject_text = sa.cast(planner.subject, sa.String)
        elif planner.subject is not None:
            # Not nullif(text, ''): under MariaDB's PAD SPACE collations ' ' = '', and a subject of spaces (keyed
            # by the per-record path) would have gone unkeyed. A length is no comparison.
            text = planner.text(conn, planner.subject)
            subject_text = sa.case((sa.func.length(text) == 0, sa.null()), else_=text)
        return key, (f"record\x1f{planner.name}\x1f".encode(), b"subject\x1f"), record_text, subject_text

    def _pseudonyms(
        self,
        conn: sa.Connection,
        texts: tuple[BoundKey, tuple[bytes, bytes], ColumnElement[Any], ColumnElement[Any] | None] | None = None,
    ) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """The record and subject pseudonyms (raw 32 bytes, NULL for no subject) of a source row under the
        run's key, computed by the database; from ``texts`` (:meth:`_pseudonym_texts`) when the caller has them."""
        dialect = dialect_for(conn)
        key, (record_prefix, subject_prefix), record_text, subject_text = texts or self._pseudonym_texts(conn)
        record = dialect.hmac_bytes(key, record_prefix, record_text)
        # Typed: PostgreSQL gives an untyped NULL returned by a CTE the type text, which bytes do not concatenate.
        subject: ColumnElement[Any] = sa.cast(sa.null(), sa.LargeBinary)
        if subject_text is not None:
            subject = sa.case(
                (subject_text.is_(None), sa.null()), else_=dialect.hmac_bytes(key, subject_prefix, subject_text)
            )
        return record, subject

    def _write(self, conn: sa.Connection, seq: int, in_range: list[ColumnElement[bool]]) -> bytes:
        """The block and deletions of the range at entry ``seq``; the block's body as stored (none: no bytes)."""
        insert = self._block_insert(conn, sa.literal(seq, store.SEQ), in_range)
        written = conn.execute(insert, self._key_parameters(conn)).first()
        deleted = self.change(conn, in_range)
        if written is None:
            return self._checked(None, 0, deleted)
        return self._checked(written.body, written.items, deleted)

    def _block_insert(
        self, conn: sa.Connection, seq: ColumnElement[Any], in_range: list[ColumnElement[bool]]
    ) -> sa.Insert:
        """``INSERT INTO`` blocks the block of the range's rows at entry ``seq``, returning its count and body."""
        planner = self.planner
        assert planner.sql is not None
        t = store.ledger_blocks
        dialect = dialect_for(conn)
        texts = self._pseudonym_texts(conn)
        key, prefixes, record_text, subject_text = texts
        # Where the dialect's block aggregate keys the pseudonyms itself, the rows carry their texts.
        no_subject = sa.cast(sa.null(), sa.String)
        keyed = dialect.keyed_blocks
        record, subject = (
            (record_text, no_subject if subject_text is None else subject_text)
            if keyed
            else self._pseudonyms(conn, texts)
        )
        clock = planner.sql.clocks[0]
        rows = dialect.block_rows(
            sa.select(
                record.label("rec"),
                subject.label("subj"),
                self.days.value_at(clock.select_due(), "t").label("due"),
            )
            .select_from(self.days.joined(conn, planner.table, clock))
            .where(*in_range)
        ).subquery("r")
        args = (rows.c.rec, rows.c.subj, rows.c.due)
        body = dialect.keyed_block_body(key, prefixes, *args) if keyed else dialect.block_body(*args)
        block = sa.select(seq, sa.func.count(), body).select_from(rows).having(sa.func.count() > 0)
        # The body comes back from the insert itself (RETURNING the stored row): no read per batch.
        return t.insert().from_select(["entry_seq", "items", "body"], block).returning(t.c["items"], t.c.body)

    def _checked(self, body: Any, items: Any, deleted: Any) -> bytes:
        """The body of a block of ``items`` rows for ``deleted`` rows moved, refused unless all three agree.

        A row the block left out (no due instant, so its bytes were NULL and
        the aggregate skipped them) or a body cut short (MariaDB's
        ``GROUP_CONCAT`` by ``max_allowed_packet``) would otherwise be
        committed as a shorter block: the batch rolls back instead.
        """
        planner = self.planner
        stored = bytes(body or b"")
        items, deleted = int(items or 0), int(deleted or 0)
        if items != deleted:
            raise ConcurrentChangeError(
                f"dataset {planner.name}: {items} items for {deleted} rows deleted in one key range; rolled back"
            )
        if len(stored) != blocks.ITEM_SIZE * items:
            raise LedgerError(
                f"dataset {planner.name}: the block of {items} records is {len(stored)} bytes, not "
                f"{blocks.ITEM_SIZE * items} (a record without a due instant, or a block longer than the database "
                "returns in one value); rolled back"
            )
        return stored


__all__ = ["DUE_TEXT", "SWITCH", "DayValue", "DueDays", "SetPurge", "due_text", "start", "why_not", "why_not_records"]
