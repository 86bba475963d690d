"""Claims checked against the data: what the ledger says was purged or anonymised is so in the live tables.

The chain, the Merkle roots and the MACs prove who wrote an entry and that
it did not change; none of them looks at the data. A row re-inserted after
its purge (a restore from backup, a superuser), or a claim for a record
that is in fact still there, passes every one of them. ``ledger audit``
names each record by its pseudonym under the claim's run key and reads
the dataset's live table; a live row that a claim says is gone, or that
lacks its constant masks, is named by dataset, entry, item and pseudonym,
never by a value.

A complete audit (:func:`audit`) matches in the database, page by page:
the live table is read in key order, a page at a time; this process
computes the page's pseudonyms under each run with claims on the dataset
(the keys never leave it: the server receives pseudonyms only) and the
database finds the claims among them, by the items' record pseudonym
index (every item format; format 4 has no lookup rows) and by the entries'
pseudonym index for format 1 entries. No claim is read into memory: the claims are counted by one
aggregate, and memory holds one page whatever the ledger's size. Format-5
claims have no index: their record pseudonyms' 8-byte prefixes are read
from the blocks into a table of at most ``BLOCK_PASS_CLAIMS`` claims (32
to 64 bytes each), in as many passes over the live keys as that bound
needs, and each hit is confirmed on the item's 32 bytes, read for a page's
hits at once as spans of their blocks (:func:`_match_pass`, :func:`_confirmed`).
``--sample N`` and ``verify-proof --db`` check a given, bounded list of
claims (:func:`audit_claims`), matched here.

Cost: one pass over each audited table and one HMAC per live row and per
run with claims on its dataset; one indexed probe per page and run; for
format 5, one read of the claimed blocks per pass and, per page with
hits, one ``substr`` read of each block hit (the span of its hits).
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from math import isqrt
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.engine.evaluate import reflect_table
from retention.engine.plan import as_text
from retention.errors import LedgerError, SchemaError
from retention.ledger import blocks, pseudonyms
from retention.ledger import items as ledger_items
from retention.policy.loader import LoadedPack
from retention.policy.model import Dataset
from retention.store import tables as store

# Actions after which the source row is gone; "archive" depends on its step's ``then``.
_GONE = frozenset({"delete", "drop_partition"})
_MASKED = frozenset({"anonymise"})
_CHUNK = 5_000
_PROBE = 500
"""(run, pseudonym) pairs per probe of the items' pseudonym index."""
_PICK = 2_000
"""Chosen claims read per query (bound parameters: SQLite takes 32,766)."""
_BLOCK = 64
"""Consecutive entry numbers per stratum of format 1 claims when drawing a sample."""
_RANGES = 50
"""Blocks read per query (ranges of the primary key) when a block holds entries that claim nothing."""
_SUBSTR = 200
"""Format-5 spans read per statement, for the sample's items and the complete audit's blocks (one SELECT each in a
UNION ALL; SQLite allows 500)."""
_SPAN_BYTES = 32 << 20
"""Bytes of block spans one statement confirming a page's format-5 hits reads at most (but one span, if longer)."""
BLOCK_PASS_CLAIMS = 1 << 20
"""Format-5 claims one pass of the complete audit holds (a table of 16-byte slots, 2 to 4 per claim: 64 MiB)."""
_SPACE = 1 << 64
"""Record pseudonyms' 8-byte prefixes, as unsigned integers, are below this."""


@dataclass(frozen=True)
class Claim:
    """One record the ledger says left its live table (or was masked there)."""

    seq: int
    idx: int | None  # None: a format 1 entry
    run_id: str | None
    pack_id: str | None
    dataset: str
    transition: str
    action: str | None
    pseudonym: str


@dataclass
class AuditResult:
    """Claims checked, and the ones that do not hold (named without data values)."""

    claims: int = 0
    checked: int = 0
    datasets: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _scope(dataset: str | None) -> list[sa.ColumnElement[bool]]:
    """Entries that claim a record left its table or was masked there (of ``dataset``, if given)."""
    entries = store.ledger
    wanted = sa.or_(entries.c.transition.like("%->purged"), entries.c.action.in_([*_MASKED, "archive"]))
    scope = [entries.c.dataset.is_not(None), wanted]
    if dataset is not None:
        scope.append(entries.c.dataset == dataset)
    return scope


def _claim_queries(dataset: str | None) -> list[tuple[sa.Select[Any], tuple[Any, ...]]]:
    """The claims of items (format 2 and later), then of format 1 entries, each with the ledger's order."""
    entries, items = store.ledger, store.ledger_items
    scope = _scope(dataset)
    per_item = (
        sa.select(
            entries.c.seq,
            items.c.idx,
            entries.c.run_id,
            entries.c.pack_id,
            entries.c.dataset,
            entries.c.transition,
            entries.c.action,
            items.c.record_pseudonym,
        )
        .select_from(items.join(entries, entries.c.seq == items.c.entry_seq))
        .where(entries.c.format.in_(ledger_items.ROW_FORMATS), *scope)
    )
    per_v1 = sa.select(
        entries.c.seq,
        sa.literal(None, sa.Integer).label("idx"),
        entries.c.run_id,
        entries.c.pack_id,
        entries.c.dataset,
        entries.c.transition,
        entries.c.action,
        entries.c.record_pseudonym,
    ).where(entries.c.format.is_(None), entries.c.record_pseudonym.is_not(None), *scope)
    return [(per_item, (entries.c.seq, items.c.idx)), (per_v1, (entries.c.seq,))]


def _block_bodies(conn: sa.Connection, where: list[sa.ColumnElement[bool]]) -> Iterator[tuple[Any, ...]]:
    """(seq, run, pack, dataset, transition, action, body) of the format-5 entries ``where`` selects, one at a time.

    Streamed a few rows at a time: a body is 91 bytes per item, and the
    complete audit reads every claimed block without holding more than
    these.
    """
    entries, table = store.ledger, store.ledger_blocks
    query = (
        sa.select(
            entries.c.seq,
            entries.c.run_id,
            entries.c.pack_id,
            entries.c.dataset,
            entries.c.transition,
            entries.c.action,
            table.c.body,
        )
        .select_from(table.join(entries, entries.c.seq == table.c.entry_seq))
        .where(entries.c.format == blocks.FORMAT, *where)
        .order_by(entries.c.seq)
    )
    for row in conn.execution_options(yield_per=4).execute(query):
        yield (*row[:6], bytes(row[6]))


def _item_spans(
    conn: sa.Connection, spans: list[tuple[int, int, int]], dataset: str | None
) -> Iterator[tuple[int, int, Any, Any, Any, Any, Any, bytes]]:
    """(entry, first item, run, pack, dataset, transition, action, bytes) of each (entry, first item, last item)
    span of format-5 blocks, read by ``substr`` from the first item's start to the last item's record pseudonym.

    One ``UNION ALL`` of ``_SUBSTR`` spans (or ``_SPAN_BYTES`` of them) a
    statement; a block without the span (cut short past the triggers) yields
    what it holds of it, or nothing.
    """
    entries, table = store.ledger, store.ledger_blocks
    joined = table.join(entries, entries.c.seq == table.c.entry_seq)
    scope = [entries.c.format == blocks.FORMAT, *_scope(dataset)]
    size = blocks.ITEM_SIZE
    statements: list[list[tuple[int, int, int]]] = []
    held = 0
    for seq, low, high in spans:
        length = (high - low) * size + blocks.PSEUDONYM_SIZE
        if not statements or (statements[-1] and (len(statements[-1]) == _SUBSTR or held + length > _SPAN_BYTES)):
            statements.append([])
            held = 0
        statements[-1].append((seq, low, high))
        held += length
    for chosen in statements:
        parts = [
            sa.select(
                entries.c.seq,
                sa.cast(sa.literal(low), sa.Integer).label("low"),
                entries.c.run_id,
                entries.c.pack_id,
                entries.c.dataset,
                entries.c.transition,
                entries.c.action,
                sa.func.substr(
                    table.c.body,
                    sa.cast(sa.literal(low * size + 1), sa.Integer),
                    sa.cast(sa.literal((high - low) * size + blocks.PSEUDONYM_SIZE), sa.Integer),
                ).label("span"),
            )
            .select_from(joined)
            .where(entries.c.seq == seq, *scope)
            for seq, low, high in chosen
        ]
        for seq, low, run_id, pack_id, name, transition, action, span in conn.execute(sa.union_all(*parts)):
            yield int(seq), int(low), run_id, pack_id, name, transition, action, bytes(span or b"")


def _block_claims_at(conn: sa.Connection, keys: list[tuple[int, int]], dataset: str | None) -> list[Claim]:
    """The claims of format-5 items chosen by (entry, position): each item's record pseudonym read as a substring.

    Only the item's 32 bytes travel; a block holding no item at a chosen
    position (cut short past the triggers) yields nothing, and the caller's
    count check names it.
    """
    chosen = [
        Claim(seq, idx, run_id, pack_id, name, transition, action, record.hex())
        for seq, idx, run_id, pack_id, name, transition, action, record in _item_spans(
            conn, [(seq, idx, idx) for seq, idx in keys], dataset
        )
        if len(record) == blocks.PSEUDONYM_SIZE
    ]
    return sorted(chosen, key=lambda c: (c.seq, c.idx))


def _sampled(conn: sa.Connection, dataset: str | None, sample: int, pick: random.Random) -> tuple[list[Claim], int]:
    """``sample`` claims chosen uniformly at random, and the exact number of claims; only the chosen are read.

    The claims are counted by the database in small strata, never fetched:
    the items per entry (with the entry's least and greatest item number),
    and the format 1 claims per block of ``_BLOCK`` consecutive entry
    numbers. ``sample`` distinct positions are drawn among all the claims
    (each claim one position, so the draw is uniform over claims whatever
    the strata's sizes), each position names a stratum and a rank in it,
    and the chosen claims are read through the primary keys: an item by
    its entry and number (its rank, when the entry's numbers have no gap),
    a format 1 claim by its rank among the claims of its block's
    ``_BLOCK`` entries. Reading every claim's key into this process to draw
    among them took 3.7 s on a million-claim ledger, more than the
    complete audit (issue 24).
    """
    entries, items = store.ledger, store.ledger_items
    # Entries are never changed once written: bounded by the head read first, the counts and the reads
    # below see the same claims whatever a run appends meanwhile.
    head = conn.execute(sa.select(sa.func.max(entries.c.seq))).scalar() or 0
    scope = [*_scope(dataset), entries.c.seq <= head]
    per_entry = (
        sa.select(items.c.entry_seq, sa.func.count(), sa.func.min(items.c.idx), sa.func.max(items.c.idx))
        .select_from(items.join(entries, entries.c.seq == items.c.entry_seq))
        .where(entries.c.format.in_(ledger_items.ROW_FORMATS), *scope)
        .group_by(items.c.entry_seq)
    )
    v1_where = [entries.c.format.is_(None), entries.c.record_pseudonym.is_not(None), *scope]
    block = entries.c.seq // _BLOCK
    per_block = sa.select(block, sa.func.count()).where(*v1_where).group_by(block)
    # A format-5 entry's items are its block's positions 0 .. items-1: counted by the entry's own column.
    per_format5 = sa.select(entries.c.seq, entries.c["items"]).where(
        entries.c.format == blocks.FORMAT, entries.c["items"] > 0, *scope
    )
    # (True, entry, count, least idx, greatest idx) for items, (False, block, count, 0, 0) for format 1
    strata: list[tuple[bool, int, int, int, int]] = [
        (True, int(seq), int(n), int(low), int(high)) for seq, n, low, high in conn.execute(per_entry)
    ]
    strata += [(False, int(b), int(n), 0, 0) for b, n in conn.execute(per_block)]
    format5 = {int(seq): int(n) for seq, n in conn.execute(per_format5)}
    strata += [(True, seq, n, 0, n - 1) for seq, n in format5.items()]
    ends = list(accumulate(s[2] for s in strata))
    total = ends[-1] if ends else 0
    wanted_items: list[tuple[int, int]] = []  # (entry, idx)
    wanted_blocks: list[tuple[int, int]] = []  # (format-5 entry, idx)
    ranked_items: dict[int, list[int]] = {}  # entry -> ranks, for entries whose numbers have gaps
    ranked_blocks: dict[int, list[int]] = {}  # block -> ranks, for blocks with entries that claim nothing
    wanted_v1: list[int] = []
    for position in pick.sample(range(total), min(sample, total)):
        at = bisect_right(ends, position)
        is_item, key, count, low, high = strata[at]
        rank = position - (ends[at] - count)
        if is_item and key in format5:
            wanted_blocks.append((key, rank))
        elif is_item and high - low + 1 == count:
            wanted_items.append((key, low + rank))
        elif is_item:
            ranked_items.setdefault(key, []).append(rank)
        elif count == min(head, (key + 1) * _BLOCK - 1) - key * _BLOCK + 1:
            wanted_v1.append(key * _BLOCK + rank)  # every entry number of the block is a claim
        else:
            ranked_blocks.setdefault(key, []).append(rank)
    for seq, ranks in ranked_items.items():
        numbers = conn.execute(sa.select(items.c.idx).where(items.c.entry_seq == seq).order_by(items.c.idx))
        idxs = [int(i) for (i,) in numbers]
        wanted_items += [(seq, idxs[r]) for r in ranks if r < len(idxs)]
    v1_blocks = sorted(ranked_blocks)
    for start in range(0, len(v1_blocks), _RANGES):
        chunk = v1_blocks[start : start + _RANGES]
        ranges = [entries.c.seq.between(b * _BLOCK, (b + 1) * _BLOCK - 1) for b in chunk]
        found: dict[int, list[int]] = {}
        for (seq,) in conn.execute(sa.select(entries.c.seq).where(sa.or_(*ranges), *v1_where)):
            found.setdefault(int(seq) // _BLOCK, []).append(int(seq))
        for b in chunk:
            in_block = sorted(found.get(b, []))
            wanted_v1 += [in_block[r] for r in ranked_blocks[b] if r < len(in_block)]
    [(per_item, item_order), (per_v1, v1_order)] = _claim_queries(dataset)  # read by key: the bound is implied
    chosen: list[Claim] = []
    wanted_items.sort()
    for start in range(0, len(wanted_items), _PICK):
        keys = wanted_items[start : start + _PICK]
        # The entries named alone as well: with the pairs only, SQLite scanned every entry (1.2 s at 1M).
        entry_seqs = sorted({seq for seq, _ in keys})
        found_items = per_item.where(entries.c.seq.in_(entry_seqs), sa.tuple_(*item_order).in_(keys)).order_by(
            *item_order
        )
        chosen.extend(Claim(*row) for row in conn.execute(found_items))
    chosen += _block_claims_at(conn, sorted(wanted_blocks), dataset)
    wanted_v1.sort()
    for start in range(0, len(wanted_v1), _PICK):
        found_v1 = per_v1.where(entries.c.seq.in_(wanted_v1[start : start + _PICK])).order_by(*v1_order)
        chosen.extend(Claim(*row) for row in conn.execute(found_v1))
    if len(chosen) != min(sample, total):
        # Only a deletion below the head (past the ledger's triggers) makes a counted claim unreadable.
        raise LedgerError(
            f"ledger audit: {min(sample, total) - len(chosen)} of the claims counted for the sample could not be "
            "read back (entries below the head changed meanwhile); run `retention ledger verify`"
        )
    return chosen, total


def _expectation(dataset: Dataset, claim: Claim) -> str:
    """ "gone" or "masked": what the claim says of the live row."""
    if claim.action in _GONE:
        return "gone"
    if claim.action in _MASKED:
        return "masked"
    to_state = claim.transition.rsplit("->", 1)[-1]
    step = next((s for s in dataset.lifecycle if s.to == to_state), None)
    if step is not None and step.action == "archive":
        return "masked" if step.then == "anonymise" else "gone"
    # archived->purged (the archive's payload purged): the source row left at archiving, or was masked then
    archive = next((s for s in dataset.lifecycle if s.action == "archive"), None)
    return "masked" if archive is not None and archive.then == "anonymise" else "gone"


def _constant_masks(dataset: Dataset) -> dict[str, Any]:
    """Columns every masking step of the dataset sets to a constant (null or fixed), and their values."""
    result: dict[str, Any] = {}
    for step in dataset.lifecycle:
        for column, mask in (step.mask or {}).items():
            if mask.strategy == "null":
                result[column] = None
            elif mask.strategy == "fixed":
                result[column] = mask.value
    return result


def _where(claim: Claim) -> str:
    item = f" item {claim.idx}" if claim.idx is not None else ""
    return f"entry {claim.seq}{item} (record {claim.pseudonym[:16]})"


def audit(
    engine: sa.Engine,
    packs: dict[str, LoadedPack],
    secret: bytes,
    *,
    sample: int | None = None,
    dataset: str | None = None,
    seed: int | None = None,
) -> AuditResult:
    """Check every claim (or ``sample`` of them, chosen at random) against the live tables."""
    if sample is None:
        return _audit_all(engine, packs, secret, dataset)
    with engine.connect() as conn:
        chosen, total = _sampled(conn, dataset, sample, random.Random(seed))
    result = audit_claims(engine, packs, secret, chosen)
    result.claims = total
    return result


# --------------------------------------------------------------------------
# The complete audit: matched in the database, a page of live keys at a time
# --------------------------------------------------------------------------


_Counts = dict[tuple[str | None, str], dict[str | None, int]]


def _claim_counts(conn: sa.Connection, dataset: str | None) -> tuple[_Counts, _Counts]:
    """Claims per (pack, dataset) and per run, counted by the database: of items and format 1 entries (run None),
    and of format-5 blocks (their entries' ``items``)."""
    entries, items = store.ledger, store.ledger_items
    scope = _scope(dataset)
    counts: _Counts = {}
    in_blocks: _Counts = {}
    per_item = (
        sa.select(entries.c.pack_id, entries.c.dataset, entries.c.run_id, sa.func.count())
        .select_from(items.join(entries, entries.c.seq == items.c.entry_seq))
        .where(entries.c.format.in_(ledger_items.ROW_FORMATS), *scope)
        .group_by(entries.c.pack_id, entries.c.dataset, entries.c.run_id)
    )
    per_v1 = (
        sa.select(entries.c.pack_id, entries.c.dataset, sa.literal(None, sa.String), sa.func.count())
        .where(entries.c.format.is_(None), entries.c.record_pseudonym.is_not(None), *scope)
        .group_by(entries.c.pack_id, entries.c.dataset)
    )
    per_block = (
        sa.select(entries.c.pack_id, entries.c.dataset, entries.c.run_id, sa.func.sum(entries.c["items"]))
        .where(entries.c.format == blocks.FORMAT, entries.c["items"] > 0, *scope)
        .group_by(entries.c.pack_id, entries.c.dataset, entries.c.run_id)
    )
    for query, into in ((per_item, counts), (per_v1, counts), (per_block, in_blocks)):
        for pack_id, name, run_id, count in conn.execute(query):
            runs = into.setdefault((pack_id, name), {})
            runs[run_id] = runs.get(run_id, 0) + int(count or 0)
    return counts, in_blocks


def _audit_all(engine: sa.Engine, packs: dict[str, LoadedPack], secret: bytes, dataset: str | None) -> AuditResult:
    result = AuditResult()
    with engine.connect() as conn:
        counts, in_blocks = _claim_counts(conn, dataset)
    for pack_id, name in sorted(set(counts) | set(in_blocks), key=lambda k: (k[0] or "", k[1])):
        runs, block_runs = counts.get((pack_id, name), {}), in_blocks.get((pack_id, name), {})
        found = sum(runs.values()) + sum(block_runs.values())
        result.claims += found
        loaded = packs.get(pack_id or "")
        if loaded is None or name not in loaded.pack.datasets:
            result.skipped.append(
                f"dataset {name} of pack {pack_id}: {found} claim(s) not checked (the pack is not under --rules)"
            )
            continue
        result.datasets += 1
        result.checked += found
        result.problems += _match_dataset(
            engine,
            loaded.pack.datasets[name],
            name,
            pack_id,
            sorted(runs, key=str),
            secret,
            found,
            {str(run): n for run, n in block_runs.items() if run is not None},
        )
    return result


def _digest(key: bytes) -> Callable[[bytes], bytes]:
    """HMAC-SHA256 under ``key`` as raw bytes (format 5 compares bytes; formats 2-4 take its hex)."""
    return pseudonyms.keyed(key).digest


_Range = tuple[str, int, int]
"""(run, lowest, highest + 1) of record-pseudonym prefixes (first 8 bytes, big-endian) one pass matches."""


def _block_passes(block_runs: dict[str, int], cap: int) -> list[list[_Range]]:
    """The passes over a dataset's live keys that match its format-5 claims, each holding about ``cap`` at most.

    A run with more claims than ``cap`` is split into equal ranges of its
    claims' pseudonym prefixes (HMAC outputs: uniform, so each range holds
    its share of the claims, give or take a square root); the ranges of all
    runs are packed into passes in order. One pass when everything fits.
    """
    passes: list[list[_Range]] = []
    load = 0
    for run_id in sorted(block_runs):
        claims = block_runs[run_id]
        parts = max(1, -(-claims // cap))
        for k in range(parts):
            size = claims // parts + 1
            if not passes or (load + size > cap and passes[-1]):
                passes.append([])
                load = 0
            passes[-1].append((run_id, k * _SPACE // parts, (k + 1) * _SPACE // parts))
            load += size
    return passes


_IDX_BITS = 24
"""Bits of a claim's position in its block in a table slot (the entry's number takes the other 40)."""


class _PrefixTable:
    """One pass's format-5 claims: record-pseudonym prefix -> (entry, position), open addressing in two arrays.

    Sixteen bytes per slot, sized from the expected claims so that at most
    half the slots are used (at scale 2 to 4 slots per claim: 32 to 64 bytes), and no
    Python object per claim (a set of the same
    prefixes would take about 100). A prefix is 64 bits of an HMAC: a live
    row's pseudonym sharing one with a claim it is not is improbable (about
    live rows x claims / 2^64) and is told apart by the exact comparison
    that follows every hit.
    """

    def __init__(self, expected: int) -> None:
        # ``expected`` is a range's share of its run's claims: the count in the range is off by about its square
        # root, so room for four of those more keeps the table from growing but in the improbable case.
        room = expected + 4 * isqrt(expected) + 16
        size = 1 << (2 * room - 1).bit_length()
        self.keys = array("Q", [0]) * size  # repeated in place: no zeroed bytes object of the same size first
        self.locs = array("Q", [0]) * size
        self.used = 0

    def add(self, prefix: int, loc: int) -> None:
        if 2 * (self.used + 1) > len(self.keys):
            self._grow()
        keys, mask = self.keys, len(self.keys) - 1
        prefix = prefix or 1  # 0 marks an empty slot; a claim of prefix 0 shares 1's slots, confirmed exactly
        i = prefix & mask
        while keys[i]:
            i = (i + 1) & mask
        keys[i] = prefix
        self.locs[i] = loc
        self.used += 1

    def get(self, prefix: int) -> list[int]:
        keys, mask = self.keys, len(self.keys) - 1
        prefix = prefix or 1
        i = prefix & mask
        found = []
        while key := keys[i]:
            if key == prefix:
                found.append(self.locs[i])
            i = (i + 1) & mask
        return found

    def _grow(self) -> None:
        """Twice the slots, the old arrays read straight into the new ones (no Python object per claim)."""
        keys, locs = self.keys, self.locs
        self.keys = array("Q", [0]) * (2 * len(keys))
        self.locs = array("Q", [0]) * (2 * len(keys))
        self.used = 0
        for k, v in zip(keys, locs, strict=True):
            if k:
                self.add(k, v)


def _load_pass(
    conn: sa.Connection, name: str, pack_id: str | None, ranges: list[_Range], expected: int
) -> _PrefixTable:
    """The prefixes of the format-5 claims on ``name`` in ``ranges``, read block by block (a few held at a time)."""
    entries = store.ledger
    by_run: dict[str, list[tuple[int, int]]] = {}
    for run_id, low, high in ranges:
        by_run.setdefault(run_id, []).append((low, high))
    pack = entries.c.pack_id.is_(None) if pack_id is None else entries.c.pack_id == pack_id
    where = [entries.c.dataset == name, pack, entries.c.run_id.in_(sorted(by_run)), *_scope(None)]
    table = _PrefixTable(expected)
    size, from_bytes = blocks.ITEM_SIZE, int.from_bytes
    for seq, run_id, _pack, _name, _transition, _action, body in _block_bodies(conn, where):
        n = blocks.count(body)
        if seq >= 1 << (64 - _IDX_BITS) or n > 1 << _IDX_BITS:
            raise LedgerError(f"ledger audit: entry {seq} is beyond what the complete audit can index")
        base = int(seq) << _IDX_BITS
        whole = by_run[run_id] == [(0, _SPACE)]
        for i in range(n):
            prefix = from_bytes(body[i * size : i * size + 8], "big")
            if whole or any(low <= prefix < high for low, high in by_run[run_id]):
                table.add(prefix, base | i)
    return table


def _match_dataset(
    engine: sa.Engine,
    dataset: Dataset,
    name: str,
    pack_id: str | None,
    runs: list[str | None],
    secret: bytes,
    claims: int,
    block_runs: dict[str, int] | None = None,
) -> list[str]:
    """The claims of one dataset that its live table contradicts, found a page of live keys at a time.

    Claims of formats 1-4 are found by the database (indexes) in the first
    pass; format-5 claims by each pass's table of prefixes
    (:func:`_block_passes`, :class:`_PrefixTable`), every hit confirmed on
    its item's bytes (:func:`_confirmed`).
    """
    block_runs = block_runs or {}
    passes: list[list[_Range]] = _block_passes(block_runs, BLOCK_PASS_CLAIMS) or [[]]
    problems: list[str] = []
    with engine.connect() as conn:
        try:
            table = reflect_table(conn, dataset.table, dataset.schema_)
            key_column = table.c[dataset.key]
        except (SchemaError, KeyError):
            return [f"dataset {name}: its table or key column is gone; {claims} claim(s) not checked"]
        for number, ranges in enumerate(passes):
            expected = sum(block_runs[r] * (high - low) // _SPACE for r, low, high in ranges)
            prefixes = _load_pass(conn, name, pack_id, ranges, expected) if ranges else None
            problems += _match_pass(
                conn, dataset, name, pack_id, runs if number == 0 else [], secret, table, key_column, prefixes, ranges
            )
    return problems


def _match_pass(
    conn: sa.Connection,
    dataset: Dataset,
    name: str,
    pack_id: str | None,
    runs: list[str | None],
    secret: bytes,
    table: sa.Table,
    key_column: sa.Column[Any],
    prefixes: _PrefixTable | None,
    ranges: list[_Range],
) -> list[str]:
    """One pass over the live keys: the claims of ``runs`` (formats 1-4) and ``prefixes`` (format 5) it contradicts."""
    digests = {run_id: _digest(ledger_items.run_key(secret, run_id)) for run_id in runs if run_id is not None}
    for run_id, _low, _high in ranges:
        digests.setdefault(run_id, _digest(ledger_items.run_key(secret, run_id)))
    item_runs = {run_id for run_id in runs if run_id is not None}
    v1 = _digest(secret) if None in runs else None
    block_ranges: dict[str, list[tuple[int, int]]] = {}
    for run_id, low, high in ranges:
        block_ranges.setdefault(run_id, []).append((low, high))
    slots, mask = (prefixes.keys, len(prefixes.keys) - 1) if prefixes is not None else (array("Q"), 0)
    prefix = f"record\x1f{name}\x1f".encode()
    problems: list[str] = []
    text = as_text(conn, key_column)
    page = sa.select(key_column, text).order_by(key_column).limit(_CHUNK)
    last: Any = None
    while True:
        rows = conn.execute(page if last is None else page.where(key_column > last)).all()
        if not rows:
            return problems
        last = rows[-1][0]
        messages = {str(row[1]): prefix + str(row[1]).encode("utf-8") for row in rows}
        wanted: dict[tuple[str | None, str], str] = {}  # (run, pseudonym) -> live key
        hits: list[tuple[int, int, str, bytes, str]] = []  # (entry, idx, run, pseudonym, live key) of format 5
        for run_id, digest in digests.items():
            spans = block_ranges.get(run_id) if prefixes is not None else None
            whole, probe = spans == [(0, _SPACE)], run_id in item_runs
            for key_text, message in messages.items():
                value = digest(message)
                if probe:
                    wanted[(run_id, value.hex())] = key_text
                if spans is not None and prefixes is not None:
                    at = int.from_bytes(value[:8], "big")
                    if not slots[(at or 1) & mask]:
                        continue  # the prefix's first slot is empty: no claim has it (linear probing), no call
                    if whole or any(low <= at < high for low, high in spans):
                        hits += [
                            (loc >> _IDX_BITS, loc & ((1 << _IDX_BITS) - 1), run_id, value, key_text)
                            for loc in prefixes.get(at)
                        ]
        if v1 is not None:
            for key_text, message in messages.items():
                wanted[(None, v1(message).hex())] = key_text
        found: list[tuple[Claim, str]] = []
        if wanted:
            for claim in _matching(conn, name, pack_id, wanted):
                found.append((claim, wanted[(claim.run_id if claim.idx is not None else None, claim.pseudonym)]))
        found += _confirmed(conn, name, hits)
        masked: list[tuple[str, Claim]] = []
        for claim, key_text in sorted(found, key=lambda f: (f[0].seq, -1 if f[0].idx is None else f[0].idx)):
            if _expectation(dataset, claim) == "gone":
                problems.append(
                    f"dataset {name}: {_where(claim)} says {claim.transition} ({claim.action}), but the live "
                    "table still holds that record"
                )
            else:
                masked.append((key_text, claim))
        problems += _unmasked(conn, dataset, name, table, key_column, masked)
        if len(rows) < _CHUNK:
            return problems


def _confirmed(conn: sa.Connection, name: str, hits: list[tuple[int, int, str, bytes, str]]) -> list[tuple[Claim, str]]:
    """The ``hits`` (entry, position, run, pseudonym, live key) whose item holds that whole pseudonym, with the key.

    A hit matched 8 bytes of a prefix; the item's 32 bytes tell it apart.
    Each block with hits on the page is read once, in one statement for
    the page (or a few of ``_SPAN_BYTES`` each): the span from its first
    hit's item to its last (:func:`_item_spans`).
    Not an item at a time: PostgreSQL stores the bodies lz4-compressed, and
    a ``substr`` decompresses the body up to the offset, so 20,000 hits in
    200 blocks took 86 s read by item against 23 s by block
    (bench/RESULTS.md). Not whole blocks kept between pages either: a
    page's hits are sorted, so a block is read once per page anyway.
    """
    if not hits:
        return []
    by_block: dict[int, list[tuple[int, str, bytes, str]]] = {}
    for seq, idx, run_id, value, key_text in hits:
        by_block.setdefault(seq, []).append((idx, run_id, value, key_text))
    spans = [(seq, min(h[0] for h in found), max(h[0] for h in found)) for seq, found in sorted(by_block.items())]
    confirmed: list[tuple[Claim, str]] = []
    for seq, low, run_id, pack_id, _name, transition, action, span in _item_spans(conn, spans, name):
        for idx, wanted_run, value, key_text in by_block[seq]:
            at = (idx - low) * blocks.ITEM_SIZE
            if run_id == wanted_run and span[at : at + blocks.PSEUDONYM_SIZE] == value:
                confirmed.append((Claim(seq, idx, run_id, pack_id, name, transition, action, value.hex()), key_text))
    return confirmed


def _matching(
    conn: sa.Connection, name: str, pack_id: str | None, wanted: dict[tuple[str | None, str], str]
) -> list[Claim]:
    """The claims on ``name`` whose (run, record pseudonym) is in ``wanted`` (run None: format 1), in ledger order.

    Items of every format are probed by the items' record pseudonym index
    (migration 0015; format 4 has no lookup rows), the run checked here.
    """
    entries, items = store.ledger, store.ledger_items
    pack = entries.c.pack_id.is_(None) if pack_id is None else entries.c.pack_id == pack_id
    scope = [entries.c.dataset == name, pack, *_scope(None)]
    columns = (
        entries.c.seq,
        items.c.idx,
        entries.c.run_id,
        entries.c.transition,
        entries.c.action,
        items.c.record_pseudonym,
    )
    found: dict[tuple[int, int | None], Claim] = {}

    def add(rows: Any, v1: bool = False) -> None:
        for seq, idx, run_id, transition, action, pseudonym in rows:
            if v1 or (run_id, pseudonym) in wanted:
                found[(int(seq), idx)] = Claim(int(seq), idx, run_id, pack_id, name, transition, action, str(pseudonym))

    pairs = [pair for pair in wanted if pair[0] is not None]
    joined = items.join(entries, entries.c.seq == items.c.entry_seq)
    for start in range(0, len(pairs), _PROBE):
        chunk = pairs[start : start + _PROBE]
        add(
            conn.execute(
                sa.select(*columns)
                .select_from(joined)
                .where(
                    dialect_for(conn).pseudonym_in(items.c.record_pseudonym, sorted({p for _, p in chunk})),
                    entries.c.format.in_(ledger_items.ROW_FORMATS),
                    *scope,
                )
            )
        )
    olds = sorted(p for run_id, p in wanted if run_id is None)
    for start in range(0, len(olds), _PROBE):
        add(
            conn.execute(
                sa.select(
                    entries.c.seq,
                    sa.literal(None, sa.Integer),
                    entries.c.run_id,
                    entries.c.transition,
                    entries.c.action,
                    entries.c.record_pseudonym,
                ).where(
                    entries.c.record_pseudonym.in_(olds[start : start + _PROBE]),
                    entries.c.format.is_(None),
                    *scope,
                )
            ),
            v1=True,
        )
    return [found[k] for k in sorted(found, key=lambda k: (k[0], -1 if k[1] is None else k[1]))]


def _wanted(transition: str | None, action: str | None) -> bool:
    return bool(transition and transition.endswith("->purged")) or action in (*_MASKED, "archive")


def proof_claims(document: dict[str, Any]) -> list[Claim]:
    """The claims of a proof (``ledger prove``) that say a record left its table or was masked there."""
    by_seq = {entry["seq"]: entry for entry in document["chain"]}
    claims = []
    for record in document["records"]:
        entry = by_seq[record["seq"]]
        if entry.get("dataset") is None or not _wanted(entry.get("transition"), entry.get("action")):
            continue
        item = record["item"]
        claims.append(
            Claim(
                entry["seq"],
                item["idx"] if item is not None else None,
                entry.get("run_id"),
                entry.get("pack_id"),
                entry["dataset"],
                entry["transition"],
                entry.get("action"),
                item["record"] if item is not None else entry["record_pseudonym"],
            )
        )
    return claims


def audit_claims(engine: sa.Engine, packs: dict[str, LoadedPack], secret: bytes, claims: list[Claim]) -> AuditResult:
    """Check ``claims`` against the live tables, one pass over each dataset's table."""
    result = AuditResult(claims=len(claims))
    by_dataset: dict[tuple[str | None, str], list[Claim]] = {}
    for claim in claims:
        by_dataset.setdefault((claim.pack_id, claim.dataset), []).append(claim)
    for (pack_id, name), group in sorted(by_dataset.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        loaded = packs.get(pack_id or "")
        if loaded is None or name not in loaded.pack.datasets:
            result.skipped.append(
                f"dataset {name} of pack {pack_id}: {len(group)} claim(s) not checked (the pack is not under --rules)"
            )
            continue
        result.datasets += 1
        result.checked += len(group)
        result.problems += _audit_dataset(engine, loaded.pack.datasets[name], name, group, secret)
    return result


def _audit_dataset(engine: sa.Engine, dataset: Dataset, name: str, claims: list[Claim], secret: bytes) -> list[str]:
    """The claims of one dataset that the live table contradicts."""
    by_run: dict[bytes, dict[str, list[Claim]]] = {}
    for claim in claims:
        key = secret if claim.idx is None or claim.run_id is None else ledger_items.run_key(secret, claim.run_id)
        by_run.setdefault(key, {}).setdefault(claim.pseudonym, []).append(claim)
    keyed = [(pseudonyms.keyed(k), wanted) for k, wanted in by_run.items()]
    prefix = f"record\x1f{name}\x1f".encode()
    problems: list[str] = []
    masked: list[tuple[str, Claim]] = []
    with engine.connect() as conn:
        try:
            table = reflect_table(conn, dataset.table, dataset.schema_)
            key_column = table.c[dataset.key]
        except (SchemaError, KeyError):
            return [f"dataset {name}: its table or key column is gone; {len(claims)} claim(s) not checked"]
        query = sa.select(as_text(conn, key_column))
        for (text,) in conn.execution_options(yield_per=_CHUNK).execute(query):
            message = prefix + str(text).encode("utf-8")
            for hmac_of, wanted in keyed:
                found = wanted.get(hmac_of.hexdigest(message))
                if not found:
                    continue
                for claim in found:
                    if _expectation(dataset, claim) == "gone":
                        problems.append(
                            f"dataset {name}: {_where(claim)} says {claim.transition} ({claim.action}), but the live "
                            "table still holds that record"
                        )
                    else:
                        masked.append((str(text), claim))
        problems += _unmasked(conn, dataset, name, table, key_column, masked)
    return problems


def _unmasked(
    conn: sa.Connection,
    dataset: Dataset,
    name: str,
    table: sa.Table,
    key_column: sa.Column[Any],
    masked: list[tuple[str, Claim]],
) -> list[str]:
    """Rows a claim says were masked whose constant-masked columns hold something else."""
    constants = {c: v for c, v in _constant_masks(dataset).items() if c in table.c}
    if not masked or not constants:
        return []
    problems = []
    for start in range(0, len(masked), 500):
        chunk = masked[start : start + 500]
        by_key = {k: c for k, c in chunk}
        text = as_text(conn, key_column)
        rows = conn.execute(sa.select(text, *(table.c[c] for c in constants)).where(text.in_(list(by_key)))).all()
        for row in rows:
            wrong = [c for i, (c, v) in enumerate(constants.items(), start=1) if row[i] != v]
            if wrong:
                claim = by_key[str(row[0])]
                problems.append(
                    f"dataset {name}: {_where(claim)} says {claim.transition} ({claim.action}), but the live "
                    f"row is not masked (column {', '.join(wrong)})"
                )
    return problems


__all__ = ["AuditResult", "Claim", "audit", "audit_claims", "proof_claims"]
