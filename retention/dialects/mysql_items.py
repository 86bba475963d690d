"""MariaDB and MySQL item SQL: a batch's pseudonyms and block computed by the server (SHA2, GROUP_CONCAT).

:class:`MySQLItemSQL` is :class:`retention.dialects.item_sql.ItemSQL` for
MariaDB and MySQL, a base class of
:class:`retention.dialects.mysql.MySQLDialect`, which keeps the connection,
locking and clock hooks: what the server computes for the ledger changes
for speed and byte-identity with :mod:`retention.ledger.bulk`, what the rest
of the dialect holds changes with the server's sessions and locks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import BindParameter, Cast, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from retention.dialects.item_sql import BoundKey, ItemSQL, Key, hmac_pads

_ALL_ROWS = 18_446_744_073_709_551_615
"""A LIMIT that keeps every row (MySQL's documented idiom: the greatest unsigned 64-bit value)."""


class MySQLItemSQL(ItemSQL):
    """HMAC-SHA256 by ``SHA2()`` over pre-absorbed pads, blocks by ``GROUP_CONCAT ... ORDER BY``."""

    set_based_items: ClassVar[bool] = True

    def key_parameters(self, bound: BoundKey, key: bytes) -> dict[str, Any]:
        # The padded keys' bytes, cast to binary in the statement (_binary).
        inner, outer = hmac_pads(key)
        return {f"{bound.name}_inner": inner, f"{bound.name}_outer": outer}

    def hmac_hex(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        # SHA2() over the pre-absorbed pads; CONCAT with a binary argument takes the text's utf8mb4 bytes, an
        # integer's decimal digits as they are.
        utf8 = _utf8(text)
        message: ColumnElement[Any]
        outer: ColumnElement[Any]
        if isinstance(key, BoundKey):
            message = sa.func.concat(_binary(key.param("inner", sa.LargeBinary)), _binary(prefix), utf8)
            outer = _binary(key.param("outer", sa.LargeBinary))
        else:
            inner_pad, outer_pad = hmac_pads(key)
            message, outer = sa.func.concat(_binary(inner_pad + prefix), utf8), _binary(outer_pad)
        inner_digest = sa.func.unhex(sa.func.sha2(message, 256))
        return sa.func.sha2(sa.func.concat(outer, inner_digest), 256)

    def hmac_bytes(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.func.unhex(self.hmac_hex(key, prefix, text), type_=sa.LargeBinary)

    def block_item(
        self, record: ColumnElement[Any], subject: ColumnElement[Any], due: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        return sa.func.concat(record, sa.func.coalesce(subject, _binary(bytes(32))), due, type_=sa.LargeBinary)

    def ordered_bytes(self, value: ColumnElement[Any], order: ColumnElement[Any]) -> ColumnElement[Any]:
        # GROUP_CONCAT stops at group_concat_max_len, which prepare_items raises for the session (the writer
        # still compares the body's length with its row count: max_allowed_packet bounds it too).
        return _OrderedConcat(value, order)

    def block_rows(self, rows: sa.Select[Any]) -> sa.Select[Any]:
        # MariaDB merges a derived table into the query that reads it, and its
        # GROUP_CONCAT then evaluates the item and the ORDER BY pseudonym each
        # from the row: the record's HMAC (two SHA2() calls) twice a row, a
        # fifth of the block's statement. A derived table with a LIMIT is not
        # merged but filled once (the optimizer's EXPLAIN shows <derived>); this
        # LIMIT is MySQL's documented "all rows" (2^64 - 1), so it keeps every row.
        return rows.limit(_ALL_ROWS)

    def prepare_items(self, conn: sa.Connection) -> None:
        # On the driver's connection: a session setting, outside any transaction the caller begins next.
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.execute(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX}")
        finally:
            cursor.close()


GROUP_CONCAT_MAX = 4_294_967_295
"""group_concat_max_len for the item sessions: its maximum, so that max_allowed_packet alone bounds a block."""


class _OrderedConcat(ColumnElement[Any]):
    """``GROUP_CONCAT(value ORDER BY order SEPARATOR '')``: SQLAlchemy has no construct for the clauses inside."""

    inherit_cache = True
    type = sa.LargeBinary()
    _traverse_internals = [  # the statement cache key covers both clauses
        ("value", InternalTraversal.dp_clauseelement),
        ("order", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, value: ColumnElement[Any], order: ColumnElement[Any]) -> None:
        self.value, self.order = value, order

    def get_children(self, **kw: Any) -> tuple[ColumnElement[Any], ...]:
        return self.value, self.order

    @property
    def _from_objects(self) -> list[Any]:
        # What a SELECT of this aggregate reads FROM: its clauses' tables, as for any function.
        return [*self.value._from_objects, *self.order._from_objects]


@compiles(_OrderedConcat)
def _ordered_concat(element: _OrderedConcat, compiler: Any, **kw: Any) -> str:
    value, order = compiler.process(element.value, **kw), compiler.process(element.order, **kw)
    return f"GROUP_CONCAT({value} ORDER BY {order} SEPARATOR '')"


def _binary(value: bytes | BindParameter[Any]) -> ColumnElement[Any]:
    """A binary string: bytes, or a parameter bound to bytes, cast to ``BINARY`` in the statement.

    ``CONCAT`` with a binary argument takes the utf8mb4 text's bytes as they
    are; a literal without the cast is converted to the text's character set
    instead (error 1300, "Invalid utf8mb4 character string"), whatever the
    driver writes for bytes (PyMySQL 1.2: ``X'...'``; before, a quoted
    string, ``_binary`` with ``binary_prefix``): the cast takes each form's
    bytes. ``UNHEX`` of hex text, the former form, is a call a row: 0.65 s
    against 0.57 s of server CPU for an HMAC's two pads over 1M text keys,
    0.67 against 0.53 over integers (``SUM(CRC32(SHA2(CONCAT(outer,
    UNHEX(SHA2(CONCAT(inner, text), 256))), 256)))`` over ``seq_1_to_1000000``,
    medians of 5; bench/RESULTS.md, branch mariabin).
    """
    bound = value if isinstance(value, BindParameter) else sa.literal(value, sa.LargeBinary)
    return sa.cast(bound, sa.LargeBinary)


def unpadded(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """An integer column + 0: its value without a ZEROFILL column's padding, as Python's ``str(int)`` writes it."""
    return column + sa.literal_column("0") if isinstance(column.type, sa.Integer) else column


def _utf8(text: ColumnElement[Any]) -> ColumnElement[Any]:
    """What ``CONCAT`` with a binary argument takes as ``text``'s UTF-8 bytes.

    A text is converted to utf8mb4 (its column may hold another character
    set). An integer cast to text (the record key of an integer key, see
    :meth:`retention.engine.set_purge.SetPurge._pseudonym_texts`) is given to
    ``CONCAT`` as the integer: it takes its decimal digits, ASCII, which are
    the same bytes in utf8mb4, without the two conversions per row.
    """
    inner = text.clause if isinstance(text, Cast) else text
    if isinstance(inner.type, sa.Integer):
        # + 0: a ZEROFILL column's value without its padding (Python's str(42) is "42", not "000042"); exact for
        # BIGINT UNSIGNED's maximum too (review `engine`, finding 3).
        return unpadded(inner)
    return sa.cast(text, mysql.CHAR(charset="utf8mb4"))


__all__ = ["GROUP_CONCAT_MAX", "MySQLItemSQL", "unpadded"]
