"""The one-pass item builder (retention.ledger.bulk) writes exactly what the per-record path writes.

The per-record path (``BatchItems.items``, ``Item.document``, ``leaves``) is
the reference: every pseudonym, every leaf and the Merkle root must match it
byte for byte, or proofs and lookups would differ between items written
before and after the change. The pseudonyms are also held to the standard
library's ``hmac`` here, independently of both paths.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.ledger import bulk, merkle
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.store import tables as store

SECRET = b"bulk-test-key"
PARIS = dt.timezone(dt.timedelta(hours=1))
DUE = dt.datetime(2025, 10, 1, 22, 0, tzinfo=dt.UTC)


def draft(moves: list[tuple[dt.datetime, str, str | None, int | None, int | None]], emails=None):  # type: ignore[no-untyped-def]
    return ledger_items.BatchItems(
        "run-1", "pack", "digest", "events", "active->purged", "delete", "basis", SECRET, moves, emails=emails
    )


MOVES: list[tuple[dt.datetime, str, str | None, int | None, int | None]] = [
    (DUE, "1", "42", None, None),
    (DUE, "2", None, None, None),  # no subject
    (dt.datetime(2025, 10, 2, 0, 0, tzinfo=PARIS), "3", "42", None, None),  # another zone, same kind of day
    (DUE.replace(microsecond=123456), "ünï-4", "sübject", 7, None),  # an erasure request, non-ASCII keys
    (DUE, "5", "43", None, 9),  # an approved review
    (DUE, "6", "44", None, None),
]
EMAILS = [None, None, None, "ab" * 32, None, "cd" * 32]


def reference(d: ledger_items.BatchItems) -> tuple[list[ledger_items.Item], list[bytes]]:
    items = d.items()
    return items, ledger_items.leaves(items, ledger_items.FORMAT)


@pytest.mark.parametrize("form", [3, 4])
def test_prepare_matches_the_per_record_path(form: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_items, "FORMAT", form)
    for emails in (None, EMAILS):
        d = draft(MOVES, emails)
        items, leaves = reference(d)
        prepared = bulk.prepare(d)
        assert [(i.record, i.subject, i.due_at, i.request_id, i.review_id, i.email) for i in items] == prepared.values
        assert prepared.root == merkle.root(leaves).hex()


def test_prepare_pseudonyms_are_hmac_sha256_under_the_run_key() -> None:
    prepared = bulk.prepare(draft(MOVES, EMAILS))
    key = hmac.new(SECRET, b"run\x1frun-1", hashlib.sha256).digest()
    assert prepared.values[3][0] == hmac.new(key, "record\x1fevents\x1fünï-4".encode(), hashlib.sha256).hexdigest()
    assert prepared.values[0][1] == hmac.new(key, b"subject\x1f42", hashlib.sha256).hexdigest()
    assert prepared.values[5][5] == hmac.new(key, b"email\x1f" + b"cd" * 32, hashlib.sha256).hexdigest()
    assert prepared.values[1][1] is None


def test_prepare_leaf_of_a_plain_item_is_its_rfc8785_document(monkeypatch: pytest.MonkeyPatch) -> None:
    # Written out by hand: the inline document of the common case must be this text (format 3).
    monkeypatch.setattr(ledger_items, "FORMAT", 3)
    prepared = bulk.prepare(draft(MOVES[:1]))
    record, subject = prepared.values[0][0], prepared.values[0][1]
    document = (
        f'{{"due_at":"2025-10-01T22:00:00.000000Z","idx":0,"record":"{record}","request":null,'
        f'"review":null,"subject":"{subject}"}}'
    ).encode()
    assert prepared.root == hashlib.sha256(b"\x00" + document).hexdigest()


def test_prepare_leaf_of_format_4_is_its_fixed_layout_bytes() -> None:
    # Written out by hand (docs/ledger.md, "Format 4"): due instant, record, subject, e-mail or 64 '-',
    # then "idx:request:review" in decimal, empty for none.
    prepared = bulk.prepare(draft([MOVES[0], MOVES[3]], [None, "cd" * 32]))
    (record0, subject0, *_), (record1, subject1, *_) = prepared.values
    email1 = prepared.values[1][5]
    first = f"2025-10-01T22:00:00.000000Z{record0}{subject0}{'-' * 64}0::".encode()
    second = f"2025-10-01T22:00:00.123456Z{record1}{subject1}{email1}1:7:".encode()
    leaves = [hashlib.sha256(b"\x00" + first).digest(), hashlib.sha256(b"\x00" + second).digest()]
    assert prepared.root == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).hexdigest()


def test_prepare_of_no_moves_is_the_empty_root() -> None:
    prepared = bulk.prepare(draft([]))
    assert len(prepared) == 0 and prepared.root == merkle.EMPTY_ROOT.hex()


def test_appended_items_verify_against_their_root(migrated: sa.Engine) -> None:
    """Stored through the dialect's bulk path, the items read back to the entry's root (all three databases)."""
    many = [(DUE + dt.timedelta(days=i % 3), str(i), str(i % 7) if i % 5 else None, None, None) for i in range(1200)]
    d = draft([*MOVES, *many], [*EMAILS, *([None] * len(many))])
    items, _ = reference(d)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        (seq,) = ledger.append(conn, [d], now, secret=SECRET)
    with migrated.connect() as conn:
        entry = dict(conn.execute(sa.select(store.ledger).where(store.ledger.c.seq == seq)).one()._mapping)
        assert entry["items"] == len(items)
        assert ledger_items.check_items(conn, entry) is None
        stored = ledger_items.entry_items(conn, seq)
    assert [(r["record_pseudonym"], r["subject_pseudonym"], r["due_at"], r["email_pseudonym"]) for r in stored] == [
        (i.record, i.subject, i.due_at.astimezone(dt.UTC), i.email) for i in items
    ]


def per_record_prepare(d: ledger_items.BatchItems) -> bulk.PreparedItems:
    """The items as the per-record path (the core before retention.ledger.bulk) builds them."""
    items = d.items()
    values = [(i.record, i.subject, i.due_at, i.request_id, i.review_id, i.email) for i in items]
    return bulk.PreparedItems(values, merkle.root(ledger_items.leaves(items, ledger_items.FORMAT)).hex())


def per_record_insert(conn: sa.Connection, entry_seq: int, prepared: bulk.PreparedItems) -> None:
    ledger_items.insert_items(conn, entry_seq, [ledger_items.Item(*v) for v in prepared.values])


def test_proofs_of_records_purged_by_the_old_and_the_new_core_both_verify(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run writes its items by the per-record path, the next by the one-pass path; both records prove."""
    from test_ledger_proof import PACK, events_table, invoke, prove_each

    from retention.engine import quick_evaluate

    events = events_table(migrated)
    pack = tmp_path / "proofs.yaml"
    pack.write_text(PACK, encoding="utf-8")

    def purge(keys: list[str], as_of: str) -> str:
        with migrated.begin() as conn:
            conn.execute(
                events.insert(), [{"id": k, "user_id": "u-1", "collected": dt.datetime(2020, 3, 1)} for k in keys]
            )
        result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", as_of)
        assert result.exit_code == 0, result.output
        with migrated.connect() as conn:
            return str(
                conn.execute(
                    sa.select(store.runs.c.id)
                    .where(store.runs.c.mode == "run")
                    .order_by(store.runs.c.started_at.desc())
                )
                .scalars()
                .first()
            )

    with monkeypatch.context() as old:
        old.setattr(bulk, "prepare", per_record_prepare)
        old.setattr(bulk, "insert", per_record_insert)
        old.setattr(
            quick_evaluate,
            "evaluator",
            lambda pack, dataset, as_of, cache: (
                lambda raws: quick_evaluate.evaluate_record(pack, dataset, raws, as_of, cache)
            ),
        )
        old_run = purge(["old-1", "old-2", "old-3"], "2025-06-01")
    new_run = purge(["new-1", "new-2"], "2025-06-02")
    assert old_run != new_run
    prove_each(db_url, tmp_path, [(old_run, "old-2"), (new_run, "new-1")])
