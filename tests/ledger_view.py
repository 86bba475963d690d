"""Test helper: the ledger's per-record moves, read back as (dataset, record key, transition, due).

Items name records by pseudonyms under each run's key; a test knows the
candidate keys, so it derives each run's pseudonyms of them and maps the
items back. Summary entries (no items) count as (dataset, "*", transition).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from retention.ledger import items as ledger_items
from retention.ledger import pseudonyms
from retention.reporting.ledger_audit import Claim
from retention.store import tables as store


def record_moves(
    engine: sa.Engine,
    secret: bytes,
    keys: dict[str, Iterable[Any]],
    run_id: str | None = None,
) -> list[tuple[str, str, str, dt.datetime | int]]:
    """Every per-record move in the ledger (v1 entries and v2 items), as (dataset, key, transition, due)."""
    result: list[tuple[str, str, str, dt.datetime | int]] = []
    wanted = {d: [str(k) for k in ks] for d, ks in keys.items()}
    entries, items = store.ledger, store.ledger_items
    with engine.connect() as conn:
        query = sa.select(entries).order_by(entries.c.seq)
        if run_id is not None:
            query = query.where(entries.c.run_id == run_id)
        rows = list(conn.execute(query))
        reverse: dict[tuple[str, str], dict[str, str]] = {}
        for row in rows:
            if row.run_id is None or row.dataset is None or row.transition in ("guard_overridden", "review_requested"):
                continue
            if row.format in ledger_items.ITEM_FORMATS and row.items:
                cache_key = (row.run_id, row.dataset)
                if cache_key not in reverse:
                    run_key = ledger_items.run_key(secret, row.run_id)
                    reverse[cache_key] = {
                        ledger_items.record_pseudonym(run_key, row.dataset, k): k for k in wanted.get(row.dataset, [])
                    }
                for item in conn.execute(sa.select(items).where(items.c.entry_seq == row.seq).order_by(items.c.idx)):
                    key = reverse[cache_key].get(item.record_pseudonym, f"?{item.record_pseudonym}")
                    result.append((row.dataset, key, row.transition, item.due_at))
                for record, due in _block_items(conn, row.seq):  # format 5: the entry's block instead of item rows
                    key = reverse[cache_key].get(record, f"?{record}")
                    result.append((row.dataset, key, row.transition, due))
            elif row.record_pseudonym is not None:
                v1 = {pseudonyms.record_pseudonym(secret, row.dataset, k): k for k in wanted.get(row.dataset, [])}
                result.append((row.dataset, v1.get(row.record_pseudonym, "?"), row.transition, row.due_at))
            elif row.count and row.transition.count("->") == 1:
                result.append((row.dataset, "*", row.transition, row.count))
    return result


def _block_items(conn: sa.Connection, seq: int) -> list[tuple[str, dt.datetime]]:
    """(record pseudonym hex, due) of each item of entry ``seq``'s block, read by hand: 91 bytes an item, the
    record pseudonym first (32 bytes), the due instant last (27 ASCII characters); none without a block."""
    body = conn.execute(sa.select(store.ledger_blocks.c.body).where(store.ledger_blocks.c.entry_seq == seq)).scalar()
    if body is None:
        return []
    body = bytes(body)
    return [
        (
            body[at : at + 32].hex(),
            dt.datetime.strptime(body[at + 64 : at + 91].decode("ascii"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=dt.UTC
            ),
        )
        for at in range(0, len(body), 91)
    ]


def move_counter(moves: Iterable[tuple[str, str, str, Any]]) -> Counter[tuple[str, str, str]]:
    """(dataset, key, transition) counts; summary rows add their counts under key "*"."""
    counter: Counter[tuple[str, str, str]] = Counter()
    for dataset, key, transition, due in moves:
        counter[(dataset, key, transition)] += due if key == "*" and isinstance(due, int) else 1
    return counter


def every_claim(conn: sa.Connection, dataset: str | None = None) -> list[Claim]:
    """Every claim the ledger makes that a record left its table or was masked there, read entry by entry.

    The audit never reads them all (it counts them and matches in the
    database); a test does, by hand, to hold the audit's counts and samples
    to: format 1 entries, the item rows of formats 2-4, and each format-5
    block's items (the record pseudonym is an item's first 32 bytes).
    """
    entries, items = store.ledger, store.ledger_items
    wanted = sa.or_(entries.c.transition.like("%->purged"), entries.c.action.in_(["anonymise", "archive"]))
    query = sa.select(entries).where(entries.c.dataset.is_not(None), wanted).order_by(entries.c.seq)
    if dataset is not None:
        query = query.where(entries.c.dataset == dataset)
    claims = []
    for row in conn.execute(query).all():
        head = (row.run_id, row.pack_id, row.dataset, row.transition, row.action)
        if row.format is None:
            if row.record_pseudonym is not None:
                claims.append(Claim(row.seq, None, *head, row.record_pseudonym))
            continue
        for item in conn.execute(sa.select(items).where(items.c.entry_seq == row.seq).order_by(items.c.idx)):
            claims.append(Claim(row.seq, item.idx, *head, item.record_pseudonym))
        for idx, (record, _due) in enumerate(_block_items(conn, row.seq)):
            claims.append(Claim(row.seq, idx, *head, record))
    return claims
