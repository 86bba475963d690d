"""Benchmark: the engine's fixed CPU per ``plan`` and per ``run`` of a small pack, on each database (issue 20).

    python bench/fixed_cost.py                        # this checkout against main, 15 calls, 3 rounds
    python bench/fixed_cost.py --baseline REF --calls 20 --rounds 5 --db sqlite postgresql

A plan or run of a small pack over a small shop (three tables of 40-120
rows, a foreign key, the pack of tests/test_engine.py) spends most of its
client CPU on work that does not depend on the rows: the schema check,
reflection, building the planners, compiling statements. That is what each
test of the suite pays several times, and what every CLI user pays per call.

Each side (this checkout, and ``--baseline``: a ``git archive`` of that
commit, main by default) runs in a subprocess of its own with its source on
``PYTHONPATH``; the rounds alternate between the two sides so that a change
of load hits both alike. A subprocess builds the shop once (in a database
of its own: ``<db>_fixed_cost``, a schema on PostgreSQL, dropped after),
runs once to settle the rows, warms up with one plan and one run (imports,
first compilations), then measures ``--calls`` plans and ``--calls`` runs at
the same as-of (nothing more is due: the run still plans, guards and
records itself, the fixed cost). The figure is the median process CPU time
(``time.process_time``) per call, over the rounds' medians. The database
servers' CPU is not in it; the statements each call sent them (counted by
a ``before_cursor_execute`` listener, the same every round) are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
SERVERS = {
    "sqlite": None,
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
SECRET = b"bench-fixed-cost-key"


def _shop(engine: Any) -> None:
    """The three tables of tests/test_engine.py (visits references accounts), 40 accounts."""
    import random

    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    ts = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    md = sa.MetaData()
    accounts = sa.Table(
        "accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100)),
        sa.Column("last_seen", ts, index=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    visits = sa.Table(
        "visits",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True),
        sa.Column("at", ts, index=True),
    )
    logs = sa.Table(
        "logs", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), sa.Column("at", ts, index=True)
    )
    md.create_all(engine)
    rng = random.Random(1)
    start = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)

    def when() -> dt.datetime:
        value = start + dt.timedelta(minutes=rng.randrange(0, 3 * 365 * 24 * 60))
        return value if engine.dialect.name == "postgresql" else value.replace(tzinfo=None)

    n = 40
    with engine.begin() as conn:
        conn.execute(
            accounts.insert(),
            [{"id": i, "email": f"p{i}@mail.test", "last_seen": when(), "active": True} for i in range(1, n + 1)],
        )
        conn.execute(
            visits.insert(), [{"id": i, "account_id": rng.randint(1, n), "at": when()} for i in range(1, 3 * n)]
        )
        conn.execute(logs.insert(), [{"id": i, "at": when()} for i in range(1, 2 * n)])


PACK: dict[str, Any] = {
    "pack": "fixed-cost",
    "version": "1",
    "effective_from": dt.date(2000, 1, 1),
    "timezone": "Europe/Paris",
    "batch_size": 50,
    "guard": {"max_share": 1.0},
    "datasets": {
        "accounts": {
            "table": "accounts",
            "key": "id",
            "subject_key": "id",
            "basis": "bench",
            "keep": [{"clock": {"column": "last_seen", "type": "timestamptz"}, "period": "P1Y"}],
            "lifecycle": [
                {"to": "inactive", "action": "deactivate", "set": {"active": False}},
                {"to": "purged", "after": "P2Y", "action": "delete", "basis": "bench"},
            ],
        },
        "visits": {
            "table": "visits",
            "key": "id",
            "subject_key": "account_id",
            "basis": "bench",
            "keep": [{"clock": {"column": "at", "type": "timestamptz"}, "period": "P13M"}],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
        "logs": {
            "table": "logs",
            "key": "id",
            "basis": "bench",
            "ledger": "summary",
            "keep": [{"clock": {"column": "at", "type": "timestamptz"}, "period": "P8D"}],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
    },
}


def _child(db: str, calls: int, workdir: Path) -> dict[str, float]:
    """Measured in this process (the side's source is first on sys.path): median CPU per plan and per run."""
    import sqlalchemy as sa

    from retention.engine import execute
    from retention.policy import validate_pack
    from retention.store import migrate
    from retention.store.config import create_engine

    name = f"fastcpu_fixed_cost_{os.getpid()}"
    server = SERVERS[db]
    admin = None
    if server is None:
        url = f"sqlite:///{workdir / (name + '.sqlite')}"
    else:
        admin = sa.create_engine(server, poolclass=sa.NullPool)
        with admin.connect() as conn:
            if db == "postgresql":
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
                conn.commit()
                url = f"{server}?options=-csearch_path%3D{name}"
            else:
                conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
                url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url)
        migrate.upgrade(engine)
        _shop(engine)
        loaded = validate_pack(PACK, Path("<bench>"), "bench pack")
        as_of = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)
        execute.run(engine, loaded, as_of, secret=SECRET)  # the rows settle: later runs find nothing due
        execute.plan(engine, loaded, as_of)
        execute.run(engine, loaded, as_of, secret=SECRET)
        figures: dict[str, list[float]] = {"plan": [], "run": [], "plan_sql": [], "run_sql": []}
        sent = [0]

        def count(*_: Any) -> None:
            sent[0] += 1

        sa.event.listen(engine, "before_cursor_execute", count)
        for _ in range(calls):
            start, sent[0] = time.process_time(), 0
            execute.plan(engine, loaded, as_of)
            figures["plan"].append(time.process_time() - start)
            figures["plan_sql"].append(sent[0])
            start, sent[0] = time.process_time(), 0
            execute.run(engine, loaded, as_of, secret=SECRET)
            figures["run"].append(time.process_time() - start)
            figures["run_sql"].append(sent[0])
        engine.dispose()
        return {kind: statistics.median(values) for kind, values in figures.items()}
    finally:
        if admin is not None:
            with admin.connect() as conn:
                if db == "postgresql":
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
                else:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
                conn.commit()
            admin.dispose()


def _baseline_tree(ref: str, into: Path) -> Path:
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(HERE), "archive", "-o", str(archive), ref], check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _side(source: Path, db: str, calls: int, workdir: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    out = subprocess.run(
        [sys.executable, str(HERE / "bench" / "fixed_cost.py"), "--child", db, "--calls", str(calls)],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="main", help="the git commit to compare with (default: main)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(_child(args.child, args.calls, Path(tmp))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base = _baseline_tree(args.baseline, workdir)
        print(f"{args.calls} calls per round, {args.rounds} rounds; ms CPU per call, median of the rounds' medians")
        print(
            f"| database | call | {args.baseline} | this checkout | ratio | statements, {args.baseline} -> this |\n"
            "|---|---|---:|---:|---:|---:|"
        )
        for db in args.db:
            rounds: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
            for _ in range(args.rounds):
                rounds["base"].append(_side(base, db, args.calls, workdir))
                rounds["new"].append(_side(HERE, db, args.calls, workdir))
            for kind in ("plan", "run"):
                old = statistics.median(r[kind] for r in rounds["base"])
                new = statistics.median(r[kind] for r in rounds["new"])
                sql = f"{rounds['base'][0][kind + '_sql']:.0f} -> {rounds['new'][0][kind + '_sql']:.0f}"
                print(f"| {db} | {kind} | {old * 1000:.1f} | {new * 1000:.1f} | {new / old:.3f} | {sql} |", flush=True)


if __name__ == "__main__":
    main()
