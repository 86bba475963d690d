"""Disposition review: batches of due purges awaiting an operator's approval.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_review_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column(
            "run_id",
            sa.String(length=36),
            nullable=False,
            comment="the run that found the purges due",
        ),
        sa.Column("created_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column(
            "status",
            sa.String(length=20),
            nullable=False,
            comment="pending, approved, rejected, completed",
        ),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", retention.store.tables.UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_review_batches")),
    )
    op.create_index(
        op.f("ix_retention_review_batches_dataset_status"),
        "retention_review_batches",
        ["dataset", "status"],
        unique=False,
    )
    op.create_table(
        "retention_review_items",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("record_key", sa.String(length=191), nullable=False),
        sa.Column("transition", sa.String(length=40), nullable=False),
        sa.Column("due_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["retention_review_batches.id"],
            name=op.f("fk_retention_review_items_batch_id_retention_review_batches"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "dataset", "record_key", name=op.f("pk_retention_review_items")),
    )
    op.create_index(
        op.f("ix_retention_review_items_dataset_record_key"),
        "retention_review_items",
        ["dataset", "record_key"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_retention_review_items_dataset_record_key"), table_name="retention_review_items")
    op.drop_table("retention_review_items")
    op.drop_index(op.f("ix_retention_review_batches_dataset_status"), table_name="retention_review_batches")
    op.drop_table("retention_review_batches")
