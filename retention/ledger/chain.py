"""The purge ledger: append-only, hash-chained, pseudonymous (SPEC section 6).

Each entry's hash is SHA-256 over the RFC 8785 canonical JSON of every column
but the hash itself, the previous entry's hash included, so changing,
removing, inserting or reordering any entry breaks the chain from there on.
Record and subject keys appear only as HMAC-SHA256 pseudonyms under a secret
the operator holds: an auditor given a customer id and the key can find its
entries, while the ledger alone names no one. Ed25519-signed checkpoints of
the head, kept elsewhere, expose even a chain rewritten consistently.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import json
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import rfc8785
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from retention.dialects import dialect_for
from retention.errors import ConfigError, LedgerError
from retention.ledger import bulk, pseudonyms
from retention.ledger import items as ledger_items
from retention.ledger import mac as ledger_mac
from retention.ledger.items import BatchItems
from retention.store import tables as store

GENESIS = "0" * 64
_ADVISORY_KEY = 0x7265746E  # "retn": serialises ledger appends on PostgreSQL

COLUMNS = (
    "seq",
    "recorded_at",
    "run_id",
    "pack_id",
    "pack_digest",
    "dataset",
    "transition",
    "action",
    "basis",
    "due_at",
    "record_pseudonym",
    "subject_pseudonym",
    "count",
    "clock_min",
    "clock_max",
    "detail",
    "prev_hash",
)


# --------------------------------------------------------------------------
# Entries and hashing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryDraft:
    """An entry before it takes its place in the chain."""

    run_id: str | None
    pack_id: str | None
    pack_digest: str | None
    dataset: str | None
    transition: str
    action: str | None
    basis: str | None
    due_at: dt.datetime | None
    record_pseudonym: str | None
    subject_pseudonym: str | None
    count: int = 1
    clock_min: dt.datetime | None = None
    clock_max: dt.datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _instant(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_detail(detail: dict[str, Any] | str | None) -> str | None:
    if not detail:
        return None
    if isinstance(detail, str):
        return detail
    return rfc8785.dumps(detail).decode("utf-8")


_SORTED_KEYS = tuple(sorted(COLUMNS))
_KEY_PREFIXES = tuple(("{" if i == 0 else ",") + json.dumps(k) + ":" for i, k in enumerate(_SORTED_KEYS))
_INSTANT_COLUMNS = frozenset({"recorded_at", "due_at", "clock_min", "clock_max"})


class _Encoder:
    """RFC 8785 values of one flat ledger document, memoised across entries.

    A batch repeats most values (run, pack, transition, due instant) for
    thousands of entries, so each distinct value is encoded once. Strings
    of ASCII letters and digits (pseudonyms, hashes) need no escaping.
    """

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}
        self._instants: dict[dt.datetime, str] = {}
        self._segments: dict[tuple[Any, ...], list[str]] = {}

    def string(self, value: str) -> str:
        if value.isascii() and value.isalnum():
            return f'"{value}"'
        encoded = self._strings.get(value)
        if encoded is None:
            encoded = json.dumps(value, ensure_ascii=False)
            if len(self._strings) < 10_000:
                self._strings[value] = encoded
        return encoded

    def instant(self, value: dt.datetime | None) -> str:
        if value is None:
            return "null"
        encoded = self._instants.get(value)
        if encoded is None:
            encoded = self._instants[value] = f'"{_instant(value)}"'
        return encoded

    def value(self, name: str, value: Any) -> str:
        if value is None:
            return "null"
        if name in _INSTANT_COLUMNS:
            return self.instant(value)
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"ledger column {name} holds a value of type {type(value).__name__}")

    def document(self, row: dict[str, Any]) -> bytes:
        """The canonical bytes of ``row`` (every column but ``hash``).

        The columns that change from entry to entry within a batch are
        encoded each time; the text between them is encoded once per
        distinct combination of the others and reused.
        """
        detail = row.get("detail")
        if (detail is not None and not isinstance(detail, str)) or detail == "":
            row = {**row, "detail": _canonical_detail(detail)}
        fixed = tuple(row.get(name) for name in _FIXED_COLUMNS)
        segments = self._segments.get(fixed)
        if segments is None:
            if len(self._segments) >= 1024:  # verify streams millions of entries: stay bounded
                self._segments.clear()
                self._instants.clear()
            segments = self._segments[fixed] = self._encode_segments(row)
        parts = [segments[0]]
        for name, segment in zip(_VARYING_COLUMNS, segments[1:], strict=True):
            parts.append(self.value(name, row.get(name)))
            parts.append(segment)
        return "".join(parts).encode("utf-8")

    def _encode_segments(self, row: dict[str, Any]) -> list[str]:
        segments = [""]
        for prefix, name in zip(_KEY_PREFIXES, _SORTED_KEYS, strict=True):
            segments[-1] += prefix
            if name in _VARYING_COLUMNS:
                segments.append("")
            else:
                segments[-1] += self.value(name, row.get(name))
        segments[-1] += "}"
        return segments


# Columns that differ between the entries of one batch, in canonical order.
_VARYING_COLUMNS = tuple(
    n for n in _SORTED_KEYS if n in {"detail", "due_at", "prev_hash", "record_pseudonym", "seq", "subject_pseudonym"}
)
_FIXED_COLUMNS = tuple(n for n in _SORTED_KEYS if n not in _VARYING_COLUMNS)


def canonical_entry(row: dict[str, Any], encoder: _Encoder | None = None) -> bytes:
    """RFC 8785 encoding of every column except ``hash``.

    The document is flat, its keys ASCII and its values strings, integers or
    null, for which sorted compact JSON without ASCII escaping is exactly
    RFC 8785 (a property test holds the two together); it is many times
    faster than the general encoder, which only ``detail`` needs.
    """
    return (encoder or _Encoder()).document(row)


def entry_hash(row: dict[str, Any], encoder: _Encoder | None = None) -> str:
    """SHA-256 of the entry's canonical encoding (the previous hash included)."""
    return hashlib.sha256(canonical_entry(row, encoder)).hexdigest()


def _lock_head(conn: sa.Connection) -> tuple[int, str]:
    """Serialise appenders and read the head (seq, hash) of the chain.

    The lock lasts until the caller's transaction ends, so appends come last
    in a batch's transaction (:func:`retention.engine.execute.apply_batch`) and the
    lock is held from here to the commit only. How long it took to get and
    how long it is held are measured (:func:`lock_timing`).
    """
    table = store.ledger
    query = sa.select(table.c.seq, table.c.hash).order_by(table.c.seq.desc()).limit(1)
    asked = time.perf_counter()
    head = conn.execute(dialect_for(conn).lock_ledger_head(conn, query, _ADVISORY_KEY)).first()
    locked = time.perf_counter()
    transaction = id(conn.get_transaction())
    timing = conn.info.get(_TIMING)
    if timing is None or timing["tx"] != transaction:  # left by a transaction nobody measured
        timing = conn.info[_TIMING] = {"tx": transaction, "waits": 0, "wait_s": 0.0}
    timing["waits"] += 1
    timing["wait_s"] += locked - asked
    timing.setdefault("locked_at", locked)
    return (int(head.seq), str(head.hash)) if head else (0, GENESIS)


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
    New entries are of format 3 (:func:`entry_hash_v2` and a MAC under the
    ledger key, :mod:`retention.ledger.mac`); a ``BatchItems`` draft becomes
    one entry whose Merkle root commits to its items, written in the same
    transaction. ``RecordEntries`` (one v1 entry per record) is kept for
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
    seq, prev = _lock_head(conn)
    first = seq + 1
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
        if isinstance(draft, BatchItems):
            items = prepared[index]
            bulk.insert(conn, seq, items)
            dues = [m[0] for m in draft.moves]
            row = {
                "seq": seq,
                "recorded_at": now,
                "run_id": draft.run_id,
                "pack_id": draft.pack_id,
                "pack_digest": draft.pack_digest,
                "dataset": draft.dataset,
                "transition": draft.transition,
                "action": draft.action,
                "basis": draft.basis,
                "due_at": max(dues) if dues else None,
                "record_pseudonym": None,
                "subject_pseudonym": None,
                "count": len(items),
                "clock_min": None,
                "clock_max": None,
                "detail": None,
                "prev_hash": prev,
                "format": ledger_items.FORMAT,
                "merkle_root": items.root,
                "items": len(items),
            }
        else:
            row = {
                "seq": seq,
                "recorded_at": now,
                "run_id": draft.run_id,
                "pack_id": draft.pack_id,
                "pack_digest": draft.pack_digest,
                "dataset": draft.dataset,
                "transition": draft.transition,
                "action": draft.action,
                "basis": draft.basis,
                "due_at": draft.due_at,
                "record_pseudonym": draft.record_pseudonym,
                "subject_pseudonym": draft.subject_pseudonym,
                "count": draft.count,
                "clock_min": draft.clock_min,
                "clock_max": draft.clock_max,
                "detail": _canonical_detail(draft.detail),
                "prev_hash": prev,
                "format": ledger_items.FORMAT,
                "merkle_root": None,
                "items": None,
            }
        row["hash"] = prev = entry_hash_v2(row)
        row["mac"] = ledger_mac.entry_mac(secret, prev)
        rows.append(tuple(convert(name, row[name]) for name in _INSERT_COLUMNS_V2))
        if draft.run_id is not None:
            last_of_run[draft.run_id] = seq
    _bulk_insert(conn, rows)
    _note_run_heads(conn, last_of_run)
    return list(range(first, seq + 1))


def _note_run_heads(conn: sa.Connection, last_of_run: dict[str, int]) -> None:
    """Each run's last entry, in its row, in the transaction that wrote the entry.

    A run killed or failed after this batch never reaches the end of the
    run, where the ledger length used to be noted: this high-water mark lets
    ``verify`` detect a tail cut from any run (:func:`_against_runs`).
    """
    runs = store.runs
    for run_id, last in last_of_run.items():
        conn.execute(runs.update().where(runs.c.id == run_id).values(ledger_last=last))


V2_COLUMNS = (*COLUMNS, "format", "merkle_root", "items")


def canonical_entry_v2(row: dict[str, Any]) -> bytes:
    """RFC 8785 encoding of a format 2 entry: every v1 column and the format, root and item count."""
    document: dict[str, Any] = {}
    for name in V2_COLUMNS:
        value = row.get(name)
        if name in _INSTANT_COLUMNS:
            value = _instant(value)
        elif name == "detail":
            value = _canonical_detail(value)
        document[name] = value
    return rfc8785.dumps(document)


def entry_hash_v2(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_entry_v2(row)).hexdigest()


def row_hash(row: dict[str, Any], encoder: _Encoder | None = None) -> str:
    """The hash an entry must carry, by its format."""
    if row.get("format") in ledger_items.ITEM_FORMATS:
        return entry_hash_v2(row)
    return entry_hash(row, encoder)


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


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on the chain: ok, or the first entry that breaks it and why.

    ``unauthenticated`` counts the entries written before format 3 (by
    format: 1, 2), which carry no MAC; ``authenticated`` those whose MAC was
    checked, or None when no pseudonym key was given to check them with.
    ``authenticated_from`` is the first entry of format 3, after which the
    engine writes no other format.
    """

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS
    authenticated: int | None = None
    unauthenticated: tuple[tuple[int, int], ...] = ()
    authenticated_from: int | None = None

    def authentication(self) -> str:
        """One phrase for people: how many entries were authenticated, and which were not."""
        old = ", ".join(f"{n} unauthenticated (format v{f})" for f, n in self.unauthenticated if n)
        if self.authenticated is None:
            mine = "MACs not checked (no pseudonym key configured)"
        else:
            mine = f"{self.authenticated} authenticated"
        return f"{mine}, {old}" if old else mine


def _rows(connectable: sa.Engine | sa.Connection, batch_size: int) -> Iterator[dict[str, Any]]:
    table = store.ledger
    last = 0
    while True:
        query = sa.select(table).where(table.c.seq > last).order_by(table.c.seq).limit(batch_size)
        if isinstance(connectable, sa.Engine):
            with connectable.connect() as conn:
                batch = [dict(r._mapping) for r in conn.execute(query)]
        else:
            batch = [dict(r._mapping) for r in connectable.execute(query)]
        if not batch:
            return
        yield from batch
        last = batch[-1]["seq"]


def verify(
    connectable: sa.Engine | sa.Connection, batch_size: int = 10_000, *, secret: bytes | None = None
) -> VerifyResult:
    """Recompute the whole chain, streaming it in seq order (memory stays flat).

    With ``secret`` (the pseudonym key), each entry of format 3 must carry
    the engine's MAC of its hash: an entry written by anyone without the key
    fails. Without it the MACs are not checked (and the verdict says so).
    Either way no entry of an older format may follow one of format 3: the
    engine no longer writes them, so one there was written by someone else.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    encoder = _Encoder()
    authenticated, older, since = 0, {1: 0, 2: 0}, None
    for row in _rows(connectable, batch_size):
        seq = row["seq"]
        if seq != expected_seq:
            return VerifyResult(
                False,
                count,
                expected_seq,
                f"entry {expected_seq} is missing (the next entry is {seq}): entries were deleted",
            )
        if row["prev_hash"] != prev:
            return VerifyResult(
                False,
                count,
                seq,
                f"entry {seq} does not follow entry {seq - 1} (previous hash differs): entries were "
                "removed, inserted or reordered before it",
            )
        if row_hash(row, encoder) != row["hash"]:
            return VerifyResult(
                False,
                count,
                seq,
                f"entry {seq}: hash does not match its content (modified after it was written)",
            )
        problem = _authenticity(row, secret, since)
        if problem is not None:
            return VerifyResult(False, count, seq, problem)
        form = row.get("format") or 1
        if form == ledger_items.FORMAT:
            authenticated += 1
            since = seq if since is None else since
        else:
            older[form] = older.get(form, 0) + 1
        if row.get("format") in ledger_items.ITEM_FORMATS and (row.get("items") or _has_items(connectable, seq)):
            problem = _check_entry_items(connectable, row)
            if problem is not None:
                return VerifyResult(False, count, seq, problem)
        prev = row["hash"]
        expected_seq += 1
        count += 1
    for check in (ledger_items.stray_items, ledger_items.check_lookup):
        problem = _on_connection(connectable, check)
        if problem is not None:
            return VerifyResult(False, count, None, problem, expected_seq - 1, prev)
    verdict = VerifyResult(
        True,
        count,
        None,
        "",
        expected_seq - 1,
        prev,
        authenticated if secret is not None else None,
        tuple(sorted(older.items())),
        since,
    )
    return _against_runs(connectable, verdict)


def _authenticity(row: dict[str, Any], secret: bytes | None, since: int | None) -> str | None:
    """Why an entry cannot be the engine's (format 3 without its MAC, or an old format after it), else None."""
    seq, form = row["seq"], row.get("format") or 1
    if form != ledger_items.FORMAT:
        if since is not None:
            return (
                f"entry {seq}: written in format {form}, without a MAC, after entry {since} of format "
                f"{ledger_items.FORMAT}: the engine writes only authenticated entries since, so it did not write it"
            )
        if form not in (1, *ledger_items.ITEM_FORMATS):
            return f"entry {seq}: format {form} is no ledger format"
        return None
    if row.get("mac") is None:
        return f"entry {seq}: an entry of format {form} without its MAC: it was not written by the engine"
    if secret is not None and not ledger_mac.mac_valid(secret, row.get("hash"), row.get("mac")):
        return (
            f"entry {seq}: its MAC is not valid for the configured pseudonym key: it was not written by the "
            "engine (or the key is not the engine's)"
        )
    return None


def _on_connection(connectable: sa.Engine | sa.Connection, check: Any) -> Any:
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return check(conn)
    return check(connectable)


def _scalar_rows(connectable: sa.Engine | sa.Connection, query: sa.Select[Any]) -> list[Any]:
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return list(conn.execute(query).all())
    return list(connectable.execute(query).all())


def _against_runs(connectable: sa.Engine | sa.Connection, verdict: VerifyResult) -> VerifyResult:
    """A chain that verifies on its own but is shorter than the runs say it was.

    Removing entries from the end (``TRUNCATE``, or a superuser's ``DELETE``
    with the triggers off) leaves a valid, shorter chain. Two records in
    ``retention_runs`` expose it: the ledger's last entry when each run
    finished (``ledger_seq``), and the runs that moved records, each of
    which wrote entries under its run id.
    """
    runs, table = store.runs, store.ledger
    longer = _scalar_rows(
        connectable,
        sa.select(runs.c.id, runs.c.ledger_seq, runs.c.finished_at)
        .where(runs.c.mode == "run", runs.c.ledger_seq > verdict.head_seq)
        .order_by(runs.c.ledger_seq.desc())
        .limit(1),
    )
    if longer:
        run = longer[0]
        return VerifyResult(
            False,
            verdict.entries,
            verdict.head_seq + 1,
            f"the ledger ends at entry {verdict.head_seq}, but it had {run.ledger_seq} entries when run {run.id} "
            f"finished ({run.finished_at:%Y-%m-%d %H:%M} UTC): entries were removed from its end",
            verdict.head_seq,
            verdict.head_hash,
        )
    cut = _scalar_rows(
        connectable,
        sa.select(runs.c.id, runs.c.ledger_last, runs.c.started_at, table.c.seq)
        .select_from(runs.outerjoin(table, table.c.seq == runs.c.ledger_last))
        .where(
            runs.c.ledger_last.is_not(None),
            sa.or_(table.c.seq.is_(None), table.c.run_id.is_(None), table.c.run_id != runs.c.id),
        )
        .order_by(runs.c.ledger_last)
        .limit(1),
    )
    if cut:
        run = cut[0]
        now = "is gone" if run.seq is None else "is now another's"
        return VerifyResult(
            False,
            verdict.entries,
            int(run.ledger_last),
            f"run {run.id} ({run.started_at:%Y-%m-%d %H:%M} UTC) wrote entries up to entry {run.ledger_last}, "
            f"which {now}: entries of that run were removed from the ledger's end",
            verdict.head_seq,
            verdict.head_hash,
        )
    has_entries = sa.exists().where(table.c.run_id == runs.c.id)
    silent = _scalar_rows(
        connectable,
        sa.select(runs.c.id, runs.c.counts, runs.c.started_at)
        .where(runs.c.mode == "run", runs.c.counts.is_not(None), ~has_entries)
        .order_by(runs.c.started_at),
    )
    for run in silent:
        try:
            moved = sum(int(n) for per in json.loads(run.counts).values() for n in per.values())
        except (ValueError, TypeError, AttributeError):
            return VerifyResult(False, verdict.entries, None, f"run {run.id} has an unreadable record of its counts")
        if moved:
            return VerifyResult(
                False,
                verdict.entries,
                None,
                f"run {run.id} ({run.started_at:%Y-%m-%d %H:%M} UTC) moved {moved} records, but the ledger holds "
                f"none of its entries ({verdict.entries} entries in all): entries were removed",
                verdict.head_seq,
                verdict.head_hash,
            )
    return verdict


def record_run_head(engine: sa.Engine, run_id: str) -> None:
    """Note in the run's record how long the ledger was when it finished (see :func:`_against_runs`).

    A ledger locked by another session leaves it unnoted (with a warning)
    rather than failing a run whose datasets are done: each batch already
    noted the run's last entry (``ledger_last``).
    """
    from retention.errors import describe_database_error
    from retention.logs import get_logger

    runs, table = store.runs, store.ledger
    try:
        with engine.begin() as conn:
            head = conn.execute(sa.select(sa.func.max(table.c.seq))).scalar()
            conn.execute(runs.update().where(runs.c.id == run_id).values(ledger_seq=head or 0))
    except sa.exc.OperationalError as exc:
        if exc.connection_invalidated:
            raise
        get_logger().warning("ledger_length_not_noted", error=describe_database_error(exc), run_id=run_id)


def _check_entry_items(connectable: sa.Engine | sa.Connection, row: dict[str, Any]) -> str | None:
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return ledger_items.check_items(conn, row)
    return ledger_items.check_items(connectable, row)


def _has_items(connectable: sa.Engine | sa.Connection, seq: int) -> bool:
    """Items stored under an entry that says it has none (inserted afterwards)."""
    t = store.ledger_items
    query = sa.select(sa.literal(1)).where(t.c.entry_seq == seq).limit(1)
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return conn.execute(query).first() is not None
    return connectable.execute(query).first() is not None


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the signing key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )


def generate_signing_key(path: Path) -> bytes:
    """Write a new Ed25519 private key (PEM, mode 0600) and return its public key PEM."""
    if path.exists():
        raise ConfigError(f"{path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: Path | None = None) -> Ed25519PrivateKey:
    """The checkpoint signing key, from ``path`` or RETENTION_SIGNING_KEY_FILE (mode 0600)."""
    import os

    name = path or (
        Path(os.environ["RETENTION_SIGNING_KEY_FILE"]) if os.environ.get("RETENTION_SIGNING_KEY_FILE") else None
    )
    if name is None:
        raise ConfigError("no signing key; set RETENTION_SIGNING_KEY_FILE or pass --key")
    try:
        _check_private(name)
        key = serialization.load_pem_private_key(name.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key {name}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{name} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{name} is not an Ed25519 key")
    return key


def configured_public_key(path: Path | None = None) -> Ed25519PublicKey:
    """The checkpoint signer's public key as the verifier configured it, never as a checkpoint claims it.

    From ``path`` (``--public-key``), else ``RETENTION_CHECKPOINT_PUBLIC_KEY``
    (the PEM text), else the file named by ``RETENTION_CHECKPOINT_PUBLIC_KEY_FILE``.
    A checkpoint carries its signer's key for information only: whoever
    rewrites a chain can sign a checkpoint of it with a key of their own.
    """
    import os

    if path is None and os.environ.get("RETENTION_CHECKPOINT_PUBLIC_KEY"):
        return load_public_key(os.environ["RETENTION_CHECKPOINT_PUBLIC_KEY"].encode())
    if path is None and os.environ.get("RETENTION_CHECKPOINT_PUBLIC_KEY_FILE"):
        path = Path(os.environ["RETENTION_CHECKPOINT_PUBLIC_KEY_FILE"])
    if path is None:
        raise ConfigError(
            "a checkpoint is trusted only against its signer's public key: pass --public-key PEM or set "
            "RETENTION_CHECKPOINT_PUBLIC_KEY or RETENTION_CHECKPOINT_PUBLIC_KEY_FILE (the key inside the "
            "checkpoint proves nothing)"
        )
    try:
        if not path.is_file():
            raise ConfigError(f"the public key {path} is not a regular file")
        data = path.read_bytes()[:65536]
    except OSError as exc:
        raise ConfigError(f"cannot read the public key {path}: {exc.strerror}") from None
    return load_public_key(data)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the public key is not an Ed25519 key")
    return key


def _key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_pem(public)).hexdigest()[:16]


AUTHENTICATED_FROM = "authenticated_from"
"""Checkpoint field: the first entry of format 3; every entry from it on carries the engine's MAC."""


def _signed_part(checkpoint: dict[str, Any]) -> bytes:
    names = ("seq", "hash", "signed_at", *((AUTHENTICATED_FROM,) if AUTHENTICATED_FROM in checkpoint else ()))
    return rfc8785.dumps({k: checkpoint[k] for k in names})


def checkpoint(
    connectable: sa.Engine | sa.Connection, key: Ed25519PrivateKey, now: dt.datetime, *, secret: bytes | None = None
) -> dict[str, Any]:
    """Sign the current head after verifying the chain up to it, the entries' MACs included.

    A checkpoint is what an auditor without the pseudonym key trusts, so a
    ledger with authenticated entries is signed only when their MACs were
    checked. The first authenticated entry is signed too: a chain rewritten
    later into the old, unauthenticated format no longer matches it.
    """
    verdict = verify(connectable, secret=secret)
    if not verdict.ok:
        raise LedgerError(f"refusing to sign a broken ledger: {verdict.reason}")
    if verdict.authenticated_from is not None and verdict.authenticated is None:
        raise ConfigError(
            "refusing to sign entries whose MACs were not checked: configure the pseudonym key "
            "(RETENTION_PSEUDONYM_KEY or RETENTION_PSEUDONYM_KEY_FILE)"
        )
    document: dict[str, Any] = {
        "seq": verdict.head_seq,
        "hash": verdict.head_hash,
        "signed_at": _instant(now),
    }
    if verdict.authenticated_from is not None:
        document[AUTHENTICATED_FROM] = verdict.authenticated_from
    document["signature"] = base64.b64encode(key.sign(_signed_part(document))).decode("ascii")
    document["key_id"] = _key_id(key.public_key())
    document["public_key"] = public_pem(key.public_key()).decode("ascii")
    return document


def signature_valid(checkpoint_doc: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """The checkpoint's signature is valid for ``public`` (the chain itself is not read)."""
    try:
        public.verify(base64.b64decode(checkpoint_doc["signature"]), _signed_part(checkpoint_doc))
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False
    return True


def verify_checkpoint(
    connectable: sa.Engine | sa.Connection,
    checkpoint_doc: dict[str, Any],
    public: Ed25519PublicKey,
    *,
    secret: bytes | None = None,
) -> VerifyResult:
    """The chain verifies and still holds the signed head at the checkpoint's seq and its first authenticated entry."""
    name = f"checkpoint of entry {checkpoint_doc.get('seq')} signed {checkpoint_doc.get('signed_at')}"
    try:
        public.verify(base64.b64decode(checkpoint_doc["signature"]), _signed_part(checkpoint_doc))
        seq = int(checkpoint_doc["seq"])
    except (InvalidSignature, KeyError, ValueError, TypeError, rfc8785.CanonicalizationError):
        claimed = checkpoint_doc.get("key_id") if isinstance(checkpoint_doc, dict) else None
        other = (
            f" (it names key {claimed}, the configured key is {_key_id(public)})" if claimed != _key_id(public) else ""
        )
        return VerifyResult(False, 0, None, f"{name}: the signature is not valid for the configured public key{other}")
    verdict = verify(connectable, secret=secret)
    if not verdict.ok:
        return verdict
    signed_from = checkpoint_doc.get(AUTHENTICATED_FROM)
    if signed_from is not None and verdict.authenticated_from != signed_from:
        return VerifyResult(
            False,
            verdict.entries,
            signed_from if isinstance(signed_from, int) else None,
            f"ledger rewritten: the {name} says every entry from entry {signed_from} on is authenticated, but "
            + ("none is" if verdict.authenticated_from is None else f"the first is entry {verdict.authenticated_from}"),
        )
    if seq == 0:
        return verdict
    table = store.ledger
    query = sa.select(table.c.hash).where(table.c.seq == seq)
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            found = conn.execute(query).scalar()
    else:
        found = connectable.execute(query).scalar()
    if found is None:
        return VerifyResult(False, verdict.entries, seq, f"ledger rewritten: entry {seq} of the {name} is gone")
    if found != checkpoint_doc["hash"]:
        return VerifyResult(
            False,
            verdict.entries,
            seq,
            f"ledger rewritten: entry {seq} no longer matches the {name}",
        )
    return verdict


# --------------------------------------------------------------------------
# Reading for auditors
# --------------------------------------------------------------------------


def entries(
    connectable: sa.Engine | sa.Connection,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    dataset: str | None = None,
    transition: str | None = None,
    run_id: str | None = None,
    record_pseudonym: str | None = None,
    subject_pseudonym: str | None = None,
    batch_size: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Entries in seq order matching every filter given, streamed by keyset pages."""
    table = store.ledger
    conditions = []
    if since is not None:
        conditions.append(table.c.recorded_at >= since)
    if until is not None:
        conditions.append(table.c.recorded_at < until)
    for column, value in (
        (table.c.dataset, dataset),
        (table.c.transition, transition),
        (table.c.run_id, run_id),
        (table.c.record_pseudonym, record_pseudonym),
        (table.c.subject_pseudonym, subject_pseudonym),
    ):
        if value is not None:
            conditions.append(column == value)
    last = 0
    while True:
        query = sa.select(table).where(table.c.seq > last, *conditions).order_by(table.c.seq).limit(batch_size)
        if isinstance(connectable, sa.Engine):
            with connectable.connect() as conn:
                batch = [dict(r._mapping) for r in conn.execute(query)]
        else:
            batch = [dict(r._mapping) for r in connectable.execute(query)]
        if not batch:
            return
        yield from batch
        last = batch[-1]["seq"]


EXPORT_FIELDS = [*COLUMNS, "hash"]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (_instant(v) if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def export(connectable: sa.Engine | sa.Connection, fmt: str, out: TextIO, **filters: Any) -> int:
    """Write matching entries as CSV or JSON lines; return how many."""
    if fmt not in ("csv", "jsonl"):
        raise ConfigError(f"unknown export format {fmt!r}; valid: csv, jsonl")
    count = 0
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in entries(connectable, **filters):
        plain = _plain(row)
        if writer is not None:
            writer.writerow({k: plain.get(k) for k in EXPORT_FIELDS})
        else:
            out.write(json.dumps({k: plain.get(k) for k in EXPORT_FIELDS}, sort_keys=True) + "\n")
        count += 1
    return count
