"""Hand-computed due instants: Regulation 1182/71 art. 3, DST, naive zones, financial years."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from retention.engine.evaluate import evaluate_record
from retention.policy import validate_pack
from retention.timing.clock import Period, PeriodSyntaxError, Schedule, YearEnd, action_deadline

UTC = dt.UTC


def pack_for(
    clock: dict[str, Any],
    period: str,
    *,
    anchor: str = "event",
    year_end: str = "12-31",
    lifecycle: list[dict[str, Any]] | None = None,
) -> Any:
    data = {
        "pack": "clock-test",
        "version": "1",
        "effective_from": dt.date(2000, 1, 1),
        "timezone": "Europe/Paris",
        "financial_year_end": year_end,
        "datasets": {
            "d": {
                "table": "t",
                "key": "id",
                "basis": "test",
                "keep": [{"clock": clock, "period": period, "anchor": anchor}],
                "lifecycle": lifecycle or [{"to": "purged", "action": "delete"}],
            }
        },
    }
    return validate_pack(data, Path("<test>"), "").pack


def due(clock: dict[str, Any], period: str, raw: Any, state: str = "purged", **kw: Any) -> dt.datetime:
    pack = pack_for(clock, period, **kw)
    evaluation = evaluate_record(pack, pack.datasets["d"], [raw], dt.datetime(2100, 1, 1, tzinfo=UTC))
    assert evaluation.anomaly is None
    return evaluation.due[state]


DATE = {"column": "c", "type": "date"}
AWARE = {"column": "c", "type": "timestamptz"}

# (description, clock, period, raw value, due instant in UTC) — all computed by hand.
CASES = [
    (
        "29 Feb + P1Y: kept through 28 Feb 2021, due 1 Mar 00:00 Paris",
        DATE,
        "P1Y",
        dt.date(2020, 2, 29),
        dt.datetime(2021, 2, 28, 23, 0, tzinfo=UTC),
    ),
    (
        "29 Feb + P3Y: kept through 28 Feb 2023, due 1 Mar 2023 00:00 Paris",
        DATE,
        "P3Y",
        dt.date(2020, 2, 29),
        dt.datetime(2023, 2, 28, 23, 0, tzinfo=UTC),
    ),
    (
        "29 Feb + P4Y lands on 29 Feb 2024 itself, due 1 Mar",
        DATE,
        "P4Y",
        dt.date(2020, 2, 29),
        dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC),
    ),
    (
        "31 Jan + P1M: kept through 28 Feb 2021, due 1 Mar",
        DATE,
        "P1M",
        dt.date(2021, 1, 31),
        dt.datetime(2021, 2, 28, 23, 0, tzinfo=UTC),
    ),
    (
        "31 Jan 2024 + P1M: leap year, kept through 29 Feb, due 1 Mar",
        DATE,
        "P1M",
        dt.date(2024, 1, 31),
        dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC),
    ),
    (
        "31 Mar 2021 + P13M: kept through 30 Apr 2022, due 1 May (CEST)",
        DATE,
        "P13M",
        dt.date(2021, 3, 31),
        dt.datetime(2022, 4, 30, 22, 0, tzinfo=UTC),
    ),
    (
        "P8D across spring DST: visit 25 Mar 2024 10:00 Paris, kept through 2 Apr, due 3 Apr 00:00 CEST",
        AWARE,
        "P8D",
        dt.datetime(2024, 3, 25, 9, 0, tzinfo=UTC),
        dt.datetime(2024, 4, 2, 22, 0, tzinfo=UTC),
    ),
    (
        "P8D across autumn DST: visit 22 Oct 2024 23:30 Paris (21:30Z), due 31 Oct 00:00 CET",
        AWARE,
        "P8D",
        dt.datetime(2024, 10, 22, 21, 30, tzinfo=UTC),
        dt.datetime(2024, 10, 30, 23, 0, tzinfo=UTC),
    ),
    (
        "P8D: 23:30Z on 29 Mar 2024 is already 30 Mar in Paris, due 8 Apr 00:00 CEST",
        AWARE,
        "P8D",
        dt.datetime(2024, 3, 29, 23, 30, tzinfo=UTC),
        dt.datetime(2024, 4, 7, 22, 0, tzinfo=UTC),
    ),
    (
        "P0D: due at the first instant of the next local day",
        AWARE,
        "P0D",
        dt.datetime(2023, 6, 15, 12, 0, tzinfo=UTC),
        dt.datetime(2023, 6, 15, 22, 0, tzinfo=UTC),
    ),
    (
        "naive 2023-02-28 23:30 declared UTC is 1 Mar 00:30 in Paris: + P1M kept through 1 Apr, due 2 Apr",
        {"column": "c", "type": "timestamp", "timezone": "UTC"},
        "P1M",
        dt.datetime(2023, 2, 28, 23, 30),
        dt.datetime(2023, 4, 1, 22, 0, tzinfo=UTC),
    ),
    (
        "the same naive value declared Europe/Paris is 28 Feb: + P1M kept through 28 Mar, due 29 Mar",
        {"column": "c", "type": "timestamp", "timezone": "Europe/Paris"},
        "P1M",
        dt.datetime(2023, 2, 28, 23, 30),
        dt.datetime(2023, 3, 28, 22, 0, tzinfo=UTC),
    ),
    (
        "epoch 1709247600 is 1 Mar 2024 00:00 Paris: + P3Y due 2 Mar 2027",
        {"column": "c", "type": "epoch"},
        "P3Y",
        1709247600,
        dt.datetime(2027, 3, 1, 23, 0, tzinfo=UTC),
    ),
    (
        "epoch string 1709247599 is 29 Feb 2024 23:59:59 Paris: + P3Y kept through 28 Feb 2027, due 1 Mar",
        {"column": "c", "type": "epoch_text"},
        "P3Y",
        "1709247599",
        dt.datetime(2027, 2, 28, 23, 0, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(("text", "clock", "period", "raw", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_hand_computed_due_instants(
    text: str, clock: dict[str, Any], period: str, raw: Any, expected: dt.datetime
) -> None:
    """Each due instant matches the value computed by hand in its description."""
    assert due(clock, period, raw) == expected


def test_invoice_anchored_at_the_financial_year_end() -> None:
    """Invoice 2016-03-15, year end 31 Dec, P10Y: kept through 31 Dec 2026, due 2027-01-01 00:00 Paris."""
    assert due(DATE, "P10Y", dt.date(2016, 3, 15), anchor="financial_year_end") == dt.datetime(
        2026, 12, 31, 23, 0, tzinfo=UTC
    )


def test_financial_year_ending_in_june() -> None:
    """Year end 30 June: an invoice of 2016-08-01 closes on 30 Jun 2017, + P10Y due 1 Jul 2027 (CEST)."""
    assert due(DATE, "P10Y", dt.date(2016, 8, 1), anchor="financial_year_end", year_end="06-30") == (
        dt.datetime(2027, 6, 30, 22, 0, tzinfo=UTC)
    )
    assert due(DATE, "P10Y", dt.date(2016, 6, 30), anchor="financial_year_end", year_end="06-30") == (
        dt.datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    )


def test_chained_delays() -> None:
    """Inactive after P1Y, archived a month later, purged 5 years after that."""
    lifecycle = [
        {"to": "inactive", "action": "deactivate", "set": {"a": False}},
        {
            "to": "archived",
            "after": "P1M",
            "action": "archive",
            "columns": ["id"],
            "then": "delete",
        },
        {"to": "purged", "after": "P5Y"},
    ]
    kw = {"lifecycle": lifecycle}
    # last kept 31 Jan 2021 -> inactive 1 Feb; archive month runs 31 Jan -> 28 Feb, due 1 Mar;
    # purge: 28 Feb 2021 + 5Y = 28 Feb 2026, due 1 Mar 2026.
    assert due(DATE, "P1Y", dt.date(2020, 1, 31), "inactive", **kw) == dt.datetime(2021, 1, 31, 23, tzinfo=UTC)
    assert due(DATE, "P1Y", dt.date(2020, 1, 31), "archived", **kw) == dt.datetime(2021, 2, 28, 23, tzinfo=UTC)
    assert due(DATE, "P1Y", dt.date(2020, 1, 31), "purged", **kw) == dt.datetime(2026, 2, 28, 23, tzinfo=UTC)


@pytest.mark.parametrize("text", ["P3Y", "P13M", "P8D", "P2W", "P1Y6M", "P0D"])
def test_periods_accepted(text: str) -> None:
    """ISO 8601 calendar durations parse and print back unchanged (weeks as days)."""
    parsed = Period.parse(text)
    assert str(parsed) == {"P2W": "P14D"}.get(text, text)


@pytest.mark.parametrize("text", ["P3 years", "-P3Y", "PT12H", "3Y", "", "P", "P1.5Y"])
def test_periods_refused(text: str) -> None:
    """Anything but whole calendar units is refused."""
    with pytest.raises(PeriodSyntaxError):
        Period.parse(text)


def test_schedule_cutoff_inverts_due_date_at_month_ends() -> None:
    """The latest clock date due by 1 Mar 2023 under P3Y is 29 Feb 2020 (28 Feb and 29 Feb both due)."""
    schedule = Schedule(Period(years=3))
    assert schedule.last_event_due_by(dt.date(2023, 3, 1)) == dt.date(2020, 2, 29)
    assert schedule.last_event_due_by(dt.date(2023, 2, 28)) == dt.date(2020, 2, 27)
    assert YearEnd.parse("06-30").close_of(dt.date(2016, 7, 1)) == dt.date(2017, 6, 30)


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (dt.date(2021, 1, 31), dt.date(2021, 3, 1)),  # 28 Feb 2021 is a Sunday -> Monday 1 Mar
        (dt.date(2024, 2, 29), dt.date(2024, 3, 29)),  # Friday
        (dt.date(2024, 4, 6), dt.date(2024, 5, 6)),  # 6 May 2024 is a Monday
        (dt.date(2023, 9, 30), dt.date(2023, 10, 30)),  # 30 Oct 2023 is a Monday
        (dt.date(2022, 3, 12), dt.date(2022, 4, 12)),  # Tuesday
        (dt.date(2025, 4, 12), dt.date(2025, 5, 12)),  # 12 May 2025: Monday
        (dt.date(2025, 2, 15), dt.date(2025, 3, 17)),  # 15 Mar 2025 is a Saturday -> Monday 17
    ],
)
def test_action_deadline_moves_off_weekends(received: dt.date, expected: dt.date) -> None:
    """One month to act; a deadline on Saturday or Sunday moves to the next Monday."""
    assert action_deadline(received, Period(months=1)) == expected
