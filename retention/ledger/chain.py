"""The purge ledger: append-only, hash-chained, pseudonymous (SPEC section 6).

Each entry's hash is SHA-256 over the RFC 8785 canonical JSON of every column
but the hash itself, the previous entry's hash included, so changing,
removing, inserting or reordering any entry breaks the chain from there on.
Record and subject keys appear only as HMAC-SHA256 pseudonyms under a secret
the operator holds: an auditor given a customer id and the key can find its
entries, while the ledger alone names no one. Ed25519-signed checkpoints of
the head, kept elsewhere, expose even a chain rewritten consistently.

This module appends; an entry's canonical form and hash are
:mod:`~retention.ledger.canonical`, verifying :mod:`~retention.ledger.verification`,
keys and checkpoints :mod:`~retention.ledger.signing`, reading for auditors
:mod:`~retention.ledger.export` (all re-exported from here).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.errors import LedgerError
from retention.ledger import blocks, bulk, merkle, pseudonyms
from retention.ledger import items as ledger_items
from retention.ledger import mac as ledger_mac
from retention.ledger.canonical import (
    _INSTANT_COLUMNS,
    COLUMNS,
    GENESIS,
    V2_COLUMNS,
    EntryDraft,
    _canonical_detail,
    _Encoder,
    canonical_entry,
    canonical_entry_v2,
    entry_hash,
    entry_hash_v2,
    row_hash,
)
from retention.ledger.export import (
    EXPORT_FIELDS,
    entries,
    export,
)
from retention.ledger.items import BatchItems
from retention.ledger.signing import (
    AUTHENTICATED_FROM,
    checkpoint,
    configured_public_key,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    public_key_from,
    public_key_source,
    public_pem,
    signature_valid,
    verify_checkpoint,
)
from retention.ledger.verification import (
    VerifyResult,
    record_run_head,
    verify,
)
from retention.store import tables as store

_ADVISORY_KEY = 0x7265746E  # "retn": serialises ledger appends on PostgreSQL


def _lock_head(conn: sa.Connection, *, last_format: bool = False) -> tuple[int, str, Any]:
    """Serialise appenders and read the head (seq, hash) of the chain, and with ``last_format`` more.

    The lock lasts until the caller's transaction ends, so appends come last
    in a batch's transaction (:func:`retention.engine.execute.apply_batch`) and the
    lock is held from here to the commit only. How long it took to get and
    how long it is held are measured (:func:`lock_timing`).

    The third value is :func:`~retention.ledger.items.last_item_format` below
    the next entry, read by the statement that reads the head when
    ``last_format`` asks for it and the head is not read by a locking read
    (a ``FOR UPDATE`` would lock the item row the subquery reads too: InnoDB
    locks every row a locking read reads); otherwise ``items.UNREAD``, and
    :func:`~retention.ledger.items.index_pending` reads it itself.
    """
    table, dialect = store.ledger, dialect_for(conn)
    asks = last_format and not dialect.head_read_locks
    query = sa.select(table.c.seq, table.c.hash)
    if asks:
        query = query.add_columns(ledger_items.last_item_format(table.c.seq + 1).label("last_format"))
    query = query.order_by(table.c.seq.desc()).limit(1)
    asked = time.perf_counter()
    head = conn.execute(dialect.lock_ledger_head(conn, query, _ADVISORY_KEY)).first()
    locked = time.perf_counter()
    transaction = id(conn.get_transaction())
    timing = conn.info.get(_TIMING)
    if timing is None or timing["tx"] != transaction:  # left by a transaction nobody measured
        timing = conn.info[_TIMING] = {"tx": transaction, "waits": 0, "wait_s": 0.0}
    timing["waits"] += 1
    timing["wait_s"] += locked - asked
    timing.setdefault("locked_at", locked)
    form = (head.last_format if head else None) if asks else ledger_items.UNREAD
    return (int(head.seq), str(head.hash), form) if head else (0, GENESIS, form)


_TIMING = "retention_ledger_lock"


def lock_timing(conn: sa.Connection) -> tuple[float, float] | None:
    """(seconds waited for the append lock, seconds held until now) in the transaction that ends now.

    None when the transaction appended nothing. Call it right after the
    commit (or rollback) that released the lock; it resets the measure.
    """
    timing = conn.info.pop(_TIMING, None)
    if timing is None or "locked_at" not in timing:
        return None
    return float(timing["wait_s"]), time.perf_counter() - float(timing["locked_at"])


@dataclass(frozen=True)
class RecordEntries:
    """One entry per record for the records one batch moves through one transition.

    The entries differ only in the record's due instant, pseudonyms and
    detail (the erasure request or review behind a move), so they are
    chained by a tight loop that reuses the encoding of everything
    they share; the bytes hashed are exactly those of :func:`canonical_entry`
    (``verify`` recomputes them the general way).
    """

    run_id: str | None
    pack_id: str | None
    pack_digest: str | None
    dataset: str
    transition: str
    action: str | None
    basis: str | None
    secret: bytes
    # (due_at, record key, subject key, detail: the erasure request or review, or None)
    items: Sequence[tuple[dt.datetime, str, str | None, dict[str, Any] | None]]


def append(
    conn: sa.Connection,
    drafts: Sequence[EntryDraft | RecordEntries | BatchItems],
    now: dt.datetime,
    *,
    secret: bytes | None = None,
) -> list[int]:
    """Chain ``drafts`` after the head, in the caller's transaction.

    The entries commit (or roll back) with the data change they describe.
    New entries are of format 4 (:func:`entry_hash_v2` and a MAC under the
    ledger key, :mod:`retention.ledger.mac`, as format 3); a ``BatchItems``
    draft becomes one entry whose Merkle root commits to its items (format-4
    leaves), written in the same transaction; no lookup rows.
    ``RecordEntries`` (one v1 entry per record) is kept for
    databases and tests that still write the v1 form. The pseudonym key is
    ``secret``, else a draft's, else the configured one: an entry the engine
    cannot authenticate is not written at all. Each run's last entry is noted
    in its row in the same transaction (:func:`_against_runs`).
    """
    if not drafts:
        return []
    if secret is None:
        secret = next((d.secret for d in drafts if isinstance(d, BatchItems | RecordEntries)), None)
    if secret is None:
        secret = pseudonyms.pseudonym_secret()
    # The items' pseudonyms and Merkle roots need no chain position: computed
    # before the lock, so that it covers the inserts and the commit only.
    prepared = {index: bulk.prepare(draft) for index, draft in enumerate(drafts) if isinstance(draft, BatchItems)}
    seq, prev, last_format = _lock_head(conn, last_format=bool(prepared))
    first = seq + 1
    if prepared:  # items an older version left unindexed, before this batch's (ledger_items.index_pending)
        ledger_items.index_pending(conn, first, last_format)
    encoder = _Encoder()
    convert = _Converters(conn.dialect)
    rows: list[tuple[Any, ...]] = []
    last_of_run: dict[str, int] = {}
    for index, draft in enumerate(drafts):
        if isinstance(draft, RecordEntries):
            seq, prev = _chain_records(draft, seq, prev, now, encoder, convert, rows)
            if draft.run_id is not None and draft.items:
                last_of_run[draft.run_id] = seq
            continue
        seq += 1
        row = _base_row(draft, seq, now, prev)
        if isinstance(draft, BatchItems):
            items = prepared[index]
            bulk.insert(conn, seq, items)
            if ledger_items.FORMAT in ledger_items.LOOKUP_FORMATS:  # format 4 has none: the items' indexes find them
                bulk.index(conn, draft.run_id, seq, items)
            dues = [m[0] for m in draft.moves]
            row.update(
                due_at=max(dues) if dues else None,
                count=len(items),
                merkle_root=items.root,
                items=len(items),
            )
        else:
            row.update(
                due_at=draft.due_at,
                record_pseudonym=draft.record_pseudonym,
                subject_pseudonym=draft.subject_pseudonym,
                count=draft.count,
                clock_min=draft.clock_min,
                clock_max=draft.clock_max,
                detail=_canonical_detail(draft.detail),
            )
        row["hash"] = prev = entry_hash_v2(row)
        row["mac"] = ledger_mac.entry_mac(secret, prev)
        rows.append(tuple(convert(name, row[name]) for name in _INSERT_COLUMNS_V2))
        if draft.run_id is not None:
            last_of_run[draft.run_id] = seq
    _bulk_insert(conn, rows)
    _note_run_heads(conn, last_of_run)
    return list(range(first, seq + 1))


def append_written(
    conn: sa.Connection,
    draft: BatchItems,
    now: dt.datetime,
    write: Callable[[int], tuple[list[bytes], dt.datetime | None]],
    *,
    secret: bytes,
) -> int:
    """Chain one format-4 entry whose items the database writes itself; returns how many items it has.

    ``write(seq)`` inserts the entry's items at
    position ``seq`` by ``INSERT ... SELECT`` and returns their leaves in
    position order with the latest due instant
    (:mod:`retention.engine.set_purge`); ``draft`` gives the entry's other
    columns (its ``moves`` are not read). The entry is format 4 exactly as
    :func:`append` writes a ``BatchItems`` draft, so ``verify`` and ``prove``
    cannot tell which way its items were computed. The position is needed
    before the items exist, so the append lock is taken first and held
    through the batch's statements to the commit. No item, no entry.
    """

    def items(seq: int) -> tuple[int, bytes, dt.datetime | None]:
        leaves, due = write(seq)
        return len(leaves), merkle.root(leaves) if leaves else b"", due

    return _append_one(conn, draft, now, items, ledger_items.FORMAT, secret)


def append_blocks_written(
    conn: sa.Connection, draft: BatchItems, now: dt.datetime, write: Callable[[int], bytes], *, secret: bytes
) -> int:
    """Chain one format-5 entry whose block the database writes itself; returns how many items it has.

    ``write(seq)`` inserts the entry's block row at position ``seq`` (by
    ``INSERT ... SELECT``, :mod:`retention.engine.set_purge`) and returns its
    body as stored, or no bytes for no item. The chunk leaves, the Merkle
    root and the latest due instant are computed here from the body
    (SHA-256 over 91 bytes per record: a fraction of a microsecond), and a
    body not in strict record pseudonym order is refused, so that a database
    sorting otherwise fails the batch instead of writing an entry ``verify``
    would reject. Otherwise as :func:`append_written`.
    """

    def items(seq: int) -> tuple[int, bytes, dt.datetime | None]:
        body = write(seq)
        records = [body[i : i + blocks.PSEUDONYM_SIZE] for i in range(0, len(body), blocks.ITEM_SIZE)]
        if any(a >= b for a, b in itertools.pairwise(records)):
            raise LedgerError(
                f"the database wrote a block of {len(records)} items out of record pseudonym order; rolled back"
            )
        return _committed(body)

    return _append_one(conn, draft, now, items, blocks.FORMAT, secret)


def append_block(conn: sa.Connection, draft: BatchItems, block: bytes, now: dt.datetime, *, secret: bytes) -> int:
    """Chain one format-5 entry over ``block`` computed in Python; returns how many items it holds.

    The reference writer (tests, small batches): the same entry and block
    row the set-based writers make in SQL. ``draft`` gives the entry's other
    columns (its ``moves`` are not read: the block is the items). A block
    that is not well formed (:func:`retention.ledger.blocks.check`) is
    refused before anything is written; an empty one writes nothing.
    """
    problem = blocks.check(block)
    if problem is not None:
        raise blocks.BlockError(f"a block that is not well formed: {problem}")

    def write(seq: int) -> tuple[int, bytes, dt.datetime | None]:
        if block:
            conn.execute(store.ledger_blocks.insert().values(entry_seq=seq, items=blocks.count(block), body=block))
        return _committed(block)

    return _append_one(conn, draft, now, write, blocks.FORMAT, secret)


def _committed(body: bytes) -> tuple[int, bytes, dt.datetime | None]:
    """What a format-5 entry takes from its block: item count, Merkle root, latest due instant (none: 0)."""
    count = blocks.count(body)
    if not count:
        return 0, b"", None
    # Fixed-width UTC text: the greatest text is the latest instant.
    due = max(body[i + blocks.DUE_AT : i + blocks.ITEM_SIZE] for i in range(0, len(body), blocks.ITEM_SIZE))
    return count, blocks.root(body), blocks.due_instant(due)


def _append_one(
    conn: sa.Connection,
    draft: BatchItems,
    now: dt.datetime,
    write: Callable[[int], tuple[int, bytes, dt.datetime | None]],
    form: int,
    secret: bytes,
) -> int:
    """Lock the head, let ``write(seq)`` store the items (count, Merkle root, latest due), chain the entry.

    Shared by the writers of one entry whose items are stored before the
    entry (:func:`append_written`, :func:`append_blocks_written`,
    :func:`append_block`), so that the formats differ only in what ``write``
    stores and how the root is made. No item, no entry.
    """
    seq, prev, last_format = _lock_head(conn, last_format=True)
    ledger_items.index_pending(conn, seq + 1, last_format)
    seq += 1
    count, root, due = write(seq)
    if not count:
        return 0
    row = _base_row(draft, seq, now, prev, form)
    row.update(due_at=due, count=count, merkle_root=root.hex(), items=count)
    row["hash"] = entry_hash_v2(row)
    row["mac"] = ledger_mac.entry_mac(secret, row["hash"])
    # One entry: an ordinary insert (one statement; COPY is two round trips), and where the
    # database can, one statement with the run's head (BulkWriteSQL.insert_then_update).
    entry = store.ledger.insert().values({name: row[name] for name in _INSERT_COLUMNS_V2})
    if draft.run_id is None:
        conn.execute(entry)
    else:
        runs = store.runs
        head = runs.update().where(runs.c.id == draft.run_id).values(ledger_last=seq)
        dialect_for(conn).insert_then_update(conn, entry, head)
    return count


def _base_row(
    draft: EntryDraft | BatchItems, seq: int, now: dt.datetime, prev: str, form: int | None = None
) -> dict[str, Any]:
    """The columns a format-3 entry takes from its draft alike for a batch and a single entry.

    Every column of the entry is present (in insert order), the ones that
    depend on the kind of draft as None: the caller fills those in, so the
    two kinds cannot drift apart in what they share.
    """
    return {
        "seq": seq,
        "recorded_at": now,
        "run_id": draft.run_id,
        "pack_id": draft.pack_id,
        "pack_digest": draft.pack_digest,
        "dataset": draft.dataset,
        "transition": draft.transition,
        "action": draft.action,
        "basis": draft.basis,
        "due_at": None,
        "record_pseudonym": None,
        "subject_pseudonym": None,
        "count": None,
        "clock_min": None,
        "clock_max": None,
        "detail": None,
        "prev_hash": prev,
        "format": ledger_items.FORMAT if form is None else form,
        "merkle_root": None,
        "items": None,
    }


def _note_run_heads(conn: sa.Connection, last_of_run: dict[str, int]) -> None:
    """Each run's last entry, in its row, in the transaction that wrote the entry.

    A run killed or failed after this batch never reaches the end of the
    run, where the ledger length used to be noted: this high-water mark lets
    ``verify`` detect a tail cut from any run (:func:`_against_runs`).
    """
    runs = store.runs
    for run_id, last in last_of_run.items():
        conn.execute(runs.update().where(runs.c.id == run_id).values(ledger_last=last))


def _chain_records(
    entries: RecordEntries,
    seq: int,
    prev: str,
    now: dt.datetime,
    encoder: _Encoder,
    convert: _Converters,
    rows: list[tuple[Any, ...]],
) -> tuple[int, str]:
    shared = {
        "recorded_at": now,
        "run_id": entries.run_id,
        "pack_id": entries.pack_id,
        "pack_digest": entries.pack_digest,
        "dataset": entries.dataset,
        "transition": entries.transition,
        "action": entries.action,
        "basis": entries.basis,
        "count": 1,
        "clock_min": None,
        "clock_max": None,
    }
    # The text around the varying columns (detail, due_at, prev_hash,
    # record_pseudonym, seq, subject_pseudonym, in canonical order).
    s0, s1, s2, s3, s4, s5, s6 = encoder._encode_segments(shared)
    head = tuple(convert(name, shared[name]) for name in ("recorded_at", "run_id", "pack_id", "pack_digest"))
    middle = tuple(convert(name, shared[name]) for name in ("dataset", "transition", "action", "basis"))
    keyed = pseudonyms.keyed(entries.secret)
    record_prefix = f"record\x1f{entries.dataset}\x1f".encode()
    sha256 = hashlib.sha256
    for due_at, record_key, subject_key, detail in entries.items:
        seq += 1
        detail_text = _canonical_detail(detail)
        detail_json = "null" if detail_text is None else encoder.string(detail_text)
        record = keyed.hexdigest(record_prefix + record_key.encode("utf-8"))
        subject = None
        subject_json = "null"
        if subject_key is not None:
            subject = keyed.hexdigest(b"subject\x1f" + subject_key.encode("utf-8"))
            subject_json = f'"{subject}"'
        document = (
            f'{s0}{detail_json}{s1}{encoder.instant(due_at)}{s2}"{prev}"{s3}"{record}"{s4}{seq}{s5}{subject_json}{s6}'
        )
        digest = sha256(document.encode("utf-8")).hexdigest()
        rows.append(
            (
                seq,
                *head,
                *middle,
                convert("due_at", due_at),
                record,
                subject,
                1,
                None,
                None,
                detail_text,
                prev,
                digest,
                None,
                None,
                None,
                None,
            )
        )
        prev = digest
    return seq, prev


_INSERT_COLUMNS = (*COLUMNS, "hash")
_INSERT_COLUMNS_V2 = (*COLUMNS, "hash", "format", "merkle_root", "items", "mac")


class _Converters:
    """Python values to what the driver receives, by the columns' own bind processors.

    Used for the bulk path, so that what lands is exactly what an ordinary
    SQLAlchemy insert would have written; conversions are memoised because a
    batch repeats the same few instants.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        self._processors = {name: store.ledger.c[name].type.bind_processor(dialect) for name in _INSTANT_COLUMNS}
        self._memo: dict[tuple[str, Any], Any] = {}

    def __call__(self, name: str, value: Any) -> Any:
        process = self._processors.get(name)
        if process is None or value is None:
            return value
        key = (name, value)
        converted = self._memo.get(key)
        if converted is None:
            converted = self._memo[key] = process(value)
        return converted


def _bulk_insert(conn: sa.Connection, tuples: list[tuple[Any, ...]]) -> None:
    """Insert ledger rows (in ``_INSERT_COLUMNS`` order) through the driver's bulk path.

    A purge writes one entry per record, so this is the engine's hottest
    insert (see :meth:`retention.dialects.Dialect.bulk_insert`: COPY on
    PostgreSQL), in the caller's transaction.
    """
    dialect_for(conn).bulk_insert(conn, store.ledger, _INSERT_COLUMNS_V2, tuples)


# The names this module held before it was split keep working from here (re-exported).
__all__ = [
    "AUTHENTICATED_FROM",
    "COLUMNS",
    "EXPORT_FIELDS",
    "GENESIS",
    "V2_COLUMNS",
    "EntryDraft",
    "RecordEntries",
    "VerifyResult",
    "append",
    "append_block",
    "append_blocks_written",
    "append_written",
    "canonical_entry",
    "canonical_entry_v2",
    "checkpoint",
    "configured_public_key",
    "entries",
    "entry_hash",
    "entry_hash_v2",
    "export",
    "generate_signing_key",
    "load_public_key",
    "load_signing_key",
    "lock_timing",
    "public_key_from",
    "public_key_source",
    "public_pem",
    "record_run_head",
    "row_hash",
    "signature_valid",
    "verify",
    "verify_checkpoint",
]
