"""Cheaper pseudonym indexes on the ledger items (issue 22): prefix keys on MariaDB, a hash index on PostgreSQL.

Revision ID: 0016_compact
Revises: 0015_lean
Create Date: 2026-12-06 23:00:00

The three indexes of ``0015_lean`` take one random-order insert each per
item, the largest part of an audited purge. The values are 64-character hex
HMACs and lookups only ever ask for equality: an index on the first 16
characters (64 bits) narrows a lookup to its rows, and the full value is then
compared on each. Measured (bench/RESULTS.md,
"cheaper pseudonym indexes"), in SQL: on MariaDB a 16-character prefix index costs
about 40 % less per insert than the full key, while ascii/binary collations
and BINARY(32) columns did not measurably help; on PostgreSQL a hash index
on the record pseudonym costs about a third of the B-tree's, and C collation
or bytea did not measurably help. The subject and e-mail pseudonyms keep a
B-tree on PostgreSQL: many items share one (a person's records), and a hash
bucket's overflow chain is walked on every insert of a repeated value.
Stored values, the format-4 leaf text and every reader are unchanged, so no
row is rewritten; SQLite's indexes already compare bytes and stay as they are.
"""

from __future__ import annotations

from typing import Any

from alembic import op

revision = "0016_compact"
down_revision = "0015_lean"
branch_labels = None
depends_on = None

_TABLE = "retention_ledger_items"
_COLUMNS = ("record_pseudonym", "subject_pseudonym", "email_pseudonym")
_PREFIX = 16
"""Characters of a pseudonym a MariaDB/MySQL index keeps (store/tables.py says the same)."""


def _recreate(compact: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for column in _COLUMNS:
        name = op.f(f"ix_{_TABLE}_{column}")
        op.drop_index(name, table_name=_TABLE)
        options: dict[str, Any] = {}
        if compact:
            # By dialect name: a mariadb:// URL's dialect reads "mariadb_" options only.
            options["mysql_length"] = options["mariadb_length"] = _PREFIX
            if column == "record_pseudonym":
                options["postgresql_using"] = "hash"
        op.create_index(name, _TABLE, [column], **options)


def upgrade() -> None:
    _recreate(compact=True)


def downgrade() -> None:
    _recreate(compact=False)
