"""The base dialect: generic (SQL-standard) behaviour, one hook per database difference.

Modelled on alembic's ``ddl/impl.py``: :class:`Dialect` is the default
implementation, and each database subclasses it in its own module
(``sqlite.py``, ``postgresql.py``, ``mysql.py``), overriding only the hooks
where it differs. Subclasses register themselves under the SQLAlchemy
dialect names they serve (``names``); :func:`retention.dialects.dialect_for`
finds them. No module outside this package branches on a dialect name
(``tests/test_dialects.py`` holds that), so adding a database means adding
one module here; docs/dialects.md lists the hooks it has to consider.

The hooks are split by what they hold (issue 22: no class above ~300 lines):
this module keeps the capabilities, engine set-up, locks, statistics and the
schema check; :mod:`~retention.dialects.clock_values` the clock-value SQL,
:mod:`~retention.dialects.item_sql` the set-based ledger item SQL and
:mod:`~retention.dialects.bulk_sql` bulk writes, keys and partitions. They are
base classes of :class:`Dialect`, not objects it holds, so that call sites
(``dialect_for(conn).hook(...)``) and the one class per database stay as they
were; :mod:`retention.dialects.clock_values` says why.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.bulk_sql import BulkWriteSQL
from retention.dialects.clock_values import ClockValueSQL
from retention.dialects.item_sql import ItemSQL

#: Clock kinds held in date/time columns (the others are epoch numbers or text).
DATETIME_KINDS = ("timestamptz", "timestamp", "date")

_registry: dict[str, type[Dialect]] = {}


class Dialect(ClockValueSQL, ItemSQL, BulkWriteSQL):
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

    def new_connection(self, driver: str, cargs: Sequence[Any], cparams: dict[str, Any]) -> Any | None:
        """A new DBAPI connection made here, or None to let SQLAlchemy make it (``do_connect``).

        For a driver whose own connect wastes work the engine can share
        between connections. Generic: None.
        """
        return None

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

    #: Partition row counts kept by triggers (``retention partitions track``,
    #: retention.engine.partition_counts): statement-level triggers with transition tables, PostgreSQL's.
    tracks_partitions: ClassVar[bool] = False

    def byte_position(self, haystack: ColumnElement[Any], needle: Any) -> ColumnElement[Any]:
        """Where ``needle`` first occurs in the binary ``haystack``, 1-based, 0 when it does not.

        Format-5 lookups search the blocks' bytes for a pseudonym
        (retention.ledger.block_lookup). Generic: ``instr`` (SQLite, on two blobs).
        """
        return sa.func.instr(haystack, needle)

    #: :meth:`lock_ledger_head`'s query is a locking read, which locks every row it reads (InnoDB): the
    #: head's statement then reads nothing more (retention.ledger.chain._lock_head).
    head_read_locks: ClassVar[bool] = True

    def lock_ledger_head(self, conn: sa.Connection, query: sa.Select[Any], advisory_key: int) -> sa.Select[Any]:
        """Serialise ledger appenders until commit; returns the query that reads the chain's head.

        Generic: the head row read ``FOR UPDATE`` (:attr:`head_read_locks`).
        """
        return query.with_for_update()

    def for_update(self, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
        """Lock the rows ``query`` selects until commit (only those of ``table`` where the database can say so).

        A batch re-reads the rows it moves under this lock, so a concurrent
        change cannot slip between its check and its write.
        """
        return query.with_for_update()

    #: A three-statement set-based purge batch whose range holds no row its locking read passed over (a
    #: locking count of the range equals the keys it selected) deletes by the range alone, not the predicate
    #: again: where the predicate costs the database more than a locking count (MariaDB's and SQLite's
    #: per-row date tests).
    whole_range_delete: ClassVar[bool] = False

    #: :meth:`last_of_batch` asks for the size-th key alone (``LIMIT 1 OFFSET size-1``): where fetching a
    #: batch's keys as rows costs as much as the work on them, and the locking read locks what it passes anyway.
    last_key_alone: ClassVar[bool] = False

    def last_of_batch(
        self, conn: sa.Connection, query: sa.Select[Any], size: int, parameters: Mapping[str, Any] | None = None
    ) -> tuple[Any, int]:
        """The last key ``query`` (keys in order, at most ``size``, locked) selects and how many: (None, 0) if none.

        A set-based batch needs only the range's end. Generic: every key
        fetched. Where :attr:`last_key_alone`: the size-th key, one row; fewer
        than ``size`` left (a dataset's last batch), every key as the generic way.
        ``parameters``: values of ``query``'s bound parameters (a statement built once per run).
        """
        if self.last_key_alone:
            row = conn.execute(query.limit(1).offset(size - 1), parameters).first()
            if row is not None:
                return row[0], size
        keys = conn.execute(query, parameters).scalars().all()
        return (keys[-1], len(keys)) if keys else (None, 0)

    # -- ledger item lookups ------------------------------------------------------

    def pseudonym_in(self, column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
        """Items whose pseudonym ``column`` is one of ``values``, asked so that the column's index answers it.

        Generic: ``column IN (values)``. SQLite indexes the pseudonyms' first
        characters only (migration 0017) and overrides this.
        """
        return column.in_(values)

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

    @contextmanager
    def serial_scans(self, conn: sa.Connection) -> Iterator[None]:
        """Within the block, ``conn``'s statements scan without parallel workers; the setting is restored after it.

        A count over many small partitions (``drop_partition``'s plan) would
        start workers once per partition, which costs more than they save.
        Only for the block: plan goes on counting other datasets in the same
        transaction. Generic: nothing to set (no parallel scans).
        """
        yield

    # -- the schema check ----------------------------------------------------

    def system_table(self, conn: sa.Connection, table: str, schema: str | None) -> str | None:
        """Why ``schema.table`` is one of the server's system catalogs, never a dataset's table, else None.

        Generic: None (no catalog known).
        """
        return None

    def key_column_collation(self, conn: sa.Connection, table: str, column: str) -> str | None:
        """The collation ``table.column`` compares keys in, for a separate store to match; None when byte-wise.

        Generic: None (PostgreSQL's default collations are deterministic,
        SQLite's is BINARY: 'a' and 'a ' are two keys, as in Python).
        """
        return None

    def case_blind_key(self, conn: sa.Connection, table: str, column: str, main: str | None) -> tuple[str, str] | None:
        """``table.column``'s collation and why it is refused with what to do, if it takes two keys for one.

        Two keys the main database (key collation ``main``, see
        :meth:`key_column_collation`) keeps apart: its key columns keep 'A'
        and 'a', and 'a' and 'a ', apart (migrations 0020_keycase and
        0021_keypad on MariaDB/MySQL; PostgreSQL and SQLite compare byte-wise);
        a table the migrations do not manage (a separate archive store's) may
        predate that, or live on a server that cannot. None when the column
        keeps them apart or does not exist. Generic: None (PostgreSQL's
        default collations are deterministic, SQLite's is BINARY).
        """
        return None


def registry() -> dict[str, type[Dialect]]:
    """Every registered dialect class by SQLAlchemy dialect name."""
    return dict(_registry)
