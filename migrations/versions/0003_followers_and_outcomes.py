"""A follower's leader key on its state row; the outcome of an erasure request.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retention_record_states") as batch:
        batch.add_column(
            sa.Column(
                "leader_key",
                sa.String(length=191),
                nullable=True,
                comment="a follower's leader record (its subject or its via column)",
            )
        )
        batch.create_index("ix_retention_record_states_dataset_leader_key", ["dataset", "leader_key"])
    with op.batch_alter_table("retention_erasure_requests") as batch:
        batch.add_column(
            sa.Column(
                "outcome",
                sa.String(length=40),
                nullable=True,
                comment="erased, nothing to move, or no records found",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("retention_erasure_requests") as batch:
        batch.drop_column("outcome")
    with op.batch_alter_table("retention_record_states") as batch:
        batch.drop_index("ix_retention_record_states_dataset_leader_key")
        batch.drop_column("leader_key")
