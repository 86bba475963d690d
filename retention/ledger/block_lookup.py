"""Finding format-5 items: a byte search over the blocks of the runs whose key made the pseudonym (docs/ledger.md).

A format-5 entry keeps its items as one byte string (:mod:`retention.ledger.blocks`)
and there is no index on any pseudonym: that is what makes the set-based writers
cheap. ``ledger lookup``, ``prove``, the console's person page and the audit find
an item instead by searching the bodies of the run's blocks for the pseudonym's 32
raw bytes, in the database (PostgreSQL ``position``, MariaDB ``LOCATE``, SQLite
``instr``: all byte-wise on a binary column), so that only the blocks that hold it
travel to this process. Each run's pseudonym is searched for only in that run's
entries (a pseudonym under one run's key matching another run's item would be an
HMAC collision, and searching every block for every run's pseudonym would cost the
number of runs times the ledger), and all runs' pseudonyms go in one statement per
``RUNS_PER_STATEMENT`` runs: a ``CASE`` on the entry's run picks the one needle each
block is searched for. The database says only that the bytes occur somewhere in a
block; :func:`retention.ledger.blocks.find_record` and ``find_subject`` then keep
the occurrences aligned on an item's field, here.

Cost: one pass over the bodies of the runs' format-5 entries (91 bytes per item;
bench/RESULTS.md, "format 5, the readers"), whatever the pseudonym.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.ledger import blocks
from retention.store import tables as store

RUNS_PER_STATEMENT = 100
"""Runs whose needles one statement carries (two bound parameters each; SQLite allows 32,766)."""


def search(conn: sa.Connection, body: Any, needle: Any) -> sa.ColumnElement[Any]:
    """Where ``needle`` first occurs in ``body`` (1-based; 0 when it does not), as the connection's database says it.

    All three compare bytes on a binary value: PostgreSQL's ``position`` on
    ``bytea`` (called by its catalog name: ``position(a, b)`` is not valid
    SQL there, only ``position(b IN a)``), MariaDB's ``LOCATE`` on a
    ``LONGBLOB`` and SQLite's ``instr`` on two blobs.
    """
    return dialect_for(conn).byte_position(body, needle)


def item_row(entry_seq: int, item: blocks.BlockItem) -> dict[str, Any]:
    """A block's item in the shape of a ``retention_ledger_items`` row, so that every reader takes both alike."""
    return {
        "entry_seq": entry_seq,
        "idx": item.idx,
        "record_pseudonym": item.record,
        "subject_pseudonym": item.subject,
        "due_at": blocks.due_instant(item.due_at),
        "request_id": None,
        "review_id": None,
        "email_pseudonym": None,
    }


def _rounds(wanted: dict[str, list[bytes]]) -> Iterator[dict[str, bytes]]:
    """The (run -> needle) maps to search with, at most one needle per run each (a ``CASE`` picks one)."""
    depth = max((len(needles) for needles in wanted.values()), default=0)
    for k in range(depth):
        yield {run: needles[k] for run, needles in wanted.items() if k < len(needles)}


def blocks_holding(
    conn: sa.Connection, wanted: dict[str, list[bytes]], *, dataset: str | None = None
) -> Iterator[tuple[int, str, bytes]]:
    """(entry, run, body) of each format-5 block of run R holding one of ``wanted[R]``'s byte strings somewhere.

    Not yet aligned: the caller keeps the occurrences on an item's field.
    ``dataset`` confines the search to that dataset's entries (a record's
    pseudonym names its dataset, so no other entry can hold it). A block
    holding several needles is returned once per statement that finds it.
    """
    entries, table = store.ledger, store.ledger_blocks
    for needles in _rounds(wanted):
        runs = sorted(needles)
        for start in range(0, len(runs), RUNS_PER_STATEMENT):
            chunk = runs[start : start + RUNS_PER_STATEMENT]
            needle = sa.case({run: sa.literal(needles[run], sa.LargeBinary) for run in chunk}, value=entries.c.run_id)
            where = [
                entries.c.format == blocks.FORMAT,
                entries.c.run_id.in_(chunk),
                search(conn, table.c.body, needle) > 0,
            ]
            if dataset is not None:
                where.append(entries.c.dataset == dataset)
            query = (
                sa.select(table.c.entry_seq, entries.c.run_id, table.c.body)
                .select_from(table.join(entries, entries.c.seq == table.c.entry_seq))
                .where(*where)
                .order_by(table.c.entry_seq)
            )
            for seq, run_id, body in conn.execute(query):
                yield int(seq), str(run_id), bytes(body)


def find(
    conn: sa.Connection, pseudonyms_by_run: Iterable[tuple[str, Sequence[str]]], *, dataset: str | None = None
) -> Iterator[dict[str, Any]]:
    """Format-5 items of run R whose record or subject pseudonym is one of R's (hex) pseudonyms given.

    As :func:`retention.ledger.items.find` for the items table (same row
    shape, in entry and position order; the caller derives each run's
    pseudonyms under its key). A pseudonym is matched as a record
    pseudonym (field at offset 0, one item at most per block: the block is
    sorted by it) and as a subject pseudonym (offset 32, any number of
    items): record and subject pseudonyms are HMACs of different messages,
    so a value is only ever one of them, as the format-4 search over both
    columns assumes too.
    """
    wanted: dict[str, list[bytes]] = {}
    for run_id, names in pseudonyms_by_run:
        needles = sorted({bytes.fromhex(p) for p in names})
        if needles:
            wanted[run_id] = needles
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for seq, run_id, body in blocks_holding(conn, wanted, dataset=dataset):
        for needle in wanted.get(run_id, []):
            positions = blocks.find_subject(body, needle)
            at = blocks.find_record(body, needle)
            if at is not None:
                positions.append(at)
            for idx in positions:
                found[(seq, idx)] = item_row(seq, blocks.item_at(body, idx))
    for position in sorted(found):
        yield found[position]


def body_of(conn: sa.Connection, entry_seq: int) -> bytes | None:
    """The block of entry ``entry_seq`` (None when it has none)."""
    table = store.ledger_blocks
    body = conn.execute(sa.select(table.c.body).where(table.c.entry_seq == entry_seq)).scalar()
    return None if body is None else bytes(body)


__all__ = ["RUNS_PER_STATEMENT", "blocks_holding", "body_of", "find", "item_row", "search"]
