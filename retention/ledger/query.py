"""Reading the ledger for the auditor console: pages, lookups, run summaries.

Every query the console makes on the ledger is here, so that when the
ledger's storage changes (per-batch entries with per-record items) this is
the one module to re-point. Functions take a connection (the console's
read-only one), return plain dicts, and never see a record or subject key
except to turn it into its pseudonym with :mod:`retention.ledger.chain`'s own
functions.

Pages are keyset-paginated on ``seq`` (newest first): a page costs the
same whether it is the first or the ten-millionth, and no page counts the
whole table.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, TextIO

import sqlalchemy as sa

from retention.ledger import chain as ledger
from retention.ledger import pseudonyms
from retention.store import tables as store

PAGE_SIZE = 50
LOOKUP_LIMIT = 1000


@dataclass(frozen=True)
class LedgerFilters:
    """The filters of the ledger page (and of its downloads); None means any."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    dataset: str | None = None
    transition: str | None = None
    run_id: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """The same filters as keyword arguments of :func:`retention.ledger.chain.entries`."""
        return {
            "since": self.since,
            "until": self.until,
            "dataset": self.dataset,
            "transition": self.transition,
            "run_id": self.run_id,
        }


@dataclass(frozen=True)
class LedgerPage:
    """One page of entries, newest first, with the cursors of its neighbours.

    ``older`` is the seq to pass as ``before`` for the next (older) page,
    ``newer`` the seq to pass as ``after`` for the previous one; None when
    there is no such page.
    """

    entries: list[dict[str, Any]]
    older: int | None
    newer: int | None


def _conditions(filters: LedgerFilters) -> list[sa.ColumnElement[bool]]:
    table = store.ledger
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(table.c.recorded_at >= filters.since)
    if filters.until is not None:
        conditions.append(table.c.recorded_at < filters.until)
    for column, value in (
        (table.c.dataset, filters.dataset),
        (table.c.transition, filters.transition),
        (table.c.run_id, filters.run_id),
    ):
        if value is not None:
            conditions.append(column == value)
    return conditions


def _decoded(row: sa.Row[Any]) -> dict[str, Any]:
    return _with_detail(dict(row._mapping))


def page(
    conn: sa.Connection,
    filters: LedgerFilters,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
) -> LedgerPage:
    """Entries matching ``filters``, newest first: those just below ``before`` or just above ``after``."""
    table = store.ledger
    conditions = _conditions(filters)
    if after is not None:
        rows = conn.execute(
            sa.select(table).where(table.c.seq > after, *conditions).order_by(table.c.seq.asc()).limit(limit + 1)
        ).all()
        more_newer = len(rows) > limit
        entries = [_decoded(r) for r in reversed(rows[:limit])]
        has_older = bool(entries) and _exists(conn, conditions, table.c.seq < entries[-1]["seq"])
        return LedgerPage(
            entries,
            entries[-1]["seq"] if has_older else None,
            entries[0]["seq"] if more_newer and entries else None,
        )
    bound = [table.c.seq < before] if before is not None else []
    rows = conn.execute(sa.select(table).where(*bound, *conditions).order_by(table.c.seq.desc()).limit(limit + 1)).all()
    entries = [_decoded(r) for r in rows[:limit]]
    has_newer = before is not None and bool(entries) and _exists(conn, conditions, table.c.seq > entries[0]["seq"])
    return LedgerPage(
        entries,
        entries[-1]["seq"] if len(rows) > limit else None,
        entries[0]["seq"] if has_newer else None,
    )


def _exists(conn: sa.Connection, conditions: list[sa.ColumnElement[bool]], bound: sa.ColumnElement[bool]) -> bool:
    table = store.ledger
    return conn.execute(sa.select(table.c.seq).where(bound, *conditions).limit(1)).first() is not None


def export(connectable: sa.Engine | sa.Connection, fmt: str, out: TextIO, filters: LedgerFilters) -> int:
    """Write the filtered entries as CSV or JSON lines, exactly as ``retention ledger export`` does."""
    return ledger.export(connectable, fmt, out, **filters.as_kwargs())


def lookup(
    conn: sa.Connection,
    secret: bytes,
    *,
    subject_key: str | None = None,
    dataset: str | None = None,
    record_key: str | None = None,
    limit: int = LOOKUP_LIMIT,
) -> list[dict[str, Any]]:
    """Entries of one subject, or of one record of a dataset, found by the pseudonym of its key.

    The key itself is used only to compute the pseudonym here; it is never
    stored, logged or returned.
    """
    from retention.ledger import items as ledger_items

    if subject_key is None and (dataset is None or record_key is None):
        raise ValueError("lookup needs a subject key, or a dataset and a record key")
    found = ledger_items.lookup(conn, secret, dataset=dataset, record_key=record_key, subject_key=subject_key)
    result = []
    for entry in found:
        detail = _with_detail(entry)
        for name, key in (("request_id", "erasure_request"), ("review_id", "review_id")):
            if entry.get(name) is not None:
                detail["detail_fields"].setdefault(key, entry[name])
        result.append(detail)
        if len(result) >= limit:
            break
    return result


def _with_detail(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its JSON ``detail`` decoded as ``detail_fields`` (for display)."""
    detail = entry.get("detail")
    try:
        entry["detail_fields"] = json.loads(detail) if detail else {}
    except ValueError:
        entry["detail_fields"] = {"detail": detail}
    return entry


def pseudonym_of_subject(secret: bytes, subject_key: str) -> str:
    """The pseudonym under which the ledger names a subject (for registers that hold the raw key)."""
    return pseudonyms.subject_pseudonym(secret, subject_key)


def pseudonym_of_record(secret: bytes, dataset: str, record_key: str) -> str:
    """The pseudonym under which the ledger names one record."""
    return pseudonyms.record_pseudonym(secret, dataset, record_key)


@dataclass(frozen=True)
class RunLedger:
    """What the ledger says one run did: totals per dataset, transition and basis, and its range."""

    lines: list[dict[str, Any]]
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    entries: int


def run_summary(conn: sa.Connection, run_id: str) -> RunLedger:
    """Per dataset, transition, action and basis: records moved (``count`` summed) and entries."""
    table = store.ledger
    rows = conn.execute(
        sa.select(
            table.c.dataset,
            table.c.transition,
            table.c.action,
            table.c.basis,
            sa.func.sum(table.c.count).label("records"),
            sa.func.count().label("entries"),
            sa.func.min(table.c.seq).label("first_seq"),
            sa.func.max(table.c.seq).label("last_seq"),
        )
        .where(table.c.run_id == run_id)
        .group_by(table.c.dataset, table.c.transition, table.c.action, table.c.basis)
        .order_by(table.c.dataset, table.c.transition)
    ).all()
    lines = [
        {
            "dataset": r.dataset,
            "transition": r.transition,
            "action": r.action,
            "basis": r.basis,
            "records": int(r.records or 0),
            "entries": int(r.entries),
        }
        for r in rows
    ]
    if not rows:
        return RunLedger([], None, None, None, 0)
    first = min(int(r.first_seq) for r in rows)
    last = max(int(r.last_seq) for r in rows)
    return RunLedger(lines, first, last, hash_at(conn, last), sum(line["entries"] for line in lines))


def hash_at(conn: sa.Connection, seq: int) -> str | None:
    """The hash of entry ``seq`` (None if there is no such entry)."""
    table = store.ledger
    value = conn.execute(sa.select(table.c.hash).where(table.c.seq == seq)).scalar()
    return None if value is None else str(value)


def head(conn: sa.Connection) -> tuple[int, str | None, dt.datetime | None]:
    """The newest entry's seq, hash and time; (0, None, None) for an empty ledger."""
    table = store.ledger
    row = conn.execute(
        sa.select(table.c.seq, table.c.hash, table.c.recorded_at).order_by(table.c.seq.desc()).limit(1)
    ).first()
    if row is None:
        return 0, None, None
    return int(row.seq), str(row.hash), row.recorded_at


def review_decisions(conn: sa.Connection, dataset: str, review_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The ledger entries recording the decision on review batch ``review_id`` of ``dataset``."""
    table = store.ledger
    rows = conn.execute(
        sa.select(table)
        .where(table.c.dataset == dataset, table.c.transition.in_(["review_approved", "review_rejected"]))
        .order_by(table.c.seq.desc())
        .limit(limit)
    ).all()
    return [e for e in (_decoded(r) for r in rows) if e["detail_fields"].get("review_id") == review_id]
