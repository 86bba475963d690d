"""Where a partition-drop run spends its time: cProfile and per-statement timings of one run.

    python bench/profile_drop.py --db postgresql://postgres@127.0.0.1/bench_x --rows 1000000 [--tracked]

Generates bench/run.py's monthly partitioned table (vacuumed), runs the engine's
``drop_partition`` purge once under cProfile with every statement timed, and prints
the run's time, the profile's top functions and the slowest statements (bench/RESULTS.md,
"Partition drop", branch ``drop``).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as bench


def time_statements(engine: sa.Engine, name: Callable[[str], str]) -> dict[str, list[Any]]:
    """[calls, seconds] of ``engine``'s statements by ``name(sql)``, filled as they run (a cursor hook)."""
    spent: dict[str, list[Any]] = collections.defaultdict(lambda: [0, 0.0])

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: sa.Connection, *_: Any) -> None:
        conn.info.setdefault("began", []).append(time.perf_counter())

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        entry = spent[name(statement)]
        entry[0] += 1
        entry[1] += time.perf_counter() - conn.info["began"].pop()

    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (partitions are dropped on PostgreSQL only)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--tracked", action="store_true", help="the partitions' counts kept from the first row (partitions track)"
    )
    args = parser.parse_args()
    engine = bench.open_engine(args.db)
    print(f"started: {bench.load()}")
    began = time.perf_counter()
    bench.reset_engine_tables(engine)
    bench.generate_partitioned(engine, args.rows, 1, tracked=args.tracked)
    print(f"generated {args.rows} rows in {time.perf_counter() - began:.1f} s")
    spent = time_statements(engine, lambda statement: " ".join(statement.split())[:110])

    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    rows = bench.engine_run(engine, "drop_partition", 5000, table="bench_plog")
    profile.disable()
    print(f"run: {time.perf_counter() - began:.3f} s for {rows} rows")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    print(f"statements: {sum(c for c, _ in spent.values())}, {sum(s for _, s in spent.values()):.3f} s")
    for text, (count, seconds) in sorted(spent.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{seconds:8.4f} s {count:5d}x {text}")
    print(f"finished: {bench.load()}")


if __name__ == "__main__":
    main()
