"""Plans that do not decay: a batch probes the state table by key, and a run keeps its statistics fresh.

Measured before (bench/decay.py, PostgreSQL, autovacuum off): the active
batch's ``NOT EXISTS`` against ``retention_record_states`` was planned from
statistics taken when the table held another dataset's rows (or none), as a
scan of every state row per candidate, and an archive run's batches went
from 1 s to over a minute as the table filled. These tests hold the two
fixes on every database: the batch query's plan probes the state table's
primary key, and the statistics of the tables a run fills describe them at
its end.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.engine import execute, statistics
from retention.engine.plan import PlanContext, build_planners
from retention.policy import LoadedPack, validate_pack
from retention.store import tables as store

AS_OF = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SECRET = b"statistics-test-key"
ROWS = 3000


def pack(batch_size: int = 500) -> LoadedPack:
    return validate_pack(
        {
            "pack": "stats",
            "version": "1",
            "effective_from": dt.date(2020, 1, 1),
            "timezone": "UTC",
            "batch_size": batch_size,
            "guard": {"max_share": 1.0},
            "datasets": {
                "events": {
                    "table": "events",
                    "key": "id",
                    "basis": "policy",
                    "keep": [{"clock": {"column": "seen", "type": "timestamp"}, "period": "P1Y"}],
                    "lifecycle": [
                        {"to": "archived", "action": "archive", "columns": ["id"], "then": "delete"},
                        {"to": "purged", "after": "P5Y"},
                    ],
                }
            },
        },
        None,
        "",
    )


def make_events(engine: sa.Engine, rows: int = ROWS) -> None:
    """``rows`` events, all two years old (due), keys 1..rows."""
    table = sa.Table(
        "events",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", sa.DateTime, nullable=False),
    )
    table.create(engine)
    seen = dt.datetime(2024, 1, 1)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "seen": seen + dt.timedelta(minutes=i)} for i in range(1, rows + 1)])


def state_rows(dataset: str, keys: range) -> list[dict[str, Any]]:
    since = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return [
        {"dataset": dataset, "record_key": str(k), "state": "archived", "since": since, "run_id": "r"} for k in keys
    ]


def stale_statistics_off(conn: sa.Connection, table: str) -> None:
    """The database's own refresh off for ``table`` (autovacuum, InnoDB's recalculation): the run must do it."""
    name = dialect_for(conn).name
    if name == "postgresql":
        conn.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    elif name in ("mysql", "mariadb"):
        conn.execute(sa.text(f"ALTER TABLE {table} STATS_AUTO_RECALC = 0"))


def plan_text(conn: sa.Connection, query: sa.Select[Any]) -> str:
    """The database's plan of ``query`` as text (bound values inlined)."""
    name = dialect_for(conn).name
    sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN QUERY PLAN " if name == "sqlite" else "EXPLAIN "
    sql = sql.replace("%", "%%") if name != "sqlite" else sql  # pyformat drivers: a literal % doubled
    rows = conn.exec_driver_sql(explain + sql).all()
    return "\n".join(" | ".join(str(v) for v in row) for row in rows)


def test_batch_query_probes_state_rows_by_primary_key(migrated: sa.Engine) -> None:
    """Many state rows, statistics fresh: the batch still asks per candidate, by key, never joins them all."""
    make_events(migrated)
    rs = store.record_states
    with migrated.begin() as conn:
        conn.execute(rs.insert(), state_rows("other", range(1, 20001)))
        conn.execute(rs.insert(), state_rows("events", range(1, 20001)))
        dialect_for(conn).refresh_statistics(conn, rs.name)  # fresh: the planner knows every state row
    with migrated.connect() as conn:
        planner = build_planners(conn, PlanContext(pack(), AS_OF))["events"]
        planner.probe(conn)
        text = plan_text(conn, planner.active_batch_query(conn, 2000))
    name = dialect_for(migrated).name
    if name == "postgresql":
        assert "SubPlan" in text and "pk_retention_record_states" in text, text
        assert "Hash" not in text and "Materialize" not in text, text
    elif name == "sqlite":
        assert "CORRELATED" in text, text
        assert "SEARCH retention_record_states USING" in text and "INDEX" in text, text
    else:
        lines = [line for line in text.splitlines() if "retention_record_states" in line]
        assert lines and all("PRIMARY" in line for line in lines), text


def test_a_run_leaves_the_statistics_of_the_tables_it_filled_describing_them(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive run with the database's own refresh off: the state and archive tables' statistics count their rows."""
    monkeypatch.setattr(statistics, "MINIMUM_ROWS", 100)
    make_events(migrated)
    with migrated.begin() as conn:
        for table in (store.record_states.name, store.archive.name):
            stale_statistics_off(conn, table)
        if dialect_for(conn).name == "sqlite":
            conn.execute(sa.text("ANALYZE"))  # statistics kept (empty tables: none of them yet)
    result = execute.run(migrated, pack(), AS_OF, secret=SECRET)
    assert result.counts == {"events": {"active->archived": ROWS}}
    with migrated.connect() as conn:
        for table in (store.record_states.name, store.archive.name):
            believed = dialect_for(conn).statistics_rows(conn, table)
            assert believed is not None and 0.8 * ROWS <= believed <= 1.2 * ROWS, (table, believed)


def test_a_refresh_that_fails_does_not_stop_the_run(migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refreshing statistics is an optimisation: a database error there (here: no such table) leaves the run going."""
    monkeypatch.setattr(statistics, "MINIMUM_ROWS", 100)
    make_events(migrated, 1200)
    dialect = type(dialect_for(migrated))

    def refuse(self: Any, conn: sa.Connection, table: str) -> None:
        conn.execute(sa.text("ANALYZE no_such_table_here"))

    monkeypatch.setattr(dialect, "refresh_statistics", refuse)
    result = execute.run(migrated, pack(), AS_OF, secret=SECRET)
    assert result.status == "succeeded"
    assert result.counts == {"events": {"active->archived": 1200}}
