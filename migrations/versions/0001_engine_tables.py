"""Engine tables: runs, lock, record states, archive, holds, erasure requests,
policy versions and the append-only ledger (with triggers refusing UPDATE/DELETE).

Revision ID: 0001
Revises:
Create Date: 2026-11-24 12:50:55.020828
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import retention.store.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_archive",
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("record_key", sa.String(length=191), nullable=False),
        sa.Column(
            "payload",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
            comment="JSON of the declared columns only",
        ),
        sa.Column("archived_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column(
            "purge_due_at",
            retention.store.tables.UTCDateTime(),
            nullable=True,
            comment="when the payload's own period ends",
        ),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "record_key", name=op.f("pk_retention_archive")),
    )
    op.create_index(
        op.f("ix_retention_archive_dataset_purge_due_at"),
        "retention_archive",
        ["dataset", "purge_due_at"],
        unique=False,
    )
    op.create_table(
        "retention_erasure_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_key", sa.String(length=191), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("extended_on", sa.Date(), nullable=True),
        sa.Column("extension_reason", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False, comment="open, processed, closed"),
        sa.Column("processed_run_id", sa.String(length=36), nullable=True),
        sa.Column("closed_at", retention.store.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_erasure_requests")),
    )
    op.create_index(
        op.f("ix_retention_erasure_requests_status"),
        "retention_erasure_requests",
        ["status"],
        unique=False,
    )
    op.create_table(
        "retention_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False, comment="subject, dataset or record"),
        sa.Column("dataset", sa.String(length=100), nullable=True),
        sa.Column("record_key", sa.String(length=191), nullable=True),
        sa.Column("subject_key", sa.String(length=191), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.String(length=100), nullable=False),
        sa.Column("placed_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("released_by", sa.String(length=100), nullable=True),
        sa.Column("released_at", retention.store.tables.UTCDateTime(), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_holds")),
    )
    op.create_index(
        op.f("ix_retention_holds_scope_released_at"),
        "retention_holds",
        ["scope", "released_at"],
        unique=False,
    )
    op.create_table(
        "retention_ledger",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("recorded_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("pack_id", sa.String(length=100), nullable=True),
        sa.Column("pack_digest", sa.String(length=64), nullable=True),
        sa.Column("dataset", sa.String(length=100), nullable=True),
        sa.Column(
            "transition",
            sa.String(length=40),
            nullable=False,
            comment="from->to, or an event such as hold_placed",
        ),
        sa.Column("action", sa.String(length=30), nullable=True),
        sa.Column("basis", sa.Text(), nullable=True),
        sa.Column(
            "due_at",
            retention.store.tables.UTCDateTime(),
            nullable=True,
            comment="the instant that made the record due",
        ),
        sa.Column(
            "record_pseudonym",
            sa.String(length=64),
            nullable=True,
            comment="HMAC-SHA256 of dataset and record key",
        ),
        sa.Column(
            "subject_pseudonym",
            sa.String(length=64),
            nullable=True,
            comment="HMAC-SHA256 of the subject key",
        ),
        sa.Column("count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("clock_min", retention.store.tables.UTCDateTime(), nullable=True),
        sa.Column("clock_max", retention.store.tables.UTCDateTime(), nullable=True),
        sa.Column(
            "detail",
            sa.Text(),
            nullable=True,
            comment="JSON without personal data: request id, override, partition",
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_retention_ledger")),
    )
    op.create_index(
        op.f("ix_retention_ledger_record_pseudonym"),
        "retention_ledger",
        ["record_pseudonym"],
        unique=False,
    )
    op.create_index(op.f("ix_retention_ledger_run_id"), "retention_ledger", ["run_id"], unique=False)
    op.create_index(
        op.f("ix_retention_ledger_subject_pseudonym"),
        "retention_ledger",
        ["subject_pseudonym"],
        unique=False,
    )
    op.create_table(
        "retention_policy_versions",
        sa.Column(
            "digest",
            sa.String(length=64),
            nullable=False,
            comment="sha256 of the pack's RFC 8785 encoding",
        ),
        sa.Column("pack_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("first_seen_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column(
            "content",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
            comment="the YAML text, for auditors",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_retention_policy_versions")),
    )
    op.create_table(
        "retention_record_states",
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("record_key", sa.String(length=191), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column(
            "since",
            retention.store.tables.UTCDateTime(),
            nullable=False,
            comment="the due instant that moved it here",
        ),
        sa.Column(
            "subject_key",
            sa.String(length=191),
            nullable=True,
            comment="for holds and erasure; engine-internal, never in the ledger",
        ),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "record_key", name=op.f("pk_retention_record_states")),
    )
    op.create_index(
        op.f("ix_retention_record_states_dataset_state_since"),
        "retention_record_states",
        ["dataset", "state", "since"],
        unique=False,
    )
    op.create_index(
        op.f("ix_retention_record_states_subject_key"),
        "retention_record_states",
        ["subject_key"],
        unique=False,
    )
    op.create_table(
        "retention_run_lock",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False, comment="host:pid of the holder"),
        sa.Column("acquired_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_run_lock")),
    )
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False, comment="plan or run"),
        sa.Column("pack_id", sa.String(length=100), nullable=False),
        sa.Column("pack_digest", sa.String(length=64), nullable=False),
        sa.Column("as_of", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("started_at", retention.store.tables.UTCDateTime(), nullable=False),
        sa.Column("finished_at", retention.store.tables.UTCDateTime(), nullable=True),
        sa.Column(
            "status",
            sa.String(length=20),
            nullable=False,
            comment="running, succeeded, failed, partial, guarded",
        ),
        sa.Column(
            "counts",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
            comment="JSON: dataset -> transition -> count",
        ),
        sa.Column(
            "overrides",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
            comment="JSON: guard overrides named by the operator",
        ),
        sa.Column(
            "error",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    op.create_index(op.f("ix_retention_runs_started_at"), "retention_runs", ["started_at"], unique=False)

    protect_ledger()


def downgrade() -> None:
    unprotect_ledger()
    op.drop_index(op.f("ix_retention_runs_started_at"), table_name="retention_runs")
    op.drop_table("retention_runs")
    op.drop_table("retention_run_lock")
    op.drop_index(op.f("ix_retention_record_states_subject_key"), table_name="retention_record_states")
    op.drop_index(op.f("ix_retention_record_states_dataset_state_since"), table_name="retention_record_states")
    op.drop_table("retention_record_states")
    op.drop_table("retention_policy_versions")
    op.drop_index(op.f("ix_retention_ledger_subject_pseudonym"), table_name="retention_ledger")
    op.drop_index(op.f("ix_retention_ledger_run_id"), table_name="retention_ledger")
    op.drop_index(op.f("ix_retention_ledger_record_pseudonym"), table_name="retention_ledger")
    op.drop_table("retention_ledger")
    op.drop_index(op.f("ix_retention_holds_scope_released_at"), table_name="retention_holds")
    op.drop_table("retention_holds")
    op.drop_index(op.f("ix_retention_erasure_requests_status"), table_name="retention_erasure_requests")
    op.drop_table("retention_erasure_requests")
    op.drop_index(op.f("ix_retention_archive_dataset_purge_due_at"), table_name="retention_archive")
    op.drop_table("retention_archive")


_REFUSAL = "retention_ledger is append-only"


def protect_ledger() -> None:
    """Make the database itself refuse UPDATE and DELETE on ledger rows."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER retention_ledger_no_{verb.lower()} BEFORE {verb} ON retention_ledger "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION retention_ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{_REFUSAL}' USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        op.execute(
            "CREATE TRIGGER retention_ledger_append_only BEFORE UPDATE OR DELETE ON retention_ledger "
            "FOR EACH ROW EXECUTE FUNCTION retention_ledger_refuse()"
        )
        op.execute(
            "CREATE TRIGGER retention_ledger_no_truncate BEFORE TRUNCATE ON retention_ledger "
            "FOR EACH STATEMENT EXECUTE FUNCTION retention_ledger_refuse()"
        )
    elif dialect in ("mysql", "mariadb"):
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER retention_ledger_no_{verb.lower()} BEFORE {verb} ON retention_ledger "
                f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{_REFUSAL}'"
            )


def unprotect_ledger() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS retention_ledger_no_truncate ON retention_ledger")
        op.execute("DROP TRIGGER IF EXISTS retention_ledger_append_only ON retention_ledger")
        op.execute("DROP FUNCTION IF EXISTS retention_ledger_refuse()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS retention_ledger_no_{verb}")
