"""A ledger entry's canonical form and hash (see :mod:`retention.ledger.chain`).

SHA-256 over the RFC 8785 canonical JSON of every column but the hash
itself; format 2 and later add the Merkle root and item count
(:func:`entry_hash_v2`). Writing (:mod:`~retention.ledger.chain`) and
verifying (:mod:`~retention.ledger.verification`) hash entries the same way here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from retention.ledger import items as ledger_items

GENESIS = "0" * 64


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
