"""The built-in scheduler: one run per trigger, no overlap, clean stop on SIGTERM."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.demo import build_shop
from retention.store import tables as store

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_scheduler_runs_without_overlap_and_stops_cleanly(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Every second a trigger fires; a long first run makes later triggers skip; SIGTERM ends it all."""
    build_shop(migrated, seed=41, customers=2500)
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    text = text.replace("  max_share: 0.2\n", "  max_share: 1.0\n").replace(
        "timezone: Europe/Paris\n", "timezone: Europe/Paris\nbatch_size: 25\n", 1
    )
    pack = tmp_path / "pack.yaml"
    pack.write_text(text, encoding="utf-8")
    env = {**os.environ, "RETENTION_PSEUDONYM_KEY": "k", "RETENTION_DATABASE_URL": db_url}
    log_file = (tmp_path / "scheduler.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retention.cli",
            "--log-format",
            "json",
            "scheduler",
            "--rules",
            str(pack),
            "--cron",
            "* * * * * *",
            "--timezone",
            "Europe/Paris",
            "--metrics-file",
            str(tmp_path / "retention.prom"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,  # a file: a full pipe would stall the job
    )
    started = time.monotonic()
    while time.monotonic() - started < 60 and process.poll() is None:  # until two runs are done
        time.sleep(0.5)
        with migrated.connect() as conn:
            done = conn.execute(
                sa.select(sa.func.count())
                .select_from(store.runs)
                .where(store.runs.c.mode == "run", store.runs.c.finished_at.is_not(None))
            ).scalar_one()
        if done >= 2:
            break
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    log_file.close()
    err = (tmp_path / "scheduler.log").read_text()
    elapsed = time.monotonic() - started
    assert process.returncode == 0, err[-3000:]
    with migrated.connect() as conn:
        runs = conn.execute(
            sa.select(store.runs).where(store.runs.c.mode == "run").order_by(store.runs.c.started_at)
        ).all()
    assert len(runs) >= 2
    assert len(runs) <= elapsed + 1  # at most one run per trigger
    assert all(r.status in ("succeeded", "interrupted") and r.finished_at is not None for r in runs)
    for before, after in itertools.pairwise(runs):
        assert after.started_at >= before.finished_at  # never two at once
    skipped = [
        line for line in err.splitlines() if "maximum number of running instances" in line or "was missed by" in line
    ]
    assert skipped, "the long first run should have made at least one trigger skip"
    assert '"event": "scheduler_stopped"' in err
    assert (tmp_path / "retention.prom").exists()
