"""Planner statistics of the engine's own tables, kept fresh while a run fills them.

An archive or deactivation run inserts a state row per record into
``retention_record_states`` (and an archive run a payload into
``retention_archive``), and every later batch asks of each candidate
whether it has one (and replaces the payloads of its keys). A database plans that question from the statistics it
took when the table was small (or from none, with autovacuum off or late),
and a plan that reads every state row per batch makes each batch slower
than the last: 0.009 s to 93 s per batch measured at 200k rows on
PostgreSQL (bench/RESULTS.md). The batch query itself probes by primary key
(:meth:`retention.dialects.base.Dialect.probe_per_row`); this module also
refreshes the table's statistics, between batches, each time the run's
changes to it have grown by half, so that every other query on it (plan's
counts, the state passes, the archive's replacement of payloads) is planned
from the table as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog

from retention.dialects import dialect_for
from retention.store import tables as store

log = structlog.get_logger("retention")

#: Refresh once this run changed at least this many rows of a table since the last refresh ...
MINIMUM_ROWS = 1000
#: ... and at least this share of the rows it had changed before then.
GROWTH = 0.5

_CHANGED = "retention_rows_changed"


def note_changed(conn: sa.Connection, table: str, rows: int) -> None:
    """Count rows a batch inserted into or removed from an engine table (read by :class:`FreshStatistics`)."""
    changed: dict[str, int] = conn.info.setdefault(_CHANGED, {})
    changed[table] = changed.get(table, 0) + rows


class FreshStatistics:
    """Per run: refreshes an engine table's statistics whenever the run's changes to it grew by half.

    The threshold grows with what this run wrote, not with the table: the
    statistics that matter describe this dataset's rows (a state table
    holding ten million rows of another dataset must not make a run wait
    for five million of its own before the planner learns about them). A
    run writing n rows refreshes about log1.5(n / 1000) times, each a
    sample-based ANALYZE of a fixed cost.
    """

    def __init__(self, tables: tuple[str, ...] = (store.record_states.name, store.archive.name)) -> None:
        self.tables = tables
        self.written: dict[str, int] = {}  # rows changed by this run up to the last refresh
        self.refreshed = 0

    def after_commit(self, conn: sa.Connection) -> None:
        """Between batches (no transaction open): refresh the tables this run changed enough since the last time."""
        changed: dict[str, int] = conn.info.get(_CHANGED, {})
        for table in self.tables:
            rows = changed.get(table, 0)
            before = self.written.get(table, 0)
            if rows < max(MINIMUM_ROWS, GROWTH * before):
                continue
            try:
                with conn.begin():
                    dialect_for(conn).refresh_statistics(conn, table)
            except sa.exc.DBAPIError as exc:
                # An optimisation, never a reason to stop: another shard's ANALYZE
                # holding the table past the lock timeout, a role that may not.
                if exc.connection_invalidated:
                    raise
                log.warning("statistics_not_refreshed", table=table, error_type=type(exc.orig).__name__)
            self.written[table] = before + rows
            changed[table] = 0
            self.refreshed += 1
