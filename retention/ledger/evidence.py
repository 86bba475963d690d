"""The engine's own retention: requests and holds keep their evidence, not the person.

An erasure request or a legal hold is evidence of accountability (GDPR art.
5(2)) long after it is settled, but the subject id in clear and the free
text written about it are personal data with no reason to stay. Once an
erasure request is settled (processed by a run, or closed) or a hold is
released for longer than the pack's ``engine_retention`` (default ``P3Y``),
the normal run keeps its dates, outcome, ledger references and a
pseudonymised subject (and the pseudonym of an e-mail address), and clears
the subject id, the e-mail address, the record key and the notes. Open requests and holds in place are never touched.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from retention.ledger import chain as ledger
from retention.ledger import pseudonyms
from retention.policy import Pack
from retention.store import tables as store
from retention.timing.clock import Period, local_date

DEFAULT_PERIOD = Period(years=3)
REMOVED = "removed after the engine's retention period"


def period_of(pack: Pack) -> Period:
    return pack.engine_retention or DEFAULT_PERIOD


def _expired(settled: dt.datetime | None, period: Period, today: dt.date, tz: str) -> bool:
    """Settled more than ``period`` ago (Reg. 1182/71: the settling day not counted)."""
    if settled is None:
        return False
    if settled.tzinfo is None:
        settled = settled.replace(tzinfo=dt.UTC)
    return period.add_to(local_date(settled, tz)) < today


def due(conn: sa.Connection, pack: Pack, as_of: dt.datetime) -> tuple[list[Any], list[Any]]:
    """(erasure requests, holds) whose evidence period has run out and are not minimised yet."""
    er, holds, runs = store.erasure_requests, store.holds, store.runs
    period, tz = period_of(pack), pack.timezone
    today = local_date(as_of, tz)
    settled_at = sa.case((er.c.status == "closed", er.c.closed_at), else_=runs.c.started_at)
    requests = conn.execute(
        sa.select(er.c.id, er.c.subject_key, settled_at.label("settled"))
        .select_from(er.outerjoin(runs, runs.c.id == er.c.processed_run_id))
        .where(er.c.status.in_(["processed", "closed"]), er.c.minimised_at.is_(None))
        .order_by(er.c.id)
    ).all()
    released = conn.execute(
        sa.select(holds.c.id, holds.c.subject_key, holds.c.released_at.label("settled"))
        .where(holds.c.released_at.is_not(None), holds.c.minimised_at.is_(None))
        .order_by(holds.c.id)
    ).all()
    return (
        [r for r in requests if _expired(r.settled, period, today, tz)],
        [h for h in released if _expired(h.settled, period, today, tz)],
    )


def minimise(
    conn: sa.Connection, pack: Pack, as_of: dt.datetime, secret: bytes, now: dt.datetime
) -> ledger.EntryDraft | None:
    """Clear what identifies the person in settled requests and holds, in the caller's transaction.

    Returns the ledger entry that says so (None when nothing was due). The
    rows are locked by the updates, whose conditions repeat that they are
    settled and not minimised yet: a row changed meanwhile is left alone.
    """
    er, holds = store.erasure_requests, store.holds
    requests, released = due(conn, pack, as_of)
    done_requests, done_holds = [], []
    for r in requests:
        changed = conn.execute(
            er.update()
            .where(er.c.id == r.id, er.c.minimised_at.is_(None), er.c.status.in_(["processed", "closed"]))
            .values(
                subject_pseudonym=pseudonyms.subject_pseudonym(secret, r.subject_key) if r.subject_key else None,
                subject_key=None,
                email=None,
                note=None,
                extension_reason=None,
                minimised_at=now,
            )
        ).rowcount
        if changed:
            done_requests.append(r.id)
    for h in released:
        changed = conn.execute(
            holds.update()
            .where(holds.c.id == h.id, holds.c.minimised_at.is_(None), holds.c.released_at.is_not(None))
            .values(
                subject_pseudonym=pseudonyms.subject_pseudonym(secret, h.subject_key) if h.subject_key else None,
                subject_key=None,
                email=None,
                record_key=None,
                reason=REMOVED,
                release_reason=None,
                minimised_at=now,
            )
        ).rowcount
        if changed:
            done_holds.append(h.id)
    if not done_requests and not done_holds:
        return None
    return ledger.EntryDraft(
        run_id=None,
        pack_id=pack.pack,
        pack_digest=None,
        dataset=None,
        transition="engine_records_minimised",
        action=None,
        basis="GDPR art. 5(1)(c), 5(1)(e), 5(2): evidence kept, identity removed",
        due_at=None,
        record_pseudonym=None,
        subject_pseudonym=None,
        count=len(done_requests) + len(done_holds),
        detail={"erasure_requests": done_requests, "holds": done_holds, "period": str(period_of(pack))},
    )
