"""The transitions due at an as-of instant, as data.

``plan`` prints these batches; ``run`` hands the very same batches to the
executor one transaction at a time. Because both walk the same generator,
what plan lists is what run does (SPEC section 7), by construction.

Each dataset is evaluated per *origin* state: active records from the
source table (their clocks, compiled to index-friendly SQL by
:mod:`retention.evaluate`), and records already in a later state from the
engine's ``record_states`` table (their ``since``, the due instant that
moved them there). A record moves as far along its lifecycle as the as-of
instant allows, so one run catches up on everything that is due.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from retention import store
from retention.clock import Schedule, due_instant, local_date, start_of_day
from retention.evaluate import (
    ANOMALIES,
    Anomaly,
    DatasetSQL,
    DueCache,
    dataset_sql,
    evaluate_record,
    reflect_table,
)
from retention.policy import LoadedPack
from retention.policy.model import Dataset, Pack


@dataclass(frozen=True)
class Step:
    """One transition of one record."""

    from_state: str
    to_state: str
    due_at: dt.datetime


@dataclass(frozen=True)
class Move:
    """Everything one record goes through in this run, in order."""

    key: Any  # the native key value of the source table
    record_key: str  # the key as text, as the engine's tables store it
    subject_key: str | None
    steps: tuple[Step, ...]
    clock_at: dt.datetime | None = None  # the governing clock instant, for summaries
    request_id: int | None = None  # the erasure request that moved it
    review_id: int | None = None  # the approved review batch that lets it be purged


@dataclass
class Batch:
    """Records of one dataset leaving one origin state: one transaction in ``run``."""

    dataset: str
    origin: str
    moves: list[Move]
    followers: list[Batch] = field(default_factory=list)
    scanned: int = 0  # rows the query returned; fewer than the batch size ends the pass
    review: list[tuple[str, str, dt.datetime]] = field(default_factory=list)  # purges awaiting approval

    def transitions(self) -> Iterator[tuple[str, str, list[Move]]]:
        """(from, to, moves) groups in lifecycle order, for execution and counting."""
        order: dict[tuple[str, str], list[Move]] = {}
        for move in self.moves:
            for step in move.steps:
                order.setdefault((step.from_state, step.to_state), []).append(move)
        for (from_state, to_state), moves in order.items():
            yield from_state, to_state, moves


@dataclass
class PlanContext:
    """What evaluation needs besides the connection."""

    loaded: LoadedPack
    as_of: dt.datetime
    batch_size: int = 1000

    @property
    def pack(self) -> Pack:
        return self.loaded.pack


def key_to_native(key: ColumnElement[Any], text: str) -> Any:
    """Turn a stored record key back into the source column's type."""
    try:
        python_type = key.type.python_type
    except NotImplementedError:
        return text
    return int(text) if python_type is int else text


def _as_text(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return sa.cast(column, sa.String(191))


def _active_holds(
    dataset: str, record_key: ColumnElement[Any], subject: ColumnElement[Any] | None
) -> ColumnElement[bool]:
    """Rows covered by a hold still in place (subject, dataset or record)."""
    h = store.holds
    covers = [
        sa.and_(h.c.scope == "dataset", h.c.dataset == dataset),
        sa.and_(h.c.scope == "record", h.c.dataset == dataset, h.c.record_key == record_key),
    ]
    if subject is not None:
        covers.append(sa.and_(h.c.scope == "subject", h.c.subject_key == subject))
    return sa.exists().where(h.c.released_at.is_(None), sa.or_(*covers))


def _next_states(dataset: Dataset, origin: str) -> list[str]:
    states = dataset.states
    return states[states.index(origin) + 1 :]


def _delay_cutoff(pack: Pack, delay_schedule: Schedule, as_of: dt.datetime) -> dt.datetime:
    """The ``since`` instant before which a record is due after ``delay_schedule``.

    ``since`` is always the first instant of a local day D; the next state is
    due on ``delay.add_to(D - 1) + 1``, which is the schedule's due date for
    the event day D - 1.
    """
    today = local_date(as_of, pack.timezone)
    last_event = delay_schedule.last_event_due_by(today)
    return start_of_day(last_event + dt.timedelta(days=2), pack.timezone)


def steps_from_state(
    pack: Pack, dataset: Dataset, origin: str, since: dt.datetime, as_of: dt.datetime
) -> tuple[Step, ...]:
    """The chain of due transitions for a record that entered ``origin`` at ``since``."""
    steps: list[Step] = []
    current, entered = origin, since
    for target in _next_states(dataset, current):
        delay = dataset.step_to(target).after
        event_day = local_date(entered, pack.timezone) - dt.timedelta(days=1)
        due = due_instant(Schedule(delay).due_date(event_day), pack.timezone)
        if due > as_of:
            break
        steps.append(Step(current, target, due))
        current, entered = target, due
    return tuple(steps)


def steps_from_active(dataset: Dataset, due: dict[str, dt.datetime], as_of: dt.datetime) -> tuple[Step, ...]:
    steps: list[Step] = []
    current = "active"
    for target in _next_states(dataset, "active"):
        when = due[target]
        if when > as_of:
            break
        steps.append(Step(current, target, when))
        current = target
    return tuple(steps)


def _without_clock_index(sql: DatasetSQL) -> DatasetSQL:
    """The same conditions with the clocks wrapped in a no-op unary plus.

    SQLite then cannot use an index on a clock for them, and walks the key
    order instead (its documented way to steer the planner per term).
    """
    clocks = [
        replace(c, value=UnaryExpression(c.value, operator=operators.custom_op("+"), type_=c.value.type))
        for c in sql.clocks
    ]
    return replace(sql, clocks=clocks)


class DatasetPlanner:
    """Evaluates one dataset at one as-of instant, in keyset-paginated batches.

    Passes, in execution order: ``erasure`` (records of subjects with an open
    erasure request), then records already in a later state (latest first),
    then ``active`` records by their clocks, then ``follow`` (records whose
    subject already sits in a state this dataset follows). A record moved by
    one pass has gone as far as it can, so no later pass picks it again.
    """

    def __init__(self, conn: sa.Connection, ctx: PlanContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.dataset = ctx.pack.datasets[name]
        self.sql = dataset_sql(conn, ctx.pack, name) if self.dataset.keep else None
        self.table: sa.Table = (
            self.sql.table if self.sql else reflect_table(conn, self.dataset.table, self.dataset.schema_)
        )
        self.key = self.table.c[self.dataset.key]
        self.subject = self.table.c[self.dataset.subject_key] if self.dataset.subject_key else None
        self.followers: list[DatasetPlanner] = []
        self._due_cache: DueCache = {}
        self._steps_cache: dict[tuple[dt.date | None, ...], tuple[Step, ...]] = {}

    @property
    def batch_size(self) -> int:
        return self.dataset.batch_size or self.ctx.pack.batch_size or self.ctx.batch_size

    @property
    def today(self) -> dt.date:
        return local_date(self.ctx.as_of, self.ctx.pack.timezone)

    def origins(self) -> list[str]:
        """Passes in execution order (see the class docstring)."""
        passes = ["erasure"] if self.dataset.on_erasure and self.subject is not None else []
        passes += list(reversed(self.dataset.states[1:-1]))
        passes.append("active")
        if self.dataset.follows is not None:
            passes += [f"follow:{target}" for target in self.follow_targets()]
        return passes

    # -- shared conditions ----------------------------------------------
    def probe(self, conn: sa.Connection) -> None:
        """Note which engine-side filters can match anything right now.

        A filter that cannot match (no hold in place, no open erasure request,
        no record of this dataset in a later state) is left out of the query:
        the result is the same, and the database skips a correlated subquery
        per row, which on a large table is most of the cost.
        """
        h, er, rs = store.holds, store.erasure_requests, store.record_states
        covers = [h.c.dataset == self.name]
        if self.subject is not None:
            covers.append(h.c.scope == "subject")
        self._holds = (
            conn.execute(sa.select(sa.literal(1)).where(h.c.released_at.is_(None), sa.or_(*covers)).limit(1)).first()
            is not None
        )
        self._erasures = (
            bool(self.dataset.on_erasure)
            and conn.execute(sa.select(sa.literal(1)).where(er.c.status == "open").limit(1)).first() is not None
        )
        self._states = (
            conn.execute(sa.select(sa.literal(1)).where(rs.c.dataset == self.name).limit(1)).first() is not None
        )

    _holds = _erasures = _states = True  # until probed: every filter on
    _scanned: int | None = None

    def _not_held(self, key_text: ColumnElement[Any], subject: ColumnElement[Any] | None) -> ColumnElement[bool]:
        if not self._holds:
            return sa.true()
        return ~_active_holds(self.name, key_text, subject)

    def _no_open_erasure(self, subject: ColumnElement[Any] | None) -> ColumnElement[bool]:
        """Records under an open erasure request move in the erasure pass only."""
        if not self.dataset.on_erasure or subject is None or not self._erasures:
            return sa.true()
        er = store.erasure_requests
        return ~sa.exists().where(er.c.subject_key == subject, er.c.status == "open", er.c.received_on <= self.today)

    def _subject_text(self) -> ColumnElement[Any] | None:
        return _as_text(self.subject) if self.subject is not None else None

    # -- active records --------------------------------------------------
    def _active_condition(self) -> ColumnElement[bool]:
        """Due, not held, not under an open erasure request.

        Records already in a later state are dropped after the query (see
        ``_active_batch``): as a per-row anti-join, PostgreSQL hashes the
        whole state table for every batch.
        """
        assert self.sql is not None
        key_text = _as_text(self.sql.key)
        subject = self._subject_text()
        return sa.and_(
            self.sql.due(self.dataset.states[1], self.ctx.as_of),
            self._not_held(key_text, subject),
            self._no_open_erasure(subject),
        )

    def _active_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Move], Any]:
        assert self.sql is not None
        sql = self.sql
        columns: list[ColumnElement[Any]] = [sql.key.label("k")]
        columns += [v.label(f"c{i}") for i, v in enumerate(sql.values())]
        if self.subject is not None:
            columns.append(self.subject.label("s"))
        query = sa.select(*columns).where(self._active_condition())
        if after is not None:
            query = query.where(sql.key > after)
        rows = conn.execute(query.order_by(sql.key).limit(self.batch_size)).all()
        self._scanned = len(rows)
        moved: set[str] = set()
        if rows and self._states:
            rs = store.record_states
            moved = set(
                conn.execute(
                    sa.select(rs.c.record_key).where(
                        rs.c.dataset == self.name, store.one_of(conn, rs.c.record_key, [str(r.k) for r in rows])
                    )
                ).scalars()
            )
        moves = []
        pack, dataset, as_of, cache = self.ctx.pack, self.dataset, self.ctx.as_of, self._due_cache
        clocks = len(sql.clocks)
        for row in rows:
            key = row[0]
            record_key = str(key)
            if record_key in moved:  # deactivated or anonymised earlier: its state decides
                continue
            evaluation = evaluate_record(pack, dataset, row[1 : 1 + clocks], as_of, cache)
            steps: tuple[Step, ...] = ()
            if evaluation.anomaly is None:
                # Steps depend on the clock dates only, like the due dates.
                days = tuple(r.day for r in evaluation.readings)
                steps = self._steps_cache.get(days, ())
                if not steps:
                    steps = steps_from_active(dataset, evaluation.due, as_of)
                    if len(self._steps_cache) < 100_000:
                        self._steps_cache[days] = steps
            if not steps:
                raise AssertionError(
                    f"dataset {self.name}: SQL found record {key!r} due but the evaluator "
                    f"does not ({evaluation.anomaly or 'not due'}); please report this bug"
                )
            governing = evaluation.readings[evaluation.governing[steps[0].to_state]]
            subject = row[1 + clocks] if self.subject is not None else None
            moves.append(
                Move(
                    key=key,
                    record_key=record_key,
                    subject_key=None if subject is None else str(subject),
                    steps=steps,
                    clock_at=governing.moment(pack.timezone),
                )
            )
        return moves, (rows[-1].k if rows else None)

    # -- records in a later state ----------------------------------------
    def _state_batch(self, conn: sa.Connection, origin: str, after: str | None) -> tuple[list[Move], Any]:
        rs = store.record_states
        target = _next_states(self.dataset, origin)[0]
        delay = Schedule(self.dataset.step_to(target).after)
        cutoff = _delay_cutoff(self.ctx.pack, delay, self.ctx.as_of)
        query = sa.select(rs.c.record_key, rs.c.since, rs.c.subject_key).where(
            rs.c.dataset == self.name,
            rs.c.state == origin,
            rs.c.since < cutoff,
            self._not_held(rs.c.record_key, rs.c.subject_key),
            self._no_open_erasure(rs.c.subject_key),
        )
        if after is not None:
            query = query.where(rs.c.record_key > after)
        rows = conn.execute(query.order_by(rs.c.record_key).limit(self.batch_size)).all()
        moves = []
        for row in rows:
            steps = steps_from_state(self.ctx.pack, self.dataset, origin, row.since, self.ctx.as_of)
            if not steps:
                raise AssertionError(
                    f"dataset {self.name}: record in state {origin} selected as due but the "
                    "evaluator finds nothing due; please report this bug"
                )
            native = key_to_native(self.key, row.record_key)
            moves.append(Move(native, row.record_key, row.subject_key, steps, None))
        return moves, (rows[-1].record_key if rows else None)

    # -- moving to a fixed target: erasure and follows ----------------------
    def _path(self, current: str, target: str, due: dt.datetime) -> tuple[Step, ...]:
        """Every state from ``current`` up to ``target``, all due at ``due``."""
        states = self.dataset.states
        if states.index(current) >= states.index(target):
            return ()
        path = states[states.index(current) : states.index(target) + 1]
        return tuple(Step(a, b, due) for a, b in itertools.pairwise(path))

    def _before(self, target: str) -> list[str]:
        states = self.dataset.states
        return states[1 : states.index(target)]

    def _subject_rows(
        self,
        conn: sa.Connection,
        subjects: Sequence[str],
        target: str,
        after: Any = None,
        limit: int | None = None,
        include_held: bool = False,
    ) -> list[Any]:
        """Records of ``subjects`` (active or in a state before ``target``), not held."""
        assert self.subject is not None
        rs = store.record_states
        key_text = _as_text(self.key)
        subject = _as_text(self.subject)
        joined = self.table.outerjoin(rs, sa.and_(rs.c.dataset == self.name, rs.c.record_key == key_text))
        query = (
            sa.select(self.key.label("k"), subject.label("s"), rs.c.state)
            .select_from(joined)
            .where(
                subject.in_(list(subjects)),
                sa.or_(rs.c.state.is_(None), rs.c.state.in_(self._before(target))),
                sa.true() if include_held else self._not_held(key_text, subject),
            )
        )
        if after is not None:
            query = query.where(self.key > after)
        query = query.order_by(self.key)
        if limit is not None:
            query = query.limit(limit)
        return list(conn.execute(query))

    def _erasure_batch(self, conn: sa.Connection, after: Any) -> tuple[list[Move], Any]:
        """Records of subjects with an open erasure request received by the as-of date."""
        assert self.subject is not None and self.dataset.on_erasure is not None
        er = store.erasure_requests
        target = self.dataset.on_erasure
        requests = conn.execute(
            sa.select(er.c.id, er.c.subject_key, er.c.received_on)
            .where(er.c.status == "open", er.c.received_on <= self.today)
            .order_by(er.c.id)
        ).all()
        first: dict[str, Any] = {}
        for request in requests:
            first.setdefault(request.subject_key, request)
        if not first:
            return [], None
        rows = self._subject_rows(conn, list(first), target, after, self.batch_size)
        moves = []
        for row in rows:
            request = first[row.s]
            due = start_of_day(request.received_on, self.ctx.pack.timezone)
            steps = self._path(row.state or "active", target, due)
            moves.append(Move(row.k, str(row.k), row.s, steps, None, request.id))
        return moves, (rows[-1].k if rows else None)

    def follower_batch(self, conn: sa.Connection, parent: Batch) -> Batch | None:
        """This dataset's records of subjects that ``parent`` moves into a followed state."""
        follows = self.dataset.follows
        assert follows is not None and self.subject is not None
        self.probe(conn)
        targets: dict[str, tuple[str, dt.datetime]] = {}  # subject -> (own target, due)
        requests: dict[str, int | None] = {}
        states = self.dataset.states
        for move in parent.moves:
            if move.subject_key is None:
                continue
            requests[move.subject_key] = move.request_id
            for step in move.steps:
                own = follows.on.get(step.to_state)  # type: ignore[call-overload]
                if own is None:
                    continue
                known = targets.get(move.subject_key)
                if known is None or states.index(own) > states.index(known[0]):
                    targets[move.subject_key] = (own, step.due_at)
        moves: list[Move] = []
        by_target: dict[str, list[str]] = {}
        for subject, (own, _) in targets.items():
            by_target.setdefault(own, []).append(subject)
        for own, subjects in by_target.items():
            for row in self._subject_rows(conn, subjects, own):
                steps = self._path(row.state or "active", own, targets[row.s][1])
                moves.append(Move(row.k, str(row.k), row.s, steps, None, requests.get(row.s)))
        if not moves:
            return None
        scanned = len(moves)
        moves, review = self._apply_review(conn, moves)
        return Batch(self.name, "follow", moves, scanned=scanned, review=review)

    def follow_targets(self) -> dict[str, list[str]]:
        """Own target state -> the parent states that lead to it (the furthest wins)."""
        follows = self.dataset.follows
        assert follows is not None
        parent = self.ctx.pack.datasets[follows.dataset]
        own_states = self.dataset.states
        result: dict[str, list[str]] = {}
        for parent_state in parent.states[1:]:
            reached = parent.states[1 : parent.states.index(parent_state) + 1]
            targets = [follows.on[p] for p in reached if p in follows.on]
            if targets:
                own = max(targets, key=own_states.index)
                result.setdefault(own, []).append(parent_state)
        return dict(sorted(result.items(), key=lambda item: -own_states.index(item[0])))

    def _follow_batch(self, conn: sa.Connection, target: str, after: Any) -> tuple[list[Move], Any]:
        """Catch-up: records whose subject already sat in a followed state before this run."""
        follows = self.dataset.follows
        assert follows is not None and self.subject is not None
        rs = store.record_states
        parent_rs = rs.alias("parent_state")
        own_rs = rs.alias("own_state")
        key_text = _as_text(self.key)
        subject = _as_text(self.subject)
        query = (
            sa.select(self.key.label("k"), subject.label("s"), own_rs.c.state, parent_rs.c.since)
            .select_from(
                self.table.join(
                    parent_rs,
                    sa.and_(
                        parent_rs.c.dataset == follows.dataset,
                        parent_rs.c.record_key == subject,
                        parent_rs.c.state.in_(self.follow_targets()[target]),
                    ),
                ).outerjoin(own_rs, sa.and_(own_rs.c.dataset == self.name, own_rs.c.record_key == key_text))
            )
            .where(
                sa.or_(own_rs.c.state.is_(None), own_rs.c.state.in_(self._before(target))),
                self._not_held(key_text, subject),
                self._no_open_erasure(subject),
            )
        )
        if after is not None:
            query = query.where(self.key > after)
        rows = list(conn.execute(query.order_by(self.key).limit(self.batch_size)))
        moves = [
            Move(row.k, str(row.k), row.s, self._path(row.state or "active", target, row.since), None) for row in rows
        ]
        return moves, (rows[-1].k if rows else None)

    # -- batches ------------------------------------------------------------
    def next_batch(self, conn: sa.Connection, origin: str, after: Any) -> tuple[Batch | None, Any]:
        """The next batch of ``origin`` after key ``after``, and the key to resume from.

        ``run`` calls this inside the transaction that applies the batch, so
        what is selected and what is changed are one consistent snapshot.
        Followers' records of the subjects this batch moves join the batch.
        """
        self.probe(conn)
        self._scanned = None
        if origin == "active":
            if self.sql is None:
                return None, None
            moves, last = self._active_batch(conn, after)
        elif origin == "erasure":
            moves, last = self._erasure_batch(conn, after)
        elif origin.startswith("follow:"):
            moves, last = self._follow_batch(conn, origin.removeprefix("follow:"), after)
        else:
            moves, last = self._state_batch(conn, origin, after)
        scanned = self._scanned if self._scanned is not None else len(moves)
        if not scanned:
            return None, None
        moves, review = self._apply_review(conn, moves)
        batch = Batch(self.name, origin, moves, scanned=scanned, review=review)
        for follower in self.followers:
            follow = follower.follower_batch(conn, batch)
            if follow is not None:
                batch.followers.append(follow)
        return batch, last

    def _apply_review(
        self, conn: sa.Connection, moves: list[Move]
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
        rb, ri = store.review_batches, store.review_items
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
            if not status:
                review.append((move.record_key, purge.from_state, purge.due_at))
            steps = tuple(s for s in move.steps if s.to_state != "purged")
            if steps:
                kept.append(replace(move, steps=steps))
        return kept, review

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

    # -- counts for plan summaries -----------------------------------------
    def can_aggregate(self) -> bool:
        """Whether the active pass can be summarised by set-based aggregates alone.

        It takes one clock (so the due dates are monotone in it and its
        extremes give the due ranges), a clock SQL orders like time (not epoch
        text), no review (cutting purges needs the record's decision) and no
        followers (their moves depend on which subjects move).
        """
        return (
            self.sql is not None
            and len(self.sql.clocks) == 1
            and self.sql.clocks[0].kind != "epoch_text"
            and not self.dataset.review
            and not self.followers
        )

    def aggregate_active(self, conn: sa.Connection, summary: PlanSummary, sample_size: int = 3) -> None:
        """Add the active pass to ``summary`` from a few set-based queries, no record fetched.

        Counts what ``batches(conn, "active")`` would move, transition by
        transition: a record reaches the k-th state when it is due for every
        state up to it. With one clock each condition is a range on the clock,
        so count, min and max are each one index range scan or seek. A test
        holds this to the batch path's summary on every database.
        """
        assert self.sql is not None and self.can_aggregate()
        self.probe(conn)
        sql = self.sql
        value = sql.values()[0]
        targets = _next_states(self.dataset, "active")
        per = summary.transitions.setdefault(self.name, {})
        current = "active"
        for index, target in enumerate(targets):
            condition = self._reaching(sql, targets[: index + 1])
            count = int(conn.execute(sa.select(sa.func.count()).select_from(sql.table).where(condition)).scalar_one())
            if not count:
                break
            name = f"{current}->{target}"
            per[name] = per.get(name, 0) + count
            for extreme in (sa.func.min, sa.func.max):
                raw = conn.execute(sa.select(extreme(value)).where(condition)).scalar_one()
                evaluation = evaluate_record(self.ctx.pack, self.dataset, [raw], self.ctx.as_of, self._due_cache)
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
                unindexed = count > 1000 and conn.dialect.name == "sqlite"
                source = _without_clock_index(sql) if unindexed else sql
                query = (
                    sa.select(sql.key)
                    .where(self._reaching(source, targets[: index + 1]))
                    .order_by(sql.key)
                    .limit(sample_size - len(samples))
                )
                samples.extend(str(k) for k in conn.execute(query).scalars())
            current = target

    def _reaching(self, sql: DatasetSQL, states: list[str]) -> ColumnElement[bool]:
        """Active records due for each of ``states``, not held, not erasing, not moved before."""
        conditions = [
            *(sql.due(state, self.ctx.as_of) for state in states),
            self._not_held(_as_text(sql.key), self._subject_text()),
            self._no_open_erasure(self._subject_text()),
        ]
        if self._states:
            rs = store.record_states
            conditions.append(~sa.exists().where(rs.c.dataset == self.name, rs.c.record_key == _as_text(sql.key)))
        return sa.and_(*conditions)

    def summarize(
        self,
        conn: sa.Connection,
        summary: PlanSummary,
        *,
        on_batch: Callable[[Batch], None] | None = None,
        sample_size: int = 3,
    ) -> None:
        """Add every pass of this dataset to ``summary``.

        The active pass, usually nearly all of a large table's moves, is
        counted by aggregates where it can be; a caller that wants each
        batch (``on_batch``) gets the batch path throughout.
        """
        summary.transitions.setdefault(self.name, {})
        for origin in self.origins():
            if origin == "active" and on_batch is None and self.can_aggregate():
                self.aggregate_active(conn, summary, sample_size)
                continue
            for batch in self.batches(conn, origin):
                summary.add(batch, sample_size)
                if on_batch is not None:
                    on_batch(batch)

    def anomaly_counts(self, conn: sa.Connection) -> dict[Anomaly, int]:
        """Active records skipped because of their clocks, per category."""
        if self.sql is None:
            return {}
        rs = store.record_states
        not_moved = ~sa.exists().where(rs.c.dataset == self.name, rs.c.record_key == _as_text(self.sql.key))
        counts: dict[Anomaly, int] = {}
        for category in ANOMALIES:
            query = (
                sa.select(sa.func.count())
                .select_from(self.sql.table)
                .where(self.sql.anomaly(category, self.ctx.as_of), not_moved)
            )
            counts[category] = int(conn.execute(query).scalar_one())
        return counts

    def held_back(self, conn: sa.Connection) -> list[dict[str, Any]]:
        """Per hold in place: how many of this dataset's due records it holds back."""
        h = store.holds
        holds = conn.execute(sa.select(h).where(h.c.released_at.is_(None)).order_by(h.c.id)).all()
        result = []
        rs = store.record_states
        for hold in holds:
            if hold.scope in ("dataset", "record") and hold.dataset != self.name:
                continue
            if hold.scope == "subject" and self.subject is None:
                continue
            count = 0
            if self.sql is not None:
                key_text = _as_text(self.key)
                covered = {
                    "dataset": sa.true(),
                    "record": key_text == (hold.record_key or ""),
                    "subject": _as_text(self.subject) == (hold.subject_key or "")
                    if self.subject is not None
                    else sa.false(),
                }[hold.scope]
                query = (
                    sa.select(sa.func.count())
                    .select_from(self.table)
                    .where(
                        self.sql.due(self.dataset.states[1], self.ctx.as_of),
                        ~sa.exists().where(rs.c.dataset == self.name, rs.c.record_key == key_text),
                        covered,
                    )
                )
                count += int(conn.execute(query).scalar_one())
            for origin in self.dataset.states[1:-1]:
                target = _next_states(self.dataset, origin)[0]
                cutoff = _delay_cutoff(self.ctx.pack, Schedule(self.dataset.step_to(target).after), self.ctx.as_of)
                covered_rs = {
                    "dataset": sa.true(),
                    "record": rs.c.record_key == (hold.record_key or ""),
                    "subject": rs.c.subject_key == (hold.subject_key or ""),
                }[hold.scope]
                query = sa.select(sa.func.count()).where(
                    rs.c.dataset == self.name, rs.c.state == origin, rs.c.since < cutoff, covered_rs
                )
                count += int(conn.execute(query).scalar_one())
            if count:
                result.append(
                    {
                        "hold_id": hold.id,
                        "scope": hold.scope,
                        "dataset": self.name,
                        "count": count,
                        "reason": hold.reason,
                    }
                )
        return result

    def table_rows(self, conn: sa.Connection) -> int:
        """The dataset's population: its source rows, plus archived records whose row is gone."""
        total = int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())
        if "archived" in self.dataset.states and self.dataset.step_to("archived").then == "delete":
            rs = store.record_states
            total += int(
                conn.execute(
                    sa.select(sa.func.count()).where(rs.c.dataset == self.name, rs.c.state == "archived")
                ).scalar_one()
            )
        return total


def _children_first(conn: sa.Connection, pack: Pack, names: list[str]) -> list[str]:
    """``names`` ordered so that a table referencing another by foreign key comes first."""
    tables = {pack.datasets[n].table: n for n in names}
    inspector = sa.inspect(conn)
    parents: dict[str, set[str]] = {}
    for name in names:
        ds = pack.datasets[name]
        try:
            fks = inspector.get_foreign_keys(ds.table, schema=ds.schema_)
        except sa.exc.NoSuchTableError:
            fks = []
        parents[name] = {
            tables[fk["referred_table"]]
            for fk in fks
            if fk["referred_table"] in tables and tables[fk["referred_table"]] != name
        }
    ordered: list[str] = []
    remaining = list(names)
    while remaining:
        # Ready: no other remaining dataset references it.
        ready = [n for n in remaining if not any(n in parents[m] for m in remaining if m != n)]
        for n in ready or remaining[:1]:  # a cycle keeps pack order
            ordered.append(n)
            remaining.remove(n)
    return ordered


def dataset_order(conn: sa.Connection, pack: Pack) -> list[str]:
    """Datasets in execution order.

    Children before parents (a dataset whose table references another's by a
    foreign key goes first), so deletes never trip a live constraint; then
    followers, whose catch-up pass needs their subject's states of this run,
    again children first (their in-batch moves run in this order too).
    """
    leaders = [n for n in pack.datasets if pack.datasets[n].follows is None]
    followers = [n for n in pack.datasets if pack.datasets[n].follows is not None]
    return _children_first(conn, pack, leaders) + _children_first(conn, pack, followers)


def build_planners(conn: sa.Connection, ctx: PlanContext) -> dict[str, DatasetPlanner]:
    """One planner per dataset, in execution order, followers attached to their subject."""
    planners = {name: DatasetPlanner(conn, ctx, name) for name in dataset_order(conn, ctx.pack)}
    for planner in planners.values():
        follows = planner.dataset.follows
        if follows is not None:
            planners[follows.dataset].followers.append(planner)
    return planners


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


def iter_plan(conn: sa.Connection, ctx: PlanContext) -> Iterator[Batch]:
    """Every batch the run would execute, without writing anything."""
    for planner in build_planners(conn, ctx).values():
        for origin in planner.origins():
            yield from planner.batches(conn, origin)
