"""The run lock: one run at a time per database, held in ``retention_run_lock``.

A holder that is gone (its process dead, or silent for longer than
``STALE_AFTER``) is taken over; a live one refuses the second run with
:class:`~retention.errors.LockHeldError`. Split from :mod:`retention.engine.execute`.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
import structlog

from retention.dialects import dialect_for
from retention.engine import run_status
from retention.engine.run_status import Holder
from retention.engine.shards import ShardSpec
from retention.errors import (
    LockHeldError,
    LockLostError,
)
from retention.store import tables as store
from retention.timing.clock import utcnow

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


def _held_by(what: str, holder: Holder) -> str:
    return f"another retention run holds {what}: {holder.sentence()} (retention status shows how far it got)"


@contextmanager
def holding_lock(engine: sa.Engine) -> Iterator[RunLock]:
    """Hold the run lock for a new run id, on a connection of its own, before anything else of the run.

    ``retention run`` takes it before it reads its pack: a run refused the
    lock has spent nothing (issue 24), and of two runs started a second
    apart the first holds the lock. :func:`retention.engine.execute.run`
    then works on ``lock.conn`` under ``lock.run_id``.
    """
    with engine.connect() as conn:
        lock = RunLock(conn, str(uuid.uuid4()))
        lock.acquire()
        try:
            yield lock
        finally:
            lock.release()


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
