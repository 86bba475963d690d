"""What each way of indexing the ledger items' pseudonyms costs SQLite per item, in SQL alone (issue 22).

    python bench/sqlite_item_indexes.py --items 300000 --rounds 2

The same item rows (random record pseudonyms, subject pseudonyms of 100,000
customers as bench/run.py's table has, no e-mail) are inserted in batches of
``--batch`` with a commit each, into a fresh WAL file per variant with the
engine's connection settings (64 MiB cache, synchronous=NORMAL,
wal_autocheckpoint=10000), variants alternated round by round. The index cost
of a variant is its time minus the variant without secondary indexes, timed
in the same round. CPU time (``time.process_time``: SQLite runs in this
process, its reads and writes are system time) is the figure; wall time is
printed beside it. The last column is the CPU time of the last tenth of the
items against the first tenth: how much the batches slow as the table grows.

Variants:

- ``none``: no secondary index (the baseline);
- ``full``: today's three indexes, one per pseudonym column (64-character keys);
- ``prefix16``: expression indexes on ``substr(column, 1, 16)`` (64 bits of
  the HMAC); a lookup asks for the prefix and the full value;
- ``prefix12``, ``prefix8``: the same on 48 and 32 bits;
- ``int64``: a compact integer key per pseudonym (its first 8 bytes as a
  signed 64-bit INTEGER, filled with the row), indexed;
- ``full+cache256``: today's indexes with a 256 MiB page cache;
- ``full+mmap``: today's indexes, the file read through a memory map (``mmap_size`` 4 GiB);
- ``full+sorted``: today's indexes, each batch's rows inserted in record-pseudonym order;
- ``full+ckpt100k``, ``full+ckpt1k``: today's indexes, a WAL checkpoint every 100,000 or 1,000 pages
  instead of 10,000 (the engine's).
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

COLUMNS = ("record_pseudonym", "subject_pseudonym", "email_pseudonym")


def _table(keys: bool) -> str:
    extra = ", record_key INTEGER, subject_key INTEGER, email_key INTEGER" if keys else ""
    return (
        "CREATE TABLE items (entry_seq INTEGER NOT NULL, idx INTEGER NOT NULL, record_pseudonym VARCHAR(64) NOT NULL, "
        "subject_pseudonym VARCHAR(64), due_at DATETIME NOT NULL, request_id INTEGER, review_id INTEGER, "
        f"email_pseudonym VARCHAR(64){extra}, PRIMARY KEY (entry_seq, idx))"
    )


_FULL = [_table(False)] + [f"CREATE INDEX ix_{c} ON items ({c})" for c in COLUMNS]
_ENGINE = ("cache_size=-65536",)
VARIANTS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "none": ([_table(False)], _ENGINE),
    "full": (_FULL, _ENGINE),
    "prefix16": ([_table(False)] + [f"CREATE INDEX ix_{c} ON items (substr({c}, 1, 16))" for c in COLUMNS], _ENGINE),
    "prefix12": ([_table(False)] + [f"CREATE INDEX ix_{c} ON items (substr({c}, 1, 12))" for c in COLUMNS], _ENGINE),
    "prefix8": ([_table(False)] + [f"CREATE INDEX ix_{c} ON items (substr({c}, 1, 8))" for c in COLUMNS], _ENGINE),
    "int64": ([_table(True)] + [f"CREATE INDEX ix_{c} ON items ({c.split('_')[0]}_key)" for c in COLUMNS], _ENGINE),
    "full+cache256": (_FULL, ("cache_size=-262144",)),
    "full+mmap": (_FULL, (*_ENGINE, "mmap_size=4294967296")),
    "full+sorted": (_FULL, _ENGINE),
    "full+ckpt100k": (_FULL, (*_ENGINE, "wal_autocheckpoint=100000")),
    "full+ckpt1k": (_FULL, (*_ENGINE, "wal_autocheckpoint=1000")),
}


def _key(pseudonym: str | None) -> int | None:
    return None if pseudonym is None else int.from_bytes(bytes.fromhex(pseudonym[:16]), "big", signed=True)


def make_rows(count: int, batch: int) -> list[list[tuple[object, ...]]]:
    """The items, batch by batch: (entry_seq, idx, record, subject, due_at, None, None, None)."""
    subjects = [hashlib.sha256(b"subject\x1f%d" % c).hexdigest() for c in range(100_000)]
    batches = []
    for first in range(0, count, batch):
        seq = first // batch + 1
        batches.append(
            [
                (
                    seq,
                    i - first,
                    hashlib.sha256(b"record\x1f%d" % i).hexdigest(),
                    subjects[(i * 7919) % 100_000],
                    "2023-01-01 00:00:00.000000",
                    None,
                    None,
                    None,
                )
                for i in range(first, min(first + batch, count))
            ]
        )
    return batches


def run_variant(
    folder: str, name: str, batches: Sequence[list[tuple[object, ...]]], staged: bool = False
) -> tuple[float, float, float]:
    """CPU seconds, wall seconds, and last tenth / first tenth of the CPU time, for one variant in a fresh file."""
    ddl, pragmas = VARIANTS[name]
    path = Path(folder) / f"{name}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=wal", "synchronous=NORMAL", "wal_autocheckpoint=10000", *pragmas):
        conn.execute(f"PRAGMA {pragma}")
    for statement in ddl:
        conn.execute(statement)
    keyed = name == "int64"
    sql = f"INSERT INTO items VALUES ({', '.join('?' * (11 if keyed else 8))})"
    prepared: Callable[[list[tuple[object, ...]]], list[tuple[object, ...]]]
    if keyed:

        def prepared(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
            return [(*r, _key(r[2]), _key(r[3]), _key(r[7])) for r in rows]  # type: ignore[arg-type]

    elif name.endswith("+sorted"):

        def prepared(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
            return sorted(rows, key=lambda r: r[2])  # type: ignore[arg-type,return-value]

    else:

        def prepared(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
            return rows

    if staged:
        # As the engine writes items: one INSERT ... SELECT per batch, no row through Python.
        conn.execute("CREATE TEMP TABLE staged AS SELECT * FROM items WHERE 0")
        sql = "INSERT INTO items SELECT * FROM staged WHERE entry_seq = ? ORDER BY idx"
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO staged VALUES ({', '.join('?' * (11 if keyed else 8))})",
            prepared([r for rows in batches for r in rows]),
        )
        conn.execute("COMMIT")
    tenth = max(len(batches) // 10, 1)
    times = []
    wall = time.perf_counter()
    for rows in batches:
        values = [] if staged else prepared(rows)
        began = time.process_time()
        conn.execute("BEGIN")
        if staged:
            conn.execute(sql, (rows[0][0],))
        else:
            conn.executemany(sql, values)
        conn.execute("COMMIT")
        times.append(time.process_time() - began)
    wall = time.perf_counter() - wall
    conn.close()
    growth = sum(times[-tenth:]) / max(sum(times[:tenth]), 1e-9)
    return sum(times), wall, growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--staged",
        action="store_true",
        help="insert each batch by INSERT ... SELECT from a staging table, as the engine",
    )
    args = parser.parse_args()
    names = args.variants.split(",")
    if "none" not in names:
        names.insert(0, "none")
    batches = make_rows(args.items, args.batch)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    walls: dict[str, list[float]] = {n: [] for n in names}
    growths: dict[str, list[float]] = {n: [] for n in names}
    cost: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="sqlitepurge_") as folder:
        for r in range(args.rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            this: dict[str, float] = {}
            for name in order:
                seconds, wall, growth = run_variant(folder, name, batches, args.staged)
                this[name] = seconds
                cpu[name].append(seconds)
                walls[name].append(wall)
                growths[name].append(growth)
                print(f"round {r + 1} {name}: cpu {seconds:.3f} s, wall {wall:.3f} s, last/first tenth {growth:.2f}")
            for name in names:
                cost[name].append(this[name] - this["none"])
    per = 1e6 / args.items
    full = statistics.median(cost["full"]) if "full" in cost else None
    print()
    how = "INSERT ... SELECT from a staging table" if args.staged else "executemany"
    print(f"{args.items:,} items in batches of {args.batch:,} ({how}), {args.rounds} rounds, medians")
    print()
    print("| variant | CPU µs per item | wall µs per item | index cost µs per item | vs full | last/first tenth |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        c = statistics.median(cost[name])
        ratio = "" if full is None or name == "none" else f"{c / full:.2f}"
        print(
            f"| {name} | {statistics.median(cpu[name]) * per:.1f} | {statistics.median(walls[name]) * per:.1f} "
            f"| {c * per:.1f} | {ratio} | {statistics.median(growths[name]):.2f} |"
        )


if __name__ == "__main__":
    main()
