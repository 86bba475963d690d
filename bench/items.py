"""Benchmark: a batch's ledger items, per-record path against the one-pass path (retention.ledger.bulk).

    python bench/items.py --moves 5000 --repeat 9

Both build the same pseudonyms, leaves and Merkle root for one batch of
purge moves (a subject on most, one due day per few hundred records, as a
nightly purge by clock has); alternated in one process, so that the ratio
holds on a loaded machine. Prints µs per record (median) and the ratio.
The database insert is not part of it (bench/run.py's time split has it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import load
from retention.ledger import bulk, merkle
from retention.ledger import items as ledger_items


def per_record(draft: ledger_items.BatchItems) -> str:
    items = draft.items()
    return merkle.root(ledger_items.leaves(items)).hex()


def one_pass(draft: ledger_items.BatchItems) -> str:
    return bulk.prepare(draft).root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    due = dt.datetime(2025, 10, 1, 22, tzinfo=dt.UTC)
    moves = [
        (due + dt.timedelta(days=i // 300), str(1_000_000 + i), str(i * 7919 % 100_000) if i % 10 else None, None, None)
        for i in range(args.moves)
    ]
    draft = ledger_items.BatchItems(
        "bench-run", "bench", "digest", "events", "active->purged", "delete", "basis", b"bench-key", moves
    )
    assert per_record(draft) == one_pass(draft)
    times: dict[str, list[float]] = {"per-record path": [], "one-pass path (bulk)": []}
    print(f"{args.moves} moves, median of {args.repeat}; started: {load()}")
    for _ in range(args.repeat):
        for name, build in (("per-record path", per_record), ("one-pass path (bulk)", one_pass)):
            began = time.perf_counter()
            build(draft)
            times[name].append(time.perf_counter() - began)
    base = statistics.median(times["per-record path"])
    print("| path | µs per record | ratio to per-record |")
    print("|---|---:|---:|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median / args.moves * 1e6:.2f} | {median / base:.2f} |")
    print(f"finished: {load()}")


if __name__ == "__main__":
    main()
