"""Reflected source tables, reused while their structure is unchanged, so that compiled statements are too.

SQLAlchemy's compiled-statement cache keys a statement by the identity of
the ``Table`` objects in it, not by their names. Every ``plan`` and ``run``
reflects its source tables afresh (a run must see today's columns), so
without this each of them compiled every statement again: the same SQL
text, compiled anew once per run. The planner's statements are large (a
clock's due expression alone is a CASE per period), and compiling them was
most of the client-side time of a short run: in the differential test, 90 %
of all compile time went to statements compiled before by an earlier run
of the same example.

The table is still reflected every time; only when the reflection yields
exactly what an earlier one did (same dialect, schema, name, columns with
their types and keys, constraints and indexes) is the earlier ``Table``
object handed back, and statements built on it hit the engine's compiled
cache. A changed table fingerprints differently and gets a new object.
The engine never alters a reflected table (no ``append_column``), so one
object can serve every run of a process; the newest ``_MAX`` are kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_MAX = 512
_tables: OrderedDict[tuple[Any, ...], sa.Table] = OrderedDict()
_lock = threading.Lock()


_DETAILS = ("ondelete", "onupdate", "deferrable", "initially", "sqltext")

# How reflection was asked to read (PostgreSQL: the search path of a foreign key's target), not what it found. A
# table reflected as another's foreign key target carries it among its options, the same table reflected as
# itself does not: with it, a table's fingerprint depended on the order its pack's tables were reflected in.
_HOW_REFLECTED = frozenset(postgresql.dialect.reflection_options)


def _type_of(column: sa.Column[Any]) -> tuple[str, str]:
    kind = type(column.type)
    return f"{kind.__module__}.{kind.__qualname__}", repr(column.type)


def _text(clause: Any) -> str | None:
    """A server default, computed or identity clause as text (their reprs hold object addresses)."""
    if clause is None:
        return None
    arg = getattr(clause, "arg", getattr(clause, "sqltext", None))
    return f"{type(clause).__name__}:{arg if arg is not None else ''}:{getattr(clause, 'persisted', '')}"


def fingerprint(table: sa.Table) -> tuple[Any, ...]:
    """Everything reflection put into ``table``; two tables with equal fingerprints compile alike."""
    columns = tuple(
        (
            c.name,
            c.key,
            _type_of(c),
            c.primary_key,
            c.nullable,
            repr(c.autoincrement),
            _text(c.server_default),
            _text(c.computed),
            _text(c.identity),
            c.comment,
            repr(sorted(c.dialect_kwargs.items())),
        )
        for c in table.columns
    )
    constraints = sorted(
        repr(
            (
                type(k).__name__,
                k.name,
                [c.name for c in getattr(k, "columns", ())],
                *(str(getattr(k, a, "")) for a in _DETAILS),
            )
        )
        for k in table.constraints
    )
    foreign = sorted(repr((fk.parent.name, fk.target_fullname, fk.ondelete, fk.onupdate)) for fk in table.foreign_keys)
    indexes = sorted(
        repr((i.name, i.unique, [str(e) for e in i.expressions], sorted(i.dialect_kwargs.items())))
        for i in table.indexes
    )
    options = repr(sorted((k, v) for k, v in table.dialect_kwargs.items() if k not in _HOW_REFLECTED))
    return (table.schema, table.name, table.comment, columns, *constraints, "|", *foreign, "|", *indexes, options)


def reuse(dialect: sa.Dialect, table: sa.Table) -> sa.Table:
    """``table``, or an earlier reflection of the same table with the same structure on this kind of database."""
    key = (dialect.name, dialect.driver, fingerprint(table))
    with _lock:
        known = _tables.get(key)
        if known is not None:
            _tables.move_to_end(key)
            return known
        _tables[key] = table
        while len(_tables) > _MAX:
            _tables.popitem(last=False)
    return table
