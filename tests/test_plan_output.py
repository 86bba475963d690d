"""`retention plan` for machines: JSON and CSV on a known shop, with the change since the last plan."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects import mysql

from retention.cli import main

TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
PACK = """
pack: known
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
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
AS_OF = "2026-11-01"  # 00:00 Paris: due if collected before 1 Oct 2025 00:00 Paris


def build(engine: sa.Engine, rows: list[tuple[int, dt.datetime | None]]) -> sa.Table:
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", TS, index=True),
    )
    md.create_all(engine, checkfirst=True)
    fix = (lambda v: v) if engine.dialect.name == "postgresql" else (lambda v: v and v.replace(tzinfo=None))
    with engine.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "collected": fix(v)} for i, v in rows])
    return events


def plan(db_url: str, pack: Path, fmt: str) -> Any:
    result = CliRunner().invoke(main, ["plan", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF, "--format", fmt])
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_json_and_csv(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Counts, samples, due and clock ranges, anomalies, and the change since the previous plan."""
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK, encoding="utf-8")
    utc = dt.UTC
    rows: list[tuple[int, dt.datetime | None]] = [
        (1, dt.datetime(2024, 1, 10, 8, tzinfo=utc)),  # due 11 Feb 2025
        (2, dt.datetime(2025, 9, 30, 21, 59, tzinfo=utc)),  # 30 Sep 23:59 Paris: due 31 Oct 2026 00:00
        (3, dt.datetime(2025, 9, 30, 22, 0, tzinfo=utc)),  # 1 Oct 00:00 Paris: not due yet
        (4, dt.datetime(2023, 5, 5, 12, tzinfo=utc)),  # due
        (5, None),  # NULL: anomaly
        (6, dt.datetime(2027, 1, 1, tzinfo=utc)),  # future: anomaly
        (7, dt.datetime(2026, 6, 1, tzinfo=utc)),  # recent
        (8, dt.datetime(2024, 12, 31, 23, tzinfo=utc)),  # 1 Jan 2025 Paris: due 2 Feb 2026
    ]
    build(migrated, rows)
    first = json.loads(plan(db_url, pack, "json"))
    events = first["datasets"]["events"]
    purge = events["transitions"]["active->purged"]
    assert first["total"] == 4 and first["previous_plan"] is None
    assert purge["count"] == 4
    assert purge["samples"] == ["1", "2", "4"]
    assert purge["due_from"] == "2024-06-05T22:00:00+00:00"  # row 4: kept through 5 Jun 2024
    assert purge["due_to"] == "2026-10-30T23:00:00+00:00"  # row 2: kept through 30 Oct 2026
    assert purge["clock_from"] == "2023-05-05T12:00:00+00:00"
    assert purge["clock_to"] == "2025-09-30T21:59:00+00:00"
    assert events["anomalies"] == {"null": 1, "zero": 0, "invalid": 0, "future": 1}
    assert purge["previous"] is None and purge["change"] is None

    build(migrated, [(9, dt.datetime(2022, 2, 2, tzinfo=utc)), (10, dt.datetime(2022, 3, 3, tzinfo=utc))])
    second = json.loads(plan(db_url, pack, "json"))
    purge = second["datasets"]["events"]["transitions"]["active->purged"]
    assert second["previous_plan"]["as_of"] == "2026-10-31T23:00:00+00:00"
    assert (purge["count"], purge["previous"], purge["change"]) == (6, 4, 2)

    table = list(csv.DictReader(io.StringIO(plan(db_url, pack, "csv"))))
    assert len(table) == 1
    row = table[0]
    assert (row["dataset"], row["transition"], row["count"], row["previous"], row["change"]) == (
        "events",
        "active->purged",
        "6",
        "6",
        "0",
    )
    assert row["anomalies"] == "null 1, future 1"
    assert row["sample_keys"] == "1 2 4"


def test_plan_table_fits_100_columns_in_the_packs_timezone(migrated: sa.Engine, db_url: str) -> None:
    """Off a terminal the table is laid out for 100 columns; names stay whole; due dates are local dates."""
    from retention.demo import build_shop

    build_shop(migrated, seed=7, customers=120, end=dt.date(2026, 11, 1))
    args = ["plan", "--rules", "builtin:marketplace", "--db", db_url, "--as-of", "2031-01-01", "--no-record"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("plan for pack marketplace (") and " as of 2031-01-01 00:00 CET: " in lines[0]
    assert max(len(line) for line in lines) <= 100
    assert "…" not in result.output
    rows = {tuple(cell.strip() for cell in line.split("│")[1:3]) for line in lines if line.startswith("│")}
    for pair in [("review_access_logs", "active->purged"), ("customers", "inactive->archived")]:
        assert pair in rows, rows
    assert "times in Europe/Paris" in lines
    # Due instants are local midnights: shown as dates, never as 23:00 the day before.
    assert "23:00" not in result.output
    utc = CliRunner().invoke(main, [*args, "--utc"])
    assert " as of 2030-12-31 23:00 UTC: " in utc.output.splitlines()[0]
    assert "times in UTC" in utc.output


def test_other_tables_fit_100_columns(migrated: sa.Engine, db_url: str) -> None:
    """Run summary, ledger, holds and erasure requests: within 100 columns, names and dates whole."""
    from retention.demo import build_shop

    build_shop(migrated, seed=7, customers=120, end=dt.date(2026, 11, 1))
    env = {"RETENTION_PSEUDONYM_KEY": "tables-test-key"}
    runner = CliRunner()
    reason = "case 2026-17: an order of the commercial court to keep the records of this subject until judgment"
    commands = [
        ["run", "--rules", "builtin:marketplace", "--as-of", "2026-11-01", "--allow-mass", "*"],
        [
            "hold",
            "add",
            "--rules",
            "builtin:marketplace",
            "--dataset",
            "review_access_logs",
            "--key",
            "123456",
            "--reason",
            reason,
        ],
        ["erasure", "add", "--rules", "builtin:marketplace", "--subject", "7", "--received", "2026-11-01"],
        ["ledger", "show", "--limit", "5", "--rules", "builtin:marketplace"],
        ["hold", "list", "--rules", "builtin:marketplace"],
        ["erasure", "list", "--rules", "builtin:marketplace"],
    ]
    outputs = []
    for args in commands:
        result = runner.invoke(main, [*args, "--db", db_url], env=env)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.stdout)  # the logs on stderr are JSON lines, not for 100 columns
        assert max(len(line) for line in result.stdout.splitlines()) <= 100, result.stdout
        assert "…" not in result.stdout
    ledger, holds = outputs[3], outputs[4]
    assert "│ review_access_logs │" in holds and "judgment" in holds  # the reason wraps, whole
    assert "│ guard_overridden │" in ledger or "│ active->purged   │" in ledger
