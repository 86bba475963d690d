"""One display zone: the CLI, the console and the HTML report show the same dates.

A pack in Asia/Tokyo (east of UTC) and one in America/New_York (west of it).
One event collected 2024-01-10 20:00 UTC, kept 13 months, is due at the
start of the day after its local date plus 13 months:

- Tokyo: collected 2024-01-11 05:00 JST, due 2025-02-12 00:00 JST
  (2025-02-11 15:00 UTC: its UTC date is a day early);
- New York: collected 2024-01-10 15:00 EST, due 2025-02-11 00:00 EST
  (2025-02-11 05:00 UTC).

The expected texts are worked out by hand here, not read from the code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from console_world import USERS, sign_in
from sqlalchemy.dialects import mysql

from retention.cli import main
from retention.engine import execute
from retention.errors import ConfigError
from retention.policy import load_file
from retention.timing import display
from retention.web import ConsoleSettings, accounts, create_app, server

SECRET = "display-zone-pseudonym-key"
PASSWORD = "correct horse battery staple"
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
PACK = """
pack: zoned
version: "1"
effective_from: 2020-01-01
timezone: {zone}
guard: {{max_share: 1.0}}
datasets:
  events:
    table: events
    key: id
    basis: 13 months
    keep:
      - clock: {{column: collected, type: timestamptz}}
        period: P13M
    lifecycle:
      - to: purged
        action: delete
"""
# zone -> (the due date in the pack's zone, its abbreviation in March)
EXPECTED = {"Asia/Tokyo": ("2025-02-12", "JST"), "America/New_York": ("2025-02-11", "EST")}
COLLECTED = dt.datetime(2024, 1, 10, 20, tzinfo=dt.UTC)
AS_OF = "2025-03-01"  # 00:00 in the pack's zone


@pytest.fixture(autouse=True)
def no_zone_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETENTION_TZ", raising=False)
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET)


def build(engine: sa.Engine, tmp_path: Path, zone: str) -> Path:
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", TS),
    )
    md.create_all(engine)
    value = COLLECTED if engine.dialect.name == "postgresql" else COLLECTED.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(events.insert(), [{"id": 1, "collected": value}])
    pack = tmp_path / "zoned.yaml"
    pack.write_text(PACK.format(zone=zone), encoding="utf-8")
    return pack


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def run_once(engine: sa.Engine, pack: Path) -> None:
    loaded = load_file(pack)
    as_of = dt.datetime.combine(dt.date.fromisoformat(AS_OF), dt.time(), display._zone(loaded.pack.timezone))
    result = execute.run(engine, loaded, as_of.astimezone(dt.UTC), secret=SECRET.encode())
    assert result.status == "succeeded", result


def due_cells(page: str) -> list[str]:
    """The Due column of the console's ledger table (the 7th cell of each entry row)."""
    rows = re.findall(r"<tr>\s*<td class=\"num\">\d+</td>(.*?)</tr>", page, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[5].strip() for row in rows]


@pytest.mark.parametrize("zone", sorted(EXPECTED))
def test_cli_console_and_report_show_the_same_date(migrated: sa.Engine, db_url: str, tmp_path: Path, zone: str) -> None:
    """The due date is the pack's local date everywhere; instants carry the zone's abbreviation."""
    due, abbreviation = EXPECTED[zone]
    pack = build(migrated, tmp_path, zone)

    plan = invoke("plan", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF, "--no-record").output
    assert f"{due} " in plan or f"{due}\n" in plan, plan
    assert f"{AS_OF} 00:00 {abbreviation}" in plan

    report_file = tmp_path / "report.html"
    invoke(
        "report", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF, "--horizon", "P1M", "--html", str(report_file)
    )
    page = report_file.read_text(encoding="utf-8")
    assert f"<td>{due}</td><td>{due}</td>" in page  # due from, due to
    assert f"as of {AS_OF} 00:00 {abbreviation}; dates in {zone}" in page

    run_once(migrated, pack)
    ledger = invoke("ledger", "show", "--rules", str(pack), "--db", db_url).output
    assert f"times in {zone}" in ledger
    assert due in ledger

    with migrated.begin() as conn:
        accounts.add_user(conn, USERS["auditor"], "auditor", PASSWORD, created_by="test")
    settings = ConsoleSettings(db_url=db_url, rules=pack, display_timezone=zone, secret=b"display-zone-cookie-secret")
    app = create_app(settings)
    try:
        with sign_in(app, "auditor") as browser:
            html = browser.get("/ledger").text
    finally:
        app.state.console.dispose()
    assert due_cells(html) == [due], due_cells(html)
    assert f"Dates and times in {zone}" in html
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d (JST|EST|EDT)", html) and " UTC<" not in html


def test_tz_overrides_the_pack_everywhere(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """TZ=America/New_York on a Tokyo pack: 2025-02-12 00:00 JST is 2025-02-11 10:00 EST."""
    pack = build(migrated, tmp_path, "Asia/Tokyo")
    run_once(migrated, pack)
    env = {"TZ": "America/New_York"}
    ledger = invoke("ledger", "show", "--rules", str(pack), "--db", db_url, env=env).output
    assert "times in America/New_York" in ledger and "2025-02-11 10:00" in ledger, ledger
    # --tz wins over TZ, RETENTION_TZ over TZ, --utc over both variables; --utc with --tz is refused
    tokyo = invoke("ledger", "show", "--rules", str(pack), "--db", db_url, "--tz", "Asia/Tokyo", env=env).output
    assert "times in Asia/Tokyo" in tokyo and "2025-02-12" in tokyo
    paris = invoke("ledger", "show", "--rules", str(pack), "--db", db_url, env={**env, "RETENTION_TZ": "Europe/Paris"})
    assert "times in Europe/Paris" in paris.output and "2025-02-11 16:00" in paris.output
    utc = invoke(
        "ledger", "show", "--rules", str(pack), "--db", db_url, "--utc", env={**env, "RETENTION_TZ": "Asia/Tokyo"}
    )
    assert "times in UTC" in utc.output and "2025-02-11 15:00" in utc.output
    both = CliRunner().invoke(
        main,
        ["--tz", "Asia/Tokyo", "ledger", "show", "--rules", str(pack), "--db", db_url, "--utc"],
        env={"RETENTION_PSEUDONYM_KEY": SECRET},
    )
    assert (both.exit_code, both.output.splitlines()) == (2, ["error: --utc and --tz name two zones: give one"])

    report_file = tmp_path / "report.html"
    invoke("report", "--rules", str(pack), "--db", db_url, "--as-of", "2025-03-01", "--html", str(report_file), env=env)
    page = report_file.read_text(encoding="utf-8")
    assert "as of 2025-02-28 10:00 EST; dates in America/New_York" in page

    history = invoke("pack", "history", "--rules", str(pack), "--db", db_url, env=env).output
    assert "times in America/New_York" in history
    assert "times in Asia/Tokyo" in invoke("pack", "history", "--rules", str(pack), "--db", db_url).output


def test_serve_shows_the_pack_zone_unless_asked(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` hands the console the zone the CLI would use (the server itself is not started)."""
    pack = build(migrated, tmp_path, "Asia/Tokyo")
    started: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda settings, host, port: started.append(settings))
    monkeypatch.setattr(server, "check_listen", lambda host, port: None)  # port 8080 may be taken on this machine
    invoke("serve", "--rules", str(pack), "--db", db_url)
    invoke("serve", "--rules", str(pack), "--db", db_url, env={"TZ": "America/New_York"})
    invoke("serve", "--db", db_url, "--tz", "Europe/Paris")
    assert [s.display_timezone for s in started] == ["Asia/Tokyo", "America/New_York", "Europe/Paris"]


def test_logs_name_the_display_zone_and_keep_utc_timestamps(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    pack = build(migrated, tmp_path, "America/New_York")
    result = invoke("--log-format", "json", "run", "--rules", str(pack), "--db", db_url, "--as-of", AS_OF)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert events and all(e.get("display_tz") == "America/New_York" for e in events), events
    assert all(e["timestamp"].endswith("Z") for e in events)


@pytest.mark.only_on("sqlite")
def test_scheduler_reads_cron_in_the_pack_zone(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --timezone, "30 2 * * *" fires at 02:30 in the pack's zone."""
    from retention.ops import scheduler

    pack = tmp_path / "zoned.yaml"
    pack.write_text(PACK.format(zone="Asia/Tokyo"), encoding="utf-8")
    zones: list[str] = []
    monkeypatch.setattr(scheduler, "serve", lambda job, cron, timezone: zones.append(timezone))
    invoke("scheduler", "--rules", str(pack), "--db", db_url)
    invoke("scheduler", "--rules", str(pack), "--db", db_url, "--timezone", "UTC")
    assert zones == ["Asia/Tokyo", "UTC"]


def test_an_unknown_zone_is_refused() -> None:
    result = CliRunner().invoke(main, ["--tz", "Mars/Olympus", "hold", "list"])
    assert result.exit_code == 2 and "unknown time zone" in result.output
    result = CliRunner().invoke(main, ["hold", "list", "--db", "sqlite://"], env={"RETENTION_TZ": "Mars/Olympus"})
    assert result.exit_code == 2 and "RETENTION_TZ: unknown time zone" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ConfigError):
        display.checked("EST5EDT,M3.2.0,M11.1.0", "TZ")


def test_zone_order_and_posix_forms() -> None:
    assert display.resolve(None, ["Asia/Tokyo"], {}) == "Asia/Tokyo"
    assert display.resolve(None, ["Asia/Tokyo", "Europe/Paris"], {}) == "UTC"
    assert display.resolve(None, ["Asia/Tokyo"], {"TZ": ":America/New_York"}) == "America/New_York"
    assert display.resolve(None, [], {"TZ": "America/New_York", "RETENTION_TZ": "Europe/Paris"}) == "Europe/Paris"
    assert display.resolve("Asia/Tokyo", [], {"RETENTION_TZ": "Europe/Paris"}) == "Asia/Tokyo"
    assert display.checked("/usr/share/zoneinfo/Asia/Tokyo", "TZ") == "Asia/Tokyo"
