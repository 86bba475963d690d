"""The forecast from one plan equals the forecast from one plan per week (issue 24: 123 s on the demo shop).

``report.forecast`` plans once, at the horizon's end, and counts each step
in the week its due instant falls in; ``report.forecast_by_plans`` (the old
way, kept as the reference) plans at every week boundary and takes
differences. On the console world (a review dataset, a hold, an erasure
request, a follower dataset, records in later states) both must give the
same weekly counts, series by series.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from console_world import AS_OF, World

from retention.policy import load_file
from retention.reporting import report
from retention.timing.clock import Period


@pytest.mark.parametrize(
    "horizon",
    [
        "P1M",
        # Three months a week at a time are 14 plans per as-of: minutes on a busy machine.
        pytest.param("P3M", marks=pytest.mark.slow),
    ],
)
def test_one_plan_forecast_equals_the_plan_per_week_forecast(world: World, migrated: sa.Engine, horizon: str) -> None:
    assert world.settings.rules is not None
    loaded = load_file(world.settings.rules)
    period = Period.parse(horizon)
    for as_of in (AS_OF, AS_OF.replace(year=2027)):  # after the run, and a year on (every kind of step due)
        fast = report.forecast(migrated, loaded, as_of, period)
        reference = report.forecast_by_plans(migrated, loaded, as_of, period)
        assert fast.starts == reference.starts
        assert fast.series == reference.series
        assert sum(sum(c) for c in reference.series.values()) > 0
    later = report.forecast(migrated, loaded, AS_OF.replace(year=2027), period)
    assert any(name.endswith(report.REVIEWED) for name in later.series)  # payment_tokens: review: true
