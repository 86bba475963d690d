"""Auditor console: accounts, access log, login throttling; anomalies kept with each run.

Revision ID: 0005_console
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import retention.store.tables

revision = "0005_console"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_console_users",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False, comment="auditor, approver or admin"),
        sa.Column(
            "password_hash",
            sa.String(length=255),
            nullable=True,
            comment="argon2id; NULL for accounts that sign in through the proxy only",
        ),
        sa.Column("created_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("disabled_at", retention.store.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_console_users")),
    )
    op.create_table(
        "retention_console_access_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("user_name", sa.String(length=100), nullable=True),
        sa.Column(
            "kind",
            sa.String(length=40),
            nullable=False,
            comment="what was done: sign_in, lookup_subject, review_approved, ...",
        ),
        sa.Column(
            "outcome",
            sa.String(length=200),
            nullable=True,
            comment="counts or a verdict; never a looked-up id",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_console_access_log")),
    )
    op.create_index(op.f("ix_retention_console_access_log_at"), "retention_console_access_log", ["at"], unique=False)
    op.create_index(
        op.f("ix_retention_console_access_log_kind_at"), "retention_console_access_log", ["kind", "at"], unique=False
    )
    op.create_table(
        "retention_console_login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "name_hash",
            sa.String(length=64),
            nullable=False,
            comment="HMAC of the name typed, so a password typed as a name is not kept",
        ),
        sa.Column("failed_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_console_login_failures")),
    )
    op.create_index(
        op.f("ix_retention_console_login_failures_name_hash_failed_at"),
        "retention_console_login_failures",
        ["name_hash", "failed_at"],
        unique=False,
    )
    op.add_column(
        "retention_runs",
        sa.Column(
            "anomalies",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
            comment="JSON: dataset -> anomaly kind -> count",
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("retention_runs") as batch:
        batch.drop_column("anomalies")
    op.drop_index(
        op.f("ix_retention_console_login_failures_name_hash_failed_at"), table_name="retention_console_login_failures"
    )
    op.drop_table("retention_console_login_failures")
    op.drop_index(op.f("ix_retention_console_access_log_kind_at"), table_name="retention_console_access_log")
    op.drop_index(op.f("ix_retention_console_access_log_at"), table_name="retention_console_access_log")
    op.drop_table("retention_console_access_log")
    op.drop_table("retention_console_users")
