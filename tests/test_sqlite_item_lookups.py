"""Every reader that looks ledger items up by pseudonym reaches them by an index on SQLite, never by a scan (issue 22).

The items table grows by one row per record purged; a lookup that scans it
(``ledger lookup``, ``prove``, the person page, the audit's claims) would
grow with the ledger. The statements are the readers' own, captured as they
run, and SQLite is asked for its plan of each (``EXPLAIN QUERY PLAN``), before
and after ``ANALYZE`` gives it statistics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from retention.ledger import items as ledger_items
from retention.ledger import pseudonyms
from retention.reporting import ledger_audit
from retention.store import tables as store

pytestmark = pytest.mark.only_on("sqlite")

SECRET = b"k" * 32
RUN = "run-sqlitepurge-1"
ITEMS = 3000
"""Enough items that a scan and an index probe differ in SQLite's cost model."""


def _fill(conn: sa.Connection) -> None:
    """One run, three format-4 entries and their items: subjects repeat, a third of the items have an e-mail."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    conn.execute(
        store.runs.insert(),
        {
            "id": RUN,
            "mode": "run",
            "status": "succeeded",
            "pack_id": "p",
            "pack_digest": "0" * 64,
            "as_of": now,
            "started_at": now,
        },
    )
    key = ledger_items.run_key(SECRET, RUN)
    for seq in (1, 2, 3):
        conn.execute(
            store.ledger.insert(),
            {
                "seq": seq,
                "recorded_at": now,
                "run_id": RUN,
                "pack_id": "p",
                "dataset": "events",
                "transition": "active->purged",
                "prev_hash": "0" * 64,
                "hash": hashlib.sha256(b"%d" % seq).hexdigest(),
                "format": 4,
                "items": ITEMS // 3,
            },
        )
    rows = []
    for n in range(ITEMS):
        mail = pseudonyms.email_pseudonym(SECRET, f"u{n % 50}@example.com") if n % 3 == 0 else None
        rows.append(
            {
                "entry_seq": n // (ITEMS // 3) + 1,
                "idx": n % (ITEMS // 3),
                "record_pseudonym": ledger_items.record_pseudonym(key, "events", str(n)),
                "subject_pseudonym": ledger_items.subject_pseudonym(key, f"s{n % 200}"),
                "due_at": now,
                "email_pseudonym": None if mail is None else ledger_items.email_pseudonym(key, mail),
            }
        )
    conn.execute(store.ledger_items.insert(), rows)


@contextmanager
def _captured(conn: sa.Connection) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``conn`` runs that read the items table, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn_: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and store.ledger_items.name in statement:
            seen.append((statement, parameters))

    sa.event.listen(conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(conn, "before_cursor_execute", record)


def _plans(conn: sa.Connection, statements: list[tuple[str, Any]]) -> list[str]:
    return [
        "\n".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all())
        for sql, params in statements
    ]


READERS: dict[str, Callable[[sa.Connection], object]] = {
    "lookup by record": lambda c: ledger_items.lookup(c, SECRET, dataset="events", record_key="7"),
    "lookup by subject": lambda c: ledger_items.lookup(c, SECRET, subject_key="s7"),
    "lookup by e-mail": lambda c: ledger_items.lookup(c, SECRET, email="u3@example.com"),
    "an entry's items (verify, prove)": lambda c: ledger_items.entry_items(c, 2),
    "the audit's claims": lambda c: ledger_audit._matching(
        c,
        "events",
        "p",
        {(RUN, ledger_items.record_pseudonym(ledger_items.run_key(SECRET, RUN), "events", "7")): "7"},
    ),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_item_lookups_use_an_index(migrated: sa.Engine, reader: str) -> None:
    """Each reader's statements on the items search them by an index, with and without statistics."""
    with migrated.begin() as conn:
        _fill(conn)
    for analyzed in (False, True):
        with migrated.begin() as conn:
            if analyzed:
                conn.exec_driver_sql("ANALYZE")
            with _captured(conn) as statements:
                found = READERS[reader](conn)
            assert found, f"{reader}: found nothing, so nothing was checked"
            assert statements, f"{reader}: read no items"
            for plan in _plans(conn, statements):
                assert f"SCAN {store.ledger_items.name}" not in plan, (reader, analyzed, plan)
                assert f"SEARCH {store.ledger_items.name} USING" in plan, (reader, analyzed, plan)
