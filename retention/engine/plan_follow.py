"""What a follower dataset reads of its leader: the leader's record by address, and the leader's states that
carry the follower along (``follows:`` in docs/rules.md).

Pure functions of the pack and the connection, apart from the planner's
other conditions: the planner's ground (:mod:`retention.engine.plan_base`)
stays within its size, and a follower's reach reads as one piece.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.evaluate import reflect_table
from retention.engine.joins import email_expression
from retention.engine.plan_values import EngineTables, email_text
from retention.engine.rowfilter import compile_filter
from retention.policy.model import Dataset, Pack


def leader_by_email(
    conn: sa.Connection, pack: Pack, dataset: Dataset, email: ColumnElement[Any] | None
) -> ColumnElement[Any]:
    """``follows: {by: email}``: the key of the leader's record carrying this row's address.

    The leader dataset's rows (those its ``where`` admits) whose normalised
    address equals this row's; the greatest key when several do (a guest's
    latest order). Read live, as the address is now: a leader record whose
    address was masked or whose row is gone leads no longer, and a
    follower that left ``active`` keeps its leader in its state row.
    """
    assert dataset.follows is not None and email is not None
    leader = pack.datasets[dataset.follows.dataset]
    other = reflect_table(conn, leader.table, leader.schema_).alias("leader_by_email")
    other_email = email_expression(conn, other, leader)  # type: ignore[arg-type]
    assert other_email is not None
    conditions = [email_text(conn, other_email, beside_source=True) == email_text(conn, email, beside_source=True)]
    leader_filter = compile_filter(conn, other, leader)  # type: ignore[arg-type]
    if leader_filter is not None:
        conditions.append(leader_filter)
    query = sa.select(sa.func.max(other.c[leader.key])).where(*conditions).correlate_except(other)
    return query.scalar_subquery()


def catchup_condition(
    pack: Pack, dataset: Dataset, tables: EngineTables, leader_ref: ColumnElement[Any], state: str
) -> ColumnElement[bool]:
    """The leader already sits in a state whose follow target lies beyond ``state``."""
    assert dataset.follows is not None
    own = dataset.states
    parents = [p for p, target in follow_reach(pack, dataset).items() if own.index(target) > own.index(state)]
    if not parents:
        return sa.false()
    lrs = tables.record_states.alias("leader_state")
    return sa.exists().where(
        lrs.c.dataset == dataset.follows.dataset, lrs.c.record_key == leader_ref, lrs.c.state.in_(parents)
    )


def follow_reach(pack: Pack, dataset: Dataset) -> dict[str, str]:
    """Leader state -> the furthest own state it makes due (states it passed through count too)."""
    follows = dataset.follows
    assert follows is not None
    parent = pack.datasets[follows.dataset]
    own = dataset.states
    result: dict[str, str] = {}
    for index, parent_state in enumerate(parent.states[1:], start=1):
        reached = [follows.on[p] for p in parent.states[1 : index + 1] if p in follows.on]
        if reached:
            result[parent_state] = max(reached, key=own.index)
    return result
