"""Where a set-based archive run's time goes per record, by statement.

    python bench/archive_profile.py --db postgresql://postgres@127.0.0.1/bench_x --rows 1000000

bench/run.py's raw ``INSERT ... SELECT`` + ``DELETE``, then one engine archive run (the bench's pack) with its
statements timed by a cursor hook (execute and fetch), printed by kind in µs a record, and the client's CPU
(bench/RESULTS.md, branch ``pdrop2``: at its commit 31c4c31, ``--rounds`` alternated the PostgreSQL batch as
one statement, since reverted, against three).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as bench
from bench.profile_drop import time_statements
from bench.purge_split import kind


def _kind(statement: str) -> str:
    words = " ".join(statement.split())
    for table in ("retention_archive", "retention_record_states"):
        if words.startswith(f"INSERT INTO {table}"):
            return f"INSERT INTO {table}"
    return kind(words)


def raw(engine: sa.Engine, rows: int) -> float:
    bench.generate(engine, rows, 1)
    began = time.perf_counter()
    bench.raw_archive(engine)
    return time.perf_counter() - began


def archive(engine: sa.Engine, rows: int, spent: dict[str, list[Any]] | None = None) -> tuple[float, float, int]:
    """Wall and client CPU seconds of one engine archive run on fresh rows, and the records it archived.

    ``spent``: :func:`time_statements`'s figures, emptied once the rows are generated (the run's alone).
    """
    bench.generate(engine, rows, 1)
    bench.reset_engine_tables(engine)
    if spent is not None:
        spent.clear()
    cpu, began = time.process_time(), time.perf_counter()
    moved = bench.engine_run(engine, "archive", 5000)
    return time.perf_counter() - began, time.process_time() - cpu, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    engine = bench.open_engine(args.db)
    print(f"started: {bench.load()}", flush=True)
    baseline = raw(engine, args.rows)
    spent = time_statements(engine, _kind)
    wall, cpu, moved = archive(engine, args.rows, spent)
    print(f"raw INSERT ... SELECT + DELETE {baseline:.3f} s; engine archive {wall:.3f} s for {moved} records")
    print(f"{wall / moved * 1e6:.1f} µs a record, client CPU {cpu / moved * 1e6:.1f}; vs raw {baseline / wall:.4f}")
    for text, (count, seconds) in sorted(spent.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"{seconds / moved * 1e6:7.2f} µs a record {seconds:8.3f} s {count:5d}x {text[:90]}")
    print(f"finished: {bench.load()}")


if __name__ == "__main__":
    main()
