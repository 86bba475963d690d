"""Cost of the pseudonym key check (``ledger.mac.refuse_other_key``) on a large ledger, old rule beside new.

Why: every checked command (run, hold, erasure, review, lookup, prove) pays it before anything else. The old
rule read the newest entry *carrying a MAC* (``WHERE mac IS NOT NULL ORDER BY seq DESC LIMIT 1``): on a legacy
ledger (formats 1-2, no MACs) that walked the whole primary key, and a refused key walked it again forwards for
the oldest one. The new rule reads the newest 64 entries by primary-key range.

Usage: python bench/key_check_cost.py URL ROWS OLD_MAC_PY [--repeat 5]
OLD_MAC_PY is the previous retention/ledger/mac.py (e.g. from a worktree of integ), loaded beside this one, so
both run in the same process on the same data; the script prints medians per case. It fills an empty,
migrated database with ROWS format-1 entries (no MAC) and then adds one format-5-like head entry with a MAC.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.ledger import mac
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine


def _load_old(path: str) -> Callable[[sa.Engine, bytes], None]:
    spec = importlib.util.spec_from_file_location("old_mac", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.refuse_other_key  # type: ignore[no-any-return]


def _fill(engine: sa.Engine, rows: int) -> None:
    if migrate.current_revision(engine) is None:
        migrate.upgrade(engine)
    with engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one()
        if have:
            return
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "INSERT INTO retention_ledger (seq, recorded_at, transition, prev_hash, hash, format, count) "
                    "SELECT g, now(), 'active->purged', repeat('0',64), repeat('a',64), 1, 1 "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": rows},
            )
        else:
            conn.execute(
                sa.text(
                    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM g WHERE x < :n) "
                    "INSERT INTO retention_ledger (seq, recorded_at, transition, prev_hash, hash, format, count) "
                    "SELECT x, '2020-01-01 00:00:00', 'active->purged', printf('%064d',0), printf('%064d',1), 1, 1 "
                    "FROM g"
                ),
                {"n": rows},
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE retention_ledger"))


def _add_head(engine: sa.Engine, rows: int) -> None:
    head = "b" * 64
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger (seq, recorded_at, transition, prev_hash, hash, format, count, mac) "
                "VALUES (:s, '2021-01-01 00:00:00', 'hold_placed', :p, :h, 5, 1, :m)"
            ),
            {"s": rows + 1, "p": "a" * 64, "h": head, "m": mac.entry_mac(b"right", head)},
        )


def _time(check: Callable[..., None], engine: sa.Engine, key: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        check(engine, key)
        outcome = "accepted"
    except ConfigError:
        outcome = "refused"
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("rows", type=int)
    parser.add_argument("old")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    old = _load_old(args.old)
    engine = create_engine(args.url)
    _fill(engine, args.rows)
    print(f"{engine.dialect.name}, {args.rows:,} MAC-less entries; medians of {args.repeat}, ms")
    print("| case | key | old | new | old/new |")
    print("|---|---|---|---|---|")
    for case in ("MAC-less ledger", "+ one MAC'd head"):
        if case != "MAC-less ledger":
            _add_head(engine, args.rows)
        for key in (b"right", b"wrong") if case != "MAC-less ledger" else (b"any",):
            times: dict[str, list[float]] = {"old": [], "new": []}
            outcomes: dict[str, str] = {}
            for _ in range(args.repeat):  # alternated, so that load drifts hit both alike
                for name, check in (("old", old), ("new", mac.refuse_other_key)):
                    spent, outcomes[name] = _time(check, engine, key)
                    times[name].append(spent)
            o, n = statistics.median(times["old"]), statistics.median(times["new"])
            print(
                f"| {case} | {key.decode()} ({outcomes['old']}/{outcomes['new']}) | {o * 1000:.1f} | {n * 1000:.1f} "
                f"| {o / n:.0f}x |"
            )
    engine.dispose()


if __name__ == "__main__":
    main()
