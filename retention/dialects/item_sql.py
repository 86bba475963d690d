"""Set-based ledger item SQL: the database computes a batch's ledger items itself.

One of the three parts :class:`retention.dialects.base.Dialect` is built from
(issue 22), a base class of ``Dialect`` for the reason given in
:mod:`retention.dialects.clock_values`. Used by
:mod:`retention.engine.set_purge` and the set-based archive: HMAC-SHA256
pseudonyms, RFC 8785 item documents and Merkle leaves computed in SQL, byte
for byte as :mod:`retention.ledger.bulk` does in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, ColumnElement


@dataclass(frozen=True)
class BoundKey:
    """An HMAC key a statement names as parameters, whose values each execution supplies (``key_parameters``).

    A value written into a statement stays with it: SQLAlchemy's compiled
    statement cache keeps the first statement of each shape, values and all,
    for the life of the engine, so a run key written in as a literal outlived
    its run in a long-lived process (a worker, the scheduler). Bound per
    execution, the cached statement holds only the parameters' names.
    """

    name: str

    def param(self, part: str, type_: Any) -> BindParameter[Any]:
        """The parameter ``name_part`` (no value: the execution gives it)."""
        return sa.bindparam(f"{self.name}_{part}", type_=type_)


Key = bytes | BoundKey
"""An HMAC key for the item hooks: its bytes (written into the statement), or a :class:`BoundKey`."""


class ItemSQL:
    """Generic item SQL: none (``set_based_items`` off); a database that can compute items overrides it."""

    # -- items computed by the database (retention.engine.set_purge) ---------------

    #: The database can compute a batch's ledger items (HMAC-SHA256 pseudonyms,
    #: RFC 8785 item documents, Merkle leaves) itself, byte for byte as
    #: :mod:`retention.ledger.bulk` does; the other hooks of this section are then used.
    set_based_items: ClassVar[bool] = False

    def prepare_items(self, conn: sa.Connection) -> None:
        """Make the functions the item hooks call available on ``conn`` (SQLite registers its own)."""

    def key_parameters(self, bound: BoundKey, key: bytes) -> dict[str, Any]:
        """The execution parameters that give ``bound`` (named in statements by the hooks below) the value ``key``.

        Generic: none (no item hooks).
        """
        return {}

    def hmac_hex(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """Lowercase hex HMAC-SHA256 under ``key`` of ``prefix`` followed by ``text``'s UTF-8 bytes.

        ``key``: its bytes, or a :class:`BoundKey` whose values the execution
        gives (:meth:`key_parameters`), as for every hook here that takes a key.
        """
        raise NotImplementedError

    def hmac_bytes(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """The 32 raw bytes of HMAC-SHA256 under ``key`` of ``prefix`` followed by ``text``'s UTF-8 bytes.

        The same value as :meth:`hmac_hex`, unencoded: a format-5 item holds
        its pseudonyms as raw bytes (:mod:`retention.ledger.blocks`).
        """
        raise NotImplementedError

    def block_item(
        self, record: ColumnElement[Any], subject: ColumnElement[Any], due: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        """A format-5 item's bytes: ``record`` (32 bytes), ``subject`` or 32 zero bytes when NULL, ``due`` (27)."""
        raise NotImplementedError

    def block_body(
        self, record: ColumnElement[Any], subject: ColumnElement[Any], due: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        """The aggregate making a group's format-5 block: its :meth:`block_item` bytes in ``record`` order.

        NULL for no row; a row with a NULL ``record`` or ``due`` is left out
        (the caller compares the body's length with the row count). Generic:
        :meth:`ordered_bytes` of the items by record pseudonym.
        """
        return self.ordered_bytes(self.block_item(record, subject, due), record)

    #: :meth:`keyed_block_body` is offered: the block aggregate keys the pseudonyms itself, for a database
    #: whose functions are calls out of the engine (SQLite: one Python call a row instead of three).
    keyed_blocks: ClassVar[bool] = False

    def keyed_block_body(
        self,
        key: Key,
        prefixes: tuple[bytes, bytes],
        record_text: ColumnElement[Any],
        subject_text: ColumnElement[Any],
        due: ColumnElement[Any],
    ) -> ColumnElement[Any]:
        """:meth:`block_body` over the pseudonyms of ``record_text`` and ``subject_text``, keyed in the same step.

        The value of ``block_body(hmac_bytes(key, prefixes[0], record_text),
        hmac_bytes(key, prefixes[1], subject_text) or NULL for a NULL subject,
        due)``, where :attr:`keyed_blocks` says so. Generic: none.
        """
        raise NotImplementedError

    def block_rows(self, rows: sa.Select[Any]) -> sa.Select[Any]:
        """The batch's item rows (pseudonyms, due text) as the block aggregate's ``FROM`` subquery reads them.

        :meth:`block_body` names the record pseudonym twice (the item and its
        order); a database that merges the subquery into the aggregate's query
        may compute that HMAC once for each. Generic: as it is.
        """
        return rows

    def ordered_bytes(self, value: ColumnElement[Any], order: ColumnElement[Any]) -> ColumnElement[Any]:
        """The aggregate concatenating a group's binary ``value`` in ``order`` (NULL for no row).

        A batch's 32-byte leaves come back as one value, not one row each
        (:meth:`row_address`), and a format-5 block is the items in record
        order (:meth:`block_body`). Generic: none.
        """
        raise NotImplementedError

    def row_address(self, conn: sa.Connection, table: sa.Table) -> ColumnElement[Any] | None:
        """A column naming a row version of ``table`` within one statement, or None.

        With one, a set-based purge batch is a single statement: the rows
        chosen by their address, deleted by it and returned to the items'
        insert (``WITH d AS (DELETE ... RETURNING ...) INSERT ...``), so the
        predicate is evaluated and the rows are read once; a row changed by
        another session after the choice is a new version the address does
        not name, and is neither deleted nor itemised. Generic: None (no
        data-modifying ``WITH``: the batch takes its three statements).
        """
        return None


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer padded keys (RFC 2104) of a key of at most 64 bytes."""
    if len(key) > 64:
        raise ValueError("a key longer than the SHA-256 block must be hashed first")
    padded = key.ljust(64, b"\x00")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
