"""The fault suite's scenario: one production-shaped pack, its data, and what a run leaves behind.

Customers are deactivated, archived (then deleted) and purged from the
archive; their orders (foreign key to the customer) follow them out when
they are archived; events are deleted by their own clock. A few hundred rows
in batches of 8, so a run takes many transactions and a fault can land in
any of them.

:func:`snapshot` reads everything a run must leave identical whatever
happened on the way (rows, record states, archive payloads, the ledger's
moves per record); :func:`pseudonym_mismatches` checks the ledger's items
against the rows really deleted, with HMAC computed here from RFC 2104's
definition by :mod:`hmac`, not by the engine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from ledger_view import record_moves
from sqlalchemy.dialects import mysql

from retention.ledger import chain as ledger
from retention.store import tables as store

SECRET = "fault-suite-pseudonym-key"
AS_OF = "2026-06-01"
SEED = 11
CUSTOMERS, ORDERS, EVENTS = 120, 200, 300

PACK = """
pack: faults
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
batch_size: 8
guard: {max_share: 1.0}
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: privacy policy
    keep:
      - clock: {column: last_seen, type: timestamptz}
        period: P2Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {active: false}
      - to: archived
        after: P1M
        action: archive
        columns: [id, email, name]
        then: delete
      - to: purged
        after: P1Y
  orders:
    table: orders
    key: id
    subject_key: customer_id
    basis: orders go with their customer
    follows: {dataset: customers, via: customer_id, on: {archived: purged}}
    lifecycle:
      - to: purged
        action: delete
  events:
    table: events
    key: id
    subject_key: customer_id
    basis: thirteen months
    keep:
      - clock: {column: at_epoch, type: epoch}
        period: P13M
    lifecycle:
      - to: purged
        action: delete
"""

# Which transitions take the source row away (the others keep it or only touch the archive).
DELETING = {("customers", "inactive->archived"), ("orders", "active->purged"), ("events", "active->purged")}
SUBJECT_COLUMN = {"customers": "id", "orders": "customer_id", "events": "customer_id"}
SOURCE_TABLES = ("customers", "orders", "events")


def write_pack(directory: Path) -> Path:
    path = directory / "faults.yaml"
    path.write_text(PACK, encoding="utf-8")
    return path


def _ts() -> Any:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def build(engine: sa.Engine) -> None:
    """The same rows on every database (seeded): customers, their orders, events."""
    md = sa.MetaData()
    customers = sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100)),
        sa.Column("last_seen", _ts(), index=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    orders = sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("total_cents", sa.Integer, nullable=False),
        sa.Column("created_at", _ts()),
    )
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at_epoch", sa.BigInteger, index=True),
    )
    md.create_all(engine)
    data = rows()
    aware = engine.dialect.name == "postgresql"

    def dated(table: str) -> list[dict[str, Any]]:
        """Naive UTC datetimes where the column has no zone (SQLite, MariaDB)."""
        return [
            {k: v.replace(tzinfo=None) if isinstance(v, dt.datetime) and not aware else v for k, v in row.items()}
            for row in data[table]
        ]

    rows_c, rows_o, rows_e = dated("customers"), dated("orders"), dated("events")
    with engine.begin() as conn:
        conn.execute(customers.insert(), rows_c)
        conn.execute(orders.insert(), rows_o)
        conn.execute(events.insert(), rows_e)


def original_keys() -> dict[str, list[str]]:
    return {table: [str(row["id"]) for row in rows()[table]] for table in SOURCE_TABLES}


def _text(value: Any) -> str:
    """One spelling per value, so that rows read back compare as text."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return repr(value)


def snapshot(engine: sa.Engine) -> dict[str, Counter[tuple[str, ...]]]:
    """Everything a run leaves that must not depend on the faults it met, as multisets of rows.

    The engine's own bookkeeping that rightly differs (run ids, wall-clock
    instants of archiving, how entries are cut into batches) is left out;
    the ledger is compared move by move: (dataset, record, transition, due).
    """
    result: dict[str, Counter[tuple[str, ...]]] = {}
    with engine.connect() as conn:
        for table in SOURCE_TABLES:
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()
            result[f"table {table}"] = Counter(tuple(_text(v) for v in row) for row in rows)
        rs = store.record_states
        result["record states"] = Counter(
            (r.dataset, r.record_key, r.state, _text(r.since))
            for r in conn.execute(sa.select(rs.c.dataset, rs.c.record_key, rs.c.state, rs.c.since))
        )
        ar = store.archive
        result["archive"] = Counter(
            (r.dataset, r.record_key, r.payload, _text(r.purge_due_at))
            for r in conn.execute(sa.select(ar.c.dataset, ar.c.record_key, ar.c.payload, ar.c.purge_due_at))
        )
    result["ledger moves"] = Counter(
        (dataset, key, transition, _text(due))
        for dataset, key, transition, due in record_moves(engine, SECRET.encode(), original_keys())
    )
    return result


def differences(golden: dict[str, Counter[Any]], got: dict[str, Counter[Any]]) -> list[tuple[str, str, int, int]]:
    """(aspect, row, times in the golden run, times here) for every row that differs."""
    diffs = []
    for aspect in sorted(set(golden) | set(got)):
        want, have = golden.get(aspect, Counter()), got.get(aspect, Counter())
        for row in sorted(set(want) | set(have)):
            if want[row] != have[row]:
                diffs.append((aspect, " | ".join(row), want[row], have[row]))
    return diffs


def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def expected_pseudonyms(run_id: str, dataset: str, key: str, subject: str | None) -> tuple[str, str | None]:
    """The item's pseudonyms as retention/ledger/items.py documents them, written out independently of the engine.

    Run key: HMAC-SHA256(pseudonym key, "run" 0x1f run id); record:
    HMAC-SHA256(run key, "record" 0x1f dataset 0x1f key); subject:
    HMAC-SHA256(run key, "subject" 0x1f subject key); all hex.
    """
    run_key = hmac.new(SECRET.encode(), b"run\x1f" + run_id.encode(), hashlib.sha256).digest()
    record = _hmac_hex(run_key, f"record\x1f{dataset}\x1f{key}")
    return record, None if subject is None else _hmac_hex(run_key, f"subject\x1f{subject}")


def pseudonym_mismatches(engine: sa.Engine) -> list[tuple[str, str, int, int]]:
    """HMAC(deleted keys) == the ledger's pseudonyms of row-removing moves, each exactly once.

    Returns differences in the shape of :func:`differences`: (aspect, what,
    expected count, count found). Also fails when ``ledger verify`` does not.
    """
    entries, items = store.ledger, store.ledger_items
    originals = original_keys()
    with engine.connect() as conn:
        subjects = {
            table: {str(k): str(s) for k, s in conn.execute(sa.text(f"SELECT id, {col} FROM {table}"))}
            for table, col in SUBJECT_COLUMN.items()
        }
        # Rows gone are the deleted keys; the subject of a gone row is the one the data was built with.
        gone = {t: set(originals[t]) - set(subjects[t]) for t in SOURCE_TABLES}
        rows: list[tuple[Any, ...]] = [
            tuple(row)
            for row in conn.execute(
                sa.select(entries.c.run_id, entries.c.dataset, entries.c.transition, items.c.record_pseudonym)
                .add_columns(items.c.subject_pseudonym)
                .select_from(entries.join(items, items.c.entry_seq == entries.c.seq))
            )
        ]
        # Format-5 blocks (the set-based purge): 91-byte items, raw record and subject pseudonyms (32 zero bytes
        # for none) then the due text, as docs/ledger.md lays them out.
        blocks = store.ledger_blocks
        for run_id, dataset, transition, body in conn.execute(
            sa.select(entries.c.run_id, entries.c.dataset, entries.c.transition, blocks.c.body).select_from(
                entries.join(blocks, blocks.c.entry_seq == entries.c.seq)
            )
        ):
            for at in range(0, len(body), 91):
                subject = bytes(body[at + 32 : at + 64])
                rows.append(
                    (
                        run_id,
                        dataset,
                        transition,
                        bytes(body[at : at + 32]).hex(),
                        subject.hex() if any(subject) else None,
                    )
                )
        verdict = ledger.verify(conn)
    built = _built_subjects()
    found: Counter[tuple[str, str]] = Counter()
    unknown: Counter[tuple[str, str]] = Counter()
    reverse: dict[str, dict[tuple[str, str, str | None], str]] = {}
    for run_id, dataset, transition, record, subject in rows:
        if (dataset, transition) not in DELETING:
            continue
        if run_id not in reverse:
            reverse[run_id] = {}
            for name, keys in gone.items():
                for key in keys:
                    pair = expected_pseudonyms(run_id, name, key, built[name][key])
                    reverse[run_id][(name, *pair)] = key
        key = reverse[run_id].get((dataset, record, subject))
        if key is None:
            unknown[(dataset, record[:16])] += 1
        else:
            found[(dataset, key)] += 1
    result = [(f"HMAC {d}", f"deleted key {k}", 1, found[(d, k)]) for d in gone for k in sorted(gone[d], key=int)]
    result = [r for r in result if r[2] != r[3]]
    result += [(f"HMAC {d}", f"deleted key {k}", 0, n) for (d, k), n in found.items() if k not in gone[d]]
    result += [(f"HMAC {d}", f"item {p}... matches no deleted row", 0, n) for (d, p), n in unknown.items()]
    if not verdict.ok:
        result.append(("ledger verify", str(verdict.reason), 1, 0))
    return result


@lru_cache(maxsize=1)
def rows() -> dict[str, list[dict[str, Any]]]:
    """The scenario's rows, the same on every database (seeded); instants in UTC."""
    rng = random.Random(SEED)
    start = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)

    def when() -> dt.datetime:
        return start + dt.timedelta(seconds=rng.randrange(0, 7 * 365 * 86400), microseconds=rng.randrange(10**6))

    customers = [
        {
            "id": i,
            "email": f"person{i}@mail{i % 5}.test",
            "name": f"Person {i}",
            "last_seen": None if i % 23 == 0 else when(),
            "active": True,
        }
        for i in range(1, CUSTOMERS + 1)
    ]
    orders = [
        {
            "id": i,
            "customer_id": rng.randrange(1, CUSTOMERS + 1),
            "total_cents": rng.randrange(100, 99999),
            "created_at": when(),
        }
        for i in range(1, ORDERS + 1)
    ]
    events = [
        {
            "id": i,
            "customer_id": rng.randrange(1, CUSTOMERS + 1),
            "kind": rng.choice(["view", "click", "search"]),
            "at_epoch": int(when().timestamp()),
        }
        for i in range(1, EVENTS + 1)
    ]
    return {"customers": customers, "orders": orders, "events": events}


def _built_subjects() -> dict[str, dict[str, str]]:
    """Each row's subject key as :func:`rows` built it."""
    return {
        table: {str(row["id"]): str(row[column]) for row in rows()[table]} for table, column in SUBJECT_COLUMN.items()
    }


def format_differences(title: str, diffs: Iterable[tuple[str, str, int, int]]) -> str:
    rows = list(diffs)
    lines = [f"{title}: {len(rows)} difference(s)", f"{'aspect':<18} {'golden':>6} {'here':>6}  row"]
    lines += [f"{aspect:<18} {want:>6} {have:>6}  {row}" for aspect, row, want, have in rows[:200]]
    if len(rows) > 200:
        lines.append(f"... and {len(rows) - 200} more")
    return "\n".join(lines)
