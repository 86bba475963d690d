"""The engine's own retention (issue 14, check 2): settled requests and holds keep their evidence, not the person."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa

from retention.engine import execute
from retention.ledger import chain as ledger
from retention.ledger import pseudonyms
from retention.policy import load_file
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"evidence-test-key"
PACK = """\
pack: shop
version: "1"
effective_from: 2020-01-01
{extra}
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: Customer account
    on_erasure: purged  # the open request of subject 43 stays open: a hold keeps its record
    keep:
      - clock: {{column: last_seen, type: timestamp}}
        period: P30Y
    lifecycle:
      - to: purged
        action: delete
"""
AS_OF = dt.datetime(2030, 1, 1, 12, tzinfo=UTC)


def _setup(engine: sa.Engine, tmp_path: Path, extra: str = "") -> tuple[dict[str, int], dict[str, int]]:
    table = sa.Table(
        "customers", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("last_seen", sa.DateTime)
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "last_seen": dt.datetime(2025, 1, 1)} for i in (41, 42, 43, 44)])
    path = tmp_path / "pack.yaml"
    path.write_text(PACK.format(extra=extra))
    pack = load_file(path).pack
    er = store.erasure_requests
    requests, holds = {}, {}
    with engine.begin() as conn:
        for name, subject in (("old_closed", "41"), ("boundary_kept", "42"), ("open", "43"), ("old_processed", "44")):
            requests[name] = subjects.add_request(
                conn, subject_key=subject, received=dt.date(2025, 3, 1), pack=pack, note=f"note about {subject}"
            )
        # Settled on 31 Dec 2026: kept through 31 Dec 2029, minimised on 1 Jan 2030. Settled 1 Jan 2027: not yet.
        conn.execute(
            er.update()
            .where(er.c.id == requests["old_closed"])
            .values(status="closed", closed_at=dt.datetime(2026, 12, 31, 12, tzinfo=UTC), outcome="erased")
        )
        conn.execute(
            er.update()
            .where(er.c.id == requests["boundary_kept"])
            .values(status="closed", closed_at=dt.datetime(2027, 1, 1, 12, tzinfo=UTC), outcome="erased")
        )
        conn.execute(
            store.runs.insert().values(
                id="r-2026",
                mode="run",
                pack_id="shop",
                pack_digest="0" * 64,
                as_of=dt.datetime(2026, 6, 1, tzinfo=UTC),
                started_at=dt.datetime(2026, 6, 1, 3, tzinfo=UTC),
                finished_at=dt.datetime(2026, 6, 1, 4, tzinfo=UTC),
                status="succeeded",
            )
        )
        conn.execute(
            er.update()
            .where(er.c.id == requests["old_processed"])
            .values(status="processed", processed_run_id="r-2026", outcome="nothing to move")
        )
        for name, subject, released in (
            ("released_old", "41", dt.datetime(2026, 6, 1, tzinfo=UTC)),
            ("released_recent", "42", dt.datetime(2029, 6, 1, tzinfo=UTC)),
            ("in_place", "43", None),
        ):
            holds[name] = subjects.place_hold(
                conn,
                scope="subject",
                reason=f"litigation about {subject}",
                placed_by="dpo",
                secret=SECRET,
                subject_key=subject,
                now=dt.datetime(2025, 6, 1, tzinfo=UTC),
            )
            if released is not None:
                subjects.release_hold(
                    conn, holds[name], released_by="dpo", reason=f"settled for {subject}", secret=SECRET, now=released
                )
    return requests, holds


def test_settled_requests_and_holds_lose_the_person_after_three_years(migrated: sa.Engine, tmp_path: Path) -> None:
    """The run minimises exactly the settled ones past P3Y, keeps dates and outcome, and says so in the ledger."""
    requests, holds = _setup(migrated, tmp_path)
    loaded = load_file(tmp_path / "pack.yaml")
    er, ho = store.erasure_requests, store.holds
    with migrated.connect() as conn:
        before = {r.id: r for r in conn.execute(sa.select(er))}
    result = execute.run(migrated, loaded, AS_OF, secret=SECRET)
    assert result.status == "succeeded", result.failures
    with migrated.connect() as conn:
        after = {r.id: r for r in conn.execute(sa.select(er))}
        hold_rows = {r.id: r for r in conn.execute(sa.select(ho))}
        entries = conn.execute(
            sa.select(store.ledger.c.detail, store.ledger.c.count, store.ledger.c.run_id).where(
                store.ledger.c.transition == "engine_records_minimised"
            )
        ).all()
    for name in ("old_closed", "old_processed"):
        row, old = after[requests[name]], before[requests[name]]
        assert (row.subject_key, row.note, row.extension_reason) == (None, None, None), name
        assert row.subject_pseudonym == pseudonyms.subject_pseudonym(SECRET, old.subject_key)
        assert (row.received_on, row.deadline, row.status, row.outcome, row.closed_at, row.processed_run_id) == (
            old.received_on,
            old.deadline,
            old.status,
            old.outcome,
            old.closed_at,
            old.processed_run_id,
        )
        assert row.minimised_at is not None
    for name in ("boundary_kept", "open"):
        assert tuple(after[requests[name]]) == tuple(before[requests[name]]), name
    old = hold_rows[holds["released_old"]]
    assert (old.subject_key, old.release_reason, old.reason) == (
        None,
        None,
        "removed after the engine's retention period",
    )
    assert old.subject_pseudonym == pseudonyms.subject_pseudonym(SECRET, "41")
    assert old.placed_at is not None and old.released_at is not None and old.released_by == "dpo"
    for name, subject in (("released_recent", "42"), ("in_place", "43")):
        row = hold_rows[holds[name]]
        assert (row.subject_key, row.reason, row.minimised_at) == (subject, f"litigation about {subject}", None)
    assert len(entries) == 1 and entries[0].count == 3 and entries[0].run_id == result.run_id
    assert json.loads(entries[0].detail) == {
        "erasure_requests": sorted([requests["old_closed"], requests["old_processed"]]),
        "holds": [holds["released_old"]],
        "period": "P3Y",
    }
    again = execute.run(migrated, loaded, AS_OF, secret=SECRET)
    assert again.status == "succeeded"
    with migrated.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(store.ledger.c.transition == "engine_records_minimised")
        ).scalar_one()
    assert count == 1  # nothing left to minimise, no new entry
    assert ledger.verify(migrated).ok


def test_the_period_is_configurable(migrated: sa.Engine, tmp_path: Path) -> None:
    """engine_retention: P5Y keeps everything settled since 2026 on 1 Jan 2030."""
    _setup(migrated, tmp_path, extra="engine_retention: P5Y")
    execute.run(migrated, load_file(tmp_path / "pack.yaml"), AS_OF, secret=SECRET)
    with migrated.connect() as conn:
        minimised = conn.execute(
            sa.select(sa.func.count()).where(store.erasure_requests.c.minimised_at.is_not(None))
        ).scalar_one()
    assert minimised == 0
