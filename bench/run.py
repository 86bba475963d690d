"""Benchmark: the engine against the raw SQL a DBA would write, on the same data.

    python bench/run.py --db sqlite --rows 1000000
    python bench/run.py --db postgresql://postgres@127.0.0.1/test --rows 1000000
    python bench/run.py --db mysql://root@127.0.0.1/test --rows 1000000

On MariaDB/MySQL with ``pt-archiver`` on PATH, Percona Toolkit's bulk purge
of the same rows runs too; on PostgreSQL, the hand-written audited SQL of
bench/baselines.py (today's ledger content and a leaner one), the practical
limit of an audited purge.

Each measurement regenerates the table in the database (generation is not
timed), then times one operation. Baselines run in the same process on the
same data, so the ratios hold on a noisy shared machine even when the
absolute times do not. Each figure is the median of ``--repeat`` runs, printed with every run's seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import orm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import baselines  # noqa: E402
from retention import logs  # noqa: E402
from retention.engine import execute, partition_counts, partitions, set_purge  # noqa: E402
from retention.policy import validate_pack  # noqa: E402
from retention.store import migrate  # noqa: E402
from retention.store.config import create_engine  # noqa: E402

AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
CUTOFF = dt.datetime(2025, 9, 30, 22, tzinfo=dt.UTC)  # P13M before AS_OF, at Paris midnight
SECRET = b"bench-key"


def pack(
    action: str, batch_size: int, *, ledger: str = "record", table: str = "bench_events", max_share: float = 1.0
) -> Any:
    """The benchmark's rule pack: purge (``delete`` or ``drop_partition``) or archive after 13 months.

    The guard is off (``max_share`` 1.0: a share of 100 % refuses nothing, so the run counts nothing for it);
    a lower ``max_share`` makes the run count the due rows and the table's rows first, as a guarded run does.
    """
    steps: list[dict[str, Any]] = [{"to": "purged", "action": "delete" if action == "archive" else action}]
    if action == "archive":
        steps = [
            {
                "to": "archived",
                "action": "archive",
                "columns": ["id", "customer_id", "collected_at"],
                "then": "delete",
            },
            {"to": "purged", "after": "P5Y"},
        ]
    return validate_pack(
        {
            "pack": "bench",
            "version": "1",
            "effective_from": dt.date(2000, 1, 1),
            "timezone": "Europe/Paris",
            "batch_size": batch_size,
            "guard": {"max_share": max_share},
            "datasets": {
                "events": {
                    "table": table,
                    "ledger": ledger,
                    "partitioned": action == "drop_partition",
                    "key": "id",
                    "subject_key": "customer_id",
                    "basis": "bench",
                    "keep": [
                        {
                            "clock": {"column": "collected_at", "type": "timestamptz"},
                            "period": "P13M",
                        }
                    ],
                    "lifecycle": steps,
                }
            },
        },
        Path("<bench>"),
        "",
    )


def seconds_expr(var: str, layout: str, div: str = "/") -> str:
    """SQL for a row's offset in seconds from the start, by the row number ``var``.

    ``time``: ids follow time within an hour, as in tables filled as events
    happen (logs, orders, analytics). ``shuffled``: ids and times are
    unrelated, the worst case for keyset batches, which then touch pages all
    over the clock index in every batch.
    """
    if layout == "time":
        return f"({var} * (:span - 3600) {div} :rows + ({var} * 2654435761 + :seed) % 3600)"
    return f"(({var} * 2654435761 + :seed) % :span)"


def generate(engine: sa.Engine, rows: int, seed: int, layout: str = "time") -> None:
    """Rows spread over 4 years before AS_OF, ~70 % older than the cutoff; built inside the database."""
    span = 4 * 365 * 86400
    start = AS_OF - dt.timedelta(seconds=span)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_events"))
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE TABLE bench_events (id BIGINT PRIMARY KEY, customer_id INTEGER NOT NULL, "
                    "collected_at TIMESTAMPTZ NOT NULL, payload VARCHAR(100))"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO bench_events SELECT g, (g * 7919) % 100000, "
                    f":start + make_interval(secs => {seconds_expr('g', layout)}), "
                    "'payload-' || g FROM generate_series(1::bigint, :rows) AS g"
                ),
                {"start": start, "seed": seed, "span": span, "rows": rows},
            )
        elif engine.dialect.name in ("mysql", "mariadb"):
            conn.execute(
                sa.text(
                    "CREATE TABLE bench_events (id BIGINT PRIMARY KEY, customer_id INTEGER NOT NULL, "
                    "collected_at DATETIME NOT NULL, payload VARCHAR(100))"
                )
            )
            # MariaDB's sequence engine (seq_1_to_N) instead of a recursive CTE,
            # whose depth max_recursive_iterations limits.
            conn.execute(
                sa.text(
                    f"INSERT INTO bench_events SELECT seq, (seq * 7919) % 100000, "
                    f"DATE_ADD(:start, INTERVAL {seconds_expr('seq', layout, 'DIV')} SECOND), "
                    f"CONCAT('payload-', seq) FROM seq_1_to_{int(rows)}"
                ),
                {"start": start.replace(tzinfo=None), "seed": seed, "span": span, "rows": rows},
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TABLE bench_events (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
                    "collected_at DATETIME NOT NULL, payload VARCHAR(100))"
                )
            )
            conn.execute(
                sa.text(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :rows) "
                    "INSERT INTO bench_events SELECT n, (n * 7919) % 100000, "
                    f"strftime('%Y-%m-%d %H:%M:%S', :start, '+' || {seconds_expr('n', layout)} || ' seconds'), "
                    "'payload-' || n FROM g"
                ),
                {
                    "start": start.strftime("%Y-%m-%d %H:%M:%S"),
                    "seed": seed,
                    "span": span,
                    "rows": rows,
                },
            )
        conn.execute(sa.text("CREATE INDEX ix_bench_collected ON bench_events (collected_at)"))
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE bench_events"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            conn.execute(sa.text("ANALYZE TABLE bench_events"))


def generate_partitioned(engine: sa.Engine, rows: int, seed: int, layout: str = "time", tracked: bool = False) -> None:
    """The same rows as ``generate``, in a PostgreSQL table range-partitioned by month.

    Month bounds are Paris midnights, as a DBA partitioning for a Paris
    policy would draw them, so the 13-month cutoff falls on a bound.
    ``tracked``: ``retention partitions track`` runs on the empty partitions
    before the rows are inserted, as an operator would set it up (the
    engine's tables must be at head and stay so); the insert's time is printed.
    """
    span = 4 * 365 * 86400
    start = AS_OF - dt.timedelta(seconds=span)
    paris = ZoneInfo("Europe/Paris")
    first = dt.datetime(start.year, start.month, 1, tzinfo=paris)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_plog"))
        conn.execute(
            sa.text(
                "CREATE TABLE bench_plog (id BIGINT NOT NULL, customer_id INTEGER NOT NULL, "
                "collected_at TIMESTAMPTZ NOT NULL, payload VARCHAR(100), PRIMARY KEY (id, collected_at)) "
                "PARTITION BY RANGE (collected_at)"
            )
        )
        low = first
        while low <= AS_OF:
            high = (low.replace(tzinfo=None) + dt.timedelta(days=32)).replace(day=1).replace(tzinfo=paris)
            conn.execute(
                sa.text(
                    f"CREATE TABLE bench_plog_{low:%Y_%m} PARTITION OF bench_plog "
                    f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
                )
            )
            low = high
    if tracked:
        with engine.connect() as conn:
            found = partitions.range_partitions(
                conn, sa.Table("bench_plog", sa.MetaData()), _collected_clock(conn, "bench_plog")
            )
        partition_counts.track(engine, "bench_plog", "collected_at", "timestamptz", found, dt.datetime.now(dt.UTC))
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO bench_plog SELECT g, (g * 7919) % 100000, "
                f":start + make_interval(secs => {seconds_expr('g', layout)}), "
                "'payload-' || g FROM generate_series(1::bigint, :rows) AS g"
            ),
            {"start": start, "seed": seed, "span": span, "rows": rows},
        )
    print(f"    insert of {rows} rows, {'tracked' if tracked else 'untracked'}: {time.perf_counter() - began:.3f} s")
    if tracked:
        # The nightly `retention partitions track` (from the job that makes next month's partition): nothing to
        # count, each partition's deltas folded into one row. Not part of the drop's time; printed here.
        began = time.perf_counter()
        partition_counts.track(engine, "bench_plog", "collected_at", "timestamptz", found, dt.datetime.now(dt.UTC))
        print(f"    partitions track after the insert (folds the deltas): {time.perf_counter() - began:.3f} s")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE INDEX ix_bench_plog_collected ON bench_plog (collected_at)"))
    # Vacuumed, as autovacuum leaves insert-only partitions months before they are due
    # (PostgreSQL >= 13 vacuums after inserts); VACUUM cannot run in a transaction.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) bench_plog"))


def _collected_clock(conn: sa.Connection, table: str) -> Any:
    """The bench pack's clock on ``table`` as the engine compiles it (for the partitions' bounds)."""
    planner = execute.planners_at(conn, pack("drop_partition", 5000, table=table), AS_OF)[0]["events"]
    assert planner.sql is not None
    return planner.sql.clocks[0]


def raw_delete_partitioned(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        return int(conn.execute(sa.text("DELETE FROM bench_plog WHERE collected_at < :c"), {"c": CUTOFF}).rowcount)


def reset_engine_tables(engine: sa.Engine) -> None:
    migrate.downgrade(engine, "base")
    migrate.upgrade(engine)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def cutoff_param(engine: sa.Engine) -> Any:
    return CUTOFF if engine.dialect.name == "postgresql" else CUTOFF.strftime("%Y-%m-%d %H:%M:%S")


def raw_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM bench_events WHERE collected_at < :c"),
                {"c": cutoff_param(engine)},
            ).scalar_one()
        )


def raw_delete(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text("DELETE FROM bench_events WHERE collected_at < :c"),
                {"c": cutoff_param(engine)},
            ).rowcount
        )


def raw_archive(engine: sa.Engine) -> int:
    """INSERT ... SELECT into a plain archive table, then DELETE: the floor for archiving."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_archive"))
        conn.execute(
            sa.text("CREATE TABLE bench_archive (id BIGINT PRIMARY KEY, customer_id INTEGER, collected_at VARCHAR(40))")
        )
        text = "CHAR(40)" if engine.dialect.name in ("mysql", "mariadb") else "VARCHAR(40)"
        conn.execute(
            sa.text(
                f"INSERT INTO bench_archive SELECT id, customer_id, CAST(collected_at AS {text}) "
                "FROM bench_events WHERE collected_at < :c"
            ),
            {"c": cutoff_param(engine)},
        )
        return int(
            conn.execute(
                sa.text("DELETE FROM bench_events WHERE collected_at < :c"),
                {"c": cutoff_param(engine)},
            ).rowcount
        )


class _Base(orm.DeclarativeBase):
    pass


class _Event(_Base):
    __tablename__ = "bench_events"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    customer_id: orm.Mapped[int]
    collected_at: orm.Mapped[dt.datetime]
    payload: orm.Mapped[str | None]


class _Audit(_Base):
    __tablename__ = "bench_audit"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=True)
    record_id: orm.Mapped[int]
    deleted_at: orm.Mapped[dt.datetime]


def naive_orm(engine: sa.Engine, sample: int) -> int:
    """What a hurried script does: load each due row, delete it, insert an audit row, commit."""
    _Audit.__table__.drop(engine, checkfirst=True)
    _Audit.__table__.create(engine)
    done = 0
    with orm.Session(engine) as session:
        ids = session.scalars(
            sa.select(_Event.id).where(_Event.collected_at < cutoff_param(engine)).limit(sample)
        ).all()
        for record_id in ids:
            event = session.get(_Event, record_id)
            session.delete(event)
            session.add(_Audit(record_id=record_id, deleted_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
            session.commit()
            done += 1
    return done


def engine_plan(engine: sa.Engine, batch_size: int) -> int:
    return execute.plan(engine, pack("delete", batch_size), AS_OF).total()


def engine_run(
    engine: sa.Engine,
    action: str,
    batch_size: int,
    ledger: str = "record",
    table: str = "bench_events",
    *,
    set_based: bool = True,
    max_share: float = 1.0,
) -> int:
    """One run; ``set_based=False``: the purge or archive record by record (``RETENTION_SET_BASED=0``)."""
    saved = os.environ.get(set_purge.SWITCH)
    if not set_based:
        os.environ[set_purge.SWITCH] = "0"
    try:
        loaded = pack(action, batch_size, ledger=ledger, table=table, max_share=max_share)
        result = execute.run(engine, loaded, AS_OF, secret=SECRET)
    finally:
        if saved is None:
            os.environ.pop(set_purge.SWITCH, None)
        else:
            os.environ[set_purge.SWITCH] = saved
    return sum(sum(v.values()) for v in result.counts.values())


class _Archived(_Base):
    __tablename__ = "bench_orm_archive"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    payload: orm.Mapped[str] = orm.mapped_column(sa.Text)
    archived_at: orm.Mapped[dt.datetime]


def naive_orm_archive(engine: sa.Engine, sample: int) -> int:
    """The hurried script's archive: load each due row, copy it as JSON, delete it, audit it, commit."""
    for table in (_Audit.__table__, _Archived.__table__):
        table.drop(engine, checkfirst=True)  # type: ignore[attr-defined]
        table.create(engine)  # type: ignore[attr-defined]
    done = 0
    with orm.Session(engine) as session:
        ids = session.scalars(
            sa.select(_Event.id).where(_Event.collected_at < cutoff_param(engine)).limit(sample)
        ).all()
        for record_id in ids:
            event = session.get(_Event, record_id)
            assert event is not None
            payload = json.dumps(
                {"collected_at": str(event.collected_at), "customer_id": event.customer_id, "id": event.id},
                sort_keys=True,
            )
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            session.add(_Archived(id=record_id, payload=payload, archived_at=now))
            session.delete(event)
            session.add(_Audit(record_id=record_id, deleted_at=now))
            session.commit()
            done += 1
    return done


@contextlib.contextmanager
def time_split() -> Iterator[dict[str, float]]:
    """Seconds spent in each part of a run, by wrapping the engine's functions (this process only).

    The parts nest as the run does: ``ledger append`` includes the four
    ``items`` parts, so the chain itself (entry hashing and its insert) is
    ``ledger append`` minus them. Wrapping costs about a microsecond per
    call, and these are called per batch, not per record.
    """
    from retention.engine import apply as ap
    from retention.engine import plan as pl
    from retention.engine import run_datasets as rd
    from retention.ledger import bulk as ledger_bulk
    from retention.ledger import chain as ledger
    from retention.ledger import items as ledger_items

    spent: dict[str, float] = {}
    patches: list[tuple[Any, str, Any]] = [
        (pl.DatasetPlanner, "next_batch", "select + evaluate"),
        (rd, "witness", "witness (re-check under lock)"),
        (ap, "_delete_rows", "delete"),
        (ledger_bulk, "prepare", "items: pseudonyms + leaf hashes"),
        (ledger_bulk, "insert", "items: insert"),
        (ledger, "append", "ledger append"),
        (ledger_items, "index_items", "items: lookup rows (per batch, in the append)"),
        (sa.engine.Connection, "_commit_impl", "commit"),
    ]
    originals = []
    for owner, name, label in patches:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def wrapped(*args: Any, __original: Any = original, __label: str = label, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return __original(*args, **kwargs)
            finally:
                spent[__label] = spent.get(__label, 0.0) + time.perf_counter() - began

        setattr(owner, name, wrapped)
    try:
        yield spent
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def split_run(engine: sa.Engine, args: argparse.Namespace) -> dict[str, float]:
    """One more purge + ledger run, timed part by part (not part of the medians)."""
    generate(engine, args.rows, args.seed, args.layout)
    reset_engine_tables(engine)
    with time_split() as spent:
        total, moved = timed(lambda: engine_run(engine, "delete", args.batch_size))
    items = sum(v for k, v in spent.items() if k.startswith("items"))
    spent["chain (ledger append - items)"] = spent.get("ledger append", 0.0) - items
    accounted = sum(v for k, v in spent.items() if k != "ledger append")
    spent["other (guard, locks, run record, Python between)"] = total - accounted
    print()
    print(f"time split of one purge + ledger run ({moved} records, {total:.3f} s):")
    print()
    print("| part | seconds | µs per record | share |")
    print("|---|---:|---:|---:|")
    for name, seconds in spent.items():
        print(f"| {name} | {seconds:.3f} | {seconds / max(moved, 1) * 1e6:.2f} | {seconds / total:.0%} |")
    return dict(spent)


def child_purge(url: str, batch_size: int) -> tuple[float, int, float]:
    """One purge + ledger run in a separate process on the tables as they are: (seconds, rows, peak RSS MiB).

    The seconds are timed inside the child around the run alone (not its start or imports), so they compare
    with an in-process ``measure``; the peak RSS is the child's, which holds nothing but the run.
    """
    code = (
        f"import resource, sys, time; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['x'];"
        "import bench.run as b; from retention import logs; from retention.store.config import create_engine;"
        "logs.configure(level='warning');"
        f"e = create_engine({url!r}); t = time.perf_counter(); n = b.engine_run(e, 'delete', {batch_size});"
        "s = time.perf_counter() - t;"
        "print(s, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seconds, moved, rss = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(moved), int(rss) / 1024


def peak_rss(url: str, rows: int, seed: int, batch_size: int, layout: str) -> float:
    """Peak RSS (MiB) of a separate process that generates nothing and runs the purge."""
    engine = create_engine(url)
    generate(engine, rows, seed, layout)
    reset_engine_tables(engine)
    engine.dispose()
    return child_purge(url, batch_size)[2]


def open_engine(url: str) -> sa.Engine:
    """The engine of a bench script's database at the migrations' head, batch logs off (the tables are the output)."""
    logs.configure(level="warning")
    engine = create_engine(url)
    migrate.upgrade(engine)
    return engine


def load() -> str:
    """The time and load average (``uptime``), to say what else was running beside a measurement."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{dt.datetime.now(dt.UTC):%H:%M:%S} UTC, load average {os.getloadavg()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="'sqlite' (a temporary file) or a database URL")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--layout",
        choices=["time", "shuffled"],
        default="time",
        help="'time': ids follow time (logs, orders); 'shuffled': unrelated, the worst case for batches",
    )
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--orm-sample", type=int, default=2000)
    parser.add_argument("--rss-scales", default="", help="e.g. 1000000,10000000 (slow); empty to skip")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument(
        "--skip",
        default="",
        help=(
            "comma-separated parts to leave out at large scales: purge (raw DELETE and the audited "
            "purge: with every other part left out, only plan against a raw count runs), plan (the raw "
            "count and plan, and the unpartitioned table they need), summary, archive, orm, partitions, "
            "guarded (the partition drop with its guard counting), rowbyrow, split, perrecord, ptarchiver, "
            "handwritten"
        ),
    )
    parser.add_argument(
        "--purge-in-child",
        action="store_true",
        help=(
            "time the audited purge in a separate process, whose peak RSS is then the RSS at --rows "
            "(--rss-scales does not run that scale again): one engine run at 10M instead of two"
        ),
    )
    parser.add_argument(
        "--contents",
        default=",".join(baselines.CONTENTS),
        help=f"the hand-written baseline's contents to measure (of {', '.join(baselines.CONTENTS)})",
    )
    args = parser.parse_args()
    logs.configure(level="warning")  # the tables below are the output; batch logs would drown them
    # WAL, as a SQLite database a nightly job shares with its application should use (docs/performance.md).
    url = f"sqlite:///{ROOT / 'bench' / 'bench.sqlite'}?journal_mode=wal" if args.db == "sqlite" else args.db
    if args.db == "sqlite":
        (ROOT / "bench" / "bench.sqlite").unlink(missing_ok=True)
    engine = create_engine(url)
    migrate.upgrade(engine)

    results: dict[str, dict[str, Any]] = {}
    rss: dict[str, float] = {}

    def measure(
        name: str,
        action: Callable[[], Any],
        *,
        fresh: bool = True,
        partitioned: bool = False,
        timed_inside: bool = False,
        tracked: bool = False,
    ) -> None:
        """Median of ``--repeat`` timings, each on freshly generated data unless ``fresh`` is off.

        ``timed_inside``: the action times itself and returns (seconds, rows), as ``child_purge`` does.
        ``tracked``: the partitioned table's counts kept from its first row (``retention partitions track``).
        """
        make = generate_partitioned if partitioned else generate
        times, counts = [], []
        for _ in range(args.repeat):
            if fresh and tracked:
                reset_engine_tables(engine)  # before: tracking lives in the engine's tables
                generate_partitioned(engine, args.rows, args.seed, args.layout, tracked=True)
            elif fresh:
                make(engine, args.rows, args.seed, args.layout)
                reset_engine_tables(engine)
            seconds, count = action() if timed_inside else timed(action)
            times.append(seconds)
            counts.append(count)
        results[name] = {"seconds": statistics.median(times), "rows": statistics.median(counts), "runs": times}
        # Every run's seconds beside the median: a median is one of them (odd --repeat), so a table's figure
        # can be checked against the runs it came from (bench/RESULTS.md, section mariaclk).
        runs = ", ".join(f"{seconds:.3f}" for seconds in times)
        print(
            f"  {name}: {results[name]['seconds']:.3f} s for {results[name]['rows']:.0f} rows (runs: {runs} s)",
            flush=True,
        )

    print(
        f"{args.rows} rows on {engine.dialect.name}, layout {args.layout}, batch size {args.batch_size}, "
        f"median of {args.repeat}"
    )
    print(f"started: {load()}", flush=True)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    if "plan" not in skip:
        generate(engine, args.rows, args.seed, args.layout)
        reset_engine_tables(engine)
        measure("raw count(*)", lambda: raw_count(engine), fresh=False)
        measure("engine plan", lambda: engine_plan(engine, args.batch_size), fresh=False)
    if "purge" not in skip:
        measure("raw DELETE (no audit)", lambda: raw_delete(engine))
        if args.purge_in_child:
            child_rss: list[float] = []

            def in_child() -> tuple[float, int]:
                seconds, moved, mib = child_purge(url, args.batch_size)
                child_rss.append(mib)
                return seconds, moved

            measure("engine run: purge + ledger", in_child, timed_inside=True)
            rss[str(args.rows)] = max(child_rss)
        else:
            measure("engine run: purge + ledger", lambda: engine_run(engine, "delete", args.batch_size))
    if "purge" not in skip and "perrecord" not in skip:
        measure(
            "engine run: purge + ledger, per-record path",
            lambda: engine_run(engine, "delete", args.batch_size, set_based=False),
        )
    mysql = engine.dialect.name in ("mysql", "mariadb")
    if mysql and "ptarchiver" not in skip and baselines.pt_archiver_available():
        engine.dispose()  # pt-archiver's own connections should not wait on ours
        measure(
            "pt-archiver bulk purge (no audit)",
            lambda: baselines.pt_archiver(url, CUTOFF.strftime("%Y-%m-%d %H:%M:%S")),
        )
    if engine.dialect.name == "postgresql" and "handwritten" not in skip:
        for content in [c for c in baselines.CONTENTS if c in args.contents.split(",")]:
            measure(
                f"hand-written audited SQL ({content})",
                functools.partial(baselines.handwritten_audited, engine, content, CUTOFF, SECRET),
            )
    if "summary" not in skip:
        measure(
            "engine run: purge + summary ledger",
            lambda: engine_run(engine, "delete", args.batch_size, ledger="summary"),
        )
    if "archive" not in skip:
        measure("raw INSERT..SELECT + DELETE", lambda: raw_archive(engine))
        measure("engine run: archive + ledger", lambda: engine_run(engine, "archive", args.batch_size))
        if "perrecord" not in skip:
            measure(
                "engine run: archive + ledger, per-record path",
                lambda: engine_run(engine, "archive", args.batch_size, set_based=False),
            )
    if "orm" not in skip:
        measure("naive ORM loop (sample)", lambda: naive_orm(engine, args.orm_sample))
        if "archive" not in skip:
            measure("naive ORM archive loop (sample)", lambda: naive_orm_archive(engine, args.orm_sample))
    partitioned = engine.dialect.name == "postgresql" and "partitions" not in skip
    if partitioned:
        measure("partitioned: raw DELETE", lambda: raw_delete_partitioned(engine), partitioned=True)
        if "rowbyrow" not in skip:
            measure(
                "partitioned: engine purge row by row",
                lambda: engine_run(engine, "delete", args.batch_size, table="bench_plog"),
                partitioned=True,
            )
        measure(
            "partitioned: engine partition drop",
            lambda: engine_run(engine, "drop_partition", args.batch_size, table="bench_plog"),
            partitioned=True,
            tracked=True,
        )
        measure(
            "partitioned: engine partition drop, untracked (count(*))",
            lambda: engine_run(engine, "drop_partition", args.batch_size, table="bench_plog"),
            partitioned=True,
        )
        if "guarded" not in skip:
            measure(
                "partitioned: engine partition drop, guard counting (max_share 0.99)",
                lambda: engine_run(engine, "drop_partition", args.batch_size, table="bench_plog", max_share=0.99),
                partitioned=True,
            )

    def rate(name: str) -> float:
        r = results[name]
        return r["rows"] / r["seconds"] if r["seconds"] else float("inf")

    def ratio(name: str, value: Callable[[], float], unit: str, target: str) -> None:
        with contextlib.suppress(KeyError):  # a part left out with --skip
            rows_table.append((name, value(), unit, target))

    rows_table: list[tuple[str, float, str, str]] = []
    ratio(
        "plan vs raw count",
        lambda: results["engine plan"]["seconds"] / results["raw count(*)"]["seconds"],
        "time ratio",
        "<= 2",
    )
    ratio(
        "purge throughput vs raw DELETE",
        lambda: rate("engine run: purge + ledger") / rate("raw DELETE (no audit)"),
        "rows/s ratio",
        ">= 0.2",
    )
    ratio(
        "purge throughput vs the per-record path (same run)",
        lambda: rate("engine run: purge + ledger") / rate("engine run: purge + ledger, per-record path"),
        "rows/s ratio",
        "(before/after)",
    )
    ratio(
        "per-record path vs pt-archiver bulk purge",
        lambda: rate("engine run: purge + ledger, per-record path") / rate("pt-archiver bulk purge (no audit)"),
        "rows/s ratio",
        "(before)",
    )
    ratio(
        "purge throughput vs pt-archiver bulk purge",
        lambda: rate("engine run: purge + ledger") / rate("pt-archiver bulk purge (no audit)"),
        "rows/s ratio",
        ">= 1.0",
    )
    ratio(
        "pt-archiver throughput vs raw DELETE",
        lambda: rate("pt-archiver bulk purge (no audit)") / rate("raw DELETE (no audit)"),
        "rows/s ratio",
        "(reference)",
    )
    for content in baselines.CONTENTS:
        name = f"hand-written audited SQL ({content})"
        ratio(
            f"hand-written ({content}) throughput vs raw DELETE",
            functools.partial(lambda n: rate(n) / rate("raw DELETE (no audit)"), name),
            "rows/s ratio",
            ">= 0.25 (new content)" if content != "today" else "(reference)",
        )
    ratio(
        "purge throughput vs hand-written (today's content)",
        lambda: rate("engine run: purge + ledger") / rate("hand-written audited SQL (today)"),
        "rows/s ratio",
        "(reference: format 2 content)",
    )
    ratio(
        "purge throughput vs hand-written (format4: the content before format 5)",
        lambda: rate("engine run: purge + ledger") / rate("hand-written audited SQL (format4)"),
        "rows/s ratio",
        "(reference)",
    )
    ratio(
        "purge throughput vs hand-written (format5: the same content)",
        lambda: rate("engine run: purge + ledger") / rate("hand-written audited SQL (format5)"),
        "rows/s ratio",
        ">= 0.83 (within 1.2x)",
    )
    ratio(
        "archive throughput vs raw INSERT+DELETE",
        lambda: rate("engine run: archive + ledger") / rate("raw INSERT..SELECT + DELETE"),
        "rows/s ratio",
        ">= 0.2",
    )
    ratio(
        "archive throughput vs the per-record path (same run)",
        lambda: rate("engine run: archive + ledger") / rate("engine run: archive + ledger, per-record path"),
        "rows/s ratio",
        "(before/after)",
    )
    ratio(
        "archive throughput vs naive ORM archive loop (extrapolated)",
        lambda: rate("engine run: archive + ledger") / rate("naive ORM archive loop (sample)"),
        "rows/s ratio",
        ">= 100",
    )
    ratio(
        "summary-ledger purge throughput vs raw DELETE",
        lambda: rate("engine run: purge + summary ledger") / rate("raw DELETE (no audit)"),
        "rows/s ratio",
        "(reference)",
    )
    ratio(
        "purge throughput vs naive ORM (extrapolated)",
        lambda: rate("engine run: purge + ledger") / rate("naive ORM loop (sample)"),
        "rows/s ratio",
        ">= 100",
    )
    if partitioned:
        drop = results["partitioned: engine partition drop"]["seconds"]
        ratio(
            "partition drop vs raw DELETE of the same rows",
            lambda: results["partitioned: raw DELETE"]["seconds"] / drop,
            "speed-up",
            ">= 10 (at 10M)",
        )
        ratio(
            "partition drop, untracked (count(*)), vs raw DELETE",
            lambda: (
                results["partitioned: raw DELETE"]["seconds"]
                / results["partitioned: engine partition drop, untracked (count(*))"]["seconds"]
            ),
            "speed-up",
            "(reference)",
        )
        ratio(
            "partition drop with its guard counting vs raw DELETE",
            lambda: (
                results["partitioned: raw DELETE"]["seconds"]
                / results["partitioned: engine partition drop, guard counting (max_share 0.99)"]["seconds"]
            ),
            "speed-up",
            "(reference)",
        )
        ratio(
            "partition drop vs engine row-by-row purge",
            lambda: results["partitioned: engine purge row by row"]["seconds"] / drop,
            "speed-up",
            "(reference)",
        )
    results_split: dict[str, float] = {}
    if "split" not in skip:
        results_split = split_run(engine, args)

    print()
    print("| measurement | seconds (median) | rows | rows/s |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.3f} | {r['rows']:.0f} | {rate(name):,.0f} |")
    print()
    print("| comparison | ratio | unit | target |")
    print("|---|---:|---|---|")
    for name, value, unit, target in rows_table:
        print(f"| {name} | {value:.3f} | {unit} | {target} |")
    if args.rss_scales:
        measured = dict(rss)  # the purge's own child at --rows, with --purge-in-child
        rss.clear()
        for scale in [int(s) for s in args.rss_scales.split(",")]:
            rss[str(scale)] = measured.get(str(scale)) or peak_rss(url, scale, args.seed, args.batch_size, args.layout)
        scales = list(rss)
        print()
        print("| rows | peak RSS (MiB) |")
        print("|---:|---:|")
        for scale_name, mib in rss.items():
            print(f"| {int(scale_name):,} | {mib:.1f} |")
        if len(scales) >= 2:
            print(f"\nRSS ratio {scales[-1]} / {scales[0]}: {rss[scales[-1]] / rss[scales[0]]:.2f} (target <= 1.2)")
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    )
    print(f"finished: {load()}")
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "ratios": rows_table, "rss": rss, "split": results_split}, indent=2)
        )
    engine.dispose()


if __name__ == "__main__":
    main()
