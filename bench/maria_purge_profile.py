"""Where the MariaDB purge's time goes beside pt-archiver's bulk purge of the same rows, interleaved.

    python bench/maria_purge_profile.py --db mysql://root@127.0.0.1/bench_x --rows 1000000 --repeat 3

In each repeat, on freshly generated data each time: the engine's purge
(bench/run.py's ``engine_run``) with its statements timed by a cursor hook
(execute and fetch: the server's time plus the round trip) and the process's
CPU time around it; then ``pt-archiver --purge --bulk-delete --limit 1000
--commit-each --primary-key-only`` (bench/baselines.py) with its own
``--statistics`` split (select, delete, commit, other). Every figure is a
``time.perf_counter`` interval or ``time.process_time``: nothing here reads a
database's clock. Prints per part the median wall seconds and µs per record,
the engine's statements by kind (calls, seconds, calls a batch) and
pt-archiver's split of its last run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import baselines
from bench import run as bench
from bench.profile_drop import time_statements


def kind(statement: str) -> str:
    """A statement's kind: its first words and the tables it names (MariaDB's batches are plain statements)."""
    words = " ".join(statement.split())
    tables = sorted(set(re.findall(r"\b(retention_\w+|bench_events)\b", words)))
    head = " ".join(words.split(" ")[:2])
    return f"{head} [{', '.join(tables)}]"[:100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a MariaDB URL")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engine = bench.open_engine(args.db)
    spent = time_statements(engine, kind)
    print(f"{args.rows} rows on {engine.dialect.name}, batch size {args.batch_size}, median of {args.repeat}")
    print(f"started: {bench.load()}", flush=True)
    wall: dict[str, list[float]] = {"engine run": [], "pt-archiver": []}
    cpu: list[float] = []
    in_statements: list[float] = []
    kinds: dict[str, list[Any]] = {}
    moved: dict[str, int] = {}
    split = ""
    for _ in range(args.repeat):
        bench.generate(engine, args.rows, 1)
        bench.reset_engine_tables(engine)
        spent.clear()
        began, began_cpu = time.perf_counter(), time.process_time()
        moved["engine run"] = bench.engine_run(engine, "delete", args.batch_size)
        wall["engine run"].append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        in_statements.append(sum(seconds for _, seconds in spent.values()))
        kinds = {k: list(v) for k, v in spent.items()}
        print(f"  engine run: {wall['engine run'][-1]:.3f} s, client CPU {cpu[-1]:.3f} s", flush=True)
        bench.generate(engine, args.rows, 1)
        engine.dispose()
        began = time.perf_counter()
        command = baselines.pt_archiver_command(args.db, bench.CUTOFF.strftime("%Y-%m-%d %H:%M:%S"))
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        wall["pt-archiver"].append(time.perf_counter() - began)
        moved["pt-archiver"] = baselines.pt_archiver_deleted(out)
        split = out
        print(f"  pt-archiver: {wall['pt-archiver'][-1]:.3f} s", flush=True)
    print(f"finished: {bench.load()}")
    print()
    print("| part | wall s (median) | runs s | µs per record |")
    print("|---|---:|---|---:|")
    for name, times in wall.items():
        w = statistics.median(times)
        print(f"| {name} | {w:.3f} | {', '.join(f'{t:.3f}' for t in times)} | {w / moved[name] * 1e6:.2f} |")
    n = moved["engine run"]
    print(
        f"\nengine: in statements {statistics.median(in_statements):.3f} s, client CPU {statistics.median(cpu):.3f} s "
        f"(medians); engine vs pt-archiver, rows/s: "
        f"{statistics.median(wall['pt-archiver']) / statistics.median(wall['engine run']):.3f}"
    )
    batches = max((calls for k, (calls, _) in kinds.items() if k.startswith("DELETE")), default=1)
    print("\nthe engine's last run, statements by kind:\n")
    print("| statement kind | calls | calls a batch | s | µs per record |")
    print("|---|---:|---:|---:|---:|")
    for name, (calls, seconds) in sorted(kinds.items(), key=lambda item: -item[1][1])[:14]:
        print(f"| `{name}` | {calls} | {calls / batches:.2f} | {seconds:.3f} | {seconds / n * 1e6:.2f} |")
    print("\npt-archiver's --statistics of its last run:\n")
    print(split)
    engine.dispose()


if __name__ == "__main__":
    main()
