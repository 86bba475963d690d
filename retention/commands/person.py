"""One person across every dataset: the library behind the console's person page.

"Was this person's data deleted, and can you prove it?" takes three
commands in the CLI: ``ledger lookup --subject`` (what the ledger says),
``explain`` per record (where each record stands now and what comes next;
here a dataset's records are explained together, :mod:`~retention.commands.explain_many`)
and ``ledger prove`` + ``verify-proof --db`` (the proof, and its claims
checked against the live tables). :func:`person` and :func:`person_proof`
call the same functions on one connection, so the page shows what those
commands print, and nothing is decided in a web route.

The person is named by subject id or e-mail address; both are used only to
compute pseudonyms and to find the person's records in the dataset tables
(as erasure does). Neither is returned: a record is named by its pseudonym,
as everywhere in the ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from retention.commands.explain_many import explain_records
from retention.commands.runs import Explanation
from retention.engine import backups
from retention.engine.null_keys import subject_null_keys
from retention.errors import ConfigError, SchemaError
from retention.ledger import items as ledger_items
from retention.ledger import proof as ledger_proof
from retention.ledger import pseudonyms
from retention.policy import LoadedPack
from retention.store import tables as store
from retention.subjects import events as subjects

RECORDS_PER_DATASET = 25
"""At most this many records of one person are explained per dataset (a page, not an export)."""


@dataclass
class PersonRecord:
    """One record of the person: its pseudonym and what ``explain`` says of it (its key is not kept)."""

    pseudonym: str
    explanation: Explanation

    def as_dict(self) -> dict[str, Any]:
        found = self.explanation.as_dict()
        found.pop("key")
        found.pop("subject_null_keys")  # not counted per record here (explain_records' null_keys=False)
        return {"pseudonym": self.pseudonym, **found}


@dataclass
class PersonDataset:
    """One dataset of the pack as it concerns the person."""

    name: str
    basis: str | None
    rules: list[str]  # how long its records are kept: "created_at P2Y", "expires_at (expiry)"
    identified: bool  # whether its records name a person at all (a subject or an e-mail column)
    records: list[PersonRecord] = field(default_factory=list)
    more: bool = False  # more records than RECORDS_PER_DATASET
    entries: list[dict[str, Any]] = field(default_factory=list)  # the ledger's records of this dataset, oldest first
    # Their rows whose key is NULL: no record, so neither listed nor explained, but counted (null_keys.NO_KEY).
    null_keys: int = 0

    @property
    def states(self) -> dict[str, int]:
        """Records per current state (what the page's summary line counts)."""
        counts: dict[str, int] = {}
        for record in self.records:
            state = record.explanation.state if record.explanation.exists else "gone"
            counts[state] = counts.get(state, 0) + 1
        return counts


@dataclass
class Person:
    """Every dataset's state for one person, their ledger timeline and holds, as of one instant."""

    as_of: dt.datetime
    pack_id: str
    pack_digest: str
    datasets: list[PersonDataset]
    entries: list[dict[str, Any]]  # every ledger record of the person, oldest first (``ledger lookup``)

    @property
    def found(self) -> bool:
        return bool(self.entries) or any(d.records or d.null_keys for d in self.datasets)


def _rules(loaded: LoadedPack, name: str) -> list[str]:
    dataset = loaded.pack.datasets[name]
    lines = []
    for rule in dataset.keep:
        label = rule.clock.label()
        if rule.clock.is_expiry:
            lines.append(f"{label}: until it passes (expiry)")
        else:
            anchor = "" if rule.anchor == "event" else " from the financial year end"
            lines.append(f"{label}: kept {rule.period}{anchor}")
    if dataset.follows is not None:
        lines.append(f"follows {dataset.follows.dataset}")
    steps = " → ".join(f"{s.to} ({s.action or 'state only'})" for s in dataset.lifecycle)
    if steps:
        lines.append(f"lifecycle: {steps}")
    return lines


def _record_keys(conn: sa.Connection, planner: Any, named: tuple[str | None, str | None, str | None]) -> list[str]:
    """Keys of the person's records in one dataset: live rows, then state rows (records gone from the table).

    The same identities erasure matches on (subject id as text, normalised
    e-mail, the e-mail's pseudonym a state row kept); at most
    RECORDS_PER_DATASET + 1, so the caller can say there are more. A row
    whose key is NULL is no record (it read as the key "None"): the caller
    counts those apart.
    """
    if not planner.identified:
        return []
    limit = RECORDS_PER_DATASET + 1
    key_text = planner.text(conn, planner.key)
    live = planner.live_who(conn)
    keys = [
        str(k)
        for k in conn.execute(
            sa.select(key_text)
            .select_from(planner.table)
            .where(live.is_one_of(*named), planner.key.is_not(None))
            .order_by(key_text)
            .limit(limit)
        ).scalars()
    ]
    rs = store.record_states
    known = planner.state_who()
    for key in conn.execute(
        sa.select(rs.c.record_key)
        .where(rs.c.dataset == planner.name, known.is_one_of(*named))
        .order_by(rs.c.record_key)
        .limit(limit)
    ).scalars():
        if key not in keys:
            keys.append(str(key))
    return keys[:limit]


def person(
    conn: sa.Connection,
    loaded: LoadedPack,
    when: dt.datetime,
    secret: bytes,
    *,
    subject_key: str | None = None,
    email: str | None = None,
) -> Person:
    """Every dataset's records of the person (``explain`` of each) and every ledger record of them (``lookup``)."""
    from retention.engine.plan import PlanContext, build_planners

    if (subject_key is None) == (email is None):
        raise ConfigError("give a subject id or an e-mail address")
    # Folded by the database, as the rows it is compared with are (subjects.database_email).
    mail = subjects.database_email(conn, email) if email is not None else None
    named = (subject_key, mail, pseudonyms.email_pseudonym(secret, email) if email is not None else None)
    entries = ledger_items.lookup(conn, secret, subject_key=subject_key, email=email)
    backups.annotate(conn, entries)
    try:
        planners = build_planners(conn, PlanContext(loaded, when))
    except SchemaError as exc:
        raise ConfigError(f"the pack's tables cannot be read: {exc}") from None
    datasets = []
    for name, ds in loaded.pack.datasets.items():
        view = PersonDataset(name, ds.basis, _rules(loaded, name), planners[name].identified)
        view.entries = [e for e in entries if e.get("dataset") == name]
        keys = _record_keys(conn, planners[name], named)
        if view.identified:
            (view.null_keys,) = subject_null_keys(conn, planners[name], [named])
        view.more = len(keys) > RECORDS_PER_DATASET
        shown = keys[:RECORDS_PER_DATASET]
        # A few queries for all; the person's NULL-key rows are counted above, once per dataset (not per record).
        explained = explain_records(conn, loaded, when, name, shown, planners, null_keys=False)
        for key in shown:
            view.records.append(PersonRecord(pseudonyms.record_pseudonym(secret, name, key), explained[key]))
        datasets.append(view)
    # Records moved under another pack (or a dataset since removed): the ledger's word is all there is.
    for name in sorted({str(e["dataset"]) for e in entries if e.get("dataset")} - set(loaded.pack.datasets)):
        gone = PersonDataset(name, None, [f"not a dataset of pack {loaded.pack.pack} in force"], True)
        gone.entries = [e for e in entries if e.get("dataset") == name]
        gone.basis = gone.entries[-1].get("basis")
        datasets.append(gone)
    conn.rollback()
    return Person(when, loaded.pack.pack, loaded.digest, datasets, entries)


def person_proof(
    conn: sa.Connection,
    secret: bytes,
    checkpoint: dict[str, Any],
    *,
    subject_key: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    """``ledger prove --subject`` (or by e-mail address) on an open connection, up to ``checkpoint``."""
    return ledger_proof.build(conn, secret, checkpoint, subject_key=subject_key, email=email)


__all__ = ["RECORDS_PER_DATASET", "Person", "PersonDataset", "PersonRecord", "person", "person_proof"]
