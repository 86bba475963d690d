"""E-mail identities (issue 14): a person known by id and by normalised e-mail address.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 11:00:00

Erasure requests and holds may name a person by e-mail address: the
normalised address (NULL once minimised after ``engine_retention``) and its
pseudonym (kept). A record's state row keeps the pseudonym of its e-mail
address, never the address, so that a request by e-mail still reaches a
record whose source row is gone; ledger items keep the e-mail's pseudonym
under the run's key next to the subject's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("retention_erasure_requests", "retention_holds"):
        op.add_column(
            table,
            sa.Column(
                "email",
                sa.String(length=320),
                nullable=True,
                comment="normalised e-mail address; NULL once minimised (engine_retention)",
            ),
        )
        op.add_column(
            table,
            sa.Column(
                "email_pseudonym", sa.String(length=64), nullable=True, comment="HMAC of the normalised e-mail address"
            ),
        )
    op.add_column(
        "retention_record_states",
        sa.Column(
            "email_pseudonym",
            sa.String(length=64),
            nullable=True,
            comment="HMAC of the record's normalised e-mail address (no address in clear)",
        ),
    )
    op.create_index(op.f("ix_retention_record_states_email_pseudonym"), "retention_record_states", ["email_pseudonym"])
    op.add_column(
        "retention_ledger_items",
        sa.Column(
            "email_pseudonym",
            sa.String(length=64),
            nullable=True,
            comment="HMAC under the run's key of the e-mail address's pseudonym",
        ),
    )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ too): a batch copy of the
    # ledger's items on SQLite would lose their append-only triggers.
    op.drop_index(op.f("ix_retention_record_states_email_pseudonym"), table_name="retention_record_states")
    for table, column in (
        ("retention_ledger_items", "email_pseudonym"),
        ("retention_record_states", "email_pseudonym"),
        ("retention_holds", "email_pseudonym"),
        ("retention_holds", "email"),
        ("retention_erasure_requests", "email_pseudonym"),
        ("retention_erasure_requests", "email"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
