"""No serial close (issue 25): each batch writes the lookup rows of its items in its own transaction.

The lookup rows (``retention_ledger_lookup``) used to be written at the end
of a run, and for a shard group by its last shard in one transaction: a
serial step of ~23 µs per item that nothing else could share. Here every
committed batch's items are indexed the moment they commit (checked after
each batch, after shards that have not closed their group, and after a
shard SIGKILLed mid-run), ``ledger verify`` and ``ledger lookup`` behave as
before, and items an older version left unindexed are indexed by the next
batch that appends.

Lookup rows belong to formats 2 and 3: format 4 (issue 22) writes none and
finds items by the items' own indexes. So these tests write format 3, as the
engine did before (``FORMAT`` set for the module, in the killed shard's
process too), and the catch-up is checked across the upgrade: format-3 items
left unindexed, then a format-4 run.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_ledger_tampering_v2 import unprotect
from test_shard_progress import KILLED_SHARD, SMALL_BATCHES
from test_shards import AS_OF, FIRST, SECRET, prepare

from retention.engine import execute
from retention.engine.shards import ShardSpec
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.policy import LoadedPack, load_file
from retention.store import tables as store


@pytest.fixture(autouse=True)
def format_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_items, "FORMAT", 3)


def _small(tmp_path: Path) -> tuple[Path, LoadedPack]:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_BATCHES, encoding="utf-8")
    return path, load_file(path)


def _expected_rows(conn: sa.Connection) -> Counter[tuple[str, str, int, int]]:
    """The lookup rows the items call for: one per pseudonym of each item, under its entry's run (read here)."""
    items, entries = store.ledger_items, store.ledger
    rows: Counter[tuple[str, str, int, int]] = Counter()
    query = sa.select(
        entries.c.run_id,
        items.c.record_pseudonym,
        items.c.subject_pseudonym,
        items.c.email_pseudonym,
        items.c.entry_seq,
        items.c.idx,
    ).select_from(
        items.join(entries, sa.and_(entries.c.seq == items.c.entry_seq, entries.c.format.in_((2, 3))))
    )  # format 4 has no lookup rows
    for run_id, *pseudonyms, seq, idx in conn.execute(query):
        for pseudonym in pseudonyms:
            if pseudonym is not None:
                rows[(run_id, pseudonym, int(seq), int(idx))] += 1
    return rows


def _lookup_rows(conn: sa.Connection) -> Counter[tuple[str, str, int, int]]:
    lookup = store.ledger_lookup
    query = sa.select(lookup.c.run_id, lookup.c.pseudonym, lookup.c.entry_seq, lookup.c.idx)
    return Counter((r, p, int(s), int(i)) for r, p, s, i in conn.execute(query))


def _indexed(engine: sa.Engine) -> tuple[int, bool]:
    """(items committed, whether the lookup rows are exactly those of every committed item)."""
    with engine.connect() as conn:
        items = conn.execute(sa.select(sa.func.count()).select_from(store.ledger_items)).scalar_one()
        return int(items), _lookup_rows(conn) == _expected_rows(conn)


def test_each_batch_indexes_its_items_as_it_commits(db_url: str, tmp_path: Path) -> None:
    _, loaded = _small(tmp_path)
    engine = prepare(db_url, loaded)
    seen: list[tuple[int, bool]] = []
    try:
        result = execute.run(engine, loaded, AS_OF, secret=SECRET, on_batch=lambda _b: seen.append(_indexed(engine)))
        assert result.status == "succeeded" and result.batches > 20
        # Items grow batch after batch, and after each commit every one of them is indexed.
        assert seen[-1][0] > seen[0][0] > 0
        assert all(ok for _, ok in seen), seen
        assert ledger.verify(engine).ok
    finally:
        engine.dispose()


def test_shards_that_have_not_closed_the_group_left_their_items_indexed(db_url: str, tmp_path: Path) -> None:
    """Two of three shards done, the group still open: their items are indexed; the close adds no lookup rows."""
    _, loaded = _small(tmp_path)
    engine = prepare(db_url, loaded)
    try:
        before = _indexed(engine)[0]
        for index in range(2):
            shard = ShardSpec(index, 3)
            assert execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=shard, run_group="open").status == (
                "succeeded"
            )
        items, ok = _indexed(engine)
        assert items > before and ok
        last = execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(2, 3), run_group="open")
        assert last.status == "succeeded"
        assert _indexed(engine)[1]
        assert ledger.verify(engine).ok
    finally:
        engine.dispose()


def test_a_killed_shard_leaves_every_committed_item_indexed(dialect: str, db_url: str, tmp_path: Path) -> None:
    """SIGKILL after the 3rd batch: the committed batches' items and lookup rows are there, nothing else."""
    path, loaded = _small(tmp_path)
    engine = prepare(db_url, loaded)
    try:
        before = _indexed(engine)[0]
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                WRITING_FORMAT_3 + KILLED_SHARD,
                db_url,
                str(path),
                "0",
                "3",
                "3",
                AS_OF.isoformat(),
                SECRET.decode(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert killed.returncode == -9, killed.stderr[-2000:]
        items, ok = _indexed(engine)
        assert items > before and ok
        assert ledger.verify(engine).ok
        # `ledger lookup` finds subject 5's items (the erasure request in shard 0) through the lookup rows alone.
        with engine.connect() as conn:
            found = ledger_items.lookup(conn, SECRET, subject_key="5")
        group = execute.group_run_id("night-killed")
        assert any(r["item"] is not None and r["run_id"] == group for r in found)
    finally:
        engine.dispose()


def test_items_an_older_version_left_unindexed_are_indexed_by_the_next_batch(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run's lookup rows removed (an older version's killed tail): the next run, format 4, restores them."""
    _, loaded = _small(tmp_path)
    engine = prepare(db_url, loaded)  # its first run, as of FIRST, wrote items
    try:
        unprotect(engine, "retention_ledger_lookup")
        with engine.begin() as conn:
            conn.execute(store.ledger_lookup.delete())
        assert _indexed(engine) > (0, False)
        monkeypatch.setattr(ledger_items, "FORMAT", 4)
        assert execute.run(engine, loaded, AS_OF, secret=SECRET).status == "succeeded"
        with engine.connect() as conn:
            forms = set(conn.execute(sa.select(store.ledger.c.format).where(store.ledger.c["items"] > 0)).scalars())
        assert forms == {3, 4}
        assert _indexed(engine)[1]
        assert ledger.verify(engine).ok
        first = _first_run(engine)
        with engine.connect() as conn:
            found = [r for s in range(1, 61) for r in ledger_items.lookup(conn, SECRET, subject_key=str(s))]
        assert any(r["item"] is not None and r["run_id"] == first for r in found)
    finally:
        engine.dispose()


WRITING_FORMAT_3 = "import retention.ledger.items as _items\n_items.FORMAT = 3\n"


def _first_run(engine: sa.Engine) -> str:
    runs = store.runs
    with engine.connect() as conn:
        return str(conn.execute(sa.select(runs.c.id).where(runs.c.as_of == FIRST)).scalar_one())
