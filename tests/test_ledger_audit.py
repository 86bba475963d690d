"""`retention ledger audit`: the ledger's purge and anonymisation claims checked against the live tables.

The demo shop, one run of the marketplace pack; then what a superuser (or a
restore from backup) does: a purged row put back, an anonymised customer's
name written back. Pseudonyms in the expected messages are computed here
with hmac, as docs/ledger.md tells an auditor to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from engine_events import on_database
from ledger_view import every_claim

from retention import commands
from retention.cli import main
from retention.demo import build_shop
from retention.reporting import ledger_audit
from retention.store import tables as store

ROOT = Path(__file__).resolve().parent.parent
SECRET = "audit-test-key"
ENV = {"RETENTION_PSEUDONYM_KEY": SECRET, "RETENTION_PSEUDONYM_KEY_FILE": "", "RETENTION_DATABASE_URL": ""}
PACK = str(ROOT / "rules" / "marketplace.yaml")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, prog_name="retention")


def item_pseudonym(run_id: str, dataset: str, record_key: str) -> str:
    run_key = hmac.new(SECRET.encode(), f"run\x1f{run_id}".encode(), hashlib.sha256).digest()
    return hmac.new(run_key, f"record\x1f{dataset}\x1f{record_key}".encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def shop(migrated: sa.Engine, db_url: str) -> dict[str, Any]:
    """The demo shop after one run; the analytics rows as they were before it."""
    build_shop(migrated, seed=5, customers=150)
    events = sa.Table("analytics_events", sa.MetaData(), autoload_with=migrated)
    with migrated.connect() as conn:
        before = {row.id: dict(row._mapping) for row in conn.execute(sa.select(events))}
    ran = invoke("run", "--rules", PACK, "--db", db_url, "--as-of", "2026-11-01", "--allow-mass", "*")
    assert ran.exit_code == 0, ran.output
    return {"db_url": db_url, "events": events, "before": before}


def claim_of(engine: sa.Engine, dataset: str, record_key: str) -> tuple[int, int, str]:
    """(entry, item, pseudonym) of the record's newest item, found by the pseudonym computed here."""
    entries, items = store.ledger, store.ledger_items
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(entries.c.seq, entries.c.run_id, items.c.idx, items.c.record_pseudonym)
            .select_from(items.join(entries, entries.c.seq == items.c.entry_seq))
            .where(entries.c.dataset == dataset)
            .order_by(entries.c.seq.desc())
        ).all()
    for seq, run_id, idx, pseudonym in rows:
        if pseudonym == item_pseudonym(run_id, dataset, record_key):
            return seq, idx, pseudonym
    # Format 5 (the set-based path): the block's 91-byte items, each starting with its record pseudonym.
    blocks = store.ledger_blocks
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(entries.c.seq, entries.c.run_id, blocks.c.body)
            .select_from(blocks.join(entries, entries.c.seq == blocks.c.entry_seq))
            .where(entries.c.dataset == dataset)
            .order_by(entries.c.seq.desc())
        ).all()
    for seq, run_id, body in bodies:
        wanted = bytes.fromhex(item_pseudonym(run_id, dataset, record_key))
        for idx in range(len(body) // 91):
            if bytes(body[91 * idx : 91 * idx + 32]) == wanted:
                return seq, idx, wanted.hex()
    raise AssertionError(f"no item of {dataset} {record_key}")


def test_a_clean_run_audits_clean(shop: dict[str, Any]) -> None:
    result = invoke("ledger", "audit", "--rules", PACK, "--db", shop["db_url"])
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert line.startswith("ledger audit ok: ") and line.endswith(" dataset(s), each holds")
    assert int(line.split()[3]) > 100  # claims checked


def test_a_purged_row_put_back_is_named(migrated: sa.Engine, shop: dict[str, Any]) -> None:
    """An analytics row the run deleted, inserted again: its claim is named, exit 6; the sample finds it too."""
    events = shop["events"]
    with migrated.connect() as conn:
        left = set(conn.execute(sa.select(events.c.id)).scalars())
    purged = sorted(set(shop["before"]) - left)
    assert purged, "the run purged no analytics row"
    victim = purged[0]
    with migrated.begin() as conn:
        conn.execute(events.insert().values(**shop["before"][victim]))
    seq, idx, pseudonym = claim_of(migrated, "analytics_events", str(victim))
    result = invoke("ledger", "audit", "--rules", PACK, "--db", shop["db_url"])
    lines = result.output.splitlines()
    assert result.exit_code == 6, result.output
    assert lines[0] == (
        f"claim does not hold: dataset analytics_events: entry {seq} item {idx} (record {pseudonym[:16]}) says "
        "active->purged (delete), but the live table still holds that record"
    )
    assert lines[-1].startswith("ledger audit failed: 1 of ")
    one = invoke("ledger", "audit", "--rules", PACK, "--db", shop["db_url"], "--dataset", "analytics_events")
    assert one.exit_code == 6 and one.output.splitlines()[0] == lines[0]


def test_an_anonymised_customer_unmasked_is_named(migrated: sa.Engine, shop: dict[str, Any]) -> None:
    """A customer the run archived (then: anonymise) whose name is written back: named, without the name."""
    customers = sa.Table("customers", sa.MetaData(), autoload_with=migrated)
    with migrated.connect() as conn:
        archived = conn.execute(
            sa.select(store.record_states.c.record_key)
            .where(store.record_states.c.dataset == "customers", store.record_states.c.state == "archived")
            .order_by(store.record_states.c.record_key)
            .limit(1)
        ).scalar_one()
    with migrated.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == int(archived)).values(name="Zoë Unmasked"))
    seq, idx, pseudonym = claim_of(migrated, "customers", archived)
    result = invoke("ledger", "audit", "--rules", PACK, "--db", shop["db_url"])
    assert result.exit_code == 6, result.output
    assert result.output.splitlines()[0] == (
        f"claim does not hold: dataset customers: entry {seq} item {idx} (record {pseudonym[:16]}) says "
        "inactive->archived (archive), but the live row is not masked (column name)"
    )
    assert "Zoë" not in result.output


def test_a_sample_is_bounded(shop: dict[str, Any]) -> None:
    result = invoke("ledger", "audit", "--rules", PACK, "--db", shop["db_url"], "--sample", "5")
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert line.startswith("ledger audit ok: 5 claims checked (a sample of 5 of ")


def test_a_sample_is_drawn_from_every_claim(migrated: sa.Engine, shop: dict[str, Any]) -> None:
    """The sample is read by key after one pass over the claims' keys: distinct claims, all of them real, seeded."""
    with migrated.connect() as conn:
        every = every_claim(conn)
        assert len(every) > 20
        drawn = [ledger_audit._sampled(conn, None, 20, random.Random(seed)) for seed in (1, 1, 2)]
        whole, total = ledger_audit._sampled(conn, None, len(every) + 5, random.Random(3))
    for chosen, counted in drawn:
        assert counted == len(every)
        assert len(chosen) == 20 and len(set(chosen)) == 20
        assert set(chosen) <= set(every)
    assert drawn[0][0] == drawn[1][0]  # one seed, one sample
    assert drawn[0][0] != drawn[2][0]
    assert total == len(every) and sorted(whole, key=lambda c: (c.seq, c.idx or 0)) == sorted(
        every, key=lambda c: (c.seq, c.idx or 0)
    )


def test_verify_proof_with_a_database_checks_the_claim(
    migrated: sa.Engine, shop: dict[str, Any], tmp_path: Path
) -> None:
    """`verify-proof --db --rules`: a proof of a purge holds while the row is gone, and is rejected once it is back."""
    db_url = shop["db_url"]
    events = shop["events"]
    with migrated.connect() as conn:
        left = set(conn.execute(sa.select(events.c.id)).scalars())
    victim = sorted(set(shop["before"]) - left)[0]
    key, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(key), "--public", str(public)).exit_code == 0
    checkpoint, proof = tmp_path / "cp.json", tmp_path / "proof.json"
    assert invoke("ledger", "checkpoint", "--db", db_url, "--key", str(key), "--output", str(checkpoint)).exit_code == 0
    proved = invoke("ledger", "prove", "--db", db_url, "--dataset", "analytics_events", "--key", str(victim),
                    "--checkpoint", str(checkpoint), "--output", str(proof))  # fmt: skip
    assert proved.exit_code == 0, proved.output
    args = ("ledger", "verify-proof", str(proof), "--public-key", str(public), "--db", db_url, "--rules", PACK)
    holds = invoke(*args)
    assert holds.exit_code == 0, holds.output
    assert holds.output.splitlines()[-1] == "  1 claim(s) hold in the live tables"
    with migrated.begin() as conn:
        conn.execute(events.insert().values(**shop["before"][victim]))
    seq, idx, pseudonym = claim_of(migrated, "analytics_events", str(victim))
    broken = invoke(*args)
    assert (broken.exit_code, broken.output.splitlines()) == (
        6,
        [
            f"proof rejected: the live data contradicts it: dataset analytics_events: entry {seq} item {idx} "
            f"(record {pseudonym[:16]}) says active->purged (delete), but the live table still holds that record"
        ],
    )


def test_a_complete_audit_matches_in_the_database(
    migrated: sa.Engine, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims are counted and matched by the database, a page of live keys at a time; no key reaches the server.

    Pages of 7 live keys, so that the table takes many. No statement reads
    the items but to count them or to probe given pseudonyms (the former
    audit read every claim into memory); no statement or parameter holds
    the pseudonym key or a run key.
    """
    events = shop["events"]
    with migrated.connect() as conn:
        left = set(conn.execute(sa.select(events.c.id)).scalars())
        run_ids = list(conn.execute(sa.select(store.runs.c.id)).scalars())
    victim = sorted(set(shop["before"]) - left)[-1]
    with migrated.begin() as conn:
        conn.execute(events.insert().values(**shop["before"][victim]))
    seq, idx, pseudonym = claim_of(migrated, "analytics_events", str(victim))
    monkeypatch.setattr(ledger_audit, "_CHUNK", 7)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", "")
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append(f"{statement} {parameters!r}")

    # The audit opens its own engine; only its statements to the shop's database are the audit's (the background
    # thread preparing the next tests' databases runs meanwhile: engine_events.py).
    with on_database(shop["db_url"], "before_cursor_execute", note):
        result = commands.ledger_audit(Path(PACK), shop["db_url"])
    assert result.problems == [
        f"dataset analytics_events: entry {seq} item {idx} (record {pseudonym[:16]}) says active->purged (delete), "
        "but the live table still holds that record"
    ]
    assert result.checked > 100 and not result.skipped
    keys = [SECRET.encode()]
    keys += [hmac.new(SECRET.encode(), f"run\x1f{r}".encode(), hashlib.sha256).digest() for r in run_ids]
    assert any("retention_ledger_items" in text.lower() for text in seen)  # the audit's statements were seen
    for text in seen:
        lowered = text.lower()
        if "retention_ledger_items" in lowered:
            assert "count(" in lowered or "pseudonym in" in lowered or "pseudonym) in" in lowered, text[:300]
        for key in keys:
            assert key.hex() not in text and repr(key)[2:-1] not in text and SECRET not in text


def _strata_ledger(engine: sa.Engine) -> dict[str, list[tuple[int, int | None]]]:
    """A ledger of claims in strata of very different sizes, and entries that claim nothing between them.

    Items: an entry of 120 and one of 3; format 1: a dense stretch of 90
    claims, then 40 claims each followed by two entries that claim nothing
    (a move to `inactive`), so their blocks of entry numbers are sparse;
    and an entry of format 3 written directly with item numbers that have
    gaps (0, 3, 4, 9: no writer does this, the sampler must not assume
    it). Returns the claims' (entry, item) keys by group.
    """
    from retention.ledger import chain as ledger
    from retention.ledger import items as ledger_items_module

    key = SECRET.encode()
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def batch(run: str, first: int, n: int) -> ledger_items_module.BatchItems:
        moves = [(when, str(first + i), None, None, None) for i in range(n)]
        return ledger_items_module.BatchItems(run, "p", "d", "events", "active->purged", "delete", "b", key, moves)

    def records(first: int, n: int, transition: str, action: str | None) -> ledger.RecordEntries:
        return ledger.RecordEntries(
            "run-v1",
            "p",
            "d",
            "events",
            transition,
            action,
            "b",
            key,
            [(when, str(first + i), None, None) for i in range(n)],
        )

    with engine.begin() as conn:
        (big,) = ledger.append(conn, [batch("run-a", 0, 120)], when, secret=key)
        (small,) = ledger.append(conn, [batch("run-b", 1000, 3)], when, secret=key)
        dense = ledger.append(conn, [records(2000, 90, "active->purged", "delete")], when, secret=key)
        sparse: list[int] = []
        for i in range(40):
            sparse += ledger.append(conn, [records(3000 + i, 1, "active->purged", "delete")], when, secret=key)
            ledger.append(conn, [records(4000 + 2 * i, 2, "active->inactive", None)], when, secret=key)
        head = conn.execute(sa.select(sa.func.max(store.ledger.c.seq))).scalar_one()
        gappy = head + 1
        conn.execute(
            store.ledger.insert().values(
                seq=gappy, recorded_at=when, run_id="run-c", pack_id="p", pack_digest="d", dataset="events",
                transition="active->purged", action="delete", count=4, prev_hash="0" * 64, hash="1" * 64,
                format=3, items=4,
            )
        )  # fmt: skip
        conn.execute(
            store.ledger_items.insert(),
            [{"entry_seq": gappy, "idx": i, "record_pseudonym": f"{i:064x}", "due_at": when} for i in (0, 3, 4, 9)],
        )
    return {
        "items of a large entry": [(big, i) for i in range(120)],
        "items of a small entry": [(small, i) for i in range(3)],
        "format 1, dense": [(seq, None) for seq in dense],
        "format 1, sparse": [(seq, None) for seq in sparse],
        "items with gaps": [(gappy, i) for i in (0, 3, 4, 9)],
    }


def test_a_sample_is_uniform_over_claims(migrated: sa.Engine) -> None:
    """Every claim is as likely to be drawn, whatever the size of its entry or the density of its block.

    300 samples of 12 with fixed seeds: each group's share of the draws
    is held to its share of the claims by a chi-square test (5 groups, 4
    degrees of freedom, critical value 18.47 at p = 0.001); a sampler that
    chose an entry (or a block) first, then a claim in it, draws the 3
    items of the small entry about 20 times too often and fails it. Each
    of the 257 claims is drawn at least once, and nothing else is drawn.
    """
    groups = _strata_ledger(migrated)
    group_of = {claim: name for name, claims in groups.items() for claim in claims}
    total = len(group_of)
    drawn: dict[str, int] = dict.fromkeys(groups, 0)
    seen: set[tuple[int, int | None]] = set()
    samples, size = 300, 12
    with migrated.connect() as conn:
        for seed in range(samples):
            chosen, counted = ledger_audit._sampled(conn, None, size, random.Random(seed))
            assert counted == total
            keys = [(c.seq, c.idx) for c in chosen]
            assert len(set(keys)) == size
            for k in keys:
                drawn[group_of[k]] += 1  # a KeyError: a drawn claim that is none
            seen.update(keys)
    expected = {name: samples * size * len(claims) / total for name, claims in groups.items()}
    chi_square = sum((drawn[name] - expected[name]) ** 2 / expected[name] for name in groups)
    assert chi_square < 18.47, (drawn, expected)
    assert seen == set(group_of)
