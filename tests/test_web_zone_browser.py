"""Acceptance (issue 24, check 1): the console in headless Chromium shows the CLI's dates, east and west of UTC.

The console world's pack is in Europe/Paris, so its due instants are Paris
midnights: 18:00 the day before in New York, 08:00 the same day in Tokyo.
For each zone the console is served with that display zone (as ``serve
--tz`` or TZ set it), and every Due date of the ledger's first page must be
the date ``retention ledger show --tz ZONE`` prints for the same entry.
The person page's timeline (typed into its form, as an auditor would) must
show the dates ``retention ledger lookup --subject ID --tz ZONE`` prints.
Screenshots of the ledger, the person page, reviews, a review batch, the
forecast (one plan now, not one per week) and the certificate go to the
browser tests' folder (``test-artifacts/``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner
from console_world import World
from test_web_browser import CHROMIUM_FLAGS, Server, _executables, shot, sign_in, start_chromium, wait_for

from retention.cli import main
from retention.web import create_app

pytestmark = pytest.mark.browser

ZONES = ["America/New_York", "Asia/Tokyo"]


def cli_lookup_dates(db_url: str, zone: str, subject: str) -> dict[str, str]:
    """ "seq.item" -> the date part of the due cell of `retention ledger lookup --subject ID --tz ZONE`."""
    result = CliRunner().invoke(
        main, ["ledger", "lookup", "--db", db_url, "--subject", subject, "--tz", zone], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert f"times in {zone}" in result.output
    dues = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) == 8 and cells[0].isdigit():
            dues[f"{cells[0]}.{cells[1]}"] = cells[6][:10]
    return dues


def cli_due_dates(db_url: str, zone: str) -> dict[int, str]:
    """seq -> the date part of the Due cell of `retention ledger show --tz ZONE` (a wide table, one line a row)."""
    result = CliRunner().invoke(
        main, ["ledger", "show", "--db", db_url, "--tz", zone, "--limit", "0"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert f"times in {zone}" in result.output
    dues = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) == 7 and cells[0].isdigit():
            dues[int(cells[0])] = cells[5][:10]
    return dues


# slow: Chromium and a console per zone, 15-20 s each. The same dates over HTTP, east and west of UTC: the ledger
# page against `ledger show` is test_display_zone.py::test_cli_console_and_report_show_the_same_date (fast tier,
# three databases, each zone); the person page against `ledger lookup` is
# test_web_person.py::test_person_page_agrees_with_the_cli.
@pytest.mark.slow
@pytest.mark.only_on("sqlite")
@pytest.mark.parametrize("zone", ZONES)
def test_console_dates_equal_the_cli_dates(world: World, zone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    binary, driver_path = _executables()
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.delenv("RETENTION_TZ", raising=False)
    url = world.db_url
    cli = cli_due_dates(url, zone)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver: Any = start_chromium(options, driver_path)
    name = zone.split("/")[1].lower()
    try:
        with Server(create_app(replace(world.settings, display_timezone=zone))) as base:
            sign_in(driver, base)
            driver.get(f"{base}/ledger")
            wait_for(driver, lambda d: d.title.startswith("Ledger"))
            shot(driver, f"zone-{name}-ledger")
            console = {}
            for row in driver.find_elements(By.CSS_SELECTOR, "table.entries tbody tr"):
                cells = row.find_elements(By.TAG_NAME, "td")
                if cells[6].text:
                    console[int(cells[0].text)] = cells[6].text
            shown = {seq: cli[seq] for seq in console}
            assert console and console == shown, (console, shown)
            assert f"Dates and times in {zone}" in driver.find_element(By.TAG_NAME, "footer").text
            customer = str(world.customer_with_entries)
            driver.get(f"{base}/person")
            driver.find_element(By.NAME, "key").send_keys(customer)
            driver.find_element(By.CSS_SELECTOR, "form[action='/person'] button[type=submit]").click()
            wait_for(driver, lambda d: "The person you typed" in d.page_source, timeout=180)  # busy CI machines
            shot(driver, f"zone-{name}-person")
            timeline = {}
            for row in driver.find_elements(By.CSS_SELECTOR, "table.timeline tbody tr"):
                cells = row.find_elements(By.TAG_NAME, "td")
                timeline[cells[0].text] = cells[4].text
            expected = cli_lookup_dates(url, zone, customer)
            assert timeline and timeline == {k: v for k, v in expected.items() if k in timeline}, (timeline, expected)
            for path, label in [
                ("/reviews", "reviews"),
                (f"/reviews/{world.review_id}", "review"),
                ("/forecast", "forecast"),
                (f"/runs/{world.run_id}/certificate", "certificate"),
            ]:
                driver.get(f"{base}{path}")
                shot(driver, f"zone-{name}-{label}")
                assert "built-in method" not in driver.page_source
                assert not re.search(r"\d\d:\d\d UTC", driver.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.quit()
