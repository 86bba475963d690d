"""Where a set-based purge run spends its time, per statement kind, and whether its batches slow down.

    python bench/purge_split.py --db postgresql://postgres@127.0.0.1/bench_x --rows 300000

Generates bench/run.py's table, runs the engine's purge once (the set-based
path) with every statement timed by a cursor hook, and prints the seconds and
µs per purged record of each kind of statement (the first words of its SQL),
then each batch's time and the median of the last five against the first five
(a batch whose cost grows with the ledger it has written shows there; target
of issue 22: within 1.5x). The run of ``bench/run.py`` on the same database
is the figure to compare with baselines; this one says where its time goes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as bench
from bench.profile_drop import time_statements
from retention.dialects.postgresql import PostgreSQLDialect
from retention.engine import execute
from retention.engine.plan_values import Batch


def kind(statement: str) -> str:
    """A statement's kind: its first words, with the table a write names (``WITH`` statements by their writes)."""
    words = " ".join(statement.split())
    if words.startswith("WITH"):
        writes = [w for w in ("DELETE FROM", "INSERT INTO", "UPDATE") if w in words]
        return "WITH ... " + " + ".join(writes) if writes else "WITH ... SELECT"
    head = words.split(" (")[0].split(" WHERE")[0]
    return head[:70]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--every", type=int, default=10, help="print every n-th batch")
    parser.add_argument(
        "--three-statements",
        action="store_true",
        help="PostgreSQL: each batch in three statements (row_address None), as before the one-statement batch",
    )
    args = parser.parse_args()
    if args.three_statements:
        PostgreSQLDialect.row_address = lambda self, conn, table: None  # type: ignore[method-assign]
    engine = bench.open_engine(args.db)
    form = "three statements" if args.three_statements else "as the dialect does"
    print(f"{args.rows} rows on {engine.dialect.name}, purge ({form} per batch), batch size {args.batch_size}")
    print(f"started: {bench.load()}", flush=True)
    bench.generate(engine, args.rows, 1)
    bench.reset_engine_tables(engine)
    spent = time_statements(engine, kind)

    batches: list[float] = []
    last = [time.perf_counter()]

    def on_batch(_batch: Batch) -> None:
        now = time.perf_counter()
        batches.append(now - last[0])
        last[0] = now

    began = time.perf_counter()
    last[0] = began
    result = execute.run(
        engine, bench.pack("delete", args.batch_size), bench.AS_OF, secret=bench.SECRET, on_batch=on_batch
    )
    total = time.perf_counter() - began
    moved = sum(sum(v.values()) for v in result.counts.values())
    print(f"{moved} records purged in {total:.2f} s ({total / moved * 1e6:.1f} µs per record), {len(batches)} batches")
    print()
    print("| statement kind | calls | s | µs per record |")
    print("|---|---:|---:|---:|")
    for name, (calls, seconds) in sorted(spent.items(), key=lambda item: -item[1][1])[:14]:
        print(f"| `{name}` | {calls} | {seconds:.3f} | {seconds / moved * 1e6:.1f} |")
    timed = sum(seconds for _, seconds in spent.values())
    print(f"| all statements | {sum(c for c, _ in spent.values())} | {timed:.3f} | {timed / moved * 1e6:.1f} |")
    print(
        f"| outside statements (Python, commits' wait) | | {total - timed:.3f} | {(total - timed) / moved * 1e6:.1f} |"
    )
    print()
    for i, seconds in enumerate(batches):
        if i % args.every == 0 or i == len(batches) - 1:
            print(f"batch {i + 1}: {seconds:.4f} s")
    if len(batches) >= 12:
        first, final = statistics.median(batches[:5]), statistics.median(batches[-6:-1])
        print(
            f"whole batch: first five median {first:.4f} s, last five (before the short last) {final:.4f} s, "
            f"ratio {final / first:.2f} (target <= 1.5)"
        )
    print(f"finished: {bench.load()}")
    engine.dispose()


if __name__ == "__main__":
    main()
