"""`explain` evaluates one record the way plan does for the table, and says why."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import tiers

from retention.cli import main
from retention.commands import explain
from retention.demo import build_shop
from retention.engine import execute
from retention.policy import load_file
from retention.store import tables as store

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "marketplace.yaml"
PACK = load_file(RULES)


@pytest.mark.parametrize(
    "every",
    # Each explain plans its dataset again: 120 of them took ~2 minutes on SQLite, the suite's slowest
    # test; the fast tier checks every 6th customer (due and not due among them), the slow tier all.
    tiers(6, 1),
)
def test_explain_agrees_with_plan_for_every_customer(migrated: sa.Engine, db_url: str, every: int) -> None:
    """For each customer, explain's transitions due now are exactly plan's moves for that key."""
    build_shop(migrated, seed=61, customers=120, end=dt.date(2026, 11, 1))
    as_of = "2027-03-01"
    planned: dict[str, list[str]] = {}

    def collect(batch: execute.Batch) -> None:
        if batch.dataset == "customers":
            for move in batch.moves:
                planned[move.record_key] = [f"{s.from_state}->{s.to_state}" for s in move.steps]

    loaded_as_of = dt.datetime(2027, 2, 28, 23, tzinfo=dt.UTC)
    execute.plan(migrated, PACK, loaded_as_of, on_batch=collect)
    assert planned
    with migrated.connect() as conn:
        keys = [str(k) for k in conn.execute(sa.text("SELECT id FROM customers ORDER BY id")).scalars()]
    keys = keys[::every]
    assert any(k in planned for k in keys) and any(k not in planned for k in keys)  # both kinds checked
    for key in keys:
        result = explain(RULES, db_url, "customers", key, as_of)
        assert [d["transition"] for d in result.due_now] == planned.get(key, []), key


def test_explain_cli_shows_clocks_dues_and_basis(migrated: sa.Engine, db_url: str) -> None:
    """The CLI names each clock, the due dates and the legal basis; JSON carries the same."""
    build_shop(migrated, seed=62, customers=40, end=dt.date(2026, 11, 1))
    with migrated.connect() as conn:
        key = conn.execute(sa.text("SELECT min(id) FROM customers WHERE last_activity_at IS NOT NULL")).scalar_one()
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "explain",
            "--rules",
            str(RULES),
            "--db",
            db_url,
            "--dataset",
            "customers",
            "--key",
            str(key),
            "--as-of",
            "2026-11-01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"customers {key} as of 2026-11-01 00:00 CET\n")  # the pack's timezone
    assert "  due for inactive: " in result.output and " CE" in result.output.split("due for inactive: ")[1][:21]
    assert "clock last_activity_at = " in result.output
    assert "clock max(orders.created_at) = " in result.output
    assert "Privacy policy — 3 years after the last activity" in result.output
    data = json.loads(
        runner.invoke(
            main,
            [
                "explain",
                "--rules",
                str(RULES),
                "--db",
                db_url,
                "--dataset",
                "customers",
                "--key",
                str(key),
                "--format",
                "json",
            ],
        ).output
    )
    assert data["state"] == "active" and data["clocks"][0]["period"] == "P3Y"
    args = ["explain", "--rules", str(RULES), "--db", db_url, "--dataset", "customers", "--key", str(key)]
    utc = runner.invoke(main, [*args, "--as-of", "2026-11-01", "--utc"])
    assert utc.output.startswith(f"customers {key} as of 2026-10-31 23:00 UTC\n")
    missing = runner.invoke(
        main, ["explain", "--rules", str(RULES), "--db", db_url, "--dataset", "clients", "--key", "1"]
    )
    assert missing.exit_code == 2
    assert "no dataset 'clients' in pack marketplace; valid: customers, browsing_events" in missing.output


def test_init_creates_private_keys_and_tables(db_url: str, tmp_path: Path, engine: sa.Engine) -> None:
    """`init` writes two 0600 key files, never overwrites them, and builds the engine's tables."""
    folder = tmp_path / "keys"
    runner = CliRunner()
    result = runner.invoke(main, ["init", "--db", db_url, "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    for name in ("pseudonym.key", "signing.pem"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    before = (folder / "pseudonym.key").read_text()
    assert runner.invoke(main, ["init", "--db", db_url, "--dir", str(folder)]).exit_code == 0
    assert (folder / "pseudonym.key").read_text() == before
    assert store.ledger.name in sa.inspect(engine).get_table_names()
