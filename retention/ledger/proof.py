"""Inclusion proofs: one file that shows, without the database, that a record was moved (docs/ledger.md).

A proof holds, for each ledger record of one record or subject: the entry
and, for a v2 entry, the item and its RFC 9162 audit path to the entry's
Merkle root; then every entry from the first of them to the head of a
signed checkpoint, so that each hash can be recomputed and each entry seen
to follow the one before; and the checkpoint itself. ``verify`` needs only
the file and the signer's public key, configured by the verifier.

The record's key never appears: items name it by its pseudonym under the
run's key, v1 entries by its pseudonym under the pseudonym key. Whoever
holds the pseudonym key can recompute either (``verify --dataset --key``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from retention.errors import ConfigError, LedgerError
from retention.ledger import block_lookup, blocks, canonical, merkle, pseudonyms, signing
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.ledger import mac as ledger_mac
from retention.store import tables as store

FORMAT = "retention-ledger-proof/1"
BLOCK_FORMAT = "retention-ledger-proof/2"
"""A proof holding a record of a format-5 entry (its ``chunk``); one without any keeps :data:`FORMAT`, byte for byte.

A verifier of ``/1`` refuses ``/2`` as "not a proof" instead of failing on a field
it does not know (docs/ledger.md, "Proving one record")."""
FORMATS = (FORMAT, BLOCK_FORMAT)
CHUNK_FIELD = "chunk"  # only in records of format-5 entries: the item's chunk, hex
_HEX = re.compile("(?:[0-9a-f]{2})*")
ITEM_FIELDS = ("due_at", "idx", "record", "request", "review", "subject")
EMAIL_FIELD = "email"  # only in items of a record with an e-mail identity (docs/ledger.md)
ENTRY_FIELDS = (*ledger.V2_COLUMNS, "hash")
CHECKPOINT_FIELDS = ("seq", "hash", "signed_at", "signature")
MAC_FIELD = "mac"  # only in entries of format 3 and 4 (docs/ledger.md, "Threat model")
_HEX64 = re.compile("[0-9a-f]{64}")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


# --------------------------------------------------------------------------
# Building (with the database)
# --------------------------------------------------------------------------


def _plain_entry(row: dict[str, Any]) -> dict[str, Any]:
    """An entry as the values its hash covers: instants as RFC 3339 UTC text, detail as its canonical text."""
    result: dict[str, Any] = {}
    for name in ENTRY_FIELDS:
        value = row.get(name)
        if isinstance(value, dt.datetime):
            value = canonical._instant(value)
        elif name == "detail":
            value = canonical._canonical_detail(value)
        result[name] = value
    if row.get("format") in ledger_items.MAC_FORMATS:
        result[MAC_FIELD] = row.get("mac")
    return result


def _plain_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "due_at": ledger_items._instant(row["due_at"]),
        "idx": row["idx"],
        "record": row["record_pseudonym"],
        "request": row["request_id"],
        "review": row["review_id"],
        "subject": row["subject_pseudonym"],
        **({EMAIL_FIELD: row["email_pseudonym"]} if row.get("email_pseudonym") is not None else {}),
    }


def build(
    conn: sa.Connection,
    secret: bytes,
    checkpoint: dict[str, Any],
    *,
    dataset: str | None = None,
    record_key: str | None = None,
    subject_key: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    """The proof of every ledger record of one record (dataset and key), subject or e-mail, up to ``checkpoint``."""
    try:
        head = int(checkpoint["seq"])
        signed = {k: checkpoint[k] for k in CHECKPOINT_FIELDS}
        if ledger.AUTHENTICATED_FROM in checkpoint:
            signed[ledger.AUTHENTICATED_FROM] = checkpoint[ledger.AUTHENTICATED_FROM]
    except (KeyError, TypeError, ValueError):
        raise ConfigError("the checkpoint is not a checkpoint written by `retention ledger checkpoint`") from None
    found = ledger_items.lookup(
        conn, secret, dataset=dataset, record_key=record_key, subject_key=subject_key, email=email
    )
    found = [r for r in found if r["item"] is not None or r["record_pseudonym"] is not None]
    if not found:
        raise ConfigError(
            "the ledger holds no entry of that record"
            if subject_key is None and email is None
            else "the ledger holds no entry of that subject"
        )
    newest = max(r["seq"] for r in found)
    if newest > head:
        raise ConfigError(
            f"entry {newest} of that record is newer than the checkpoint (entry {head}): "
            "sign a new one with `retention ledger checkpoint` first"
        )
    first = min(r["seq"] for r in found)
    table = store.ledger
    chain = [
        _plain_entry(dict(r._mapping))
        for r in conn.execute(sa.select(table).where(table.c.seq >= first, table.c.seq <= head).order_by(table.c.seq))
    ]
    records: list[dict[str, Any]] = []
    leaves_of: dict[int, list[bytes]] = {}
    bodies: dict[int, bytes | None] = {}
    for row in found:
        seq = row["seq"]
        if row["item"] is None:
            records.append({"seq": seq, "item": None, "audit_path": []})
            continue
        if row["format"] == blocks.FORMAT:
            if seq not in bodies:
                bodies[seq] = block_lookup.body_of(conn, seq)
            records.append(_block_record(row, bodies[seq]))
            continue
        if seq not in leaves_of:
            leaves_of[seq] = ledger_items.stored_leaves(ledger_items.entry_items(conn, seq), row["format"] or 1)
        leaves = leaves_of[seq]
        if not 0 <= row["item"] < len(leaves):
            raise LedgerError(f"entry {seq} item {row['item']}: missing from the ledger; run `retention ledger verify`")
        item = _plain_item(
            {
                "due_at": row["due_at"],
                "idx": row["item"],
                "record_pseudonym": row["record_pseudonym"],
                "request_id": row["request_id"],
                "review_id": row["review_id"],
                "subject_pseudonym": row["subject_pseudonym"],
                "email_pseudonym": row.get("email_pseudonym"),
            }
        )
        path = merkle.audit_path(leaves, row["item"])
        records.append({"seq": seq, "item": item, "audit_path": [p.hex() for p in path]})
    document = {
        "format": BLOCK_FORMAT if any(CHUNK_FIELD in r for r in records) else FORMAT,
        "records": records,
        "chain": chain,
        "checkpoint": {**signed, "key_id": checkpoint.get("key_id")},
    }
    problem = _check(document, None, secret)
    if problem is not None:
        raise LedgerError(f"cannot prove from this ledger and checkpoint: {problem}")
    return document


def _block_record(row: dict[str, Any], body: bytes | None) -> dict[str, Any]:
    """The proved record of a format-5 item: its fields, its chunk and the chunk's audit path."""
    seq, idx = row["seq"], row["item"]
    try:
        if body is None or not 0 <= idx < blocks.count(body):
            raise blocks.BlockError
    except blocks.BlockError:
        raise LedgerError(f"entry {seq} item {idx}: missing from its block; run `retention ledger verify`") from None
    chunk, path = blocks.proof_part(body, idx)
    item = blocks.item_at(body, idx).as_dict()
    return {"seq": seq, "item": item, CHUNK_FIELD: chunk.hex(), "audit_path": [p.hex() for p in path]}


# --------------------------------------------------------------------------
# Verifying (no database)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProofResult:
    """The verdict on a proof: ok with one line per proved record, or the reason it fails."""

    ok: bool
    reason: str = ""
    lines: tuple[str, ...] = ()


def _entry_hash(entry: dict[str, Any]) -> str:
    """The hash an entry must carry, recomputed from the proof's text values alone (RFC 8785, SHA-256)."""
    columns = ledger.V2_COLUMNS if entry.get("format") in ledger_items.ITEM_FORMATS else ledger.COLUMNS
    return hashlib.sha256(rfc8785.dumps({name: entry.get(name) for name in columns})).hexdigest()


def _leaf(item: dict[str, Any], form: int = 3) -> bytes:
    """The leaf of a proof's item as an entry of format ``form`` commits to it (ValueError if it cannot)."""
    if form in ledger_items.LOOKUP_FORMATS:
        fields = (*ITEM_FIELDS, EMAIL_FIELD) if EMAIL_FIELD in item else ITEM_FIELDS
        return merkle.leaf_hash(rfc8785.dumps({name: item.get(name) for name in fields}))
    # Format 4 hashes fixed-width text: each value must have the one form the engine writes.
    pseudonyms = [item.get("record"), item.get("subject"), item.get(EMAIL_FIELD)]
    numbers = [item.get("request"), item.get("review")]
    if (
        not all(p is None or (isinstance(p, str) and _HEX64.fullmatch(p)) for p in pseudonyms)
        or item.get("record") is None
        or not all(n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 0) for n in numbers)
        or not isinstance(item.get("due_at"), str)
        or not _INSTANT.fullmatch(item["due_at"])
        or isinstance(item.get("idx"), bool)
    ):
        raise ValueError("not an item of format 4")
    return ledger_items.leaf_of(
        4, item["idx"], item["record"], item.get("subject"), item["due_at"], numbers[0], numbers[1], pseudonyms[2]
    )


def _signed_part(checkpoint: dict[str, Any]) -> bytes:
    return signing._signed_part(checkpoint)


def _authentic(chain: list[dict[str, Any]], checkpoint: dict[str, Any], secret: bytes | None) -> str | None:
    """None when no entry of the chain betrays a writer without the engine's key, else why.

    An entry of format 3 must carry the engine's MAC (checked with the
    pseudonym key); no older format may follow it, nor come at or after the
    first authenticated entry the checkpoint signed.
    """
    since = checkpoint.get(ledger.AUTHENTICATED_FROM)
    if since is not None and not isinstance(since, int):
        return "the checkpoint's first authenticated entry is not a number"
    # The first authenticated entry's format, when the proof's chain holds it (the writer of formats 4 and 5
    # interleave: the proof cannot tell which a signed entry before its chain was).
    since_form = next((e.get("format") for e in chain if e["seq"] == since), None)
    for entry in chain:
        seq, form = entry["seq"], entry.get("format") or 1
        if form not in ledger_items.MAC_FORMATS:
            if since is not None and seq >= since:
                first = f"entry {since} of format {since_form}" if since_form else f"entry {since}, authenticated"
                return (
                    f"entry {seq}: written in format {form}, without a MAC, after {first}: "
                    "it was not written by the engine"
                )
            continue
        if since is None:
            since, since_form = seq, form
        if not isinstance(entry.get(MAC_FIELD), str):
            return f"entry {seq}: an entry of format {form} without its MAC: it was not written by the engine"
        if secret is not None and not ledger_mac.mac_valid(secret, entry.get("hash"), entry.get(MAC_FIELD)):
            return (
                f"entry {seq}: its MAC is not valid for the configured pseudonym key: it was not written by the "
                "engine (or the key is not the engine's)"
            )
    return None


def _check(document: Any, public: Ed25519PublicKey | None, secret: bytes | None = None) -> str | None:
    """None when the proof holds (against ``public``; None skips the signature), else why not."""
    if not isinstance(document, dict) or document.get("format") not in FORMATS:
        return f"not a proof (format {FORMAT} or {BLOCK_FORMAT} expected)"
    records, chain, checkpoint = document.get("records"), document.get("chain"), document.get("checkpoint")
    if not isinstance(records, list) or not records or not isinstance(chain, list) or not chain:
        return "the proof holds no record or no chain"
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in CHECKPOINT_FIELDS):
        return "the proof holds no checkpoint"
    if public is not None:
        try:
            public.verify(base64.b64decode(checkpoint["signature"], validate=True), _signed_part(checkpoint))
        except (InvalidSignature, ValueError, TypeError, rfc8785.CanonicalizationError):
            return (
                f"the checkpoint of entry {checkpoint.get('seq')} signed {checkpoint.get('signed_at')}: "
                "its signature is not valid for the configured public key"
            )
    if set(document) != {"format", "records", "chain", "checkpoint"}:
        return "the proof has fields other than format, records, chain and checkpoint"
    if not set(checkpoint) <= {*CHECKPOINT_FIELDS, "key_id", ledger.AUTHENTICATED_FROM}:
        return "the checkpoint has fields other than those `ledger checkpoint` writes"
    if not all(isinstance(e, dict) and isinstance(e.get("seq"), int) for e in chain):
        return "an entry of the chain has no sequence number"
    for entry in chain:
        fields = {*ENTRY_FIELDS, MAC_FIELD} if entry.get("format") in ledger_items.MAC_FORMATS else set(ENTRY_FIELDS)
        if set(entry) != fields:
            return f"entry {entry['seq']}: its fields are not those of a ledger entry"
    shapes = [{"seq", "item", "audit_path"}]
    if document["format"] == BLOCK_FORMAT:
        shapes.append({"seq", "item", CHUNK_FIELD, "audit_path"})
    for number, record in enumerate(records, start=1):
        item = record.get("item") if isinstance(record, dict) else None
        if (
            not isinstance(record, dict)
            or set(record) not in shapes
            or not isinstance(record["seq"], int)
            or not (item is None or (isinstance(item, dict) and set(item) - {EMAIL_FIELD} == set(ITEM_FIELDS)))
        ):
            return f"record {number}: its fields are not those of a proved record"
    prev: dict[str, Any] | None = None
    for entry in chain:
        seq = entry["seq"]
        if prev is not None and seq != prev["seq"] + 1:
            return f"entry {seq} follows entry {prev['seq']} in the chain: entries are missing or out of order"
        try:
            computed = _entry_hash(entry)
        except (rfc8785.CanonicalizationError, TypeError, ValueError):
            return f"entry {seq}: a value cannot be encoded"
        if computed != entry.get("hash"):
            return f"entry {seq}: its hash does not match its content (the entry was altered)"
        if prev is not None and entry.get("prev_hash") != prev["hash"]:
            return f"entry {seq} does not follow entry {prev['seq']} (previous hash differs)"
        prev = entry
    assert prev is not None
    if prev["seq"] != checkpoint["seq"] or prev["hash"] != checkpoint["hash"]:
        return (
            f"the chain ends at entry {prev['seq']} with a hash other than the one the checkpoint of entry "
            f"{checkpoint['seq']} signed"
        )
    problem = _authentic(chain, checkpoint, secret)
    if problem is not None:
        return problem
    by_seq = {e["seq"]: e for e in chain}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or record.get("seq") not in by_seq:
            return f"record {number}: its entry is not in the chain"
        entry = by_seq[record["seq"]]
        item = record.get("item")
        if item is None:  # a v1 entry of one record, or an event about one record (a hold)
            if entry.get("record_pseudonym") is None or entry.get("items"):
                return f"record {number}: entry {entry['seq']} is not an entry of one record"
            continue
        where = f"record {number} (entry {entry['seq']} item {item.get('idx') if isinstance(item, dict) else '?'})"
        if entry.get("format") not in ledger_items.MAC_FORMATS or not isinstance(entry.get("merkle_root"), str):
            return f"{where}: the entry commits to no items"
        path = record.get("audit_path")
        if entry["format"] == blocks.FORMAT or CHUNK_FIELD in record:
            problem = _block_item(entry, item, record.get(CHUNK_FIELD), path)
            if problem is not None:
                return f"{where}: {problem}"
            continue
        try:
            if not isinstance(item, dict) or not isinstance(item.get("idx"), int) or not isinstance(path, list):
                raise ValueError
            nodes = [bytes.fromhex(p) for p in path]
            leaf = _leaf(item, entry["format"])
            size = entry.get("items")
            holds = isinstance(size, int) and merkle.verify_path(
                leaf, item["idx"], size, nodes, bytes.fromhex(entry["merkle_root"])
            )
        except (ValueError, TypeError, rfc8785.CanonicalizationError):
            holds = False
        if not holds:
            return (
                f"{where}: the item and its audit path do not lead to the entry's Merkle root "
                "(the item, its position or a path node was altered)"
            )
    return None


def _block_item(entry: dict[str, Any], item: Any, chunk: Any, path: Any) -> str | None:
    """Why a record of a format-5 entry does not hold (its item in its chunk, the chunk under the root), or None.

    The item has exactly a format-4 item's six fields in the one text form a
    block's bytes read back as (lowercase hex, the 27-character instant),
    never a request, review or e-mail (format 5 has none): otherwise two
    texts could name one item.
    """
    if entry.get("format") != blocks.FORMAT:
        return f"a chunk in a record of an entry of format {entry.get('format')} (only format 5 has chunks)"
    if not isinstance(chunk, str) or not _HEX.fullmatch(chunk):
        return "the record has no chunk (hex) of its format-5 entry"
    if not isinstance(path, list) or not all(isinstance(p, str) and _HEX64.fullmatch(p) for p in path):
        return "its audit path is not a list of 64-digit hex nodes"
    if (
        not isinstance(item, dict)
        or set(item) != set(ITEM_FIELDS)
        or item["request"] is not None
        or item["review"] is not None
        or not isinstance(item["idx"], int)
        or isinstance(item["idx"], bool)
        or not isinstance(item["record"], str)
        or not _HEX64.fullmatch(item["record"])
        or not (item["subject"] is None or (isinstance(item["subject"], str) and _HEX64.fullmatch(item["subject"])))
        or not isinstance(item["due_at"], str)
        or not _INSTANT.fullmatch(item["due_at"])
    ):
        return "the item is not an item of format 5 (its fields or their forms)"
    size, root = entry.get("items"), entry.get("merkle_root")
    if not isinstance(size, int) or isinstance(size, bool) or not isinstance(root, str) or not _HEX64.fullmatch(root):
        return "the entry commits to no items"
    found = blocks.BlockItem(item["idx"], item["record"], item["subject"], item["due_at"])
    reason = blocks.verify_item(
        found, bytes.fromhex(chunk), [bytes.fromhex(p) for p in path], size, bytes.fromhex(root)
    )
    return None if reason is None else f"{reason} (the item, its chunk or a path node was altered)"


def _describe(document: dict[str, Any], secret: bytes | None = None) -> list[str]:
    by_seq = {e["seq"]: e for e in document["chain"]}
    checkpoint = document["checkpoint"]
    lines = []
    for record in document["records"]:
        entry = by_seq[record["seq"]]
        item = record["item"]
        due = item["due_at"] if item else entry.get("due_at")
        pseudonym = item["record"] if item else entry.get("record_pseudonym")
        where = f"entry {entry['seq']}" + (f" item {item['idx']}" if item else "")
        form = entry.get("format") or 1
        if form not in ledger_items.MAC_FORMATS:
            authentic = f"unauthenticated (format v{form})"
        else:
            authentic = "authenticated" if secret is not None else "MAC not checked (no pseudonym key configured)"
        lines.append(
            f"{where}: record {pseudonym} of {entry.get('dataset')}: {entry.get('transition')} "
            f"({entry.get('action')}) recorded {entry.get('recorded_at')}, due {due}, basis {entry.get('basis')!r}, "
            f"{authentic}"
        )
    lines.append(
        f"chain of {len(document['chain'])} entries to the checkpoint of entry {checkpoint['seq']} "
        f"signed {checkpoint['signed_at']}"
    )
    return lines


def record_matches(document: dict[str, Any], secret: bytes, dataset: str, record_key: str) -> str | None:
    """None when every record of the proof is ``record_key`` of ``dataset`` (needs the pseudonym key), else why not."""
    by_seq = {e["seq"]: e for e in document["chain"]}
    for number, record in enumerate(document["records"], start=1):
        entry = by_seq[record["seq"]]
        if entry.get("dataset") != dataset:
            return f"record {number} (entry {entry['seq']}) is of another dataset"
        if record["item"] is None:
            expected = pseudonyms.record_pseudonym(secret, dataset, record_key)
            stated = entry.get("record_pseudonym")
        else:
            key = ledger_items.run_key(secret, str(entry.get("run_id")))
            expected = ledger_items.record_pseudonym(key, dataset, record_key)
            stated = record["item"]["record"]
        if stated != expected:
            return f"record {number} (entry {entry['seq']}) is not that record (its pseudonym differs)"
    return None


def verify(
    document: Any,
    public: Ed25519PublicKey,
    *,
    secret: bytes | None = None,
    dataset: str | None = None,
    record_key: str | None = None,
) -> ProofResult:
    """Check a proof offline against the signer's public key (and, with the pseudonym key, its entries' MACs and
    that it is that record)."""
    try:
        problem = _check(document, public, secret)
        if problem is None and secret is not None and dataset is not None and record_key is not None:
            problem = record_matches(document, secret, dataset, record_key)
        if problem is not None:
            return ProofResult(False, problem)
        return ProofResult(True, "", tuple(_describe(document, secret)))
    except (KeyError, TypeError, ValueError, AttributeError, rfc8785.CanonicalizationError):
        return ProofResult(False, "the proof is malformed (a value of the wrong type)")


def proved_seqs(document: dict[str, Any]) -> Sequence[int]:
    return [r["seq"] for r in document["records"]]


__all__ = ["BLOCK_FORMAT", "FORMAT", "FORMATS", "ProofResult", "build", "proved_seqs", "record_matches", "verify"]
