"""Ledger format 4 (issue 22): items found through indexes on their own pseudonyms, no lookup rows.

Revision ID: 0015_lean
Revises: 0014_clause4
Create Date: 2026-12-06 19:50:00

Entries of format 4 write no ``retention_ledger_lookup`` rows: ``ledger
lookup`` finds their items by an index on each pseudonym column of the items
table (docs/ledger.md, "Format 4"). The indexes serve format 2 and 3 items
alike, so lookup reads every format the same way.
"""

from __future__ import annotations

from alembic import op

revision = "0015_lean"
down_revision = "0014_clause4"
branch_labels = None
depends_on = None

_COLUMNS = ("record_pseudonym", "subject_pseudonym", "email_pseudonym")


def upgrade() -> None:
    for column in _COLUMNS:
        op.create_index(op.f(f"ix_retention_ledger_items_{column}"), "retention_ledger_items", [column])


def downgrade() -> None:
    for column in _COLUMNS:
        op.drop_index(op.f(f"ix_retention_ledger_items_{column}"), table_name="retention_ledger_items")
