"""The transitions due at an as-of instant, as data.

``plan`` prints these batches; ``run`` hands the very same batches to the
executor one transaction at a time. Both walk the same generator, so what
plan lists is what run does (SPEC section 7), by construction.

How a record moves is defined once, in docs/rules.md ("How a run decides"):
every reason it has (its own clocks, the delay after its current state, an
erasure request, the leader it follows) gives a due instant per state, and
:func:`advance` walks the lifecycle taking the earliest. The passes below only
*find* records that may move; each record belongs to exactly one pass, so a
dry run that applies nothing counts every record once:

- ``erasure``: records of subjects with an open erasure request;
- one pass per later state (``inactive``, ``archived``...): records in it
  whose delay has run out, or whose leader already sits in a state they
  follow;
- ``active``: active records due by their own clocks (one index range on the
  clock, the bulk of a nightly run);
- ``catchup``: active records of a follower whose leader already sits in a
  followed state, not due by their own clocks;
- records whose leader moves in this run move *with* it, in the leader's
  batch and transaction (children first), and every own pass leaves them out.

For the active pass the SQL decides which records are due and how far
(``reach``); Python only supplies the due instants, and a disagreement is a
bug that stops the batch. The aggregate count of a simple dataset's active
pass counts the very same predicate.

The planner is built in parts, each a module named for what it holds, each
class adding to the one below: :mod:`~retention.engine.plan_base` (context,
identities, the conditions every pass shares: holds, erasure requests, scope,
reaches), :mod:`~retention.engine.plan_rows` (the columns a pass selects, read
as candidates), :mod:`~retention.engine.plan_reasons` (reasons and the moves they
make), :mod:`~retention.engine.plan_passes` (the passes, batch by batch) and
:mod:`~retention.engine.plan_counts` (set-based counts for ``plan``);
:class:`DatasetPlanner` is all of them. The values they pass around are in
:mod:`~retention.engine.plan_values`, the lifecycle walk in
:mod:`~retention.engine.lifecycle`. The names are re-exported from here.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from retention.engine.lifecycle import (
    advance,
    delay_condition,
    delay_due,
    steps_from_active,
    steps_from_state,
)
from retention.engine.order import dataset_order
from retention.engine.plan_base import (
    PlanContext,
    PlannerBase,
    Scope,
)
from retention.engine.plan_counts import PlannerCounts
from retention.engine.plan_passes import PlannerPasses
from retention.engine.plan_reasons import PlannerReasons
from retention.engine.plan_summary import PlanSummary
from retention.engine.plan_values import (
    Batch,
    Candidate,
    EngineTables,
    Move,
    Outcome,
    Step,
    Who,
    as_text,
    email_text,
    is_false,
    key_to_native,
)
from retention.engine.rowfilter import one_reflection, pack_tables, reflect_ahead


class DatasetPlanner(PlannerCounts):
    """Evaluates one dataset at one as-of instant, in keyset-paginated batches (see the module doc)."""


def build_planners(conn: sa.Connection, ctx: PlanContext) -> dict[str, DatasetPlanner]:
    """One planner per dataset, in execution order, followers attached to their leader.

    The planners reflect their tables in one :func:`one_reflection` block:
    a table several of them read is reflected once.
    """
    with one_reflection(conn):
        reflect_ahead(conn, pack_tables(ctx.pack.datasets.values()))
        planners = {name: DatasetPlanner(conn, ctx, name) for name in dataset_order(conn, ctx.pack)}
    for planner in planners.values():
        follows = planner.dataset.follows
        if follows is not None:
            leader = planners[follows.dataset]
            planner.leader = leader
            leader.followers.append(planner)
    if ctx.shard is not None:
        for planner in planners.values():
            planner.in_shard = ctx.shard.source(conn, planner)
            planner.state_in_shard = ctx.shard.state(conn, planner, ctx.tables.record_states)
    return planners


def iter_plan(conn: sa.Connection, ctx: PlanContext) -> Iterator[Batch]:
    """Every batch the run would execute, without writing anything."""
    for planner in build_planners(conn, ctx).values():
        for origin in planner.origins():
            yield from planner.batches(conn, origin)


__all__ = [
    "Batch",
    "Candidate",
    "DatasetPlanner",
    "EngineTables",
    "Move",
    "Outcome",
    "PlanContext",
    "PlanSummary",
    "PlannerBase",
    "PlannerCounts",
    "PlannerPasses",
    "PlannerReasons",
    "Scope",
    "Step",
    "Who",
    "advance",
    "as_text",
    "build_planners",
    "delay_condition",
    "delay_due",
    "email_text",
    "is_false",
    "iter_plan",
    "key_to_native",
    "steps_from_active",
    "steps_from_state",
]
