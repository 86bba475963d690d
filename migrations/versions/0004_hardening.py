"""Hardening: the ledger's length recorded by runs, a TRUNCATE guard, this database's identity.

Revision ID: 0004_hardening
Revises: 0002
Create Date: 2026-11-26 10:00:00

- ``retention_runs.ledger_seq``: the last ledger entry when a run finished,
  so that ``ledger verify`` fails on a ledger cut shorter than that.
- ``retention_ledger_guard``: an always-empty table whose foreign key to
  the ledger makes MySQL/MariaDB (and PostgreSQL) refuse ``TRUNCATE``.
- ``retention_identity``: this database's random id, to which a separate
  archive store is bound on first use.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0004_hardening"
down_revision = "0005_console"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("retention_runs") as batch:
        batch.add_column(
            sa.Column(
                "ledger_seq",
                SEQ,
                nullable=True,
                comment="the ledger's last entry when the run finished: a shorter ledger was cut",
            )
        )
    op.create_table(
        "retention_identity",
        sa.Column("name", sa.String(length=50), nullable=False, comment="'database': this database's own id"),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("created_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_identity")),
    )
    op.create_table(
        "retention_ledger_guard",
        sa.Column(
            "seq",
            SEQ,
            nullable=True,
            comment="always empty: a foreign key to the ledger makes MySQL/MariaDB refuse TRUNCATE",
        ),
        sa.ForeignKeyConstraint(
            ["seq"], ["retention_ledger.seq"], name=op.f("fk_retention_ledger_guard_seq_retention_ledger")
        ),
    )


def downgrade() -> None:
    op.drop_table("retention_ledger_guard")
    op.drop_table("retention_identity")
    with op.batch_alter_table("retention_runs") as batch:
        batch.drop_column("ledger_seq")
