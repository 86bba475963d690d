"""Events about subjects: legal holds and erasure requests (SPEC section 5).

A hold stops every transition of what it covers (a subject, a dataset or one
record) until released; placing and releasing are ledger entries. An
erasure request moves the subject's records, at the next run, to the state
each dataset declares for erasure; its response deadline follows GDPR art.
12(3) with the working-day rule of Regulation 1182/71 art. 3(4): a deadline
that ends on a Saturday, a Sunday or a public holiday of the pack's country
moves to the next working day, and ``erasure list`` says which days it skipped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.errors import ConfigError
from retention.ledger import chain as ledger
from retention.ledger import pseudonyms
from retention.ledger.pseudonyms import normalise_email
from retention.policy.model import Pack
from retention.store import tables as store
from retention.timing.clock import utcnow

Scope = Literal["subject", "dataset", "record"]

DUE_SOON = dt.timedelta(days=7)


# --------------------------------------------------------------------------
# Holds
# --------------------------------------------------------------------------


def place_hold(
    conn: sa.Connection,
    *,
    scope: Scope,
    reason: str,
    placed_by: str,
    secret: bytes,
    dataset: str | None = None,
    record_key: str | None = None,
    subject_key: str | None = None,
    email: str | None = None,
    pack: Pack | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Place a hold and write its ledger entry, in the caller's transaction.

    A subject hold names the person by id, by e-mail address, or both; it
    covers every record carrying either.
    """
    when = now or utcnow()
    if not reason.strip():
        raise ConfigError("a hold needs a reason (e.g. the case or request it serves)")
    email = _email(conn, email)
    if scope == "subject" and not subject_key and not email:
        raise ConfigError("a subject hold needs --subject or --email")
    if scope == "dataset" and not dataset:
        raise ConfigError("a dataset hold needs --dataset")
    if scope == "record" and not (dataset and record_key):
        raise ConfigError("a record hold needs --dataset and --key")
    if pack is not None and dataset is not None and dataset not in pack.datasets:
        raise ConfigError(f"no dataset {dataset!r} in pack {pack.pack}; valid: {', '.join(pack.datasets)}")
    result = conn.execute(
        store.holds.insert().values(
            scope=scope,
            dataset=dataset,
            record_key=record_key if scope == "record" else None,
            subject_key=(subject_key or None) if scope == "subject" else None,
            email=email if scope == "subject" else None,
            email_pseudonym=pseudonyms.email_pseudonym(secret, email) if scope == "subject" and email else None,
            reason=reason,
            placed_by=placed_by,
            placed_at=when,
        )
    )
    hold_id = _new_id(result)
    ledger.append(
        conn,
        [
            _hold_entry(
                "hold_placed", hold_id, scope, dataset, record_key, subject_key or email, secret, not subject_key
            )
        ],
        when,
        secret=secret,
    )
    return hold_id


def release_hold(
    conn: sa.Connection,
    hold_id: int,
    *,
    released_by: str,
    reason: str,
    secret: bytes,
    now: dt.datetime | None = None,
) -> None:
    """Release a hold; the next run moves what it held back if still due."""
    when = now or utcnow()
    h = store.holds
    row = conn.execute(sa.select(h).where(h.c.id == hold_id)).first()
    if row is None:
        raise ConfigError(f"no hold {hold_id}; list them with: retention hold list")
    if row.released_at is not None:
        raise ConfigError(f"hold {hold_id} was already released on {row.released_at:%Y-%m-%d}")
    conn.execute(
        h.update().where(h.c.id == hold_id).values(released_at=when, released_by=released_by, release_reason=reason)
    )
    ledger.append(
        conn,
        [
            _hold_entry(
                "hold_released",
                hold_id,
                row.scope,
                row.dataset,
                row.record_key,
                row.subject_key or row.email,
                secret,
                not row.subject_key and bool(row.email),
            )
        ],
        when,
        secret=secret,
    )


def _hold_entry(
    event: str,
    hold_id: int,
    scope: str,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    secret: bytes,
    by_email: bool = False,
) -> ledger.EntryDraft:
    """The hold's ledger entry; a person named by e-mail alone appears as the e-mail's pseudonym."""
    if subject_key and by_email:
        person: str | None = pseudonyms.email_pseudonym(secret, subject_key)
    else:
        person = pseudonyms.subject_pseudonym(secret, subject_key) if subject_key else None
    return ledger.EntryDraft(
        run_id=None,
        pack_id=None,
        pack_digest=None,
        dataset=dataset,
        transition=event,
        action=scope,
        basis=None,
        due_at=None,
        record_pseudonym=(pseudonyms.record_pseudonym(secret, dataset, record_key) if dataset and record_key else None),
        subject_pseudonym=person,
        detail={"hold_id": hold_id},
    )


def _email(conn: sa.Connection, address: str | None) -> str | None:
    """An address as the engine keeps and compares it (trimmed, lower-cased), or None."""
    if address is None:
        return None
    normal = normalise_email(address)
    if not normal:
        return None
    if "@" not in normal or len(normal) > 320:
        raise ConfigError("--email is not an e-mail address (it needs an @, at most 320 characters)")
    return database_email(conn, address)


def database_email(conn: sa.Connection, address: str) -> str:
    """``address`` trimmed and lower-cased by the database, as the stored addresses are.

    The engine compares a hold's or a request's address with the rows'
    ``fold_case(TRIM(column))`` (:func:`retention.engine.joins.email_expression`).
    PostgreSQL's ``LOWER`` under a ``C`` ctype folds ASCII capitals only,
    where Python's ``str.lower`` folds every one, so an address typed exactly
    as stored, with a capital such as ``É``, would reach no row there if
    Python folded it. (SQLite's connections fold with Python's ``lower``,
    as the pseudonyms do.) Pseudonyms are still computed in Python from this
    text, as they are from the stored value.
    """
    trimmed = address.strip(" ")
    folded = dialect_for(conn).fold_case(sa.literal(trimmed, sa.String()))
    return str(conn.execute(sa.select(folded)).scalar_one())


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every supported database returns it
        raise RuntimeError("the database did not return the new row's id")
    return int(key[0])


def list_holds(conn: sa.Connection, *, include_released: bool = False) -> list[dict[str, Any]]:
    h = store.holds
    query = sa.select(h).order_by(h.c.id)
    if not include_released:
        query = query.where(h.c.released_at.is_(None))
    return [dict(r._mapping) for r in conn.execute(query)]


# --------------------------------------------------------------------------
# Erasure requests
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """The last day to answer a request, and how it compares with today."""

    deadline: dt.date
    flag: Literal["overdue", "due soon", ""]


def deadline_for(received: dt.date, pack: Pack, extended: bool) -> dt.date:
    """The last day to answer: 1 month from receipt; once extended, 2 more months.

    The extension runs from the end of the first period (not from receipt),
    and only the final day moves off a weekend or public holiday (Reg. 1182/71
    art. 3(4)).
    """
    return deadline_moves(received, pack, extended)[0]


def deadline_moves(received: dt.date, pack: Pack, extended: bool) -> tuple[dt.date, list[tuple[dt.date, str]]]:
    """The deadline, and the days it was moved over with why (weekday or holiday name)."""
    last = pack.erasure.respond_within.add_to(received)
    if extended:
        last = pack.erasure.extension.add_to(last)
    return pack.working_days.next_working_day(last)


def describe_moves(skipped: list[tuple[dt.date, str]]) -> str:
    """``2025-12-25 Christmas Day; 2025-12-26 Second Day of Christmas``, or '' when not moved."""
    return "; ".join(f"{day.isoformat()} {reason}" for day, reason in skipped)


def flag_for(deadline: dt.date, today: dt.date, status: str) -> Literal["overdue", "due soon", ""]:
    if status == "closed":
        return ""
    if today > deadline:
        return "overdue"
    if deadline - today <= DUE_SOON:
        return "due soon"
    return ""


def add_request(
    conn: sa.Connection,
    *,
    subject_key: str | None,
    received: dt.date,
    pack: Pack,
    note: str | None = None,
    email: str | None = None,
    secret: bytes | None = None,
) -> int:
    """File an erasure request for a person named by id, by e-mail address (normalised), or both.

    The address is kept in clear only while the request needs it (until
    ``engine_retention`` after it is settled); its pseudonym, computed here
    under the pseudonym key, stays with the evidence and lets the request
    reach records known only by their state row.
    """
    if received > utcnow().date() + dt.timedelta(days=1):
        raise ConfigError(f"--received {received} is in the future")
    email = _email(conn, email)
    if not subject_key and not email:
        raise ConfigError("an erasure request needs --subject or --email")
    if email and secret is None:  # pragma: no cover - every caller passes the key with an address
        raise ValueError("an erasure request by e-mail needs the pseudonym key")
    deadline = deadline_for(received, pack, extended=False)
    result = conn.execute(
        store.erasure_requests.insert().values(
            subject_key=subject_key or None,
            email=email,
            email_pseudonym=pseudonyms.email_pseudonym(secret, email) if email and secret is not None else None,
            received_on=received,
            deadline=deadline,
            note=note,
            status="open",
        )
    )
    request_id = _new_id(result)
    detail = {"erasure_request": request_id, "received_on": received.isoformat(), "deadline": deadline.isoformat()}
    person = _request_pseudonym(
        secret, subject_key, pseudonyms.email_pseudonym(secret, email) if email and secret else None
    )
    ledger.append(conn, [_request_entry("erasure_received", pack, person, detail)], utcnow(), secret=secret)
    return request_id


def _request_pseudonym(secret: bytes | None, subject_key: str | None, email_pseudonym: str | None) -> str | None:
    """Whom a request's ledger entry names: the subject's pseudonym, else the e-mail's (None without the key)."""
    if secret is None:
        return None
    return pseudonyms.subject_pseudonym(secret, subject_key) if subject_key else email_pseudonym


def _request_entry(event: str, pack: Pack, person: str | None, detail: dict[str, Any]) -> ledger.EntryDraft:
    """A request's receipt or extension in the ledger: the evidence a regulator asks for (GDPR art. 5(2), 12(3)).

    The detail holds the request id and its dates, never a note or a reason, which may name the person.
    """
    return ledger.EntryDraft(
        run_id=None,
        pack_id=pack.pack,
        pack_digest=None,
        dataset=None,
        transition=event,
        action=None,
        basis=pack.erasure.basis,
        due_at=None,
        record_pseudonym=None,
        subject_pseudonym=person,
        detail=detail,
    )


def extend_request(
    conn: sa.Connection, request_id: int, *, reason: str, pack: Pack, secret: bytes | None = None
) -> dt.date:
    """Extend once by the pack's extension (2 months by default), with a reason; a ledger entry says so."""
    er = store.erasure_requests
    row = conn.execute(sa.select(er).where(er.c.id == request_id)).first()
    if row is None:
        raise ConfigError(f"no erasure request {request_id}; list them with: retention erasure list")
    if row.status == "closed":
        raise ConfigError(
            f"erasure request {request_id} was closed{_on(row.closed_at)}; a closed request has no deadline"
        )
    if row.extended_on is not None:
        raise ConfigError(
            f"erasure request {request_id} was already extended on {row.extended_on}; "
            "GDPR art. 12(3) allows one extension"
        )
    if not reason.strip():
        raise ConfigError("an extension needs a reason (GDPR art. 12(3): complexity or number of requests)")
    deadline = deadline_for(row.received_on, pack, extended=True)
    conn.execute(
        er.update()
        .where(er.c.id == request_id)
        .values(extended_on=utcnow().date(), extension_reason=reason, deadline=deadline)
    )
    person = _request_pseudonym(secret, row.subject_key, row.email_pseudonym)
    detail = {"erasure_request": request_id, "deadline": deadline.isoformat()}
    ledger.append(conn, [_request_entry("erasure_extended", pack, person, detail)], utcnow(), secret=secret)
    return deadline


def close_request(conn: sa.Connection, request_id: int) -> None:
    """Close an open request; closing one already closed is refused, not repeated.

    Why: a second close said "closed" with exit 0 and moved ``closed_at`` to now, so the record of when the
    request was answered changed, and a mistyped id that named an old request looked like success.
    """
    er = store.erasure_requests
    row = conn.execute(sa.select(er).where(er.c.id == request_id)).first()
    if row is None:
        raise ConfigError(f"no erasure request {request_id}; list them with: retention erasure list")
    done = conn.execute(
        er.update().where(er.c.id == request_id, er.c.status != "closed").values(status="closed", closed_at=utcnow())
    )
    if row.status == "closed" or done.rowcount == 0:
        closed_at = conn.execute(sa.select(er.c.closed_at).where(er.c.id == request_id)).scalar_one()
        raise ConfigError(f"erasure request {request_id} was already closed{_on(closed_at)}")


def _on(when: dt.datetime | None) -> str:
    return f" on {when:%Y-%m-%d}" if when is not None else ""


def list_requests(
    conn: sa.Connection, today: dt.date, *, include_closed: bool = False, pack: Pack | None = None
) -> list[dict[str, Any]]:
    """Requests by deadline; with the pack, ``moved`` says which days pushed each deadline back."""
    er = store.erasure_requests
    query = sa.select(er).order_by(er.c.deadline, er.c.id)
    if not include_closed:
        query = query.where(er.c.status != "closed")
    rows = []
    for row in conn.execute(query):
        item = dict(row._mapping)
        item["flag"] = flag_for(row.deadline, today, row.status)
        if pack is not None:
            deadline, skipped = deadline_moves(row.received_on, pack, extended=row.extended_on is not None)
            # A deadline recorded under another calendar is explained only where it agrees.
            item["moved"] = describe_moves(skipped) if deadline == row.deadline else None
        rows.append(item)
    return rows
