"""The mistakes real packs make that the schema alone reveals (issue 23), for ``check --db``.

Each was found on a real schema (the demo shop, a WordPress/WooCommerce
database nobody here wrote) after a pack passed ``check``: the engine did
what the pack said, which was not what its author meant. Every finding is
one line naming the table and the column and never a value read from the
data (a few carry a value written in the pack).
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedColumn

from retention.engine.rowfilter import value_problem
from retention.engine.sharing import overlap_message, overlap_sample, sharing_tables
from retention.errors import SchemaError
from retention.policy.model import Dataset, Pack
from retention.store.tables import PREFIX

Found = tuple[Literal["error", "warning"], str, str, str | None, str]
"""(level, dataset, table, column, message): what :class:`retention.engine.schema.Finding` is made from."""

LOCAL_TWIN_SUFFIXES = ("_gmt", "_utc")
"""A column with such a twin (``post_date`` beside ``post_date_gmt``) holds local wall-clock time."""


def check_mistakes(conn: sa.Connection, inspect: Any, pack: Pack) -> list[Found]:
    """Every mistake of ``pack`` that the live schema (or one probe query per filter) shows."""
    findings: list[Found] = []
    for name, ds in pack.datasets.items():
        columns = inspect.columns(ds.table, ds.schema_)
        if columns is None:
            continue
        _null_masks(name, ds, columns, findings)
        _local_clocks(inspect, name, ds, findings)
        _aggregate_filters(conn, inspect, name, ds, findings)
        _where_hides_from_erasure(pack, name, ds, findings)
    _related_by_name_only(inspect, pack, findings)
    _overlapping_datasets(conn, pack, findings)
    return findings


def _overlapping_datasets(conn: sa.Connection, pack: Pack, findings: list[Found]) -> None:
    """Datasets sharing a table must not both take a row: each row belongs to at most one dataset.

    The finding names a sample key (the least), never a value of the row.
    """
    for first, second in sharing_tables(pack):
        ds = pack.datasets[first]
        try:
            key = overlap_sample(conn, pack, first, second)
        except SchemaError:
            continue  # a missing table or column: reported on its own
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            conn.rollback()
            continue
        if key is not None:
            findings.append(
                _finding(
                    "error",
                    second,
                    ds.table,
                    ds.key,
                    overlap_message(pack, first, second, key),
                )
            )


def _finding(level: Literal["error", "warning"], dataset: str, table: str, column: str | None, message: str) -> Found:
    return (level, dataset, table, column, message)


def _null_masks(name: str, ds: Dataset, columns: dict[str, ReflectedColumn], findings: list[Found]) -> None:
    """A ``null`` mask on a NOT NULL column fails the run's UPDATE with an integrity error."""
    for step in ds.lifecycle:
        for column, mask in (step.mask or {}).items():
            info = columns.get(column)
            if info is not None and mask.strategy == "null" and info.get("nullable") is False:
                findings.append(
                    _finding(
                        "error",
                        name,
                        ds.table,
                        column,
                        "mask 'null' on a NOT NULL column: the run would fail on it; mask it with 'fixed', "
                        "'hash' or 'redact', or make the column nullable",
                    )
                )


def _local_clocks(inspect: Any, name: str, ds: Dataset, findings: list[Found]) -> None:
    """A ``timestamptz`` clock on a zone-less column whose table also keeps its UTC twin reads local time as UTC."""
    for rule in ds.keep:
        clock = rule.clock
        if clock.type != "timestamptz":
            continue
        table = clock.table or ds.table
        columns = inspect.columns(table, ds.schema_) or {}
        info = columns.get(clock.column)
        if info is None or getattr(info["type"], "timezone", False):
            continue
        if not isinstance(info["type"], sa.DateTime | sa.String):
            continue
        if inspect.dialect.datetime_column_problem(clock.type, info["type"]) is not None:
            continue  # already an error (PostgreSQL's TIMESTAMP WITHOUT TIME ZONE)
        twins = [f"{clock.column}{suffix}" for suffix in LOCAL_TWIN_SUFFIXES if f"{clock.column}{suffix}" in columns]
        if twins:
            findings.append(
                _finding(
                    "warning",
                    name,
                    table,
                    clock.column,
                    f"declared timestamptz but the column has no time zone and {twins[0]} stands beside it: it "
                    f"likely holds local time, read as UTC; use {twins[0]}, or declare the clock 'timestamp' "
                    "with its timezone",
                )
            )


def _aggregate_filters(conn: sa.Connection, inspect: Any, name: str, ds: Dataset, findings: list[Found]) -> None:
    """An aggregate clock's ``where`` value that no row has makes the clock NULL for every record."""
    for rule in ds.keep:
        clock = rule.clock
        if clock.aggregate is None or not clock.where or clock.table is None:
            continue
        columns = inspect.columns(clock.table, ds.schema_) or {}
        for test in clock.related_tests:
            if test.op != "eq":
                continue  # only an equality names a value that may be misspelt
            column, value = test.column, test.value
            info = columns.get(column)
            if info is None:
                continue  # reported as a missing column
            if value_problem(info["type"], test) is not None:
                continue  # a value that cannot be compared: not this finding
            related = sa.table(clock.table, sa.column(column, info["type"]), schema=ds.schema_)
            probe = sa.select(sa.literal(1)).select_from(related).where(related.c[column] == value).limit(1)
            anything = sa.select(sa.literal(1)).select_from(related).limit(1)
            try:
                # An empty table proves nothing: the filter is judged once rows exist.
                found = conn.execute(probe).first() is not None or conn.execute(anything).first() is None
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                conn.rollback()  # the run reports the comparison itself; check goes on
                continue
            if not found:
                findings.append(
                    _finding(
                        "warning",
                        name,
                        clock.table,
                        column,
                        f"the aggregate clock's where {column} = {value!r} matches none of the table's rows: the "
                        "clock is NULL for every record (a NULL anomaly); check the value's spelling",
                    )
                )


def _where_hides_from_erasure(pack: Pack, name: str, ds: Dataset, findings: list[Found]) -> None:
    """``where: {col: {not: null}}`` on an erasing dataset leaves the NULL rows outside every erasure."""
    row_filter = ds.row_filter
    if row_filter is None or ds.on_erasure is None or not ds.has_identity or ds.erasure_where is not None:
        return  # with erasure_where the pack says itself which rows an erasure reaches
    for test in row_filter.tests:
        if test.op != "not_null":
            continue
        covered = any(
            other is not ds
            and other.table == ds.table
            and other.on_erasure is not None
            and other.has_identity
            and not any(t.column == test.column and t.op == "not_null" for t in _tests(other))
            for other in pack.datasets.values()
        )
        if not covered:
            findings.append(
                _finding(
                    "warning",
                    name,
                    ds.table,
                    test.column,
                    f"where {test.column} is not null: rows where it is NULL are records of no dataset, so an "
                    f"erasure request never reaches them; add a dataset for them with on_erasure",
                )
            )


def _tests(ds: Dataset) -> tuple[Any, ...]:
    row_filter = ds.row_filter
    return () if row_filter is None else row_filter.tests


def _stem(table: str) -> str:
    """``wp_users`` -> ``user``, ``customers`` -> ``customer``: the name a referencing column starts with."""
    name = table.lower()
    for prefix in ("wp_wc_", "wp_", "wc_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def _related_by_name_only(inspect: Any, pack: Pack, findings: list[Found]) -> None:
    """Tables that name a dataset's person by a column name, with no foreign key and no dataset of their own.

    WordPress keeps ``wp_usermeta.user_id`` and ``wp_comments.user_id``
    without constraints: when the user's records go, those rows stay
    unless the pack has a dataset for them. A warning, since the name is
    only a hint.
    """
    handled = {(ds.schema_, ds.table.lower()) for ds in pack.datasets.values()}
    seen: set[tuple[str, str]] = set()
    for name, ds in pack.datasets.items():
        if not ds.has_subject or not (ds.on_erasure is not None or _removes_rows(ds)):
            continue
        names = {f"{_stem(ds.table)}_id"}
        if ds.subject_key is not None and ds.subject_key != ds.key:
            names.add(ds.subject_key.lower())
        tables = [
            table
            for table in sorted(inspect.inspector.get_table_names(schema=ds.schema_))
            if (ds.schema_, table.lower()) not in handled
            and not table.lower().startswith(PREFIX)
            and table.lower() != "alembic_version"
        ]
        inspect.prefetch_columns(ds.schema_, tables)  # these only: the others are skipped unread
        for table in tables:
            columns = inspect.columns(table, ds.schema_) or {}
            hits = [c for c in columns if c.lower() in names]
            if not hits:
                continue
            fks = inspect.foreign_keys(table, ds.schema_)
            constrained = {c for fk in fks for c in fk["constrained_columns"]}
            for column in hits:
                if column in constrained or (table, column) in seen:
                    continue
                seen.add((table, column))
                findings.append(
                    _finding(
                        "warning",
                        name,
                        table,
                        column,
                        f"looks related to {ds.table} by its name, but no foreign key says so and no dataset "
                        f"handles {table}: its rows stay when a person's {name} records go; add a dataset "
                        f"for {table} (follows: {{dataset: {name}}}), or a foreign key",
                    )
                )


def _removes_rows(ds: Dataset) -> bool:
    return any(step.action in ("delete", "drop_partition", "anonymise", "archive") for step in ds.lifecycle)
