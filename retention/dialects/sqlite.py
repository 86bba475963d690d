"""SQLite: untyped storage (dates as text), no row locks, no advisory lock."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from retention.dialects.base import Dialect
from retention.dialects.bulk_sql import source_columns
from retention.dialects.item_sql import BoundKey, Key, hmac_pads
from retention.errors import ConfigError
from retention.timing import datetext

PSEUDONYM_INDEX_PREFIX = 16
"""Characters of an item pseudonym SQLite's indexes keep (migration 0017; 64 bits, as MariaDB's prefix)."""

SQLITE_JOURNAL_MODES = ("delete", "truncate", "persist", "wal")
"""Journal modes a SQLite URL may ask for with ``?journal_mode=``: persistent ones only."""


def _typeof_in(value: ColumnElement[Any], *types: str) -> ColumnElement[bool]:
    """SQLite's storage class of ``value`` is one of ``types`` (no expanding IN list)."""
    kind = sa.func.typeof(value)
    return sa.or_(*(kind == sa.literal(t, sa.String) for t in types))


def _glob(value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    return value.op("GLOB", is_comparison=True)(sa.literal(pattern, sa.String))


def _sqlite_journal_mode(url: sa.URL) -> tuple[sa.URL, str | None]:
    """The ``journal_mode`` a SQLite URL asks for (taken out of the URL), or None."""
    value = url.query.get("journal_mode")
    if value is None:
        return url, None
    mode = (value if isinstance(value, str) else value[-1]).lower()
    if mode not in SQLITE_JOURNAL_MODES:
        raise ConfigError(
            f"unknown SQLite journal_mode {mode!r} in the database URL; valid: {', '.join(SQLITE_JOURNAL_MODES)}"
        )
    return url.difference_update_query(["journal_mode"]), mode


class SQLiteDialect(Dialect):
    """SQLite: a column of any declared type may hold text; the write lock is the database's."""

    names = ("sqlite",)
    datetimes_as_text: ClassVar[bool] = True
    embedded: ClassVar[bool] = True
    samples_by_key_order: ClassVar[bool] = True
    batch_holds_write_lock: ClassVar[bool] = True
    write_lock_on_first_write: ClassVar[bool] = True
    read_only_session_sql: ClassVar[str | None] = "PRAGMA query_only = ON"
    read_only_needs_commit: ClassVar[bool] = False

    def prepare_engine(
        self, url: sa.URL, kwargs: dict[str, Any], timeout: int
    ) -> tuple[sa.URL, Callable[[Any, Any], None] | None]:
        url, journal_mode = _sqlite_journal_mode(url)
        # SQLite does its own transactions badly through pysqlite's defaults;
        # autocommit off and explicit BEGIN gives real transactional batches.
        kwargs.setdefault("connect_args", {}).setdefault("timeout", timeout)
        return url, functools.partial(self.on_connect, timeout=timeout, journal_mode=journal_mode)

    def prepare_timeouts(
        self, url: sa.URL, kwargs: dict[str, Any], connect: int, statement: int
    ) -> Callable[[Any, Any], None] | None:
        # No server to wait for: lock waits are bounded by busy_timeout alone.
        return None

    def exact_text(self, text: ColumnElement[Any], merging: bool = True) -> ColumnElement[Any]:
        # A column's NOCASE or RTRIM survives CAST, and decides a comparison when the column is on the left.
        # Always: the CAST already keeps an index on the column from serving, so BINARY costs nothing.
        return text.collate("BINARY")

    def fold_case(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        # SQLite's LOWER folds ASCII only, the pseudonyms every capital: a record's live row and its state
        # row would answer to different typings. Not the built-in replaced: an index on lower(...) in the
        # application's schema would then disagree with its rows, and a delete through it fail as corrupt.
        return sa.func.retention_lower(text, type_=sa.String)

    def merging_collation(self, conn: sa.Connection, source: ColumnElement[Any]) -> str | None:
        # NOCASE or RTRIM as the column's declaration names it (SQLite keeps nothing but the CREATE statement).
        # For check's warning: exact_text is BINARY whatever this says.
        preparer = conn.dialect.identifier_preparer
        for table, column in source_columns(source):
            master = f"{preparer.quote_schema(table.schema)}.sqlite_master" if table.schema else "sqlite_master"
            query = sa.text(f"SELECT sql FROM {master} WHERE type = 'table' AND name = :name")
            created = conn.execute(query, {"name": table.name}).scalar()
            name = re.escape(column)
            declared = (
                rf"(?:^|[(,])\s*(?:\"{name}\"|`{name}`|\[{name}\]|{name})\s[^,]*?"
                r"\bCOLLATE\s+[\"'`\[]?(NOCASE|RTRIM)\b"
            )
            found = re.search(declared, created or "", re.IGNORECASE | re.DOTALL)
            if found:
                return found.group(1).upper()
        return None

    def same_database(self, first: sa.URL, second: sa.URL) -> bool:
        # The same file, whatever the path's spelling; two in-memory databases never.
        if not first.database or not second.database or ":memory:" in (first.database, second.database):
            return False
        return Path(first.database).resolve() == Path(second.database).resolve()

    def database_file(self, url: sa.URL) -> Path | None:
        return Path(url.database) if url.database else None

    def on_connect(self, dbapi_conn: Any, record: Any, timeout: int, journal_mode: str | None = None) -> None:
        # Every connection, not only a run's (prepare_items): plan, check, person, the console fold addresses too.
        dbapi_conn.create_function("retention_lower", 1, _lower, deterministic=True)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # A writer waits this long for another connection's write transaction, then fails (SQLITE_BUSY).
        cursor.execute(f"PRAGMA busy_timeout={int(timeout) * 1000}")
        if journal_mode is not None:
            # Persistent: the application's own connections see it too. Only on request.
            cursor.execute(f"PRAGMA journal_mode={journal_mode}")
        # 64 MiB of page cache instead of 2: the ledger's pseudonym indexes take
        # inserts at random places, and a nightly purge writes one per record.
        cursor.execute("PRAGMA cache_size=-65536")
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            # In WAL mode, synchronous=NORMAL means a commit no longer waits for fsync.
            # A power cut may lose the last batches, but each batch's data change and
            # ledger entries are lost or kept together (in rollback-journal modes it
            # could corrupt the file, so the default FULL stays there).
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint every ~40 MiB of WAL instead of every 4: pages that batch after
            # batch dirties (index leaves) are then copied back to the database once.
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
        # ... and give the disk back once a checkpoint has emptied a journal that grew.
        cursor.execute("PRAGMA journal_size_limit=67108864")
        cursor.close()

    head_read_locks: ClassVar[bool] = False  # the lock is its own statement; the head read is plain

    def lock_ledger_head(self, conn: sa.Connection, query: sa.Select[Any], advisory_key: int) -> sa.Select[Any]:
        # A second writer cannot commit the same seq (primary key), and its
        # transaction is rolled back whole, so no two entries share a predecessor.
        return query

    set_based_items: ClassVar[bool] = True

    def stored_date(self, value: ColumnElement[Any], kind: str, column_type: Any) -> ColumnElement[Any]:
        # The normal form (retention.timing.datetext) starts with the UTC date, as a date's text does.
        return sa.func.substr(value, 1, 10)

    def prepare_items(self, conn: sa.Connection) -> None:
        # Deterministic functions of this process: the run key stays in it (SQLite is in-process).
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.create_function("retention_hmac_hex", 3, _hmac_hex, deterministic=True)
        raw.create_function("retention_hmac_bytes", 3, _hmac_bytes, deterministic=True)
        raw.create_aggregate("retention_block", 3, _Block)
        raw.create_aggregate("retention_keyed_block", 6, _KeyedBlock)

    def key_parameters(self, bound: BoundKey, key: bytes) -> dict[str, Any]:
        return {f"{bound.name}_key": key}

    def hmac_hex(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.func.retention_hmac_hex(_key_value(key), sa.literal(prefix, sa.LargeBinary), text)

    def hmac_bytes(self, key: Key, prefix: bytes, text: ColumnElement[Any]) -> ColumnElement[Any]:
        prefix_bytes = sa.literal(prefix, sa.LargeBinary)
        return sa.func.retention_hmac_bytes(_key_value(key), prefix_bytes, text, type_=sa.LargeBinary)

    def block_body(
        self, record: ColumnElement[Any], subject: ColumnElement[Any], due: ColumnElement[Any]
    ) -> ColumnElement[Any]:
        # One registered aggregate builds and sorts the items (no ORDER BY inside aggregates before SQLite
        # 3.44, and || would turn the bytes into text); block_item is then not needed here.
        return sa.func.retention_block(record, subject, due, type_=sa.LargeBinary)

    keyed_blocks: ClassVar[bool] = True

    def keyed_block_body(
        self,
        key: Key,
        prefixes: tuple[bytes, bytes],
        record_text: ColumnElement[Any],
        subject_text: ColumnElement[Any],
        due: ColumnElement[Any],
    ) -> ColumnElement[Any]:
        # Each call out of SQLite into Python costs about as much as the HMAC it makes: one a row, not three.
        constants = (sa.literal(value, sa.LargeBinary) for value in prefixes)
        return sa.func.retention_keyed_block(
            _key_value(key), *constants, record_text, subject_text, due, type_=sa.LargeBinary
        )

    def pseudonym_in(self, column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
        # The index holds ``substr(column, 1, 16)`` (migration 0017): the query must name that very expression,
        # its numbers written out (a bound parameter is not the indexed expression), and the full value then
        # keeps exact matches only. That full comparison goes through a no-op unary plus: with one value,
        # ``column = 'v'`` lets SQLite propagate the constant into ``substr(column, ...)``, which then no longer
        # matches the index, and the items are scanned (tests/test_sqlite_item_lookups.py).
        prefix = sa.func.substr(column, sa.literal_column("1"), sa.literal_column(str(PSEUDONYM_INDEX_PREFIX)))
        exact = UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)
        return sa.and_(prefix.in_(sorted({v[:PSEUDONYM_INDEX_PREFIX] for v in values})), exact.in_(values))

    def for_update(self, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
        # No row locks: the batch holds SQLite's single write lock.
        return query

    def last_of_batch(
        self, conn: sa.Connection, query: sa.Select[Any], size: int, parameters: Mapping[str, Any] | None = None
    ) -> tuple[Any, int]:
        # A batch's 5,000 keys fetched as rows cost a fifth of a set-based purge (SQLAlchemy rows and the
        # collections they set off), and without row locks nothing is gained by fetching them: how many and
        # the greatest (by the key's own collation, which the subquery keeps) come back as one row. The
        # size-th key alone (last_key_alone), then every key where fewer were left, read the rows past the
        # last due one twice at a run's end (keys that follow time: every row not yet due, date-tested).
        chosen = query.subquery("chosen")
        found, last = conn.execute(sa.select(sa.func.count(), sa.func.max(chosen.c[0])), parameters).one()
        return (last, int(found)) if found else (None, 0)

    # The due predicate (a datetime() round trip a row, the day join) would otherwise run three times a batch.
    # The batch holds the write lock from its first statement: no session changes the range between its count
    # and its delete (retention.engine.set_batches.BatchStatements.in_three_statements).
    whole_range_delete: ClassVar[bool] = True

    def upsert_add(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], column: str) -> None:
        from sqlalchemy.dialects.sqlite import insert as lite_insert

        lite = lite_insert(table)
        keys = [c.name for c in table.primary_key.columns]
        conn.execute(
            lite.on_conflict_do_update(index_elements=keys, set_={column: table.c[column] + lite.excluded[column]}),
            rows,
        )

    def system_table(self, conn: sa.Connection, table: str, schema: str | None) -> str | None:
        if table.lower().startswith("sqlite_") or (schema or "").lower().startswith("sqlite_"):
            return "this is an SQLite system table, never a dataset"
        return None

    def refresh_statistics(self, conn: sa.Connection, table: str) -> None:
        # Without sqlite_stat1 SQLite plans from its own heuristics (an index on
        # an equality is taken), and creating statistics would change the
        # application's plans too; only statistics someone keeps are kept fresh.
        if self._keeps_statistics(conn):
            conn.execute(sa.text(f"ANALYZE {table}"))

    @staticmethod
    def _keeps_statistics(conn: sa.Connection) -> bool:
        query = sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        return conn.execute(query).first() is not None

    def statistics_rows(self, conn: sa.Connection, table: str) -> int | None:
        if not self._keeps_statistics(conn):
            return None
        stat = conn.execute(sa.text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t LIMIT 1"), {"t": table}).scalar()
        return None if stat is None else int(str(stat).split()[0])

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


def _key_value(key: Key) -> ColumnElement[Any]:
    """The key as the functions below take it: its bytes written in, or the :class:`BoundKey`'s parameter."""
    return key.param("key", sa.LargeBinary) if isinstance(key, BoundKey) else sa.literal(key, sa.LargeBinary)


def _hmac_pads(key: bytes, prefix: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 under ``key`` as two hash states: the inner one after ``prefix``, the outer one.

    :class:`_KeyedBlock` makes them on a statement's first row and copies
    them for each row: ``hmac.new`` a row cost 7.6 µs, copying these two
    states 2.8 µs (RFC 2104; a key longer than a block is hashed first, as
    ``hmac`` does). Never cached beyond the statement: the key is a run's,
    and a process (a worker) runs many runs; no state of it may outlive its run.
    """
    inner_pad, outer_pad = hmac_pads(hashlib.sha256(key).digest() if len(key) > 64 else key)
    inner = hashlib.sha256(inner_pad)
    inner.update(prefix)
    return inner, hashlib.sha256(outer_pad)


def _lower(value: str | int | float | bytes | None) -> str | None:
    """Python's ``str.lower``, as :func:`retention.ledger.pseudonyms.normalise_email` folds; text as LOWER casts it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").lower()
    return str(value).lower()


def _hmac_hex(key: bytes, prefix: bytes, text: str | int | None) -> str | None:
    digest = _hmac_bytes(key, prefix, text)
    return None if digest is None else digest.hex()


def _hmac_bytes(key: bytes, prefix: bytes, text: str | int | None) -> bytes | None:
    # Not on the set-based writer's path (its block aggregate keys the rows itself): no state kept between calls.
    if text is None:
        return None
    return hmac.new(key, prefix + str(text).encode("utf-8"), hashlib.sha256).digest()


class _Block:
    """``retention_block(record, subject, due)``: the group's format-5 items, sorted (retention.ledger.blocks).

    A row without a record or due is left out, as SQL aggregates leave out
    NULLs: the writer compares the body's length with its row count.
    """

    _NONE = bytes(32)

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def step(self, record: bytes | None, subject: bytes | None, due: bytes | str | None) -> None:
        if record is None or due is None:
            return
        text = due.encode("ascii") if isinstance(due, str) else due
        self.items.append(record + (self._NONE if subject is None else subject) + text)

    def finalize(self) -> bytes | None:
        if not self.items:
            return None
        self.items.sort()
        return b"".join(self.items)


class _KeyedBlock:
    """``retention_keyed_block(key, record prefix, subject prefix, record text, subject text, due)``.

    The bytes of ``retention_block(retention_hmac_bytes(key, record prefix,
    record text), retention_hmac_bytes(key, subject prefix, subject text),
    due)`` in one call per row: the HMACs are made here from the pads of the
    group's first row (the key and prefixes are the statement's constants),
    which go with the aggregate when the statement ends.
    A NULL subject text is no subject (32 zero bytes); a row without a record
    or due is left out, as in :class:`_Block`.

    The cheapest way found to make these bytes on Python's own sqlite3
    (bench/sqlite_parts.py, bench/RESULTS.md branch sqlhash, same process):
    ``hmac.digest`` (OpenSSL's one-shot) costs 1.5x, as it hashes the key's
    pads again for every pseudonym; values kept in ``step`` and hashed in
    ``finalize`` 1.1x; copies of a C HMAC object 1.2x; sqlean.py's C
    ``sha256()`` making the items in SQL 1.1x (no saved pad states).
    """

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.pads: tuple[Any, Any, Any, Any] | None = None

    def step(
        self,
        key: bytes,
        record_prefix: bytes,
        subject_prefix: bytes,
        record: str | int | None,
        subject: str | int | None,
        due: bytes | str | None,
    ) -> None:
        if record is None or due is None:
            return
        pads = self.pads
        if pads is None:
            pads = self.pads = (*_hmac_pads(key, record_prefix), *_hmac_pads(key, subject_prefix))
        record_inner, record_outer, subject_inner, subject_outer = pads
        # Both HMACs are Keyed.digest (retention.ledger.pseudonyms) copied inline on purpose: no call a row.
        # tests/test_set_purge.py holds the blocks they make to hmac.new.
        inner = record_inner.copy()
        inner.update(record.encode("utf-8") if type(record) is str else str(record).encode("utf-8"))
        outer = record_outer.copy()
        outer.update(inner.digest())
        item = outer.digest()
        if subject is None:
            item += _Block._NONE
        else:
            inner = subject_inner.copy()
            inner.update(subject.encode("utf-8") if type(subject) is str else str(subject).encode("utf-8"))
            outer = subject_outer.copy()
            outer.update(inner.digest())
            item += outer.digest()
        self.items.append(item + (due.encode("ascii") if type(due) is str else due))

    def finalize(self) -> bytes | None:
        self.pads = None  # the run key's states: not one moment longer than the statement
        if not self.items:
            return None
        self.items.sort()
        return b"".join(self.items)
