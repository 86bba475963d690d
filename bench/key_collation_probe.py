"""MariaDB: the state probe per source row with the engine's key columns PAD SPACE (``utf8mb4_bin``, migration
0020_keycase) against NO PAD (``utf8mb4_nopad_bin``, 0021_keypad), alternated in one process.

The probe is what a set-based batch runs per row (``NOT EXISTS`` a state whose key equals ``key_text`` of the
source's key, an ``eq_ref`` on the states' primary key): an integer key (``CAST(id + 0 AS CHAR)``) and a
``_ci`` text key, 1M source rows, 100k states, each collated as the engine compares it. Prints medians and
ratios NO PAD / PAD.

    python bench/key_collation_probe.py --db mysql://root@127.0.0.1/bench_keys2 --repeat 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import sqlalchemy as sa

SETUP = [
    "DROP TABLE IF EXISTS kc_src, kc_pad, kc_nopad",
    "CREATE TABLE kc_src (id INT PRIMARY KEY, t VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci)",
    "INSERT INTO kc_src SELECT seq, CONCAT('k', seq) FROM seq_1_to_{rows}",
    *(
        f"CREATE TABLE kc_{name} (dataset VARCHAR(100), k VARCHAR(191) CHARACTER SET utf8mb4 COLLATE {collation}, "
        "PRIMARY KEY (dataset, k))"
        for name, collation in (("pad", "utf8mb4_bin"), ("nopad", "utf8mb4_nopad_bin"))
    ),
    "INSERT INTO kc_pad SELECT 'd', CAST(seq * 10 AS CHAR) FROM seq_1_to_{states}",
    "INSERT INTO kc_nopad SELECT 'd', CAST(seq * 10 AS CHAR) FROM seq_1_to_{states}",
    "ANALYZE TABLE kc_src, kc_pad, kc_nopad",
]
KEYS = {"int": "CAST(kc_src.id + 0 AS CHAR)", "text": "CAST(kc_src.t AS CHAR)"}
COLLATIONS = {"pad": "utf8mb4_bin", "nopad": "utf8mb4_nopad_bin"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = sa.make_url(args.db).set(drivername="mysql+pymysql")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in SETUP:
            conn.exec_driver_sql(statement.format(rows=args.rows, states=args.rows // 10)).close()
    queries = {
        (key, name): (
            f"SELECT COUNT(*) FROM kc_src WHERE NOT EXISTS (SELECT 1 FROM kc_{name} s "
            f"WHERE s.dataset = 'd' AND s.k = {expression} COLLATE {collation})"
        )
        for key, expression in KEYS.items()
        for name, collation in COLLATIONS.items()
    }
    times: dict[tuple[str, str], list[float]] = {q: [] for q in queries}
    left: dict[tuple[str, str], int] = {}
    with engine.connect() as conn:
        for rep in range(args.repeat):
            order = list(queries) if rep % 2 == 0 else list(reversed(queries))
            for q in order:
                start = time.perf_counter()
                left[q] = conn.exec_driver_sql(queries[q]).scalar_one()
                times[q].append(time.perf_counter() - start)
    print("| key | collation | rows left | median s | min s | NO PAD / PAD (median) |")
    print("|---|---|---:|---:|---:|---:|")
    for key, name in queries:
        median = statistics.median(times[(key, name)])
        ratio = median / statistics.median(times[(key, "pad")])
        print(
            f"| {key} | {COLLATIONS[name]} | {left[(key, name)]:,} | {median:.3f} | {min(times[(key, name)]):.3f} "
            f"| {ratio:.2f} |"
        )
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE kc_src, kc_pad, kc_nopad")


if __name__ == "__main__":
    main()
