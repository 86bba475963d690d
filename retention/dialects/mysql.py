"""MariaDB and MySQL: connections, GET_LOCK, collations (zero and impossible dates: mysql_clocks.py)."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import Dialect
from retention.dialects.bulk_sql import driver_cursor
from retention.dialects.mysql_clocks import MySQLClockSQL
from retention.dialects.mysql_items import MySQLItemSQL, unpadded
from retention.dialects.mysql_keys import KeyCollated, server_key_collation, store_key_refusal

_MYSQL_SYSTEM = frozenset({"mysql", "performance_schema", "sys", "information_schema"})

_MYISAM_REFUSED = frozenset({1071, 1286, 1290, 1478, 3161})
"""The errors of a server that will not create the batch's key table in MyISAM, which then gets the default engine.

1286 unknown storage engine (built without it); 1290 NO_ENGINE_SUBSTITUTION with enforce_storage_engine
(MariaDB) or an option that prevents the statement; 3161 disabled_storage_engines (MySQL); 1478 the engine
refuses a temporary table; 1071 the key's index too long, where a server makes it an error instead of MariaDB's
Note and prefix index. Any other error is not about the engine and propagates.
"""

_INSERT_CHUNK = 1000
"""Rows per multi-row INSERT: a statement of a few hundred kilobytes, well within max_allowed_packet."""


class MySQLDialect(MySQLClockSQL, MySQLItemSQL, Dialect):
    """MariaDB and MySQL (PyMySQL)."""

    names = ("mysql", "mariadb")
    read_only_session_sql: ClassVar[str | None] = "SET SESSION TRANSACTION READ ONLY"

    def byte_position(self, haystack: ColumnElement[Any], needle: Any) -> ColumnElement[Any]:
        """``LOCATE`` compares bytes on a binary value (the blocks' ``LONGBLOB``)."""
        return sa.func.locate(needle, haystack)

    def driver_url(self, url: sa.URL) -> sa.URL:
        if "+" not in url.drivername:
            return url.set(drivername=f"{url.get_backend_name()}+pymysql")
        return url

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        # PyMySQL's executemany escapes every value through its generic literal
        # path, in Python: about half of a purge's item insert. The same
        # multi-row INSERT text is built here with plain ASCII letters and digits
        # (hex pseudonyms), integers and NULL written as they are, and every
        # other value escaped by the driver once per distinct value.
        if conn.dialect.driver != "pymysql":
            super().bulk_insert(conn, table, columns, rows)
            return
        preparer = conn.dialect.identifier_preparer
        head = f"INSERT INTO {preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)}) VALUES "
        with driver_cursor(conn) as cursor:
            escape = cursor.connection.escape
            memo: dict[tuple[type, Any], str] = {}

            def literal(value: Any) -> str:
                kind = type(value)
                if value is None:
                    return "NULL"
                if kind is int:
                    return str(value)
                if kind is str and value.isascii() and value.isalnum():
                    return f"'{value}'"
                key = (kind, value)  # by type too: True, 1.0 and Decimal(1) are equal keys, not equal literals
                try:
                    return memo[key]
                except (KeyError, TypeError):  # TypeError: an unhashable value, escaped each time
                    text = str(escape(value))
                    if len(memo) < 10_000:
                        with contextlib.suppress(TypeError):
                            memo[key] = text
                    return text

            for start in range(0, len(rows), _INSERT_CHUNK):
                values = ",".join(
                    ["(" + ",".join([literal(v) for v in row]) + ")" for row in rows[start : start + _INSERT_CHUNK]]
                )
                cursor.execute(head + values)

    def new_connection(self, driver: str, cargs: Sequence[Any], cparams: dict[str, Any]) -> Any | None:
        # PyMySQL (1.1.1 and later) asked for no TLS option tries TLS if the
        # server offers it, and to be ready builds a fresh default SSL context
        # for every connection, loading the system's CA store: 40-80 ms of CPU
        # a connection on this machine, against 2 ms for the rest of the
        # connect, even when the server has no TLS at all. That context never
        # verifies anything (no CA given), so one per process does the same.
        if driver != "pymysql":
            return None
        return _shared_context_connection()(*cargs, **cparams)

    def on_connect(self, dbapi_conn: Any, record: Any, timeout: int) -> None:
        cursor = dbapi_conn.cursor()
        # The engine computes every instant in UTC; TIMESTAMP columns follow the session zone.
        cursor.execute("SET time_zone = '+00:00'")
        # Row locks (InnoDB) and table locks (LOCK TABLES, DDL: metadata locks) wait this long.
        cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {int(timeout)}, lock_wait_timeout = {int(timeout)}")
        # PyMySQL keeps the greeting's version text; other drivers keep a tuple of numbers (no "MariaDB" in it).
        greeting = getattr(dbapi_conn, "server_version", None)
        version = greeting if isinstance(greeting, str) and greeting else _server_version(cursor)
        if "mariadb" in version.lower():
            # MariaDB's subquery cache keys a correlated subquery by its outer
            # columns compared in their own collation: in a case-insensitive
            # (or PAD SPACE) subject column 'U1' and 'u1' share one entry, so
            # the open-erasure, hold and mask-request checks answered for one
            # and reused it for the other (a record erased or kept as its
            # twin's). The engine's correlated subqueries are keyed per record
            # or already decorrelated, so the cache saves little here
            # (bench/RESULTS.md, subqcache). MySQL has no such cache.
            cursor.execute("SET SESSION optimizer_switch = 'subquery_cache=off'")
        cursor.close()

    def prepare_timeouts(
        self, url: sa.URL, kwargs: dict[str, Any], connect: int, statement: int
    ) -> Callable[[Any, Any], None] | None:
        super().prepare_timeouts(url, kwargs, connect, statement)  # PyMySQL's connect_timeout
        read_timeout = "read_timeout" not in url.query
        if read_timeout:
            # PyMySQL reads the server's greeting under its read timeout: the
            # connect timeout bounds it, and the listener below widens it for
            # statements once the session is up.
            kwargs.setdefault("connect_args", {}).setdefault("read_timeout", connect)
        if not statement and not read_timeout:
            return None

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            if read_timeout and hasattr(dbapi_conn, "_read_timeout"):
                # PyMySQL has no public setter; the attribute is read before each packet.
                dbapi_conn._read_timeout = statement + 60 if statement else None
            if not statement:
                return
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT VERSION()")
            version = str(cursor.fetchone()[0])
            if "mariadb" in version.lower():
                cursor.execute(f"SET SESSION max_statement_time = {int(statement)}")
            else:
                cursor.execute(f"SET SESSION max_execution_time = {int(statement) * 1000}")
            cursor.close()

        return on_connect

    def instant_type(self) -> sa.types.TypeEngine[Any]:
        # DATETIME alone drops the microseconds.
        return mysql.DATETIME(fsp=6)

    # Named locks have no shared mode: a shard checks that no whole run holds
    # the database's lock (a whole run cannot see shards; docs/scaling.md).
    whole_run_lock_free_sql: ClassVar[str | None] = "SELECT IS_FREE_LOCK(CONCAT('retention:', DATABASE()))"

    # No gap locks between shards working on neighbouring keys.
    shard_isolation_level: ClassVar[str | None] = "READ COMMITTED"

    def binary_order(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return text.collate("utf8mb4_bin")

    def engine_comparable(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        # utf8mb4_unicode_520_ci beside utf8mb4_general_ci is "Illegal mix of
        # collations": an explicit binary one wins over both.
        return text.collate("utf8mb4_bin")

    def run_lock_statements(self, shard: str | None = None) -> tuple[str, str] | None:
        suffix = "" if shard is None else f":shard:{shard}"
        name = f"CONCAT('retention:', DATABASE(), '{suffix}')"
        return f"SELECT GET_LOCK({name}, 0)", f"SELECT RELEASE_LOCK({name})"

    def run_lock_held(self, conn: sa.Connection, suffix: str) -> bool | None:
        sql = "SELECT IS_USED_LOCK(CONCAT('retention:', DATABASE(), :suffix))"
        return conn.execute(sa.text(sql), {"suffix": suffix}).scalar() is not None

    def system_table(self, conn: sa.Connection, table: str, schema: str | None) -> str | None:
        if schema is not None and schema.lower() in _MYSQL_SYSTEM:
            return f"schema {schema} is a system schema of the server, never a dataset's"
        return None

    def lock_ledger_head(self, conn: sa.Connection, query: sa.Select[Any], advisory_key: int) -> sa.Select[Any]:
        # The first entry's row, locked by its primary key: a record lock
        # without a gap lock, so concurrent appenders (shards) queue on it
        # instead of deadlocking on the gap after the head (InnoDB, REPEATABLE
        # READ); then a locking read, which sees the newest committed head.
        table = query.get_final_froms()[0]
        assert isinstance(table, sa.Table)
        first = next(iter(table.primary_key.columns))
        conn.execute(sa.select(first).order_by(first).limit(1).with_for_update()).first()
        return query.with_for_update()

    # PyMySQL decodes rows in Python: fetching a batch's 5,000 keys cost
    # ~10 µs each, as much as the server's work on them. The size-th key
    # alone is one row; InnoDB still locks every row the locking read
    # passes over, so the range is locked as before.
    last_key_alone: ClassVar[bool] = True
    listed_collates: ClassVar[bool] = True
    # The predicate is a batch's costliest per-row work after the hashes (the impossible-date test, the day
    # join): a range that is all due needs it for its locking read only, not for its items and delete again,
    # while no hold, state or open erasure request is in place
    # (retention.engine.set_batches.BatchStatements.in_three_statements).
    whole_range_delete: ClassVar[bool] = True

    def refresh_statistics(self, conn: sa.Connection, table: str) -> None:
        # InnoDB recalculates persistent statistics itself after 10 % of a table
        # changed, in the background; a table that grows from empty during a run
        # gets them now. LOCAL: not written to the binary log (replicas plan for themselves).
        conn.execute(sa.text(f"ANALYZE LOCAL TABLE {table}")).all()

    def statistics_rows(self, conn: sa.Connection, table: str) -> int | None:
        rows = conn.execute(
            sa.text(
                "SELECT table_rows FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = :t"
            ),
            {"t": table},
        ).scalar()
        return None if rows is None else int(rows)

    def _column(self, conn: sa.Connection, table: str, column: str) -> sa.Row[Any] | None:
        return conn.execute(
            sa.text(
                "SELECT collation_name, column_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = :t AND column_name = :c"
            ),
            {"t": table, "c": column},
        ).one_or_none()

    def key_column_collation(self, conn: sa.Connection, table: str, column: str) -> str | None:
        found = self._column(conn, table, column)
        return None if found is None else found.collation_name

    def case_blind_key(self, conn: sa.Connection, table: str, column: str, main: str | None) -> tuple[str, str] | None:
        found = self._column(conn, table, column)
        if found is None:
            return None
        refusal = store_key_refusal(main, found.collation_name, server_key_collation(conn.dialect))
        if refusal is None:
            return None
        if refusal.alter_to is None:
            return found.collation_name, f"{refusal.why}; move the store to a server that has one"
        null = "NULL" if found.is_nullable == "YES" else "NOT NULL"
        statement = (
            f"ALTER TABLE {table} MODIFY {column} {found.column_type} CHARACTER SET utf8mb4 "
            f"COLLATE {refusal.alter_to} {null}"
        )
        made = "a store made before migration 0021_keypad or outside the migrations"
        return found.collation_name, f"{refusal.why} ({made}); run there: {statement}"

    def delete_listed(
        self,
        table: sa.Table,
        where: Sequence[ColumnElement[bool]],
        column: ColumnElement[Any],
        listed: ColumnElement[Any],
    ) -> sa.Delete:
        # MariaDB before 11.1 runs a single-table DELETE's IN (SELECT ...) as a
        # subquery per candidate row (every payload of the dataset, for the
        # archive's); the multi-table form (DELETE FROM t USING t, listed)
        # joins, a primary-key probe per listed value, and deletes from t alone.
        return table.delete().where(*where, column == listed)

    def key_table(
        self, conn: sa.Connection, name: str, key: sa.ColumnElement[Any], text: sa.types.TypeEngine[Any]
    ) -> dict[str, Any]:
        # One statement: ALTER TABLE and CREATE INDEX commit the transaction, even on a temporary table. The
        # selected column keeps its type, character set and collation; the declared ones come first (t nullable:
        # strict mode refuses a NOT NULL column without a default here, even for no rows).
        # MyISAM where the server lets it: the table is rewritten every batch (its 5,000 keys deleted, the next
        # inserted), which InnoDB does with undo records and index maintenance, MyISAM with neither (a quarter
        # of the batch's key writes on MariaDB; bench/RESULTS.md, archcost). Its rows need no rollback: every
        # batch empties it before writing its own (set_archive.SetArchive.choose). A key longer than MyISAM's
        # 1,000-byte index does not refuse it on MariaDB: Note 1071 and a prefix index (k(250) in utf8mb4).
        # Only a server that refuses MyISAM (_MYISAM_REFUSED) gets the default engine; any other error (a lock
        # wait, a deadlock, a savepoint the server no longer has) is the transaction's and propagates. A server
        # that substitutes (enforce_storage_engine without NO_ENGINE_SUBSTITUTION) gives its engine silently:
        # the log says which engine the table got, read back from the server.
        target = conn.dialect.identifier_preparer.quote(name)
        source = sa.select(key.label("k")).where(sa.false())
        create = f"CREATE TEMPORARY TABLE {target} (t {text.compile(conn.dialect)}, INDEX (k))"
        refused: int | None = None
        try:
            with conn.begin_nested():
                conn.execute(sa.text(f"{create} ENGINE=MyISAM {source.compile(conn)}"))
        except sa.exc.DBAPIError as exc:
            refused = _error_number(exc)
            if exc.connection_invalidated or refused not in _MYISAM_REFUSED:
                raise
            conn.execute(sa.text(f"{create} {source.compile(conn)}"))
        shown = str(conn.execute(sa.text(f"SHOW CREATE TABLE {target}")).one()[1])
        found = re.search(r"ENGINE=(\w+)", shown)
        engine = {"key_table_engine": found.group(1) if found else "unknown"}
        return engine if refused is None else {**engine, "myisam_refused": refused}

    def key_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # The engine's columns and the application's may use different
        # collations (utf8mb4_unicode_520_ci, utf8mb4_0900_ai_ci), and
        # comparing two implicit collations is an error: an explicit one, the engine's NO PAD binary key collation.
        # An integer + 0: a ZEROFILL column's text is padded ("000042"), the key a hold or state names is not.
        return KeyCollated(super().key_text(unpadded(column)))


def _server_version(cursor: Any) -> str:
    """The server's version string, for drivers whose connection does not keep the greeting's."""
    cursor.execute("SELECT VERSION()")
    return str(cursor.fetchone()[0])


@functools.cache
def _shared_context_connection() -> type:
    """PyMySQL's connection class, with the one SSL context of its "preferred TLS" mode built once per process.

    Only the call with no TLS option at all (``{}``) is shared: options from
    the URL, ``connect_args`` or an option file take PyMySQL's own path, and
    ``ssl_disabled`` builds no context. The first call builds the context the
    driver's own way, so the shared one is exactly what each connection would
    have built.
    """
    import pymysql.connections

    class SharedContextConnection(pymysql.connections.Connection):  # type: ignore[misc]
        _preferred: ClassVar[Any] = None

        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if not (isinstance(sslp, dict) and not sslp):
                return super()._create_ssl_ctx(sslp)
            cls = type(self)
            if cls._preferred is None:
                cls._preferred = super()._create_ssl_ctx(sslp)
            return cls._preferred

    return SharedContextConnection


def _error_number(exc: sa.exc.DBAPIError) -> int | None:
    """The server's error number of a driver error (PyMySQL, mysqlclient, mysql-connector: its first argument)."""
    number = getattr(exc.orig, "errno", None)
    if isinstance(number, int):
        return number
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None
