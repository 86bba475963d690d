"""`plan` and `run` log the pack's check warnings, so an upgrade without `check` still shows them (docs/rules.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

from retention.commands import runs

PACK = """\
pack: warned
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  events:
    table: events
    key: id
    basis: policy
    keep:
      - clock: {column: created_at, type: timestamp}
        period: P3Y
        basis: accounting
      - clock: {column: created_at, type: timestamp}
        period: P1Y
        basis: tax
    lifecycle:
      - to: purged
        action: delete
"""


def test_plan_and_run_log_each_warning_once(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One structlog warning per check warning, naming the clause; no value from the rows."""
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "pack-warnings-key")
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime),
    )
    md.create_all(migrated)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": 7340, "created_at": dt.datetime(2021, 3, 1)}])
    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK, encoding="utf-8")
    for command in ("plan", "run"):
        with structlog.testing.capture_logs() as logs:
            getattr(runs, command)(rules, db_url, as_of="2025-01-01")
        warned = [e for e in logs if e["event"] == "pack_warning"]
        assert len(warned) == 1, logs
        assert warned[0]["log_level"] == "warning"
        assert warned[0]["command"] == command
        assert warned[0]["warning"].startswith(f"{rules}:15: datasets.events.keep[1]: keep[0] runs from the same")
        assert "7340" not in str(warned)
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 0


def test_a_pack_without_warnings_logs_none(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    md = sa.MetaData()
    sa.Table("events", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("created_at", sa.DateTime))
    md.create_all(migrated)
    rules = tmp_path / "pack.yaml"
    one_rule = PACK.replace(
        "      - clock: {column: created_at, type: timestamp}\n        period: P1Y\n        basis: tax\n", ""
    )
    rules.write_text(one_rule, encoding="utf-8")
    with structlog.testing.capture_logs() as logs:
        runs.plan(rules, db_url, as_of="2025-01-01")
    assert [e for e in logs if e["event"] == "pack_warning"] == []
