"""A run's counts, committed with the data they count (docs/scaling.md, "Counts").

A process keeps its own counts in memory, but a process can die between a
batch's commit and its end (SIGKILL, a lost pod, a Celery worker killed and
its task redelivered). Counts kept only there are then lost, and the rerun
that finishes the shard sees only what it moved itself: the run's totals come
out short and an erasure request whose records the killed attempt erased is
closed as "nothing to move". So each batch adds what it moved to
``retention_run_counts`` and ``retention_run_erasures`` in its own
transaction: the batch and its counts commit together or not at all, and
whoever closes the run sums them, whatever number of attempts it took.

The addition is an upsert that increments (``ON CONFLICT DO UPDATE`` on
PostgreSQL and SQLite, ``ON DUPLICATE KEY UPDATE`` on MariaDB); rows are
keyed by shard, so concurrent shards never touch the same row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.store import tables as store


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect_for(conn).upsert_add(conn, table, rows, "count")


def add(
    conn: sa.Connection,
    run_id: str,
    shard: int,
    counts: Mapping[str, Mapping[str, int]],
    erased: Mapping[int, int],
) -> None:
    """Add one batch's moves to the run's counts, inside the batch's transaction."""
    _upsert(
        conn,
        store.run_counts,
        [
            {"run_id": run_id, "shard": shard, "dataset": name, "transition": transition, "count": n}
            for name, per in sorted(counts.items())
            for transition, n in sorted(per.items())
            if n
        ],
    )
    _upsert(
        conn,
        store.run_erasures,
        [
            {"run_id": run_id, "shard": shard, "request_id": request, "count": n}
            for request, n in sorted(erased.items())
            if n
        ],
    )


def counts(conn: sa.Connection, run_id: str, shard: int | None = None) -> dict[str, dict[str, int]]:
    """Records moved per dataset and transition: of one shard, or of every shard of the run."""
    rc = store.run_counts
    query = sa.select(rc.c.dataset, rc.c.transition, sa.func.sum(rc.c.count)).where(rc.c.run_id == run_id)
    if shard is not None:
        query = query.where(rc.c.shard == shard)
    total: dict[str, dict[str, int]] = {}
    for dataset, transition, n in conn.execute(query.group_by(rc.c.dataset, rc.c.transition)):
        total.setdefault(dataset, {})[transition] = int(n)
    return total


def erased(conn: sa.Connection, run_id: str, shard: int | None = None) -> dict[int, int]:
    """Records each erasure request moved: in one shard, or in every shard of the run."""
    re_ = store.run_erasures
    query = sa.select(re_.c.request_id, sa.func.sum(re_.c.count)).where(re_.c.run_id == run_id)
    if shard is not None:
        query = query.where(re_.c.shard == shard)
    return {int(r): int(n) for r, n in conn.execute(query.group_by(re_.c.request_id))}


__all__ = ["add", "counts", "erased"]
