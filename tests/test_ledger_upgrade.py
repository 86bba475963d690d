"""A database written before ledger v2, upgraded, then run again: one chain across both formats.

Before migration 0006 the engine wrote one entry per record: SHA-256 over
the RFC 8785 document of its 17 columns (the previous hash included), the
record and subject named by HMAC-SHA256 under the pseudonym key itself.
This test builds such a database (migrations up to 0004_hardening, the
revision before 0006) and writes its entries the way that code did, with
hashlib, hmac and json here rather than the engine's own functions; then
upgrades to head, runs the engine again, and expects verify, lookup and
prove to read both formats.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner, Result
from scaffold import events_pack

from retention.cli import main
from retention.store import migrate

SECRET = "upgrade-test-key"
ENV = {
    "RETENTION_PSEUDONYM_KEY": SECRET,
    "RETENTION_PSEUDONYM_KEY_FILE": "",
    "RETENTION_DATABASE_URL": "",
    "RETENTION_SIGNING_KEY_FILE": "",
}
BEFORE_V2 = "0004_hardening"  # down_revision of 0006

PACK = events_pack("upgrade", batch_size=3, subject=True)

V1_COLUMNS = (
    "seq", "recorded_at", "run_id", "pack_id", "pack_digest", "dataset", "transition", "action", "basis", "due_at",
    "record_pseudonym", "subject_pseudonym", "count", "clock_min", "clock_max", "detail", "prev_hash",
)  # fmt: skip


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, prog_name="retention")


def hmac_hex(message: str) -> str:
    return hmac.new(SECRET.encode(), message.encode("utf-8"), hashlib.sha256).hexdigest()


def v1_hash(entry: dict[str, object]) -> str:
    """RFC 8785 of a flat ASCII document is sorted compact JSON."""
    document = json.dumps({k: entry[k] for k in V1_COLUMNS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode("ascii")).hexdigest()


def write_v1_run(engine: sa.Engine, keys: list[int]) -> str:
    """An old run that purged ``keys`` of events: one v1 entry per record, and its run record."""
    run_id = str(uuid.uuid4())
    recorded = dt.datetime(2024, 6, 1, 2, 0, tzinfo=dt.UTC)
    prev = "0" * 64
    rows = []
    for seq, key in enumerate(keys, start=1):
        entry: dict[str, object] = {
            "seq": seq,
            "recorded_at": "2024-06-01T02:00:00.000000Z",
            "run_id": run_id,
            "pack_id": "upgrade",
            "pack_digest": "d" * 64,
            "dataset": "events",
            "transition": "active->purged",
            "action": "delete",
            "basis": "one year",
            "due_at": f"2021-03-{key + 1:02d}T00:00:00.000000Z",
            "record_pseudonym": hmac_hex(f"record\x1fevents\x1f{key}"),
            "subject_pseudonym": hmac_hex(f"subject\x1f{key % 5}"),
            "count": 1,
            "clock_min": None,
            "clock_max": None,
            "detail": None,
            "prev_hash": prev,
        }
        entry["hash"] = prev = v1_hash(entry)
        rows.append(
            {
                **entry,
                "recorded_at": recorded.replace(tzinfo=None),
                "due_at": dt.datetime(2021, 3, key + 1),
            }
        )
    ledger = sa.table("retention_ledger", *(sa.column(c) for c in (*V1_COLUMNS, "hash")))
    runs = sa.table(
        "retention_runs",
        *(sa.column(c) for c in ("id", "mode", "pack_id", "pack_digest", "as_of", "started_at", "finished_at")),
        *(sa.column(c) for c in ("status", "counts", "ledger_seq")),
    )
    with engine.begin() as conn:
        conn.execute(ledger.insert(), rows)
        conn.execute(
            runs.insert().values(
                id=run_id,
                mode="run",
                pack_id="upgrade",
                pack_digest="d" * 64,
                as_of=recorded.replace(tzinfo=None),
                started_at=recorded.replace(tzinfo=None),
                finished_at=recorded.replace(tzinfo=None),
                status="succeeded",
                counts=json.dumps({"events": {"active->purged": len(keys)}}),
                ledger_seq=len(keys),
            )
        )
        conn.execute(sa.text("DELETE FROM events WHERE id IN (1, 2, 3, 4)"))
    return run_id


def test_v1_entries_then_upgrade_then_v2_verify_and_lookup(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """4 v1 entries (records 1-4), the upgrade, a v2 run (records 5-10): one chain of both, found by lookup."""
    migrate.upgrade(engine, BEFORE_V2)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("retention_ledger")}
    assert "format" not in columns and "merkle_root" not in columns  # really a pre-v2 database
    md = sa.MetaData()
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("collected", sa.DateTime),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            md.tables["events"].insert(),
            [{"id": i, "user_id": i % 5, "collected": dt.datetime(2020, 3, i)} for i in range(1, 13)],
        )
    v1_run = write_v1_run(engine, [1, 2, 3, 4])

    migrate.upgrade(engine)
    assert invoke("ledger", "verify", "--db", db_url).output.splitlines() == [
        "ledger verified: 4 entries",
        "entries: 0 authenticated, 4 unauthenticated (format v1)",
    ]
    pack = tmp_path / "upgrade.yaml"
    pack.write_text(PACK, encoding="utf-8")
    ran = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2021-03-11")
    assert ran.exit_code == 0, ran.output

    with engine.connect() as conn:
        chain = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM retention_ledger ORDER BY seq"))]
    assert [r["format"] for r in chain[:4]] == [None] * 4
    assert all(r["format"] in (4, 5) and r["mac"] for r in chain[4:])  # authenticated from the first new entry
    assert [r["format"] for r in chain[4:] if r["items"]] == [5, 5]  # the set-based purge's blocks (format 5)
    assert chain[4]["prev_hash"] == chain[3]["hash"]  # the v2 chain continues from the v1 head
    # records 5..10 are due by 2021-03-11 (clock 2020-03-i, due 2021-03-(i+1)): two batches of 3
    assert sorted(r["items"] for r in chain[4:] if r["items"]) == [3, 3]
    verified = invoke("ledger", "verify", "--db", db_url)
    assert (verified.exit_code, verified.output.splitlines()) == (
        0,
        [
            f"ledger verified: {len(chain)} entries",
            f"entries: {len(chain) - 4} authenticated, 4 unauthenticated (format v1)",
        ],
    )

    old = invoke("ledger", "lookup", "--db", db_url, "--dataset", "events", "--key", "3", "--format", "json")
    assert old.exit_code == 0, old.output
    [v1_row] = json.loads(old.output)
    assert (v1_row["seq"], v1_row["item"], v1_row["run_id"]) == (3, None, v1_run)
    assert v1_row["record_pseudonym"] == hmac_hex("record\x1fevents\x1f3")
    new = invoke("ledger", "lookup", "--db", db_url, "--dataset", "events", "--key", "7", "--format", "json")
    assert new.exit_code == 0, new.output
    [v2_row] = json.loads(new.output)
    assert v2_row["seq"] > 4 and v2_row["item"] is not None and v2_row["transition"] == "active->purged"
    # subject 2 owns records 2 and 7 (user_id = id % 5): one v1 entry and one v2 item
    person = invoke("ledger", "lookup", "--db", db_url, "--subject", "2", "--format", "json")
    assert person.exit_code == 0, person.output
    assert [(r["seq"], r["item"]) for r in json.loads(person.output)] == [(2, None), (v2_row["seq"], v2_row["item"])]

    # A proof of the v1 record runs through the v2 entries to a checkpoint, and verifies offline.
    private, public = tmp_path / "s.pem", tmp_path / "s.pub"
    assert invoke("ledger", "keygen", "--key", str(private), "--public", str(public)).exit_code == 0
    checkpoint = tmp_path / "cp.json"
    assert (
        invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint)).exit_code
        == 0
    )
    proof = tmp_path / "proof.json"
    proved = invoke(
        "ledger", "prove", "--db", db_url, "--subject", "2", "--checkpoint", str(checkpoint), "--output", str(proof)
    )
    assert proved.exit_code == 0, proved.output
    checked = invoke("ledger", "verify-proof", str(proof), "--public-key", str(public))
    assert checked.exit_code == 0, checked.output
    record_2 = hmac_hex("record\x1fevents\x1f2")
    assert checked.output.splitlines()[1].startswith(f"  entry 2: record {record_2} of events")


def test_verify_proof_with_a_database_refuses_another_key_for_a_proof_of_v1_entries(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """A proof of v1 entries only (no MAC), checked with --db under another key: refused (exit 2), never "holds".

    The proof check lets entries from before the ledger's first MAC
    through without one, so the live-table check ran under whatever key was
    configured: under another key the record put back into the table was
    not found, and the proof's claim "held" (review keycheck3, SHOULD 3).
    """
    migrate.upgrade(engine, BEFORE_V2)
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("collected", sa.DateTime),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            events.insert(), [{"id": i, "user_id": i % 5, "collected": dt.datetime(2020, 3, i)} for i in range(1, 13)]
        )
    write_v1_run(engine, [1, 2, 3, 4])
    migrate.upgrade(engine)
    pack = tmp_path / "upgrade.yaml"
    pack.write_text(PACK, encoding="utf-8")
    private, public = tmp_path / "s.pem", tmp_path / "s.pub"
    assert invoke("ledger", "keygen", "--key", str(private), "--public", str(public)).exit_code == 0
    checkpoint, proof = tmp_path / "cp.json", tmp_path / "proof.json"
    assert (
        invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint)).exit_code
        == 0
    )
    proved = invoke("ledger", "prove", "--db", db_url, "--dataset", "events", "--key", "3",
                    "--checkpoint", str(checkpoint), "--output", str(proof))  # fmt: skip
    assert proved.exit_code == 0, proved.output
    assert '"mac"' not in proof.read_text(encoding="utf-8")  # a checkpoint of the v1 head: no entry of it has a MAC
    assert invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2021-03-11").exit_code == 0  # MACs begin
    args = ["ledger", "verify-proof", str(proof), "--public-key", str(public), "--db", db_url, "--rules", str(pack)]
    holds = invoke(*args)
    assert (holds.exit_code, holds.output.splitlines()[-1]) == (0, "  1 claim(s) hold in the live tables"), holds.output
    with engine.begin() as conn:
        conn.execute(events.insert().values(id=3, user_id=3, collected=dt.datetime(2020, 3, 3)))  # the record is back
    assert invoke(*args).exit_code == 6  # the engine's key finds it
    wrong = CliRunner().invoke(main, args, env={**ENV, "RETENTION_PSEUDONYM_KEY": "another-key"}, prog_name="retention")
    assert wrong.exit_code == 2, wrong.output
    assert wrong.output.startswith("error: the pseudonym key from RETENTION_PSEUDONYM_KEY is not the one"), wrong.output
    assert "another-key" not in wrong.output and "claim(s) hold" not in wrong.output
