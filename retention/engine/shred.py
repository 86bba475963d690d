"""Crypto-shredded archive payloads: a purge that reaches the backups.

Deleting a payload removes it from the live database; every backup taken
before still holds it. Encrypting payloads and destroying the key instead
makes those copies unreadable without touching the backups.

Keys:

- One **data key** (AES-256-GCM) per bucket: the dataset and the UTC day its
  payloads are due to be purged. The payloads of a bucket go together, so
  its key can go with the last of them.
- Data keys are stored in ``retention_archive_keys`` *wrapped* (AES-256-GCM)
  by the **key-encryption key** (KEK), which never lives in the database: a
  0600 file named by ``RETENTION_ARCHIVE_KEY_FILE`` (created by
  ``retention archive keygen``).

Invariants:

- A backup of the database holds wrapped data keys, so destroying a key row
  is not enough: whenever a run destroys data keys it also **rotates the
  KEK**: the remaining data keys are rewrapped under a new KEK and the old
  one is erased from the file. A backup taken before the destruction holds
  the destroyed keys wrapped only under KEKs that no longer exist.
- Rotation is crash-safe: the new KEK is added to the file (fsynced) before
  the database rewraps, and the old one is removed only after that commit.
  A file holding both is valid; each wrapped key names the KEK id it needs.
- A key is destroyed only when no payload of its bucket is left (a held
  record keeps its bucket's key), in the transaction that writes the
  ``archive_keys_destroyed`` ledger entry.
- Payloads written before encryption was configured stay plain and
  readable; ``retention archive encrypt`` seals them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from retention.errors import ConfigError
from retention.store import tables as store
from retention.store.config import read_secret_file

log = structlog.get_logger("retention")

KEK_FILE_ENV = "RETENTION_ARCHIVE_KEY_FILE"
SEALED = "enc1:"
"""Prefix of an encrypted payload: ``enc1:<bucket day>:<base64 nonce + ciphertext>``."""
NEVER = dt.date(9999, 12, 31)
"""The bucket of payloads no step ever purges."""
DESTROYED = "archive_keys_destroyed"
"""The ledger event of a key destruction."""


class ShredError(ConfigError):
    """A payload that cannot be read: its key is destroyed, or the key material is wrong."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def kek_id(kek: bytes) -> str:
    """A short public name of a KEK: which key a wrapped data key needs, without revealing it."""
    return hashlib.sha256(b"retention-kek\x1f" + kek).hexdigest()[:16]


@dataclass(frozen=True)
class KeyFile:
    """The KEK file: one or two keys (two only in the middle of a rotation), newest first."""

    path: Path
    keys: tuple[bytes, ...]

    @property
    def current(self) -> bytes:
        return self.keys[0]

    def by_id(self) -> dict[str, bytes]:
        return {kek_id(k): k for k in self.keys}

    @classmethod
    def read(cls, path: Path) -> KeyFile:
        text = read_secret_file("archive key", path, KEK_FILE_ENV).decode("ascii", "replace")
        keys: list[bytes] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                key = _unb64(line.strip())
            except ValueError:
                raise ConfigError(
                    f"{path}:{number}: not a base64 key; create the file with: retention archive keygen"
                ) from None
            if len(key) != 32:
                raise ConfigError(f"{path}:{number}: an archive key is 32 bytes (AES-256), this one {len(key)}")
            keys.append(key)
        if not keys:
            raise ConfigError(f"the archive key file {path} holds no key")
        return cls(path, tuple(keys))

    def write(self, keys: Sequence[bytes]) -> KeyFile:
        """Replace the file's keys atomically (temporary file, fsync, rename), mode 0600."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("".join(_b64(k) + "\n" for k in keys))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        return KeyFile(self.path, tuple(keys))


def keygen(path: Path) -> KeyFile:
    """Create a KEK file (never overwritten: the payloads sealed under it would be lost)."""
    if path.exists():
        raise ConfigError(f"{path} exists; an archive key file is never overwritten")
    return KeyFile(path, ()).write([secrets.token_bytes(32)])


def configured_key_file() -> KeyFile | None:
    """The KEK file named by ``RETENTION_ARCHIVE_KEY_FILE``; None when archive encryption is not configured."""
    name = os.environ.get(KEK_FILE_ENV)
    return KeyFile.read(Path(name)) if name else None


def bucket_of(purge_due_at: dt.datetime | None) -> dt.date:
    if purge_due_at is None:
        return NEVER
    if purge_due_at.tzinfo is None:
        purge_due_at = purge_due_at.replace(tzinfo=dt.UTC)
    return purge_due_at.astimezone(dt.UTC).date()


def _aad(dataset: str, record_key: str, bucket: dt.date) -> bytes:
    # Binds a payload to its record: a sealed payload copied onto another record does not open.
    return json.dumps([dataset, record_key, bucket.isoformat()]).encode()


def _wrap_aad(dataset: str, bucket: dt.date) -> bytes:
    return json.dumps(["data-key", dataset, bucket.isoformat()]).encode()


def is_sealed(payload: str) -> bool:
    return payload.startswith(SEALED)


class ArchiveKeys:
    """Data keys of the archive buckets, wrapped under the KEK file's keys, in the caller's transactions."""

    def __init__(self, key_file: KeyFile) -> None:
        self.key_file = key_file
        self._cache: dict[tuple[str, dt.date], bytes] = {}

    def _unwrap(self, dataset: str, bucket: dt.date, wrapped_by: str, wrapped: str) -> bytes:
        kek = self.key_file.by_id().get(wrapped_by)
        if kek is None:
            raise ShredError(
                f"the data key of dataset {dataset}, bucket {bucket} is wrapped by archive key {wrapped_by}, "
                f"which {self.key_file.path} does not hold"
            )
        raw = _unb64(wrapped)
        try:
            return AESGCM(kek).decrypt(raw[:12], raw[12:], _wrap_aad(dataset, bucket))
        except InvalidTag:
            raise ShredError(f"the data key of dataset {dataset}, bucket {bucket} does not unwrap") from None

    def _wrap(self, dataset: str, bucket: dt.date, key: bytes) -> tuple[str, str]:
        kek = self.key_file.current
        nonce = secrets.token_bytes(12)
        return kek_id(kek), _b64(nonce + AESGCM(kek).encrypt(nonce, key, _wrap_aad(dataset, bucket)))

    def data_key(self, conn: sa.Connection, dataset: str, bucket: dt.date, create: bool) -> bytes | None:
        """The bucket's data key, created (and stored wrapped) on first use when ``create``."""
        found = self._cache.get((dataset, bucket))
        if found is not None:
            return found
        table = store.archive_keys
        row = conn.execute(
            sa.select(table.c.wrapped_by, table.c.wrapped_key).where(
                table.c.dataset == dataset, table.c.bucket == bucket
            )
        ).first()
        if row is not None:
            key = self._unwrap(dataset, bucket, row.wrapped_by, row.wrapped_key)
        elif create:
            key = AESGCM.generate_key(bit_length=256)
            wrapped_by, wrapped = self._wrap(dataset, bucket, key)
            conn.execute(
                table.insert().values(
                    dataset=dataset, bucket=bucket, wrapped_by=wrapped_by, wrapped_key=wrapped, created_at=_now()
                )
            )
        else:
            return None
        self._cache[(dataset, bucket)] = key
        return key

    def seal(
        self, conn: sa.Connection, dataset: str, record_key: str, purge_due_at: dt.datetime | None, payload: str
    ) -> str:
        bucket = bucket_of(purge_due_at)
        key = self.data_key(conn, dataset, bucket, create=True)
        assert key is not None
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(nonce, payload.encode("utf-8"), _aad(dataset, record_key, bucket))
        return f"{SEALED}{bucket.isoformat()}:{_b64(nonce + sealed)}"

    def open(self, conn: sa.Connection, dataset: str, record_key: str, payload: str) -> str:
        """The plain payload; a plain (never sealed) payload as it is."""
        if not is_sealed(payload):
            return payload
        day, _, body = payload[len(SEALED) :].partition(":")
        bucket = dt.date.fromisoformat(day)
        key = self.data_key(conn, dataset, bucket, create=False)
        if key is None:
            raise ShredError(
                f"the data key of dataset {dataset}, bucket {bucket} is destroyed: the payload is unreadable"
            )
        return decrypt(key, dataset, record_key, bucket, body)

    def forget(self) -> None:
        self._cache.clear()


def decrypt(key: bytes, dataset: str, record_key: str, bucket: dt.date, body: str) -> str:
    """Open one sealed payload body with a data key (raises :class:`ShredError` if it does not open)."""
    raw = _unb64(body)
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], _aad(dataset, record_key, bucket)).decode("utf-8")
    except InvalidTag:
        raise ShredError(f"a payload of dataset {dataset} does not open with this key") from None


def _now() -> dt.datetime:
    from retention.timing.clock import utcnow

    return utcnow()


def empty_buckets(conn: sa.Connection, archive_conn: sa.Connection, today: dt.date) -> list[tuple[str, dt.date]]:
    """Buckets due by ``today`` whose key is stored and whose payloads are all gone (``archive_conn``: the payloads').

    A bucket still in the future is never emptied this way: a run archiving
    into it (another shard) may not have committed yet.
    """
    keys = store.archive_keys
    stored = [
        (r.dataset, r.bucket)
        for r in conn.execute(sa.select(keys.c.dataset, keys.c.bucket).where(keys.c.bucket <= today))
    ]
    if not stored:
        return []
    archive = store.archive
    live: set[tuple[str, dt.date]] = set()
    for row in archive_conn.execute(
        sa.select(archive.c.dataset, archive.c.purge_due_at).where(archive.c.payload.like(f"{SEALED}%"))
    ):
        live.add((row.dataset, bucket_of(row.purge_due_at)))
    return sorted(b for b in stored if b not in live)


def destroy(conn: sa.Connection, buckets: Iterable[tuple[str, dt.date]]) -> dict[str, list[str]]:
    """Delete the key rows of ``buckets`` in the caller's transaction; per dataset, the days destroyed."""
    table = store.archive_keys
    result: dict[str, list[str]] = {}
    for dataset, bucket in buckets:
        gone = conn.execute(table.delete().where(table.c.dataset == dataset, table.c.bucket == bucket)).rowcount
        if gone:
            result.setdefault(dataset, []).append(bucket.isoformat())
    return result


def shred(
    conn: sa.Connection,
    archive_engine: sa.Engine | None,
    keys: ArchiveKeys,
    today: dt.date,
    record: Callable[[sa.Connection, dict[str, list[str]], str], None],
) -> ArchiveKeys:
    """Destroy the keys of emptied buckets and rotate the KEK, with ``record`` writing the ledger entries.

    The new KEK joins the file first; the key rows go, the others are
    rewrapped and the entries are written in one transaction; the old KEK
    leaves the file after it commits (see module doc). ``archive_engine``:
    a separate archive store's database, None when payloads live in ``conn``'s.
    """
    with conn.begin():
        if archive_engine is None:
            buckets = empty_buckets(conn, conn, today)
        else:
            with archive_engine.connect() as archive_conn:
                buckets = empty_buckets(conn, archive_conn, today)
    if not buckets:
        return keys
    fresh = secrets.token_bytes(32)
    both = keys.key_file.write([fresh, *keys.key_file.keys])
    with conn.begin():
        destroyed = destroy(conn, buckets)
        rewrap_all(conn, ArchiveKeys(both), KeyFile(both.path, (fresh,)))
        if destroyed:
            record(conn, destroyed, kek_id(fresh))
    done = both.write([fresh])
    return ArchiveKeys(done)


def rewrap_all(conn: sa.Connection, keys: ArchiveKeys, new: KeyFile) -> int:
    """Rewrap every stored data key under ``new.current`` (in the caller's transaction); how many."""
    table = store.archive_keys
    target = ArchiveKeys(new)
    count = 0
    for row in conn.execute(sa.select(table)).all():
        plain = keys._unwrap(row.dataset, row.bucket, row.wrapped_by, row.wrapped_key)
        wrapped_by, wrapped = target._wrap(row.dataset, row.bucket, plain)
        conn.execute(
            table.update()
            .where(table.c.dataset == row.dataset, table.c.bucket == row.bucket)
            .values(wrapped_by=wrapped_by, wrapped_key=wrapped)
        )
        count += 1
    return count


def rotate(engine: sa.Engine, key_file: KeyFile) -> KeyFile:
    """A new KEK: added to the file, every data key rewrapped under it, then the old ones erased from the file.

    Each step is durable before the next starts, so a crash leaves a file
    that still opens every stored key (see module doc).
    """
    fresh = secrets.token_bytes(32)
    both = key_file.write([fresh, *key_file.keys])
    with engine.begin() as conn:
        rewrap_all(conn, ArchiveKeys(both), KeyFile(key_file.path, (fresh,)))
    done = both.write([fresh])
    return done


def finish_rotation(engine: sa.Engine, key_file: KeyFile) -> KeyFile:
    """Complete a rotation a crash interrupted: with two keys in the file, rewrap under the newest and drop the old."""
    if len(key_file.keys) == 1:
        return key_file
    with engine.begin() as conn:
        rewrap_all(conn, ArchiveKeys(key_file), KeyFile(key_file.path, (key_file.current,)))
    return key_file.write([key_file.current])


def read_payload(conn: sa.Connection, keys: ArchiveKeys | None, dataset: str, record_key: str) -> str | None:
    """One record's archived payload as plain JSON text (None: no payload); a sealed one needs ``keys``."""
    table = store.archive
    payload = conn.execute(
        sa.select(table.c.payload).where(table.c.dataset == dataset, table.c.record_key == record_key)
    ).scalar()
    if payload is None:
        return None
    if is_sealed(str(payload)) and keys is None:
        raise ConfigError(f"the payload is encrypted; point {KEK_FILE_ENV} at the archive key file")
    return str(payload) if keys is None else keys.open(conn, dataset, record_key, str(payload))


def seal_plain(engine: sa.Engine, keys: ArchiveKeys, batch_size: int = 1000) -> int:
    """Encrypt the payloads written before encryption was configured; how many (one transaction per batch)."""
    table = store.archive
    sealed = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(table.c.dataset, table.c.record_key, table.c.payload, table.c.purge_due_at)
                .where(table.c.payload.not_like(f"{SEALED}%"))
                .order_by(table.c.dataset, table.c.record_key)
                .limit(batch_size)
            ).all()
            for row in rows:
                conn.execute(
                    table.update()
                    .where(table.c.dataset == row.dataset, table.c.record_key == row.record_key)
                    .values(payload=keys.seal(conn, row.dataset, row.record_key, row.purge_due_at, str(row.payload)))
                )
        sealed += len(rows)
        if len(rows) < batch_size:
            return sealed
