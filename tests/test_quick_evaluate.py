"""The batch evaluator's inline reading (retention.engine.quick_evaluate) gives what evaluate_record gives.

Values of every class a clock column can hold, and instants around the
policy zone's midnights and DST changes, each evaluated by both with a
cache of their own, cold and then warm: the results must be equal field
for field (readings, anomaly, due instants, governing rule).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from retention.engine import quick_evaluate
from retention.engine.evaluate import DueCache, evaluate_record
from retention.policy import validate_pack
from retention.policy.model import Pack

AS_OF = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def make_pack(clock: dict[str, Any], timezone: str = "Europe/Paris") -> Pack:
    return validate_pack(
        {
            "pack": "quick",
            "version": "1",
            "effective_from": dt.date(2000, 1, 1),
            "timezone": timezone,
            "datasets": {
                "events": {
                    "table": "events",
                    "key": "id",
                    "basis": "test",
                    "keep": [{"clock": clock, "period": "P13M"}],
                    "lifecycle": [{"to": "inactive", "after": "P1M"}, {"to": "purged", "action": "delete"}],
                }
            },
        },
        Path("<test>"),
        "",
    ).pack


KOLKATA = dt.timezone(dt.timedelta(hours=5, minutes=30))
VALUES: list[Any] = [
    None,
    "2024-05-17 10:11:12",
    "2024-05-17 10:11:12.123456",
    "2024-05-17 21:59:59",  # Paris summer midnight is 22:00 UTC
    "2024-05-17 22:00:00",
    "2024-12-31 22:59:59",  # Paris winter midnight is 23:00 UTC
    "2024-12-31 23:00:00",
    "2025-03-30 00:59:59",  # the spring-forward change
    "2025-03-30 01:00:00",
    "2025-10-26 00:59:59",  # the fall-back change
    "2025-10-26 01:00:00",
    "2024-02-29 12:00:00",
    "2025-02-30 12:00:00",  # impossible date
    "2025-13-01 00:00:00",
    "0000-00-00 00:00:00",  # MySQL zero date
    "1899-12-31 23:59:59",  # below the floor
    "1900-01-01 00:00:00",
    "2026-11-01 12:00:00",  # as-of exactly
    "2026-11-01 12:00:01",  # future
    "9999-12-31 23:59:59",
    "2024-05-17T10:11:12",  # other text forms go to the general reader
    "2024-05-17 10:11:12+02:00",
    "2024-05-17",
    "garbage",
    "",
    dt.datetime(2024, 5, 17, 21, 59, 59),  # naive, as MariaDB returns DATETIME
    dt.datetime(2024, 5, 17, 22, 0, 0),
    dt.datetime(2024, 5, 17, 22, 0, 0, tzinfo=dt.UTC),
    dt.datetime(2024, 5, 18, 3, 29, 0, tzinfo=KOLKATA),
    dt.datetime(2026, 11, 1, 12, 0, 1, tzinfo=dt.UTC),
    dt.datetime(1899, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    dt.date(2024, 5, 17),
    1715940672,
    Decimal("1715940672"),
    b"2024-05-17 10:11:12",
]


@pytest.mark.parametrize("timezone", ["Europe/Paris", "UTC", "Asia/Kolkata"])
def test_quick_evaluator_equals_evaluate_record(timezone: str) -> None:
    pack = make_pack({"column": "at", "type": "timestamptz"}, timezone)
    dataset = pack.datasets["events"]
    quick_cache: DueCache = {}
    general_cache: DueCache = {}
    evaluate = quick_evaluate.evaluator(pack, dataset, AS_OF, quick_cache)
    for _ in range(2):  # cold caches, then warm
        for raw in VALUES:
            assert evaluate([raw]) == evaluate_record(pack, dataset, [raw], AS_OF, general_cache), raw


def test_quick_evaluator_reads_the_plain_forms_inline() -> None:
    """With the date cached, a plain value is read without evaluate_record (else the fast path is dead code)."""
    pack = make_pack({"column": "at", "type": "timestamptz"})
    dataset = pack.datasets["events"]
    cache: DueCache = {}
    evaluate = quick_evaluate.evaluator(pack, dataset, AS_OF, cache)
    evaluate(["2024-05-17 10:11:12"])  # fills the cache for 2024-05-17
    cache[(dt.date(2024, 5, 17),)] = ({"inactive": AS_OF, "purged": AS_OF}, {"inactive": 0, "purged": 0})
    result = evaluate(["2024-05-17 10:00:00"])
    assert result.due == {"inactive": AS_OF, "purged": AS_OF}  # the planted entry, not a recomputation
    assert result.readings[0].day == dt.date(2024, 5, 17)
    assert result.readings[0].instant == dt.datetime(2024, 5, 17, 10, tzinfo=dt.UTC)


def test_other_clock_types_use_the_general_reader() -> None:
    for clock in ({"column": "at", "type": "timestamp"}, {"column": "at", "type": "date"}):
        pack = make_pack(clock)
        dataset = pack.datasets["events"]
        cache: DueCache = {}
        evaluate = quick_evaluate.evaluator(pack, dataset, AS_OF, cache)
        for raw in VALUES:
            assert evaluate([raw]) == evaluate_record(pack, dataset, [raw], AS_OF, {}), (clock, raw)


def test_planner_makers_build_the_same_frozen_values() -> None:
    """new_move / new_candidate give what Move(...) / Candidate(...) give: equal, same hash and repr, frozen."""
    import dataclasses

    from retention.engine.plan_values import Candidate, Move, Step, new_candidate, new_move

    step = Step("active", "purged", AS_OF)
    full = {
        "key": 7,
        "record_key": "7",
        "subject_key": "s",
        "steps": (step,),
        "clock_at": AS_OF,
        "request_id": 3,
        "review_id": None,
        "leader_key": None,
        "since": None,
        "recheck": True,
        "clock_day": dt.date(2024, 5, 17),
        "email": None,
        "email_pseudonym": "ab",
    }
    for kwargs in (full, {"key": 7, "record_key": "7", "subject_key": None, "steps": (step,)}):
        made, reference = new_move(**kwargs), Move(**kwargs)
        assert type(made) is Move and made == reference and hash(made) == hash(reference)
        assert repr(made) == repr(reference)
        assert dataclasses.replace(made, recheck=False) == dataclasses.replace(reference, recheck=False)
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.key = 8  # type: ignore[misc]
    candidate = {
        "key": 7,
        "record_key": "7",
        "subject_key": None,
        "leader_key": None,
        "state": "active",
        "since": None,
        "reach": 1,
        "clocks": ("2024-05-17 10:00:00",),
    }
    assert new_candidate(**candidate) == Candidate(**candidate)
    assert new_candidate(**candidate).email_pseudonym is None  # defaults filled
    with pytest.raises(TypeError):
        new_move(key=7, record_key="7", subject_key=None)  # steps missing
    with pytest.raises(TypeError):
        new_move(**full, colour="red")
