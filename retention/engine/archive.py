"""The intermediate archive: minimised payloads kept apart from live data.

By default the payloads live in the engine's own ``retention_archive``
table, written in the same transaction as the source change. With a
separate archive database (its own URL and access rights) the two cannot
share a transaction, so the order is chosen to lose nothing: payloads are
written and committed *before* the source change commits (a crash in
between leaves a payload whose record is still live; the rerun rewrites it),
and deleted only *after* the purge commits (a crash in between leaves an
orphan payload, which the next run sweeps).

Nothing leaves the archive without a ledger entry: a payload is deleted in
the purge's own transaction (same database), or after the transaction that
wrote its ``archived->purged`` entry committed (separate database), and the
sweep removes only payloads whose purge the main database's ledger records.
A separate archive store is bound to the main database it serves (a random
id kept in the main database's ``retention_identity``, written into the
store on first use); a run pointed at another main database is refused
before it touches a payload.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
import structlog

from retention.dialects import dialect_for, same_database
from retention.engine.statistics import note_changed
from retention.errors import ConfigError
from retention.ledger import items as ledger_items
from retention.store import tables as store
from retention.store.config import safe_url
from retention.timing.clock import utcnow

log = structlog.get_logger("retention")


class ArchiveStore(Protocol):
    """Where archived payloads go."""

    def bind(self, engine: sa.Engine) -> None: ...

    def put(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None: ...

    def delete(self, conn: sa.Connection, dataset: str, keys: Sequence[str]) -> None: ...

    def after_commit(self) -> None: ...

    def after_rollback(self) -> None: ...

    def sweep(self, engine: sa.Engine, secret: bytes) -> int: ...


def database_id(engine: sa.Engine) -> str:
    """This database's random id (created on first use), to which an archive store is bound."""
    table = store.identity
    query = sa.select(table.c.value).where(table.c.name == "database")
    with engine.begin() as conn:
        found = conn.execute(query).scalar()
        if found is not None:
            return str(found)
        try:
            with conn.begin_nested():
                conn.execute(table.insert().values(name="database", value=uuid.uuid4().hex, created_at=utcnow()))
        except sa.exc.IntegrityError:  # another process created it at the same moment
            pass
        return str(conn.execute(query).scalar_one())


def refuse_the_main_database(main_url: str, archive_url: str) -> None:
    """Refuse (exit 2) an ``--archive-db`` that names the main database.

    Payloads would then sit in the main database under a store that orders
    its commits around the main one as if they were apart: refused rather
    than half-working. :meth:`SeparateArchive.bind` also refuses a store
    whose database holds this main database's identity (another URL for the
    same database).
    """
    if _same_place(main_url, archive_url):
        raise ConfigError(
            "--archive-db names the main database (--db): a separate archive store must be another database"
        )


def _same_place(first: str, second: str) -> bool:
    try:
        a, b = sa.engine.make_url(first), sa.engine.make_url(second)
    except sa.exc.ArgumentError:
        return first == second
    return same_database(a, b)


archive_owner = sa.Table(
    "retention_archive_owner",
    sa.MetaData(),
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("database_id", sa.String(64), nullable=False, comment="retention_identity of the main database"),
    sa.Column("bound_at", store.UTCDateTime, nullable=False),
)
"""In a separate archive store only: the main database it belongs to (one row)."""


def _replace(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    table = store.archive
    by_dataset: dict[str, list[str]] = {}
    for row in rows:
        by_dataset.setdefault(row["dataset"], []).append(row["record_key"])
    for dataset, keys in by_dataset.items():
        conn.execute(table.delete().where(table.c.dataset == dataset, store.one_of(conn, table.c.record_key, keys)))
    if rows:
        conn.execute(table.insert(), list(rows))


class SameDatabaseArchive:
    """Payloads in the engine's tables, in the batch's own transaction."""

    def copy(
        self,
        conn: sa.Connection,
        dataset: str,
        rows: sa.Select[Any],
        keys: Sequence[str],
    ) -> int:
        """Replace the payloads of ``keys`` by ``rows`` (the archive's columns, selected from the source).

        Set-based: the payloads are built by the database (see
        :meth:`retention.dialects.Dialect.json_text_object`); returns the
        number of payloads written.
        """
        table = store.archive
        conn.execute(table.delete().where(table.c.dataset == dataset, store.one_of(conn, table.c.record_key, keys)))
        names = ["dataset", "record_key", "payload", "archived_at", "purge_due_at", "run_id"]
        # Counted from RETURNING: psycopg reports no rowcount for this statement.
        copied = len(conn.execute(table.insert().from_select(names, rows).returning(table.c.record_key)).all())
        note_changed(conn, table.name, copied)
        return copied

    def put(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        _replace(conn, rows)

    def delete(self, conn: sa.Connection, dataset: str, keys: Sequence[str]) -> None:
        table = store.archive
        conn.execute(table.delete().where(table.c.dataset == dataset, store.one_of(conn, table.c.record_key, keys)))

    def bind(self, engine: sa.Engine) -> None:
        return None

    def after_commit(self) -> None:
        return None

    def after_rollback(self) -> None:
        return None

    def sweep(self, engine: sa.Engine, secret: bytes) -> int:
        return 0


class SeparateArchive:
    """Payloads in another database, ordered around the main commit (see module doc)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[str, list[str]]] = []
        self._bound_to: str | None = None
        store.archive.create(engine, checkfirst=True)
        archive_owner.create(engine, checkfirst=True)

    def bind(self, engine: sa.Engine) -> None:
        """Refuse (exit 2) a store that belongs to another main database, or whose keys collide; claim an unclaimed one.

        Called before the run touches any payload: a run pointed at the wrong
        main database must not treat the right one's payloads as orphans.
        """
        self._refuse_case_blind_keys(engine)
        mine = database_id(engine)
        with self.engine.connect() as conn:
            if sa.inspect(conn).has_table(store.identity.name):
                same = conn.execute(
                    sa.select(store.identity.c.value).where(store.identity.c.name == "database")
                ).scalar()
                if same == mine:
                    raise ConfigError(
                        "--archive-db names the main database (--db): a separate archive store must be another database"
                    )
        with self.engine.begin() as conn:
            owner = conn.execute(sa.select(archive_owner.c.database_id)).scalar()
            if owner is None:
                try:
                    with conn.begin_nested():
                        conn.execute(archive_owner.insert().values(name="owner", database_id=mine, bound_at=utcnow()))
                    owner = mine
                except sa.exc.IntegrityError:
                    owner = conn.execute(sa.select(archive_owner.c.database_id)).scalar_one()
        if owner != mine:
            raise ConfigError(
                f"the archive database {safe_url(self.engine.url.render_as_string(hide_password=False))} belongs "
                f"to another main database (id {owner[:12]}, this one is {mine[:12]}); refusing to use it"
            )
        self._bound_to = mine

    def _refuse_case_blind_keys(self, main_engine: sa.Engine) -> None:
        """Refuse (exit 2) a MariaDB/MySQL store whose ``record_key`` takes two keys for one.

        Migrations 0020_keycase and 0021_keypad give the main database's key
        columns the server's NO PAD binary collation, so it keeps 'A' and 'a'
        (a ``_bin``/``_cs`` source key column), and 'a' and 'a ' (a NO PAD
        one), as two records. A store created before them kept
        ``record_key`` in the database's default collation (on MariaDB
        usually case-insensitive), or in ``utf8mb4_bin`` (PAD SPACE), and
        ``create(checkfirst=True)`` never alters an existing table: there,
        writing the payload of 'a' deletes that of 'A' (or 'a '), and the
        main database, which keeps both, records no error, so a retained
        payload would be lost silently. Compared with the *main* database's
        key collation, not the store server's best: a store on a server
        without NO PAD (MariaDB < 10.2, MySQL < 8.0.17) keeps ``utf8mb4_bin``
        at best, which merges 'a' and 'a ' that a newer main database (or a
        PostgreSQL/SQLite one) keeps apart; no statement fixes that, the
        message says to move the store.

        Refused rather than altered: the store is another database with its
        own access rights (its role need not hold ``ALTER``), and the change
        rebuilds the whole payload table (``ALGORITHM=COPY``, writes waiting,
        free disk about the table's size), which an operator schedules, not a
        run. Nothing has moved when this refuses; the message gives the
        statement to run on the store.
        """
        table = store.archive
        with main_engine.connect() as conn:
            main = dialect_for(conn).key_column_collation(conn, store.record_states.name, "record_key")
        with self.engine.connect() as conn:
            found = dialect_for(conn).case_blind_key(conn, table.name, "record_key", main)
        if found is None:
            return
        collation, why = found
        kept = f"in collation {collation}" if collation else "outside any collation (not a text column)"
        raise ConfigError(
            f"the archive database {safe_url(self.engine.url.render_as_string(hide_password=False))} keeps "
            f"{table.name}.record_key {kept}, where {why}"
        )

    def _require_bound(self) -> None:
        if self._bound_to is None:
            raise ConfigError("the archive store was used before it was bound to its main database")

    def put(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        self._require_bound()
        with self.engine.begin() as archive_conn:
            _replace(archive_conn, rows)

    def delete(self, conn: sa.Connection, dataset: str, keys: Sequence[str]) -> None:
        self._require_bound()
        self._pending.append((dataset, list(keys)))

    def after_commit(self) -> None:
        """Delete the payloads of purges that just committed, with their ledger entries."""
        table = store.archive
        with self.engine.begin() as archive_conn:
            for dataset, keys in self._pending:
                archive_conn.execute(
                    table.delete().where(
                        table.c.dataset == dataset, store.one_of(archive_conn, table.c.record_key, keys)
                    )
                )
        self._pending.clear()

    def after_rollback(self) -> None:
        """Forget the purges of a batch that rolled back: their records are still archived, their payloads stay.

        Otherwise the next batch to commit, of any dataset, would delete them
        as its own, leaving records archived with no payload.
        """
        self._pending.clear()

    def sweep(self, engine: sa.Engine, secret: bytes, batch_size: int = 1000) -> int:
        """Delete payloads left behind by a purge that committed (a crash before :meth:`after_commit`).

        A payload goes only if its record is no longer archived in the main
        database *and* the main ledger records its ``archived->purged`` entry;
        any other payload stays (and is counted in the log), so that a
        mistake elsewhere can never empty the archive.
        """
        self._require_bound()
        table, rs = store.archive, store.record_states
        removed = kept = 0
        after: tuple[str, str] | None = None
        while True:
            query = sa.select(table.c.dataset, table.c.record_key).order_by(table.c.dataset, table.c.record_key)
            if after is not None:
                query = query.where(sa.tuple_(table.c.dataset, table.c.record_key) > after)
            with self.engine.connect() as archive_conn:
                rows = archive_conn.execute(query.limit(batch_size)).all()
            if not rows:
                break
            after = (rows[-1].dataset, rows[-1].record_key)
            with engine.connect() as conn:
                live = {
                    (r.dataset, r.record_key)
                    for r in conn.execute(
                        sa.select(rs.c.dataset, rs.c.record_key).where(
                            rs.c.state == "archived",
                            sa.tuple_(rs.c.dataset, rs.c.record_key).in_([(r.dataset, r.record_key) for r in rows]),
                        )
                    )
                }
                # Few payloads outlive their record (a crash between the two commits):
                # each is looked up in the ledger, v1 entries and v2 items alike.
                orphans = [
                    (r.dataset, r.record_key)
                    for r in rows
                    if (r.dataset, r.record_key) not in live
                    and any(
                        found["transition"] == "archived->purged"
                        for found in ledger_items.lookup(conn, secret, dataset=r.dataset, record_key=r.record_key)
                    )
                ]
            kept += len(rows) - len(live) - len(orphans)
            if orphans:
                with self.engine.begin() as archive_conn:
                    archive_conn.execute(
                        table.delete().where(sa.tuple_(table.c.dataset, table.c.record_key).in_(orphans))
                    )
                removed += len(orphans)
        if kept:
            log.warning("archive_payloads_kept", count=kept)
        return removed
