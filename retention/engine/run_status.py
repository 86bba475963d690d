"""Who holds the run lock, since when, where, and how far that run has got.

The lock itself is an advisory lock on PostgreSQL and MariaDB and a row of
``retention_run_lock`` on SQLite (:class:`retention.execute.RunLock`). On
every database the holder also writes that row, so a run refused with exit 5
and ``retention status`` can name it: run id, since when, host and pid. How
far it got comes from the ledger, which every batch appends to in its own
transaction: batches and transitions committed so far, and when the last one
committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.store import tables as store


@dataclass(frozen=True)
class Holder:
    """One row of the lock table: a run (or a shard of one) that holds the lock."""

    name: str
    run_id: str
    host: str
    pid: str
    acquired_at: dt.datetime
    heartbeat_at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> Holder:
        host, _, pid = str(row.owner).rpartition(":")
        return cls(row.name, row.run_id, host, pid, _aware(row.acquired_at), _aware(row.heartbeat_at))

    def sentence(self) -> str:
        """The holder as the exit-5 message names it (all UTC: the message may be read in a log)."""
        what = "" if self.name == "run" else f", {self.name}"
        return (
            f"run {self.run_id}{what}, since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"on host {self.host}, pid {self.pid}"
        )


@dataclass(frozen=True)
class Progress:
    """What a running run has committed so far, from its ledger entries and its run row."""

    run_id: str
    pack_id: str | None
    status: str | None
    started_at: dt.datetime | None
    batches: int
    transitions: int
    last_batch_at: dt.datetime | None


def _aware(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def holders(conn: sa.Connection) -> list[Holder]:
    """Every lock row, the whole run's first then the shards in order."""
    table = store.run_lock
    rows = conn.execute(sa.select(table).order_by(table.c.acquired_at, table.c.name)).all()
    return [Holder.from_row(row) for row in rows]


def progress(conn: sa.Connection, run_id: str) -> Progress:
    """Batches and transitions the run has committed (its ledger entries carrying a dataset)."""
    entries = store.ledger
    totals = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(entries.c.count), 0),
            sa.func.max(entries.c.recorded_at),
        ).where(entries.c.run_id == run_id, entries.c.transition.like("%->%"))
    ).one()
    runs = store.runs
    run = conn.execute(sa.select(runs.c.pack_id, runs.c.status, runs.c.started_at).where(runs.c.id == run_id)).first()
    return Progress(
        run_id=run_id,
        pack_id=run.pack_id if run else None,
        status=run.status if run else None,
        started_at=_aware(run.started_at) if run and run.started_at else None,
        batches=int(totals[0] or 0),
        transitions=int(totals[1] or 0),
        last_batch_at=_aware(totals[2]) if totals[2] is not None else None,
    )


@dataclass(frozen=True)
class LockState:
    """A lock row and whether its holder still holds the lock (a crashed run may leave its row)."""

    holder: Holder
    live: bool
    progress: Progress


def _suffix(name: str) -> str:
    """The advisory lock name's tail for a lock row: '' for the whole run, ':shard:I/N' for a shard."""
    return "" if name == "run" else ":" + name.replace(" ", ":")


def _live(conn: sa.Connection, holder: Holder, now: dt.datetime, gone: Callable[..., bool]) -> bool:
    held = dialect_for(conn).run_lock_held(conn, _suffix(holder.name))
    if held is not None:
        return held
    return not gone(f"{holder.host}:{holder.pid}", holder.heartbeat_at, now)


def live_holders(conn: sa.Connection, now: dt.datetime, gone: Callable[..., bool]) -> list[Holder]:
    """The lock rows whose holder still holds the lock."""
    return [h for h in holders(conn) if _live(conn, h, now, gone)]


def lock_states(
    conn: sa.Connection, now: dt.datetime, gone: Callable[[str, dt.datetime, dt.datetime], bool]
) -> list[LockState]:
    """Every lock row, whether it is live, and how far its run has got.

    ``gone`` says whether a SQLite lock row's holder is gone (owner, heartbeat, now):
    :func:`retention.engine.execute.holder_gone`, the test the lock itself applies.
    """
    return [LockState(h, _live(conn, h, now, gone), progress(conn, h.run_id)) for h in holders(conn)]
