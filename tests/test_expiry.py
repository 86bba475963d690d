"""Expiry clocks (``expires: true``): WooCommerce sessions go at their expiry instant, live ones are no anomaly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.errors import PackError
from retention.policy import load_file, validate_pack

UTC = dt.UTC
PACK_TEXT = """\
pack: sessions
version: "1"
effective_from: 2020-01-01
timezone: Europe/Amsterdam
guard: {max_share: 1.0}
datasets:
  sessions:
    table: wp_woocommerce_sessions
    key: session_id
    basis: WooCommerce session, needed until it expires
    ledger: summary
    keep:
      - clock: {column: session_expiry, type: epoch, expires: true}
    lifecycle:
      - to: purged
        action: delete
"""
# The run's instant: mid-afternoon in Amsterdam, far from any midnight.
AS_OF = dt.datetime(2026, 11, 26, 14, 30, tzinfo=UTC)
NOW = int(AS_OF.timestamp())
EXPIRIES = {
    1: NOW - 48 * 3600,  # expired two days ago
    2: NOW - 60,  # expired a minute ago, the same local day
    3: NOW,  # expires at the very instant of the run: due
    4: NOW + 1,  # one second left
    5: NOW + 2 * 24 * 3600,  # the usual 48-hour session, just started
    6: 0,  # a zero expiry: an anomaly, never moved
}


def _sessions(engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "wp_woocommerce_sessions",
        sa.MetaData(),
        sa.Column("session_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("session_key", sa.String(32), nullable=False),
        sa.Column("session_value", sa.Text, nullable=False),
        sa.Column("session_expiry", sa.BigInteger, nullable=False),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"session_id": k, "session_key": f"k{k}", "session_value": "cart", "session_expiry": v}
                for k, v in EXPIRIES.items()
            ],
        )
    return table


@pytest.fixture
def pack_file(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.yaml"
    path.write_text(PACK_TEXT)
    return path


def test_sessions_go_at_expiry_and_live_ones_are_not_anomalies(migrated: sa.Engine, pack_file: Path) -> None:
    """At 14:30 the sessions expired by then go (not at the next midnight); live ones stay, uncounted."""
    table = _sessions(migrated)
    loaded = load_file(pack_file)
    expected_gone = {k for k, v in EXPIRIES.items() if 0 < v <= NOW}
    assert expected_gone == {1, 2, 3}
    summary = execute.plan(migrated, loaded, AS_OF)
    assert summary.transitions["sessions"] == {"active->purged": 3}
    assert {k: v for k, v in summary.anomalies["sessions"].items() if v} == {"zero": 1}
    result = execute.run(migrated, loaded, AS_OF, secret=b"k" * 32)
    assert result.status == "succeeded", result.failures
    with migrated.connect() as conn:
        left = set(conn.execute(sa.select(table.c.session_id)).scalars())
    assert left == set(EXPIRIES) - expected_gone
    # One second later the session with one second left goes too, without waiting for midnight.
    later = execute.run(migrated, loaded, AS_OF + dt.timedelta(seconds=1), secret=b"k" * 32)
    assert later.counts["sessions"] == {"active->purged": 1}


def test_explain_says_a_live_session_is_due_at_expiry(migrated: sa.Engine, db_url: str, pack_file: Path) -> None:
    """explain shows the expiry clock without a period and without a future anomaly."""
    _sessions(migrated)
    runner = CliRunner()
    args = ["explain", "--rules", str(pack_file), "--db", db_url, "--dataset", "sessions", "--as-of"]
    live = runner.invoke(main, [*args, AS_OF.isoformat(), "--key", "5", "--utc"])
    assert live.exit_code == 0, live.output
    assert "due when it passes (expiry clock); not yet" in live.output
    assert "skipped" not in live.output and "anomaly" not in live.output
    gone = runner.invoke(main, [*args, AS_OF.isoformat(), "--key", "2", "--utc", "--format", "json"])
    data = json.loads(gone.output)
    assert data["due"] == {"purged": (AS_OF - dt.timedelta(seconds=60)).isoformat()}


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ({"clock": {"column": "e", "type": "epoch", "expires": True}, "period": "P1D"}, "takes no period"),
        ({"clock": {"column": "e", "type": "epoch"}}, "needs 'period'"),
        ({"clock": {"column": "e", "type": "timestamp", "timezone": "Europe/Paris", "expires": True}}, "in UTC"),
    ],
)
def test_expiry_clock_pack_errors(keep: dict[str, object], message: str) -> None:
    """An expiry clock takes no period, a period clock needs one, a naive expiry is in UTC."""
    data = {
        "pack": "p",
        "version": "1",
        "effective_from": "2020-01-01",
        "datasets": {
            "s": {
                "table": "s",
                "key": "id",
                "basis": "b",
                "keep": [keep],
                "lifecycle": [{"to": "purged", "action": "delete"}],
            }
        },
    }
    with pytest.raises(PackError, match=message):
        validate_pack(data, Path("<test>"), "")


def test_packs_without_expiry_keep_their_digest() -> None:
    """The new keys stay out of the digest of packs that do not use them."""
    pack = load_file(Path(__file__).resolve().parent.parent / "rules" / "marketplace.yaml")
    dumped = pack.pack.model_dump(mode="json", by_alias=True)
    for dataset in dumped["datasets"].values():
        for rule in dataset["keep"]:
            assert "expires" not in rule["clock"] and "period" in rule
