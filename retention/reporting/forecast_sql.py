"""The forecast's weekly counts of a dataset's active pass, from one SQL aggregate.

The reference forecast plans at every week boundary and takes differences;
for the active pass of a dataset that only its own clocks can move (no
leader, no followers, no review), a plan at boundary *b* counts a
transition to the k-th state for exactly the records the active pass's
predicate selects with the first k states due by *b* (``reaching``). Due
tests are monotone in the as-of instant, so the week a record's k-th step
falls in is the first boundary at which those k due tests hold: one
``CASE`` per step over the boundaries, grouped in SQL, gives every week's
count at once. Nothing is walked in Python, so the cost is one scan of
the due records whatever their number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from retention.engine.lifecycle import _next_states

NOT_DUE = -1
"""The week column of a step not due by the horizon's end."""


def can_count_by_week(planner: Any) -> bool:
    """Whether the dataset's active pass is counted by :func:`active_by_week` (its clocks alone move it)."""
    return planner.sql is not None and planner.is_simple()


def active_by_week(conn: sa.Connection, planner: Any, boundaries: Sequence[dt.datetime]) -> dict[str, list[int]]:
    """Per transition of the active pass, its count in each week between ``boundaries``.

    ``planner`` plans at the last boundary. A transition is named when any
    record takes it by then, tonight's included (as every plan names it);
    steps due at or before the first boundary are tonight's run and counted
    in no week.
    """
    assert planner.sql is not None
    planner.probe(conn)
    sql = planner.sql
    targets = _next_states(planner.dataset, "active")
    weeks = len(boundaries) - 1
    columns = []
    for k in range(1, len(targets) + 1):
        whens = [
            (sa.and_(*(sql.due(state, at) for state in targets[:k])), sa.literal(index))
            for index, at in enumerate(boundaries)
        ]
        columns.append(sa.case(*whens, else_=sa.literal(NOT_DUE)).label(f"step{k}"))
    # Grouped in an outer query: PostgreSQL does not take a CASE with bound
    # parameters in GROUP BY as the same expression as in the select list.
    due = sa.select(*columns).select_from(sql.table).where(planner.reaching(conn, sql, 1)).subquery()
    query = sa.select(*due.c, sa.func.count().label("n")).group_by(*due.c)
    series: dict[str, list[int]] = {}
    for row in conn.execute(query):
        steps: list[Any] = list(row)[:-1]
        current = "active"
        for target, week in zip(targets, steps, strict=True):
            if week is None or int(week) == NOT_DUE:
                break
            counts = series.setdefault(f"{planner.name} {current}->{target}", [0] * weeks)
            if int(week) > 0:  # due in (boundaries[week - 1], boundaries[week]]
                counts[int(week) - 1] += int(row.n)
            current = target
    return series
