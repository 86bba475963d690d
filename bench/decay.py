"""Does a batch cost the same at the end of a run as at its start? Archive batch times across one run.

    python bench/decay.py --db postgresql://postgres@127.0.0.1/test --rows 200000

Archiving fills ``retention_record_states`` (one row per archived record)
while every active batch asks, for each candidate, whether it has a state
row. With autovacuum off (or late) the database plans that question from
the statistics it had before the run, when the table was empty; a plan that
reads every state row then makes each batch slower than the last. This
script turns autovacuum off on the engine's tables, archives ``--rows``
generated rows in batches and prints each batch's time (selection, and the
whole transaction), then the last batch against the first (target: within
1.5x).

The archive runs set-based (retention/engine/set_archive.py) unless
``--per-record`` (``RETENTION_SET_BASED=0``); the columns are that path's
parts: the key selection, the items with their lookup rows, leaves and
chained entry, and the change (payloads, state rows and the delete).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import AS_OF, SECRET, generate, load, pack, reset_engine_tables  # noqa: E402
from retention import logs  # noqa: E402
from retention.engine import apply, execute, plan, run_datasets, set_archive, set_purge  # noqa: E402
from retention.engine import statistics as statistics_module  # noqa: E402
from retention.store.config import create_engine  # noqa: E402

ENGINE_TABLES = (
    "retention_record_states",
    "retention_archive",
    "retention_ledger",
    "retention_ledger_items",
    "retention_ledger_blocks",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (autovacuum is a PostgreSQL setting)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=int, default=5, help="print every n-th batch")
    parser.add_argument("--per-record", action="store_true", help="the per-record path (RETENTION_SET_BASED=0)")
    args = parser.parse_args()
    if args.per_record:
        os.environ[set_purge.SWITCH] = "0"
    logs.configure(level="warning")
    engine = create_engine(args.db)
    path = "per-record path" if args.per_record else "set-based"
    print(f"{args.rows} rows on {engine.dialect.name}, archive ({path}), batch size {args.batch_size}")
    print(f"started: {load()}")
    generate(engine, args.rows, args.seed)
    reset_engine_tables(engine)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ENGINE_TABLES:
                conn.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    selects: list[float] = []
    batches: list[float] = []
    original = plan.DatasetPlanner.next_batch

    def timed_next_batch(self: plan.DatasetPlanner, *a: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            if a[1] == "active":
                selects.append(time.perf_counter() - began)

    last = [time.perf_counter()]

    def on_batch(batch: plan.Batch) -> None:
        now = time.perf_counter()
        if batch.origin == "active":
            batches.append(now - last[0])
        last[0] = now

    parts: dict[str, list[float]] = {
        "witness": [],
        "apply": [],
        "statistics": [],
        "archive copy": [],
        "states": [],
        "delete": [],
        "ledger": [],
        "keys": [],
        "items, leaves, entry": [],
        "change": [],
    }

    def timing(owner: Any, name: str, label: str) -> Any:
        original_part = getattr(owner, name)

        def wrapped(*a: Any, **kw: Any) -> Any:
            began = time.perf_counter()
            try:
                return original_part(*a, **kw)
            finally:
                parts[label].append(time.perf_counter() - began)

        setattr(owner, name, wrapped)
        return original_part

    saved = [
        (run_datasets, "witness", timing(run_datasets, "witness", "witness")),
        (run_datasets, "apply_batch", timing(run_datasets, "apply_batch", "apply")),
        (apply, "_archive_in_sql", timing(apply, "_archive_in_sql", "archive copy")),
        (apply, "_set_states", timing(apply, "_set_states", "states")),
        (apply, "_delete_rows", timing(apply, "_delete_rows", "delete")),
        (apply.ledger, "append", timing(apply.ledger, "append", "ledger")),
        (set_purge.ledger, "append_written", timing(set_purge.ledger, "append_written", "items, leaves, entry")),
        (set_archive.SetArchive, "change", timing(set_archive.SetArchive, "change", "change")),
        (set_archive.SetArchive, "batch", timing(set_archive.SetArchive, "batch", "keys")),
        (
            statistics_module.FreshStatistics,
            "after_commit",
            timing(statistics_module.FreshStatistics, "after_commit", "statistics"),
        ),
    ]
    plan.DatasetPlanner.next_batch = timed_next_batch  # type: ignore[method-assign]
    try:
        began = time.perf_counter()
        result = execute.run(engine, pack("archive", args.batch_size), AS_OF, secret=SECRET, on_batch=on_batch)
        total = time.perf_counter() - began
    finally:
        plan.DatasetPlanner.next_batch = original  # type: ignore[method-assign]
        for owner, name, part in saved:
            setattr(owner, name, part)
    # Set-based: a batch's keys are its time less the append (which holds the items and the change), and
    # the items' part the append less the change; the last call found nothing and has no append.
    whole_set = parts["keys"][: len(parts["items, leaves, entry"])]
    parts["keys"] = [b - a for b, a in zip(whole_set, parts["items, leaves, entry"], strict=True)]
    parts["items, leaves, entry"] = [a - c for a, c in zip(parts["items, leaves, entry"], parts["change"], strict=True)]
    if not args.per_record:
        selects = parts["keys"]
    moved = sum(sum(v.values()) for v in result.counts.values())
    print(f"{moved} records archived in {total:.2f} s, {len(batches)} active batches")
    print()
    names: tuple[str, ...] = ("witness", "apply", "archive copy", "states", "delete", "ledger", "statistics")
    if not args.per_record:
        names = ("items, leaves, entry", "change", "statistics")
    print("| batch | selection s | " + " | ".join(f"{n} s" for n in names) + " | whole batch s |")
    print("|---:|---:|" + "---:|" * len(names) + "---:|")
    # The archived pass (before the active one) has no batch: the part lists start with the active pass,
    # except statistics, which runs after every committed batch.
    for i, (select, whole) in enumerate(zip(selects, batches, strict=False)):
        if i % args.every == 0 or i == len(batches) - 1:
            cells = " | ".join(f"{parts[k][i]:.4f}" if i < len(parts[k]) else "-" for k in names)
            print(f"| {i + 1} | {select:.4f} | {cells} | {whole:.4f} |")
    if len(batches) >= 12:
        # Medians of five: one batch on a shared machine can take twice another for no reason of its own.
        first, final = statistics.median(batches[:5]), statistics.median(batches[-6:-1])
        sfirst, sfinal = statistics.median(selects[:5]), statistics.median(selects[-6:-1])
        print()
        print(
            f"whole batch: first five median {first:.4f} s, last five (before the short last) {final:.4f} s, "
            f"ratio {final / first:.2f} (target <= 1.5)"
        )
        print(f"selection: first five median {sfirst:.4f} s, last five {sfinal:.4f} s, ratio {sfinal / sfirst:.2f}")
    print(f"finished: {load()}")
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ENGINE_TABLES:
                conn.execute(sa.text(f"ALTER TABLE {table} RESET (autovacuum_enabled)"))
    engine.dispose()


if __name__ == "__main__":
    main()
