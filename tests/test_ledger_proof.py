"""Inclusion proofs: `ledger prove` writes one file, `ledger verify-proof` checks it with no database.

Expected pseudonyms and hashes are computed here with hmac and hashlib, not
by the code under test; each altered byte is checked to give its own reason.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from scaffold import ledger_env

from retention.cli import main
from retention.store import tables as store

SECRET = "proof-test-key"
ENV = ledger_env(SECRET)
PER_RECORD = {"RETENTION_SET_BASED": "0"}

PACK = """
pack: proofs
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
batch_size: 8
datasets:
  events:
    table: events
    key: id
    subject_key: user_id
    basis: one year, art. 5(1)(e)
    keep:
      - clock: {column: collected, type: timestamp}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def key_of(i: int) -> str:
    return f"evt-{i:03d}-alice@example.org"


def user_of(i: int) -> str:
    return f"user-{i % 3}@example.org"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**ENV, **(env or {})}, prog_name="retention")


def hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def item_pseudonym(run_id: str, dataset: str, record_key: str) -> str:
    """The item's record pseudonym as docs/ledger.md tells an auditor to compute it."""
    run_key = bytes.fromhex(hmac_hex(SECRET.encode(), f"run\x1f{run_id}"))
    return hmac_hex(run_key, f"record\x1f{dataset}\x1f{record_key}")


def events_table(engine: sa.Engine) -> sa.Table:
    """The table of :data:`PACK`'s events, created."""
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40)),
        sa.Column("collected", sa.DateTime),
    )
    md.create_all(engine)
    return events


def prove_each(db_url: str, tmp_path: Path, records: list[tuple[str, str]]) -> None:
    """Sign a checkpoint, verify the ledger, and prove and check each (run id, events key) against it."""
    private, public = tmp_path / "signer.pem", tmp_path / "signer.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(private), "--public", str(public)).exit_code == 0
    checkpoint = tmp_path / "cp.json"
    signed = invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint))
    assert signed.exit_code == 0, signed.output
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0
    for run_id, key in records:
        out = tmp_path / f"proof-{key}.json"
        proved = invoke(
            "ledger", "prove", "--db", db_url, "--dataset", "events", "--key", key,
            "--checkpoint", str(checkpoint), "--output", str(out),
        )  # fmt: skip
        assert proved.exit_code == 0, proved.output
        checked = invoke(
            "ledger", "verify-proof", str(out), "--public-key", str(public), "--dataset", "events", "--key", key
        )
        assert checked.exit_code == 0, checked.output
        assert checked.output.splitlines()[0] == "proof ok"
        assert f"record {item_pseudonym(run_id, 'events', key)} of events" in checked.output


@pytest.fixture
def purged(migrated: sa.Engine, db_url: str, tmp_path: Path) -> dict[str, Any]:
    """20 of 30 records purged in batches of 8 (entries of 8, 8 and 4 items), then a signed checkpoint."""
    events = events_table(migrated)
    with migrated.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"id": key_of(i), "user_id": user_of(i), "collected": dt.datetime(2020 if i <= 20 else 2025, 3, 1)}
                for i in range(1, 31)
            ],
        )
    pack = tmp_path / "proofs.yaml"
    pack.write_text(PACK, encoding="utf-8")
    # The per-record path, which writes format 4: these tests hold format-4 items and their audit paths; the
    # set-based path writes format 5, proved in tests/test_ledger_format5_read.py.
    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2025-06-01", env=PER_RECORD)
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "signer.pem", tmp_path / "signer.pub.pem"
    made = invoke("ledger", "keygen", "--key", str(private), "--public", str(public))
    assert made.exit_code == 0 and public.read_text() == made.output
    checkpoint = tmp_path / "cp.json"
    signed = invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint))
    assert signed.exit_code == 0, signed.output
    with migrated.connect() as conn:
        run_id = conn.execute(sa.select(store.runs.c.id).where(store.runs.c.mode == "run")).scalar_one()
        head = conn.execute(sa.select(store.ledger).order_by(store.ledger.c.seq.desc()).limit(1)).one()
        entries = list(conn.execute(sa.select(store.ledger).where(store.ledger.c["items"] > 0)))
    assert sorted(e.items for e in entries) == [4, 8, 8]
    return {
        "db_url": db_url,
        "run_id": run_id,
        "head": head,
        "checkpoint": checkpoint,
        "public": public,
        "private": private,
        "tmp": tmp_path,
        "pack": pack,
    }


def prove(world: dict[str, Any], *args: str) -> tuple[Result, Path]:
    out = world["tmp"] / f"proof-{len(list(world['tmp'].glob('proof-*')))}.json"
    result = invoke(
        "ledger",
        "prove",
        "--db",
        world["db_url"],
        *args,
        "--checkpoint",
        str(world["checkpoint"]),
        "--output",
        str(out),
    )
    return result, out


def verify_proof(world: dict[str, Any], proof: Path, *args: str) -> Result:
    return invoke("ledger", "verify-proof", str(proof), "--public-key", str(world["public"]), *args)


def test_a_purged_record_proves_and_verifies_offline(purged: dict[str, Any]) -> None:
    """The proof of one purged record verifies with only the file and the public key; it names no key."""
    result, proof = prove(purged, "--dataset", "events", "--key", key_of(5))
    assert result.exit_code == 0, result.output
    text = proof.read_text(encoding="utf-8")
    assert "example.org" not in text and "alice" not in text and SECRET not in text
    document = json.loads(text)
    expected = item_pseudonym(purged["run_id"], "events", key_of(5))
    [record] = document["records"]
    assert record["item"]["record"] == expected
    assert record["item"]["subject"] == hmac_hex(
        bytes.fromhex(hmac_hex(SECRET.encode(), f"run\x1f{purged['run_id']}")), f"subject\x1f{user_of(5)}"
    )
    assert len(record["audit_path"]) >= 2  # a tree of 8 or 4 leaves
    head = purged["head"]
    assert document["checkpoint"]["seq"] == head.seq and document["checkpoint"]["hash"] == head.hash
    assert document["chain"][-1]["hash"] == head.hash
    checked = verify_proof(purged, proof)
    assert checked.exit_code == 0, checked.output
    lines = checked.output.splitlines()
    assert lines[0] == "proof ok"
    assert lines[1].startswith(f"  entry {record['seq']} item {record['item']['idx']}: record {expected} of events: ")
    # a clock of 2020-03-01 with P1Y: the day itself does not count, due at 00:00 on 2021-03-02 (SPEC)
    assert "active->purged (delete)" in lines[1] and "due 2021-03-02T00:00:00.000000Z" in lines[1]
    assert "basis 'one year, art. 5(1)(e)'" in lines[1]
    assert lines[2].startswith(f"  chain of {len(document['chain'])} entries to the checkpoint of entry {head.seq}")
    # The auditor who holds the pseudonym key checks which record it is.
    mine = verify_proof(purged, proof, "--dataset", "events", "--key", key_of(5))
    assert mine.exit_code == 0, mine.output
    other = verify_proof(purged, proof, "--dataset", "events", "--key", key_of(6))
    assert (other.exit_code, other.output.splitlines()) == (
        6,
        [f"proof rejected: record 1 (entry {record['seq']}) is not that record (its pseudonym differs)"],
    )


def test_a_subject_proof_holds_each_of_their_records(purged: dict[str, Any]) -> None:
    """--subject proves every purged record of that person: records 1, 4, ..., 19 are user-1's."""
    result, proof = prove(purged, "--subject", user_of(1))
    assert result.exit_code == 0, result.output
    document = json.loads(proof.read_text(encoding="utf-8"))
    wanted = {item_pseudonym(purged["run_id"], "events", key_of(i)) for i in range(1, 21) if i % 3 == 1}
    assert {r["item"]["record"] for r in document["records"]} == wanted
    assert verify_proof(purged, proof).exit_code == 0


def flip(text: str, start: int) -> str:
    """One character changed at ``start``: a hex digit or base64 letter for another of the same alphabet."""
    old = text[start]
    new = {"0": "1", "a": "b", "A": "B", "+": "/", "/": "+", "=": "A"}.get(old, "0" if old != "0" else "1")
    if old.isalpha() and old not in "aA":
        new = "a" if old.islower() else "A"
    return text[:start] + new + text[start + 1 :]


def value_at(text: str, key: str, occurrence: int = 0) -> int:
    """Index of the middle character of the ``occurrence``-th string value of ``key`` in the proof's text."""
    at = -1
    for _ in range(occurrence + 1):
        at = text.index(f'"{key}": "', at + 1)
    start = at + len(f'"{key}": "')
    end = text.index('"', start)
    return (start + end) // 2


def test_one_altered_byte_is_rejected_with_its_reason(purged: dict[str, Any]) -> None:
    """An altered item, path node, entry, signature or chain link: each rejected, naming what broke."""
    result, proof = prove(purged, "--dataset", "events", "--key", key_of(5))
    assert result.exit_code == 0, result.output
    text = proof.read_text(encoding="utf-8")
    document = json.loads(text)
    record = document["records"][0]
    where = f"record 1 (entry {record['seq']} item {record['item']['idx']})"
    not_to_root = (
        f"{where}: the item and its audit path do not lead to the entry's Merkle root "
        "(the item, its position or a path node was altered)"
    )
    records = text.index('"records": [')  # after the chain: the keys are sorted
    path_start = text.index('"audit_path": [')
    first_node = text.index('"', path_start + len('"audit_path": [')) + 10
    proved = next(i for i, e in enumerate(document["chain"]) if e["seq"] == record["seq"])
    cases = {
        "item record pseudonym": (flip(text, value_at(text, "record")), not_to_root),
        "item due date": (
            text[:records] + text[records:].replace('"due_at": "2021-03-02', '"due_at": "2021-03-03', 1),
            not_to_root,
        ),
        "audit path node": (flip(text, first_node), not_to_root),
        "entry basis": (
            text.replace('"basis": "one year', '"basis": "One year', 1),
            f"entry {document['chain'][0]['seq']}: its hash does not match its content (the entry was altered)",
        ),
        "entry merkle root": (
            flip(text, value_at(text, "merkle_root", proved)),
            f"entry {record['seq']}: its hash does not match its content (the entry was altered)",
        ),
        "checkpoint signature": (
            flip(text, value_at(text, "signature")),
            f"the checkpoint of entry {document['checkpoint']['seq']} signed {document['checkpoint']['signed_at']}: "
            "its signature is not valid for the configured public key",
        ),
    }
    cases["JSON syntax"] = ("[" + text[1:], "the file is not JSON (damaged, or not a proof)")
    if len(document["chain"]) > 1:
        cases["chain link"] = (
            flip(text, value_at(text, "prev_hash", 1)),
            f"entry {document['chain'][1]['seq']}: its hash does not match its content (the entry was altered)",
        )
    for name, (altered, reason) in cases.items():
        assert altered != text and len(altered) == len(text), name
        bad = purged["tmp"] / "altered.json"
        bad.write_text(altered, encoding="utf-8")
        checked = verify_proof(purged, bad)
        assert (checked.exit_code, checked.output.splitlines()) == (6, [f"proof rejected: {reason}"]), name


def test_another_signers_key_rejects_the_proof(purged: dict[str, Any]) -> None:
    """The key inside the checkpoint is never trusted: against another public key the proof fails."""
    result, proof = prove(purged, "--dataset", "events", "--key", key_of(5))
    assert result.exit_code == 0
    other = purged["tmp"] / "other.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(purged["tmp"] / "other.pem"), "--public", str(other)).exit_code == 0
    checked = invoke("ledger", "verify-proof", str(proof), "--public-key", str(other))
    assert checked.exit_code == 6
    assert "its signature is not valid for the configured public key" in checked.output
    missing = invoke("ledger", "verify-proof", str(proof))
    assert missing.exit_code == 2 and missing.output.startswith("error: a checkpoint is trusted only against")


def test_prove_refuses_what_it_cannot_prove(purged: dict[str, Any]) -> None:
    """A record not in the ledger, or moved after the checkpoint: one line, exit 2, no key echoed."""
    unknown, _ = prove(purged, "--dataset", "events", "--key", "nobody@example.org")
    assert (unknown.exit_code, unknown.output.splitlines()) == (
        2,
        ["error: the ledger holds no entry of that record"],
    )
    later = invoke(
        "run", "--rules", str(purged["pack"]), "--db", purged["db_url"], "--as-of", "2026-06-01", env=PER_RECORD
    )
    assert later.exit_code == 0, later.output
    newer, _ = prove(purged, "--dataset", "events", "--key", key_of(25))
    assert newer.exit_code == 2
    assert newer.output.splitlines()[0].startswith("error: entry ")
    assert "is newer than the checkpoint" in newer.output and "example.org" not in newer.output


@pytest.mark.only_on("sqlite")  # the proof is a file: the same on every database
def test_every_single_character_change_is_rejected_or_harmless(purged: dict[str, Any]) -> None:
    """Each character of a proof changed in turn: rejected, unparseable, or the same document (whitespace, key_id)."""
    from retention.ledger import chain as ledger
    from retention.ledger import proof as ledger_proof

    result, proof = prove(purged, "--dataset", "events", "--key", key_of(5))
    assert result.exit_code == 0, result.output
    text = proof.read_text(encoding="utf-8")
    original = json.loads(text)
    public = ledger.load_public_key(purged["public"].read_bytes())
    assert ledger_proof.verify(original, public).ok

    def ignoring_key_id(document: Any) -> Any:
        """The document as verified: without key_id, the signature as the bytes it decodes to.

        The last base64 character before ``=`` padding carries spare bits;
        changing only those gives another spelling of the same signature.
        """
        if isinstance(document, dict) and isinstance(document.get("checkpoint"), dict):
            checkpoint = {**document["checkpoint"], "key_id": None}
            signature = checkpoint.get("signature")
            if isinstance(signature, str):
                with contextlib.suppress(ValueError):
                    checkpoint["signature"] = base64.b64decode(signature, validate=True)
            return {**document, "checkpoint": checkpoint}
        return document

    accepted = []
    for i, old in enumerate(text):
        new = "1" if old == "0" else "0" if old.isdigit() else "b" if old == "a" else "a" if old.isalpha() else "x"
        try:
            document = json.loads(text[:i] + new + text[i + 1 :])
        except ValueError:
            continue
        verdict = ledger_proof.verify(document, public, secret=SECRET.encode())  # the MACs checked too
        if verdict.ok and ignoring_key_id(document) != ignoring_key_id(original):
            accepted.append((i, text[max(0, i - 30) : i + 10]))
    assert accepted == []


@pytest.mark.only_on("sqlite", "postgresql")
def test_a_hold_on_a_record_is_proved_like_a_v1_entry(purged: dict[str, Any]) -> None:
    """An event about one record (a hold: no items, the record's pseudonym under the pseudonym key) is provable."""
    held = invoke(
        "hold", "add", "--db", purged["db_url"], "--rules", str(purged["pack"]),
        "--dataset", "events", "--key", key_of(25), "--reason", "case 12",
    )  # fmt: skip
    assert held.exit_code == 0, held.output
    assert (
        invoke(
            "ledger", "checkpoint", "--db", purged["db_url"], "--key", str(purged["private"]),
            "--output", str(purged["checkpoint"]),
        ).exit_code
        == 0
    )  # fmt: skip
    result, proof = prove(purged, "--dataset", "events", "--key", key_of(25))
    assert result.exit_code == 0, result.output
    [record] = json.loads(proof.read_text(encoding="utf-8"))["records"]
    assert record["item"] is None and record["audit_path"] == []
    checked = verify_proof(purged, proof, "--dataset", "events", "--key", key_of(25))
    assert checked.exit_code == 0, checked.output
    v1_style = hmac_hex(SECRET.encode(), f"record\x1fevents\x1f{key_of(25)}")
    assert checked.output.splitlines()[1].startswith(
        f"  entry {record['seq']}: record {v1_style} of events: hold_placed"
    )
