"""What a person at a terminal sees during a run, and what a log collector gets instead."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from retention.reporting.progress import LogProgress, batch_counts

TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
AS_OF = "2026-11-01"
PACK = """
pack: progress
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
batch_size: 5
guard: {max_share: 1.0}
datasets:
  events:
    table: events
    key: id
    basis: 13 months
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P13M
    lifecycle:
      - to: purged
        action: delete
"""


def build(engine: sa.Engine) -> None:
    """60 events, 55 of them collected long ago: 11 batches of 5 to purge."""
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", TS, index=True),
    )
    md.create_all(engine)
    old, recent = dt.datetime(2015, 6, 1, tzinfo=dt.UTC), dt.datetime(2026, 10, 1, tzinfo=dt.UTC)

    def ts(value: dt.datetime) -> dt.datetime:
        return value if engine.dialect.name == "postgresql" else value.replace(tzinfo=None)

    with engine.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "collected": ts(old if i <= 55 else recent)} for i in range(1, 61)])


def run_in_pty(args: list[str], cwd: Path, columns: int = 100) -> tuple[int, str]:
    """Run ``retention ARGS`` with stdin, stdout and stderr on a pseudo-terminal; return its exit code and screen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    env |= {"RETENTION_PSEUDONYM_KEY": "progress-test-key", "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "retention.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def _args(pack: Path, db_url: str) -> list[str]:
    return ["run", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF]


def test_a_run_on_a_terminal_shows_a_progress_bar(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """On a terminal, a bar for the dataset counts its transitions to the plan's total, then the summary follows."""
    build(migrated)
    pack = tmp_path / "progress.yaml"
    pack.write_text(PACK, encoding="utf-8")
    code, screen = run_in_pty(_args(pack, db_url), tmp_path)
    assert code == 0, screen
    bar = [line for line in screen.splitlines() if "transitions" in line and "events" in line]
    assert bar, screen
    assert "━" in bar[-1] and "55/55" in bar[-1]
    assert "/s" in bar[-1]  # the rate column
    assert ": succeeded, 11 batches" in screen


def test_with_json_logs_a_run_prints_only_json_lines(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """`--log-format json` (here after the subcommand) on a terminal: no bar, no table, only JSON lines."""
    build(migrated)
    pack = tmp_path / "progress.yaml"
    pack.write_text(PACK, encoding="utf-8")
    code, screen = run_in_pty([*_args(pack, db_url), "--log-format", "json"], tmp_path)
    assert code == 0, screen
    lines = [line.strip("\r") for line in screen.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    progress = [e for e in events if e["event"] == "run_progress"]
    assert [(p["dataset"], p["count"], p["batches"]) for p in progress] == [("events", 50, 10)]
    assert events[-1]["counts"] == {"events": {"active->purged": 55}}


def test_json_errors_are_log_events_too(tmp_path: Path) -> None:
    """With `--log-format json` even a configuration error is a JSON line, with its exit code."""
    code, screen = run_in_pty(["--log-format", "json", "run", "--rules", str(tmp_path / "missing.yaml")], tmp_path)
    assert code == 2
    (line,) = [line for line in screen.splitlines() if line.strip()]
    event = json.loads(line)
    assert (event["event"], event["exit_code"], event["error_type"]) == ("command_failed", 2, "PackError")
    assert event["error"].startswith(f"{tmp_path / 'missing.yaml'}: no such file or folder")


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def test_log_progress_reports_rate_and_time_left() -> None:
    """Every N batches: transitions so far, the rate since the dataset began and, with a total, seconds left."""
    from retention.engine.plan import Batch, Move, Step

    ticks = iter([0.0, 2.0, 4.0, 6.0, 8.0])
    log = _Log()
    progress = LogProgress(log, totals={"events": 50}, every=2, clock=lambda: next(ticks))
    step = Step("active", "purged", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    batch = Batch("events", "active", [Move(i, str(i), None, (step,)) for i in range(5)])
    for _ in range(4):
        progress.on_batch(batch)
    assert [e for e, _ in log.events] == ["run_progress", "run_progress"]
    last = log.events[-1][1]
    # 20 transitions in 8 s since the start: 2.5/s, 30 left: 12 s.
    assert (last["count"], last["total"], last["rate"], last["eta_seconds"]) == (20, 50, 2.5, 12.0)
    assert batch_counts(batch) == {"events": 5}
