"""Several datasets on one table (issue 26 clause 3): disjoint ``where`` filters, checked on the data.

One table may hold two kinds of records with two policies (orders with an
invoice and orders without one). Each dataset then says by its ``where``
which rows are its records, and a row belongs to at most one dataset: the
loader refuses a shared table without a ``where`` on every dataset, and
``check --db`` (and so ``plan`` and ``run``, which refuse a schema error)
finds filters that overlap on the data, naming the least key of a row both
take (never a value of the row).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from retention.engine.rowfilter import compile_filter, reflect_table
from retention.policy.model import Pack


def sharing_tables(pack: Pack) -> list[tuple[str, str]]:
    """Pairs of datasets on one table, in pack order."""
    pairs = []
    names = list(pack.datasets)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = pack.datasets[first], pack.datasets[second]
            if (a.schema_, a.table) == (b.schema_, b.table):
                pairs.append((first, second))
    return pairs


def overlap_sample(conn: sa.Connection, pack: Pack, first: str, second: str) -> Any:
    """The least key of a row both datasets' ``where`` match (None: disjoint on this data).

    Raises :class:`SchemaError` when a filter cannot be compiled (a missing
    column); one set-based query, the filters as bound parameters.
    """
    a, b = pack.datasets[first], pack.datasets[second]
    table = reflect_table(conn, a.table, a.schema_)
    key = table.c[a.key]
    both = [c for c in (compile_filter(conn, table, a), compile_filter(conn, table, b)) if c is not None]
    query = sa.select(key).select_from(table).where(*both).order_by(key).limit(1)
    return conn.execute(query).scalar()


def overlap_message(pack: Pack, first: str, second: str, key: Any) -> str:
    ds = pack.datasets[first]
    return (
        f"datasets {first} and {second} share table {ds.table} and their where filters overlap: the row "
        f"with {ds.key} {key} matches both; make the filters disjoint (a row belongs to at most one dataset)"
    )
