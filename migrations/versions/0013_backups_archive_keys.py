"""Crypto-shredded archive (issue 27): one wrapped data key per archive bucket.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 10:00:00

Archive payloads may be encrypted under a data key per (dataset, purge
day); the key is stored here wrapped by a key-encryption key kept outside
the database, and its row is deleted when the bucket's payloads are purged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_archive_keys",
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("bucket", sa.Date(), nullable=False, comment="UTC day the bucket's payloads are due to be purged"),
        sa.Column(
            "wrapped_by", sa.String(length=16), nullable=False, comment="id of the key-encryption key (never the key)"
        ),
        sa.Column(
            "wrapped_key", sa.String(length=200), nullable=False, comment="the data key, AES-256-GCM wrapped, base64"
        ),
        sa.Column("created_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "bucket", name=op.f("pk_retention_archive_keys")),
    )


def downgrade() -> None:
    op.drop_table("retention_archive_keys")
