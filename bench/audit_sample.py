"""Benchmark: the sampled ledger audit's draw on a 1M-entry ledger, on any of the three databases.

    python bench/audit_sample.py --db postgresql://postgres@127.0.0.1/bench_audit --build 1000000
    python bench/audit_sample.py --db postgresql://postgres@127.0.0.1/bench_audit

``--build N`` first builds the demo shop (2000 customers) in the database,
appends N synthetic per-record purge entries under its pack (as
``bench/console.py --shop 2000 --ledger N`` does on SQLite, which has no
``--db``) and runs the pack once. Then it times, in this process, the
sample's draw (``ledger_audit._sampled``: count the claims, draw 1000,
read the chosen) against the complete audit's count of claims
(``_claim_counts``, one aggregate: the floor of any exact count), with
the load average. Matching the drawn claims against the live tables is
the same for both and is left out.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from console import SECRET, SHOP_PURGES, fill  # noqa: E402

from retention import commands, logs  # noqa: E402
from retention.engine import execute  # noqa: E402
from retention.reporting import ledger_audit  # noqa: E402
from retention.store.config import create_engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="database URL (its tables are rebuilt with --build)")
    parser.add_argument("--build", type=int, default=0, help="build the shop and append this many entries first")
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logs.configure(level="error")
    os.environ["RETENTION_PSEUDONYM_KEY"] = SECRET.decode()
    engine = create_engine(args.db)
    if args.build:
        commands.demo_build(args.db, customers=2000, seed=7)
        loaded, when = commands.load_pack(ROOT / "rules" / "marketplace.yaml", None, None)
        fill(engine, args.build, pack=(loaded.id, loaded.digest), moves=SHOP_PURGES, keys_from=10_000_000)
        execute.run(engine, loaded, when, secret=SECRET, allow_mass=("*",))
    draws, counts, cpu_draws, cpu_counts = [], [], [], []
    total = 0
    for i in range(args.repeat):
        with engine.connect() as conn:
            started, cpu = time.perf_counter(), time.process_time()
            chosen, total = ledger_audit._sampled(conn, None, args.sample, random.Random(i))
            draws.append(time.perf_counter() - started)
            cpu_draws.append(time.process_time() - cpu)
            assert len(chosen) == min(args.sample, total)
            started, cpu = time.perf_counter(), time.process_time()
            counted = ledger_audit._claim_counts(conn, None)
            counts.append(time.perf_counter() - started)
            cpu_counts.append(time.process_time() - cpu)
            assert sum(sum(runs.values()) for runs in counted.values()) == total
    load = os.getloadavg()
    print(f"\n{engine.dialect.name}, {total} claims; median of {args.repeat}")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (on {os.cpu_count()} cores)\n")
    # CPU seconds of this process: on SQLite the whole of the work, on a server only the client's share.
    draw, draw_cpu = statistics.median(draws), statistics.median(cpu_draws)
    print(f"sample of {args.sample}: draw {draw:.3f} s (CPU here {draw_cpu:.3f} s)")
    print(
        "count of every claim (complete audit's first step): "
        f"{statistics.median(counts):.3f} s (CPU here {statistics.median(cpu_counts):.3f} s)"
    )
    print(f"ratio: {statistics.median(draws) / statistics.median(counts):.2f}x")
    engine.dispose()


if __name__ == "__main__":
    main()
