"""SQLite: untyped storage (dates as text), no row locks, no advisory lock."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import Dialect
from retention.errors import ConfigError
from retention.timing import datetext

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

    def database_file(self, url: sa.URL) -> Path | None:
        return Path(url.database) if url.database else None

    def on_connect(self, dbapi_conn: Any, record: Any, timeout: int, journal_mode: str | None = None) -> None:
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
