"""Benchmark: the CPU a new MariaDB/MySQL connection costs, the engine's against PyMySQL's own connect.

    python bench/connect_cost.py --db mysql://root@127.0.0.1/test --connections 30

PyMySQL asked for no TLS option builds a default SSL context (the system's CA store) for every connection;
the engine's connections share one per process (``MySQLDialect.new_connection``, docs/dialects.md). Both
sides open and close ``--connections`` fresh connections (no pool) in this process, in turn, three rounds;
the figures are medians of the rounds, process CPU time per connection.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retention.store.config import create_engine


def per_connection(engine: sa.Engine, n: int) -> float:
    """CPU seconds per connect + ``SELECT 1`` + close."""
    start = time.process_time()
    for _ in range(n):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="mysql://root@127.0.0.1/test")
    parser.add_argument("--connections", type=int, default=30)
    args = parser.parse_args()
    url = sa.make_url(args.db)
    if "+" not in url.drivername:
        url = url.set(drivername=f"{url.drivername}+pymysql")
    plain = sa.create_engine(url, poolclass=sa.NullPool)
    ours = create_engine(url.render_as_string(hide_password=False), poolclass=sa.NullPool)
    rounds: dict[str, list[float]] = {"PyMySQL's own connect": [], "the engine's connect": []}
    for _ in range(3):
        rounds["PyMySQL's own connect"].append(per_connection(plain, args.connections))
        rounds["the engine's connect"].append(per_connection(ours, args.connections))
    base = statistics.median(rounds["PyMySQL's own connect"])
    print(f"{args.connections} connections per round, 3 rounds, median CPU per connection")
    print("| connect | ms CPU | ratio to PyMySQL's own |\n|---|---:|---:|")
    for name, times in rounds.items():
        med = statistics.median(times)
        print(f"| {name} | {med * 1000:.2f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
