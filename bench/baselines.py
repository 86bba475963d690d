"""Baselines an audited purge is measured against, beside the raw ``DELETE`` of bench/run.py.

- ``pt_archiver``: Percona Toolkit's bulk purge on MySQL/MariaDB, what a DBA
  runs today for this job (with no audit at all).
- ``handwritten_audited``: the practical limit of an audited purge on
  PostgreSQL: one ``WITH d AS (DELETE ... RETURNING) INSERT INTO items
  SELECT ...`` per 50k key range, each in its own transaction, with the
  pseudonyms, due instants and Merkle leaves computed by the database and
  Python touching only the 32-byte leaves to build each range's tree and
  chained entry. ``content`` picks what it writes: ``today`` is the engine's
  ledger v2 content (hex HMACs, the RFC 8785 leaf document, chained entries,
  sorted four-column lookup rows at the end); ``lean`` is binary 32-byte
  pseudonyms, a binary leaf, chained entries and one sorted lookup table of
  8-byte pseudonym prefixes; ``lean-nolookup`` the same without lookup rows;
  ``format4`` exactly what the engine writes today (ledger format 4: hex
  HMACs in the engine's own items table with its pseudonym indexes, the
  format-4 leaf text, chained entries, no lookup rows), the baseline the
  engine's "within 1.2x of the same content" target was measured against
  before format 5; ``format5`` exactly what the engine writes now (ledger
  format 5, docs/ledger.md: one block row per range in the engine's own
  blocks table, raw 32-byte HMACs (by ``sha256()`` over the key's pads, as
  the engine computes them, rather than pgcrypto's slower ``hmac()``), the
  due text, items aggregated in
  pseudonym order by ``string_agg``; Python hashes the returned body's
  64-item chunks into the Merkle root and chains the entry).

Both are baselines only: nothing here is the engine, and the tables they
write (``bench_*``) are dropped and made again per measurement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
from typing import Any

import sqlalchemy as sa

from retention.ledger import blocks, merkle

RANGE = 50_000
CONTENTS = ("today", "lean", "lean-nolookup", "format4", "format5")
# The engine's due instant for the bench pack: the day after the clock's local
# date plus 13 months, at Paris midnight (one expression per row, as the engine would need).
_DUE = (
    "((date_trunc('day', d.collected_at AT TIME ZONE 'Europe/Paris') + interval '13 months' + interval '1 day')"
    " AT TIME ZONE 'Europe/Paris')"
)

# The item pseudonyms: HMAC-SHA256 under the run's key (pgcrypto), as the engine computes them in Python.
_RECORD = (
    "hmac(convert_to('record' || chr(31) || 'events' || chr(31) || d.id::text, 'UTF8'), CAST(:key AS bytea), 'sha256')"
)
_SUBJECT = "hmac(convert_to('subject' || chr(31) || d.customer_id::text, 'UTF8'), CAST(:key AS bytea), 'sha256')"


# The same HMACs by the built-in sha256() over the key's pre-absorbed pads (RFC 2104; PostgreSQL 11, no pgcrypto):
# what a DBA would write for speed, and what the engine computes (Dialect.hmac_bytes). Two SHA-256 a pseudonym.
_PADDED = "sha256(CAST(:opad AS bytea) || sha256(CAST(:ipad AS bytea) || convert_to({}, 'UTF8')))"
_PADDED_RECORD = _PADDED.format("'record' || chr(31) || 'events' || chr(31) || d.id::text")
_PADDED_SUBJECT = _PADDED.format("'subject' || chr(31) || d.customer_id::text")


def pt_archiver_available() -> bool:
    return shutil.which("pt-archiver") is not None


def pt_archiver(url: str, cutoff: str, table: str = "bench_events") -> int:
    """Purge the due rows with ``pt-archiver --purge --bulk-delete --limit 1000 --commit-each``; rows deleted.

    The row count comes from its ``--statistics`` report (``DELETE n``).
    """
    out = subprocess.run(pt_archiver_command(url, cutoff, table), capture_output=True, text=True, check=True)
    return pt_archiver_deleted(out.stdout)


def pt_archiver_command(url: str, cutoff: str, table: str = "bench_events") -> list[str]:
    """The pt-archiver bulk purge's command line, ``--statistics`` on (its time split by action)."""
    u = sa.engine.make_url(url)
    dsn = f"h={u.host or '127.0.0.1'},P={u.port or 3306},u={u.username or 'root'},D={u.database},t={table}"
    if u.password:
        dsn += f",p={u.password}"
    return [
        "pt-archiver",
        "--source",
        dsn,
        "--where",
        f"collected_at < '{cutoff}'",
        "--purge",
        "--bulk-delete",
        "--limit",
        "1000",
        "--commit-each",
        "--primary-key-only",
        "--statistics",
        "--no-check-charset",
    ]


def pt_archiver_deleted(stdout: str) -> int:
    """The rows deleted, from pt-archiver's ``--statistics`` report (``DELETE n``)."""
    found = re.search(r"^DELETE\s+(\d+)", stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"pt-archiver printed no DELETE count: {stdout[-500:]}")
    return int(found.group(1))


def _prepare(conn: sa.Connection, content: str) -> None:
    conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pgcrypto"))
    for name in ("bench_items", "bench_lookup", "bench_entries", "bench_blocks"):
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    # The engine's own column types and indexes (LIKE ... INCLUDING ALL), without its triggers.
    conn.execute(sa.text("CREATE TABLE bench_entries (LIKE retention_ledger INCLUDING ALL)"))
    if content == "format5":
        conn.execute(sa.text("CREATE TABLE bench_blocks (LIKE retention_ledger_blocks INCLUDING ALL)"))
    elif content in ("today", "format4"):
        conn.execute(sa.text("CREATE TABLE bench_items (LIKE retention_ledger_items INCLUDING ALL)"))
        conn.execute(sa.text("CREATE TABLE bench_lookup (LIKE retention_ledger_lookup INCLUDING ALL)"))
    else:
        conn.execute(
            sa.text(
                "CREATE TABLE bench_items (entry_seq BIGINT, idx INTEGER, record BYTEA NOT NULL, subject BYTEA, "
                "due_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (entry_seq, idx))"
            )
        )
        conn.execute(sa.text("CREATE TABLE bench_lookup (prefix BIGINT NOT NULL, entry_seq BIGINT, idx INTEGER)"))
        conn.execute(sa.text("CREATE INDEX ix_bench_lookup ON bench_lookup (prefix)"))


def _block_sql() -> str:
    """One key range in format 5: delete the due rows and write their block, returning its count and body."""
    due = f"convert_to(to_char({_DUE} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'UTF8')"
    none = f"'\\x{'00' * 32}'::bytea"
    return (
        "WITH d AS (DELETE FROM bench_events WHERE id >= :lo AND id < :hi AND collected_at < :cutoff "
        "RETURNING id, customer_id, collected_at), "
        f"n AS (SELECT {_PADDED_RECORD} AS rec, {_PADDED_SUBJECT} AS subj, {due} AS due FROM d), "
        "b AS (INSERT INTO bench_blocks (entry_seq, items, body) SELECT :seq, count(*), "
        f"string_agg(rec || coalesce(subj, {none}) || due, ''::bytea ORDER BY rec) FROM n HAVING count(*) > 0 "
        "RETURNING items, body) "
        "SELECT items, body FROM b"
    )


def _range_sql(content: str) -> str:
    """One key range: delete the due rows and write their items, returning each item's leaf."""
    if content == "format5":
        return _block_sql()
    if content == "today":
        pseudonyms = f"encode({_RECORD}, 'hex') AS rec, encode({_SUBJECT}, 'hex') AS subj"
        document = (
            "convert_to('{\"due_at\":\"' || to_char(i.due_at AT TIME ZONE 'UTC', "
            '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') || \'","idx":\' || i.idx || \',"record":"\' || '
            'i.record_pseudonym || \'","request"\\:null,"review"\\:null,"subject":"\' || '
            "i.subject_pseudonym || '\"}', 'UTF8')"
        )
        columns = "entry_seq, idx, record_pseudonym, subject_pseudonym, due_at"
    elif content == "format4":
        # retention.ledger.items.item_bytes: due instant, record, subject, e-mail (absent), "idx::".
        absent = "-" * 64
        pseudonyms = f"encode({_RECORD}, 'hex') AS rec, encode({_SUBJECT}, 'hex') AS subj"
        document = (
            'convert_to(to_char(i.due_at, \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') || i.record_pseudonym || '
            f"coalesce(i.subject_pseudonym, '{absent}') || '{absent}' || i.idx || '::', 'UTF8')"
        )
        columns = "entry_seq, idx, record_pseudonym, subject_pseudonym, due_at"
    else:
        pseudonyms = f"{_RECORD} AS rec, {_SUBJECT} AS subj"
        document = (
            "int4send(i.idx) || i.record || coalesce(i.subject, '') || "
            "int8send((extract(epoch FROM i.due_at) * 1000000)::bigint)"
        )
        columns = "entry_seq, idx, record, subject, due_at"
    return (
        "WITH d AS (DELETE FROM bench_events WHERE id >= :lo AND id < :hi AND collected_at < :cutoff "
        "RETURNING id, customer_id, collected_at), "
        f"n AS (SELECT row_number() OVER (ORDER BY d.id) - 1 AS idx, {pseudonyms}, {_DUE} AS due FROM d), "
        f"i AS (INSERT INTO bench_items ({columns}) SELECT :seq, idx, rec, subj, due FROM n RETURNING *) "
        f"SELECT sha256('\\x00'::bytea || {document}) FROM i ORDER BY i.idx"
    )


def handwritten_audited(engine: sa.Engine, content: str, cutoff: dt.datetime, key: bytes) -> int:
    """The audited purge a DBA could write by hand on PostgreSQL (module doc); rows deleted."""
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {CONTENTS}")
    with engine.begin() as conn:
        _prepare(conn, content)
        high = int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM bench_events")).scalar_one())
    statement = sa.text(_range_sql(content))
    entries = sa.text(
        "INSERT INTO bench_entries (seq, recorded_at, run_id, pack_id, pack_digest, dataset, transition, action, "
        "basis, due_at, count, prev_hash, hash, format, merkle_root, items) VALUES (:seq, now(), 'bench-run', "
        "'bench', :digest, 'events', 'active->purged', 'delete', 'bench', :due, :n, :prev, :hash, 2, :root, :n)"
    )
    prev, seq, deleted = "0" * 64, 0, 0
    padded = key.ljust(64, b"\x00")  # the bench key is shorter than a SHA-256 block
    inner, outer = bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
    digest = hashlib.sha256(b"bench").hexdigest()
    for low in range(1, high + 1, RANGE):
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))  # the range's sorts in memory, as a DBA would set
            parameters = {"lo": low, "hi": low + RANGE, "cutoff": cutoff, "key": key, "seq": seq + 1}
            if content == "format5":
                parameters.update(ipad=inner, opad=outer)
            if content == "format5":
                block = conn.execute(statement, parameters).first()
                if block is None:
                    continue
                count, root = int(block.items), blocks.root(bytes(block.body)).hex()
            else:
                leaves = [bytes(leaf) for leaf in conn.execute(statement, parameters).scalars()]
                if not leaves:
                    continue
                count, root = len(leaves), merkle.root(leaves).hex()
            seq += 1
            document: dict[str, Any] = {"seq": seq, "prev_hash": prev, "merkle_root": root, "items": count}
            entry_hash = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
            conn.execute(
                entries,
                {
                    "seq": seq,
                    "digest": digest,
                    "due": cutoff,
                    "n": count,
                    "prev": prev,
                    "hash": entry_hash,
                    "root": root,
                },
            )
            prev = entry_hash
            deleted += count
    if content == "today":
        with engine.begin() as conn:
            for column in ("record_pseudonym", "subject_pseudonym"):
                conn.execute(
                    sa.text(
                        f"INSERT INTO bench_lookup (run_id, pseudonym, entry_seq, idx) SELECT 'bench-run', {column}, "
                        f"entry_seq, idx FROM bench_items WHERE {column} IS NOT NULL ORDER BY {column}, entry_seq, idx"
                    )
                )
    elif content == "lean":
        with engine.begin() as conn:
            for column in ("record", "subject"):
                conn.execute(
                    sa.text(
                        "INSERT INTO bench_lookup (prefix, entry_seq, idx) SELECT "
                        f"('x' || encode(substring({column} FROM 1 FOR 8), 'hex'))::bit(64)::bigint AS p, "
                        f"entry_seq, idx FROM bench_items WHERE {column} IS NOT NULL ORDER BY p"
                    )
                )
    return deleted
