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

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from retention.engine import execute
from retention.policy import validate_pack
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine

PACK = """
pack: sqcbench
version: "1"
effective_from: 2020-01-01
timezone: UTC
datasets:
  events:
    table: sqc_events
    key: id
    subject_key: user_id
    basis: bench
    on_erasure: purged
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""
AS_OF = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _fresh(url: str) -> None:
    target = sa.make_url(url)
    server = target.set(database="mysql").render_as_string(hide_password=False)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{target.database}`"))
        conn.execute(sa.text(f"CREATE DATABASE `{target.database}`"))
    admin.dispose()


def _cache_on(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("SET SESSION optimizer_switch = 'subquery_cache=on'")
    cursor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--email", action="store_true", help="the dataset reads an address column too")
    args = parser.parse_args()
    _fresh(args.db)
    engines = {"cache off (this branch)": create_engine(args.db), "cache on (before)": create_engine(args.db)}
    sa.event.listen(engines["cache on (before)"], "connect", _cache_on)
    engine = engines["cache off (this branch)"]
    migrate.upgrade(engine)
    events = sa.Table(
        "sqc_events",
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(12), unique=True),
        sa.Column("user_id", sa.String(20, collation="utf8mb4_general_ci"), index=True),
        *([sa.Column("mail", sa.String(80), index=True)] if args.email else []),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    events.create(engine)
    subjects = args.rows // 10
    at = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)  # due: kept one year
    with engine.begin() as conn:
        rows = [
            {"n": n, "id": f"k{n}", "user_id": f"u{n % subjects}", "collected": at}
            | ({"mail": f"u{n % subjects}@example.com"} if args.email else {})
            for n in range(args.rows)
        ]
        for start in range(0, len(rows), 10_000):
            conn.execute(events.insert(), rows[start : start + 10_000])
        conn.execute(
            store.erasure_requests.insert(),
            [
                {
                    "subject_key": f"u{i * (subjects // args.requests)}",
                    "received_on": dt.date(2024, 12, 15),
                    "deadline": dt.date(2025, 1, 15),
                    "status": "open",
                }
                for i in range(args.requests)
            ],
        )
        conn.execute(sa.text("ANALYZE TABLE sqc_events, retention_erasure_requests"))
    text = PACK.replace("    subject_key: user_id\n", "    subject_key: user_id\n    email: mail\n")
    text = text if args.email else PACK
    loaded = validate_pack(yaml.safe_load(text), Path("<bench>"), text)
    times: dict[str, list[float]] = {name: [] for name in engines}
    said: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, each in engines.items():
            started = time.perf_counter()
            result = execute.plan(each, loaded, AS_OF)
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
