"""The order datasets run in, and why (docs/rules.md, "Plan and run agree").

``plan`` evaluates every dataset on the database as it is when it starts;
``run`` changes data dataset by dataset. Three kinds of constraint keep the
two in step and the database consistent: a leader runs before the datasets
that follow it (its batches carry their records, so once it is done a
follower's own passes no longer read the leader's clocks); a dataset whose
evaluation reads a table another dataset's batches change runs before it
(it then reads what plan read); and whatever changes rows that reference,
by a live foreign key, rows another dataset deletes runs before that
dataset. ``check`` reports a pack whose constraints form a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.reflection import Inspector, ObjectKind, ObjectScope

from retention.engine.rowfilter import bulk_reflection, kept_read
from retention.errors import SchemaError
from retention.policy.model import Dataset, Pack, Subject


def deletes_rows(dataset: Dataset) -> bool:
    """Whether some step removes the dataset's source rows."""
    for step in dataset.lifecycle:
        if step.action in ("delete", "drop_partition"):
            return True
        if step.action == "archive" and step.then == "delete":
            return True
    return False


def _carried(pack: Pack, name: str) -> list[str]:
    """The dataset and every dataset moving in its batches (its followers, recursively)."""
    result = [name]
    for other_name, other in pack.datasets.items():
        if other.follows is not None and other.follows.dataset == name and other_name not in result:
            result += [n for n in _carried(pack, other_name) if n not in result]
    return result


def _leaders(pack: Pack, name: str) -> list[str]:
    """The datasets ``name`` follows, nearest first."""
    result: list[str] = []
    follows = pack.datasets[name].follows
    while follows is not None and follows.dataset in pack.datasets and follows.dataset not in result:
        result.append(follows.dataset)
        follows = pack.datasets[follows.dataset].follows
    return result


def reads(pack: Pack, name: str) -> set[str]:
    """Tables a dataset's own passes read besides its own: aggregate clocks, related ``where``, identity joins.

    A follower's passes read its leaders' clocks only while a leader has not
    run yet, which the leader-first constraint rules out during ``run``
    (``PlanContext.finished``); in ``plan`` nothing changes, so nothing to order.
    """
    dataset = pack.datasets[name]
    tables = {r.clock.table for r in dataset.keep if r.clock.aggregate and r.clock.table}
    for row_filter in (dataset.row_filter, dataset.erasure_filter):
        if row_filter is not None:
            tables |= {related.table for related in row_filter.related}
    for chain in _chains(dataset):
        tables |= {hop.table for hop in chain.through}
    return tables


def _chains(dataset: Dataset) -> list[Subject]:
    """The joins a dataset's identities are read through (``subject`` and ``email``)."""
    chains = [dataset.subject] if dataset.subject is not None else []
    if dataset.email is not None and not isinstance(dataset.email, str):
        chains.append(dataset.email)
    return chains


def _read_columns(pack: Pack, name: str) -> dict[str, set[str] | None]:
    """Per table :func:`reads` names, the columns read (None: any, as an aggregate clock's rows)."""
    dataset = pack.datasets[name]
    result: dict[str, set[str] | None] = {}

    def add(table: str, columns: set[str] | None) -> None:
        known = result.get(table, set())
        result[table] = None if known is None or columns is None else known | columns

    for rule in dataset.keep:
        if rule.clock.aggregate and rule.clock.table:
            add(rule.clock.table, None)
    for row_filter in (dataset.row_filter, dataset.erasure_filter):
        if row_filter is not None:
            for related in row_filter.related:
                add(related.table, {related.on, *(t.column for t in related.tests)})
    for chain in _chains(dataset):
        for hop in chain.through:
            add(hop.table, {hop.key, hop.column})
    return result


def _written_columns(pack: Pack, name: str) -> dict[str, set[str] | None]:
    """Per table that ``name``'s batches change, the columns they write (None: rows go, so any)."""
    result: dict[str, set[str] | None] = {}
    for carried in _carried(pack, name):
        ds = pack.datasets[carried]
        if deletes_rows(ds) or result.get(ds.table, set()) is None:
            result[ds.table] = None
            continue
        written = {c for step in ds.lifecycle for c in [*(step.set or {}), *(step.mask or {})]}
        result[ds.table] = (result.get(ds.table) or set()) | written
    return result


def _same_chain(pack: Pack, a: str, b: str) -> bool:
    """Whether one of the two moves in the other's batches (followers are evaluated with their leader)."""
    return a in _carried(pack, b) or b in _carried(pack, a)


@dataclass(frozen=True)
class OrderEdge:
    """``first`` must run before ``then``, and why."""

    first: str
    then: str
    why: str


def order_edges(conn: sa.Connection, pack: Pack, inspector: Inspector | None = None) -> list[OrderEdge]:
    """Constraints on the order datasets run in (docs/rules.md, "Plan and run agree").

    A leader runs before its followers. A dataset whose evaluation reads a
    table that another dataset's batches change runs first, so it sees what plan saw. Where a table references
    (by a live foreign key) a table whose rows some dataset deletes, the
    datasets changing the referencing rows run first, so no delete trips
    the constraint.

    ``inspector``: one the caller has read the same tables with, in a
    stretch that changes no table (the schema check's), so that MariaDB and
    SQLite answer from what it read instead of reading each table again.
    """
    names = list(pack.datasets)
    changes = {n: {pack.datasets[c].table for c in _carried(pack, n)} for n in names}
    deletes = {n: {pack.datasets[c].table for c in _carried(pack, n) if deletes_rows(pack.datasets[c])} for n in names}
    edges: list[OrderEdge] = []
    for name in names:
        for leader in _leaders(pack, name)[:1]:
            edges.append(OrderEdge(leader, name, f"{name} follows {leader}, whose batches carry its records"))
    written = {n: _written_columns(pack, n) for n in names}
    for reader in names:
        read = _read_columns(pack, reader)
        for table in sorted(set(read) - {pack.datasets[reader].table}):
            for writer in names:
                if writer == reader or table not in written[writer] or _same_chain(pack, reader, writer):
                    continue
                columns, changed = read[table], written[writer][table]
                if columns is not None and changed is not None and not columns & changed:
                    continue  # the writer changes only columns the reader never reads
                edges.append(OrderEdge(reader, writer, f"{reader} reads {table}, which {writer} changes"))
    inspector = sa.inspect(conn) if inspector is None else inspector
    known = _foreign_keys_ahead(conn, inspector, pack)
    seen_tables: set[tuple[str | None, str]] = set()
    for name in names:
        ds = pack.datasets[name]
        if (ds.schema_, ds.table) in seen_tables:
            continue
        seen_tables.add((ds.schema_, ds.table))
        fks = known.get((ds.schema_, ds.table))
        if fks is None:
            try:
                fks = inspector.get_foreign_keys(ds.table, schema=ds.schema_)
            except sa.exc.NoSuchTableError:
                continue
        for fk in fks:
            parent_table = fk["referred_table"]
            if parent_table == ds.table:
                continue
            for first in names:
                if ds.table not in changes[first]:
                    continue
                for then in names:
                    if then != first and parent_table in deletes[then] and not _same_chain(pack, first, then):
                        edges.append(
                            OrderEdge(first, then, f"{ds.table} references {parent_table}, whose rows {then} deletes")
                        )
    return edges


def _foreign_keys_ahead(
    conn: sa.Connection, inspector: Inspector, pack: Pack
) -> dict[tuple[str | None, str], list[Any]]:
    """The datasets' tables' foreign keys in one catalog query per schema, where the database reads them in bulk.

    The same query as one table at a time with all the names at once
    (PostgreSQL; issue 20), so the same answers; elsewhere, or for a table
    not found here, :func:`order_edges` asks table by table as before.
    """
    if not bulk_reflection(conn.dialect):
        return {}
    tables: dict[str | None, set[str]] = {}
    for ds in pack.datasets.values():
        tables.setdefault(ds.schema_, set()).add(ds.table)
    found: dict[tuple[str | None, str], list[Any]] = {}
    for schema, names in tables.items():
        read = kept_read(conn, schema, names)  # what the schema check read in this transaction (plan)
        # The check's read may hold more tables than these (SQLAlchemy reads them all when asked for most).
        every = (
            read.info.foreign_keys
            if read is not None
            else inspector.get_multi_foreign_keys(schema, sorted(names), ObjectKind.ANY, ObjectScope.ANY)
        )
        found.update({(schema, table): list(fks) for (_, table), fks in every.items() if table in names})
    return found


def dataset_order(conn: sa.Connection, pack: Pack, inspector: Inspector | None = None) -> list[str]:
    """Datasets in execution order: every constraint of :func:`order_edges` kept, pack order otherwise.

    Raises SchemaError naming the cycle when the constraints cannot all hold.
    """
    names = list(pack.datasets)
    edges = order_edges(conn, pack, inspector)
    before: dict[str, set[str]] = {n: set() for n in names}
    for edge in edges:
        before[edge.then].add(edge.first)
    ordered: list[str] = []
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if not (before[n] & set(remaining))]
        if not ready:
            cycle = _find_cycle(edges, remaining)
            raise SchemaError(
                [
                    "datasets cannot be ordered so that every one sees what plan saw and no delete trips a "
                    "foreign key: " + "; ".join(f"{e.first} before {e.then} ({e.why})" for e in cycle)
                ]
            )
        ordered.append(ready[0])
        remaining.remove(ready[0])
    return ordered


def _find_cycle(edges: list[OrderEdge], names: list[str]) -> list[OrderEdge]:
    """One cycle among ``names`` (each has a predecessor among them), as its edges."""
    into: dict[str, OrderEdge] = {}
    for edge in edges:
        if edge.first in names and edge.then in names:
            into.setdefault(edge.then, edge)
    path: list[OrderEdge] = []
    seen: dict[str, int] = {}
    node = names[0]
    while node not in seen and node in into:
        seen[node] = len(path)
        path.append(into[node])
        node = into[node].first
    cycle = path[seen.get(node, 0) :]
    return list(reversed(cycle))


__all__ = ["OrderEdge", "dataset_order", "deletes_rows", "order_edges", "reads"]
