"""Row counts kept as partitions are written (``retention partitions track``): exact, or a scan that says why."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from engine_events import on_database
from test_partitions import AS_OF, CUTOFF, PACK, SECRET, build_partitioned, ledger_entries, loaded, months

from retention.cli import main
from retention.commands import partitions as partition_commands
from retention.engine import execute, partition_counts, partitions
from retention.ledger import chain as ledger
from retention.policy import validate_pack
from retention.store import migrate
from retention.store.config import create_engine

UTC = dt.UTC


def write_pack(tmp_path: Path) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(PACK), encoding="utf-8")
    return path


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["--log-format", "json", *args], prog_name="retention")


def track(engine: sa.Engine) -> list[partition_counts.TrackOutcome]:
    with engine.connect() as conn:
        planner = execute.planners_at(conn, loaded(), AS_OF)[0]["access"]
        assert planner.sql is not None
        found = partitions.range_partitions(conn, planner.sql.table, planner.sql.clocks[0])
    return partition_counts.track(engine, "access_log", "at", "timestamptz", found, dt.datetime.now(UTC))


def droppable_tally(engine: sa.Engine) -> partitions.Tally:
    """What a drop would count now (plan's path: the droppable partitions and their tally)."""
    with engine.connect() as conn:
        planner = execute.planners_at(conn, loaded(), AS_OF)[0]["access"]
        return partitions.tally(conn, partitions.droppable(conn, planner), "at")


def truth(engine: sa.Engine, labels: list[str]) -> dict[str, int]:
    """Each partition's ``count(*)``, read here (not by the code under test)."""
    with engine.connect() as conn:
        return {label: conn.execute(sa.text(f"SELECT count(*) FROM {label}")).scalar_one() for label in labels}


def short(labels: Any) -> dict[str, Any]:
    return {label.rsplit(".", 1)[1]: value for label, value in dict(labels).items()}


def execute_sql(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


@pytest.mark.only_on("postgresql")
def test_kept_counts_follow_every_kind_of_write_and_the_drop_uses_them(migrated: sa.Engine) -> None:
    """Inserts, deletes and moves through the table or a partition, COPY, a rollback: the kept count stays exact."""
    build_partitioned(migrated, seed=11)
    outcomes = track(migrated)
    assert {o.outcome for o in outcomes} == {"tracked"}
    assert all(o.rows is not None for o in outcomes)
    execute_sql(
        migrated,
        # Through the table: rows into three partitions, one statement.
        "INSERT INTO access_log (id, user_id, at) VALUES (10001, 1, '2024-03-05T10:00Z'), "
        "(10002, 1, '2024-03-31T23:59:59.999999Z'), (10003, 1, '2024-04-01T00:00Z'), (10004, 1, '2025-06-01T12:00Z')",
        "DELETE FROM access_log WHERE id % 7 = 0 AND at < '2025-01-01'",
        # Moves between partitions (a row changes partition), and an update that moves nothing.
        "UPDATE access_log SET at = at + interval '40 days' WHERE id % 11 = 0 AND at < '2025-01-01'",
        "UPDATE access_log SET user_id = user_id + 1 WHERE id % 13 = 0",
        # Naming the partition itself: the table's triggers never see these.
        "INSERT INTO access_log_2024_05 (id, user_id, at) VALUES (10005, 2, '2024-05-09T00:00Z'), "
        "(10006, 2, '2024-05-31T23:00Z')",
        "DELETE FROM access_log_2024_06 WHERE id % 3 = 0",
        "UPDATE access_log_2024_07 SET user_id = 5",
    )
    with migrated.connect() as conn:
        conn.execute(sa.text("INSERT INTO access_log (id, user_id, at) VALUES (10007, 1, '2024-02-02T00:00Z')"))
        conn.rollback()  # leaves no row and no delta
    with migrated.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy("COPY access_log (id, user_id, at) FROM STDIN") as copy:  # type: ignore[attr-defined]
            copy.write_row((10008, 3, dt.datetime(2024, 8, 8, tzinfo=UTC)))
            copy.write_row((10009, 3, dt.datetime(2025, 2, 2, tzinfo=UTC)))
        conn.commit()

    counted = droppable_tally(migrated)
    assert len(counted.rows) > 10
    assert set(counted.how.values()) == {"kept"}
    assert counted.rows == truth(migrated, list(counted.rows))

    # track again: nothing to count, each partition's deltas folded into one row, the sums unchanged.
    assert {o.outcome for o in track(migrated)} == {"already"}
    with migrated.connect() as conn:
        folded = conn.execute(
            sa.text("SELECT owner, bucket IS NULL, count(*) FROM retention_partition_rows GROUP BY 1, 2")
        ).all()
        tracked = set(conn.execute(sa.text("SELECT relid FROM retention_partition_tracking")).scalars())
    assert {(owner, own, n) for owner, own, n in folded} == {(relid, True, 1) for relid in tracked}
    assert droppable_tally(migrated).rows == counted.rows

    expected = dict(counted.rows)
    result = execute.run(migrated, loaded(), AS_OF, secret=SECRET)
    assert result.status == "succeeded"
    (drop,) = [e for e in ledger_entries(migrated) if e.action == "drop_partition"]
    assert json.loads(drop.detail)["partitions"] == expected
    assert drop.count == sum(expected.values())
    assert ledger.verify(migrated).ok
    with migrated.connect() as conn:
        # The dropped partitions' deltas and tracking rows went with them.
        left = conn.execute(sa.text("SELECT label FROM retention_partition_tracking")).scalars().all()
        assert left and not set(left) & set(expected)
        cut = partition_counts.bucket_of(max(high for high in months() if high <= CUTOFF))
        parent_deltas = conn.execute(
            sa.text("SELECT count(*) FROM retention_partition_rows WHERE bucket < :cut"), {"cut": cut}
        ).scalar_one()
        assert parent_deltas == 0


@pytest.mark.only_on("postgresql")
def test_a_count_not_known_to_be_whole_is_scanned_and_says_why(migrated: sa.Engine) -> None:
    """Each way a kept count could miss a write falls back to count(*), exact, with its reason."""
    build_partitioned(migrated, seed=12)
    track(migrated)
    execute_sql(
        migrated,
        # Disabled, written, enabled again: the trigger's catalog row is not the one tracked.
        "ALTER TABLE access_log_2024_02 DISABLE TRIGGER retention_rows_insert",
        "INSERT INTO access_log_2024_02 (id, user_id, at) VALUES (20001, 1, '2024-02-03T00:00Z')",
        "ALTER TABLE access_log_2024_02 ENABLE ALWAYS TRIGGER retention_rows_insert",
        # Disabled now.
        "ALTER TABLE access_log_2024_03 DISABLE TRIGGER retention_rows_delete",
        "DELETE FROM access_log_2024_03 WHERE id % 2 = 0",
        # Truncated.
        "TRUNCATE access_log_2024_04",
        "INSERT INTO access_log (id, user_id, at) VALUES (20002, 1, '2024-04-04T00:00Z')",
        # Detached, written while detached, attached again.
        "ALTER TABLE access_log DETACH PARTITION access_log_2024_05",
        "INSERT INTO access_log_2024_05 (id, user_id, at) VALUES (20003, 1, '2024-05-05T00:00Z')",
        "ALTER TABLE access_log ATTACH PARTITION access_log_2024_05 "
        "FOR VALUES FROM ('2024-05-01T00:00Z') TO ('2024-06-01T00:00Z')",
        # Dropped and created again: a new partition, never tracked.
        "DROP TABLE access_log_2024_06",
        "CREATE TABLE access_log_2024_06 PARTITION OF access_log "
        "FOR VALUES FROM ('2024-06-01T00:00Z') TO ('2024-07-01T00:00Z')",
        "INSERT INTO access_log_2024_06 (id, user_id, at) VALUES (20004, 1, '2024-06-06T00:00Z')",
        # A partition's own trigger dropped.
        "DROP TRIGGER retention_rows_insert ON access_log_2025_01",
        "INSERT INTO access_log_2025_01 (id, user_id, at) VALUES (20005, 1, '2025-01-05T00:00Z')",
    )
    counted = droppable_tally(migrated)
    assert counted.rows == truth(migrated, list(counted.rows))
    how = short(counted.how)
    assert how["access_log_2024_02"] == (
        "scanned: a counting trigger was dropped, replaced, or disabled and enabled again since it was tracked"
    )
    assert how["access_log_2024_03"] == "scanned: a counting trigger is disabled"
    assert how["access_log_2024_04"] == "scanned: altered, truncated or rewritten since it was tracked"
    assert how["access_log_2024_05"] == "scanned: detached or attached again since it was tracked"
    assert how["access_log_2024_06"] == "scanned: not tracked (retention partitions track)"
    assert how["access_log_2025_01"] == (
        "scanned: a counting trigger was dropped, replaced, or disabled and enabled again since it was tracked"
    )
    assert {v for k, v in how.items() if not k.startswith(("access_log_2024_0", "access_log_2025_01"))} == {"kept"}
    assert how["access_log_2024_01"] == how["access_log_2024_07"] == "kept"

    # track again: the changed ones counted anew, the others left as they are; then every one is kept, exact.
    outcomes = {o.label.rsplit(".", 1)[1]: o.outcome for o in track(migrated)}
    changed = {"access_log_2024_02", "access_log_2024_03", "access_log_2024_04", "access_log_2024_05",
               "access_log_2024_06", "access_log_2025_01"}  # fmt: skip
    assert {k for k, v in outcomes.items() if v == "tracked"} == changed
    assert {v for k, v in outcomes.items() if k not in changed} == {"already"}
    execute_sql(migrated, "INSERT INTO access_log (id, user_id, at) VALUES (20006, 1, '2024-06-07T00:00Z')")
    counted = droppable_tally(migrated)
    assert set(counted.how.values()) == {"kept"}
    assert counted.rows == truth(migrated, list(counted.rows))


@pytest.mark.only_on("postgresql")
def test_a_partition_a_subscription_writes_is_scanned(migrated: sa.Engine) -> None:
    """Logical replication's apply fires no statement trigger: a subscribed partition's kept count is not used.

    The subscription is made without connecting, and the catalog row an apply worker's table sync would leave is
    written by hand (no publisher here); the apply itself is not run.
    """
    build_partitioned(migrated, seed=13)
    track(migrated)
    name = f"retention_test_{abs(hash(migrated.url.render_as_string())) % 10**9}"
    execute_sql(
        migrated,
        f"CREATE SUBSCRIPTION {name} CONNECTION 'host=127.0.0.1 dbname=none' PUBLICATION p "
        "WITH (connect = false, slot_name = NONE, enabled = false)",
    )
    try:
        execute_sql(
            migrated,
            "INSERT INTO pg_subscription_rel (srsubid, srrelid, srsubstate, srsublsn) "
            f"SELECT oid, 'access_log_2024_02'::regclass, 'r', NULL FROM pg_subscription WHERE subname = '{name}'",
        )
        counted = droppable_tally(migrated)
        assert counted.rows == truth(migrated, list(counted.rows))
        how = short(counted.how)
        assert how["access_log_2024_02"] == (
            "scanned: a subscription writes it (logical replication's apply fires no statement trigger)"
        )
        assert {v for k, v in how.items() if k != "access_log_2024_02"} == {"kept"}
    finally:
        execute_sql(
            migrated,
            "DELETE FROM pg_subscription_rel WHERE srsubid = "
            f"(SELECT oid FROM pg_subscription WHERE subname = '{name}')",
            f"DROP SUBSCRIPTION {name}",
        )


@pytest.mark.only_on("postgresql")
def test_vacuum_analyze_and_replica_sessions_keep_the_count(migrated: sa.Engine) -> None:
    """Maintenance that rewrites no row keeps the count in use; a replica-role session's writes are still counted."""
    build_partitioned(migrated, seed=13)
    track(migrated)
    execute_sql(migrated, "ANALYZE access_log")
    with migrated.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM (FREEZE, ANALYZE) access_log"))
    with migrated.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("INSERT INTO access_log (id, user_id, at) VALUES (30001, 1, '2024-09-09T00:00Z')"))
        conn.execute(sa.text("INSERT INTO access_log_2024_10 (id, user_id, at) VALUES (30002, 1, '2024-10-10T00:00Z')"))
    counted = droppable_tally(migrated)
    assert set(counted.how.values()) == {"kept"}
    assert counted.rows == truth(migrated, list(counted.rows))


@pytest.mark.only_on("postgresql")
def test_bounds_off_quarter_hours_are_not_tracked(migrated: sa.Engine) -> None:
    """A bucket must not straddle two partitions: such a partition stays counted by a scan."""
    execute_sql(
        migrated,
        "CREATE TABLE access_log (id BIGINT NOT NULL, user_id INTEGER NOT NULL, at TIMESTAMPTZ NOT NULL, "
        "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
        "CREATE TABLE access_log_a PARTITION OF access_log "
        "FOR VALUES FROM ('2024-01-01T00:00Z') TO ('2024-02-01T00:10Z')",
        "CREATE TABLE access_log_b PARTITION OF access_log "
        "FOR VALUES FROM ('2024-02-01T00:10Z') TO ('2024-03-01T00:00Z')",
        "INSERT INTO access_log VALUES (1, 1, '2024-02-01T00:05Z'), (2, 1, '2024-02-01T00:12Z')",
    )
    outcomes = {o.label.rsplit(".", 1)[1]: (o.outcome, o.reason) for o in track(migrated)}
    assert outcomes == {
        "access_log_a": ("skipped", "its bounds are not on quarter hours"),
        "access_log_b": ("skipped", "its bounds are not on quarter hours"),
    }
    assert partition_counts.bucket_of(dt.datetime(2024, 2, 1, 0, 15, tzinfo=UTC)) == 1706746500 // 900
    assert partition_counts.bucket_of(dt.datetime(2024, 2, 1, 0, 10, tzinfo=UTC)) is None
    assert partition_counts.bucket_of(dt.date(1970, 1, 2)) == 96


@pytest.mark.only_on("postgresql")
def test_the_commands_and_plan_say_how_each_partition_is_counted(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    build_partitioned(migrated, seed=14)
    pack = str(write_pack(tmp_path))
    before = cli("partitions", "status", "--rules", pack, "--db", db_url, "--format", "json")
    assert before.exit_code == 0, before.output
    assert {line["outcome"] for line in json.loads(before.stdout)} == {
        "scanned: not tracked (retention partitions track)"
    }
    tracked = cli("partitions", "track", "--rules", pack, "--db", db_url, "--format", "json")
    assert tracked.exit_code == 0, tracked.output
    lines = json.loads(tracked.stdout)
    assert {line["outcome"] for line in lines} == {"tracked"} and len(lines) == len(months()) - 1
    again = cli("partitions", "track", "--rules", pack, "--db", db_url, "--format", "json")
    assert {line["outcome"] for line in json.loads(again.stdout)} == {"already"}
    planned = cli("plan", "--rules", pack, "--db", db_url, "--as-of", AS_OF.date().isoformat())
    assert planned.exit_code == 0, planned.output
    assert "access: rows counted from kept counts: " in planned.output and "by a scan: none" in planned.output
    removed = cli("partitions", "untrack", "--db", db_url)
    assert removed.exit_code == 0, removed.output
    after = cli("partitions", "status", "--rules", pack, "--db", db_url, "--format", "json")
    assert {line["outcome"] for line in json.loads(after.stdout)} == {
        "scanned: not tracked (retention partitions track)"
    }
    execute_sql(migrated, "INSERT INTO access_log (id, user_id, at) VALUES (40001, 1, '2024-01-05T00:00Z')")
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM retention_partition_rows")).scalar_one() == 0


@pytest.mark.only_on("postgresql")
def test_downgrade_removes_the_triggers_so_the_application_still_writes(migrated: sa.Engine) -> None:
    build_partitioned(migrated, seed=15)
    track(migrated)
    migrate.downgrade(migrated, "0018_blocks")
    execute_sql(migrated, "INSERT INTO access_log (id, user_id, at) VALUES (50001, 1, '2024-01-05T00:00Z')")
    with migrated.connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgname LIKE 'retention_rows%' AND c.relnamespace = current_schema()::regnamespace"
            )
        ).scalar()
        assert left == 0
    migrate.upgrade(migrated)
    assert {o.outcome for o in track(migrated)} == {"tracked"}


def test_other_databases_refuse_partition_tracking(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    if migrated.dialect.name == "postgresql":
        pytest.skip("PostgreSQL tracks partitions (the tests above)")
    for args in (
        ["partitions", "track", "--rules", str(write_pack(tmp_path)), "--db", db_url],
        ["partitions", "status", "--rules", str(write_pack(tmp_path)), "--db", db_url],
        ["partitions", "untrack", "--db", db_url],
    ):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "partition tracking is supported on PostgreSQL only" in (result.output)
        assert "Traceback" not in result.output


@pytest.mark.only_on("postgresql")
@pytest.mark.parametrize(
    ("column_type", "clock"),
    [
        ("DATE", {"column": "at", "type": "date"}),
        ("TIMESTAMP", {"column": "at", "type": "timestamp", "timezone": "Europe/Paris"}),
    ],
)
def test_naive_clocks_are_bucketed_as_their_bounds(
    migrated: sa.Engine, column_type: str, clock: dict[str, Any]
) -> None:
    """DATE and naive TIMESTAMP partitions: the triggers' buckets and the bounds' agree, the kept counts are exact."""
    starts = [dt.datetime(2024 + m // 12, m % 12 + 1, 1) for m in range(0, 30)]
    execute_sql(
        migrated,
        f"CREATE TABLE access_log (id BIGINT NOT NULL, user_id INTEGER NOT NULL, at {column_type} NOT NULL, "
        "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
        *[
            f"CREATE TABLE access_log_{low:%Y_%m} PARTITION OF access_log "
            f"FOR VALUES FROM ('{low:%Y-%m-%d}') TO ('{high:%Y-%m-%d}')"
            for low, high in itertools.pairwise(starts)
        ],
    )
    data = {**PACK, "datasets": {"access": {**PACK["datasets"]["access"], "keep": [{"clock": clock, "period": "P6M"}]}}}
    pack = validate_pack(data, Path("<test>"), "")
    with migrated.connect() as conn:
        planner = execute.planners_at(conn, pack, AS_OF)[0]["access"]
        assert planner.sql is not None
        kind = planner.sql.clocks[0].kind
        found = partitions.range_partitions(conn, planner.sql.table, planner.sql.clocks[0])
    assert kind == column_type.lower()
    outcomes = partition_counts.track(migrated, "access_log", "at", kind, found, dt.datetime.now(UTC))
    assert {o.outcome for o in outcomes} == {"tracked"}
    # Rows on each side of every bound (the last instant of a month, the first of the next), and between.
    values = [edge + dt.timedelta(seconds=s) for edge in starts[1:-1] for s in (-1, 0, 3600 * 30)]
    if column_type == "DATE":
        values = [v.replace(hour=0, minute=0, second=0) for v in values]
    execute_sql(
        migrated,
        "INSERT INTO access_log (id, user_id, at) VALUES "
        + ", ".join(f"({i}, 1, '{v.isoformat(sep=' ')}')" for i, v in enumerate(values)),
        "DELETE FROM access_log WHERE id % 4 = 0",
        "UPDATE access_log SET at = at + interval '1 day' WHERE id % 5 = 0",
    )
    with migrated.connect() as conn:
        counted = partitions.tally(conn, partitions.droppable(conn, planner), "at")
    assert len(counted.rows) > 10 and set(counted.how.values()) == {"kept"}
    assert counted.rows == truth(migrated, list(counted.rows))


@pytest.mark.only_on("postgresql")
def test_a_plan_that_cannot_read_the_tracking_tables_counts_by_a_scan(migrated: sa.Engine) -> None:
    """A read-only role without the engine's tables (or a database where they are missing) still plans, exactly."""
    build_partitioned(migrated, seed=16)
    track(migrated)
    execute_sql(migrated, "ALTER TABLE retention_partition_tracking RENAME TO hidden_tracking")
    counted = droppable_tally(migrated)
    assert set(counted.how.values()) == {"scanned: the engine's partition tracking tables are not readable here"}
    assert counted.rows == truth(migrated, list(counted.rows))


@pytest.mark.only_on("postgresql")
def test_a_write_in_flight_when_a_partition_is_tracked_is_counted_once(migrated: sa.Engine, db_url: str) -> None:
    """track's SHARE lock: a writer in flight commits before the count or after the tracking, never in between.

    The writer's insert (through the table) is open when track starts on its partition; it commits as soon as
    track waits for it, or else right before track replaces the deltas (so that without the lock it would commit
    between the count and the replacement, and its row would be in neither).
    """
    build_partitioned(migrated, seed=17)
    track(migrated)
    execute_sql(migrated, "TRUNCATE access_log_2024_03")  # to be counted again by the next track
    execute_sql(migrated, "INSERT INTO access_log (id, user_id, at) VALUES (60001, 1, '2024-03-03T00:00Z')")
    writer_engine, tracker = create_engine(db_url), create_engine(db_url)
    writer = writer_engine.connect()
    writer.execute(sa.text("INSERT INTO access_log (id, user_id, at) VALUES (60002, 1, '2024-03-04T00:00Z')"))
    committed = threading.Event()

    def commit_writer() -> None:
        if not committed.is_set():
            writer.commit()
            committed.set()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("DELETE FROM retention_partition_rows"):
            commit_writer()

    sa.event.listen(tracker, "before_cursor_execute", before)
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(track(tracker)))
    thread.start()
    waited = False
    while thread.is_alive() and not committed.is_set():
        with migrated.connect() as conn:
            waited = bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'access_log_2024_03'::regclass"
                    )
                ).scalar()
            )
        if waited:
            commit_writer()
        thread.join(0.05)
    thread.join(30)
    writer.close()
    writer_engine.dispose()
    tracker.dispose()
    assert {o.outcome for o in outcome[0] if o.label.endswith("access_log_2024_03")} == {"tracked"}
    counted = droppable_tally(migrated)
    assert set(counted.how.values()) == {"kept"}
    assert short(counted.rows)["access_log_2024_03"] == 2
    assert counted.rows == truth(migrated, list(counted.rows))
    assert waited  # track waited for the writer


def _scans(plan: Any) -> list[tuple[str, str | None]]:
    """(node type, index name) of every node of an ``EXPLAIN (FORMAT JSON)`` plan that reads a relation."""
    found = []
    if "Relation Name" in plan or "Index Name" in plan:
        found.append((plan["Node Type"], plan.get("Index Name")))
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


@pytest.mark.only_on("postgresql")
def test_the_drops_sums_scan_the_index_without_statistics_and_track_does_not_analyse(migrated: sa.Engine) -> None:
    """track no longer runs ANALYZE on the deltas table; each kept sum is index range scans, statistics or none.

    With no statistics (nothing analyses the table; autovacuum may be off),
    then with statistics that say nearly every delta is the table's (a
    week of one-row statements outside any partition's range).
    """
    build_partitioned(migrated, seed=19)
    track(migrated)
    track(migrated)  # the nightly track: folds the deltas

    def stats() -> int:
        """This schema's statistics of the table (another test's schema, or autovacuum's autoanalyze, aside)."""
        with migrated.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stats "
                        "WHERE tablename = 'retention_partition_rows' AND schemaname = current_schema()"
                    )
                ).scalar_one()
            )

    def analyses() -> int:
        """Manual ANALYZEs of the table (``autoanalyze_count`` apart: autovacuum may be on elsewhere)."""
        with migrated.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT analyze_count FROM pg_stat_user_tables "
                        "WHERE relid = to_regclass('retention_partition_rows')"
                    )
                ).scalar_one()
            )

    def scans() -> list[tuple[str, str | None]]:
        """The plan of each statement reading the deltas while a drop would count (plan's path), as it runs."""
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "retention_partition_rows" in statement:
                statements.append(statement)

        sa.event.listen(migrated, "before_cursor_execute", seen)
        try:
            counted = droppable_tally(migrated)
        finally:
            sa.event.remove(migrated, "before_cursor_execute", seen)
        assert counted.counting is not None and len(counted.counting.kept) > 10
        assert counted.rows == truth(migrated, list(counted.rows))
        found = []
        with migrated.connect() as conn:
            for statement in statements:
                if statement.lstrip().upper().startswith("SELECT") and "sum(" in statement:
                    [plan] = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {statement}")).scalar_one()
                    found += _scans(plan["Plan"])
        return found

    assert analyses() == 0  # track did not ANALYZE
    assert stats() == 0  # so the first plans are made without statistics
    without = scans()
    with migrated.begin() as conn:
        parent = conn.execute(sa.text("SELECT 'access_log'::regclass::oid::bigint")).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO retention_partition_rows (owner, bucket, delta) "
                "SELECT :parent, 10000000 + g / 4, 1 FROM generate_series(1, 40000) AS g"
            ),
            {"parent": parent},
        )
    execute_sql(migrated, "ANALYZE retention_partition_rows")
    assert stats() > 0
    analysed = scans()
    index = "ix_retention_partition_rows_owner_bucket"
    for found in (without, analysed):
        # Each sum an index range scan (a bitmap heap scan reads the pages its bitmap index scan found), never a
        # sequential scan of every delta.
        assert {node for node, _ in found} <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan"}
        assert {name for node, name in found if node != "Bitmap Heap Scan"} == {index}, found


def _vacuums(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, after: int) -> list[str]:
    """The VACUUM statements one ``track`` runs with the threshold at ``after`` dead rows."""
    monkeypatch.setattr(partition_counts, "VACUUM_AFTER", after)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        track(engine)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    return [s for s in statements if s.lstrip().upper().startswith("VACUUM")]


@pytest.mark.only_on("postgresql")
def test_track_vacuums_from_the_tables_dead_rows_not_only_its_own_fold(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newly tracked partition's deltas deleted count; so do the dead rows other transactions left.

    A month loaded through the table before its partition is tracked leaves
    a delta per quarter hour (600 here), which that partition's ``track``
    deletes; the fold then deletes one row a partition (37). The table's
    dead rows (``n_dead_tup``) from another transaction count at a later
    track, whose own deletes are again 37. (Whether a VACUUM removes dead
    rows depends on other sessions' snapshots: not relied on here.)
    """
    build_partitioned(migrated, seed=19)

    def vacuumed() -> int:
        with migrated.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT vacuum_count FROM pg_stat_user_tables "
                        "WHERE relid = to_regclass('retention_partition_rows')"
                    )
                ).scalar_one()
            )

    assert _vacuums(migrated, monkeypatch, 10**9) == []
    execute_sql(
        migrated,
        "CREATE TABLE access_log_2027_01 PARTITION OF access_log "
        "FOR VALUES FROM ('2027-01-01T00:00Z') TO ('2027-02-01T00:00Z')",
        "INSERT INTO access_log (id, user_id, at, path) "
        "SELECT 100000 + g, 3, timestamptz '2027-01-01 00:00Z' + g * interval '15 minutes', '/' "
        "FROM generate_series(0, 599) AS g",
    )
    with migrated.connect() as conn:
        loaded_deltas = conn.execute(
            sa.text("SELECT count(*) FROM retention_partition_rows WHERE bucket IS NOT NULL")
        ).scalar_one()
    assert loaded_deltas == 600
    before = vacuumed()
    vacuums = _vacuums(migrated, monkeypatch, 500)
    assert [v.split() for v in vacuums] == [["VACUUM", "retention_partition_rows"]], vacuums  # no ANALYZE
    assert vacuumed() == before + 1
    assert _vacuums(migrated, monkeypatch, 10**9) == []  # the next track: below the threshold, no VACUUM
    with migrated.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_partition_rows (owner, bucket, delta) "
                "SELECT 0, g, 1 FROM generate_series(1, 1000) AS g"
            )
        )
        conn.execute(sa.text("DELETE FROM retention_partition_rows WHERE owner = 0"))
        conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))  # in the statistics as this transaction ends
    assert len(_vacuums(migrated, monkeypatch, 1_000)) == 1  # its own deletes 37, the table's dead rows 1,000+
    assert vacuumed() == before + 2
    assert droppable_tally(migrated).rows == truth(migrated, list(droppable_tally(migrated).rows))


@pytest.mark.only_on("postgresql")
def test_compact_returns_the_deltas_it_deletes_and_keeps_each_sum(migrated: sa.Engine) -> None:
    """Counted by hand before the call: every delta of a tracked partition, in a tracked range, or in none."""
    build_partitioned(migrated, seed=23)
    track(migrated)
    execute_sql(
        migrated,
        # New deltas through the parent (statement triggers) and one straight into a partition.
        "INSERT INTO access_log (id, user_id, at, path) "
        "SELECT 5000 + g, 1, timestamptz '2025-03-01 00:00Z' + g * interval '7 hours', '/' "
        "FROM generate_series(1, 300) AS g",
        "DELETE FROM access_log WHERE id % 17 = 0",
        "INSERT INTO access_log_2025_06 (id, user_id, at, path) VALUES (9001, 2, '2025-06-03 10:00Z', '/')",
    )
    with migrated.begin() as conn:
        parent = conn.execute(sa.text("SELECT 'access_log'::regclass::oid::bigint")).scalar_one()
        # Deltas of the table in a range no partition tracks (a detached partition's, say).
        conn.execute(
            sa.text(
                "INSERT INTO retention_partition_rows (owner, bucket, delta) "
                "SELECT :parent, -1000 - g, 1 FROM generate_series(1, 7) AS g"
            ),
            {"parent": parent},
        )
        by_hand = conn.execute(
            sa.text(
                "SELECT count(*) FROM retention_partition_rows WHERE owner = :parent "
                "OR owner IN (SELECT relid FROM retention_partition_tracking WHERE parent = :parent)"
            ),
            {"parent": parent},
        ).scalar_one()
        partitions_tracked = conn.execute(
            sa.text("SELECT count(*) FROM retention_partition_tracking WHERE parent = :parent"), {"parent": parent}
        ).scalar_one()
    assert by_hand > 2 * partitions_tracked + 7  # more than one folded row a partition, and the strays
    with migrated.begin() as conn:
        assert partition_counts.compact(conn, parent) == by_hand
    with migrated.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*), count(bucket) FROM retention_partition_rows")).one()
    assert tuple(left) == (partitions_tracked, 0)  # one folded row a partition
    counted = droppable_tally(migrated)
    assert counted.counting is not None and counted.counting.kept
    assert counted.rows == truth(migrated, list(counted.rows))


@pytest.mark.only_on("postgresql")
def test_status_classifies_without_summing_the_deltas(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """``partitions status`` says how a drop would count each partition; it has no use for the sums."""
    build_partitioned(migrated, seed=29)
    track(migrated)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    # The command opens its own engine; only its statements to this database count (the background thread that
    # prepares the next tests' databases could otherwise satisfy `statements` on its own: engine_events.py).
    with on_database(db_url, "before_cursor_execute", seen):
        lines = partition_commands.partitions_status(write_pack(tmp_path), db_url)
    assert [line.outcome for line in lines] == ["kept"] * (len(months()) - 1)
    assert statements and not [s for s in statements if "sum(" in s and "retention_partition_rows" in s]
