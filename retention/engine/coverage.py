"""Personal data the pack does not reach: columns no clock, mask, archive or purge touches.

A pack covers the tables its author remembered. ``coverage`` reads the live
schema (table and column names, types, foreign keys) and a bounded sample of
each text column's values, classifies the columns that look personal, and
reports every one no dataset reaches, with the dataset it would most likely
belong to.

Invariants:

- No value read from the database leaves this module: a sample is reduced to
  counts of pattern matches inside :func:`_sample_kinds`, and findings carry
  only table names, column names, kinds and dataset names.
- A column is *covered* when a dataset of the pack deletes its rows (a
  ``delete``/``drop_partition`` step, or ``archive`` then ``delete``), masks
  it (``anonymise``, or ``archive`` then ``anonymise``), or reads it as a
  clock. It is *partly covered* when every dataset that covers it limits its
  rows with ``where``: rows outside it are never touched.
- The scan is read-only and bounded: at most :data:`SAMPLE_ROWS` non-null
  values per text column, one ``SELECT ... LIMIT`` each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedColumn, ReflectedForeignKeyConstraint

from retention.engine.order import deletes_rows
from retention.policy.model import Pack, Subject

SAMPLE_ROWS = 200
"""Non-null values read per text column: enough to see a pattern, small on any table."""

MATCH_SHARE = 0.5
"""Share of sampled values that must match a value pattern for the column to count as holding that kind."""

Kind = Literal[
    "email", "phone", "ip_address", "iban", "postcode", "name", "address", "user_agent", "person_reference", "free_text"
]

KIND_LABELS: dict[str, str] = {
    "email": "e-mail address",
    "phone": "phone number",
    "ip_address": "IP address",
    "iban": "IBAN",
    "postcode": "postcode",
    "name": "person's name",
    "address": "postal address",
    "user_agent": "browser user agent",
    "person_reference": "reference to a person",
    "free_text": "free text next to personal data",
}

# Column names, matched on the lower-cased name with separators kept.
_NAME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"(^|_)e?-?mail(_?address)?$|email")),
    ("phone", re.compile(r"(^|_)(phone|telephone|tel|mobile|cell|fax|msisdn)(_?(number|no|nr))?$|phone")),
    ("ip_address", re.compile(r"(^|_)ip(_?addr(ess)?)?$|remote_addr|client_addr")),
    ("iban", re.compile(r"(^|_)(iban|bic|bank_?account|account_?number)$")),
    ("postcode", re.compile(r"(^|_)(post_?code|postal_?code|zip(_?code)?)$")),
    (
        "name",
        re.compile(
            r"^(name|full_?name|first_?name|last_?name|given_?name|family_?name|surname|middle_?name|"
            r"display_?name|nick_?name|user_?name|user_?login|login|nicename|user_?nicename)$|"
            r"(^|_)(first|last|given|family|billing|shipping|customer|author|contact|user|person)_?name$|"
            r"_author$|^comment_author$"
        ),
    ),
    ("address", re.compile(r"(^|_)(address(_?line)?\d?|street|house_?number|city|town)$")),
    ("user_agent", re.compile(r"(^|_)(user_?agent|agent|ua)$")),
    (
        "person_reference",
        re.compile(r"^(customer|user|member|client|person|account|subscriber|buyer|author|patient|employee)_?id$"),
    ),
]

# Value patterns, matched on the whole stripped value.
_VALUE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")),
    ("ip_address", re.compile(r"^(\d{1,3}\.){3}\d{1,3}$|^(?=(?:[^:]*:){2})[0-9a-fA-F:]{2,39}$")),
    ("iban", re.compile(r"^[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}$")),
    ("phone", re.compile(r"^(?=(?:\D*\d){7})\+?[\d\s().-]{7,20}$")),
]

_WEAK_NAMES = frozenset({"name"})
"""Column names that are personal only beside other personal columns (a product also has a name)."""

_ENGINE_TABLE = re.compile(r"^(retention_|alembic_version$)", re.IGNORECASE)


@dataclass(frozen=True)
class Reach:
    """How one dataset reaches a column."""

    dataset: str
    how: Literal["purge", "mask", "clock"]
    partial: bool  # the dataset limits its rows with `where`

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "how": self.how, "only_rows_matching_where": self.partial}


@dataclass(frozen=True)
class Suggestion:
    """The dataset a table or column most likely belongs to, and why."""

    dataset: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"dataset": self.dataset, "why": self.why}


@dataclass(frozen=True)
class PersonalColumn:
    """One column that looks personal, with what it looks like and which datasets reach it."""

    table: str
    column: str
    kinds: tuple[str, ...]
    evidence: tuple[str, ...]  # "name", "values", "neighbours": never a value
    reaches: tuple[Reach, ...]
    suggestion: Suggestion | None = None

    @property
    def coverage(self) -> Literal["none", "partial", "full"]:
        if not self.reaches:
            return "none"
        return "partial" if all(r.partial for r in self.reaches) else "full"

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "kinds": list(self.kinds),
            "evidence": list(self.evidence),
            "coverage": self.coverage,
            "reached_by": [r.as_dict() for r in self.reaches],
            "suggestion": None if self.suggestion is None else self.suggestion.as_dict(),
        }

    def describe(self) -> str:
        """One line for people: the column, what it looks like, what reaches it, and a suggestion."""
        kinds = ", ".join(KIND_LABELS[k] for k in self.kinds)
        names = ", ".join(sorted({f"{r.dataset} ({r.how})" for r in self.reaches}))
        if self.coverage == "full":
            state = f"covered by {names}"
        elif self.coverage == "partial":
            state = f"partly covered: only rows matching the 'where' of {names}"
        else:
            state = "not covered"
        line = f"{self.table}.{self.column} ({kinds}): {state}"
        if self.suggestion is not None:
            line += f"; suggested dataset: {self.suggestion.dataset} ({self.suggestion.why})"
        return line


@dataclass
class CoverageReport:
    """Every personal-looking column of the scanned tables and how the pack covers it."""

    pack: str
    tables: int
    columns: list[PersonalColumn] = field(default_factory=list)

    @property
    def uncovered(self) -> list[PersonalColumn]:
        return [c for c in self.columns if c.coverage == "none"]

    @property
    def partial(self) -> list[PersonalColumn]:
        return [c for c in self.columns if c.coverage == "partial"]

    @property
    def covered(self) -> list[PersonalColumn]:
        return [c for c in self.columns if c.coverage == "full"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "tables_scanned": self.tables,
            "personal_columns": len(self.columns),
            "uncovered": [c.as_dict() for c in self.uncovered],
            "partly_covered": [c.as_dict() for c in self.partial],
            "covered": [c.as_dict() for c in self.covered],
        }

    def summary(self) -> str:
        tables = len({c.table for c in self.uncovered})
        return (
            f"{len(self.uncovered)} personal column(s) in {tables} table(s) not covered by pack {self.pack}; "
            f"{len(self.partial)} partly covered, {len(self.covered)} covered ({self.tables} tables scanned)"
        )


def name_kinds(column: str) -> list[str]:
    """The kinds a column's name suggests (lower-cased; ``comment_author_IP`` is an IP address)."""
    lowered = column.lower()
    return [kind for kind, pattern in _NAME_PATTERNS if pattern.search(lowered)]


def value_kinds(values: Iterable[Any]) -> list[str]:
    """The kinds most of ``values`` match (see :data:`MATCH_SHARE`); the values themselves are dropped here."""
    texts = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not texts:
        return []
    found = []
    for kind, pattern in _VALUE_PATTERNS:
        hits = sum(1 for t in texts if pattern.match(t))
        if hits / len(texts) >= MATCH_SHARE:
            found.append(kind)
    if "ip_address" in found and "phone" in found:
        found.remove("phone")  # dotted quads also look like digits and dots
    return found[:1] if found and found[0] == "email" else found


def _is_text(column: ReflectedColumn) -> bool:
    return isinstance(column["type"], sa.String)


def _is_free_text(column: ReflectedColumn) -> bool:
    """Unbounded text (TEXT, LONGTEXT, CLOB, varchar without length): notes, comments, serialised blobs."""
    col_type = column["type"]
    if isinstance(col_type, sa.Text):
        return True
    return isinstance(col_type, sa.String) and not isinstance(col_type, sa.Enum) and col_type.length is None


def _sample_kinds(conn: sa.Connection, table: sa.Table, column: str) -> list[str]:
    """Classify a bounded sample of one column's values; nothing of them is returned."""
    col = table.c[column]
    query = sa.select(col).where(col.is_not(None)).limit(SAMPLE_ROWS)
    values = conn.execute(query).scalars().all()
    return value_kinds(values)


def _reaches(pack: Pack) -> dict[tuple[str, str | None], list[tuple[str | None, Reach]]]:
    """Per (table, schema): (column or None for every column, reach) of each dataset."""
    result: dict[tuple[str, str | None], list[tuple[str | None, Reach]]] = {}
    for name, ds in pack.datasets.items():
        partial = ds.where is not None
        here = result.setdefault((ds.table, ds.schema_), [])
        if deletes_rows(ds):
            here.append((None, Reach(name, "purge", partial)))
        for step in ds.lifecycle:
            for masked in step.mask or {}:
                here.append((masked, Reach(name, "mask", partial)))
        for keep in ds.keep:
            clock = keep.clock
            if clock.aggregate:
                # An aggregate clock reads the related table's column for all its rows, where or not.
                result.setdefault((clock.table or "", ds.schema_), []).append(
                    (clock.column, Reach(name, "clock", clock.where is not None))
                )
            else:
                here.append((clock.column, Reach(name, "clock", partial)))
    return result


def _chain_tables(subject: Subject | str | None) -> list[str]:
    if subject is None or isinstance(subject, str):
        return []
    return [hop.table for hop in subject.through]


def _suggest(
    table: str,
    column: str,
    fks: Sequence[ReflectedForeignKeyConstraint],
    pack: Pack,
    reaches: Sequence[Reach],
    referenced_by: dict[str, list[tuple[str, str]]],
) -> Suggestion | None:
    """The dataset the column would belong to: its own table's, by foreign key, or by a subject chain."""
    own = [n for n, ds in pack.datasets.items() if ds.table == table]
    if own:
        name = own[0]
        if reaches and all(r.partial for r in reaches):
            return Suggestion(name, "widen its 'where' or add a dataset for the other rows")
        return Suggestion(name, f"add a mask for {column} to dataset {name}, or delete its rows")
    by_table = {ds.table: n for n, ds in pack.datasets.items()}
    for fk in fks:
        target = fk.get("referred_table")
        if target in by_table:
            local = ", ".join(fk.get("constrained_columns") or [])
            remote = ", ".join(fk.get("referred_columns") or [])
            return Suggestion(by_table[target], f"foreign key {table}.{local} -> {target}.{remote}")
    for source, via in referenced_by.get(table, []):
        if source in by_table:
            return Suggestion(by_table[source], f"foreign key {source}.{via} -> {table}")
    for name, ds in pack.datasets.items():
        if table in _chain_tables(ds.subject) + _chain_tables(ds.email):
            return Suggestion(name, f"dataset {name} reads {table} to find its person")
    for name, ds in pack.datasets.items():
        if ds.subject_key is not None and ds.subject_key.lower() == column.lower():
            return Suggestion(name, f"{column} names the same person as dataset {name}'s subject_key")
    return None


def scan(conn: sa.Connection, pack: Pack, pack_id: str) -> CoverageReport:
    """Classify every column of the default schema (and the schemas the pack names) against ``pack``."""
    inspector = sa.inspect(conn)
    schemas: list[str | None] = [None, *sorted({ds.schema_ for ds in pack.datasets.values() if ds.schema_})]
    reaches = _reaches(pack)
    # A row of these tables is a person (or names one): a foreign key to them names a person too.
    person_tables = {(ds.table, ds.schema_) for ds in pack.datasets.values() if ds.has_identity}
    report = CoverageReport(pack_id, 0)
    metadata = sa.MetaData()
    for schema in schemas:
        names = [t for t in inspector.get_table_names(schema=schema) if not _ENGINE_TABLE.match(t)]
        report.tables += len(names)
        fks = {t: inspector.get_foreign_keys(t, schema=schema) for t in names}
        referenced_by: dict[str, list[tuple[str, str]]] = {}
        for source, keys in fks.items():
            for fk in keys:
                via = ", ".join(fk.get("constrained_columns") or [])
                referenced_by.setdefault(fk["referred_table"], []).append((source, via))
        found: dict[str, list[tuple[str, list[str], list[str]]]] = {}
        for name in names:
            columns = inspector.get_columns(name, schema=schema)
            table = sa.Table(name, metadata, *(sa.Column(c["name"], c["type"]) for c in columns), schema=schema)
            key_columns = set(inspector.get_pk_constraint(name, schema=schema)["constrained_columns"] or [])
            fk_columns = {c: fk for fk in fks[name] for c in fk.get("constrained_columns") or []}
            rows: list[tuple[str, list[str], list[str]]] = []
            free: list[str] = []
            for column in columns:
                col_name = column["name"]
                if col_name in key_columns and col_name not in fk_columns:
                    continue
                # Names say "e-mail" of flags and dates too (email_verified): only text holds the value itself.
                kinds = [k for k in name_kinds(col_name) if _is_text(column) or k == "person_reference"]
                evidence = ["name"] if kinds else []
                ref = fk_columns.get(col_name)
                if ref is not None and (ref["referred_table"], schema) in person_tables:
                    if "person_reference" not in kinds:
                        kinds.append("person_reference")
                    evidence.append("foreign_key")
                if _is_text(column) and not _is_free_text(column) and not kinds:
                    sampled = _sample_kinds(conn, table, col_name)
                    if sampled:
                        kinds, evidence = sampled, ["values"]
                if kinds:
                    rows.append((col_name, kinds, evidence))
                elif _is_free_text(column):
                    free.append(col_name)
            if rows and any(c.lower() not in _WEAK_NAMES for c, _, _ in rows):
                # Free text beside personal data is where people write names, addresses, complaints.
                rows.extend((col_name, ["free_text"], ["neighbours"]) for col_name in free)
                found[name] = rows
        for name, rows in found.items():
            table_reaches = reaches.get((name, schema), [])
            for col_name, kinds, evidence in rows:
                reached = tuple(r for col, r in table_reaches if col is None or col.lower() == col_name.lower())
                suggestion = None
                if not reached or all(r.partial for r in reached):
                    suggestion = _suggest(name, col_name, fks[name], pack, reached, referenced_by)
                report.columns.append(
                    PersonalColumn(name, col_name, tuple(kinds), tuple(evidence), reached, suggestion)
                )
    return report
