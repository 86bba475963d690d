"""Issue 26 clause 4: partial erasure, ``on_erasure: {mask: {...}, keep_until: purged}``.

"On erasure, keep the fields tax law requires and erase the rest": an
order's name and address are masked at the run after the request, the order
(amount, date) is kept for its 7-year tax term and purged by its own clock
as usual; the ledger records both steps. Expected sets are read by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.engine.shards import ShardSpec
from retention.errors import PackError
from retention.policy import load_file
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"partial-erasure-key"

PACK = """\
pack: shop
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  orders:
    table: shop_orders
    key: id
    subject_key: customer_id
    email: email
    basis: Dutch tax law (AWR art. 52), 7 years
    on_erasure:
      mask: {name: null, email: null, street: {strategy: fixed, value: erased}}
      keep_until: purged
    keep:
      - clock: {column: created_at, type: timestamptz}
        period: P7Y
    lifecycle:
      - to: purged
        action: delete
"""

# id, customer_id, email, name, street, total, created_at
ROWS = [
    (1, 7, "ann@x.test", "Ann", "Main St 1", 10, dt.datetime(2019, 1, 10, 12, tzinfo=UTC)),  # purged 2026-01-11
    (2, 7, "ann@x.test", "Ann", "Main St 1", 20, dt.datetime(2024, 5, 1, 12, tzinfo=UTC)),  # purged 2031-05-02
    (3, 8, "bob@x.test", "Bob", "High St 2", 30, dt.datetime(2024, 5, 1, 12, tzinfo=UTC)),  # no request
    (4, None, " Ann@X.test", "Ann", "Main St 1", 40, dt.datetime(2025, 2, 1, 12, tzinfo=UTC)),  # guest, by address
    (5, 7, "ann@x.test", "Ann", "Main St 1", 50, dt.datetime(2025, 1, 1, 12, tzinfo=UTC)),  # held at first
]


def create(engine: sa.Engine) -> None:
    md = sa.MetaData()
    table = sa.Table(
        "shop_orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer),
        sa.Column("email", sa.String(100)),
        sa.Column("name", sa.String(100)),
        sa.Column("street", sa.String(100)),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), index=True),
    )
    md.create_all(engine)
    columns = ("id", "customer_id", "email", "name", "street", "total", "created_at")
    with engine.begin() as conn:
        conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in ROWS])


def write(tmp_path: Path, text: str = PACK) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def rows(engine: sa.Engine) -> dict[int, tuple[object, ...]]:
    with engine.connect() as conn:
        query = sa.text("SELECT id, customer_id, email, name, street, total FROM shop_orders")
        return {r.id: tuple(r[1:]) for r in conn.execute(query)}


def mask_entries(engine: sa.Engine) -> list[tuple[object, ...]]:
    lg = store.ledger
    with engine.connect() as conn:
        query = sa.select(lg.c.dataset, lg.c.action, lg.c.count).where(lg.c.transition == "erasure_mask")
        return [tuple(r) for r in conn.execute(query.order_by(lg.c.seq))]


def explain(db_url: str, pack: Path, key: str, as_of: str) -> str:
    out = CliRunner().invoke(
        main, ["explain", "--rules", str(pack), "--db", db_url, "--dataset", "orders", "--key", key, "--as-of", as_of]
    )
    assert out.exit_code == 0, out.output
    return out.output


ANN = (7, "ann@x.test", "Ann", "Main St 1")
MASKED = (7, None, None, "erased")


def test_erasure_masks_now_and_the_clock_purges_later(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Ann's orders are masked at the first run, kept, and purged when their own 7-year terms end."""
    create(migrated)
    path = write(tmp_path)
    loaded = load_file(path)
    with migrated.begin() as conn:
        request = subjects.add_request(
            conn, subject_key="7", email="ann@x.test", received=dt.date(2026, 5, 20), pack=loaded.pack, secret=SECRET
        )
        subjects.place_hold(
            conn, scope="record", dataset="orders", record_key="5", reason="dispute", placed_by="t", secret=SECRET
        )
    first = dt.datetime(2026, 6, 1, tzinfo=UTC)
    text = explain(db_url, path, "2", "2026-06-01")
    assert f"due now: erasure_mask (request {request}): email, name, street; kept until purged" in text
    assert "next: active->purged on 2031-05-02 00:00" in text
    # Masked: 1, 2 and the guest order 4 (by address); 5 is held. 1 is also past its term: purged.
    expected = {"erasure_mask": 3, "active->purged": 1}
    out = CliRunner().invoke(main, ["plan", "--rules", str(path), "--db", db_url, "--as-of", "2026-06-01"])
    assert out.exit_code == 0, out.output
    assert "erasure_mask" in out.output
    assert execute.plan(migrated, loaded, first).transitions["orders"] == expected
    result = execute.run(migrated, loaded, first, secret=SECRET)
    assert result.status == "succeeded", result.failures
    assert result.counts["orders"] == expected
    assert rows(migrated) == {
        2: (*MASKED, 20),
        3: (8, "bob@x.test", "Bob", "High St 2", 30),
        4: (None, None, None, "erased", 40),
        5: (*ANN, 50),
    }
    assert mask_entries(migrated) == [("orders", "anonymise", 3)]
    with migrated.connect() as conn:
        er = store.erasure_requests
        assert conn.execute(sa.select(er.c.status).where(er.c.id == request)).scalar_one() == "open"
        # Active records keep no state row: the mask is not a lifecycle state.
        assert conn.execute(sa.select(sa.func.count()).select_from(store.record_states)).scalar_one() == 0
    text = explain(db_url, path, "2", "2026-06-01")
    assert f"masked by erasure request {request} (the run of 2026-06-01 00:00 UTC): email, name, street" in text
    assert "next: active->purged on 2031-05-02 00:00" in text

    # The same as-of again: nothing is masked twice.
    again = execute.run(migrated, loaded, first, secret=SECRET)
    assert again.counts.get("orders", {}) == {}

    # The hold released: 5 is masked and the request is settled as erased.
    with migrated.begin() as conn:
        hold = conn.execute(sa.select(store.holds.c.id)).scalar_one()
        subjects.release_hold(conn, hold, released_by="t", reason="settled", secret=SECRET)
    second = dt.datetime(2026, 6, 2, tzinfo=UTC)
    assert execute.plan(migrated, loaded, second).transitions["orders"] == {"erasure_mask": 1}
    assert execute.run(migrated, loaded, second, secret=SECRET).counts["orders"] == {"erasure_mask": 1}
    assert rows(migrated)[5] == (*MASKED, 50)
    with migrated.connect() as conn:
        er = store.erasure_requests
        status = conn.execute(sa.select(er.c.status, er.c.outcome).where(er.c.id == request)).one()
    assert tuple(status) == ("processed", "erased")
    assert mask_entries(migrated) == [("orders", "anonymise", 3), ("orders", "anonymise", 1)]

    # 2031-06-01: 2 (2024-05-01 + 7 years) and Bob's 3 are past their terms; 4 and 5 are not.
    late = dt.datetime(2031, 6, 1, tzinfo=UTC)
    assert execute.run(migrated, loaded, late, secret=SECRET).counts["orders"] == {"active->purged": 2}
    assert rows(migrated) == {4: (None, None, None, "erased", 40), 5: (*MASKED, 50)}
    with migrated.connect() as conn:
        em = store.erasure_masks
        assert sorted(conn.execute(sa.select(em.c.record_key)).scalars()) == ["4", "5"]


_LIFECYCLE = "    lifecycle:\n      - to: purged\n        action: delete\n"
_DEACTIVATE = "    lifecycle:\n      - to: inactive\n        action: deactivate\n        set: {name: x}\n"
_REVIEWS = """\
  reviews:
    table: shop_reviews
    key: id
    email: email
    basis: consent
    follows: {dataset: orders, by: email, on: {purged: purged}}
    lifecycle:
      - to: purged
        action: delete
"""
REFUSED = [
    ([("keep_until: purged", "keep_until: archived")], "on_erasure.keep_until: state 'archived' is not in"),
    ([(_LIFECYCLE, _DEACTIVATE)], "on_erasure.keep_until: state 'purged' is not in this dataset's lifecycle"),
    (
        [("keep_until: purged", "keep_until: inactive"), (_LIFECYCLE, _DEACTIVATE + _LIFECYCLE.split("\n", 1)[1])],
        "with 'inactive' the masked record would not be purged by its clock",
    ),
    ([("mask: {name: null,", "mask: {created_at: null, name: null,")], "on_erasure.mask.created_at: a clock reads"),
    ([("mask: {name: null,", "mask: {id: null, name: null,")], "on_erasure.mask.id: the key reads id"),
    (
        [(_LIFECYCLE, _LIFECYCLE + _REVIEWS)],
        "shop.yaml:14: datasets.orders.on_erasure.mask.email: dataset 'reviews' reads shop_orders.email; masking",
    ),
    (
        [("    email: email\n", "    email: email\n    erasure_where: {email: {not: null}}\n")],
        "erasure_where: a partial erasure keeps the record on its own term",
    ),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED)
def test_a_partial_erasure_that_cannot_take_effect_is_refused(
    tmp_path: Path, changes: list[tuple[str, str]], message: str
) -> None:
    """Refused at load time, located by file and line, with the reason it could not take effect."""
    text = PACK
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(PackError) as info:
        load_file(write(tmp_path, text))
    assert message in str(info.value)
    assert "shop.yaml:" in str(info.value)


def test_check_refuses_with_exit_2_and_the_line(tmp_path: Path) -> None:
    """The CLI says it in one line, exit 2: the mask would erase the clock the tax term runs from."""
    path = write(tmp_path, PACK.replace("mask: {name: null,", "mask: {created_at: null, name: null,"))
    out = CliRunner().invoke(main, ["check", "--rules", str(path)])
    assert out.exit_code == 2, out.output
    assert "shop.yaml:14: datasets.orders.on_erasure.mask.created_at: a clock reads created_at" in out.output
    assert "Traceback" not in out.output


def test_check_db_names_a_mask_column_the_table_lacks(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A typo in the mask is found by check --db, before a run would fail on it."""
    create(migrated)
    path = write(tmp_path, PACK.replace("mask: {name: null,", "mask: {nmae: null,"))
    out = CliRunner().invoke(main, ["check", "--rules", str(path), "--db", db_url])
    assert out.exit_code == 2, out.output
    assert "nmae" in out.output and "on_erasure mask column" in out.output


def test_two_shards_mask_what_one_run_masks(migrated: sa.Engine, tmp_path: Path) -> None:
    """A sharded run masks each record once, in the shard that holds it; the group settles the request."""
    create(migrated)
    loaded = load_file(write(tmp_path))
    with migrated.begin() as conn:
        request = subjects.add_request(
            conn, subject_key="7", email="ann@x.test", received=dt.date(2026, 5, 20), pack=loaded.pack, secret=SECRET
        )
    first = dt.datetime(2026, 6, 1, tzinfo=UTC)
    results = [
        execute.run_shard(migrated, loaded, first, secret=SECRET, shard=ShardSpec(index, 2), run_group="g")
        for index in range(2)
    ]
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    masked = sum(r.counts.get("orders", {}).get("erasure_mask", 0) for r in results)
    purged = sum(r.counts.get("orders", {}).get("active->purged", 0) for r in results)
    assert (masked, purged) == (4, 1)  # 1, 2, 4 and 5 (no hold here); 1 is also past its term
    assert rows(migrated) == {
        2: (*MASKED, 20),
        3: (8, "bob@x.test", "Bob", "High St 2", 30),
        4: (None, None, None, "erased", 40),
        5: (*MASKED, 50),
    }
    with migrated.connect() as conn:
        er = store.erasure_requests
        status = conn.execute(sa.select(er.c.status, er.c.outcome).where(er.c.id == request)).one()
    assert tuple(status) == ("processed", "erased")
