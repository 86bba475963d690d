"""The base dialect: generic (SQL-standard) behaviour, one hook per database difference.

Modelled on alembic's ``ddl/impl.py``: :class:`Dialect` is the default
implementation, and each database subclasses it in its own module
(``sqlite.py``, ``postgresql.py``, ``mysql.py``), overriding only the hooks
where it differs. Subclasses register themselves under the SQLAlchemy
dialect names they serve (``names``); :func:`retention.dialects.dialect_for`
finds them. No module outside this package branches on a dialect name
(``tests/test_dialects.py`` holds that), so adding a database means adding
one module here; docs/dialects.md lists the hooks it has to consider.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

#: Clock kinds held in date/time columns (the others are epoch numbers or text).
DATETIME_KINDS = ("timestamptz", "timestamp", "date")

_registry: dict[str, type[Dialect]] = {}


class Dialect:
    """Generic SQL; a database module overrides what its server does differently."""

    #: The SQLAlchemy dialect names (``engine.dialect.name``) this class serves.
    names: ClassVar[tuple[str, ...]] = ()

    # -- capabilities (plain flags) --------------------------------------------

    #: The database is a file on this machine, opened without a server
    #: (a fleet target whose file is missing is unreachable, never created).
    embedded: ClassVar[bool] = False

    #: Date/time columns may hold text in any form of :mod:`retention.timing.datetext`
    #: (SQLite has no date type): clocks are then compared through the text's
    #: normal form, and a text column passes the schema check for a date clock.
    datetimes_as_text: ClassVar[bool] = False

    #: ``timestamptz`` columns are compared with aware bounds (PostgreSQL's
    #: ``timestamp with time zone``); elsewhere an instant is stored as naive UTC.
    aware_timestamptz: ClassVar[bool] = False

    #: ``drop_partition`` purges may drop whole range partitions
    #: (:meth:`range_partitions` and :meth:`lock_for_partition_drop` are then used).
    supports_partition_drop: ClassVar[bool] = False

    #: plan's sample query: with many records due, walking the key order finds
    #: the first few at once where the planner would sort every due record found
    #: by the clock index (SQLite's planner does).
    samples_by_key_order: ClassVar[bool] = False

    #: A batch transaction holds the database's only write lock from its first
    #: statement (the run lock's heartbeat, a write), so no other session can
    #: change a row between the batch's selection and its change: the witness
    #: re-check under lock has nothing to find and is skipped (SQLite).
    batch_holds_write_lock: ClassVar[bool] = False

    #: The database has one write lock, taken by a transaction's first write and
    #: held to its commit (SQLite): a transaction that must exclude other
    #: writers before it reads (a sign-in attempt) writes first.
    write_lock_on_first_write: ClassVar[bool] = False

    #: A statement that makes every later transaction of the session read-only
    #: (the web console's read engine); None when the database has none.
    read_only_session_sql: ClassVar[str | None] = None

    #: The read-only statement opened a transaction (drivers without
    #: autocommit) that must be committed to keep its effect.
    read_only_needs_commit: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.names:
            _registry[name] = cls

    def __init__(self, name: str = "default") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- engine set-up -------------------------------------------------------

    def driver_url(self, url: sa.URL) -> sa.URL:
        """``url`` with the driver the engine uses when the URL names none (``postgresql://``)."""
        return url

    def prepare_engine(
        self, url: sa.URL, kwargs: dict[str, Any], timeout: int
    ) -> tuple[sa.URL, Callable[[Any, Any], None] | None]:
        """(URL to connect to, ``connect`` listener) before ``sa.create_engine(url, **kwargs)``.

        May add engine or driver options to ``kwargs`` and take engine-only
        options out of the URL. Generic: :meth:`on_connect` on every new
        connection.
        """
        return url, functools.partial(self.on_connect, timeout=timeout)

    def on_connect(self, dbapi_conn: Any, record: Any, timeout: int) -> None:
        """Session settings for each new DBAPI connection: lock waits end after ``timeout`` seconds.

        A run must not wait for ever on a table someone else locked; the
        engine computes every instant in UTC. Generic: nothing to set.
        """

    def prepare_timeouts(
        self, url: sa.URL, kwargs: dict[str, Any], connect: int, statement: int
    ) -> Callable[[Any, Any], None] | None:
        """Put the connect timeout in the driver arguments of ``kwargs``; returns a ``connect`` listener or None.

        The listener sets the statement timeout (``statement`` seconds, 0 for
        none) on each new connection (:mod:`retention.store.timeouts`). A value
        in the URL wins over ``connect``. Generic: the driver's
        ``connect_timeout``, no statement timeout.
        """
        args = kwargs.setdefault("connect_args", {})
        if "connect_timeout" not in url.query:
            args.setdefault("connect_timeout", connect)
        return None

    def same_database(self, first: sa.URL, second: sa.URL) -> bool:
        """Whether two URLs of this database name the same database (an archive store must be another one).

        Generic: the same host (every spelling of this machine alike), port,
        database and query.
        """
        hosts = {"localhost", "127.0.0.1", "::1"}

        def place(url: sa.URL) -> tuple[Any, ...]:
            host = (url.host or "localhost").lower()
            return ("local" if host in hosts else host, url.port, url.database, tuple(sorted(url.query.items())))

        return place(first) == place(second)

    def database_file(self, url: sa.URL) -> Path | None:
        """The file that holds the whole database of ``url`` (``demo build`` starts afresh by deleting it), or None."""
        return None

    # -- types -----------------------------------------------------------------

    def instant_type(self) -> sa.types.TypeEngine[Any]:
        """The column type of the engine's instants (naive UTC, microseconds kept)."""
        return sa.DateTime()

    # -- the run lock --------------------------------------------------------

    def run_lock_statements(self, shard: str | None = None) -> tuple[str, str] | None:
        """(take, give) SQL of a session-level advisory lock, one per database/schema (or per shard).

        ``take`` returns true when the lock was taken, without waiting. The
        lock must die with the session, so that no batch of a run whose
        connection is gone can commit after another run took over. With
        ``shard`` (``I/N``), the lock of that shard of a sharded run; where
        the database has shared locks, a shard also holds the database's
        lock in shared mode, so a whole run and shards exclude each other.
        None: the database has no such lock, and the run lock is a row in
        ``retention_run_lock`` (see :class:`retention.engine.execute.RunLock`).
        """
        return None

    #: Isolation level of a shard's connection (None: the default): shards
    #: work on neighbouring keys side by side.
    shard_isolation_level: ClassVar[str | None] = None

    #: Where shards cannot hold the database's lock in shared mode: SQL that
    #: is true when no whole run holds it (checked after a shard's own lock).
    whole_run_lock_free_sql: ClassVar[str | None] = None

    def run_lock_held(self, conn: sa.Connection, suffix: str) -> bool | None:
        """Whether some session holds the run lock of :meth:`run_lock_statements` (``suffix``: '' or ``:shard:I/N``).

        Asked of a lock row, whose holder may have crashed and left it. None:
        the database has no such lock, and the row's heartbeat decides.
        Generic: None.
        """
        return None

    def lock_ledger_head(self, conn: sa.Connection, query: sa.Select[Any], advisory_key: int) -> sa.Select[Any]:
        """Serialise ledger appenders until commit; returns the query that reads the chain's head.

        Generic: the head row read ``FOR UPDATE``.
        """
        return query.with_for_update()

    def for_update(self, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
        """Lock the rows ``query`` selects until commit (only those of ``table`` where the database can say so).

        A batch re-reads the rows it moves under this lock, so a concurrent
        change cannot slip between its check and its write.
        """
        return query.with_for_update()

    # -- planner statistics and per-row probes ---------------------------------

    def probe_per_row(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """``query``, a correlated ``EXISTS`` subquery, kept a probe run once per outer row.

        A batch asks of each candidate whether the engine already holds a state
        row for it; answered by the state table's primary key, that costs the
        same whatever the table's size. Generic: the database does so already
        (SQLite, MariaDB run ``NOT EXISTS`` as a dependent subquery by key).
        """
        return query

    def refresh_statistics(self, conn: sa.Connection, table: str) -> None:
        """Bring the planner's statistics of an engine table up to date (:mod:`retention.engine.statistics`).

        Generic: ``ANALYZE table``. Called between batches, in a transaction
        of its own.
        """
        conn.execute(sa.text(f"ANALYZE {table}"))

    def statistics_rows(self, conn: sa.Connection, table: str) -> int | None:
        """The row count the planner believes ``table`` has, or None when it keeps none."""
        return None

    # -- items computed by the database (retention.engine.set_purge) ---------------

    #: The database can compute a batch's ledger items (HMAC-SHA256 pseudonyms,
    #: RFC 8785 item documents, Merkle leaves) itself, byte for byte as
    #: :mod:`retention.ledger.bulk` does; the other hooks of this section are then used.
    set_based_items: ClassVar[bool] = False

    #: A correlated ``lo <= value ORDER BY lo DESC LIMIT 1`` probes the index
    #: (PostgreSQL, SQLite); MariaDB walks it from the end for every row, and the
    #: set-based purge then looks due days up by ``DATE(value)`` instead.
    correlated_range_probe: ClassVar[bool] = True

    def prepare_items(self, conn: sa.Connection) -> None:
        """Make the functions the item hooks call available on ``conn`` (SQLite registers its own)."""

    def hmac_hex(self, key: bytes, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """Lowercase hex HMAC-SHA256 under ``key`` of ``prefix`` followed by ``text``'s UTF-8 bytes."""
        raise NotImplementedError

    def leaf(self, document: ColumnElement[Any]) -> ColumnElement[Any]:
        """The 32-byte Merkle leaf hash of an ASCII text ``document``: SHA-256 of 0x00 and its bytes."""
        raise NotImplementedError

    def concat_text(self, *parts: ColumnElement[Any]) -> ColumnElement[Any]:
        """Text concatenation of non-NULL parts (integers as their decimal text)."""
        result = parts[0]
        for part in parts[1:]:
            result = result.op("||")(part)
        return result

    def instant_text(self, instant: ColumnElement[Any]) -> ColumnElement[Any]:
        """An engine instant (naive UTC, :meth:`instant_type`) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
        raise NotImplementedError

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

    # -- the schema check ----------------------------------------------------

    def system_table(self, conn: sa.Connection, table: str, schema: str | None) -> str | None:
        """Why ``schema.table`` is one of the server's system catalogs, never a dataset's table, else None.

        Generic: None (no catalog known).
        """
        return None

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


def registry() -> dict[str, type[Dialect]]:
    """Every registered dialect class by SQLAlchemy dialect name."""
    return dict(_registry)


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer padded keys (RFC 2104) of a key of at most 64 bytes."""
    if len(key) > 64:
        raise ValueError("a key longer than the SHA-256 block must be hashed first")
    padded = key.ljust(64, b"\x00")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
