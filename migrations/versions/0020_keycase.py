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
that differ only in case; record keys within one dataset, subject keys
anywhere), rather than merging them or leaving some tables
converted and others not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from retention.store.key_columns import KeyColumns, alter_statements, refuse_merged

revision = "0020_keycase"
down_revision = "0019_pdrop"
branch_labels = None
depends_on = None

BINARY = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"

# This revision's key columns, written out: a later table added to the engine must not change what this
# revision does on an older database. Record keys are unique within their dataset, subject keys globally
# (retention.store.key_columns.KeyColumns); the helpers there are frozen with this revision.
KEYS: KeyColumns = {
    "retention_record_states": {"record_key": "dataset", "subject_key": None, "leader_key": "dataset"},
    "retention_archive": {"record_key": "dataset"},
    "retention_erasure_masks": {"record_key": "dataset"},
    "retention_review_items": {"record_key": "dataset"},
    "retention_holds": {"record_key": "dataset", "subject_key": None},
    "retention_erasure_requests": {"subject_key": None},
}


def _modify(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    for statement in alter_statements(bind, KEYS, collation):
        op.execute(sa.text(statement))


def upgrade() -> None:
    _modify(BINARY)


def _refuse_twins() -> None:
    """Refuse the downgrade, before its first ``ALTER``, if any listed column holds keys the old collation merges.

    Every column is checked under the collation (and character set) its
    table restores (see :func:`retention.store.key_columns.refuse_merged`).
    """
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return

    def restored(table: str) -> tuple[str, str]:
        collation, charset = bind.execute(
            sa.text(
                "SELECT t.table_collation, c.character_set_name FROM information_schema.tables t "
                "JOIN information_schema.collations c ON c.collation_name = t.table_collation "
                "WHERE t.table_schema = DATABASE() AND t.table_name = :t"
            ),
            {"t": table},
        ).one()
        return collation, f"CONVERT({{column}} USING {charset}) COLLATE {collation}"

    refuse_merged(bind, KEYS, revision, restored, "differing only in case or accents")


def downgrade() -> None:
    _refuse_twins()
    # No character set or collation: the table's default, which the columns had before.
    _modify("")
