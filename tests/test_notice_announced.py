"""Issue 26, clause 5: `announced:` on a pack version, and a notice refusal that holds back only what changes.

"Fleetback's notice (announced 2026-11-26)": the notice runs from the later of
the announcement and the engine's first sighting; while a version is refused,
the datasets whose rules it changes wait and the others run under the version
in force. Every expected date and set below is written by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import notice
from retention.errors import PackError
from retention.policy import load_catalog, load_file
from retention.store import tables as store

ENV = {"RETENTION_PSEUDONYM_KEY": "notice-test-key"}
VERSION = """\
pack: saas
version: "{version}"
effective_from: {effective}
{announced}notice: P8D
guard: {{max_share: 1.0}}
datasets:
  events:
    table: events
    key: id
    basis: Events kept {period}
    keep:
      - clock: {{column: at, type: timestamp}}
        period: {period}
    lifecycle:
      - to: purged
        action: delete
  logs:
    table: logs
    key: id
    basis: Logs kept one year
    keep:
      - clock: {{column: at, type: timestamp}}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def _version(version: str, effective: object, period: str, announced: object = None) -> str:
    line = "" if announced is None else f"announced: {announced}\n"
    return VERSION.format(version=version, effective=effective, period=period, announced=line)


def _keys(engine: sa.Engine, table: str) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT id FROM {table}")).scalars())


@pytest.fixture
def folder(tmp_path: Path, migrated: sa.Engine, pinned_today: dt.date) -> Path:
    """Version 1 in force since 2020; version 2 (events kept P6M instead of P1Y) effective in 10 days,
    announced in 5 days: first seen today, its P8D notice runs from the announcement, so not before day 13.

    Today is pinned (conftest ``pinned_today``) until the test ends: the expected dates are counted from the
    day ``check`` or ``run`` first sees version 2, and a run crossing midnight after this fixture saw another day.
    """
    meta = sa.MetaData()
    for name in ("events", "logs"):
        sa.Table(name, meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", sa.DateTime))
    meta.create_all(migrated)
    recent = dt.datetime.combine(pinned_today, dt.time()) - dt.timedelta(days=30)
    with migrated.begin() as conn:
        conn.execute(meta.tables["events"].insert(), [{"id": 1, "at": dt.datetime(2019, 1, 1)}])
        conn.execute(meta.tables["logs"].insert(), [{"id": 1, "at": dt.datetime(2019, 1, 1)}, {"id": 2, "at": recent}])
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "v1.yaml").write_text(_version("1", "2020-01-01", "P1Y"))
    today = pinned_today
    (rules / "v2.yaml").write_text(_version("2", today + dt.timedelta(days=10), "P6M", today + dt.timedelta(days=5)))
    return rules


def test_notice_runs_from_the_announcement_and_only_changed_datasets_wait(
    migrated: sa.Engine, db_url: str, folder: Path, pinned_today: dt.date
) -> None:
    today = pinned_today
    effective, announced = today + dt.timedelta(days=10), today + dt.timedelta(days=5)
    not_before = today + dt.timedelta(days=13)  # announced + P8D; from the first sighting it would be day 8: ok
    catalog = load_catalog(folder)
    v1 = next(p.digest for p in catalog.packs if p.pack.version == "1")
    v2 = next(p.digest for p in catalog.packs if p.pack.version == "2")
    runner = CliRunner()
    check = runner.invoke(main, ["check", "--rules", str(folder), "--db", db_url])
    assert check.exit_code == 0, check.output
    sentence = (
        f"pack saas version 2 (digest {v2[:12]}) takes effect on {effective}, 5 days after it was announced on "
        f"{announced} (first seen on {today}); its notice is P8D, so not before {not_before}"
    )
    assert f"warning: {sentence}\n" in check.output

    base = ["run", "--rules", str(folder), "--db", db_url, "--no-progress", "--allow-future-as-of", "--as-of"]
    held = runner.invoke(main, [*base, str(effective)], env=ENV)
    assert held.exit_code == 0, held.output
    assert (
        f"warning: {sentence}; datasets events wait for it, the others ran under version 1; "
        "to apply it now anyway: --accept-short-notice\n"
    ) in held.output
    # logs (same rules in both versions) ran under version 1; events (changed) waited.
    assert _keys(migrated, "logs") == {2}
    assert _keys(migrated, "events") == {1}
    ledger = store.ledger
    with migrated.connect() as conn:
        entries = conn.execute(
            sa.select(ledger.c.transition, ledger.c.dataset, ledger.c.pack_digest, ledger.c.detail).order_by(
                ledger.c.seq
            )
        ).all()
    assert [(e.transition, e.dataset, e.pack_digest) for e in entries] == [
        ("notice_waiting", None, v1),
        ("active->purged", "logs", v1),
    ]
    assert json.loads(entries[0].detail) == {
        "version": "2",
        "effective_from": str(effective),
        "first_seen": str(today),
        "announced": str(announced),
        "notice": "P8D",
        "not_before": str(not_before),
        "waiting": ["events"],
        "in_force": "1",
    }
    # Once the notice counted from the announcement has run out, version 2 applies to both.
    later = runner.invoke(main, [*base, str(not_before)], env=ENV)
    assert later.exit_code == 0, later.output
    assert "WAITING" not in later.output and "wait for it" not in later.output
    assert _keys(migrated, "events") == set()
    history = runner.invoke(main, ["pack", "history", "--rules", str(folder), "--db", db_url, "--format", "json"])
    rows = json.loads(history.output)
    assert [(r["version"], r["announced"], r["status"], r["not_before"]) for r in rows] == [
        ("1", None, "first version", None),
        ("2", str(announced), "short", str(not_before)),
    ]


def test_plan_says_which_datasets_wait(migrated: sa.Engine, db_url: str, folder: Path, pinned_today: dt.date) -> None:
    effective = pinned_today + dt.timedelta(days=10)
    planned = CliRunner().invoke(
        main, ["plan", "--rules", str(folder), "--db", db_url, "--as-of", str(effective), "--format", "json"]
    )
    assert planned.exit_code == 0, planned.output
    assert "without --accept-short-notice, run leaves datasets events waiting and runs the others under version 1" in (
        planned.output
    )


def test_announced_dates_by_hand(tmp_path: Path) -> None:
    """Seen 1 May; P8D. Announced 3 May: not before 11 May. Announced 20 April (before the sighting): 9 May."""
    v1 = load_file(_write(tmp_path, "v1.yaml", _version("1", "2020-01-01", "P1Y")))
    later = load_file(_write(tmp_path, "v2.yaml", _version("2", "2026-05-10", "P1Y", "2026-05-03")))
    earlier = load_file(_write(tmp_path, "v3.yaml", _version("3", "2026-05-09", "P1Y", "2026-04-20")))
    seen = {v.digest: dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC) for v in (v1, later, earlier)}
    catalog = [v1, later, earlier]
    got_later = notice.status(later, catalog, seen)
    got_earlier = notice.status(earlier, catalog, seen)
    assert (got_later.status, got_later.not_before) == ("short", dt.date(2026, 5, 11))
    assert (got_earlier.status, got_earlier.not_before) == ("ok", dt.date(2026, 5, 9))
    assert got_later.refuses(dt.datetime(2026, 5, 10, 23, tzinfo=dt.UTC))
    assert not got_later.refuses(dt.datetime(2026, 5, 11, tzinfo=dt.UTC))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_what_waits_by_hand(tmp_path: Path) -> None:
    """A dataset waits when its rules change; a pack-wide change or a change to every dataset holds back all."""
    v1 = load_file(_write(tmp_path, "v1.yaml", _version("1", "2020-01-01", "P1Y")))
    changed = load_file(_write(tmp_path, "v2.yaml", _version("2", "2026-05-10", "P6M")))
    assert notice.waiting_datasets(changed, v1) == {"events"}
    relabelled = load_file(_write(tmp_path, "v3.yaml", _version("3", "2026-05-10", "P1Y", "2026-05-01")))
    assert notice.waiting_datasets(relabelled, v1) == set()
    zoned = _version("4", "2026-05-10", "P6M").replace("notice: P8D\n", "notice: P8D\ntimezone: Europe/Paris\n")
    assert notice.waiting_datasets(load_file(_write(tmp_path, "v4.yaml", zoned)), v1) is None
    both = _version("5", "2026-05-10", "P6M").replace("period: P1Y", "period: P2Y")
    assert notice.waiting_datasets(load_file(_write(tmp_path, "v5.yaml", both)), v1) is None
    follower = _version("6", "2026-05-10", "P1Y") + (
        "  lines:\n    table: lines\n    key: id\n    basis: with their event\n"
        "    follows: {dataset: events, via: event_id, on: {purged: purged}}\n"
        "    lifecycle:\n      - to: purged\n        action: delete\n"
    )
    with_lines = load_file(_write(tmp_path, "v6.yaml", follower))
    lines_changed = load_file(_write(tmp_path, "v7.yaml", follower.replace("with their event", "as their event")))
    # lines follows events: they move in one transaction, so they wait together.
    assert notice.waiting_datasets(lines_changed, with_lines) == {"events", "lines"}
    # A dataset the new version adds waits (the version before has no rules for it).
    assert notice.waiting_datasets(with_lines, v1) == {"lines"}


@pytest.mark.parametrize(
    ("announced", "effective", "notice_line", "message"),
    [
        (
            "2026-05-11",
            "2026-05-10",
            "notice: P8D\n",
            "announced: announced 2026-05-11 is after effective_from 2026-05-10: "
            "a version cannot be announced after it takes effect",
        ),
        (
            "2026-05-01",
            "2026-05-10",
            "",
            "announced: 'announced' only moves the start of a notice period; add 'notice' (e.g. P8D) or remove it",
        ),
        ("2026-05-01T10:00:00", "2026-05-10", "notice: P8D\n", "announced: announced is a date (YYYY-MM-DD)"),
    ],
)
def test_bad_announced_is_refused_at_its_line(
    tmp_path: Path, announced: str, effective: str, notice_line: str, message: str
) -> None:
    text = _version("2", effective, "P1Y", announced).replace("notice: P8D\n", notice_line)
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(PackError) as caught:
        load_file(path)
    assert str(caught.value).startswith(f"{path}:4: {message}"), str(caught.value)


def test_without_announced_a_short_version_holds_back_only_what_it_changes(
    migrated: sa.Engine, db_url: str, folder: Path, pinned_today: dt.date
) -> None:
    """First seen today, effective in 5 days, P8D, no `announced`: logs run under version 1, events wait."""
    today = pinned_today
    effective = today + dt.timedelta(days=5)
    (folder / "v2.yaml").write_text(_version("2", effective, "P6M"))
    base = ["run", "--rules", str(folder), "--db", db_url, "--no-progress", "--allow-future-as-of", "--as-of"]
    held = CliRunner().invoke(main, [*base, str(effective), "--format", "json"], env=ENV)
    assert held.exit_code == 0, held.output
    rows = json.loads(held.stdout)  # the log lines (a notice_waiting warning among them) go to stderr
    assert '"event": "notice_waiting"' in held.stderr
    assert [(r["dataset"], r["transition"]) for r in rows] == [("logs", "active->purged"), ("events", "WAITING")]
    assert _keys(migrated, "logs") == {2}
    assert _keys(migrated, "events") == {1}
