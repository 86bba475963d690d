"""The PostgreSQL purge batch as one statement against three, and against the hand-written SQL, interleaved.

    python bench/purge_cte.py --db postgresql://postgres@127.0.0.1/bench_x --rows 300000 --repeat 3

On a shared machine two runs minutes apart differ by 30-50 % (bench/RESULTS.md),
more than the change measured. This script runs, in one process and in turn
within each repeat, on freshly generated data each time: a raw ``DELETE``; the
engine's purge with each batch in three statements (the batch's keys selected
and locked, the items inserted, the rows deleted: the path of MariaDB and
SQLite, and of PostgreSQL before issue 22's one-statement batch, obtained here
by making ``row_address`` answer None); the engine's purge in one statement
(``WITH d AS (DELETE ... RETURNING) INSERT ...``); and bench/baselines.py's
hand-written audited SQL writing the engine's own content (``format4``) and
the lean one. It prints the median seconds and µs per record of each and the
ratios, with the load average at start and end.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import baselines
from bench import run as bench
from retention.dialects.postgresql import PostgreSQLDialect

RAW, ONE, THREE = "raw DELETE (no audit)", "engine, one statement per batch", "engine, three statements per batch"
FORMAT4, LEAN = "hand-written audited SQL (format4)", "hand-written audited SQL (lean)"


def three_statements(engine: Any, batch_size: int) -> int:
    """The engine's purge with ``row_address`` None: each batch selects, itemises and deletes in turn."""
    original = PostgreSQLDialect.row_address
    PostgreSQLDialect.row_address = lambda self, conn, table: None  # type: ignore[method-assign]
    try:
        return bench.engine_run(engine, "delete", batch_size)
    finally:
        PostgreSQLDialect.row_address = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engine = bench.open_engine(args.db)
    parts: dict[str, Callable[[], int]] = {
        RAW: functools.partial(bench.raw_delete, engine),
        THREE: functools.partial(three_statements, engine, args.batch_size),
        ONE: functools.partial(bench.engine_run, engine, "delete", args.batch_size),
        FORMAT4: functools.partial(baselines.handwritten_audited, engine, "format4", bench.CUTOFF, bench.SECRET),
        LEAN: functools.partial(baselines.handwritten_audited, engine, "lean", bench.CUTOFF, bench.SECRET),
    }
    print(f"{args.rows} rows on postgresql, batch size {args.batch_size}, median of {args.repeat}, interleaved")
    print(f"started: {bench.load()}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in parts}
    rows: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, action in parts.items():
            bench.generate(engine, args.rows, 1)
            bench.reset_engine_tables(engine)
            began = time.perf_counter()
            rows[name] = action()
            times[name].append(time.perf_counter() - began)
            print(f"  {name}: {times[name][-1]:.3f} s for {rows[name]} rows", flush=True)
    print(f"finished: {bench.load()}")
    median = {name: statistics.median(values) for name, values in times.items()}
    print()
    print("| measurement | median s | µs per record | runs s |")
    print("|---|---:|---:|---|")
    for name in parts:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {median[name]:.3f} | {median[name] / rows[name] * 1e6:.1f} | {runs} |")
    print()

    def rate(name: str) -> float:
        return rows[name] / median[name]

    print("| comparison (rows/s) | ratio | target |")
    print("|---|---:|---|")
    for name, over, target in (
        ("one statement vs three", (ONE, THREE), ""),
        ("one statement vs hand-written (format4: the same content)", (ONE, FORMAT4), ">= 0.83 (within 1.2x)"),
        ("three statements vs hand-written (format4)", (THREE, FORMAT4), ""),
        ("one statement vs hand-written (lean)", (ONE, LEAN), ""),
        ("one statement vs raw DELETE", (ONE, RAW), ">= 0.2"),
        ("hand-written (format4) vs raw DELETE", (FORMAT4, RAW), ""),
    ):
        print(f"| {name} | {rate(over[0]) / rate(over[1]):.4f} | {target} |")
    engine.dispose()


if __name__ == "__main__":
    main()
