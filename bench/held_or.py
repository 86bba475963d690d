"""Plan and run with many subject holds and an e-mail column: one IN per kind of hold against one EXISTS on an OR.

    .venv/bin/python -m bench.held_or --db mysql://root@127.0.0.1/hor_bench --base /tmp/heldperf_base
    .venv/bin/python -m bench.held_or --db postgresql://postgres@127.0.0.1/hor_bench --base ...
    .venv/bin/python -m bench.held_or --db sqlite:////tmp/hor_bench.db --base ...

Why: the hold check was one correlated ``NOT EXISTS (... WHERE dataset hold
OR record hold by key OR subject hold by subject_key = s OR email = e ...)``
per row, which no database decorrelates: rows x holds in place. The mask pass
of a partial erasure also looked its request up per masked row with a scalar
``min(id)`` over an OR of the identities. The engine now asks one uncorrelated
test per kind of hold (``PlannerBase.held``) and the requests once per batch
(``erasure_mask._requests``). ``--base`` is a ``git archive`` of the code before
(main): its ``PlannerBase.not_held``/``open_erasure`` and its
``erasure_mask.count``/``next_batch`` are loaded from there and patched in, so
"before" and "after" run in one process, alternated, on the same data.

The data: ``--rows`` rows, 10 per subject (u0..), addresses ``u<n>@example.com``
mixed-case and padded (the normalisation runs), half of them due; ``--holds``
subject holds in place on every k-th subject, ``--email-holds`` of them by
address alone (subject_key NULL), the others by subject id alone (email NULL);
50 record holds, one released dataset hold and one released subject hold.
``--requests`` open erasure requests (half by address) on other subjects; the
dataset's ``on_erasure`` masks a column, so run's mask pass masks their rows.
``plan`` (its counts of records held back per hold too: one count per hold,
before, ``PlannerCounts.held_back``) is timed as it is; ``run`` on a freshly loaded database each time (the
load is not timed). Both shapes must give the same transitions, and the same
masked marks (request per record) and rows left after run. The database named
is dropped and created (SQLite: the file is removed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
import yaml

from bench.erasure_or import _fresh
from retention.engine import erasure_mask, execute
from retention.engine.plan_base import PlannerBase
from retention.engine.plan_counts import PlannerCounts
from retention.policy import validate_pack
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine

PACK = """
pack: horbench
version: "1"
effective_from: 2020-01-01
timezone: UTC
datasets:
  events:
    table: hor_events
    key: id
    subject_key: user_id
    email: mail
    basis: bench
    on_erasure:
      mask: {note: null}
      keep_until: purged
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""
AS_OF = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SECRET = b"held-or-bench-secret-0123456789abcdef"


def _base_module(base: Path, relative: str, name: str) -> ModuleType:
    """One module of the code before, loaded from its file beside the engine in use (which it imports)."""
    spec = importlib.util.spec_from_file_location(name, base / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load(url: str, args: argparse.Namespace) -> sa.Engine:
    """A fresh database with the data the module doc describes."""
    _fresh(url)
    engine = create_engine(url)
    migrate.upgrade(engine)
    mariadb = engine.dialect.name in ("mysql", "mariadb")
    events = sa.Table(
        "hor_events",
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(12), unique=True),
        sa.Column("user_id", sa.String(20, collation="utf8mb4_general_ci" if mariadb else None), index=True),
        sa.Column("mail", sa.String(80), index=True),
        sa.Column("note", sa.String(40)),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    events.create(engine)
    subjects = args.rows // 10
    due, kept = dt.datetime(2023, 6, 1, tzinfo=dt.UTC), dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    hold_step = max(subjects // max(args.holds, 1), 1)
    request_step = max(subjects // max(args.requests, 1), 1)
    placed = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    hold = {"reason": "bench", "placed_by": "bench", "placed_at": placed, "dataset": None, "record_key": None}
    hold |= {"subject_key": None, "email": None, "released_at": None, "released_by": None, "release_reason": None}
    with engine.begin() as conn:
        rows = [
            {
                "n": n,
                "id": f"k{n}",
                "user_id": f"u{n % subjects}",
                "collected": due if (n // subjects) % 2 else kept,
                "mail": f" U{n % subjects}@Example.com",
                "note": "personal",
            }
            for n in range(args.rows)
        ]
        for start in range(0, len(rows), 10_000):
            conn.execute(events.insert(), rows[start : start + 10_000])
        holds = [
            {
                **hold,
                "scope": "subject",
                "subject_key": None if i < args.email_holds else f"u{i * hold_step}",
                "email": f"u{i * hold_step}@example.com" if i < args.email_holds else None,
            }
            for i in range(args.holds)
        ]
        holds += [{**hold, "scope": "record", "dataset": "events", "record_key": f"k{n * 7 + 1}"} for n in range(50)]
        released = {"released_at": placed, "released_by": "bench", "release_reason": "bench"}
        holds += [
            {**hold, **released, "scope": "dataset", "dataset": "events"},
            {**hold, **released, "scope": "subject", "subject_key": "u1"},
        ]
        for start in range(0, len(holds), 5_000):
            conn.execute(store.holds.insert(), holds[start : start + 5_000])
        conn.execute(
            store.erasure_requests.insert(),
            [
                {
                    "subject_key": f"u{i * request_step + 1}" if i % 2 == 0 else None,
                    "email": f"u{i * request_step + 1}@example.com" if i % 2 else None,
                    "received_on": dt.date(2024, 12, 15),
                    "deadline": dt.date(2025, 1, 15),
                    "status": "open",
                }
                for i in range(args.requests)
            ],
        )
        analyse = {"sqlite": "ANALYZE", "postgresql": "ANALYZE"}.get(
            engine.dialect.name, "ANALYZE TABLE hor_events, retention_holds, retention_erasure_requests"
        )
        conn.execute(sa.text(analyse))
    return engine


def _outcome(engine: sa.Engine) -> tuple[int, list[tuple[str, int]]]:
    """What a run left: the rows, and which request masked which record."""
    em = store.erasure_masks
    with engine.connect() as conn:
        left = int(conn.execute(sa.text("SELECT count(*) FROM hor_events")).scalar_one())
        marks = conn.execute(sa.select(em.c.record_key, em.c.request_id).order_by(em.c.record_key)).all()
    return left, [(k, r) for k, r in marks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--base", type=Path, required=True, help="a git archive of the code before (main)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--holds", type=int, default=1_000)
    parser.add_argument("--email-holds", type=int, default=0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-run", action="store_true", help="time plan only")
    parser.add_argument("--skip-before", action="store_true", help="time only the engine's shape (large runs)")
    args = parser.parse_args()
    before_plan = _base_module(args.base, "retention/engine/plan_base.py", "heldperf_base_plan_base")
    before_mask = _base_module(args.base, "retention/engine/erasure_mask.py", "heldperf_base_erasure_mask")
    before_counts = _base_module(args.base, "retention/engine/plan_counts.py", "heldperf_base_plan_counts")
    patched = {
        (PlannerCounts, "held_back"): before_counts.PlannerCounts.held_back,
        (PlannerBase, "not_held"): before_plan.PlannerBase.not_held,
        (PlannerBase, "open_erasure"): before_plan.PlannerBase.open_erasure,
        (erasure_mask, "count"): before_mask.count,
        (erasure_mask, "next_batch"): before_mask.next_batch,
    }
    own = {(where, name): getattr(where, name) for where, name in patched}
    shapes = {"one IN per kind of hold, requests per batch (this branch)": own}
    if not args.skip_before:
        shapes = {"one EXISTS, OR inside (main)": patched, **shapes}
    loaded = validate_pack(yaml.safe_load(PACK), Path("<bench>"), PACK)
    plans: dict[str, list[float]] = {name: [] for name in shapes}
    runs: dict[str, list[float]] = {name: [] for name in shapes}
    said: dict[str, Any] = {}
    left: dict[str, Any] = {}
    engine = _load(args.db, args)
    dialect = engine.dialect.name
    try:
        for _ in range(args.repeat):
            for name, shape in shapes.items():
                for (where, attr), function in shape.items():
                    setattr(where, attr, function)
                started = time.perf_counter()
                summary = execute.plan(engine, loaded, AS_OF)
                said[name] = (summary.transitions, summary.held_back)
                plans[name].append(time.perf_counter() - started)
        if not args.no_run:
            for _ in range(args.repeat):
                for name, shape in shapes.items():
                    engine.dispose()
                    engine = _load(args.db, args)
                    for (where, attr), function in shape.items():
                        setattr(where, attr, function)
                    started = time.perf_counter()
                    execute.run(engine, loaded, AS_OF, secret=SECRET, allow_mass=["events"])
                    runs[name].append(time.perf_counter() - started)
                    left[name] = _outcome(engine)
    finally:
        for (where, attr), function in own.items():
            setattr(where, attr, function)
    assert len({repr(v) for v in said.values()}) == 1, f"the shapes disagree on plan: {said}"
    assert len({repr(v) for v in left.values()}) <= 1, "the shapes disagree on what run left"
    outcome = next(iter(left.values()), None)
    transitions, held = next(iter(said.values()))
    print(
        f"{dialect}: {args.rows:,} rows (half due), {args.holds:,} subject holds ({args.email_holds:,} by e-mail), "
        f"{args.requests:,} open requests (half by e-mail); median of {args.repeat}; plan: {transitions}, held back"
        f" {sum(h['count'] for h in held):,} records by {len(held):,} holds"
        + (f"; run left {outcome[0]:,} rows, masked {len(outcome[1]):,}" if outcome else "")
    )
    for label, times in (("plan", plans), ("run", runs)):
        if not next(iter(times.values())):
            continue
        base = statistics.median(next(iter(times.values())))
        for name, spent in times.items():
            median = statistics.median(spent)
            each = ", ".join(f"{s:.3f}" for s in spent)
            print(f"| {label} | {name} | {median:.3f} s | {base / median:.1f}x | {each} |")
    engine.dispose()


if __name__ == "__main__":
    main()
