"""Plan with an e-mail column and open erasure requests: one IN per identity against one EXISTS on an OR.

    .venv/bin/python -m bench.erasure_or --db mysql://root@127.0.0.1/eor_bench --rows 20000 --requests 100
    .venv/bin/python -m bench.erasure_or --db postgresql://postgres@127.0.0.1/eor_bench ...
    .venv/bin/python -m bench.erasure_or --db sqlite:////tmp/eor_bench.db ...

Why: the erasure check asked ``EXISTS (... WHERE subject_key = s OR email = e
...)`` per row, which MariaDB cannot decorrelate: it scanned the open requests
for every row (rows x requests; ~4 s for 20,000 rows and 100 requests). The
engine now asks one IN per identity (``PlannerBase.open_erasure``). This
bench times :func:`retention.engine.execute.plan` both ways in one process,
alternated: the engine's own shape, and the old one patched back in. Both must
give the same transitions. ``--rows`` rows, all due, 10 per subject (u0..), each
with the address ``u<n>@example.com`` (mixed case and padded, so the
normalisation runs); ``--requests`` open requests, even ones by subject id, odd
ones by e-mail address. The database named is dropped and created (SQLite: the
file is removed).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import sqlalchemy as sa

from bench import scratch
from retention.engine import execute
from retention.engine.plan_base import PlannerBase
from retention.engine.plan_values import Who
from retention.store import migrate
from retention.store.config import create_engine


def _one_or(self: PlannerBase, who: Who) -> sa.ColumnElement[bool]:
    """The shape before this branch: one EXISTS on an OR of the identities."""
    er = self.ctx.tables.erasure_requests
    return sa.exists().where(who.named_by(er), er.c.status == "open", er.c.received_on <= self.today)


def main() -> None:
    parser = scratch.arguments(__doc__, rows=20_000, requests=100)
    parser.add_argument("--skip-before", action="store_true", help="time only the engine's shape (large runs)")
    args = parser.parse_args()
    scratch.fresh_database(args.db)
    engine = create_engine(args.db)
    migrate.upgrade(engine)
    mariadb = engine.dialect.name in ("mysql", "mariadb")
    events = scratch.events_table("eor_events", email=True, collation="utf8mb4_general_ci" if mariadb else None)
    events.create(engine)
    subjects = args.rows // 10
    step = max(subjects // args.requests, 1)
    at = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)  # due: kept one year
    with engine.begin() as conn:
        scratch.insert(conn, events, scratch.event_rows(args.rows, at, mail=" U{s}@Example.com"))
        scratch.open_requests(
            conn,
            [
                {
                    "subject_key": f"u{i * step}" if i % 2 == 0 else None,
                    "email": f"u{i * step}@example.com" if i % 2 else None,
                }
                for i in range(args.requests)
            ],
        )
        scratch.analyse(conn, "eor_events", "retention_erasure_requests")
    loaded = scratch.erasure_pack("eorbench", "eor_events", email=True)
    own = PlannerBase.open_erasure
    shapes: dict[str, Any] = {"one IN per identity (this branch)": own}
    if not args.skip_before:
        shapes = {"one EXISTS, OR inside (before)": _one_or, **shapes}
    times: dict[str, list[float]] = {name: [] for name in shapes}
    said: dict[str, Any] = {}
    try:
        for _ in range(args.repeat):
            for name, shape in shapes.items():
                PlannerBase.open_erasure = shape  # type: ignore[method-assign]
                started = time.perf_counter()
                result = execute.plan(engine, loaded, scratch.AS_OF)
                times[name].append(time.perf_counter() - started)
                said[name] = result.transitions
    finally:
        PlannerBase.open_erasure = own  # type: ignore[method-assign]
    assert len({repr(v) for v in said.values()}) == 1, f"the shapes disagree: {said}"
    print(
        f"{engine.dialect.name}: {args.rows:,} rows (all due), {subjects:,} subjects, {args.requests:,} open requests"
        f" (half by e-mail); plan, median of {args.repeat}: {next(iter(said.values()))}"
    )
    base = statistics.median(next(iter(times.values())))
    for name, spent in times.items():
        median = statistics.median(spent)
        runs = ", ".join(f"{s:.3f}" for s in spent)
        print(f"| {name} | {median:.3f} s | {base / median:.1f}x | {runs} |")
    engine.dispose()


if __name__ == "__main__":
    main()
