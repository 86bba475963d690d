"""Walking a record's lifecycle: from its state and its reasons' due instants to the steps it takes.

Defined once in docs/rules.md ("How a run decides"): every reason gives a due
instant per state, and :func:`advance` takes the earliest, state after state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.plan_values import Step
from retention.policy.model import Dataset, Pack
from retention.timing.clock import Period, Schedule, chain_delay, due_instant, local_date, start_of_day


def _next_states(dataset: Dataset, origin: str) -> list[str]:
    states = dataset.states
    return states[states.index(origin) + 1 :]


def delay_due(
    pack: Pack, dataset: Dataset, target: str, entered: dt.datetime, clock_day: dt.date | None = None
) -> dt.datetime:
    """When ``target`` is due after the previous state was entered at ``entered``.

    ``clock_day``: the event the record's clock marks (``after_from: clock``).
    """
    step = dataset.step_to(target)
    last_kept = local_date(entered, pack.timezone) - dt.timedelta(days=1)
    last_kept = chain_delay(step.after, step.counted_from, last_kept, clock_day)
    # A state entered at an expiry clock's instant, not at a midnight: P0D keeps that instant.
    return max(entered, due_instant(last_kept + dt.timedelta(days=1), pack.timezone))


def delay_condition(
    pack: Pack, dataset: Dataset, target: str, since: Any, clock_day: Any, as_of: dt.datetime
) -> ColumnElement[bool]:
    """State rows (``since``, ``clock_day`` columns) whose delay to ``target`` has run out by ``as_of``.

    The set-based form of :func:`delay_due`: the cutoffs are computed once.
    """
    step = dataset.step_to(target)
    entered = since <= as_of
    previous = sa.and_(since < _delay_cutoff(pack, [step.after], as_of), entered)
    if step.counted_from == "previous":
        return previous
    today = local_date(as_of, pack.timezone)
    last_event = Schedule(step.after).last_event_due_by(today)
    if step.counted_from == "entry":
        # Counted from the entry day itself: one day later than ``previous``.
        return sa.and_(since < start_of_day(last_event + dt.timedelta(days=1), pack.timezone), entered)
    by_clock = sa.and_(clock_day.is_not(None), clock_day <= sa.literal(last_event, sa.Date()), entered)
    return sa.or_(by_clock, sa.and_(clock_day.is_(None), previous))


def _delay_cutoff(pack: Pack, delays: Sequence[Period], as_of: dt.datetime) -> dt.datetime:
    """The ``since`` instant before which the chain of ``delays`` has run out by ``as_of``.

    ``since`` is always the first instant of a local day D; the last state of
    the chain is due on the schedule's due date for the event day D - 1.
    """
    today = local_date(as_of, pack.timezone)
    schedule = Schedule(delays[0], tuple(delays[1:]))
    last_event = schedule.last_event_due_by(today)
    return start_of_day(last_event + dt.timedelta(days=2), pack.timezone)


def steps_from_state(
    pack: Pack,
    dataset: Dataset,
    origin: str,
    since: dt.datetime,
    as_of: dt.datetime,
    clock_day: dt.date | None = None,
) -> tuple[Step, ...]:
    """The chain of transitions due by delays alone for a record that entered ``origin`` at ``since``."""
    return advance(pack, dataset, origin, since, None, None, {}, as_of, clock_day)


def steps_from_active(dataset: Dataset, due: dict[str, dt.datetime], as_of: dt.datetime) -> tuple[Step, ...]:
    """The chain of transitions an active record's own clocks make due (``due`` per state)."""
    steps: list[Step] = []
    current = "active"
    for target in _next_states(dataset, "active"):
        when = due[target]
        if when > as_of:
            break
        steps.append(Step(current, target, when))
        current = target
    return tuple(steps)


def advance(
    pack: Pack,
    dataset: Dataset,
    state: str,
    since: dt.datetime | None,
    own_first: dt.datetime | None,
    erasure: tuple[str, dt.datetime] | None,
    follow: dict[str, dt.datetime],
    as_of: dt.datetime,
    clock_day: dt.date | None = None,
) -> tuple[Step, ...]:
    """Walk a record's lifecycle from ``state``, each state at its earliest due instant (docs/rules.md).

    ``own_first``: the own clocks' due instant for the first state (active
    records); ``erasure``: (target state, instant); ``follow``: follower
    state -> earliest instant a leader state makes it due.
    """
    states = dataset.states
    current, entered = state, since
    steps: list[Step] = []
    erasure_reach = states.index(erasure[0]) if erasure is not None else -1
    for index in range(states.index(state) + 1, len(states)):
        target = states[index]
        dues: list[dt.datetime] = []
        if current == "active":
            if own_first is not None and index == 1:
                dues.append(own_first)
        elif entered is not None:
            dues.append(delay_due(pack, dataset, target, entered, clock_day))
        if erasure is not None and index <= erasure_reach:
            dues.append(erasure[1])
        if target in follow:
            dues.append(follow[target])
        if not dues:
            break
        due = min(dues)
        if due > as_of:
            break
        steps.append(Step(current, target, due))
        current, entered = target, due
    return tuple(steps)
