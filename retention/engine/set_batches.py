"""The set-based purge's batches by statements built once per run: the one-statement and three-statement forms.

:class:`~retention.engine.set_purge.SetPurge` purges a dataset key range
by key range. Where it can (no subclass overriding its ``choose`` or
``change``), each batch runs SQL built once per run and executed again
with the range's ends and the entry's position as parameters: one
statement over the rows' addresses where the dialect has a row address
(PostgreSQL), else three (the locking read of the range's keys, the
block's insert, the delete). This module holds those statements, their
per-run cache and the batches that run them; the pass itself (the
predicate, the pseudonyms, the block's insert, the checks of a block
against the rows deleted) stays in :mod:`retention.engine.set_purge`, which
this module reaches through :class:`PurgePass` (no import back: the
engine's modules import each other without cycles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine.apply import RunContext
from retention.engine.plan import Batch, DatasetPlanner
from retention.errors import ConcurrentChangeError
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.store import tables as store

T = TypeVar("T")


class DayTable(Protocol):
    """What a batch reads of the pass's table of days (:class:`~retention.engine.set_purge.DueDays`)."""

    @property
    def table(self) -> sa.Table: ...

    def value_at(self, clock: ColumnElement[Any], name: str) -> ColumnElement[Any]: ...


class PurgePass(Protocol):
    """What the batches take from their pass (:class:`~retention.engine.set_purge.SetPurge`)."""

    @property
    def ctx(self) -> RunContext: ...

    @property
    def planner(self) -> DatasetPlanner: ...

    @property
    def days(self) -> DayTable: ...

    @property
    def address(self) -> ColumnElement[Any] | None: ...

    @property
    def transition(self) -> str: ...

    def selected(self, conn: sa.Connection) -> ColumnElement[bool]: ...

    def _pseudonyms(self, conn: sa.Connection) -> tuple[ColumnElement[Any], ColumnElement[Any]]: ...

    def _block_insert(
        self, conn: sa.Connection, seq: ColumnElement[Any], in_range: list[ColumnElement[bool]]
    ) -> sa.Insert: ...

    def _key_parameters(self, conn: sa.Connection) -> dict[str, Any]: ...

    def _draft(self) -> ledger_items.BatchItems: ...

    def _checked(self, body: Any, items: Any, deleted: Any) -> bytes: ...


@dataclass
class BatchStatements:
    """A pass's batches by the statements built once per run (:meth:`in_one_statement`, :meth:`in_three_statements`).

    Owned by its :class:`~retention.engine.set_purge.SetPurge` (one per
    pass): the statements it caches are that pass's, built from its
    predicate and rebuilt whenever the predicate changes.
    """

    purge: PurgePass
    # (the predicate, whether for the first batch, the statements): a pass runs one of the two forms.
    _built: tuple[ColumnElement[bool], bool, Any] | None = None
    _whole_misses: int = 0  # ranges in a row whose locking count found a row the predicate left out

    def in_one_statement(self, conn: sa.Connection, after: Any) -> tuple[Batch, dict[str, dict[str, int]], Any] | None:
        """The batch as one statement over the rows' addresses (:meth:`~retention.dialects.base.Dialect.row_address`).

        ``WITH k AS (the next batch-size due rows: address, key), d AS (DELETE
        ... WHERE address = ANY(k) RETURNING the items' inputs), b AS (INSERT
        INTO blocks SELECT count(*), block_body(...) FROM d RETURNING body)``: the predicate is
        evaluated and the rows read once, where the three-statement batch
        selects, itemises and deletes by it in turn. Items come from the
        deleted rows themselves: a row another session changed after the
        choice is a version the address does not name, skipped by the
        ``DELETE`` and given no item (it stays for a later run). No row lock
        is taken before the ``DELETE``, which locks what it deletes.
        """
        planner, ctx = self.purge.planner, self.purge.ctx
        summary = self._one_statement(conn, first=after is None)
        parameters = {**self.purge._key_parameters(conn), **({"batch_after": after} if after is not None else {})}
        found: dict[str, Any] = {}
        moved = ledger.append_blocks_written(
            conn,
            self.purge._draft(),
            ctx.now(),
            lambda seq: self._fold(conn, summary, {**parameters, "batch_seq": seq}, found),
            secret=ctx.secret,
        )
        if not found["selected"]:
            return None
        counts = {planner.name: {self.purge.transition: moved} if moved else {}}
        batch = Batch(planner.name, "active", [], scanned=found["selected"], moved=moved)
        return batch, counts, found["last"]

    def _one_statement(self, conn: sa.Connection, first: bool) -> sa.Select[Any]:
        """:meth:`in_one_statement`'s statement, built once per run while the batches' predicate stays the same.

        Only the entry's position (``batch_seq``) and where the range starts
        (``batch_after``, absent for the first batch) change from one batch to
        the next; they are parameters. The predicate is the planner's for this
        batch (its probe may add or drop the holds', states' or erasures'
        conditions between batches): the statement is built again whenever it
        differs from the one it was built with (``compare``: structure and
        values). Building it was ~5 ms of Python every 5,000 rows.
        """
        return self._reuse(conn, first, self._build_one_statement)

    def _reuse(
        self, conn: sa.Connection, first: bool, build: Callable[[sa.Connection, ColumnElement[bool], bool], T]
    ) -> T:
        """What ``build`` made for this batch's predicate, kept while the predicate and ``first`` stay the same."""
        selected = self.purge.selected(conn)
        built = self._built
        if built is None or built[1] != first or not built[0].compare(selected):
            built = self._built = (selected, first, build(conn, selected, first))
        statements: T = built[2]
        return statements

    def _build_one_statement(self, conn: sa.Connection, selected: ColumnElement[bool], first: bool) -> sa.Select[Any]:
        """Build :meth:`in_one_statement`'s statement for the rows ``selected`` picks (set_purge's doc)."""
        planner = self.purge.planner
        assert planner.sql is not None and self.purge.address is not None
        key = planner.key
        chosen = sa.select(self.purge.address.label("a"), key.label("k")).where(selected)
        if not first:
            chosen = chosen.where(key > sa.bindparam("batch_after", type_=key.type))
        k = chosen.order_by(key).limit(planner.batch_size).cte("k")
        clock = planner.sql.clocks[0]
        value = clock.select()
        record, subject = self.purge._pseudonyms(conn)
        dialect = dialect_for(conn)
        stored_date = dialect.stored_date(value, clock.kind, clock.value.type)
        d = (
            planner.table.delete()
            .where(self.purge.address == sa.any_(sa.func.array(sa.select(k.c.a).scalar_subquery())))
            .returning(
                planner.key.label("k"),
                record.label("rec"),
                subject.label("subj"),
                value.label("clock"),
                stored_date.label("u"),
            )
            .cte("d")
        )
        days, t = self.purge.days.table, store.ledger_blocks
        due = self.purge.days.value_at(d.c.clock, "t")
        block = (
            sa.select(
                sa.bindparam("batch_seq", type_=store.SEQ),
                sa.func.count(),
                dialect.block_body(d.c.rec, d.c.subj, due),
            )
            .select_from(d.outerjoin(days, days.c.u == d.c.u))
            .having(sa.func.count() > 0)
        )
        b = t.insert().from_select(["entry_seq", "items", "body"], block).returning(t.c["items"], t.c.body).cte("b")
        # One row: the stored body (no row per item to fetch) and the counts.
        return sa.select(
            sa.select(b.c.body).scalar_subquery().label("body"),
            sa.select(b.c["items"]).scalar_subquery().label("items"),
            sa.select(sa.func.count()).select_from(d).scalar_subquery().label("deleted"),
            sa.func.count().label("selected"),
            sa.func.max(k.c.k).label("last"),
        ).select_from(k)

    def _fold(
        self, conn: sa.Connection, summary: sa.Select[Any], parameters: dict[str, Any], found: dict[str, Any]
    ) -> bytes:
        """Run :meth:`in_one_statement`'s statement with ``parameters``; the block's body as stored.

        ``found`` gets how many rows were chosen and the last key chosen
        (where the next batch starts).
        """
        head = conn.execute(summary, parameters).one()
        found.update(selected=int(head.selected), last=head.last)
        return self.purge._checked(head.body, head.items, head.deleted)

    def in_three_statements(
        self, conn: sa.Connection, after: Any
    ) -> tuple[Batch, dict[str, dict[str, int]], Any] | None:
        """The pass's next batch by the statements built once per run: the same three, the range's ends bound per batch.

        Where the dialect has ``whole_range_delete``, every row of the key
        range is also counted, locking it (``FOR UPDATE``: the newest
        versions, and InnoDB locks what it counts; SQLite's batch holds the
        database's one write lock from its first statement, so nothing
        changes the range before the batch commits). Every key chosen lies
        in the range: the predicate leaves out a NULL key (the planner's
        ``included``), which sorts first on SQLite and MariaDB and would
        otherwise be counted in the chosen rows but not in the range, and
        balance a row of the range the predicate left out (review
        ``sqlitep``, must-fix 1). So when that count is the
        number selected, the range holds no row the predicate left out and
        every row of it is locked by this batch (no other session can change
        or delete one until it commits): the items and the delete then take
        the range alone, and the predicate (the impossible-date test, the day
        join) is evaluated once a batch, not three times. What it writes is
        still exactly what it locked: the items and the rows deleted must
        each be as many as the keys selected, and a row that entered the
        range after the count (no gap locks under READ COMMITTED) makes one
        of them more, which rolls the batch back.

        Only while the planner's probe found no hold, later state or open
        erasure request (:attr:`PlannerBase.unfiltered`): otherwise a hold
        committed after the locking read must still stop the delete, which
        only the predicate's anti-joins evaluated again there do (review
        `engine`, finding 1). Where the batch holds the database's one write
        lock (SQLite, ``batch_holds_write_lock``), no hold can be committed
        before the batch commits, and a range whose count matches takes the
        range alone with holds in place too. The count is a locking read, not a snapshot
        one: a snapshot taken at the batch's probe could miss a row
        committed since and count one deleted since, and the range would
        then take a row that is not due. Under READ COMMITTED it keeps the
        range's rows that are not due locked until the batch commits, so
        after :data:`_WHOLE_MISSES` ranges in a row that hold one (keys that
        do not follow time) the run stops counting; on SQLite too, where a
        count that keeps missing (holds or records not due spread over the
        ranges) only costs time.
        """
        planner, ctx = self.purge.planner, self.purge.ctx
        built = self._three_statements(conn, first=after is None)
        parameters = {"batch_after": after} if after is not None else {}
        last, scanned = dialect_for(conn).last_of_batch(conn, built.keys, planner.batch_size, parameters)
        if not scanned:
            return None
        in_range = {**parameters, "batch_last": last}
        items, delete = built.items, built.delete
        # A hold, state or erasure request committed after the locking read needs the predicate again, unless
        # no session can commit one before this batch does (SQLite: the batch holds the write lock).
        settled = planner.unfiltered or dialect_for(conn).batch_holds_write_lock
        if built.whole is not None and settled and self._whole_misses < _WHOLE_MISSES:
            if conn.execute(built.whole.count, in_range).scalar_one() == scanned:
                items, delete = built.whole.items, built.whole.delete
                self._whole_misses = 0
            else:
                self._whole_misses += 1

        def write(seq: int) -> bytes:
            written = conn.execute(items, {**in_range, "batch_seq": seq, **self.purge._key_parameters(conn)}).first()
            deleted = int(conn.execute(delete, in_range).rowcount)
            if delete is not built.delete and deleted != scanned:
                raise ConcurrentChangeError(
                    f"dataset {planner.name}: {deleted} rows deleted in a key range of {scanned} locked due "
                    "records (a row entered the range); rolled back"
                )
            if written is None:
                return self.purge._checked(None, 0, deleted)
            return self.purge._checked(written.body, written.items, deleted)

        moved = ledger.append_blocks_written(conn, self.purge._draft(), ctx.now(), write, secret=ctx.secret)
        counts = {planner.name: {self.purge.transition: moved} if moved else {}}
        return Batch(planner.name, "active", [], scanned=scanned, moved=moved), counts, last

    def _three_statements(self, conn: sa.Connection, first: bool) -> _ThreeStatements:
        """The locking read, the block's insert and the delete, built once per run while the predicate holds.

        As :meth:`_one_statement`: where the range starts (``batch_after``,
        absent for the first batch), where it ends (``batch_last``) and the
        entry's position (``batch_seq``) are parameters, and the statements
        are built again whenever the planner's predicate differs from the
        one they were built with (its probe may add or drop the holds',
        states' or erasures' conditions between batches). Rebuilt every
        batch, they were ~3 % of an SQLite purge's Python calls (2,900 a
        batch; bench/RESULTS.md, branch sqlitedate).
        """
        return self._reuse(conn, first, self._build_three_statements)

    def _build_three_statements(
        self, conn: sa.Connection, selected: ColumnElement[bool], first: bool
    ) -> _ThreeStatements:
        """Build :meth:`_three_statements` for the rows ``selected`` picks (the per-batch forms' very SQL)."""
        planner = self.purge.planner
        key = planner.key
        query = sa.select(key).where(selected)
        in_range = [selected, key <= sa.bindparam("batch_last", type_=key.type)]
        if not first:
            after = key > sa.bindparam("batch_after", type_=key.type)
            query = query.where(after)
            in_range.append(after)
        keys = dialect_for(conn).for_update(query.order_by(key).limit(planner.batch_size), planner.table)
        seq = sa.bindparam("batch_seq", type_=store.SEQ)
        items = self.purge._block_insert(conn, seq, in_range)
        whole = None
        if dialect_for(conn).whole_range_delete:
            bounds = in_range[1:]  # the range's ends alone
            count = sa.select(sa.func.count()).select_from(planner.table).where(*bounds)
            whole = _WholeRange(
                dialect_for(conn).for_update(count, planner.table),
                self.purge._block_insert(conn, seq, bounds),
                planner.table.delete().where(*bounds),
            )
        return _ThreeStatements(keys, items, planner.table.delete().where(*in_range), whole)


_WHOLE_MISSES = 3
"""Ranges in a row holding a row not due after which a run stops counting them (see ``in_three_statements``)."""


@dataclass(frozen=True)
class _ThreeStatements:
    """A three-statement batch's SQL (:meth:`BatchStatements._three_statements`), its range's ends as parameters."""

    keys: sa.Select[Any]  # the next keys in order, locked (batch_after)
    items: sa.Insert  # the range's block (batch_after, batch_last, batch_seq)
    delete: sa.Delete  # the range's rows (batch_after, batch_last)
    whole: _WholeRange | None = None  # where the dialect has whole_range_delete


@dataclass(frozen=True)
class _WholeRange:
    """The range's locking count, and its block and delete by the range alone (no predicate)."""

    count: sa.Select[Any]
    items: sa.Insert
    delete: sa.Delete


__all__ = ["BatchStatements", "DayTable", "PurgePass"]
