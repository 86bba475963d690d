"""Partial erasure (issue 26 clause 4): which records an erasure request masked and keeps.

Revision ID: 0014_clause4
Revises: 0013
Create Date: 2026-12-06 17:00:00

``on_erasure: {mask: ..., keep_until: purged}`` masks a person's records at
once and keeps them on their own term. An active record has no state row, so
the mark that it was masked (and is not to be masked again by a later request
or run) lives in its own table; the row goes with the record when it is purged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0014_clause4"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_erasure_masks",
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("record_key", sa.String(length=191), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False, comment="the erasure request whose mask pass masked it"),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("masked_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "record_key", name=op.f("pk_retention_erasure_masks")),
    )


def downgrade() -> None:
    op.drop_table("retention_erasure_masks")
