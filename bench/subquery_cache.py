"""What MariaDB's subquery cache was worth to plan with open erasure requests (it is off since branch subqcache).

    .venv/bin/python -m bench.subquery_cache --db mysql://root@127.0.0.1/sqc_bench [--email]

The cache keyed a correlated subquery by its outer columns in their own
collation, so in a case-insensitive subject column 'U1' got the answer found
for 'u1' (``MySQLDialect.on_connect`` now turns it off per session). bench/run.py
has no hold and no erasure request, so the engine's probe leaves those
subqueries out and it cannot see the difference. This bench can: ``--rows``
rows, all due, subjects u0..u{rows/10} (10 rows each, so a cache keyed by
subject could hit 9 times in 10) in a ``utf8mb4_general_ci`` column, and
``--requests`` open erasure requests. It times :func:`retention.engine.execute.plan`
through two engines in the same process, alternated: the engine's own (cache
off) and one whose sessions turn the cache back on. ``--email``: the dataset
reads an address column too, so the erasure EXISTS is an OR that MariaDB
cannot decorrelate (the case the cache answered wrongly). The database named
is dropped and created.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import sqlalchemy as sa

from bench import scratch
from retention.engine import execute
from retention.store import migrate
from retention.store.config import create_engine


def _cache_on(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("SET SESSION optimizer_switch = 'subquery_cache=on'")
    cursor.close()


def main() -> None:
    parser = scratch.arguments(__doc__, rows=300_000, requests=1_000)
    parser.add_argument("--email", action="store_true", help="the dataset reads an address column too")
    args = parser.parse_args()
    scratch.fresh_database(args.db)
    engines = {"cache off (this branch)": create_engine(args.db), "cache on (before)": create_engine(args.db)}
    sa.event.listen(engines["cache on (before)"], "connect", _cache_on)
    engine = engines["cache off (this branch)"]
    migrate.upgrade(engine)
    events = scratch.events_table("sqc_events", email=args.email, collation="utf8mb4_general_ci")
    events.create(engine)
    subjects = args.rows // 10
    at = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)  # due: kept one year
    with engine.begin() as conn:
        scratch.insert(conn, events, scratch.event_rows(args.rows, at, mail="u{s}@example.com" if args.email else None))
        scratch.open_requests(
            conn, [{"subject_key": f"u{i * (subjects // args.requests)}"} for i in range(args.requests)]
        )
        scratch.analyse(conn, "sqc_events", "retention_erasure_requests")
    loaded = scratch.erasure_pack("sqcbench", "sqc_events", email=args.email)
    times: dict[str, list[float]] = {name: [] for name in engines}
    said: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, each in engines.items():
            started = time.perf_counter()
            result = execute.plan(each, loaded, scratch.AS_OF)
            times[name].append(time.perf_counter() - started)
            said[name] = result.transitions
    assert said["cache off (this branch)"] == said["cache on (before)"], "the two disagree"
    print(
        f"mariadb: {args.rows:,} rows (all due), {subjects:,} subjects, {args.requests:,} open requests"
        f"{', with an e-mail column' if args.email else ''}; plan, median of {args.repeat}: {said['cache on (before)']}"
    )
    base = statistics.median(times["cache on (before)"])
    for name, spent in times.items():
        median = statistics.median(spent)
        runs = ", ".join(f"{s:.3f}" for s in spent)
        print(f"| {name} | {median:.3f} s | {median / base:.2f}x | {runs} |")
    for each in engines.values():
        each.dispose()


if __name__ == "__main__":
    main()
