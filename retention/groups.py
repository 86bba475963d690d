"""One exclusion rule for whole runs and shard groups, on every database (docs/scaling.md, "Locks").

A run group is *open* from the moment its first shard records it until the
shard that finishes last closes it (or until it is closed as stale, below).
While a group is open a whole run is refused (exit 5), whatever became of
its shards' processes: a whole run between two shards of one logical run
would move records the group's remaining shards are counted for, and the
group's row would be marked abandoned under live shards. The rule is a row
in ``retention_runs``, read after the whole run took the database's lock,
so it holds the same way on PostgreSQL, MariaDB (whose named locks have no
shared mode) and SQLite. The other way round, a shard is refused while a
whole run holds the database's lock; it checks that again once its group's
row is committed, so a whole run and a shard starting at the same moment
cannot both go on (each writes its mark, then reads the other's).

A group whose shards are gone for good (a pod deleted, a Job given up) is
closed by :func:`close_stale`: only with evidence that no process holds any
of its shards, which is that this process can take every shard's lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention import store, tally
from retention.clock import utcnow
from retention.errors import LockHeldError
from retention.logs import get_logger

log = get_logger()

OPEN = ("running", "closing")
DONE = ("succeeded", "partial", "guarded")


@dataclass(frozen=True)
class Group:
    """An open run group as `run-groups` shows it."""

    run_group: str
    run_id: str
    shards: int
    done: int
    started_at: Any
    attempts: int


def open_groups(conn: sa.Connection) -> list[Group]:
    """Every open run group, oldest first."""
    runs, rs = store.runs, store.run_shards
    rows = conn.execute(
        sa.select(runs.c.id, runs.c.run_group, runs.c.shards, runs.c.started_at)
        .where(runs.c.run_group.is_not(None), runs.c.status.in_(OPEN))
        .order_by(runs.c.started_at)
    ).all()
    groups = []
    for row in rows:
        shards = conn.execute(sa.select(rs.c.status, rs.c.attempts).where(rs.c.run_id == row.id)).all()
        groups.append(
            Group(
                run_group=row.run_group,
                run_id=row.id,
                shards=int(row.shards or 0),
                done=sum(1 for s in shards if s.status in DONE),
                started_at=row.started_at,
                attempts=sum(int(s.attempts or 1) for s in shards),
            )
        )
    return groups


def refuse_beside_open_group(conn: sa.Connection) -> None:
    """Raise LockHeldError (exit 5) when a run group is open: a whole run must not start beside it."""
    groups = open_groups(conn)
    if groups:
        first = groups[0]
        raise LockHeldError(
            f"run group {first.run_group!r} is open ({first.done} of {first.shards} shards done): "
            "run its remaining shards, or close it with `retention run-groups --close-stale` once they are gone"
        )


@dataclass(frozen=True)
class Closed:
    run_group: str
    closed: bool
    reason: str


def close_stale(engine: sa.Engine, run_group: str | None = None) -> list[Closed]:
    """Close open groups (all, or ``run_group``) whose shards no process holds; what was done, per group.

    Evidence: this process takes the lock of every shard of the group (a
    live shard's process holds its own), and keeps them while it marks the
    group and its unfinished shards ``abandoned``; the group's counts are
    what its shards committed (:mod:`retention.tally`).
    """
    from retention.execute import RunLock
    from retention.shards import ShardSpec

    outcome: list[Closed] = []
    with engine.connect() as conn:
        with conn.begin():
            groups = [g for g in open_groups(conn) if run_group is None or g.run_group == run_group]
        for group in groups:
            locks: list[RunLock] = []
            held: str | None = None
            try:
                for index in range(group.shards):
                    lock = RunLock(conn, f"close-stale:{group.run_id}"[:36], ShardSpec(index, group.shards))
                    try:
                        lock.acquire()
                    except LockHeldError:
                        held = f"shard {index}/{group.shards} is held by a live process"
                        break
                    locks.append(lock)
                if held is None:
                    _close(conn, group)
                    outcome.append(Closed(group.run_group, True, f"closed: {group.done} of {group.shards} shards done"))
                    log.warning("run_group_closed_stale", run_id=group.run_id, shards=group.shards, done=group.done)
                else:
                    outcome.append(Closed(group.run_group, False, f"left open: {held}"))
            finally:
                for lock in reversed(locks):
                    lock.release()
    return outcome


def _close(conn: sa.Connection, group: Group) -> None:
    runs, rs = store.runs, store.run_shards
    with conn.begin():
        counts = tally.counts(conn, group.run_id)
        conn.execute(
            rs.update()
            .where(rs.c.run_id == group.run_id, rs.c.status.not_in(DONE))
            .values(status="abandoned", finished_at=utcnow())
        )
        conn.execute(
            runs.update()
            .where(runs.c.id == group.run_id, runs.c.status.in_(OPEN))
            .values(
                status="abandoned",
                finished_at=utcnow(),
                counts=json.dumps(counts, sort_keys=True),
                error=json.dumps(
                    {"closed_stale": f"{group.done} of {group.shards} shards done; no process held the others"}
                ),
            )
        )


__all__ = ["Closed", "Group", "close_stale", "open_groups", "refuse_beside_open_group"]
