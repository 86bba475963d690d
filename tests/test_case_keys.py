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
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
import yaml

from retention.engine import execute, set_purge
from retention.ledger import items as ledger_items
from retention.ledger.verification import verify
from retention.policy import validate_pack
from retention.store import tables as store
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

# Every key has a twin that differs only in case, and each twin has its own fate.
ROWS: list[tuple[str, str, dt.datetime]] = [
    ("P", "s1", OLD),  # archived and purged in the first run
    ("p", "s2", OLD),  # the same, on its own
    ("A", "s1", MID),  # archived in the first run, purged in the second
    ("a", "s3", MID),  # the same, its own payload and state
    ("R", "s4", MID),  # held by a record hold on "R"
    ("r", "s4", MID),  # not held: "R"'s hold is not its
    ("H1", "H", MID),  # held by a subject hold on "H"
    ("h1", "h", MID),  # subject "h": not held
]


def _cased_table(engine: sa.Engine, name: str, rows: list[tuple[str, str, dt.datetime]]) -> sa.Table:
    """(id, user_id, collected) rows, both keys compared byte by byte (MariaDB: utf8mb4_bin whatever the default)."""
    options: dict[str, Any] = {}
    if engine.dialect.name in ("mysql", "mariadb"):
        options = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
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


def _source(engine: sa.Engine) -> sa.Table:
    """The source table (ROWS), and a record hold on "R" and a subject hold on "H"."""
    table = _cased_table(engine, "ck_cased", ROWS)
    with engine.begin() as conn:
        place_hold(conn, scope="record", reason="t", placed_by="t", secret=KEY, dataset="cased", record_key="R")
        place_hold(conn, scope="subject", reason="t", placed_by="t", secret=KEY, subject_key="H")
    return table


def _run(engine: sa.Engine, as_of: dt.datetime) -> tuple[execute.RunResult, list[dict[str, Any]]]:
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
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


@pytest.mark.parametrize("path", ["per-record", "set-based"])
def test_keys_that_differ_only_in_case_are_two_records(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Archive then purge, a hold on one twin only, a state and a payload each: the outcome computed by hand."""
    table = _source(migrated)
    if path == "per-record":
        monkeypatch.setenv(set_purge.SWITCH, "0")
    first, logs = _run(migrated, FIRST)
    assert (first.status, first.failures) == ("succeeded", {})
    events = {e["event"] for e in logs}
    assert ("archive_set_based" in events) == (path == "set-based"), events
    assert first.counts["cased"] == {"active->archived": 6, "archived->purged": 2}
    world = _world(migrated, table)
    assert world["left"] == {"R", "H1"}
    assert world["states"] == {
        "A": ("archived", "s1"),
        "a": ("archived", "s3"),
        "r": ("archived", "s4"),
        "h1": ("archived", "h"),
    }
    assert {k: (p["id"], p["note"]) for k, p in world["payloads"].items()} == {
        k: (k, f"note of {k}") for k in ("A", "a", "r", "h1")
    }

    second, _ = _run(migrated, SECOND)
    assert (second.status, second.failures) == ("succeeded", {})
    assert second.counts["cased"] == {"archived->purged": 4}
    world = _world(migrated, table)
    assert world == {"payloads": {}, "states": {}, "left": {"R", "H1"}}
    with migrated.connect() as conn:
        for key, transitions in {
            "A": ["active->archived", "archived->purged"],
            "a": ["active->archived", "archived->purged"],
            "P": ["active->archived", "archived->purged"],
            "R": ["hold_placed"],  # its hold only; "r" has none
            "r": ["active->archived", "archived->purged"],
        }.items():
            found = ledger_items.lookup(conn, KEY, dataset="cased", record_key=key)
            assert [f["transition"] for f in found] == transitions, key
    assert verify(migrated, secret=KEY).ok


ERASURE_PACK = """
pack: case-erasure
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  erased:
    table: ck_erased
    key: id
    subject_key: user_id
    basis: ten years, erased on request
    on_erasure: purged
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P10Y
    lifecycle:
      - to: purged
        action: delete
  masked:
    table: ck_masked
    key: id
    subject_key: user_id
    basis: ten years, masked on request
    on_erasure:
      mask: {note: null}
      keep_until: purged
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P10Y
    lifecycle:
      - to: purged
        action: delete
"""


def _subject_table(engine: sa.Engine, name: str, rows: list[tuple[str, str]]) -> sa.Table:
    """(id, user_id) rows collected in 2023 (MID)."""
    return _cased_table(engine, name, [(k, s, MID) for k, s in rows])


def test_an_erasure_request_for_one_subject_leaves_its_twin(migrated: sa.Engine) -> None:
    """A request for subject 'E' purges and masks the records of 'E' only, not those of 'e'; twin record keys
    ('M', 'm', both of 'E') are masked each, two rows in the erasure masks. Outcome computed by hand."""
    erased = _subject_table(migrated, "ck_erased", [("K", "E"), ("k", "e")])
    masked = _subject_table(migrated, "ck_masked", [("M", "E"), ("m", "E"), ("N", "e")])
    loaded = validate_pack(yaml.safe_load(ERASURE_PACK), Path("<test>"), ERASURE_PACK)
    with migrated.begin() as conn:
        add_request(conn, subject_key="E", received=dt.date(2024, 12, 20), pack=loaded.pack, secret=KEY)
    result = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=UTC), secret=KEY)
    assert (result.status, result.failures) == ("succeeded", {})
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
