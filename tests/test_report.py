"""The HTML report: its chart data equal plans at each week's as-of; it renders without errors."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.demo import build_shop
from retention.engine import execute
from retention.policy import load_file
from retention.reporting import report
from retention.timing.clock import Period

ROOT = Path(__file__).resolve().parent.parent
PACK = load_file(ROOT / "rules" / "marketplace.yaml")
AS_OF = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)


def chart_data(page: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="forecast-data">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1).replace("<\\/", "</"))


def test_chart_data_equal_plans_at_each_week(migrated: sa.Engine, tmp_path: Path) -> None:
    """Week i's bar is plan(end of week i) minus plan(start of week i), per dataset and transition."""
    build_shop(migrated, seed=31, customers=200, end=dt.date(2026, 11, 1))
    horizon = Period(months=2)
    summary = execute.plan(migrated, PACK, AS_OF)
    data = report.forecast(migrated, PACK, AS_OF, horizon)
    page = report.render(summary, data, horizon, {})
    embedded = chart_data(page)
    weeks = [AS_OF + dt.timedelta(weeks=i) for i in range(10)]  # 3 Nov 2026 + 2 months = 3 Jan 2027
    assert embedded["weeks"] == [w.isoformat() for w in weeks[:-1]]
    counts = [execute.plan(migrated, PACK, w).transitions for w in weeks]
    expected: dict[str, list[int]] = {}
    for before, after in itertools.pairwise(counts):
        for dataset in set(before) | set(after):
            for transition in set(before.get(dataset, {})) | set(after.get(dataset, {})):
                expected.setdefault(f"{dataset} {transition}", [])
    for name in expected:
        dataset, transition = name.split(" ", 1)
        expected[name] = [
            after.get(dataset, {}).get(transition, 0) - before.get(dataset, {}).get(transition, 0)
            for before, after in itertools.pairwise(counts)
        ]
    assert embedded["series"] == expected
    assert sum(sum(v) for v in expected.values()) > 0


@pytest.mark.only_on("sqlite")
def test_report_opens_in_headless_chromium(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """The page loads in Chromium with its script run and no console error."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    build_shop(migrated, seed=32, customers=100, end=dt.date(2026, 11, 1))
    page = tmp_path / "report.html"
    summary = execute.plan(migrated, PACK, AS_OF)
    page.write_text(
        report.render(summary, report.forecast(migrated, PACK, AS_OF, Period(months=1)), Period(months=1), {}),
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r'id="forecast-total"[^>]*>\d+ transitions forecast over \d+ weeks\.<', result.stdout)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
