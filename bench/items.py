"""Benchmark: a batch's ledger items, per-record path against the one-pass path (retention.ledger.bulk).

    python bench/items.py --moves 5000 --repeat 9
    python bench/items.py --moves 5000 --repeat 9 --db mysql://root@127.0.0.1/bench

Both build the same pseudonyms, leaves and Merkle root for one batch of
purge moves (a subject on most, one due day per few hundred records, as a
nightly purge by clock has); alternated in one process, so that the ratio
holds on a loaded machine. Prints µs per record (median) and the ratio.
The database insert is not part of it (bench/run.py's time split has it),
except with ``--db`` on MariaDB/MySQL: then the batch's item rows are also
inserted by PyMySQL's ``executemany`` (the generic hook) and by the
dialect's own multi-row INSERT text, alternated in one transaction each,
rolled back.
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
from retention.dialects import Dialect, dialect_for
from retention.ledger import bulk, merkle
from retention.ledger import items as ledger_items
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine


def per_record(draft: ledger_items.BatchItems) -> str:
    items = draft.items()
    return merkle.root(ledger_items.leaves(items)).hex()


def one_pass(draft: ledger_items.BatchItems) -> str:
    return bulk.prepare(draft).root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--db", default=None, help="a MariaDB/MySQL URL: also time the item insert")
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
    if args.db:
        insert_times(args, draft)
    print(f"finished: {load()}")


def insert_times(args: argparse.Namespace, draft: ledger_items.BatchItems) -> None:
    """The batch's item rows inserted by executemany and by the dialect's hook, alternated, rolled back."""
    engine = create_engine(args.db)
    migrate.upgrade(engine)
    prepared = bulk.prepare(draft)
    paths = {"executemany (generic hook)": Dialect.bulk_insert, "dialect's bulk_insert": None}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeat):
        for name, generic in paths.items():
            with engine.connect() as conn, conn.begin() as transaction:
                rows = bulk.rows(conn, 10**12, prepared)
                hook = dialect_for(conn)
                began = time.perf_counter()
                if generic is None:
                    hook.bulk_insert(conn, store.ledger_items, bulk.COLUMNS, rows)
                else:
                    generic(hook, conn, store.ledger_items, bulk.COLUMNS, rows)
                times[name].append(time.perf_counter() - began)
                transaction.rollback()
    base = statistics.median(times["executemany (generic hook)"])
    print(f"| item insert on {engine.dialect.name} | µs per record | ratio to executemany |")
    print("|---|---:|---:|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median / args.moves * 1e6:.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
