"""Sharded runs (issue 16): a run group's bounds and its shards.

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-26 10:45:00

``retention run --shard I/N --run-group G`` makes one logical run of N
shards: its row in ``retention_runs`` names the group, the shard count and
the key ranges every shard uses (computed once, by the first shard to
start); ``retention_run_shards`` holds each shard's status. The run lock
table gets a permanent ``ledger`` row that MariaDB appenders lock by its
primary key (a record lock, no gap lock) to serialise ledger appends.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LONGTEXT = sa.Text().with_variant(sa.dialects.mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("retention_runs") as batch:
        batch.add_column(
            sa.Column(
                "run_group",
                sa.String(length=191),
                nullable=True,
                comment="a sharded run: the group its shards name (--run-group)",
            )
        )
        batch.add_column(
            sa.Column("shards", sa.Integer(), nullable=True, comment="a sharded run: how many shards make it")
        )
        batch.add_column(
            sa.Column(
                "shard_bounds", LONGTEXT, nullable=True, comment="JSON: the key ranges every shard of the group uses"
            )
        )
    op.create_table(
        "retention_run_shards",
        sa.Column("run_id", sa.String(length=36), nullable=False, comment="the group's one logical run"),
        sa.Column("shard", sa.Integer(), nullable=False, comment="0 to shards - 1"),
        sa.Column(
            "status", sa.String(length=20), nullable=False, comment="running, succeeded, failed, partial, guarded..."
        ),
        sa.Column("owner", sa.String(length=200), nullable=False, comment="host:pid of the process that ran it last"),
        sa.Column("started_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("finished_at", retention.store.tables.UTCDateTime(), nullable=True),
        sa.Column("counts", LONGTEXT, nullable=True, comment="JSON: dataset -> transition -> count"),
        sa.Column("erased", LONGTEXT, nullable=True, comment="JSON: erasure request -> records it moved in this shard"),
        sa.Column("stats", LONGTEXT, nullable=True, comment="JSON: batches, ledger lock waits and hold times"),
        sa.Column("error", LONGTEXT, nullable=True),
        sa.PrimaryKeyConstraint("run_id", "shard", name=op.f("pk_retention_run_shards")),
    )


def downgrade() -> None:
    op.drop_table("retention_run_shards")
    with op.batch_alter_table("retention_runs") as batch:
        batch.drop_column("shard_bounds")
        batch.drop_column("shards")
        batch.drop_column("run_group")
