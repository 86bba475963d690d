"""Two fixed costs of the test suite, each beside what replaced it, alternated in one process.

1. The engine's tables in a test database that already holds an application
   table: the migrations (what tests/test_plan_readonly.py, test_notice.py and
   test_reference_packs.py ran) against a copy of the session's migrated
   template (tests/db_templates.upgrade, which now copies there too on
   PostgreSQL and MariaDB).
2. One example of tests/test_evaluate_property.py's oracle: 25 records read
   one query a key (``DatasetSQL.readings``) against one query for all
   (``readings_many``) and one key alone. Measured, not adopted: the test
   keeps one read a key, because that read is explain's and the property
   test is what compares it with the oracle on every odd stored form (a
   review found a misread form caught by 7 slow-tier tests with a read a
   key and by 1 with the batched read).

Uses the suite's own database fixtures (tests/conftest.py) and servers::

    .venv/bin/python -m bench.suite_setup_costs [--migrations 5] [--examples 60]

Prints the median of each variant and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import db_templates
import sqlalchemy as sa
import test_evaluate_property as tep
from conftest import isolated_database

from retention.engine.evaluate import DatasetSQL, dataset_sql
from retention.store import migrate
from retention.store.config import create_engine

AS_OF = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
TMP = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")


def _app_table(engine: sa.Engine) -> None:
    md = sa.MetaData()
    sa.Table("ro_customers", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("email", sa.String(100)))
    md.create_all(engine)


def _timed_upgrade(dialect: str, upgrade: Callable[[sa.Engine], None]) -> float:
    with isolated_database(dialect, TMP) as url:
        engine = create_engine(url)
        try:
            _app_table(engine)
            start = time.perf_counter()
            upgrade(engine)
            spent = time.perf_counter() - start
            assert migrate.current_revision(engine) == migrate.head_revision()
        finally:
            engine.dispose()
    return spent


def migrations_vs_copy(rounds: int) -> None:
    print("| beside an application table | rounds | migrations (median s) | template copy (median s) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for dialect in ("postgresql", "mariadb"):
        db_templates._template(dialect, isolated_database)  # built once per session, as in the suite
        migrations, copies = [], []
        for _ in range(rounds):
            migrations.append(_timed_upgrade(dialect, migrate.upgrade))
            copies.append(_timed_upgrade(dialect, lambda engine: db_templates.upgrade(engine, isolated_database)))
        m, c = statistics.median(migrations), statistics.median(copies)
        print(f"| {dialect} | {rounds} | {m:.2f} | {c:.2f} | {c / m:.2f} |", flush=True)


def _read_each(conn: sa.Connection, ds: DatasetSQL, keys: list[int]) -> None:
    for key in keys:
        ds.readings(conn, key, AS_OF)


def _read_all(conn: sa.Connection, ds: DatasetSQL, keys: list[int]) -> None:
    ds.readings_many(conn, keys, AS_OF)
    ds.readings(conn, keys[len(keys) // 2], AS_OF)


def readings_per_key_vs_batched(examples: int) -> None:
    print(
        "| 25 records an example | examples | one query a key (median ms) | one query + one key (median ms) | ratio |"
    )
    print("|---|---:|---:|---:|---:|")
    for dialect in ("sqlite", "postgresql", "mariadb"):
        with isolated_database(dialect, TMP) as url:
            engine = create_engine(url)
            table = tep._records_table("timestamp_utc")
            table.create(engine)
            pack = tep._pack([tep.KINDS["timestamp_utc"][1]], [("P13M", "event")])
            keys = list(range(1, 26))
            with engine.begin() as conn:
                rows = [{"id": k, "clock": f"2020-01-{k:02d} 10:00:00"} for k in keys]
                tep._insert(conn, "records", {"clock": "timestamp_utc"}, rows)  # as the test stores its values
            each, batched = [], []
            with engine.connect() as conn:
                ds = dataset_sql(conn, pack, "records")
                for _ in range(examples):
                    for read, times in ((_read_each, each), (_read_all, batched)):
                        start = time.perf_counter()
                        read(conn, ds, keys)
                        times.append(time.perf_counter() - start)
            engine.dispose()
        a, b = statistics.median(each) * 1000, statistics.median(batched) * 1000
        print(f"| {dialect} | {examples} | {a:.1f} | {b:.1f} | {b / a:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=5, help="rounds of migrations vs copy per database")
    parser.add_argument("--examples", type=int, default=60, help="oracle examples per database")
    args = parser.parse_args()
    try:
        migrations_vs_copy(args.migrations)
        print()
        readings_per_key_vs_batched(args.examples)
    finally:
        db_templates.close()


if __name__ == "__main__":
    main()
