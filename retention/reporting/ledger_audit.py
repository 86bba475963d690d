"""Claims checked against the data: what the ledger says was purged or anonymised is so in the live tables.

The chain, the Merkle roots and the MACs prove who wrote an entry and that
it did not change; none of them looks at the data. A row re-inserted after
its purge (a restore from backup, a superuser), or a claim for a record
that is in fact still there, passes every one of them. ``ledger audit``
reads the claims (items of format 2 and 3, record entries of format 1),
names each record by its pseudonym under the claim's run key, and reads the
dataset's live table once: every live key is pseudonymised under the runs
whose claims are checked, in this process (the keys never leave it), and a
live row that a claim says is gone, or that lacks its constant masks, is
named by dataset, entry, item and pseudonym, never by a value.

Cost: one pass over each audited table, one HMAC per live row and per run
with claims in the sample; ``--sample N`` bounds the runs as well as the
claims.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from retention.engine.evaluate import reflect_table
from retention.engine.plan import as_text
from retention.errors import SchemaError
from retention.ledger import items as ledger_items
from retention.ledger import pseudonyms
from retention.policy.loader import LoadedPack
from retention.policy.model import Dataset
from retention.store import tables as store

# Actions after which the source row is gone; "archive" depends on its step's ``then``.
_GONE = frozenset({"delete", "drop_partition"})
_MASKED = frozenset({"anonymise"})
_CHUNK = 5_000


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


def _claims(conn: sa.Connection, dataset: str | None) -> Iterator[Claim]:
    entries, items = store.ledger, store.ledger_items
    wanted = sa.or_(entries.c.transition.like("%->purged"), entries.c.action.in_([*_MASKED, "archive"]))
    scope = [entries.c.dataset.is_not(None), wanted]
    if dataset is not None:
        scope.append(entries.c.dataset == dataset)
    query = (
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
        .where(entries.c.format.in_(ledger_items.ITEM_FORMATS), *scope)
        .order_by(entries.c.seq, items.c.idx)
    )
    for row in conn.execution_options(yield_per=_CHUNK).execute(query):
        yield Claim(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])
    v1 = (
        sa.select(
            entries.c.seq,
            entries.c.run_id,
            entries.c.pack_id,
            entries.c.dataset,
            entries.c.transition,
            entries.c.action,
            entries.c.record_pseudonym,
        )
        .where(entries.c.format.is_(None), entries.c.record_pseudonym.is_not(None), *scope)
        .order_by(entries.c.seq)
    )
    for old in conn.execution_options(yield_per=_CHUNK).execute(v1):
        yield Claim(old[0], None, old[1], old[2], old[3], old[4], old[5], old[6])


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
    with engine.connect() as conn:
        claims = list(_claims(conn, dataset))
    total = len(claims)
    if sample is not None and sample < len(claims):
        claims = random.Random(seed).sample(claims, sample)
    result = audit_claims(engine, packs, secret, claims)
    result.claims = total
    return result


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
