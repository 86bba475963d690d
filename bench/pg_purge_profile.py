"""Where the PostgreSQL purge's time goes beside the hand-written SQL with the same content, interleaved.

    python bench/pg_purge_profile.py --db postgresql://postgres@127.0.0.1/bench_x --rows 300000 --repeat 3

In each repeat, on freshly generated data each time: the engine's purge
(bench/run.py's ``engine_run``) and bench/baselines.py's hand-written audited
SQL writing the engine's own content (``--content``: ``format5`` since the
set-based purge writes format 5, ``format4`` before), each with its statements
timed by a cursor hook (execute and fetch: the server's time plus the round
trip) and the process's CPU time taken around it (the client's Python:
building, compiling and running statements, the Merkle tree, the entry).
Prints per part the median wall seconds and µs per record, the statements'
share, the client CPU, and the engine's statements by kind. ``--profile``
prints the top of a CPU-time cProfile of one more engine run (by own time).
prints the top of a CPU-time cProfile of one more engine run (by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import baselines
from bench import run as bench
from bench.profile_drop import time_statements
from bench.purge_split import kind

ENGINE = "engine run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one more engine run (CPU time)")
    parser.add_argument("--content", default="format5", choices=baselines.CONTENTS, help="the hand-written content")
    args = parser.parse_args()
    written = f"hand-written ({args.content})"
    engine = bench.open_engine(args.db)
    spent = time_statements(engine, kind)
    parts: dict[str, Callable[[], int]] = {
        ENGINE: lambda: bench.engine_run(engine, "delete", args.batch_size),
        written: lambda: baselines.handwritten_audited(engine, args.content, bench.CUTOFF, bench.SECRET),
    }
    print(f"{args.rows} rows on postgresql, batch size {args.batch_size}, median of {args.repeat}, interleaved")
    print(f"started: {bench.load()}", flush=True)
    wall: dict[str, list[float]] = {name: [] for name in parts}
    cpu: dict[str, list[float]] = {name: [] for name in parts}
    timed: dict[str, list[float]] = {name: [] for name in parts}
    kinds: dict[str, list[Any]] = {}
    moved: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, action in parts.items():
            bench.generate(engine, args.rows, 1)
            bench.reset_engine_tables(engine)
            spent.clear()
            began, began_cpu = time.perf_counter(), time.process_time()
            moved[name] = action()
            wall[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
            timed[name].append(sum(seconds for _, seconds in spent.values()))
            if name == ENGINE:
                kinds = {k: list(v) for k, v in spent.items()}
            print(f"  {name}: {wall[name][-1]:.3f} s, client CPU {cpu[name][-1]:.3f} s", flush=True)
    print(f"finished: {bench.load()}")
    print()
    print("| part | wall s | µs per record | in statements µs | client CPU µs | runs s |")
    print("|---|---:|---:|---:|---:|---|")
    for name in parts:
        n = moved[name]
        w, c, s = statistics.median(wall[name]), statistics.median(cpu[name]), statistics.median(timed[name])
        runs = ", ".join(f"{t:.2f}" for t in wall[name])
        print(f"| {name} | {w:.3f} | {w / n * 1e6:.1f} | {s / n * 1e6:.1f} | {c / n * 1e6:.1f} | {runs} |")
    ratio = statistics.median(wall[ENGINE]) / statistics.median(wall[written])
    print(f"\nengine vs hand-written (time ratio, medians): {ratio:.3f} (target <= 1.2)")
    n = moved[ENGINE]
    print("\nthe engine's last run, statements by kind:\n")
    print("| statement kind | calls | s | µs per record |")
    print("|---|---:|---:|---:|")
    for name, (calls, seconds) in sorted(kinds.items(), key=lambda item: -item[1][1])[:12]:
        print(f"| `{name}` | {calls} | {seconds:.3f} | {seconds / n * 1e6:.1f} |")
    if args.profile:
        bench.generate(engine, args.rows, 1)
        bench.reset_engine_tables(engine)
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        bench.engine_run(engine, "delete", args.batch_size)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(40)
        print(out.getvalue())
    engine.dispose()


if __name__ == "__main__":
    main()
