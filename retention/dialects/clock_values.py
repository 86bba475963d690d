"""Clock-value SQL: which stored values a clock column can be read as, and how.

One of the three parts :class:`retention.dialects.base.Dialect` is built from
(issue 22: no class above ~300 lines, modules named for what they hold). The
parts are base classes of ``Dialect`` rather than objects it holds
(``dialect.clock_sql.clock_invalid(...)``): the engine calls these hooks from
some thirty places as ``dialect_for(conn).hook(...)``, and each database
module overrides hooks of every part in its one class; base classes keep
both unchanged, so the split is a pure refactor. Each database's overrides
of these hooks stay in its own module (``sqlite.py``, ``postgresql.py``), in
their clock section; MariaDB/MySQL's in ``mysql_clocks.py``, a base class of
``MySQLDialect`` as ``mysql_items.py`` is, since its class had reached the bar.

Used by :mod:`retention.engine.evaluate` and its clock SQL, and by the schema
check (:meth:`ClockValueSQL.datetime_column_problem`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


class ClockValueSQL:
    """Generic clock-value SQL: typed columns hold only readable values."""

    # -- the stored date -------------------------------------------------------

    def stored_date(self, value: ColumnElement[Any], kind: str, column_type: Any) -> ColumnElement[Any]:
        """The date a clock value is stored on: UTC for instants, as written for naive values and dates."""
        return sa.cast(value, sa.Date)

    # -- the schema check ----------------------------------------------------

    def datetime_column_problem(self, clock_type: str, col_type: sa.types.TypeEngine[Any]) -> str | None:
        """Why a reflected date/time column cannot hold this clock kind beyond its type family, or None.

        Generic: the type family decides alone.
        """
        return None

    # -- clock SQL (retention.engine.evaluate) ---------------------------------------

    def epoch_text_valid(self, value: ColumnElement[Any]) -> ColumnElement[bool]:
        """Digits without a leading zero (no end anchor: PCRE's ``$`` allows a final newline).

        Generic: the ``REGEXP`` operator.
        """
        return self._regex_valid(value, "REGEXP")

    @staticmethod
    def _regex_valid(value: ColumnElement[Any], op: str) -> ColumnElement[bool]:
        return sa.and_(
            value.op(op, is_comparison=True)(sa.literal("^[1-9]", sa.String)),
            sa.not_(value.op(op, is_comparison=True)(sa.literal("[^0-9]", sa.String))),
        )

    def epoch_text_operand(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        """An epoch-text column as text for ``length()`` and string comparison."""
        return value

    def clock_invalid(self, value: ColumnElement[Any], kind: str) -> ColumnElement[bool]:
        """Rows whose plain clock column (not epoch text) cannot be read as ``kind``.

        Generic: typed columns hold only valid values.
        """
        return sa.false()

    def clock_readable(self, value: ColumnElement[Any], kind: str) -> list[ColumnElement[bool]]:
        """Residual conditions that make a value in range a valid reading (for ``due``)."""
        return []

    def invalid_within(self, conn: sa.Connection, value: ColumnElement[Any], kind: str) -> ColumnElement[bool] | None:
        """Index ranges of ``value`` outside which no stored value is :meth:`clock_invalid`, or None.

        For counts only (``plan``, the guard): ``clock_invalid`` tests every
        row it is given, and a count over a large table pays that test per
        row; within these ranges the database tests only the few rows they
        hold. None: no such ranges (generic: nothing is invalid, nothing to narrow).
        """
        return None

    def clock_numeric(self, value: ColumnElement[Any], kind: str) -> list[ColumnElement[bool]]:
        """Conditions that a plain clock's value is a number (untyped storage may hold text)."""
        return []

    def clock_is_null(self, value: ColumnElement[Any], kind: str) -> ColumnElement[bool]:
        """The clock value reads NULL."""
        return value.is_(None)

    def aggregate_measure(
        self, rel_col: ColumnElement[Any], kind: str
    ) -> tuple[ColumnElement[Any], ColumnElement[bool] | None]:
        """(what ``max()`` runs over, which related rows are invalid) for an aggregate clock (not epoch text).

        The measured value is NULL for unreadable rows and orders as time
        does. Generic: the column itself, every row readable.
        """
        return rel_col, None

    def safe_clock_columns(self, column: ColumnElement[Any], kind: str) -> list[ColumnElement[Any]]:
        """Columns that fetch ``column`` without a driver error: the value, and its text when clamped."""
        from sqlalchemy.types import NullType

        return [sa.type_coerce(column, NullType())]
