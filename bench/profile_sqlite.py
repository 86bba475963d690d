"""Where a set-based SQLite purge spends its time: statement times summed by kind, per record.

    python bench/profile_sqlite.py --rows 300000 [--cprofile out.prof]

Generates the bench table (bench/run.py's data) in a temporary SQLite file
(WAL, as bench/run.py), runs one purge + ledger, and sums each statement's
time by an SQLAlchemy cursor hook, grouped by what the statement does. SQLite
runs a statement as its rows are fetched (a ``SELECT`` or an ``INSERT ...
RETURNING`` returns from ``execute`` at its first row), so the fetches are
timed too and added to the statement that produced them.
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import cursor as sa_cursor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench  # noqa: E402
from retention import logs  # noqa: E402
from retention.store import migrate  # noqa: E402
from retention.store.config import create_engine  # noqa: E402
from retention.subjects.events import place_hold  # noqa: E402

KINDS = (
    ("INSERT INTO retention_ledger_items", "items (INSERT ... SELECT ... RETURNING leaf)"),
    ("INSERT INTO retention_ledger_blocks", "block (INSERT ... SELECT ... RETURNING body)"),
    ("DELETE FROM bench_events", "delete"),
    ("SELECT bench_events.id", "batch keys"),
    ("SELECT count(*) AS count_1, max(chosen.id)", "batch keys"),
    ("SELECT count(*) AS count_1 FROM bench_events WHERE bench_events.id", "range count (whole-range batches)"),
    ("SELECT max(retention_ledger_items.due_at)", "latest due instant"),
    ("INSERT INTO retention_ledger ", "chain entry"),
)


def kind_of(statement: str) -> str:
    text = " ".join(statement.split())
    for prefix, name in KINDS:
        if text.startswith(prefix):
            return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--cprofile", type=Path, default=None)
    parser.add_argument(
        "--pragma",
        action="append",
        default=[],
        help="a PRAGMA run on each connection after the engine's own (repeatable), e.g. wal_autocheckpoint=100000",
    )
    parser.add_argument(
        "--drop-item-indexes",
        action="store_true",
        help="drop the ledger items' three pseudonym indexes before the run: what they cost the engine (no lookups)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="place a hold on a subject with no rows first: the batches' predicate then carries the holds' anti-join",
    )
    args = parser.parse_args()
    logs.configure(level="warning")
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{folder}/profile.sqlite?journal_mode=wal")
        if args.pragma:

            @sa.event.listens_for(engine, "connect")
            def pragmas(dbapi_conn: Any, record: Any) -> None:
                cursor = dbapi_conn.cursor()
                for pragma in args.pragma:
                    cursor.execute(f"PRAGMA {pragma}")
                cursor.close()

        migrate.upgrade(engine)
        bench.generate(engine, args.rows, 1)
        bench.reset_engine_tables(engine)
        if args.drop_item_indexes:
            with engine.begin() as conn:
                for column in ("record_pseudonym", "subject_pseudonym", "email_pseudonym"):
                    conn.exec_driver_sql(f"DROP INDEX ix_retention_ledger_items_{column}")
        if args.hold:
            with engine.begin() as conn:
                place_hold(
                    conn, scope="subject", subject_key="nobody", reason="bench", placed_by="bench", secret=bench.SECRET
                )
        spent: dict[str, list[float]] = {}

        last = ["other"]

        @sa.event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            conn.info.setdefault("began", []).append((time.perf_counter(), time.process_time()))

        @sa.event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            wall, cpu = conn.info["began"].pop()
            last[0] = kind_of(statement)
            entry = spent.setdefault(last[0], [0.0, 0, 0.0])
            entry[0] += time.perf_counter() - wall
            entry[1] += 1
            entry[2] += time.process_time() - cpu

        def timed_fetch(original: Any) -> Any:
            def fetch(*args: Any, **kwargs: Any) -> Any:
                began, cpu = time.perf_counter(), time.process_time()
                try:
                    return original(*args, **kwargs)
                finally:
                    entry = spent.setdefault(last[0], [0.0, 0, 0.0])
                    entry[0] += time.perf_counter() - began
                    entry[2] += time.process_time() - cpu

            return fetch

        strategy = sa_cursor.CursorFetchStrategy
        for name in ("fetchone", "fetchmany", "fetchall"):
            setattr(strategy, name, timed_fetch(getattr(strategy, name)))

        profiler = cProfile.Profile() if args.cprofile else None
        began, cpu_began = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        moved = bench.engine_run(engine, "delete", args.batch_size)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        total, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        engine.dispose()
    dropped = "; item pseudonym indexes dropped" if args.drop_item_indexes else ""
    held = "; a hold in place" if args.hold else ""
    print(f"pragmas after the engine's: {', '.join(args.pragma) or 'none'}{dropped}{held}; CPU {cpu:.3f} s")
    print(f"{moved} purged of {args.rows} in {total:.3f} s ({total / max(moved, 1) * 1e6:.1f} µs per record)")
    print()
    per = 1e6 / max(moved, 1)
    print("| statement | calls | seconds | µs per record | CPU µs per record |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, calls, used) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {calls:.0f} | {seconds:.3f} | {seconds * per:.1f} | {used * per:.1f} |")
    rest = total - sum(entry[0] for entry in spent.values())
    rest_cpu = cpu - sum(entry[2] for entry in spent.values())
    print(f"| Python and commits (rest) | | {rest:.3f} | {rest * per:.1f} | {rest_cpu * per:.1f} |")


if __name__ == "__main__":
    main()
