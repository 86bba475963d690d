"""Closing a run group whose shards are gone for good (docs/scaling.md, "Locks").

A group stays open until its last shard closes it (see
:mod:`retention.store.run_groups`: whole runs are refused meanwhile). A group
whose shards will not come back (a pod deleted, a Job given up) is closed
by :func:`close_stale`, only with evidence that no process holds any of its
shards: that this process can take every shard's lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

from retention.engine.execute import RunLock
from retention.engine.shards import ShardSpec
from retention.errors import LockHeldError
from retention.logs import get_logger
from retention.store import tables as store
from retention.store import tally
from retention.store.run_groups import DONE, OPEN, Group, open_groups
from retention.timing.clock import utcnow

log = get_logger()


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
    what its shards committed (:mod:`retention.store.tally`).
    """
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


__all__ = ["Closed", "close_stale"]
