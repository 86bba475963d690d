"""Policy notice periods (issue 14, check 3): sightings, warnings, refusal and acceptance, history."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import migrate_isolated

from retention.cli import main
from retention.engine import notice
from retention.policy import load_catalog, load_file
from retention.store import tables as store

ENV = {"RETENTION_PSEUDONYM_KEY": "notice-test-key"}
VERSION = """\
pack: saas
version: "{version}"
effective_from: {effective}
notice: P8D
guard: {{max_share: 1.0}}
datasets:
  events:
    table: events
    key: id
    basis: Logs kept {period}
    keep:
      - clock: {{column: at, type: timestamp}}
        period: {period}
    lifecycle:
      - to: purged
        action: delete
"""


@pytest.fixture
def folder(tmp_path: Path, migrated: sa.Engine, pinned_today: dt.date) -> Path:
    """Version 1 (in force since 2020) and version 2 taking effect five days from today.

    Today is pinned (conftest ``pinned_today``) until the test ends: the warning's dates are counted from the
    day ``check`` first sees version 2, and a run crossing midnight after this fixture saw another day.
    """
    table = sa.Table(
        "events", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", sa.DateTime)
    )
    table.create(migrated)
    with migrated.begin() as conn:
        conn.execute(table.insert(), [{"id": 1, "at": dt.datetime(2019, 1, 1)}])
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "v1.yaml").write_text(VERSION.format(version="1", effective="2020-01-01", period="P1Y"))
    effective = pinned_today + dt.timedelta(days=5)
    (tmp_path / "rules" / "v2.yaml").write_text(VERSION.format(version="2", effective=effective, period="P6M"))
    return tmp_path / "rules"


def test_short_notice_is_warned_refused_accepted_and_listed(
    migrated: sa.Engine, db_url: str, folder: Path, pinned_today: dt.date
) -> None:
    """First seen today, effective in 5 days, notice P8D: check warns, run refuses, the operator may accept."""
    today = pinned_today
    effective, not_before = today + dt.timedelta(days=5), today + dt.timedelta(days=8)
    runner = CliRunner()
    check = runner.invoke(main, ["check", "--rules", str(folder), "--db", db_url])
    assert check.exit_code == 0, check.output
    digest = next(p.digest for p in load_catalog(folder).packs if p.pack.version == "2")
    line = (
        f"pack saas version 2 (digest {digest[:12]}) takes effect on {effective}, 5 days after it was first "
        f"seen on {today}; its notice is P8D, so not before {not_before}"
    )
    assert f"warning: {line}\n" in check.output
    # Days still to come: the future as-of is intended here (issue 23 refuses it otherwise).
    base = ["run", "--rules", str(folder), "--db", db_url, "--no-progress", "--allow-future-as-of", "--as-of"]
    refused = runner.invoke(main, [*base, str(effective)], env=ENV)
    assert refused.exit_code == 2
    assert refused.output == f"error: {line}; to apply it now anyway: --accept-short-notice\n"
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.runs)).scalar_one() == 0
    accepted = runner.invoke(main, [*base, str(effective), "--accept-short-notice"], env=ENV)
    assert accepted.exit_code == 0, accepted.output
    with migrated.connect() as conn:
        entries = conn.execute(
            sa.select(store.ledger.c.transition, store.ledger.c.pack_digest, store.ledger.c.detail).where(
                store.ledger.c.transition == "short_notice_accepted"
            )
        ).all()
    assert len(entries) == 1 and entries[0].pack_digest == digest
    assert json.loads(entries[0].detail) == {
        "version": "2",
        "effective_from": str(effective),
        "first_seen": str(today),
        "notice": "P8D",
        "not_before": str(not_before),
    }
    # Once the notice has run out the version applies without the flag.
    later = runner.invoke(main, [*base, str(not_before)], env=ENV)
    assert later.exit_code == 0, later.output
    history = runner.invoke(main, ["pack", "history", "--rules", str(folder), "--db", db_url, "--format", "json"])
    assert history.exit_code == 0, history.output
    rows = json.loads(history.output)
    assert [(r["version"], r["status"], r["effective_from"], r["not_before"]) for r in rows] == [
        ("1", "first version", "2020-01-01", None),
        ("2", "short", str(effective), str(not_before)),
    ]
    assert rows[1]["digest"] == digest and rows[1]["first_seen"].startswith(str(today))
    table = runner.invoke(main, ["pack", "history", "--rules", str(folder), "--db", db_url])
    assert digest[:12] in table.output and "short" in table.output


def test_plan_records_a_sighting_and_a_read_only_plan_does_not(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Without the engine's tables plan still works and records nothing; with them it records each version."""
    table = sa.Table(
        "events", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", sa.DateTime)
    )
    table.create(engine)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "v1.yaml").write_text(VERSION.format(version="1", effective="2020-01-01", period="P1Y"))
    runner = CliRunner()
    bare = runner.invoke(main, ["plan", "--rules", str(rules), "--db", db_url, "--as-of", "2026-01-01"])
    assert bare.exit_code == 0, bare.output
    assert "retention_pack_sightings" not in sa.inspect(engine).get_table_names()
    migrate_isolated(engine)  # a copy of the migrated template beside "events" (tests/test_migrations.py runs them)
    planned = runner.invoke(main, ["plan", "--rules", str(rules), "--db", db_url, "--as-of", "2026-01-01"])
    assert planned.exit_code == 0, planned.output
    with engine.connect() as conn:
        seen = conn.execute(sa.select(store.pack_sightings.c.version, store.pack_sightings.c.seen_by)).all()
    assert [tuple(r) for r in seen] == [("1", "plan")]


def test_notice_statuses_by_hand(tmp_path: Path) -> None:
    """ok on the day notice runs out, short the day before, back-dated before first sight; first version needs none."""
    catalog = []
    for version, effective in (("1", "2020-01-01"), ("2", "2026-05-09"), ("3", "2026-05-08"), ("4", "2026-04-30")):
        text = VERSION.format(version=version, effective=effective, period="P1Y")
        path = tmp_path / f"v{version}.yaml"
        path.write_text(text)
        catalog.append(load_file(path))
    seen = {v.digest: dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC) for v in catalog}
    got = {v.pack.version: notice.status(v, catalog, seen) for v in catalog}
    assert {k: (s.status, s.not_before) for k, s in got.items()} == {
        "1": ("first version", None),
        "2": ("ok", dt.date(2026, 5, 9)),
        "3": ("short", dt.date(2026, 5, 9)),
        "4": ("back-dated", dt.date(2026, 5, 9)),
    }
    assert got["4"].refuses(dt.datetime(2026, 5, 8, 23, tzinfo=dt.UTC))
    assert not got["4"].refuses(dt.datetime(2026, 5, 9, tzinfo=dt.UTC))
    sentence = got["4"].sentence()
    assert sentence.endswith(
        "takes effect on 2026-04-30, before it was first seen on 2026-05-01; "
        "its notice is P8D, so not before 2026-05-09"
    )
