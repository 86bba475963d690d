"""What ``retention partitions track`` costs the application's writes (PostgreSQL).

    python bench/partition_writes.py --db postgresql://postgres@127.0.0.1/bench_x [--single 2000] [--bulk 1000000]

The same statements on the same monthly-partitioned table, untracked and
tracked (the counting triggers installed), alternating, each repeated
``--repeat`` times; prints the medians and the ratio tracked / untracked:

- ``--single`` one-row INSERT statements through the partitioned table, each
  its own transaction (a web application logging a request), and the same
  naming the partition itself;
- one ``INSERT ... SELECT`` of ``--bulk`` rows (a batch load), and one
  ``DELETE`` of a tenth of them.

bench/RESULTS.md, "Issue 22, partition drop: counts kept as partitions are written".
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import load
from retention import logs
from retention.engine import partition_counts
from retention.engine.partitions import Partition
from retention.store import migrate
from retention.store.config import create_engine

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def build(engine: sa.Engine, tracked: bool) -> None:
    """A fresh table ``bench_pw`` with 12 monthly partitions (UTC bounds), tracked or not, empty."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_pw"))
        conn.execute(
            sa.text(
                "CREATE TABLE bench_pw (id BIGINT NOT NULL, customer_id INTEGER NOT NULL, at TIMESTAMPTZ NOT NULL, "
                "path VARCHAR(100), PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
            )
        )
        found = []
        for month in range(12):
            low = START.replace(month=month + 1)
            high = low.replace(month=month + 2) if month < 11 else low.replace(year=2026, month=1)
            conn.execute(
                sa.text(
                    f"CREATE TABLE bench_pw_{month:02d} PARTITION OF bench_pw "
                    f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
                )
            )
            found.append(Partition("public", f"bench_pw_{month:02d}", low, high))
    if tracked:
        partition_counts.track(engine, "bench_pw", "at", "timestamptz", found, dt.datetime.now(dt.UTC))


def single(engine: sa.Engine, n: int, target: str, commit_each: bool = True) -> float:
    """``n`` one-row INSERT statements, each committed (else all in one transaction); seconds."""
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.autocommit = commit_each  # type: ignore[attr-defined]
        cursor = raw.cursor()
        began = time.perf_counter()
        for i in range(n):
            cursor.execute(
                f"INSERT INTO {target} (id, customer_id, at, path) VALUES (%s, %s, %s, '/p')",
                (i, i % 1000, START + dt.timedelta(days=31 * 2 + i % 20, seconds=i)),
            )
        if not commit_each:
            raw.commit()
        seconds = time.perf_counter() - began
        raw.autocommit = False  # type: ignore[attr-defined]
    return seconds


def bulk(engine: sa.Engine, rows: int) -> tuple[float, float]:
    """One INSERT ... SELECT of ``rows`` over the year, then one DELETE of a tenth; seconds each."""
    with engine.begin() as conn:
        began = time.perf_counter()
        conn.execute(
            sa.text(
                "INSERT INTO bench_pw SELECT g, g % 1000, "
                ":start + make_interval(secs => ((g - 1) * 31535999.0 / :rows)), '/p' "
                "FROM generate_series(1::bigint, :rows) AS g"
            ),
            {"start": START, "rows": rows},
        )
        inserted = time.perf_counter() - began
    with engine.begin() as conn:
        began = time.perf_counter()
        conn.execute(sa.text("DELETE FROM bench_pw WHERE id % 10 = 0"))
        deleted = time.perf_counter() - began
    return inserted, deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--bulk", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logs.configure(level="warning")
    engine = create_engine(args.db)
    migrate.upgrade(engine)
    print(f"started: {load()}", flush=True)
    times: dict[str, dict[bool, list[float]]] = {}

    def note(name: str, tracked: bool, seconds: float) -> None:
        times.setdefault(name, {True: [], False: []})[tracked].append(seconds)

    for _ in range(args.repeat):
        for tracked in (False, True):
            build(engine, tracked)
            note(
                f"{args.single} one-row INSERTs through the table, each committed",
                tracked,
                single(engine, args.single, "bench_pw"),
            )
            build(engine, tracked)
            note(
                f"{args.single} one-row INSERTs through the table, one transaction",
                tracked,
                single(engine, args.single, "bench_pw", commit_each=False),
            )
            build(engine, tracked)
            note(
                f"{args.single} one-row INSERTs naming the partition, each committed",
                tracked,
                single(engine, args.single, "bench_pw_02"),
            )
            build(engine, tracked)
            inserted, deleted = bulk(engine, args.bulk)
            note(f"INSERT ... SELECT of {args.bulk} rows", tracked, inserted)
            note(f"DELETE of {args.bulk // 10} rows", tracked, deleted)
    print()
    print("| statement | untracked s | tracked s | tracked / untracked | extra per statement or row |")
    print("|---|---:|---:|---:|---:|")
    for name, pair in times.items():
        plain, kept = statistics.median(pair[False]), statistics.median(pair[True])
        per = args.single if "one-row" in name else (args.bulk if "INSERT" in name else args.bulk // 10)
        unit = "statement" if "one-row" in name else "row"
        print(
            f"| {name} | {plain:.3f} | {kept:.3f} | {kept / plain:.2f} | {(kept - plain) / per * 1e6:.1f} µs a {unit} |"
        )
    print(f"\nfinished: {load()}")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_pw"))


if __name__ == "__main__":
    main()
