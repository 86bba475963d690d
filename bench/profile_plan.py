"""Where one ``plan`` of bench/run.py's pack spends its time: statements timed by a cursor hook, and cProfile.

    python bench/profile_plan.py --db postgresql://postgres@127.0.0.1/pgplan_bench --rows 1000000
    python bench/profile_plan.py --db ... --reuse          # the table bench/run.py left (no generation)

Generates bench/run.py's table (unless ``--reuse``), runs ``--warm`` plans
(a scheduler's process has run before), then times ``--plans`` plans and a
raw count between each, and prints for the median plan each statement's
wall time (grouped by its text's first 70 characters), the statements a plan
sends, and the top of a cProfile of one more plan. Fixed work (catalog
reads, small statements) is what separates plan from a raw count at 1M on
PostgreSQL; this says which.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep the table already there")
    parser.add_argument("--warm", type=int, default=2)
    parser.add_argument("--plans", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    engine = bench.open_engine(args.db)
    if not args.reuse:
        bench.generate(engine, args.rows, args.seed)
        bench.reset_engine_tables(engine)
    print(f"started: {bench.load()}")
    for _ in range(args.warm):
        bench.engine_plan(engine, 1000)

    statements: list[tuple[str, float]] = []
    started: dict[int, float] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        started[id(cursor)] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append((" ".join(statement.split())[:70], time.perf_counter() - started.pop(id(cursor))))

    plans: list[tuple[float, float, list[tuple[str, float]]]] = []
    for _ in range(args.plans):
        statements.clear()
        count, _ = bench.timed(lambda: bench.raw_count(engine))
        statements.clear()
        seconds, _ = bench.timed(lambda: bench.engine_plan(engine, 1000))
        plans.append((seconds, count, list(statements)))
    plans.sort(key=lambda p: p[0])
    seconds, count, sent = plans[len(plans) // 2]
    print(
        f"plan {seconds:.3f} s (median of {args.plans}; all {[round(p[0], 3) for p in plans]}), "
        f"raw count {statistics.median(p[1] for p in plans):.3f} s, "
        f"ratio {seconds / statistics.median(p[1] for p in plans):.2f}; {len(sent)} statements, "
        f"{sum(t for _, t in sent):.3f} s in them"
    )
    grouped: dict[str, list[float]] = defaultdict(list)
    for text, took in sent:
        grouped[text].append(took)
    print(f"{'s':>8} {'n':>4}  statement")
    for text, took in sorted(grouped.items(), key=lambda kv: -sum(kv[1])):
        print(f"{sum(took):8.4f} {len(took):4d}  {text}")

    profile = cProfile.Profile()
    profile.enable()
    bench.engine_plan(engine, 1000)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    print(f"ended: {bench.load()}")


if __name__ == "__main__":
    main()
