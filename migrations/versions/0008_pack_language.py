"""Pack language of issue 14: the clock event kept with a record's state, and pack sightings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 07:20:00

Settled erasure requests and released holds lose the subject id and notes
after the pack's ``engine_retention``; they keep a subject pseudonym.

A lifecycle step with ``after_from: clock`` counts its delay from the
original clock event, which a later run cannot always read again (the row
was anonymised or deleted by the archive): the run that moves a record out
of ``active`` by its clock keeps that day. Existing rows have none and
count from the previous state, as before.

``retention_pack_sightings`` records when ``check``, ``plan`` or ``run``
first saw each pack version (by digest), for the pack's ``notice`` period.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retention.store.tables

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "retention_record_states",
        sa.Column(
            "clock_day", sa.Date(), nullable=True, comment="the event the record's clock marks, for after_from: clock"
        ),
    )
    op.create_table(
        "retention_pack_sightings",
        sa.Column("digest", sa.String(length=64), nullable=False, comment="sha256 of the pack's RFC 8785 encoding"),
        sa.Column("pack_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("first_seen_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("seen_by", sa.String(length=10), nullable=False, comment="check, plan or run"),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_retention_pack_sightings")),
    )

    for table in ("retention_erasure_requests", "retention_holds"):
        op.add_column(
            table,
            sa.Column(
                "subject_pseudonym",
                sa.String(length=64),
                nullable=True,
                comment="kept when the subject id is removed (engine_retention)",
            ),
        )
        op.add_column(
            table,
            sa.Column(
                "minimised_at",
                retention.store.tables.UTCDateTime(),
                nullable=True,
                comment="when the subject id and notes were removed",
            ),
        )
    with op.batch_alter_table("retention_erasure_requests") as batch:
        batch.alter_column(
            "subject_key",
            existing_type=sa.String(length=191),
            nullable=True,
            comment="NULL once minimised (engine_retention)",
        )


def downgrade() -> None:
    with op.batch_alter_table("retention_erasure_requests") as batch:
        batch.alter_column("subject_key", existing_type=sa.String(length=191), nullable=False, comment=None)
    for table in ("retention_erasure_requests", "retention_holds"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("minimised_at")
            batch.drop_column("subject_pseudonym")
    op.drop_table("retention_pack_sightings")
    with op.batch_alter_table("retention_record_states") as batch:
        batch.drop_column("clock_day")
