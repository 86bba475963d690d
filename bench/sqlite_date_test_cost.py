"""What a per-row date test costs SQLite: ``count(*)`` over 1M rows of its own-form text with each test.

    python bench/sqlite_date_test_cost.py [name ...]

An in-memory table of 1M ``YYYY-MM-DD HH:MM:SS`` values over 4 years
(numeric affinity, as SQLAlchemy's ``DateTime`` declares), each ``WHERE``
timed as process CPU, median of 5. Used to choose the due predicate's
validity test (``datetime(v, '+0 days') = v``, retention/timing/datetext.py)
over a GLOB-and-``substr`` pre-test (bench/RESULTS.md, branch sqlitedate).
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import statistics
import sys
import time

GLOB = "[1-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9]"
GLOB_HOURS_0_19 = "[1-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] [01][0-9]:[0-5][0-9]:[0-5][0-9]"
GLOB_HOURS_20_23 = "[1-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9] 2[0-3]:[0-5][0-9]:[0-5][0-9]"
MONTH_DAY = "substr(v,6,2) BETWEEN '01' AND '12' AND substr(v,9,2) BETWEEN '01' AND '28'"
TESTS = {
    "length": "length(v) = 19",
    "substr": "substr(v,6,2) <= '12'",
    "bytes": "length(CAST(v AS BLOB)) = 19",
    "datetime": "datetime(v, '+0 days') = v",
    "glob": f"v GLOB '{GLOB}'",
    "pretest": f"length(CAST(v AS BLOB)) = 19 AND v GLOB '{GLOB}' AND {MONTH_DAY} AND substr(v,12,2) <= '23'",
    "pretest2": (
        f"length(CAST(v AS BLOB)) = 19 AND (v GLOB '{GLOB_HOURS_0_19}' OR v GLOB '{GLOB_HOURS_20_23}') AND {MONTH_DAY}"
    ),
}


def main() -> None:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v DATETIME)")
    base = dt.datetime(2021, 1, 1)  # noqa: DTZ001 - stored text, no zone
    rng = random.Random(1)
    rows = (
        ((base + dt.timedelta(seconds=rng.randrange(4 * 365 * 86400))).strftime("%Y-%m-%d %H:%M:%S"),)
        for _ in range(1_000_000)
    )
    con.executemany("INSERT INTO t (v) VALUES (?)", rows)
    con.commit()
    for name, condition in TESTS.items():
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        spent = []
        for _ in range(5):
            began = time.process_time()
            found = con.execute(f"SELECT count(*) FROM t WHERE {condition}").fetchone()[0]
            spent.append(time.process_time() - began)
        print(f"{name:10s} {found:>8d} rows  median CPU {statistics.median(spent):.3f} s per 1M rows")


if __name__ == "__main__":
    main()
