"""Ledger v2: per-record items under one chained entry per batch and transition (docs/ledger.md).

An entry of format 2 commits, through an RFC 9162 Merkle root, to the items
of the records its batch moved: each item holds the record's and subject's
pseudonyms, the due instant and the erasure request or review behind the
move, and its position. The chain then costs one hash per batch instead of
one per record, and an auditor can be handed one item with its audit path
as proof that the record was disposed of (``ledger prove``).

Pseudonyms of items are keyed per run: the run's key is HMAC(pseudonym key,
run id), so that a run may compute them inside the database without the
long-lived key ever reaching the server; ``ledger lookup`` derives every
run's key again to find a person's items across runs. The lookup rows
(``retention_ledger_lookup``) of an entry's items are written with the
items, in the batch's transaction (:func:`index_items`): no run or shard
group ends with a serial step that indexes everything it wrote, and a run
killed at any point leaves every committed item indexed and nothing else.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.ledger import merkle, pseudonyms
from retention.store import tables as store

FORMAT = 4
"""The format new entries are written in: format 3 with the item leaf of :func:`item_bytes` and no lookup rows.

Read at call time by the writers (:mod:`retention.ledger.bulk`, :mod:`retention.ledger.chain`), so that
tests can write a format-3 ledger (the JSON leaf and lookup rows) to hold older ledgers to account."""
ITEM_FORMATS = (2, 3, 4, 5)
"""Formats whose entries may commit to items (format 5: in one block row, :mod:`retention.ledger.blocks`)."""
ROW_FORMATS = (2, 3, 4)
"""Formats whose items are rows of ``retention_ledger_items`` (format 5 keeps them in its block)."""
MAC_FORMATS = (3, 4, 5)
"""Formats whose entries carry the engine's MAC (docs/ledger.md, "Threat model")."""
LOOKUP_FORMATS = (2, 3)
"""Formats whose items have rows in ``retention_ledger_lookup``; format 4 items are found by the items' own indexes."""
ABSENT = "-" * 64
"""An absent pseudonym in a format-4 leaf: as long as a pseudonym, and never one (a pseudonym is hex)."""


def run_key(secret: bytes, run_id: str) -> bytes:
    """The run's pseudonym key: HMAC-SHA256(pseudonym key, "run" 0x1f run id).

    Not cached: a process-wide cache kept up to 4,096 run keys and the
    pseudonym key they came from for the life of the process (one HMAC,
    about a microsecond, per batch or per run looked up).
    """

    return hmac.new(secret, b"run\x1f" + run_id.encode("utf-8"), "sha256").digest()


def record_pseudonym(key: bytes, dataset: str, record_key: str) -> str:
    """An item's record pseudonym under a run's key (same message as the v1 pseudonyms)."""

    return pseudonyms.pseudonym(key, "record", dataset, str(record_key))


def subject_pseudonym(key: bytes, subject_key: str) -> str:

    return pseudonyms.pseudonym(key, "subject", str(subject_key))


def email_pseudonym(key: bytes, email_pseudonym: str) -> str:
    """An item's e-mail pseudonym under a run's key: of the address's long-lived pseudonym, not of the address.

    A record whose source row is gone (or whose address was masked) is known
    by the pseudonym its state row kept; ``ledger lookup --email`` derives
    the same value from the address typed.
    """

    return pseudonyms.pseudonym(key, "email", email_pseudonym)


def _instant(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(value: str | int | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    return f'"{value}"'


def item_document(
    idx: int,
    record: str,
    subject: str | None,
    due_at: dt.datetime | str,
    request_id: int | None,
    review_id: int | None,
    email: str | None = None,
) -> bytes:
    """The RFC 8785 encoding of an item (every value ASCII: hex, digits, an instant), held to rfc8785 by a test.

    ``email`` appears only when the item has one, so that items written
    before e-mail identities keep their encoding (and their Merkle roots).
    """
    due = due_at if isinstance(due_at, str) else _instant(due_at)
    mail = "" if email is None else f'"email":"{email}",'
    return (
        f'{{"due_at":"{due}",{mail}"idx":{idx},"record":"{record}","request":{_json(request_id)},'
        f'"review":{_json(review_id)},"subject":{_json(subject)}}}'
    ).encode("ascii")


def item_bytes(
    idx: int,
    record: str,
    subject: str | None,
    due_at: dt.datetime | str,
    request_id: int | None,
    review_id: int | None,
    email: str | None = None,
) -> bytes:
    """The bytes a format-4 leaf hashes: fixed-width fields, then the numbers (docs/ledger.md, "Format 4").

    The due instant (27 ASCII characters), the record, subject and e-mail
    pseudonyms (64 lowercase hex characters each, :data:`ABSENT` for none),
    then the position, request and review ids in decimal separated by ``:``
    (empty for none). No field can run into the next, and the database builds
    the same bytes with a concatenation of text: no JSON encoder, no quoting.
    """
    due = due_at if isinstance(due_at, str) else _instant(due_at)
    return (
        f"{due}{record}{subject or ABSENT}{email or ABSENT}{idx}:"
        f"{'' if request_id is None else request_id}:{'' if review_id is None else review_id}"
    ).encode("ascii")


def leaf_of(
    form: int,
    idx: int,
    record: str,
    subject: str | None,
    due_at: dt.datetime | str,
    request_id: int | None,
    review_id: int | None,
    email: str | None = None,
) -> bytes:
    """An item's Merkle leaf as an entry of format ``form`` commits to it (4: :func:`item_bytes`, else the JSON)."""
    encode = item_bytes if form >= 4 else item_document
    return merkle.leaf_hash(encode(idx, record, subject, due_at, request_id, review_id, email))


@dataclass(frozen=True)
class Item:
    """One record moved: what its leaf commits to (pseudonyms already computed)."""

    record: str
    subject: str | None
    due_at: dt.datetime
    request_id: int | None = None
    review_id: int | None = None
    email: str | None = None

    def document(self, idx: int) -> bytes:
        return item_document(idx, self.record, self.subject, self.due_at, self.request_id, self.review_id, self.email)


@dataclass(frozen=True)
class BatchItems:
    """An entry draft of format 2: one batch's records through one transition."""

    run_id: str
    pack_id: str
    pack_digest: str
    dataset: str
    transition: str
    action: str | None
    basis: str | None
    secret: bytes
    # (due_at, record key, subject key, erasure request id, review id)
    moves: Sequence[tuple[dt.datetime, str, str | None, int | None, int | None]]
    # per move, the long-lived pseudonym of its e-mail address (None: no address), or None for none at all
    emails: Sequence[str | None] | None = None

    def items(self) -> list[Item]:
        """Pseudonymise the moves under the run's key, in Python (the key never leaves the process)."""
        key = run_key(self.secret, self.run_id)

        keyed = pseudonyms.keyed(key)
        prefix = f"record\x1f{self.dataset}\x1f".encode()
        result = []
        emails = self.emails if self.emails is not None else [None] * len(self.moves)
        for (due_at, record_key, subject_key, request_id, review_id), mail in zip(self.moves, emails, strict=True):
            record = keyed.hexdigest(prefix + record_key.encode("utf-8"))
            subject = None if subject_key is None else keyed.hexdigest(b"subject\x1f" + subject_key.encode("utf-8"))
            email = None if mail is None else keyed.hexdigest(b"email\x1f" + mail.encode("ascii"))
            result.append(Item(record, subject, due_at, request_id, review_id, email))
        return result


def leaves(items: Sequence[Item], form: int = 3) -> list[bytes]:
    """The leaves of ``items`` under an entry of format ``form`` (the JSON document unless 4)."""
    return [
        leaf_of(form, i, item.record, item.subject, item.due_at, item.request_id, item.review_id, item.email)
        for i, item in enumerate(items)
    ]


ITEM_COLUMNS = (
    "entry_seq",
    "idx",
    "record_pseudonym",
    "subject_pseudonym",
    "due_at",
    "request_id",
    "review_id",
    "email_pseudonym",
)
"""The item table's columns in the order both insert paths build their rows (here and ledger/bulk.py)."""


def due_converter(conn: sa.Connection) -> Callable[[dt.datetime], Any]:
    """The driver's form of an item's due instant, converted once per distinct value (a batch shares few)."""
    process = store.ledger_items.c.due_at.type.bind_processor(conn.dialect)
    memo: dict[dt.datetime, Any] = {}

    def due(value: dt.datetime) -> Any:
        if process is None:
            return value
        converted = memo.get(value)
        if converted is None:
            converted = memo[value] = process(value)
        return converted

    return due


def insert_items(conn: sa.Connection, entry_seq: int, items: Sequence[Item]) -> None:
    """The items of one entry, by the driver's bulk path (COPY on PostgreSQL), in the caller's transaction."""
    if not items:
        return
    table = store.ledger_items
    due = due_converter(conn)

    rows = [
        (entry_seq, i, it.record, it.subject, due(it.due_at), it.request_id, it.review_id, it.email)
        for i, it in enumerate(items)
    ]
    dialect_for(conn).bulk_insert(conn, table, ITEM_COLUMNS, rows)


def index_items(conn: sa.Connection, run_id: str, entry_seq: int, items: Sequence[Item]) -> None:
    """The lookup rows of one entry's items, in the caller's transaction (the batch's, under the append lock).

    One row per pseudonym of each item, sorted as the table's key is, by the
    driver's bulk path. Written with the items and the entry, they commit
    or roll back together: the index never lags the items (items above the
    highest indexed entry are only those of older versions, which wrote the
    rows at the end of each run; :func:`index_pending`).
    """
    write_lookup(conn, run_id, entry_seq, ((item.record, item.subject, item.email) for item in items))


def write_lookup(
    conn: sa.Connection, run_id: str, entry_seq: int, pseudonyms: Iterable[tuple[str | None, str | None, str | None]]
) -> None:
    """Lookup rows for the (record, subject, e-mail) pseudonyms of one entry's items, by index, in key order.

    Shared by :func:`index_items` and :func:`retention.ledger.bulk.index`, so
    the two ways a batch is written index it alike.
    """
    rows = sorted(
        (run_id, pseudonym, entry_seq, idx)
        for idx, names in enumerate(pseudonyms)
        for pseudonym in names
        if pseudonym is not None
    )
    if rows:
        dialect_for(conn).bulk_insert(conn, store.ledger_lookup, ("run_id", "pseudonym", "entry_seq", "idx"), rows)


UNREAD: Any = object()
"""``index_pending``'s ``last_format`` when the caller did not read it: the function reads it itself."""


def last_item_format(before: ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    """The format of the entry holding the last item below entry ``before`` (NULL when there is none).

    :func:`index_pending`'s first question as one scalar subquery, so that
    the statement that reads the chain's head under the append lock can ask
    it too (:func:`retention.ledger.chain._lock_head`): a set-based batch
    appends every 5,000 rows, and these were two round trips of each.
    """
    items, entries = store.ledger_items, store.ledger.alias("holding")  # not the head's row, when asked beside it
    last = sa.select(sa.func.max(items.c.entry_seq)).where(items.c.entry_seq < before).correlate_except(items)
    return sa.select(entries.c.format).where(entries.c.seq == last.scalar_subquery()).scalar_subquery()


def index_pending(conn: sa.Connection, before: int, last_format: Any = UNREAD) -> int:
    """Index items below entry ``before`` that have no lookup rows yet; returns rows written.

    Only an older version left such items (the tail of a run killed before
    its end, or whose end-of-run indexing was deferred): it indexed each
    run at its end, and the highest indexed entry told which items came
    after. Every batch now indexes its own items, so once the last item
    below ``before`` is indexed, all are: one probe by primary key, and
    the catch-up (:func:`index_runs`) only when it fails. Called under the
    append lock, before the batch's own items are written. ``last_format``
    is :func:`last_item_format` read under that lock by the caller, if it
    read it (None: no item below ``before``, or none in a known entry).
    """
    items, lookup, entries = store.ledger_items, store.ledger_lookup, store.ledger
    if last_format is UNREAD:
        last_format = conn.execute(sa.select(last_item_format(sa.literal(before, store.SEQ)))).scalar()
    if last_format not in LOOKUP_FORMATS:
        # Format 4 has no lookup rows; the first format-4 batch after older ones caught them up.
        return 0
    last = conn.execute(sa.select(sa.func.max(items.c.entry_seq)).where(items.c.entry_seq < before)).scalar()
    indexed = conn.execute(
        sa.select(sa.literal(1))
        .select_from(
            items.join(entries, entries.c.seq == items.c.entry_seq).join(
                lookup,
                sa.and_(
                    lookup.c.run_id == entries.c.run_id,
                    lookup.c.pseudonym == items.c.record_pseudonym,
                    lookup.c.entry_seq == items.c.entry_seq,
                    lookup.c.idx == items.c.idx,
                ),
            )
        )
        .where(items.c.entry_seq == last, items.c.idx == 0)
    ).first()
    return 0 if indexed is not None else index_runs(conn)


def entry_items(conn: sa.Connection, entry_seq: int) -> list[dict[str, Any]]:
    """The stored items of one entry in position order."""
    t = store.ledger_items
    return [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.entry_seq == entry_seq).order_by(t.c.idx))]


def stored_leaves(rows: Sequence[dict[str, Any]], form: int = 3) -> list[bytes]:
    """The leaves of stored items under an entry of format ``form``."""
    return [
        leaf_of(
            form,
            r["idx"],
            r["record_pseudonym"],
            r["subject_pseudonym"],
            r["due_at"],
            r["request_id"],
            r["review_id"],
            r.get("email_pseudonym"),
        )
        for r in rows
    ]


def check_items(conn: sa.Connection, entry: dict[str, Any]) -> str | None:
    """None when the entry's stored items are exactly those its Merkle root commits to, else why not."""
    rows = entry_items(conn, entry["seq"])
    expected = entry.get("items") or 0
    seq = entry["seq"]
    for position, row in enumerate(rows):
        if row["idx"] != position:
            missing = position if row["idx"] > position else row["idx"]
            return f"entry {seq} item {missing}: an item is missing or out of place (items deleted or inserted)"
    if len(rows) != expected:
        if len(rows) < expected:
            return f"entry {seq} item {len(rows)}: {expected - len(rows)} item(s) missing (the entry has {expected})"
        return f"entry {seq} item {expected}: {len(rows) - expected} item(s) more than the entry has ({expected})"
    if merkle.root(stored_leaves(rows, entry.get("format") or 1)).hex() != entry.get("merkle_root"):
        moved = _not_as_indexed(conn, entry, rows) if entry.get("format") in LOOKUP_FORMATS else None
        if moved is not None:
            return (
                f"entry {seq} item {moved}: its pseudonyms are not those the lookup rows hold for it, and the entry's "
                f"{expected} items do not match its Merkle root (an item was modified or reordered)"
            )
        return f"entry {seq}: its {expected} items do not match its Merkle root (an item was modified or reordered)"
    return None


def _not_as_indexed(conn: sa.Connection, entry: dict[str, Any], rows: Sequence[dict[str, Any]]) -> int | None:
    """The first item whose pseudonyms differ from the lookup rows written for it, if any.

    The root alone says that some item changed, not which. The lookup rows,
    written with the items and append-only too, hold
    each item's record and subject pseudonyms at its position: an item
    modified or moved since then no longer matches them. A change to an
    item's due date, request or review (not indexed) leaves only the root
    to tell.
    """
    lookup = store.ledger_lookup
    indexed: dict[int, set[str]] = {}
    query = sa.select(lookup.c.idx, lookup.c.pseudonym).where(
        lookup.c.entry_seq == entry["seq"], lookup.c.run_id == entry.get("run_id")
    )
    for idx, pseudonym in conn.execute(query):
        indexed.setdefault(idx, set()).add(pseudonym)
    if not indexed:
        return None
    for row in rows:
        wanted = {
            p for p in (row["record_pseudonym"], row["subject_pseudonym"], row.get("email_pseudonym")) if p is not None
        }
        if indexed.get(row["idx"], set()) != wanted:
            return int(row["idx"])
    return None


def stray_items(conn: sa.Connection) -> str | None:
    """Item rows under no entry of formats 2-4 (a v1 entry, a format-5 entry, or no entry): inserted, or their
    entry removed. A format-5 entry's items are in its block only: a row beside it was put there by someone else."""
    items, entries = store.ledger_items, store.ledger
    query = (
        sa.select(items.c.entry_seq, items.c.idx, entries.c.format)
        .select_from(items.outerjoin(entries, entries.c.seq == items.c.entry_seq))
        .where(sa.or_(entries.c.seq.is_(None), entries.c.format.is_(None), entries.c.format.not_in(ROW_FORMATS)))
        .order_by(items.c.entry_seq, items.c.idx)
        .limit(1)
    )
    stray = conn.execute(query).first()
    if stray is None:
        return None
    if stray.format in ITEM_FORMATS:  # format 5: not one of ROW_FORMATS
        return (
            f"entry {stray.entry_seq} item {stray.idx}: an item row under an entry of format 5, whose items are "
            "in its block (items inserted)"
        )
    return (
        f"entry {stray.entry_seq} item {stray.idx}: an item under no entry of format 2 "
        "(items inserted, or their entry removed)"
    )


def check_lookup(conn: sa.Connection) -> str | None:
    """The lookup rows are exactly one per pseudonym of every indexed item, else why not.

    Rows removed would make ``ledger lookup`` miss a person's items without
    the chain noticing; the counts of both sides, up to the last indexed
    item, expose it.
    """
    lookup, items, entries = store.ledger_lookup, store.ledger_items, store.ledger
    last = conn.execute(sa.select(sa.func.max(lookup.c.entry_seq))).scalar()
    if last is None:
        return None
    # Both sides up to ``last``: a run indexing meanwhile adds rows only after it.
    rows = conn.execute(sa.select(sa.func.count()).select_from(lookup).where(lookup.c.entry_seq <= last)).scalar_one()
    expected = conn.execute(
        sa.select(
            sa.func.count(items.c.record_pseudonym)
            + sa.func.count(items.c.subject_pseudonym)
            + sa.func.count(items.c.email_pseudonym)
        )
        .select_from(items.join(entries, entries.c.seq == items.c.entry_seq))
        .where(items.c.entry_seq <= last, entries.c.format.in_(LOOKUP_FORMATS))  # format 4 has no lookup rows
    ).scalar_one()
    if int(rows) == int(expected):
        return None
    return (
        f"the lookup rows do not match the items up to entry {last} ({rows} rows for {expected} pseudonyms): "
        "lookup rows were removed or added, and `ledger lookup` could miss entries"
    )


# --------------------------------------------------------------------------
# Per-run lookup rows
# --------------------------------------------------------------------------


def index_runs(conn: sa.Connection, chunk: int = 500_000) -> int:
    """Write the lookup rows of every item not yet indexed, sorted per run; returns rows written.

    The catch-up for items an older version left unindexed
    (:func:`index_pending`): it indexed each run at its end, so the items
    after the highest indexed entry are exactly the unindexed ones.
    """
    lookup, items, entries = store.ledger_lookup, store.ledger_items, store.ledger
    last = conn.execute(sa.select(sa.func.max(lookup.c.entry_seq))).scalar() or 0
    written = 0
    while True:
        runs = conn.execute(
            sa.select(entries.c.run_id, sa.func.min(entries.c.seq), sa.func.max(entries.c.seq))
            .where(entries.c.seq > last, entries.c["items"] > 0, entries.c.format.in_(LOOKUP_FORMATS))
            .group_by(entries.c.run_id)
            .order_by(sa.func.min(entries.c.seq))
            .limit(1)
        ).first()
        if runs is None:
            return written
        run_id, low, high = runs
        for pseudonym in (items.c.record_pseudonym, items.c.subject_pseudonym, items.c.email_pseudonym):
            start = low
            while start <= high:
                stop = start + chunk
                query = (
                    sa.select(sa.literal(run_id), pseudonym, items.c.entry_seq, items.c.idx)
                    .select_from(items.join(entries, entries.c.seq == items.c.entry_seq))
                    .where(
                        entries.c.run_id == run_id,
                        entries.c.format.in_(LOOKUP_FORMATS),
                        items.c.entry_seq >= start,
                        items.c.entry_seq < stop,
                        items.c.entry_seq <= high,
                        pseudonym.is_not(None),
                    )
                    .order_by(pseudonym, items.c.entry_seq, items.c.idx)
                )
                result = conn.execute(lookup.insert().from_select(["run_id", "pseudonym", "entry_seq", "idx"], query))
                written += max(result.rowcount or 0, 0)
                start = stop
        last = high


def find(
    conn: sa.Connection,
    secret: bytes,
    pseudonyms_of: Any,
    run_ids: Iterable[str],
    *,
    with_blocks: bool = True,
    dataset: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Items whose pseudonym, under each run's key, is one of ``pseudonyms_of(key)``, in entry and position order.

    Formats 2-4 are read the same way: by the items' indexes on their
    pseudonym columns (migration 0015), one probe per pseudonym. The lookup
    rows of formats 2 and 3 are still written by older versions and checked
    by ``verify``, but no longer needed to find anything; format 4 has none.
    Format 5 has no index: unless ``with_blocks`` is false (an e-mail
    pseudonym, which no block holds), the blocks of each run are searched
    for its pseudonyms (:mod:`retention.ledger.block_lookup`), only those of
    ``dataset`` when given. A pseudonym under one run's key matching another
    run's item would be an HMAC collision.
    """
    from retention.ledger import block_lookup

    items = store.ledger_items
    runs = list(run_ids)
    every = sorted({p for run_id in runs for p in pseudonyms_of(run_key(secret, run_id))})
    found: dict[tuple[int, int], dict[str, Any]] = {}
    dialect = dialect_for(conn)
    for column in (items.c.record_pseudonym, items.c.subject_pseudonym, items.c.email_pseudonym):
        for start in range(0, len(every), 400):
            query = sa.select(items).where(dialect.pseudonym_in(column, every[start : start + 400]))
            for row in conn.execute(query):
                found[(row.entry_seq, row.idx)] = dict(row._mapping)
    if with_blocks:
        by_run = ((run_id, pseudonyms_of(run_key(secret, run_id))) for run_id in runs)
        for item in block_lookup.find(conn, by_run, dataset=dataset):
            found[(item["entry_seq"], item["idx"])] = item
    for position in sorted(found):
        yield found[position]


def lookup(
    conn: sa.Connection,
    secret: bytes,
    *,
    dataset: str | None = None,
    record_key: str | None = None,
    subject_key: str | None = None,
    email: str | None = None,
) -> list[dict[str, Any]]:
    """Every ledger record of one record (dataset and key), one subject or one e-mail address, v1 and v2 alike.

    Each row has the entry's columns (seq, run, dataset, transition,
    action, basis...) and, for a v2 item, ``item`` (its position) and the
    item's own due instant, pseudonyms, request and review; v1 entries have
    ``item`` None. Ordered by entry and item.
    """
    entries = store.ledger
    if email is not None:
        # Entries about one request or hold (no item) name an e-mail-only person by the e-mail's pseudonym.
        mail = pseudonyms.email_pseudonym(secret, email)
        v1 = entries.c.subject_pseudonym == mail

        def wanted(key: bytes) -> list[str]:
            return [email_pseudonym(key, mail)]

    elif subject_key is not None:
        v1 = entries.c.subject_pseudonym == pseudonyms.subject_pseudonym(secret, subject_key)

        def wanted(key: bytes) -> list[str]:
            return [subject_pseudonym(key, subject_key)]

    else:
        if dataset is None or record_key is None:
            raise ValueError("lookup needs a subject, or a dataset and a record key")
        v1 = sa.and_(
            entries.c.dataset == dataset,
            entries.c.record_pseudonym == pseudonyms.record_pseudonym(secret, dataset, record_key),
        )

        def wanted(key: bytes) -> list[str]:
            return [record_pseudonym(key, dataset, record_key)]

    rows: list[dict[str, Any]] = []
    for row in conn.execute(sa.select(entries).where(v1).order_by(entries.c.seq)):
        rows.append({**dict(row._mapping), "item": None})
    by_record = subject_key is None and email is None
    seen: dict[int, Any] = {}  # a person's items share entries (many in one format-5 block): each entry read once
    for item in find(
        conn, secret, wanted, item_runs(conn), with_blocks=email is None, dataset=dataset if by_record else None
    ):
        seq = item["entry_seq"]
        if seq not in seen:
            seen[seq] = conn.execute(sa.select(entries).where(entries.c.seq == seq)).first()
        entry = seen[seq]
        if entry is None or (dataset is not None and by_record and entry.dataset != dataset):
            continue
        rows.append(
            {
                **dict(entry._mapping),
                "item": item["idx"],
                "due_at": item["due_at"],
                "record_pseudonym": item["record_pseudonym"],
                "subject_pseudonym": item["subject_pseudonym"],
                "email_pseudonym": item.get("email_pseudonym"),
                "count": 1,
                "request_id": item["request_id"],
                "review_id": item["review_id"],
            }
        )
    rows.sort(key=lambda r: (r["seq"], -1 if r["item"] is None else r["item"]))
    return rows


def item_runs(conn: sa.Connection) -> list[str]:
    """Runs that may have written items (every run the engine recorded)."""
    runs = store.runs
    return list(conn.execute(sa.select(runs.c.id).where(runs.c.mode == "run").order_by(runs.c.started_at)).scalars())


__all__ = [
    "FORMAT",
    "ITEM_FORMATS",
    "LOOKUP_FORMATS",
    "MAC_FORMATS",
    "ROW_FORMATS",
    "UNREAD",
    "BatchItems",
    "Item",
    "check_items",
    "check_lookup",
    "email_pseudonym",
    "entry_items",
    "find",
    "index_items",
    "index_pending",
    "index_runs",
    "insert_items",
    "item_bytes",
    "item_document",
    "item_runs",
    "last_item_format",
    "leaf_of",
    "leaves",
    "lookup",
    "record_pseudonym",
    "run_key",
    "stored_leaves",
    "stray_items",
    "subject_pseudonym",
]
