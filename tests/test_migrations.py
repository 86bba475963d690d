"""Migrations on every database: upgrade, downgrade, upgrade, and metadata parity."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from retention.store import migrate
from retention.store.tables import metadata


def test_upgrade_downgrade_upgrade(engine: sa.Engine) -> None:
    """The schema can be built, removed entirely and built again."""
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert not [t for t in sa.inspect(engine).get_table_names() if t.startswith("retention_")]
    migrate.upgrade(engine)
    assert set(metadata.tables) <= set(sa.inspect(engine).get_table_names())


def test_migrations_match_metadata(migrated: sa.Engine) -> None:
    """Autogenerate finds nothing to change: the migrations build exactly store/tables.py."""
    with migrated.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # MySQL reports comments and LONGTEXT variants in ways autogenerate cannot match.
    relevant = [d for d in diff if not (isinstance(d, list) or d[0] in {"modify_comment"})]
    assert relevant == []


def test_ledger_rows_cannot_be_updated_or_deleted(migrated: sa.Engine) -> None:
    """The database refuses UPDATE and DELETE on the ledger for the engine's connection."""
    with migrated.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger (seq, recorded_at, transition, count, prev_hash, hash) "
                "VALUES (1, '2026-01-01 00:00:00', 'test', 1, 'a', 'b')"
            )
        )
    for statement in ("UPDATE retention_ledger SET hash = 'c'", "DELETE FROM retention_ledger"):
        try:
            with migrated.begin() as conn:
                conn.execute(sa.text(statement))
        except sa.exc.DBAPIError as exc:
            assert "append-only" in str(exc.orig)
        else:
            raise AssertionError(f"{statement} was not refused")
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT hash FROM retention_ledger")).scalar_one() == "b"
