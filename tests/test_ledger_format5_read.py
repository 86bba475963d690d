"""Ledger format 5, the readers: lookup, prove / verify-proof, audit and the person page find block items.

The ledger is written by the reference writers (``chain.append`` for a
format-4 batch, ``chain.append_block`` for format-5 blocks) under two runs;
every expected pseudonym, block position and byte is computed here with
hmac and sorted here, never by the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from ledger_view import every_claim
from scaffold import events_pack, ledger_env
from test_ledger_proof import events_table

from retention.cli import main
from retention.ledger import block_lookup, blocks, chain
from retention.ledger import items as ledger_items
from retention.reporting import ledger_audit
from retention.store import tables as store

SECRET = "format5-read-key"
ENV = ledger_env(SECRET)
PACK = events_pack("blocks5", subject=True)
NOW = dt.datetime(2025, 6, 1, 3, tzinfo=dt.UTC)
RUNS = {"r0": range(1, 5), "r1": range(5, 21), "r1b": range(21, 25), "r2": range(25, 35)}
"""Batches: r0 a format-4 batch of run-0; r1 and r1b two blocks of run-1; r2 a block of run-2. 35-40 stay live."""
RUN_OF = {"r0": "run-0", "r1": "run-1", "r1b": "run-1", "r2": "run-2"}
LIVE = range(35, 41)


def key_of(i: int) -> str:
    return f"evt-{i:03d}"


def user_of(i: int) -> str:
    return f"user-{i % 3}"


def due_of(i: int) -> str:
    return f"2021-03-{1 + i % 28:02d}T00:00:00.{i:06d}Z"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, prog_name="retention")


def run_key(run_id: str) -> bytes:
    return hmac.new(SECRET.encode(), f"run\x1f{run_id}".encode(), hashlib.sha256).digest()


def record_of(run_id: str, i: int) -> bytes:
    return hmac.new(run_key(run_id), f"record\x1fevents\x1f{key_of(i)}".encode(), hashlib.sha256).digest()


def subject_of(run_id: str, i: int) -> bytes:
    return hmac.new(run_key(run_id), f"subject\x1f{user_of(i)}".encode(), hashlib.sha256).digest()


def block_of(run_id: str, keys: range) -> bytes:
    """The block as docs/ledger.md describes it: 91-byte items sorted by record pseudonym."""
    items = sorted(record_of(run_id, i) + subject_of(run_id, i) + due_of(i).encode() for i in keys)
    return b"".join(items)


def draft(run_id: str, moves: list[Any] | None = None) -> ledger_items.BatchItems:
    return ledger_items.BatchItems(
        run_id=run_id,
        pack_id="blocks5",
        pack_digest="d" * 64,
        dataset="events",
        transition="active->purged",
        action="delete",
        basis="one year",
        secret=SECRET.encode(),
        moves=moves or [],
    )


@pytest.fixture
def ledger5(migrated: sa.Engine, db_url: str, tmp_path: Path) -> dict[str, Any]:
    """A format-4 entry (run-0), two format-5 blocks of run-1 and one of run-2; events 35-40 live, 1-34 purged."""
    events = events_table(migrated)
    seqs: dict[str, int] = {}
    with migrated.begin() as conn:
        conn.execute(
            events.insert(),
            [{"id": key_of(i), "user_id": user_of(i), "collected": dt.datetime(2025, 3, 1)} for i in LIVE],
        )
        for run_id in sorted(set(RUN_OF.values())):
            conn.execute(
                store.runs.insert().values(
                    id=run_id,
                    mode="run",
                    status="succeeded",
                    pack_id="blocks5",
                    pack_digest="d" * 64,
                    as_of=NOW,
                    started_at=NOW,
                    finished_at=NOW,
                )
            )
        moves = [
            (
                dt.datetime.strptime(due_of(i), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC),
                key_of(i),
                user_of(i),
                None,
                None,
            )
            for i in RUNS["r0"]
        ]
        [seqs["r0"]] = chain.append(conn, [draft("run-0", moves)], NOW, secret=SECRET.encode())
    for batch in ("r1", "r1b", "r2"):
        with migrated.begin() as conn:
            run_id = RUN_OF[batch]
            assert chain.append_block(
                conn, draft(run_id), block_of(run_id, RUNS[batch]), NOW, secret=SECRET.encode()
            ) == len(RUNS[batch])
            seqs[batch] = int(conn.execute(sa.select(sa.func.max(store.ledger.c.seq))).scalar_one())
    pack = tmp_path / "blocks5.yaml"
    pack.write_text(PACK, encoding="utf-8")
    return {"db_url": db_url, "seqs": seqs, "events": events, "pack": pack, "tmp": tmp_path, "engine": migrated}


def where_is(batch: str, i: int) -> tuple[int, int]:
    """(entry, position) of record ``i`` of a block batch: its rank among the batch's sorted record pseudonyms."""
    run_id = RUN_OF[batch]
    ranked = sorted(record_of(run_id, j) for j in RUNS[batch])
    return ranked.index(record_of(run_id, i)), i


def batch_of(i: int) -> str:
    return next(b for b, keys in RUNS.items() if i in keys)


def lookup_rows(ledger5: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    result = invoke("ledger", "lookup", "--db", ledger5["db_url"], *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --------------------------------------------------------------------------
# lookup
# --------------------------------------------------------------------------


def test_lookup_by_key_finds_the_block_item(ledger5: dict[str, Any]) -> None:
    """A record of run-1's first block: its entry, its position (rank of its pseudonym), its due instant."""
    for i in (5, 20, 23, 30):
        batch = batch_of(i)
        idx, _ = where_is(batch, i)
        [row] = lookup_rows(ledger5, "--dataset", "events", "--key", key_of(i))
        assert (row["seq"], row["item"]) == (ledger5["seqs"][batch], idx)
        assert row["run_id"] == RUN_OF[batch] and row["transition"] == "active->purged"
        assert row["due_at"].startswith(due_of(i)[:19])
    # a format-4 item is found as before, and a key never purged is not found
    [old] = lookup_rows(ledger5, "--dataset", "events", "--key", key_of(2))
    assert (old["seq"], old["item"]) == (ledger5["seqs"]["r0"], 1)
    assert lookup_rows(ledger5, "--dataset", "events", "--key", key_of(36)) == []
    assert lookup_rows(ledger5, "--dataset", "other", "--key", key_of(5)) == []
    # The table a person reads, and `ledger show`, list the block entry as any other.
    table = invoke("ledger", "lookup", "--db", ledger5["db_url"], "--dataset", "events", "--key", key_of(5), "--utc")
    assert table.exit_code == 0, table.output
    assert "active->purged" in table.output and "run-1" in table.output
    shown = invoke("ledger", "show", "--db", ledger5["db_url"], "--run", "run-2", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert [(e["seq"], e["count"]) for e in json.loads(shown.output)] == [(ledger5["seqs"]["r2"], len(RUNS["r2"]))]


def test_lookup_by_subject_finds_every_item_of_every_run(ledger5: dict[str, Any]) -> None:
    """user-1: two format-4 items, five in one block, one in another block of the run, four in run-2's block."""
    rows = lookup_rows(ledger5, "--subject", "user-1")
    expected = sorted(
        (ledger5["seqs"]["r0"], i - 1)
        if batch_of(i) == "r0"
        else (ledger5["seqs"][batch_of(i)], where_is(batch_of(i), i)[0])
        for i in range(1, 35)
        if i % 3 == 1
    )
    assert [(r["seq"], r["item"]) for r in rows] == expected
    assert len(expected) == 2 + 5 + 1 + 4
    subjects = {r["subject_pseudonym"] for r in rows}
    assert subjects == {subject_of(run, 1).hex() for run in ("run-0", "run-1", "run-2")}


def test_email_lookup_finds_no_format5_item(ledger5: dict[str, Any]) -> None:
    """Format 5 has no e-mail pseudonym: a lookup by address finds nothing in the blocks (and says so by no rows)."""
    assert lookup_rows(ledger5, "--email", "user-1@example.org") == []


def test_a_match_off_an_item_field_or_of_another_run_is_not_an_item(ledger5: dict[str, Any]) -> None:
    """Bytes that straddle two fields, or a pseudonym of run-1 inside run-2's block, are found by the database
    search and passed over here."""
    engine = ledger5["engine"]
    r1 = record_of("run-1", 5)
    with engine.connect() as conn:
        body = block_lookup.body_of(conn, ledger5["seqs"]["r1"])
    assert body is not None
    straddling = body[16:48]  # the second half of item 0's record, the first half of its subject
    with engine.connect() as conn:
        held = list(block_lookup.blocks_holding(conn, {"run-1": [straddling]}))
        assert [seq for seq, _, _ in held] == [ledger5["seqs"]["r1"]]
        assert list(block_lookup.find(conn, [("run-1", [straddling.hex()])])) == []
        # run-1's pseudonym of record 5 searched for under run-2: not there, whatever run-1's blocks hold
        assert list(block_lookup.find(conn, [("run-2", [r1.hex()])])) == []
        [found] = block_lookup.find(conn, [("run-1", [r1.hex()])])
    assert (found["entry_seq"], found["idx"]) == (ledger5["seqs"]["r1"], where_is("r1", 5)[0])
    assert found["request_id"] is None and found["email_pseudonym"] is None


# --------------------------------------------------------------------------
# prove / verify-proof
# --------------------------------------------------------------------------


@pytest.fixture
def signed(ledger5: dict[str, Any]) -> dict[str, Any]:
    tmp = ledger5["tmp"]
    private, public = tmp / "signer.pem", tmp / "signer.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(private), "--public", str(public)).exit_code == 0
    checkpoint = tmp / "cp.json"
    made = invoke("ledger", "checkpoint", "--db", ledger5["db_url"], "--key", str(private), "--output", str(checkpoint))
    assert made.exit_code == 0, made.output
    return {**ledger5, "public": public, "checkpoint": checkpoint}


def prove(signed: dict[str, Any], name: str, *args: str) -> dict[str, Any]:
    out = signed["tmp"] / f"{name}.json"
    result = invoke(
        "ledger",
        "prove",
        "--db",
        signed["db_url"],
        *args,
        "--checkpoint",
        str(signed["checkpoint"]),
        "--output",
        str(out),
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text(encoding="utf-8"))


def verify(signed: dict[str, Any], document: dict[str, Any], *args: str) -> Result:
    path = signed["tmp"] / "checked.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return invoke("ledger", "verify-proof", str(path), "--public-key", str(signed["public"]), *args)


def test_a_block_item_proves_and_verifies_offline(signed: dict[str, Any]) -> None:
    """The record's fields, its chunk (the item's 64-item chunk) and the chunk's path; tied to the key."""
    document = prove(signed, "p5", "--dataset", "events", "--key", key_of(9))
    assert document["format"] == "retention-ledger-proof/2"
    [record] = document["records"]
    idx, _ = where_is("r1", 9)
    assert record["seq"] == signed["seqs"]["r1"]
    assert record["item"] == {
        "idx": idx,
        "record": record_of("run-1", 9).hex(),
        "subject": subject_of("run-1", 9).hex(),
        "due_at": due_of(9),
        "request": None,
        "review": None,
    }
    assert record["chunk"] == block_of("run-1", RUNS["r1"]).hex()  # 16 items: one chunk
    assert record["audit_path"] == []
    ok = verify(signed, document, "--dataset", "events", "--key", key_of(9))
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[1].startswith(
        f"  entry {record['seq']} item {idx}: record {record_of('run-1', 9).hex()} of events"
    )
    other = verify(signed, document, "--dataset", "events", "--key", key_of(10))
    assert other.exit_code == 6 and "is not that record (its pseudonym differs)" in other.output


def test_a_changed_byte_in_chunk_path_or_item_is_rejected_with_its_reason(signed: dict[str, Any]) -> None:
    document = prove(signed, "p5", "--dataset", "events", "--key", key_of(9))
    record = document["records"][0]
    where = f"proof rejected: record 1 (entry {record['seq']} item {record['item']['idx']}): "
    altered = "(the item, its chunk or a path node was altered)"

    def with_record(**change: Any) -> dict[str, Any]:
        return {**document, "records": [{**record, **change}]}

    chunk = record["chunk"]
    other_item = (record["item"]["idx"] + 1) % 16 * 2 * blocks.ITEM_SIZE  # a byte of another item of the chunk
    cases = {
        "another item's byte": (
            with_record(
                chunk=chunk[:other_item] + ("0" if chunk[other_item] != "0" else "1") + chunk[other_item + 1 :]
            ),
            f"{where}the chunk and its audit path do not lead to the entry's Merkle root {altered}",
        ),
        "the item's due instant": (
            with_record(item={**record["item"], "due_at": record["item"]["due_at"].replace("2021", "2022")}),
            f"{where}the item is not at its position in the chunk {altered}",
        ),
        "the item's position": (
            with_record(item={**record["item"], "idx": (record["item"]["idx"] + 1) % 16}),
            f"proof rejected: record 1 (entry {record['seq']} item {(record['item']['idx'] + 1) % 16}): "
            f"the item is not at its position in the chunk {altered}",
        ),
        "a chunk cut short": (
            with_record(chunk=chunk[: -2 * blocks.ITEM_SIZE]),
            f"{where}the chunk is not as long as the entry's item count says {altered}",
        ),
        "an extra path node": (
            with_record(audit_path=["00" * 32]),
            f"{where}the chunk and its audit path do not lead to the entry's Merkle root {altered}",
        ),
        "a request on a format-5 item": (
            with_record(item={**record["item"], "request": 7}),
            f"{where}the item is not an item of format 5 (its fields or their forms)",
        ),
        "an upper-case pseudonym": (
            with_record(item={**record["item"], "record": record["item"]["record"].upper()}),
            f"{where}the item is not an item of format 5 (its fields or their forms)",
        ),
        "no chunk": (
            {
                **document,
                "format": "retention-ledger-proof/1",
                "records": [{k: v for k, v in record.items() if k != "chunk"}],
            },
            f"{where}the record has no chunk (hex) of its format-5 entry",
        ),
        "a chunk in a /1 proof": (
            {**document, "format": "retention-ledger-proof/1"},
            "proof rejected: record 1: its fields are not those of a proved record",
        ),
    }
    for name, (changed, reason) in cases.items():
        result = verify(signed, changed)
        assert (result.exit_code, result.output.splitlines()) == (6, [reason]), name
    assert verify(signed, document).exit_code == 0


def test_a_format4_and_a_format5_proof_verify_against_one_checkpoint(signed: dict[str, Any]) -> None:
    """One subject proof holds format-4 and format-5 records; each kind alone verifies too, against one checkpoint."""
    old = prove(signed, "p4", "--dataset", "events", "--key", key_of(3))
    assert old["format"] == "retention-ledger-proof/1" and "chunk" not in old["records"][0]
    new = prove(signed, "p5", "--dataset", "events", "--key", key_of(30))
    both = prove(signed, "ps", "--subject", "user-1")
    assert old["checkpoint"] == new["checkpoint"] == both["checkpoint"]
    assert {r["seq"] for r in both["records"]} == {signed["seqs"][b] for b in ("r0", "r1", "r1b", "r2")}
    assert len(both["records"]) == 12
    for document in (old, new, both):
        result = verify(signed, document)
        assert result.exit_code == 0, result.output
    assert verify(signed, old, "--dataset", "events", "--key", key_of(3)).exit_code == 0
    assert verify(signed, new, "--dataset", "events", "--key", key_of(30)).exit_code == 0
    # A chunk carried by a format-4 record (in a /2 proof) is refused, not ignored.
    [first, *rest] = both["records"]
    assert first["seq"] == signed["seqs"]["r0"] and "chunk" not in first
    forged = {**both, "records": [{**first, "chunk": rest[-1]["chunk"]}, *rest]}
    refused = verify(signed, forged)
    assert (refused.exit_code, refused.output.splitlines()) == (
        6,
        [
            f"proof rejected: record 1 (entry {first['seq']} item {first['item']['idx']}): a chunk in a record of "
            "an entry of format 4 (only format 5 has chunks)"
        ],
    )


# --------------------------------------------------------------------------
# audit
# --------------------------------------------------------------------------


def audit(ledger5: dict[str, Any], *args: str) -> Result:
    return invoke("ledger", "audit", "--rules", str(ledger5["pack"]), "--db", ledger5["db_url"], *args)


def put_back(ledger5: dict[str, Any], i: int) -> None:
    with ledger5["engine"].begin() as conn:
        conn.execute(
            ledger5["events"].insert().values(id=key_of(i), user_id=user_of(i), collected=dt.datetime(2020, 3, 1))
        )


def test_held_claims_pass_and_a_row_put_back_is_named(ledger5: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    clean = audit(ledger5)
    assert clean.exit_code == 0, clean.output
    assert clean.output.startswith("ledger audit ok: 34 claims checked")
    for i in (12, 27, 2):
        put_back(ledger5, i)
    expected = []
    for i in sorted((12, 27, 2), key=lambda i: (ledger5["seqs"][batch_of(i)], i)):
        batch = batch_of(i)
        idx = i - 1 if batch == "r0" else where_is(batch, i)[0]
        pseudonym = record_of(RUN_OF[batch], i).hex()
        expected.append(
            f"claim does not hold: dataset events: entry {ledger5['seqs'][batch]} item {idx} (record {pseudonym[:16]}) "
            "says active->purged (delete), but the live table still holds that record"
        )
    result = audit(ledger5)
    assert result.exit_code == 6, result.output
    assert result.output.splitlines()[:3] == expected
    assert result.output.splitlines()[-1] == "ledger audit failed: 3 of 34 claims checked do not hold"
    # The same with one format-5 claim per pass: every run split over many prefix ranges.
    monkeypatch.setattr(ledger_audit, "BLOCK_PASS_CLAIMS", 3)
    assert ledger_audit._block_passes({"run-1": 20, "run-2": 10}, 3)[0][0] == ("run-1", 0, (1 << 64) // 7)
    many = audit(ledger5)
    assert (many.exit_code, many.output) == (result.exit_code, result.output)


def test_the_sample_counts_block_claims_and_reads_them_by_position(ledger5: dict[str, Any]) -> None:
    put_back(ledger5, 27)
    result = audit(ledger5, "--sample", "34")
    assert result.exit_code == 6, result.output
    lines = result.output.splitlines()
    idx = where_is("r2", 27)[0]
    assert lines[0].startswith(f"claim does not hold: dataset events: entry {ledger5['seqs']['r2']} item {idx} ")
    assert lines[-1].startswith("ledger audit failed: 1 of 34 claims checked")
    small = audit(ledger5, "--sample", "5", "--dataset", "events")
    assert small.output.splitlines()[-1].startswith("ledger audit ") and "(a sample of 5 of 34)" in small.output
    with ledger5["engine"].connect() as conn:
        every = sorted((c.seq, c.idx, c.pseudonym) for c in every_claim(conn))
    expected = sorted(
        (
            ledger5["seqs"][batch_of(i)],
            i - 1 if batch_of(i) == "r0" else where_is(batch_of(i), i)[0],
            record_of(RUN_OF[batch_of(i)], i).hex(),
        )
        for i in range(1, 35)
    )
    assert every == expected


def test_verify_proof_with_the_database_checks_block_claims(signed: dict[str, Any]) -> None:
    """``verify-proof --db``: a format-5 claim holds while the row is gone, and is named once it is put back."""
    document = prove(signed, "p5", "--dataset", "events", "--key", key_of(9))
    db = ("--db", signed["db_url"], "--rules", str(signed["pack"]))
    held = verify(signed, document, *db)
    assert held.exit_code == 0, held.output
    put_back(signed, 9)
    broken = verify(signed, document, *db)
    assert broken.exit_code == 6, broken.output
    idx = where_is("r1", 9)[0]
    assert (
        f"entry {signed['seqs']['r1']} item {idx} (record {record_of('run-1', 9).hex()[:16]}) says active->purged "
        "(delete), but the live table still holds that record" in broken.output
    )


def test_the_person_page_lists_block_items(ledger5: dict[str, Any]) -> None:
    """The console's person view (``commands.person``): user-1's twelve items, format 4 and 5, under events."""
    from retention.commands import person as people
    from retention.policy.loader import load_file

    loaded = load_file(ledger5["pack"])
    with ledger5["engine"].connect() as conn:
        found = people.person(conn, loaded, NOW, SECRET.encode(), subject_key="user-1")
    [events] = [d for d in found.datasets if d.name == "events"]
    shown = [(e["seq"], e["item"]) for e in events.entries]
    assert shown == [(e["seq"], e["item"]) for e in found.entries]
    assert len(shown) == 12
    assert {e["format"] for e in found.entries} == {4, 5}
    in_r2 = sorted(where_is("r2", i)[0] for i in RUNS["r2"] if i % 3 == 1)
    assert [i for s, i in shown if s == ledger5["seqs"]["r2"]] == in_r2


def test_a_claim_sharing_only_a_prefix_with_a_live_row_is_not_named(ledger5: dict[str, Any]) -> None:
    """The complete audit matches 8-byte prefixes first: a claim whose pseudonym starts like a live row's
    (and differs after) must be told apart by the exact comparison on the block's bytes."""
    live = record_of("run-1", 35)
    twin = live[:8] + bytes(b ^ 0xFF for b in live[8:])
    item = twin + subject_of("run-1", 35) + due_of(35).encode()
    with ledger5["engine"].begin() as conn:
        assert chain.append_block(conn, draft("run-1"), item, NOW, secret=SECRET.encode()) == 1
    result = audit(ledger5)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ledger audit ok: 35 claims checked")


def test_a_pass_holds_only_the_claims_of_its_prefix_range(ledger5: dict[str, Any]) -> None:
    """The complete audit's memory bound: a pass loads the claims whose 8-byte prefix is in its ranges, no more."""
    half = 1 << 63
    low_half = [i for i in range(5, 25) if int.from_bytes(record_of("run-1", i)[:8], "big") < half]
    assert 0 < len(low_half) < 20
    with ledger5["engine"].connect() as conn:
        first = ledger_audit._load_pass(conn, "events", "blocks5", [("run-1", 0, half)], 10)
        second = ledger_audit._load_pass(
            conn, "events", "blocks5", [("run-1", half, 1 << 64), ("run-2", 0, 1 << 64)], 20
        )
    assert first.used == len(low_half)
    assert second.used == 20 - len(low_half) + 10
    seq, idx = ledger5["seqs"][batch_of(low_half[0])], where_is(batch_of(low_half[0]), low_half[0])[0]
    assert first.get(int.from_bytes(record_of("run-1", low_half[0])[:8], "big")) == [seq << 24 | idx]


def test_an_email_lookup_reads_no_block(ledger5: dict[str, Any]) -> None:
    """No block holds an e-mail pseudonym: a lookup by address does not scan them (the cost of a subject lookup)."""
    statements: list[str] = []
    engine = ledger5["engine"]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.connect() as conn:
            assert ledger_items.lookup(conn, SECRET.encode(), email="user-1@example.org") == []
            by_email = [s for s in statements if "ledger_blocks" in s]
            ledger_items.lookup(conn, SECRET.encode(), subject_key="user-1")
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert by_email == []
    assert any("ledger_blocks" in s for s in statements)


def test_the_console_lookup_and_export_show_block_entries(ledger5: dict[str, Any]) -> None:
    """The console's lookup (``query.lookup``) lists block items as items; export lists format-5 entries as others."""
    from retention.ledger import query

    with ledger5["engine"].connect() as conn:
        found = query.lookup(conn, SECRET.encode(), dataset="events", record_key=key_of(30))
    [row] = found
    assert (row["seq"], row["item"], row["format"]) == (ledger5["seqs"]["r2"], where_is("r2", 30)[0], 5)
    assert row["detail_fields"] == {}
    exported = invoke("ledger", "export", "--db", ledger5["db_url"], "--format", "jsonl")
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.output.splitlines()]
    # export lists every entry's v1 columns (not format, root or items, for any format): a block entry's count
    assert [(e["seq"], e["run_id"], e["count"]) for e in lines] == [
        (ledger5["seqs"][b], RUN_OF[b], len(RUNS[b])) for b in ("r0", "r1", "r1b", "r2")
    ]


def test_a_real_set_based_run_is_found_proved_and_audited(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Old core (per-record, format 4) then new core (set-based, format 5) on one table: lookup, one checkpoint,
    both proofs verify and name their record, and the audit names a row put back."""
    events = events_table(migrated)
    with migrated.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"id": key_of(i), "user_id": user_of(i), "collected": dt.datetime(2020 if i <= 10 else 2023, 3, 1)}
                for i in range(1, 41)
            ]
            + [{"id": key_of(99), "user_id": user_of(99), "collected": dt.datetime(2025, 3, 1)}],
        )
    pack = tmp_path / "blocks5.yaml"
    pack.write_text(PACK, encoding="utf-8")
    old = CliRunner().invoke(
        main,
        ["run", "--rules", str(pack), "--db", db_url, "--as-of", "2022-06-01"],
        env={**ENV, "RETENTION_SET_BASED": "0"},
    )
    assert old.exit_code == 0, old.output
    new = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2025-06-01")
    assert new.exit_code == 0, new.output
    with migrated.connect() as conn:
        made = conn.execute(
            sa.select(store.ledger.c.seq, store.ledger.c.run_id, store.ledger.c.format, store.ledger.c["items"])
            .where(store.ledger.c["items"] > 0)
            .order_by(store.ledger.c.seq)
        ).all()
    assert [m.format for m in made] == [4, 5] and [m.items for m in made] == [10, 30]
    (seq4, _, _, _), (seq5, run5, _, _) = made
    ranked = sorted(
        hmac.new(run_key(run5), f"record\x1fevents\x1f{key_of(i)}".encode(), hashlib.sha256).digest()
        for i in range(11, 41)
    )
    pseudonym = hmac.new(run_key(run5), f"record\x1fevents\x1f{key_of(25)}".encode(), hashlib.sha256).digest()
    world = {"db_url": db_url}
    [row] = lookup_rows(world, "--dataset", "events", "--key", key_of(25))
    assert (row["seq"], row["item"], row["record_pseudonym"]) == (seq5, ranked.index(pseudonym), pseudonym.hex())
    person = lookup_rows(world, "--subject", user_of(1))
    assert [r["seq"] for r in person].count(seq4) == len([i for i in range(1, 11) if i % 3 == 1])
    assert [r["seq"] for r in person].count(seq5) == len([i for i in range(11, 41) if i % 3 == 1])
    signed_world = {"db_url": db_url, "tmp": tmp_path, "seqs": {}}
    private, public = tmp_path / "signer.pem", tmp_path / "signer.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(private), "--public", str(public)).exit_code == 0
    checkpoint = tmp_path / "cp.json"
    assert (
        invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint)).exit_code
        == 0
    )
    signed_world.update(public=public, checkpoint=checkpoint)
    for i, seq in ((5, seq4), (25, seq5)):
        document = prove(signed_world, f"real-{i}", "--dataset", "events", "--key", key_of(i))
        assert [r["seq"] for r in document["records"]] == [seq]
        checked = verify(
            signed_world, document, "--dataset", "events", "--key", key_of(i), "--db", db_url, "--rules", str(pack)
        )
        assert checked.exit_code == 0, checked.output
    with migrated.begin() as conn:
        conn.execute(events.insert().values(id=key_of(25), user_id=user_of(25), collected=dt.datetime(2023, 3, 1)))
    audited = invoke("ledger", "audit", "--rules", str(pack), "--db", db_url)
    assert audited.exit_code == 6, audited.output
    assert audited.output.splitlines()[0] == (
        f"claim does not hold: dataset events: entry {seq5} item {ranked.index(pseudonym)} "
        f"(record {pseudonym.hex()[:16]}) says active->purged (delete), but the live table still holds that record"
    )


def test_many_runs_and_needles_are_split_over_statements_alike(
    ledger5: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run per statement, or several needles of one run (one statement per round): the same items."""
    engine = ledger5["engine"]
    with engine.connect() as conn:
        together = ledger_items.lookup(conn, SECRET.encode(), subject_key="user-1")
        monkeypatch.setattr(block_lookup, "RUNS_PER_STATEMENT", 1)
        apart = ledger_items.lookup(conn, SECRET.encode(), subject_key="user-1")
        two = list(block_lookup.find(conn, [("run-1", [record_of("run-1", 9).hex(), record_of("run-1", 22).hex()])]))
    assert [(r["seq"], r["item"]) for r in apart] == [(r["seq"], r["item"]) for r in together]
    assert len(together) == 12
    assert [(r["entry_seq"], r["idx"]) for r in two] == [
        (ledger5["seqs"]["r1"], where_is("r1", 9)[0]),
        (ledger5["seqs"]["r1b"], where_is("r1b", 22)[0]),
    ]
