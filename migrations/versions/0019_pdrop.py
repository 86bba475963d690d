"""Row counts kept as partitions are written (issue 22): ``retention_partition_rows`` and ``_tracking``.

Revision ID: 0019_pdrop
Revises: 0018_blocks
Create Date: 2026-12-07 09:10:00

A partition drop's ledger entry holds each dropped partition's exact row
count, and counting a partition reads every row: at 10M rows that was half of
the drop (bench/RESULTS.md). ``retention partitions track`` (PostgreSQL only)
installs statement-level triggers that append one row per statement and
quarter hour of the clock to ``retention_partition_rows``, and records in
``retention_partition_tracking`` each partition counted exactly once as the
start of its kept count. The tables are created on every database so the
schema is the same everywhere; only PostgreSQL ever writes them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from retention.store.tables import UTCDateTime

revision = "0019_pdrop"
down_revision = "0018_blocks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_partition_rows",
        sa.Column("owner", sa.BigInteger(), nullable=False, comment="the partitioned table's oid, or a partition's"),
        sa.Column(
            "bucket",
            sa.BigInteger(),
            nullable=True,
            comment="the clock's quarter hour (epoch / 900) under the table; none under a partition",
        ),
        sa.Column("delta", sa.BigInteger(), nullable=False, comment="rows one statement added (or, negative, removed)"),
    )
    op.create_index(op.f("ix_retention_partition_rows_owner_bucket"), "retention_partition_rows", ["owner", "bucket"])
    op.create_table(
        "retention_partition_tracking",
        sa.Column("relid", sa.BigInteger(), autoincrement=False, nullable=False, comment="the partition's oid"),
        sa.Column("parent", sa.BigInteger(), nullable=False, comment="its partitioned table's oid"),
        sa.Column("label", sa.String(length=300), nullable=False, comment="schema.name when tracked"),
        sa.Column("first_bucket", sa.BigInteger(), nullable=False),
        sa.Column("end_bucket", sa.BigInteger(), nullable=False, comment="exclusive"),
        sa.Column("signature", sa.Text(), nullable=False, comment="its catalog rows and triggers when tracked"),
        sa.Column("tracked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("relid", name=op.f("pk_retention_partition_tracking")),
    )
    op.create_index(op.f("ix_retention_partition_tracking_parent"), "retention_partition_tracking", ["parent"])


def _drop_counting_triggers() -> None:
    """The triggers and functions ``retention partitions track`` made, which write these tables (this schema's).

    Left behind, a trigger whose table is gone would fail the application's
    writes. Written out here, not imported, so the migration keeps working
    whatever the engine's code becomes.
    """
    bind = op.get_bind()
    functions = (
        "SELECT p.oid, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.proname LIKE 'retention\\_rows\\_%'"
    )
    triggers = bind.execute(
        sa.text(
            "SELECT t.tgrelid::regclass::text AS relation, quote_ident(t.tgname) AS name FROM pg_trigger t "
            f"WHERE t.tgfoid IN (SELECT oid FROM ({functions}) f)"
        )
    ).all()
    for relation, name in triggers:
        op.execute(f"DROP TRIGGER {name} ON {relation}")
    for _oid, name in bind.execute(sa.text(functions)).all():
        op.execute(f"DROP FUNCTION {bind.dialect.identifier_preparer.quote(name)}()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _drop_counting_triggers()
    op.drop_index(op.f("ix_retention_partition_tracking_parent"), table_name="retention_partition_tracking")
    op.drop_table("retention_partition_tracking")
    op.drop_index(op.f("ix_retention_partition_rows_owner_bucket"), table_name="retention_partition_rows")
    op.drop_table("retention_partition_rows")
