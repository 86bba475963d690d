"""A dataset's ``where:`` as one SQL condition on its table (docs/rules.md, "Which rows: where").

Every value is a bound parameter of the column's own type; nothing from the
pack is ever pasted into SQL text. :func:`value_problem` is the one place
that decides which values a column accepts, for ``check --db`` and for the
compiler alike.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.engine.reflection import Inspector, ObjectKind, ObjectScope
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import NamedFromClause

from retention.engine import reflected
from retention.errors import SchemaError
from retention.policy.model import Dataset
from retention.policy.rowfilter import ColumnTest, RowFilter


def _family(column_type: Any) -> str | None:
    """The kind of value a column holds, as far as a filter cares."""
    if isinstance(column_type, sa.Boolean):
        return "boolean"
    if isinstance(column_type, sa.DateTime):
        return "datetime"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.Numeric | sa.Float):
        return "number"
    if isinstance(column_type, sa.String | sa.Enum):
        return "text"
    return None


def _convert(family: str, value: Any) -> Any:
    """``value`` as the column's Python type; ValueError when it is not one."""
    if family == "text":
        if isinstance(value, str):
            return value
        raise ValueError("quote the value, the column holds text")
    if family == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError("write true or false")
    if family == "integer":
        if isinstance(value, int):  # a boolean is 1 or 0 in an integer flag column
            return int(value)
        raise ValueError("write a whole number")
    if family == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise ValueError("write a number")
    if family in ("date", "datetime"):
        if isinstance(value, dt.datetime):
            if family == "date":
                raise ValueError("write a date (YYYY-MM-DD)")
            return value
        if isinstance(value, dt.date):
            return value if family == "date" else dt.datetime.combine(value, dt.time())
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("write an ISO date (YYYY-MM-DD)") from None
            if family == "date":
                if parsed.time() != dt.time() or parsed.tzinfo is not None:
                    raise ValueError("write a date (YYYY-MM-DD)")
                return parsed.date()
            return parsed
        raise ValueError("write an ISO date (YYYY-MM-DD)")
    raise ValueError("the column type cannot be compared")


def value_problem(column_type: Any, test: ColumnTest) -> str | None:
    """Why ``test`` cannot apply to a column of ``column_type`` (None: it can)."""
    family = _family(column_type)
    if family is None:
        return f"is {column_type}, which a 'where' condition cannot compare"
    if test.op in ("is_null", "not_null"):
        return None
    if test.op == "contains" and family != "text":
        return f"is {column_type}: 'contains' applies to text columns only"
    if test.op in ("lt", "le", "gt", "ge") and family == "boolean":
        return f"is {column_type}: a boolean has no order"
    values = test.value if isinstance(test.value, tuple) else (test.value,)
    for value in values:
        try:
            _convert(family, value)
        except ValueError as exc:
            return f"is {column_type}; the value {value!r} does not fit: {exc}"
    return None


def _column(table: NamedFromClause, name: str, role: str) -> ColumnElement[Any]:
    try:
        column: ColumnElement[Any] = table.c[name]
    except KeyError:
        valid = ", ".join(table.c.keys())
        raise SchemaError([f"{table.name}.{name}: no such column ({role}); columns: {valid}"]) from None
    return column


def _condition(column: ColumnElement[Any], table_name: str, test: ColumnTest) -> ColumnElement[bool]:
    problem = value_problem(column.type, test)
    if problem is not None:
        raise SchemaError([f"{table_name}.{test.column}: {problem}"])
    family = _family(column.type)
    assert family is not None

    def bound(value: Any) -> ColumnElement[Any]:
        return sa.bindparam(None, _convert(family, value), type_=column.type)

    op = test.op
    if op == "is_null":
        return column.is_(None)
    if op == "not_null":
        return column.is_not(None)
    if op == "eq":
        return column == bound(test.value)
    if op == "not":
        return sa.or_(column.is_(None), column != bound(test.value))
    if op == "in":
        return column.in_([bound(v) for v in test.value])
    if op == "not_in":
        return sa.or_(column.is_(None), column.not_in([bound(v) for v in test.value]))
    if op == "contains":
        return column.contains(test.value, autoescape=True)
    compare = {"lt": column.__lt__, "le": column.__le__, "gt": column.__gt__, "ge": column.__ge__}[op]
    return compare(bound(test.value))


_ONE_REFLECTION = "retention.one_reflection"


@contextmanager
def one_reflection(conn: sa.Connection) -> Iterator[None]:
    """Within this block, :func:`reflect_table` reflects each table of ``conn`` at most once.

    Building the planners of a pack reflects the same tables several times:
    a dataset's table, again as another's aggregate clock or related
    condition, and again as the target of every foreign key that points at
    it (SQLAlchemy reflects a referenced table with the table that
    references it). Reflection was 4 % of the test suite's CPU (issue 20).
    Only for a stretch that changes no table's structure: the tables are
    read as they were when the block first reflected them. Nested blocks
    share the outermost one's tables.
    """
    if _ONE_REFLECTION in conn.info:
        yield
        return
    conn.info[_ONE_REFLECTION] = (sa.MetaData(), {})
    try:
        yield
    finally:
        del conn.info[_ONE_REFLECTION]


def pack_tables(datasets: Iterable[Dataset]) -> dict[str | None, list[str]]:
    """Every table ``datasets`` name, per schema (their tables, aggregate clocks, related conditions, subject joins)."""
    found: dict[str | None, set[str]] = {}
    for ds in datasets:
        names = found.setdefault(ds.schema_, set())
        names.add(ds.table)
        names.update(rule.clock.table for rule in ds.keep if rule.clock.table is not None)
        for row_filter in (ds.row_filter, ds.erasure_filter):
            if row_filter is not None:
                names.update(related.table for related in row_filter.related)
        for chain in (ds.subject, None if ds.email is None or isinstance(ds.email, str) else ds.email):
            if chain is not None:
                names.update(hop.table for hop in chain.through)
    return {schema: sorted(names) for schema, names in found.items()}


def bulk_reflection(dialect: sa.Dialect) -> bool:
    """Whether ``dialect`` reads a kind of catalog detail (columns, keys, indexes...) of many tables in one query.

    PostgreSQL does (SQLAlchemy's ``get_multi_*``): reflecting a table is
    about ten catalog queries, the same for one table as for twenty.
    SQLite and MariaDB reflect a table at a time even when asked for
    several, so reading ahead there would only add a query.
    """
    return type(dialect).get_multi_columns is not DefaultDialect.get_multi_columns


@dataclass(frozen=True)
class CatalogRead:
    """What one bulk catalog read found for some tables of a schema, handed from the schema check to reflection.

    ``info`` is SQLAlchemy's ``_ReflectionInfo`` (columns, keys, indexes,
    constraints, comments, options of each table): the very object
    ``MetaData.reflect`` builds its tables from. ``cache`` is the check's
    inspector's cache, so that reflection does not ask the schema's table
    names again (a table built with ``autoload_with`` takes an inspector
    of its own, so its types may be asked again). Plain data only: nothing here refers
    to the connection or its transaction (see ``_CATALOG_READS``).
    """

    schema: str | None
    names: frozenset[str]
    cache: dict[Any, Any]
    info: Any


_CATALOG_READS: weakref.WeakKeyDictionary[sa.RootTransaction, list[CatalogRead]] = weakref.WeakKeyDictionary()
"""Per transaction: the catalog reads :func:`read_catalog` made in it, for :func:`reflect_ahead`.

Keyed by the transaction, weakly, and the reads hold no reference back to
it or to its connection: a connection refers to its transaction only while
the transaction lasts, so a commit, rollback or close frees the entry and
the read with the transaction object. (Keyed by the connection with an
``Inspector`` in the read, the value held its own key alive: every plan of
a long-lived process, the console or the scheduler, kept its connection
and its catalog read for good.)
"""
_CATALOG_LOCK = threading.Lock()  # connections of several threads (the console, a worker) share the mapping


def read_catalog(conn: sa.Connection, inspector: Inspector, schema: str | None, names: list[str]) -> Any:
    """Everything reflection reads of ``names`` in ``schema``, in one bulk read (``bulk_reflection`` dialects).

    The schema check reads this and keeps it for :func:`reflect_ahead` in
    the same transaction: a ``plan`` read PostgreSQL's catalog for the
    pack's tables twice, once to check them and once to reflect them (about
    a third of a plan's time at 1M rows beside a count of 0.05 s). The
    planners then build their tables from what the check saw, in the
    transaction the check saw it in; a commit or rollback in between ends
    the hand-off (:func:`kept_read`), and the tables are read again.
    """
    info = inspector._get_reflection_info(schema=schema, filter_names=names, kind=ObjectKind.ANY, scope=ObjectScope.ANY)
    transaction = conn.get_transaction()
    if transaction is not None:
        read = CatalogRead(schema, frozenset(names), inspector.info_cache, info)
        with _CATALOG_LOCK:
            _CATALOG_READS.setdefault(transaction, []).append(read)
    return info


def kept_read(conn: sa.Connection, schema: str | None, names: set[str]) -> CatalogRead | None:
    """The check's catalog read covering ``names`` of ``schema``, if made in ``conn``'s current transaction.

    Reads of an earlier transaction are never found here (a commit or
    rollback may have let a change of structure in): they are keyed by a
    transaction that is no longer the connection's.
    """
    transaction = conn.get_transaction()
    if transaction is None:
        return None
    with _CATALOG_LOCK:
        kept = list(_CATALOG_READS.get(transaction, ()))
    return next((k for k in kept if k.schema == schema and names <= k.names), None)


def reflect_ahead(conn: sa.Connection, tables: dict[str | None, list[str]]) -> None:
    """Within :func:`one_reflection`'s block, reflect ``tables`` together, where the database does that in bulk.

    :func:`reflect_table` then takes them from the block's tables: the
    same ``Table`` objects as one by one (``reflected.reuse`` sees the
    same fingerprint), in a tenth of the catalog queries for a pack of
    ten tables (issue 20: reflection was the largest fixed cost of a
    ``plan`` or ``run`` on PostgreSQL). Names that are not tables here (a
    view, a missing table) are left to :func:`reflect_table`, which reads
    or refuses them one at a time as before.
    """
    shared: tuple[sa.MetaData, dict[tuple[str | None, str], sa.Table]] | None = conn.info.get(_ONE_REFLECTION)
    if shared is None or not bulk_reflection(conn.dialect):
        return
    metadata, known = shared
    for schema, names in tables.items():
        wanted = {name for name in names if (schema, name) not in known}
        if not wanted:
            continue
        read = kept_read(conn, schema, wanted)
        if read is None:
            # A callable ``only`` leaves out a name that is not a table instead of raising.
            metadata.reflect(bind=conn, schema=schema, only=lambda name, _, wanted=wanted: name in wanted)
        else:
            _reflect_from(conn, metadata, read, wanted)
        for name in sorted(wanted):
            table = metadata.tables.get(f"{schema}.{name}" if schema else name)
            if table is not None:
                known[(schema, name)] = reflected.reuse(conn.dialect, table)


def _reflect_from(conn: sa.Connection, metadata: sa.MetaData, read: CatalogRead, wanted: set[str]) -> None:
    """``MetaData.reflect(only=wanted)``'s tables, built from the check's catalog read instead of a second one.

    What this takes of SQLAlchemy beyond its public API (``Table``'s private
    ``_reflect_info``, the very ``_ReflectionInfo`` ``MetaData.reflect``
    hands each of its tables) is pinned by
    tests/test_fixed_cost.py::test_tables_built_from_a_catalog_read_are_those_metadata_reflect_builds.
    Tables only, in the catalog's order, as there (a view or a missing
    name is left to :func:`reflect_table`); a foreign key's target the read
    does not hold is read by the inspector as ``MetaData.reflect`` would.
    """
    insp = sa.inspect(conn)
    insp.info_cache = read.cache  # the check's: the schema's table names are not asked again
    for name in insp.get_table_names(read.schema):
        if name in wanted:
            try:
                sa.Table(name, metadata, schema=read.schema, autoload_with=conn, _reflect_info=read.info)
            except sa.exc.UnreflectableTableError:
                continue  # left to reflect_table, which reads or refuses it alone


def reflect_table(conn: sa.Connection, name: str, schema: str | None = None) -> sa.Table:
    """Reflect a source table, or raise a SchemaError naming it (here, below evaluate, which re-exports it)."""
    shared: tuple[sa.MetaData, dict[tuple[str | None, str], sa.Table]] | None = conn.info.get(_ONE_REFLECTION)
    if shared is not None and (schema, name) in shared[1]:
        return shared[1][(schema, name)]
    try:
        # In one_reflection's block the tables share a MetaData: one reflected before (as itself or as the
        # target of a foreign key) is taken from it, not read again.
        table = sa.Table(name, sa.MetaData() if shared is None else shared[0], autoload_with=conn, schema=schema)
    except sa.exc.NoSuchTableError:
        where = f"{schema}.{name}" if schema else name
        raise SchemaError([f"table {where!r} does not exist"]) from None
    table = reflected.reuse(conn.dialect, table)  # an unchanged table: the statements compiled before serve
    if shared is not None:
        shared[1][(schema, name)] = table
    return table


def related_condition(column: ColumnElement[Any], table_name: str, test: ColumnTest) -> ColumnElement[bool]:
    """One column condition on another table's column (an aggregate clock's ``where``), as for a dataset's."""
    return _condition(column, table_name, test)


def compile_filter(
    conn: sa.Connection, table: sa.Table, dataset: Dataset, *, erasure: bool = False
) -> ColumnElement[bool] | None:
    """The dataset's ``where`` on rows of ``table`` (None: no filter).

    ``erasure``: its ``erasure_where`` instead, the rows an erasure request
    reaches (None when it has none: the caller uses ``where``). Related
    tables are read under an alias of their own, so a filter on a table's
    own rows (a self-reference) stays a correlated EXISTS.
    """
    row_filter: RowFilter | None = dataset.erasure_filter if erasure else dataset.row_filter
    if row_filter is None:
        return None
    conditions: list[ColumnElement[bool]] = []
    for test in row_filter.tests:
        conditions.append(_condition(_column(table, test.column, "where"), dataset.table, test))
    for index, related in enumerate(row_filter.related):
        alias = f"erasure_where_{index}" if erasure else f"where_{index}"
        other = reflect_table(conn, related.table, dataset.schema_).alias(alias)
        on = _column(other, related.on, "where related on")
        ref = _column(table, related.references or dataset.key, "where related references")
        inner = [on == ref]
        for test in related.tests:
            inner.append(_condition(_column(other, test.column, "where related"), related.table, test))
        exists = sa.exists().where(*inner)
        conditions.append(exists if related.exists else ~exists)
    return sa.and_(*conditions)
