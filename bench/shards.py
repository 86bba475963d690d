"""Benchmark: one run split into 1, 2 and 4 shards side by side, on PostgreSQL (docs/scaling.md).

    python bench/shards.py --rows 200000
    python bench/shards.py --db postgresql://postgres@127.0.0.1/test --rows 10000000 --shards 1 2 4
    python bench/shards.py --rows 100000 --shards 4 --close incremental --autovacuum off --null-share 0.1

For each shard count the table of bench/run.py is generated afresh (not
timed) in the schema ``bench_shards`` and the engine's tables are reset;
then N processes each run ``--shard I/N`` of one run group, and the wall
time from the first start to the last end is measured. The table gives
rows moved per second and the ratio to 1 shard, with the ledger append
lock's mean and longest hold per batch (from ``retention_run_shards``).

The close step is the time from the last shard's recorded end to the
group's (``retention_runs.finished_at``). ``--close both`` (the default)
runs every shard count twice in this process: ``incremental``, the
engine as it is (each batch writes its items' lookup rows), and
``legacy``, the baseline, the engine patched in each worker to index the
lookup rows at the close as it did before (``index_runs`` in one
transaction by the last shard), so the table's ratio compares the two on
the same data and machine.

``--autovacuum off`` turns autovacuum off on every table of the schema
(``ALTER TABLE ... SET (autovacuum_enabled = false)``) before the shards
start; ``--null-share F`` makes that share of the events' shard key
(``customer_id``) NULL, and a last table shows how many of those rows each
shard moved (issue 25, check 3: the slowest shard within 2x of the
fastest, NULL-key rows spread).
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import AS_OF, CUTOFF, SECRET, generate, pack, reset_engine_tables  # noqa: E402

from retention import logs  # noqa: E402
from retention.engine import execute, run_datasets, shard_run  # noqa: E402
from retention.engine.shards import Bounds, ShardSpec  # noqa: E402
from retention.ledger import items as ledger_items  # noqa: E402
from retention.policy import LoadedPack  # noqa: E402
from retention.store import tables as store  # noqa: E402
from retention.store.config import create_engine  # noqa: E402

SCHEMA = "bench_shards"


def _url(base: str) -> str:
    url = make_url(base).update_query_dict({"options": f"-csearch_path={SCHEMA}"})
    return url.render_as_string(hide_password=False)


def _loaded(batch_size: int) -> LoadedPack:
    loaded: LoadedPack = pack("delete", batch_size)
    return loaded


def _legacy_close() -> None:
    """The baseline: the engine as it was, its lookup rows written by the closing shard in one transaction."""
    close_run = run_datasets._close_run

    def no_index(*_args: Any, **_kwargs: Any) -> int:
        return 0

    def close_and_index(conn: sa.Connection, *args: Any, **kwargs: Any) -> None:
        close_run(conn, *args, **kwargs)
        with conn.begin():
            ledger_items.index_runs(conn)

    setattr(ledger_items, "index_items", no_index)  # noqa: B010 (a patch, not an attribute access)
    setattr(ledger_items, "index_pending", no_index)  # noqa: B010
    setattr(shard_run, "_close_run", close_and_index)  # noqa: B010 (the closing shard calls it from there)


def _shard(url: str, index: int, count: int, group: str, batch_size: int, legacy: bool) -> None:
    logs.configure(json=True, level="warning")
    if legacy:
        _legacy_close()
    engine = create_engine(url)
    try:
        result = execute.run_shard(
            engine,
            _loaded(batch_size),
            AS_OF,
            secret=SECRET,
            shard=ShardSpec(index, count),
            run_group=group,
        )
        if result.status != "succeeded":
            raise SystemExit(f"shard {index}/{count}: {result.status}")
    finally:
        engine.dispose()


def _prepare(engine: sa.Engine, autovacuum: bool, null_share: float) -> list[tuple[int, bool]]:
    """NULL shard keys and autovacuum as asked; returns (id, due) of the rows whose key is NULL."""
    with engine.begin() as conn:
        if null_share > 0:
            every = max(1, round(1 / null_share))
            conn.execute(sa.text("ALTER TABLE bench_events ALTER COLUMN customer_id DROP NOT NULL"))
            conn.execute(sa.text(f"UPDATE bench_events SET customer_id = NULL WHERE id % {every} = 0"))
            conn.execute(sa.text("ANALYZE bench_events"))
        if not autovacuum:
            names = conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": SCHEMA}
            ).scalars()
            for name in list(names):
                conn.execute(sa.text(f'ALTER TABLE "{name}" SET (autovacuum_enabled = false)'))
        return [
            (int(key), bool(due))
            for key, due in conn.execute(
                sa.text("SELECT id, collected_at < :c FROM bench_events WHERE customer_id IS NULL ORDER BY id"),
                {"c": CUTOFF},
            )
        ]


def measure(
    url: str, rows: int, shards: int, batch_size: int, legacy: bool, autovacuum: bool, null_share: float
) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        generate(engine, rows, seed=16)
        reset_engine_tables(engine)
        null_ids = _prepare(engine, autovacuum, null_share)
    finally:
        engine.dispose()
    group = f"bench-{shards}-{time.time_ns()}"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_shard, args=(url, i, shards, group, batch_size, legacy)) for i in range(shards)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    if any(w.exitcode for w in workers):
        raise SystemExit(f"{shards} shards: a worker failed")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            run = conn.execute(sa.select(store.runs).where(store.runs.c.id == execute.group_run_id(group))).one()
            rs = store.run_shards
            shard_rows = conn.execute(sa.select(rs).where(rs.c.run_id == run.id).order_by(rs.c.shard)).all()
            items = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
            lookup_rows = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_lookup)).scalar_one()
            sizes = {
                name: conn.execute(sa.text(f"SELECT pg_total_relation_size('{SCHEMA}.{name}')")).scalar_one()
                for name in ("retention_ledger_items", "retention_ledger_lookup", "retention_ledger")
            }
    finally:
        engine.dispose()
    stats = [json.loads(r.stats) for r in shard_rows]
    spans = [(r.finished_at - r.started_at).total_seconds() for r in shard_rows]
    moved_per_shard = [sum(n for per in json.loads(r.counts).values() for n in per.values()) for r in shard_rows]
    nulls = Bounds.from_json(run.shard_bounds).nulls.get("events")
    null_per_shard = [0] * shards  # due rows with a NULL key: what each shard moved of them
    null_rows_per_shard = [0] * shards  # every row with a NULL key: each shard's share
    for key, due in null_ids:
        index = bisect.bisect_right(nulls.cuts, key) if nulls is not None else 0
        null_rows_per_shard[index] += 1
        null_per_shard[index] += due
    moved = sum(n for per in json.loads(run.counts).values() for n in per.values())
    appends = sum(s["ledger_lock"].get("appends", 0) for s in stats)
    held = sum(s["ledger_lock"].get("hold_s", 0.0) for s in stats)
    longest = max((s["ledger_lock"].get("hold_max_s", 0.0) for s in stats), default=0.0)
    waited = sum(s["ledger_lock"].get("wait_s", 0.0) for s in stats)
    return {
        "mode": "legacy" if legacy else "incremental",
        "shards": shards,
        "rows": rows,
        "moved": moved,
        "seconds": seconds,
        "close_s": (run.finished_at - max(r.finished_at for r in shard_rows)).total_seconds(),
        "status": run.status,
        "appends": appends,
        "hold_mean_ms": 1000 * held / appends if appends else 0.0,
        "hold_max_ms": 1000 * longest,
        "wait_mean_ms": 1000 * waited / appends if appends else 0.0,
        "spans": spans,
        "slowest_to_fastest": max(spans) / min(spans) if spans and min(spans) > 0 else 1.0,
        "moved_per_shard": moved_per_shard,
        "null_per_shard": null_per_shard,
        "null_rows_per_shard": null_rows_per_shard,
        "items": items,
        "lookup_rows": lookup_rows,
        "bytes_per_item": {name: size / items if items else 0.0 for name, size in sizes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--close", choices=["both", "incremental", "legacy"], default="both")
    parser.add_argument("--autovacuum", choices=["on", "off"], default="on")
    parser.add_argument("--null-share", type=float, default=0.0)
    args = parser.parse_args()
    admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    admin.dispose()
    url = _url(args.db)
    modes = [False, True] if args.close == "both" else [args.close == "legacy"]
    results = [
        measure(url, args.rows, n, args.batch_size, legacy, args.autovacuum == "on", args.null_share)
        for n in args.shards
        for legacy in modes
    ]
    first = {r["mode"]: r for r in reversed(results)}  # each mode's first shard count: its baseline
    print(
        "| close | shards | rows | moved | seconds | rows moved/s | ratio to first shard count "
        "| lock hold mean / max (ms) | lock wait mean (ms) | close step (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rate = r["moved"] / r["seconds"]
        base = first[r["mode"]]["moved"] / first[r["mode"]]["seconds"]
        print(
            f"| {r['mode']} | {r['shards']} | {r['rows']:,} | {r['moved']:,} | {r['seconds']:.1f} | {rate:,.0f} "
            f"| {rate / base:.2f} | {r['hold_mean_ms']:.1f} / {r['hold_max_ms']:.1f} | {r['wait_mean_ms']:.1f} "
            f"| {r['close_s']:.2f} |"
        )
    if len(modes) == 2:
        print()
        print("| shards | close step: incremental / legacy | wall time: incremental / legacy |")
        print("|---|---|---|")
        for incremental, legacy in zip(results[::2], results[1::2], strict=True):
            close = incremental["close_s"] / legacy["close_s"] if legacy["close_s"] else float("nan")
            print(f"| {incremental['shards']} | {close:.2f} | {incremental['seconds'] / legacy['seconds']:.2f} |")
    print()
    header = "| close | shards | slowest / fastest shard | items | lookup rows"
    print(header + " | bytes per item: items, lookup rows, entries |")
    print("|---|---|---|---|---|---|")
    for r in results:
        per = r["bytes_per_item"]
        print(
            f"| {r['mode']} | {r['shards']} | {r['slowest_to_fastest']:.2f} | {r['items']:,} | {r['lookup_rows']:,} | "
            f"{per['retention_ledger_items']:.0f}, {per['retention_ledger_lookup']:.0f}, "
            f"{per['retention_ledger']:.1f} |"
        )
    print()
    print(f"autovacuum {args.autovacuum}, NULL shard keys: {args.null_share:.0%} of the rows")
    print("| close | shards | shard | seconds | moved | NULL-key rows in its range | NULL-key rows moved |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for index, (span, moved, rows_in, nulls) in enumerate(
            zip(r["spans"], r["moved_per_shard"], r["null_rows_per_shard"], r["null_per_shard"], strict=True)
        ):
            print(f"| {r['mode']} | {r['shards']} | {index} | {span:.1f} | {moved:,} | {rows_in:,} | {nulls:,} |")
    admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    admin.dispose()


if __name__ == "__main__":
    main()
