"""Personal data and its copies: the library behind ``coverage`` and ``archive`` (docs/backups.md)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from retention.commands import files
from retention.commands.runs import load_pack
from retention.engine import execute, shred
from retention.engine.coverage import CoverageReport
from retention.engine.coverage import scan as coverage_scan
from retention.errors import ConfigError
from retention.store.config import create_engine
from retention.store.connect import connect_error, open_engine


def coverage(rules: Path, db_url: str, pack_id: str | None = None) -> CoverageReport:
    """The personal-looking columns of the live schema and how the pack in force today covers them."""
    loaded, _ = load_pack(rules, None, pack_id)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return coverage_scan(conn, loaded.pack, loaded.id)
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    finally:
        engine.dispose()


def _archive_keys_required() -> shred.ArchiveKeys:
    key_file = shred.configured_key_file()
    if key_file is None:
        raise ConfigError(f"archive encryption is not configured; point {shred.KEK_FILE_ENV} at a key file")
    return shred.ArchiveKeys(key_file)


def archive_keygen(key_file: Path) -> str:
    """Create the archive's key-encryption key file; its public id.

    A file-system error (a full disk, a name too long for its temporary ``.tmp``) is one line, not a traceback.
    """
    try:
        return shred.kek_id(shred.keygen(key_file).current)
    except OSError as exc:
        with contextlib.suppress(OSError):
            key_file.with_name(key_file.name + ".tmp").unlink(missing_ok=True)
        raise files.cannot_write(key_file, exc) from None


def archive_show(db_url: str, dataset: str, record_key: str) -> str:
    """One archived payload, decrypted under the live keys when it is sealed."""
    key_file = shred.configured_key_file()
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            payload = shred.read_payload(
                conn, None if key_file is None else shred.ArchiveKeys(key_file), dataset, record_key
            )
    finally:
        engine.dispose()
    if payload is None:
        raise ConfigError(f"no archived payload for dataset {dataset} and that key")
    return payload


@contextmanager
def _no_run_beside(engine: sa.Engine) -> Iterator[None]:
    """Hold the run lock: a run creating data keys under the old key-encryption key must not overlap a rotation."""
    with engine.connect() as conn:
        lock = execute.RunLock(conn, str(uuid.uuid4()))  # a run id's length: the lock row records its holder
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


def archive_encrypt(db_url: str) -> int:
    """Seal the plain payloads of the main database's archive (written before encryption was configured)."""
    keys = _archive_keys_required()
    engine = open_engine(db_url)
    try:
        with _no_run_beside(engine):
            keys = shred.ArchiveKeys(shred.finish_rotation(engine, keys.key_file))
            return shred.seal_plain(engine, keys)
    finally:
        engine.dispose()


def archive_rotate_key(db_url: str) -> str:
    """A new key-encryption key: every data key rewrapped under it, the old key erased from the file."""
    keys = _archive_keys_required()
    engine = open_engine(db_url)
    try:
        with _no_run_beside(engine):
            done = shred.rotate(engine, shred.finish_rotation(engine, keys.key_file))
    finally:
        engine.dispose()
    return shred.kek_id(done.current)
