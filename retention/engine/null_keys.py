"""Rows whose key is NULL, as they concern a person: why an erasure request stays open, and what a person's page says.

Such a row is no record (:meth:`~retention.engine.plan_base.PlannerBase.included`):
the engine addresses every row by its key, so it can neither move, erase nor
mask it. It may still hold a person's data, so it keeps that person's erasure
request open (:meth:`~retention.engine.plan_base.PlannerBase.reach`). Plan and
run say so (:func:`null_key_requests`), the run record keeps it
(:func:`stored_anomalies`, read back by :func:`split_anomalies`), and the
person page and ``explain`` count the person's such rows (:func:`subject_null_keys`).
Ids and counts only, never a key or a subject.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.engine.clock_read import NULL_KEYS

if TYPE_CHECKING:  # the console reads run records with this module; it need not load the planner for that
    from retention.engine.plan_counts import PlannerCounts

REQUEST_KIND = "null_key_request:"
"""The anomaly kind a run record keeps a note under, with the request's id after it.

In ``retention_runs.anomalies`` (dataset -> kind -> count) rather than a
column of its own: the note is a count per dataset like the anomalies beside
it, no migration is needed, and a reader that knows nothing of it still shows
a kind and a count.
"""


@dataclass(frozen=True)
class NullKeyNote:
    """An open erasure request that rows without a key hold open: its id, the dataset, how many rows."""

    request_id: int
    dataset: str
    rows: int

    @property
    def sentence(self) -> str:
        return (
            f"erasure request {self.request_id}: {self.rows} rows of this subject in {self.dataset} have no key "
            "(NULL); the engine cannot erase them, so the request stays open"
        )


def _erasing(p: PlannerCounts) -> bool:
    """Whether an erasure request reaches this dataset's rows by the person (so a NULL-key row can keep it open)."""
    return bool(p.identified and p.key.nullable and (p.dataset.erasure_state or p.dataset.erasure_masking is not None))


def null_key_requests(
    conn: sa.Connection, planners: Iterable[PlannerCounts], counted: Mapping[str, Mapping[str, int]] | None = None
) -> list[NullKeyNote]:
    """Why an open erasure request cannot close: its subject's rows whose key is NULL, by request then dataset.

    Every dataset is looked at, whatever ``--dataset`` selects: a request's
    outcome depends on all of them. Only a dataset that holds a NULL-key row
    at all is asked, so the common case costs one probe per dataset, or
    nothing where ``counted`` (plan's anomalies, whose ``null_key`` covers
    this reach) already says so. Such a dataset is asked once for every
    open request (the requests joined to its NULL-key rows, grouped by
    request), not once per request: a backlog of requests costs no more
    statements than one.
    """
    counted = counted or {}
    found: list[tuple[int, int, NullKeyNote]] = []  # (request, the dataset's place in the pack, note)
    for position, p in enumerate(planners):
        if not _erasing(p):
            continue
        reach = p.reach(erasure=p.dataset.erasure_state is not None)
        if p.name in counted:
            if not counted[p.name].get(NULL_KEYS):
                continue
        else:
            probe = sa.select(sa.literal(1)).select_from(p.table).where(p.key.is_(None), reach).limit(1)
            if conn.execute(probe).first() is None:
                continue
        who = p.live_who(conn)
        if who is None or not who.known:
            continue
        # The NULL-key rows grouped by identity first (few groups), then each open request matched to the
        # groups naming it: MariaDB finds a request's group by a key on the grouped rows instead of
        # comparing every request with every row (bench/null_key_notes.py). A row is in one group, and a
        # group counts once for a request (by id, else by address: _matches), so the sum over a request's
        # groups counts each of its rows once, whichever identity matched.
        identities = [(name, column) for name, column in (("s", who.subject), ("e", who.email)) if column is not None]
        grouped = (
            sa.select(*(column.label(name) for name, column in identities), sa.func.count().label("n"))
            .select_from(p.table)
            .where(p.key.is_(None), reach)
            .group_by(*(column for _, column in identities))
            .subquery()
        )
        er = p.ctx.tables.erasure_requests
        matched = _matches(grouped, er, er.c.status == "open", er.c.received_on <= p.today).subquery()
        query = sa.select(matched.c.r, sa.func.sum(matched.c.n)).group_by(matched.c.r)
        for request_id, count in conn.execute(query).all():
            found.append((int(request_id), position, NullKeyNote(int(request_id), p.name, int(count))))
    return [note for _, _, note in sorted(found, key=lambda item: item[:2])]


def _matches(
    grouped: sa.Subquery, er: sa.FromClause, *open_: ColumnElement[bool]
) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """(request id ``r``, rows ``n``) once for each group of rows an open request names: by subject, or else by address.

    Two equi-joins (``UNION ALL``), not one join on ``subject = … OR email = …``:
    an OR of two columns leaves every database a nested loop over groups and
    requests (1,000 requests, 2,000 groups: 0.11-0.17 s against 0.003-0.008 s
    by subject alone, bench/null_key_notes.py ``--email``). The address arm
    leaves out the pairs the subject arm has, so a request naming a group
    both ways counts it once. Each comparison has the group's identity on
    the left: SQLite compares with the left operand's collation, and
    ``Who.named_by`` (a ``Column`` on the right takes SQLAlchemy's ``==``
    over) would put the request's column there; ``op("=")`` keeps the order.
    Both sides are exact anyway (``Dialect.exact_text``).
    """

    def equal(name: str, column: str) -> ColumnElement[bool]:
        return grouped.c[name].op("=", is_comparison=True)(er.c[column])

    def arm(*on: ColumnElement[bool]) -> sa.Select[Any]:
        return sa.select(er.c.id.label("r"), grouped.c.n).select_from(grouped).join(er, sa.and_(*on)).where(*open_)

    if "e" not in grouped.c:
        return arm(equal("s", "subject_key"))
    if "s" not in grouped.c:
        return arm(equal("e", "email"))
    # Not named by subject: no subject on either side, or two that differ (NULL-safe, same comparison as above).
    other = sa.or_(grouped.c.s.is_(None), er.c.subject_key.is_(None), sa.not_(equal("s", "subject_key")))
    return sa.union_all(arm(equal("s", "subject_key")), arm(equal("e", "email"), other))


def null_key_notes(
    conn: sa.Connection, planners: Iterable[PlannerCounts], counted: Mapping[str, Mapping[str, int]] | None = None
) -> list[str]:
    """:func:`null_key_requests` as the sentences plan and run print (counts only, no data)."""
    return [note.sentence for note in null_key_requests(conn, planners, counted)]


def stored_anomalies(
    anomalies: Mapping[str, Mapping[str, int]], notes: Sequence[NullKeyNote]
) -> dict[str, dict[str, int]]:
    """A run's anomalies with its notes added, as ``retention_runs.anomalies`` keeps them (see ``REQUEST_KIND``)."""
    merged = {dataset: dict(per) for dataset, per in anomalies.items()}
    for note in notes:
        merged.setdefault(note.dataset, {})[f"{REQUEST_KIND}{note.request_id}"] = note.rows
    return merged


def split_anomalies(stored: Mapping[str, Any]) -> tuple[dict[str, dict[str, int]], list[NullKeyNote]]:
    """A run record's anomalies and its notes apart (:func:`stored_anomalies` undone), notes by request."""
    anomalies: dict[str, dict[str, int]] = {}
    notes = []
    for dataset, per in stored.items():
        if not isinstance(per, Mapping):
            continue
        for kind, count in per.items():
            request = str(kind).removeprefix(REQUEST_KIND)
            if request != kind and request.isdigit():
                notes.append(NullKeyNote(int(request), str(dataset), int(count)))
            else:
                anomalies.setdefault(str(dataset), {})[str(kind)] = count
    notes.sort(key=lambda n: (n.request_id, n.dataset))
    return anomalies, notes


NO_KEY = "rows have no key (NULL): the engine cannot move or erase them"
"""What the person page and ``explain`` say after the count of a person's rows with no key in a dataset."""


def subject_null_keys(
    conn: sa.Connection, planner: PlannerCounts, identities: Sequence[tuple[str | None, str | None, str | None]]
) -> list[int]:
    """For each person named by ``identities`` (subject id, normalised e-mail, e-mail pseudonym): their NULL-key rows.

    Rows that ``where`` or ``erasure_where`` selects (what the ``null_key``
    anomaly counts), named as erasure names them (the database's own
    comparison of identities). One statement for all the identities, a
    count each; none when the key cannot be NULL.
    """
    if not identities:
        return []
    who = planner.live_who(conn) if planner.key.nullable else None
    if who is None or not who.known:
        return [0] * len(identities)
    reach = planner.reach()
    if planner.dataset.erasure_where is not None:
        reach = sa.or_(reach, planner.reach(erasure=True))
    counts = [
        sa.func.coalesce(sa.func.sum(sa.case((who.is_one_of(*named), 1), else_=0)), 0).label(f"c{i}")
        for i, named in enumerate(identities)
    ]
    row = conn.execute(sa.select(*counts).select_from(planner.table).where(planner.key.is_(None), reach)).one()
    return [int(value) for value in row]


__all__ = [
    "NO_KEY",
    "REQUEST_KIND",
    "NullKeyNote",
    "null_key_notes",
    "null_key_requests",
    "split_anomalies",
    "stored_anomalies",
    "subject_null_keys",
]
