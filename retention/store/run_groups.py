"""Open run groups, as rows: the one exclusion rule for whole runs and shard groups (docs/scaling.md, "Locks").

A run group is *open* from the moment its first shard records it until the
shard that finishes last closes it (or until it is closed as stale,
:func:`retention.engine.groups.close_stale`). While a group is open a whole
run is refused (exit 5), whatever became of its shards' processes: a whole
run between two shards of one logical run would move records the group's
remaining shards are counted for, and the group's row would be marked
abandoned under live shards. The rule is a row in ``retention_runs``, read
after the whole run took the database's lock, so it holds the same way on
PostgreSQL, MariaDB (whose named locks have no shared mode) and SQLite. The
other way round, a shard is refused while a whole run holds the database's
lock; it checks that again once its group's row is committed, so a whole
run and a shard starting at the same moment cannot both go on (each writes
its mark, then reads the other's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention.errors import LockHeldError
from retention.store import tables as store

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


def stored(conn: sa.Connection, name: str) -> bool:
    """Whether a run group of this name was ever recorded (open or closed).

    Why: names stored before the run-group form was checked (a space, a
    slash) must still select their group, so that its failed shards can be
    rerun under the same name and the group finished.
    """
    runs = store.runs
    return conn.execute(sa.select(runs.c.id).where(runs.c.run_group == name).limit(1)).first() is not None


def refuse_beside_open_group(conn: sa.Connection) -> None:
    """Raise LockHeldError (exit 5) when a run group is open: a whole run must not start beside it."""
    groups = open_groups(conn)
    if groups:
        first = groups[0]
        raise LockHeldError(
            f"run group {first.run_group!r} is open ({first.done} of {first.shards} shards done): "
            "run its remaining shards, or close it with `retention run-groups --close-stale` once they are gone"
        )


__all__ = ["DONE", "OPEN", "Group", "open_groups", "refuse_beside_open_group"]
