"""Pack clauses that must take effect: the refusals and warnings of docs/rules.md, 'Clauses that take effect'.

Apart from the model so that ``Dataset`` stays a description of a dataset; the
model's validator and ``Dataset.dominated_keeps`` call in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from retention.timing.clock import Period


class Dataset(Protocol):
    """What these checks read of ``policy.model.Dataset`` (a protocol: the model imports this module)."""

    @property
    def key(self) -> str: ...
    @property
    def lifecycle(self) -> Sequence[Any]: ...
    @property
    def keep(self) -> Sequence[Any]: ...
    @property
    def review(self) -> bool: ...
    @property
    def partitioned(self) -> bool: ...

    @property
    def states(self) -> list[str]: ...


def refuse_idle_clauses(dataset: Dataset) -> None:
    """Raise ValueError (the loader adds file:line) for a clause the engine would accept and never act on."""
    for index, step in enumerate(dataset.lifecycle):
        written = [*(step.set or {}), *(step.mask or {})]
        if dataset.key in written:
            what = "set" if dataset.key in (step.set or {}) else "mask"
            raise ValueError(
                f"@lifecycle.{index}.{what}.{dataset.key}: {dataset.key} is the dataset's key, which names the record "
                "in the engine's tables; changing it would make the row a new record, not move this one"
            )
        if step.columns is not None and len(set(step.columns)) != len(step.columns):
            raise ValueError(f"@lifecycle.{index}.columns: a column is named twice")
    if dataset.lifecycle[0].after != Period() and not dataset.keep:
        raise ValueError(
            "@lifecycle.0.after: the first step's 'after' runs from the end of the keep periods, and the "
            "dataset has none, so it would delay nothing; a leader or an erasure moves it at once"
        )
    if dataset.review and "purged" not in dataset.states:
        raise ValueError(
            "@review: review holds back purges for approval, and the lifecycle has no step to purged; "
            "remove review or add the purge"
        )
    if dataset.partitioned and not any(step.action == "drop_partition" for step in dataset.lifecycle):
        raise ValueError(
            "@partitioned: partitioned only lets 'drop_partition' drop whole partitions, and no step has "
            "that action; remove partitioned or use action: drop_partition"
        )
    for index, rule in enumerate(dataset.keep):
        if rule in dataset.keep[:index]:
            # Everything equal, basis included: the copy documents nothing the first does not.
            # A shorter rule on the same clock is only a warning (dominated_keeps): its basis
            # is an obligation of its own, listed by explain.
            raise ValueError(
                f"@keep.{index}: keep[{dataset.keep.index(rule)}] is the same rule (clock, period, anchor and "
                "basis), so this copy never decides when a record is due; remove it"
            )


def dominated_keeps(dataset: Dataset) -> list[tuple[int, int]]:
    """(rule, longer rule) pairs on the same clock and anchor where the first never decides when a record is due.

    Not refused: each rule carries its own basis (a 10-year accounting and a
    6-year tax obligation on the same clock), which explain reports; check
    warns so the reader knows which one decides.
    """
    pairs = []
    for index, rule in enumerate(dataset.keep):
        for other_index, other in enumerate(dataset.keep):
            if other_index == index or (other.clock, other.anchor) != (rule.clock, rule.anchor):
                continue
            if rule in dataset.keep[:index]:
                continue
            if _never_longer(rule.kept, other.kept) and (rule.kept != other.kept or other_index < index):
                pairs.append((index, other_index))
                break
    return pairs


def _never_longer(period: Period, other: Period) -> bool:
    """Whether ``period`` ends on or before ``other`` from every date.

    Months (years being twelve of them) are added first, clamped at month
    ends, then days: both additions are monotonic, so a period with no more
    months and no more days never ends later.
    """
    months = period.years * 12 + period.months
    return months <= other.years * 12 + other.months and period.days <= other.days
