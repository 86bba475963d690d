"""The ledger: chaining, tamper detection, checkpoints, pseudonyms, export."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.errors import ConfigError, LedgerError
from retention.ledger import canonical, pseudonyms
from retention.ledger import chain as ledger
from retention.store import tables as store
from retention.store.config import read_secret

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
SECRET = b"k"


def draft(n: int, dataset: str = "invoices") -> ledger.EntryDraft:
    return ledger.EntryDraft(
        run_id="run-1",
        pack_id="marketplace",
        pack_digest="d" * 64,
        dataset=dataset,
        transition="active->purged",
        action="delete",
        basis="Code de commerce L123-22",
        due_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n),
        record_pseudonym=pseudonyms.record_pseudonym(SECRET, dataset, str(n)),
        subject_pseudonym=pseudonyms.subject_pseudonym(SECRET, str(n % 3)),
        detail={"n": n} if n % 2 else {},
    )


def fill(engine: sa.Engine, count: int = 12) -> None:
    with engine.begin() as conn:
        ledger.append(conn, [draft(n) for n in range(1, count // 2 + 1)], NOW, secret=SECRET)
    with engine.begin() as conn:  # a second transaction continues the chain
        ledger.append(conn, [draft(n) for n in range(count // 2 + 1, count + 1)], NOW, secret=SECRET)


def drop_protection(engine: sa.Engine) -> None:
    """What an attacker with DDL rights would do first."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("DROP TRIGGER retention_ledger_append_only ON retention_ledger"))
        else:
            conn.execute(sa.text("DROP TRIGGER retention_ledger_no_update"))
            conn.execute(sa.text("DROP TRIGGER retention_ledger_no_delete"))


def rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(store.ledger).order_by(store.ledger.c.seq))]


def test_hash_is_sha256_of_the_canonical_entry() -> None:
    """An ASCII entry's hash equals SHA-256 of its sorted, compact JSON (RFC 8785 for such input)."""
    row = {
        "seq": 1,
        "recorded_at": NOW,
        "run_id": "r",
        "pack_id": "p",
        "pack_digest": None,
        "dataset": "d",
        "transition": "active->purged",
        "action": "delete",
        "basis": "b",
        "due_at": None,
        "record_pseudonym": None,
        "subject_pseudonym": None,
        "count": 1,
        "clock_min": None,
        "clock_max": None,
        "detail": None,
        "prev_hash": "0" * 64,
    }
    expected_doc = {**row, "recorded_at": "2026-11-24T10:00:00.000000Z"}
    expected = hashlib.sha256(json.dumps(expected_doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert ledger.entry_hash(row) == expected


def test_append_then_verify(migrated: sa.Engine) -> None:
    """Entries appended over two transactions form one chain from seq 1."""
    fill(migrated)
    verdict = ledger.verify(migrated)
    assert verdict.ok and verdict.entries == 12
    chain = rows(migrated)
    assert [r["seq"] for r in chain] == list(range(1, 13))
    assert chain[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(chain))


def test_modified_entry_is_named(migrated: sa.Engine) -> None:
    """Changing one field of entry 5 fails verification at 5."""
    fill(migrated)
    drop_protection(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger.update().where(store.ledger.c.seq == 5).values(basis="rewritten"))
    verdict = ledger.verify(migrated)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 5)
    assert "entry 5" in verdict.reason and "modified" in verdict.reason


def test_deleted_entry_is_named(migrated: sa.Engine) -> None:
    """Removing entry 7 fails verification naming 7 as missing."""
    fill(migrated)
    drop_protection(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger.delete().where(store.ledger.c.seq == 7))
    verdict = ledger.verify(migrated)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 7)
    assert "entry 7 is missing" in verdict.reason


def test_deleted_tail_entry_is_detected_by_checkpoint(migrated: sa.Engine, tmp_path: Path) -> None:
    """Dropping the newest entries keeps the chain consistent, but a checkpoint of the head catches it."""
    fill(migrated)
    key = tmp_path / "signing.pem"
    public = ledger.load_public_key(ledger.generate_signing_key(key))
    point = ledger.checkpoint(migrated, ledger.load_signing_key(key), NOW, secret=SECRET)
    drop_protection(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger.delete().where(store.ledger.c.seq >= 11))
    assert ledger.verify(migrated).ok
    verdict = ledger.verify_checkpoint(migrated, point, public, secret=SECRET)
    assert not verdict.ok and verdict.first_bad_seq == 12


def test_inserted_entry_is_named(migrated: sa.Engine) -> None:
    """Renumbering to slip an entry in at 4 fails verification at 4."""
    fill(migrated)
    drop_protection(migrated)
    chain = rows(migrated)
    forged = {**chain[3], "basis": "forged"}
    with migrated.begin() as conn:
        conn.execute(store.ledger.delete())
        renumbered = [*chain[:3], forged, *chain[3:]]
        for seq, row in enumerate(renumbered, start=1):
            conn.execute(store.ledger.insert().values({**row, "seq": seq}))
    verdict = ledger.verify(migrated)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)


def test_swapped_entries_are_named(migrated: sa.Engine) -> None:
    """Swapping the contents of entries 3 and 4 fails verification at 3."""
    fill(migrated)
    drop_protection(migrated)
    chain = rows(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger.delete().where(store.ledger.c.seq.in_([3, 4])))
        conn.execute(store.ledger.insert().values({**chain[3], "seq": 3}))
        conn.execute(store.ledger.insert().values({**chain[2], "seq": 4}))
    verdict = ledger.verify(migrated)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)


def rewrite_chain_from(engine: sa.Engine, seq: int) -> None:
    """Test helper: alter entry ``seq`` and recompute every hash after it (a consistent forgery)."""
    chain = rows(engine)
    with engine.begin() as conn:
        conn.execute(store.ledger.delete().where(store.ledger.c.seq >= seq))
        prev = chain[seq - 2]["hash"] if seq > 1 else ledger.GENESIS
        for row in chain[seq - 1 :]:
            new = {**row, "prev_hash": prev}
            if row["seq"] == seq:
                new["basis"] = "quietly rewritten"
            new["hash"] = prev = ledger.row_hash(new)
            conn.execute(store.ledger.insert().values(new))


def test_checkpoint_detects_a_consistent_rewrite(migrated: sa.Engine, tmp_path: Path) -> None:
    """A chain rewritten from entry 4 verifies on its own but fails against the signed checkpoint."""
    fill(migrated)
    key = tmp_path / "signing.pem"
    public = ledger.load_public_key(ledger.generate_signing_key(key))
    point = ledger.checkpoint(migrated, ledger.load_signing_key(key), NOW, secret=SECRET)
    assert ledger.verify_checkpoint(migrated, point, public, secret=SECRET).ok
    drop_protection(migrated)
    rewrite_chain_from(migrated, 4)
    assert ledger.verify(migrated).ok  # without the pseudonym key, the MACs cannot be checked
    verdict = ledger.verify_checkpoint(migrated, point, public)
    assert not verdict.ok
    assert "ledger rewritten: entry 12 no longer matches the checkpoint of entry 12" in verdict.reason
    with_key = ledger.verify(migrated, secret=SECRET)  # with it, the first rewritten entry is named
    assert (with_key.ok, with_key.first_bad_seq) == (False, 4)
    assert with_key.reason.startswith("entry 4: its MAC is not valid for the configured pseudonym key")


def test_checkpoint_with_a_forged_signature_fails(migrated: sa.Engine, tmp_path: Path) -> None:
    """A checkpoint whose head was edited no longer matches its signature."""
    fill(migrated)
    key = tmp_path / "signing.pem"
    public = ledger.load_public_key(ledger.generate_signing_key(key))
    point = ledger.checkpoint(migrated, ledger.load_signing_key(key), NOW, secret=SECRET)
    verdict = ledger.verify_checkpoint(migrated, {**point, "seq": 11}, public)
    assert not verdict.ok and "signature is not valid" in verdict.reason


def test_checkpoint_refuses_a_broken_chain(migrated: sa.Engine, tmp_path: Path) -> None:
    """Nobody can sign a ledger that does not verify."""
    fill(migrated)
    drop_protection(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger.update().where(store.ledger.c.seq == 2).values(count=99))
    key = tmp_path / "signing.pem"
    ledger.generate_signing_key(key)
    with pytest.raises(LedgerError, match="entry 2"):
        ledger.checkpoint(migrated, ledger.load_signing_key(key), NOW, secret=SECRET)


def test_pseudonyms_are_keyed_and_never_the_key() -> None:
    """Same input and key give the same pseudonym; datasets, keys and secrets separate them."""
    a = pseudonyms.record_pseudonym(b"secret", "customers", "42")
    assert a == pseudonyms.record_pseudonym(b"secret", "customers", "42")
    assert a != pseudonyms.record_pseudonym(b"secret", "invoices", "42")
    assert a != pseudonyms.record_pseudonym(b"other", "customers", "42")
    assert pseudonyms.subject_pseudonym(b"secret", "42") != a
    assert all(c in "0123456789abcdef" for c in a) and len(a) == 64


def test_key_file_readable_by_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0644 pseudonym key file is refused with the chmod to run."""
    path = tmp_path / "key"
    path.write_text("s3cret")
    path.chmod(0o644)
    monkeypatch.delenv("RETENTION_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(path))
    with pytest.raises(ConfigError, match=f"run: chmod 600 {path}"):
        pseudonyms.pseudonym_secret()
    path.chmod(0o600)
    assert read_secret("pseudonym key", "RETENTION_PSEUDONYM_KEY", "RETENTION_PSEUDONYM_KEY_FILE") == b"s3cret"


def test_export_csv_and_jsonl(migrated: sa.Engine) -> None:
    """Exports hold every matching entry, filters apply, and rows round-trip."""
    fill(migrated)
    with migrated.begin() as conn:
        ledger.append(conn, [draft(1, dataset="customers")], NOW, secret=SECRET)
    out = io.StringIO()
    assert ledger.export(migrated, "jsonl", out, dataset="invoices") == 12
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 13))
    assert lines[0]["recorded_at"] == "2026-11-24T10:00:00.000000Z"
    out = io.StringIO()
    assert ledger.export(migrated, "csv", out) == 13
    assert out.getvalue().splitlines()[0].startswith("seq,recorded_at,run_id")


def test_an_export_holds_what_recomputes_each_entrys_hash_and_mac(migrated: sa.Engine) -> None:
    """From the JSON-lines export alone, each entry's hash and MAC recompute as docs/ledger.md defines them."""
    fill(migrated)
    out = io.StringIO()
    assert ledger.export(migrated, "jsonl", out) == 12
    v1 = [
        "seq",
        "recorded_at",
        "run_id",
        "pack_id",
        "pack_digest",
        "dataset",
        "transition",
        "action",
        "basis",
        "due_at",
        "record_pseudonym",
        "subject_pseudonym",
        "count",
        "clock_min",
        "clock_max",
        "detail",
        "prev_hash",
    ]
    ledger_key = hmac.new(SECRET, b"ledger-mac\x1f", hashlib.sha256).digest()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["format"] for line in lines} == {4}
    for line in lines:
        fields = v1 if line["format"] is None else [*v1, "format", "merkle_root", "items"]
        assert hashlib.sha256(rfc8785.dumps({k: line[k] for k in fields})).hexdigest() == line["hash"]
        assert hmac.new(ledger_key, b"entry\x1f" + line["hash"].encode(), hashlib.sha256).hexdigest() == line["mac"]


import rfc8785  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=30)


@given(
    basis=st.one_of(st.none(), _text),
    dataset=st.one_of(st.none(), _text),
    count=st.integers(-(2**53) + 1, 2**53 - 1),
    detail=st.one_of(st.none(), st.dictionaries(_text, st.one_of(_text, st.integers(0, 10**9)), max_size=3)),
)
def test_fast_canonical_encoding_is_rfc8785(basis: Any, dataset: Any, count: int, detail: Any) -> None:
    """The ledger's fast encoder produces exactly the RFC 8785 bytes, for any text."""
    row = {
        "seq": 7,
        "recorded_at": NOW,
        "run_id": "r",
        "pack_id": None,
        "pack_digest": None,
        "dataset": dataset,
        "transition": "active->purged",
        "action": "delete",
        "basis": basis,
        "due_at": None,
        "record_pseudonym": None,
        "subject_pseudonym": None,
        "count": count,
        "clock_min": NOW,
        "clock_max": None,
        "detail": detail,
        "prev_hash": "0" * 64,
    }
    reference = {k: row[k] for k in ledger.COLUMNS}
    reference["recorded_at"] = reference["clock_min"] = "2026-11-24T10:00:00.000000Z"
    reference["detail"] = rfc8785.dumps(detail).decode() if detail else None
    assert ledger.canonical_entry(row) == rfc8785.dumps(reference)


@given(secret=st.binary(min_size=1, max_size=200), dataset=_text, key=_text)
def test_pseudonym_is_hmac_sha256(secret: bytes, dataset: str, key: str) -> None:
    """The pre-keyed HMAC equals the standard library's, for short and long (hashed) keys."""
    import hmac

    message = "\x1f".join(["record", dataset, key]).encode("utf-8")
    assert pseudonyms.record_pseudonym(secret, dataset, key) == hmac.new(secret, message, hashlib.sha256).hexdigest()


BASIS = 'b ä"\t\n\\N\\'  # quotes, COPY's separators and escapes, NULL's spelling


def test_fast_record_entries_hash_like_the_general_path(migrated: sa.Engine) -> None:
    """Entries chained by the per-record loop verify, and equal entries appended one by one."""
    now = dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)
    items = [
        (now - dt.timedelta(days=i), f"k{i}", None if i % 3 else f"s{i}", None if i % 4 else {"erasure_request": i})
        for i in range(20)
    ]
    with migrated.begin() as conn:
        ledger.append(
            conn,
            [ledger.RecordEntries("r", "p", "d" * 64, "events", "active->purged", "delete", BASIS, SECRET, items)],
            now,
        )
    fast = rows(migrated)
    assert ledger.verify(migrated).ok
    drafts = [
        ledger.EntryDraft(
            "r",
            "p",
            "d" * 64,
            "events",
            "active->purged",
            "delete",
            BASIS,
            due,
            pseudonyms.record_pseudonym(SECRET, "events", key),
            pseudonyms.subject_pseudonym(SECRET, subject) if subject else None,
        )
        for due, key, subject, _ in items
    ]
    hashes = []
    prev = ledger.GENESIS
    for seq, (draft, item, row) in enumerate(zip(drafts, items, fast, strict=True), start=1):
        expected = {
            "seq": seq,
            "recorded_at": now,
            "run_id": "r",
            "pack_id": "p",
            "pack_digest": "d" * 64,
            "dataset": "events",
            "transition": "active->purged",
            "action": "delete",
            "basis": BASIS,
            "due_at": draft.due_at,
            "record_pseudonym": draft.record_pseudonym,
            "subject_pseudonym": draft.subject_pseudonym,
            "count": 1,
            "clock_min": None,
            "clock_max": None,
            "detail": rfc8785.dumps(item[3]).decode() if item[3] else None,
            "prev_hash": prev,
        }
        prev = hashlib.sha256(
            rfc8785.dumps(
                {
                    **expected,
                    **{k: canonical._instant(v) for k, v in expected.items() if k in ("recorded_at", "due_at")},
                }
            )
        ).hexdigest()
        hashes.append(prev)
        assert {k: row[k] for k in expected} == expected
    assert [r["hash"] for r in fast] == hashes
