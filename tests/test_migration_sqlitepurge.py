"""Migration 0017: SQLite's item pseudonym indexes on 16-character prefixes, a no-op elsewhere (issue 22)."""

from __future__ import annotations

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.ledger import items as ledger_items
from retention.store import migrate
from retention.store import tables as store

NAMES = ("record_pseudonym", "subject_pseudonym", "email_pseudonym")
RECORD, SUBJECT, MAIL = "ab" * 32, "cd" * 32, "ef" * 32
SECRET = b"s" * 32


def _index_definitions(conn: sa.Connection) -> dict[str, str]:
    """Each item pseudonym index as the server describes it (its DDL, definition or key parts)."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(
            sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'retention_ledger_items'")
        )
    elif conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = 'retention_ledger_items' AND schemaname = current_schema()"
            )
        )
    else:
        shown = conn.execute(sa.text("SHOW INDEX FROM retention_ledger_items")).mappings()
        rows = [(r["Key_name"], f"{r['Column_name']} {r['Sub_part']} {r['Index_type']}") for r in shown]
    return {name: str(sql) for name, sql in rows if name and name.startswith("ix_")}


def _found(conn: sa.Connection) -> list[tuple[str, str]]:
    """The kept item, found by each of its pseudonyms through the dialect's lookup condition."""
    items, dialect = store.ledger_items, dialect_for(conn)
    found = []
    for column, value in zip(NAMES, (RECORD, SUBJECT, MAIL), strict=True):
        query = sa.select(items.c.record_pseudonym).where(dialect.pseudonym_in(items.c[column], [value, "0" * 64]))
        found += [(column, row) for row in conn.execute(query).scalars()]
    return found


def test_compact_sqlite_indexes_up_and_down(engine: sa.Engine) -> None:
    """0017 keys SQLite's three indexes on ``substr(column, 1, 16)`` and its downgrade restores them; elsewhere
    nothing changes; an item is kept and found by each pseudonym throughout."""
    migrate.upgrade(engine, "0016_compact")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger_items "
                "(entry_seq, idx, record_pseudonym, subject_pseudonym, email_pseudonym, due_at) "
                "VALUES (1, 0, :r, :s, :m, '2026-01-01 00:00:00')"
            ),
            {"r": RECORD, "s": SUBJECT, "m": MAIL},
        )
        before = _index_definitions(conn)
    assert sorted(before) == sorted(f"ix_retention_ledger_items_{n}" for n in NAMES)
    for revision in ("head", "0016_compact", "head"):
        if revision == "head":
            migrate.upgrade(engine)
        else:
            migrate.downgrade(engine, revision)
        with engine.connect() as conn:
            now = _index_definitions(conn)
            assert _found(conn) == [(n, RECORD) for n in NAMES], revision
            if engine.dialect.name != "sqlite" or revision != "head":
                assert now == before, revision
                continue
            assert sorted(now) == sorted(before)
            items = store.ledger_items
            for name in NAMES:
                assert now[f"ix_retention_ledger_items_{name}"] == (
                    f"CREATE INDEX ix_retention_ledger_items_{name} ON retention_ledger_items (substr({name}, 1, 16))"
                )
                query = sa.select(items.c.idx).where(dialect_for(conn).pseudonym_in(items.c[name], [RECORD]))
                sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
                assert f"USING INDEX ix_retention_ledger_items_{name} (<expr>=?)" in str(plan), plan


def test_lookup_finds_the_kept_item_after_the_upgrade(engine: sa.Engine) -> None:
    """``ledger lookup`` by record finds an item written before 0017, through the compact index after it."""
    migrate.upgrade(engine, "0016_compact")
    key = ledger_items.run_key(SECRET, "r1")
    record = ledger_items.record_pseudonym(key, "events", "42")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_runs (id, mode, status, pack_id, pack_digest, as_of, started_at) "
                "VALUES ('r1', 'run', 'succeeded', 'p', :d, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            {"d": "0" * 64},
        )
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger (seq, recorded_at, run_id, dataset, transition, count, prev_hash, hash, "
                "format, items) VALUES (1, '2026-01-01 00:00:00', 'r1', 'events', 'active->purged', 1, :z, :z, 4, 1)"
            ),
            {"z": "0" * 64},
        )
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger_items (entry_seq, idx, record_pseudonym, due_at) "
                "VALUES (1, 0, :r, '2026-01-01 00:00:00')"
            ),
            {"r": record},
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        found = ledger_items.lookup(conn, SECRET, dataset="events", record_key="42")
        assert [(r["seq"], r["item"], r["record_pseudonym"]) for r in found] == [(1, 0, record)]
        assert ledger_items.lookup(conn, SECRET, dataset="events", record_key="43") == []
