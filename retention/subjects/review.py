"""Disposition review: purges that wait for an operator's decision.

A dataset with ``review: true`` never purges on its own: ``run`` files the
due purges as items of a review batch; an operator approves or rejects the
batch, naming who and why (both go to the ledger); the next run purges the
approved items that are still due and not held, and marks the batch
completed once none is left.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.ledger import chain as ledger
from retention.store import tables as store
from retention.timing.clock import utcnow


def list_batches(conn: sa.Connection, *, include_done: bool = False) -> list[dict[str, Any]]:
    rb, ri = store.review_batches, store.review_items
    items = sa.select(sa.func.count()).where(ri.c.batch_id == rb.c.id).scalar_subquery().label("items")
    query = sa.select(rb, items).order_by(rb.c.id)
    if not include_done:
        query = query.where(rb.c.status.in_(["pending", "approved"]))
    return [dict(r._mapping) for r in conn.execute(query)]


def show_batch(conn: sa.Connection, batch_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rb, ri = store.review_batches, store.review_items
    row = conn.execute(sa.select(rb).where(rb.c.id == batch_id)).first()
    if row is None:
        raise ConfigError(f"no review batch {batch_id}; list them with: retention review list")
    items = conn.execute(
        sa.select(ri.c.record_key, ri.c.transition, ri.c.due_at)
        .where(ri.c.batch_id == batch_id)
        .order_by(ri.c.record_key)
    ).all()
    return dict(row._mapping), [dict(i._mapping) for i in items]


def decide(
    conn: sa.Connection,
    batch_id: int,
    *,
    approve: bool,
    by: str,
    reason: str,
    now: dt.datetime | None = None,
) -> None:
    """Approve or reject a pending batch; the decision and who took it go to the ledger."""
    when = now or utcnow()
    if not by.strip() or not reason.strip():
        raise ConfigError("a review decision needs --by (who) and --reason (why)")
    batch, items = show_batch(conn, batch_id)
    if batch["status"] != "pending":
        raise ConfigError(f"review batch {batch_id} is {batch['status']}, not pending")
    status = "approved" if approve else "rejected"
    rb = store.review_batches
    conn.execute(
        rb.update().where(rb.c.id == batch_id).values(status=status, decided_by=by, decided_at=when, reason=reason)
    )
    ledger.append(
        conn,
        [
            ledger.EntryDraft(
                run_id=None,
                pack_id=None,
                pack_digest=None,
                dataset=batch["dataset"],
                transition=f"review_{status}",
                action=None,
                basis=None,
                due_at=None,
                record_pseudonym=None,
                subject_pseudonym=None,
                count=len(items),
                detail={"review_id": batch_id, "by": by, "reason": reason},
            )
        ],
        when,
    )
