"""Rule packs against the live schema: tables, columns, types, keys, indexes.

``check`` prints every finding; ``plan`` and ``run`` refuse to start while
any error remains, so a typo in a column name never reaches a DELETE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.engine.reflection import ObjectKind, ObjectScope

from retention.dialects import DATETIME_KINDS, Dialect, dialect_for
from retention.engine.order import dataset_order, deletes_rows
from retention.engine.rowfilter import bulk_reflection, pack_tables, read_catalog, value_problem
from retention.engine.schema_guard import created_by_engine, engine_table, system_table
from retention.engine.schema_mistakes import check_mistakes
from retention.errors import SchemaError
from retention.policy.model import Clock, Dataset, Pack
from retention.policy.rowfilter import ColumnTest, RelatedTest

Level = Literal["error", "warning"]

_TYPE_FAMILIES: dict[str, tuple[type[Any], ...]] = {
    "timestamptz": (sa.DateTime,),
    "timestamp": (sa.DateTime,),
    "date": (sa.Date,),
    # Float is listed for itself: from SQLAlchemy 2.1 it (and REAL, Double) no longer subclasses Numeric.
    "epoch": (sa.Integer, sa.Numeric, sa.Float),
    "epoch_text": (sa.String,),
}


@dataclass(frozen=True)
class Finding:
    """One problem of a pack against the live schema, located by table and column."""

    level: Level
    dataset: str
    table: str
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"{self.level}: {where}: {self.message} (dataset {self.dataset})"


class _Inspector:
    """Caches reflection so that a pack with many datasets reflects each table once."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.inspector = sa.inspect(conn)
        self.dialect = dialect_for(conn)
        self._columns: dict[tuple[str | None, str], dict[str, ReflectedColumn] | None] = {}
        self._prefetched: set[str | None] = set()
        self._foreign_keys: dict[tuple[str | None, str], list[Any]] = {}
        self._primary_keys: dict[tuple[str | None, str], list[str]] = {}
        self._indexes: dict[tuple[str | None, str], list[Any]] = {}
        self._uniques: dict[tuple[str | None, str], list[Any]] = {}

    def read_ahead(self, tables: dict[str | None, list[str]], *, for_reflection: bool = False) -> None:
        """Reflect what the check reads of ``tables`` together, where the database does that in bulk.

        On PostgreSQL each of columns, primary key, indexes, unique
        constraints and foreign keys is one catalog query for all the
        pack's tables instead of one per table (issue 20: the schema check
        was a fifth of a short ``run``'s CPU there). The same queries as one
        table at a time (SQLAlchemy's single-table calls are these with one
        name), so the same answers; a name not found here (not a table, or
        missing) is asked for alone later, as before.

        ``for_reflection``: the planners reflect these tables next, in this
        transaction (``plan``): read everything reflection needs too
        (comments, check constraints, options: SQLAlchemy's one reflection
        read) and keep it for them (:func:`~retention.engine.rowfilter.read_catalog`).
        """
        if not bulk_reflection(self.conn.dialect):
            return
        for schema, names in tables.items():
            wanted = [name for name in names if (schema, name) not in self._columns]
            if not wanted:
                continue
            insp, every, anywhere = self.inspector, ObjectKind.ANY, ObjectScope.ANY
            if for_reflection:
                info = read_catalog(self.conn, insp, schema, wanted)
                columns, pks, indexes = info.columns, info.pk_constraint, info.indexes
                uniques, fks = info.unique_constraints, info.foreign_keys
            else:
                columns = insp.get_multi_columns(schema, wanted, every, anywhere)
                pks = insp.get_multi_pk_constraint(schema, wanted, every, anywhere)
                indexes = insp.get_multi_indexes(schema, wanted, every, anywhere)
                uniques = insp.get_multi_unique_constraints(schema, wanted, every, anywhere)
                fks = insp.get_multi_foreign_keys(schema, wanted, every, anywhere)
            for (_, table), cols in columns.items():
                self._columns[(schema, table)] = {c["name"]: c for c in cols}
            for (_, table), pk in pks.items():
                self._primary_keys[(schema, table)] = list(pk["constrained_columns"])
            for (_, table), found in indexes.items():
                self._indexes[(schema, table)] = list(found)
            for (_, table), found in uniques.items():
                self._uniques[(schema, table)] = list(found)
            for (_, table), found in fks.items():
                self._foreign_keys[(schema, table)] = list(found)

    def prefetch_columns(self, schema: str | None, tables: list[str]) -> None:
        """Reflect the columns and foreign keys of ``tables`` of ``schema`` at once, for a check that reads them all.

        One catalog query for the columns and one for the foreign keys,
        instead of three per table: 48 partitions took a second of every
        ``plan`` and ``run`` here (PostgreSQL, under load). Only the tables
        the caller reads: MariaDB and SQLite reflect a table at a time even
        here, and the engine's own two dozen tables made this a tenth of
        the test suite's CPU (issue 20).
        """
        if schema in self._prefetched:
            return
        self._prefetched.add(schema)
        if not tables:
            return  # an empty filter_names would reflect every table
        for (_, table), cols in self.inspector.get_multi_columns(schema=schema, filter_names=tables).items():
            self._columns.setdefault((schema, table), {c["name"]: c for c in cols})
        for (_, table), fks in self.inspector.get_multi_foreign_keys(schema=schema, filter_names=tables).items():
            self._foreign_keys[(schema, table)] = fks

    def foreign_keys(self, table: str, schema: str | None) -> list[Any]:
        found = self._foreign_keys.get((schema, table))
        if found is None:
            found = self._foreign_keys[(schema, table)] = list(self.inspector.get_foreign_keys(table, schema=schema))
        return found

    def columns(self, table: str, schema: str | None) -> dict[str, ReflectedColumn] | None:
        key = (schema, table)
        if key not in self._columns:
            if not self.inspector.has_table(table, schema=schema):
                self._columns[key] = None
            else:
                cols = self.inspector.get_columns(table, schema=schema)
                self._columns[key] = {c["name"]: c for c in cols}
        return self._columns[key]

    def primary_key(self, table: str, schema: str | None) -> list[str]:
        found = self._primary_keys.get((schema, table))
        if found is None:
            return list(self.inspector.get_pk_constraint(table, schema=schema)["constrained_columns"])
        return list(found)

    def indexes(self, table: str, schema: str | None) -> list[Any]:
        found = self._indexes.get((schema, table))
        return list(self.inspector.get_indexes(table, schema=schema) if found is None else found)

    def unique_constraints(self, table: str, schema: str | None) -> list[Any]:
        found = self._uniques.get((schema, table))
        return list(self.inspector.get_unique_constraints(table, schema=schema) if found is None else found)

    def leading_index_columns(self, table: str, schema: str | None) -> list[list[str]]:
        """Column lists of indexes, the primary key and unique constraints (expression parts dropped)."""
        result: list[list[str | None]] = [list(i["column_names"]) for i in self.indexes(table, schema)]
        result.append(list(self.primary_key(table, schema)))
        uniques = self.unique_constraints(table, schema)
        result.extend(list(u["column_names"]) for u in uniques)
        return [[c for c in r if c is not None] for r in result if r and all(c is not None for c in r)]


def _type_ok(clock_type: str, column: ReflectedColumn, dialect: Dialect) -> str | None:
    """None when the column can hold this clock kind, else why not."""
    col_type = column["type"]
    families = _TYPE_FAMILIES[clock_type]
    # SQLite reflects DATETIME/DATE/INTEGER by declared name; TEXT means strings,
    # which is how SQLite stores datetimes (read in the forms of retention.timing.datetext).
    if dialect.datetimes_as_text and clock_type in DATETIME_KINDS and isinstance(col_type, sa.String):
        return None
    if (
        isinstance(col_type, sa.Date)
        and clock_type in ("timestamp", "timestamptz")
        and not isinstance(col_type, sa.DateTime)
    ):
        return f"is {col_type} but the clock is declared {clock_type}; declare it 'date'"
    if not isinstance(col_type, families):
        return f"is {col_type}, which cannot hold {article(clock_type)} {clock_type} clock"
    problem = dialect.datetime_column_problem(clock_type, col_type)
    if problem is not None:
        return problem
    if clock_type == "date" and isinstance(col_type, sa.DateTime):
        return f"is {col_type} but the clock is declared 'date'; declare it timestamp or timestamptz"
    return None


def _check_clock(inspect: _Inspector, name: str, ds: Dataset, clock: Clock, findings: list[Finding]) -> None:
    table = clock.table if clock.aggregate else ds.table
    assert table is not None
    columns = inspect.columns(table, ds.schema_)
    if columns is None:
        findings.append(Finding("error", name, table, None, "table does not exist (aggregate clock)"))
        return
    column = columns.get(clock.column)
    if column is None:
        findings.append(Finding("error", name, table, clock.column, _missing(clock.column, columns, "clock")))
        return
    problem = _type_ok(clock.type, column, inspect.dialect)
    if problem:
        findings.append(Finding("error", name, table, clock.column, f"clock column {problem}"))
    indexes = inspect.leading_index_columns(table, ds.schema_)
    if clock.aggregate:
        assert clock.on is not None
        if clock.on not in columns:
            findings.append(Finding("error", name, table, clock.on, _missing(clock.on, columns, "aggregate join")))
        elif not any(ix[0] == clock.on for ix in indexes):
            findings.append(
                Finding(
                    "warning",
                    name,
                    table,
                    clock.on,
                    f"no index starts with {clock.on}; the max() per record will scan; "
                    f"create one on ({clock.on}, {clock.column})",
                )
            )
        for test in clock.related_tests:
            column = columns.get(test.column)
            if column is None:
                findings.append(
                    Finding("error", name, table, test.column, _missing(test.column, columns, "aggregate filter"))
                )
                continue
            problem = value_problem(column["type"], test)
            if problem is not None:
                findings.append(Finding("error", name, table, test.column, f"aggregate where: {problem}"))
    elif not any(ix[0] == clock.column for ix in indexes):
        findings.append(
            Finding(
                "warning",
                name,
                table,
                clock.column,
                "clock column has no index; evaluation will scan the table",
            )
        )


def _check_tests(
    name: str, table: str, tests: tuple[ColumnTest, ...], columns: dict[str, ReflectedColumn], findings: list[Finding]
) -> None:
    for test in tests:
        column = columns.get(test.column)
        if column is None:
            findings.append(Finding("error", name, table, test.column, _missing(test.column, columns, "where")))
            continue
        problem = value_problem(column["type"], test)
        if problem is not None:
            findings.append(Finding("error", name, table, test.column, f"where: {problem}"))


def _check_where(
    inspect: _Inspector, name: str, ds: Dataset, columns: dict[str, ReflectedColumn], findings: list[Finding]
) -> None:
    """The row filter's tables and columns exist and its values fit their columns' types."""
    erasure_filter = ds.erasure_filter
    if erasure_filter is not None:
        # erasure_where (issue 26 clause 6): the same checks as where's.
        _check_tests(name, ds.table, erasure_filter.tests, columns, findings)
        _check_related(inspect, name, ds, erasure_filter.related, columns, findings)
    row_filter = ds.row_filter
    if row_filter is None:
        return
    _check_tests(name, ds.table, row_filter.tests, columns, findings)
    written = {c for step in ds.lifecycle for c in [*(step.set or {}), *(step.mask or {})]}
    for column in sorted(written & {t.column for t in row_filter.tests}):
        findings.append(
            Finding(
                "warning",
                name,
                ds.table,
                column,
                "a lifecycle step changes this column and 'where' reads it: a record that stops matching "
                "stays in its state and moves no further",
            )
        )
    _check_related(inspect, name, ds, row_filter.related, columns, findings)


def _check_related(
    inspect: _Inspector,
    name: str,
    ds: Dataset,
    related_tests: tuple[RelatedTest, ...],
    columns: dict[str, ReflectedColumn],
    findings: list[Finding],
) -> None:
    """Each related condition's table, columns and values exist and fit."""
    for related in related_tests:
        reference = related.references or ds.key
        if reference not in columns:
            findings.append(Finding("error", name, ds.table, reference, _missing(reference, columns, "where related")))
        other = inspect.columns(related.table, ds.schema_)
        if other is None:
            findings.append(Finding("error", name, related.table, None, "table does not exist (where related)"))
            continue
        if related.on not in other:
            findings.append(
                Finding("error", name, related.table, related.on, _missing(related.on, other, "where related on"))
            )
        elif not any(ix[0] == related.on for ix in inspect.leading_index_columns(related.table, ds.schema_)):
            findings.append(
                Finding(
                    "warning",
                    name,
                    related.table,
                    related.on,
                    f"no index starts with {related.on}; the related condition will scan {related.table} per row",
                )
            )
        _check_tests(name, related.table, related.tests, other, findings)


def _check_subject(inspect: _Inspector, name: str, ds: Dataset, findings: list[Finding]) -> None:
    """Each join of ``subject.through`` (and ``email.through``) names a table, a unique key and a column that exist."""
    chains = [("subject", ds.subject)] if ds.subject is not None else []
    if ds.email is not None and not isinstance(ds.email, str):
        chains.append(("email", ds.email))
    for identity, chain in chains:
        _check_chain(inspect, name, ds, identity, chain.through, findings)


def _check_chain(
    inspect: _Inspector, name: str, ds: Dataset, identity: str, through: list[Any], findings: list[Finding]
) -> None:
    for hop in through:
        columns = inspect.columns(hop.table, ds.schema_)
        if columns is None:
            findings.append(Finding("error", name, hop.table, None, f"table does not exist ({identity} through)"))
            continue
        for role, column in ((f"{identity} through key", hop.key), (f"{identity} through column", hop.column)):
            if column not in columns:
                findings.append(Finding("error", name, hop.table, column, _missing(column, columns, role)))
        if hop.key in columns:
            unique: list[list[Any]] = [inspect.primary_key(hop.table, ds.schema_)]
            unique += [u["column_names"] for u in inspect.unique_constraints(hop.table, ds.schema_)]
            indexes = inspect.indexes(hop.table, ds.schema_)
            unique += [list(i["column_names"]) for i in indexes if i["unique"]]
            if [hop.key] not in unique:
                findings.append(
                    Finding(
                        "error",
                        name,
                        hop.table,
                        hop.key,
                        f"{identity} through key is not unique (primary key or unique index): a record "
                        f"would have several {'subjects' if identity == 'subject' else 'e-mail addresses'}",
                    )
                )


def _missing(column: str, columns: dict[str, ReflectedColumn], role: str) -> str:
    return f"no such column ({role}); columns: {', '.join(columns)}"


def _deletes_rows(ds: Dataset) -> bool:
    return any(
        step.action in ("delete", "drop_partition") or (step.action == "archive" and step.then == "delete")
        for step in ds.lifecycle
    )


def _check_children(inspect: _Inspector, pack: Pack, findings: list[Finding]) -> None:
    """A dataset that deletes rows must not leave rows of another table pointing at them.

    A referencing table is fine when the database cascades or nulls the
    reference, or when a dataset of the pack removes its rows with the parent
    (it follows the parent, or deletes on its own clock and runs first).
    """
    by_table = {ds.table: (name, ds) for name, ds in pack.datasets.items()}
    # Every table's foreign keys, per schema, in one reflection query where the
    # database allows it (PostgreSQL would otherwise take one per table).
    foreign_keys: dict[str | None, dict[str, list[Any]]] = {}
    for name, ds in pack.datasets.items():
        if not _deletes_rows(ds):
            continue
        if ds.schema_ not in foreign_keys:
            # The engine's own tables reference only each other (and no dataset is one of them here).
            names = [t for t in inspect.inspector.get_table_names(schema=ds.schema_) if not created_by_engine(t)]
            multi = inspect.inspector.get_multi_foreign_keys(schema=ds.schema_, filter_names=names) if names else {}
            foreign_keys[ds.schema_] = {table: fks for (_, table), fks in multi.items()}
        for child, child_fks in sorted(foreign_keys[ds.schema_].items()):
            for fk in child_fks:
                if fk["referred_table"] != ds.table or child == ds.table:
                    continue
                ondelete = str((fk.get("options") or {}).get("ondelete") or "").upper()
                if ondelete in ("CASCADE", "SET NULL"):
                    continue
                handled = by_table.get(child)
                columns = ", ".join(fk["constrained_columns"])
                if handled is None:
                    findings.append(
                        Finding(
                            "error",
                            name,
                            child,
                            columns,
                            f"references {ds.table}, whose rows this pack deletes, but no dataset "
                            f"handles {child}: deleting a {ds.table} row would violate the foreign key "
                            f"(add a dataset for {child}, or ON DELETE CASCADE)",
                        )
                    )
                    continue
                child_name, child_ds = handled
                follows = child_ds.follows is not None and child_ds.follows.dataset == name
                if not follows and not _deletes_rows(child_ds):
                    findings.append(
                        Finding(
                            "error",
                            name,
                            child,
                            columns,
                            f"references {ds.table}, whose rows this pack deletes, but dataset "
                            f"{child_name} never deletes its rows: make it follow {name} or purge them",
                        )
                    )


def refuse_engine_tables(pack: Pack) -> list[Finding]:
    """A dataset over a table of the engine itself is an error (:func:`retention.engine.schema_guard.engine_table`)."""
    findings = []
    for name, ds in pack.datasets.items():
        refused = engine_table(ds.table)
        if refused is not None:
            findings.append(Finding("error", name, ds.table, None, refused))
    return findings


def check_schema(conn: sa.Connection, pack: Pack, *, for_reflection: bool = False) -> list[Finding]:
    """Every finding of ``pack`` against the database behind ``conn``.

    ``for_reflection``: the planners reflect the pack's tables next in this
    transaction, from what the check read (:meth:`_Inspector.read_ahead`).
    """
    inspect = _Inspector(conn)
    findings: list[Finding] = refuse_engine_tables(pack)
    refused_names = {f.dataset for f in findings}
    system = {n: system_table(conn, ds.table, ds.schema_) for n, ds in pack.datasets.items() if n not in refused_names}
    # Only the datasets that are not refused: a system catalog is never read (its types are not SQLAlchemy's).
    ahead = pack_tables(pack.datasets[n] for n, why in system.items() if why is None)
    inspect.read_ahead(
        {s: [t for t in names if engine_table(t) is None] for s, names in ahead.items()}, for_reflection=for_reflection
    )
    for name, ds in pack.datasets.items():
        if name in refused_names:
            continue
        refused = system[name]
        if refused is not None:
            findings.append(Finding("error", name, ds.table, None, refused))
            continue
        columns = inspect.columns(ds.table, ds.schema_)
        if columns is None:
            findings.append(Finding("error", name, ds.table, None, "table does not exist"))
            continue
        subject_column = ds.subject.column if ds.subject is not None else None
        email_column = ds.email if isinstance(ds.email, str) or ds.email is None else ds.email.column
        for role, column in (
            ("key", ds.key),
            ("subject_key", ds.subject_key),
            ("subject", subject_column),
            ("email", email_column),
        ):
            if column is not None and column not in columns:
                findings.append(Finding("error", name, ds.table, column, _missing(column, columns, role)))
        pk = inspect.primary_key(ds.table, ds.schema_)
        if not pk:
            findings.append(Finding("warning", name, ds.table, None, "table has no primary key; keys may repeat"))
        elif pk != [ds.key]:
            findings.append(
                Finding(
                    "warning",
                    name,
                    ds.table,
                    ds.key,
                    f"key is not the primary key ({', '.join(pk)}); it must be unique",
                )
            )
        for rule in ds.keep:
            _check_clock(inspect, name, ds, rule.clock, findings)
        _check_where(inspect, name, ds, columns, findings)
        _check_subject(inspect, name, ds, findings)
        for step in ds.lifecycle:
            used = {
                "deactivate column": list((step.set or {}).keys()),
                "archive column": list(step.columns or []),
                "mask column": list((step.mask or {}).keys()),
            }
            for role, names in used.items():
                for column in names:
                    if column not in columns:
                        findings.append(Finding("error", name, ds.table, column, _missing(column, columns, role)))
        # A partial erasure's mask (issue 26 clause 4) writes its columns like a step's mask.
        for column in ds.erasure_masking.mask if ds.erasure_masking else {}:
            if column not in columns:
                findings.append(
                    Finding("error", name, ds.table, column, _missing(column, columns, "on_erasure mask column"))
                )
    # Datasets refused outright (an engine table, a system catalog, a missing table) are not read further.
    refused_datasets = {f.dataset for f in findings if f.level == "error" and f.column is None}
    kept = {n: d for n, d in pack.datasets.items() if n not in refused_datasets}
    readable = pack.model_copy(update={"datasets": kept})
    findings.extend(Finding(*found) for found in check_mistakes(conn, inspect, readable))
    if not any(f.level == "error" and f.column is None for f in findings):
        _check_children(inspect, pack, findings)
        _check_follows(inspect, pack, findings)
        _check_order(conn, inspect, pack, findings)
    return findings


def _check_follows(inspect: _Inspector, pack: Pack, findings: list[Finding]) -> None:
    """``follows.via`` names a column that references the leader's table."""
    for name, ds in pack.datasets.items():
        follows = ds.follows
        if follows is None or follows.via is None:
            continue
        columns = inspect.columns(ds.table, ds.schema_) or {}
        if follows.via not in columns:
            findings.append(
                Finding("error", name, ds.table, follows.via, _missing(follows.via, columns, "follows.via"))
            )
            continue
        leader = pack.datasets[follows.dataset]
        fks = inspect.foreign_keys(ds.table, ds.schema_)
        if not any(
            fk["referred_table"] == leader.table
            and fk["constrained_columns"] == [follows.via]
            and fk["referred_columns"] == [leader.key]
            for fk in fks
        ):
            findings.append(
                Finding(
                    "warning",
                    name,
                    ds.table,
                    follows.via,
                    f"no foreign key from {ds.table}.{follows.via} to {leader.table}.{leader.key}; "
                    f"follows.via must hold the key of a {follows.dataset} record",
                )
            )


def _check_order(conn: sa.Connection, inspect: _Inspector, pack: Pack, findings: list[Finding]) -> None:
    """The datasets can be ordered (engine.order), and a clock that another dataset purges away has a fallback."""
    try:
        dataset_order(conn, pack, inspect.inspector)
    except SchemaError as exc:
        first = next(iter(pack.datasets))
        for problem in exc.problems:
            findings.append(Finding("error", first, pack.datasets[first].table, None, problem))
    deleters: dict[str, list[str]] = {}
    for name, ds in pack.datasets.items():
        if deletes_rows(ds):
            deleters.setdefault(ds.table, []).append(name)
    for name, ds in pack.datasets.items():
        for rule in ds.keep:
            clock = rule.clock
            if clock.aggregate is None or clock.table not in deleters:
                continue
            others = [d for d in deleters[clock.table] if d != name]
            if not others:
                continue
            plain = [r for r in ds.keep if r.clock.aggregate is None]
            if plain:
                continue
            columns = inspect.columns(ds.table, ds.schema_) or {}
            dated = [c for c, info in columns.items() if isinstance(info["type"], sa.Date | sa.DateTime)]
            hint = f" such as {', '.join(dated[:3])}" if dated else " (the table has no date column: add one)"
            findings.append(
                Finding(
                    "warning",
                    name,
                    clock.table or ds.table,
                    clock.column,
                    f"the clock {clock.label()} reads rows that dataset {', '.join(others)} deletes: once they are "
                    f"purged the clock is NULL and {name} no longer moves by it; add a fallback clock on "
                    f"{ds.table}{hint}",
                )
            )


def article(word: str) -> str:
    """'a' or 'an' before ``word`` as it is read aloud here (an epoch, a timestamp)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def identity_collations(conn: sa.Connection, pack: Pack) -> list[Finding]:
    """A warning per subject or e-mail column whose collation takes different strings for equal ('U1', 'u1').

    And one per e-mail column whose collation lower-cases otherwise than the
    database's default (PostgreSQL ``C``): typed addresses fold under the
    default (docs/rules.md, "Identities: Normalisation").

    The engine names a person by the exact characters (``Dialect.exact_text``):
    a hold or an erasure request for 'u1' does not reach the records of
    'U1', though the column alone would call them equal. Since fixnullvis
    that holds on SQLite (NOCASE, RTRIM) and PostgreSQL (nondeterministic)
    too, so a hold placed before may keep fewer records than it did
    (docs/dialects.md, "Subjects compare exactly"). Names the table, the
    column and the collation, never a value. For ``check`` alone: a run
    does not read the catalog for it.
    """
    dialect = dialect_for(conn)
    findings: list[Finding] = []
    for name, ds in pack.datasets.items():
        places: list[tuple[str, str, str]] = []
        if ds.subject_key is not None:
            places.append(("subject", ds.table, ds.subject_key))
        for identity, chain in (("subject", ds.subject), ("e-mail", ds.email)):
            if isinstance(chain, str):
                places.append((identity, ds.table, chain))
            elif chain is not None:
                hop = chain.through[-1] if chain.through else None
                places.append((identity, hop.table, hop.column) if hop else (identity, ds.table, chain.column))
        for identity, table, column in places:
            source = sa.Table(table, sa.MetaData(), sa.Column(column), schema=ds.schema_).c[column]
            collation = dialect.merging_collation(conn, source)
            if collation is not None:
                message = (
                    f"{identity} column compares case-insensitively (collation {collation}); holds and erasure "
                    "requests name only the exact characters, so a hold on one spelling keeps no record of another"
                )
                findings.append(Finding("warning", name, table, column, message))
            if identity == "e-mail" and dialect.folding_collation(conn, source) is not None:
                message = (
                    "e-mail column lower-cases otherwise than the database's default collation; an address with "
                    "a non-ASCII capital typed for a hold or an erasure request may reach none of its live rows"
                )
                findings.append(Finding("warning", name, table, column, message))
    return findings
