"""What a test's commit costs: PostgreSQL with and without synchronous_commit, SQLite on disk and on tmpfs.

The test suite (tests/conftest.py) runs PostgreSQL test sessions with
``synchronous_commit=off`` and keeps its temporary files, SQLite test
databases included, under /dev/shm: a test commits once per batch of the
engine, per DDL and per ledger entry written alone, and this measures what
one commit waits for. Both variants of each database run in the same
process, alternately, on the same table::

    .venv/bin/python -m bench.commit_latency [--commits 200] [--repeat 3]

Prints the median milliseconds per commit of each variant and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

POSTGRESQL = os.environ.get("RETENTION_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgresql(options: str, commits: int) -> float:
    engine = sa.create_engine(POSTGRESQL, connect_args={"options": options} if options else {})
    table = f"bench_commit_{os.getpid()}"
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {table} (x int)")
            conn.commit()
            started = time.perf_counter()
            for _ in range(commits):
                conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1)")
                conn.commit()
            elapsed = time.perf_counter() - started
            conn.exec_driver_sql(f"DROP TABLE {table}")
            conn.commit()
    finally:
        engine.dispose()
    return elapsed / commits * 1000


def _sqlite(folder: str, commits: int) -> float:
    with tempfile.TemporaryDirectory(dir=folder) as directory:
        conn = sqlite3.connect(Path(directory) / "bench.sqlite")
        try:
            conn.execute("CREATE TABLE t (x int)")
            conn.commit()
            started = time.perf_counter()
            for _ in range(commits):
                conn.execute("INSERT INTO t VALUES (1)")
                conn.commit()
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
    return elapsed / commits * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pairs: list[tuple[str, Callable[[], float], str, Callable[[], float]]] = [
        (
            "PostgreSQL synchronous_commit=on",
            lambda: _postgresql("", args.commits),
            "PostgreSQL synchronous_commit=off",
            lambda: _postgresql("-csynchronous_commit=off", args.commits),
        ),
        (
            "SQLite file in /tmp",
            lambda: _sqlite("/tmp", args.commits),
            "SQLite file in /dev/shm",
            lambda: _sqlite("/dev/shm", args.commits),
        ),
    ]
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{'variant':<36} {'ms/commit':>10}")
    for before_name, before, after_name, after in pairs:
        slow, fast = [], []
        for _ in range(args.repeat):
            slow.append(before())
            fast.append(after())
        s, f = statistics.median(slow), statistics.median(fast)
        print(f"{before_name:<36} {s:>10.2f}")
        print(f"{after_name:<36} {f:>10.2f}   ({s / f:.1f}x)")


if __name__ == "__main__":
    main()
