"""``explain`` for many records of one dataset: their facts read in a few queries, not a few per record.

The console's person page explains every record of a person in every
dataset. :func:`~retention.commands.runs.explain_in` reads one record's
facts (source row, state row, holds, the run that moved it) in six small
queries; here each of those is one query for all the records of the
dataset, and the explanation is then built by the very same
:func:`~retention.commands.runs.explanation_of` (a test holds the two paths
equal, record by record, on the three databases). The planner's outcomes
are one query already (``planner.outcomes``), and the active records'
clocks one query for all (:meth:`DatasetSQL.readings_many`, the safe read
of :meth:`DatasetSQL.readings`; plus one per aggregate clock). Holds are
still asked per record, and only when a hold in place may cover the
dataset: which hold covers which record is the database's comparison of
identities (a case-insensitive collation on MariaDB), not Python's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from retention.commands.runs import Explanation, RecordFacts, explanation_of, native_key
from retention.commands.subjects import Named, holds_covering
from retention.engine.null_keys import subject_null_keys
from retention.policy import LoadedPack
from retention.store import tables as store


def explain_records(
    conn: sa.Connection,
    loaded: LoadedPack,
    when: dt.datetime,
    dataset: str,
    keys: Sequence[str],
    planners: dict[str, Any],
    *,
    null_keys: bool = True,
) -> dict[str, Explanation]:
    """Each record of ``dataset`` named in ``keys`` (as ``explain`` shows it), from a few queries for all.

    ``null_keys=False``: each explanation's ``subject_null_keys`` is left at 0
    instead of counted. The person page passes it: it shows the person's count
    per dataset (``PersonDataset.null_keys``), never the per-record one, and
    the count is a scan of the dataset's NULL-key rows (on SQLite every key
    reflects as nullable, so every dataset, every lookup).
    """
    if not keys:
        return {}
    planner = planners[dataset]
    pack = loaded.pack
    natives = {key: native_key(planner.key, key, dataset) for key in keys}
    outcomes = planner.outcomes(conn, list(keys))
    key_text = planner.text(conn, planner.key)
    columns = [key_text.label("k")]
    if planner.subject is not None:
        columns.append(planner.subject.label("subject"))
    if planner.email is not None:
        columns.append(planner.email.label("email"))
    if planner.row_filter is not None:
        columns.append(sa.case((planner.excluded(), sa.literal(1)), else_=sa.literal(0)).label("excluded"))
    wanted = list(dict.fromkeys(natives.values()))
    rows = conn.execute(sa.select(*columns).select_from(planner.table).where(planner.key.in_(wanted)))
    live = {str(r.k): r for r in rows}
    rs = store.record_states
    states = {
        r.record_key: r
        for r in conn.execute(sa.select(rs).where(rs.c.dataset == dataset, store.one_of(conn, rs.c.record_key, keys)))
    }
    run_ids = sorted({r.run_id for r in states.values() if r.run_id is not None})
    moved = (
        dict(conn.execute(sa.select(store.runs.c.id, store.runs.c.as_of).where(store.runs.c.id.in_(run_ids))).all())
        if run_ids
        else {}
    )
    # Holds are few and rarely in place: each record asks ``holds_covering`` (the database's own
    # comparison of identities) only when one may cover it.
    any_hold = _holds_may_cover(conn, dataset)
    sql = None
    if pack.datasets[dataset].keep and any(o.state == "active" for o in outcomes.values()):
        from retention.engine.evaluate import dataset_sql

        active = [natives[k] for k in keys if (o := outcomes.get(k)) is not None and o.state == "active"]
        sql = _Readings(dataset_sql(conn, pack, dataset), conn, active, when)
    identities = {}
    for key in keys:
        row, state_row = live.get(str(natives[key])) or live.get(key), states.get(key)
        subject = getattr(row, "subject", None) if row is not None else None
        subject = str(subject) if subject is not None else (state_row.subject_key if state_row is not None else None)
        email = getattr(row, "email", None) if row is not None else None
        mail_pseudonym = state_row.email_pseudonym if state_row is not None else None
        identities[key] = (subject, email, mail_pseudonym)
    # Each person's rows with no key, one statement for every person named (a person page names one).
    people = list(dict.fromkeys(i for i in identities.values() if any(i)))
    counted = dict(zip(people, subject_null_keys(conn, planner, people), strict=True)) if null_keys else {}
    found = {}
    for key in keys:
        row, state_row = live.get(str(natives[key])) or live.get(key), states.get(key)
        subject, email, mail_pseudonym = identities[key]
        facts = RecordFacts(
            native=natives[key],
            outcome=outcomes.get(key),
            subject=subject,
            email=email,
            state_row=state_row,
            holds=holds_covering(conn, dataset, key, Named(subject, email, mail_pseudonym)) if any_hold else [],
            excluded=bool(getattr(row, "excluded", 0)) if row is not None else False,
            moved_at=moved.get(state_row.run_id) if state_row is not None else None,
            null_keys=counted.get(identities[key], 0),
        )
        found[key] = explanation_of(conn, loaded, when, dataset, key, facts, sql, planner)
    return found


class _Readings:
    """A dataset's clocks with the active records' readings read at once; any other key is read alone.

    ``explanation_of`` asks ``readings(conn, native, when)`` per record; a
    record :meth:`DatasetSQL.readings_many` did not answer (its key matched
    another way, or several rows) gets the per-record read, so the answer is
    the one ``explain`` gives.
    """

    def __init__(self, sql: Any, conn: sa.Connection, natives: list[Any], when: dt.datetime) -> None:
        self._sql = sql
        self._when = when
        self._read = sql.readings_many(conn, natives, when) if natives else {}

    def readings(self, conn: sa.Connection, native: Any, when: dt.datetime) -> Any:
        found = self._read.get(native) if when == self._when else None
        return found if found is not None else self._sql.readings(conn, native, when)


def _holds_may_cover(conn: sa.Connection, dataset: str) -> bool:
    """Whether any hold in place may cover a record of ``dataset`` (usually none: then no record asks)."""
    h = store.holds
    query = sa.select(sa.literal(1)).where(
        h.c.released_at.is_(None), sa.or_(h.c.dataset == dataset, h.c.scope == "subject")
    )
    return conn.execute(query.limit(1)).first() is not None
