"""The set-based archive (retention.engine.set_archive): what the per-record path wrote, written by the database.

Two datasets with the same rows, the same lifecycle and the same holds are
run at the same instant, one record by record (``RETENTION_SET_BASED=0``),
the other set-based: payloads (byte for byte), their purge instants, state
rows (since, subject, clock day), the rows left, the counts per transition
and the items' due instants must be equal, and the ledger must verify. The
values of the per-record path are themselves held to hand-computed ones
(Paris days, P1Y then P3Y) so that both cannot be wrong together.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
import yaml
from scaffold import count_batches

from retention.dialects import dialect_for
from retention.engine import execute, set_archive, set_purge
from retention.engine.archive import SeparateArchive
from retention.ledger import items as ledger_items
from retention.ledger.verification import verify
from retention.policy import validate_pack
from retention.store import tables as store
from retention.subjects.events import place_hold

KEY = bytes(range(32))
UTC = dt.UTC
AS_OF = dt.datetime(2025, 1, 1, tzinfo=UTC)


def _pack(name: str, then: str = "delete") -> str:
    return f"""
pack: archive-{name}
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {{max_share: 1.0}}
batch_size: 3
datasets:
  {name}:
    table: sa_{name}
    key: id
    subject_key: user_id
    basis: one year, then the archive
    keep:
      - clock: {{column: collected, type: timestamptz}}
        period: P1Y
    lifecycle:
      - to: archived
        action: archive
        columns: [id, note, amount, collected]
        then: {then}
        {"mask: {note: null}" if then == "anonymise" else ""}
      - to: purged
        after: P3Y
"""


# (key, subject, clock): archived only, archived and purged in one run, not due, held.
ROWS: list[tuple[int, str | None, dt.datetime]] = [
    (1, "u1", dt.datetime(2023, 3, 1, 12, tzinfo=UTC)),  # archive due 2024-03-02 Paris, purge 2027
    (2, None, dt.datetime(2023, 3, 25, 22, 59, 59, tzinfo=UTC)),  # Paris 2023-03-25 (before the DST night)
    (3, "u3", dt.datetime(2023, 3, 25, 23, 0, tzinfo=UTC)),  # Paris 2023-03-26
    (4, "u1", dt.datetime(2020, 3, 1, 12, tzinfo=UTC)),  # archive 2021-03-02, purge 2024-03-03: both due
    (5, "u5", dt.datetime(2024, 6, 1, 12, tzinfo=UTC)),  # not due before 2025-06-02
    (6, "u6", dt.datetime(2023, 10, 28, 22, 0, tzinfo=UTC)),  # Paris 2023-10-29 00:00 (CEST)
    (7, "held", dt.datetime(2023, 5, 5, 5, tzinfo=UTC)),  # held by subject
    (8, "u8", dt.datetime(2023, 5, 5, 5, tzinfo=UTC)),  # held by record
    (9, "u9", dt.datetime(2023, 12, 31, 23, 30, tzinfo=UTC)),  # Paris 2024-01-01: archive due 2025-01-02, not yet
]


def _paris_midnight(day: str) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(day).replace(tzinfo=ZoneInfo("Europe/Paris")).astimezone(UTC)


# Hand-computed (docs/rules.md): the archive is due at the Paris midnight starting the day after P1Y from
# the clock's Paris day; the payload's purge P3Y after the last day before the archive (the archive's
# Paris day three years on).
EXPECTED_STATES = {
    "1": ("archived", _paris_midnight("2024-03-02"), dt.date(2023, 3, 1)),
    "2": ("archived", _paris_midnight("2024-03-26"), dt.date(2023, 3, 25)),
    "3": ("archived", _paris_midnight("2024-03-27"), dt.date(2023, 3, 26)),
    "6": ("archived", _paris_midnight("2024-10-30"), dt.date(2023, 10, 29)),
}
EXPECTED_PURGE = {
    "1": _paris_midnight("2027-03-02"),
    "2": _paris_midnight("2027-03-26"),
    "3": _paris_midnight("2027-03-27"),
    "6": _paris_midnight("2027-10-30"),
}


def _table(
    engine: sa.Engine, name: str, key_type: Any = None, keys: dict[int, str] | None = None, **options: Any
) -> sa.Table:
    md = sa.MetaData()
    text_keys = key_type is not None
    keys = keys or {k: str(k) for k, _, _ in ROWS}
    table = sa.Table(
        f"sa_{name}",
        md,
        sa.Column("id", key_type if text_keys else sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.String(40)),
        sa.Column("note", sa.String(60)),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("collected", sa.DateTime(timezone=True)),
        **options,
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": keys[k] if text_keys else k,
                    "user_id": s,
                    "note": f'ünï "{k}" ✓' if k % 2 else None,
                    "amount": k * 1.25,
                    "collected": c,
                }
                for k, s, c in ROWS
            ],
        )
        place_hold(conn, scope="subject", reason="t", placed_by="t", secret=KEY, subject_key="held")
        place_hold(conn, scope="record", reason="t", placed_by="t", secret=KEY, dataset=name, record_key=keys[8])
    return table


def _run(engine: sa.Engine, name: str, **kwargs: Any) -> tuple[execute.RunResult, list[dict[str, Any]]]:
    text = _pack(name, **kwargs)
    loaded = validate_pack(yaml.safe_load(text), Path("<test>"), text)
    with structlog.testing.capture_logs() as logs:
        result = execute.run(engine, loaded, AS_OF, secret=KEY)
    return result, logs


def _world(engine: sa.Engine, name: str, table: sa.Table, run_id: str) -> dict[str, Any]:
    a, rs, items, entries = store.archive, store.record_states, store.ledger_items, store.ledger
    blocks_t = store.ledger_blocks
    with engine.connect() as conn:
        payloads = {
            r.record_key: (r.payload, r.purge_due_at)
            for r in conn.execute(sa.select(a).where(a.c.dataset == name, a.c.run_id == run_id))
        }
        states = {
            r.record_key: (r.state, r.since, r.subject_key, r.clock_day, r.leader_key, r.email_pseudonym)
            for r in conn.execute(sa.select(rs).where(rs.c.dataset == name))
        }
        left = set(conn.execute(sa.select(table.c.id)).scalars())
        mine = sa.and_(entries.c.run_id == run_id, entries.c.dataset == name)
        dues = [
            (r.transition, r.due_at, r.subject_pseudonym is None)
            for r in conn.execute(
                sa.select(entries.c.transition, items.c.due_at, items.c.subject_pseudonym)
                .join(entries, entries.c.seq == items.c.entry_seq)
                .where(mine)
            )
        ]
        # Format-5 blocks (the set-based path): 91 bytes an item, the subject's 32 zero bytes for none.
        for transition, body in conn.execute(
            sa.select(entries.c.transition, blocks_t.c.body)
            .join(entries, entries.c.seq == blocks_t.c.entry_seq)
            .where(mine)
        ):
            for i in range(0, len(body), 91):
                text = bytes(body[i + 64 : i + 91]).decode()
                due = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                dues.append((transition, due, bytes(body[i + 32 : i + 64]) == bytes(32)))
        dues.sort()
    return {"payloads": payloads, "states": states, "left": left, "dues": dues}


def test_set_based_archive_writes_what_the_per_record_path_writes(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same payloads, purge instants, state rows, rows left, counts and item due instants; the ledger verifies."""
    slow_table, fast_table = _table(migrated, "slow"), _table(migrated, "fast")
    monkeypatch.setenv(set_purge.SWITCH, "0")
    slow, slow_logs = _run(migrated, "slow")
    monkeypatch.delenv(set_purge.SWITCH)
    batches = count_batches(monkeypatch, set_archive.SetArchive)
    fast, fast_logs = _run(migrated, "fast")

    assert [e["reason"] for e in slow_logs if e["event"] == "archive_per_record"] == [
        f"turned off ({set_purge.SWITCH}=0)"
    ]
    set_based = [e for e in fast_logs if e["event"] == "archive_set_based"]
    assert [e["dataset"] for e in set_based] == ["fast"]
    # Once a pass, the engine the batch's key table got (MariaDB/MySQL); nothing to say elsewhere.
    mysql = migrated.dialect.name in ("mysql", "mariadb")
    engine = {k: v for k, v in set_based[0].items() if k in ("key_table_engine", "myisam_refused")}
    assert engine == ({"key_table_engine": "MyISAM"} if mysql else {})
    assert sum(batches) == 4, (
        batches,
        fast.counts,
        [e for e in fast_logs if e.get("log_level") != "info"],
    )  # records 1, 2, 3, 6; record 4 (due for both) goes per record
    expected_counts = {"active->archived": 5, "archived->purged": 1}
    assert slow.counts["slow"] == expected_counts
    assert fast.counts["fast"] == expected_counts

    s, f = _world(migrated, "slow", slow_table, slow.run_id), _world(migrated, "fast", fast_table, fast.run_id)
    assert f == s
    assert s["left"] == {5, 7, 8, 9}
    assert {k: (v[0], v[1], v[3]) for k, v in s["states"].items()} == EXPECTED_STATES
    assert {k: v[1] for k, v in s["payloads"].items()} == EXPECTED_PURGE
    assert s["states"]["2"][2] is None and s["states"]["3"][2] == "u3"
    with migrated.connect() as conn:
        found = ledger_items.lookup(conn, KEY, dataset="fast", record_key="3")
        assert [r["transition"] for r in found] == ["active->archived"]
        assert found[0]["due_at"] == EXPECTED_STATES["3"][1]
    assert verify(migrated, secret=KEY).ok


def test_the_per_record_cases_are_logged_with_their_reason(
    migrated: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept source row (masks keyed in Python) and a separate archive database keep the per-record path."""
    _table(migrated, "masked")
    result, logs = _run(migrated, "masked", then="anonymise")
    assert result.counts["masked"] == {"active->archived": 5, "archived->purged": 1}
    assert [e.get("reason") for e in logs if e["event"] in ("archive_per_record", "archive_set_based")] == [
        "its archive keeps the source row (masks are keyed in Python)"
    ]
    _table(migrated, "apart")
    text = _pack("apart")
    loaded = validate_pack(yaml.safe_load(text), Path("<test>"), text)
    separate = SeparateArchive(sa.create_engine(f"sqlite:///{tmp_path / 'archive.sqlite'}"))
    with structlog.testing.capture_logs() as logs:
        result = execute.run(migrated, loaded, AS_OF, secret=KEY, archive=separate)
    assert result.counts["apart"] == {"active->archived": 5, "archived->purged": 1}
    assert [e.get("reason") for e in logs if e["event"] in ("archive_per_record", "archive_set_based")] == [
        "the archive is another database (no transaction or INSERT ... SELECT spans both)"
    ]


def _stale_payload(engine: sa.Engine, dataset: str, record_key: str) -> None:
    """A payload left from an earlier archive of a record that is active again (the copy must replace it)."""
    with engine.begin() as conn:
        conn.execute(
            store.archive.insert().values(
                dataset=dataset,
                record_key=record_key,
                payload='{"stale": true}',
                archived_at=dt.datetime(2020, 1, 1, tzinfo=UTC),
                purge_due_at=None,
                run_id="earlier",
            )
        )


def _both_paths_over_stale_payloads(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, tables: tuple[sa.Table, sa.Table], replaced: str, kept: str
) -> dict[str, Any]:
    """The per-record run of "slow" and the set-based run of "fast" over a stale payload each of ``replaced`` (a
    record the run archives) and ``kept`` (one not due): the same world, the first payload replaced, the other
    kept, the ledger verified. The fast dataset's world, for the caller's own checks.
    """
    slow_table, fast_table = tables
    for dataset in ("slow", "fast"):
        _stale_payload(engine, dataset, replaced)
        _stale_payload(engine, dataset, kept)
    monkeypatch.setenv(set_purge.SWITCH, "0")
    slow, _ = _run(engine, "slow")
    monkeypatch.delenv(set_purge.SWITCH)
    fast, fast_logs = _run(engine, "fast")
    assert [e["dataset"] for e in fast_logs if e["event"] == "archive_set_based"] == ["fast"]
    assert fast.counts["fast"] == slow.counts["slow"] == {"active->archived": 5, "archived->purged": 1}
    s, f = _world(engine, "slow", slow_table, slow.run_id), _world(engine, "fast", fast_table, fast.run_id)
    assert f == s
    a = store.archive
    with engine.connect() as conn:
        rows = conn.execute(sa.select(a.c.record_key, a.c.payload, a.c.run_id).where(a.c.dataset == "fast")).all()
    by_key = {r.record_key: r for r in rows}
    assert len(rows) == len(by_key)  # one payload a record
    assert by_key[replaced].run_id == fast.run_id and "stale" not in by_key[replaced].payload
    assert (by_key[kept].run_id, by_key[kept].payload) == ("earlier", '{"stale": true}')
    assert verify(engine, secret=KEY).ok
    return f


# 300 characters: on MariaDB/MySQL longer (1,200 bytes in utf8mb4) than a MyISAM index takes; MariaDB keeps the
# batch's key table MyISAM with a prefix index on it (k(250)), and the keys must still be found by it whole.
@pytest.mark.parametrize(
    "key_type", [sa.String(30), sa.Integer(), sa.String(300)], ids=["text-keys", "integer-keys", "long-text-keys"]
)
def test_set_based_archive_replaces_stale_payloads_by_its_batch_keys(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, key_type: Any
) -> None:
    """The batch's keys stay in the database (a temporary table): payloads replaced, rows deleted by them alone.

    A stale payload of a record the batch archives is replaced (one payload,
    today's), one of a record it does not move (not due) is left alone, and
    the rows, states and payloads equal the per-record path's, for text keys
    as for integer ones.
    """
    integer = isinstance(key_type, sa.Integer)
    slow_table = _table(migrated, "slow", None if integer else key_type)
    fast_table = _table(migrated, "fast", None if integer else key_type)
    f = _both_paths_over_stale_payloads(migrated, monkeypatch, (slow_table, fast_table), "2", "5")
    kept = {(k if integer else int(k)) for k in f["left"]}
    assert kept == {5, 7, 8, 9}


# Mixed case, so that a case-insensitive order and a byte order differ within the first batch of 3 (Y, Z, b in
# bytes; b, Y, Z without case); under "bin", record 3 ("z", archived) differs from record 1 ("Z", archived) only in
# case, both moving (two states, two payloads: migration 0020_keycase), and record 9 ("y", not due) from record 6
# ("Y", archived). Stale payloads for records 2 ("b", archived) and 5 ("e", not due).
_MIXED = {1: "Z", 2: "b", 3: "c", 4: "d", 5: "e", 6: "Y", 7: "g", 8: "h", 9: "x"}


@pytest.mark.parametrize("order", ["ci", "bin"])
def test_set_based_archive_of_text_keys_in_a_collation_of_their_own(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """A source whose key collation is not the database's: the batch's key table compares as the source does.

    MariaDB: the source table's own default collation, one that differs
    from the database's (SHOW CREATE TABLE then prints no collation for the
    column, and the reflected type had none): a case-insensitive one, and
    utf8mb4_bin with keys that differ only in case. PostgreSQL: a column
    collation (an ICU root one, "C"). SQLite: NOCASE, BINARY. The same checks
    as the stale-payload test: equal to the per-record path, the stale
    payload of an archived record replaced and another's kept.
    """
    keys = {**_MIXED, **({3: "z", 9: "y"} if order == "bin" else {})}
    options: dict[str, Any] = {}
    key_type: Any = sa.String(30)
    name = migrated.dialect.name
    if name in ("mysql", "mariadb"):
        with migrated.connect() as conn:
            default = conn.execute(sa.text("SELECT @@collation_database")).scalar()
        ci = "utf8mb4_general_ci" if default != "utf8mb4_general_ci" else "utf8mb4_unicode_520_ci"
        # By dialect name: a "mariadb" dialect (a mariadb:// URL) reads only "mariadb_" options.
        options = {f"{name}_charset": "utf8mb4", f"{name}_collate": ci if order == "ci" else "utf8mb4_bin"}
    elif name == "postgresql":
        key_type = sa.String(30, collation="und-x-icu" if order == "ci" else "C")
    else:
        key_type = sa.String(30, collation="NOCASE" if order == "ci" else "BINARY")
    slow_table = _table(migrated, "slow", key_type, keys, **options)
    fast_table = _table(migrated, "fast", key_type, keys, **options)
    f = _both_paths_over_stale_payloads(migrated, monkeypatch, (slow_table, fast_table), keys[2], keys[5])
    assert f["left"] == {keys[5], keys[7], keys[8], keys[9]}
    assert set(f["states"]) == {keys[1], keys[2], keys[3], keys[6]}  # 4 purged in the same run


def _skip_state_row(engine: sa.Engine, record_key: str) -> None:
    """A trigger that drops the state row of ``record_key`` unseen (the insert succeeds, one row short)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION sa_skip_state() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.record_key = '{record_key}' THEN RETURN NULL; END IF; RETURN NEW; END $$"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER sa_skip_state BEFORE INSERT ON retention_record_states "
                    "FOR EACH ROW EXECUTE FUNCTION sa_skip_state()"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER sa_skip_state BEFORE INSERT ON retention_record_states "
                    f"WHEN NEW.record_key = '{record_key}' BEGIN SELECT RAISE(IGNORE); END"
                )
            )


def test_a_batch_whose_counts_disagree_rolls_back(migrated: sa.Engine) -> None:
    """The payloads', state rows' and deletions' counts are what the database wrote: one short rolls the batch back.

    A trigger that drops record 2's state row (MariaDB's cannot: skipped there) leaves the first batch
    (records 1, 2, 3) one state row short: nothing of it stays, and the dataset stops with the reason.
    """
    if migrated.dialect.name not in ("postgresql", "sqlite"):
        pytest.skip("no trigger here can drop a row from an insert")
    table = _table(migrated, "short")
    _skip_state_row(migrated, "2")
    result, _ = _run(migrated, "short")
    assert "3 payloads, 2 state rows and 3 rows deleted in one key range; rolled back" in result.failures["short"]
    world = _world(migrated, "short", table, result.run_id)
    assert world["payloads"] == {} and world["states"] == {}
    assert world["left"] >= {1, 2, 3, 6}
    assert verify(migrated, secret=KEY).ok


class _InjectedDeadlock(Exception):
    """A driver error numbered as MariaDB's deadlock (1213): the run rolls its batch back and runs it again."""


@pytest.mark.parametrize("after", ["choose", "change"])
def test_a_failed_batchs_keys_never_reach_its_retry(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """A deadlock in the first batch (1, 2, 3) once its keys are written (after ``choose``, or after ``change``), then
    a hold on record 1 before the retry: the retry leaves it alone and archives the rest, each once.

    On MariaDB/MySQL the key table is MyISAM, which the rollback does not
    restore: the failed batch's keys are still there when the retry starts,
    and only ``choose`` emptying the table first keeps them out of it. A
    table emptied after the batch instead would archive the held record by
    its stale key (it lies within the retry's range). PostgreSQL and SQLite
    roll the table back with the batch.
    """
    table = _table(migrated, "fast")
    choose_keys, change = set_archive.SetArchive.choose, set_archive.SetArchive.change
    failed: list[str] = []  # the first batch's keys
    held: list[str] = []
    deadlock = sa.exc.OperationalError("injected", {}, _InjectedDeadlock(1213, "Deadlock found (injected)"))

    def choose(self: set_archive.SetArchive, conn: sa.Connection, query: sa.Select[Any], last: Any) -> Any:
        if failed and not held:  # the retry, in its own transaction: the hold commits with its batch
            held.append(failed[0])
            place_hold(conn, scope="record", reason="t", placed_by="t", secret=KEY, dataset="fast", record_key=held[0])
        done = choose_keys(self, conn, query, last)
        if not failed:
            assert self.batch_keys is not None
            failed.extend(sorted(conn.execute(sa.select(self.batch_keys.c.t)).scalars(), key=int))
            if after == "choose":
                raise deadlock
        return done

    def changed(self: set_archive.SetArchive, conn: sa.Connection, in_range: Any) -> int:
        done = change(self, conn, in_range)
        if not held:
            raise deadlock
        return done

    monkeypatch.setattr(set_archive.SetArchive, "choose", choose)
    if after == "change":
        monkeypatch.setattr(set_archive.SetArchive, "change", changed)
    monkeypatch.setattr(execute, "RunContext", functools.partial(execute.RunContext, retry=True))
    result, logs = _run(migrated, "fast")

    assert [e["attempt"] for e in logs if e["event"] == "batch_retried"] == [1]
    assert len(failed) >= 2 and held == failed[:1], failed
    assert not result.failures, result.failures
    world = _world(migrated, "fast", table, result.run_id)
    assert int(held[0]) in world["left"]
    assert held[0] not in world["payloads"] and held[0] not in world["states"]
    assert set(world["payloads"]) == {"1", "2", "3", "6"} - set(held)
    assert result.counts["fast"] == {"active->archived": 4, "archived->purged": 1}
    assert verify(migrated, secret=KEY).ok


@pytest.mark.parametrize("key_type", [sa.BigInteger(), sa.String(40), sa.String(300)], ids=["bigint", "text", "long"])
def test_the_batch_key_table_is_myisam_where_its_index_fits(migrated: sa.Engine, key_type: Any) -> None:
    """MariaDB/MySQL: the batch's key table, emptied and filled every batch, is MyISAM (no undo, no rollback needed).

    A key longer than MyISAM's 1,000-byte index (300 characters of utf8mb4)
    does not make MariaDB refuse MyISAM: Note 1071 and a prefix index
    (``k(250)``), which must still find a key whole. Only a server that
    refuses the engine gets the default one (the next test).
    """
    if migrated.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("the key table's engine is MariaDB's/MySQL's")
    md = sa.MetaData()
    source = sa.Table("sa_keysrc", md, sa.Column("id", key_type, primary_key=True, autoincrement=False))
    md.create_all(migrated)
    name = f"{store.PREFIX}batch_keys"
    long = isinstance(key_type, sa.String) and key_type.length == 300
    with migrated.begin() as conn:
        said = dialect_for(conn).key_table(conn, name, source.c.id, store.archive.c.record_key.type)
        created = conn.execute(sa.text(f"SHOW CREATE TABLE {name}")).one()[1]
        keys = sa.table(name, sa.column("k"), sa.column("t"))
        value = 42 if isinstance(key_type, sa.Integer) else "k" * (key_type.length or 1)
        twin = "k" * 299 + "j"  # the same first 250 characters: the prefix index alone cannot tell them apart
        conn.execute(sa.insert(keys).values(k=value, t=str(value)[:100]))  # t: as stored (191 at most)
        if long:
            conn.execute(sa.insert(keys).values(k=twin, t=twin[:100]))
        assert conn.execute(sa.select(keys.c.k).where(keys.c.k == value)).scalar_one() == value
        conn.execute(sa.text(f"DROP TEMPORARY TABLE {name}"))
    if long and not getattr(migrated.dialect, "is_mariadb", False):  # MySQL may refuse it in strict mode (1071)
        assert said in ({"key_table_engine": "MyISAM"}, {"key_table_engine": "InnoDB", "myisam_refused": 1071})
        return
    assert "ENGINE=MyISAM" in created, created
    assert said == {"key_table_engine": "MyISAM"}


@pytest.mark.parametrize("substitution", [False, True], ids=["refused", "substituted"])
def test_a_server_that_refuses_myisam_gets_the_default_engine_and_keeps_the_transaction(
    migrated: sa.Engine, substitution: bool
) -> None:
    """MariaDB: ``enforce_storage_engine=InnoDB`` refuses MyISAM (1290, with NO_ENGINE_SUBSTITUTION) or gives InnoDB.

    Refused, the key table's ``CREATE`` runs again in the default engine;
    the failed one is undone by its savepoint alone, so a row the same
    transaction wrote before it (the archive's day table, in a run) stays.
    Either way the table is InnoDB and the log fields say so.
    """
    if migrated.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("the key table's engine is MariaDB's/MySQL's")
    md = sa.MetaData()
    source = sa.Table("sa_fbsrc", md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False))
    md.create_all(migrated)
    name = f"{store.PREFIX}batch_keys"
    with migrated.begin() as conn:
        if conn.execute(sa.text("SHOW VARIABLES LIKE 'enforce_storage_engine'")).first() is None:
            pytest.skip("enforce_storage_engine is MariaDB's")
        mode = "STRICT_ALL_TABLES" + ("" if substitution else ",NO_ENGINE_SUBSTITUTION")
        was = conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one()
        conn.execute(sa.text(f"SET SESSION sql_mode='{mode}', enforce_storage_engine=InnoDB"))
        try:
            conn.execute(sa.text("CREATE TEMPORARY TABLE sa_before (u INT PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO sa_before VALUES (1)"))  # written before, in the same transaction
            said = dialect_for(conn).key_table(conn, name, source.c.id, store.archive.c.record_key.type)
            created = conn.execute(sa.text(f"SHOW CREATE TABLE {name}")).one()[1]
            assert "ENGINE=InnoDB" in created, created
            assert conn.execute(sa.text("SELECT count(*) FROM sa_before")).scalar() == 1
            refused = {} if substitution else {"myisam_refused": 1290}
            assert said == {"key_table_engine": "InnoDB", **refused}
            conn.execute(sa.text(f"DROP TEMPORARY TABLE {name}, sa_before"))
        finally:
            conn.execute(sa.text("SET SESSION enforce_storage_engine=NULL, sql_mode=:was"), {"was": was})


def test_an_error_other_than_a_refused_engine_is_not_taken_for_one(migrated: sa.Engine) -> None:
    """A lock wait on the source (1205) while the key table is created propagates at once: no second ``CREATE``.

    Only the errors of a server refusing MyISAM send the key table to the
    default engine; a lock wait, a deadlock or a lost savepoint belong to
    the transaction (before, any error was caught and the lock waited for
    twice, or the fallback ran in a transaction the server had rolled back).
    """
    if migrated.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("the key table's engine is MariaDB's/MySQL's")
    md = sa.MetaData()
    source = sa.Table("sa_locksrc", md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False))
    md.create_all(migrated)
    creates: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("CREATE TEMPORARY TABLE"):
            creates.append(statement)

    with migrated.connect() as holder, migrated.connect() as conn:
        holder.execute(sa.text("LOCK TABLES sa_locksrc WRITE"))
        try:
            conn.execute(sa.text("SET SESSION lock_wait_timeout=1"))
            conn.commit()
            sa.event.listen(conn, "before_cursor_execute", seen)
            with pytest.raises(sa.exc.OperationalError) as raised, conn.begin():
                dialect_for(conn).key_table(conn, f"{store.PREFIX}batch_keys", source.c.id, sa.String(191))
        finally:
            holder.execute(sa.text("UNLOCK TABLES"))
    assert raised.value.orig.args[0] == 1205
    assert len(creates) == 1, creates


def test_a_transaction_rolled_back_under_the_refused_create_is_not_carried_on(migrated: sa.Engine) -> None:
    """MyISAM refused (1290) after the whole transaction was rolled back: the lost savepoint (1305) propagates.

    Before, it was caught as a refusal too and the default-engine ``CREATE``
    ran in a fresh server transaction: a row written earlier in the
    transaction was gone, and the caller's commit went on without it.
    """
    if migrated.dialect.name not in ("mysql", "mariadb"):
        pytest.skip("the key table's engine is MariaDB's/MySQL's")
    md = sa.MetaData()
    source = sa.Table("sa_spsrc", md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False))
    md.create_all(migrated)

    def rolled_back(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "ENGINE=MyISAM" in statement:
            cursor.execute("ROLLBACK")  # stands for an error that rolls the whole transaction back (1213, 1205)

    with migrated.connect() as conn:
        if conn.execute(sa.text("SHOW VARIABLES LIKE 'enforce_storage_engine'")).first() is None:
            pytest.skip("enforce_storage_engine is MariaDB's")
        was = conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one()
        conn.execute(sa.text("SET SESSION sql_mode='NO_ENGINE_SUBSTITUTION', enforce_storage_engine=InnoDB"))
        conn.commit()
        sa.event.listen(conn, "before_cursor_execute", rolled_back)
        try:
            with pytest.raises(sa.exc.OperationalError) as raised, conn.begin():
                conn.execute(sa.text("CREATE TEMPORARY TABLE sa_before (u INT PRIMARY KEY)"))
                conn.execute(sa.text("INSERT INTO sa_before VALUES (1)"))
                dialect_for(conn).key_table(conn, f"{store.PREFIX}batch_keys", source.c.id, sa.String(191))
        finally:
            sa.event.remove(conn, "before_cursor_execute", rolled_back)
            conn.execute(sa.text("SET SESSION enforce_storage_engine=NULL, sql_mode=:was"), {"was": was})
            conn.commit()
    assert raised.value.orig.args[0] == 1305
