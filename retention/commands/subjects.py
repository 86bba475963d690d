"""What people ask of the engine: the library behind ``hold``, ``erasure`` and ``review``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from retention.errors import ConfigError, SchemaError
from retention.ledger import mac as ledger_mac
from retention.ledger import pseudonyms
from retention.policy import load_catalog, refusals
from retention.store import tables as store
from retention.store.connect import open_engine
from retention.subjects import events as subjects
from retention.timing.clock import AsOf, utcnow


class Named(NamedTuple):
    """A person as a request names them: subject id, normalised e-mail, the e-mail's pseudonym."""

    subject_key: str | None
    email: str | None
    email_pseudonym: str | None


def holds_covering(conn: sa.Connection, dataset: str, key: str, person: Named) -> list[dict[str, Any]]:
    h = store.holds
    covers = [
        sa.and_(h.c.scope == "dataset", h.c.dataset == dataset),
        sa.and_(h.c.scope == "record", h.c.dataset == dataset, h.c.record_key == key),
    ]
    for column, value in zip((h.c.subject_key, h.c.email, h.c.email_pseudonym), person, strict=True):
        if value is not None:
            covers.append(sa.and_(h.c.scope == "subject", column == value))
    rows = conn.execute(
        sa.select(h.c.id, h.c.scope, h.c.reason, h.c.placed_by, h.c.placed_at)
        .where(h.c.released_at.is_(None), sa.or_(*covers))
        .order_by(h.c.id)
    ).all()
    return [dict(r._mapping) for r in rows]


def hold_add(
    db_url: str,
    *,
    scope: subjects.Scope,
    reason: str,
    placed_by: str,
    dataset: str | None = None,
    record_key: str | None = None,
    subject_key: str | None = None,
    email: str | None = None,
    rules: Path | None = None,
) -> int:
    """Place a legal hold (recorded in the ledger); a subject hold by id, e-mail address or both."""
    if rules is None and (email or dataset):
        # Without the pack nothing can tell whether the address or dataset reaches any record.
        raise ConfigError(
            f"{'--email' if email else '--dataset'} needs --rules (or RETENTION_RULES): the pack says "
            "which records it reaches"
        )
    pack = load_catalog(rules).in_force(utcnow().date()).pack if rules else None
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.begin() as conn:
            if pack is not None and scope == "subject":
                refusals.refuse_unreachable_identity(
                    pack, subject_key=subject_key, email=email, erasing=False, conn=conn
                )
            return subjects.place_hold(
                conn,
                scope=scope,
                reason=reason,
                placed_by=placed_by,
                secret=secret,
                dataset=dataset,
                record_key=record_key,
                subject_key=subject_key,
                email=email,
                pack=pack,
            )
    finally:
        engine.dispose()


def hold_release(db_url: str, hold_id: int, *, reason: str, released_by: str) -> None:
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.begin() as conn:
            subjects.release_hold(conn, hold_id, released_by=released_by, reason=reason, secret=secret)
    finally:
        engine.dispose()


def hold_list(db_url: str, *, include_released: bool = False) -> list[dict[str, Any]]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return subjects.list_holds(conn, include_released=include_released)
    finally:
        engine.dispose()


def _parse_day(text: str | dt.date, option: str) -> dt.date:
    if isinstance(text, dt.date):
        return text
    parsed = AsOf.given(text, option)
    if parsed is None or parsed.day is None:
        raise ConfigError(f"{option} {text!r} is not a date (YYYY-MM-DD)")
    return parsed.day


def erasure_add(
    db_url: str,
    rules: Path,
    pack_id: str | None,
    *,
    subject_key: str | None,
    received: str | dt.date,
    note: str | None,
    email: str | None = None,
) -> tuple[int, dt.date, str]:
    """Record a request; return its id, its deadline, and which days moved the deadline ('' if none)."""
    day = _parse_day(received, "--received")
    pack = load_catalog(rules).in_force(day, pack_id).pack
    secret = pseudonyms.pseudonym_secret()  # the receipt's ledger entry carries the engine's MAC
    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.begin() as conn:
            refusals.refuse_unreachable_identity(pack, subject_key=subject_key, email=email, erasing=True, conn=conn)
            request_id = subjects.add_request(
                conn, subject_key=subject_key, received=day, pack=pack, note=note, email=email, secret=secret
            )
        deadline, skipped = subjects.deadline_moves(day, pack, extended=False)
        return request_id, deadline, subjects.describe_moves(skipped)
    finally:
        engine.dispose()


def subject_known(
    db_url: str, rules: Path, pack_id: str | None, subject_key: str | None, email: str | None = None
) -> bool | None:
    """Whether any dataset of the pack in force today holds a record of the person (live or archived).

    None when the database cannot say (the pack's tables are not all there).
    """
    from retention.engine.plan import PlanContext, build_planners

    loaded = load_catalog(rules).in_force(utcnow().date(), pack_id)
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            try:
                planners = build_planners(conn, PlanContext(loaded, utcnow()))
            except SchemaError:
                return None
            named = Named(subject_key, subjects.database_email(conn, email) if email else None, None)
            if email:
                named = named._replace(email_pseudonym=pseudonyms.email_pseudonym(pseudonyms.pseudonym_secret(), email))
            return any(p.knows_subject(conn, named) for p in planners.values())
    finally:
        engine.dispose()


def erasure_list(
    db_url: str,
    *,
    include_closed: bool = False,
    rules: Path | None = None,
    pack_id: str | None = None,
    today: dt.date | None = None,
) -> list[dict[str, Any]]:
    """Requests with their deadlines; with ``rules``, why each deadline moved (weekends, holidays).

    ``today`` is the calendar date in the display zone (default UTC's): a
    deadline is overdue from the day after it, where the reader is.
    """
    today = today or utcnow().date()
    pack = load_catalog(rules).in_force(today, pack_id).pack if rules is not None else None
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return subjects.list_requests(conn, today, include_closed=include_closed, pack=pack)
    finally:
        engine.dispose()


def erasure_extend(
    db_url: str, rules: Path, pack_id: str | None, request_id: int, *, reason: str
) -> tuple[dt.date, str]:
    """Extend a request once; return the new deadline and which days moved it ('' if none)."""
    pack = load_catalog(rules).in_force(utcnow().date(), pack_id).pack
    secret = pseudonyms.pseudonym_secret()  # the extension's ledger entry carries the engine's MAC
    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.begin() as conn:
            deadline = subjects.extend_request(conn, request_id, reason=reason, pack=pack, secret=secret)
            received = conn.execute(
                sa.select(store.erasure_requests.c.received_on).where(store.erasure_requests.c.id == request_id)
            ).scalar_one()
        _, skipped = subjects.deadline_moves(received, pack, extended=True)
        return deadline, subjects.describe_moves(skipped)
    finally:
        engine.dispose()


def erasure_close(db_url: str, request_id: int) -> None:
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            subjects.close_request(conn, request_id)
    finally:
        engine.dispose()


def review_list(db_url: str, *, include_done: bool = False) -> list[dict[str, Any]]:
    from retention.subjects import review

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return review.list_batches(conn, include_done=include_done)
    finally:
        engine.dispose()


def review_show(db_url: str, batch_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from retention.subjects import review

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return review.show_batch(conn, batch_id)
    finally:
        engine.dispose()


def review_decide(db_url: str, batch_id: int, *, approve: bool, by: str, reason: str) -> None:
    from retention.subjects import review

    secret = pseudonyms.pseudonym_secret()  # the decision's ledger entry carries the engine's MAC
    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.begin() as conn:
            review.decide(conn, batch_id, approve=approve, by=by, reason=reason, secret=secret)
    finally:
        engine.dispose()
