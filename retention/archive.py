"""The intermediate archive: minimised payloads kept apart from live data.

By default the payloads live in the engine's own ``retention_archive``
table, written in the same transaction as the source change. With a
separate archive database (its own URL and access rights) the two cannot
share a transaction, so the order is chosen to lose nothing: payloads are
written and committed *before* the source change commits (a crash in
between leaves a payload whose record is still live; the rerun rewrites it),
and deleted only *after* the purge commits (a crash in between leaves an
orphan payload, which the next run sweeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from retention import store


class ArchiveStore(Protocol):
    """Where archived payloads go."""

    def put(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None: ...

    def delete(self, conn: sa.Connection, dataset: str, keys: Sequence[str]) -> None: ...

    def after_commit(self) -> None: ...

    def sweep(self, engine: sa.Engine) -> int: ...


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

    def put(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        _replace(conn, rows)

    def delete(self, conn: sa.Connection, dataset: str, keys: Sequence[str]) -> None:
        table = store.archive
        conn.execute(table.delete().where(table.c.dataset == dataset, store.one_of(conn, table.c.record_key, keys)))

    def after_commit(self) -> None:
        return None

    def sweep(self, engine: sa.Engine) -> int:
        return 0


class SeparateArchive:
    """Payloads in another database, ordered around the main commit (see module doc)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[str, list[str]]] = []
        store.archive.create(engine, checkfirst=True)

    def put(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        with self.engine.begin() as archive_conn:
            _replace(archive_conn, rows)

    def delete(self, conn: sa.Connection, dataset: str, keys: Sequence[str]) -> None:
        self._pending.append((dataset, list(keys)))

    def after_commit(self) -> None:
        table = store.archive
        with self.engine.begin() as archive_conn:
            for dataset, keys in self._pending:
                archive_conn.execute(
                    table.delete().where(
                        table.c.dataset == dataset, store.one_of(archive_conn, table.c.record_key, keys)
                    )
                )
        self._pending.clear()

    def sweep(self, engine: sa.Engine, batch_size: int = 1000) -> int:
        """Delete payloads whose record is no longer archived in the main database."""
        table, rs = store.archive, store.record_states
        removed = 0
        after: tuple[str, str] | None = None
        while True:
            query = sa.select(table.c.dataset, table.c.record_key).order_by(table.c.dataset, table.c.record_key)
            if after is not None:
                query = query.where(sa.tuple_(table.c.dataset, table.c.record_key) > after)
            with self.engine.connect() as archive_conn:
                rows = archive_conn.execute(query.limit(batch_size)).all()
            if not rows:
                return removed
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
            orphans = [(r.dataset, r.record_key) for r in rows if (r.dataset, r.record_key) not in live]
            if orphans:
                with self.engine.begin() as archive_conn:
                    archive_conn.execute(
                        table.delete().where(sa.tuple_(table.c.dataset, table.c.record_key).in_(orphans))
                    )
                removed += len(orphans)
