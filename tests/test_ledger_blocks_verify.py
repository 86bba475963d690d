"""Ledger format 5 stored and verified: the block rows, the reference writer and `ledger verify` (issue 22).

A ledger of one format-4 entry (items as rows) and two format-5 entries
(blocks of 3 and 70 items: one chunk, two chunks) is written by
:func:`chain.append` and :func:`chain.append_block`. Blocks and roots are
computed here by hand (``hmac``/``hashlib``, the byte layout of
docs/ledger.md), never by the code under test. Then the database's
protection is got round as a superuser would (PostgreSQL: triggers
disabled; SQLite, MariaDB: triggers dropped), the blocks are tampered with,
and verify must name each change with the reason written here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.errors import LedgerError
from retention.ledger import blocks
from retention.ledger import chain as ledger
from retention.ledger.items import BatchItems
from retention.store import tables as store

SECRET = b"blocks-verify-key"
RUN = "00000000-0000-4000-8000-000000000005"
NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
BLOCK_TABLE = "retention_ledger_blocks"
TRUNCATE = {"postgresql": "TRUNCATE {}", "mariadb": "TRUNCATE TABLE {}", "sqlite": "DELETE FROM {}"}


def _run_key() -> bytes:
    return hmac.new(SECRET, b"run\x1f" + RUN.encode(), hashlib.sha256).digest()


def _pseudonym(message: str) -> bytes:
    return hmac.new(_run_key(), message.encode(), hashlib.sha256).digest()


def _due(n: int) -> str:
    return f"2025-0{1 + n % 9}-1{n % 10}T2{n % 4}:00:00.{n:06d}Z"


def _block_by_hand(keys: range) -> bytes:
    """The block of records ``keys`` (subjects for even keys only), sorted by record pseudonym."""
    rows = [
        _pseudonym(f"record\x1fevents\x1f{k}")
        + (_pseudonym(f"subject\x1fs{k % 5}") if k % 2 == 0 else bytes(32))
        + _due(k).encode()
        for k in keys
    ]
    return b"".join(sorted(rows))


def _root_by_hand(block: bytes) -> str:
    """RFC 9162 root over 64-item chunks, for the one or two chunks these blocks have."""
    size = 64 * 91
    leaves = [hashlib.sha256(b"\x00" + block[i : i + size]).digest() for i in range(0, len(block), size)]
    assert len(leaves) in (1, 2)
    root = leaves[0] if len(leaves) == 1 else hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    return root.hex()


def _draft(moves: list[Any] | None = None) -> BatchItems:
    return BatchItems(RUN, "pack", "d" * 64, "events", "active->purged", "delete", "basis", SECRET, moves or [])


SMALL, LARGE = _block_by_hand(range(1, 4)), _block_by_hand(range(10, 80))


@pytest.fixture
def written(migrated: sa.Engine) -> list[int]:
    """Entry 1 of format 4 (2 item rows), entries 2 and 3 of format 5 (3 and 70 items); returns their seqs."""
    with migrated.begin() as conn:
        conn.execute(
            store.runs.insert().values(
                id=RUN, mode="run", pack_id="pack", pack_digest="d" * 64, as_of=NOW, started_at=NOW, status="running"
            )
        )
        moves = [(NOW - dt.timedelta(days=400), "k1", "s1", None, None), (NOW, "k2", None, None, None)]
        seqs = ledger.append(conn, [_draft(moves)], NOW, secret=SECRET)
        assert ledger.append_block(conn, _draft(), SMALL, NOW, secret=SECRET) == 3
        assert ledger.append_block(conn, _draft(), LARGE, NOW, secret=SECRET) == 70
    assert seqs == [1]
    assert ledger.verify(migrated, secret=SECRET).ok
    return [1, 2, 3]


def _reason(engine: sa.Engine) -> tuple[int | None, str]:
    verdict = ledger.verify(engine, secret=SECRET)
    assert not verdict.ok
    return verdict.first_bad_seq, verdict.reason


def _unprotect(engine: sa.Engine, *tables: str) -> None:
    with engine.begin() as conn:
        for table in tables or (BLOCK_TABLE,):
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                conn.execute(sa.text(f"DROP TRIGGER {table}_no_update"))
                conn.execute(sa.text(f"DROP TRIGGER {table}_no_delete"))


def _body(engine: sa.Engine, seq: int) -> bytes:
    t = store.ledger_blocks
    with engine.connect() as conn:
        return bytes(conn.execute(sa.select(t.c.body).where(t.c.entry_seq == seq)).scalar_one())


def _set_body(engine: sa.Engine, seq: int, body: bytes) -> None:
    t = store.ledger_blocks
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.entry_seq == seq).values(body=body))


# --------------------------------------------------------------------------
# What the reference writer stores
# --------------------------------------------------------------------------


def test_the_reference_writer_stores_the_block_and_chains_a_format_5_entry(
    migrated: sa.Engine, written: list[int]
) -> None:
    """Blocks byte for byte as built by hand; entries of format 5 whose root, counts and due are the block's."""
    entries, t = store.ledger, store.ledger_blocks
    with migrated.connect() as conn:
        rows = conn.execute(sa.select(entries).order_by(entries.c.seq)).mappings().all()
        stored = conn.execute(sa.select(t).order_by(t.c.entry_seq)).mappings().all()
        item_rows = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
    assert [(r["seq"], r["format"], r["items"], r["count"]) for r in rows] == [
        (1, 4, 2, 2),
        (2, 5, 3, 3),
        (3, 5, 70, 70),
    ]
    assert [(s["entry_seq"], s["items"], bytes(s["body"])) for s in stored] == [(2, 3, SMALL), (3, 70, LARGE)]
    assert item_rows == 2  # the format-4 entry's only
    assert [rows[1]["merkle_root"], rows[2]["merkle_root"]] == [_root_by_hand(SMALL), _root_by_hand(LARGE)]
    assert rows[1]["due_at"] == dt.datetime(2025, 4, 13, 23, 0, 0, 3, tzinfo=dt.UTC)  # the latest of keys 1-3
    assert rows[2]["due_at"] == dt.datetime(2025, 9, 17, 21, 0, 0, 17, tzinfo=dt.UTC)  # key 17's
    mac_key = hmac.new(SECRET, b"ledger-mac\x1f", hashlib.sha256).digest()  # docs/ledger.md, "Threat model"
    assert all(
        r["mac"] == hmac.new(mac_key, b"entry\x1f" + r["hash"].encode(), hashlib.sha256).hexdigest() for r in rows
    )
    verdict = ledger.verify(migrated, secret=SECRET)
    assert (verdict.ok, verdict.entries, verdict.authenticated) == (True, 3, 3)


def test_the_reference_writer_refuses_a_malformed_block_and_writes_nothing(migrated: sa.Engine) -> None:
    unsorted = LARGE[91:182] + LARGE[:91]
    refused = pytest.raises(blocks.BlockError, match="item 1 is not in ascending record pseudonym order")
    with refused, migrated.begin() as conn:
        ledger.append_block(conn, _draft(), unsorted, NOW, secret=SECRET)
    with migrated.begin() as conn:
        assert ledger.append_block(conn, _draft(), b"", NOW, secret=SECRET) == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger_blocks)).scalar_one() == 0


def test_a_body_the_database_returned_out_of_order_is_refused(migrated: sa.Engine) -> None:
    """The SQL writers' guard: a database sorting otherwise fails the batch instead of writing a bad entry."""
    unsorted = SMALL[91:182] + SMALL[:91] + SMALL[182:]
    refused = pytest.raises(LedgerError, match=r"^the database wrote a block of 3 items out of record pseudonym order")
    with refused, migrated.begin() as conn:
        ledger.append_blocks_written(conn, _draft(), NOW, lambda seq: unsorted, secret=SECRET)
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one() == 0


def test_the_database_refuses_update_delete_and_truncate(migrated: sa.Engine, written: list[int], dialect: str) -> None:
    """UPDATE and DELETE by triggers on all three; TRUNCATE by a trigger (PostgreSQL) or the guard's foreign key."""
    for statement in (
        f"UPDATE {BLOCK_TABLE} SET items = 1",
        f"DELETE FROM {BLOCK_TABLE}",
        TRUNCATE[dialect].format(BLOCK_TABLE),
    ):
        with pytest.raises(sa.exc.DBAPIError), migrated.begin() as conn:
            conn.execute(sa.text(statement))
    assert [_body(migrated, 2), _body(migrated, 3)] == [SMALL, LARGE]
    assert ledger.verify(migrated, secret=SECRET).ok


# --------------------------------------------------------------------------
# Tampering, each named
# --------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 33, 91 * 69 + 90], ids=["record", "subject", "last due"])
def test_an_edited_body_byte_is_named(migrated: sa.Engine, written: list[int], offset: int) -> None:
    _unprotect(migrated)
    body = bytearray(LARGE)
    body[offset] ^= 0x01
    _set_body(migrated, 3, bytes(body))
    assert _reason(migrated) == (3, "entry 3: its block does not match its Merkle root (the block was modified)")


def test_a_dropped_block_is_named(migrated: sa.Engine, written: list[int]) -> None:
    _unprotect(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger_blocks.delete().where(store.ledger_blocks.c.entry_seq == 2))
    assert _reason(migrated) == (
        2,
        "entry 2: its block is missing (the entry has 3 items; the block was removed)",
    )


def test_a_block_cut_by_one_item_is_named(migrated: sa.Engine, written: list[int]) -> None:
    _unprotect(migrated)
    _set_body(migrated, 3, LARGE[:-91])
    assert _reason(migrated) == (
        3,
        "entry 3: its block holds 69 items and says it has 70, the entry 70 (items removed or added)",
    )


def test_a_block_cut_mid_item_is_named(migrated: sa.Engine, written: list[int]) -> None:
    _unprotect(migrated)
    _set_body(migrated, 2, SMALL[:-1])
    assert _reason(migrated) == (
        2,
        "entry 2: its block is malformed (a block of 272 bytes is not a whole number of 91-byte items; "
        "the block was modified)",
    )


def test_a_block_whose_count_was_edited_is_named(migrated: sa.Engine, written: list[int]) -> None:
    _unprotect(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger_blocks.update().where(store.ledger_blocks.c.entry_seq == 2).values(items=4))
    assert _reason(migrated) == (
        2,
        "entry 2: its block holds 3 items and says it has 4, the entry 3 (items removed or added)",
    )


def test_a_faulty_writers_unsorted_block_is_named_though_its_root_matches(
    migrated: sa.Engine, written: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that skipped the order: the root covers its bytes, verify still names the block."""
    unsorted = SMALL[91:182] + SMALL[:91] + SMALL[182:]
    monkeypatch.setattr(blocks, "check", lambda block: None)  # the writer's own check, skipped
    with migrated.begin() as conn:
        assert ledger.append_block(conn, _draft(), unsorted, NOW, secret=SECRET) == 3
    monkeypatch.undo()
    assert _reason(migrated) == (
        4,
        "entry 4: its block is malformed (item 1 is not in ascending record pseudonym order), "
        "though its Merkle root matches",
    )


def test_a_stray_block_under_no_entry_is_named(migrated: sa.Engine, written: list[int]) -> None:
    with migrated.begin() as conn:
        conn.execute(store.ledger_blocks.insert().values(entry_seq=9, items=3, body=SMALL))
    assert _reason(migrated) == (None, "entry 9: a block under no entry (a block inserted, or its entry removed)")


def test_a_stray_block_under_a_format_4_entry_is_named(migrated: sa.Engine, written: list[int]) -> None:
    with migrated.begin() as conn:
        conn.execute(store.ledger_blocks.insert().values(entry_seq=1, items=3, body=SMALL))
    assert _reason(migrated) == (
        None,
        "entry 1: a block under an entry of format 4, which has none (a block inserted)",
    )


def test_an_item_row_under_a_format_5_entry_is_named(migrated: sa.Engine, written: list[int]) -> None:
    with migrated.begin() as conn:
        conn.execute(store.ledger_items.insert().values(entry_seq=2, idx=0, record_pseudonym="a" * 64, due_at=NOW))
    assert _reason(migrated) == (
        None,
        "entry 2 item 0: an item row under an entry of format 5, whose items are in its block (items inserted)",
    )


def test_the_cli_names_a_tampered_block(migrated: sa.Engine, db_url: str, written: list[int]) -> None:
    """One line, exit 6, as for every other verify failure."""
    _unprotect(migrated)
    _set_body(migrated, 2, SMALL[91:] + SMALL[:91])
    env = {"RETENTION_PSEUDONYM_KEY": SECRET.decode(), "RETENTION_PSEUDONYM_KEY_FILE": "", "RETENTION_DATABASE_URL": ""}
    result = CliRunner().invoke(main, ["ledger", "verify", "--db", db_url], env=env, prog_name="retention")
    assert (result.exit_code, result.output.splitlines()) == (
        6,
        ["ledger verification failed: entry 2: its block does not match its Merkle root (the block was modified)"],
    )


# --------------------------------------------------------------------------
# The set-based purge's blocks, end to end
# --------------------------------------------------------------------------


@pytest.mark.parametrize("subject", [True, False], ids=["subject", "no-subject"])
def test_a_set_based_run_writes_blocks_built_by_hand_and_a_tampered_one_is_named(
    migrated: sa.Engine, db_url: str, tmp_path: Path, subject: bool
) -> None:
    """12 events purged set-based in batches of 5: three format-5 entries whose blocks are the hand-built ones.

    Pseudonyms by ``hmac`` under the run key, due instants by the naive
    oracle (UTC pack: the day after P1Y from the event's day), subjects as
    32 zero bytes when the dataset names none. Then one body byte flipped.
    """
    import naive_oracle as oracle
    from scaffold import events_pack, make_events

    make_events(migrated, range(1, 13), subject=subject)
    pack = tmp_path / "blocks.yaml"
    pack.write_text(events_pack("blocks", batch_size=5, subject=subject), encoding="utf-8")
    env = {"RETENTION_PSEUDONYM_KEY": SECRET.decode(), "RETENTION_PSEUDONYM_KEY_FILE": "", "RETENTION_DATABASE_URL": ""}
    runner = CliRunner()
    ran = runner.invoke(main, ["run", "--rules", str(pack), "--db", db_url, "--as-of", "2025-06-01"], env=env)
    assert ran.exit_code == 0, ran.output
    entries, t = store.ledger, store.ledger_blocks
    with migrated.connect() as conn:
        run_id = conn.execute(sa.select(store.runs.c.id).where(store.runs.c.mode == "run")).scalar_one()
        written = conn.execute(
            sa.select(entries.c.seq, entries.c.format, entries.c["items"], t.c.body)
            .join(t, t.c.entry_seq == entries.c.seq)
            .order_by(entries.c.seq)
        ).all()
        rows = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
    run_key = hmac.new(SECRET, b"run\x1f" + run_id.encode(), hashlib.sha256).digest()

    def block(keys: range) -> bytes:
        items = []
        for k in keys:
            due = oracle.due_after(dt.date(2020, 3, 1) + dt.timedelta(days=k), "P1Y", "UTC")
            items.append(
                hmac.new(run_key, f"record\x1fevents\x1f{k}".encode(), hashlib.sha256).digest()
                + (hmac.new(run_key, f"subject\x1f{k % 5}".encode(), hashlib.sha256).digest() if subject else bytes(32))
                + due.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            )
        return b"".join(sorted(items))

    assert rows == 0
    assert [(r.format, r.items, bytes(r.body)) for r in written] == [
        (5, 5, block(range(1, 6))),
        (5, 5, block(range(6, 11))),
        (5, 2, block(range(11, 13))),
    ]
    assert ledger.verify(migrated, secret=SECRET).ok
    _unprotect(migrated)
    body = bytearray(written[1].body)
    body[64 + 91] ^= 0x20  # item 1's due text: a digit becomes another character
    _set_body(migrated, written[1].seq, bytes(body))
    assert _reason(migrated) == (
        written[1].seq,
        f"entry {written[1].seq}: its block does not match its Merkle root (the block was modified)",
    )
