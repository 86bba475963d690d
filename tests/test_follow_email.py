"""Issue 26, clause 2: ``follows`` through an e-mail identity (``by: email``).

"Reviews stay published, anonymised, when the profile ends", for guest
reviews: a review has no customer id, only its author's address; it follows
the guest's order carrying that address (the latest, when several do). The
expected sets are read by hand from the rows below, on every database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.errors import PackError
from retention.policy import load_file

UTC = dt.UTC
SECRET = b"follow-email-key"
PACK = """\
pack: guests
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  orders:
    table: orders
    key: id
    email: billing_email
    where: {status: {not: draft}}
    basis: tax law
    keep:
      - clock: {column: placed, type: timestamp}
        period: P1Y
    lifecycle:
      - to: inactive
      - to: purged
        after: P1Y
        action: delete
  reviews:
    table: reviews
    key: id
    email: author_email
    basis: published reviews, anonymised when the customer's profile ends
    follows: {dataset: orders, by: email, on: {inactive: purged}}
    lifecycle:
      - to: purged
        action: anonymise
        mask: {author_email: null, author: {strategy: fixed, value: anonymous}}
"""
# order id -> (billing address, placed, status). Keep P1Y, then inactive, then purged P1Y later.
ORDERS = {
    1: ("Ann@Example.com", dt.datetime(2023, 1, 10), "done"),  # purged 2025-01-11
    2: ("ann@example.com ", dt.datetime(2026, 3, 1), "done"),  # active: Ann's latest order leads her reviews
    3: ("bob@example.com", dt.datetime(2024, 2, 1), "done"),  # inactive 2025-02-02, purged 2026-02-02
    4: (None, dt.datetime(2020, 1, 1), "done"),  # no address: leads nobody
    5: ("carl@example.com", dt.datetime(2022, 5, 5), "done"),  # purged
    6: ("carl@example.com", dt.datetime(2024, 9, 1), "done"),  # inactive 2025-09-02 (purged 2026-09-02)
    7: ("erin@example.com", dt.datetime(2025, 3, 1), "done"),  # inactive 2026-03-02
    8: ("dave@example.com", dt.datetime(2020, 1, 1), "draft"),  # not an order of the dataset: leads nobody
}
# review id -> author address
REVIEWS = {
    10: " ANN@example.com",  # leader 2 (greatest key of Ann's orders), active: stays
    11: "bob@example.com",  # leader 3 passes through inactive in this run: anonymised
    12: "dave@example.com",  # only a draft order: no leader, stays
    13: None,  # no address: stays
    14: "Carl@example.com",  # leader 6 (not 5), enters inactive: anonymised
    15: "BOB@EXAMPLE.COM",  # leader 3: anonymised
    17: "frank@example.com",  # no order at all: stays
}
FIRST, SECOND = dt.datetime(2026, 6, 1, tzinfo=UTC), dt.datetime(2026, 6, 2, tzinfo=UTC)


def create(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    orders = sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("billing_email", sa.String(100)),
        sa.Column("placed", sa.DateTime),
        sa.Column("status", sa.String(20)),
    )
    reviews = sa.Table(
        "reviews",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("author_email", sa.String(100)),
        sa.Column("author", sa.String(100)),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            orders.insert(),
            [{"id": k, "billing_email": e, "placed": p, "status": s} for k, (e, p, s) in ORDERS.items()],
        )
        conn.execute(
            reviews.insert(), [{"id": k, "author_email": e, "author": f"author {k}"} for k, e in REVIEWS.items()]
        )
    return reviews


def anonymised(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT id FROM reviews WHERE author = 'anonymous'")).scalars())


def remaining_orders(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT id FROM orders")).scalars())


def test_guest_reviews_follow_the_guests_latest_order_by_address(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    reviews = create(migrated)
    path = tmp_path / "guests.yaml"
    path.write_text(PACK)
    loaded = load_file(path)

    summary = execute.plan(migrated, loaded, FIRST, record=False)
    assert summary.transitions["reviews"] == {"active->purged": 3}
    assert summary.transitions["orders"] == {"active->inactive": 6, "inactive->purged": 4}

    explained = CliRunner().invoke(
        main, ["explain", "--rules", str(path), "--db", db_url, "--dataset", "reviews", "--key", "14"]
    )
    assert explained.exit_code == 0, explained.output
    assert "purged" in explained.output

    result = execute.run(migrated, loaded, FIRST, secret=SECRET)
    assert result.status == "succeeded", result
    assert result.counts["reviews"] == {"active->purged": 3}
    assert remaining_orders(migrated) == {2, 6, 7, 8}
    assert anonymised(migrated) == {11, 14, 15}

    # A review written after its leader went inactive catches up at the next run.
    with migrated.begin() as conn:
        conn.execute(reviews.insert().values(id=16, author_email="erin@example.com", author="author 16"))
    again = execute.plan(migrated, loaded, SECOND, record=False)
    assert again.transitions.get("reviews") == {"active->purged": 1}
    execute.run(migrated, loaded, SECOND, secret=SECRET)
    assert anonymised(migrated) == {11, 14, 15, 16}


def test_follows_by_email_needs_both_identities(tmp_path: Path) -> None:
    text = PACK.replace("    email: author_email\n", "")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PackError) as caught:
        load_file(path)
    line = text.splitlines().index("    follows: {dataset: orders, by: email, on: {inactive: purged}}") + 1
    assert str(caught.value) == (
        f"{path}:{line}: dataset 'reviews' follows by email but declares no 'email' identity; add email: COLUMN"
    )
    both = PACK.replace("by: email,", "by: email, via: order_id,")
    path.write_text(both)
    with pytest.raises(PackError) as caught:
        load_file(path)
    assert "give 'via' (a column holding the leader's key) or 'by: email', not both" in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line + 1}:")  # the e-mail line is back
