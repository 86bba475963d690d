"""What ``plan`` prints, as data: :class:`PlanSummary`, filled by the planner's counts
(:mod:`retention.engine.plan_counts`) and compared with the previous plan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from retention.engine.plan_values import Batch


@dataclass
class PlanSummary:
    """What plan prints: per dataset and transition counts, due and clock ranges, samples;
    anomalies; what holds hold back; and the change since the previous plan."""

    pack_id: str
    pack_digest: str
    as_of: dt.datetime
    transitions: dict[str, dict[str, int]] = field(default_factory=dict)
    anomalies: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    due_range: dict[str, dict[str, tuple[dt.datetime, dt.datetime]]] = field(default_factory=dict)
    clock_range: dict[str, dict[str, tuple[dt.datetime, dt.datetime]]] = field(default_factory=dict)
    held_back: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[str, Any] | None = None  # {"run_id", "as_of", "counts"} of the last plan
    awaiting_review: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # dropped whole, per dataset
    notes: list[str] = field(default_factory=list)  # what the reader should know about how this plan was made

    def add(self, batch: Batch, sample_size: int = 3) -> None:
        for follower in batch.followers:
            self.add(follower, sample_size)
        if batch.review:
            self.awaiting_review[batch.dataset] = self.awaiting_review.get(batch.dataset, 0) + len(batch.review)
        per = self.transitions.setdefault(batch.dataset, {})
        samples = self.samples.setdefault(batch.dataset, {})
        ranges = self.due_range.setdefault(batch.dataset, {})
        clocks = self.clock_range.setdefault(batch.dataset, {})
        for from_state, to_state, moves in batch.transitions():
            name = f"{from_state}->{to_state}"
            per[name] = per.get(name, 0) + len(moves)
            keys = samples.setdefault(name, [])
            keys.extend(m.record_key for m in moves[: max(0, sample_size - len(keys))])
            dues = [s.due_at for m in moves for s in m.steps if s.to_state == to_state]
            _widen(ranges, name, min(dues), max(dues))
            seen = [m.clock_at for m in moves if m.clock_at is not None]
            if seen:
                _widen(clocks, name, min(seen), max(seen))

    def total(self) -> int:
        return sum(sum(v.values()) for v in self.transitions.values())

    def delta(self, dataset: str, transition: str) -> tuple[int | None, int | None]:
        """(count in the previous plan, change since then); None without a previous plan."""
        if self.previous is None:
            return None, None
        before = self.previous["counts"].get(dataset, {}).get(transition, 0)
        return before, self.transitions.get(dataset, {}).get(transition, 0) - before

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per dataset and transition (datasets with nothing due get one row)."""
        result = []
        names = list(self.transitions) + [n for n in self.awaiting_review if n not in self.transitions]
        if self.previous:
            names += [n for n in self.previous["counts"] if n not in names]
        for dataset in names:
            anomalies = self.anomalies.get(dataset, {})
            held = sum(h["count"] for h in self.held_back if h["dataset"] == dataset)
            base = {
                "dataset": dataset,
                "anomalies": ", ".join(f"{k} {v}" for k, v in anomalies.items() if v),
                "held_back": held or None,
                "awaiting_review": self.awaiting_review.get(dataset) or None,
            }
            transitions = dict(self.transitions.get(dataset, {}))
            for name in (self.previous or {}).get("counts", {}).get(dataset, {}):
                transitions.setdefault(name, 0)
            if not transitions:
                result.append({**base, "transition": "-", "count": 0})
            for name, count in transitions.items():
                due = self.due_range.get(dataset, {}).get(name)
                clock = self.clock_range.get(dataset, {}).get(name)
                before, change = self.delta(dataset, name)
                result.append(
                    {
                        **base,
                        "transition": name,
                        "count": count,
                        "due_from": due[0] if due else None,
                        "due_to": due[1] if due else None,
                        "clock_from": clock[0] if clock else None,
                        "clock_to": clock[1] if clock else None,
                        "sample_keys": " ".join(self.samples.get(dataset, {}).get(name, [])),
                        "previous": before,
                        "change": change,
                    }
                )
        return result

    def as_dict(self) -> dict[str, Any]:
        def enc(value: Any) -> Any:
            return value.isoformat() if isinstance(value, dt.datetime) else value

        datasets: dict[str, Any] = {}
        for row in self.rows():
            entry = datasets.setdefault(
                row["dataset"],
                {
                    "transitions": {},
                    "anomalies": self.anomalies.get(row["dataset"], {}),
                    "held_back": [h for h in self.held_back if h["dataset"] == row["dataset"]],
                },
            )
            if row["transition"] != "-":
                entry["transitions"][row["transition"]] = {
                    k: enc(row[k])
                    for k in (
                        "count",
                        "due_from",
                        "due_to",
                        "clock_from",
                        "clock_to",
                        "previous",
                        "change",
                    )
                } | {"samples": self.samples.get(row["dataset"], {}).get(row["transition"], [])}
        return {
            "pack": self.pack_id,
            "pack_digest": self.pack_digest,
            "as_of": self.as_of.isoformat(),
            "total": self.total(),
            "previous_plan": (
                {"run_id": self.previous["run_id"], "as_of": enc(self.previous["as_of"])} if self.previous else None
            ),
            "datasets": datasets,
            "partitions_to_drop": self.partitions,
            "notes": self.notes,
        }


def _widen(
    ranges: dict[str, tuple[dt.datetime, dt.datetime]],
    name: str,
    low: dt.datetime,
    high: dt.datetime,
) -> None:
    if name in ranges:
        low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
    ranges[name] = (low, high)
