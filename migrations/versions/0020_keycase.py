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
for writes meanwhile, and free disk about the table's size, the archive's
LONGTEXT payloads included); docs/dialects.md (``key_text``) says so.

PostgreSQL and SQLite are left as they are: a PostgreSQL database's
default collation is deterministic (two strings are equal only when their
bytes are), and SQLite compares with BINARY.

Downgrade restores the table's default collation (and character set: a
character outside it stored since fails the ALTER in strict mode, or turns
into '?'). It is refused before its first ALTER, nothing changed, if any
listed column by then holds two keys that collation takes for one (keys
that differ only in case), rather than merging them or leaving some tables
converted and others not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from retention.errors import ConfigError

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


def _refuse_twins() -> None:
    """Refuse the downgrade, before its first ``ALTER``, if any listed column holds keys the old collation merges.

    MariaDB changes one table per non-transactional ``ALTER``: a downgrade that
    failed on the third table (a duplicate key) would leave the first two back
    in their case-insensitive default while the database still says 0020, so
    they would collide again with no sign of it, and a later upgrade would be
    a no-op. Every column is checked first, under the collation (and
    character set) its table restores: two values that are distinct byte by
    byte but equal there, in one column, refuse it (a subject's too: the old
    collation would take two subjects for one, a hold or erasure request on
    one reaching the other's records). The message names the table and
    column, never the keys.
    """
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    quote = bind.dialect.identifier_preparer.quote
    for table, columns in COLUMNS.items():
        collation, charset = bind.execute(
            sa.text(
                "SELECT t.table_collation, c.character_set_name FROM information_schema.tables t "
                "JOIN information_schema.collations c ON c.collation_name = t.table_collation "
                "WHERE t.table_schema = DATABASE() AND t.table_name = :t"
            ),
            {"t": table},
        ).one()
        for column in columns:
            restored = f"CONVERT({quote(column)} USING {charset}) COLLATE {collation}"
            twins = bind.execute(
                sa.text(
                    f"SELECT 1 FROM {quote(table)} WHERE {quote(column)} IS NOT NULL "
                    f"GROUP BY {restored} HAVING COUNT(DISTINCT {quote(column)}) > 1 LIMIT 1"
                )
            ).first()
            if twins is not None:
                raise ConfigError(
                    f"refusing to downgrade below 0020_keycase: {table}.{column} holds keys that {collation} takes "
                    "for one (differing only in case or accents); nothing was changed"
                )


def downgrade() -> None:
    _refuse_twins()
    # No character set or collation: the table's default, which the columns had before.
    _modify("")
