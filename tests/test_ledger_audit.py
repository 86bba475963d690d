"""`retention ledger audit`: the ledger's purge and anonymisation claims checked against the live tables.

The demo shop, one run of the marketplace pack; then what a superuser (or a
restore from backup) does: a purged row put back, an anonymised customer's
name written back. Pseudonyms in the expected messages are computed here
with hmac, as docs/ledger.md tells an auditor to.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

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
        every = list(ledger_audit._claims(conn, None))
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

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", note)
    try:
        result = commands.ledger_audit(Path(PACK), shop["db_url"])
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", note)
    assert result.problems == [
        f"dataset analytics_events: entry {seq} item {idx} (record {pseudonym[:16]}) says active->purged (delete), "
        "but the live table still holds that record"
    ]
    assert result.checked > 100 and not result.skipped
    keys = [SECRET.encode()]
    keys += [hmac.new(SECRET.encode(), f"run\x1f{r}".encode(), hashlib.sha256).digest() for r in run_ids]
    for text in seen:
        lowered = text.lower()
        if "retention_ledger_items" in lowered:
            assert "count(" in lowered or "pseudonym in" in lowered or "pseudonym) in" in lowered, text[:300]
        for key in keys:
            assert key.hex() not in text and repr(key)[2:-1] not in text and SECRET not in text
