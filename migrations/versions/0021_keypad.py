"""Record and subject keys that differ only by trailing spaces kept apart on MariaDB/MySQL (issue 22, branch keys2).

Revision ID: 0021_keypad
Revises: 0020_keycase
Create Date: 2026-12-07 19:00:00

0020_keycase gave the engine's key columns ``utf8mb4_bin``: byte order, but
PAD SPACE, so 'a' and 'a ' compare equal. A source key column in a NO PAD
collation (MariaDB ``utf8mb4_nopad_bin``, ``utf8mb4_general_nopad_ci``;
MySQL 8's ``utf8mb4_0900_*`` defaults) holds them as two records: they
collided in the engine's primary keys (a duplicate key that failed the
batch), and a hold typed 'a' held the record 'a ' of any source in the
set-based statements while the per-record evaluator, comparing as Python
does, did not. The columns 0020 changed (``KEYS`` below)
now take the server's NO PAD binary collation
(:func:`retention.dialects.mysql_keys.key_collation`: MariaDB >= 10.2
``utf8mb4_nopad_bin``, MySQL >= 8.0.17 ``utf8mb4_0900_bin``; an older server
keeps ``utf8mb4_bin`` and this revision changes nothing there), and the
engine compares source keys in it (``Dialect.key_text``).

One ``ALTER TABLE`` per table, as 0020's: MariaDB copies each table
(``ALGORITHM=COPY``, writes waiting, free disk about the table's size).
PostgreSQL and SQLite: nothing (their comparisons never pad).

Downgrade restores ``utf8mb4_bin``; it is refused before its first
``ALTER``, nothing changed, while a listed column holds two keys that differ
only by trailing spaces (record keys within one dataset, subject keys anywhere).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from retention.dialects.mysql_keys import PAD_BINARY, server_key_collation
from retention.store.key_columns import KeyColumns, alter_statements, refuse_merged

revision = "0021_keypad"
down_revision = "0020_keycase"
branch_labels = None
depends_on = None

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
    if bind.dialect.name not in ("mysql", "mariadb") or server_key_collation(bind.dialect) == PAD_BINARY:
        return
    for statement in alter_statements(bind, KEYS, f"CHARACTER SET utf8mb4 COLLATE {collation}"):
        op.execute(sa.text(statement))


def upgrade() -> None:
    _modify(server_key_collation(op.get_bind().dialect))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        refuse_merged(
            bind,
            KEYS,
            revision,
            lambda table: (PAD_BINARY, f"{{column}} COLLATE {PAD_BINARY}"),
            "differing only by trailing spaces",
        )
    _modify(PAD_BINARY)
