"""The planner's rows: the columns a pass selects, and the candidates made from them.

A pass's query selects the same leading columns (key, subject, leader key,
state, since, clock day, e-mail, pseudonym, reach) from the source rows
joined to their state rows, or from state rows alone (records whose source
row is gone), then the clock values; :meth:`PlannerRows._candidates` turns
either into :class:`~retention.engine.plan_values.Candidate` values by
position. Kept apart from :class:`~retention.engine.plan_base.PlannerBase`,
which holds what every pass conditions on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.evaluate import DatasetSQL
from retention.engine.lifecycle import _next_states
from retention.engine.plan_base import PlannerBase
from retention.engine.plan_values import Candidate, _as_date, key_to_native, new_candidate


class PlannerRows(PlannerBase):
    """Selecting a pass's rows and reading them as candidates."""

    def _columns(
        self, conn: sa.Connection, with_clocks: bool, reach: ColumnElement[Any] | None, joined: bool = True
    ) -> list[Any]:
        """Key, subject, leader key, state, since, reach and clock values of source rows.

        ``joined``: the query joins the state rows (:meth:`_joined`); without
        them every row is active.
        """
        rs = self.ctx.tables.record_states
        columns: list[Any] = [
            self.key.label("k"),
            (self.text(conn, self.subject) if self.subject is not None else sa.null()).label("s"),
            (self.text(conn, self.leader_column) if self.leader_column is not None else sa.null()).label("lk"),
            (rs.c.state if joined else sa.null()).label("state"),
            (rs.c.since if joined else sa.null()).label("since"),
            (rs.c.clock_day if joined else sa.null()).label("clock_day"),
            (self.email if self.email is not None else sa.null()).label("e"),
            (rs.c.email_pseudonym if joined and self.email is not None else sa.null()).label("ep"),
        ]
        if self.sql is not None and with_clocks:
            reach = reach if reach is not None else self._reach(conn, self.sql)
            columns.append(reach.label("reach"))
            for i, value in enumerate(self.sql.values()):
                columns.append(sa.case((reach > 0, value), else_=sa.null()).label(f"c{i}"))
        else:
            columns.append(sa.literal(0).label("reach"))
        return columns

    def _joined(self, conn: sa.Connection) -> Any:
        rs = self.ctx.tables.record_states
        return self.table.outerjoin(
            rs, sa.and_(rs.c.dataset == self.name, rs.c.record_key == self.text(conn, self.key))
        )

    def _candidates(self, rows: Iterable[Any]) -> list[Candidate]:
        """Candidates from rows of :meth:`_columns` or :meth:`_state_rows` (perhaps with more columns after).

        By position, not by name: a batch makes thousands, and a row's
        mapping view costs more than the rest of the candidate. The first
        nine columns are the same in every query; clock values follow where
        the row has them (a row of another length gets its names looked up).
        """
        clocks = len(self.sql.clocks) if self.sql is not None else 0
        names = ("k", "s", "lk", "state", "since", "clock_day", "e", "ep", "reach")
        clock_names = tuple(f"c{i}" for i in range(clocks))
        layout: tuple[int, tuple[int | None, ...]] | None = None
        result = []
        for row in rows:
            if layout is None or layout[0] != len(row):
                fields = row._fields
                assert fields[: len(names)] == names, fields
                layout = (len(row), tuple(fields.index(n) if n in fields else None for n in clock_names))
            k, s, lk, state, since, clock_day, e, ep, reach = row[:9]
            result.append(
                new_candidate(
                    key=k,
                    record_key=str(k),
                    subject_key=s,
                    leader_key=lk,
                    state=state or "active",
                    since=since,
                    reach=int(reach or 0) if state is None else 0,
                    clocks=tuple(None if i is None else row[i] for i in layout[1]),
                    clock_day=_as_date(clock_day),
                    email=e,
                    email_pseudonym=ep,
                )
            )
        return result

    def _state_rows(self, conn: sa.Connection, *conditions: ColumnElement[bool]) -> sa.Select[Any]:
        """State rows of this dataset as candidates (records whose source row may be gone)."""
        rs = self.ctx.tables.record_states
        leader_ref = rs.c.leader_key if self.dataset.follows is not None else sa.null()
        return sa.select(
            rs.c.record_key.label("k"),
            rs.c.subject_key.label("s"),
            leader_ref.label("lk"),
            rs.c.state.label("state"),
            rs.c.since.label("since"),
            rs.c.clock_day.label("clock_day"),
            sa.null().label("e"),
            (rs.c.email_pseudonym if self.email is not None else sa.null()).label("ep"),
            sa.literal(0).label("reach"),
        ).where(rs.c.dataset == self.name, *conditions)

    def _native(self, candidates: list[Candidate]) -> list[Candidate]:
        """State rows carry text keys; give them the source column's type."""
        return [replace(c, key=key_to_native(self.key, c.record_key)) for c in candidates]

    def reaching(self, conn: sa.Connection, sql: DatasetSQL, count: int, per_row: bool = False) -> ColumnElement[bool]:
        """Active records whose own clocks make the first ``count`` states due, not held, not erasing.

        The one predicate of the active pass: batches select with it
        (``per_row``, see :meth:`not_moved`) and plan counts with it.
        """
        targets = _next_states(self.dataset, "active")[:count]
        who = self.live_who(conn)
        return sa.and_(
            *(sql.due(state, self.ctx.as_of) for state in targets),
            self.included(),
            self.not_held(self.text(conn, sql.key), who),
            self.no_open_erasure(who),
            self.not_moved(conn, per_row),
        )

    def _reach(self, conn: sa.Connection, sql: DatasetSQL) -> ColumnElement[Any]:
        """How many states an active record's clocks make due (0 to the lifecycle's length)."""
        targets = _next_states(self.dataset, "active")
        whens = []
        for count in range(len(targets), 0, -1):
            condition = sa.and_(*(sql.due(state, self.ctx.as_of) for state in targets[:count]))
            whens.append((condition, sa.literal(count)))
        return sa.case(*whens, else_=sa.literal(0))
