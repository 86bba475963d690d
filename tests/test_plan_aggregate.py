"""plan's set-based summary of the active pass equals the summary built record by record.

``plan`` without a per-batch callback counts the active pass with aggregate
queries (no records fetched); with one, it walks every batch. Both must say
the same thing — counts, due and clock ranges, samples — on every database,
with holds in place and records already in later states.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
import sqlalchemy as sa
from test_engine import PACK, SECRET, UTC, build, loaded_pack

from retention.engine import execute
from retention.engine.plan import PlanSummary
from retention.subjects import events as subjects


def summaries(engine: sa.Engine, pack: Any, as_of: dt.datetime) -> tuple[PlanSummary, PlanSummary]:
    aggregated = execute.plan(engine, pack, as_of)
    walked = execute.plan(engine, pack, as_of, on_batch=lambda batch: None)
    return aggregated, walked


def assert_same(aggregated: PlanSummary, walked: PlanSummary) -> None:
    assert aggregated.total() > 0  # the comparison means something only if records move
    assert aggregated.transitions == walked.transitions
    assert aggregated.due_range == walked.due_range
    assert aggregated.clock_range == walked.clock_range
    assert aggregated.samples == walked.samples
    assert aggregated.anomalies == walked.anomalies
    assert aggregated.held_back == walked.held_back


@pytest.mark.parametrize("seed", [4, 5])
def test_aggregate_summary_equals_the_record_walk(migrated: sa.Engine, seed: int) -> None:
    """Over a shop's life (runs in between, so later states fill up), both summaries agree."""
    build(migrated, seed, n=60)
    pack = loaded_pack()
    rng = random.Random(seed)
    as_of = dt.datetime(2021, 1, 1, tzinfo=UTC)
    for _ in range(4):
        as_of += dt.timedelta(days=rng.randint(30, 400))
        assert_same(*summaries(migrated, pack, as_of))
        assert execute.run(migrated, pack, as_of, secret=SECRET).status == "succeeded"


def test_aggregate_summary_respects_holds(migrated: sa.Engine) -> None:
    """Records under a subject, record or dataset hold are left out by both paths alike."""
    build(migrated, 6, n=60)
    pack = loaded_pack()
    as_of = dt.datetime(2025, 6, 1, tzinfo=UTC)
    before = execute.plan(migrated, pack, as_of)
    with migrated.begin() as conn:
        for scope, extra in (
            ("subject", {"subject_key": "3"}),
            ("record", {"dataset": "visits", "record_key": "5"}),
            ("dataset", {"dataset": "logs"}),
        ):
            subjects.place_hold(conn, scope=scope, reason="case 1", placed_by="t", secret=SECRET, **extra)
    aggregated, walked = summaries(migrated, pack, as_of)
    assert_same(aggregated, walked)
    assert aggregated.held_back  # the holds did hold something back
    assert aggregated.transitions["logs"] == {}
    assert before.transitions["logs"]


def test_multi_clock_datasets_take_the_record_walk(migrated: sa.Engine) -> None:
    """A dataset with two clocks is summarised by walking its batches, with the same result."""
    build(migrated, 7, n=60)
    data = {**PACK, "datasets": {**PACK["datasets"]}}
    visits = dict(data["datasets"]["visits"])
    visits["keep"] = [*visits["keep"], {"clock": {"column": "account_id", "type": "epoch"}, "period": "P1D"}]
    data["datasets"]["visits"] = visits
    pack = loaded_pack(data)
    as_of = dt.datetime(2025, 6, 1, tzinfo=UTC)
    assert_same(*summaries(migrated, pack, as_of))


def test_samples_of_a_large_transition(migrated: sa.Engine) -> None:
    """Over 1000 due records (SQLite then finds samples by key order, not the clock index): same samples."""
    build(migrated, 8, n=700)
    pack = loaded_pack({**PACK, "batch_size": 500})
    aggregated, walked = summaries(migrated, pack, dt.datetime(2026, 1, 1, tzinfo=UTC))
    assert_same(aggregated, walked)
    assert aggregated.transitions["visits"]["active->purged"] > 1000
