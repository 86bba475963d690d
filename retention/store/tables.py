"""The engine's own tables, as SQLAlchemy Core metadata (Alembic's target).

Design rule: nothing here grows with the number of purged records except the
ledger. ``record_states`` holds only records that still exist somewhere (a
deactivated or anonymised source row, or an archive payload); a record whose
data is gone leaves only its ledger entries behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

from retention.dialects import dialect_for
from retention.dialects.mysql_keys import KeyVarchar

PREFIX = "retention_"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An instant stored as naive UTC on every database, read back aware.

    MySQL has no timezone-aware type and SQLite has no types at all; storing
    naive UTC everywhere and attaching UTC on read keeps comparisons exact.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        return dialect.type_descriptor(dialect_for(dialect).instant_type())

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        instant = dt.datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite via text()
        if not isinstance(instant, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(instant).__name__}")
        return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)


KEY = sa.String(191)  # 191 keeps MySQL utf8mb4 index keys within 767 bytes
SOURCE_KEY = sa.String(191).with_variant(KeyVarchar(191), "mysql", "mariadb")
"""A source's record or subject key, kept as the source holds it: two keys wherever Python sees two.

A key column may hold 'A' and 'a' (a _bin source), or 'a' and 'a ' (a NO PAD one), as two records; in
the database's default collation (on MariaDB usually case-insensitive, and PAD SPACE) they collided in the
engine's primary keys. MariaDB/MySQL: the server's NO PAD binary collation (migrations 0020_keycase,
0021_keypad; retention.dialects.mysql_keys). PostgreSQL's default collations are deterministic and SQLite's
is BINARY: as they are."""
NAME = sa.String(100)
HASH = sa.String(64)
EMAIL = sa.String(320)  # RFC 5321 limits an address to 254 octets; 320 is the usual column
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

policy_versions = sa.Table(
    f"{PREFIX}policy_versions",
    metadata,
    sa.Column("digest", HASH, primary_key=True, comment="sha256 of the pack's RFC 8785 encoding"),
    sa.Column("pack_id", NAME, nullable=False),
    sa.Column("version", NAME, nullable=False),
    sa.Column("effective_from", sa.Date, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("content", LONGTEXT, nullable=False, comment="the YAML text, for auditors"),
)

pack_sightings = sa.Table(
    f"{PREFIX}pack_sightings",
    metadata,
    sa.Column("digest", HASH, primary_key=True, comment="sha256 of the pack's RFC 8785 encoding"),
    sa.Column("pack_id", NAME, nullable=False),
    sa.Column("version", NAME, nullable=False),
    sa.Column("effective_from", sa.Date, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("seen_by", sa.String(10), nullable=False, comment="check, plan or run"),
)

runs = sa.Table(
    f"{PREFIX}runs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("mode", sa.String(10), nullable=False, comment="plan or run"),
    sa.Column("pack_id", NAME, nullable=False),
    sa.Column("pack_digest", HASH, nullable=False),
    sa.Column("as_of", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column(
        "status",
        sa.String(20),
        nullable=False,
        comment="running, succeeded, failed, partial, guarded",
    ),
    sa.Column("counts", LONGTEXT, comment="JSON: dataset -> transition -> count"),
    sa.Column("overrides", LONGTEXT, comment="JSON: guard overrides named by the operator"),
    sa.Column("error", LONGTEXT),
    sa.Column("anomalies", LONGTEXT, comment="JSON: dataset -> anomaly kind -> count"),
    sa.Column(
        "ledger_seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        comment="the ledger's last entry when the run finished: a shorter ledger was cut",
    ),
    sa.Column(
        "ledger_last",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        comment="the last ledger entry the run wrote, updated with each batch",
    ),
    sa.Column("run_group", KEY, comment="a sharded run: the group its shards name (--run-group)"),
    sa.Column("shards", sa.Integer, comment="a sharded run: how many shards make it"),
    sa.Column("shard_bounds", LONGTEXT, comment="JSON: the key ranges every shard of the group uses"),
    sa.Index(None, "started_at"),
)

run_lock = sa.Table(
    f"{PREFIX}run_lock",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False, comment="host:pid of the holder"),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
)

run_shards = sa.Table(
    f"{PREFIX}run_shards",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True, comment="the group's one logical run"),
    sa.Column("shard", sa.Integer, primary_key=True, comment="0 to shards - 1"),
    sa.Column("status", sa.String(20), nullable=False, comment="running, succeeded, failed, partial, guarded..."),
    sa.Column("owner", sa.String(200), nullable=False, comment="host:pid of the process that ran it last"),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("counts", LONGTEXT, comment="JSON: dataset -> transition -> count"),
    sa.Column("erased", LONGTEXT, comment="JSON: erasure request -> records it moved in this shard"),
    sa.Column("stats", LONGTEXT, comment="JSON: batches, ledger lock waits and hold times"),
    sa.Column("error", LONGTEXT),
    sa.Column("attempts", sa.Integer, comment="how many processes started this shard (reruns, redeliveries)"),
)

WHOLE_RUN = -1
"""The ``shard`` of a whole run's progress rows."""


def _count_table(name: str, *key: sa.Column[Any]) -> sa.Table:
    """A tally per run and shard (``WHOLE_RUN`` for a whole run) and ``key``: one table shape, two tallies.

    Columns in order: ``run_id``, ``shard``, the ``key`` columns, ``count``
    (the tables migration 0012 created; see :mod:`retention.store.tally`).
    """
    return sa.Table(
        f"{PREFIX}{name}",
        metadata,
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False, comment="-1 for a whole run"),
        *key,
        sa.Column("count", sa.BigInteger, nullable=False),
    )


run_counts = _count_table(
    "run_counts",
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("transition", sa.String(40), primary_key=True),
)
"""Records moved, per run, shard, dataset and transition: added to in each batch's own transaction."""

run_erasures = _count_table("run_erasures", sa.Column("request_id", sa.Integer, primary_key=True, autoincrement=False))
"""Records each erasure request moved, per run and shard: added to in each batch's own transaction."""

partition_rows = sa.Table(
    f"{PREFIX}partition_rows",
    metadata,
    sa.Column("owner", sa.BigInteger, nullable=False, comment="the partitioned table's oid, or a partition's"),
    sa.Column(
        "bucket",
        sa.BigInteger,
        comment="the clock's quarter hour (epoch / 900) under the table; none under a partition",
    ),
    sa.Column("delta", sa.BigInteger, nullable=False, comment="rows one statement added (or, negative, removed)"),
    sa.Index(None, "owner", "bucket"),
)
"""Row counts kept as partitions are written (PostgreSQL; retention.engine.partition_counts): appended to by the
triggers ``retention partitions track`` installs, one row per statement and quarter hour, never updated."""

partition_tracking = sa.Table(
    f"{PREFIX}partition_tracking",
    metadata,
    sa.Column("relid", sa.BigInteger, primary_key=True, autoincrement=False, comment="the partition's oid"),
    sa.Column("parent", sa.BigInteger, nullable=False, comment="its partitioned table's oid"),
    sa.Column("label", sa.String(300), nullable=False, comment="schema.name when tracked"),
    sa.Column("first_bucket", sa.BigInteger, nullable=False),
    sa.Column("end_bucket", sa.BigInteger, nullable=False, comment="exclusive"),
    sa.Column("signature", sa.Text, nullable=False, comment="its catalog rows and triggers when tracked"),
    sa.Column("tracked_at", UTCDateTime, nullable=False),
    sa.Index(None, "parent"),
)
"""Partitions whose row count ``partition_rows`` keeps, since when, and what the catalog said then."""

record_states = sa.Table(
    f"{PREFIX}record_states",
    metadata,
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("record_key", SOURCE_KEY, primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("since", UTCDateTime, nullable=False, comment="the due instant that moved it here"),
    sa.Column("subject_key", SOURCE_KEY, comment="for holds and erasure; engine-internal, never in the ledger"),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("leader_key", SOURCE_KEY, comment="a follower's leader record (its subject or its via column)"),
    sa.Column("clock_day", sa.Date, comment="the event the record's clock marks, for after_from: clock"),
    sa.Column("email_pseudonym", HASH, comment="HMAC of the record's normalised e-mail address (no address in clear)"),
    sa.Index(None, "dataset", "state", "since"),
    sa.Index(None, "subject_key"),
    sa.Index(None, "email_pseudonym"),
    sa.Index(None, "dataset", "leader_key"),
)

archive = sa.Table(
    f"{PREFIX}archive",
    metadata,
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("record_key", SOURCE_KEY, primary_key=True),
    sa.Column("payload", LONGTEXT, nullable=False, comment="JSON of the declared columns only"),
    sa.Column("archived_at", UTCDateTime, nullable=False),
    sa.Column("purge_due_at", UTCDateTime, comment="when the payload's own period ends"),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Index(None, "dataset", "purge_due_at"),
)

archive_keys = sa.Table(
    f"{PREFIX}archive_keys",
    metadata,
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("bucket", sa.Date, primary_key=True, comment="UTC day the bucket's payloads are due to be purged"),
    sa.Column("wrapped_by", sa.String(16), nullable=False, comment="id of the key-encryption key (never the key)"),
    sa.Column("wrapped_key", sa.String(200), nullable=False, comment="the data key, AES-256-GCM wrapped, base64"),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
"""One data key per archive bucket; deleted (crypto-shredded) once the bucket's payloads are purged."""

erasure_masks = sa.Table(
    f"{PREFIX}erasure_masks",
    metadata,
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("record_key", SOURCE_KEY, primary_key=True),
    sa.Column("request_id", sa.Integer, nullable=False, comment="the erasure request whose mask pass masked it"),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("masked_at", UTCDateTime, nullable=False),
)
"""Records a partial erasure (``on_erasure: {mask, keep_until}``) masked: kept, on their own term, masked once."""

holds = sa.Table(
    f"{PREFIX}holds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(10), nullable=False, comment="subject, dataset or record"),
    sa.Column("dataset", NAME),
    sa.Column("record_key", SOURCE_KEY),
    sa.Column("subject_key", SOURCE_KEY),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("placed_by", NAME, nullable=False),
    sa.Column("placed_at", UTCDateTime, nullable=False),
    sa.Column("released_by", NAME),
    sa.Column("released_at", UTCDateTime),
    sa.Column("release_reason", sa.Text),
    sa.Column("subject_pseudonym", HASH, comment="kept when the subject id is removed (engine_retention)"),
    sa.Column("minimised_at", UTCDateTime, comment="when the subject id and notes were removed"),
    sa.Column("email", EMAIL, comment="normalised e-mail address; NULL once minimised (engine_retention)"),
    sa.Column("email_pseudonym", HASH, comment="HMAC of the normalised e-mail address"),
    sa.Index(None, "scope", "released_at"),
)

erasure_requests = sa.Table(
    f"{PREFIX}erasure_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_key", SOURCE_KEY, comment="NULL once minimised (engine_retention)"),
    sa.Column("received_on", sa.Date, nullable=False),
    sa.Column("deadline", sa.Date, nullable=False),
    sa.Column("extended_on", sa.Date),
    sa.Column("extension_reason", sa.Text),
    sa.Column("note", sa.Text),
    sa.Column("status", sa.String(20), nullable=False, comment="open, processed, closed"),
    sa.Column("processed_run_id", sa.String(36)),
    sa.Column("closed_at", UTCDateTime),
    sa.Column("outcome", sa.String(40), comment="erased, nothing to move, or no records found"),
    sa.Column("subject_pseudonym", HASH, comment="kept when the subject id is removed (engine_retention)"),
    sa.Column("minimised_at", UTCDateTime, comment="when the subject id and notes were removed"),
    sa.Column("email", EMAIL, comment="normalised e-mail address; NULL once minimised (engine_retention)"),
    sa.Column("email_pseudonym", HASH, comment="HMAC of the normalised e-mail address"),
    sa.Index(None, "status"),
)

ledger = sa.Table(
    f"{PREFIX}ledger",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("run_id", sa.String(36)),
    sa.Column("pack_id", NAME),
    sa.Column("pack_digest", HASH),
    sa.Column("dataset", NAME),
    sa.Column(
        "transition",
        sa.String(40),
        nullable=False,
        comment="from->to, or an event such as hold_placed",
    ),
    sa.Column("action", sa.String(30)),
    sa.Column("basis", sa.Text),
    sa.Column("due_at", UTCDateTime, comment="the instant that made the record due"),
    sa.Column("record_pseudonym", HASH, comment="HMAC-SHA256 of dataset and record key"),
    sa.Column("subject_pseudonym", HASH, comment="HMAC-SHA256 of the subject key"),
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("clock_min", UTCDateTime),
    sa.Column("clock_max", UTCDateTime),
    sa.Column("detail", sa.Text, comment="JSON without personal data: request id, override, partition"),
    sa.Column("prev_hash", HASH, nullable=False),
    sa.Column("hash", HASH, nullable=False),
    sa.Column("format", sa.SmallInteger, comment="2 for v2"),
    sa.Column("merkle_root", HASH, comment="RFC 9162 root of the entry's items"),
    sa.Column("items", sa.Integer, comment="number of items"),
    sa.Column("mac", HASH, comment="format 3: HMAC of the hash under the engine's ledger key (null before format 3)"),
    sa.Index(None, "record_pseudonym"),
    sa.Index(None, "subject_pseudonym"),
    sa.Index(None, "run_id"),
)

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")
PSEUDONYM_PREFIX = 16
"""Characters of an item pseudonym a MariaDB/MySQL index keeps: 64 bits narrow a lookup to its rows (the
full value is then compared on each), with a quarter of the key to insert."""

ledger_items = sa.Table(
    f"{PREFIX}ledger_items",
    metadata,
    sa.Column("entry_seq", SEQ, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("record_pseudonym", HASH, nullable=False, comment="HMAC under the run's key"),
    sa.Column("subject_pseudonym", HASH, comment="HMAC under the run's key"),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("request_id", sa.Integer, comment="the erasure request behind the move"),
    sa.Column("review_id", sa.Integer, comment="the approved review batch behind the purge"),
    sa.Column("email_pseudonym", HASH, comment="HMAC under the run's key of the e-mail address's pseudonym"),
    # Format 4 (migration 0015): lookup by record, subject or e-mail probes these, not lookup rows.
    # Equality only, so the keys are compact (migration 0016): MariaDB keeps the first PSEUDONYM_PREFIX
    # characters, PostgreSQL hashes the record pseudonym (subjects and e-mails repeat across items:
    # a hash bucket's overflow chain would be walked on every insert, so they keep a B-tree). SQLite keys
    # them on substr(column, 1, 16) (migration 0017; SQLAlchemy cannot declare or reflect that per dialect):
    # lookups go through Dialect.pseudonym_in. Options go by dialect name: "mariadb" for a mariadb:// URL.
    sa.Index(
        None,
        "record_pseudonym",
        mysql_length=PSEUDONYM_PREFIX,
        mariadb_length=PSEUDONYM_PREFIX,
        postgresql_using="hash",
    ),
    sa.Index(None, "subject_pseudonym", mysql_length=PSEUDONYM_PREFIX, mariadb_length=PSEUDONYM_PREFIX),
    sa.Index(None, "email_pseudonym", mysql_length=PSEUDONYM_PREFIX, mariadb_length=PSEUDONYM_PREFIX),
)

BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
"""Binary of any length: bytea, LONGBLOB (MariaDB's BLOB stops at 64 kB), BLOB."""

ledger_blocks = sa.Table(
    f"{PREFIX}ledger_blocks",
    metadata,
    sa.Column("entry_seq", SEQ, primary_key=True, autoincrement=False),
    sa.Column("items", sa.Integer, nullable=False, comment="how many items the body holds"),
    sa.Column("body", BLOB, nullable=False, comment="the entry's items, 91 bytes each, in pseudonym order"),
)
"""Format 5 (migration 0018): one row per entry, its items as one byte string (:mod:`retention.ledger.blocks`).

No index but the key: a lookup searches the bodies of a run's entries for a pseudonym's bytes."""

ledger_lookup = sa.Table(
    f"{PREFIX}ledger_lookup",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("pseudonym", HASH, primary_key=True),
    sa.Column("entry_seq", SEQ, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
)
identity = sa.Table(
    f"{PREFIX}identity",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True, comment="'database': this database's own id"),
    sa.Column("value", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
"""Facts about this database itself; an archive store is bound to its ``database`` id."""

ledger_guard = sa.Table(
    f"{PREFIX}ledger_guard",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey(f"{PREFIX}ledger.seq"),
        comment="always empty: a foreign key to the ledger makes MySQL/MariaDB refuse TRUNCATE",
    ),
)
"""Stays empty. MySQL and MariaDB fire no trigger on TRUNCATE but refuse to truncate a table
that a foreign key references (unless foreign_key_checks is off); PostgreSQL likewise."""

ledger_items_guard = sa.Table(
    f"{PREFIX}ledger_items_guard",
    metadata,
    sa.Column("entry_seq", SEQ, comment="always empty: makes MySQL/MariaDB refuse TRUNCATE"),
    sa.Column("idx", sa.Integer),
    sa.ForeignKeyConstraint(["entry_seq", "idx"], [f"{PREFIX}ledger_items.entry_seq", f"{PREFIX}ledger_items.idx"]),
)
"""Stays empty, like ``ledger_guard``, for the items (migration 0007)."""

ledger_lookup_guard = sa.Table(
    f"{PREFIX}ledger_lookup_guard",
    metadata,
    sa.Column("run_id", sa.String(36), comment="always empty: makes MySQL/MariaDB refuse TRUNCATE"),
    sa.Column("pseudonym", HASH),
    sa.Column("entry_seq", SEQ),
    sa.Column("idx", sa.Integer),
    sa.ForeignKeyConstraint(
        ["run_id", "pseudonym", "entry_seq", "idx"],
        [
            f"{PREFIX}ledger_lookup.run_id",
            f"{PREFIX}ledger_lookup.pseudonym",
            f"{PREFIX}ledger_lookup.entry_seq",
            f"{PREFIX}ledger_lookup.idx",
        ],
    ),
)
"""Stays empty, like ``ledger_guard``, for the lookup rows (migration 0007)."""

ledger_blocks_guard = sa.Table(
    f"{PREFIX}ledger_blocks_guard",
    metadata,
    sa.Column(
        "entry_seq",
        SEQ,
        sa.ForeignKey(f"{PREFIX}ledger_blocks.entry_seq"),
        comment="always empty: makes MySQL/MariaDB refuse TRUNCATE",
    ),
)
"""Stays empty, like ``ledger_guard``, for the blocks (migration 0018)."""

review_batches = sa.Table(
    f"{PREFIX}review_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", NAME, nullable=False),
    sa.Column("run_id", sa.String(36), nullable=False, comment="the run that found the purges due"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, comment="pending, approved, rejected, completed"),
    sa.Column("decided_by", NAME),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("reason", sa.Text),
    sa.Index(None, "dataset", "status"),
)

review_items = sa.Table(
    f"{PREFIX}review_items",
    metadata,
    sa.Column("batch_id", sa.Integer, sa.ForeignKey(f"{PREFIX}review_batches.id"), primary_key=True),
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("record_key", SOURCE_KEY, primary_key=True),
    sa.Column("transition", sa.String(40), nullable=False),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Index(None, "dataset", "record_key"),
)

# The auditor console's own tables (retention.web). The console writes only
# these, and review decisions through retention.subjects.review.

console_users = sa.Table(
    f"{PREFIX}console_users",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("role", sa.String(20), nullable=False, comment="auditor, approver or admin"),
    sa.Column(
        "password_hash",
        sa.String(255),
        comment="argon2id; NULL for accounts that sign in through the proxy only",
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", NAME, nullable=False),
    sa.Column("disabled_at", UTCDateTime),
)

console_access_log = sa.Table(
    f"{PREFIX}console_access_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("user_name", NAME),
    sa.Column(
        "kind",
        sa.String(40),
        nullable=False,
        comment="what was done: sign_in, lookup_subject, review_approved, ...",
    ),
    sa.Column("outcome", sa.String(200), comment="counts or a verdict; never a looked-up id"),
    sa.Index(None, "at"),
    sa.Index(None, "kind", "at"),
)

console_login_failures = sa.Table(
    f"{PREFIX}console_login_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "name_hash",
        HASH,
        nullable=False,
        comment="HMAC of the name typed, so a password typed as a name is not kept",
    ),
    sa.Column("failed_at", UTCDateTime, nullable=False),
    sa.Index(None, "name_hash", "failed_at"),
)


# --------------------------------------------------------------------------
# Key lists
# --------------------------------------------------------------------------


def one_of(conn: sa.Connection, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """Rows whose ``column`` is one of ``values`` (see :meth:`retention.dialects.Dialect.one_of`)."""
    return dialect_for(conn).one_of(column, values)
