"""Ledger format 5: one block row per batch entry (docs/ledger.md, "Format 5"; issue 22).

Revision ID: 0018_blocks
Revises: 0017_sqlitepurge
Create Date: 2026-12-07 09:00:00

A format-5 entry keeps its items as one byte string, its block
(:mod:`retention.ledger.blocks`), instead of one ``retention_ledger_items``
row each with a random-order index insert per pseudonym: that index work was
most of what an audited purge cost beyond the raw ``DELETE``
(bench/RESULTS.md). The blocks are as immutable as the items: triggers
refuse UPDATE and DELETE on all three databases, a TRUNCATE trigger on
PostgreSQL, and on MySQL/MariaDB (which fire no trigger on TRUNCATE) an
always-empty guard table whose foreign key makes the server refuse it, as
0006 and 0007 do for the items. Entries already written are not touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0018_blocks"
down_revision = "0017_sqlitepurge"
branch_labels = None
depends_on = None

_TABLE = "retention_ledger_blocks"
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BODY = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("entry_seq", _SEQ, autoincrement=False, nullable=False),
        sa.Column("items", sa.Integer(), nullable=False, comment="how many items the body holds"),
        sa.Column("body", _BODY, nullable=False, comment="the entry's items, 91 bytes each, in pseudonym order"),
        sa.PrimaryKeyConstraint("entry_seq", name=op.f("pk_retention_ledger_blocks")),
    )
    op.create_table(
        "retention_ledger_blocks_guard",
        sa.Column("entry_seq", _SEQ, nullable=True, comment="always empty: makes MySQL/MariaDB refuse TRUNCATE"),
        sa.ForeignKeyConstraint(
            ["entry_seq"],
            [f"{_TABLE}.entry_seq"],
            name=op.f("fk_retention_ledger_blocks_guard_entry_seq_retention_ledger_blocks"),
        ),
    )
    dialect = op.get_bind().dialect.name
    refusal = f"{_TABLE} is append-only"
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_TABLE}_no_{verb.lower()} BEFORE {verb} ON {_TABLE} "
                f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
            )
    elif dialect == "postgresql":
        # A body is ~91 bytes a record, written once per batch. PostgreSQL's default TOAST compression (pglz)
        # cost 11 ms of a 5,000-item block's 17 ms insert (2 µs a record, bench/RESULTS.md); lz4 (PostgreSQL
        # 14, where the server was built with it) stores it smaller (63 % against pglz's 69 %) at no measurable
        # cost. Without lz4 the body is stored uncompressed (EXTERNAL: out of line, no compression attempt).
        lz4 = (
            op.get_bind()
            .execute(
                sa.text("SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")
            )
            .first()
        )
        setting = "SET COMPRESSION lz4" if lz4 is not None else "SET STORAGE EXTERNAL"
        op.execute(f"ALTER TABLE {_TABLE} ALTER COLUMN body {setting}")
        # retention_ledger_refuse() is 0001's: its message names the ledger, as it does for the items.
        op.execute(
            f"CREATE TRIGGER {_TABLE}_append_only BEFORE UPDATE OR DELETE ON {_TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION retention_ledger_refuse()"
        )
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE} "
            "FOR EACH STATEMENT EXECUTE FUNCTION retention_ledger_refuse()"
        )
    elif dialect in ("mysql", "mariadb"):
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_TABLE}_no_{verb.lower()} BEFORE {verb} ON {_TABLE} "
                f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{refusal}'"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_truncate ON {_TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only ON {_TABLE}")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_{verb}")
    op.drop_table("retention_ledger_blocks_guard")
    op.drop_table(_TABLE)
