"""A long-lived process that puts rule packs through the CLI for the pack fuzzer.

Started by tests/test_policy_hostile.py. It reads one JSON request per line
on stdin (a file path and an as-of), runs ``retention check`` on it and, when the pack passes, ``retention
plan`` against a small SQLite shop whose tables match the fuzzer's base
pack, then writes one JSON line: the exit codes, whether a traceback or an
uncaught exception appeared, the CPU seconds spent and the process's peak
RSS. Measuring here, in a process that does nothing else, keeps the numbers
free of whatever the test process did before; an address-space limit keeps
a runaway input from taking the machine down with it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.store import migrate
from retention.store.config import create_engine

SHOP = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, seen_at TIMESTAMP, active BOOLEAN NOT NULL DEFAULT 1,
                        email TEXT, name TEXT, postcode TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), created_at DATE);
CREATE TABLE events (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), at TIMESTAMP);
CREATE TABLE logs (id INTEGER PRIMARY KEY, at INTEGER);
CREATE TABLE meta (id INTEGER PRIMARY KEY, log_id INTEGER, name TEXT, value TEXT);
INSERT INTO customers VALUES (1, '2015-02-28 10:00:00', 1, 'a@example.com', 'A', '75001'),
                             (2, '2024-02-29 23:30:00', 1, 'b@example.com', 'B', '69002'),
                             (3, NULL, 1, NULL, NULL, NULL), (4, '1899-12-31 00:00:00', 1, 'd@x', 'D', '1');
INSERT INTO orders VALUES (1, 1, '2012-12-31'), (2, 2, '2023-01-01'), (3, 3, '1850-06-01');
INSERT INTO events VALUES (1, 1, '2015-01-01 00:00:00'), (2, 2, '2024-01-01 00:00:00');
INSERT INTO logs VALUES (1, 1500000000), (2, 0), (3, 1900000000);
INSERT INTO meta VALUES (1, 1, 'seen', '1700000000'), (2, 1, 'seen', 'garbage'), (3, 2, 'seen', '01');
"""


def build_shop(url: str) -> None:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            for statement in SHOP.split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _limit_address_space(extra_mb: int) -> None:
    status = Path("/proc/self/status").read_text(encoding="ascii")
    size_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:"))
    limit = (size_kb + extra_mb * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _try(runner: CliRunner, args: list[str]) -> dict[str, object]:
    result = runner.invoke(main, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return {
        "exit": result.exit_code,
        "traceback": crashed or "Traceback" in result.output,
        "output": result.output[:3000],
        "exception": repr(result.exception) if crashed else None,
    }


def serve(folder: Path) -> None:
    (folder / "shop.sqlite").unlink(missing_ok=True)
    url = f"sqlite:///{folder / 'shop.sqlite'}"
    build_shop(url)
    runner = CliRunner()
    warm = folder / "warm.yaml"
    warm.write_text("pack: warm\n", encoding="utf-8")
    _try(runner, ["check", "--rules", str(warm)])
    _limit_address_space(1536)
    print(json.dumps({"ready": True, "rss_mb": _peak_rss_mb()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        path, as_of = request["path"], request["as_of"]
        started = time.process_time()
        check = _try(runner, ["check", "--rules", path])
        plan = None
        if check["exit"] == 0:
            plan = _try(runner, ["plan", "--rules", path, "--db", url, "--as-of", as_of, "--no-record"])
        report = {
            "check": check,
            "plan": plan,
            "cpu_seconds": time.process_time() - started,
            "rss_mb": _peak_rss_mb(),
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
