"""Bulk writes, keys and partitions: how a batch moves many rows at once.

One of the three parts :class:`retention.dialects.base.Dialect` is built from
(issue 22), a base class of ``Dialect`` for the reason given in
:mod:`retention.dialects.clock_values`: the ledger's bulk insert, the tally's
upsert, the archive's JSON payloads, key text and comparisons, and the range
partitions a ``drop_partition`` purge drops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


class BulkWriteSQL:
    """Generic bulk writes: the driver's ``executemany``, SQL-standard JSON, no partitions."""

    #: The dialect's name (set by :class:`retention.dialects.base.Dialect`), for messages.
    name: str

    # -- bulk writes and keys ------------------------------------------------

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert ``rows`` (values in ``columns`` order) by the driver's fastest path, in the caller's transaction.

        The ledger writes one row per record a purge moves: the hottest insert
        of the engine. Generic: the driver's ``executemany`` (PyMySQL folds it
        into multi-row INSERTs).
        """
        dialect = conn.dialect
        preparer = dialect.identifier_preparer
        target = preparer.format_table(table)
        names = ", ".join(preparer.quote(c) for c in columns)
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        placeholders = ", ".join([marker] * len(columns))
        with driver_cursor(conn) as cursor:
            cursor.executemany(f"INSERT INTO {target} ({names}) VALUES ({placeholders})", rows)

    def insert_then_update(self, conn: sa.Connection, insert: sa.Insert, update: sa.Update) -> None:
        """Run ``insert`` then ``update`` in the caller's transaction, as one statement where the database can.

        A set-based batch's ledger entry and its run's head
        (:func:`retention.ledger.chain.append_written`): one round trip fewer
        per batch where data-modifying ``WITH`` exists. Generic: two statements.
        """
        conn.execute(insert)
        conn.execute(update)

    def upsert_add(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], column: str) -> None:
        """Insert ``rows``; a row whose primary key exists already gets ``column`` added to instead.

        A batch's counts commit with the batch (:mod:`retention.store.tally`).
        Generic: ``ON DUPLICATE KEY UPDATE`` (the engine's fallback before the hook).
        """
        from sqlalchemy.dialects.mysql import insert as my_insert

        my = my_insert(table)
        conn.execute(my.on_duplicate_key_update({column: table.c[column] + my.inserted[column]}), rows)

    def json_text_object(self, pairs: Sequence[tuple[str, ColumnElement[Any]]]) -> ColumnElement[Any]:
        """A JSON object built in SQL, each value as the database writes it as text (NULL as null).

        The archive's payloads are built this way by ``INSERT ... SELECT``,
        without a Python step per row. Generic: SQL:2016 ``JSON_OBJECT``
        (SQLite and MariaDB have it with this argument list).
        """
        arguments: list[Any] = []
        for name, value in pairs:
            arguments += [sa.literal(name, sa.String), sa.cast(value, sa.Text)]
        return sa.func.json_object(*arguments, type_=sa.Text)

    def delete_listed(
        self,
        table: sa.Table,
        where: Sequence[ColumnElement[bool]],
        column: ColumnElement[Any],
        listed: ColumnElement[Any],
    ) -> sa.Delete:
        """``DELETE`` of ``table``'s rows matching ``where`` whose ``column`` is one of ``listed`` (another table's).

        A set-based archive batch deletes its payloads and rows by the keys
        it wrote into a temporary table, not by a list sent from Python.
        Generic: ``IN (SELECT ...)``, which PostgreSQL and SQLite run as a
        lookup of the listed values.
        """
        return table.delete().where(*where, column.in_(sa.select(listed)))

    def key_table(
        self, conn: sa.Connection, name: str, key: sa.ColumnElement[Any], text: sa.types.TypeEngine[Any]
    ) -> dict[str, Any]:
        """Create the temporary table ``name``: ``k`` of ``key``'s own type, ``t`` of ``text``, an index on ``k``.

        A set-based archive batch writes its keys there and compares them with
        the source's (:mod:`retention.engine.set_archive`). Declared from the
        reflected type, ``k`` lost a collation that only the table's default
        gave the source column (MariaDB reflects a column's collation only
        when it differs from its table's): comparing the two was "Illegal mix
        of collations", and a unique ``k`` in another collation refused keys
        the source holds apart. ``CREATE TABLE ... AS SELECT`` of the key
        itself keeps the type (PostgreSQL: and the collation; SQLite: an
        affinity, and its comparisons take the source column's collation, the
        left operand's). Not unique, no ``SERIAL``: every value is the source's.
        Generic: three statements (run them in a transaction where DDL is one).
        Returns what the run's log says about the table (``archive_set_based``):
        nothing here; MariaDB/MySQL, the engine it got.
        """
        dialect = conn.dialect
        target = dialect.identifier_preparer.quote(name)
        source = sa.select(key.label("k")).where(sa.false())
        conn.execute(sa.text(f"CREATE TEMPORARY TABLE {target} AS {source.compile(conn)}"))
        conn.execute(sa.text(f"ALTER TABLE {target} ADD COLUMN t {text.compile(dialect)}"))
        index = dialect.identifier_preparer.quote(f"{name}_k")
        conn.execute(sa.text(f"CREATE INDEX {index} ON {target} (k)"))
        return {}

    def listed_last(self, key: ColumnElement[Any], listed: ColumnElement[Any]) -> sa.Select[int, Any]:
        """How many keys ``listed`` (:meth:`key_table`'s ``k``) holds, and the last of them in ``key``'s order.

        The batch's range ends at that key, in the order its locking read
        took. Generic: the maximum of the source's own column over the listed
        keys (SQLite's ``k`` keeps no collation, so its maximum may be
        another key).
        """
        if self.listed_collates:
            return sa.select(sa.func.count(), sa.func.max(listed))
        return sa.select(sa.func.count(), sa.func.max(key)).where(key.in_(sa.select(listed)))

    #: :meth:`key_table`'s ``k`` keeps the source key's collation (MariaDB, PostgreSQL), so its own maximum is the
    #: batch's last key: no probe of the source table per batch, whose plan would rest on the estimate PostgreSQL
    #: makes for a temporary table nothing analyses.
    listed_collates: ClassVar[bool] = False

    def engine_comparable(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """Text from the application's tables made comparable with the engine's text columns.

        Two tables may use different collations, and some databases refuse
        to compare two implicit ones. Generic: as it is.
        """
        return text

    def binary_order(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """Text compared byte by byte, whatever the column's collation (shard ranges of text keys).

        Every worker must cut a key space at the same places and a record
        must fall in exactly one range. Generic: as it is (SQLite compares
        text with BINARY unless told otherwise).
        """
        return text

    def one_of(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """Rows whose ``column`` is one of ``values`` (a batch's thousands of keys): an IN list."""
        return column.in_(list(values))

    def key_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A source column as text comparable with the engine's key columns (``VARCHAR(191)``)."""
        return sa.cast(column, sa.String(191))

    def fold_case(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """``text`` lower-cased as e-mail addresses are compared (stored, typed, and in pseudonyms).

        Pseudonyms fold with Python's ``str.lower`` (every capital); a
        database whose ``LOWER`` agrees with it for the addresses it holds
        keeps its own. Generic: ``LOWER``.
        """
        return sa.func.lower(text)

    def folding_collation(self, conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
        """A collation of a column in ``source`` whose ``LOWER`` folds otherwise than the database's default, or None.

        A typed address is lower-cased under the database's default collation,
        the stored one under its column's: where they fold differently, an
        address with a non-ASCII capital reaches no live row. For ``check``'s
        warning. Generic: None (MariaDB's ``LOWER`` folds alike under every
        collation; SQLite's connections fold with their own function).
        """
        return None

    def exact_text(self, text: ColumnElement[Any], merging: bool = True) -> ColumnElement[Any]:
        """A source's identity as text (``key_text``, ``email_text``) equal only to the same characters.

        A subject or an address names one person wherever Python sees one
        (``store.SOURCE_KEY``): the planner matches a record to its request
        in Python, so the SQL beside it must not merge 'U1' and 'u1' because
        the source column's collation does (SQLite NOCASE/RTRIM, a
        PostgreSQL nondeterministic collation); on SQLite the column's
        collation survives the cast, on PostgreSQL too for a varchar/text
        source. An explicit collation wins over the implicit ones on either
        side of a comparison, in either order. ``merging``: whether the
        source's collation may merge strings (:meth:`merging_collation`);
        where it does not, a dialect may leave the text as it is, so that an
        index on the column still serves. Generic: as it is.
        """
        return text

    def merging_collation(self, conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
        """The collation of a source column in ``source`` that takes different strings for equal, or None.

        Read from the catalog where that is cheap: whether :meth:`exact_text`
        must override the column's collation (PostgreSQL: only then, as the
        override costs the column's index) and what ``check`` warns about
        (holds and requests name the exact characters there, where the
        column alone would merge them). Generic: None (MariaDB/MySQL's
        ``key_text`` names a binary collation, nothing to warn about).
        """
        return None

    # -- partitions ----------------------------------------------------------

    def range_partitions(self, conn: sa.Connection, parent: str, column: str) -> list[tuple[str, str, str, str]]:
        """(schema, name, lower, upper) of each range partition of ``parent`` on ``column`` alone.

        ``parent`` is the quoted table name; bounds are SQL literals or
        ``MINVALUE``/``MAXVALUE``. Empty when the table is not partitioned so
        (and a DEFAULT partition is left out: anything may be in it).
        """
        return []

    def lock_for_partition_drop(self, parent: str) -> str:
        """SQL taking the strongest lock on the partitioned table ``parent`` before a partition is dropped."""
        raise NotImplementedError(f"{self.name}: no partition drop")


@contextmanager
def driver_cursor(conn: sa.Connection) -> Iterator[Any]:
    """A raw DBAPI cursor on the connection's driver connection (in its transaction), closed on exit."""
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def source_columns(source: ColumnElement[Any]) -> Iterator[tuple[sa.Table, str]]:
    """The table columns ``source`` reads (through aliases and scalar subqueries), for catalog look-ups."""
    for element in sa.sql.visitors.iterate(source):
        table = getattr(element, "table", None)
        if isinstance(table, sa.sql.Alias):
            table = table.element
        if isinstance(element, sa.Column) and isinstance(table, sa.Table):
            yield table, element.name
