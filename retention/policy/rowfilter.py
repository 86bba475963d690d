"""The grammar of a dataset's ``where:`` row filter, parsed into plain data.

The pack keeps the mapping exactly as written (its digest is the digest of
that text); :func:`parse_where` checks it and turns it into tests that
retention.engine.rowfilter compiles to SQL. docs/rules.md ("Which rows: ``where``")
is the reference.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["eq", "in", "is_null", "not", "not_in", "not_null", "lt", "le", "gt", "ge", "contains"]
OPERATORS: tuple[str, ...] = ("not", "lt", "le", "gt", "ge", "contains")
"""Keys of an operator mapping (``status: {not: trash}``)."""

RELATED_KEYS: tuple[str, ...] = ("table", "on", "references", "where", "exists")
MAX_LIST = 1000
"""Values of one IN list at most: they travel as bound parameters."""

Scalar = str | int | float | bool | dt.date


@dataclass(frozen=True)
class ColumnTest:
    """One condition on one column."""

    column: str
    op: Op
    value: Any = None  # a scalar, or a tuple of scalars for in / not_in


@dataclass(frozen=True)
class RelatedTest:
    """A row of another table pointing at the record exists (or, ``exists: false``, does not)."""

    table: str
    on: str  # the related table's column naming the record
    references: str | None  # the dataset's column it points at (default the key)
    tests: tuple[ColumnTest, ...]
    exists: bool = True


@dataclass(frozen=True)
class RowFilter:
    """Every test must hold for a row to be one of the dataset's records."""

    tests: tuple[ColumnTest, ...]
    related: tuple[RelatedTest, ...]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | dt.date)


def _scalar(value: Any, where: str) -> Scalar:
    if not _is_scalar(value):
        raise ValueError(f"@{where}: expected a text, number, boolean or date, not {type(value).__name__}")
    if isinstance(value, float) and value != value:  # NaN compares with nothing
        raise ValueError(f"@{where}: NaN is not a value a column can equal")
    return value  # type: ignore[no-any-return]


def _values(value: list[Any], where: str) -> tuple[Scalar, ...]:
    if not value:
        raise ValueError(f"@{where}: an empty list matches no row; remove the dataset or the condition")
    if len(value) > MAX_LIST:
        raise ValueError(f"@{where}: at most {MAX_LIST} values in a list")
    return tuple(_scalar(v, f"{where}.{i}") for i, v in enumerate(value))


def _column_tests(column: str, spec: Any, where: str) -> list[ColumnTest]:
    if spec is None:
        return [ColumnTest(column, "is_null")]
    if isinstance(spec, list):
        return [ColumnTest(column, "in", _values(spec, where))]
    if not isinstance(spec, dict):
        return [ColumnTest(column, "eq", _scalar(spec, where))]
    if not spec:
        raise ValueError(f"@{where}: an empty mapping tests nothing; valid keys: {', '.join(OPERATORS)}")
    tests = []
    for op, value in spec.items():
        at = f"{where}.{op}"
        if op == "not":
            if value is None:
                tests.append(ColumnTest(column, "not_null"))
            elif isinstance(value, list):
                tests.append(ColumnTest(column, "not_in", _values(value, at)))
            else:
                tests.append(ColumnTest(column, "not", _scalar(value, at)))
        elif op in ("lt", "le", "gt", "ge"):
            scalar = _scalar(value, at)
            if isinstance(scalar, bool):
                raise ValueError(f"@{at}: a boolean has no order; compare it with {column}: true or false")
            tests.append(ColumnTest(column, op, scalar))
        elif op == "contains":
            if not isinstance(value, str) or not value:
                raise ValueError(f"@{at}: 'contains' takes a non-empty text")
            tests.append(ColumnTest(column, "contains", value))
        else:
            raise ValueError(f"@{at}: unknown operator {op!r}; valid: {', '.join(OPERATORS)}")
    _refuse_empty_range(column, tests, where)
    return tests


def _refuse_empty_range(column: str, tests: list[ColumnTest], where: str) -> None:
    """Bounds that no value lies between (``{gt: 10, lt: 5}``) would make the condition match no row.

    Only numbers and dates are judged: text orders by the column's collation,
    which the pack cannot know.
    """
    lower = [t for t in tests if t.op in ("gt", "ge")]
    upper = [t for t in tests if t.op in ("lt", "le")]
    for low in lower:
        for high in upper:
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low.value, high.value))
            if not numbers and not type(low.value) is type(high.value) is dt.date:
                continue
            if low.value > high.value or (low.value == high.value and (low.op, high.op) != ("ge", "le")):
                raise ValueError(
                    f"@{where}: no value of {column} is {low.op} {low.value} and {high.op} {high.value}, so the "
                    "condition matches no row; correct the bounds"
                )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ValueError(f"@{where}: expected a table or column name")
    return value


def _related(spec: Any, where: str) -> RelatedTest:
    if not isinstance(spec, dict):
        raise ValueError(f"@{where}: expected a mapping with table, on and where")
    unknown = [k for k in spec if k not in RELATED_KEYS]
    if unknown:
        raise ValueError(f"@{where}.{unknown[0]}: unknown key {unknown[0]!r}; valid: {', '.join(RELATED_KEYS)}")
    for required in ("table", "on"):
        if required not in spec:
            raise ValueError(f"@{where}: a related condition needs {required!r}")
    exists = spec.get("exists", True)
    if not isinstance(exists, bool):
        raise ValueError(f"@{where}.exists: {exists!r} is not a boolean; write true or false")
    inner = spec.get("where") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"@{where}.where: expected a mapping of column conditions")
    if "related" in inner:
        raise ValueError(f"@{where}.where.related: related conditions do not nest")
    tests: list[ColumnTest] = []
    for column, test in inner.items():
        tests += _column_tests(_name(column, f"{where}.where"), test, f"{where}.where.{column}")
    references = spec.get("references")
    return RelatedTest(
        table=_name(spec["table"], f"{where}.table"),
        on=_name(spec["on"], f"{where}.on"),
        references=None if references is None else _name(references, f"{where}.references"),
        tests=tuple(tests),
        exists=exists,
    )


def parse_where(raw: dict[str, Any]) -> RowFilter:
    """Check a ``where:`` mapping; errors start with ``@sub.path: `` for the loader to locate."""
    if not raw:
        raise ValueError("an empty 'where' selects every row; remove it")
    tests: list[ColumnTest] = []
    related: list[RelatedTest] = []
    for column, spec in raw.items():
        if column == "related":
            items = spec if isinstance(spec, list) else [spec]
            if not items:
                raise ValueError("@related: an empty list; remove it")
            for index, item in enumerate(items):
                related.append(_related(item, f"related.{index}" if isinstance(spec, list) else "related"))
            continue
        tests += _column_tests(_name(column, column), spec, column)
    return RowFilter(tuple(tests), tuple(related))
