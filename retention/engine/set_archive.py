"""The intermediate archive of a plain dataset as set-based SQL: ``active -> archived``, then the row deleted.

The per-record path (:mod:`retention.engine.apply`) fetches each candidate,
walks its lifecycle in Python, computes the payload's own purge instant per
record and inserts one state row per record. Every one of those values is a
function of the clock's local day, so this module computes them once per day
(in :class:`~retention.engine.set_purge.DueDays`, by the same evaluator and
lifecycle walk the per-record path uses) and lets the database do the rest,
per key range, in one transaction:

- the payloads by ``INSERT INTO retention_archive SELECT``: the declared
  columns as JSON built by the database
  (:meth:`~retention.dialects.base.Dialect.json_text_object`), the same
  expression the per-record path's same-database copy already used, so the
  stored payload is byte for byte today's; any payload already kept for one
  of the range's records is replaced, as there;
- the state rows by ``INSERT ... SELECT`` (state ``archived``, since the due
  instant, the clock's event day for ``after_from: clock``);
- the items, their leaves and the chained entry by
  :class:`~retention.engine.set_purge.SetPurge` (not copied: called);
- the ``DELETE`` of the source rows by the batch's keys.

Payloads, state rows and deletions all go by the batch's keys, which the
locking read of the range writes into a temporary table (``k`` the source's
key, of its very type and collation, ``t`` its text as stored; see
:func:`_batch_keys`): they never leave the database, and the three counts
must agree with the items' or the batch rolls back.

Selected are the records whose clocks make ``archived`` due and not
``purged`` (the planner's reach of exactly one state): a record due for both
takes the per-record pass that follows, which moves it through both states
in one batch as before. Days on which the per-record walk would differ from
the clocks' chain are refused up front (the whole pass stays per record), so
the set-based pass moves exactly what the per-record one would.

Kept per record, and logged with the reason (``archive_per_record``): a
separate archive database (no transaction spans the two, no ``INSERT ...
SELECT`` across them); payloads sealed under per-bucket data keys (AES-GCM
in Python, :mod:`retention.engine.shred`: the database never sees the key);
``then: anonymise`` (the masks are keyed in Python); and whatever
:func:`~retention.engine.set_purge.why_not_records` refuses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa
import structlog
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine import set_purge
from retention.engine.apply import RunContext
from retention.engine.archive import SameDatabaseArchive
from retention.engine.evaluate import RecordEvaluation
from retention.engine.lifecycle import advance, steps_from_active, steps_from_state
from retention.engine.plan import DatasetPlanner
from retention.engine.statistics import note_changed
from retention.errors import ConcurrentChangeError
from retention.store import tables as store

log = structlog.get_logger("retention")

_FAR = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def applies(planner: DatasetPlanner) -> bool:
    """Whether the dataset's first step is the archive (the case this module may take)."""
    states = planner.dataset.states
    return len(states) > 1 and states[1] == "archived" and planner.dataset.step_to("archived").action == "archive"


def why_not(conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner) -> str | None:
    """Why ``planner``'s archive cannot run as set-based SQL, or None when it can."""
    if not set_purge.enabled():
        return f"turned off ({set_purge.SWITCH}=0)"
    if not dialect_for(conn).set_based_items:
        return "this database does not compute ledger items"
    dataset = planner.dataset
    if not applies(planner):
        return "its first step is not an archive"
    if dataset.step_to("archived").then != "delete":
        return "its archive keeps the source row (masks are keyed in Python)"
    if not isinstance(ctx.archive, SameDatabaseArchive):
        return "the archive is another database (no transaction or INSERT ... SELECT spans both)"
    if ctx.archive_keys is not None:
        return "its payloads are sealed under per-bucket data keys (encrypted in Python)"
    return set_purge.why_not_records(planner)


class _Walk:
    """The per-record path's lifecycle walk for one day, refused when it would differ from the clocks' chain."""

    def __init__(self, ctx: RunContext, planner: DatasetPlanner) -> None:
        self.ctx, self.planner = ctx, planner
        self.differs: list[dt.datetime] = []

    def clock_day(self, evaluation: RecordEvaluation) -> dt.date | None:
        """The event the clock marks (``after_from: clock``), as :meth:`PlannerReasons.moves` keeps it."""
        rule = evaluation.governing["archived"]
        day = evaluation.readings[rule].day
        return None if day is None else self.planner.dataset.clock_start(rule, day, self.ctx.loaded.pack)

    def purge_due(self, evaluation: RecordEvaluation) -> dt.datetime | None:
        """When the payload's own period ends (:func:`retention.engine.apply._purge_due`), None if never.

        Also checks that the per-record path's walk from ``active`` (``advance``)
        takes as many steps as the clocks' chain (what the SQL reach counts):
        a day where they differ is noted and the pass refused (see :func:`start`).
        """
        pack, dataset, as_of = self.ctx.loaded.pack, self.planner.dataset, self.ctx.as_of
        since = evaluation.due["archived"]
        clock_day = self.clock_day(evaluation)
        chain = steps_from_active(dataset, evaluation.due, as_of)
        if chain:
            walk = advance(pack, dataset, "active", None, chain[0].due_at, None, {}, as_of, clock_day)
            if len(walk) != len(chain):
                self.differs.append(since)
        if "purged" not in dataset.states:
            return None
        steps = steps_from_state(pack, dataset, "archived", since, _FAR, clock_day)
        return steps[0].due_at if steps else None


def start(conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner) -> SetArchive | None:
    """The set-based archive of ``planner``'s active pass, or None (the per-record path; the log says why)."""
    reason = why_not(conn, ctx, planner)
    if reason is None:
        dialect_for(conn).prepare_items(conn)
        walk = _Walk(ctx, planner)
        extra = (
            set_purge.DayValue("p", store.UTCDateTime, walk.purge_due),
            set_purge.DayValue("c", sa.Date, walk.clock_day),
        )
        with conn.begin():
            days = set_purge.DueDays.create(conn, ctx, planner, "archived", extra)
            keys, key_table = _batch_keys(conn, planner)
            days.also.append(keys)
        if not walk.differs:
            # key_table: MariaDB/MySQL's engine for the batch's keys (MyISAM, or the default where refused).
            log.info("archive_set_based", dataset=planner.name, days=days.count, run_id=ctx.run_id, **key_table)
            return SetArchive(ctx, planner, days, "archived", "archive", batch_keys=keys)
        days.drop(conn)
        reason = "its lifecycle walk and its clocks' chain differ on some day"
    log.info("archive_per_record", dataset=planner.name, reason=reason, run_id=ctx.run_id)
    return None


def _batch_keys(conn: sa.Connection, planner: DatasetPlanner) -> tuple[sa.Table, dict[str, Any]]:
    """The temporary table of a batch's keys (``k``, as the source holds them) and their text (``t``, as stored).

    Payloads, state rows and deletions go by the batch's keys: fetched into
    Python and sent back as three lists of 5,000 parameters, they were a
    quarter of a batch on MariaDB (the fetch decoded in Python, each list
    compiled and escaped); written here by ``INSERT ... SELECT`` they never
    leave the database. ``k`` is created from the source's key itself
    (:meth:`~retention.dialects.base.Dialect.key_table`): its type and
    collation are the source's, so comparing them is never a mix of two.
    Also what the log says about the table (MariaDB/MySQL: its engine), so
    that an operator can tell which engine a run's key table got.
    """
    name = f"{store.PREFIX}batch_keys"
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("k", planner.key.type),
        sa.Column("t", store.archive.c.record_key.type),
        prefixes=["TEMPORARY"],
    )
    table.drop(conn, checkfirst=True)
    return table, dialect_for(conn).key_table(conn, name, planner.key, store.archive.c.record_key.type)


@dataclass
class SetArchive(set_purge.SetPurge):
    """One dataset's archive pass, batch by batch: payloads, state rows and deletions by ``INSERT ... SELECT``."""

    cached_batches: ClassVar[bool] = False  # its choose and change take the range's ends as values

    batch_keys: sa.Table | None = None  # the batch's keys (:func:`_batch_keys`), created by :func:`start`
    _bounds: list[ColumnElement[bool]] = field(default_factory=list, init=False)  # the range :meth:`choose` found

    def choose(self, conn: sa.Connection, query: sa.Select[Any], after: Any) -> tuple[Any, int]:
        """The batch's keys (selected and locked by ``query``) written into :attr:`batch_keys`: its last and count."""
        planner, keys = self.planner, self.batch_keys
        assert keys is not None, "SetArchive needs its batch_keys table (set_archive.start creates it)"
        # Emptied here, first thing in the batch's transaction: MariaDB/MySQL's key table is MyISAM, which a
        # rollback does not restore, so a failed batch's keys would otherwise reach its retry (emptied after a
        # commit, say). tests/test_set_archive.py injects a deadlock to pin it.
        conn.execute(keys.delete())
        conn.execute(keys.insert().from_select(["k", "t"], query.add_columns(planner.text(conn, planner.key))))
        # The last in the source's order, as the locking read took them: the range's end for items and deletes.
        scanned, last = conn.execute(dialect_for(conn).listed_last(planner.key, keys.c.k)).one()
        if not scanned:
            return None, 0
        key = planner.key
        self._bounds = [key <= last] + ([key > after] if after is not None else [])
        return last, int(scanned)

    def selected(self, conn: sa.Connection) -> ColumnElement[bool]:
        """Due for ``archived`` and not for ``purged``: exactly the reach-1 records of the plan."""
        planner = self.planner
        assert planner.sql is not None
        reach_one = super().selected(conn)
        if "purged" not in planner.dataset.states:
            return reach_one
        return sa.and_(reach_one, sa.not_(planner.sql.due("purged", self.ctx.as_of)))

    def change(self, conn: sa.Connection, in_range: list[ColumnElement[bool]]) -> int:
        """Payloads and state rows of the range, then its rows deleted: all three counts must agree."""
        planner, ctx = self.planner, self.ctx
        assert planner.sql is not None
        dialect = dialect_for(conn)
        clock = planner.sql.clocks[0].select_due()
        source = self.days.joined(conn, planner.table, planner.sql.clocks[0])
        name = sa.cast(sa.literal(planner.name, sa.String), sa.String)
        key_text = planner.text(conn, planner.key)
        archive, rs = store.archive, store.record_states
        # By the batch's keys (selected and locked by the range's predicate, which the items took): a probe of
        # the source's key per row, not the predicate again; the counts must agree with the items' or the
        # batch rolls back. Its payloads, state rows and deletions are therefore the same records.
        keys = self.batch_keys
        assert keys is not None
        mine = sa.and_(*self._bounds, planner.key.in_(sa.select(keys.c.k)))
        # Replaced, as the per-record copy does: a payload left for an active record is never kept beside the new.
        this_dataset = [archive.c.dataset == planner.name]
        conn.execute(dialect.delete_listed(archive, this_dataset, archive.c.record_key, keys.c.t))
        instant = archive.c.archived_at.type
        now = sa.literal(ctx.now(), instant)
        # No CAST on SQLite, where DATETIME has numeric affinity (see apply._archive_in_sql).
        archived_at = sa.type_coerce(now, instant) if dialect.datetimes_as_text else sa.cast(now, instant)
        run_id = sa.cast(sa.literal(ctx.run_id, sa.String), sa.String)
        payload = dialect.json_text_object([(c, planner.table.c[c]) for c in sorted(self._columns())])
        payloads = (
            sa.select(name, key_text, payload, archived_at, self.days.value_at(clock, "p"), run_id)
            .select_from(source)
            .where(mine)
        )
        copied = conn.execute(
            archive.insert()
            .from_select(["dataset", "record_key", "payload", "archived_at", "purge_due_at", "run_id"], payloads)
            .execution_options(preserve_rowcount=True)
        ).rowcount
        subject: ColumnElement[Any] = planner.text(conn, planner.subject) if planner.subject is not None else sa.null()
        states = (
            sa.select(
                name,
                key_text,
                sa.literal("archived", sa.String),
                self.days.due_at(clock),
                subject,
                run_id,
                sa.null(),
                self.days.value_at(clock, "c"),
                sa.null(),
            )
            .select_from(source)
            .where(mine)
        )
        columns = [
            "dataset", "record_key", "state", "since", "subject_key", "run_id", "leader_key", "clock_day",
            "email_pseudonym",
        ]  # fmt: skip
        recorded = conn.execute(
            rs.insert().from_select(columns, states).execution_options(preserve_rowcount=True)
        ).rowcount
        # Not by the range's predicate, which no longer holds once the state rows are in (a probe of the state
        # rows here was planned from the empty table's statistics in a run's first batch: 15 s for 5,000 rows).
        deleted = conn.execute(dialect.delete_listed(planner.table, self._bounds, planner.key, keys.c.k)).rowcount
        if not (copied == recorded == deleted):
            raise ConcurrentChangeError(
                f"dataset {planner.name}: {copied} payloads, {recorded} state rows and {deleted} rows deleted "
                "in one key range; rolled back"
            )
        note_changed(conn, archive.name, copied)
        note_changed(conn, rs.name, recorded)
        return int(deleted)

    def _columns(self) -> list[str]:
        return list(self.planner.dataset.step_to("archived").columns or [])


__all__ = ["SetArchive", "applies", "start", "why_not"]
