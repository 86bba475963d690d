"""A database superuser without the engine's key files: forged entries and cut tails (issue 28).

The superuser can compute everything an entry holds except its MAC (a key
derived from the pseudonym key, which the database never sees); they can
delete the newest entries of any run, finished or killed, and let the next
run write over their seqs. Each scenario is run through the CLI; expected
messages are written here by hand.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scaffold import events_pack, ledger_env, make_events
from test_ledger_tampering import superuser_empties

from retention.cli import main
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.ledger import merkle
from retention.ledger import proof as ledger_proof
from retention.store import tables as store

SECRET = "forgery-test-key"
ENV = ledger_env(SECRET)

PACK = events_pack("forgery", batch_size=4, subject=True)

EVENTS = 40  # ids 1..40, collected 2020-03-02 + i days: 10 batches of 4 are due by 2022


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**ENV, **(env or {})}, prog_name="retention")


def write_pack(tmp_path: Path) -> Path:
    pack = tmp_path / "forgery.yaml"
    pack.write_text(PACK, encoding="utf-8")
    return pack


@pytest.fixture
def purged(migrated: sa.Engine, db_url: str, tmp_path: Path) -> dict[str, Any]:
    """Events 1..12 purged in one run (three entries of four items); 13..40 stay active (not yet due)."""
    make_events(migrated, range(1, EVENTS + 1))
    pack = write_pack(tmp_path)
    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2021-03-14")
    assert result.exit_code == 0, result.output
    with migrated.connect() as conn:
        head = conn.execute(sa.select(store.ledger).order_by(store.ledger.c.seq.desc()).limit(1)).one()._mapping
        rows = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
        in_blocks = conn.execute(sa.select(sa.func.sum(store.ledger_blocks.c["items"]))).scalar()
    assert rows + (in_blocks or 0) == 12  # item rows per record, or format-5 blocks set-based
    return {"db_url": db_url, "pack": pack, "head": dict(head)}


def forge_entry(engine: sa.Engine, head: dict[str, Any], record_key: str, *, form: int, mac: str | None) -> int:
    """What the superuser appends: a well-formed purge of one record under the head's run id.

    The item's pseudonym is computed with the real run key here, the worst
    case (the superuser could copy one from another entry of that run);
    everything else an entry holds is computable by anyone who can read the
    database, except the MAC.
    """
    run_id = head["run_id"]
    key = ledger_items.run_key(SECRET.encode(), run_id)
    item = ledger_items.Item(
        ledger_items.record_pseudonym(key, "events", record_key),
        ledger_items.subject_pseudonym(key, "1"),
        dt.datetime(2021, 3, 1, tzinfo=dt.UTC),
    )
    seq = head["seq"] + 1
    row = {
        **{k: head[k] for k in ledger.V2_COLUMNS},
        "seq": seq,
        "recorded_at": head["recorded_at"] + dt.timedelta(seconds=1),
        "due_at": item.due_at,
        "count": 1,
        "prev_hash": head["hash"],
        "format": form,
        "merkle_root": merkle.root(ledger_items.leaves([item], form)).hex(),
        "items": 1,
    }
    row["hash"] = ledger.entry_hash_v2(row)
    if mac is not None:
        row["mac"] = mac
    with engine.begin() as conn:
        conn.execute(store.ledger.insert().values(**row))
        ledger_items.insert_items(conn, seq, [item])
    return seq


def sign_checkpoint(engine: sa.Engine, tmp_path: Path, authenticated_from: int | None) -> tuple[dict[str, Any], Path]:
    """A checkpoint of the head signed without checking the entries (a signer the forger fooled), and its key."""
    private = Ed25519PrivateKey.generate()
    public = tmp_path / "signer.pub.pem"
    public.write_bytes(ledger.public_pem(private.public_key()))
    with engine.connect() as conn:
        seq, hash_ = conn.execute(
            sa.select(store.ledger.c.seq, store.ledger.c.hash).order_by(store.ledger.c.seq.desc()).limit(1)
        ).one()
    document: dict[str, Any] = {"seq": seq, "hash": hash_, "signed_at": "2026-12-06T10:00:00.000000Z"}
    if authenticated_from is not None:
        document["authenticated_from"] = authenticated_from
    signed = rfc8785.dumps(document)
    document["signature"] = base64.b64encode(private.sign(signed)).decode("ascii")
    return document, public


def proof_of(engine: sa.Engine, seq: int, checkpoint: dict[str, Any], tmp_path: Path) -> Path:
    """The proof file of the forged entry's one item, assembled as `ledger prove` would write it."""
    with engine.connect() as conn:
        entry = dict(conn.execute(sa.select(store.ledger).where(store.ledger.c.seq == seq)).one()._mapping)
        [item] = ledger_items.entry_items(conn, seq)
    document = {
        "format": ledger_proof.FORMAT,
        "records": [{"seq": seq, "item": ledger_proof._plain_item(item), "audit_path": []}],
        "chain": [ledger_proof._plain_entry(entry)],
        "checkpoint": checkpoint,
    }
    path = tmp_path / "forged-proof.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_a_forged_unauthenticated_entry_at_the_head_is_named(
    migrated: sa.Engine, purged: dict[str, Any], tmp_path: Path
) -> None:
    """The issue's forgery: a format 2 entry (no MAC) claiming active event 20 purged. Before: verify passed,
    the checkpoint signed it and verify-proof said `proof ok`."""
    db_url = purged["db_url"]
    seq = forge_entry(migrated, purged["head"], "20", form=2, mac=None)
    result = invoke("ledger", "verify", "--db", db_url)
    assert (result.exit_code, result.output.splitlines()) == (
        6,
        [
            f"ledger verification failed: entry {seq}: written in format 2, without a MAC, after entry 1 of format "
            "5: the engine writes only authenticated entries since, so it did not write it"
        ],
    )
    key = tmp_path / "signing.pem"
    assert invoke("ledger", "keygen", "--key", str(key)).exit_code == 0
    refused = invoke("ledger", "checkpoint", "--db", db_url, "--key", str(key))
    assert refused.exit_code == 6
    assert refused.output.splitlines()[0].startswith(f"error: refusing to sign a broken ledger: entry {seq}: ")
    checkpoint, public = sign_checkpoint(migrated, tmp_path, authenticated_from=1)
    proof = proof_of(migrated, seq, checkpoint, tmp_path)
    for env in ({}, {"RETENTION_PSEUDONYM_KEY": ""}):  # with or without the pseudonym key: the format gives it away
        checked = invoke("ledger", "verify-proof", str(proof), "--public-key", str(public), env=env)
        assert (checked.exit_code, checked.output.splitlines()) == (
            6,
            [
                f"proof rejected: entry {seq}: written in format 2, without a MAC, after entry 1, authenticated: "
                "it was not written by the engine"
            ],
        )


def test_a_forged_entry_with_a_copied_mac_is_named(migrated: sa.Engine, purged: dict[str, Any], tmp_path: Path) -> None:
    """A format 4 entry with the MAC of the entry before it: verify and verify-proof (with the key) name it."""
    db_url = purged["db_url"]
    head = purged["head"]
    assert head["format"] == 5 and len(head["mac"]) == 64  # the set-based purge's
    seq = forge_entry(migrated, head, "20", form=4, mac=head["mac"])
    result = invoke("ledger", "verify", "--db", db_url)
    assert (result.exit_code, result.output.splitlines()) == (
        6,
        [
            f"ledger verification failed: entry {seq}: its MAC is not valid for the configured pseudonym key: it "
            "was not written by the engine (or the key is not the engine's)"
        ],
    )
    unchecked = invoke("ledger", "verify", "--db", db_url, env={"RETENTION_PSEUDONYM_KEY": ""})
    assert (unchecked.exit_code, unchecked.output.splitlines()) == (
        0,
        [f"ledger verified: {seq} entries", "entries: MACs not checked (no pseudonym key configured)"],
    )
    checkpoint, public = sign_checkpoint(migrated, tmp_path, authenticated_from=1)
    proof = proof_of(migrated, seq, checkpoint, tmp_path)
    checked = invoke("ledger", "verify-proof", str(proof), "--public-key", str(public))
    assert (checked.exit_code, checked.output.splitlines()) == (
        6,
        [
            f"proof rejected: entry {seq}: its MAC is not valid for the configured pseudonym key: it was not "
            "written by the engine (or the key is not the engine's)"
        ],
    )
    by_record = invoke(
        "ledger", "verify-proof", str(proof), "--public-key", str(public), "--dataset", "events", "--key", "20"
    )
    assert by_record.exit_code == 6 and "its MAC is not valid" in by_record.output
    signed = tmp_path / "signed.json"
    signed.write_text(json.dumps(checkpoint), encoding="utf-8")
    prove = invoke("ledger", "prove", "--db", db_url, "--dataset", "events", "--key", "20",
                   "--checkpoint", str(signed))  # fmt: skip
    assert (prove.exit_code, prove.output.splitlines()[0]) == (
        6,
        f"error: cannot prove from this ledger and checkpoint: entry {seq}: its MAC is not valid for the configured "
        "pseudonym key: it was not written by the engine (or the key is not the engine's)",
    )
    # The engine goes on working under its key (a forged head must not stop the nightly run): the forgery stays
    # what verify names, exit 6.
    held = invoke("hold", "add", "--db", db_url, "--subject", "20", "--reason", "r")
    assert held.exit_code == 0, held.output
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 6


def test_honest_entries_verify_as_authenticated(migrated: sa.Engine, purged: dict[str, Any], tmp_path: Path) -> None:
    """The engine's own entries: every one authenticated, and a proof of one says so."""
    db_url = purged["db_url"]
    head = purged["head"]["seq"]
    result = invoke("ledger", "verify", "--db", db_url)
    assert (result.exit_code, result.output.splitlines()) == (
        0,
        [f"ledger verified: {head} entries", f"entries: {head} authenticated"],
    )
    key, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(key), "--public", str(public)).exit_code == 0
    checkpoint = tmp_path / "cp.json"
    signed = invoke("ledger", "checkpoint", "--db", db_url, "--key", str(key), "--output", str(checkpoint))
    assert signed.exit_code == 0, signed.output
    assert json.loads(checkpoint.read_text())["authenticated_from"] == 1
    proof = tmp_path / "proof.json"
    proved = invoke("ledger", "prove", "--db", db_url, "--dataset", "events", "--key", "5",
                    "--checkpoint", str(checkpoint), "--output", str(proof))  # fmt: skip
    assert proved.exit_code == 0, proved.output
    checked = invoke("ledger", "verify-proof", str(proof), "--public-key", str(public))
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines()[1].endswith(", authenticated")
    blind = invoke(
        "ledger", "verify-proof", str(proof), "--public-key", str(public), env={"RETENTION_PSEUDONYM_KEY": ""}
    )
    assert blind.exit_code == 0, blind.output
    assert blind.output.splitlines()[1].endswith(", MAC not checked (no pseudonym key configured)")


# --------------------------------------------------------------------------
# Cut tails
# --------------------------------------------------------------------------


def run_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.runs.c.id).order_by(store.runs.c.started_at)).scalars())


def test_the_cut_tail_of_a_finished_run_is_detected_after_the_next_run(
    migrated: sa.Engine, purged: dict[str, Any]
) -> None:
    """The finished run's last entry removed, then another run writes over its seq: verify names the first run.
    Before: the next run's entries made the ledger as long as the run had recorded, and verify passed."""
    db_url = purged["db_url"]
    cut = purged["head"]["seq"]
    superuser_empties(migrated, keep_until=cut - 1)
    later = invoke("run", "--rules", str(purged["pack"]), "--db", db_url, "--as-of", "2021-04-15")
    assert later.exit_code == 0, later.output
    first, second = run_ids(migrated)
    with migrated.connect() as conn:
        started = conn.execute(sa.select(store.runs.c.started_at).where(store.runs.c.id == first)).scalar_one()
        took = conn.execute(sa.select(store.ledger.c.run_id).where(store.ledger.c.seq == cut)).scalar_one()
    assert took == second  # the seq is taken again
    result = invoke("ledger", "verify", "--db", db_url)
    assert (result.exit_code, result.output.splitlines()) == (
        6,
        [
            f"ledger verification failed: run {first} ({started:%Y-%m-%d %H:%M} UTC) wrote entries up to entry {cut}, "
            "which is now another's: entries of that run were removed from the ledger's end"
        ],
    )


KILL_AFTER_APPENDS = """
import os, signal, sys
import sqlalchemy as sa
from retention.ledger import chain as ledger
from retention.cli import main

appended = []

def counting(original):
    # every way a batch chains its entry: items built here (append) or by the database (append_written,
    # append_blocks_written)
    def append(conn, *args, **kwargs):
        result = original(conn, *args, **kwargs)
        if result:
            appended.append(id(conn))
        return result
    return append

def on_begin(conn):
    # the batch connection's next transaction: its appends of the batch before have committed
    if len(appended) >= int(os.environ["KILL_AFTER"]) and id(conn) in appended:
        os.kill(os.getpid(), signal.SIGKILL)

ledger.append = counting(ledger.append)
ledger.append_written = counting(ledger.append_written)
ledger.append_blocks_written = counting(ledger.append_blocks_written)
sa.event.listen(sa.Engine, "begin", on_begin)
main(sys.argv[1:], prog_name="retention")
"""


def test_the_cut_tail_of_a_killed_run_is_detected(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A run SIGKILLed after 3 batches; its last entry removed: verify names it, also after the next run.
    Before: a killed run never recorded its ledger length, and verify passed both times."""
    make_events(migrated, range(1, EVENTS + 1))
    pack = write_pack(tmp_path)
    env = {**os.environ, **ENV, "KILL_AFTER": "3"}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_AFTER_APPENDS,
            "run",
            "--rules",
            str(pack),
            "--db",
            db_url,
            "--as-of",
            "2022-01-01",
        ],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [run_id] = run_ids(migrated)
    with migrated.connect() as conn:
        seqs = list(
            conn.execute(sa.select(store.ledger.c.seq).where(store.ledger.c.run_id == run_id).order_by("seq")).scalars()
        )
        started = conn.execute(sa.select(store.runs.c.started_at)).scalar_one()
    assert len(seqs) == 3, seqs  # three batches committed, the fourth never began
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0
    superuser_empties(migrated, keep_until=seqs[-1] - 1)
    expected = (
        6,
        [
            f"ledger verification failed: run {run_id} ({started:%Y-%m-%d %H:%M} UTC) wrote entries up to entry "
            f"{seqs[-1]}, which is gone: entries of that run were removed from the ledger's end"
        ],
    )
    result = invoke("ledger", "verify", "--db", db_url)
    assert (result.exit_code, result.output.splitlines()) == expected
    later = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2022-01-01")
    assert later.exit_code == 0, later.output
    after = invoke("ledger", "verify", "--db", db_url)
    assert (after.exit_code, after.output.splitlines()) == (
        6,
        [expected[1][0].replace("which is gone", "which is now another's")],
    )
