"""A batch's ledger items in one pass: pseudonyms, Merkle leaves and insert rows, no object per record.

A purge writes one item per record it moves, so what the ledger does per
record is the engine's hottest Python. :class:`~retention.ledger.items.BatchItems`
with :class:`~retention.ledger.items.Item`, :func:`~retention.ledger.items.leaves`
and :func:`~retention.ledger.items.insert_items` build the same values through
a dataclass per record, a method call per pseudonym and a second pass to
encode each item. Here one loop keys the three pseudonyms from the run's
pre-absorbed HMAC pads, formats each due instant once per distinct value (a
batch's records share few due days), builds the RFC 8785 item document
inline and hashes its leaf (format 4, :func:`~retention.ledger.items.item_bytes`),
keeping only strings, tuples and the 32-byte leaves. The stored content and every leaf are byte-for-byte those of the
per-record path (``tests/test_ledger_bulk.py`` holds the two equal), so
``verify``, ``prove`` and ``lookup`` read old and new items alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.ledger import items as ledger_items
from retention.ledger import merkle, pseudonyms
from retention.ledger.items import (
    ITEM_COLUMNS,
    BatchItems,
    due_converter,
    item_bytes,
    item_document,
    run_key,
    write_lookup,
)
from retention.store import tables as store

COLUMNS = ITEM_COLUMNS
"""The item columns, in the order of the rows :func:`rows` returns."""


@dataclass(frozen=True, slots=True)
class PreparedItems:
    """One batch's items, pseudonymised and committed to, before they have an entry position.

    ``values`` per item: (record, subject, due_at, request id, review id,
    e-mail), pseudonyms as lowercase hex; ``root`` the hex Merkle root.
    """

    values: list[tuple[str, str | None, dt.datetime, int | None, int | None, str | None]]
    root: str

    def __len__(self) -> int:
        return len(self.values)


def _instant(value: dt.datetime) -> str:
    """The due instant as the item document writes it (UTC, microseconds, ``Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def prepare(draft: BatchItems) -> PreparedItems:
    """Pseudonyms, leaves and Merkle root of ``draft``'s items, in one loop (the key stays in this process)."""
    inner, outer = pseudonyms.keyed(run_key(draft.secret, draft.run_id)).pads()
    inner_copy, outer_copy = inner.copy, outer.copy
    sha256 = hashlib.sha256
    record_prefix = f"record\x1f{draft.dataset}\x1f".encode()
    moves = draft.moves
    emails = draft.emails if draft.emails is not None else [None] * len(moves)
    due_text: dict[dt.datetime, str] = {}
    # Read at call time: tests write the previous format (3, the JSON document) by setting it.
    encode = item_bytes if ledger_items.FORMAT not in ledger_items.LOOKUP_FORMATS else item_document
    values: list[tuple[str, str | None, dt.datetime, int | None, int | None, str | None]] = []
    leaves: list[bytes] = []

    def hexmac(message: bytes) -> str:
        h = inner_copy()
        h.update(message)
        o = outer_copy()
        o.update(h.digest())
        return o.hexdigest()

    for idx, ((due_at, record_key, subject_key, request_id, review_id), mail) in enumerate(
        zip(moves, emails, strict=True)
    ):
        record = hexmac(record_prefix + record_key.encode("utf-8"))
        subject = None if subject_key is None else hexmac(b"subject\x1f" + subject_key.encode("utf-8"))
        email = None if mail is None else hexmac(b"email\x1f" + mail.encode("ascii"))
        due = due_text.get(due_at)
        if due is None:
            due = due_text[due_at] = _instant(due_at)
        leaves.append(sha256(b"\x00" + encode(idx, record, subject, due, request_id, review_id, email)).digest())
        values.append((record, subject, due_at, request_id, review_id, email))
    return PreparedItems(values, merkle.root(leaves).hex())


def rows(conn: sa.Connection, entry_seq: int, prepared: PreparedItems) -> list[tuple[Any, ...]]:
    """The insert rows (in :data:`COLUMNS` order) of ``prepared`` at position ``entry_seq``."""
    due = due_converter(conn)

    return [
        (entry_seq, idx, record, subject, due(due_at), request_id, review_id, email)
        for idx, (record, subject, due_at, request_id, review_id, email) in enumerate(prepared.values)
    ]


def insert(conn: sa.Connection, entry_seq: int, prepared: PreparedItems) -> None:
    """Write ``prepared``'s items under entry ``entry_seq`` by the driver's bulk path, in the caller's transaction."""
    if prepared.values:
        dialect_for(conn).bulk_insert(conn, store.ledger_items, COLUMNS, rows(conn, entry_seq, prepared))


def index(conn: sa.Connection, run_id: str, entry_seq: int, prepared: PreparedItems) -> None:
    """The lookup rows of ``prepared``'s items (format 3 only; format 4 writes none), as ``index_items`` does.

    Same rows in the same order (the table's key order) from the prepared
    values, so a batch written by this path is indexed in its own
    transaction like one written through :class:`~retention.ledger.items.Item`.
    """
    write_lookup(conn, run_id, entry_seq, ((v[0], v[1], v[5]) for v in prepared.values))


__all__ = ["COLUMNS", "PreparedItems", "index", "insert", "prepare", "rows"]
