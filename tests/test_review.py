"""Disposition review: nothing purged before approval; approved, still due, unheld records go."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from retention.engine import execute
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.policy import validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects
from retention.subjects import review

TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
SECRET = b"review-test-key"
UTC = dt.UTC
PACK = validate_pack(
    {
        "pack": "review",
        "version": "1",
        "effective_from": dt.date(2000, 1, 1),
        "timezone": "Europe/Paris",
        "batch_size": 4,
        "guard": {"max_share": 1.0},
        "datasets": {
            "documents": {
                "table": "documents",
                "key": "id",
                "subject_key": "owner",
                "basis": "contract files",
                "review": True,
                "keep": [{"clock": {"column": "closed_at", "type": "timestamptz"}, "period": "P1Y"}],
                "lifecycle": [{"to": "purged", "action": "delete"}],
            }
        },
    },
    Path("<review>"),
    "",
)


def build(engine: sa.Engine) -> None:
    md = sa.MetaData()
    docs = sa.Table(
        "documents",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.Integer),
        sa.Column("closed_at", TS, index=True),
    )
    md.create_all(engine)
    base = dt.datetime(2020, 1, 15, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            docs.insert(),
            [
                {
                    "id": i,
                    "owner": i % 3,
                    "closed_at": (base + dt.timedelta(days=30 * i)).replace(
                        tzinfo=UTC if engine.dialect.name == "postgresql" else None
                    ),
                }
                for i in range(1, 21)
            ],
        )


def ids(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT id FROM documents")).scalars())


def test_review_flow(migrated: sa.Engine) -> None:
    """Run files a review batch; approval lets the next run purge exactly the approved, due, unheld ones."""
    build(migrated)
    first = dt.datetime(2021, 6, 20, tzinfo=UTC)  # documents 1..5 closed by 13 Jun 2020: due
    plan = execute.plan(migrated, PACK, first)
    assert plan.awaiting_review == {"documents": 5} and plan.total() == 0
    result = execute.run(migrated, PACK, first, secret=SECRET)
    assert result.counts.get("documents", {}) == {}
    assert ids(migrated) == set(range(1, 21))  # nothing purged
    with migrated.connect() as conn:
        batches = review.list_batches(conn)
        assert [(b["dataset"], b["status"], b["items"]) for b in batches] == [("documents", "pending", 5)]
        batch_id = batches[0]["id"]
        _, items = review.show_batch(conn, batch_id)
        assert [i["record_key"] for i in items] == ["1", "2", "3", "4", "5"]
    # A second run the same day does not file the same records again.
    execute.run(migrated, PACK, first, secret=SECRET)
    with migrated.connect() as conn:
        assert len(review.list_batches(conn)) == 1
    with migrated.begin() as conn:
        review.decide(conn, batch_id, approve=True, by="dpo@example.test", reason="retention period over")
    with migrated.begin() as conn:  # placed after approval: still protects record 2
        subjects.place_hold(
            conn,
            scope="record",
            dataset="documents",
            record_key="2",
            reason="audit",
            placed_by="legal",
            secret=SECRET,
        )
    later = dt.datetime(2021, 9, 15, tzinfo=UTC)  # 6..8 (closed by 11 Sep 2020) are due, not approved
    result = execute.run(migrated, PACK, later, secret=SECRET)
    assert result.counts["documents"] == {"active->purged": 4}
    assert ids(migrated) == {2} | set(range(6, 21))
    with migrated.connect() as conn:
        entries = conn.execute(
            sa.select(store.ledger)
            .where(store.ledger.c.run_id == result.run_id)
            .where(store.ledger.c.transition == "active->purged")
        ).all()
        approvals = conn.execute(sa.select(store.ledger).where(store.ledger.c.transition == "review_approved")).all()
        pending = review.list_batches(conn)
    assert entries and all(e.items for e in entries)
    with migrated.connect() as conn:
        found = {k: ledger_items.lookup(conn, SECRET, dataset="documents", record_key=str(k)) for k in range(1, 21)}
    purged = {k for k, rows in found.items() if any(r["run_id"] == result.run_id for r in rows)}
    assert purged == {1, 3, 4, 5}
    assert {r["review_id"] for k in purged for r in found[k] if r["run_id"] == result.run_id} == {batch_id}
    assert len(approvals) == 1
    assert json.loads(approvals[0].detail) == {
        "by": "dpo@example.test",
        "reason": "retention period over",
        "review_id": batch_id,
    }
    # The approved batch still holds record 2 (held); the new due records wait in a new batch.
    assert sorted((b["status"], b["items"]) for b in pending) == [("approved", 1), ("pending", 3)]
    assert ledger.verify(migrated).ok


def test_rejected_batch_keeps_its_records(migrated: sa.Engine) -> None:
    """Rejected purges stay, and are not proposed again."""
    build(migrated)
    when = dt.datetime(2021, 6, 1, tzinfo=UTC)
    execute.run(migrated, PACK, when, secret=SECRET)
    with migrated.connect() as conn:
        batch_id = review.list_batches(conn)[0]["id"]
    with migrated.begin() as conn:
        review.decide(conn, batch_id, approve=False, by="dpo", reason="litigation pending")
    execute.run(migrated, PACK, when, secret=SECRET)
    assert ids(migrated) == set(range(1, 21))
    with migrated.connect() as conn:
        assert review.list_batches(conn) == []
