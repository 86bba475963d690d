"""Crypto-shredded archive: a purge makes the payloads in earlier backups unreadable (issue 27, check 1)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from conftest import isolated_database
from sqlalchemy.engine import make_url
from test_archive import PACK, build

from retention.cli import main
from retention.engine import execute, shred
from retention.store import tables as store
from retention.store.config import create_engine

SECRET = "shred-test-key"
WITH_BACKUPS = PACK.replace("guard: {max_share: 1.0}\n", "guard: {max_share: 1.0}\nbackups:\n  kept_for: P35D\n", 1)


def invoke(key_file: Path | None, *args: str) -> Result:
    env = {"RETENTION_PSEUDONYM_KEY": SECRET, "RETENTION_ARCHIVE_KEY_FILE": str(key_file) if key_file else ""}
    return CliRunner().invoke(main, list(args), env=env, prog_name="retention")


def _setup(tmp_path: Path, encrypted: bool = True) -> tuple[Path, Path]:
    pack = tmp_path / "pack.yaml"
    pack.write_text(WITH_BACKUPS, encoding="utf-8")
    key_file = tmp_path / "archive.key"
    if encrypted:
        result = invoke(None, "archive", "keygen", "--key-file", str(key_file))
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"created {key_file} (key id ")
        assert key_file.stat().st_mode & 0o777 == 0o600
    return pack, key_file


def _run(key_file: Path | None, pack: Path, db_url: str, as_of: str) -> None:
    result = invoke(key_file, "run", "--rules", str(pack), "--db", db_url, "--as-of", as_of)
    assert result.exit_code == 0, result.output


def _payloads(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {r.record_key: r.payload for r in conn.execute(sa.select(store.archive))}
    finally:
        engine.dispose()


@contextmanager
def backup_of(db_url: str, dialect: str, tmp_path: Path) -> Iterator[str]:
    """A copy of the database's archive and key tables: the file (SQLite), or a dump restored elsewhere."""
    if dialect == "sqlite":
        source = make_url(db_url).database
        assert source is not None
        copy = tmp_path / "backup.sqlite"
        shutil.copyfile(source, copy)
        yield f"sqlite:///{copy}"
        return
    live = create_engine(db_url)
    with live.connect() as conn:
        dump = {
            t.name: [dict(r._mapping) for r in conn.execute(sa.select(t))] for t in (store.archive, store.archive_keys)
        }
    live.dispose()
    with isolated_database(dialect, tmp_path) as url:
        backup = create_engine(url)
        with backup.begin() as conn:
            for table in (store.archive, store.archive_keys):
                table.create(conn)
                conn.execute(table.insert(), dump[table.name])
        backup.dispose()
        yield url


def _read(url: str, key_file: Path, record_key: str) -> str | None:
    """A payload of the database at ``url`` opened with the key file as it is now."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            keys = shred.ArchiveKeys(shred.KeyFile.read(key_file))
            return shred.read_payload(conn, keys, "customers", record_key)
    finally:
        engine.dispose()


def test_a_backup_taken_before_the_purge_no_longer_decrypts(
    engine: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """Archive, back up, purge: the backup's payloads open before the purge and no longer after it."""
    build(engine)
    pack, key_file = _setup(tmp_path)
    _run(key_file, pack, db_url, "2021-06-01")
    payloads = _payloads(db_url)
    assert len(payloads) == 10
    assert all(p.startswith("enc1:2022-03-02:") and "@example.com" not in p for p in payloads.values()), payloads
    shown = invoke(key_file, "archive", "show", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {"email": "c3@example.com", "id": 3}
    old_key_file = tmp_path / "archive.key.old-copy"
    shutil.copyfile(key_file, old_key_file)
    old_key_file.chmod(0o600)

    with backup_of(db_url, dialect, tmp_path) as backup_url:
        # Before the purge the backup opens with the live key material: the test can fail.
        assert json.loads(_read(backup_url, key_file, "3") or "") == {"email": "c3@example.com", "id": 3}

        _run(key_file, pack, db_url, "2023-01-01")

        assert _payloads(db_url) == {}
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(store.archive_keys)).scalar_one() == 0
        for record_key in ("1", "3", "10"):
            with pytest.raises(shred.ShredError, match=r"which .* does not hold"):
                _read(backup_url, key_file, record_key)
        # The backup's payloads against the live database's keys: the key is gone there too.
        backup_engine = create_engine(backup_url)
        with backup_engine.connect() as backup_conn:
            sealed = backup_conn.execute(
                sa.select(store.archive.c.payload).where(store.archive.c.record_key == "3")
            ).scalar_one()
        backup_engine.dispose()
        with engine.connect() as conn, pytest.raises(shred.ShredError, match="is destroyed"):
            shred.ArchiveKeys(shred.KeyFile.read(key_file)).open(conn, "customers", "3", sealed)
        # What it does not guarantee: a copy of the old key file still opens the old backup.
        assert json.loads(_read(backup_url, old_key_file, "3") or "") == {"email": "c3@example.com", "id": 3}

    with engine.connect() as conn:
        entries = conn.execute(
            sa.select(store.ledger.c.dataset, store.ledger.c.count, store.ledger.c.detail).where(
                store.ledger.c.transition == "archive_keys_destroyed"
            )
        ).all()
    assert [(e.dataset, e.count, json.loads(e.detail)["purge_days"]) for e in entries] == [
        ("customers", 1, ["2022-03-02"])
    ]
    verified = invoke(key_file, "ledger", "verify", "--db", db_url)
    assert verified.exit_code == 0, verified.output
    lookup = invoke(key_file, "ledger", "lookup", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert lookup.exit_code == 0, lookup.output
    lines = [line for line in lookup.output.splitlines() if line.startswith("entry ")]
    assert len(lines) == 1
    assert "; archive payload unreadable in backups from " in lines[0]


def test_a_held_record_keeps_its_buckets_key(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """A bucket with a payload left (a held record) keeps its key, and no destruction is recorded."""
    build(engine)
    pack, key_file = _setup(tmp_path)
    _run(key_file, pack, db_url, "2021-06-01")
    held = invoke(
        key_file, "hold", "add", "--db", db_url, "--rules", str(pack), "--dataset", "customers", "--key", "4",
        "--reason", "case 9",
    )  # fmt: skip
    assert held.exit_code == 0, held.output
    _run(key_file, pack, db_url, "2023-01-01")
    assert list(_payloads(db_url)) == ["4"]
    assert json.loads(_read(db_url, key_file, "4") or "") == {"email": "c4@example.com", "id": 4}
    with engine.connect() as conn:
        destroyed = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.ledger)
            .where(store.ledger.c.transition == "archive_keys_destroyed")
        ).scalar_one()
    assert destroyed == 0
    lookup = invoke(key_file, "ledger", "lookup", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert "unreadable in backups" not in lookup.output  # its bucket's key lives on with record 4


def test_plain_payloads_keep_working_and_are_migrated(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Payloads archived before encryption read as they are; `archive encrypt` seals them, same content."""
    build(engine)
    pack, key_file = _setup(tmp_path, encrypted=False)
    _run(None, pack, db_url, "2021-06-01")
    plain = _payloads(db_url)
    assert json.loads(plain["3"]) == {"email": "c3@example.com", "id": "3"}  # built by the database: values as text
    assert invoke(None, "archive", "keygen", "--key-file", str(key_file)).exit_code == 0
    shown = invoke(key_file, "archive", "show", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert json.loads(shown.output) == json.loads(plain["3"])
    migrated = invoke(key_file, "archive", "encrypt", "--db", db_url)
    assert migrated.exit_code == 0, migrated.output
    assert migrated.output.strip() == "10 payloads encrypted"
    sealed = _payloads(db_url)
    assert all(shred.is_sealed(p) for p in sealed.values())
    shown = invoke(key_file, "archive", "show", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert json.loads(shown.output) == json.loads(plain["3"])
    again = invoke(key_file, "archive", "encrypt", "--db", db_url)
    assert again.output.strip() == "0 payloads encrypted"
    # Without the key file a sealed payload is refused in one line, no traceback.
    refused = invoke(None, "archive", "show", "--db", db_url, "--dataset", "customers", "--key", "3")
    assert refused.exit_code == 2
    assert "the payload is encrypted; point RETENTION_ARCHIVE_KEY_FILE at the archive key file" in refused.output


def test_rotation_rewraps_data_keys_without_touching_payloads(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """rotate-key: new KEK id on every data key, payloads byte for byte the same, the old KEK gone from the file."""
    build(engine)
    pack, key_file = _setup(tmp_path)
    _run(key_file, pack, db_url, "2021-06-01")
    before = _payloads(db_url)
    old = shred.KeyFile.read(key_file)
    rotated = invoke(key_file, "archive", "rotate-key", "--db", db_url)
    assert rotated.exit_code == 0, rotated.output
    new = shred.KeyFile.read(key_file)
    assert len(new.keys) == 1 and new.current != old.current
    assert rotated.output.strip() == f"archive key rotated; new key id {shred.kek_id(new.current)}"
    assert _payloads(db_url) == before
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(store.archive_keys.c.wrapped_by)).scalars()) == {shred.kek_id(new.current)}
    assert json.loads(_read(db_url, key_file, "7") or "") == {"email": "c7@example.com", "id": 7}


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    """An existing key file is refused: the payloads sealed under it would be lost."""
    _, key_file = _setup(tmp_path)
    again = invoke(None, "archive", "keygen", "--key-file", str(key_file))
    assert again.exit_code == 2
    assert f"{key_file} exists; an archive key file is never overwritten" in again.output


def test_a_separate_archive_database_gets_sealed_payloads(
    engine: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """With --archive-db the payloads there are sealed, their keys live in the main database and go at the purge."""
    build(engine)
    pack, key_file = _setup(tmp_path)
    with isolated_database(dialect, tmp_path) as archive_url:
        for as_of in ("2021-06-01", "2023-01-01"):
            if as_of == "2023-01-01":
                sealed = _payloads(archive_url)
                assert len(sealed) == 10 and all(shred.is_sealed(p) for p in sealed.values())
                with engine.connect() as conn:
                    assert conn.execute(sa.select(store.archive_keys.c.bucket)).scalars().all() == [dt.date(2022, 3, 2)]
            result = invoke(
                key_file, "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", as_of
            )
            assert result.exit_code == 0, result.output
        assert _payloads(archive_url) == {}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.archive_keys)).scalar_one() == 0
        destroyed = conn.execute(
            sa.select(store.ledger.c.detail).where(store.ledger.c.transition == "archive_keys_destroyed")
        ).scalar_one()
    assert json.loads(destroyed)["purge_days"] == ["2022-03-02"]


@pytest.mark.parametrize("crashed_after", ["new key added", "data keys rewrapped"])
def test_an_interrupted_rotation_is_finished_by_the_next_run(
    engine: sa.Engine, db_url: str, tmp_path: Path, crashed_after: str
) -> None:
    """A key file left with two keys (a crash mid-rotation) still opens everything; the next run ends the rotation."""
    build(engine)
    pack, key_file = _setup(tmp_path)
    _run(key_file, pack, db_url, "2021-06-01")
    old = shred.KeyFile.read(key_file)
    fresh = b"\x07" * 32
    both = old.write([fresh, *old.keys])
    if crashed_after == "data keys rewrapped":
        with engine.begin() as conn:
            shred.rewrap_all(conn, shred.ArchiveKeys(both), shred.KeyFile(key_file, (fresh,)))
    assert json.loads(_read(db_url, key_file, "5") or "") == {"email": "c5@example.com", "id": 5}
    _run(key_file, pack, db_url, "2021-07-01")  # nothing due: the run only finishes the rotation
    assert shred.KeyFile.read(key_file).keys == (fresh,)
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(store.archive_keys.c.wrapped_by)).scalars()) == {shred.kek_id(fresh)}
    assert json.loads(_read(db_url, key_file, "5") or "") == {"email": "c5@example.com", "id": 5}


def test_shards_seal_payloads_and_the_closing_shard_destroys_keys(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Each shard of a group seals what it archives; the group's last shard destroys the emptied bucket's key."""
    build(engine)
    # A customer still active: a sharded run over an emptied table fails on PostgreSQL (NumericValueOutOfRange,
    # also without encryption), a separate problem.
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (id, email, seen) VALUES (11, 'c11@example.com', :seen)"),
                     {"seen": dt.datetime(2022, 12, 1)})  # fmt: skip
    pack, key_file = _setup(tmp_path)
    for as_of in ("2021-06-01", "2023-01-01"):
        for shard in ("0/2", "1/2"):
            result = invoke(
                key_file, "run", "--rules", str(pack), "--db", db_url, "--as-of", as_of,
                "--shard", shard, "--run-group", f"g-{as_of}",
            )  # fmt: skip
            assert result.exit_code == 0, result.output
        if as_of == "2021-06-01":
            sealed = _payloads(db_url)
            assert len(sealed) == 10 and all(shred.is_sealed(p) for p in sealed.values())
    assert _payloads(db_url) == {}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.archive_keys)).scalar_one() == 0
        entries = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.ledger)
            .where(store.ledger.c.transition == "archive_keys_destroyed")
        ).scalar_one()
    assert entries == 1
    assert len(shred.KeyFile.read(key_file).keys) == 1


def test_rotation_waits_for_no_run(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """rotate-key is refused while a run holds the lock: a key that run creates would be wrapped by the old KEK."""
    build(engine)
    pack, key_file = _setup(tmp_path)
    _run(key_file, pack, db_url, "2021-06-01")
    before = key_file.read_bytes()
    with engine.connect() as conn:
        lock = execute.RunLock(conn, "a-run-in-progress")
        lock.acquire()
        try:
            refused = invoke(key_file, "archive", "rotate-key", "--db", db_url)
        finally:
            lock.release()
    assert refused.exit_code == 5, refused.output
    assert "another retention run holds the lock" in refused.output
    assert key_file.read_bytes() == before
