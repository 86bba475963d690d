"""Compact pseudonym indexes on the ledger items on SQLite: the first 16 characters of each pseudonym (issue 22).

Revision ID: 0017_sqlitepurge
Revises: 0016_compact
Create Date: 2026-12-07 06:15:00

``0016_compact`` made these indexes compact on MariaDB (16-character
prefixes) and PostgreSQL (a hash index for the record pseudonym) and left
SQLite's full 64-character B-trees. Every purged record inserts into them at
a random place, and each batch dirties nearly every leaf page of both, which
the WAL then rewrites batch after batch. An index on the expression
``substr(column, 1, 16)`` (64 bits of the HMAC) keeps a quarter of the key:
measured in SQL alone (bench/RESULTS.md, "SQLite audited purge, compact
item indexes"), the three indexes cost about half as much per item at 300k
items. Lookups ask for the prefix and the full value
(:meth:`retention.dialects.base.Dialect.pseudonym_in`), so they use the
index and still return only exact matches. The index names stay those of
``store/tables.py``; stored values and every reader's results are unchanged,
so no row is rewritten. A no-op on PostgreSQL and MariaDB/MySQL.
"""

from __future__ import annotations

from alembic import op

revision = "0017_sqlitepurge"
down_revision = "0016_compact"
branch_labels = None
depends_on = None

_TABLE = "retention_ledger_items"
_COLUMNS = ("record_pseudonym", "subject_pseudonym", "email_pseudonym")
_PREFIX = 16
"""Characters of a pseudonym SQLite's index keeps (store/tables.py's PSEUDONYM_PREFIX, as on MariaDB)."""


def _recreate(compact: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for column in _COLUMNS:
        name = f"ix_{_TABLE}_{column}"
        key = f"substr({column}, 1, {_PREFIX})" if compact else column
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON {_TABLE} ({key})")


def upgrade() -> None:
    _recreate(compact=True)


def downgrade() -> None:
    _recreate(compact=False)
