"""TRUNCATE guards for the ledger's items and lookup rows (MySQL/MariaDB fire no trigger on TRUNCATE).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 07:20:00

Two always-empty tables whose foreign keys reference the items and the
lookup rows, as ``retention_ledger_guard`` does for the entries: MySQL and
MariaDB refuse to truncate a table that a foreign key references (unless
``foreign_key_checks`` is off, which ``ledger verify`` then catches: the
entries count their items). PostgreSQL's TRUNCATE triggers of 0006 stay.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retention_ledger_items_guard",
        sa.Column("entry_seq", SEQ, nullable=True, comment="always empty: makes MySQL/MariaDB refuse TRUNCATE"),
        sa.Column("idx", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_seq", "idx"],
            ["retention_ledger_items.entry_seq", "retention_ledger_items.idx"],
            name=op.f("fk_retention_ledger_items_guard_entry_seq_retention_ledger_items"),
        ),
    )
    op.create_table(
        "retention_ledger_lookup_guard",
        sa.Column(
            "run_id", sa.String(length=36), nullable=True, comment="always empty: makes MySQL/MariaDB refuse TRUNCATE"
        ),
        sa.Column("pseudonym", sa.String(length=64), nullable=True),
        sa.Column("entry_seq", SEQ, nullable=True),
        sa.Column("idx", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id", "pseudonym", "entry_seq", "idx"],
            [
                "retention_ledger_lookup.run_id",
                "retention_ledger_lookup.pseudonym",
                "retention_ledger_lookup.entry_seq",
                "retention_ledger_lookup.idx",
            ],
            name=op.f("fk_retention_ledger_lookup_guard_run_id_retention_ledger_lookup"),
        ),
    )


def downgrade() -> None:
    op.drop_table("retention_ledger_lookup_guard")
    op.drop_table("retention_ledger_items_guard")
