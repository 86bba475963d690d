"""Benchmark: one run split into 1, 2 and 4 shards side by side, on PostgreSQL (docs/scaling.md).

    python bench/shards.py --rows 200000
    python bench/shards.py --db postgresql://postgres@127.0.0.1/test --rows 10000000 --shards 1 2 4

For each shard count the table of bench/run.py is generated afresh (not
timed) in the schema ``bench_shards`` and the engine's tables are reset;
then N processes each run ``--shard I/N`` of one run group, and the wall
time from the first start to the last end is measured. The table gives
rows moved per second and the ratio to 1 shard, with the ledger append
lock's mean and longest hold per batch (from ``retention_run_shards``).
"""

from __future__ import annotations

import argparse
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

from run import AS_OF, SECRET, generate, pack, reset_engine_tables  # noqa: E402

from retention import logs  # noqa: E402
from retention.engine import execute  # noqa: E402
from retention.engine.shards import ShardSpec  # noqa: E402
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


def _shard(url: str, index: int, count: int, group: str, batch_size: int) -> None:
    logs.configure(json=True, level="warning")
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


def measure(url: str, rows: int, shards: int, batch_size: int) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        generate(engine, rows, seed=16)
        reset_engine_tables(engine)
    finally:
        engine.dispose()
    group = f"bench-{shards}-{time.time_ns()}"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_shard, args=(url, i, shards, group, batch_size)) for i in range(shards)]
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
            stats = [json.loads(s) for s in conn.execute(sa.select(store.run_shards.c.stats)).scalars()]
    finally:
        engine.dispose()
    moved = sum(n for per in json.loads(run.counts).values() for n in per.values())
    appends = sum(s["ledger_lock"].get("appends", 0) for s in stats)
    held = sum(s["ledger_lock"].get("hold_s", 0.0) for s in stats)
    longest = max((s["ledger_lock"].get("hold_max_s", 0.0) for s in stats), default=0.0)
    waited = sum(s["ledger_lock"].get("wait_s", 0.0) for s in stats)
    return {
        "shards": shards,
        "rows": rows,
        "moved": moved,
        "seconds": seconds,
        "status": run.status,
        "appends": appends,
        "hold_mean_ms": 1000 * held / appends if appends else 0.0,
        "hold_max_ms": 1000 * longest,
        "wait_mean_ms": 1000 * waited / appends if appends else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    admin.dispose()
    url = _url(args.db)
    results = [measure(url, args.rows, n, args.batch_size) for n in args.shards]
    base = results[0]["moved"] / results[0]["seconds"]
    print(
        "| shards | rows | moved | seconds | rows moved/s | ratio to 1 shard "
        "| lock hold mean / max (ms) | lock wait mean (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        rate = r["moved"] / r["seconds"]
        print(
            f"| {r['shards']} | {r['rows']:,} | {r['moved']:,} | {r['seconds']:.1f} | {rate:,.0f} | {rate / base:.2f} "
            f"| {r['hold_mean_ms']:.1f} / {r['hold_max_ms']:.1f} | {r['wait_mean_ms']:.1f} |"
        )
    admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    admin.dispose()


if __name__ == "__main__":
    main()
