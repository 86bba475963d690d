"""The planner's values: steps, moves and batches, the engine's tables, a record's identities.

Plain data shared by the planner's parts (:mod:`retention.engine.plan`) and the
executor; the conversions between a key's stored text and its column type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from retention.dialects import Dialect, dialect_for
from retention.engine.evaluate import DatasetSQL
from retention.policy.model import STATES
from retention.store import tables as store


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
    moved: int = 0  # records a set-based batch moved (it holds no moves; retention.engine.set_purge)

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
    erasure_masks: sa.FromClause = store.erasure_masks
    present: bool = True

    @classmethod
    def absent(cls) -> EngineTables:
        return cls(
            holds=_empty_like(store.holds),
            erasure_requests=_empty_like(store.erasure_requests),
            record_states=_empty_like(store.record_states),
            review_batches=_empty_like(store.review_batches),
            review_items=_empty_like(store.review_items),
            erasure_masks=_empty_like(store.erasure_masks),
            present=False,
        )


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


def subject_text(conn: sa.Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A source subject as text (:func:`as_text`) that equals only the same characters, as Python compares.

    What names a person in the SQL beside the planner's Python matching
    (holds, erasure requests): see :meth:`retention.dialects.Dialect.exact_text`.
    """
    dialect = dialect_for(conn)
    return dialect.exact_text(dialect.key_text(column), dialect.merging_collation(conn, column) is not None)


def email_text(
    conn: sa.Connection | None, value: ColumnElement[Any], beside_source: bool = False
) -> ColumnElement[Any]:
    """A normalised e-mail expression comparable with the engine's ``email`` columns (see :func:`as_text`).

    Equal only to the same characters (:func:`subject_text`), whatever the source column's collation.
    ``beside_source``: compared with another source's address, so always
    with the explicit collation (PostgreSQL: two columns' implicit
    collations, "C" and "POSIX", would conflict).
    """
    text = sa.cast(value, store.EMAIL)
    if conn is None:
        return text
    dialect = dialect_for(conn)
    merging = beside_source or dialect.merging_collation(conn, value) is not None
    return dialect.exact_text(dialect.engine_comparable(text), merging)


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
        parts = [theirs == mine for mine, theirs in self.pairs(table)]
        return sa.or_(*parts) if parts else sa.false()

    def pairs(self, table: sa.FromClause) -> list[tuple[ColumnElement[Any], ColumnElement[Any]]]:
        """(the record's identity, ``table``'s column for it), for each identity the record has.

        Separate, so that a caller can probe ``table`` once per identity
        (``PlannerBase.open_erasure``): a database looks one column up in a
        set it builds once, never an OR of several.
        """
        parts: list[tuple[ColumnElement[Any], ColumnElement[Any]]] = []
        if self.subject is not None:
            parts.append((self.subject, table.c.subject_key))
        if self.email is not None:
            parts.append((self.email, table.c.email))
        if self.email_pseudonym is not None:
            parts.append((self.email_pseudonym, table.c.email_pseudonym))
        return parts

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


@dataclass(frozen=True)
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


def _maker(cls: type[Any]) -> Callable[..., Any]:
    """A keyword constructor of the frozen dataclass ``cls`` that hands the instance its ``__dict__`` at once.

    A batch builds a ``Candidate`` and a ``Move`` per record; a frozen
    dataclass's own ``__init__`` sets each field through
    ``object.__setattr__``, about three times the cost of this. The instance
    made here is the same (equality, hash, ``repr``, ``replace``, and still
    frozen: ``tests/test_quick_evaluate.py`` holds it to the class's own
    constructor). Fields left out take their defaults; an unknown name or a
    missing field without a default raises ``TypeError`` as ``__init__`` would.
    """
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    names = frozenset(f.name for f in fields(cls))
    new, assign = object.__new__, object.__setattr__

    def make(**values: Any) -> Any:
        if values.keys() != names:
            for name, default in defaults.items():
                values.setdefault(name, default)
            if values.keys() != names:
                raise TypeError(f"{cls.__name__}: unknown or missing fields {sorted(values.keys() ^ names)}")
        instance = new(cls)
        assign(instance, "__dict__", values)
        return instance

    return make


new_move: Callable[..., Move] = _maker(Move)
"""``Move(...)`` by keyword, for the planner's per-record loop (see :func:`_maker`)."""
new_candidate: Callable[..., Candidate] = _maker(Candidate)
"""``Candidate(...)`` by keyword, for the planner's per-row loop (see :func:`_maker`)."""
