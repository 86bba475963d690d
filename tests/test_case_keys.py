"""Text keys that differ only in case: two records, two states, two payloads, two holds' worth of decisions.

A source key column may compare byte by byte (MariaDB utf8mb4_bin, any
_bin or _cs collation) and hold 'A' and 'a' as two records. The engine's
own tables keep those keys in primary keys and indexes (record states,
archive payloads, erasure masks, review items; holds and erasure requests
compared with them): in a case-insensitive collation (MariaDB's usual
database default) the two collided, a duplicate key or one record's row
taken for the other's. Migration 0020_keycase gives those columns
utf8mb4_bin on MariaDB/MySQL.

PostgreSQL and SQLite pass without it, and are run to hold every database
to the same hand-computed outcome: a PostgreSQL database's default
collation is deterministic (equal only when byte-equal, ties broken by
``strcmp``; a nondeterministic collation cannot be a database's default),
and SQLite compares text with BINARY unless a column says otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from scaffold import loaded_pack, utc_pack, yearly_dataset

from retention.engine import execute, set_purge, shred
from retention.ledger import items as ledger_items
from retention.ledger.verification import verify
from retention.store import tables as store
from retention.store.config import create_engine
from retention.subjects import review
from retention.subjects.events import add_request, place_hold

KEY = bytes(range(32))
UTC = dt.UTC
FIRST = dt.datetime(2025, 1, 1, tzinfo=UTC)
SECOND = dt.datetime(2028, 1, 1, tzinfo=UTC)
OLD = dt.datetime(2020, 3, 1, 12, tzinfo=UTC)  # archive due 2021-03-02, its payload's purge 2024-03-03
MID = dt.datetime(2023, 3, 1, 12, tzinfo=UTC)  # archive due 2024-03-02, its payload's purge 2027-03-02

PACK = """
pack: case-keys
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
batch_size: 3
datasets:
  cased:
    table: ck_cased
    key: id
    subject_key: user_id
    basis: one year, then the archive
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: archived
        action: archive
        columns: [id, note, collected]
        then: delete
      - to: purged
        after: P3Y
"""

TWINS: dict[str, tuple[str, Callable[[str], str]]] = {
    # A key's twin differs only in case: a _bin source (MariaDB utf8mb4_bin) keeps them apart.
    "case": ("utf8mb4_bin", str.lower),
    # Only by trailing spaces: a NO PAD source (MariaDB utf8mb4_nopad_bin) keeps them apart, where PAD SPACE
    # collations (utf8mb4_bin, the _ci defaults) take 'A' and 'A ' for one key.
    "spaces": ("utf8mb4_nopad_bin", lambda key: key + " "),
}


def _rows(twin: Callable[[str], str]) -> list[tuple[str, str, dt.datetime]]:
    """Every key has a twin, and each twin has its own fate."""
    return [
        ("P", "s1", OLD),  # archived and purged in the first run
        (twin("P"), "s2", OLD),  # the same, on its own
        ("A", "s1", MID),  # archived in the first run, purged in the second
        (twin("A"), "s3", MID),  # the same, its own payload and state
        ("R", "s4", MID),  # held by a record hold on "R"
        (twin("R"), "s4", MID),  # not held: "R"'s hold is not its
        ("H1", "H", MID),  # held by a subject hold on "H"
        (twin("H1"), twin("H"), MID),  # subject "h" (or "H "): not held
    ]


ROWS = _rows(str.lower)


def _source(engine: sa.Engine, twins: str = "case") -> sa.Table:
    """The source table, its key compared byte by byte (MariaDB: the collation of ``TWINS[twins]``), and holds."""
    collation, twin = TWINS[twins]
    table = _keyed_table(engine, "ck_cased", collation, _rows(twin))
    with engine.begin() as conn:
        place_hold(conn, scope="record", reason="t", placed_by="t", secret=KEY, dataset="cased", record_key="R")
        place_hold(conn, scope="subject", reason="t", placed_by="t", secret=KEY, subject_key="H")
    return table


def _run(engine: sa.Engine, as_of: dt.datetime) -> tuple[execute.RunResult, list[dict[str, Any]]]:
    loaded = loaded_pack(PACK)
    with structlog.testing.capture_logs() as logs:
        result = execute.run(engine, loaded, as_of, secret=KEY)
    return result, logs


def _world(engine: sa.Engine, table: sa.Table) -> dict[str, Any]:
    a, rs = store.archive, store.record_states
    with engine.connect() as conn:
        payloads = {
            r.record_key: json.loads(r.payload) for r in conn.execute(sa.select(a).where(a.c.dataset == "cased"))
        }
        states = {
            r.record_key: (r.state, r.subject_key) for r in conn.execute(sa.select(rs).where(rs.c.dataset == "cased"))
        }
        left = set(conn.execute(sa.select(table.c.id)).scalars())
    return {"payloads": payloads, "states": states, "left": left}


@pytest.mark.parametrize("twins", sorted(TWINS))
@pytest.mark.parametrize("path", ["per-record", "set-based"])
def test_keys_that_differ_only_in_case_are_two_records(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, path: str, twins: str
) -> None:
    """Archive then purge, a hold on one twin only, a state and a payload each: the outcome computed by hand.

    Twins differ only in case, or only by trailing spaces (see ``TWINS``). Plan
    counts what run does; each archived payload is read back by its own key.
    """
    table = _source(migrated, twins)
    twin = TWINS[twins][1]
    if path == "per-record":
        monkeypatch.setenv(set_purge.SWITCH, "0")
    loaded = loaded_pack(PACK)
    assert execute.plan(migrated, loaded, FIRST).transitions["cased"] == {"active->archived": 6, "archived->purged": 2}
    first, logs = _run(migrated, FIRST)
    assert (first.status, first.failures) == ("succeeded", {})
    events = {e["event"] for e in logs}
    assert ("archive_set_based" in events) == (path == "set-based"), events
    assert first.counts["cased"] == {"active->archived": 6, "archived->purged": 2}
    world = _world(migrated, table)
    assert world["left"] == {"R", "H1"}
    assert world["states"] == {
        "A": ("archived", "s1"),
        twin("A"): ("archived", "s3"),
        twin("R"): ("archived", "s4"),
        twin("H1"): ("archived", twin("H")),
    }
    archived = ("A", twin("A"), twin("R"), twin("H1"))
    assert {k: (p["id"], p["note"]) for k, p in world["payloads"].items()} == {k: (k, f"note of {k}") for k in archived}
    with migrated.connect() as conn:
        for key in archived:
            shown = shred.read_payload(conn, None, "cased", key)
            assert shown is not None and json.loads(shown)["id"] == key, key

    assert execute.plan(migrated, loaded, SECOND).transitions["cased"] == {"archived->purged": 4}
    second, _ = _run(migrated, SECOND)
    assert (second.status, second.failures) == ("succeeded", {})
    assert second.counts["cased"] == {"archived->purged": 4}
    world = _world(migrated, table)
    assert world == {"payloads": {}, "states": {}, "left": {"R", "H1"}}
    with migrated.connect() as conn:
        for key, transitions in {
            "A": ["active->archived", "archived->purged"],
            twin("A"): ["active->archived", "archived->purged"],
            "P": ["active->archived", "archived->purged"],
            "R": ["hold_placed"],  # its hold only; its twin has none
            twin("R"): ["active->archived", "archived->purged"],
        }.items():
            found = ledger_items.lookup(conn, KEY, dataset="cased", record_key=key)
            assert [f["transition"] for f in found] == transitions, key
    assert verify(migrated, secret=KEY).ok


PAD_PACK = utc_pack("pad-source", "\n" + yearly_dataset("padded", "ck_padded", "one year", subject_key="user_id"))


@pytest.mark.parametrize("path", ["per-record", "set-based"])
def test_a_hold_typed_without_the_keys_trailing_space_is_not_its(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A PAD SPACE source (MariaDB utf8mb4_bin) holds 'c ' and subject 'd ': holds typed 'c' and 'd ' hold neither.

    Python compares keys apart ('c' != 'c '); the SQL (plan, the set-based
    statements) compared them in a PAD SPACE collation, which took them for
    one. Both paths: 'c ' and 'd' purged, 'e' held by its own hold.
    """
    if path == "per-record":
        monkeypatch.setenv(set_purge.SWITCH, "0")
    rows = [("c ", "s1", MID), ("d", "d", MID), ("e", "s2", MID)]
    table = _keyed_table(migrated, "ck_padded", "utf8mb4_bin", rows)
    with migrated.begin() as conn:
        place_hold(conn, scope="record", reason="t", placed_by="t", secret=KEY, dataset="padded", record_key="c")
        place_hold(conn, scope="subject", reason="t", placed_by="t", secret=KEY, subject_key="d ")
        place_hold(conn, scope="record", reason="t", placed_by="t", secret=KEY, dataset="padded", record_key="e")
    loaded = loaded_pack(PAD_PACK)
    assert execute.plan(migrated, loaded, FIRST).transitions["padded"] == {"active->purged": 2}
    result = execute.run(migrated, loaded, FIRST, secret=KEY)
    assert (result.status, result.failures, result.counts["padded"]) == ("succeeded", {}, {"active->purged": 2})
    with migrated.connect() as conn:
        assert set(conn.execute(sa.select(table.c.id)).scalars()) == {"e"}


ERASURE_PACK = utc_pack(
    "case-erasure",
    yearly_dataset(
        "erased",
        "ck_erased",
        "ten years, erased on request",
        subject_key="user_id",
        period="P10Y",
        more="    on_erasure: purged\n",
    )
    + yearly_dataset(
        "masked",
        "ck_masked",
        "ten years, masked on request",
        subject_key="user_id",
        period="P10Y",
        more="    on_erasure:\n      mask: {note: null}\n      keep_until: purged\n",
    ),
)


def _subject_table(engine: sa.Engine, name: str, rows: list[tuple[str, str]]) -> sa.Table:
    """(id, user_id) rows collected in 2023, both columns compared byte by byte (MariaDB: utf8mb4_bin)."""
    return _keyed_table(engine, name, "utf8mb4_bin", [(k, s, MID) for k, s in rows])


def _erase(engine: sa.Engine, subject: str) -> None:
    """An erasure request for ``subject`` received 2024-12-20, and a run of ERASURE_PACK that succeeds."""
    loaded = loaded_pack(ERASURE_PACK)
    with engine.begin() as conn:
        add_request(conn, subject_key=subject, received=dt.date(2024, 12, 20), pack=loaded.pack, secret=KEY)
    result = execute.run(engine, loaded, dt.datetime(2025, 1, 1, tzinfo=UTC), secret=KEY)
    assert (result.status, result.failures) == ("succeeded", {})


def test_an_erasure_request_for_one_subject_leaves_its_twin(migrated: sa.Engine) -> None:
    """A request for subject 'E' purges and masks the records of 'E' only, not those of 'e'; twin record keys
    ('M', 'm', both of 'E') are masked each, two rows in the erasure masks. Outcome computed by hand."""
    erased = _subject_table(migrated, "ck_erased", [("K", "E"), ("k", "e")])
    masked = _subject_table(migrated, "ck_masked", [("M", "E"), ("m", "E"), ("N", "e")])
    _erase(migrated, "E")
    with migrated.connect() as conn:
        assert set(conn.execute(sa.select(erased.c.id, erased.c.user_id))) == {("k", "e")}
        assert set(conn.execute(sa.select(masked.c.id, masked.c.note))) == {
            ("M", None),
            ("m", None),
            ("N", "note of N"),
        }
        masks = store.erasure_masks
        assert set(conn.execute(sa.select(masks.c.dataset, masks.c.record_key))) == {("masked", "M"), ("masked", "m")}
    assert verify(migrated, secret=KEY).ok


FOLLOW_PACK = utc_pack(
    "case-followers",
    """
  accounts:
    table: ck_accounts
    key: id
    subject_key: id
    basis: one year after closing, then ten more inactive
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {note: closed}
      - to: purged
        after: P10Y
        action: delete
"""
    + yearly_dataset(
        "visits",
        "ck_visits",
        "with their account, through its key",
        period="P10Y",
        more='    follows: {dataset: accounts, via: user_id, "on": {inactive: purged}}\n',
    )
    + yearly_dataset(
        "profiles",
        "ck_profiles",
        "with their account, through the subject",
        subject_key="user_id",
        period="P10Y",
        more='    follows: {dataset: accounts, "on": {inactive: purged}}\n',
    ),
)

LATE = dt.datetime(2024, 6, 1, 12, tzinfo=UTC)  # inactive due 2025-06-02: not yet on FIRST


@pytest.mark.parametrize("twins", sorted(TWINS))
@pytest.mark.parametrize("path", ["per-record", "set-based"])
def test_followers_follow_their_own_leader_not_its_twin(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, path: str, twins: str
) -> None:
    """Account 'A' goes inactive, its twin does not yet: the visits (through ``via``) and the profiles (through
    the subject) of 'A' are purged, those of its twin stay. Outcome computed by hand."""
    collation, twin = TWINS[twins]
    if path == "per-record":
        monkeypatch.setenv(set_purge.SWITCH, "0")
    accounts = _keyed_table(migrated, "ck_accounts", collation, [("A", "A", MID), (twin("A"), twin("A"), LATE)])
    visits = _keyed_table(migrated, "ck_visits", collation, [("V1", "A", MID), ("V2", twin("A"), MID)])
    profiles = _keyed_table(migrated, "ck_profiles", collation, [("P1", "A", MID), ("P2", twin("A"), MID)])
    loaded = loaded_pack(FOLLOW_PACK)
    wanted = {
        "accounts": {"active->inactive": 1},
        "visits": {"active->purged": 1},
        "profiles": {"active->purged": 1},
    }
    assert _nonzero(execute.plan(migrated, loaded, FIRST).transitions) == wanted
    result = execute.run(migrated, loaded, FIRST, secret=KEY)
    assert (result.status, result.failures, _nonzero(result.counts)) == ("succeeded", {}, wanted)
    rs = store.record_states
    with migrated.connect() as conn:
        notes = set(conn.execute(sa.select(accounts.c.id, accounts.c.note)))
        assert notes == {("A", "closed"), (twin("A"), f"note of {twin('A')}")}
        assert set(conn.execute(sa.select(visits.c.id)).scalars()) == {"V2"}
        assert set(conn.execute(sa.select(profiles.c.id)).scalars()) == {"P2"}
        states = set(conn.execute(sa.select(rs.c.dataset, rs.c.record_key, rs.c.state)))
    assert states == {("accounts", "A", "inactive")}
    assert verify(migrated, secret=KEY).ok


REVIEW_PACK = utc_pack(
    "case-review",
    "\n"
    + yearly_dataset(
        "reviewed", "ck_reviewed", "one year, purged once reviewed", subject_key="user_id", more="    review: true\n"
    ),
)


@pytest.mark.parametrize("twins", sorted(TWINS))
def test_an_approved_review_item_purges_its_record_not_its_twin(migrated: sa.Engine, twins: str) -> None:
    """'K' and 'L' are filed for review, approved, purged; their twins, due later, are filed as items of their own
    (a duplicate review item if taken for the approved ones), and stay when that batch is rejected."""
    collation, twin = TWINS[twins]
    table = _keyed_table(
        migrated,
        "ck_reviewed",
        collation,
        [("K", "s1", MID), (twin("K"), "s2", LATE), ("L", "s3", MID), (twin("L"), "s4", LATE), ("M", "s5", SECOND)],
    )
    loaded = loaded_pack(REVIEW_PACK)
    assert execute.plan(migrated, loaded, FIRST).awaiting_review == {"reviewed": 2}
    first = execute.run(migrated, loaded, FIRST, secret=KEY)
    assert (first.status, _nonzero(first.counts)) == ("succeeded", {})
    with migrated.begin() as conn:
        (batch,) = review.list_batches(conn)
        assert {i["record_key"] for i in review.show_batch(conn, batch["id"])[1]} == {"K", "L"}
        review.decide(conn, batch["id"], approve=True, by="dpo", reason="due", secret=KEY)
    later = dt.datetime(2025, 7, 1, tzinfo=UTC)  # the twins' purge due 2025-06-02
    plan = execute.plan(migrated, loaded, later)
    assert (_nonzero(plan.transitions), plan.awaiting_review) == ({"reviewed": {"active->purged": 2}}, {"reviewed": 2})
    second = execute.run(migrated, loaded, later, secret=KEY)
    assert (second.status, second.failures, _nonzero(second.counts)) == (
        "succeeded",
        {},
        {"reviewed": {"active->purged": 2}},
    )
    with migrated.begin() as conn:
        assert set(conn.execute(sa.select(table.c.id)).scalars()) == {twin("K"), twin("L"), "M"}
        pending = [b for b in review.list_batches(conn) if b["status"] == "pending"]
        assert len(pending) == 1
        assert {i["record_key"] for i in review.show_batch(conn, pending[0]["id"])[1]} == {twin("K"), twin("L")}
        review.decide(conn, pending[0]["id"], approve=False, by="dpo", reason="kept", secret=KEY)
    third = execute.run(migrated, loaded, later, secret=KEY)
    assert (third.status, _nonzero(third.counts)) == ("succeeded", {})
    with migrated.connect() as conn:
        assert set(conn.execute(sa.select(table.c.id)).scalars()) == {twin("K"), twin("L"), "M"}
    assert verify(migrated, secret=KEY).ok


def _keyed_table(engine: sa.Engine, name: str, collation: str, rows: list[tuple[str, str, dt.datetime]]) -> sa.Table:
    """(id, user_id, collected) rows, each noted "note of <id>"; text columns in ``collation`` on MariaDB."""
    options: dict[str, Any] = {}
    if engine.dialect.name in ("mysql", "mariadb"):  # a "mariadb" dialect reads only "mariadb_" options
        options = {f"{engine.dialect.name}_charset": "utf8mb4", f"{engine.dialect.name}_collate": collation}
    md = sa.MetaData()
    table = sa.Table(
        name,
        md,
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column("user_id", sa.String(30)),
        sa.Column("note", sa.String(60)),
        sa.Column("collected", sa.DateTime(timezone=True)),
        **options,
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(), [{"id": k, "user_id": s, "note": f"note of {k}", "collected": c} for k, s, c in rows]
        )
    return table


def _nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {d: {t: n for t, n in per.items() if n} for d, per in counts.items() if any(per.values())}


@pytest.fixture
def mariadb_url(migrated: sa.Engine, db_url: str) -> Iterator[sa.Engine]:
    """The migrated test database through a ``mariadb://`` URL, which the product accepts (driver_url): a dialect
    named "mariadb", not "mysql"."""
    engine = create_engine(sa.make_url(db_url).set(drivername="mariadb").render_as_string(hide_password=False))
    assert engine.dialect.name == "mariadb"
    yield engine
    engine.dispose()


@pytest.mark.only_on("mariadb")
def test_a_mariadb_url_request_for_an_unknown_subject_finds_no_records(mariadb_url: sa.Engine) -> None:
    """A request for subject 'x' where only 'X' has records: "no records found", as Python compares.

    Through a ``mariadb://`` URL the key comparison once lost its collation
    and took 'X' for 'x': the request stayed open (review-maria 1).
    """
    _subject_table(mariadb_url, "ck_erased", [("K", "X")])
    _subject_table(mariadb_url, "ck_masked", [("M", "X")])
    _erase(mariadb_url, "x")
    with mariadb_url.connect() as conn:
        er = store.erasure_requests
        assert conn.execute(sa.select(er.c.status, er.c.outcome)).all() == [("processed", "no records found")]
        assert set(conn.execute(sa.select(sa.table("ck_erased", sa.column("id"))))) == {("K",)}
