"""What ``plan`` and the subject commands count without walking batches: aggregates, anomalies,
holds held back, a subject's pending records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine import clock_counts, plan_held
from retention.engine.clock_read import Anomaly
from retention.engine.evaluate import (
    ANOMALIES,
    IGNORED_ROWS,
    NULL_KEYS,
    evaluate_record,
)
from retention.engine.lifecycle import _next_states
from retention.engine.plan_passes import PlannerPasses
from retention.engine.plan_summary import PlanSummary, _widen
from retention.engine.plan_values import Batch, Who, _without_clock_index


class PlannerCounts(PlannerPasses):
    """Set-based counts over a dataset: the active pass's aggregate, anomalies, holds, subjects."""

    # The invalid count a plan's aggregate read already made (as of, count), for anomaly_counts to take once.
    _invalid_counted: tuple[Any, int] | None = None

    # -- counts for plan summaries -----------------------------------------
    def can_aggregate(self) -> bool:
        """Whether the active pass can be summarised by set-based aggregates alone.

        Only its clocks can move an active record (no follows, no followers,
        no review), and it has one clock that SQL orders like time, so the due
        dates are monotone in it and its extremes give the due ranges.
        """
        return (
            self.sql is not None
            and self.is_simple()
            and len(self.sql.clocks) == 1
            and self.sql.clocks[0].kind != "epoch_text"
        )

    def aggregate_active(
        self, conn: sa.Connection, summary: PlanSummary, sample_size: int = 3, *, counts_only: bool = False
    ) -> None:
        """Add the active pass to ``summary`` from a few set-based queries, no record fetched.

        Counts what ``batches(conn, "active")`` moves, transition by
        transition, with the batches' own predicate (:meth:`reaching`): a
        record reaches the k-th state when its clocks make every state up to
        it due; the count, least and greatest clock in one pass per
        transition (:func:`clock_counts.tally`). ``counts_only`` (a guard): the
        counts alone, a plain ``count(*)`` that an index range can answer.
        """
        assert self.sql is not None and self.can_aggregate()
        self.probe(conn)
        sql = self.sql
        targets = _next_states(self.dataset, "active")
        per = summary.transitions.setdefault(self.name, {})
        current = "active"
        shared = None
        if not counts_only:
            # SQLite text: every transition's tally and the invalid count in one read of the table.
            conditions = [self.reaching(conn, sql, index + 1) for index in range(len(targets))]
            active = [self.included(), self.not_moved(conn)]
            shared = clock_counts.text_tallies(sql.clocks[0], conn, sql.table, conditions, active)
            if shared is not None:
                self._invalid_counted = (self.ctx.as_of, shared[1])
        for index, target in enumerate(targets):
            condition = self.reaching(conn, sql, index + 1)
            if shared is not None:
                count, low, high = shared[0][index]
            elif not counts_only:
                count, low, high = clock_counts.tally(sql.clocks[0], conn, sql.table, condition)
            else:
                count = clock_counts.count(sql.clocks[0], conn, sql.table, condition)
            if not count:
                break
            name = f"{current}->{target}"
            per[name] = per.get(name, 0) + count
            if counts_only:
                current = target
                continue
            for raw in (low, high):
                evaluation = evaluate_record(self.ctx.pack, self.dataset, [raw], self.ctx.as_of, self._due_cache)
                if evaluation.anomaly is not None or target not in evaluation.due:
                    raise AssertionError(
                        f"dataset {self.name}: SQL counts records due for {target} but the evaluator finds "
                        f"their clock extreme {evaluation.anomaly or 'not due'}; please report this bug"
                    )
                due = evaluation.due[target]
                _widen(summary.due_range.setdefault(self.name, {}), name, due, due)
                clock_at = evaluation.readings[0].moment(self.ctx.pack.timezone)
                if clock_at is not None:
                    _widen(summary.clock_range.setdefault(self.name, {}), name, clock_at, clock_at)
            samples = summary.samples.setdefault(self.name, {}).setdefault(name, [])
            if sample_size > len(samples):
                # Many due: walking the key order finds the first few at once,
                # where SQLite would sort every due record found by the clock
                # index. Few due: that index is the right way in.
                unindexed = count > 1000 and dialect_for(conn).samples_by_key_order
                source = _without_clock_index(sql) if unindexed else sql
                query = (
                    sa.select(sql.key)
                    .where(self.reaching(conn, source, index + 1))
                    .order_by(sql.key)
                    .limit(sample_size - len(samples))
                )
                samples.extend(str(k) for k in conn.execute(query).scalars())
            current = target

    def summarize(
        self,
        conn: sa.Connection,
        summary: PlanSummary,
        *,
        on_batch: Callable[[Batch], None] | None = None,
        sample_size: int = 3,
        counts_only: bool = False,
    ) -> None:
        """Add every pass of this dataset to ``summary``.

        The active pass of a simple dataset, usually nearly all of a large
        table's moves, is counted by aggregates; a caller that wants each
        batch (``on_batch``) gets the batch path throughout. ``counts_only``:
        the transitions' counts are all the caller reads (a guard), not the
        due and clock ranges.
        """
        summary.transitions.setdefault(self.name, {})
        for origin in self.origins():
            if origin == "active" and on_batch is None and self.can_aggregate():
                self.aggregate_active(conn, summary, sample_size, counts_only=counts_only)
                continue
            for batch in self.batches(conn, origin):
                summary.add(batch, sample_size)
                if on_batch is not None:
                    on_batch(batch)

    def anomaly_counts(self, conn: sa.Connection) -> dict[str, int]:
        """Active records skipped because of their clocks, per category (and related rows ignored).

        One statement, a count per category: each is an index range on a
        typed clock (NULL, zero, future; invalid is impossible there), so one
        scan classifying every row would read more than they do together
        (bench/RESULTS.md, "plan in one aggregate pass": tried, not kept).
        """
        if self.sql is None:
            nulls = _null_key_count(self)
            return {} if nulls is None else _listed(conn, {NULL_KEYS: nulls})
        self.probe(conn)
        active = [self.included(), self.not_moved(conn)]
        counted, self._invalid_counted = self._invalid_counted, None
        counts: dict[str, Any] = {
            category: sa.select(sa.func.count())
            .select_from(self.sql.table)
            .where(self._anomaly_for_count(conn, category), *active)
            .scalar_subquery()
            for category in ANOMALIES
        }
        if counted is not None and counted[0] == self.ctx.as_of:
            # Counted by this plan's read of the odd rows (clock_counts.text_tallies), on the same conditions.
            counts["invalid"] = sa.literal(counted[1], sa.Integer)
        ignoring = [c.ignored_count for c in self.sql.clocks if c.ignored_count is not None]
        if ignoring:
            # invalid_rows: ignore (issue 26): each unreadable related row an
            # active record's clock left out is counted, though none blocks it.
            per_record = sum(ignoring[1:], ignoring[0])
            counts[IGNORED_ROWS] = (
                sa.select(sa.func.coalesce(sa.func.sum(per_record), 0))
                .select_from(self.sql.table)
                .where(*active)
                .scalar_subquery()
            )
        if (nulls := _null_key_count(self)) is not None:
            counts[NULL_KEYS] = nulls
        return _listed(conn, counts)

    def _anomaly_for_count(self, conn: sa.Connection, category: Anomaly) -> ColumnElement[bool]:
        """The rows of ``category``: one clock's invalid values within index ranges (MariaDB), else as batches test."""
        assert self.sql is not None
        if category == "invalid" and len(self.sql.clocks) == 1:
            return clock_counts.invalid_for_count(self.sql.clocks[0], conn)
        return self.sql.anomaly(category, self.ctx.as_of)

    def held_back(self, conn: sa.Connection) -> list[dict[str, Any]]:
        """Per hold in place: how many of this dataset's due records it holds back (plan_held.py)."""
        return plan_held.held_back(self, conn)

    def table_rows(self, conn: sa.Connection) -> int:
        """The dataset's population: its source rows, plus archived records whose row is gone.

        With ``erasure_where`` the rows an erasure reaches count too: they are what it may move.
        """
        reach = self.included()
        if self.dataset.erasure_where is not None:
            reach = sa.or_(reach, self.erasure_included())
        total = int(conn.execute(sa.select(sa.func.count()).select_from(self.table).where(reach)).scalar_one())
        if self._keeps_orphans():
            rs = self.ctx.tables.record_states
            total += int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        rs.c.dataset == self.name, rs.c.state == "archived", self.state_in_shard
                    )
                ).scalar_one()
            )
        return total

    def _names(self, conn: sa.Connection, who: Who | None, named: Any) -> ColumnElement[bool]:
        """``who`` has one of the identities of ``named`` (a hold's or request's row: subject_key, email, pseudonym)."""
        if who is None:
            return sa.false()
        return who.is_one_of(
            named.subject_key if self.subject is not None else None,
            getattr(named, "email", None),
            getattr(named, "email_pseudonym", None),
        )

    def knows_subject(self, conn: sa.Connection, named: Any) -> bool:
        """Whether any record of this dataset (live, or known by its state row) belongs to the person ``named``.

        ``named``: a request's identities (``subject_key``, ``email``, ``email_pseudonym``).
        """
        if not self.identified:
            return False
        live = sa.select(sa.literal(1)).select_from(self.table).where(self._names(conn, self.live_who(conn), named))
        if conn.execute(live.limit(1)).first() is not None:
            return True
        rs = self.ctx.tables.record_states
        known = sa.select(sa.literal(1)).where(rs.c.dataset == self.name, self._names(conn, self.state_who(), named))
        return conn.execute(known.limit(1)).first() is not None

    def pending_for_subject(self, conn: sa.Connection, named: Any, include_held: bool = True) -> bool:
        """Whether a record of the person ``named`` still sits before this dataset's erasure state."""
        target = self.dataset.erasure_state
        if target is None or not self.identified:
            return False
        rs = self.ctx.tables.record_states
        before = self.dataset.states[1 : self.dataset.states.index(target)]
        who = self.live_who(conn, joined=True)
        key_text = self.text(conn, self.key)
        conditions = [
            self._names(conn, who, named),
            sa.or_(rs.c.state.is_(None), rs.c.state.in_(before)),
            self.reach(erasure=True),  # NULL keys too: such a row keeps the request open (reach())
        ]
        if not include_held:
            conditions.append(self.not_held(key_text, who))
        query = sa.select(sa.literal(1)).select_from(self._joined(conn)).where(*conditions).limit(1)
        if conn.execute(query).first() is not None:
            return True
        if self._keeps_orphans() and before:
            orphan = sa.select(sa.literal(1)).where(
                rs.c.dataset == self.name, self._names(conn, self.state_who(), named), rs.c.state.in_(before)
            )
            return conn.execute(orphan.limit(1)).first() is not None
        return False


def _listed(conn: sa.Connection, counts: dict[str, Any]) -> dict[str, int]:
    """Every count in one statement; ``null_key`` listed only when some row has one.

    Stored anomalies of datasets with no NULL key stay as they were.
    """
    row = conn.execute(sa.select(*(value.label(f"c{i}") for i, value in enumerate(counts.values())))).one()
    found = {category: int(value) for category, value in zip(counts, row, strict=True)}
    if not found.get(NULL_KEYS):
        found.pop(NULL_KEYS, None)
    return found


def _null_key_count(planner: PlannerCounts) -> ColumnElement[int] | None:
    """Rows ``where`` or ``erasure_where`` selects whose key is NULL: no record (included() leaves them out).

    None when the key column cannot hold NULL. Counted for every dataset,
    followers too: their NULL-key rows stay behind when the leader goes.
    """
    if not planner.key.nullable:
        return None
    reach = planner.reach()
    if planner.dataset.erasure_where is not None:
        reach = sa.or_(reach, planner.reach(erasure=True))
    return sa.select(sa.func.count()).select_from(planner.table).where(planner.key.is_(None), reach).scalar_subquery()
