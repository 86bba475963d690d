"""Runs: the lock, batches, transactions and the run record.

Each batch is one transaction on one connection: it selects the records due
(so selection and change see one snapshot), changes the data, records the
new states and appends the ledger entries. Killing the process at any moment
therefore loses nothing and leaves nothing half done; the next run picks up
what remains, and a second run for the same as-of finds nothing to do.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine import partitions, run_status, shred
from retention.engine.archive import ArchiveStore, SameDatabaseArchive
from retention.engine.masking import mask_rows
from retention.engine.plan import (
    Batch,
    DatasetPlanner,
    EngineTables,
    Move,
    PlanContext,
    PlanSummary,
    build_planners,
    steps_from_state,
)
from retention.engine.run_status import Holder
from retention.engine.schema import check_schema
from retention.engine.shards import Bounds, ShardFilter, ShardSpec, compute_bounds
from retention.engine.statistics import FreshStatistics, note_changed
from retention.errors import (
    ConcurrentChangeError,
    ConfigError,
    LockHeldError,
    LockLostError,
    SchemaError,
    describe_database_error,
    describe_failure,
)
from retention.ledger import chain as ledger
from retention.ledger import evidence, pseudonyms
from retention.ledger import items as ledger_items
from retention.policy import LoadedPack
from retention.policy.model import RECORD_STATE
from retention.store import migrate, run_groups, tally
from retention.store import tables as store
from retention.timing.clock import local_date, utcnow

log = structlog.get_logger("retention")

LOCK_NAME = "run"
STALE_AFTER = dt.timedelta(hours=6)


# --------------------------------------------------------------------------
# The lock: one run at a time per database
# --------------------------------------------------------------------------


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: trust the heartbeat only
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(owner: str, heartbeat_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether a lock row's holder is gone.

    On this machine the process table answers: a holder whose process lives
    keeps its lock however old its heartbeat looks, since a clock jump (or
    one batch that takes hours) must not let a second run in beside a live
    one. A holder on another machine cannot be asked, so its heartbeat
    decides (refreshed by every batch).
    """
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _pid_alive(owner)
    return now - heartbeat_at > STALE_AFTER


def holder_gone(owner: str, heartbeat_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether a SQLite lock row's holder is gone (``retention status`` asks as the lock does)."""
    return _stale(owner, heartbeat_at, now)


@contextmanager
def reading(conn: sa.Connection) -> Iterator[None]:
    """A transaction for reads only: always rolled back (it also ends any open one first)."""
    if conn.in_transaction():
        conn.rollback()
    trans = conn.begin()
    try:
        yield
    finally:
        if trans.is_active:
            trans.rollback()


class RunLock:
    """One run at a time per database, held on the run's own connection.

    PostgreSQL and MariaDB: a session-level advisory lock taken on the very
    connection that makes every change of the run. If that session ends
    (killed process, ``pg_terminate_backend``, failover), the server releases
    the lock, and the run's next statement fails on the dead connection, so
    no batch of it can commit after another run took over.

    SQLite has no such lock: a row in ``retention_run_lock`` names the
    holder. A row is taken over only when its holder is gone (:func:`_stale`:
    on this machine its process is dead; on another, its heartbeat is hours
    old). Every batch transaction starts by refreshing that row's heartbeat
    where it still names this run (:meth:`verify`); the write also takes
    SQLite's single write lock, so a run whose row was taken over anyway
    stops before its next batch instead of working beside the new holder.
    """

    def __init__(self, conn: sa.Connection, run_id: str, shard: ShardSpec | None = None) -> None:
        self.conn = conn
        self.run_id = run_id
        self.shard = shard
        self.statements = dialect_for(conn).run_lock_statements(None if shard is None else str(shard))
        self.held = False
        # SQLite's lock row: one for a whole run, one per shard of a sharded run.
        self.name = LOCK_NAME if shard is None else f"shard {shard}"

    def acquire(self) -> None:
        """Take the lock, or raise LockHeldError at once."""
        conn = self.conn
        what = "the lock on this database" if self.shard is None else f"the lock of shard {self.shard}"
        if self.statements is not None:
            take, give = self.statements
            with conn.begin():
                self.held = bool(conn.execute(sa.text(take)).scalar_one())
            if not self.held:
                if self.shard is not None:
                    with conn.begin():  # whichever half of a shared + own pair it got
                        conn.execute(sa.text(give))
                raise self._refusal(what)
            free_sql = dialect_for(conn).whole_run_lock_free_sql
            if free_sql is not None and self.shard is not None:
                # A shard does not start beside a whole run.
                with conn.begin():
                    free = conn.execute(sa.text(free_sql)).scalar()
                if not free:
                    self.release()
                    raise self._refusal("the lock on this database")
            self._publish()
            return
        table = store.run_lock
        now = utcnow()
        with conn.begin():
            others = table.c.name == LOCK_NAME if self.shard is not None else table.c.name.like("shard %")
            for other in conn.execute(sa.select(table).where(others)).all():
                if not _stale(other.owner, other.heartbeat_at, now):
                    raise LockHeldError(_held_by("the lock on this database", Holder.from_row(other)))
            holder = conn.execute(sa.select(table).where(table.c.name == self.name)).first()
            if holder is not None:
                if not _stale(holder.owner, holder.heartbeat_at, now):
                    raise LockHeldError(_held_by(what, Holder.from_row(holder)))
                log.warning("stale_lock_taken_over", stale_run=holder.run_id)
                conn.execute(table.delete().where(table.c.name == self.name))
            try:
                conn.execute(
                    table.insert().values(
                        name=self.name, run_id=self.run_id, owner=_owner(), acquired_at=now, heartbeat_at=now
                    )
                )
            except sa.exc.IntegrityError:
                raise LockHeldError(f"another retention run took {what} at the same moment") from None
        self.held = True

    def _publish(self) -> None:
        """Name this run in the lock table, where ``status`` and a refused run read who holds the lock.

        Only the advisory lock's holder writes its row, so a row left by a
        holder that died is replaced, never believed over the lock itself.
        """
        table = store.run_lock
        now = utcnow()
        with self.conn.begin():
            self.conn.execute(table.delete().where(table.c.name == self.name))
            self.conn.execute(
                table.insert().values(
                    name=self.name, run_id=self.run_id, owner=_owner(), acquired_at=now, heartbeat_at=now
                )
            )

    def _refusal(self, what: str) -> LockHeldError:
        """Exit 5 naming the holder the lock table names (an older engine's run may name none)."""
        related = {LOCK_NAME, self.name}
        try:
            with reading(self.conn):
                rows = [h for h in run_status.holders(self.conn) if self.shard is None or h.name in related]
        except sa.exc.DBAPIError:
            rows = []
        if not rows:
            return LockHeldError(f"another retention run holds {what}")
        return LockHeldError(_held_by(what, rows[0]))

    def verify(self) -> None:
        """First statement of every batch transaction: the lock is still this run's (see the class doc)."""
        if self.statements is not None:
            return
        table = store.run_lock
        result = self.conn.execute(
            table.update().where(table.c.name == self.name, table.c.run_id == self.run_id).values(heartbeat_at=utcnow())
        )
        if result.rowcount != 1:
            raise LockLostError(
                "this run lost the database lock (another run took it over as stale); stopped before the next batch"
            )

    def check_whole_run_free(self) -> None:
        """A shard, once its group's row is committed: raise LockHeldError if a whole run holds the database.

        PostgreSQL needs no second look (the shard holds the database's lock
        in shared mode); MariaDB and SQLite look again, so that a whole run
        that took its lock after the shard's first look sees the group
        (retention.store.run_groups) and a shard that looks now sees the whole run.
        """
        conn = self.conn
        free_sql = dialect_for(conn).whole_run_lock_free_sql
        if self.statements is not None:
            if free_sql is None:
                return
            with conn.begin():
                free = bool(conn.execute(sa.text(free_sql)).scalar())
        else:
            table = store.run_lock
            with conn.begin():
                holder = conn.execute(sa.select(table).where(table.c.name == LOCK_NAME)).first()
            free = holder is None or _stale(holder.owner, holder.heartbeat_at, utcnow())
        if not free:
            raise LockHeldError("another retention run holds the lock on this database")

    def release(self) -> None:
        if not self.held:
            return
        conn = self.conn
        try:
            if conn.in_transaction():
                conn.rollback()
            if self.statements is not None:
                _, give = self.statements
                table = store.run_lock
                with conn.begin():
                    conn.execute(table.delete().where(table.c.name == self.name, table.c.run_id == self.run_id))
                with conn.begin():
                    conn.execute(sa.text(give))
            else:
                table = store.run_lock
                with conn.begin():
                    conn.execute(table.delete().where(table.c.name == self.name, table.c.run_id == self.run_id))
        except sa.exc.DBAPIError:
            # A dead session has released its advisory lock already; a pooled
            # connection that outlives close() must not keep one.
            conn.invalidate()
        self.held = False


def refuse_if_locked(engine: sa.Engine) -> None:
    """Exit 5 at once when a live run holds the lock, before anything that waits for it.

    The run's first writes (recording that it saw the pack) would wait behind
    the holder's batches on SQLite; this read does not. Only a refusal: the
    lock itself, taken later, still decides (a run that starts in between is
    refused then).
    """
    with engine.connect() as conn:
        live = [h for h in run_status.live_holders(conn, utcnow(), holder_gone) if h.name == LOCK_NAME]
        conn.rollback()
    if live:
        raise LockHeldError(_held_by("the lock on this database", live[0]))


def _held_by(what: str, holder: Holder) -> str:
    return f"another retention run holds {what}: {holder.sentence()} (retention status shows how far it got)"


@contextmanager
def run_lock(engine: sa.Engine, run_id: str) -> Iterator[sa.Connection]:
    """Hold the run lock on a connection of its own and yield that connection."""
    with engine.connect() as conn:
        lock = RunLock(conn, run_id)
        lock.acquire()
        try:
            yield conn
        finally:
            lock.release()


# --------------------------------------------------------------------------
# Applying one batch
# --------------------------------------------------------------------------


@dataclass
class RunContext:
    """Everything a batch needs besides the connection."""

    loaded: LoadedPack
    run_id: str
    as_of: dt.datetime
    secret: bytes
    archive: ArchiveStore
    now: Callable[[], dt.datetime] = utcnow
    should_stop: Callable[[], bool] | None = None
    review_batches: dict[str, int] = field(default_factory=dict)  # dataset -> this run's review batch
    retry: bool = False  # run a batch again after a deadlock (shards of one database run side by side)
    shard: int = store.WHOLE_RUN  # the shard whose counts each batch adds to (retention.store.tally)
    statistics: FreshStatistics = field(default_factory=FreshStatistics)  # engine tables' planner statistics
    archive_keys: shred.ArchiveKeys | None = None  # payloads sealed under per-bucket data keys (retention.shred)


class _Interrupted(Exception):
    """Raised between batches when the operator asked the run to stop (SIGTERM)."""


def _json_payload(values: dict[str, Any]) -> str:
    """The archived payload: only the declared columns, as JSON."""

    def encode(value: Any) -> Any:
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if isinstance(value, bytes):
            return value.hex()
        return str(value)

    return json.dumps(values, default=encode, sort_keys=True, ensure_ascii=False)


def _set_states(
    conn: sa.Connection,
    dataset: str,
    moves: Sequence[Any],
    state: str | None,
    run_id: str,
    to_state: str,
    from_state: str,
) -> None:
    """Replace the state rows of ``moves``; ``None`` removes them (the data is gone).

    An active record has no state row by definition, so moves out of
    ``active`` skip the delete (most of a nightly purge's moves). The rows
    are the witnesses of the change: a state row removed must have been
    there, and a new one is inserted under the table's primary key, so two
    runs can never both record the same transition.
    """
    rs = store.record_states
    keys = [m.record_key for m in moves]
    removed = 0
    if from_state != "active":
        removed = conn.execute(
            rs.delete().where(
                rs.c.dataset == dataset, rs.c.state == from_state, store.one_of(conn, rs.c.record_key, keys)
            )
        ).rowcount
        if removed != len(keys):
            raise ConcurrentChangeError(
                f"dataset {dataset}: {len(keys) - removed} of {len(keys)} records left state {from_state} "
                "while the batch ran; rolled back"
            )
    if state is None:
        note_changed(conn, rs.name, removed)
        return
    note_changed(conn, rs.name, removed + len(moves))
    rows = [
        {
            "dataset": dataset,
            "record_key": m.record_key,
            "state": state,
            "since": next(s.due_at for s in m.steps if s.to_state == to_state),
            "subject_key": m.subject_key,
            "leader_key": m.leader_key,
            "run_id": run_id,
            "clock_day": m.clock_day,
            "email_pseudonym": m.email_pseudonym,
        }
        for m in moves
    ]
    conn.execute(rs.insert(), rows)


def _for_update(conn: sa.Connection, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
    """Lock the selected rows until commit where the database can (SQLite: the batch holds its write lock)."""
    return dialect_for(conn).for_update(query, table)


def witness(conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner, batch: Batch) -> Batch:
    """The batch cut to the records still as planned, their rows locked until commit.

    A record moved by its clocks alone must still be due by them (new
    activity since the batch was selected wins); every record must still be
    unheld, a record of the dataset (its ``where``) and in the state it leaves. Follower moves whose leader record
    dropped out drop out too: they would move for a reason that is gone.

    Where a batch transaction holds the database's only write lock from its
    first statement (SQLite: :meth:`RunLock.verify` writes the heartbeat
    before the batch is selected), no other connection can change a row
    between the selection and the change, and there is nothing to witness.
    """
    if dialect_for(conn).batch_holds_write_lock:
        return _with_email_pseudonyms(batch, ctx.secret)
    as_of = ctx.as_of
    kept: set[str] = set()
    from_active = [m for m in batch.moves if m.steps and m.steps[0].from_state == "active"]
    key_text = planner.text(conn, planner.key)
    who = planner.live_who(conn)
    # An erasure's moves are rechecked against erasure's reach (erasure_where), the others against where.
    separate = planner.dataset.erasure_where is not None
    for recheck, erasing in ((False, False), (True, False), (False, True), (True, True)):
        group = [m for m in from_active if m.recheck is recheck and (separate and m.request_id is not None) is erasing]
        if not group:
            continue
        conditions = [
            store.one_of(conn, planner.key, [m.key for m in group]),
            planner.not_held(key_text, who),
            planner.not_moved(conn, per_row=True),
            planner.erasure_included() if erasing else planner.included(),
        ]
        if recheck and planner.sql is not None:
            conditions.append(planner.sql.due(planner.dataset.states[1], as_of))
        query = _for_update(conn, sa.select(planner.key).where(*conditions), planner.table)
        kept |= {str(k) for k in conn.execute(query).scalars()}
    rs = store.record_states
    by_state: dict[str, list[Move]] = {}
    for m in batch.moves:
        if m.steps and m.steps[0].from_state != "active":
            by_state.setdefault(m.steps[0].from_state, []).append(m)
    for state, moves in by_state.items():
        for erasing in (False, True):
            group = [m for m in moves if (separate and m.request_id is not None) is erasing]
            if not group:
                continue
            query = sa.select(rs.c.record_key).where(
                rs.c.dataset == planner.name,
                rs.c.state == state,
                store.one_of(conn, rs.c.record_key, [m.record_key for m in group]),
                planner.not_held(rs.c.record_key, planner.state_who()),
                planner.state_row_included(conn, rs.c.record_key, erasure=erasing),
            )
            kept |= set(conn.execute(_for_update(conn, query)).scalars())
    moves = [m for m in batch.moves if m.record_key in kept]
    dropped = {m.record_key for m in batch.moves} - kept
    if dropped:
        log.info("records_no_longer_due", dataset=planner.name, count=len(dropped), run_id=ctx.run_id)
    followers = []
    by_name = {f.name: f for f in planner.followers}
    for follower in batch.followers:
        if dropped:
            follower = replace(follower, moves=[m for m in follower.moves if m.leader_key not in dropped])
        followers.append(witness(conn, ctx, by_name[follower.dataset], follower))
    return replace(batch, moves=[_with_email_pseudonym(m, ctx.secret) for m in moves], followers=followers)


def _with_email_pseudonyms(batch: Batch, secret: bytes) -> Batch:
    """The batch (followers included) with each move's e-mail pseudonym (see :func:`_with_email_pseudonym`)."""
    return replace(
        batch,
        moves=[_with_email_pseudonym(m, secret) for m in batch.moves],
        followers=[_with_email_pseudonyms(f, secret) for f in batch.followers],
    )


def _with_email_pseudonym(move: Move, secret: bytes) -> Move:
    """The move with its e-mail's pseudonym, which its state row keeps (the one it kept already wins).

    Computed here, in Python, from the address read from the source row: the
    pseudonym key never reaches the database server, and no address is
    written to the engine's tables.
    """
    if move.email_pseudonym is not None or move.email is None:
        return move
    return replace(move, email_pseudonym=pseudonyms.email_pseudonym(secret, move.email))


def apply_batch(
    conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner, batch: Batch
) -> dict[str, dict[str, int]]:
    """Carry out ``batch`` and its followers inside the caller's transaction.

    Followers are the leader records' children, so they change first.
    Returns counts per dataset and transition. The ledger entries of the
    whole batch are appended last, in one go, so the ledger's append lock is
    held from there to the commit only (concurrent shards queue on it).
    """
    drafts: list[ledger.EntryDraft | ledger_items.BatchItems] = []
    counts = _apply_tree(conn, ctx, planner, batch, drafts)
    ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)
    return counts


def _apply_tree(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    batch: Batch,
    drafts: list[ledger.EntryDraft | ledger_items.BatchItems],
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    by_name = {f.name: f for f in planner.followers}
    for follower in batch.followers:
        for name, per in _apply_tree(conn, ctx, by_name[follower.dataset], follower, drafts).items():
            mine = counts.setdefault(name, {})
            for transition, n in per.items():
                mine[transition] = mine.get(transition, 0) + n
    counts.setdefault(batch.dataset, {})
    if batch.review:
        drafts.append(_request_review(conn, ctx, batch))
    for transition, n in _apply_own(conn, ctx, planner, batch, drafts).items():
        counts[batch.dataset][transition] = counts[batch.dataset].get(transition, 0) + n
    return counts


def _request_review(conn: sa.Connection, ctx: RunContext, batch: Batch) -> ledger.EntryDraft:
    """Record due purges of a review dataset as items of this run's review batch; returns its ledger entry."""
    rb, ri = store.review_batches, store.review_items
    batch_id = ctx.review_batches.get(batch.dataset)
    if batch_id is None:
        inserted = conn.execute(
            rb.insert().values(dataset=batch.dataset, run_id=ctx.run_id, created_at=ctx.now(), status="pending")
        ).inserted_primary_key
        assert inserted is not None
        batch_id = int(inserted[0])
        ctx.review_batches[batch.dataset] = batch_id
    conn.execute(
        ri.insert(),
        [
            {
                "batch_id": batch_id,
                "dataset": batch.dataset,
                "record_key": key,
                "transition": f"{from_state}->purged",
                "due_at": due,
            }
            for key, from_state, due in batch.review
        ],
    )
    pack = ctx.loaded.pack
    return ledger.EntryDraft(
        run_id=ctx.run_id,
        pack_id=pack.pack,
        pack_digest=ctx.loaded.digest,
        dataset=batch.dataset,
        transition="review_requested",
        action=None,
        basis=pack.datasets[batch.dataset].basis_for("purged"),
        due_at=max(due for _, _, due in batch.review),
        record_pseudonym=None,
        subject_pseudonym=None,
        count=len(batch.review),
        detail={"review_id": batch_id},
    )


def _settle_reviewed(conn: sa.Connection, dataset: str, moves: Sequence[Any]) -> None:
    """Approved items are done once purged; a batch with none left is completed."""
    reviewed = [m for m in moves if m.review_id is not None]
    if not reviewed:
        return
    rb, ri = store.review_batches, store.review_items
    conn.execute(
        ri.delete().where(
            ri.c.dataset == dataset, store.one_of(conn, ri.c.record_key, [m.record_key for m in reviewed])
        )
    )
    for batch_id in {m.review_id for m in reviewed}:
        left = conn.execute(sa.select(sa.func.count()).where(ri.c.batch_id == batch_id)).scalar_one()
        if not left:
            conn.execute(rb.update().where(rb.c.id == batch_id).values(status="completed"))


def _present(conn: sa.Connection, planner: DatasetPlanner, moves: list[Move]) -> tuple[list[Move], list[Move]]:
    """(moves whose source row is there, locked; moves whose row is gone already)."""
    query = _for_update(
        conn, sa.select(planner.key).where(store.one_of(conn, planner.key, [m.key for m in moves])), planner.table
    )
    found = {str(k) for k in conn.execute(query).scalars()}
    return [m for m in moves if m.record_key in found], [m for m in moves if m.record_key not in found]


_NEEDS_ROW = frozenset({"deactivate", "archive", "delete", "drop_partition", "anonymise"})


def _apply_own(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    batch: Batch,
    drafts: list[ledger.EntryDraft | ledger_items.BatchItems],
) -> dict[str, int]:
    """Change the data, the state rows and the ledger for the batch's own records.

    Ledger entries are written only for what this transaction changed: a
    record whose source row is already gone (deleted by the application)
    loses its state row and gets no entry; a delete counts the rows it
    really removed.
    """
    dataset = planner.dataset
    table = planner.table
    key = planner.key
    counts: dict[str, int] = {}
    gone: set[str] = set()
    for from_state, to_state, planned in batch.transitions():
        moves = [m for m in planned if m.record_key not in gone]
        if not moves:
            continue
        step = dataset.step_to(to_state)
        action = step.action or (RECORD_STATE if to_state == "inactive" else "purge_archive")
        if action in _NEEDS_ROW and from_state != "active":
            moves, missing = _present(conn, planner, moves)
            if missing:
                gone |= {m.record_key for m in missing}
                _set_states(conn, batch.dataset, missing, None, ctx.run_id, to_state, from_state)
                log.info("records_already_gone", dataset=batch.dataset, count=len(missing), run_id=ctx.run_id)
            if not moves:
                continue
        keys = [m.key for m in moves]
        if action == "deactivate":
            conn.execute(table.update().where(store.one_of(conn, key, keys)).values(**(step.set or {})))
            _set_states(conn, batch.dataset, moves, to_state, ctx.run_id, to_state, from_state)
        elif action == RECORD_STATE:
            # No action: the engine's state row and the ledger say the record is
            # inactive; the source row (locked by the witness) is not touched.
            _set_states(conn, batch.dataset, moves, to_state, ctx.run_id, to_state, from_state)
        elif action == "archive":
            # Sealed payloads are encrypted here, so never built by the database.
            if isinstance(ctx.archive, SameDatabaseArchive) and ctx.archive_keys is None:
                _archive_in_sql(conn, ctx, planner, batch.dataset, step.columns or [], moves, to_state)
            else:
                _archive_in_python(conn, ctx, planner, batch.dataset, step.columns or [], moves, to_state)
            if step.then == "delete":
                _delete_rows(conn, batch.dataset, table, key, keys)
            else:
                mask_rows(conn, table, dataset.key, keys, step.mask or {}, ctx.secret)
            _set_states(conn, batch.dataset, moves, to_state, ctx.run_id, to_state, from_state)
        elif action == "purge_archive":
            ctx.archive.delete(conn, batch.dataset, [m.record_key for m in moves])
            archived = dataset.step_to("archived")
            source_kept = archived.then == "anonymise"
            _set_states(conn, batch.dataset, moves, "purged" if source_kept else None, ctx.run_id, to_state, from_state)
        elif action in ("delete", "drop_partition"):
            # Rows outside whole droppable partitions are deleted one by one,
            # and the ledger says so.
            action = "delete"
            _delete_rows(conn, batch.dataset, table, key, keys)
            _set_states(conn, batch.dataset, moves, None, ctx.run_id, to_state, from_state)
        elif action == "anonymise":
            mask_rows(conn, table, dataset.key, keys, step.mask or {}, ctx.secret)
            _set_states(conn, batch.dataset, moves, "purged", ctx.run_id, to_state, from_state)
        else:  # pragma: no cover - the model admits no other action
            raise AssertionError(action)
        if to_state == "purged":
            _settle_reviewed(conn, batch.dataset, moves)
        name = f"{from_state}->{to_state}"
        counts[name] = counts.get(name, 0) + len(moves)
        drafts.extend(_ledger_drafts(ctx, batch.dataset, from_state, to_state, action, moves))
    return counts


def _archive_in_python(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    dataset_name: str,
    columns: Sequence[str],
    moves: Sequence[Move],
    to_state: str,
) -> None:
    """Hand the moves' payloads to a separate archive store (another database: no ``INSERT ... SELECT``)."""
    table, key = planner.table, planner.key
    query = sa.select(key.label("_key"), *(table.c[c] for c in columns)).where(
        store.one_of(conn, key, [m.key for m in moves])
    )
    payloads = {str(r._key): _json_payload({c: r._mapping[c] for c in columns}) for r in conn.execute(query)}
    purge_due = _purge_due(ctx, planner.dataset, moves, to_state)
    keys = ctx.archive_keys

    def payload(m: Move) -> str:
        plain = payloads.get(m.record_key, "{}")
        if keys is None:
            return plain
        return keys.seal(conn, dataset_name, m.record_key, purge_due.get(m.record_key), plain)

    ctx.archive.put(
        conn,
        [
            {
                "dataset": dataset_name,
                "record_key": m.record_key,
                "payload": payload(m),
                "archived_at": ctx.now(),
                "purge_due_at": purge_due.get(m.record_key),
                "run_id": ctx.run_id,
            }
            for m in moves
        ],
    )


def _archive_keys(engine: sa.Engine, finish_rotation: bool = True) -> shred.ArchiveKeys | None:
    """The data keys when archive encryption is configured, after finishing a rotation a crash interrupted."""
    key_file = shred.configured_key_file()
    if key_file is None:
        return None
    return shred.ArchiveKeys(shred.finish_rotation(engine, key_file) if finish_rotation else key_file)


def _shred_keys(conn: sa.Connection, ctx: RunContext) -> shred.ArchiveKeys:
    """Destroy the data keys of buckets whose payloads are all purged, one ledger entry per dataset."""
    assert ctx.archive_keys is not None

    def record(conn: sa.Connection, destroyed: dict[str, list[str]], key_id: str) -> None:
        drafts = [
            ledger.EntryDraft(
                run_id=ctx.run_id,
                pack_id=ctx.loaded.id,
                pack_digest=ctx.loaded.digest,
                dataset=dataset,
                transition=shred.DESTROYED,
                action=None,
                basis="archive payloads purged: their data key is destroyed (crypto-shredding)",
                due_at=None,
                record_pseudonym=None,
                subject_pseudonym=None,
                count=len(days),
                detail={"purge_days": days, "archive_key_rotated_to": key_id},
            )
            for dataset, days in sorted(destroyed.items())
        ]
        ledger.append(conn, drafts, ctx.now())
        log.info("archive_keys_destroyed", count=sum(len(d) for d in destroyed.values()), run_id=ctx.run_id)

    separate: sa.Engine | None = None if isinstance(ctx.archive, SameDatabaseArchive) else ctx.archive.engine  # type: ignore[attr-defined]
    return shred.shred(conn, separate, ctx.archive_keys, local_date(ctx.as_of, "UTC"), record)


def _archive_in_sql(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    dataset_name: str,
    columns: Sequence[str],
    moves: Sequence[Move],
    to_state: str,
) -> None:
    """Copy the moves' payloads into the archive by ``INSERT ... SELECT`` (one statement per purge date).

    The payload is the declared columns as JSON built by the database, each
    value as it writes it as text. Every row was locked by this batch, so
    each must be copied.
    """
    archive = ctx.archive
    assert isinstance(archive, SameDatabaseArchive)
    table, key = planner.table, planner.key
    payload = dialect_for(conn).json_text_object([(c, table.c[c]) for c in sorted(columns)])
    by_due: dict[dt.datetime | None, list[Move]] = {}
    purge_due = _purge_due(ctx, planner.dataset, moves, to_state)
    for m in moves:
        by_due.setdefault(purge_due.get(m.record_key), []).append(m)
    instant = store.archive.c.archived_at.type

    def moment(value: dt.datetime | None) -> ColumnElement[Any]:
        literal = sa.literal(value, instant)
        # A typed NULL for PostgreSQL; no CAST on SQLite, where DATETIME has
        # numeric affinity and a CAST would keep only the year of the text.
        return sa.type_coerce(literal, instant) if dialect_for(conn).datetimes_as_text else sa.cast(literal, instant)

    for due, group in by_due.items():
        rows = sa.select(
            sa.cast(sa.literal(dataset_name, sa.String), sa.String),
            planner.text(conn, key),
            payload,
            moment(ctx.now()),
            moment(due),
            sa.cast(sa.literal(ctx.run_id, sa.String), sa.String),
        ).where(store.one_of(conn, key, [m.key for m in group]))
        copied = archive.copy(conn, dataset_name, rows, [m.record_key for m in group])
        if copied != len(group):
            raise ConcurrentChangeError(
                f"dataset {dataset_name}: archived {copied} rows where the batch locked {len(group)}; rolled back"
            )


def _delete_rows(conn: sa.Connection, dataset: str, table: sa.Table, key: Any, keys: list[Any]) -> None:
    """Delete the rows of ``keys``, every one of which this transaction has locked: all must go."""
    removed = conn.execute(table.delete().where(store.one_of(conn, key, keys))).rowcount
    if removed != len(keys):
        raise ConcurrentChangeError(
            f"dataset {dataset}: deleted {removed} rows where the batch locked {len(keys)}; rolled back"
        )


def _purge_due(ctx: RunContext, dataset: Any, moves: Sequence[Any], to_state: str) -> dict[str, dt.datetime | None]:
    """When each archive payload's own period ends (None if the pack never purges it)."""
    if "purged" not in dataset.states:
        return {m.record_key: None for m in moves}
    far = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    result: dict[str, dt.datetime | None] = {}
    # A batch's records share few (since, clock day) pairs: walk each pair's lifecycle once.
    known: dict[tuple[dt.datetime, dt.date | None], dt.datetime | None] = {}
    for m in moves:
        since = next(s.due_at for s in m.steps if s.to_state == to_state)
        pair = (since, m.clock_day)
        if pair not in known:
            steps = steps_from_state(ctx.loaded.pack, dataset, "archived", since, far, m.clock_day)
            known[pair] = steps[0].due_at if steps else None
        result[m.record_key] = known[pair]
    return result


def _ledger_drafts(
    ctx: RunContext,
    dataset_name: str,
    from_state: str,
    to_state: str,
    action: str,
    moves: Sequence[Any],
) -> list[ledger.EntryDraft | ledger_items.BatchItems]:
    pack = ctx.loaded.pack
    dataset = pack.datasets[dataset_name]
    basis = dataset.basis_for(to_state)
    transition = f"{from_state}->{to_state}"
    dues = [next(s.due_at for s in m.steps if s.to_state == to_state) for m in moves]
    if dataset.ledger == "summary":
        clocks = [m.clock_at for m in moves if m.clock_at is not None]
        return [
            ledger.EntryDraft(
                run_id=ctx.run_id,
                pack_id=pack.pack,
                pack_digest=ctx.loaded.digest,
                dataset=dataset_name,
                transition=transition,
                action=action,
                basis=basis,
                due_at=max(dues),
                record_pseudonym=None,
                subject_pseudonym=None,
                count=len(moves),
                clock_min=min(clocks) if clocks else None,
                clock_max=max(clocks) if clocks else None,
                detail=_detail(moves),
            )
        ]
    return [
        ledger_items.BatchItems(
            ctx.run_id,
            pack.pack,
            ctx.loaded.digest,
            dataset_name,
            transition,
            action,
            basis,
            ctx.secret,
            [
                (due, move.record_key, move.subject_key or None, move.request_id, move.review_id)
                for move, due in zip(moves, dues, strict=True)
            ],
            emails=[move.email_pseudonym for move in moves],
        )
    ]


def _detail(moves: Sequence[Any]) -> dict[str, Any]:
    """Non-personal context of an entry: the erasure request or review behind it."""
    detail: dict[str, Any] = {}
    requests = sorted({m.request_id for m in moves if m.request_id is not None})
    if requests:
        detail.update({"erasure_request": requests[0]} if len(requests) == 1 else {"erasure_requests": requests})
    reviews = sorted({m.review_id for m in moves if m.review_id is not None})
    if reviews:
        detail.update({"review_id": reviews[0]} if len(reviews) == 1 else {"review_ids": reviews})
    return detail


# --------------------------------------------------------------------------
# Plan and run
# --------------------------------------------------------------------------


def _require_schema(conn: sa.Connection, loaded: LoadedPack) -> None:
    errors = [f for f in check_schema(conn, loaded.pack) if f.level == "error"]
    if errors:
        raise SchemaError([str(f) for f in errors])


def engine_tables_missing(conn: sa.Connection) -> str | None:
    """Why the engine's tables cannot be read (not created, outdated, no privilege), or None.

    ``plan`` goes on without them (a read-only role, or a database where
    ``retention db upgrade`` never ran); everything else needs them.
    """
    head = migrate.head_revision()
    try:
        revision = migrate.revision_on(conn)
        if revision != head:
            return f"the engine's tables are at revision {revision or 'none'}, not {head} (retention db upgrade)"
        for table in (
            store.holds,
            store.erasure_requests,
            store.record_states,
            store.review_batches,
            store.review_items,
        ):
            conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).all()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        conn.rollback()  # nothing was written; PostgreSQL needs a fresh transaction after an error
        return "the engine's tables cannot be read by this database role"
    return None


def plan(
    engine: sa.Engine,
    loaded: LoadedPack,
    as_of: dt.datetime,
    *,
    on_batch: Callable[[Batch], None] | None = None,
    datasets: Sequence[str] | None = None,
    record: bool = False,
) -> PlanSummary:
    """A dry run: every transition ``run`` would perform at ``as_of``.

    It never writes to source tables. With ``record`` it keeps its counts in
    the engine's runs table and compares them with the previous plan.
    """
    summary = PlanSummary(loaded.id, loaded.digest, as_of)
    with engine.connect() as conn:
        _require_schema(conn, loaded)
        missing = engine_tables_missing(conn)
        ctx = PlanContext(loaded, as_of, tables=EngineTables() if missing is None else EngineTables.absent())
        if missing is not None:
            record = False
            summary.notes.append(
                f"{missing}: planned as a first run would find them (no holds, no erasure requests, "
                "no records in later states), and without the change since the last plan"
            )
        planners = build_planners(conn, ctx)
        for name, planner in planners.items():
            if datasets is not None and name not in datasets:
                continue
            planner.summarize(conn, summary, on_batch=on_batch)
            if partitions.eligible(planner, conn):
                # Counted above with the other records; this says how run will purge them.
                summary.partitions[name] = [
                    {"partition": part.label, "rows": partitions.row_count(conn, part)}
                    for part in partitions.droppable(conn, planner)
                ]
            summary.anomalies[name] = {str(k): v for k, v in planner.anomaly_counts(conn).items()}
            summary.held_back.extend(planner.held_back(conn))
        conn.rollback()
    if record:
        try:
            _record_plan(engine, summary)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            summary.notes.append(
                "this plan was not recorded: this database role cannot write the engine's runs table "
                "(--no-record says so explicitly)"
            )
    return summary


def _record_plan(engine: sa.Engine, summary: PlanSummary) -> None:
    """Keep this plan's counts so that the next plan can say what changed."""
    runs = store.runs
    now = utcnow()
    with engine.begin() as conn:
        previous = conn.execute(
            sa.select(runs.c.id, runs.c.as_of, runs.c.counts)
            .where(runs.c.mode == "plan", runs.c.pack_id == summary.pack_id)
            .order_by(runs.c.started_at.desc())
            .limit(1)
        ).first()
        if previous is not None:
            summary.previous = {
                "run_id": previous.id,
                "as_of": previous.as_of,
                "counts": json.loads(previous.counts or "{}"),
            }
        conn.execute(
            runs.insert().values(
                id=str(uuid.uuid4()),
                mode="plan",
                pack_id=summary.pack_id,
                pack_digest=summary.pack_digest,
                as_of=summary.as_of,
                started_at=now,
                finished_at=now,
                status="planned",
                counts=json.dumps(summary.transitions, sort_keys=True),
            )
        )


@dataclass
class RunResult:
    """The outcome of one run, as recorded in ``retention_runs``."""

    run_id: str
    status: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    guarded: dict[str, str] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    anomalies: dict[str, dict[str, int]] = field(default_factory=dict)
    erased: dict[int, int] = field(default_factory=dict)  # erasure request -> records it moved in this run
    batches: int = 0
    ledger_lock: dict[str, Any] = field(default_factory=dict)  # appends, wait_s, hold_s, hold_max_s
    shard: str | None = None  # "I/N" of a sharded run
    attempts: int = 1  # a shard: how many processes started it, this one included (reruns, redeliveries)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


@dataclass(frozen=True)
class GuardTrip:
    """A transition that would move more than its guard allows."""

    dataset: str
    transition: str
    count: int
    rows: int
    max_share: float
    max_count: int | None

    @property
    def share(self) -> float:
        return self.count / self.rows if self.rows else 1.0

    def __str__(self) -> str:
        return guard_message(self.dataset, [self])

    def describe(self, guarded: str) -> str:
        """This trip without the dataset the guard refused (named once by :func:`guard_message`)."""
        limit = f"max {self.max_share:.0%}"
        if self.max_count is not None:
            limit += f" or {self.max_count} records"
        what = self.transition if self.dataset == guarded else f"{self.dataset} {self.transition}"
        return f"{what} would move {self.count} of {self.rows} records ({self.share:.1%}; {limit})"


def guard_message(dataset: str, trips: Sequence[GuardTrip]) -> str:
    """One sentence per refused dataset, naming it once however many transitions tripped."""
    return (
        f"guard tripped for dataset {dataset}: {', '.join(t.describe(dataset) for t in trips)}; "
        f"rerun with --allow-mass {dataset} if this is intended"
    )


def guard_trips(conn: sa.Connection, loaded: LoadedPack, planner: DatasetPlanner) -> list[GuardTrip]:
    """Count what ``planner`` would move (followers included) and compare with its guards."""
    counts: dict[str, dict[str, int]] = {}
    summary = PlanSummary(loaded.id, loaded.digest, planner.ctx.as_of)
    planner.summarize(conn, summary, sample_size=0)
    counts = {name: per for name, per in summary.transitions.items() if per}
    planners = {planner.name: planner, **{f.name: f for f in planner.followers}}
    trips = []
    for name, per in counts.items():
        guard = loaded.pack.guard_for(name)
        rows = planners[name].table_rows(conn) if name in planners else 0
        for transition, count in per.items():
            over_share = rows > 0 and count / rows > guard.max_share
            over_count = guard.max_count is not None and count > guard.max_count
            if over_share or over_count:
                trips.append(GuardTrip(name, transition, count, rows, guard.max_share, guard.max_count))
    return trips


def _short_notice_entry(ctx: RunContext, detail: dict[str, Any]) -> ledger.EntryDraft:
    """The operator's acceptance of a version applied before its notice ran out."""
    return ledger.EntryDraft(
        run_id=ctx.run_id,
        pack_id=ctx.loaded.id,
        pack_digest=ctx.loaded.digest,
        dataset=None,
        transition="short_notice_accepted",
        action=None,
        basis=None,
        due_at=None,
        record_pseudonym=None,
        subject_pseudonym=None,
        count=0,
        detail=detail,
    )


def _record_pack(conn: sa.Connection, loaded: LoadedPack, now: dt.datetime) -> None:
    pv = store.policy_versions
    exists = conn.execute(sa.select(pv.c.digest).where(pv.c.digest == loaded.digest)).first()
    if exists is None:
        conn.execute(
            pv.insert().values(
                digest=loaded.digest,
                pack_id=loaded.id,
                version=loaded.pack.version,
                effective_from=loaded.pack.effective_from,
                first_seen_at=now,
                content=loaded.text,
            )
        )


def run(
    engine: sa.Engine,
    loaded: LoadedPack,
    as_of: dt.datetime,
    *,
    secret: bytes,
    archive: ArchiveStore | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    datasets: Sequence[str] | None = None,
    allow_mass: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
    short_notice: dict[str, Any] | None = None,
    on_locked: Callable[[], None] | None = None,
) -> RunResult:
    """Apply every transition due at ``as_of``, one transaction per batch.

    ``allow_mass`` names datasets (or ``*``) whose mass-deletion guards the
    operator overrides for this run; each override is recorded in the run
    and in the ledger. ``short_notice``: the operator applies a pack version
    before its notice ran out (the dates, recorded in the ledger).
    ``on_locked`` is called once the lock is held and the run recorded,
    before any planning: what a progress display plans to know its totals
    then costs nothing to a run that would be refused the lock.
    """
    run_id = str(uuid.uuid4())
    bound = log.bind(run_id=run_id, pack=loaded.id)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    store_ = archive or SameDatabaseArchive()
    ctx = RunContext(loaded, run_id, as_of, secret, store_, should_stop=should_stop)
    result = RunResult(run_id, "running", started_at=ctx.now())
    try:
        with engine.connect() as conn:
            lock = RunLock(conn, run_id)
            lock.acquire()
            try:
                with conn.begin():
                    _require_schema(conn, loaded)
                    run_groups.refuse_beside_open_group(conn)  # one rule on every database (retention.store.run_groups)
                    _record_pack(conn, loaded, ctx.now())
                    _close_abandoned_runs(conn)
                    conn.execute(
                        store.runs.insert().values(
                            id=run_id,
                            mode="run",
                            pack_id=loaded.id,
                            pack_digest=loaded.digest,
                            as_of=as_of,
                            started_at=ctx.now(),
                            status="running",
                        )
                    )
                    if short_notice is not None:
                        ledger.append(conn, [_short_notice_entry(ctx, short_notice)], ctx.now(), secret=ctx.secret)
                bound.info("run_started", as_of=as_of.isoformat(), mode="run")
                if on_locked is not None:
                    on_locked()
                _index_lookup(conn, ctx.run_id)  # items of a run killed before its end
                store_.bind(engine)  # a store of another main database is refused before any payload moves
                ctx.archive_keys = _archive_keys(engine)
                plan_ctx = PlanContext(loaded, as_of)
                with reading(conn):
                    planners = build_planners(conn, plan_ctx)
                if datasets is not None:
                    plan_ctx.skipped |= {n for n in planners if n not in datasets}
                _run_datasets(conn, lock, ctx, plan_ctx, planners, result, on_batch, allow_mass)
                _close_run(conn, engine, ctx, planners, result.erased)
                result.status = "partial" if result.failures else "guarded" if result.guarded else "succeeded"
            finally:
                lock.release()
    except _Interrupted:
        result.status = "interrupted"
        bound.warning("run_interrupted", batches=result.batches)
    except BaseException as exc:
        if result.status == "running":
            result.status = "failed"
            _finish(engine, result, error=describe_failure(exc), swallow=True)
        raise
    _finish(engine, result)
    bound.info(
        "run_finished",
        status=result.status,
        counts=result.counts,
        batches=result.batches,
        ledger_lock=_rounded(result.ledger_lock),
    )
    structlog.contextvars.unbind_contextvars("run_id")
    return result


def _close_run(
    conn: sa.Connection,
    engine: sa.Engine,
    ctx: RunContext,
    planners: dict[str, DatasetPlanner],
    erased: dict[int, int],
) -> None:
    """What a run does once every dataset is done: archive sweep, erasure requests, minimising, indexing."""
    ctx.archive.sweep(engine, ctx.secret)  # after the guards; only payloads whose purge the ledger records
    if ctx.archive_keys is not None:
        ctx.archive_keys = _shred_keys(conn, ctx)
    _settle_erasure_requests(conn, ctx, planners, erased)
    with conn.begin():
        minimised = evidence.minimise(conn, ctx.loaded.pack, ctx.as_of, ctx.secret, ctx.now())
        if minimised is not None:
            minimised = replace(minimised, run_id=ctx.run_id, pack_digest=ctx.loaded.digest)
            ledger.append(conn, [minimised], ctx.now(), secret=ctx.secret)
            log.info("engine_records_minimised", count=minimised.count, run_id=ctx.run_id)
    _index_lookup(conn, ctx.run_id)


def _index_lookup(conn: sa.Connection, run_id: str) -> None:
    """Write the ledger's pending lookup rows, unless the ledger is locked by another session.

    The lookup rows only speed up ``ledger lookup`` (items not yet indexed
    are read directly) and the next run writes them: a lock on the ledger
    table must not fail the whole run here, outside any dataset. The
    datasets that need the ledger fail on their own (exit 3).
    """
    try:
        with conn.begin():
            ledger_items.index_runs(conn)
    except sa.exc.OperationalError as exc:
        if exc.connection_invalidated or not _lock_wait(exc):
            raise  # a full disk or a lost server is the run's failure, not a lock to wait out
        log.warning("ledger_index_deferred", error=describe_database_error(exc), run_id=run_id)


def _rounded(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()}


def _run_datasets(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    plan_ctx: PlanContext,
    planners: dict[str, DatasetPlanner],
    result: RunResult,
    on_batch: Callable[[Batch], None] | None,
    allow_mass: Sequence[str],
) -> None:
    """Every dataset in order: guards, passes, anomalies; a dataset that fails leaves the others running."""
    bound = log.bind(run_id=ctx.run_id, pack=ctx.loaded.id)
    for name, planner in planners.items():
        if name in plan_ctx.skipped:
            continue
        if ctx.should_stop is not None and ctx.should_stop():
            raise _Interrupted
        try:
            if not _guard_passes(conn, ctx, planner, result, allow_mass):
                plan_ctx.skipped.add(name)
                continue
            _run_dataset(conn, lock, ctx, planner, result, on_batch)
            with reading(conn):
                counts = planner.anomaly_counts(conn)
            if any(counts.values()):
                result.anomalies[name] = {str(k): v for k, v in counts.items()}
                bound.warning("clock_anomalies", dataset=name, anomalies=dict(counts))
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            plan_ctx.skipped.add(name)
            result.failures[name] = describe_database_error(exc, name)
            bound.error(
                "dataset_failed",
                dataset=name,
                error_type=type(exc.orig).__name__,
                error=result.failures[name],
            )
        except ConcurrentChangeError as exc:
            plan_ctx.skipped.add(name)
            result.failures[name] = str(exc)
            bound.error("dataset_failed", dataset=name, error_type=type(exc).__name__)
        plan_ctx.finished.add(name)


_RETRIES = 5


def _lock_wait(exc: sa.exc.DBAPIError) -> bool:
    """A lock another session holds (a lock wait timeout or a deadlock), as opposed to any other failure."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code == "55P03" or _retryable(exc)


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock or lock timeout that rolled the batch back whole: running it again is safe."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40P01", "40001"):
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1213, 1205):  # MariaDB: deadlock found, lock wait timeout
        return True
    return "database is locked" in str(orig)


def _note_ledger_lock(conn: sa.Connection, result: RunResult) -> None:
    """Add the append lock's wait and hold of the transaction that just ended to the run's stats."""
    timing = ledger.lock_timing(conn)
    if timing is None:
        return
    wait, hold = timing
    stats = result.ledger_lock
    stats["appends"] = stats.get("appends", 0) + 1
    stats["wait_s"] = stats.get("wait_s", 0.0) + wait
    stats["hold_s"] = stats.get("hold_s", 0.0) + hold
    stats["hold_max_s"] = max(stats.get("hold_max_s", 0.0), hold)


def _run_dataset(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    planner: DatasetPlanner,
    result: RunResult,
    on_batch: Callable[[Batch], None] | None,
) -> None:
    """Every pass of one dataset, one transaction per batch on the run's connection."""
    for origin in planner.origins():
        # A shard leaves whole partitions alone: they hold every shard's rows (docs/scaling.md).
        if origin == "active" and planner.in_shard is None and partitions.eligible(planner, conn):
            dropped = partitions.drop_due_partitions(
                conn, planner, run_id=ctx.run_id, pack_digest=ctx.loaded.digest, now=ctx.now, secret=ctx.secret
            )
            if dropped:
                totals = result.counts.setdefault(planner.name, {})
                totals["active->purged"] = totals.get("active->purged", 0) + dropped
                with conn.begin():  # whole runs only, which are not resumed: no need to share the drop's transaction
                    tally.add(conn, ctx.run_id, ctx.shard, {planner.name: {"active->purged": dropped}}, {})
        after: Any = None
        attempts = 0
        while True:
            try:
                try:
                    with conn.begin():
                        lock.verify()
                        batch, resume = planner.next_batch(conn, origin, after)
                        if batch is None:
                            break
                        applied = witness(conn, ctx, planner, batch)
                        counts = apply_batch(conn, ctx, planner, applied)
                        erased: dict[int, int] = {}
                        for move in _all_moves(applied):
                            if move.request_id is not None:
                                erased[move.request_id] = erased.get(move.request_id, 0) + 1
                        # Committed with the batch: a killed attempt's work is counted once (retention.store.tally).
                        tally.add(conn, ctx.run_id, ctx.shard, counts, erased)
                except BaseException:
                    ctx.archive.after_rollback()  # the batch's payload deletions rolled back with it
                    raise
            except sa.exc.DBAPIError as exc:
                ledger.lock_timing(conn)
                # Concurrent shards on MariaDB or SQLite may deadlock or find the
                # database locked; the batch was rolled back whole, so run it again.
                if not ctx.retry or exc.connection_invalidated or not _retryable(exc) or attempts >= _RETRIES:
                    raise
                attempts += 1
                log.warning("batch_retried", dataset=planner.name, attempt=attempts, run_id=ctx.run_id)
                time.sleep(0.05 * attempts)
                continue
            attempts = 0
            after = resume
            _note_ledger_lock(conn, result)
            ctx.archive.after_commit()
            ctx.statistics.after_commit(conn)
            result.batches += 1
            for name, per in counts.items():
                totals = result.counts.setdefault(name, {})
                for transition, count in per.items():
                    totals[transition] = totals.get(transition, 0) + count
            for request, moved in erased.items():
                result.erased[request] = result.erased.get(request, 0) + moved
            log.info("batch_applied", dataset=planner.name, counts=counts, run_id=ctx.run_id)
            if on_batch is not None:
                on_batch(applied)
            if ctx.should_stop is not None and ctx.should_stop():
                raise _Interrupted
            if batch.scanned < planner.batch_size:
                break


def _all_moves(batch: Batch) -> Iterator[Move]:
    yield from batch.moves
    for follower in batch.followers:
        yield from _all_moves(follower)


def _guard_passes(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    result: RunResult,
    allow_mass: Sequence[str],
) -> bool:
    """False when a guard refuses this dataset; overrides are recorded and let it pass."""
    with reading(conn):
        trips = guard_trips(conn, ctx.loaded, planner)
    if not trips:
        return True
    if "*" not in allow_mass and planner.name not in allow_mass:
        result.guarded[planner.name] = guard_message(planner.name, trips)
        for trip in trips:
            log.warning(
                "guard_tripped",
                dataset=trip.dataset,
                transition=trip.transition,
                count=trip.count,
                share=round(trip.share, 4),
                run_id=ctx.run_id,
            )
        return False
    pack = ctx.loaded.pack
    drafts = []
    for trip in trips:
        override = {
            "dataset": trip.dataset,
            "transition": trip.transition,
            "count": trip.count,
            "rows": trip.rows,
            "share": round(trip.share, 6),
            "max_share": trip.max_share,
            "max_count": trip.max_count,
        }
        result.overrides.append(override)
        drafts.append(
            ledger.EntryDraft(
                run_id=ctx.run_id,
                pack_id=pack.pack,
                pack_digest=ctx.loaded.digest,
                dataset=trip.dataset,
                transition="guard_overridden",
                action=None,
                basis=None,
                due_at=None,
                record_pseudonym=None,
                subject_pseudonym=None,
                count=trip.count,
                detail=override,
            )
        )
        log.warning(
            "guard_overridden",
            dataset=trip.dataset,
            transition=trip.transition,
            count=trip.count,
            run_id=ctx.run_id,
        )
    with conn.begin():
        ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)
    return True


def _settle_erasure_requests(
    conn: sa.Connection, ctx: RunContext, planners: dict[str, DatasetPlanner], erased: dict[int, int]
) -> None:
    """Mark requests processed once none of the subject's records is left to move.

    A request whose subject still has records under a legal hold stays open,
    so that releasing the hold lets the next run finish the erasure. The
    outcome says what the request did: ``erased`` (records moved in this
    run), ``nothing to move`` (the subject's records were already where the
    pack puts them), or ``no records found`` (no dataset knows the subject);
    a ledger entry records it.
    """
    er = store.erasure_requests
    erasing = [p for p in planners.values() if p.dataset.on_erasure and p.identified]
    if not planners:
        return
    today = next(iter(planners.values())).today
    pack = ctx.loaded.pack
    with conn.begin():
        requests = conn.execute(
            sa.select(er.c.id, er.c.subject_key, er.c.email, er.c.email_pseudonym).where(
                er.c.status == "open", er.c.received_on <= today
            )
        ).all()
        drafts = []
        for request in requests:
            if any(p.pending_for_subject(conn, request) for p in erasing):
                continue
            moved = erased.get(request.id, 0)
            if moved:
                outcome = "erased"
            elif any(p.knows_subject(conn, request) for p in planners.values()):
                outcome = "nothing to move"
            else:
                outcome = "no records found"
            conn.execute(
                er.update()
                .where(er.c.id == request.id)
                .values(status="processed", processed_run_id=ctx.run_id, outcome=outcome)
            )
            drafts.append(
                ledger.EntryDraft(
                    run_id=ctx.run_id,
                    pack_id=pack.pack,
                    pack_digest=ctx.loaded.digest,
                    dataset=None,
                    transition="erasure_processed",
                    action=None,
                    basis=pack.erasure.basis,
                    due_at=None,
                    record_pseudonym=None,
                    subject_pseudonym=(
                        pseudonyms.subject_pseudonym(ctx.secret, request.subject_key)
                        if request.subject_key
                        else request.email_pseudonym
                    ),
                    count=moved,
                    detail={"erasure_request": request.id, "outcome": outcome},
                )
            )
        ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)


def _close_abandoned_runs(conn: sa.Connection) -> None:
    """Whole runs left 'running' by a killed process: we hold the lock, so they are over.

    Run groups are not touched: a group is closed by its last shard or by
    :func:`retention.engine.groups.close_stale` (a whole run does not start while one is open).
    """
    conn.execute(
        store.runs.update()
        .where(store.runs.c.status == "running", store.runs.c.mode == "run", store.runs.c.run_group.is_(None))
        .values(status="abandoned", error="the process ended without finishing (killed or lost)")
    )


def _finish(engine: sa.Engine, result: RunResult, error: str | None = None, swallow: bool = False) -> None:
    values: dict[str, Any] = {
        "finished_at": utcnow(),
        "status": result.status,
        "counts": json.dumps(result.counts, sort_keys=True),
        "error": error
        or (
            json.dumps({**result.failures, **result.guarded}, sort_keys=True)
            if result.failures or result.guarded
            else None
        ),
        "overrides": json.dumps(result.overrides, sort_keys=True) if result.overrides else None,
        "anomalies": json.dumps(result.anomalies, sort_keys=True) if result.anomalies else None,
    }
    try:
        with engine.begin() as conn:
            conn.execute(store.runs.update().where(store.runs.c.id == result.run_id).values(**values))
    except sa.exc.DBAPIError:
        if not swallow:
            raise
        log.error("run_record_failed", run_id=result.run_id)


# --------------------------------------------------------------------------
# Sharded runs: one logical run of N shards (docs/scaling.md)
# --------------------------------------------------------------------------

_GROUPS = uuid.UUID("5d1e4f0a-8f3b-4d6c-9a57-3c2b1e0f9d42")
_DONE = ("succeeded", "partial", "guarded")  # a shard in any other state runs again


def group_run_id(run_group: str) -> str:
    """The logical run of a run group: the same id in every shard's process."""
    return str(uuid.uuid5(_GROUPS, run_group))


def default_run_group(as_of: dt.datetime, shards: int) -> str:
    """The group shards join when none is named: the as-of day and the shard count."""
    return f"{as_of.astimezone(dt.UTC):%Y-%m-%d}-{shards}"


def _join_group(
    conn: sa.Connection,
    lock: RunLock,
    ctx: RunContext,
    run_group: str,
    shard: ShardSpec,
    as_of_fixed: bool,
    short_notice: dict[str, Any] | None,
) -> tuple[Bounds, int]:
    """Read the group's bounds and as-of, creating the group (bounds from this snapshot) if this shard is first.

    Returns the bounds and this shard's attempt number (1 for its first process).

    Shards that start together race to create it: the database keeps one
    row (primary key), the others roll back and read it. The row is created
    first, without bounds, in a short transaction; its creator then computes
    them once (:func:`_group_bounds`) while the other shards wait for them.
    """
    runs, loaded = store.runs, ctx.loaded
    claimed = False
    for attempt in range(_RETRIES + 1):
        try:
            with conn.begin():
                lock.verify()  # SQLite: the write lock first, so concurrent shards take turns
                row = conn.execute(sa.select(runs).where(runs.c.id == ctx.run_id)).first()
                bounds_text: str | None = None
                if row is None:
                    _record_pack(conn, loaded, ctx.now())
                    conn.execute(
                        runs.insert().values(
                            id=ctx.run_id,
                            mode="run",
                            pack_id=loaded.id,
                            pack_digest=loaded.digest,
                            as_of=ctx.as_of,
                            started_at=ctx.now(),
                            status="running",
                            run_group=run_group,
                            shards=shard.count,
                            shard_bounds=None,
                        )
                    )
                    claimed = True
                    if short_notice is not None:
                        ledger.append(conn, [_short_notice_entry(ctx, short_notice)], ctx.now(), secret=ctx.secret)
                    log.info("run_group_started", run_group=run_group, shards=shard.count, run_id=ctx.run_id)
                else:
                    if row.pack_digest != loaded.digest or row.shards != shard.count or row.shards is None:
                        raise ConfigError(
                            f"run group {run_group!r} was started with "
                            + (
                                f"{row.shards} shards and pack {row.pack_id} ({row.pack_digest[:12]})"
                                if row.shards is not None
                                else "no shards"
                            )
                            + f"; this shard names {shard.count} shards and pack {loaded.id} ({loaded.digest[:12]})"
                        )
                    if row.status == "abandoned":
                        raise ConfigError(
                            f"run group {run_group!r} was closed as abandoned; start the shards under a new group"
                        )
                    if as_of_fixed and row.as_of != ctx.as_of:
                        raise ConfigError(
                            f"run group {run_group!r} runs as of {row.as_of.isoformat()}, not {ctx.as_of.isoformat()}"
                        )
                    ctx.as_of = row.as_of
                    bounds_text = row.shard_bounds
                rs = store.run_shards
                mine = (rs.c.run_id == ctx.run_id) & (rs.c.shard == shard.index)
                before = conn.execute(sa.select(rs.c.attempts).where(mine)).first()
                attempts = 1 if before is None else int(before.attempts or 1) + 1
                conn.execute(rs.delete().where(mine))
                conn.execute(
                    rs.insert().values(
                        run_id=ctx.run_id,
                        shard=shard.index,
                        status="running",
                        owner=_owner(),
                        started_at=ctx.now(),
                        attempts=attempts,
                    )
                )
            ledger.lock_timing(conn)
            if bounds_text is not None:
                return Bounds.from_json(bounds_text), attempts
            return _group_bounds(conn, lock, ctx, shard, claimed), attempts
        except sa.exc.DBAPIError as exc:
            ledger.lock_timing(conn)
            if exc.connection_invalidated or attempt >= _RETRIES:
                raise
            if not isinstance(exc, sa.exc.IntegrityError) and not _retryable(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


BOUNDS_WAIT = 600.0
"""Seconds a shard waits for the group's creator to record the bounds before it computes them itself."""


def _group_bounds(conn: sa.Connection, lock: RunLock, ctx: RunContext, shard: ShardSpec, claimed: bool) -> Bounds:
    """The group's bounds: computed here once if this shard created the group, else waited for.

    A shard that waits past :data:`BOUNDS_WAIT` (its creator died before
    recording them) computes them itself; the first to record them wins
    (``WHERE shard_bounds IS NULL``) and every shard uses the recorded ones.
    """
    runs = store.runs
    deadline = time.monotonic() + BOUNDS_WAIT
    pause = 0.05
    while not claimed and time.monotonic() < deadline:
        with reading(conn):
            text = conn.execute(sa.select(runs.c.shard_bounds).where(runs.c.id == ctx.run_id)).scalar()
        if text is not None:
            return Bounds.from_json(text)
        if ctx.should_stop is not None and ctx.should_stop():
            raise _Interrupted
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    for attempt in range(_RETRIES + 1):
        try:
            with conn.begin():
                lock.verify()
                planners = build_planners(conn, PlanContext(ctx.loaded, ctx.as_of))
                bounds = compute_bounds(conn, planners, shard.count)
                recorded = conn.execute(
                    runs.update()
                    .where(runs.c.id == ctx.run_id, runs.c.shard_bounds.is_(None))
                    .values(shard_bounds=bounds.to_json())
                ).rowcount
                if recorded != 1:
                    text = conn.execute(sa.select(runs.c.shard_bounds).where(runs.c.id == ctx.run_id)).scalar_one()
                    bounds = Bounds.from_json(text)
            log.info("shard_bounds_recorded" if recorded == 1 else "shard_bounds_read", run_id=ctx.run_id)
            return bounds
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or attempt >= _RETRIES or not _retryable(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _shard_done(conn: sa.Connection, lock: RunLock, ctx: RunContext, result: RunResult, shard: ShardSpec) -> bool:
    """Record this shard's outcome; True when it is the last of its group to finish (it then closes the run).

    The group's run row is locked first, so two shards finishing together
    take turns and exactly one of them sees every shard done.
    """
    runs, rs = store.runs, store.run_shards
    for attempt in range(_RETRIES + 1):
        try:
            with conn.begin():
                lock.verify()
                # (nothing to lock where the batch holds the write lock: _for_update is then a plain read)
                conn.execute(_for_update(conn, sa.select(runs.c.id).where(runs.c.id == ctx.run_id))).first()
                conn.execute(
                    rs.update()
                    .where(rs.c.run_id == ctx.run_id, rs.c.shard == shard.index)
                    .values(**_shard_values(result, committed=(conn, ctx.run_id, shard.index)))
                )
                statuses = conn.execute(
                    _for_update(conn, sa.select(rs.c.shard, rs.c.status).where(rs.c.run_id == ctx.run_id))
                ).all()
                done = len(statuses) == shard.count and all(r.status in _DONE for r in statuses)
                if not done:
                    return False
                claimed = conn.execute(
                    runs.update().where(runs.c.id == ctx.run_id, runs.c.status == "running").values(status="closing")
                ).rowcount
                return claimed == 1
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or attempt >= _RETRIES or not _retryable(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _shard_values(
    result: RunResult, error: str | None = None, committed: tuple[sa.Connection, str, int] | None = None
) -> dict[str, Any]:
    """The shard's row; ``committed`` (connection, run, shard): its counts from every attempt, not this one's only."""
    stats = {"batches": result.batches, "ledger_lock": _rounded(result.ledger_lock), "attempts": result.attempts}
    counts, erased = result.counts, result.erased
    if committed is not None:
        counts, erased = tally.counts(*committed), tally.erased(*committed)
    return {
        "status": result.status,
        "finished_at": utcnow(),
        "counts": json.dumps(counts, sort_keys=True),
        "erased": json.dumps({str(k): v for k, v in erased.items()}, sort_keys=True),
        "stats": json.dumps(stats, sort_keys=True),
        "error": error
        or (
            json.dumps({**result.failures, **result.guarded}, sort_keys=True)
            if result.failures or result.guarded
            else None
        ),
    }


_WORST = ("failed", "partial", "guarded", "succeeded")


def _close_group(conn: sa.Connection, engine: sa.Engine, ctx: RunContext) -> str:
    """The last shard closes the logical run: erasure requests, minimising, indexing, the totals."""
    rs, runs = store.run_shards, store.runs
    with reading(conn):
        rows = conn.execute(sa.select(rs).where(rs.c.run_id == ctx.run_id)).all()
        planners = build_planners(conn, PlanContext(ctx.loaded, ctx.as_of))
        # What every attempt of every shard committed, each record once (retention.store.tally).
        erased = tally.erased(conn, ctx.run_id)
        counts = tally.counts(conn, ctx.run_id)
    errors: dict[str, Any] = {}
    for row in rows:
        if row.error:
            errors[f"shard {row.shard}"] = json.loads(row.error)
    _close_run(conn, engine, ctx, planners, erased)
    status: str = min((str(r.status) for r in rows), key=lambda s: _WORST.index(s) if s in _WORST else 0)
    with conn.begin():
        conn.execute(
            runs.update()
            .where(runs.c.id == ctx.run_id)
            .values(
                status=status,
                finished_at=utcnow(),
                counts=json.dumps(counts, sort_keys=True),
                error=json.dumps(errors, sort_keys=True) if errors else None,
            )
        )
    log.info("run_group_finished", run_id=ctx.run_id, status=status, counts=counts)
    return status


def run_shard(
    engine: sa.Engine,
    loaded: LoadedPack,
    as_of: dt.datetime,
    *,
    secret: bytes,
    shard: ShardSpec,
    run_group: str | None = None,
    as_of_fixed: bool = True,
    archive: ArchiveStore | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    allow_mass: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
    short_notice: dict[str, Any] | None = None,
) -> RunResult:
    """Apply shard ``shard`` of the run group ``run_group``: every pass of every dataset, this shard's keys only.

    The shards of a group make one logical run (one row in ``retention_runs``,
    its ledger entries under one run id); each holds its own lock, so they
    run side by side, and the last one to finish closes the run. Without
    ``as_of_fixed`` a shard takes the as-of the group started with.
    """
    group = run_group or default_run_group(as_of, shard.count)
    run_id = group_run_id(group)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    store_ = archive or SameDatabaseArchive()
    ctx = RunContext(loaded, run_id, as_of, secret, store_, should_stop=should_stop, retry=True, shard=shard.index)
    result = RunResult(run_id, "running", started_at=ctx.now(), shard=str(shard))
    joined = False
    try:
        with engine.connect() as conn:
            isolation = dialect_for(conn).shard_isolation_level
            if isolation is not None:
                conn = conn.execution_options(isolation_level=isolation)
            lock = RunLock(conn, run_id, shard)
            lock.acquire()
            try:
                with conn.begin():
                    _require_schema(conn, loaded)
                bounds, result.attempts = _join_group(conn, lock, ctx, group, shard, as_of_fixed, short_notice)
                joined = True
                lock.check_whole_run_free()  # again, now that the group is visible (retention.store.run_groups)
                log.info(
                    "shard_started",
                    shard=str(shard),
                    run_group=group,
                    as_of=ctx.as_of.isoformat(),
                    attempt=result.attempts,
                )
                store_.bind(engine)
                # Shards run side by side: only the group's closing shard may rotate the key file.
                ctx.archive_keys = _archive_keys(engine, finish_rotation=False)
                plan_ctx = PlanContext(loaded, ctx.as_of, shard=ShardFilter(shard, bounds))
                with reading(conn):
                    planners = build_planners(conn, plan_ctx)
                _run_datasets(conn, lock, ctx, plan_ctx, planners, result, on_batch, allow_mass)
                result.status = "partial" if result.failures else "guarded" if result.guarded else "succeeded"
                if _shard_done(conn, lock, ctx, result, shard):
                    _close_group(conn, engine, ctx)
            finally:
                lock.release()
    except _Interrupted:
        result.status = "interrupted"
        log.warning("run_interrupted", batches=result.batches, shard=str(shard))
        _record_shard(engine, ctx, result, shard, None)
    except BaseException as exc:
        if joined and result.status == "running":
            result.status = "failed"
            _record_shard(engine, ctx, result, shard, describe_failure(exc))
        raise
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
    result.finished_at = utcnow()
    log.info(
        "shard_finished",
        run_id=run_id,
        shard=str(shard),
        status=result.status,
        counts=result.counts,
        batches=result.batches,
        ledger_lock=_rounded(result.ledger_lock),
    )
    return result


def _record_shard(engine: sa.Engine, ctx: RunContext, result: RunResult, shard: ShardSpec, error: str | None) -> None:
    rs = store.run_shards
    try:
        with engine.begin() as conn:
            conn.execute(
                rs.update()
                .where(rs.c.run_id == ctx.run_id, rs.c.shard == shard.index)
                .values(**_shard_values(result, error))
            )
    except sa.exc.DBAPIError:
        log.error("run_record_failed", run_id=ctx.run_id, shard=str(shard))


def plan_shards(engine: sa.Engine, loaded: LoadedPack, as_of: dt.datetime, shards: int) -> list[dict[str, Any]]:
    """How ``--shard I/N`` splits the run: per dataset and shard, the key range and what moves.

    The bounds are computed from the database as it is now, as the first
    shard of a group would compute them.
    """
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        _require_schema(conn, loaded)
        missing = engine_tables_missing(conn)
        tables = EngineTables() if missing is None else EngineTables.absent()
        bounds = compute_bounds(conn, build_planners(conn, PlanContext(loaded, as_of, tables=tables)), shards)
        for index in range(shards):
            spec = ShardSpec(index, shards)
            shard = ShardFilter(spec, bounds)
            ctx = PlanContext(loaded, as_of, tables=tables, shard=shard)
            summary = PlanSummary(loaded.id, loaded.digest, as_of)
            for name, planner in build_planners(conn, ctx).items():
                planner.summarize(conn, summary, sample_size=0)
                _, low, high = shard.range_of(name)
                per = summary.transitions.get(name, {})
                rows.append(
                    {
                        "dataset": name,
                        "shard": str(spec),
                        "key_space": bounds.datasets[name],
                        "from": low,
                        "below": high,
                        "records": planner.table_rows(conn),
                        "transitions": sum(per.values()),
                        "counts": dict(per),
                    }
                )
        conn.rollback()
    return rows
