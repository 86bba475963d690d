"""Benchmark: finding format-5 items (``ledger lookup`` by key and by subject) on a ledger of N items.

    python bench/format5_lookup.py --db sqlite:////tmp/f5.sqlite --items 1000000 --build --format4
    python bench/format5_lookup.py --db postgresql://postgres@127.0.0.1/blockread_bench --items 1000000 --build

``--build`` rebuilds the engine's tables (every migration down, then up) and
writes N format-5 items with the reference writer (``chain.append_block``,
blocks of 5,000 items, pseudonyms computed in Python), spread over
``--runs`` runs, each person (subject) owning 5 records in different
blocks; with ``--format4`` also N format-4 items (``chain.append`` of
5,000-item batches, the items table and its pseudonym indexes) under
other runs, for the baseline. Then it times, in this process, median of
``--repeat``:

- ``lookup key`` / ``lookup subject``: ``items.lookup`` as ``ledger lookup``
  runs it (formats 2-5, every run's key; the entries read for each item);
- ``blocks key`` / ``blocks subject``: the format-5 search alone
  (``block_lookup.find``, every run's needle in one statement);
- ``scan floor``: one statement counting the bodies that hold an absent
  32-byte needle (every body read and searched once: what any lookup
  without an index costs at least);
- ``format-4 key`` / ``format-4 subject`` (with ``--format4``): the
  items-table search alone (``items.find`` without blocks: index probes).

Ratios are against the scan floor and the format-4 search, run in the same
process on the same database. The load average is printed before and after.

``--audit L`` then times the complete ``ledger audit`` of the format-5
claims against a live ``events`` table of L rows (built with ``--build``:
keys none of the claims names, and 3 that were claimed, put back), in a
child process per pass cap (``BLOCK_PASS_CLAIMS``: the default, and
1/8 of the claims), with the child's peak RSS; the baseline is the
HMACs the audit cannot avoid (one per live row and run), timed in the
child before the audit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from retention import logs  # noqa: E402
from retention.ledger import block_lookup, blocks, chain, pseudonyms  # noqa: E402
from retention.ledger import items as ledger_items  # noqa: E402
from retention.store import migrate  # noqa: E402
from retention.store import tables as store  # noqa: E402
from retention.store.config import create_engine  # noqa: E402

SECRET = b"format5-lookup-bench"
BLOCK = 5_000
PER_PERSON = 5
NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
DUE = "2025-11-01T00:00:00.000000Z"


def load() -> str:
    return os.popen("uptime").read().strip().split("load average:")[-1].strip()


def draft(run_id: str, moves: list[Any] | None = None, dataset: str = "events") -> ledger_items.BatchItems:
    return ledger_items.BatchItems(
        run_id=run_id,
        pack_id="bench",
        pack_digest="b" * 64,
        dataset=dataset,
        transition="active->purged",
        action="delete",
        basis="bench",
        secret=SECRET,
        moves=moves or [],
    )


def person(i: int, n: int) -> str:
    """The owner of record ``i``: records i, i + n/5, i + 2n/5 ... share one (so they sit in different blocks)."""
    return f"user-{i % max(1, n // PER_PERSON)}"


def add_runs(conn: sa.Connection, names: list[str]) -> None:
    conn.execute(
        store.runs.insert(),
        [
            {
                "id": name,
                "mode": "run",
                "status": "succeeded",
                "pack_id": "bench",
                "pack_digest": "b" * 64,
                "as_of": NOW,
                "started_at": NOW + dt.timedelta(seconds=k),
                "finished_at": NOW + dt.timedelta(seconds=k),
            }
            for k, name in enumerate(names)
        ],
    )


def build_blocks(engine: sa.Engine, n: int, runs: int) -> float:
    """N format-5 items over ``runs`` runs, blocks of BLOCK; returns seconds."""
    started = time.perf_counter()
    names = [f"f5-run-{r}" for r in range(runs)]
    with engine.begin() as conn:
        add_runs(conn, names)
    per_run = -(-n // runs)
    due = DUE.encode()
    for r, run_id in enumerate(names):
        inner, outer = pseudonyms.keyed(ledger_items.run_key(SECRET, run_id)).pads()

        def mac(message: bytes, inner: Any = inner, outer: Any = outer) -> bytes:
            i = inner.copy()
            i.update(message)
            o = outer.copy()
            o.update(i.digest())
            return o.digest()

        lo, hi = r * per_run, min(n, (r + 1) * per_run)
        with engine.begin() as conn:
            for start in range(lo, hi, BLOCK):
                body = b"".join(
                    sorted(
                        mac(f"record\x1fevents\x1fk{i}".encode()) + mac(f"subject\x1f{person(i, n)}".encode()) + due
                        for i in range(start, min(hi, start + BLOCK))
                    )
                )
                chain.append_block(conn, draft(run_id), body, NOW, secret=SECRET)
    return time.perf_counter() - started


def build_items(engine: sa.Engine, n: int, runs: int) -> float:
    """N format-4 items (keys f4-k…, dataset events4: not in the audit's pack) over other runs; returns seconds."""
    started = time.perf_counter()
    names = [f"f4-run-{r}" for r in range(runs)]
    with engine.begin() as conn:
        add_runs(conn, names)
    per_run = -(-n // runs)
    due = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
    for r, run_id in enumerate(names):
        lo, hi = r * per_run, min(n, (r + 1) * per_run)
        with engine.begin() as conn:
            for start in range(lo, hi, BLOCK):
                moves = [
                    (due, f"f4-k{i}", f"f4-{person(i, n)}", None, None) for i in range(start, min(hi, start + BLOCK))
                ]
                chain.append(conn, [draft(run_id, moves, "events4")], NOW, secret=SECRET)
    return time.perf_counter() - started


def median_of(repeat: int, action: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


AUDIT_PACK = """
pack: bench
version: "1"
effective_from: 2020-01-01
timezone: UTC
datasets:
  events:
    table: events
    key: id
    subject_key: user_id
    basis: bench
    keep:
      - clock: {column: collected, type: timestamp}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def build_live(engine: sa.Engine, n: int, live: int) -> None:
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40)),
        sa.Column("collected", sa.DateTime),
    )
    md.drop_all(engine)
    md.create_all(engine)
    keys = [f"k{i}" for i in range(n, n + live - 3)] + [f"k{i}" for i in (1, n // 2, n - 1)]
    collected = dt.datetime(2025, 1, 1, tzinfo=dt.UTC).replace(tzinfo=None)  # the column is naive
    with engine.begin() as conn:
        for start in range(0, len(keys), 50_000):
            conn.execute(
                events.insert(),
                [{"id": k, "user_id": "u", "collected": collected} for k in keys[start : start + 50_000]],
            )


def audit_child(url: str, cap: int) -> None:
    """In a fresh process: the HMAC floor, then the complete audit; prints seconds, problems, peak RSS."""
    import yaml

    from retention.policy.loader import validate_pack
    from retention.reporting import ledger_audit

    logs.configure(level="error")
    engine = create_engine(url)
    loaded = validate_pack(yaml.safe_load(AUDIT_PACK), Path("bench.yaml"), AUDIT_PACK)
    with engine.connect() as conn:
        runs = [r for r in ledger_items.item_runs(conn) if r.startswith("f5-")]
        keys = [str(k) for k in conn.execute(sa.text("SELECT id FROM events")).scalars()]
    started = time.perf_counter()
    for run_id in runs:
        keyed = pseudonyms.keyed(ledger_items.run_key(SECRET, run_id))
        for key in keys:
            keyed.hexdigest(f"record\x1fevents\x1f{key}".encode())
    floor = time.perf_counter() - started
    ledger_audit.BLOCK_PASS_CLAIMS = cap
    started = time.perf_counter()
    result = ledger_audit.audit(engine, {"bench": loaded}, SECRET)
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"floor": floor, "audit": seconds, "claims": result.claims, "problems": len(result.problems), "rss_mb": rss}
        )
    )


def main() -> None:
    if sys.argv[1:2] == ["--audit-child"]:
        audit_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="database URL (its engine tables are rebuilt with --build)")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--format4", action="store_true", help="also build (with --build) and time N format-4 items")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--audit", type=int, default=0, help="also time the complete audit against this many live rows")
    args = parser.parse_args()
    logs.configure(level="error")
    engine = create_engine(args.db)
    n = args.items
    print(f"database {engine.dialect.name}, {n:,} format-5 items, load before: {load()}")
    if args.build:
        migrate.downgrade(engine, "base")
        migrate.upgrade(engine)
        print(f"built format 5 in {build_blocks(engine, n, args.runs):.1f} s")
        if args.format4:
            print(f"built format 4 in {build_items(engine, n, args.runs):.1f} s")
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
    with engine.connect() as conn:
        size = int(conn.execute(sa.select(sa.func.sum(sa.func.length(store.ledger_blocks.c.body)))).scalar() or 0)
        runs = ledger_items.item_runs(conn)
        has4 = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar() or 0
    print(f"blocks: {size / 1e6:,.0f} MB of bodies; format-4 items: {has4:,}; runs: {len(runs)}")
    key, subject = f"k{n // 2 + 17}", person(n // 2 + 17, n)
    rows: list[tuple[str, float, Any]] = []

    def timed(name: str, action: Callable[[sa.Connection], Any]) -> float:
        with engine.connect() as conn:
            action(conn)  # warm: the first read brings the bodies into the cache
            seconds, found = median_of(args.repeat, lambda: action(conn))
        rows.append((name, seconds, found))
        return seconds

    def by_key(key: str, dataset: str = "events") -> Callable[[bytes], list[str]]:
        return lambda k: [ledger_items.record_pseudonym(k, dataset, key)]

    def by_subject(subject: str) -> Callable[[bytes], list[str]]:
        return lambda k: [ledger_items.subject_pseudonym(k, subject)]

    def blocks_find(wanted: Callable[[bytes], list[str]], dataset: str | None) -> Callable[[sa.Connection], int]:
        return lambda conn: len(
            list(block_lookup.find(conn, ((r, wanted(ledger_items.run_key(SECRET, r))) for r in runs), dataset=dataset))
        )

    def floor(conn: sa.Connection) -> int:
        t = store.ledger_blocks
        needle = sa.literal(b"\xff" * blocks.PSEUDONYM_SIZE, sa.LargeBinary)
        return int(
            conn.execute(sa.select(sa.func.count()).where(block_lookup.search(conn, t.c.body, needle) > 0)).scalar_one()
        )

    floor_s = timed("scan floor (one statement, absent needle)", floor)
    key_s = timed("blocks key", blocks_find(by_key(key), "events"))
    subject_s = timed("blocks subject", blocks_find(by_subject(subject), None))
    timed("lookup key (ledger lookup)", lambda c: len(ledger_items.lookup(c, SECRET, dataset="events", record_key=key)))
    timed("lookup subject (ledger lookup)", lambda c: len(ledger_items.lookup(c, SECRET, subject_key=subject)))
    f4 = {}
    if has4:
        f4["key"] = timed(
            "format-4 key",
            lambda c: len(
                list(ledger_items.find(c, SECRET, by_key(f"f4-k{n // 2 + 17}", "events4"), runs, with_blocks=False))
            ),
        )
        f4["subject"] = timed(
            "format-4 subject",
            lambda c: len(list(ledger_items.find(c, SECRET, by_subject(f"f4-{subject}"), runs, with_blocks=False))),
        )
    print(f"median of {args.repeat}, load after: {load()}")
    print("| measure | seconds | found | / scan floor | / format 4 |")
    print("|---|---|---|---|---|")
    for name, seconds, found in rows:
        kind = "subject" if "subject" in name else "key"
        vs4 = (
            f"{seconds / f4[kind]:.0f}x"
            if kind in f4 and not name.startswith("format-4") and "floor" not in name
            else ""
        )
        print(f"| {name} | {seconds:.3f} | {found} | {seconds / floor_s:.2f} | {vs4} |")
    print(f"scan rate: {size / floor_s / 1e6:,.0f} MB/s; blocks key {key_s:.3f} s, blocks subject {subject_s:.3f} s")
    if args.audit:
        if args.build:
            build_live(engine, n, args.audit)
        print(f"complete audit, {args.audit:,} live rows, load before: {load()}")
        print("| pass cap (claims) | audit s | HMAC floor s | audit / floor | claims | problems | peak RSS MB |")
        print("|---|---|---|---|---|---|---|")
        for cap in (1 << 20, max(1, n // 8)):
            out = subprocess.run(
                [sys.executable, __file__, "--audit-child", args.db, str(cap)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {cap:,} | {got['audit']:.1f} | {got['floor']:.1f} | {got['audit'] / got['floor']:.2f} | "
                f"{got['claims']:,} | {got['problems']} | {got['rss_mb']:.0f} |"
            )
        print(f"load after: {load()}")


if __name__ == "__main__":
    main()
