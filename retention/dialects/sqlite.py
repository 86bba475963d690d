"""SQLite: untyped storage (dates as text), no row locks, no advisory lock."""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention import datetext
from retention.dialects.base import Dialect


def _typeof_in(value: ColumnElement[Any], *types: str) -> ColumnElement[bool]:
    """SQLite's storage class of ``value`` is one of ``types`` (no expanding IN list)."""
    kind = sa.func.typeof(value)
    return sa.or_(*(kind == sa.literal(t, sa.String) for t in types))


def _glob(value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    return value.op("GLOB", is_comparison=True)(sa.literal(pattern, sa.String))


class SQLiteDialect(Dialect):
    """SQLite: a column of any declared type may hold text; the write lock is the database's."""

    names = ("sqlite",)
    datetimes_as_text: ClassVar[bool] = True
    samples_by_key_order: ClassVar[bool] = True
    read_only_session_sql: ClassVar[str | None] = "PRAGMA query_only = ON"
    read_only_needs_commit: ClassVar[bool] = False

    def lock_ledger_head(self, conn: sa.Connection, query: sa.Select[Any], advisory_key: int) -> sa.Select[Any]:
        # A second writer cannot commit the same seq (primary key), and its
        # transaction is rolled back whole, so no two entries share a predecessor.
        return query

    def for_update(self, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
        # No row locks: the batch holds SQLite's single write lock.
        return query

    def epoch_text_valid(self, value: ColumnElement[Any]) -> ColumnElement[bool]:
        # No REGEXP without an extension: GLOB, and no embedded NUL (bytes = characters).
        text = sa.cast(value, sa.Text)
        return sa.and_(
            _glob(text, "[1-9]*"),
            sa.not_(_glob(text, "*[^0-9]*")),
            sa.func.length(sa.cast(value, sa.LargeBinary)) == sa.func.length(text),
        )

    def epoch_text_operand(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.cast(value, sa.Text)

    def clock_invalid(self, value: ColumnElement[Any], kind: str) -> ColumnElement[bool]:
        if kind == "epoch":
            return sa.not_(_typeof_in(value, "integer", "real", "null"))
        text_kind: datetext.TextKind = kind  # type: ignore[assignment]
        return sa.and_(
            value.is_not(None),
            sa.not_(datetext.sql_valid(value, text_kind)),
            sa.not_(datetext.sql_zero_date(value)),
        )

    def clock_numeric(self, value: ColumnElement[Any], kind: str) -> list[ColumnElement[bool]]:
        # An epoch column may hold text, which sorts above every number.
        if kind == "epoch":
            return [_typeof_in(value, "integer", "real")]
        return []

    def aggregate_measure(
        self, rel_col: ColumnElement[Any], kind: str
    ) -> tuple[ColumnElement[Any], ColumnElement[bool] | None]:
        # Text in its normal form, the zero date below every date.
        if kind == "epoch":
            numeric = _typeof_in(rel_col, "integer", "real")
            return sa.case((numeric, rel_col), else_=None), sa.not_(_typeof_in(rel_col, "integer", "real", "null"))
        text_kind: datetext.TextKind = kind  # type: ignore[assignment]
        valid = datetext.sql_valid(rel_col, text_kind)
        zero = datetext.sql_zero_date(rel_col)
        zero_form = datetext.ZERO_PREFIX if kind == "date" else datetext.NORMAL_ZERO
        measured = sa.case(
            (valid, datetext.sql_normal(rel_col, text_kind)),
            (zero, sa.literal(zero_form, sa.String)),
            else_=None,
        )
        return measured, sa.and_(rel_col.is_not(None), sa.not_(valid), sa.not_(zero))
