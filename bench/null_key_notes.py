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

import datetime as dt
import statistics
import time
from typing import Any

import sqlalchemy as sa

from bench import scratch
from retention.engine.null_keys import null_key_notes
from retention.engine.plan import PlanContext, build_planners
from retention.store import migrate
from retention.store import tables as store


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


def main() -> None:
    parser = scratch.arguments(__doc__, rows=200_000, requests=1_000)
    parser.add_argument("--null-rows", type=int, default=2_000)
    parser.add_argument("--email", action="store_true", help="the dataset reads an address column too")
    args = parser.parse_args()
    scratch.fresh_database(args.db)
    engine = sa.create_engine(args.db)
    migrate.upgrade(engine)
    events = scratch.events_table("nk_events", email=args.email)
    events.create(engine)
    subjects = args.rows // 10
    at = dt.datetime(2024, 12, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        mail = "u{s}@example.com" if args.email else None
        scratch.insert(conn, events, scratch.event_rows(args.rows, at, mail=mail, null_keys=args.null_rows))
        # Half the requests name a subject with NULL-key rows (u0..), half one without.
        named = [f"u{i}" for i in range(args.requests // 2)] + [
            f"u{subjects - 1 - i}" for i in range(args.requests - args.requests // 2)
        ]
        scratch.open_requests(conn, [{"subject_key": s} for s in named])
    with engine.begin() as conn:
        scratch.analyse(conn, "nk_events", "retention_erasure_requests")
    loaded = scratch.erasure_pack("nkbench", "nk_events", email=args.email)
    times: dict[str, list[float]] = {"per request (main)": [], "grouped (nullvis)": []}
    said = {}
    with engine.connect() as conn:
        planners = list(build_planners(conn, PlanContext(loaded, scratch.AS_OF)).values())
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
