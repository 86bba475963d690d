"""PostgreSQL: advisory locks, COPY, ``= ANY(array)``, aware timestamps, range partitions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from retention.dialects.base import DATETIME_KINDS, Dialect
from retention.dialects.bulk_sql import driver_cursor, source_columns
from retention.dialects.item_sql import BoundKey, Key, hmac_pads

_RANGE = re.compile(r"^FOR VALUES FROM \((?P<lower>.+)\) TO \((?P<upper>.+)\)$")

# PostgreSQL holds values psycopg cannot load (infinity, BC, after year 9999).
# Clamped into this span they keep their class (zero below 1900, future
# above any as-of instant), and their text is shown instead.
_PG_LOW, _PG_HIGH = "1000-01-01", "9999-12-01"

_POSTGRES_SYSTEM = frozenset({"pg_catalog", "information_schema"})

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(tuples: list[tuple[Any, ...]], chunk: int = 500) -> Iterator[bytes]:
    """Rows in PostgreSQL's COPY text format, a few hundred at a time.

    Formatting the text here, with each distinct value formatted once, costs
    far less than adapting every value of every row in the driver; chunks
    let the server insert while the next ones are formatted.
    """
    memo: dict[Any, str] = {None: "\\N"}

    def field(value: Any) -> str:
        if type(value) is str and value.isalnum():
            return value
        try:
            return memo[value]
        except KeyError:
            if isinstance(value, dt.datetime):
                text = value.isoformat(sep=" ")
            elif isinstance(value, str):
                text = value.translate(_COPY_ESCAPES)
            else:
                text = str(value)
            if len(memo) < 10_000:
                memo[value] = text
            return text

    for start in range(0, len(tuples), chunk):
        lines = ["\t".join([field(v) for v in values]) for values in tuples[start : start + chunk]]
        lines.append("")
        yield "\n".join(lines).encode("utf-8")


class PostgreSQLDialect(Dialect):
    """PostgreSQL (psycopg 3)."""

    names = ("postgresql",)
    aware_timestamptz: ClassVar[bool] = True
    supports_partition_drop: ClassVar[bool] = True
    listed_collates: ClassVar[bool] = True
    read_only_session_sql: ClassVar[str | None] = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"

    def driver_url(self, url: sa.URL) -> sa.URL:
        if url.drivername == "postgresql":
            return url.set(drivername="postgresql+psycopg")
        return url

    def prepare_engine(
        self, url: sa.URL, kwargs: dict[str, Any], timeout: int
    ) -> tuple[sa.URL, Callable[[Any, Any], None] | None]:
        if url.drivername == "postgresql+psycopg":
            # No server-side prepared statements: their generic plans ignore the
            # actual keys of each batch's IN list and fall back to scanning.
            kwargs.setdefault("connect_args", {}).setdefault("prepare_threshold", None)
        return super().prepare_engine(url, kwargs, timeout)

    def on_connect(self, dbapi_conn: Any, record: Any, timeout: int) -> None:
        cursor = dbapi_conn.cursor()
        # Any statement waiting longer than this for a lock (LOCK TABLE elsewhere) fails with 55P03.
        cursor.execute(f"SET lock_timeout = {int(timeout) * 1000}")
        cursor.close()
        dbapi_conn.commit()  # SET inside a transaction that rolls back would be undone

    def prepare_timeouts(
        self, url: sa.URL, kwargs: dict[str, Any], connect: int, statement: int
    ) -> Callable[[Any, Any], None] | None:
        super().prepare_timeouts(url, kwargs, connect, statement)  # libpq's connect_timeout
        if not statement:
            return None

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute(f"SET statement_timeout = {int(statement) * 1000}")
            cursor.close()
            dbapi_conn.commit()  # a SET in a transaction that rolls back would be undone

        return on_connect

    def binary_order(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return text.collate("C")

    def exact_text(self, text: ColumnElement[Any], merging: bool = True) -> ColumnElement[Any]:
        # The database's default collation: deterministic (equal only when byte-equal; a nondeterministic one
        # cannot be a database's default). Only over a nondeterministic column: any deterministic collation is
        # exact already, and the COLLATE would cost an index on a column of another one ("C").
        return text.collate("default") if merging else text

    def merging_collation(self, conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
        return nondeterministic_collation(conn, source)

    def folding_collation(self, conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
        return folding_collation(conn, source)

    def run_lock_statements(self, shard: str | None = None) -> tuple[str, str] | None:
        database = "hashtext('retention:' || current_schema())"
        if shard is None:
            return f"SELECT pg_try_advisory_lock({database})", f"SELECT pg_advisory_unlock({database})"
        name = f"hashtext('retention:' || current_schema() || ':shard:{shard}')"
        # A shard shares the database's lock with the other shards (a whole run
        # cannot start beside them, nor they beside it) and holds its own alone.
        return (
            f"SELECT pg_try_advisory_lock_shared({database}) AND pg_try_advisory_lock({name})",
            f"SELECT pg_advisory_unlock_shared({database}), pg_advisory_unlock({name})",
        )

    def run_lock_held(self, conn: sa.Connection, suffix: str) -> bool | None:
        # pg_advisory_lock(bigint): classid is the key's high 32 bits, objid its low 32 bits, objsubid 1.
        sql = """
            WITH k AS (SELECT hashtext('retention:' || current_schema() || :suffix)::bigint AS key)
            SELECT EXISTS (
                SELECT 1 FROM pg_locks, k
                WHERE locktype = 'advisory' AND granted AND objsubid = 1
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND classid = ((k.key >> 32) & 4294967295)::oid AND objid = (k.key & 4294967295)::oid
            )"""
        return bool(conn.execute(sa.text(sql), {"suffix": suffix}).scalar())

    head_read_locks: ClassVar[bool] = False  # the lock is its own statement; the head read is plain
    tracks_partitions: ClassVar[bool] = True

    def byte_position(self, haystack: ColumnElement[Any], needle: Any) -> ColumnElement[Any]:
        """``position`` on ``bytea``, called by its catalog name.

        ``position(a, b)`` is not valid SQL: only the catalog function takes a
        comma (``position(b IN a)`` is the keyword form).
        """
        return sa.func.pg_catalog.position(haystack, needle)

    def lock_ledger_head(self, conn: sa.Connection, query: sa.Select[Any], advisory_key: int) -> sa.Select[Any]:
        # A transaction-level advisory lock: also serialises appenders to an empty chain.
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key)))
        return query

    set_based_items: ClassVar[bool] = True

    def stored_date(self, value: ColumnElement[Any], kind: str, column_type: Any) -> ColumnElement[Any]:
        if getattr(column_type, "timezone", False):
            # The UTC date of an instant, whatever the session's zone.
            return sa.cast(sa.func.timezone("UTC", value), sa.Date)
        return sa.cast(value, sa.Date)

    def key_parameters(self, bound: BoundKey, key: bytes) -> dict[str, Any]:
        inner, outer = hmac_pads(key)
        return {f"{bound.name}_inner": inner, f"{bound.name}_outer": outer}

    def hmac_hex(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.func.encode(self.hmac_bytes(key, prefix, text), "hex")

    def hmac_bytes(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        # Built-in sha256() (PostgreSQL 11) over the pre-absorbed pads: no pgcrypto needed.
        start: ColumnElement[Any]
        end: ColumnElement[Any]
        if isinstance(key, BoundKey):
            start = key.param("inner", sa.LargeBinary).op("||")(sa.literal(prefix, sa.LargeBinary))
            end = key.param("outer", sa.LargeBinary)
        else:
            inner, outer = hmac_pads(key)
            start, end = sa.literal(inner + prefix, sa.LargeBinary), sa.literal(outer, sa.LargeBinary)
        message = start.op("||")(sa.func.convert_to(text, "UTF8"))
        digest = end.op("||")(sa.func.sha256(message))
        return sa.func.sha256(digest, type_=sa.LargeBinary)

    def block_item(
        self, record: ColumnElement[Any], subject: ColumnElement[Any], due: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        none = sa.literal(bytes(32), sa.LargeBinary)
        return record.op("||", return_type=sa.LargeBinary)(sa.func.coalesce(subject, none)).op(
            "||", return_type=sa.LargeBinary
        )(due)

    def ordered_bytes(self, value: ColumnElement[Any], order: ColumnElement[Any]) -> ColumnElement[Any]:
        empty = sa.literal(b"", sa.LargeBinary)
        return sa.func.string_agg(value, postgresql.aggregate_order_by(empty, order), type_=sa.LargeBinary)

    def row_address(self, conn: sa.Connection, table: sa.Table) -> ColumnElement[Any] | None:
        # ctid, on a plain table only: a partitioned or inherited table's children repeat each other's ctids.
        name = conn.dialect.identifier_preparer.format_table(table)
        plain = conn.execute(
            sa.text("SELECT relkind = 'r' AND NOT relhassubclass FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": name},
        ).scalar()
        return sa.column("ctid", NullType(), _selectable=table) if plain else None

    def for_update(self, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
        return query.with_for_update(of=table) if table is not None else query.with_for_update()

    def probe_per_row(self, query: sa.Select[Any]) -> sa.Select[Any]:
        # OFFSET 0 keeps the planner from turning NOT EXISTS into an anti-join,
        # which it may plan from stale statistics as a scan of every state row
        # per candidate (docs/performance.md, "Plans that do not decay").
        return query.offset(0)

    def statistics_rows(self, conn: sa.Connection, table: str) -> int | None:
        rows = conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
        ).scalar()
        return None if rows is None or rows < 0 else int(rows)

    @contextmanager
    def serial_scans(self, conn: sa.Connection) -> Iterator[None]:
        """``max_parallel_workers_per_gather`` 0 for the block (local to the transaction), then as it was.

        A parallel count starts its workers once per partition, which cost more than they saved on
        200k-row partitions (9 partitions: 0.59-0.85 s parallel, 0.39 s serial, load 8.6). Not restored
        when the block raises: the transaction is then aborted, and the setting dies with it.
        """
        previous = conn.execute(
            sa.text("SELECT current_setting('max_parallel_workers_per_gather'), set_config(:name, '0', true)"),
            {"name": "max_parallel_workers_per_gather"},
        ).one()[0]
        yield
        conn.execute(
            sa.text("SELECT set_config(:name, :value, true)"),
            {"name": "max_parallel_workers_per_gather", "value": previous},
        )

    def bulk_insert(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        # COPY: one statement, no per-value adaptation in the driver.
        preparer = conn.dialect.identifier_preparer
        target = preparer.format_table(table)
        names = ", ".join(preparer.quote(c) for c in columns)
        with driver_cursor(conn) as cursor, cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for chunk in copy_text(rows):
                copy.write(chunk)

    def insert_then_update(self, conn: sa.Connection, insert: sa.Insert, update: sa.Update) -> None:
        # WITH w AS (INSERT ...) UPDATE ...: both run, in order of no consequence (they touch different tables).
        conn.execute(update.add_cte(insert.cte("w")))

    def upsert_add(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], column: str) -> None:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        keys = [c.name for c in table.primary_key.columns]
        conn.execute(
            pg.on_conflict_do_update(index_elements=keys, set_={column: table.c[column] + pg.excluded[column]}), rows
        )

    def json_text_object(self, pairs: Sequence[tuple[str, ColumnElement[Any]]]) -> ColumnElement[Any]:
        # json_build_object keeps the keys in the order given (jsonb would sort them by length).
        arguments: list[Any] = []
        for name, value in pairs:
            arguments += [sa.literal(name, sa.String), sa.cast(value, sa.Text)]
        return sa.cast(sa.func.json_build_object(*arguments), sa.Text)

    def one_of(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        # As an IN list, thousands of parameters that psycopg parses out of the
        # SQL text on every execution; as one array a single parameter, and
        # PostgreSQL still looks each key up in the index.
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))

    def range_partitions(self, conn: sa.Connection, parent: str, column: str) -> list[tuple[str, str, str, str]]:
        key = conn.execute(
            sa.text(
                "SELECT pt.partstrat, pt.partnatts, a.attname FROM pg_partitioned_table pt "
                "JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0] "
                "WHERE pt.partrelid = to_regclass(:parent)"
            ),
            {"parent": parent},
        ).first()
        if key is None or key.partstrat != "r" or key.partnatts != 1 or key.attname != column:
            return []
        rows = conn.execute(
            sa.text(
                "SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = to_regclass(:parent) ORDER BY c.relname"
            ),
            {"parent": parent},
        ).all()
        result = []
        for row in rows:
            match = _RANGE.match(row.bound or "")
            if match is None:  # DEFAULT partition: anything may be in it
                continue
            result.append((row.nspname, row.relname, match["lower"], match["upper"]))
        return result

    def lock_for_partition_drop(self, parent: str) -> str:
        return f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE"

    def system_table(self, conn: sa.Connection, table: str, schema: str | None) -> str | None:
        if schema is not None and (schema.lower() in _POSTGRES_SYSTEM or schema.lower().startswith("pg_")):
            return f"schema {schema} is a system schema of the server, never a dataset's"
        # The search path looks in pg_catalog first: where the name resolves.
        preparer = conn.dialect.identifier_preparer
        qualified = preparer.quote(table) if schema is None else f"{preparer.quote(schema)}.{preparer.quote(table)}"
        found = conn.execute(
            sa.text(
                "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(:name)"
            ),
            {"name": qualified},
        ).scalar()
        if found is not None and (found in _POSTGRES_SYSTEM or str(found).startswith("pg_")):
            return f"this table resolves to the system schema {found} (searched first), never a dataset"
        return None

    def datetime_column_problem(self, clock_type: str, col_type: sa.types.TypeEngine[Any]) -> str | None:
        # Two timestamp types: the clock kind must say which one it reads.
        if not isinstance(col_type, sa.DateTime):
            return None
        aware = bool(getattr(col_type, "timezone", False))
        if clock_type == "timestamptz" and not aware:
            return "is TIMESTAMP WITHOUT TIME ZONE; declare the clock 'timestamp' with its timezone"
        if clock_type == "timestamp" and aware:
            return "is TIMESTAMP WITH TIME ZONE; declare the clock 'timestamptz'"
        return None

    def epoch_text_valid(self, value: ColumnElement[Any]) -> ColumnElement[bool]:
        return self._regex_valid(value, "~")

    def safe_clock_columns(self, column: ColumnElement[Any], kind: str) -> list[ColumnElement[Any]]:
        raw = sa.type_coerce(column, NullType())
        if kind not in DATETIME_KINDS:
            return [raw]
        low: ColumnElement[Any] = sa.literal_column(f"'{_PG_LOW}'")
        high: ColumnElement[Any] = sa.literal_column(f"'{_PG_HIGH}'")
        clamped = sa.type_coerce(sa.case((column < low, low), (column > high, high), else_=column), NullType())
        outside = sa.case((sa.or_(column < low, column > high), sa.cast(column, sa.Text)), else_=None)
        return [clamped, outside]


_NONDETERMINISTIC = sa.text(
    """
    SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
    WHERE a.attrelid = to_regclass(:relation) AND a.attname = :column AND NOT c.collisdeterministic
    """
)


_COLLATION = sa.text(
    """
    SELECT n.nspname, c.collname FROM pg_attribute a
    JOIN pg_collation c ON c.oid = a.attcollation JOIN pg_namespace n ON n.oid = c.collnamespace
    WHERE a.attrelid = to_regclass(:relation) AND a.attname = :column AND c.collname <> 'default'
    """
)
_FOLD_PROBE = "ÀÉÎÕÜÇÑÆØÅŒΣДЖ"
"""Non-ASCII capitals of Latin, Greek and Cyrillic addresses; a ``C`` ctype folds none of them."""


def folding_collation(conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
    """The collation of a table column in ``source`` whose lower() folds differently from the default, or None."""
    # Asked of the server rather than guessed from names: "C", "POSIX", or a libc/ICU collation of another
    # ctype. The probe holds capitals that a C ctype leaves and others fold.
    preparer = conn.dialect.identifier_preparer
    for table, column in source_columns(source):
        found = conn.execute(_COLLATION, {"relation": preparer.format_table(table), "column": column}).first()
        if found is None:
            continue
        collation = f"{preparer.quote(found.nspname)}.{preparer.quote(found.collname)}"
        probe = sa.text(f"SELECT lower(:probe COLLATE {collation}) = lower(:probe)")
        if not conn.execute(probe, {"probe": _FOLD_PROBE}).scalar():
            return str(found.collname)
    return None


def nondeterministic_collation(conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
    """The nondeterministic collation of a table column in ``source`` (lookups through other tables too), or None.

    One catalog read per column; the planner asks once per dataset and run.
    A column of a domain carries the domain's collation in ``attcollation``.
    """
    preparer = conn.dialect.identifier_preparer
    for table, column in source_columns(source):
        found = conn.execute(_NONDETERMINISTIC, {"relation": preparer.format_table(table), "column": column})
        name = found.scalar()
        if name is not None:
            return str(name)
    return None
