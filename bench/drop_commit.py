"""What a partition drop's COMMIT costs, and what DETACH-then-DROP or TRUNCATE would change (PostgreSQL).

    python bench/drop_commit.py --db postgresql://postgres@127.0.0.1/bench_x --rows 10000000 \
        --variants drop,checkpointed,cold,detach,truncate

Each variant regenerates bench/run.py's monthly partitioned table (vacuumed, untracked: the count is not what
is measured here), then does, by raw SQL on one connection, what the engine's drop does to the files: the parent
locked, the partitions whose every row is before the cutoff removed, and the commit timed apart from the
statements. ``drop``: ``DROP TABLE`` of them, right after the generation (what bench/run.py times);
``checkpointed``: the same after a ``CHECKPOINT`` and ``sync`` (months-old partitions are on disk, not only in
dirty pages); ``cold``: and the files' pages dropped from the page cache (``posix_fadvise``; needs the server's
data directory on this machine, readable by this user); ``detach``: ``DETACH PARTITION`` each, committed, then
``DROP TABLE`` in a second transaction (the parent's lock is held only by the first); ``truncate``: ``TRUNCATE``
instead of ``DROP`` (bench/RESULTS.md, branch ``pdrop2``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as bench

_DUE = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'bench_plog'::regclass "
    "AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz <= %s "
    "ORDER BY 1"
)
_FILES = (
    "SELECT current_setting('data_directory') || '/' || pg_relation_filepath(r) FROM ("
    "SELECT c.oid AS r FROM pg_class c WHERE c.relname = ANY(%s) UNION ALL "
    "SELECT i.indexrelid FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname = ANY(%s)) s"
)


def uncache(files: list[str]) -> int:
    """Drop the files' (written, clean) pages from the page cache; how many files were found."""
    found = 0
    for base in files:
        for suffix in ("", ".1", ".2", ".3", "_fsm", "_vm"):
            try:
                fd = os.open(base + suffix, os.O_RDONLY)
            except FileNotFoundError:
                continue
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            found += 1
    return found


def one(engine: Any, rows: int, variant: str) -> str:
    """Generate, prepare as ``variant`` says, remove the due partitions; the line to print."""
    bench.generate_partitioned(engine, rows, 1)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(_DUE, (bench.CUTOFF,))
        names = [r[0] for r in cur.fetchall()]
        cur.execute(_FILES, (names, names))
        files = [r[0] for r in cur.fetchall()]
        raw.commit()
        if variant in ("checkpointed", "cold"):
            raw.autocommit = True
            cur.execute("CHECKPOINT")
            raw.autocommit = False
            os.sync()
        if variant == "cold":
            uncache(files)
        time.sleep(2)  # the checkpoint's and sync's writes settle
        began = time.perf_counter()
        cur.execute("LOCK TABLE bench_plog IN ACCESS EXCLUSIVE MODE")
        if variant == "detach":
            for name in names:
                cur.execute(f"ALTER TABLE bench_plog DETACH PARTITION {name}")
        elif variant == "truncate":
            cur.execute("TRUNCATE " + ", ".join(names))
        else:
            cur.execute("DROP TABLE " + ", ".join(names))
        done = time.perf_counter()
        raw.commit()
        committed = time.perf_counter()
        line = (
            f"{variant:12s} {len(names)} partitions, {len(files)} relations: statements {done - began:.3f} s, "
            f"commit {committed - done:.3f} s, parent locked {committed - began:.3f} s"
        )
        if variant == "detach":
            cur.execute("DROP TABLE " + ", ".join(names))
            dropped = time.perf_counter()
            raw.commit()
            line += f"; then DROP {dropped - committed:.3f} s, its commit {time.perf_counter() - dropped:.3f} s"
        return line + f"; total {time.perf_counter() - began:.3f} s"
    finally:
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--variants", default="drop,checkpointed,cold,detach,truncate")
    args = parser.parse_args()
    engine = bench.open_engine(args.db)
    for variant in args.variants.split(","):
        print(one(engine, args.rows, variant), f"({bench.load()})", flush=True)


if __name__ == "__main__":
    main()
