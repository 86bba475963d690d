"""Ledger format 5: one block row per batch entry instead of one item row per record (docs/ledger.md, "Format 5").

Formats 2-4 store each record's item as a row of ``retention_ledger_items``
with one B-tree (or hash) index per pseudonym column. Those random-order
index inserts are most of what an audited purge costs beyond the raw
``DELETE`` (bench/RESULTS.md, "ledger format 4" and "format 5"). A format-5
entry keeps the same information (record and subject pseudonyms under the
run key, due instant, position) as one byte string, the entry's **block**:

- an item is ``ITEM_SIZE`` bytes: the record pseudonym (32 raw bytes), the
  subject pseudonym (32 raw bytes, or 32 zero bytes for none: an HMAC output
  of all zeros has probability 2^-256) and the due instant as the 27 ASCII
  characters ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds), exactly as
  the format-4 leaf writes it;
- the block is the items in ascending order of their record pseudonym (byte
  order), so an item's position says nothing about the record's key or the
  order the rows were stored in; an item's ``idx`` is its position;
- the entry's ``merkle_root`` is the RFC 9162 root over the block's
  **chunks** (``CHUNK_ITEMS`` consecutive items; the last may be shorter), a
  chunk's leaf being SHA-256(0x00 || chunk bytes). The writer hashes
  ``len/CHUNK_ITEMS`` chunks per batch instead of one leaf per record, and a
  proof about one record carries its chunk (a few kB) and the chunk's audit
  path, not the whole block.

A format-5 entry carries no request, review or e-mail pseudonym: only batches
without them are written in this format (the set-based paths); the
per-record path keeps writing format 4. This module is pure (no database):
the encoding, the commitment, and reading items back out of a block, shared
by the writers, ``verify``, ``lookup``, ``prove`` and ``verify-proof``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from retention.ledger import merkle

FORMAT = 5
PSEUDONYM_SIZE = 32
DUE_SIZE = 27
ITEM_SIZE = 2 * PSEUDONYM_SIZE + DUE_SIZE  # 91
CHUNK_ITEMS = 64
NO_SUBJECT = bytes(PSEUDONYM_SIZE)
SUBJECT_AT = PSEUDONYM_SIZE
DUE_AT = 2 * PSEUDONYM_SIZE
_DUE_FORM = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_DUE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class BlockError(ValueError):
    """A block whose bytes are not a sequence of well-formed items in pseudonym order."""


@dataclass(frozen=True)
class BlockItem:
    """One item read out of a block: the fields a format-4 item has, in the same text forms."""

    idx: int
    record: str  # 64 lowercase hex
    subject: str | None  # 64 lowercase hex, or None
    due_at: str  # YYYY-MM-DDTHH:MM:SS.ffffffZ

    def as_dict(self) -> dict[str, object]:
        """The item as ``prove`` and ``lookup`` show items of every format (no request, review or e-mail)."""
        return {
            "idx": self.idx,
            "record": self.record,
            "subject": self.subject,
            "due_at": self.due_at,
            "request": None,
            "review": None,
        }


def due_text(instant: dt.datetime) -> bytes:
    """A due instant as an item holds it (UTC; a naive value is taken as UTC, as the ledger's instants are)."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant.astimezone(dt.UTC).strftime(_DUE_FORMAT).encode("ascii")


def due_instant(text: str | bytes) -> dt.datetime:
    """An item's due text as the aware instant a format-4 item row reads back."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    return dt.datetime.strptime(text, _DUE_FORMAT).replace(tzinfo=dt.UTC)


def item_bytes(record: bytes, subject: bytes | None, due_text: str) -> bytes:
    """One item's ``ITEM_SIZE`` bytes (module doc); refuses malformed parts rather than writing them."""
    if len(record) != PSEUDONYM_SIZE or (subject is not None and len(subject) != PSEUDONYM_SIZE):
        raise BlockError("a pseudonym is not 32 bytes")
    due = due_text.encode("ascii")
    if not _DUE_FORM.fullmatch(due):
        raise BlockError(f"a due instant is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ: {due_text!r}")
    return record + (subject if subject is not None else NO_SUBJECT) + due


def encode(items: Sequence[tuple[bytes, bytes | None, str]]) -> bytes:
    """The block of ``items`` (record, subject or None, due text): encoded and sorted by record pseudonym.

    The reference the database writers are held to (tests compare their
    bytes with this function's).
    """
    return b"".join(sorted(item_bytes(*item) for item in items))


def count(block: bytes) -> int:
    """How many items ``block`` holds; refuses a length that is not a whole number of items."""
    if len(block) % ITEM_SIZE:
        raise BlockError(f"a block of {len(block)} bytes is not a whole number of {ITEM_SIZE}-byte items")
    return len(block) // ITEM_SIZE


def chunks(block: bytes) -> list[bytes]:
    """The block's chunks of ``CHUNK_ITEMS`` items, in order."""
    size = CHUNK_ITEMS * ITEM_SIZE
    return [block[start : start + size] for start in range(0, len(block), size)]


def chunk_leaves(block: bytes) -> list[bytes]:
    """The Merkle leaves of the block: SHA-256(0x00 || chunk) per chunk."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + chunk).digest() for chunk in chunks(block)]


def root(block: bytes) -> bytes:
    """The entry's ``merkle_root`` for this block (RFC 9162 over the chunk leaves)."""
    count(block)
    return merkle.root(chunk_leaves(block))


def check(block: bytes) -> str | None:
    """Why ``block`` is not well formed (item size, due instants, strict pseudonym order), or None.

    ``verify`` reports it; the Merkle root alone would also fail on most
    damage, but a block written out of order by a faulty writer must be
    named even when its root was computed over the faulty bytes.
    """
    try:
        n = count(block)
    except BlockError as error:
        return str(error)
    previous = b""
    for i in range(n):
        start = i * ITEM_SIZE
        record = block[start : start + PSEUDONYM_SIZE]
        if record <= previous:
            return f"item {i} is not in ascending record pseudonym order"
        previous = record
        if not _DUE_FORM.fullmatch(block[start + DUE_AT : start + ITEM_SIZE]):
            return f"item {i}: its due instant is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ"
    return None


def item_at(block: bytes, idx: int) -> BlockItem:
    """Item ``idx`` of the block, in the text forms of a format-4 item."""
    if not 0 <= idx < count(block):
        raise IndexError(f"item {idx} is not in a block of {count(block)}")
    start = idx * ITEM_SIZE
    record = block[start : start + PSEUDONYM_SIZE]
    subject = block[start + SUBJECT_AT : start + DUE_AT]
    return BlockItem(
        idx=idx,
        record=record.hex(),
        subject=None if subject == NO_SUBJECT else subject.hex(),
        due_at=block[start + DUE_AT : start + ITEM_SIZE].decode("ascii"),
    )


def items(block: bytes) -> Iterator[BlockItem]:
    """Every item of the block in position order."""
    for idx in range(count(block)):
        yield item_at(block, idx)


def _aligned(block: bytes, needle: bytes, at: int) -> Iterator[int]:
    """Positions of the items whose field at byte offset ``at`` equals ``needle``.

    A plain byte search finds the needle anywhere; only an occurrence that
    starts at that field of an item counts (a match straddling two items, or
    in another field, is passed over and the search goes on).
    """
    start = block.find(needle)
    while start >= 0:
        if start % ITEM_SIZE == at:
            yield start // ITEM_SIZE
        start = block.find(needle, start + 1)


def find_record(block: bytes, record: bytes) -> int | None:
    """The position of the item with this record pseudonym, or None (positions are in record order: bisect)."""
    lo, hi = 0, count(block)
    while lo < hi:
        mid = (lo + hi) // 2
        here = block[mid * ITEM_SIZE : mid * ITEM_SIZE + PSEUDONYM_SIZE]
        if here < record:
            lo = mid + 1
        elif here > record:
            hi = mid
        else:
            return mid
    return None


def find_subject(block: bytes, subject: bytes) -> list[int]:
    """The positions of every item with this subject pseudonym (a person may have many in one batch)."""
    if subject == NO_SUBJECT:
        return []
    return list(_aligned(block, subject, SUBJECT_AT))


def proof_part(block: bytes, idx: int) -> tuple[bytes, list[bytes]]:
    """What a proof carries for item ``idx``: its chunk's bytes and the chunk's audit path (nearest first)."""
    count(block)
    leaves = chunk_leaves(block)
    chunk = idx // CHUNK_ITEMS
    return chunks(block)[chunk], merkle.audit_path(leaves, chunk)


def verify_item(
    item: BlockItem, chunk: bytes, path: Sequence[bytes], items_in_entry: int, expected_root: bytes
) -> str | None:
    """Why a proof's format-5 item does not lead to its entry's root, or None when it does.

    The item's own bytes must be at its position in the chunk, and the
    chunk's leaf, walked up the audit path with the chunk's index and the
    entry's chunk count as the tree size, must give the root.
    """
    if items_in_entry <= 0 or not 0 <= item.idx < items_in_entry:
        return "the item's position is not within the entry's items"
    chunk_count = -(-items_in_entry // CHUNK_ITEMS)
    expected_len = min(CHUNK_ITEMS, items_in_entry - (item.idx // CHUNK_ITEMS) * CHUNK_ITEMS) * ITEM_SIZE
    if len(chunk) != expected_len:
        return "the chunk is not as long as the entry's item count says"
    try:
        own = item_bytes(
            bytes.fromhex(item.record), None if item.subject is None else bytes.fromhex(item.subject), item.due_at
        )
    except (BlockError, ValueError):
        return "the item's fields are not well formed"
    offset = (item.idx % CHUNK_ITEMS) * ITEM_SIZE
    if chunk[offset : offset + ITEM_SIZE] != own:
        return "the item is not at its position in the chunk"
    leaf = hashlib.sha256(b"\x00" + chunk).digest()
    if not merkle.verify_path(leaf, item.idx // CHUNK_ITEMS, chunk_count, path, expected_root):
        return "the chunk and its audit path do not lead to the entry's Merkle root"
    return None


__all__ = [
    "CHUNK_ITEMS",
    "DUE_SIZE",
    "FORMAT",
    "ITEM_SIZE",
    "NO_SUBJECT",
    "BlockError",
    "BlockItem",
    "check",
    "chunk_leaves",
    "chunks",
    "count",
    "due_instant",
    "due_text",
    "encode",
    "find_record",
    "find_subject",
    "item_at",
    "item_bytes",
    "items",
    "proof_part",
    "root",
    "verify_item",
]
