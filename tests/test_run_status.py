"""A run you can watch: ``retention status`` names the holder of the lock and how far it got,
a second run exits 5 at once naming the first, and the bars' time left shows from the first batch.

The first run is held still inside its first batch callback (lock held, one
batch committed), so what the second run and ``status`` see is certain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from rich.console import Console
from rich.progress import Progress, TimeRemainingColumn
from scaffold import on_a_pty
from test_engine import PACK, SECRET, build, loaded_pack

from retention.cli import main
from retention.engine import execute
from retention.policy import loader
from retention.reporting.progress import _TimeLeftColumn, planning_status
from retention.store import tables as store
from retention.store.config import create_engine

AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parent.parent


def running_run_id(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(store.runs.c.id).where(store.runs.c.status == "running")).scalar_one())


@contextlib.contextmanager
def a_first_run_held(db_url: str) -> Iterator[None]:
    """A first run held still inside its first batch callback (lock held, one batch committed) for the block.

    It is let go when the block ends, and must then succeed: what the block
    saw of it (a refused second run, ``status``) did not disturb it.
    """
    paused, resume = threading.Event(), threading.Event()
    outcome: list[Any] = []

    def hold_still(batch: Any) -> None:
        if not paused.is_set():
            paused.set()
            resume.wait(timeout=300)

    def first_run() -> None:
        engine = create_engine(db_url)
        try:
            outcome.append(
                execute.run(engine, loaded_pack(), AS_OF, secret=SECRET, on_batch=hold_still, allow_mass=("*",))
            )
        except BaseException as exc:
            outcome.append(exc)
        finally:
            engine.dispose()

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert paused.wait(timeout=120), outcome
        yield
    finally:
        resume.set()
        thread.join(timeout=300)
    assert isinstance(outcome[0], execute.RunResult) and outcome[0].status == "succeeded", outcome


def test_second_run_exits_5_at_once_naming_the_first(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(migrated, 41, n=60)
    pack = tmp_path / "pack.yaml"
    pack.write_text(yaml.safe_dump(PACK), encoding="utf-8")

    with a_first_run_held(db_url):
        first = running_run_id(migrated)
        time.sleep(1)  # the second run starts a second later

        monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
        env = {**os.environ, "RETENTION_PSEUDONYM_KEY": SECRET.decode(), "COLUMNS": "120"}
        code, output = on_a_pty(["run", "--rules", str(pack), "--db", db_url, "--as-of", "2026-06-01"], env)
        assert code == 5, output[-3000:]
        holder = f"run {first}, since "
        assert holder in output and f"on host {socket.gethostname()}, pid {os.getpid()}" in output, output[-3000:]
        assert "planning" not in output  # refused before planning for its bars, not after

        status = CliRunner().invoke(main, ["status", "--db", db_url])
        assert status.exit_code == 0, status.output
        assert f"run {first} holds the lock on this database since " in status.output
        assert f"on host {socket.gethostname()}, pid {os.getpid()}" in status.output
        assert "1 batches committed" in status.output or " batches committed" in status.output
        rows = json.loads(CliRunner().invoke(main, ["status", "--db", db_url, "--format", "json"]).output)
        assert [(r["run_id"], r["holds"], r["pid"]) for r in rows] == [(first, True, str(os.getpid()))]
        assert rows[0]["batches"] >= 1 and rows[0]["transitions"] >= 1
    after = CliRunner().invoke(main, ["status", "--db", db_url])
    assert after.output.strip() == "no run holds the lock on this database", after.output


def test_a_refused_run_reads_no_pack_and_a_run_reads_it_once(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock comes before the pack: refused, ``run`` has read no pack file; run, it read each file once.

    (It used to read the pack three times before it took the lock: for the
    logs' zone, for the pack in force, and for the versions it had seen.)
    Pack files read are counted where every read goes (``loader.load_file``).
    """
    build(migrated, 43, n=60)
    pack = tmp_path / "pack.yaml"
    pack.write_text(yaml.safe_dump(PACK), encoding="utf-8")

    reads: list[Path] = []
    read_file = loader.load_file
    monkeypatch.setattr(loader, "load_file", lambda path: reads.append(path) or read_file(path))
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
    # No --as-of: a given one is checked for the future before the lock, which reads the pack (once).
    argv = ["run", "--rules", str(pack), "--db", db_url, "--allow-mass", "*"]
    with a_first_run_held(db_url):
        refused = CliRunner().invoke(main, [*argv, "--format", "json"])
        assert refused.exit_code == 5, refused.output
        assert f"run {running_run_id(migrated)}, since " in refused.output
        assert reads == []
        # Bad input is still refused while the lock is held: exit 2, not 5 (checked before the lock).
        bad = CliRunner().invoke(main, [*argv, "--shard", "0/2", "--shards", "2"])
        assert bad.exit_code == 2 and bad.output.count("error:") == 1, bad.output
    ran = CliRunner().invoke(main, [*argv, "--format", "json"])
    assert ran.exit_code == 0, ran.output
    assert reads == [pack]


@pytest.mark.only_on("sqlite")
def test_status_names_a_dead_holders_row(migrated: sa.Engine, db_url: str) -> None:
    """A row left by a killed run (its pid gone) is shown as left, not as holding the lock."""
    with migrated.begin() as conn:
        conn.execute(
            store.run_lock.insert().values(
                name="run",
                run_id="dead-run",
                owner=f"{socket.gethostname()}:999999999",
                acquired_at=AS_OF,
                heartbeat_at=AS_OF,
            )
        )
    result = CliRunner().invoke(main, ["status", "--db", db_url])
    assert "no run holds the lock on this database" in result.output
    assert "run dead-run left its row for the lock on this database (its process is gone)" in result.output


def test_time_left_shows_from_the_first_batch() -> None:
    """One batch of 10 of 100 transitions in 5 s: 45 s left (rich's own column waits for more samples)."""
    clock = [0.0]
    progress = Progress(get_time=lambda: clock[0])
    task_id = progress.add_task("visits", total=100)
    clock[0] = 5.0
    progress.advance(task_id, 10)
    task = progress.tasks[0]
    assert str(_TimeLeftColumn().render(task)) == "0:00:45"
    assert str(TimeRemainingColumn().render(task)) == "-:--:--"  # what the bars showed before


def test_planning_shows_the_time_it_takes() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with planning_status(console, "planning, to know how much each dataset has to move"):
        time.sleep(1.2)
    assert "planning, to know how much each dataset has to move" in out.getvalue()
    assert "0:00:01" in out.getvalue()
