"""Partial erasure's mask pass (issue 26 clause 4): mask a person's records at once, keep them on their term.

``on_erasure: {mask: {...}, keep_until: purged}`` serves "on erasure, keep the
fields tax law requires and erase the rest". The request does not move the
record: the pass masks the named columns of every record an open request
reaches (one UPDATE per batch), marks it masked (``retention_erasure_masks``,
so a later run or request does not mask it again) and appends one ledger
entry per batch; the record then keeps its own clock and is purged by it as
usual. The pack refuses masking a column that decides which records there
are or when they are due (docs/rules.md, 'Partial erasure'), so masking
changes no other pass's reading and ``plan`` can count it on the data as it
is before the run.

Every mask pass of a run runs before any dataset's lifecycle passes, so a
record archived in the same run carries masked values into its payload.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.masking import mask_rows
from retention.ledger import chain as ledger
from retention.store import tables as store

if TYPE_CHECKING:
    from retention.engine.plan import DatasetPlanner as PlannerBase

TRANSITION = "erasure_mask"
"""The count's and the ledger entry's name for the mask pass (beside ``from->to`` transitions)."""


def masks(planner: PlannerBase) -> bool:
    """Whether this dataset has a mask pass: a partial erasure, and records that name a person."""
    return planner.dataset.erasure_masking is not None and planner.identified


def _requests(planner: PlannerBase, conn: sa.Connection, keys: list[Any]) -> dict[Any, int]:
    """The lowest-id open request, received by today, naming one of each of these rows' identities (by key).

    One equi-join of the batch's rows with the requests per identity
    (``UNION ALL``), the lowest id taken here: a scalar ``min(id)`` with an
    OR of the identities scanned every open request for every row masked
    (bench/held_or.py). Each arm compares as :meth:`PlannerBase.open_erasure`
    does, which selected these rows. A row named by no request is absent.
    """
    who = planner.live_who(conn)
    assert who is not None
    er = planner.ctx.tables.erasure_requests
    arms = [
        sa.select(planner.key.label("k"), er.c.id.label("r"))
        .select_from(planner.table)
        .join(er, mine == (planner._exact_email(theirs) if theirs is er.c.email else theirs))
        .where(
            store.one_of(conn, planner.key, keys),
            theirs.is_not(None),
            er.c.status == "open",
            er.c.received_on <= planner.today,
        )
        for mine, theirs in who.pairs(er)
    ]
    lowest: dict[Any, int] = {}
    for key, request in conn.execute(sa.union_all(*arms)):
        if key not in lowest or request < lowest[key]:
            lowest[key] = int(request)
    return lowest


def _unmasked(planner: PlannerBase, conn: sa.Connection) -> ColumnElement[bool]:
    em = planner.ctx.tables.erasure_masks
    return ~sa.exists().where(em.c.dataset == planner.name, em.c.record_key == planner.text(conn, planner.key))


def due_query(planner: PlannerBase, conn: sa.Connection) -> sa.Select[Any]:
    """Rows to mask now: records (``where``, a shard) an open request reaches, not held, not masked before."""
    key_text = planner.text(conn, planner.key)
    return (
        sa.select(planner.key.label("k"))
        .select_from(planner.table)
        .where(
            planner.included(),
            # Which request names each row is asked per batch of the rows selected (_requests).
            planner.open_erasure(planner.live_who(conn)),
            planner.not_held(key_text, planner.live_who(conn)),
            _unmasked(planner, conn),
        )
    )


def _any_open(planner: PlannerBase, conn: sa.Connection) -> bool:
    """Whether any request is open and received: without one the pass reads none of the table's rows."""
    er = planner.ctx.tables.erasure_requests
    query = sa.select(sa.literal(1)).where(er.c.status == "open", er.c.received_on <= planner.today).limit(1)
    return conn.execute(query).first() is not None


def count(planner: PlannerBase, conn: sa.Connection) -> int:
    """How many records the mask pass would mask now (``plan``)."""
    if not _any_open(planner, conn):
        return 0
    planner.probe(conn)
    query = sa.select(sa.func.count()).select_from(due_query(planner, conn).subquery())
    return int(conn.execute(query).scalar_one())


def pending(planner: PlannerBase, conn: sa.Connection, named: Any) -> bool:
    """Whether a record of the person ``named`` still waits for its mask (held ones included)."""
    who = planner.live_who(conn)
    assert who is not None
    query = (
        sa.select(sa.literal(1))
        .select_from(planner.table)
        .where(planner.reach(), planner._names(conn, who, named), _unmasked(planner, conn))  # NULL keys too
        .limit(1)
    )
    return conn.execute(query).first() is not None


def next_batch(
    planner: PlannerBase, conn: sa.Connection, after: Any, *, run_id: str, now: Any, secret: bytes, digest: str
) -> tuple[dict[int, int], int, Any, list[ledger.EntryDraft]]:
    """Mask one batch inside the caller's transaction: (records per request, scanned, resume key, ledger drafts)."""
    partial = planner.dataset.erasure_masking
    assert partial is not None
    if not _any_open(planner, conn):
        return {}, 0, None, []
    planner.probe(conn)
    while True:
        query = due_query(planner, conn)
        if after is not None:
            query = query.where(planner.key > after)
        found = conn.execute(query.order_by(planner.key).limit(planner.batch_size)).all()
        if not found:
            return {}, 0, None, []
        requests = _requests(planner, conn, [r.k for r in found])
        # A request closed between the two statements leaves its rows to a later run, as if it had closed before.
        rows = [r for r in found if r.k in requests]
        if rows:
            break
        after = found[-1].k
    keys = [r.k for r in rows]
    mask_rows(conn, planner.table, planner.dataset.key, keys, partial.mask, secret)
    at = now()
    conn.execute(
        store.erasure_masks.insert(),
        [
            {
                "dataset": planner.name,
                "record_key": str(r.k),
                "request_id": requests[r.k],
                "run_id": run_id,
                "masked_at": at,
            }
            for r in rows
        ],
    )
    per_request = Counter(requests[r.k] for r in rows)
    pack = planner.ctx.pack
    draft = ledger.EntryDraft(
        run_id=run_id,
        pack_id=pack.pack,
        pack_digest=digest,
        dataset=planner.name,
        transition=TRANSITION,
        action="anonymise",
        basis=pack.erasure.basis,
        due_at=None,
        record_pseudonym=None,
        subject_pseudonym=None,
        count=len(rows),
        detail={
            "erasure_requests": sorted(per_request),
            "columns": sorted(partial.mask),
            "keep_until": partial.keep_until,
        },
    )
    return per_request, len(rows), found[-1].k, [draft]


def explain(planner: PlannerBase, conn: sa.Connection, key: Any) -> dict[str, Any] | None:
    """``explain``'s view of one record's mask: masked by which request and run, or due now, or nothing."""
    partial = planner.dataset.erasure_masking
    if partial is None or not planner.identified or key is None:
        return None
    em = planner.ctx.tables.erasure_masks
    base = {"columns": sorted(partial.mask), "keep_until": partial.keep_until}
    done = conn.execute(
        sa.select(em.c.request_id, store.runs.c.as_of)
        .select_from(em.outerjoin(store.runs, store.runs.c.id == em.c.run_id))
        .where(em.c.dataset == planner.name, em.c.record_key == str(key))
    ).first()
    if done is not None:
        return {**base, "status": "masked", "request": done.request_id, "masked_at": done.as_of}
    planner.probe(conn)
    due = conn.execute(due_query(planner, conn).where(planner.key == key)).first()
    if due is not None:
        request = _requests(planner, conn, [due.k]).get(due.k)
        if request is not None:
            return {**base, "status": "due now", "request": request, "masked_at": None}
    return None


def forget_gone(planner: PlannerBase, conn: sa.Connection) -> None:
    """Drop the masked marks of records whose source row is gone (purged): nothing is left to mask or keep."""
    em = store.erasure_masks
    row = sa.exists().where(planner.text(conn, planner.key) == em.c.record_key)
    conn.execute(em.delete().where(em.c.dataset == planner.name, ~row))
