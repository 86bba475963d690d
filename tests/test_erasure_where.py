"""Issue 26 clause 6: ``where`` scopes the clock and lifecycle, ``erasure_where`` erasure's reach.

"Newsletter: kept 1 year after unsubscribing; erased on request": the clock
runs from ``unsubscribed_at``, so the records are the unsubscribed rows
(``where: {unsubscribed_at: {not: null}}``), but a still-subscribed person
who asks for erasure must be reached too. Expected sets are read by hand.
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
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"erasure-where-key"

PACK = """\
pack: newsletter
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  subscribers:
    table: newsletter
    key: id
    email: address
    basis: consent
    where: {unsubscribed_at: {not: null}}
    erasure_where: {address: {not: null}}
    on_erasure: inactive
    keep:
      - clock: {column: unsubscribed_at, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {active: 0}
      - to: purged
        after: P0D
        action: delete
"""

# id, address, unsubscribed_at
ROWS = [
    (1, "alice@example.com", dt.datetime(2020, 1, 1, 12, tzinfo=UTC)),  # a record, due by its clock
    (2, "bob@example.com", None),  # still subscribed: no record, but erasure reaches it
    (3, "carol@example.com", None),  # still subscribed, no request: untouched
    (4, None, None),  # no address: outside both
    (5, "Bob@Example.com", dt.datetime(2024, 5, 1, 12, tzinfo=UTC)),  # a record of bob, not due by its clock
]


def create(engine: sa.Engine) -> None:
    md = sa.MetaData()
    table = sa.Table(
        "newsletter",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("address", sa.String(100)),
        sa.Column("active", sa.Integer, nullable=False, server_default="1"),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), index=True),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "address": a, "active": 1, "unsubscribed_at": u} for i, a, u in ROWS])


def write(tmp_path: Path, text: str = PACK) -> Path:
    path = tmp_path / "newsletter.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def rows(engine: sa.Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {r.id: r.active for r in conn.execute(sa.text("SELECT id, active FROM newsletter"))}


def states(engine: sa.Engine) -> dict[str, str]:
    rs = store.record_states
    with engine.connect() as conn:
        return {r.record_key: r.state for r in conn.execute(sa.select(rs.c.record_key, rs.c.state))}


def test_erasure_reaches_rows_outside_where(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """bob's still-subscribed row is erased up to on_erasure; his record goes on through its lifecycle."""
    create(migrated)
    loaded = load_file(write(tmp_path))
    with migrated.begin() as conn:
        request = subjects.add_request(
            conn,
            subject_key=None,
            email="bob@example.com",
            received=dt.date(2024, 5, 1),
            pack=loaded.pack,
            secret=SECRET,
        )
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    out = CliRunner().invoke(
        main,
        ["explain", "--rules", str(write(tmp_path)), "--db", db_url, "--dataset", "subscribers", "--key", "2",
         "--as-of", "2024-06-01"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert (
        "outside where: not a record of the lifecycle of dataset subscribers; an erasure request reaches" in out.output
    )
    assert "due now: active->inactive (due 2024-05-01 00:00 UTC)" in out.output
    assert "inactive->purged" not in out.output and "skipped" not in out.output
    # 1: by its clock (inactive 2021-01-02, purged P0D later); 5: a record erased, so inactive then
    # purged; 2: outside where, the erasure takes it to inactive (deactivated) and no further.
    expected = {"active->inactive": 3, "inactive->purged": 2}
    summary = execute.plan(migrated, loaded, as_of)
    assert summary.transitions["subscribers"] == expected
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert result.status == "succeeded"
    assert result.counts["subscribers"] == expected
    assert rows(migrated) == {2: 0, 3: 1, 4: 1}
    assert states(migrated) == {"2": "inactive"}
    er = store.erasure_requests
    with migrated.connect() as conn:
        assert conn.execute(sa.select(er.c.status).where(er.c.id == request)).scalar_one() == "processed"

    # Years later: 2 is still no record of the lifecycle (not unsubscribed), so it stays inactive.
    later = dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert execute.plan(migrated, loaded, later).transitions.get("subscribers", {}) == {}
    assert execute.run(migrated, loaded, later, secret=SECRET).counts.get("subscribers", {}) == {}
    assert rows(migrated) == {2: 0, 3: 1, 4: 1}


def test_without_erasure_where_where_bounds_the_erasure(migrated: sa.Engine, tmp_path: Path) -> None:
    """The default reach is the dataset's records: bob's subscribed row stays (as before issue 26)."""
    create(migrated)
    loaded = load_file(write(tmp_path, PACK.replace("    erasure_where: {address: {not: null}}\n", "")))
    with migrated.begin() as conn:
        subjects.add_request(
            conn,
            subject_key=None,
            email="bob@example.com",
            received=dt.date(2024, 5, 1),
            pack=loaded.pack,
            secret=SECRET,
        )
    result = execute.run(migrated, loaded, dt.datetime(2024, 6, 1, tzinfo=UTC), secret=SECRET)
    assert result.counts["subscribers"] == {"active->inactive": 2, "inactive->purged": 2}
    assert rows(migrated) == {2: 1, 3: 1, 4: 1}


def test_records_outside_erasure_where_keep_their_term(migrated: sa.Engine, tmp_path: Path) -> None:
    """A record erasure_where leaves out moves by its clock alone, even while a request names its person."""
    create(migrated)
    # Only addresses at example.com... but bob's record 5 is written with capitals: reach by a
    # column test that excludes row 5 (unsubscribed in 2024) while keeping row 2.
    text = PACK.replace("erasure_where: {address: {not: null}}", "erasure_where: {unsubscribed_at: null}")
    loaded = load_file(write(tmp_path, text))
    with migrated.begin() as conn:
        subjects.add_request(
            conn,
            subject_key=None,
            email="bob@example.com",
            received=dt.date(2024, 5, 1),
            pack=loaded.pack,
            secret=SECRET,
        )
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    # 1: its clock (inactive, purged); 2: erased to inactive; 5: not reached, not due (clock 2024-05-01).
    expected = {"active->inactive": 2, "inactive->purged": 1}
    assert execute.plan(migrated, loaded, as_of).transitions["subscribers"] == expected
    assert execute.run(migrated, loaded, as_of, secret=SECRET).counts["subscribers"] == expected
    assert rows(migrated) == {2: 0, 3: 1, 4: 1, 5: 1}
    # 5 falls due by its own clock a year after unsubscribing.
    later = dt.datetime(2025, 6, 1, tzinfo=UTC)
    assert execute.run(migrated, loaded, later, secret=SECRET).counts["subscribers"] == {
        "active->inactive": 1,
        "inactive->purged": 1,
    }
    assert rows(migrated) == {2: 0, 3: 1, 4: 1}


def test_erasure_where_needs_on_erasure(tmp_path: Path) -> None:
    path = write(tmp_path, PACK.replace("    on_erasure: inactive\n", ""))
    with pytest.raises(PackError) as err:
        load_file(path)
    assert str(err.value) == (
        f"{path}:13: datasets.subscribers.erasure_where: erasure_where says which rows an erasure reaches, but "
        "the dataset has no on_erasure; add on_erasure or remove erasure_where"
    )


def test_check_db_checks_erasure_where(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    create(engine)
    ok = CliRunner().invoke(main, ["check", "--rules", str(write(tmp_path)), "--db", db_url])
    assert ok.exit_code == 0, ok.output
    assert "never reaches them" not in ok.output  # erasure_where answers the where-not-null warning
    bad = write(tmp_path, PACK.replace("erasure_where: {address: {not: null}}", "erasure_where: {adress: {not: null}}"))
    result = CliRunner().invoke(main, ["check", "--rules", str(bad), "--db", db_url])
    assert result.exit_code == 2, result.output
    assert "error: newsletter.adress: no such column (where)" in result.output
