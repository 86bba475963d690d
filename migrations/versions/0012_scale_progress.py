"""Progress committed with the data (issue 25): counts per batch, shard attempts.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 09:40:00

Each batch adds the records it moved to ``retention_run_counts`` (per run,
shard, dataset and transition) and to ``retention_run_erasures`` (per
erasure request) in its own transaction, so a killed shard rerun or a
redelivered task counts every record exactly once. ``retention_run_shards``
gets ``attempts``: how many processes started the shard.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_run_counts",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False, comment="-1 for a whole run"),
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("transition", sa.String(length=40), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "shard", "dataset", "transition", name=op.f("pk_retention_run_counts")),
    )
    op.create_table(
        "retention_run_erasures",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False, comment="-1 for a whole run"),
        sa.Column("request_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "shard", "request_id", name=op.f("pk_retention_run_erasures")),
    )
    with op.batch_alter_table("retention_run_shards") as batch:
        batch.add_column(
            sa.Column(
                "attempts",
                sa.Integer(),
                nullable=True,
                comment="how many processes started this shard (reruns, redeliveries)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("retention_run_shards") as batch:
        batch.drop_column("attempts")
    op.drop_table("retention_run_erasures")
    op.drop_table("retention_run_counts")
