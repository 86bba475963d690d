"""The backup horizon: `backups: {kept_for: P35D}` and what lookups say about purged records (issue 27)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from test_archive import PACK, build

from retention.cli import main
from retention.store import tables as store

SECRET = "backups-test-key"
ENV = {"RETENTION_PSEUDONYM_KEY": SECRET}
WITH_BACKUPS = PACK.replace("guard: {max_share: 1.0}\n", "guard: {max_share: 1.0}\nbackups:\n  kept_for: P35D\n", 1)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", *args], env=ENV, prog_name="retention")


def _pack(tmp_path: Path, text: str = WITH_BACKUPS) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("35 days", "backups.kept_for: '35 days' is not an ISO 8601 duration such as P3Y, P13M or P8D"),
        ("P0D", "backups.kept_for: kept_for must be longer than P0D; leave 'backups' out when no backup is kept"),
        ("P11Y", "backups.kept_for: kept_for P11Y is longer than P10Y; backups are kept for weeks or months"),
    ],
)
def test_a_bad_kept_for_is_refused_with_file_and_line(tmp_path: Path, value: str, message: str) -> None:
    """A backup period that cannot be a date is one line naming the file and line, exit 2."""
    path = _pack(tmp_path, WITH_BACKUPS.replace("kept_for: P35D", f"kept_for: {value}"))
    result = CliRunner().invoke(main, ["check", "--rules", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path}:8: {message}"


def test_a_misspelt_key_is_named(tmp_path: Path) -> None:
    """`keep_for` is an unknown key with a did-you-mean, not a silently ignored promise."""
    path = _pack(tmp_path, WITH_BACKUPS.replace("kept_for: P35D", "keep_for: P35D"))
    result = CliRunner().invoke(main, ["check", "--rules", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path}:8: unknown key 'keep_for' in backups; did you mean 'kept_for'?"


def _run_to_purge(tmp_path: Path, db_url: str, text: str) -> None:
    pack = _pack(tmp_path, text)
    for as_of in ("2021-06-01", "2023-01-01"):
        result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", as_of)
        assert result.exit_code == 0, result.output


def _purged_at(engine: sa.Engine) -> dt.date:
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.select(sa.func.max(store.ledger.c.recorded_at)).where(store.ledger.c.transition == "archived->purged")
        ).scalar_one()
    return recorded.date()  # the pack's timezone is UTC


def test_ledger_lookup_states_when_a_record_is_gone_from_backups(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """A purged record's lookup says the day it left the live database and that day + P35D for the backups."""
    build(engine)
    _run_to_purge(tmp_path, db_url, WITH_BACKUPS)
    purged = _purged_at(engine)
    gone = purged + dt.timedelta(days=35)
    result = invoke("ledger", "lookup", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("entry ")]
    assert len(lines) == 1
    assert lines[0].endswith(
        f": removed from the live database on {purged}; gone from backups by {gone} ({purged} + P35D)"
    )
    result = invoke("ledger", "lookup", "--db", db_url, "--dataset", "customers", "--key", "3", "--format", "json")
    rows = json.loads(result.output)
    by_transition = {row["transition"]: row["backups"] for row in rows}
    assert by_transition["active->archived"] is None  # the payload is still in the live database
    assert by_transition["archived->purged"] == {
        "removed_on": purged.isoformat(),
        "kept_for": "P35D",
        "gone_from_backups_by": gone.isoformat(),
        "unreadable_in_backups_from": None,
    }


def test_no_horizon_without_a_declared_backup_period(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A pack without `backups` promises nothing about backups, and lookup says nothing about them."""
    build(engine)
    _run_to_purge(tmp_path, db_url, PACK)
    result = invoke("ledger", "lookup", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert result.exit_code == 0, result.output
    assert "backups" not in result.output
    assert "archived->purged" in result.output
