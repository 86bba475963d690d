"""The nightly job as operators see it: exit codes, guards, metrics and JSON logs."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.dialects import mysql

from retention.cli import main
from retention.demo import build_shop
from retention.engine import execute
from retention.store import tables as store

ROOT = Path(__file__).resolve().parent.parent
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ENV = {"RETENTION_PSEUDONYM_KEY": "operations-test-key"}

PACK = """
pack: ops
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
datasets:
  events:
    table: events
    key: id
    basis: 13 months
    keep:
      - clock: {column: CLOCK, type: timestamptz}
        period: P13M
    lifecycle:
      - to: purged
        action: delete
  accounts:
    table: accounts
    key: id
    basis: policy
    guard: {max_share: 1.0}
    keep:
      - clock: {column: seen, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {active: ACTIVE}
"""


def build(engine: sa.Engine) -> None:
    """100 events collected recently but created long ago; 10 accounts, half of them stale."""
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", TS, index=True),
        sa.Column("created", TS, index=True),
    )
    accounts = sa.Table(
        "accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", TS, index=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    md.create_all(engine)

    def ts(value: dt.datetime) -> dt.datetime:
        return value if engine.dialect.name == "postgresql" else value.replace(tzinfo=None)

    recent = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    old = dt.datetime(2015, 6, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                # 10 % really due by collection date; all of them "due" by creation date.
                {"id": i, "collected": ts(old if i <= 10 else recent), "created": ts(old)}
                for i in range(1, 101)
            ],
        )
        conn.execute(
            accounts.insert(),
            [{"id": i, "seen": ts(old if i % 2 else recent), "active": True} for i in range(1, 11)],
        )


def write_pack(tmp_path: Path, clock: str = "collected", active: str = "false") -> Path:
    path = tmp_path / f"ops-{clock}-{active}.yaml"
    path.write_text(PACK.replace("CLOCK", clock).replace("ACTIVE", active), encoding="utf-8")
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=ENV)


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


AS_OF = "2026-11-01"


def test_exit_0_on_success(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A run that applies everything exits 0."""
    build(migrated)
    result = invoke("run", "--rules", str(write_pack(tmp_path)), "--db", db_url, "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert count(migrated, "events") == 90


def test_exit_2_on_a_bad_pack(tmp_path: Path) -> None:
    """A malformed pack exits 2 before touching anything.

    The database is at head: a run checks its database and takes the lock
    before it reads the pack (a run refused the lock reads no pack), so on
    an empty database the missing tables are named first.
    """
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: x\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert invoke("db", "upgrade", "--db", url).exit_code == 0
    result = invoke("run", "--rules", str(bad), "--db", url)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {bad}:1: the pack is missing required key 'version'")


def test_wrong_clock_column_trips_the_guard(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A clock on the wrong column would purge 100 %: exit 4, nothing touched; --allow-mass proceeds."""
    build(migrated)
    pack = write_pack(tmp_path, clock="created")
    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF)
    assert result.exit_code == 4, result.output
    assert (
        "guard tripped for dataset events: active->purged would move 100 of 100 records (100.0%; max 20%); "
        "rerun with --allow-mass events if this is intended"
    ) in result.output
    assert count(migrated, "events") == 100
    with migrated.connect() as conn:
        run = conn.execute(sa.select(store.runs).where(store.runs.c.mode == "run")).one()
        assert run.status == "guarded"
        assert conn.execute(sa.text("SELECT count(*) FROM accounts WHERE active = :f"), {"f": False}).scalar_one() == 5

    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF, "--allow-mass", "events")
    assert result.exit_code == 0, result.output
    assert count(migrated, "events") == 0
    with migrated.connect() as conn:
        override = conn.execute(sa.select(store.ledger).where(store.ledger.c.transition == "guard_overridden")).one()
        latest = conn.execute(sa.select(store.runs.c.overrides).where(store.runs.c.status == "succeeded")).scalar_one()
    assert override.dataset == "events" and override.count == 100
    assert json.loads(override.detail)["share"] == 1.0
    assert json.loads(latest)[0]["dataset"] == "events"


def test_exit_3_when_a_dataset_fails_and_others_go_on(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A constraint failure rolls back that dataset's batch, is reported, and other datasets still run."""
    build(migrated)
    pack = write_pack(tmp_path, active="null")  # NOT NULL column set to NULL: refused by the database
    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF)
    assert result.exit_code == 3, result.output
    assert "accounts" in result.output and "FAILED" in result.output
    assert count(migrated, "events") == 90  # the other dataset was applied
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM accounts WHERE active = :t"), {"t": True}).scalar_one() == 10
        assert (
            conn.execute(
                sa.select(sa.func.count())
                .select_from(store.record_states)
                .where(store.record_states.c.dataset == "accounts")
            ).scalar_one()
            == 0
        )
        run = conn.execute(sa.select(store.runs).where(store.runs.c.mode == "run")).one()
    assert run.status == "partial" and "accounts" in json.loads(run.error)


def test_exit_5_when_another_run_holds_the_lock(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """While the lock is held, `run` exits 5 at once."""
    build(migrated)
    with execute.run_lock(migrated, "someone-else"):
        result = invoke("run", "--rules", str(write_pack(tmp_path)), "--db", db_url, "--as-of", AS_OF)
    assert result.exit_code == 5
    assert result.output.startswith("error: another retention run holds the lock on this database")


def test_exit_6_when_the_ledger_is_tampered_with(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """`ledger verify` exits 6 naming the entry."""
    build(migrated)
    assert invoke("run", "--rules", str(write_pack(tmp_path)), "--db", db_url, "--as-of", AS_OF).exit_code == 0
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0
    with migrated.begin() as conn:
        if migrated.dialect.name == "postgresql":
            conn.execute(sa.text("DROP TRIGGER retention_ledger_append_only ON retention_ledger"))
        else:
            conn.execute(sa.text("DROP TRIGGER retention_ledger_no_update"))
        conn.execute(sa.text("UPDATE retention_ledger SET basis = 'nothing to see' WHERE seq = 2"))
    result = invoke("ledger", "verify", "--db", db_url)
    assert result.exit_code == 6
    assert result.output.strip() == (
        "ledger verification failed: entry 2: hash does not match its content (modified after it was written)"
    )


def test_exit_1_and_clean_stop_on_sigterm(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """SIGTERM stops the run after its current batch: exit 1, run recorded as interrupted, chain intact."""
    build_shop(migrated, seed=51, customers=1500)
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        text.replace("  max_share: 0.2\n", "  max_share: 1.0\n").replace(
            "timezone: Europe/Paris\n", "timezone: Europe/Paris\nbatch_size: 10\n", 1
        ),
        encoding="utf-8",
    )
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "retention.cli", "run", "--rules", str(pack), "--db", db_url],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the first batches are in the ledger
        with migrated.connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one() > 50:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    log.close()
    output = (tmp_path / "run.log").read_text()
    assert process.returncode == 1, output[-2000:]
    assert "run interrupted after its current batch; the next run continues" in output
    with migrated.connect() as conn:
        run = conn.execute(sa.select(store.runs).where(store.runs.c.mode == "run")).one()
    assert run.status == "interrupted" and run.finished_at is not None
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0


def test_metrics_file_matches_the_run_record(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """The textfile parses with prometheus_client and its counts equal the run record's."""
    build(migrated)
    metrics = tmp_path / "textfile" / "retention.prom"
    result = invoke(
        "run",
        "--rules",
        str(write_pack(tmp_path)),
        "--db",
        db_url,
        "--as-of",
        AS_OF,
        "--metrics-file",
        str(metrics),
    )
    assert result.exit_code == 0, result.output
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    with migrated.connect() as conn:
        run = conn.execute(sa.select(store.runs).where(store.runs.c.mode == "run")).one()
    recorded = json.loads(run.counts)
    moved = {
        (s.labels["dataset"], s.labels["transition"]): s.value
        for s in families["retention_records_transitioned"].samples
    }
    assert moved == {(d, t): float(c) for d, per in recorded.items() for t, c in per.items()}
    assert moved == {("events", "active->purged"): 10.0, ("accounts", "active->inactive"): 5.0}
    status = families["retention_last_run_status"].samples[0]
    assert status.labels["status"] == "succeeded" and status.value == 1.0
    duration = families["retention_run_duration_seconds"].samples[0].value
    assert 0 < duration <= (run.finished_at - run.started_at).total_seconds() + 1
    assert families["retention_last_success_timestamp_seconds"].samples[0].value > 0


def test_every_log_line_is_json_with_the_run_id(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Off a terminal, each log line of a run is a JSON object carrying the run id."""
    build(migrated)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention.cli",
            "run",
            "--rules",
            str(write_pack(tmp_path)),
            "--db",
            db_url,
            "--as-of",
            AS_OF,
        ],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines
    with migrated.connect() as conn:
        run_id = conn.execute(sa.select(store.runs.c.id).where(store.runs.c.mode == "run")).scalar_one()
    for line in lines:
        event = json.loads(line)
        assert event["run_id"] == run_id, line


def test_a_guard_message_names_its_dataset_once() -> None:
    """Several tripped transitions of one dataset (and a follower's) make one sentence naming it once."""
    trips = [
        execute.GuardTrip("customers", "active->inactive", 542, 2000, 0.2, None),
        execute.GuardTrip("customers", "inactive->archived", 542, 2000, 0.2, None),
        execute.GuardTrip("browsing_events", "active->purged", 900, 4000, 0.2, 500),
    ]
    assert execute.guard_message("customers", trips) == (
        "guard tripped for dataset customers: active->inactive would move 542 of 2000 records (27.1%; max 20%), "
        "inactive->archived would move 542 of 2000 records (27.1%; max 20%), "
        "browsing_events active->purged would move 900 of 4000 records (22.5%; max 20% or 500 records); "
        "rerun with --allow-mass customers if this is intended"
    )
