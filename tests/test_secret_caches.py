"""After a run, the process keeps nothing of the pseudonym key it ran under (nor of the keys derived from it).

A long-lived process (the console, the scheduler, a worker) runs many runs,
under a key that may be rotated. Process-wide caches keyed by the secret
(``ledger_key``, ``keyed``, ``run_key`` were ``functools.lru_cache``s) kept
every key the process ever used, an old one after a rotation too, for its
whole life; a statement cached by SQLAlchemy keeps the values it was first
compiled with. The test runs a purge, verifies the ledger and looks a record
up under a fresh key, then looks for that key, the ledger key and the run
key (as bytes, as hex text, as HMAC padded keys, as SHA-256 states with a
padded key absorbed) among every object the process holds.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
import yaml
from scaffold import events_pack, make_events

from retention.engine import execute, set_purge
from retention.ledger import items as ledger_items
from retention.ledger import mac
from retention.ledger.verification import verify
from retention.policy import validate_pack

AS_OF = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
PREFIXES = (b"", b"run\x1f", b"ledger-mac\x1f", b"entry\x1f", b"record\x1fevents\x1f", b"subject\x1f")


class Secrets:
    """What must not outlive the run: its bytes, hex texts and hash states, compared by value, never by identity."""

    def __init__(self, keys: list[bytes]) -> None:
        self.raw: list[bytes] = []
        self.states: set[bytes] = set()
        for given in keys:
            key = bytes(bytearray(given))  # a copy: the caller's object may be the one a cache holds
            padded = key.ljust(64, b"\0")
            inner, outer = bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)
            self.raw += [key, inner, outer]
            self.states |= {hashlib.sha256(inner + prefix).digest() for prefix in PREFIXES}
            self.states.add(hashlib.sha256(outer).digest())
        self.hex = [value.hex() for value in self.raw] + [value.hex().upper() for value in self.raw]
        self.hex_bytes = [text.encode() for text in self.hex]  # a dumped bytea b"\\x3636...", an encoded UNHEX('...')
        self.mine = {
            id(self), id(self.raw), id(self.hex), id(self.hex_bytes), id(self.states),
            *map(id, self.raw), *map(id, self.hex), *map(id, self.hex_bytes),
        }  # fmt: skip

    def found(self, value: object) -> bool:
        if id(value) in self.mine:
            return False
        if isinstance(value, (bytes, bytearray)) and len(value) >= 32:
            return any(secret in value for secret in self.raw) or (
                len(value) >= 64 and any(text in value for text in self.hex_bytes)
            )
        if isinstance(value, str) and len(value) >= 64:
            return any(text in value for text in self.hex)
        if type(value) is type(hashlib.sha256()):
            return value.digest() in self.states  # type: ignore[attr-defined]
        return False


def _held(secrets: Secrets) -> list[str]:
    """What holds a secret: each tracked object whose referents (or those of its untracked containers) include one."""
    gc.collect()
    holders: list[str] = []
    for holder in gc.get_objects():
        if id(holder) in secrets.mine:
            continue
        for ref in _referents(holder):
            if secrets.found(ref):
                holders.append(f"{type(holder).__module__}.{type(holder).__qualname__} holds {type(ref).__name__}")
    return holders


def _referents(holder: object) -> Iterator[object]:
    """``holder``'s referents, and those of the untracked containers among them (gc does not list those)."""
    pending = list(gc.get_referents(holder))
    seen: set[int] = set()
    while pending:
        ref = pending.pop()
        if id(ref) in seen:
            continue
        seen.add(id(ref))
        yield ref
        if isinstance(ref, (tuple, list, dict, frozenset, set)) and not gc.is_tracked(ref):
            pending.extend(gc.get_referents(ref))


def _run_under_fresh_key(engine: sa.Engine) -> tuple[Secrets, set[str]]:
    """A purge, a verification and a lookup under a new key.

    Returns the key and what derives from it, as :class:`Secrets`, and the run's log events.
    """
    secret = os.urandom(32)
    text = events_pack("secrets", batch_size=4, subject=True)
    loaded = validate_pack(yaml.safe_load(text), Path("<test>"), text)
    with structlog.testing.capture_logs() as logs:
        result = execute.run(engine, loaded, AS_OF, secret=secret)
    assert result.counts["events"] == {"active->purged": 10}
    assert verify(engine, secret=secret).ok
    with engine.connect() as conn:
        found = ledger_items.lookup(conn, secret, dataset="events", record_key="3")
    assert [f["transition"] for f in found] == ["active->purged"]
    return Secrets([secret, mac.ledger_key(secret), ledger_items.run_key(secret, result.run_id)]), {
        e["event"] for e in logs
    }


@pytest.mark.parametrize("path", ["per-record", "set-based"])
def test_nothing_of_the_run_key_is_held_after_the_run(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The pseudonym key, the ledger key and the run key are held by nothing in the process after the run."""
    make_events(migrated, range(10))
    if path == "per-record":
        monkeypatch.setenv(set_purge.SWITCH, "0")
    secrets, events = _run_under_fresh_key(migrated)
    # The set-based case exercises the compiled-statement cache only if the set-based path ran.
    assert ("purge_set_based" in events) == (path == "set-based"), events
    held = _held(secrets)
    assert held == [], held


def test_the_secret_scan_finds_a_cached_key(migrated: sa.Engine) -> None:
    """The scan itself: a key kept in a module-level cache, as ``functools.lru_cache`` kept it, is found; so is a
    key kept as hex text inside bytes."""
    import functools

    secret = os.urandom(32)
    secrets = Secrets([secret])

    @functools.lru_cache(maxsize=16)
    def cached(key: bytes) -> Any:
        return len(key)

    cached(secret[:16] + secret[16:])  # a copy: found by value, not by identity
    kept = [b"UNHEX('" + secret.hex().upper().encode() + b"')"]  # as hex in bytes: an encoded query, a dumped bytea
    del secret
    assert _held(secrets), "the scan missed a key an lru_cache holds"
    cached.cache_clear()
    assert _held(secrets), "the scan missed a key kept as hex in bytes"
    kept.clear()
    assert _held(secrets) == []
