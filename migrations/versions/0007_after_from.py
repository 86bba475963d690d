"""The event a record's clock marks, kept with its state for ``after_from: clock``.

Revision ID: 0007_after_from
Revises: 0006
Create Date: 2026-11-26 07:20:00

A lifecycle step with ``after_from: clock`` counts its delay from the
original clock event, which a later run cannot always read again (the row
was anonymised or deleted by the archive): the run that moves a record out
of ``active`` by its clock keeps that day. Existing rows have none and
count from the previous state, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_after_from"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "retention_record_states",
        sa.Column(
            "clock_day", sa.Date(), nullable=True, comment="the event the record's clock marks, for after_from: clock"
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("retention_record_states") as batch:
        batch.drop_column("clock_day")
