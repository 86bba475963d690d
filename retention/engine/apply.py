"""Applying one batch: witness its records under lock, then archive, mask or delete them,
record their new states and append the ledger entries, all in the batch's one transaction.

See :mod:`retention.engine.execute` for why one transaction per batch loses nothing
when the process is killed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine import shred
from retention.engine.archive import ArchiveStore, SameDatabaseArchive
from retention.engine.masking import mask_rows
from retention.engine.plan import (
    Batch,
    DatasetPlanner,
    Move,
    steps_from_state,
)
from retention.engine.statistics import FreshStatistics, note_changed
from retention.errors import ConcurrentChangeError
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.ledger import pseudonyms
from retention.policy import LoadedPack
from retention.policy.model import RECORD_STATE
from retention.store import tables as store
from retention.timing.clock import local_date, utcnow

log = structlog.get_logger("retention")


@dataclass
class RunContext:
    """Everything a batch needs besides the connection."""

    loaded: LoadedPack
    run_id: str
    as_of: dt.datetime
    secret: bytes
    archive: ArchiveStore
    now: Callable[[], dt.datetime] = utcnow
    should_stop: Callable[[], bool] | None = None
    review_batches: dict[str, int] = field(default_factory=dict)  # dataset -> this run's review batch
    retry: bool = False  # run a batch again after a deadlock (shards of one database run side by side)
    shard: int = store.WHOLE_RUN  # the shard whose counts each batch adds to (retention.store.tally)
    statistics: FreshStatistics = field(default_factory=FreshStatistics)  # engine tables' planner statistics
    archive_keys: shred.ArchiveKeys | None = None  # payloads sealed under per-bucket data keys (retention.shred)


class _Interrupted(Exception):
    """Raised between batches when the operator asked the run to stop (SIGTERM)."""


def _json_payload(values: dict[str, Any]) -> str:
    """The archived payload: only the declared columns, as JSON."""

    def encode(value: Any) -> Any:
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if isinstance(value, bytes):
            return value.hex()
        return str(value)

    return json.dumps(values, default=encode, sort_keys=True, ensure_ascii=False)


def _set_states(
    conn: sa.Connection,
    dataset: str,
    moves: Sequence[Any],
    state: str | None,
    run_id: str,
    to_state: str,
    from_state: str,
) -> None:
    """Replace the state rows of ``moves``; ``None`` removes them (the data is gone).

    An active record has no state row by definition, so moves out of
    ``active`` skip the delete (most of a nightly purge's moves). The rows
    are the witnesses of the change: a state row removed must have been
    there, and a new one is inserted under the table's primary key, so two
    runs can never both record the same transition.
    """
    rs = store.record_states
    keys = [m.record_key for m in moves]
    removed = 0
    if from_state != "active":
        removed = conn.execute(
            rs.delete().where(
                rs.c.dataset == dataset, rs.c.state == from_state, store.one_of(conn, rs.c.record_key, keys)
            )
        ).rowcount
        if removed != len(keys):
            raise ConcurrentChangeError(
                f"dataset {dataset}: {len(keys) - removed} of {len(keys)} records left state {from_state} "
                "while the batch ran; rolled back"
            )
    if state is None:
        note_changed(conn, rs.name, removed)
        return
    note_changed(conn, rs.name, removed + len(moves))
    rows = [
        {
            "dataset": dataset,
            "record_key": m.record_key,
            "state": state,
            "since": next(s.due_at for s in m.steps if s.to_state == to_state),
            "subject_key": m.subject_key,
            "leader_key": m.leader_key,
            "run_id": run_id,
            "clock_day": m.clock_day,
            "email_pseudonym": m.email_pseudonym,
        }
        for m in moves
    ]
    conn.execute(rs.insert(), rows)


def _for_update(conn: sa.Connection, query: sa.Select[Any], table: sa.Table | None = None) -> sa.Select[Any]:
    """Lock the selected rows until commit where the database can (SQLite: the batch holds its write lock)."""
    return dialect_for(conn).for_update(query, table)


def witness(conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner, batch: Batch) -> Batch:
    """The batch cut to the records still as planned, their rows locked until commit.

    A record moved by its clocks alone must still be due by them (new
    activity since the batch was selected wins); every record must still be
    unheld, a record of the dataset (its ``where``) and in the state it leaves. Follower moves whose leader record
    dropped out drop out too: they would move for a reason that is gone.

    Where a batch transaction holds the database's only write lock from its
    first statement (SQLite: :meth:`RunLock.verify` writes the heartbeat
    before the batch is selected), no other connection can change a row
    between the selection and the change, and there is nothing to witness.
    """
    if dialect_for(conn).batch_holds_write_lock:
        return _with_email_pseudonyms(batch, ctx.secret)
    as_of = ctx.as_of
    kept: set[str] = set()
    from_active = [m for m in batch.moves if m.steps and m.steps[0].from_state == "active"]
    key_text = planner.text(conn, planner.key)
    who = planner.live_who(conn)
    for recheck in (False, True):
        group = [m for m in from_active if m.recheck is recheck]
        if not group:
            continue
        conditions = [
            store.one_of(conn, planner.key, [m.key for m in group]),
            planner.not_held(key_text, who),
            planner.not_moved(conn, per_row=True),
            planner.included(),
        ]
        if recheck and planner.sql is not None:
            conditions.append(planner.sql.due(planner.dataset.states[1], as_of))
        query = _for_update(conn, sa.select(planner.key).where(*conditions), planner.table)
        kept |= {str(k) for k in conn.execute(query).scalars()}
    rs = store.record_states
    by_state: dict[str, list[Move]] = {}
    for m in batch.moves:
        if m.steps and m.steps[0].from_state != "active":
            by_state.setdefault(m.steps[0].from_state, []).append(m)
    for state, group in by_state.items():
        query = sa.select(rs.c.record_key).where(
            rs.c.dataset == planner.name,
            rs.c.state == state,
            store.one_of(conn, rs.c.record_key, [m.record_key for m in group]),
            planner.not_held(rs.c.record_key, planner.state_who()),
            planner.state_row_included(conn, rs.c.record_key),
        )
        kept |= set(conn.execute(_for_update(conn, query)).scalars())
    moves = [m for m in batch.moves if m.record_key in kept]
    dropped = {m.record_key for m in batch.moves} - kept
    if dropped:
        log.info("records_no_longer_due", dataset=planner.name, count=len(dropped), run_id=ctx.run_id)
    followers = []
    by_name = {f.name: f for f in planner.followers}
    for follower in batch.followers:
        if dropped:
            follower = replace(follower, moves=[m for m in follower.moves if m.leader_key not in dropped])
        followers.append(witness(conn, ctx, by_name[follower.dataset], follower))
    return replace(batch, moves=[_with_email_pseudonym(m, ctx.secret) for m in moves], followers=followers)


def _with_email_pseudonyms(batch: Batch, secret: bytes) -> Batch:
    """The batch (followers included) with each move's e-mail pseudonym (see :func:`_with_email_pseudonym`)."""
    return replace(
        batch,
        moves=[_with_email_pseudonym(m, secret) for m in batch.moves],
        followers=[_with_email_pseudonyms(f, secret) for f in batch.followers],
    )


def _with_email_pseudonym(move: Move, secret: bytes) -> Move:
    """The move with its e-mail's pseudonym, which its state row keeps (the one it kept already wins).

    Computed here, in Python, from the address read from the source row: the
    pseudonym key never reaches the database server, and no address is
    written to the engine's tables.
    """
    if move.email_pseudonym is not None or move.email is None:
        return move
    return replace(move, email_pseudonym=pseudonyms.email_pseudonym(secret, move.email))


def apply_batch(
    conn: sa.Connection, ctx: RunContext, planner: DatasetPlanner, batch: Batch
) -> dict[str, dict[str, int]]:
    """Carry out ``batch`` and its followers inside the caller's transaction.

    Followers are the leader records' children, so they change first.
    Returns counts per dataset and transition. The ledger entries of the
    whole batch are appended last, in one go, so the ledger's append lock is
    held from there to the commit only (concurrent shards queue on it).
    """
    drafts: list[ledger.EntryDraft | ledger_items.BatchItems] = []
    counts = _apply_tree(conn, ctx, planner, batch, drafts)
    ledger.append(conn, drafts, ctx.now(), secret=ctx.secret)
    return counts


def _apply_tree(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    batch: Batch,
    drafts: list[ledger.EntryDraft | ledger_items.BatchItems],
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    by_name = {f.name: f for f in planner.followers}
    for follower in batch.followers:
        for name, per in _apply_tree(conn, ctx, by_name[follower.dataset], follower, drafts).items():
            mine = counts.setdefault(name, {})
            for transition, n in per.items():
                mine[transition] = mine.get(transition, 0) + n
    counts.setdefault(batch.dataset, {})
    if batch.review:
        drafts.append(_request_review(conn, ctx, batch))
    for transition, n in _apply_own(conn, ctx, planner, batch, drafts).items():
        counts[batch.dataset][transition] = counts[batch.dataset].get(transition, 0) + n
    return counts


def _request_review(conn: sa.Connection, ctx: RunContext, batch: Batch) -> ledger.EntryDraft:
    """Record due purges of a review dataset as items of this run's review batch; returns its ledger entry."""
    rb, ri = store.review_batches, store.review_items
    batch_id = ctx.review_batches.get(batch.dataset)
    if batch_id is None:
        inserted = conn.execute(
            rb.insert().values(dataset=batch.dataset, run_id=ctx.run_id, created_at=ctx.now(), status="pending")
        ).inserted_primary_key
        assert inserted is not None
        batch_id = int(inserted[0])
        ctx.review_batches[batch.dataset] = batch_id
    conn.execute(
        ri.insert(),
        [
            {
                "batch_id": batch_id,
                "dataset": batch.dataset,
                "record_key": key,
                "transition": f"{from_state}->purged",
                "due_at": due,
            }
            for key, from_state, due in batch.review
        ],
    )
    pack = ctx.loaded.pack
    return ledger.EntryDraft(
        run_id=ctx.run_id,
        pack_id=pack.pack,
        pack_digest=ctx.loaded.digest,
        dataset=batch.dataset,
        transition="review_requested",
        action=None,
        basis=pack.datasets[batch.dataset].basis_for("purged"),
        due_at=max(due for _, _, due in batch.review),
        record_pseudonym=None,
        subject_pseudonym=None,
        count=len(batch.review),
        detail={"review_id": batch_id},
    )


def _settle_reviewed(conn: sa.Connection, dataset: str, moves: Sequence[Any]) -> None:
    """Approved items are done once purged; a batch with none left is completed."""
    reviewed = [m for m in moves if m.review_id is not None]
    if not reviewed:
        return
    rb, ri = store.review_batches, store.review_items
    conn.execute(
        ri.delete().where(
            ri.c.dataset == dataset, store.one_of(conn, ri.c.record_key, [m.record_key for m in reviewed])
        )
    )
    for batch_id in {m.review_id for m in reviewed}:
        left = conn.execute(sa.select(sa.func.count()).where(ri.c.batch_id == batch_id)).scalar_one()
        if not left:
            conn.execute(rb.update().where(rb.c.id == batch_id).values(status="completed"))


def _present(conn: sa.Connection, planner: DatasetPlanner, moves: list[Move]) -> tuple[list[Move], list[Move]]:
    """(moves whose source row is there, locked; moves whose row is gone already)."""
    query = _for_update(
        conn, sa.select(planner.key).where(store.one_of(conn, planner.key, [m.key for m in moves])), planner.table
    )
    found = {str(k) for k in conn.execute(query).scalars()}
    return [m for m in moves if m.record_key in found], [m for m in moves if m.record_key not in found]


_NEEDS_ROW = frozenset({"deactivate", "archive", "delete", "drop_partition", "anonymise"})


def _apply_own(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    batch: Batch,
    drafts: list[ledger.EntryDraft | ledger_items.BatchItems],
) -> dict[str, int]:
    """Change the data, the state rows and the ledger for the batch's own records.

    Ledger entries are written only for what this transaction changed: a
    record whose source row is already gone (deleted by the application)
    loses its state row and gets no entry; a delete counts the rows it
    really removed.
    """
    dataset = planner.dataset
    table = planner.table
    key = planner.key
    counts: dict[str, int] = {}
    gone: set[str] = set()
    for from_state, to_state, planned in batch.transitions():
        moves = [m for m in planned if m.record_key not in gone]
        if not moves:
            continue
        step = dataset.step_to(to_state)
        action = step.action or (RECORD_STATE if to_state == "inactive" else "purge_archive")
        if action in _NEEDS_ROW and from_state != "active":
            moves, missing = _present(conn, planner, moves)
            if missing:
                gone |= {m.record_key for m in missing}
                _set_states(conn, batch.dataset, missing, None, ctx.run_id, to_state, from_state)
                log.info("records_already_gone", dataset=batch.dataset, count=len(missing), run_id=ctx.run_id)
            if not moves:
                continue
        keys = [m.key for m in moves]
        if action == "deactivate":
            conn.execute(table.update().where(store.one_of(conn, key, keys)).values(**(step.set or {})))
            _set_states(conn, batch.dataset, moves, to_state, ctx.run_id, to_state, from_state)
        elif action == RECORD_STATE:
            # No action: the engine's state row and the ledger say the record is
            # inactive; the source row (locked by the witness) is not touched.
            _set_states(conn, batch.dataset, moves, to_state, ctx.run_id, to_state, from_state)
        elif action == "archive":
            # Sealed payloads are encrypted here, so never built by the database.
            if isinstance(ctx.archive, SameDatabaseArchive) and ctx.archive_keys is None:
                _archive_in_sql(conn, ctx, planner, batch.dataset, step.columns or [], moves, to_state)
            else:
                _archive_in_python(conn, ctx, planner, batch.dataset, step.columns or [], moves, to_state)
            if step.then == "delete":
                _delete_rows(conn, batch.dataset, table, key, keys)
            else:
                mask_rows(conn, table, dataset.key, keys, step.mask or {}, ctx.secret)
            _set_states(conn, batch.dataset, moves, to_state, ctx.run_id, to_state, from_state)
        elif action == "purge_archive":
            ctx.archive.delete(conn, batch.dataset, [m.record_key for m in moves])
            archived = dataset.step_to("archived")
            source_kept = archived.then == "anonymise"
            _set_states(conn, batch.dataset, moves, "purged" if source_kept else None, ctx.run_id, to_state, from_state)
        elif action in ("delete", "drop_partition"):
            # Rows outside whole droppable partitions are deleted one by one,
            # and the ledger says so.
            action = "delete"
            _delete_rows(conn, batch.dataset, table, key, keys)
            _set_states(conn, batch.dataset, moves, None, ctx.run_id, to_state, from_state)
        elif action == "anonymise":
            mask_rows(conn, table, dataset.key, keys, step.mask or {}, ctx.secret)
            _set_states(conn, batch.dataset, moves, "purged", ctx.run_id, to_state, from_state)
        else:  # pragma: no cover - the model admits no other action
            raise AssertionError(action)
        if to_state == "purged":
            _settle_reviewed(conn, batch.dataset, moves)
        name = f"{from_state}->{to_state}"
        counts[name] = counts.get(name, 0) + len(moves)
        drafts.extend(_ledger_drafts(ctx, batch.dataset, from_state, to_state, action, moves))
    return counts


def _archive_in_python(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    dataset_name: str,
    columns: Sequence[str],
    moves: Sequence[Move],
    to_state: str,
) -> None:
    """Hand the moves' payloads to a separate archive store (another database: no ``INSERT ... SELECT``)."""
    table, key = planner.table, planner.key
    query = sa.select(key.label("_key"), *(table.c[c] for c in columns)).where(
        store.one_of(conn, key, [m.key for m in moves])
    )
    payloads = {str(r._key): _json_payload({c: r._mapping[c] for c in columns}) for r in conn.execute(query)}
    purge_due = _purge_due(ctx, planner.dataset, moves, to_state)
    keys = ctx.archive_keys

    def payload(m: Move) -> str:
        plain = payloads.get(m.record_key, "{}")
        if keys is None:
            return plain
        return keys.seal(conn, dataset_name, m.record_key, purge_due.get(m.record_key), plain)

    ctx.archive.put(
        conn,
        [
            {
                "dataset": dataset_name,
                "record_key": m.record_key,
                "payload": payload(m),
                "archived_at": ctx.now(),
                "purge_due_at": purge_due.get(m.record_key),
                "run_id": ctx.run_id,
            }
            for m in moves
        ],
    )


def _archive_keys(engine: sa.Engine, finish_rotation: bool = True) -> shred.ArchiveKeys | None:
    """The data keys when archive encryption is configured, after finishing a rotation a crash interrupted."""
    key_file = shred.configured_key_file()
    if key_file is None:
        return None
    return shred.ArchiveKeys(shred.finish_rotation(engine, key_file) if finish_rotation else key_file)


def _shred_keys(conn: sa.Connection, ctx: RunContext) -> shred.ArchiveKeys:
    """Destroy the data keys of buckets whose payloads are all purged, one ledger entry per dataset."""
    assert ctx.archive_keys is not None

    def record(conn: sa.Connection, destroyed: dict[str, list[str]], key_id: str) -> None:
        drafts = [
            ledger.EntryDraft(
                run_id=ctx.run_id,
                pack_id=ctx.loaded.id,
                pack_digest=ctx.loaded.digest,
                dataset=dataset,
                transition=shred.DESTROYED,
                action=None,
                basis="archive payloads purged: their data key is destroyed (crypto-shredding)",
                due_at=None,
                record_pseudonym=None,
                subject_pseudonym=None,
                count=len(days),
                detail={"purge_days": days, "archive_key_rotated_to": key_id},
            )
            for dataset, days in sorted(destroyed.items())
        ]
        ledger.append(conn, drafts, ctx.now())
        log.info("archive_keys_destroyed", count=sum(len(d) for d in destroyed.values()), run_id=ctx.run_id)

    separate: sa.Engine | None = None if isinstance(ctx.archive, SameDatabaseArchive) else ctx.archive.engine  # type: ignore[attr-defined]
    return shred.shred(conn, separate, ctx.archive_keys, local_date(ctx.as_of, "UTC"), record)


def _archive_in_sql(
    conn: sa.Connection,
    ctx: RunContext,
    planner: DatasetPlanner,
    dataset_name: str,
    columns: Sequence[str],
    moves: Sequence[Move],
    to_state: str,
) -> None:
    """Copy the moves' payloads into the archive by ``INSERT ... SELECT`` (one statement per purge date).

    The payload is the declared columns as JSON built by the database, each
    value as it writes it as text. Every row was locked by this batch, so
    each must be copied.
    """
    archive = ctx.archive
    assert isinstance(archive, SameDatabaseArchive)
    table, key = planner.table, planner.key
    payload = dialect_for(conn).json_text_object([(c, table.c[c]) for c in sorted(columns)])
    by_due: dict[dt.datetime | None, list[Move]] = {}
    purge_due = _purge_due(ctx, planner.dataset, moves, to_state)
    for m in moves:
        by_due.setdefault(purge_due.get(m.record_key), []).append(m)
    instant = store.archive.c.archived_at.type

    def moment(value: dt.datetime | None) -> ColumnElement[Any]:
        literal = sa.literal(value, instant)
        # A typed NULL for PostgreSQL; no CAST on SQLite, where DATETIME has
        # numeric affinity and a CAST would keep only the year of the text.
        return sa.type_coerce(literal, instant) if dialect_for(conn).datetimes_as_text else sa.cast(literal, instant)

    for due, group in by_due.items():
        rows = sa.select(
            sa.cast(sa.literal(dataset_name, sa.String), sa.String),
            planner.text(conn, key),
            payload,
            moment(ctx.now()),
            moment(due),
            sa.cast(sa.literal(ctx.run_id, sa.String), sa.String),
        ).where(store.one_of(conn, key, [m.key for m in group]))
        copied = archive.copy(conn, dataset_name, rows, [m.record_key for m in group])
        if copied != len(group):
            raise ConcurrentChangeError(
                f"dataset {dataset_name}: archived {copied} rows where the batch locked {len(group)}; rolled back"
            )


def _delete_rows(conn: sa.Connection, dataset: str, table: sa.Table, key: Any, keys: list[Any]) -> None:
    """Delete the rows of ``keys``, every one of which this transaction has locked: all must go."""
    removed = conn.execute(table.delete().where(store.one_of(conn, key, keys))).rowcount
    if removed != len(keys):
        raise ConcurrentChangeError(
            f"dataset {dataset}: deleted {removed} rows where the batch locked {len(keys)}; rolled back"
        )


def _purge_due(ctx: RunContext, dataset: Any, moves: Sequence[Any], to_state: str) -> dict[str, dt.datetime | None]:
    """When each archive payload's own period ends (None if the pack never purges it)."""
    if "purged" not in dataset.states:
        return {m.record_key: None for m in moves}
    far = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    result: dict[str, dt.datetime | None] = {}
    # A batch's records share few (since, clock day) pairs: walk each pair's lifecycle once.
    known: dict[tuple[dt.datetime, dt.date | None], dt.datetime | None] = {}
    for m in moves:
        since = next(s.due_at for s in m.steps if s.to_state == to_state)
        pair = (since, m.clock_day)
        if pair not in known:
            steps = steps_from_state(ctx.loaded.pack, dataset, "archived", since, far, m.clock_day)
            known[pair] = steps[0].due_at if steps else None
        result[m.record_key] = known[pair]
    return result


def _ledger_drafts(
    ctx: RunContext,
    dataset_name: str,
    from_state: str,
    to_state: str,
    action: str,
    moves: Sequence[Any],
) -> list[ledger.EntryDraft | ledger_items.BatchItems]:
    pack = ctx.loaded.pack
    dataset = pack.datasets[dataset_name]
    basis = dataset.basis_for(to_state)
    transition = f"{from_state}->{to_state}"
    dues = [next(s.due_at for s in m.steps if s.to_state == to_state) for m in moves]
    if dataset.ledger == "summary":
        clocks = [m.clock_at for m in moves if m.clock_at is not None]
        return [
            ledger.EntryDraft(
                run_id=ctx.run_id,
                pack_id=pack.pack,
                pack_digest=ctx.loaded.digest,
                dataset=dataset_name,
                transition=transition,
                action=action,
                basis=basis,
                due_at=max(dues),
                record_pseudonym=None,
                subject_pseudonym=None,
                count=len(moves),
                clock_min=min(clocks) if clocks else None,
                clock_max=max(clocks) if clocks else None,
                detail=_detail(moves),
            )
        ]
    return [
        ledger_items.BatchItems(
            ctx.run_id,
            pack.pack,
            ctx.loaded.digest,
            dataset_name,
            transition,
            action,
            basis,
            ctx.secret,
            [
                (due, move.record_key, move.subject_key or None, move.request_id, move.review_id)
                for move, due in zip(moves, dues, strict=True)
            ],
            emails=[move.email_pseudonym for move in moves],
        )
    ]


def _detail(moves: Sequence[Any]) -> dict[str, Any]:
    """Non-personal context of an entry: the erasure request or review behind it."""
    detail: dict[str, Any] = {}
    requests = sorted({m.request_id for m in moves if m.request_id is not None})
    if requests:
        detail.update({"erasure_request": requests[0]} if len(requests) == 1 else {"erasure_requests": requests})
    reviews = sorted({m.review_id for m in moves if m.review_id is not None})
    if reviews:
        detail.update({"review_id": reviews[0]} if len(reviews) == 1 else {"review_ids": reviews})
    return detail
