"""The planner's passes, batch by batch: erasure, later states, active, catch-up; and one record for ``explain``.

Each pass is a keyset-paginated query; each record belongs to exactly one
pass (see :mod:`retention.engine.plan`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from retention.engine.lifecycle import _next_states, delay_condition
from retention.engine.plan_follow import catchup_condition
from retention.engine.plan_reasons import PlannerReasons
from retention.engine.plan_values import Batch, Candidate, Move, Outcome, Who, is_false, key_to_native
from retention.store import tables as store


class PlannerPasses(PlannerReasons):
    """The passes as keyset-paginated batches, followers attached to their leader's batch."""

    # -- the passes ----------------------------------------------------------
    def _active_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Candidate], int, Any]:
        # Active records have no state row (``reaching`` says so), so no join.
        rows = conn.execute(self.active_batch_query(conn, after)).all()
        return self._candidates(rows), len(rows), (rows[-1].k if rows else None)

    def active_batch_query(self, conn: sa.Connection, after: Any) -> sa.Select[Any]:
        """The active pass's batch after key ``after``: due records in key order, at most a batch."""
        assert self.sql is not None
        reach = self._reach(conn, self.sql)
        query = (
            sa.select(*self._columns(conn, True, reach, joined=False))
            .select_from(self.table)
            .where(self.reaching(conn, self.sql, 1, per_row=True))
        )
        if after is not None:
            query = query.where(self.sql.key > after)
        return query.order_by(self.sql.key).limit(self.batch_size)

    def _catchup_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Candidate], int, Any]:
        """Active records whose leader already sits in a followed state (and not due by their clocks)."""
        assert self.leader_column is not None
        key_text = self.text(conn, self.key)
        who = self.live_who(conn)
        conditions = [
            catchup_condition(
                self.ctx.pack, self.dataset, self.ctx.tables, self.text(conn, self.leader_column), "active"
            ),
            self.included(),
            self.not_held(key_text, who),
            self.no_open_erasure(who),
            self.not_moved(conn, per_row=True),
        ]
        if self.sql is not None:
            conditions.append(is_false(self.sql.due(self.dataset.states[1], self.ctx.as_of)))
        query = sa.select(*self._columns(conn, True, None, joined=False)).select_from(self.table).where(*conditions)
        if after is not None:
            query = query.where(self.key > after)
        rows = conn.execute(query.order_by(self.key).limit(self.batch_size)).all()
        return self._candidates(rows), len(rows), (rows[-1].k if rows else None)

    def _state_batch(self, conn: sa.Connection, origin: str, after: str | None) -> tuple[list[Candidate], int, Any]:
        rs = self.ctx.tables.record_states
        target = _next_states(self.dataset, origin)[0]
        due = delay_condition(self.ctx.pack, self.dataset, target, rs.c.since, rs.c.clock_day, self.ctx.as_of)
        if self.dataset.follows is not None:
            due = sa.or_(due, catchup_condition(self.ctx.pack, self.dataset, self.ctx.tables, rs.c.leader_key, origin))
        conditions = [
            rs.c.state == origin,
            due,
            self.not_held(rs.c.record_key, self.state_who()),
            self.no_open_erasure(self.state_who(), rs.c.record_key, conn),
            self.state_row_included(conn, rs.c.record_key),
            self.state_in_shard,
        ]
        if after is not None:
            conditions.append(rs.c.record_key > after)
        rows = conn.execute(self._state_rows(conn, *conditions).order_by(rs.c.record_key).limit(self.batch_size)).all()
        return self._native(self._candidates(rows)), len(rows), (rows[-1].k if rows else None)

    def _erasure_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Candidate], int, Any]:
        """Records (live or known only by their state row) of subjects with an open erasure request."""
        who = self.live_who(conn, joined=True)
        assert who is not None
        key_text = self.text(conn, self.key)
        columns = self._columns(conn, True, None)
        separate = self.dataset.erasure_where is not None
        if separate:
            columns.append(sa.case((self.included(), sa.literal(0)), else_=sa.literal(1)).label("ow"))
        query = (
            sa.select(*columns)
            .select_from(self._joined(conn))
            .where(self.open_erasure(who), self.not_held(key_text, who), self.erasure_included())
        )
        if after is not None:
            query = query.where(self.key > after)
        rows = conn.execute(query.order_by(self.key).limit(self.batch_size)).all()
        candidates = self._candidates(rows)
        if separate:
            candidates = [replace(c, outside=bool(r.ow)) for c, r in zip(candidates, rows, strict=True)]
        return candidates, len(rows), (rows[-1].k if rows else None)

    def _erasure_orphans(self, conn: sa.Connection) -> list[Candidate]:
        """Erasing subjects' records whose source row is gone (archived, then deleted)."""
        if not self._keeps_orphans():
            return []
        rs = self.ctx.tables.record_states
        exists = sa.exists().where(self.text(conn, self.key) == rs.c.record_key)
        query = self._state_rows(
            conn,
            self.open_erasure(self.state_who() or Who()),
            self.not_held(rs.c.record_key, self.state_who()),
            ~exists,
            self.state_in_shard,
        ).order_by(rs.c.record_key)
        return self._native(self._candidates(conn.execute(query).all()))

    def _keeps_orphans(self) -> bool:
        """Whether a record of this dataset can outlive its source row (archive, then delete)."""
        return "archived" in self.dataset.states and self.dataset.step_to("archived").then == "delete"

    # -- batches ------------------------------------------------------------
    def next_batch(self, conn: sa.Connection, origin: str, after: Any) -> tuple[Batch | None, Any]:
        """The next batch of ``origin`` after key ``after``, and the key to resume from.

        ``run`` calls this inside the transaction that applies the batch, so
        what is selected and what is changed are one consistent snapshot.
        Followers' records of the leader records this batch moves join it.
        """
        self.probe(conn)
        if origin == "active":
            candidates, scanned, last = self._active_batch(conn, after)
        elif origin == "erasure":
            candidates, scanned, last = self._erasure_batch(conn, after)
            if scanned < self.batch_size and after != "orphans":
                orphans = self._erasure_orphans(conn)
                candidates += orphans
        elif origin == "catchup":
            candidates, scanned, last = self._catchup_batch(conn, after)
        else:
            candidates, scanned, last = self._state_batch(conn, origin, after)
        if not scanned and not candidates:
            return None, None
        candidates = self._without_moving_leaders(conn, candidates)
        moves = self._moves(conn, candidates)
        moves, review = self._cut_for_review(conn, moves)
        batch = Batch(self.name, origin, moves, scanned=scanned, review=review)
        self._add_followers(conn, batch)
        return batch, last

    def _add_followers(self, conn: sa.Connection, batch: Batch) -> None:
        """Attach, recursively, the follower records that move with this batch's records."""
        if not self.followers or self.name in self.ctx.skipped:
            return
        outcomes = {m.record_key: Outcome(m.steps[0].from_state, m.since, m.steps) for m in batch.moves}
        for follower in self.followers:
            carried = {k: o for k, o in outcomes.items() if self.moves_followers(follower, o)}
            if not carried:
                continue
            follow = follower.follower_batch(conn, carried)
            if follow is not None:
                batch.followers.append(follow)

    def follower_batch(self, conn: sa.Connection, leaders: dict[str, Outcome]) -> Batch | None:
        """This dataset's records whose leader records move with ``leaders`` (their outcomes)."""
        assert self.leader_column is not None
        self.probe(conn)
        keys = sorted(leaders)
        key_text = self.text(conn, self.key)
        leader_ref = self.text(conn, self.leader_column)
        who = self.live_who(conn, joined=True)
        query = (
            sa.select(*self._columns(conn, True, None))
            .select_from(self._joined(conn))
            .where(store.one_of(conn, leader_ref, keys), self.not_held(key_text, who), self.included())
            .order_by(self.key)
        )
        candidates = self._candidates(conn.execute(query).all())
        if self._keeps_orphans():
            rs = self.ctx.tables.record_states
            exists = sa.exists().where(key_text == rs.c.record_key)
            candidates += self._native(
                self._candidates(
                    conn.execute(
                        self._state_rows(
                            conn,
                            store.one_of(conn, rs.c.leader_key, keys),
                            self.not_held(rs.c.record_key, self.state_who()),
                            ~exists,
                        ).order_by(rs.c.record_key)
                    ).all()
                )
            )
        if not candidates:
            return None
        moves = self._moves(conn, candidates, leaders, check_reach=False)
        scanned = len(candidates)
        moves, review = self._cut_for_review(conn, moves)
        batch = Batch(self.name, "follow", moves, scanned=scanned, review=review)
        self._add_followers(conn, batch)
        return batch if batch.moves or batch.review or batch.followers else None

    def batches(self, conn: sa.Connection, origin: str) -> Iterator[Batch]:
        """Every batch of ``origin``, for a dry run that writes nothing."""
        after: Any = None
        while True:
            batch, after = self.next_batch(conn, origin, after)
            if batch is None:
                return
            yield batch
            if batch.scanned < self.batch_size:
                return

    # -- one record, for explain ------------------------------------------
    def explain_moves(self, conn: sa.Connection, record_key: str) -> tuple[Outcome | None, list[Move], bool]:
        """(state before this run, the record's steps now, whether a hold covers it)."""
        self.probe(conn)
        outcome = self.outcomes(conn, [record_key]).get(record_key)
        if outcome is None:
            return None, [], False
        rs = self.ctx.tables.record_states
        key_text = self.text(conn, self.key)
        held = (
            conn.execute(
                sa.select(sa.literal(1))
                .select_from(self.table)
                .where(key_text == record_key, sa.not_(self.not_held(key_text, self.live_who(conn))))
            ).first()
            is not None
            or conn.execute(
                sa.select(sa.literal(1)).where(
                    rs.c.dataset == self.name,
                    rs.c.record_key == record_key,
                    sa.not_(self.not_held(rs.c.record_key, self.state_who())),
                )
            ).first()
            is not None
        )
        steps = outcome.steps
        move = Move(key_to_native(self.key, record_key), record_key, None, steps) if steps else None
        return outcome, [move] if move else [], held

    def is_excluded(self, conn: sa.Connection, key: Any) -> bool:
        """Whether the record's source row exists and fails the dataset's ``where``."""
        if self.row_filter is None or key is None:
            return False
        query = sa.select(sa.literal(1)).select_from(self.table).where(self.key == key, self.excluded())
        return conn.execute(query).first() is not None
