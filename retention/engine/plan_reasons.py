"""A record's reasons to move and the moves they make: clocks, delays, erasure requests, leaders, review.

Each reason gives a due instant per state; :func:`retention.engine.lifecycle.advance`
takes the earliest. Followers move with their leader, in its batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import replace

import sqlalchemy as sa

from retention.engine import quick_evaluate
from retention.engine.lifecycle import advance, steps_from_active
from retention.engine.plan_rows import PlannerRows
from retention.engine.plan_values import Candidate, Move, Outcome, Step, new_move
from retention.store import tables as store
from retention.timing.clock import start_of_day


class PlannerReasons(PlannerRows):
    """Candidates to outcomes: every reason a record has, and the moves that follow from them."""

    # -- reasons -----------------------------------------------------------
    def _requests(self, conn: sa.Connection, candidates: Sequence[Candidate]) -> dict[str, tuple[int, dt.date]]:
        """Per record key: the open erasure request (lowest id) naming one of its identities, received by today."""
        if not self.dataset.on_erasure:
            return {}
        subjects = sorted({c.subject_key for c in candidates if c.subject_key is not None})
        emails = sorted({c.email for c in candidates if c.email is not None})
        pseudonyms = sorted({c.email_pseudonym for c in candidates if c.email_pseudonym is not None})
        er = self.ctx.tables.erasure_requests
        names = []
        if subjects and self.subject is not None:
            names.append(store.one_of(conn, er.c.subject_key, subjects))
        if emails:
            names.append(store.one_of(conn, er.c.email, emails))
        if pseudonyms:
            names.append(store.one_of(conn, er.c.email_pseudonym, pseudonyms))
        if not names:
            return {}
        rows = conn.execute(
            sa.select(er.c.id, er.c.subject_key, er.c.email, er.c.email_pseudonym, er.c.received_on)
            .where(er.c.status == "open", er.c.received_on <= self.today, sa.or_(*names))
            .order_by(er.c.id)
        ).all()
        by_subject: dict[str, tuple[int, dt.date]] = {}
        by_email: dict[str, tuple[int, dt.date]] = {}
        by_pseudonym: dict[str, tuple[int, dt.date]] = {}
        for row in rows:
            if row.subject_key is not None:
                by_subject.setdefault(row.subject_key, (row.id, row.received_on))
            if row.email is not None:
                by_email.setdefault(row.email, (row.id, row.received_on))
            if row.email_pseudonym is not None:
                by_pseudonym.setdefault(row.email_pseudonym, (row.id, row.received_on))
        first: dict[str, tuple[int, dt.date]] = {}
        for cand in candidates:
            found = []
            if cand.subject_key is not None and self.subject is not None:
                found.append(by_subject.get(cand.subject_key))
            if cand.email is not None:
                found.append(by_email.get(cand.email))
            if cand.email_pseudonym is not None:
                found.append(by_pseudonym.get(cand.email_pseudonym))
            named = [f for f in found if f is not None]
            if named:
                first[cand.record_key] = min(named)
        return first

    def _leader_states(self, conn: sa.Connection, keys: Iterable[str | None]) -> dict[str, tuple[str, dt.datetime]]:
        """The leader's state row (state, since) per leader key."""
        follows = self.dataset.follows
        wanted = sorted({k for k in keys if k is not None})
        if follows is None or not wanted:
            return {}
        rs = self.ctx.tables.record_states
        rows = conn.execute(
            sa.select(rs.c.record_key, rs.c.state, rs.c.since).where(
                rs.c.dataset == follows.dataset, store.one_of(conn, rs.c.record_key, wanted)
            )
        ).all()
        return {row.record_key: (row.state, row.since) for row in rows}

    def follow_dues(self, outcome: Outcome | None) -> dict[str, dt.datetime]:
        """Own state -> earliest instant at which the leader's states make it due."""
        follows = self.dataset.follows
        if follows is None or outcome is None:
            return {}
        parent = self.ctx.pack.datasets[follows.dataset]
        own = self.dataset.states
        entered: list[tuple[str, dt.datetime]] = []
        if outcome.state != "active" and outcome.since is not None:
            entered += [(p, outcome.since) for p in parent.states[1 : parent.states.index(outcome.state) + 1]]
        entered += [(step.to_state, step.due_at) for step in outcome.steps]
        dues: dict[str, dt.datetime] = {}
        for parent_state, when in entered:
            target = follows.on.get(parent_state)  # type: ignore[call-overload]
            if target is None:
                continue
            for state in own[1 : own.index(target) + 1]:
                if state not in dues or when < dues[state]:
                    dues[state] = when
        return dues

    def moves_followers(self, follower: PlannerReasons, outcome: Outcome) -> bool:
        """Whether ``outcome`` of a leader record carries ``follower``'s records in the leader's batch."""
        return bool(outcome.steps) and self.name not in self.ctx.skipped and bool(follower.follow_dues(outcome))

    def _moves(
        self,
        conn: sa.Connection,
        candidates: list[Candidate],
        leaders: dict[str, Outcome] | None = None,
        check_reach: bool = True,
    ) -> list[Move]:
        """Each candidate's steps from all its reasons (docs/rules.md), in one place.

        ``leaders``: the outcome of each leader record moving in this batch;
        without it a follower's leader is read from its state row (catch-up).
        """
        pack, dataset, as_of = self.ctx.pack, self.dataset, self.ctx.as_of
        requests = self._requests(conn, candidates)
        if leaders is None and self.dataset.follows is not None:
            known = self._leader_states(conn, (c.leader_key for c in candidates))
            leaders = {k: Outcome(state, since, ()) for k, (state, since) in known.items()}
        moves: list[Move] = []
        evaluate = quick_evaluate.evaluator(pack, dataset, as_of, self._due_cache)
        for cand in candidates:
            own_first: dt.datetime | None = None
            clock_at: dt.datetime | None = None
            clock_day = cand.clock_day
            own_chain: tuple[Step, ...] = ()
            if cand.reach and self.sql is not None and not cand.outside:
                evaluation = evaluate(cand.clocks)
                if evaluation.anomaly is None:
                    chain_key = tuple(evaluation.due.values())
                    chain = self._chains.get(chain_key)
                    if chain is None:
                        chain = self._chains[chain_key] = steps_from_active(dataset, evaluation.due, as_of)
                    own_chain = chain
                if check_reach and len(own_chain) != cand.reach:
                    raise AssertionError(
                        f"dataset {self.name}: SQL finds record {cand.record_key!r} due for {cand.reach} state(s), "
                        f"the evaluator for {len(own_chain)} ({evaluation.anomaly or 'dates'}); please report this bug"
                    )
                if own_chain:
                    own_first = own_chain[0].due_at
                    governing = evaluation.readings[evaluation.governing[own_chain[0].to_state]]
                    clock_at = governing.moment(pack.timezone)
                    if governing.day is not None:
                        clock_day = dataset.clock_start(
                            evaluation.governing[own_chain[0].to_state], governing.day, pack
                        )
            request = requests.get(cand.record_key)
            erasure = None
            if request is not None and dataset.on_erasure is not None:
                erasure = (dataset.on_erasure, start_of_day(request[1], pack.timezone))
            follow: dict[str, dt.datetime] = {}
            if leaders is not None and cand.leader_key is not None and not cand.outside:
                follow = self.follow_dues(leaders.get(cand.leader_key))
            if erasure is None and not follow:
                # Pure in these four (pack, dataset and as_of are the planner's): a batch repeats them.
                walk_key = (cand.state, cand.since, own_first, clock_day)
                walk = self._walks.get(walk_key)
                if walk is None:
                    walk = self._walks[walk_key] = advance(
                        pack, dataset, cand.state, cand.since, own_first, None, {}, as_of, clock_day
                    )
                steps = walk
            else:
                steps = advance(pack, dataset, cand.state, cand.since, own_first, erasure, follow, as_of, clock_day)
            if cand.outside and erasure is None:
                continue  # outside where, and no erasure reaches it: it does not move
            if cand.outside:
                # Not a record of the lifecycle: the erasure takes it to on_erasure, no further.
                last = dataset.states.index(dataset.on_erasure or "active")
                steps = tuple(s for s in steps if dataset.states.index(s.to_state) <= last)
            if not steps:
                continue
            by_clock_alone = (
                cand.state == "active"
                and own_first is not None
                and steps[0].due_at == own_first
                and erasure is None
                and steps[0].to_state not in follow
            )
            moves.append(
                new_move(
                    key=cand.key,
                    record_key=cand.record_key,
                    subject_key=cand.subject_key,
                    steps=steps,
                    clock_at=clock_at,
                    request_id=request[0] if erasure is not None and request is not None else None,
                    review_id=None,
                    leader_key=cand.leader_key,
                    since=cand.since,
                    recheck=by_clock_alone and steps == own_chain[: len(steps)],
                    clock_day=clock_day,
                    email=cand.email,
                    email_pseudonym=cand.email_pseudonym,
                )
            )
        return moves

    def outcomes(self, conn: sa.Connection, keys: Sequence[str]) -> dict[str, Outcome]:
        """What this run does to the records with these keys (leaders of a follower's batch).

        Evaluated exactly as this dataset's own passes do (held records stay
        put; a dataset skipped in this run moves nothing).
        """
        result: dict[str, Outcome] = {}
        wanted = sorted(set(keys))
        if not wanted:
            return result
        self.probe(conn)
        rs = self.ctx.tables.record_states
        key_text = self.text(conn, self.key)
        separate = self.dataset.erasure_where is not None
        # A row outside where that erasure_where reaches may still move, by an erasure alone.
        reach = sa.or_(self.included(), self.erasure_included()) if separate else self.included()
        held = sa.case(
            (sa.and_(self.not_held(key_text, self.live_who(conn, joined=True)), reach), sa.literal(0)),
            else_=sa.literal(1),
        )
        outside = sa.case((self.included(), sa.literal(0)), else_=sa.literal(1)) if separate else sa.literal(0)
        query = (
            sa.select(*self._columns(conn, True, None), held.label("held"), outside.label("ow"))
            .select_from(self._joined(conn))
            .where(store.one_of(conn, key_text, wanted))
        )
        rows = list(conn.execute(query).all())
        found = {str(r.k) for r in rows}
        orphans = [k for k in wanted if k not in found]
        if orphans:
            held_rs = sa.case((self.not_held(rs.c.record_key, self.state_who()), sa.literal(0)), else_=sa.literal(1))
            rows += conn.execute(
                self._state_rows(conn, store.one_of(conn, rs.c.record_key, orphans)).add_columns(
                    held_rs.label("held"), sa.literal(0).label("ow")
                )
            ).all()
        candidates = self._candidates(rows)
        if separate:
            candidates = [replace(c, outside=bool(r.ow)) for c, r in zip(candidates, rows, strict=True)]
        is_held = {str(r.k) for r in rows if r.held}
        for cand in candidates:
            result[cand.record_key] = Outcome(cand.state, cand.since, ())
        movable = [c for c in candidates if c.record_key not in is_held and self.name not in self.ctx.skipped]
        leaders = self._leader_outcomes(conn, movable)
        for move in self._moves(conn, movable, leaders, check_reach=False):
            moves = self._cut_for_review(conn, [move], record=False)[0]
            steps = moves[0].steps if moves else ()
            result[move.record_key] = Outcome(result[move.record_key].state, move.since, steps)
        return result

    def _leader_outcomes(self, conn: sa.Connection, candidates: list[Candidate]) -> dict[str, Outcome] | None:
        """For a follower: what this run does to each candidate's leader (None for a non-follower)."""
        if self.leader is None:
            return None
        return self.leader.outcomes(conn, [c.leader_key for c in candidates if c.leader_key is not None])

    def _without_moving_leaders(self, conn: sa.Connection, candidates: list[Candidate]) -> list[Candidate]:
        """Leave out records whose leader moves them in its own batch (they move there, once).

        Once the leader's passes are over (``run``), what it moved has carried
        its followers' records already; its clocks are not read again, so a
        sibling that changed a table they read cannot make this pass differ
        from what plan saw.
        """
        if self.leader is None or not candidates or self.leader.name in self.ctx.finished:
            return candidates
        outcomes = self.leader.outcomes(conn, [c.leader_key for c in candidates if c.leader_key is not None])
        carried = {k for k, o in outcomes.items() if self.leader.moves_followers(self, o)}
        return [c for c in candidates if c.leader_key not in carried]

    def _cut_for_review(
        self, conn: sa.Connection, moves: list[Move], record: bool = True
    ) -> tuple[list[Move], list[tuple[str, str, dt.datetime]]]:
        """Hold purges back until an operator approved them (datasets with ``review: true``).

        A purge whose record sits in an approved review batch goes ahead; any
        other purge is cut from the record's path and, unless already awaiting
        a decision or rejected, becomes an item of a new review batch.
        """
        if not self.dataset.review:
            return moves, []
        purging = [m.record_key for m in moves if any(s.to_state == "purged" for s in m.steps)]
        if not purging:
            return moves, []
        rb, ri = self.ctx.tables.review_batches, self.ctx.tables.review_items
        decided: dict[str, tuple[str, int]] = {}
        rows = conn.execute(
            sa.select(ri.c.record_key, rb.c.status, rb.c.id)
            .select_from(ri.join(rb, rb.c.id == ri.c.batch_id))
            .where(ri.c.dataset == self.name, store.one_of(conn, ri.c.record_key, purging))
        ).all()
        for row in rows:
            # An approval wins over an older pending or rejected item of the same record.
            if row.record_key not in decided or row.status == "approved":
                decided[row.record_key] = (row.status, row.id)
        kept: list[Move] = []
        review: list[tuple[str, str, dt.datetime]] = []
        for move in moves:
            purge = next((s for s in move.steps if s.to_state == "purged"), None)
            if purge is None:
                kept.append(move)
                continue
            status, batch_id = decided.get(move.record_key, ("", 0))
            if status == "approved":
                kept.append(replace(move, review_id=batch_id))
                continue
            if not status and record:
                review.append((move.record_key, purge.from_state, purge.due_at))
            steps = tuple(s for s in move.steps if s.to_state != "purged")
            if steps:
                kept.append(replace(move, steps=steps))
        return kept, review
