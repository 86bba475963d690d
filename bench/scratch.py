"""A bench's own throwaway database, and the one-dataset world the erasure benches fill it with.

Why one module: bench/erasure_or.py, bench/subquery_cache.py and bench/null_key_notes.py
each built the same world by hand (a database dropped and created, a table of events
kept a year and purged on erasure, ten rows a subject inserted 10,000 at a time, open
erasure requests received before the as-of, fresh statistics). They differ only in
what they time, so that is all each of them now says.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from retention.policy import LoadedPack, validate_pack
from retention.store import tables as store
from retention.store.config import create_engine

AS_OF = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
CHUNK = 10_000  # rows per INSERT: one statement for 300,000 rows is more than a driver's packet takes

_PACK = """
pack: {pack}
version: "1"
effective_from: 2020-01-01
timezone: UTC
datasets:
  events:
    table: {table}
    key: id
    subject_key: user_id
{email}    basis: bench
    on_erasure: purged
    keep:
      - clock: {{column: collected, type: timestamptz}}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def arguments(doc: str, *, rows: int, requests: int) -> argparse.ArgumentParser:
    """The options every erasure bench takes: the database, its size, how many open requests, how many rounds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--repeat", type=int, default=3)
    return parser


def fresh_database(url: str) -> None:
    """Drop and create the database the URL names (SQLite: remove its file), so each run starts from nothing."""
    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":
        Path(target.database or "").unlink(missing_ok=True)
        return
    postgres = target.get_backend_name() == "postgresql"
    server = target.set(database="postgres" if postgres else "mysql").render_as_string(hide_password=False)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    quote = '"' if postgres else "`"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{target.database}{quote}"))
        conn.execute(sa.text(f"CREATE DATABASE {quote}{target.database}{quote}"))
    admin.dispose()


def erasure_pack(pack: str, table: str, *, email: bool) -> LoadedPack:
    """One dataset of ``table``, kept a year and purged on erasure.

    ``email``: the dataset also reads the address column ``mail``, so an erasure request may name it either way.
    """
    text = _PACK.format(pack=pack, table=table, email="    email: mail\n" if email else "")
    return validate_pack(yaml.safe_load(text), Path("<bench>"), text)


def events_table(name: str, *, email: bool, collation: str | None = None) -> sa.Table:
    """The table :func:`erasure_pack` reads, not yet created; ``collation``: the subject column's, where it matters."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(12), unique=True),
        sa.Column("user_id", sa.String(20, collation=collation), index=True),
        *([sa.Column("mail", sa.String(80), index=True)] if email else []),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )


def event_rows(count: int, at: dt.datetime, *, mail: str | None = None, null_keys: int = 0) -> list[dict[str, Any]]:
    """``count`` rows collected ``at``, ten a subject (u0..), so a subject's rows are many and alike.

    ``mail`` formats subject ``s``'s address; the first ``null_keys`` rows have no key.
    """
    subjects = count // 10
    return [
        {"n": n, "id": None if n < null_keys else f"k{n}", "user_id": f"u{n % subjects}", "collected": at}
        | ({"mail": mail.format(s=n % subjects)} if mail is not None else {})
        for n in range(count)
    ]


def insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        conn.execute(table.insert(), rows[start : start + CHUNK])


def open_requests(conn: sa.Connection, identities: list[dict[str, str | None]]) -> None:
    """One open erasure request per identity (``subject_key`` and/or ``email``), received before :data:`AS_OF`."""
    conn.execute(
        store.erasure_requests.insert(),
        [
            {**who, "received_on": dt.date(2024, 12, 15), "deadline": dt.date(2025, 1, 15), "status": "open"}
            for who in identities
        ],
    )


def analyse(conn: sa.Connection, *tables: str) -> None:
    """Statistics as autovacuum (off on the bench machine) would have them: the planner must see the rows written."""
    if conn.dialect.name in ("postgresql", "sqlite"):
        conn.execute(sa.text("ANALYZE"))
    else:
        conn.execute(sa.text(f"ANALYZE TABLE {', '.join(tables)}"))
