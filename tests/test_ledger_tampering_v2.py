"""Ledger v2 tampering: items and batch entries modified, deleted, inserted or reordered are named by verify.

Each test writes a v2 ledger through the CLI (12 records purged in batches
of 4: three entries of four items), gets round the database's protection as
a superuser would (PostgreSQL: triggers disabled; SQLite, MariaDB: triggers
dropped), tampers, and expects `ledger verify` to exit 6 with a reason
written here by hand. The database itself refuses UPDATE, DELETE and
TRUNCATE on the items and lookup rows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from scaffold import events_pack, make_events

from retention.cli import main
from retention.ledger import items as ledger_items
from retention.store import tables as store

ENV = {"RETENTION_PSEUDONYM_KEY": "tamper-v2-key", "RETENTION_PSEUDONYM_KEY_FILE": "", "RETENTION_DATABASE_URL": ""}

PACK = events_pack("tamper2", batch_size=4, subject=True)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, prog_name="retention")


@pytest.fixture(params=[3, 4], ids=["format3", "format4"])
def form(request: pytest.FixtureRequest) -> int:
    """The format the ledger is written in: 3 (JSON leaves, lookup rows) as before, or 4 (the engine's now)."""
    return int(request.param)


@pytest.fixture
def v2(migrated: sa.Engine, db_url: str, tmp_path: Path, form: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """12 records purged in one run (in format ``form``); returns the seqs of the three entries with items."""
    make_events(migrated, range(1, 13))
    pack = tmp_path / "tamper2.yaml"
    pack.write_text(PACK, encoding="utf-8")
    with monkeypatch.context() as writing:
        writing.setattr(ledger_items, "FORMAT", form)
        # Item rows are written per record: the set-based purge writes format-5 blocks (test_ledger_blocks_verify.py).
        writing.setenv("RETENTION_SET_BASED", "0")
        result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2025-06-01")
    assert result.exit_code == 0, result.output
    with migrated.connect() as conn:
        batches = list(
            conn.execute(
                sa.select(store.ledger.c.seq, store.ledger.c["items"], store.ledger.c.format)
                .where(store.ledger.c["items"] > 0)
                .order_by(store.ledger.c.seq)
            )
        )
        lookup_rows = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_lookup)).scalar_one()
    assert [(b.items, b.format) for b in batches] == [(4, form)] * 3
    assert lookup_rows == (24 if form == 3 else 0)  # format 3: a record and a subject pseudonym per item
    assert invoke("ledger", "verify", "--db", db_url).exit_code == 0
    return [b.seq for b in batches]


PROTECTED = ("retention_ledger", "retention_ledger_items", "retention_ledger_lookup")


def unprotect(engine: sa.Engine, *tables: str) -> None:
    """What a superuser does first: PostgreSQL triggers disabled, SQLite and MariaDB triggers dropped."""
    with engine.begin() as conn:
        for table in tables or PROTECTED:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                conn.execute(sa.text(f"DROP TRIGGER {table}_no_update"))
                conn.execute(sa.text(f"DROP TRIGGER {table}_no_delete"))


def verify_says(db_url: str) -> tuple[int, list[str]]:
    result = invoke("ledger", "verify", "--db", db_url)
    return result.exit_code, result.output.splitlines()


def failed(reason: str) -> tuple[int, list[str]]:
    return 6, [f"ledger verification failed: {reason}"]


def items_of(engine: sa.Engine, seq: int) -> list[dict[str, Any]]:
    t = store.ledger_items
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.entry_seq == seq).order_by(t.c.idx))]


# --------------------------------------------------------------------------
# The database refuses
# --------------------------------------------------------------------------

TRUNCATE = {"postgresql": "TRUNCATE {}", "mariadb": "TRUNCATE TABLE {}", "sqlite": "DELETE FROM {}"}


@pytest.mark.parametrize(
    ("table", "form"),
    [("retention_ledger_items", 3), ("retention_ledger_items", 4), ("retention_ledger_lookup", 3)],
    indirect=["form"],
)
def test_the_database_refuses_update_delete_and_truncate(
    migrated: sa.Engine, db_url: str, v2: list[int], dialect: str, table: str
) -> None:
    """UPDATE and DELETE by triggers on all three; TRUNCATE by a trigger (PostgreSQL) or a guard's foreign key."""
    column = "record_pseudonym" if table.endswith("items") else "pseudonym"
    for statement in (f"UPDATE {table} SET {column} = 'x'", f"DELETE FROM {table}", TRUNCATE[dialect].format(table)):
        with pytest.raises(sa.exc.DBAPIError), migrated.begin() as conn:
            conn.execute(sa.text(statement))
    with migrated.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == (12 if "items" in table else 24)
    assert verify_says(db_url)[0] == 0


# --------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------


def test_a_modified_item_pseudonym_is_named(migrated: sa.Engine, db_url: str, v2: list[int], form: int) -> None:
    """Item 2 of the second batch names another record: the entry and (format 3, by its lookup rows) the item."""
    unprotect(migrated)
    seq = v2[1]
    t = store.ledger_items
    with migrated.begin() as conn:
        conn.execute(t.update().where(t.c.entry_seq == seq, t.c.idx == 2).values(record_pseudonym="f" * 64))
    assert verify_says(db_url) == failed(
        f"entry {seq} item 2: its pseudonyms are not those the lookup rows hold for it, and the entry's 4 items "
        "do not match its Merkle root (an item was modified or reordered)"
        if form == 3
        else f"entry {seq}: its 4 items do not match its Merkle root (an item was modified or reordered)"
    )


def test_a_modified_item_due_date_names_the_entry(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """A due date is not indexed: only the root tells, so the entry is named (the item cannot be)."""
    unprotect(migrated)
    seq = v2[0]
    t = store.ledger_items
    with migrated.begin() as conn:
        conn.execute(
            t.update().where(t.c.entry_seq == seq, t.c.idx == 1).values(due_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        )
    assert verify_says(db_url) == failed(
        f"entry {seq}: its 4 items do not match its Merkle root (an item was modified or reordered)"
    )


def test_reordered_items_are_named(migrated: sa.Engine, db_url: str, v2: list[int], form: int) -> None:
    """Items 0 and 1 of the last batch swap places: item 0 is named (format 3), the entry (format 4)."""
    unprotect(migrated)
    seq = v2[2]
    first, second = items_of(migrated, seq)[:2]
    t = store.ledger_items
    with migrated.begin() as conn:
        conn.execute(t.delete().where(t.c.entry_seq == seq, t.c.idx.in_([0, 1])))
        conn.execute(t.insert(), [{**second, "idx": 0}, {**first, "idx": 1}])
    assert verify_says(db_url) == failed(
        f"entry {seq} item 0: its pseudonyms are not those the lookup rows hold for it, and the entry's 4 items "
        "do not match its Merkle root (an item was modified or reordered)"
        if form == 3
        else f"entry {seq}: its 4 items do not match its Merkle root (an item was modified or reordered)"
    )


def test_a_deleted_item_is_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """Item 1 removed: a gap at 1; the last item removed: one missing at 3."""
    unprotect(migrated)
    t = store.ledger_items
    with migrated.begin() as conn:
        conn.execute(t.delete().where(t.c.entry_seq == v2[1], t.c.idx == 1))
    assert verify_says(db_url) == failed(
        f"entry {v2[1]} item 1: an item is missing or out of place (items deleted or inserted)"
    )
    with migrated.begin() as conn:
        conn.execute(t.delete().where(t.c.entry_seq == v2[0], t.c.idx == 3))
    assert verify_says(db_url) == failed(f"entry {v2[0]} item 3: 1 item(s) missing (the entry has 4)")


def test_an_inserted_item_is_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """A fifth item after the four of a batch is named; so is an item under an entry without items."""
    unprotect(migrated)
    seq = v2[1]
    t = store.ledger_items
    extra = {**items_of(migrated, seq)[0], "idx": 4}
    with migrated.begin() as conn:
        conn.execute(t.insert().values(extra))
    assert verify_says(db_url) == failed(f"entry {seq} item 4: 1 item(s) more than the entry has (4)")
    with migrated.begin() as conn:
        conn.execute(t.delete().where(t.c.entry_seq == seq, t.c.idx == 4))
        conn.execute(t.insert().values({**extra, "entry_seq": 9999, "idx": 0}))
    assert verify_says(db_url) == failed(
        "entry 9999 item 0: an item under no entry of format 2 (items inserted, or their entry removed)"
    )


def test_an_item_inserted_at_the_start_is_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """Every item of a batch shifted one place up to slip a forged one in at 0: the entry's count exposes it."""
    unprotect(migrated)
    seq = v2[0]
    t = store.ledger_items
    old = items_of(migrated, seq)
    with migrated.begin() as conn:
        conn.execute(t.delete().where(t.c.entry_seq == seq))
        conn.execute(
            t.insert(), [{**old[0], "idx": 0, "record_pseudonym": "e" * 64}] + [{**r, "idx": r["idx"] + 1} for r in old]
        )
    assert verify_says(db_url) == failed(f"entry {seq} item 4: 1 item(s) more than the entry has (4)")


def test_truncated_items_are_detected(migrated: sa.Engine, db_url: str, v2: list[int], dialect: str) -> None:
    """The items table emptied round the protection (MariaDB: TRUNCATE with foreign_key_checks off)."""
    with migrated.begin() as conn:
        if dialect == "mariadb":
            conn.execute(sa.text("SET foreign_key_checks = 0"))
            conn.execute(sa.text("TRUNCATE TABLE retention_ledger_items"))
            conn.execute(sa.text("SET foreign_key_checks = 1"))
        elif dialect == "postgresql":
            conn.execute(sa.text("ALTER TABLE retention_ledger_items DISABLE TRIGGER USER"))
            conn.execute(sa.text("TRUNCATE retention_ledger_items CASCADE"))
        else:
            conn.execute(sa.text("DROP TRIGGER retention_ledger_items_no_delete"))
            conn.execute(sa.text("DELETE FROM retention_ledger_items"))
    assert verify_says(db_url) == failed(f"entry {v2[0]} item 0: 4 item(s) missing (the entry has 4)")


@pytest.mark.parametrize("form", [3], indirect=True)
def test_removed_lookup_rows_are_detected_and_lookups_survive_an_empty_table(
    migrated: sa.Engine, db_url: str, v2: list[int], dialect: str
) -> None:
    """Lookup rows of one person removed: verify says so. All of them removed: lookups read the items directly."""
    unprotect(migrated, "retention_ledger_lookup")
    lookup = store.ledger_lookup
    with migrated.begin() as conn:
        conn.execute(lookup.delete().where(lookup.c.entry_seq == v2[0], lookup.c.idx == 0))
    assert verify_says(db_url) == failed(
        f"the lookup rows do not match the items up to entry {v2[2]} (22 rows for 24 pseudonyms): lookup rows "
        "were removed or added, and `ledger lookup` could miss entries"
    )
    with migrated.begin() as conn:
        conn.execute(lookup.delete())
    assert verify_says(db_url)[0] == 0
    found = invoke("ledger", "lookup", "--db", db_url, "--subject", "1", "--format", "csv")
    assert found.exit_code == 0, found.output
    # records 1, 6 and 11 belong to subject 1
    assert len(found.output.splitlines()) == 1 + 3


@pytest.mark.parametrize("form", [4], indirect=True)
def test_format_4_items_are_found_without_lookup_rows(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """Format 4 writes no lookup rows: lookup by subject and by record reads the items' indexes."""
    found = invoke("ledger", "lookup", "--db", db_url, "--subject", "1", "--format", "csv")
    assert found.exit_code == 0, found.output
    assert len(found.output.splitlines()) == 1 + 3  # records 1, 6 and 11 belong to subject 1
    one = invoke("ledger", "lookup", "--db", db_url, "--dataset", "events", "--key", "6", "--format", "csv")
    assert one.exit_code == 0, one.output
    assert len(one.output.splitlines()) == 1 + 1


# --------------------------------------------------------------------------
# Batch entries
# --------------------------------------------------------------------------


def test_a_modified_batch_entry_is_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """Another Merkle root or item count on a batch entry breaks its hash."""
    unprotect(migrated)
    t = store.ledger
    with migrated.begin() as conn:
        conn.execute(t.update().where(t.c.seq == v2[1]).values(merkle_root="0" * 64))
    assert verify_says(db_url) == failed(
        f"entry {v2[1]}: hash does not match its content (modified after it was written)"
    )


def test_a_deleted_batch_entry_is_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """The middle batch entry removed with its items: its number is named as missing."""
    unprotect(migrated)
    with migrated.begin() as conn:
        conn.execute(store.ledger_items.delete().where(store.ledger_items.c.entry_seq == v2[1]))
        conn.execute(store.ledger.delete().where(store.ledger.c.seq == v2[1]))
    assert verify_says(db_url) == failed(
        f"entry {v2[1]} is missing (the next entry is {v2[1] + 1}): entries were deleted"
    )


def renumber(engine: sa.Engine, order: list[dict[str, Any]], items: dict[int, list[dict[str, Any]]]) -> None:
    """Rewrite the ledger in ``order`` from seq 1, each entry's items following it to its new number."""
    with engine.begin() as conn:
        conn.execute(store.ledger_lookup.delete())
        conn.execute(store.ledger_items.delete())
        conn.execute(store.ledger.delete())
        for seq, row in enumerate(order, start=1):
            conn.execute(store.ledger.insert().values({**row, "seq": seq}))
            for item in items.get(row["seq"], []):
                conn.execute(store.ledger_items.insert().values({**item, "entry_seq": seq}))


def ledger_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(store.ledger).order_by(store.ledger.c.seq))]


def test_an_inserted_batch_entry_is_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """A copy of the first batch entry slipped in before the second: the copy's place is named."""
    unprotect(migrated)
    chain = ledger_rows(migrated)
    items = {seq: items_of(migrated, seq) for seq in v2}
    at = v2[1] - 1  # index of the second batch entry in the chain
    renumber(migrated, [*chain[:at], chain[v2[0] - 1], *chain[at:]], items)
    assert verify_says(db_url) == failed(
        f"entry {v2[1]} does not follow entry {v2[1] - 1} (previous hash differs): entries were removed, inserted "
        "or reordered before it"
    )


def test_reordered_batch_entries_are_named(migrated: sa.Engine, db_url: str, v2: list[int]) -> None:
    """The second and third batch entries swapped (with their items): the first of them is named."""
    unprotect(migrated)
    chain = ledger_rows(migrated)
    items = {seq: items_of(migrated, seq) for seq in v2}
    order = list(chain)
    a, b = v2[1] - 1, v2[2] - 1
    order[a], order[b] = order[b], order[a]
    renumber(migrated, order, items)
    assert verify_says(db_url) == failed(
        f"entry {v2[1]} does not follow entry {v2[1] - 1} (previous hash differs): entries were removed, inserted "
        "or reordered before it"
    )
