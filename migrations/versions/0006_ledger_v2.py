"""Ledger v2: per-batch chained entries committing to a Merkle tree of per-record items.

Revision ID: 0006
Revises: 0004_hardening
Create Date: 2026-11-26 05:00:00

The v1 columns and entries stay as they are (their hashes keep verifying);
new entries carry ``format`` 2, the Merkle root of their items and the item
count. Items and the per-run lookup rows are append-only like the entries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0006"
down_revision = "0004_hardening"
branch_labels = None
depends_on = None

_PROTECTED = ("retention_ledger_items", "retention_ledger_lookup")


def upgrade() -> None:
    op.add_column("retention_ledger", sa.Column("format", sa.SmallInteger(), nullable=True, comment="2 for v2"))
    op.add_column(
        "retention_ledger",
        sa.Column("merkle_root", sa.String(length=64), nullable=True, comment="RFC 9162 root of the entry's items"),
    )
    op.add_column("retention_ledger", sa.Column("items", sa.Integer(), nullable=True, comment="number of items"))
    op.create_table(
        "retention_ledger_items",
        sa.Column("entry_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("record_pseudonym", sa.String(length=64), nullable=False, comment="HMAC under the run's key"),
        sa.Column("subject_pseudonym", sa.String(length=64), nullable=True, comment="HMAC under the run's key"),
        sa.Column("due_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True, comment="the erasure request behind the move"),
        sa.Column("review_id", sa.Integer(), nullable=True, comment="the approved review batch behind the purge"),
        sa.PrimaryKeyConstraint("entry_seq", "idx", name=op.f("pk_retention_ledger_items")),
    )
    op.create_table(
        "retention_ledger_lookup",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("entry_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "pseudonym", "entry_seq", "idx", name=op.f("pk_retention_ledger_lookup")),
    )
    dialect = op.get_bind().dialect.name
    for table in _PROTECTED:
        refusal = f"{table} is append-only"
        if dialect == "sqlite":
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
                )
        elif dialect == "postgresql":
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION retention_ledger_refuse()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION retention_ledger_refuse()"
            )
        elif dialect in ("mysql", "mariadb"):
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{refusal}'"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in _PROTECTED:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        else:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    op.drop_table("retention_ledger_lookup")
    op.drop_table("retention_ledger_items")
    with op.batch_alter_table("retention_ledger") as batch:
        batch.drop_column("items")
        batch.drop_column("merkle_root")
        batch.drop_column("format")
