"""Verifying the ledger: the chain unbroken, every entry authenticated and its items intact,
and nothing removed from its end (checked against the runs that wrote it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention.ledger import blocks
from retention.ledger import items as ledger_items
from retention.ledger import mac as ledger_mac
from retention.ledger.canonical import GENESIS, _Encoder, row_hash
from retention.ledger.export import entries
from retention.store import tables as store

# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on the chain: ok, or the first entry that breaks it and why.

    ``unauthenticated`` counts the entries written before format 3 (by
    format: 1, 2), which carry no MAC; ``authenticated`` those whose MAC was
    checked, or None when no pseudonym key was given to check them with.
    ``authenticated_from`` is the first entry of format 3, after which the
    engine writes no other format.
    """

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS
    authenticated: int | None = None
    unauthenticated: tuple[tuple[int, int], ...] = ()
    authenticated_from: int | None = None

    def authentication(self) -> str:
        """One phrase for people: how many entries were authenticated, and which were not."""
        old = ", ".join(f"{n} unauthenticated (format v{f})" for f, n in self.unauthenticated if n)
        if self.authenticated is None:
            mine = "MACs not checked (no pseudonym key configured)"
        else:
            mine = f"{self.authenticated} authenticated"
        return f"{mine}, {old}" if old else mine


def verify(
    connectable: sa.Engine | sa.Connection, batch_size: int = 10_000, *, secret: bytes | None = None
) -> VerifyResult:
    """Recompute the whole chain, streaming it in seq order (memory stays flat).

    With ``secret`` (the pseudonym key), each entry of format 3 or 4 must carry
    the engine's MAC of its hash: an entry written by anyone without the key
    fails. Without it the MACs are not checked (and the verdict says so).
    Either way no entry of an older format may follow one of format 3: the
    engine no longer writes them, so one there was written by someone else.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    encoder = _Encoder()
    authenticated, older, since, since_form = 0, {1: 0, 2: 0}, None, ledger_items.FORMAT
    for row in entries(connectable, batch_size=batch_size):
        seq = row["seq"]
        if seq != expected_seq:
            return VerifyResult(
                False,
                count,
                expected_seq,
                f"entry {expected_seq} is missing (the next entry is {seq}): entries were deleted",
            )
        if row["prev_hash"] != prev:
            return VerifyResult(
                False,
                count,
                seq,
                f"entry {seq} does not follow entry {seq - 1} (previous hash differs): entries were "
                "removed, inserted or reordered before it",
            )
        if row_hash(row, encoder) != row["hash"]:
            return VerifyResult(
                False,
                count,
                seq,
                f"entry {seq}: hash does not match its content (modified after it was written)",
            )
        problem = _authenticity(row, secret, since, since_form)
        if problem is not None:
            return VerifyResult(False, count, seq, problem)
        form = row.get("format") or 1
        if form in ledger_items.MAC_FORMATS:
            authenticated += 1
            if since is None:
                since, since_form = seq, form
        else:
            older[form] = older.get(form, 0) + 1
        if form in ledger_items.ITEM_FORMATS and (row.get("items") or _has_items(connectable, seq)):
            problem = _check_entry_items(connectable, row)
            if problem is not None:
                return VerifyResult(False, count, seq, problem)
        prev = row["hash"]
        expected_seq += 1
        count += 1
    for check in (ledger_items.stray_items, stray_blocks, ledger_items.check_lookup):
        problem = _on_connection(connectable, check)
        if problem is not None:
            return VerifyResult(False, count, None, problem, expected_seq - 1, prev)
    verdict = VerifyResult(
        True,
        count,
        None,
        "",
        expected_seq - 1,
        prev,
        authenticated if secret is not None else None,
        tuple(sorted(older.items())),
        since,
    )
    return _against_runs(connectable, verdict)


def _authenticity(row: dict[str, Any], secret: bytes | None, since: int | None, since_form: int) -> str | None:
    """Why an entry cannot be the engine's (format 3 without its MAC, or an old format after it), else None."""
    seq, form = row["seq"], row.get("format") or 1
    if form not in ledger_items.MAC_FORMATS:
        if since is not None:
            return (
                f"entry {seq}: written in format {form}, without a MAC, after entry {since} of format "
                f"{since_form}: the engine writes only authenticated entries since, "
                "so it did not write it"
            )
        if form not in (1, *ledger_items.ITEM_FORMATS):
            return f"entry {seq}: format {form} is no ledger format"
        return None
    if row.get("mac") is None:
        return f"entry {seq}: an entry of format {form} without its MAC: it was not written by the engine"
    if secret is not None and not ledger_mac.mac_valid(secret, row.get("hash"), row.get("mac")):
        return (
            f"entry {seq}: its MAC is not valid for the configured pseudonym key: it was not written by the "
            "engine (or the key is not the engine's)"
        )
    return None


def _on_connection(connectable: sa.Engine | sa.Connection, check: Any) -> Any:
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return check(conn)
    return check(connectable)


def _scalar_rows(connectable: sa.Engine | sa.Connection, query: sa.Select[Any]) -> list[Any]:
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return list(conn.execute(query).all())
    return list(connectable.execute(query).all())


def _against_runs(connectable: sa.Engine | sa.Connection, verdict: VerifyResult) -> VerifyResult:
    """A chain that verifies on its own but is shorter than the runs say it was.

    Removing entries from the end (``TRUNCATE``, or a superuser's ``DELETE``
    with the triggers off) leaves a valid, shorter chain. Two records in
    ``retention_runs`` expose it: the ledger's last entry when each run
    finished (``ledger_seq``), and the runs that moved records, each of
    which wrote entries under its run id.
    """
    runs, table = store.runs, store.ledger
    longer = _scalar_rows(
        connectable,
        sa.select(runs.c.id, runs.c.ledger_seq, runs.c.finished_at)
        .where(runs.c.mode == "run", runs.c.ledger_seq > verdict.head_seq)
        .order_by(runs.c.ledger_seq.desc())
        .limit(1),
    )
    if longer:
        run = longer[0]
        return VerifyResult(
            False,
            verdict.entries,
            verdict.head_seq + 1,
            f"the ledger ends at entry {verdict.head_seq}, but it had {run.ledger_seq} entries when run {run.id} "
            f"finished ({run.finished_at:%Y-%m-%d %H:%M} UTC): entries were removed from its end",
            verdict.head_seq,
            verdict.head_hash,
        )
    cut = _scalar_rows(
        connectable,
        sa.select(runs.c.id, runs.c.ledger_last, runs.c.started_at, table.c.seq)
        .select_from(runs.outerjoin(table, table.c.seq == runs.c.ledger_last))
        .where(
            runs.c.ledger_last.is_not(None),
            sa.or_(table.c.seq.is_(None), table.c.run_id.is_(None), table.c.run_id != runs.c.id),
        )
        .order_by(runs.c.ledger_last)
        .limit(1),
    )
    if cut:
        run = cut[0]
        now = "is gone" if run.seq is None else "is now another's"
        return VerifyResult(
            False,
            verdict.entries,
            int(run.ledger_last),
            f"run {run.id} ({run.started_at:%Y-%m-%d %H:%M} UTC) wrote entries up to entry {run.ledger_last}, "
            f"which {now}: entries of that run were removed from the ledger's end",
            verdict.head_seq,
            verdict.head_hash,
        )
    has_entries = sa.exists().where(table.c.run_id == runs.c.id)
    silent = _scalar_rows(
        connectable,
        sa.select(runs.c.id, runs.c.counts, runs.c.started_at)
        .where(runs.c.mode == "run", runs.c.counts.is_not(None), ~has_entries)
        .order_by(runs.c.started_at),
    )
    for run in silent:
        try:
            moved = sum(int(n) for per in json.loads(run.counts).values() for n in per.values())
        except (ValueError, TypeError, AttributeError):
            return VerifyResult(False, verdict.entries, None, f"run {run.id} has an unreadable record of its counts")
        if moved:
            return VerifyResult(
                False,
                verdict.entries,
                None,
                f"run {run.id} ({run.started_at:%Y-%m-%d %H:%M} UTC) moved {moved} records, but the ledger holds "
                f"none of its entries ({verdict.entries} entries in all): entries were removed",
                verdict.head_seq,
                verdict.head_hash,
            )
    return verdict


def record_run_head(engine: sa.Engine, run_id: str) -> None:
    """Note in the run's record how long the ledger was when it finished (see :func:`_against_runs`).

    A ledger locked by another session leaves it unnoted (with a warning)
    rather than failing a run whose datasets are done: each batch already
    noted the run's last entry (``ledger_last``).
    """
    from retention.errors import describe_database_error
    from retention.logs import get_logger

    runs, table = store.runs, store.ledger
    try:
        with engine.begin() as conn:
            head = conn.execute(sa.select(sa.func.max(table.c.seq))).scalar()
            conn.execute(runs.update().where(runs.c.id == run_id).values(ledger_seq=head or 0))
    except sa.exc.OperationalError as exc:
        if exc.connection_invalidated:
            raise
        get_logger().warning("ledger_length_not_noted", error=describe_database_error(exc), run_id=run_id)


def _check_entry_items(connectable: sa.Engine | sa.Connection, row: dict[str, Any]) -> str | None:
    """The entry's items checked where its format keeps them: its block (format 5) or its item rows."""
    check = check_block if row.get("format") == blocks.FORMAT else ledger_items.check_items
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return check(conn, row)
    return check(connectable, row)


def _has_items(connectable: sa.Engine | sa.Connection, seq: int) -> bool:
    """Items stored under an entry that says it has none (inserted afterwards)."""
    t = store.ledger_items
    query = sa.select(sa.literal(1)).where(t.c.entry_seq == seq).limit(1)
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return conn.execute(query).first() is not None
    return connectable.execute(query).first() is not None


def check_block(conn: sa.Connection, entry: dict[str, Any]) -> str | None:
    """None when a format-5 entry's block is exactly what its Merkle root commits to, else why not.

    The entry has one block (the table's key allows no second); its item
    count, the block row's and the body's length agree; the root over the
    body's chunks is the entry's; the body is well formed
    (:func:`retention.ledger.blocks.check`: a faulty writer's block out of
    pseudonym order is named even when its root was computed over it).
    """
    seq, expected = entry["seq"], entry.get("items") or 0
    t = store.ledger_blocks
    found = conn.execute(sa.select(t.c["items"], t.c.body).where(t.c.entry_seq == seq)).first()
    if found is None:
        return f"entry {seq}: its block is missing (the entry has {expected} items; the block was removed)"
    body = bytes(found.body)
    try:
        held = blocks.count(body)
    except blocks.BlockError as error:
        return f"entry {seq}: its block is malformed ({error}; the block was modified)"
    if not held == found.items == expected:
        return (
            f"entry {seq}: its block holds {held} items and says it has {found.items}, the entry {expected} "
            "(items removed or added)"
        )
    if blocks.root(body).hex() != entry.get("merkle_root"):
        return f"entry {seq}: its block does not match its Merkle root (the block was modified)"
    problem = blocks.check(body)
    if problem is not None:
        return f"entry {seq}: its block is malformed ({problem}), though its Merkle root matches"
    return None


def stray_blocks(conn: sa.Connection) -> str | None:
    """A block under no entry of format 5 (another format's, or no entry at all): inserted, or its entry removed."""
    t, entries = store.ledger_blocks, store.ledger
    stray = conn.execute(
        sa.select(t.c.entry_seq, entries.c.seq, entries.c.format)
        .select_from(t.outerjoin(entries, entries.c.seq == t.c.entry_seq))
        .where(sa.or_(entries.c.seq.is_(None), entries.c.format.is_(None), entries.c.format != blocks.FORMAT))
        .order_by(t.c.entry_seq)
        .limit(1)
    ).first()
    if stray is None:
        return None
    if stray.seq is None:
        return f"entry {stray.entry_seq}: a block under no entry (a block inserted, or its entry removed)"
    return (
        f"entry {stray.entry_seq}: a block under an entry of format {stray.format or 1}, which has none "
        "(a block inserted)"
    )
