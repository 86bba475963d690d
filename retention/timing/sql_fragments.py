"""Large SQL expressions over one column, compiled once per process and pasted into each statement.

The SQLite datetime grammar (:func:`retention.timing.datetext.sql_valid`,
``sql_normal``) is a few hundred expression nodes, and nearly every plan and
batch statement embeds it. SQLAlchemy's statement cache does not help: it
lives on one engine (a test, a console request, a ``plan`` each have their
own) and keys on the reflected ``Table`` object, which each plan builds anew.
Compiling those nodes was about 30 % of the test suite's time and most of a
small ``plan``'s.

The SQL text of such a fragment depends only on the dialect, the fragment's
name and argument, and the column it reads: its literals are constants of the
grammar, never a value of a run or of the user's data. So it is compiled once
per (dialect, name, argument) with literal values inline and a placeholder
for the column, and each statement pastes in its own rendering of the column
(``tests/test_sql_fragments.py`` holds the result equal to compiling the
expression itself, for several columns and dialects). The column stays a child
of the element, so an adapter that re-points columns at an alias (an aggregate
clock's related table) still reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnClause, ColumnElement, UnaryExpression
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.visitors import InternalTraversal

Builder = Callable[[ColumnElement[Any], str], ColumnElement[Any]]

_PLACEHOLDER = "retention_fragment_column_placeholder"
_BUILDERS: dict[str, Builder] = {}
_TEMPLATES: dict[tuple[Any, ...], str] = {}


class Fragment(ColumnElement[Any]):
    """``builder(column, arg)``, rendered from the process-wide template of (dialect, name, arg)."""

    __visit_name__ = "retention_fragment"
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
        ("arg", InternalTraversal.dp_string),
    ]

    def __init__(self, name: str, arg: str, column: ColumnElement[Any], type_: TypeEngine[Any]) -> None:
        self.name = name
        self.arg = arg
        self.column = column
        self.type = type_

    def self_group(self, against: operators.OperatorType | None = None) -> ColumnElement[Any]:
        return self  # always rendered in parentheses


def cacheable(column: ColumnElement[Any]) -> bool:
    """A column, or a unary operator on one: its rendering has no bound value to repeat."""
    if isinstance(column, UnaryExpression):
        column = column.element
    return isinstance(column, ColumnClause)


def register(name: str, builder: Builder) -> None:
    """Name ``builder`` for :func:`fragment` (once, at import)."""
    if _BUILDERS.setdefault(name, builder) is not builder:
        raise ValueError(f"two SQL fragments named {name}")


def fragment(name: str, arg: str, column: ColumnElement[Any], type_: TypeEngine[Any]) -> Any:
    """The registered builder's expression over ``column``, compiled once per dialect when ``column`` allows it."""
    if not cacheable(column):
        return _BUILDERS[name](column, arg)
    return Fragment(name, arg, column, type_)


def template(dialect: sa.Dialect, name: str, arg: str) -> str:
    """The fragment's SQL with its literals inline and the placeholder where the column goes."""
    key = (type(dialect), dialect.paramstyle, dialect.server_version_info, name, arg)
    found = _TEMPLATES.get(key)
    if found is None:
        expression = _BUILDERS[name](sa.literal_column(_PLACEHOLDER), arg)
        compiled = expression.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        found = _TEMPLATES[key] = str(compiled)
    return found


@compiles(Fragment)
def _render(element: Fragment, compiler: SQLCompiler, **kw: Any) -> str:
    kw.pop("add_to_result_map", None)  # the column is read inside the fragment, not a result column
    column = compiler.process(element.column, **kw)
    if not isinstance(element.column, ColumnClause):
        column = f"({column})"
    return "(" + template(compiler.dialect, element.name, element.arg).replace(_PLACEHOLDER, column) + ")"
