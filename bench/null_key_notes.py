"""Why open erasure requests stay open (rows with no key): one statement per request before, one per dataset now.

    .venv/bin/python -m bench.null_key_notes --db postgresql+psycopg://postgres@127.0.0.1:5432/nkn_bench

Builds a table of ``--rows`` rows (subjects u0..u{rows/10}), ``--null-rows`` of them
with a NULL key, and ``--requests`` open erasure requests, half of them of a subject
with NULL-key rows; then times :func:`retention.engine.null_keys.null_key_notes`
(one statement per dataset, grouped by request) against the per-request loop it
replaced (:func:`_per_request`, main 1597e7a's code) in the same process, medians
of ``--repeat``, and checks they say the same. The database named is dropped and
created (PostgreSQL, MariaDB), or the SQLite file replaced. ``--email``: the
dataset also reads an address column (``email: mail``, every row one), so the
join to the requests is an OR of two identities (review of nullvis: on MariaDB
the ratio is then far smaller).
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

from retention.engine.null_keys import null_key_notes
from retention.engine.plan import PlanContext, build_planners
from retention.policy import validate_pack
from retention.store import migrate
from retention.store import tables as store

PACK = """
pack: nkbench
version: "1"
effective_from: 2020-01-01
timezone: UTC
datasets:
  events:
    table: nk_events
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


def _per_request(conn: sa.Connection, planners: Any) -> list[str]:
    """main 1597e7a's loop: the open requests, then one count per request and dataset with NULL keys."""
    reaching = []
    for p in planners:
        reach = p.reach(erasure=True)
        probe = sa.select(sa.literal(1)).select_from(p.table).where(p.key.is_(None), reach).limit(1)
        if conn.execute(probe).first() is not None:
            reaching.append((p, reach))
    er = store.erasure_requests
    requests = conn.execute(
        sa.select(er.c.id, er.c.subject_key, er.c.email, er.c.email_pseudonym)
        .where(er.c.status == "open", er.c.received_on <= reaching[0][0].today)
        .order_by(er.c.id)
    ).all()
    notes = []
    for request in requests:
        for p, reach in reaching:
            named = p._names(conn, p.live_who(conn), request)
            rows = int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(p.table).where(p.key.is_(None), reach, named)
                ).scalar_one()
            )
            if rows:
                notes.append(
                    f"erasure request {request.id}: {rows} rows of this subject in {p.name} have no key (NULL); "
                    "the engine cannot erase them, so the request stays open"
                )
    return notes


def _fresh(url: str) -> sa.Engine:
    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":
        Path(str(target.database)).unlink(missing_ok=True)
    else:
        postgres = target.get_backend_name() == "postgresql"
        admin = sa.create_engine(target.set(database="postgres" if postgres else "mysql"), isolation_level="AUTOCOMMIT")
        quote = '"' if postgres else "`"
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{target.database}{quote}"))
            conn.execute(sa.text(f"CREATE DATABASE {quote}{target.database}{quote}"))
        admin.dispose()
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--null-rows", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--email", action="store_true", help="the dataset reads an address column too")
    args = parser.parse_args()
    engine = _fresh(args.db)
    events = sa.Table(
        "nk_events",
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(12), nullable=True, unique=True),
        sa.Column("user_id", sa.String(20), index=True),
        *([sa.Column("mail", sa.String(80), index=True)] if args.email else []),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    events.create(engine)
    subjects = args.rows // 10
    at = dt.datetime(2024, 12, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        rows = [
            {"n": n, "id": None if n < args.null_rows else f"k{n}", "user_id": f"u{n % subjects}", "collected": at}
            | ({"mail": f"u{n % subjects}@example.com"} if args.email else {})
            for n in range(args.rows)
        ]
        for start in range(0, len(rows), 10_000):
            conn.execute(events.insert(), rows[start : start + 10_000])
        # Half the requests name a subject with NULL-key rows (u0..), half one without.
        named = [f"u{i}" for i in range(args.requests // 2)] + [
            f"u{subjects - 1 - i}" for i in range(args.requests - args.requests // 2)
        ]
        conn.execute(
            store.erasure_requests.insert(),
            [
                {
                    "subject_key": s,
                    "received_on": dt.date(2024, 12, 15),
                    "deadline": dt.date(2025, 1, 15),
                    "status": "open",
                }
                for s in named
            ],
        )
    with engine.begin() as conn:  # statistics, as autovacuum (off on the bench machine) would have them
        if engine.dialect.name in ("postgresql", "sqlite"):
            conn.execute(sa.text("ANALYZE"))
        else:
            conn.execute(sa.text("ANALYZE TABLE nk_events, retention_erasure_requests"))
    text = PACK.replace("    subject_key: user_id\n", "    subject_key: user_id\n    email: mail\n")
    text = text if args.email else PACK
    loaded = validate_pack(yaml.safe_load(text), Path("<bench>"), text)
    times: dict[str, list[float]] = {"per request (main)": [], "grouped (nullvis)": []}
    said = {}
    with engine.connect() as conn:
        planners = list(build_planners(conn, PlanContext(loaded, AS_OF)).values())
        for _ in range(args.repeat):
            for name, how in (("per request (main)", _per_request), ("grouped (nullvis)", null_key_notes)):
                started = time.perf_counter()
                said[name] = how(conn, planners)
                times[name].append(time.perf_counter() - started)
                conn.rollback()
    assert said["per request (main)"] == said["grouped (nullvis)"], "the two disagree"
    print(
        f"{engine.dialect.name}: {args.rows:,} rows, {args.null_rows:,} NULL keys, {args.requests:,} open requests, "
        f"{len(said['grouped (nullvis)']):,} notes{', with an e-mail column' if args.email else ''}"
    )
    base = statistics.median(times["per request (main)"])
    for name, spent in times.items():
        median = statistics.median(spent)
        print(f"| {name} | {median:.3f} s | {base / median:.1f}x |")
    engine.dispose()


if __name__ == "__main__":
    main()
