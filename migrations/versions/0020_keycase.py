"""Record and subject keys compared byte by byte on MariaDB/MySQL: utf8mb4_bin (issue 22, branch keys).

Revision ID: 0020_keycase
Revises: 0019_pdrop
Create Date: 2026-12-07 15:40:00

A source's key column may compare byte by byte (utf8mb4_bin, any _bin or
_cs collation) and hold 'A' and 'a' as two records. The engine's tables
kept those keys in the database's default collation, on MariaDB usually a
case-insensitive one (utf8mb4_general_ci, utf8mb4_unicode_520_ci,
uca1400_ai_ci): in a primary key the two records collided (a duplicate
key that failed the batch), and a lookup by one found the other's state or
payload. The engine already compares source keys with its own under an
explicit utf8mb4_bin (``Dialect.key_text``), so the stored columns now
hold keys the way they are compared.

Every engine column that holds a source's record or subject key:
record states (record, subject, leader), archive payloads, erasure masks,
review items (record), holds (record, subject), erasure requests
(subject). Each keeps its type, nullability and comment (read from the
catalog, as the earlier migrations left them); its indexes are rebuilt by
the same statement. One ``ALTER TABLE`` per table: MariaDB copies the
table to change a collation in a key (ALGORITHM=COPY, the table locked
for writes meanwhile); docs/operations.md says so.

PostgreSQL and SQLite are left as they are: a PostgreSQL database's
default collation is deterministic (two strings are equal only when their
bytes are), and SQLite compares with BINARY.

Downgrade restores the table's default collation; it fails with a
duplicate key if the tables by then hold two keys that differ only in
case (which the old collation cannot keep apart), rather than merging them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_keycase"
down_revision = "0019_pdrop"
branch_labels = None
depends_on = None

COLUMNS: dict[str, tuple[str, ...]] = {
    "retention_record_states": ("record_key", "subject_key", "leader_key"),
    "retention_archive": ("record_key",),
    "retention_erasure_masks": ("record_key",),
    "retention_review_items": ("record_key",),
    "retention_holds": ("record_key", "subject_key"),
    "retention_erasure_requests": ("subject_key",),
}
"""The engine's columns that hold a source's record or subject key, by table."""

BINARY = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"


def _modify(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    quote = bind.dialect.identifier_preparer.quote
    for table, columns in COLUMNS.items():
        found = bind.execute(
            sa.text(
                "SELECT column_name, column_type, is_nullable, column_comment FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = :t"
            ),
            {"t": table},
        ).all()
        current = {name.lower(): (kind, nullable, comment) for name, kind, nullable, comment in found}
        parts = []
        for column in columns:
            kind, nullable, comment = current[column]
            null = "NULL" if nullable == "YES" else "NOT NULL"
            said = f" COMMENT {_literal(comment)}" if comment else ""
            parts.append(f"MODIFY {quote(column)} {kind} {collation} {null}{said}")
        op.execute(sa.text(f"ALTER TABLE {quote(table)} {', '.join(parts)}"))


def _literal(text: str) -> str:
    """A string literal for DDL (no bind parameters there): quotes and backslashes doubled, colons escaped.

    The statement goes through ``sa.text``, which would take ``:word`` for a bind parameter.
    """
    return "'" + text.replace("\\", "\\\\").replace("'", "''").replace(":", "\\:") + "'"


def upgrade() -> None:
    _modify(BINARY)


def downgrade() -> None:
    # No character set or collation: the table's default, which the columns had before.
    _modify("")
