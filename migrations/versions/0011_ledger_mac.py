"""Authenticated ledger entries and per-run high-water marks (issue 28).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 09:45:00

``retention_ledger.mac``: entries of format 3 carry an HMAC of their hash
under a key derived from the pseudonym key, which the database never holds,
so that a database superuser cannot append or rewrite an entry that
``ledger verify`` accepts as the engine's. ``retention_runs.ledger_last``:
the last entry a run wrote, updated in each batch's transaction, so that a
cut tail of any run (finished, failed or killed) is detected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN: a batch copy of the ledger on SQLite
    # would lose its append-only triggers.
    op.add_column(
        "retention_ledger",
        sa.Column(
            "mac",
            sa.String(length=64),
            nullable=True,
            comment="format 3: HMAC of the hash under the engine's ledger key (null before format 3)",
        ),
    )
    op.add_column(
        "retention_runs",
        sa.Column(
            "ledger_last",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=True,
            comment="the last ledger entry the run wrote, updated with each batch",
        ),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE retention_runs DROP COLUMN ledger_last")
    op.execute("ALTER TABLE retention_ledger DROP COLUMN mac")
