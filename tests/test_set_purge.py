"""The set-based purge (retention.engine.set_purge): the database computes what Python computed, byte for byte.

Pseudonyms are held to the standard library's ``hmac`` and the blocks the
database aggregates to :func:`retention.ledger.blocks.encode` of those
pseudonyms (docs/ledger.md, "Format 5"), on every database; the choice of
path is logged with its reason; and a ledger holding items of both paths
proves records of each.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
import yaml
from scaffold import count_batches
from sqlalchemy.dialects import mysql

from retention.dialects import dialect_for
from retention.engine import execute, set_purge
from retention.errors import LedgerError
from retention.ledger import blocks
from retention.ledger import chain as ledger
from retention.ledger import items as ledger_items
from retention.policy import validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects

KEY = bytes(range(32))
TEXTS = ["1", "-5", "18446744073709551615", "ünï-4 ✓", "a b ", "x" * 150, "evt-001-alice@example.org"]


def _selected(conn: sa.Connection, expression: sa.ColumnElement[str]) -> str:
    return str(conn.execute(sa.select(expression)).scalar_one())


def test_database_pseudonyms_are_hmac_sha256_of_the_python_message(migrated: sa.Engine) -> None:
    """``record`` 0x1F dataset 0x1F key and ``subject`` 0x1F key, keyed by the run key, as Python keys them."""
    with migrated.connect() as conn:
        dialect = dialect_for(conn)
        dialect.prepare_items(conn)
        for text in TEXTS:
            for prefix in (b"record\x1fevents\x1f", b"subject\x1f"):
                expected = hmac.new(KEY, prefix + text.encode("utf-8"), hashlib.sha256).hexdigest()
                got = _selected(conn, dialect.hmac_hex(KEY, prefix, sa.literal(text, sa.String)))
                assert got == expected, text
        # An integer key goes through its text form, as str(int) renders it in Python.
        for number in (0, 7, -42, 2**62):
            expected = hmac.new(KEY, b"subject\x1f" + str(number).encode(), hashlib.sha256).hexdigest()
            text = sa.cast(sa.literal(number, sa.BigInteger), sa.String)
            assert _selected(conn, dialect.hmac_hex(KEY, b"subject\x1f", text)) == expected
        # Format 5 holds the same values as 32 raw bytes.
        for text in TEXTS:
            expected_bytes = hmac.new(KEY, b"record\x1fevents\x1f" + text.encode("utf-8"), hashlib.sha256).digest()
            raw = dialect.hmac_bytes(KEY, b"record\x1fevents\x1f", sa.literal(text, sa.String))
            assert bytes(conn.execute(sa.select(raw)).scalar_one()) == expected_bytes, text


def _block_rows(rows: list[tuple[str, str | None, bytes | None]]) -> sa.Subquery:
    """``rows`` (record text, subject text or None, due bytes or None) as a subquery of literals."""
    selects = [
        sa.select(
            sa.literal(record, sa.String).label("record"),
            sa.literal(subject, sa.String).label("subject"),
            sa.literal(due, sa.LargeBinary).label("due"),
        )
        for record, subject, due in rows
    ]
    return sa.union_all(*selects).subquery("r")


def _block_in_sql(conn: sa.Connection, rows: list[tuple[str, str | None, bytes | None]]) -> tuple[bytes, int]:
    """The dialect's block of ``rows`` under KEY, pseudonyms computed by the database; with its row count."""
    dialect = dialect_for(conn)
    r = _block_rows(rows)
    record = dialect.hmac_bytes(KEY, b"record\x1fevents\x1f", r.c.record)
    subject = sa.case((r.c.subject.is_(None), sa.null()), else_=dialect.hmac_bytes(KEY, b"subject\x1f", r.c.subject))
    inner = sa.select(record.label("rec"), subject.label("subj"), r.c.due).subquery("i")
    body, count = conn.execute(
        sa.select(dialect.block_body(inner.c.rec, inner.c.subj, inner.c.due), sa.func.count()).select_from(inner)
    ).one()
    return bytes(body or b""), int(count)


def test_database_blocks_are_the_blocks_of_the_python_pseudonyms(migrated: sa.Engine) -> None:
    """The dialect's block aggregate: the items of ``blocks.encode`` over ``hmac`` pseudonyms, sorted by bytes.

    150 records (three chunks' worth, in an order unrelated to their
    pseudonyms'), keys and subjects in any script, some without a subject
    (32 zero bytes), several due instants.
    """
    dues = [b"2025-10-01T22:00:00.000000Z", b"1999-01-02T03:04:05.000006Z", b"2026-03-29T01:00:00.123456Z"]
    rows: list[tuple[str, str | None, bytes | None]] = [
        (TEXTS[i % len(TEXTS)] + str(i), None if i % 4 == 0 else f"sübject-{i % 9}", dues[i % 3]) for i in range(150)
    ]

    with migrated.connect() as conn:
        dialect_for(conn).prepare_items(conn)
        assert _block_in_sql(conn, rows) == (_block_by_hand(rows), 150)
        # A row without a due instant is left out of the body (the writer then refuses the batch: its length).
        assert _block_in_sql(conn, [*rows[:3], ("no-due", None, None)]) == (_block_by_hand(rows[:3]), 4)


def test_a_keyed_block_aggregate_is_the_block_of_the_python_pseudonyms(migrated: sa.Engine) -> None:
    """Where the block aggregate keys the pseudonyms itself (SQLite), its bytes are the composed ones'.

    The same rows as above from their texts: a NULL subject text is no
    subject, a row without a record or due is left out. Elsewhere the writer
    composes ``hmac_bytes`` and ``block_body`` (the test above) and the hook
    is not offered.
    """
    dues = [b"2025-10-01T22:00:00.000000Z", b"1999-01-02T03:04:05.000006Z", b"2026-03-29T01:00:00.123456Z"]
    rows: list[tuple[str, str | None, bytes | None]] = [
        (TEXTS[i % len(TEXTS)] + str(i), None if i % 4 == 0 else f"sübject-{i % 9}", dues[i % 3]) for i in range(150)
    ]
    with migrated.connect() as conn:
        dialect = dialect_for(conn)
        assert dialect.keyed_blocks == (conn.dialect.name == "sqlite")
        if not dialect.keyed_blocks:
            with pytest.raises(NotImplementedError):
                dialect.keyed_block_body(KEY, (b"record\x1fevents\x1f", b"subject\x1f"), *(sa.null(),) * 3)
            return
        dialect.prepare_items(conn)

        def keyed(rows: list[tuple[str, str | None, bytes | None]]) -> tuple[bytes, int]:
            r = _block_rows(rows)
            body = dialect.keyed_block_body(
                KEY, (b"record\x1fevents\x1f", b"subject\x1f"), r.c.record, r.c.subject, r.c.due
            )
            found, count = conn.execute(sa.select(body, sa.func.count()).select_from(r)).one()
            return bytes(found or b""), int(count)

        assert keyed(rows) == (_block_by_hand(rows), 150)
        assert keyed([*rows[:3], ("no-due", None, None)]) == (_block_by_hand(rows[:3]), 4)
        assert keyed([("no-due", "s", None)]) == (b"", 1)
        # An integer text (a CAST key) is keyed by its text, as str(int) renders it.
        numbers = sa.select(sa.cast(sa.literal(-42, sa.BigInteger), sa.String).label("record")).subquery("n")
        body = dialect.keyed_block_body(
            KEY, (b"record\x1fevents\x1f", b"subject\x1f"), numbers.c.record, sa.null(), sa.literal(dues[0])
        )
        assert bytes(conn.execute(sa.select(body).select_from(numbers)).scalar_one()) == _block_by_hand(
            [("-42", None, dues[0])]
        )


def _hash_states_held() -> set[bytes]:
    """The digests of every SHA-256 state the process holds (gc's objects and what they refer to, one level down).

    A hash object is not tracked by gc, and neither is a tuple of them once
    gc has looked at it: they are found through the tracked objects holding them.
    """
    kind = type(hashlib.sha256())
    found: set[bytes] = set()
    for holder in gc.get_objects():
        for ref in gc.get_referents(holder):
            if type(ref) is kind:
                found.add(ref.digest())
            elif isinstance(ref, (tuple, list, dict)) and not gc.is_tracked(ref):
                found.update(inner.digest() for inner in gc.get_referents(ref) if type(inner) is kind)
    return found


def test_no_state_of_a_run_key_is_held_after_its_statements(migrated: sa.Engine) -> None:
    """The database's HMACs under a run key leave no SHA-256 state of that key in the process once they have run.

    A worker runs many runs in one process; SQLite's functions run in it.
    The states an HMAC under the key starts from (RFC 2104: the padded key
    XOR 0x36, then the prefix; the padded key XOR 0x5C) are computed here by
    hand and looked for among every hash object the process holds.
    """
    key = os.urandom(32)
    prefixes = (b"record\x1fevents\x1f", b"subject\x1f")
    rows: list[tuple[str, str | None, bytes | None]] = [
        (f"r-{i}", f"s-{i % 3}", b"2025-10-01T22:00:00.000000Z") for i in range(10)
    ]
    padded = key.ljust(64, b"\0")
    inner, outer = bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
    states = {hashlib.sha256(inner + prefix).digest() for prefix in (b"", *prefixes)}
    states.add(hashlib.sha256(outer).digest())
    with migrated.connect() as conn:
        dialect = dialect_for(conn)
        dialect.prepare_items(conn)
        r = _block_rows(rows)
        text = conn.execute(sa.select(dialect.hmac_hex(key, prefixes[1], r.c.subject)).select_from(r)).scalars().all()
        assert text[0] == hmac.new(key, prefixes[1] + b"s-0", hashlib.sha256).hexdigest()
        if dialect.keyed_blocks:
            body = dialect.keyed_block_body(key, prefixes, r.c.record, r.c.subject, r.c.due)
            assert bytes(conn.execute(sa.select(body).select_from(r)).scalar_one()) == _block_by_hand(rows, key)
        held = states & _hash_states_held()
        assert not held, f"{len(held)} SHA-256 states of the run key are still held"


def _block_by_hand(rows: list[tuple[str, str | None, bytes | None]], key: bytes = KEY) -> bytes:
    """``blocks.encode`` of the rows' pseudonyms under ``key``, computed by the standard library's ``hmac``."""

    def pseudonym(message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()

    return blocks.encode(
        [
            (
                pseudonym(b"record\x1fevents\x1f" + record.encode()),
                None if subject is None else pseudonym(b"subject\x1f" + subject.encode()),
                (due or b"").decode(),
            )
            for record, subject, due in rows
        ]
    )


PACK = """
pack: choice
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
batch_size: 3
datasets:
  events:
    table: sp_events
    key: id
    subject_key: user_id
    basis: one year
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
  accounts:
    table: sp_accounts
    key: id
    basis: two steps
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
      - to: inactive
      - to: purged
        after: P1D
        action: delete
"""


def _tables(engine: sa.Engine) -> tuple[sa.Table, sa.Table]:
    md = sa.MetaData()
    events = sa.Table(
        "sp_events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.String(40)),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    accounts = sa.Table(
        "sp_accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    md.create_all(engine)
    return events, accounts


def test_the_path_is_chosen_explicitly_and_logged(migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eligible datasets run set-based, the others per record with the reason; the switch turns it off."""
    events, accounts = _tables(migrated)
    old = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": f"u{i % 2 or ''}", "collected": old} for i in range(7)])
        conn.execute(accounts.insert(), [{"id": i, "collected": old} for i in range(4)])
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    as_of = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with structlog.testing.capture_logs() as logs:
        result = execute.run(migrated, loaded, as_of, secret=KEY)
    assert result.counts["events"] == {"active->purged": 7}
    choices = {e["dataset"]: e for e in logs if e["event"] in ("purge_set_based", "purge_per_record")}
    assert choices["events"]["event"] == "purge_set_based"
    # PostgreSQL deletes and itemises a batch in one statement (by ctid); MariaDB and SQLite take three.
    assert choices["events"]["one_statement"] is (migrated.dialect.name == "postgresql")
    assert choices["accounts"] == {**choices["accounts"], "event": "purge_per_record"}
    assert choices["accounts"]["reason"] == "its lifecycle is not active -> purged"
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": 100, "user_id": "u", "collected": old}])
    monkeypatch.setenv(set_purge.SWITCH, "0")
    with structlog.testing.capture_logs() as logs:
        execute.run(migrated, loaded, as_of + dt.timedelta(days=1), secret=KEY)
    reasons = {e["dataset"]: e.get("reason") for e in logs if e["event"] == "purge_per_record"}
    assert reasons["events"] == f"turned off ({set_purge.SWITCH}=0)"
    assert not [e for e in logs if e["event"] == "purge_set_based"]
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 0


def test_a_batch_is_one_statement_on_plain_postgresql_tables_only(migrated: sa.Engine) -> None:
    """A ctid names a row of one relation: a partitioned table's children repeat each other's, so no address."""
    events, _ = _tables(migrated)
    postgresql = migrated.dialect.name == "postgresql"
    with migrated.begin() as conn:
        dialect = dialect_for(conn)
        assert (dialect.row_address(conn, events) is not None) is postgresql
        if postgresql:
            conn.execute(sa.text("CREATE TABLE sp_parted (id INT, at DATE) PARTITION BY RANGE (at)"))
            conn.execute(
                sa.text("CREATE TABLE sp_parted_1 PARTITION OF sp_parted FOR VALUES FROM (MINVALUE) TO (MAXVALUE)")
            )
            conn.execute(sa.text("CREATE TABLE sp_child () INHERITS (sp_accounts)"))
            parted = sa.Table("sp_parted", sa.MetaData(), autoload_with=conn)
            accounts = sa.Table("sp_accounts", sa.MetaData(), autoload_with=conn)
            assert dialect.row_address(conn, parted) is None
            assert dialect.row_address(conn, accounts) is None


def test_a_row_another_session_changes_while_the_batch_waits_gets_no_item(migrated: sa.Engine) -> None:
    """A due row made not due by an open transaction: the run waits for it, then neither deletes nor itemises it.

    On PostgreSQL the batch is one statement that deletes by row address
    (``Dialect.row_address``): the updated row is a new version the address
    does not name. Elsewhere the batch's locking read sees the committed
    update. Either way, one item per row deleted, and the changed row stays.
    """
    events, _ = _tables(migrated)
    old, recent = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC), dt.datetime(2024, 12, 1, 12, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": f"u{i}", "collected": old} for i in range(7)])
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    with migrated.connect() as other:
        other.begin()
        other.execute(events.update().where(events.c.id == 4).values(collected=recent))
        worker = threading.Thread(target=run)
        worker.start()
        if not dialect_for(other).write_lock_on_first_write:
            # Row 4 is in the second batch (batch size 3): wait for the first to commit, so that the second
            # has chosen row 4 from a snapshot where it is due and waits on it. (SQLite: the open write
            # transaction holds the database's one write lock, and the run waits for it from the start.)
            with migrated.connect() as watch:
                for _ in range(300):
                    if watch.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one():
                        break
                    watch.rollback()
                    time.sleep(0.05)
        time.sleep(1.0)
        # Row 4 is due in every snapshot the run can take before this commit: it cannot have finished.
        waited = worker.is_alive()
        other.commit()
    worker.join(60)
    assert "error" not in outcome, outcome
    assert waited
    result = outcome["result"]
    assert isinstance(result, execute.RunResult)
    assert result.counts["events"] == {"active->purged": 6}
    with migrated.connect() as conn:
        left = conn.execute(sa.select(events.c.id)).scalars().all()
        items = conn.execute(sa.select(sa.func.sum(store.ledger_blocks.c["items"]))).scalar_one()
        bodies = conn.execute(sa.select(store.ledger_blocks.c.body)).scalars().all()
        counted = conn.execute(sa.select(sa.func.sum(store.ledger.c["items"]))).scalar_one()
    assert left == [4]
    assert items == counted == sum(len(body) for body in bodies) // 91 == 6


def test_proofs_of_records_purged_per_record_and_set_based_both_verify(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run purges per record, the next set-based; both records prove against one checkpoint."""
    from test_ledger_proof import PACK as PROOF_PACK
    from test_ledger_proof import events_table, prove_each

    events = events_table(migrated)
    pack = tmp_path / "proofs.yaml"
    pack.write_text(PROOF_PACK, encoding="utf-8")
    batches = count_batches(monkeypatch, set_purge.SetPurge)

    def purge(keys: list[str], as_of: str, env: dict[str, str]) -> str:
        return _insert_and_run(migrated, events, pack, db_url, keys, as_of, env)

    old_run = purge(["old-1", "old-2", "old-3"], "2025-06-01", {set_purge.SWITCH: "0"})
    assert batches == []
    new_run = purge(["new-1", "new-2"], "2025-06-02", {})
    assert sum(batches) == 2
    prove_each(db_url, tmp_path, [(old_run, "old-2"), (new_run, "new-1")])


def test_proofs_of_records_of_format_3_and_format_4_runs_verify_against_one_checkpoint(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A format-3 run (JSON leaves, lookup rows), format 4 per record, format 5 set-based: all prove, one checkpoint."""
    from test_ledger_proof import PACK as PROOF_PACK
    from test_ledger_proof import events_table, prove_each

    events = events_table(migrated)
    pack = tmp_path / "proofs.yaml"
    pack.write_text(PROOF_PACK, encoding="utf-8")

    def purge(keys: list[str], as_of: str, env: dict[str, str]) -> str:
        return _insert_and_run(migrated, events, pack, db_url, keys, as_of, env)

    with monkeypatch.context() as previous:
        previous.setattr(ledger_items, "FORMAT", 3)  # what the engine wrote before format 4
        v3_run = purge(["v3-1", "v3-2", "v3-3"], "2025-06-01", {})
    per_record = purge(["rec-1", "rec-2"], "2025-06-02", {set_purge.SWITCH: "0"})
    set_based = purge(["set-1", "set-2"], "2025-06-03", {})
    with migrated.connect() as conn:
        entries = store.ledger
        rows = conn.execute(
            sa.select(entries.c.run_id, entries.c.format, entries.c["items"]).where(entries.c["items"] > 0)
        ).all()
        lookup_runs = set(conn.execute(sa.select(store.ledger_lookup.c.run_id).distinct()).scalars())
    assert sorted((run, form, n) for run, form, n in rows) == sorted(
        [(v3_run, 3, 3), (per_record, 4, 2), (set_based, 5, 2)]
    )
    assert lookup_runs == {v3_run}  # formats 4 and 5 write no lookup rows
    prove_each(db_url, tmp_path, [(v3_run, "v3-2"), (per_record, "rec-1"), (set_based, "set-2")])


def test_item_due_instants_are_the_oracles(migrated: sa.Engine) -> None:
    """Each item's due instant is the independent oracle's: the day after P1Y from the clock's Paris day.

    Instants either side of Paris midnights, on both 2020 DST days and on a
    29 February, so that a day table off by a day or by an offset shows.
    """
    import naive_oracle as oracle

    from retention.ledger.items import run_key

    events, _ = _tables(migrated)
    instants = [
        dt.datetime(2020, 2, 28, 22, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 2, 28, 23, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 3, 28, 22, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2020, 3, 28, 23, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 3, 29, 21, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 3, 29, 22, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 24, 21, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 24, 22, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 25, 22, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 25, 23, 0, tzinfo=dt.UTC),
    ]
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": "u", "collected": at} for i, at in enumerate(instants)])
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    with structlog.testing.capture_logs() as logs:
        result = execute.run(migrated, loaded, dt.datetime(2022, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert any(e["event"] == "purge_set_based" and e["dataset"] == "events" for e in logs)
    assert result.counts["events"] == {"active->purged": len(instants)}
    key = run_key(KEY, result.run_id)
    expected = {
        hmac.new(key, f"record\x1fevents\x1f{i}".encode(), hashlib.sha256).hexdigest(): oracle.due_after(
            oracle.local_day(at, "Europe/Paris"), "P1Y", "Europe/Paris"
        )
        for i, at in enumerate(instants)
    }
    assert _item_due_instants(migrated, result.run_id) == expected


def test_a_runs_block_is_the_block_of_the_python_pseudonyms_of_its_rows(migrated: sa.Engine) -> None:
    """A run's stored block, subjects included (none, empty, any script), is ``blocks.encode`` of ``hmac``'s values.

    Whichever way the dialect keys the rows (in its block aggregate on
    SQLite, by ``hmac_bytes`` elsewhere), the bytes are the reference's.
    """
    import naive_oracle as oracle

    from retention.ledger.items import run_key

    events, _ = _tables(migrated)
    # " " and "u-2 ": MariaDB's PAD SPACE collations compare them equal to "" and "u-2", where the per-record
    # path keys each as it is.
    subjects = ["u-1", None, "", "ünï ✓", "u-1", "x" * 40, "u-2 ", " "]
    at = dt.datetime(2020, 3, 28, 23, 0, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": 10 + i, "user_id": u, "collected": at} for i, u in enumerate(subjects)])
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(migrated, loaded, dt.datetime(2022, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": len(subjects)}
    key = run_key(KEY, result.run_id)
    due = oracle.due_after(oracle.local_day(at, "Europe/Paris"), "P1Y", "Europe/Paris")
    expected = blocks.encode(
        [
            (
                hmac.new(key, f"record\x1fevents\x1f{10 + i}".encode(), hashlib.sha256).digest(),
                hmac.new(key, f"subject\x1f{u}".encode(), hashlib.sha256).digest() if u else None,
                due.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            )
            for i, u in enumerate(subjects)
        ]
    )
    t, entries = store.ledger_blocks, store.ledger
    with migrated.connect() as conn:
        bodies = conn.execute(
            sa.select(t.c.body)
            .join(entries, entries.c.seq == t.c.entry_seq)
            .where(entries.c.run_id == result.run_id, entries.c.dataset == "events")
            .order_by(t.c.entry_seq)
        ).scalars()
        stored = [bytes(body) for body in bodies]
    # Batches of 3 (the pack's batch size): each block is its own rows' sorted items.
    assert sorted(b"".join(stored)[i : i + 91] for i in range(0, 91 * len(subjects), 91)) == sorted(
        expected[i : i + 91] for i in range(0, len(expected), 91)
    )
    assert all(blocks.check(body) is None for body in stored) and len(stored) == 3


def _integer_events(engine: sa.Engine, zerofill: bool) -> sa.Table:
    """PACK's tables with a BIGINT key and an INTEGER subject (MariaDB's ZEROFILL ones where ``zerofill``)."""
    md = sa.MetaData()
    events = sa.Table(
        "sp_events",
        md,
        sa.Column(
            "id",
            mysql.BIGINT(display_width=20, zerofill=True) if zerofill else sa.BigInteger,
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("user_id", mysql.INTEGER(display_width=6, zerofill=True) if zerofill else sa.Integer),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "sp_accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    md.create_all(engine)
    return events


@pytest.mark.parametrize("zerofill", [False, True])
def test_integer_keys_and_subjects_are_keyed_by_their_decimal_digits(migrated: sa.Engine, zerofill: bool) -> None:
    """A BIGINT key and an INTEGER subject (none, zero, negative, the largest): the items of ``str(int)``'s ``hmac``.

    MariaDB gives ``CONCAT`` the integers themselves (no cast to text, no
    empty-subject test per row): the bytes must be the digits Python keys.
    ``zerofill``: MariaDB's ZEROFILL columns (unsigned), whose text is
    padded ("000042") where Python's is "42" (review `engine`, finding 3).
    """
    if zerofill and migrated.dialect.name != "mysql":
        pytest.skip("ZEROFILL is MariaDB's/MySQL's")
    import naive_oracle as oracle

    from retention.ledger.items import run_key

    events = _integer_events(migrated, zerofill)
    rows = {-(2**40): 7, 3: None, 4: 0, 2**62: -3, 9: 2**31 - 1, 10: 7}
    if zerofill:
        rows = {3: None, 4: 0, 42: 42, 2**62: 2**31 - 1, 10: 7}
    at = dt.datetime(2020, 3, 28, 23, 0, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": u, "collected": at} for i, u in rows.items()])
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    with structlog.testing.capture_logs() as logs:
        result = execute.run(migrated, loaded, dt.datetime(2022, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert any(e["event"] == "purge_set_based" and e["dataset"] == "events" for e in logs)
    assert result.counts["events"] == {"active->purged": len(rows)}
    key = run_key(KEY, result.run_id)
    due = oracle.due_after(oracle.local_day(at, "Europe/Paris"), "P1Y", "Europe/Paris")
    expected = blocks.encode(
        [
            (
                hmac.new(key, f"record\x1fevents\x1f{i}".encode(), hashlib.sha256).digest(),
                None if u is None else hmac.new(key, f"subject\x1f{u}".encode(), hashlib.sha256).digest(),
                due.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            )
            for i, u in rows.items()
        ]
    )
    with migrated.connect() as conn:
        stored = b"".join(bytes(b) for b in conn.execute(sa.select(store.ledger_blocks.c.body)).scalars())
    assert sorted(stored[i : i + 91] for i in range(0, len(stored), 91)) == sorted(
        expected[i : i + 91] for i in range(0, len(expected), 91)
    )
    assert ledger.verify(migrated, secret=KEY).ok


def _item_due_instants(engine: sa.Engine, run_id: str) -> dict[str, dt.datetime]:
    """Each item of the run's ``events`` blocks: record pseudonym (hex) -> due instant, read by hand.

    A format-5 item is 91 bytes: the record pseudonym, the subject's, then
    the due instant's 27 characters (docs/ledger.md). The run writes no
    item rows.
    """
    t, entries = store.ledger_blocks, store.ledger
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(t.c.body)
            .join(entries, entries.c.seq == t.c.entry_seq)
            .where(entries.c.run_id == run_id, entries.c.dataset == "events", entries.c.format == 5)
        ).scalars()
        found = {
            bytes(body[i : i + 32]).hex(): dt.datetime.strptime(
                bytes(body[i + 64 : i + 91]).decode(), "%Y-%m-%dT%H:%M:%S.%fZ"
            ).replace(tzinfo=dt.UTC)
            for body in bodies
            for i in range(0, len(body), 91)
        }
        rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.ledger_items.join(entries, entries.c.seq == store.ledger_items.c.entry_seq))
            .where(entries.c.run_id == run_id)
        ).scalar_one()
    assert rows == 0
    return found


@pytest.mark.parametrize("value", ["false", "off", "2"])
def test_a_switch_value_that_is_neither_0_nor_1_is_refused_before_anything_moves(
    migrated: sa.Engine, db_url: str, tmp_path: Path, value: str
) -> None:
    """``RETENTION_SET_BASED=false`` once read as "on": the run now exits 2 with one line and moves nothing."""
    from test_ledger_proof import PACK as PROOF_PACK
    from test_ledger_proof import events_table, invoke

    events = events_table(migrated)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": "1", "user_id": "u-1", "collected": dt.datetime(2020, 3, 1)}])
    pack = tmp_path / "proofs.yaml"
    pack.write_text(PROOF_PACK, encoding="utf-8")
    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", "2025-01-01", env={set_purge.SWITCH: value})
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: {set_purge.SWITCH} must be 0 (every purge record by record) or 1 (the default, set-based where it can)"
    ]
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(store.runs)).scalar_one() == 0


def _insert_and_run(
    engine: sa.Engine, events: sa.Table, pack: Path, db_url: str, keys: list[str], as_of: str, env: dict[str, str]
) -> str:
    """Insert events ``keys`` (collected 2020-03-01), run the pack at ``as_of``; the run's id."""
    from test_ledger_proof import invoke

    with engine.begin() as conn:
        conn.execute(events.insert(), [{"id": k, "user_id": "u-1", "collected": dt.datetime(2020, 3, 1)} for k in keys])
    result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", as_of, env=env)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        query = sa.select(store.runs.c.id).where(store.runs.c.mode == "run").order_by(store.runs.c.started_at.desc())
        return str(conn.execute(query).scalars().first())


def test_the_day_table_ends_where_the_step_can_be_due_and_no_pack_reuses_anothers_days(migrated: sa.Engine) -> None:
    """Rows either side of the last due Paris day, under P1Y then P2Y in one process: each item is the oracle's.

    The day table stops two days past the latest clock date the step can be
    due from (not at the as-of date), and a process keeps the evaluator's
    due instants per pack digest between runs: a day table cut a day short
    fails or drops the boundary rows, and days shared across packs give the
    second run the first pack's due instants.
    """
    import naive_oracle as oracle

    from retention.ledger.items import run_key

    events, _ = _tables(migrated)
    # Paris midnights around the October 2020 change (UTC+2 until 25 Oct 01:00 UTC, then UTC+1).
    instants = [
        dt.datetime(2020, 10, 23, 21, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 23, 22, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 24, 21, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 24, 22, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 25, 22, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 25, 23, 0, tzinfo=dt.UTC),
        dt.datetime(2020, 10, 26, 22, 59, 59, tzinfo=dt.UTC),
    ]
    paris = "Europe/Paris"
    checked = 0
    for round_, period in enumerate(("P1Y", "P2Y")):
        ids = {100 * round_ + i: at for i, at in enumerate(instants)}
        with migrated.begin() as conn:
            conn.execute(events.insert(), [{"id": i, "user_id": "u", "collected": at} for i, at in ids.items()])
        text = PACK.replace(
            "period: P1Y\n    lifecycle:\n      - to: purged",
            f"period: {period}\n    lifecycle:\n      - to: purged",
            1,
        )
        assert text != PACK or period == "P1Y"
        loaded = validate_pack(yaml.safe_load(text), Path("<test>"), text)
        # As of the due instant of Paris day 2020-10-25: that day's rows are due, the next day's are not.
        as_of = oracle.due_after(dt.date(2020, 10, 25), period, paris)
        due = {i: oracle.due_after(oracle.local_day(at, paris), period, paris) for i, at in ids.items()}
        expected_ids = {i for i, when in due.items() if when <= as_of}
        assert 0 < len(expected_ids) < len(ids)  # the boundary falls inside the rows
        with structlog.testing.capture_logs() as logs:
            result = execute.run(migrated, loaded, as_of, secret=KEY)
        assert any(e["event"] == "purge_set_based" and e["dataset"] == "events" for e in logs)
        key = run_key(KEY, result.run_id)
        expected = {
            hmac.new(key, f"record\x1fevents\x1f{i}".encode(), hashlib.sha256).hexdigest(): due[i] for i in expected_ids
        }
        assert _item_due_instants(migrated, result.run_id) == expected
        with migrated.connect() as conn:
            left = set(conn.execute(sa.select(events.c.id).where(events.c.id >= 100 * round_)).scalars())
        assert left == set(ids) - expected_ids
        checked += len(expected_ids)
    assert checked >= 4


def test_the_batch_range_ends_at_the_last_key_of_each_batch(migrated: sa.Engine) -> None:
    """The dialect's end of a batch: the size-th key and the size, the shorter last batch, then nothing."""
    table = sa.Table("set_purge_range", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    with migrated.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"id": i} for i in (2, 3, 5, 7, 11, 13, 17)])
    ends = []
    with migrated.begin() as conn:
        dialect = dialect_for(conn)
        after = 0
        while True:
            query = dialect.for_update(sa.select(table.c.id).where(table.c.id > after).order_by(table.c.id).limit(3))
            last, count = dialect.last_of_batch(conn, query, 3)
            ends.append((last, count))
            if not count:
                break
            after = last
    assert ends == [(5, 3), (13, 3), (17, 1), (None, 0)]


@pytest.mark.only_on("sqlite")  # the dialect whose batch end is an aggregate over the locking read
def test_the_batch_range_ends_at_the_last_key_in_the_keys_collation(migrated: sa.Engine) -> None:
    """Text keys under NOCASE: a batch of two ends at 'B' (a, B), not at 'a', the greater byte string."""
    table = sa.Table(
        "set_purge_range_text", sa.MetaData(), sa.Column("id", sa.String(5, collation="NOCASE"), primary_key=True)
    )
    with migrated.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"id": k} for k in ("D", "a", "c", "B", "e")])
    ends = []
    with migrated.begin() as conn:
        dialect = dialect_for(conn)
        after = ""
        while True:
            query = sa.select(table.c.id).where(table.c.id > after).order_by(table.c.id).limit(2)
            last, count = dialect.last_of_batch(conn, query, 2)
            ends.append((last, count))
            if not count:
                break
            after = last
    assert ends == [("B", 2), ("D", 2), ("e", 1), (None, 0)]


def test_a_record_without_a_due_instant_fails_its_batch_and_leaves_it_whole(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day missing from the day table: its rows' items are NULL, which the block aggregate leaves out.

    The writer compares the body's length with the rows deleted, so the
    batch rolls back naming the dataset instead of committing a block short
    of two records. The first batch (3 rows on a day the table has) stays.
    """
    events, _ = _tables(migrated)
    kept_day, missing_day = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC), dt.datetime(2020, 3, 5, 12, tzinfo=dt.UTC)
    when = {0: kept_day, 1: kept_day, 2: kept_day, 3: missing_day, 4: missing_day, 5: kept_day}
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": "u", "collected": at} for i, at in when.items()])
    original = set_purge._by_stored_date

    def without_the_5th(*args: object) -> list[dict[str, object]]:
        return [row for row in original(*args) if row["u"] != dt.date(2020, 3, 5)]  # type: ignore[arg-type]

    monkeypatch.setattr(set_purge, "_by_stored_date", without_the_5th)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    with pytest.raises(LedgerError) as failed:
        execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert str(failed.value) == (
        "dataset events: the block of 3 records is 91 bytes, not 273 (a record without a due instant, or a block "
        "longer than the database returns in one value); rolled back"
    )
    with migrated.connect() as conn:
        assert sorted(conn.execute(sa.select(events.c.id)).scalars()) == [3, 4, 5]
        assert conn.execute(sa.select(store.ledger_blocks.c["items"])).scalars().all() == [3]
    assert ledger.verify(migrated, secret=KEY).ok


@pytest.mark.only_on("mariadb")
def test_a_block_longer_than_mariadbs_default_group_concat_limit_is_whole(migrated: sa.Engine) -> None:
    """12,000 items (1,092,000 bytes) against GROUP_CONCAT's default cap of 1 MiB: prepare_items lifts it."""
    due = b"2025-10-01T22:00:00.000000Z"
    with migrated.connect() as conn:
        dialect = dialect_for(conn)
        dialect.prepare_items(conn)
        numbers = sa.text("SELECT seq FROM seq_1_to_12000").columns(sa.column("seq", sa.Integer)).subquery("n")
        record = dialect.hmac_bytes(KEY, b"record\x1fevents\x1f", sa.cast(numbers.c.seq, sa.String))
        inner = sa.select(record.label("rec")).subquery("i")
        body = conn.execute(
            sa.select(
                dialect.block_body(inner.c.rec, sa.cast(sa.null(), sa.LargeBinary), sa.literal(due, sa.LargeBinary))
            )
        ).scalar_one()
    expected = b"".join(
        sorted(
            hmac.new(KEY, b"record\x1fevents\x1f" + str(n).encode(), hashlib.sha256).digest() + bytes(32) + due
            for n in range(1, 12001)
        )
    )
    assert len(expected) > 1_048_576
    assert bytes(body) == expected


def test_a_hold_placed_between_batches_holds_in_the_next_batch(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch statements are built once per run, yet a predicate that changes between batches is obeyed.

    After the second batch (ids 3-5; the first has no start, the second
    builds the statements every later batch runs) a hold on subject ``u1``
    (the odd ids) is placed in the batch's own transaction: the next batches'
    probe adds the hold condition, so statements kept from the second batch
    would delete the held records. They must stay, and the ledger must hold exactly the rows
    deleted. On every database (one-statement and three-statement batches).
    """
    events, _ = _tables(migrated)
    old = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(events.insert(), [{"id": i, "user_id": f"u{i % 2}", "collected": old} for i in range(12)])
    original = set_purge.SetPurge.batch
    calls = []

    def batch_then_hold(self: set_purge.SetPurge, conn: sa.Connection, after: object) -> object:
        done = original(self, conn, after)
        calls.append(after)
        if len(calls) == 2:
            conn.execute(
                store.holds.insert().values(
                    scope="subject", subject_key="u1", reason="test", placed_by="test", placed_at=old
                )
            )
        return done

    monkeypatch.setattr(set_purge.SetPurge, "batch", batch_then_hold)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(migrated, loaded, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), secret=KEY)
    held = [i for i in range(6, 12) if i % 2]
    with migrated.connect() as conn:
        assert sorted(conn.execute(sa.select(events.c.id)).scalars()) == held
        items = conn.execute(sa.select(sa.func.sum(store.ledger_blocks.c["items"]))).scalar_one()
    assert result.counts["events"] == {"active->purged": 12 - len(held)}
    assert items == 12 - len(held)
    assert len(calls) >= 3
    assert ledger.verify(migrated, secret=KEY).ok


@pytest.mark.only_on("mariadb")  # ZEROFILL is MariaDB's/MySQL's
@pytest.mark.parametrize("set_based", ["1", "0"])
def test_holds_on_zerofill_keys_and_subjects_hold(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, set_based: str
) -> None:
    """A record hold on key 42 and a subject hold on subject 7, both ZEROFILL columns: both records stay.

    A hold names the key as Python writes it ("42"); the column's text is
    padded ("000042"). Before, the holds' anti-join compared the padded text
    and purged both held records, on both paths (review `final`, finding 1).
    """
    monkeypatch.setenv(set_purge.SWITCH, set_based)
    events = _integer_events(migrated, zerofill=True)
    at = dt.datetime(2020, 3, 28, 23, 0, tzinfo=dt.UTC)
    with migrated.begin() as conn:
        conn.execute(
            events.insert(), [{"id": i, "user_id": u, "collected": at} for i, u in {42: 5, 43: 7, 44: 9}.items()]
        )
        subjects.place_hold(
            conn, scope="record", dataset="events", record_key="42", reason="r", placed_by="t", secret=KEY
        )
        subjects.place_hold(conn, scope="subject", subject_key="7", reason="s", placed_by="t", secret=KEY)
    loaded = validate_pack(yaml.safe_load(PACK), Path("<test>"), PACK)
    result = execute.run(migrated, loaded, dt.datetime(2022, 1, 1, tzinfo=dt.UTC), secret=KEY)
    assert result.counts["events"] == {"active->purged": 1}
    with migrated.connect() as conn:
        assert sorted(conn.execute(sa.select(events.c.id)).scalars()) == [42, 43]
        assert ledger.verify(conn, secret=KEY).ok
