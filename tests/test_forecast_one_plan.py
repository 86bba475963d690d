"""The forecast from one plan equals the forecast from one plan per week (issue 24: 123 s on the demo shop).

``report.forecast`` plans once, at the horizon's end: the active pass of a
dataset its clocks alone move is counted per week by one SQL aggregate, the
other passes' steps are counted in the week their due instant falls in; ``report.forecast_by_plans`` (the old
way, kept as the reference) plans at every week boundary and takes
differences. On the console world (a review dataset, a hold, an erasure
request, a follower dataset, records in later states) both must give the
same weekly counts, series by series.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from console_world import AS_OF, World

from retention.engine.plan import Batch, DatasetPlanner
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
def test_one_plan_forecast_equals_the_plan_per_week_forecast(
    world: World, migrated: sa.Engine, horizon: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.settings.rules is not None
    loaded = load_file(world.settings.rules)
    period = Period.parse(horizon)
    walked: set[tuple[str, str]] = set()
    batches = DatasetPlanner.batches

    def recording(self: DatasetPlanner, conn: sa.Connection, origin: str) -> Iterator[Batch]:
        walked.add((self.name, origin))
        return batches(self, conn, origin)

    for as_of in (AS_OF, AS_OF.replace(year=2027)):  # after the run, and a year on (every kind of step due)
        with monkeypatch.context() as patch:
            patch.setattr(DatasetPlanner, "batches", recording)
            fast = report.forecast(migrated, loaded, as_of, period)
        reference = report.forecast_by_plans(migrated, loaded, as_of, period)
        assert fast.starts == reference.starts
        assert fast.series == reference.series
        assert sum(sum(c) for c in reference.series.values()) > 0
    # Set-based: the active pass of a dataset its clocks alone move is counted by SQL, never walked;
    # a leader with followers (customers) and a review dataset (payment_tokens) are walked.
    assert {("invoices", "active"), ("analytics_events", "active"), ("review_access_logs", "active")}.isdisjoint(walked)
    assert {("customers", "active"), ("payment_tokens", "active")} <= walked
    later = report.forecast(migrated, loaded, AS_OF.replace(year=2027), period)
    assert any(name.endswith(report.REVIEWED) for name in later.series)  # payment_tokens: review: true
