"""Plan's held-back counts: how many due records each hold in place keeps, in a few statements per state.

Apart from the planner classes (``PlannerCounts.held_back`` calls in here) so
that no planner class grows past the size one reader holds in mind; every
comparison is the run's own hold test (``PlannerBase.held``), so plan and run
agree on what a hold keeps.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.lifecycle import _next_states, delay_condition
from retention.engine.plan_base import PlannerBase
from retention.engine.plan_values import Who


def held_back(planner: PlannerBase, conn: sa.Connection) -> list[dict[str, Any]]:
    """Per hold in place: how many of this dataset's due records it holds back (by their clocks and delays).

    A few statements per state whatever the number of holds (:func:`_held_counts`):
    a count per hold read the whole table once per hold, minutes for a
    thousand subject holds on 200,000 rows (bench/held_or.py).
    """
    h = planner.ctx.tables.holds
    holds = conn.execute(sa.select(h).where(h.c.released_at.is_(None)).order_by(h.c.id)).all()
    mine = [
        hold
        for hold in holds
        if (hold.scope == "subject" and planner.identified)
        or (hold.scope in ("dataset", "record") and hold.dataset == planner.name)
    ]
    if not mine:
        return []
    counts: Counter[int] = Counter()
    rs = planner.ctx.tables.record_states
    if planner.sql is not None:
        key_text = planner.text(conn, planner.key)
        due = [
            planner.sql.due(planner.dataset.states[1], planner.ctx.as_of),
            planner.included(),
            ~sa.exists().where(rs.c.dataset == planner.name, rs.c.record_key == key_text),
        ]
        counts.update(_held_counts(planner, conn, mine, planner.table, key_text, planner.live_who(conn), due))
    for origin in planner.dataset.states[1:-1]:
        target = _next_states(planner.dataset, origin)[0]
        delayed = delay_condition(
            planner.ctx.pack, planner.dataset, target, rs.c.since, rs.c.clock_day, planner.ctx.as_of
        )
        due = [
            rs.c.dataset == planner.name,
            rs.c.state == origin,
            delayed,
            planner.state_row_included(conn, rs.c.record_key),
            planner.state_in_shard,
        ]
        counts.update(_held_counts(planner, conn, mine, rs, rs.c.record_key, planner.state_who(), due))
    return [
        {
            "hold_id": hold.id,
            "scope": hold.scope,
            "dataset": planner.name,
            "count": counts[hold.id],
            "reason": hold.reason,
        }
        for hold in mine
        if counts[hold.id]
    ]


def _held_counts(
    planner: PlannerBase,
    conn: sa.Connection,
    holds: list[Any],
    source: sa.FromClause,
    key: ColumnElement[Any],
    who: Who | None,
    due: list[ColumnElement[bool]],
) -> Counter[int]:
    """How many of ``source``'s rows meeting ``due`` each of ``holds`` covers, by hold id.

    A dataset hold covers them all (one count); record holds are joined to
    the rows whose key one of them names; subject holds to the rows they
    name grouped by identity first (few groups), one equi-join per
    identity as in ``null_keys._matches``, a later identity's arm leaving
    out the pairs an earlier one matched, so that a hold naming a record
    both ways counts it once. Every comparison is the run's own (:meth:`PlannerBase.held`),
    so that plan and run agree: the record key in ``exact_text`` with
    ``merging=False`` (BINARY on SQLite, where a NOCASE key on the left
    would merge 'K9' and 'k9'), the address in ``open_erasure``'s exact
    collation.
    """
    h = planner.ctx.tables.holds
    in_place = h.c.released_at.is_(None)
    kinds = {hold.scope for hold in holds}
    found: Counter[int] = Counter()
    if "dataset" in kinds:
        everything = int(conn.execute(sa.select(sa.func.count()).select_from(source).where(*due)).scalar_one())
        found.update({hold.id: everything for hold in holds if hold.scope == "dataset"})
    if "record" in kinds:
        of_dataset = [in_place, h.c.scope == "record", h.c.dataset == planner.name]
        named = sa.select(h.c.record_key).where(*of_dataset, h.c.record_key.is_not(None)).correlate(None)
        # Grouped by key, compared as ``held`` compares it (a hold counts the records the run keeps); an
        # aggregate also keeps SQLite from flattening it into a scan of the table per record hold.
        exact = planner._dialect.exact_text(key, merging=False)
        rows = (
            sa.select(exact.label("k"), sa.func.count().label("n"))
            .select_from(source)
            .where(*due, exact.in_(named))
            .group_by(exact)
            .subquery()
        )
        query = (
            sa.select(h.c.id, sa.func.sum(rows.c.n))
            .select_from(rows)
            .join(h, planner._dialect.exact_text(rows.c.k, merging=False) == h.c.record_key)
            .where(*of_dataset)
            .group_by(h.c.id)
        )
        found.update({int(hold): int(n) for hold, n in conn.execute(query)})
    pairs = who.pairs(h) if who is not None else []
    if "subject" in kinds and pairs:
        subject = [in_place, h.c.scope == "subject"]
        labels = [f"i{i}" for i in range(len(pairs))]
        grouped = (
            sa.select(
                *(mine.label(label) for label, (mine, _) in zip(labels, pairs, strict=True)),
                sa.func.count().label("n"),
            )
            .select_from(source)
            .where(*due, sa.or_(*planner._named_in(who or Who(), h, *subject)))
            .group_by(*(mine for mine, _ in pairs))
            .subquery()
        )
        equal = [
            grouped.c[label].op("=", is_comparison=True)(
                planner._exact_email(theirs) if theirs is h.c.email else theirs
            )
            for label, (_, theirs) in zip(labels, pairs, strict=True)
        ]
        arms = []
        for i in range(len(labels)):
            # Not named by an earlier identity: none on either side, or two that differ (NULL-safe).
            earlier = [
                sa.or_(grouped.c[labels[j]].is_(None), pairs[j][1].is_(None), sa.not_(equal[j])) for j in range(i)
            ]
            arm = sa.select(h.c.id.label("r"), grouped.c.n).select_from(grouped).join(h, equal[i])
            arms.append(arm.where(*subject, *earlier))
        matched = sa.union_all(*arms).subquery() if len(arms) > 1 else arms[0].subquery()
        query = sa.select(matched.c.r, sa.func.sum(matched.c.n)).group_by(matched.c.r)
        found.update({int(hold): int(n) for hold, n in conn.execute(query)})
    return found
