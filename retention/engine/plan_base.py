"""The planner's ground: its context, its dataset's table and identities, and the conditions every pass shares.

The conditions are where a record is held (legal holds), asked to be erased
(open erasure requests), in scope (``where``, a shard), already moved (state
rows), or reaching a later state by its own clocks or its leader's. The
planner's other parts build on :class:`PlannerBase`; :class:`retention.engine.plan.DatasetPlanner`
is all of them together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine.evaluate import (
    DueCache,
    dataset_sql,
    reflect_table,
)
from retention.engine.joins import email_expression, subject_expression
from retention.engine.plan_follow import leader_by_email
from retention.engine.plan_values import (
    EngineTables,
    Step,
    Who,
    as_text,
    email_text,
    is_false,
    subject_text,
)
from retention.engine.rowfilter import compile_filter
from retention.policy import LoadedPack
from retention.policy.model import Pack
from retention.store import tables as store
from retention.timing.clock import local_date


class Scope(Protocol):
    """Which of a dataset's records a run may touch beyond its ``where``: one shard's, in a sharded run.

    The planner only asks for the two conditions; how a shard is cut is
    :class:`retention.engine.shards.ShardFilter`'s business, which builds on
    the planners, so the planner must not import it back.
    """

    def source(self, conn: sa.Connection, planner: PlannerBase) -> ColumnElement[bool]: ...

    def state(self, conn: sa.Connection, planner: PlannerBase, rs: Any) -> ColumnElement[bool]: ...


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


class PlannerBase:
    """One dataset at one as-of instant: its table, identities and shared conditions (see the module doc)."""

    def __init__(self, conn: sa.Connection, ctx: PlanContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._dialect = dialect_for(conn)
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
        # Exact (subject_text): built once per dataset and run, as PostgreSQL reads the column's collation for it.
        self._subject_text = subject_text(conn, self.subject) if self.subject is not None else None
        email = email_expression(conn, self.table, self.dataset)
        self.email = email_text(conn, email) if email is not None else None
        follows = self.dataset.follows
        self.leader_column: ColumnElement[Any] | None = None
        if follows is not None:
            if follows.by == "email":
                self.leader_column = leader_by_email(conn, self.ctx.pack, self.dataset, email)
            else:
                self.leader_column = self.table.c[follows.via] if follows.via else self.subject
        self.leader: Self | None = None
        self.followers: list[Self] = []
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
        passes = ["erasure"] if self.dataset.erasure_state and self.identified else []
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
            self._subject_text,
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
        # One round trip for the two or three questions: a set-based batch asks them every 5,000 rows.
        asked = [
            sa.exists().where(h.c.released_at.is_(None), sa.or_(*covers)),
            sa.exists().where(rs.c.dataset == self.name),
        ]
        erasures = bool(self.dataset.erasure_state) and self.identified
        if erasures:
            asked.append(sa.exists().where(er.c.status == "open"))
        answers = conn.execute(sa.select(*asked)).one()
        self._holds, self._states = bool(answers[0]), bool(answers[1])
        self._erasures = erasures and bool(answers[2])

    _holds = _erasures = _states = True  # until probed: every filter on

    @property
    def unfiltered(self) -> bool:
        """The last probe found no hold, no record in a later state and no open erasure request.

        The predicate then leaves out their anti-joins, and a range whose
        every row it selected needs no other test (MariaDB's whole-range
        batch): with any of them, a hold committed after a batch's locking
        read must still stop the batch's delete, which only the predicate
        evaluated again there does.
        """
        return not (self._holds or self._erasures or self._states)

    def text(self, conn: sa.Connection, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return as_text(conn, column)

    def not_held(self, record_key: ColumnElement[Any], who: Who | None) -> ColumnElement[bool]:
        """Not covered by a hold in place (subject by id or e-mail, dataset or record): see :meth:`held`."""
        if not self._holds:
            return sa.true()
        return ~self.held(record_key, who)

    def held(self, record_key: ColumnElement[Any], who: Who | None) -> ColumnElement[bool]:
        """A hold in place covers the record: one uncorrelated test per kind of hold, OR-ed.

        One correlated ``EXISTS`` over the holds with an OR of the covers
        (dataset, record key, each identity) was a scan of the holds in place
        for every row: no database decorrelates an OR, and with thousands of
        subject holds that was rows x holds (bench/held_or.py). Here the
        dataset-wide hold names no outer column (asked once per statement),
        and the record key and each identity are looked up in a set the
        database builds once, as :meth:`open_erasure` does for requests, with
        the same guards (no NULL in a set, a record without the identity not
        in it: two-valued under ``NOT``, as the ``EXISTS`` was). The record
        key keeps the comparison's old collation: on SQLite the left operand's
        column decides, which was the holds' BINARY ``record_key`` and is now
        the source key's cast (a NOCASE key would merge 'A' and 'a'), so it
        takes an explicit BINARY there (``exact_text`` with ``merging=False``
        leaves it as it is elsewhere, where the rules do not depend on order).
        """
        h = self.ctx.tables.holds
        in_place = h.c.released_at.is_(None)
        dataset_wide = sa.exists().where(in_place, h.c.scope == "dataset", h.c.dataset == self.name).correlate(None)
        held_keys = (
            sa.select(h.c.record_key)
            .where(in_place, h.c.scope == "record", h.c.dataset == self.name, h.c.record_key.is_not(None))
            .correlate(None)
        )
        exact_key = self._dialect.exact_text(record_key, merging=False)
        covers = [dataset_wide, sa.and_(record_key.is_not(None), exact_key.in_(held_keys))]
        if who is not None:
            covers += self._named_in(who, h, in_place, h.c.scope == "subject")
        return sa.or_(*covers)

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
        free = ~self.open_erasure(who)
        if self.dataset.erasure_where is None or self.erasure_filter is None:
            return free
        outside = is_false(self.erasure_filter)
        if record_key is not None:
            assert conn is not None
            outside = sa.exists().where(self.text(conn, self.key) == record_key, outside)
        return sa.or_(free, outside)

    def open_erasure(self, who: Who | None) -> ColumnElement[bool]:
        """An open erasure request names the record: one ``IN`` per identity the record has, OR-ed.

        One correlated ``EXISTS (... subject_key = s OR email = e ...)`` was a
        scan of the open requests for every row on MariaDB and SQLite (no
        decorrelation through an OR): rows x requests, about a minute for
        300,000 rows (bench/erasure_or.py). Each ``IN`` here names no outer
        column, so the database builds the set of open requests' values once
        (materialised, hashed, an ephemeral index) and looks each row's value
        up. Two guards keep it two-valued, as the EXISTS was, also under
        ``NOT``: no NULL in the set, and a record without that identity is
        not in it. The request's address takes the record's exact collation
        (``Dialect.exact_text``): on MariaDB a set of another collation than
        the left operand's is probed per row again.
        """
        if who is None:
            return sa.false()
        er = self.ctx.tables.erasure_requests
        probes = self._named_in(who, er, er.c.status == "open", er.c.received_on <= self.today)
        return sa.or_(*probes) if probes else sa.false()

    def _named_in(self, who: Who, table: sa.FromClause, *where: ColumnElement[bool]) -> list[ColumnElement[bool]]:
        """For each identity the record has, whether one of ``table``'s rows meeting ``where`` names it.

        One uncorrelated ``IN`` per identity (:meth:`open_erasure` says why),
        shared by requests and holds so that both name a person alike.
        """
        probes = []
        for mine, theirs in who.pairs(table):
            value = self._exact_email(theirs) if theirs is table.c.email else theirs
            named = sa.select(value).where(theirs.is_not(None), *where).correlate(None)
            probes.append(sa.and_(mine.is_not(None), mine.in_(named)))
        return probes

    def _exact_email(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """An engine ``email`` column in the collation :func:`email_text` gives a record's address."""
        # Cast first, as email_text casts the record's: an engine column in a latin1/utf8mb3 MariaDB database
        # takes no utf8mb4 collation as it is (error 1253; review emailidx).
        return self._dialect.exact_text(self._dialect.engine_comparable(sa.cast(column, store.EMAIL)))

    def included(self) -> ColumnElement[bool]:
        """The source row is one of the dataset's records (its ``where`` holds; docs/rules.md).

        In a sharded run, also one of this shard's records (retention/engine/shards.py).
        A row whose key is NULL is no record (see ``clock_read.NULL_KEYS``):
        plan, run and the per-record passes all leave it out here, and
        :meth:`anomaly_counts` counts it.
        """
        return sa.and_(self.key.is_not(None), self.reach())

    def erasure_included(self) -> ColumnElement[bool]:
        """The source row is within an erasure request's reach (``erasure_where``, default ``where``)."""
        return sa.and_(self.key.is_not(None), self.reach(erasure=True))

    def reach(self, *, erasure: bool = False) -> ColumnElement[bool]:
        """``where`` (or ``erasure_where``) and the shard, NULL keys included.

        A row with a NULL key is no record, yet it may still hold a person's
        data: an erasure request's checks use this, so such a row keeps the
        request open (as it did before NULL keys were left out) rather than
        letting it close as erased with the row intact.
        """
        selected = self.erasure_filter if erasure else self.row_filter
        return sa.and_(sa.true(), *[c for c in (selected, self.in_shard) if c is not None])

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
