"""Fault injection: whatever happens during a run, the rerun ends exactly where an unfaulted run ends (issue 11).

For each database, a golden run is an unfaulted ``retention run`` of the
scenario (tests/faults/scenario.py) at a fixed as-of on a fresh copy. Each
test injects one fault into a run on another fresh copy, reruns with the
same as-of until a run succeeds, and compares with the golden run: source
tables, record states, archive payloads, every per-record ledger move, and
HMAC(deleted keys) == the ledger's pseudonyms. Zero differences allowed; a
difference fails the test with a table of what differs. The fault points are
drawn from seeded generators, so a failure replays.

Faulted runs are processes of their own (a SIGKILL must kill a whole
process), forked by tests/faults/runner.py, which imports the CLI once per
session instead of once per run; the fault is armed by SQLAlchemy engine
events in that process, at a statement or transaction number drawn from the
golden run's own counts. Reruns go through the CLI in-process. Right after
each fault, before any rerun, the ledger must already match the rows gone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import isolated_database, migrate_isolated, tiers
from engine_events import on_database
from sqlalchemy.engine import make_url

from faults import report, scenario
from retention.cli import main
from retention.store import tables as store
from retention.store.config import create_engine

pytestmark = pytest.mark.faults

RUNNER = Path(__file__).with_name("runner.py")
ENV = {"RETENTION_PSEUDONYM_KEY": scenario.SECRET}


@dataclass
class Golden:
    snapshot: dict[str, Any]
    statements: int  # statements of the golden run
    begins: int  # transactions it began
    idle: int  # statements of a run that finds nothing to do (the fixed cost of any run)
    growth_pages: int  # SQLite: pages the golden run added to the file


_golden: dict[str, Golden] = {}
_names = iter(range(10**6))


def prepare(url: str) -> sa.Engine:
    """The engine's tables and the scenario's rows on a fresh database."""
    engine = create_engine(url)
    migrate_isolated(engine)
    scenario.build(engine)
    return engine


def run_args(url: str, pack: Path, *extra: str) -> list[str]:
    return ["--log-format", "json", "run", "--rules", str(pack), "--db", url, "--as-of", scenario.AS_OF, *extra]


class Zygote:
    """runner.py --serve: forks each faulted run from one interpreter that imported the CLI once."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, args: list[str], env: dict[str, str], directory: Path) -> subprocess.CompletedProcess[str]:
        out, err = directory / f"run-{next(_names)}.out", directory / f"run-{next(_names)}.err"
        request = {"args": args, "env": env, "stdout": str(out), "stderr": str(err)}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, "the fault runner died"
        code = json.loads(answer)["exit"]
        return subprocess.CompletedProcess(args, code, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    runner = Zygote()
    yield runner
    runner.close()


def faulted_run(
    zygote: Zygote, url: str, pack: Path, fault: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    """A `retention run` in a process of its own with ``fault`` injected (see runner.py)."""
    env = {**os.environ, **ENV, "RETENTION_FAULT": json.dumps(fault)}
    return zygote.run(run_args(url, pack, *extra), env, pack.parent)


def rerun_until_success(url: str, pack: Path, attempts: int = 3) -> list[int]:
    """Rerun (in-process CLI, same as-of) until a run exits 0; returns every exit code."""
    codes = []
    for _ in range(attempts):
        result = CliRunner().invoke(main, run_args(url, pack), env=ENV, prog_name="retention")
        codes.append(result.exit_code)
        assert "Traceback" not in result.output, result.output
        if result.exit_code == 0:
            return codes
    raise AssertionError(f"no rerun succeeded: exit codes {codes}")


def counted_run(url: str, pack: Path) -> dict[str, int]:
    """An unfaulted run (in-process CLI) that counts its statements and transactions as runner.py does."""
    counts = {"statements": 0, "begins": 0}

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def begin(*_: Any) -> None:
        counts["begins"] += 1

    # Only the run's database: the suite's background thread prepares the next tests' databases meanwhile, and
    # its statements, counted, moved the kill points drawn from these counts (engine_events.py).
    with on_database(url, "before_cursor_execute", statement), on_database(url, "begin", begin):
        result = CliRunner().invoke(main, run_args(url, pack), env=ENV, prog_name="retention")
    assert result.exit_code == 0, result.output[-3000:]
    return counts


def one_line_errors(stderr: str) -> list[str]:
    """The `command_failed` events of a run with JSON logs; a traceback fails the test."""
    assert "Traceback" not in stderr, stderr[-3000:]
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith('{"')]
    return [e["error"] for e in events if e.get("event") == "command_failed"]


def sqlite_pages(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    return scenario.write_pack(tmp_path)


@pytest.fixture
def golden(dialect: str, tmp_path_factory: pytest.TempPathFactory) -> Golden:
    """The unfaulted run on this database, made once per session on a database of its own."""
    if dialect not in _golden:
        directory = tmp_path_factory.mktemp(f"golden-{dialect}")
        pack = scenario.write_pack(directory)
        with isolated_database(dialect, directory) as url:
            engine = prepare(url)
            try:
                before = sqlite_pages(url) if dialect == "sqlite" else 0
                counts = counted_run(url, pack)
                growth = sqlite_pages(url) - before if dialect == "sqlite" else 0
                snap = scenario.snapshot(engine)
                mismatches = scenario.pseudonym_mismatches(engine)
                assert not mismatches, scenario.format_differences("golden run", mismatches)
                idle_statements = counted_run(url, pack)["statements"]
            finally:
                engine.dispose()
        transitions = {(m[0], m[2]) for m in snap["ledger moves"]}
        # The scenario must exercise every kind of move, or the suite proves less than it says.
        assert transitions >= {
            ("customers", "active->inactive"),
            ("customers", "inactive->archived"),
            ("customers", "archived->purged"),
            ("orders", "active->purged"),
            ("events", "active->purged"),
        }, transitions
        assert counts["begins"] > 60, counts  # many batches, so that faults land inside the work
        _golden[dialect] = Golden(snap, counts["statements"], counts["begins"], idle_statements, growth)
    return _golden[dialect]


def assert_stopped_mid_run(engine: sa.Engine, golden: Golden) -> None:
    """The fault landed inside the work: some records moved (their batches committed), not all."""
    with engine.connect() as conn:
        items = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
    assert 0 < items < sum(golden.snapshot["ledger moves"].values()), items


def assert_ledger_matches_rows(engine: sa.Engine, when: str) -> None:
    """Right after a fault: each row gone has exactly one entry, and no entry names a row still there."""
    mismatches = scenario.pseudonym_mismatches(engine)
    assert not mismatches, scenario.format_differences(when, mismatches)


def compare(fault: str, dialect: str, engine: sa.Engine, golden: Golden) -> None:
    """Zero differences from the golden run, and HMAC(deleted keys) == ledger pseudonyms; else a table."""
    diffs = scenario.differences(golden.snapshot, scenario.snapshot(engine))
    diffs += scenario.pseudonym_mismatches(engine)
    report.record(fault, dialect, f"{len(diffs)} differences")
    assert not diffs, scenario.format_differences(f"{fault} on {dialect}", diffs)


# The fast tier kills one run (after a write, inside its transaction); the slow tier kills three in a
# row, each kill a faulted process and a rerun comparison (the full fault matrix).
@pytest.mark.parametrize("kills", tiers(1, 3))
def test_sigkill_at_random_statements(
    zygote: Zygote, dialect: str, db_url: str, pack: Path, golden: Golden, tmp_path: Path, kills: int
) -> None:
    """Runs in a row SIGKILLed at seeded random statements (mid-batch or between batches), then a rerun."""
    engine = prepare(db_url)
    rng = random.Random(f"sigkill-{dialect}")
    work = golden.statements - golden.idle
    # The same three seeded points in both tiers; one kill takes the latest, so that batches committed before it.
    points = sorted(rng.uniform(0.05, 0.85) * work for _ in range(3))[-kills:]
    done = 0.0
    sites: list[dict[str, Any]] = []
    for number, point in enumerate(points):
        at = golden.idle + max(1, int(point - done))
        site = tmp_path / f"kill-{at}.json"
        fault: dict[str, Any] = {"kind": "kill", "at": at, "out": str(site)}
        if number == len(points) - 1:
            # The last kill waits for a statement inside a transaction that has written, so that
            # at least one kill tests the rollback whatever the statement mix of this version.
            fault["after_write"] = True
        killed = faulted_run(zygote, db_url, pack, fault)
        assert killed.returncode == -signal.SIGKILL, f"not killed at statement {at}: {killed.stderr[-2000:]}"
        sites.append(json.loads(site.read_text()))
        assert_ledger_matches_rows(engine, f"after the SIGKILL at statement {at}")
        done = point
    # At least one kill struck inside a transaction that had written already: the rollback matters.
    assert any(s["in_transaction"] and s["after_a_write"] for s in sites), sites
    assert_stopped_mid_run(engine, golden)
    rerun_until_success(db_url, pack)
    compare("SIGKILL at random statements", dialect, engine, golden)
    engine.dispose()


@pytest.mark.only_on("postgresql", "mariadb")
@pytest.mark.parametrize("terminations", tiers(1, 2))  # fast tier: one; slow tier: two in a row
def test_work_session_terminated(
    zygote: Zygote, dialect: str, db_url: str, pack: Path, golden: Golden, terminations: int
) -> None:
    """Another session terminates the run's session (which also holds its lock), at seeded statements."""
    engine = prepare(db_url)
    rng = random.Random(f"terminate-{dialect}")
    work = golden.statements - golden.idle
    points = sorted(rng.uniform(0.05, 0.85) * work for _ in range(2))[-terminations:]
    done = 0.0
    for point in points:
        at = golden.idle + max(1, int(point - done))
        lost = faulted_run(zygote, db_url, pack, {"kind": "terminate", "at": at, "admin": db_url})
        assert lost.returncode == 1, lost.stderr[-2000:]
        assert len(one_line_errors(lost.stderr)) == 1
        assert_ledger_matches_rows(engine, f"after the session was terminated at statement {at}")
        done = point
    assert_stopped_mid_run(engine, golden)
    rerun_until_success(db_url, pack)
    compare("work session terminated", dialect, engine, golden)
    engine.dispose()


@contextmanager
def small_disk(directory: Path, size: int) -> Iterator[tuple[Path, Any]]:
    """A tmpfs of ``size`` bytes where the machine lets us mount one, else None (then max_page_count)."""
    mount = directory / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0 or os.environ.get("RETENTION_FAULTS_NO_TMPFS"):
        yield mount, None
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        yield mount, None
        return

    def grow(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(mount)], check=True, capture_output=True)

    try:
        yield mount, grow
    finally:
        with suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(mount)], check=True, capture_output=True)


@pytest.mark.only_on("sqlite")
def test_disk_full(zygote: Zygote, dialect: str, db_url: str, pack: Path, golden: Golden, tmp_path: Path) -> None:
    """The disk fills up mid-run and is still full at the next run (exit 1, one line each); with space, a rerun.

    A small tmpfs holds the database where the machine allows mounting one
    (it then really runs out of space); elsewhere SQLite's max_page_count
    caps the file.
    """
    built = prepare(db_url)
    built.dispose()
    source = Path(make_url(db_url).database or "")
    pages = sqlite_pages(db_url)
    page_size = 4096
    rng = random.Random(f"disk-{dialect}")
    # At least 30 % of the golden run's growth: with 0017's smaller item indexes the whole run grows the file by
    # fewer pages (48 against 65) while its first batch changes about as many, and 20 % no longer held one batch.
    slack = max(2, int(golden.growth_pages * rng.uniform(0.3, 0.6)))
    size = (pages + slack) * page_size + source.stat().st_size % page_size
    # A tmpfs holds the rollback journal too, as large as the pages a batch changes: as much room
    # again for it, since each batch now also writes its lookup rows (the file's growth alone let
    # no batch commit). max_page_count caps the file only.
    with small_disk(tmp_path, size + slack * page_size) as (mount, grow):
        url = f"sqlite:///{mount / 'full.sqlite'}"
        shutil.copyfile(source, mount / "full.sqlite")
        fault: dict[str, Any] = {"kind": "none"} if grow else {"kind": "disk_full", "max_pages": pages + slack}
        for attempt in range(2):
            full = faulted_run(zygote, url, pack, {**fault, "admin": url})
            assert full.returncode == 1, f"attempt {attempt}: {full.stderr[-2000:]}"
            errors = one_line_errors(full.stderr)
            assert len(errors) == 1 and ("SQLITE_FULL" in errors[0] or "SQLITE_IOERR" in errors[0]), errors
        engine = create_engine(url)
        try:
            assert_stopped_mid_run(engine, golden)
            assert_ledger_matches_rows(engine, "after the disk filled up")
            if grow:
                grow(64 * 1024 * 1024)
            rerun_until_success(url, pack)
            compare("disk full", dialect, engine, golden)
        finally:
            engine.dispose()
    report.record("disk full", dialect, report.RESULTS[("disk full", dialect)] + (" (tmpfs)" if grow else ""))


def test_table_lock_held_until_the_lock_timeout(
    zygote: Zygote, dialect: str, db_url: str, pack: Path, golden: Golden
) -> None:
    """At a seeded transaction, another session locks the source tables; the run gives up after --lock-timeout 1.

    PostgreSQL and MariaDB: the datasets it could not lock fail, the run
    exits 3; SQLite: one write lock for the whole database, exit 1 with one
    line. The holder goes away with the run; the rerun finishes the work.
    """
    engine = prepare(db_url)
    rng = random.Random(f"lock-{dialect}")
    at = rng.randrange(3, golden.begins // 2)
    locked = faulted_run(
        zygote, db_url, pack, {"kind": "lock_tables", "at_begin": at, "admin": db_url}, "--lock-timeout", "1"
    )
    assert locked.returncode == (1 if dialect == "sqlite" else 3), locked.stderr[-2000:]
    errors = one_line_errors(locked.stderr)  # exit 3 is a partial run, not a failed command
    assert len(errors) == (1 if dialect == "sqlite" else 0), errors
    assert_stopped_mid_run(engine, golden)
    assert_ledger_matches_rows(engine, "after the lock timeout")
    rerun_until_success(db_url, pack)
    compare("table lock held (lock timeout)", dialect, engine, golden)
    engine.dispose()


def test_a_second_run_is_refused_while_the_first_works(
    zygote: Zygote, dialect: str, db_url: str, pack: Path, golden: Golden, tmp_path: Path
) -> None:
    """Second runs start while the first waits between two of its transactions: each exits 5 and changes nothing.

    On SQLite the second attempt comes after the lock row's heartbeat was
    moved 7 hours back (a clock jump) while its run is alive: that run's
    process lives on this machine, so the lock is not taken over either.
    The first run then finishes as if alone (no rerun needed).
    """
    engine = prepare(db_url)
    rng = random.Random(f"second-{dialect}")
    # From the 10th transaction on: the run holds its lock by then (the first few record the
    # pack version seen and the run itself, before the lock is taken).
    early, late = sorted(rng.sample(range(10, golden.begins - 5), 2))
    points = [[early, 0], [late, 7]] if dialect == "sqlite" else [[early, 0]]
    out = tmp_path / "second.json"
    first = faulted_run(
        zygote, db_url, pack, {"kind": "second_run", "points": points, "out": str(out), "admin": db_url}
    )
    seconds = json.loads(out.read_text())
    assert [s["exit"] for s in seconds] == [5] * len(points), seconds
    assert first.returncode == 0, first.stderr[-2000:]
    compare("concurrent second run", dialect, engine, golden)
    if dialect == "sqlite":
        report.record("lock clock aged (heartbeat)", dialect, report.RESULTS[("concurrent second run", dialect)])
    engine.dispose()
