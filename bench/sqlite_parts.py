"""What a SQLite audited purge record and a plan cost, part by part (process CPU, medians, one process).

    python bench/sqlite_parts.py [--rows 1000000] [--repeat 5]

Three tables, each printed as Markdown:

1. **The block statement's parts.** The engine's own block statement
   (``INSERT INTO retention_ledger_blocks ... SELECT ... retention_keyed_block(...)``)
   is captured from a small run, with the run's day table, then its
   ``SELECT`` is rerun over one key range of a table of ``--rows`` rows,
   growing part by part: the range scan, the record and subject texts, the
   due instant (normal form and day join), the Python aggregate.
2. **The aggregate's alternatives.** The same rows through
   ``retention_keyed_block`` as it is and through ways of making the same
   bytes that were proposed instead (``hmac.digest`` one-shot, values
   collected in ``step`` and hashed in ``finalize``, ``_hashlib``'s C HMAC
   object copied per row), and the floor of any Python aggregate (a ``step``
   that only counts, with and without the three constant arguments). Each
   variant's block is checked equal to the real one's.
3. **Plan's statements.** ``execute.plan`` on the same table, each statement's
   wall time, against the raw count the bench compares it with.
4. **Plan's floor.** Whole-table counts with each per-row test plan could
   use, against that raw count (process CPU).

Part 2 also times sqlean.py's C ``sha256()`` making the same block in SQL
where that package is importable (it is not a dependency; install it in a
scratch virtualenv to see it).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench  # noqa: E402
from retention import logs  # noqa: E402
from retention.dialects import sqlite as lite  # noqa: E402
from retention.dialects.item_sql import hmac_pads  # noqa: E402
from retention.store import migrate  # noqa: E402
from retention.store.config import create_engine  # noqa: E402

NONE = bytes(32)


def _text(value: Any) -> bytes:
    return value.encode() if type(value) is str else str(value).encode()


class OneShot(lite._KeyedBlock):
    """``hmac.digest`` (OpenSSL's one-shot HMAC in C) per pseudonym instead of copied hash states."""

    def step(self, key: bytes, rp: bytes, sp: bytes, record: Any, subject: Any, due: Any) -> None:
        if record is None or due is None:
            return
        item = hmac.digest(key, rp + _text(record), "sha256")
        item += NONE if subject is None else hmac.digest(key, sp + _text(subject), "sha256")
        self.items.append(item + (due.encode("ascii") if type(due) is str else due))


class Collected:
    """``step`` keeps the row's values; ``finalize`` hashes them in one loop (copied states, bound methods)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, Any, Any]] = []
        self.constants: tuple[bytes, bytes, bytes] | None = None

    def step(self, key: bytes, rp: bytes, sp: bytes, record: Any, subject: Any, due: Any) -> None:
        if record is None or due is None:
            return
        if self.constants is None:
            self.constants = (key, rp, sp)
        self.rows.append((record, subject, due))

    def finalize(self) -> bytes | None:
        if self.constants is None:
            return None
        key, rp, sp = self.constants
        ri, ro = lite._hmac_pads(key, rp)
        si, so = lite._hmac_pads(key, sp)
        ric, roc, sic, soc = ri.copy, ro.copy, si.copy, so.copy
        items = []
        for record, subject, due in self.rows:
            inner = ric()
            inner.update(_text(record))
            outer = roc()
            outer.update(inner.digest())
            second = NONE
            if subject is not None:
                inner = sic()
                inner.update(_text(subject))
                other = soc()
                other.update(inner.digest())
                second = other.digest()
            items.append(outer.digest() + second + (due.encode("ascii") if type(due) is str else due))
        items.sort()
        return b"".join(items)


class HmacCopies(lite._KeyedBlock):
    """A C HMAC object per prefix (``hmac.new(...)._hmac``, OpenSSL's HMAC_CTX) copied per row."""

    def step(self, key: bytes, rp: bytes, sp: bytes, record: Any, subject: Any, due: Any) -> None:
        if record is None or due is None:
            return
        if self.pads is None:
            self.pads = (hmac.new(key, rp, "sha256")._hmac, hmac.new(key, sp, "sha256")._hmac, None, None)  # type: ignore[attr-defined]
        r, s = self.pads[0].copy(), self.pads[1].copy()
        r.update(_text(record))
        item = r.digest()
        if subject is None:
            item += NONE
        else:
            s.update(_text(subject))
            item += s.digest()
        self.items.append(item + (due.encode("ascii") if type(due) is str else due))


class Joined:
    """Items made in SQL: the aggregate only keeps, sorts and joins them."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def step(self, item: bytes) -> None:
        self.items.append(item)

    def finalize(self) -> bytes:
        self.items.sort()
        return b"".join(self.items)


class CountSix:
    """The floor of a Python aggregate called with the engine's six arguments: a count."""

    def __init__(self) -> None:
        self.n = 0

    def step(self, key: Any, rp: Any, sp: Any, record: Any, subject: Any, due: Any) -> None:
        self.n += 1

    def finalize(self) -> int:
        return self.n


class CountThree(CountSix):
    """The same floor without the three constant arguments (key and prefixes)."""

    def step(self, record: Any, subject: Any, due: Any) -> None:  # type: ignore[override]
        self.n += 1


def cpu_median(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.process_time()
        run()
        times.append(time.process_time() - began)
    return statistics.median(times)


def capture(folder: str) -> dict[str, Any]:
    """The engine's block statement, its parameters and its day table, from a 20,000-row purge."""
    engine = create_engine(f"sqlite:///{folder}/capture.sqlite?journal_mode=wal")
    migrate.upgrade(engine)
    bench.generate(engine, 20_000, 1)
    bench.reset_engine_tables(engine)
    found: dict[str, Any] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if statement.startswith("INSERT INTO retention_ledger_blocks") and "sql" not in found:
            raw = cursor.connection
            found["sql"], found["parameters"] = statement, list(parameters)
            found["days"] = raw.execute("SELECT * FROM retention_due_days").fetchall()
            ddl = "SELECT sql FROM sqlite_temp_master WHERE name = 'retention_due_days'"
            found["ddl"] = raw.execute(ddl).fetchone()[0]

    bench.engine_run(engine, "delete", 5000)
    engine.dispose()
    return found


def block_parts(con: sqlite3.Connection, found: dict[str, Any], repeat: int) -> tuple[list[tuple[str, float]], Any]:
    sql = found["sql"]
    parameters = [bytes(p) if isinstance(p, memoryview) else p for p in found["parameters"]]
    select = sql[sql.index("SELECT ? AS anon_1") : sql.index("\nHAVING")]
    last = con.execute("SELECT max(id) FROM bench_events WHERE collected_at < '2024-11-01'").fetchone()[0]
    parameters[-2] = last  # the range's greatest key: every row of the range due
    inner = select[select.index("FROM (") + 6 : select.rindex(") AS r ")]
    inner_parameters = parameters[4:-1]
    casts = inner[: inner.index(", CASE WHEN (retention_due_days.s2")] + " FROM bench_events WHERE bench_events.id <= ?"
    n = con.execute("SELECT count(*) FROM bench_events WHERE id <= ?", (last,)).fetchone()[0]
    steps = [
        ("scan of the key range, count(*)", "SELECT count(*) FROM bench_events WHERE id <= ?", [last]),
        (
            "+ record and subject texts (CASTs)",
            f"SELECT count(rec), count(subj) FROM ({casts})",
            [*inner_parameters[: casts.count("?") - 1], last],
        ),
        (
            "+ due instant (normal form, day join, CASE)",
            f"SELECT count(rec), count(subj), count(due) FROM ({inner})",
            inner_parameters,
        ),
        ("+ the Python aggregate (two HMACs a row, sort): the block's SELECT", select, parameters[:-1]),
    ]
    rows = []
    for name, query, bound in steps:
        seconds = cpu_median(lambda q=query, b=bound: con.execute(q, b).fetchall(), repeat)
        rows.append((name, seconds / n * 1e6))
    block = con.execute(select, parameters[:-1]).fetchone()[2]
    return rows, (select, parameters[:-1], n, block)


def aggregate_variants(con: sqlite3.Connection, statement: Any, repeat: int) -> list[tuple[str, float, str]]:
    select, parameters, n, block = statement
    variants: list[tuple[str, Any, int]] = [
        ("retention_keyed_block as it is (copied hash states in step)", lite._KeyedBlock, 6),
        ("hmac.digest one-shot per pseudonym", OneShot, 6),
        ("values collected in step, hashed in finalize", Collected, 6),
        ("C HMAC objects copied per row", HmacCopies, 6),
        ("floor: a step that only counts, six arguments", CountSix, 6),
        ("floor: a step that only counts, without the 3 constants", CountThree, 3),
    ]
    out = []
    for name, cls, arity in variants:
        con.create_aggregate("retention_keyed_block", 6, cls)
        query = select
        if arity == 3:
            con.create_aggregate("count_three", 3, cls)
            query = select.replace("retention_keyed_block(?, ?, ?, ", "count_three(")
        bound = parameters if arity == 6 else [parameters[0], *parameters[4:]]
        seconds = cpu_median(lambda q=query, b=bound: con.execute(q, b).fetchall(), repeat)
        made = con.execute(query, bound).fetchone()[2]
        same = "same bytes" if made == block else ("-" if isinstance(made, int) else "DIFFERENT")
        out.append((name, seconds / n * 1e6, same))
    con.create_aggregate("retention_keyed_block", 6, lite._KeyedBlock)
    return out


def sqlean_block(rows: int, repeat: int) -> list[tuple[str, float, str]]:
    """The same items with sqlean.py's C sha256() (HMAC = sha256(opad || sha256(ipad || message)))."""
    try:
        import sqlean  # type: ignore[import-not-found]
    except ImportError:
        return []
    sqlean.extensions.enable("crypto")
    key, rp, sp = b"k" * 32, b"record:bench_events:", b"subject:bench_events:"
    data = [(i, (i * 7919) % 100000, "2025-01-01T00:00:00.000000Z") for i in range(1, rows + 1)]
    ipad, opad = hmac_pads(key)
    out = []
    blocks = []
    for module, label in ((sqlite3, "stdlib sqlite3"), (sqlean, "sqlean.py")):
        con = module.connect(":memory:")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, subj INT, due TEXT)")
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", data)
        con.create_aggregate("kb", 6, lite._KeyedBlock)
        query = "SELECT kb(?, ?, ?, CAST(id AS VARCHAR), CAST(subj AS VARCHAR), due) FROM t"
        seconds = cpu_median(lambda c=con, q=query: c.execute(q, (key, rp, sp)).fetchone(), repeat)
        blocks.append(con.execute(query, (key, rp, sp)).fetchone()[0])
        out.append((f"{label} {module.sqlite_version}: the Python aggregate", seconds / rows * 1e6, "reference"))
    mac = "sha256(:o || sha256(:i || {p} || CAST({c} AS VARCHAR)))"
    item = f"CAST({mac.format(p=':rp', c='id')} || {mac.format(p=':sp', c='subj')} || due AS BLOB)"
    named = {"o": opad, "i": ipad, "rp": rp, "sp": sp}
    queries = {
        "sqlean.py: both HMACs by sha256() in SQL, counted": f"SELECT count({item}) FROM t",
        "sqlean.py: items by sha256() in SQL, sorted and joined by a Python aggregate": (
            f"SELECT joined({item}) FROM t"
        ),
        "sqlean.py: the whole block in SQL (group_concat ORDER BY)": (
            f"SELECT CAST(group_concat(item, '' ORDER BY item) AS BLOB) FROM (SELECT {item} AS item FROM t)"
        ),
    }
    lean = con  # the last connection made: sqlean.py's
    lean.create_aggregate("joined", 1, Joined)
    for name, query in queries.items():
        seconds = cpu_median(lambda q=query: lean.execute(q, named).fetchone(), repeat)
        made = lean.execute(query, named).fetchone()[0]
        same = "-" if isinstance(made, int) else ("same bytes" if made == blocks[0] else "DIFFERENT")
        out.append((name, seconds / rows * 1e6, same))
    return out


def plan_statements(engine: sa.Engine, repeat: int) -> tuple[list[tuple[float, float]], list[tuple[str, float]]]:
    spent: dict[str, float] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info["began"] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        text = " ".join(statement.split())
        name = (
            "odd rows (one datetime() a row over the table), due count, min, max" if "odd_rows" in text else text[:60]
        )
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - conn.info["began"]

    pairs = []
    for _ in range(repeat):
        spent.clear()
        began = time.perf_counter()
        bench.raw_count(engine)
        raw = time.perf_counter() - began
        began = time.perf_counter()
        bench.engine_plan(engine, 5000)
        pairs.append((raw, time.perf_counter() - began))
    return pairs, sorted(spent.items(), key=lambda kv: -kv[1])[:4]


PLAN_FLOOR = {
    "raw count of the due rows (the bench's baseline)": "SELECT count(*) FROM bench_events WHERE collected_at < ?",
    "count(*) of the whole table": "SELECT count(*) FROM bench_events",
    "every value read: count(collected_at)": "SELECT count(collected_at) FROM bench_events",
    "length(v) <> 19": "SELECT count(*) FROM bench_events WHERE length(collected_at) <> 19",
    "NOT v GLOB (SQLite's own form's shape)": (
        "SELECT count(*) FROM bench_events WHERE NOT collected_at GLOB "
        "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]'"
    ),
    "datetime(v, '+0 days') = v is false (plan's odd rows)": (
        "SELECT count(*) FROM bench_events WHERE coalesce(datetime(collected_at, '+0 days') = collected_at, 0) = 0"
    ),
    "datetime(v) = v is false (no modifier: not exact)": (
        "SELECT count(*) FROM bench_events WHERE coalesce(datetime(collected_at) = collected_at, 0) = 0"
    ),
}
"""Whole-table tests against the raw count: what any exact per-row validity test in plan costs at least."""


def plan_floor(con: sqlite3.Connection, repeat: int) -> list[tuple[str, float]]:
    cutoff = bench.CUTOFF.strftime("%Y-%m-%d %H:%M:%S")  # bench.raw_count's
    out = []
    for name, query in PLAN_FLOOR.items():
        bound = (cutoff,) if "?" in query else ()
        out.append((name, cpu_median(lambda q=query, b=bound: con.execute(q, b).fetchone(), repeat)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logs.configure(level="warning")
    with tempfile.TemporaryDirectory() as folder:
        found = capture(folder)
        engine = create_engine(f"sqlite:///{folder}/big.sqlite?journal_mode=wal")
        migrate.upgrade(engine)
        bench.generate(engine, args.rows, 1)
        bench.reset_engine_tables(engine)
        con = sqlite3.connect(f"{folder}/big.sqlite")
        con.execute("PRAGMA cache_size=-65536")
        con.execute(found["ddl"].replace("CREATE TABLE", "CREATE TEMPORARY TABLE"))
        marks = ",".join("?" * len(found["days"][0]))
        con.executemany(f"INSERT INTO retention_due_days VALUES ({marks})", found["days"])
        con.create_aggregate("retention_keyed_block", 6, lite._KeyedBlock)
        parts, statement = block_parts(con, found, args.repeat)
        print(f"1. The block statement's SELECT over {statement[2]:,} due rows of {args.rows:,}, CPU µs a row")
        print("\n| part | cumulative µs a row | the part |\n|---|---:|---:|")
        previous = 0.0
        for name, micros in parts:
            print(f"| {name} | {micros:.2f} | {micros - previous:+.2f} |")
            previous = micros
        variants = aggregate_variants(con, statement, args.repeat) + sqlean_block(200_000, args.repeat)
        floor = plan_floor(con, args.repeat)
        con.close()
        print("\n2. The aggregate, and ways of making the same bytes, CPU µs a row\n")
        print("| variant | µs a row | block |\n|---|---:|---|")
        for name, micros, same in variants:
            print(f"| {name} | {micros:.2f} | {same} |")
        pairs, top = plan_statements(engine, args.repeat)
        engine.dispose()
    raw, plan = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    print(f"\n3. Plan: raw count {raw:.3f} s, plan {plan:.3f} s ({plan / raw:.1f}x), medians; last run's statements\n")
    print("| statement | s |\n|---|---:|")
    for name, seconds in top:
        print(f"| {name} | {seconds:.3f} |")
    print("\n4. Plan's floor: whole-table tests, CPU ms (median), and against the raw count\n")
    print("| count | ms | vs raw count |\n|---|---:|---:|")
    for name, seconds in floor:
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / floor[0][1]:.1f}x |")
    print(f"\n(hashlib: {hashlib.sha256().name} from OpenSSL {__import__('ssl').OPENSSL_VERSION})")


if __name__ == "__main__":
    main()
