"""The transitions due at an as-of instant, as data.

``plan`` prints these batches; ``run`` hands the very same batches to the
executor one transaction at a time. Both walk the same generator, so what
plan lists is what run does (SPEC section 7), by construction.

How a record moves is defined once, in docs/rules.md ("How a run decides"):
every reason it has (its own clocks, the delay after its current state, an
erasure request, the leader it follows) gives a due instant per state, and
:func:`advance` walks the lifecycle taking the earliest. The passes below only
*find* records that may move; each record belongs to exactly one pass, so a
dry run that applies nothing counts every record once:

- ``erasure``: records of subjects with an open erasure request;
- one pass per later state (``inactive``, ``archived``...): records in it
  whose delay has run out, or whose leader already sits in a state they
  follow;
- ``active``: active records due by their own clocks (one index range on the
  clock, the bulk of a nightly run);
- ``catchup``: active records of a follower whose leader already sits in a
  followed state, not due by their own clocks;
- records whose leader moves in this run move *with* it, in the leader's
  batch and transaction (children first), and every own pass leaves them out.

For the active pass the SQL decides which records are due and how far
(``reach``); Python only supplies the due instants, and a disagreement is a
bug that stops the batch. The aggregate count of a simple dataset's active
pass counts the very same predicate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from retention.dialects import Dialect, dialect_for
from retention.engine.evaluate import (
    ANOMALIES,
    IGNORED_ROWS,
    DatasetSQL,
    DueCache,
    dataset_sql,
    evaluate_record,
    reflect_table,
)
from retention.engine.joins import email_expression, subject_expression
from retention.engine.order import dataset_order
from retention.engine.rowfilter import compile_filter
from retention.policy import LoadedPack
from retention.policy.model import STATES, Dataset, Pack
from retention.store import tables as store
from retention.timing.clock import Period, Schedule, chain_delay, due_instant, local_date, start_of_day


@dataclass(frozen=True)
class Step:
    """One transition of one record."""

    from_state: str
    to_state: str
    due_at: dt.datetime


@dataclass(frozen=True)
class Move:
    """Everything one record goes through in this run, in order."""

    key: Any  # the native key value of the source table
    record_key: str  # the key as text, as the engine's tables store it
    subject_key: str | None
    steps: tuple[Step, ...]
    clock_at: dt.datetime | None = None  # the governing clock instant, for summaries
    request_id: int | None = None  # the erasure request that moved it
    review_id: int | None = None  # the approved review batch that lets it be purged
    leader_key: str | None = None  # a follower's leader record (kept in the state row)
    since: dt.datetime | None = None  # when it entered its state before this run
    recheck: bool = False  # moved by its own clocks alone: the change re-checks them
    clock_day: dt.date | None = None  # the event its clock marks, for `after_from: clock` (kept in the state row)
    email: str | None = None  # the normalised e-mail address read from the source row (memory only)
    email_pseudonym: str | None = None  # the e-mail's pseudonym its state row kept


@dataclass
class Batch:
    """Records of one dataset leaving one origin: one transaction in ``run``."""

    dataset: str
    origin: str
    moves: list[Move]
    followers: list[Batch] = field(default_factory=list)
    scanned: int = 0  # rows the query returned; fewer than the batch size ends the pass
    review: list[tuple[str, str, dt.datetime]] = field(default_factory=list)  # purges awaiting approval

    def transitions(self) -> Iterator[tuple[str, str, list[Move]]]:
        """(from, to, moves) groups in lifecycle order, for execution and counting."""
        order: dict[tuple[str, str], list[Move]] = {}
        for move in self.moves:
            for step in move.steps:
                order.setdefault((step.from_state, step.to_state), []).append(move)
        # Lifecycle order, whichever move came first: a record entering a state
        # in this batch must be there before another group leaves that state.
        for (from_state, to_state), moves in sorted(order.items(), key=lambda kv: STATES.index(kv[0][0])):
            yield from_state, to_state, moves


def _empty_like(table: sa.Table) -> sa.Subquery:
    """A derived table with ``table``'s name and columns and no rows (valid SQL on every dialect)."""
    columns = [sa.cast(sa.null(), column.type).label(column.name) for column in table.c]
    return sa.select(*columns).where(sa.false()).subquery(table.name)


@dataclass(frozen=True)
class EngineTables:
    """The engine's tables evaluation reads: holds, erasure requests, record states, reviews.

    ``plan`` is a dry run that must work with a read-only role on a database
    where ``retention db upgrade`` never ran: then every one of them reads as
    empty, which is exactly what a first run would find.
    """

    holds: sa.FromClause = store.holds
    erasure_requests: sa.FromClause = store.erasure_requests
    record_states: sa.FromClause = store.record_states
    review_batches: sa.FromClause = store.review_batches
    review_items: sa.FromClause = store.review_items
    present: bool = True

    @classmethod
    def absent(cls) -> EngineTables:
        return cls(
            holds=_empty_like(store.holds),
            erasure_requests=_empty_like(store.erasure_requests),
            record_states=_empty_like(store.record_states),
            review_batches=_empty_like(store.review_batches),
            review_items=_empty_like(store.review_items),
            present=False,
        )


class Scope(Protocol):
    """Which of a dataset's records a run may touch beyond its ``where``: one shard's, in a sharded run.

    The planner only asks for the two conditions; how a shard is cut is
    :class:`retention.engine.shards.ShardFilter`'s business, which builds on
    the planners, so the planner must not import it back.
    """

    def source(self, conn: sa.Connection, planner: DatasetPlanner) -> ColumnElement[bool]: ...

    def state(self, conn: sa.Connection, planner: DatasetPlanner, rs: Any) -> ColumnElement[bool]: ...


@dataclass
class PlanContext:
    """What evaluation needs besides the connection."""

    loaded: LoadedPack
    as_of: dt.datetime
    batch_size: int = 1000
    skipped: set[str] = field(default_factory=set)  # datasets that do not move in this run (guards, failures)
    # Datasets whose passes are over in this run (``run`` only): their records
    # that were due have moved, carrying their followers' records with them.
    finished: set[str] = field(default_factory=set)
    tables: EngineTables = field(default_factory=EngineTables)
    shard: Scope | None = None  # one shard of a sharded run (a ShardFilter, retention/engine/shards.py)

    @property
    def pack(self) -> Pack:
        return self.loaded.pack


def key_to_native(key: ColumnElement[Any], text: str) -> Any:
    """Turn a stored record key back into the source column's type."""
    try:
        python_type = key.type.python_type
    except NotImplementedError:
        return text
    if python_type is int:
        try:
            return int(text)
        except ValueError:
            return None
    return text


def as_text(conn: sa.Connection | None, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A source column as text comparable with the engine's key columns.

    See :meth:`retention.dialects.Dialect.key_text` (on MariaDB/MySQL the
    cast takes an explicit binary collation); without a connection, the
    generic cast.
    """
    return (dialect_for(conn) if conn is not None else Dialect()).key_text(column)


def email_text(conn: sa.Connection | None, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """A normalised e-mail expression comparable with the engine's ``email`` columns (see :func:`as_text`)."""
    text = sa.cast(value, store.EMAIL)
    return dialect_for(conn).engine_comparable(text) if conn is not None else text


@dataclass(frozen=True)
class Who:
    """The identities of records as SQL: the subject id as text, the normalised e-mail, the e-mail's pseudonym.

    A live row has the first two (and, joined with its state row, the third
    too: its address may have been masked since); a state row has the
    subject id and the pseudonym it kept. A hold or an erasure request names
    a record when any identity it carries equals one of the record's.
    """

    subject: ColumnElement[Any] | None = None
    email: ColumnElement[Any] | None = None
    email_pseudonym: ColumnElement[Any] | None = None

    def named_by(self, table: sa.FromClause) -> ColumnElement[bool]:
        """``table`` (holds or erasure requests: subject_key, email, email_pseudonym) names the record."""
        parts = []
        if self.subject is not None:
            parts.append(table.c.subject_key == self.subject)
        if self.email is not None:
            parts.append(table.c.email == self.email)
        if self.email_pseudonym is not None:
            parts.append(table.c.email_pseudonym == self.email_pseudonym)
        return sa.or_(*parts) if parts else sa.false()

    def is_one_of(self, subject_key: str | None, email: str | None, email_pseudonym: str | None) -> ColumnElement[bool]:
        """The record has one of these identities (one request's or hold's)."""
        parts = []
        if self.subject is not None and subject_key is not None:
            parts.append(self.subject == subject_key)
        if self.email is not None and email is not None:
            parts.append(self.email == email)
        if self.email_pseudonym is not None and email_pseudonym is not None:
            parts.append(self.email_pseudonym == email_pseudonym)
        return sa.or_(*parts) if parts else sa.false()

    @property
    def known(self) -> bool:
        return self.subject is not None or self.email is not None or self.email_pseudonym is not None


def _next_states(dataset: Dataset, origin: str) -> list[str]:
    states = dataset.states
    return states[states.index(origin) + 1 :]


def delay_due(
    pack: Pack, dataset: Dataset, target: str, entered: dt.datetime, clock_day: dt.date | None = None
) -> dt.datetime:
    """When ``target`` is due after the previous state was entered at ``entered``.

    ``clock_day``: the event the record's clock marks (``after_from: clock``).
    """
    step = dataset.step_to(target)
    last_kept = local_date(entered, pack.timezone) - dt.timedelta(days=1)
    last_kept = chain_delay(step.after, step.counted_from, last_kept, clock_day)
    # A state entered at an expiry clock's instant, not at a midnight: P0D keeps that instant.
    return max(entered, due_instant(last_kept + dt.timedelta(days=1), pack.timezone))


def delay_condition(
    pack: Pack, dataset: Dataset, target: str, since: Any, clock_day: Any, as_of: dt.datetime
) -> ColumnElement[bool]:
    """State rows (``since``, ``clock_day`` columns) whose delay to ``target`` has run out by ``as_of``.

    The set-based form of :func:`delay_due`: the cutoffs are computed once.
    """
    step = dataset.step_to(target)
    entered = since <= as_of
    previous = sa.and_(since < _delay_cutoff(pack, [step.after], as_of), entered)
    if step.counted_from == "previous":
        return previous
    today = local_date(as_of, pack.timezone)
    last_event = Schedule(step.after).last_event_due_by(today)
    if step.counted_from == "entry":
        # Counted from the entry day itself: one day later than ``previous``.
        return sa.and_(since < start_of_day(last_event + dt.timedelta(days=1), pack.timezone), entered)
    by_clock = sa.and_(clock_day.is_not(None), clock_day <= sa.literal(last_event, sa.Date()), entered)
    return sa.or_(by_clock, sa.and_(clock_day.is_(None), previous))


def _delay_cutoff(pack: Pack, delays: Sequence[Period], as_of: dt.datetime) -> dt.datetime:
    """The ``since`` instant before which the chain of ``delays`` has run out by ``as_of``.

    ``since`` is always the first instant of a local day D; the last state of
    the chain is due on the schedule's due date for the event day D - 1.
    """
    today = local_date(as_of, pack.timezone)
    schedule = Schedule(delays[0], tuple(delays[1:]))
    last_event = schedule.last_event_due_by(today)
    return start_of_day(last_event + dt.timedelta(days=2), pack.timezone)


def steps_from_state(
    pack: Pack,
    dataset: Dataset,
    origin: str,
    since: dt.datetime,
    as_of: dt.datetime,
    clock_day: dt.date | None = None,
) -> tuple[Step, ...]:
    """The chain of transitions due by delays alone for a record that entered ``origin`` at ``since``."""
    return advance(pack, dataset, origin, since, None, None, {}, as_of, clock_day)


def steps_from_active(dataset: Dataset, due: dict[str, dt.datetime], as_of: dt.datetime) -> tuple[Step, ...]:
    """The chain of transitions an active record's own clocks make due (``due`` per state)."""
    steps: list[Step] = []
    current = "active"
    for target in _next_states(dataset, "active"):
        when = due[target]
        if when > as_of:
            break
        steps.append(Step(current, target, when))
        current = target
    return tuple(steps)


def advance(
    pack: Pack,
    dataset: Dataset,
    state: str,
    since: dt.datetime | None,
    own_first: dt.datetime | None,
    erasure: tuple[str, dt.datetime] | None,
    follow: dict[str, dt.datetime],
    as_of: dt.datetime,
    clock_day: dt.date | None = None,
) -> tuple[Step, ...]:
    """Walk a record's lifecycle from ``state``, each state at its earliest due instant (docs/rules.md).

    ``own_first``: the own clocks' due instant for the first state (active
    records); ``erasure``: (target state, instant); ``follow``: follower
    state -> earliest instant a leader state makes it due.
    """
    states = dataset.states
    current, entered = state, since
    steps: list[Step] = []
    erasure_reach = states.index(erasure[0]) if erasure is not None else -1
    for index in range(states.index(state) + 1, len(states)):
        target = states[index]
        dues: list[dt.datetime] = []
        if current == "active":
            if own_first is not None and index == 1:
                dues.append(own_first)
        elif entered is not None:
            dues.append(delay_due(pack, dataset, target, entered, clock_day))
        if erasure is not None and index <= erasure_reach:
            dues.append(erasure[1])
        if target in follow:
            dues.append(follow[target])
        if not dues:
            break
        due = min(dues)
        if due > as_of:
            break
        steps.append(Step(current, target, due))
        current, entered = target, due
    return tuple(steps)


def _as_date(value: Any) -> dt.date | None:
    """A DATE column as read (SQLite may hand back its text)."""
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


def is_false(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition`` is false or unknown (a NULL clock makes a comparison unknown, and NOT keeps it so)."""
    return sa.case((condition, sa.literal(0)), else_=sa.literal(1)) == 1


def _without_clock_index(sql: DatasetSQL) -> DatasetSQL:
    """The same conditions with the clocks wrapped in a no-op unary plus.

    SQLite then cannot use an index on a clock for them, and walks the key
    order instead (its documented way to steer the planner per term).
    """
    clocks = [
        replace(c, value=UnaryExpression(c.value, operator=operators.custom_op("+"), type_=c.value.type))
        for c in sql.clocks
    ]
    return replace(sql, clocks=clocks)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One record found by a pass, with what its reasons need."""

    key: Any
    record_key: str
    subject_key: str | None
    leader_key: str | None
    state: str
    since: dt.datetime | None
    reach: int  # states its own clocks make due (SQL), active records only
    clocks: tuple[Any, ...]  # clock values, read only when reach > 0
    clock_day: dt.date | None = None  # from the state row (after_from: clock)
    email: str | None = None  # normalised e-mail address of the live row
    email_pseudonym: str | None = None  # from the state row
    # Erasure pass: a row outside ``where`` that ``erasure_where`` reaches (issue 26
    # clause 6): the erasure moves it up to ``on_erasure``, no clock, delay or follow.
    outside: bool = False


@dataclass(frozen=True)
class Outcome:
    """A record's state before this run and the steps this run takes it through."""

    state: str
    since: dt.datetime | None
    steps: tuple[Step, ...]


class DatasetPlanner:
    """Evaluates one dataset at one as-of instant, in keyset-paginated batches (see the module doc)."""

    def __init__(self, conn: sa.Connection, ctx: PlanContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.dataset = ctx.pack.datasets[name]
        self.sql = dataset_sql(conn, ctx.pack, name) if self.dataset.keep else None
        self.table: sa.Table = (
            self.sql.table if self.sql else reflect_table(conn, self.dataset.table, self.dataset.schema_)
        )
        self.key = self.table.c[self.dataset.key]
        self.row_filter = compile_filter(conn, self.table, self.dataset)
        # Erasure's reach: erasure_where when the dataset has one, else its records (where).
        self.erasure_filter = (
            compile_filter(conn, self.table, self.dataset, erasure=True)
            if self.dataset.erasure_where is not None
            else self.row_filter
        )
        self.subject = subject_expression(conn, self.table, self.dataset)
        email = email_expression(conn, self.table, self.dataset)
        self.email = email_text(conn, email) if email is not None else None
        follows = self.dataset.follows
        self.leader_column: ColumnElement[Any] | None = None
        if follows is not None:
            self.leader_column = self.table.c[follows.via] if follows.via else self.subject
        self.leader: DatasetPlanner | None = None
        self.followers: list[DatasetPlanner] = []
        self._due_cache: DueCache = {}
        # Memos of pure walks, keyed by what they depend on (a batch repeats few distinct days).
        self._chains: dict[tuple[dt.datetime, ...], tuple[Step, ...]] = {}
        self._walks: dict[tuple[str, dt.datetime | None, dt.datetime | None, dt.date | None], tuple[Step, ...]] = {}
        # A sharded run: this shard's records, by source row and by state row (set by build_planners).
        self.in_shard: ColumnElement[bool] | None = None
        self.state_in_shard: ColumnElement[bool] = sa.true()

    @property
    def batch_size(self) -> int:
        return self.dataset.batch_size or self.ctx.pack.batch_size or self.ctx.batch_size

    @property
    def today(self) -> dt.date:
        return local_date(self.ctx.as_of, self.ctx.pack.timezone)

    def origins(self) -> list[str]:
        """Passes in execution order: erasure, later states (latest first), active, catch-up."""
        passes = ["erasure"] if self.dataset.on_erasure and self.identified else []
        passes += list(reversed(self.dataset.states[1:-1]))
        if self.sql is not None:
            passes.append("active")
        if self.dataset.follows is not None:
            passes.append("catchup")
        return passes

    def is_simple(self) -> bool:
        """No reason but its clocks can move an active record, and SQL alone says how far."""
        return self.dataset.follows is None and not self.followers and not self.dataset.review

    # -- shared conditions ----------------------------------------------
    @property
    def identified(self) -> bool:
        """Whether records name a person (a subject id, an e-mail address, or both)."""
        return self.subject is not None or self.email is not None

    def live_who(self, conn: sa.Connection, joined: bool = False) -> Who | None:
        """The identities of source rows; ``joined``: the query joins their state rows (:meth:`_joined`)."""
        if not self.identified:
            return None
        rs = self.ctx.tables.record_states
        return Who(
            self.text(conn, self.subject) if self.subject is not None else None,
            self.email,
            rs.c.email_pseudonym if joined and self.email is not None else None,
        )

    def state_who(self) -> Who | None:
        """The identities a state row kept."""
        if not self.identified:
            return None
        rs = self.ctx.tables.record_states
        return Who(
            rs.c.subject_key if self.subject is not None else None,
            None,
            rs.c.email_pseudonym if self.email is not None else None,
        )

    def probe(self, conn: sa.Connection) -> None:
        """Note which engine-side filters can match anything right now.

        A filter that cannot match (no hold in place, no open erasure request,
        no record of this dataset in a later state) is left out of the query:
        the result is the same, and the database skips a correlated subquery
        per row, which on a large table is most of the cost.
        """
        h, er, rs = self.ctx.tables.holds, self.ctx.tables.erasure_requests, self.ctx.tables.record_states
        covers = [h.c.dataset == self.name]
        if self.identified:
            covers.append(h.c.scope == "subject")
        self._holds = (
            conn.execute(sa.select(sa.literal(1)).where(h.c.released_at.is_(None), sa.or_(*covers)).limit(1)).first()
            is not None
        )
        self._erasures = (
            bool(self.dataset.on_erasure)
            and self.identified
            and conn.execute(sa.select(sa.literal(1)).where(er.c.status == "open").limit(1)).first() is not None
        )
        self._states = (
            conn.execute(sa.select(sa.literal(1)).where(rs.c.dataset == self.name).limit(1)).first() is not None
        )

    _holds = _erasures = _states = True  # until probed: every filter on

    def text(self, conn: sa.Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return as_text(conn, column)

    def not_held(self, record_key: ColumnElement[Any], who: Who | None) -> ColumnElement[bool]:
        """Not covered by a hold in place (subject by id or e-mail, dataset or record)."""
        if not self._holds:
            return sa.true()
        h = self.ctx.tables.holds
        covers = [
            sa.and_(h.c.scope == "dataset", h.c.dataset == self.name),
            sa.and_(h.c.scope == "record", h.c.dataset == self.name, h.c.record_key == record_key),
        ]
        if who is not None and who.known:
            covers.append(sa.and_(h.c.scope == "subject", who.named_by(h)))
        return ~sa.exists().where(h.c.released_at.is_(None), sa.or_(*covers))

    def no_open_erasure(
        self, who: Who | None, record_key: ColumnElement[Any] | None = None, conn: sa.Connection | None = None
    ) -> ColumnElement[bool]:
        """Records under an open erasure request move in the erasure pass only.

        With ``erasure_where``, only those within its reach: the others are
        not the erasure's and move as usual. ``record_key``: the condition is
        on state rows (the source row is looked up by key; a gone row is
        within reach, as the erasure pass's orphans are).
        """
        if not self._erasures or who is None or not who.known:
            return sa.true()
        free = ~self._open_erasure(who)
        if self.dataset.erasure_where is None or self.erasure_filter is None:
            return free
        outside = is_false(self.erasure_filter)
        if record_key is not None:
            assert conn is not None
            outside = sa.exists().where(self.text(conn, self.key) == record_key, outside)
        return sa.or_(free, outside)

    def _open_erasure(self, who: Who) -> ColumnElement[bool]:
        er = self.ctx.tables.erasure_requests
        return sa.exists().where(who.named_by(er), er.c.status == "open", er.c.received_on <= self.today)

    def included(self) -> ColumnElement[bool]:
        """The source row is one of the dataset's records (its ``where`` holds; docs/rules.md).

        In a sharded run, also one of this shard's records (retention/engine/shards.py).
        """
        conditions = [c for c in (self.row_filter, self.in_shard) if c is not None]
        return sa.and_(*conditions) if conditions else sa.true()

    def erasure_included(self) -> ColumnElement[bool]:
        """The source row is within an erasure request's reach (``erasure_where``, default ``where``)."""
        conditions = [c for c in (self.erasure_filter, self.in_shard) if c is not None]
        return sa.and_(*conditions) if conditions else sa.true()

    def excluded(self) -> ColumnElement[bool]:
        """The source row fails the dataset's ``where`` (false or unknown)."""
        return is_false(self.row_filter) if self.row_filter is not None else sa.false()

    def state_row_included(
        self, conn: sa.Connection, record_key: ColumnElement[Any], *, erasure: bool = False
    ) -> ColumnElement[bool]:
        """A record in a later state may move on: its source row still matches ``where``, or is gone.

        A record whose row stopped matching stays where it is; one whose row
        is gone (archived, then deleted) was a record when it left and goes
        on to the end of its lifecycle. ``erasure``: within erasure's reach
        (``erasure_where``) instead, for an erasure's moves.
        """
        row_filter = self.erasure_filter if erasure else self.row_filter
        if row_filter is None:
            return sa.true()
        return ~sa.exists().where(self.text(conn, self.key) == record_key, is_false(row_filter))

    def not_moved(self, conn: sa.Connection, per_row: bool = False) -> ColumnElement[bool]:
        """Active: the engine has no state row for the record.

        ``per_row``: a probe of the state table's primary key per candidate
        (a batch's query, which stops at the batch size), never a plan that
        reads every state row; counts over the whole table leave the database
        free to join.
        """
        if not self._states:
            return sa.true()
        rs = self.ctx.tables.record_states
        probe = sa.select(sa.literal(1)).where(rs.c.dataset == self.name, rs.c.record_key == self.text(conn, self.key))
        if per_row:
            probe = dialect_for(conn).probe_per_row(probe)
        return ~probe.exists()

    def reaching(self, conn: sa.Connection, sql: DatasetSQL, count: int, per_row: bool = False) -> ColumnElement[bool]:
        """Active records whose own clocks make the first ``count`` states due, not held, not erasing.

        The one predicate of the active pass: batches select with it
        (``per_row``, see :meth:`not_moved`) and plan counts with it.
        """
        targets = _next_states(self.dataset, "active")[:count]
        who = self.live_who(conn)
        return sa.and_(
            *(sql.due(state, self.ctx.as_of) for state in targets),
            self.included(),
            self.not_held(self.text(conn, sql.key), who),
            self.no_open_erasure(who),
            self.not_moved(conn, per_row),
        )

    def _reach(self, conn: sa.Connection, sql: DatasetSQL) -> ColumnElement[Any]:
        """How many states an active record's clocks make due (0 to the lifecycle's length)."""
        targets = _next_states(self.dataset, "active")
        whens = []
        for count in range(len(targets), 0, -1):
            condition = sa.and_(*(sql.due(state, self.ctx.as_of) for state in targets[:count]))
            whens.append((condition, sa.literal(count)))
        return sa.case(*whens, else_=sa.literal(0))

    def _catchup_condition(
        self, conn: sa.Connection, leader_ref: ColumnElement[Any], state: str
    ) -> ColumnElement[bool]:
        """The leader already sits in a state whose follow target lies beyond ``state``."""
        assert self.dataset.follows is not None
        own = self.dataset.states
        parents = [p for p, target in self.follow_reach().items() if own.index(target) > own.index(state)]
        if not parents:
            return sa.false()
        lrs = self.ctx.tables.record_states.alias("leader_state")
        return sa.exists().where(
            lrs.c.dataset == self.dataset.follows.dataset, lrs.c.record_key == leader_ref, lrs.c.state.in_(parents)
        )

    def follow_reach(self) -> dict[str, str]:
        """Leader state -> the furthest own state it makes due (states it passed through count too)."""
        follows = self.dataset.follows
        assert follows is not None
        parent = self.ctx.pack.datasets[follows.dataset]
        own = self.dataset.states
        result: dict[str, str] = {}
        for index, parent_state in enumerate(parent.states[1:], start=1):
            reached = [follows.on[p] for p in parent.states[1 : index + 1] if p in follows.on]
            if reached:
                result[parent_state] = max(reached, key=own.index)
        return result

    # -- fetching candidates ---------------------------------------------
    def _columns(
        self, conn: sa.Connection, with_clocks: bool, reach: ColumnElement[Any] | None, joined: bool = True
    ) -> list[Any]:
        """Key, subject, leader key, state, since, reach and clock values of source rows.

        ``joined``: the query joins the state rows (:meth:`_joined`); without
        them every row is active.
        """
        rs = self.ctx.tables.record_states
        columns: list[Any] = [
            self.key.label("k"),
            (self.text(conn, self.subject) if self.subject is not None else sa.null()).label("s"),
            (self.text(conn, self.leader_column) if self.leader_column is not None else sa.null()).label("lk"),
            (rs.c.state if joined else sa.null()).label("state"),
            (rs.c.since if joined else sa.null()).label("since"),
            (rs.c.clock_day if joined else sa.null()).label("clock_day"),
            (self.email if self.email is not None else sa.null()).label("e"),
            (rs.c.email_pseudonym if joined and self.email is not None else sa.null()).label("ep"),
        ]
        if self.sql is not None and with_clocks:
            reach = reach if reach is not None else self._reach(conn, self.sql)
            columns.append(reach.label("reach"))
            for i, value in enumerate(self.sql.values()):
                columns.append(sa.case((reach > 0, value), else_=sa.null()).label(f"c{i}"))
        else:
            columns.append(sa.literal(0).label("reach"))
        return columns

    def _joined(self, conn: sa.Connection) -> Any:
        rs = self.ctx.tables.record_states
        return self.table.outerjoin(
            rs, sa.and_(rs.c.dataset == self.name, rs.c.record_key == self.text(conn, self.key))
        )

    def _candidates(self, rows: Iterable[Any]) -> list[Candidate]:
        """Candidates from rows of :meth:`_columns` or :meth:`_state_rows` (perhaps with more columns after).

        By position, not by name: a batch makes thousands, and a row's
        mapping view costs more than the rest of the candidate. The first
        nine columns are the same in every query; clock values follow where
        the row has them (a row of another length gets its names looked up).
        """
        clocks = len(self.sql.clocks) if self.sql is not None else 0
        names = ("k", "s", "lk", "state", "since", "clock_day", "e", "ep", "reach")
        clock_names = tuple(f"c{i}" for i in range(clocks))
        layout: tuple[int, tuple[int | None, ...]] | None = None
        result = []
        for row in rows:
            if layout is None or layout[0] != len(row):
                fields = row._fields
                assert fields[: len(names)] == names, fields
                layout = (len(row), tuple(fields.index(n) if n in fields else None for n in clock_names))
            k, s, lk, state, since, clock_day, e, ep, reach = row[:9]
            result.append(
                Candidate(
                    key=k,
                    record_key=str(k),
                    subject_key=s,
                    leader_key=lk,
                    state=state or "active",
                    since=since,
                    reach=int(reach or 0) if state is None else 0,
                    clocks=tuple(None if i is None else row[i] for i in layout[1]),
                    clock_day=_as_date(clock_day),
                    email=e,
                    email_pseudonym=ep,
                )
            )
        return result

    def _state_rows(self, conn: sa.Connection, *conditions: ColumnElement[bool]) -> sa.Select[Any]:
        """State rows of this dataset as candidates (records whose source row may be gone)."""
        rs = self.ctx.tables.record_states
        leader_ref = rs.c.leader_key if self.dataset.follows is not None else sa.null()
        return sa.select(
            rs.c.record_key.label("k"),
            rs.c.subject_key.label("s"),
            leader_ref.label("lk"),
            rs.c.state.label("state"),
            rs.c.since.label("since"),
            rs.c.clock_day.label("clock_day"),
            sa.null().label("e"),
            (rs.c.email_pseudonym if self.email is not None else sa.null()).label("ep"),
            sa.literal(0).label("reach"),
        ).where(rs.c.dataset == self.name, *conditions)

    def _native(self, candidates: list[Candidate]) -> list[Candidate]:
        """State rows carry text keys; give them the source column's type."""
        return [replace(c, key=key_to_native(self.key, c.record_key)) for c in candidates]

    # -- reasons -----------------------------------------------------------
    def _requests(self, conn: sa.Connection, candidates: Sequence[Candidate]) -> dict[str, tuple[int, dt.date]]:
        """Per record key: the open erasure request (lowest id) naming one of its identities, received by today."""
        if not self.dataset.on_erasure:
            return {}
        subjects = sorted({c.subject_key for c in candidates if c.subject_key is not None})
        emails = sorted({c.email for c in candidates if c.email is not None})
        pseudonyms = sorted({c.email_pseudonym for c in candidates if c.email_pseudonym is not None})
        er = self.ctx.tables.erasure_requests
        names = []
        if subjects and self.subject is not None:
            names.append(store.one_of(conn, er.c.subject_key, subjects))
        if emails:
            names.append(store.one_of(conn, er.c.email, emails))
        if pseudonyms:
            names.append(store.one_of(conn, er.c.email_pseudonym, pseudonyms))
        if not names:
            return {}
        rows = conn.execute(
            sa.select(er.c.id, er.c.subject_key, er.c.email, er.c.email_pseudonym, er.c.received_on)
            .where(er.c.status == "open", er.c.received_on <= self.today, sa.or_(*names))
            .order_by(er.c.id)
        ).all()
        by_subject: dict[str, tuple[int, dt.date]] = {}
        by_email: dict[str, tuple[int, dt.date]] = {}
        by_pseudonym: dict[str, tuple[int, dt.date]] = {}
        for row in rows:
            if row.subject_key is not None:
                by_subject.setdefault(row.subject_key, (row.id, row.received_on))
            if row.email is not None:
                by_email.setdefault(row.email, (row.id, row.received_on))
            if row.email_pseudonym is not None:
                by_pseudonym.setdefault(row.email_pseudonym, (row.id, row.received_on))
        first: dict[str, tuple[int, dt.date]] = {}
        for cand in candidates:
            found = []
            if cand.subject_key is not None and self.subject is not None:
                found.append(by_subject.get(cand.subject_key))
            if cand.email is not None:
                found.append(by_email.get(cand.email))
            if cand.email_pseudonym is not None:
                found.append(by_pseudonym.get(cand.email_pseudonym))
            named = [f for f in found if f is not None]
            if named:
                first[cand.record_key] = min(named)
        return first

    def _leader_states(self, conn: sa.Connection, keys: Iterable[str | None]) -> dict[str, tuple[str, dt.datetime]]:
        """The leader's state row (state, since) per leader key."""
        follows = self.dataset.follows
        wanted = sorted({k for k in keys if k is not None})
        if follows is None or not wanted:
            return {}
        rs = self.ctx.tables.record_states
        rows = conn.execute(
            sa.select(rs.c.record_key, rs.c.state, rs.c.since).where(
                rs.c.dataset == follows.dataset, store.one_of(conn, rs.c.record_key, wanted)
            )
        ).all()
        return {row.record_key: (row.state, row.since) for row in rows}

    def follow_dues(self, outcome: Outcome | None) -> dict[str, dt.datetime]:
        """Own state -> earliest instant at which the leader's states make it due."""
        follows = self.dataset.follows
        if follows is None or outcome is None:
            return {}
        parent = self.ctx.pack.datasets[follows.dataset]
        own = self.dataset.states
        entered: list[tuple[str, dt.datetime]] = []
        if outcome.state != "active" and outcome.since is not None:
            entered += [(p, outcome.since) for p in parent.states[1 : parent.states.index(outcome.state) + 1]]
        entered += [(step.to_state, step.due_at) for step in outcome.steps]
        dues: dict[str, dt.datetime] = {}
        for parent_state, when in entered:
            target = follows.on.get(parent_state)  # type: ignore[call-overload]
            if target is None:
                continue
            for state in own[1 : own.index(target) + 1]:
                if state not in dues or when < dues[state]:
                    dues[state] = when
        return dues

    def moves_followers(self, follower: DatasetPlanner, outcome: Outcome) -> bool:
        """Whether ``outcome`` of a leader record carries ``follower``'s records in the leader's batch."""
        return bool(outcome.steps) and self.name not in self.ctx.skipped and bool(follower.follow_dues(outcome))

    def _moves(
        self,
        conn: sa.Connection,
        candidates: list[Candidate],
        leaders: dict[str, Outcome] | None = None,
        check_reach: bool = True,
    ) -> list[Move]:
        """Each candidate's steps from all its reasons (docs/rules.md), in one place.

        ``leaders``: the outcome of each leader record moving in this batch;
        without it a follower's leader is read from its state row (catch-up).
        """
        pack, dataset, as_of = self.ctx.pack, self.dataset, self.ctx.as_of
        requests = self._requests(conn, candidates)
        if leaders is None and self.dataset.follows is not None:
            known = self._leader_states(conn, (c.leader_key for c in candidates))
            leaders = {k: Outcome(state, since, ()) for k, (state, since) in known.items()}
        moves: list[Move] = []
        for cand in candidates:
            own_first: dt.datetime | None = None
            clock_at: dt.datetime | None = None
            clock_day = cand.clock_day
            own_chain: tuple[Step, ...] = ()
            if cand.reach and self.sql is not None and not cand.outside:
                evaluation = evaluate_record(pack, dataset, cand.clocks, as_of, self._due_cache)
                if evaluation.anomaly is None:
                    chain_key = tuple(evaluation.due.values())
                    chain = self._chains.get(chain_key)
                    if chain is None:
                        chain = self._chains[chain_key] = steps_from_active(dataset, evaluation.due, as_of)
                    own_chain = chain
                if check_reach and len(own_chain) != cand.reach:
                    raise AssertionError(
                        f"dataset {self.name}: SQL finds record {cand.record_key!r} due for {cand.reach} state(s), "
                        f"the evaluator for {len(own_chain)} ({evaluation.anomaly or 'dates'}); please report this bug"
                    )
                if own_chain:
                    own_first = own_chain[0].due_at
                    governing = evaluation.readings[evaluation.governing[own_chain[0].to_state]]
                    clock_at = governing.moment(pack.timezone)
                    if governing.day is not None:
                        clock_day = dataset.clock_start(
                            evaluation.governing[own_chain[0].to_state], governing.day, pack
                        )
            request = requests.get(cand.record_key)
            erasure = None
            if request is not None and dataset.on_erasure is not None:
                erasure = (dataset.on_erasure, start_of_day(request[1], pack.timezone))
            follow: dict[str, dt.datetime] = {}
            if leaders is not None and cand.leader_key is not None and not cand.outside:
                follow = self.follow_dues(leaders.get(cand.leader_key))
            if erasure is None and not follow:
                # Pure in these four (pack, dataset and as_of are the planner's): a batch repeats them.
                walk_key = (cand.state, cand.since, own_first, clock_day)
                walk = self._walks.get(walk_key)
                if walk is None:
                    walk = self._walks[walk_key] = advance(
                        pack, dataset, cand.state, cand.since, own_first, None, {}, as_of, clock_day
                    )
                steps = walk
            else:
                steps = advance(pack, dataset, cand.state, cand.since, own_first, erasure, follow, as_of, clock_day)
            if cand.outside:
                # Not a record of the lifecycle: the erasure takes it to on_erasure, no further.
                last = dataset.states.index(dataset.on_erasure or "active")
                steps = tuple(s for s in steps if dataset.states.index(s.to_state) <= last)
            if not steps:
                continue
            by_clock_alone = (
                cand.state == "active"
                and own_first is not None
                and steps[0].due_at == own_first
                and erasure is None
                and steps[0].to_state not in follow
            )
            moves.append(
                Move(
                    key=cand.key,
                    record_key=cand.record_key,
                    subject_key=cand.subject_key,
                    steps=steps,
                    clock_at=clock_at,
                    request_id=request[0] if erasure is not None and request is not None else None,
                    leader_key=cand.leader_key,
                    since=cand.since,
                    recheck=by_clock_alone and steps == own_chain[: len(steps)],
                    clock_day=clock_day,
                    email=cand.email,
                    email_pseudonym=cand.email_pseudonym,
                )
            )
        return moves

    def outcomes(self, conn: sa.Connection, keys: Sequence[str]) -> dict[str, Outcome]:
        """What this run does to the records with these keys (leaders of a follower's batch).

        Evaluated exactly as this dataset's own passes do (held records stay
        put; a dataset skipped in this run moves nothing).
        """
        result: dict[str, Outcome] = {}
        wanted = sorted(set(keys))
        if not wanted:
            return result
        self.probe(conn)
        rs = self.ctx.tables.record_states
        key_text = self.text(conn, self.key)
        held = sa.case(
            (sa.and_(self.not_held(key_text, self.live_who(conn, joined=True)), self.included()), sa.literal(0)),
            else_=sa.literal(1),
        )
        query = (
            sa.select(*self._columns(conn, True, None), held.label("held"))
            .select_from(self._joined(conn))
            .where(store.one_of(conn, key_text, wanted))
        )
        rows = list(conn.execute(query).all())
        found = {str(r.k) for r in rows}
        orphans = [k for k in wanted if k not in found]
        if orphans:
            held_rs = sa.case((self.not_held(rs.c.record_key, self.state_who()), sa.literal(0)), else_=sa.literal(1))
            rows += conn.execute(
                self._state_rows(conn, store.one_of(conn, rs.c.record_key, orphans)).add_columns(held_rs.label("held"))
            ).all()
        candidates = self._candidates(rows)
        is_held = {str(r.k) for r in rows if r.held}
        for cand in candidates:
            result[cand.record_key] = Outcome(cand.state, cand.since, ())
        movable = [c for c in candidates if c.record_key not in is_held and self.name not in self.ctx.skipped]
        leaders = self._leader_outcomes(conn, movable)
        for move in self._moves(conn, movable, leaders, check_reach=False):
            moves = self._cut_for_review(conn, [move], record=False)[0]
            steps = moves[0].steps if moves else ()
            result[move.record_key] = Outcome(result[move.record_key].state, move.since, steps)
        return result

    def _leader_outcomes(self, conn: sa.Connection, candidates: list[Candidate]) -> dict[str, Outcome] | None:
        """For a follower: what this run does to each candidate's leader (None for a non-follower)."""
        if self.leader is None:
            return None
        return self.leader.outcomes(conn, [c.leader_key for c in candidates if c.leader_key is not None])

    def _without_moving_leaders(self, conn: sa.Connection, candidates: list[Candidate]) -> list[Candidate]:
        """Leave out records whose leader moves them in its own batch (they move there, once).

        Once the leader's passes are over (``run``), what it moved has carried
        its followers' records already; its clocks are not read again, so a
        sibling that changed a table they read cannot make this pass differ
        from what plan saw.
        """
        if self.leader is None or not candidates or self.leader.name in self.ctx.finished:
            return candidates
        outcomes = self.leader.outcomes(conn, [c.leader_key for c in candidates if c.leader_key is not None])
        carried = {k for k, o in outcomes.items() if self.leader.moves_followers(self, o)}
        return [c for c in candidates if c.leader_key not in carried]

    # -- the passes ----------------------------------------------------------
    def _active_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Candidate], int, Any]:
        # Active records have no state row (``reaching`` says so), so no join.
        rows = conn.execute(self.active_batch_query(conn, after)).all()
        return self._candidates(rows), len(rows), (rows[-1].k if rows else None)

    def active_batch_query(self, conn: sa.Connection, after: Any) -> sa.Select[Any]:
        """The active pass's batch after key ``after``: due records in key order, at most a batch."""
        assert self.sql is not None
        reach = self._reach(conn, self.sql)
        query = (
            sa.select(*self._columns(conn, True, reach, joined=False))
            .select_from(self.table)
            .where(self.reaching(conn, self.sql, 1, per_row=True))
        )
        if after is not None:
            query = query.where(self.sql.key > after)
        return query.order_by(self.sql.key).limit(self.batch_size)

    def _catchup_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Candidate], int, Any]:
        """Active records whose leader already sits in a followed state (and not due by their clocks)."""
        assert self.leader_column is not None
        key_text = self.text(conn, self.key)
        who = self.live_who(conn)
        conditions = [
            self._catchup_condition(conn, self.text(conn, self.leader_column), "active"),
            self.included(),
            self.not_held(key_text, who),
            self.no_open_erasure(who),
            self.not_moved(conn, per_row=True),
        ]
        if self.sql is not None:
            conditions.append(is_false(self.sql.due(self.dataset.states[1], self.ctx.as_of)))
        query = sa.select(*self._columns(conn, True, None, joined=False)).select_from(self.table).where(*conditions)
        if after is not None:
            query = query.where(self.key > after)
        rows = conn.execute(query.order_by(self.key).limit(self.batch_size)).all()
        return self._candidates(rows), len(rows), (rows[-1].k if rows else None)

    def _state_batch(self, conn: sa.Connection, origin: str, after: str | None) -> tuple[list[Candidate], int, Any]:
        rs = self.ctx.tables.record_states
        target = _next_states(self.dataset, origin)[0]
        due = delay_condition(self.ctx.pack, self.dataset, target, rs.c.since, rs.c.clock_day, self.ctx.as_of)
        if self.dataset.follows is not None:
            due = sa.or_(due, self._catchup_condition(conn, rs.c.leader_key, origin))
        conditions = [
            rs.c.state == origin,
            due,
            self.not_held(rs.c.record_key, self.state_who()),
            self.no_open_erasure(self.state_who(), rs.c.record_key, conn),
            self.state_row_included(conn, rs.c.record_key),
            self.state_in_shard,
        ]
        if after is not None:
            conditions.append(rs.c.record_key > after)
        rows = conn.execute(self._state_rows(conn, *conditions).order_by(rs.c.record_key).limit(self.batch_size)).all()
        return self._native(self._candidates(rows)), len(rows), (rows[-1].k if rows else None)

    def _erasure_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Candidate], int, Any]:
        """Records (live or known only by their state row) of subjects with an open erasure request."""
        who = self.live_who(conn, joined=True)
        assert who is not None
        key_text = self.text(conn, self.key)
        columns = self._columns(conn, True, None)
        separate = self.dataset.erasure_where is not None
        if separate:
            columns.append(sa.case((self.included(), sa.literal(0)), else_=sa.literal(1)).label("ow"))
        query = (
            sa.select(*columns)
            .select_from(self._joined(conn))
            .where(self._open_erasure(who), self.not_held(key_text, who), self.erasure_included())
        )
        if after is not None:
            query = query.where(self.key > after)
        rows = conn.execute(query.order_by(self.key).limit(self.batch_size)).all()
        candidates = self._candidates(rows)
        if separate:
            candidates = [replace(c, outside=bool(r.ow)) for c, r in zip(candidates, rows, strict=True)]
        return candidates, len(rows), (rows[-1].k if rows else None)

    def _erasure_orphans(self, conn: sa.Connection) -> list[Candidate]:
        """Erasing subjects' records whose source row is gone (archived, then deleted)."""
        if not self._keeps_orphans():
            return []
        rs = self.ctx.tables.record_states
        exists = sa.exists().where(self.text(conn, self.key) == rs.c.record_key)
        query = self._state_rows(
            conn,
            self._open_erasure(self.state_who() or Who()),
            self.not_held(rs.c.record_key, self.state_who()),
            ~exists,
            self.state_in_shard,
        ).order_by(rs.c.record_key)
        return self._native(self._candidates(conn.execute(query).all()))

    def _keeps_orphans(self) -> bool:
        """Whether a record of this dataset can outlive its source row (archive, then delete)."""
        return "archived" in self.dataset.states and self.dataset.step_to("archived").then == "delete"

    # -- batches ------------------------------------------------------------
    def next_batch(self, conn: sa.Connection, origin: str, after: Any) -> tuple[Batch | None, Any]:
        """The next batch of ``origin`` after key ``after``, and the key to resume from.

        ``run`` calls this inside the transaction that applies the batch, so
        what is selected and what is changed are one consistent snapshot.
        Followers' records of the leader records this batch moves join it.
        """
        self.probe(conn)
        if origin == "active":
            candidates, scanned, last = self._active_batch(conn, after)
        elif origin == "erasure":
            candidates, scanned, last = self._erasure_batch(conn, after)
            if scanned < self.batch_size and after != "orphans":
                orphans = self._erasure_orphans(conn)
                candidates += orphans
        elif origin == "catchup":
            candidates, scanned, last = self._catchup_batch(conn, after)
        else:
            candidates, scanned, last = self._state_batch(conn, origin, after)
        if not scanned and not candidates:
            return None, None
        candidates = self._without_moving_leaders(conn, candidates)
        moves = self._moves(conn, candidates)
        moves, review = self._cut_for_review(conn, moves)
        batch = Batch(self.name, origin, moves, scanned=scanned, review=review)
        self._add_followers(conn, batch)
        return batch, last

    def _add_followers(self, conn: sa.Connection, batch: Batch) -> None:
        """Attach, recursively, the follower records that move with this batch's records."""
        if not self.followers or self.name in self.ctx.skipped:
            return
        outcomes = {m.record_key: Outcome(m.steps[0].from_state, m.since, m.steps) for m in batch.moves}
        for follower in self.followers:
            carried = {k: o for k, o in outcomes.items() if self.moves_followers(follower, o)}
            if not carried:
                continue
            follow = follower.follower_batch(conn, carried)
            if follow is not None:
                batch.followers.append(follow)

    def follower_batch(self, conn: sa.Connection, leaders: dict[str, Outcome]) -> Batch | None:
        """This dataset's records whose leader records move with ``leaders`` (their outcomes)."""
        assert self.leader_column is not None
        self.probe(conn)
        keys = sorted(leaders)
        key_text = self.text(conn, self.key)
        leader_ref = self.text(conn, self.leader_column)
        who = self.live_who(conn, joined=True)
        query = (
            sa.select(*self._columns(conn, True, None))
            .select_from(self._joined(conn))
            .where(store.one_of(conn, leader_ref, keys), self.not_held(key_text, who), self.included())
            .order_by(self.key)
        )
        candidates = self._candidates(conn.execute(query).all())
        if self._keeps_orphans():
            rs = self.ctx.tables.record_states
            exists = sa.exists().where(key_text == rs.c.record_key)
            candidates += self._native(
                self._candidates(
                    conn.execute(
                        self._state_rows(
                            conn,
                            store.one_of(conn, rs.c.leader_key, keys),
                            self.not_held(rs.c.record_key, self.state_who()),
                            ~exists,
                        ).order_by(rs.c.record_key)
                    ).all()
                )
            )
        if not candidates:
            return None
        moves = self._moves(conn, candidates, leaders, check_reach=False)
        scanned = len(candidates)
        moves, review = self._cut_for_review(conn, moves)
        batch = Batch(self.name, "follow", moves, scanned=scanned, review=review)
        self._add_followers(conn, batch)
        return batch if batch.moves or batch.review or batch.followers else None

    def _cut_for_review(
        self, conn: sa.Connection, moves: list[Move], record: bool = True
    ) -> tuple[list[Move], list[tuple[str, str, dt.datetime]]]:
        """Hold purges back until an operator approved them (datasets with ``review: true``).

        A purge whose record sits in an approved review batch goes ahead; any
        other purge is cut from the record's path and, unless already awaiting
        a decision or rejected, becomes an item of a new review batch.
        """
        if not self.dataset.review:
            return moves, []
        purging = [m.record_key for m in moves if any(s.to_state == "purged" for s in m.steps)]
        if not purging:
            return moves, []
        rb, ri = self.ctx.tables.review_batches, self.ctx.tables.review_items
        decided: dict[str, tuple[str, int]] = {}
        rows = conn.execute(
            sa.select(ri.c.record_key, rb.c.status, rb.c.id)
            .select_from(ri.join(rb, rb.c.id == ri.c.batch_id))
            .where(ri.c.dataset == self.name, store.one_of(conn, ri.c.record_key, purging))
        ).all()
        for row in rows:
            # An approval wins over an older pending or rejected item of the same record.
            if row.record_key not in decided or row.status == "approved":
                decided[row.record_key] = (row.status, row.id)
        kept: list[Move] = []
        review: list[tuple[str, str, dt.datetime]] = []
        for move in moves:
            purge = next((s for s in move.steps if s.to_state == "purged"), None)
            if purge is None:
                kept.append(move)
                continue
            status, batch_id = decided.get(move.record_key, ("", 0))
            if status == "approved":
                kept.append(replace(move, review_id=batch_id))
                continue
            if not status and record:
                review.append((move.record_key, purge.from_state, purge.due_at))
            steps = tuple(s for s in move.steps if s.to_state != "purged")
            if steps:
                kept.append(replace(move, steps=steps))
        return kept, review

    def batches(self, conn: sa.Connection, origin: str) -> Iterator[Batch]:
        """Every batch of ``origin``, for a dry run that writes nothing."""
        after: Any = None
        while True:
            batch, after = self.next_batch(conn, origin, after)
            if batch is None:
                return
            yield batch
            if batch.scanned < self.batch_size:
                return

    # -- one record, for explain ------------------------------------------
    def explain_moves(self, conn: sa.Connection, record_key: str) -> tuple[Outcome | None, list[Move], bool]:
        """(state before this run, the record's steps now, whether a hold covers it)."""
        self.probe(conn)
        outcome = self.outcomes(conn, [record_key]).get(record_key)
        if outcome is None:
            return None, [], False
        rs = self.ctx.tables.record_states
        key_text = self.text(conn, self.key)
        held = (
            conn.execute(
                sa.select(sa.literal(1))
                .select_from(self.table)
                .where(key_text == record_key, sa.not_(self.not_held(key_text, self.live_who(conn))))
            ).first()
            is not None
            or conn.execute(
                sa.select(sa.literal(1)).where(
                    rs.c.dataset == self.name,
                    rs.c.record_key == record_key,
                    sa.not_(self.not_held(rs.c.record_key, self.state_who())),
                )
            ).first()
            is not None
        )
        steps = outcome.steps
        move = Move(key_to_native(self.key, record_key), record_key, None, steps) if steps else None
        return outcome, [move] if move else [], held

    def is_excluded(self, conn: sa.Connection, key: Any) -> bool:
        """Whether the record's source row exists and fails the dataset's ``where``."""
        if self.row_filter is None or key is None:
            return False
        query = sa.select(sa.literal(1)).select_from(self.table).where(self.key == key, self.excluded())
        return conn.execute(query).first() is not None

    # -- counts for plan summaries -----------------------------------------
    def can_aggregate(self) -> bool:
        """Whether the active pass can be summarised by set-based aggregates alone.

        Only its clocks can move an active record (no follows, no followers,
        no review), and it has one clock that SQL orders like time, so the due
        dates are monotone in it and its extremes give the due ranges.
        """
        return (
            self.sql is not None
            and self.is_simple()
            and len(self.sql.clocks) == 1
            and self.sql.clocks[0].kind != "epoch_text"
        )

    def aggregate_active(self, conn: sa.Connection, summary: PlanSummary, sample_size: int = 3) -> None:
        """Add the active pass to ``summary`` from a few set-based queries, no record fetched.

        Counts what ``batches(conn, "active")`` moves, transition by
        transition, with the batches' own predicate (:meth:`reaching`): a
        record reaches the k-th state when its clocks make every state up to
        it due.
        """
        assert self.sql is not None and self.can_aggregate()
        self.probe(conn)
        sql = self.sql
        targets = _next_states(self.dataset, "active")
        per = summary.transitions.setdefault(self.name, {})
        current = "active"
        for index, target in enumerate(targets):
            condition = self.reaching(conn, sql, index + 1)
            count = int(conn.execute(sa.select(sa.func.count()).select_from(sql.table).where(condition)).scalar_one())
            if not count:
                break
            name = f"{current}->{target}"
            per[name] = per.get(name, 0) + count
            for highest in (False, True):
                raw = sql.clocks[0].extreme(conn, sql.table, condition, highest=highest)
                evaluation = evaluate_record(self.ctx.pack, self.dataset, [raw], self.ctx.as_of, self._due_cache)
                if evaluation.anomaly is not None or target not in evaluation.due:
                    raise AssertionError(
                        f"dataset {self.name}: SQL counts records due for {target} but the evaluator finds "
                        f"their clock extreme {evaluation.anomaly or 'not due'}; please report this bug"
                    )
                due = evaluation.due[target]
                _widen(summary.due_range.setdefault(self.name, {}), name, due, due)
                clock_at = evaluation.readings[0].moment(self.ctx.pack.timezone)
                if clock_at is not None:
                    _widen(summary.clock_range.setdefault(self.name, {}), name, clock_at, clock_at)
            samples = summary.samples.setdefault(self.name, {}).setdefault(name, [])
            if sample_size > len(samples):
                # Many due: walking the key order finds the first few at once,
                # where SQLite would sort every due record found by the clock
                # index. Few due: that index is the right way in.
                unindexed = count > 1000 and dialect_for(conn).samples_by_key_order
                source = _without_clock_index(sql) if unindexed else sql
                query = (
                    sa.select(sql.key)
                    .where(self.reaching(conn, source, index + 1))
                    .order_by(sql.key)
                    .limit(sample_size - len(samples))
                )
                samples.extend(str(k) for k in conn.execute(query).scalars())
            current = target

    def summarize(
        self,
        conn: sa.Connection,
        summary: PlanSummary,
        *,
        on_batch: Callable[[Batch], None] | None = None,
        sample_size: int = 3,
    ) -> None:
        """Add every pass of this dataset to ``summary``.

        The active pass of a simple dataset, usually nearly all of a large
        table's moves, is counted by aggregates; a caller that wants each
        batch (``on_batch``) gets the batch path throughout.
        """
        summary.transitions.setdefault(self.name, {})
        for origin in self.origins():
            if origin == "active" and on_batch is None and self.can_aggregate():
                self.aggregate_active(conn, summary, sample_size)
                continue
            for batch in self.batches(conn, origin):
                summary.add(batch, sample_size)
                if on_batch is not None:
                    on_batch(batch)

    def anomaly_counts(self, conn: sa.Connection) -> dict[str, int]:
        """Active records skipped because of their clocks, per category (and related rows ignored)."""
        if self.sql is None:
            return {}
        self.probe(conn)
        counts: dict[str, int] = {}
        for category in ANOMALIES:
            query = (
                sa.select(sa.func.count())
                .select_from(self.sql.table)
                .where(self.sql.anomaly(category, self.ctx.as_of), self.included(), self.not_moved(conn))
            )
            counts[category] = int(conn.execute(query).scalar_one())
        ignoring = [c.ignored_count for c in self.sql.clocks if c.ignored_count is not None]
        if ignoring:
            # invalid_rows: ignore (issue 26): each unreadable related row an
            # active record's clock left out is counted, though none blocks it.
            per_record = sum(ignoring[1:], ignoring[0])
            query = (
                sa.select(sa.func.coalesce(sa.func.sum(per_record), 0))
                .select_from(self.sql.table)
                .where(self.included(), self.not_moved(conn))
            )
            counts[IGNORED_ROWS] = int(conn.execute(query).scalar_one())
        return counts

    def held_back(self, conn: sa.Connection) -> list[dict[str, Any]]:
        """Per hold in place: how many of this dataset's due records it holds back (by their clocks and delays)."""
        h = self.ctx.tables.holds
        holds = conn.execute(sa.select(h).where(h.c.released_at.is_(None)).order_by(h.c.id)).all()
        result = []
        rs = self.ctx.tables.record_states
        for hold in holds:
            if hold.scope in ("dataset", "record") and hold.dataset != self.name:
                continue
            if hold.scope == "subject" and not self.identified:
                continue
            count = 0
            if self.sql is not None:
                key_text = self.text(conn, self.key)
                covered = {
                    "dataset": sa.true(),
                    "record": key_text == (hold.record_key or ""),
                    "subject": self._names(conn, self.live_who(conn), hold),
                }[hold.scope]
                query = (
                    sa.select(sa.func.count())
                    .select_from(self.table)
                    .where(
                        self.sql.due(self.dataset.states[1], self.ctx.as_of),
                        self.included(),
                        ~sa.exists().where(rs.c.dataset == self.name, rs.c.record_key == key_text),
                        covered,
                    )
                )
                count += int(conn.execute(query).scalar_one())
            for origin in self.dataset.states[1:-1]:
                target = _next_states(self.dataset, origin)[0]
                due = delay_condition(self.ctx.pack, self.dataset, target, rs.c.since, rs.c.clock_day, self.ctx.as_of)
                covered_rs = {
                    "dataset": sa.true(),
                    "record": rs.c.record_key == (hold.record_key or ""),
                    "subject": self._names(conn, self.state_who(), hold),
                }[hold.scope]
                query = sa.select(sa.func.count()).where(
                    rs.c.dataset == self.name,
                    rs.c.state == origin,
                    due,
                    covered_rs,
                    self.state_row_included(conn, rs.c.record_key),
                    self.state_in_shard,
                )
                count += int(conn.execute(query).scalar_one())
            if count:
                result.append(
                    {
                        "hold_id": hold.id,
                        "scope": hold.scope,
                        "dataset": self.name,
                        "count": count,
                        "reason": hold.reason,
                    }
                )
        return result

    def table_rows(self, conn: sa.Connection) -> int:
        """The dataset's population: its source rows, plus archived records whose row is gone.

        With ``erasure_where`` the rows an erasure reaches count too: they are what it may move.
        """
        reach = self.included()
        if self.dataset.erasure_where is not None:
            reach = sa.or_(reach, self.erasure_included())
        total = int(conn.execute(sa.select(sa.func.count()).select_from(self.table).where(reach)).scalar_one())
        if self._keeps_orphans():
            rs = self.ctx.tables.record_states
            total += int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        rs.c.dataset == self.name, rs.c.state == "archived", self.state_in_shard
                    )
                ).scalar_one()
            )
        return total

    def _names(self, conn: sa.Connection, who: Who | None, named: Any) -> ColumnElement[bool]:
        """``who`` has one of the identities of ``named`` (a hold's or request's row: subject_key, email, pseudonym)."""
        if who is None:
            return sa.false()
        return who.is_one_of(
            named.subject_key if self.subject is not None else None,
            getattr(named, "email", None),
            getattr(named, "email_pseudonym", None),
        )

    def knows_subject(self, conn: sa.Connection, named: Any) -> bool:
        """Whether any record of this dataset (live, or known by its state row) belongs to the person ``named``.

        ``named``: a request's identities (``subject_key``, ``email``, ``email_pseudonym``).
        """
        if not self.identified:
            return False
        live = sa.select(sa.literal(1)).select_from(self.table).where(self._names(conn, self.live_who(conn), named))
        if conn.execute(live.limit(1)).first() is not None:
            return True
        rs = self.ctx.tables.record_states
        known = sa.select(sa.literal(1)).where(rs.c.dataset == self.name, self._names(conn, self.state_who(), named))
        return conn.execute(known.limit(1)).first() is not None

    def pending_for_subject(self, conn: sa.Connection, named: Any, include_held: bool = True) -> bool:
        """Whether a record of the person ``named`` still sits before this dataset's erasure state."""
        target = self.dataset.on_erasure
        if target is None or not self.identified:
            return False
        rs = self.ctx.tables.record_states
        before = self.dataset.states[1 : self.dataset.states.index(target)]
        who = self.live_who(conn, joined=True)
        key_text = self.text(conn, self.key)
        conditions = [
            self._names(conn, who, named),
            sa.or_(rs.c.state.is_(None), rs.c.state.in_(before)),
            self.erasure_included(),
        ]
        if not include_held:
            conditions.append(self.not_held(key_text, who))
        query = sa.select(sa.literal(1)).select_from(self._joined(conn)).where(*conditions).limit(1)
        if conn.execute(query).first() is not None:
            return True
        if self._keeps_orphans() and before:
            orphan = sa.select(sa.literal(1)).where(
                rs.c.dataset == self.name, self._names(conn, self.state_who(), named), rs.c.state.in_(before)
            )
            return conn.execute(orphan.limit(1)).first() is not None
        return False


def build_planners(conn: sa.Connection, ctx: PlanContext) -> dict[str, DatasetPlanner]:
    """One planner per dataset, in execution order, followers attached to their leader."""
    planners = {name: DatasetPlanner(conn, ctx, name) for name in dataset_order(conn, ctx.pack)}
    for planner in planners.values():
        follows = planner.dataset.follows
        if follows is not None:
            leader = planners[follows.dataset]
            planner.leader = leader
            leader.followers.append(planner)
    if ctx.shard is not None:
        for planner in planners.values():
            planner.in_shard = ctx.shard.source(conn, planner)
            planner.state_in_shard = ctx.shard.state(conn, planner, ctx.tables.record_states)
    return planners


@dataclass
class PlanSummary:
    """What plan prints: per dataset and transition counts, due and clock ranges, samples;
    anomalies; what holds hold back; and the change since the previous plan."""

    pack_id: str
    pack_digest: str
    as_of: dt.datetime
    transitions: dict[str, dict[str, int]] = field(default_factory=dict)
    anomalies: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    due_range: dict[str, dict[str, tuple[dt.datetime, dt.datetime]]] = field(default_factory=dict)
    clock_range: dict[str, dict[str, tuple[dt.datetime, dt.datetime]]] = field(default_factory=dict)
    held_back: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[str, Any] | None = None  # {"run_id", "as_of", "counts"} of the last plan
    awaiting_review: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # dropped whole, per dataset
    notes: list[str] = field(default_factory=list)  # what the reader should know about how this plan was made

    def add(self, batch: Batch, sample_size: int = 3) -> None:
        for follower in batch.followers:
            self.add(follower, sample_size)
        if batch.review:
            self.awaiting_review[batch.dataset] = self.awaiting_review.get(batch.dataset, 0) + len(batch.review)
        per = self.transitions.setdefault(batch.dataset, {})
        samples = self.samples.setdefault(batch.dataset, {})
        ranges = self.due_range.setdefault(batch.dataset, {})
        clocks = self.clock_range.setdefault(batch.dataset, {})
        for from_state, to_state, moves in batch.transitions():
            name = f"{from_state}->{to_state}"
            per[name] = per.get(name, 0) + len(moves)
            keys = samples.setdefault(name, [])
            keys.extend(m.record_key for m in moves[: max(0, sample_size - len(keys))])
            dues = [s.due_at for m in moves for s in m.steps if s.to_state == to_state]
            _widen(ranges, name, min(dues), max(dues))
            seen = [m.clock_at for m in moves if m.clock_at is not None]
            if seen:
                _widen(clocks, name, min(seen), max(seen))

    def total(self) -> int:
        return sum(sum(v.values()) for v in self.transitions.values())

    def delta(self, dataset: str, transition: str) -> tuple[int | None, int | None]:
        """(count in the previous plan, change since then); None without a previous plan."""
        if self.previous is None:
            return None, None
        before = self.previous["counts"].get(dataset, {}).get(transition, 0)
        return before, self.transitions.get(dataset, {}).get(transition, 0) - before

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per dataset and transition (datasets with nothing due get one row)."""
        result = []
        names = list(self.transitions) + [n for n in self.awaiting_review if n not in self.transitions]
        if self.previous:
            names += [n for n in self.previous["counts"] if n not in names]
        for dataset in names:
            anomalies = self.anomalies.get(dataset, {})
            held = sum(h["count"] for h in self.held_back if h["dataset"] == dataset)
            base = {
                "dataset": dataset,
                "anomalies": ", ".join(f"{k} {v}" for k, v in anomalies.items() if v),
                "held_back": held or None,
                "awaiting_review": self.awaiting_review.get(dataset) or None,
            }
            transitions = dict(self.transitions.get(dataset, {}))
            for name in (self.previous or {}).get("counts", {}).get(dataset, {}):
                transitions.setdefault(name, 0)
            if not transitions:
                result.append({**base, "transition": "-", "count": 0})
            for name, count in transitions.items():
                due = self.due_range.get(dataset, {}).get(name)
                clock = self.clock_range.get(dataset, {}).get(name)
                before, change = self.delta(dataset, name)
                result.append(
                    {
                        **base,
                        "transition": name,
                        "count": count,
                        "due_from": due[0] if due else None,
                        "due_to": due[1] if due else None,
                        "clock_from": clock[0] if clock else None,
                        "clock_to": clock[1] if clock else None,
                        "sample_keys": " ".join(self.samples.get(dataset, {}).get(name, [])),
                        "previous": before,
                        "change": change,
                    }
                )
        return result

    def as_dict(self) -> dict[str, Any]:
        def enc(value: Any) -> Any:
            return value.isoformat() if isinstance(value, dt.datetime) else value

        datasets: dict[str, Any] = {}
        for row in self.rows():
            entry = datasets.setdefault(
                row["dataset"],
                {
                    "transitions": {},
                    "anomalies": self.anomalies.get(row["dataset"], {}),
                    "held_back": [h for h in self.held_back if h["dataset"] == row["dataset"]],
                },
            )
            if row["transition"] != "-":
                entry["transitions"][row["transition"]] = {
                    k: enc(row[k])
                    for k in (
                        "count",
                        "due_from",
                        "due_to",
                        "clock_from",
                        "clock_to",
                        "previous",
                        "change",
                    )
                } | {"samples": self.samples.get(row["dataset"], {}).get(row["transition"], [])}
        return {
            "pack": self.pack_id,
            "pack_digest": self.pack_digest,
            "as_of": self.as_of.isoformat(),
            "total": self.total(),
            "previous_plan": (
                {"run_id": self.previous["run_id"], "as_of": enc(self.previous["as_of"])} if self.previous else None
            ),
            "datasets": datasets,
            "partitions_to_drop": self.partitions,
            "notes": self.notes,
        }


def _widen(
    ranges: dict[str, tuple[dt.datetime, dt.datetime]],
    name: str,
    low: dt.datetime,
    high: dt.datetime,
) -> None:
    if name in ranges:
        low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
    ranges[name] = (low, high)


def iter_plan(conn: sa.Connection, ctx: PlanContext) -> Iterator[Batch]:
    """Every batch the run would execute, without writing anything."""
    for planner in build_planners(conn, ctx).values():
        for origin in planner.origins():
            yield from planner.batches(conn, origin)


__all__ = [
    "Batch",
    "DatasetPlanner",
    "EngineTables",
    "Move",
    "PlanContext",
    "PlanSummary",
    "Step",
    "advance",
    "as_text",
    "build_planners",
    "iter_plan",
    "key_to_native",
    "steps_from_active",
    "steps_from_state",
]
