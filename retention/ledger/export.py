"""Reading the ledger for auditors: its entries, filtered, and their export as CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any, TextIO

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.ledger.canonical import V2_COLUMNS, _instant
from retention.store import tables as store

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


EXPORT_FIELDS = [*V2_COLUMNS, "hash", "mac"]
"""Every column an auditor needs to recompute each entry's hash by its format (docs/ledger.md) and, with the
pseudonym key, its MAC: an export without ``format``, ``merkle_root`` and ``items`` could not be checked
against the chain for any entry written since ledger v2."""


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
