"""Entries only the engine can write: a MAC of each entry's hash under a key the database never holds.

The hash chain and the items' Merkle roots show that nothing changed after
an entry was written, but anyone who can write to the database can compute
them for an entry of their own: a database superuser could append a
well-formed entry claiming a purge that never happened. Entries of format 3
therefore carry ``mac``, HMAC-SHA256 of the entry's hash under the ledger
key, derived from the pseudonym key (docs/ledger.md, "Threat model"). The
hash covers every other field, the previous hash and, through the Merkle
root, every item, so the MAC authenticates all of them and the entry's
place in the chain.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.store import tables as store
from retention.store.config import read_secret

# Domain separation: the ledger key is no run key (those are HMAC(pseudonym key, "run" 0x1f run id),
# and a run id never contains 0x1f) and no pseudonym of a record, subject or address.
_LEDGER_KEY_MESSAGE = b"ledger-mac\x1f"


def ledger_key(secret: bytes) -> bytes:
    """The ledger key: HMAC-SHA256(pseudonym key, "ledger-mac" 0x1f).

    Not cached: a cache keyed by the secret kept every pseudonym key a
    long-lived process (the console, the scheduler, a worker) ever used, an
    old one after a rotation too, for the life of the process; the HMAC costs
    about a microsecond, once per entry written or verified.
    """
    return hmac.new(secret, _LEDGER_KEY_MESSAGE, "sha256").digest()


def entry_mac(secret: bytes, entry_hash: str) -> str:
    """Hex HMAC-SHA256(ledger key, "entry" 0x1f the entry's hash)."""
    return hmac.new(ledger_key(secret), b"entry\x1f" + entry_hash.encode("ascii"), "sha256").hexdigest()


def mac_valid(secret: bytes, entry_hash: object, mac: object) -> bool:
    """The entry's stored MAC is the one the engine computes for its hash (in constant time)."""
    if not isinstance(entry_hash, str) or not isinstance(mac, str) or not entry_hash.isascii():
        return False
    return hmac.compare_digest(entry_mac(secret, entry_hash), mac)


def configured_secret() -> bytes | None:
    """The pseudonym key when one is configured, None when none is (a key file that cannot be read still fails).

    ``ledger verify`` and ``verify-proof`` check the entries' MACs only with
    the key; without it they say so rather than fail, so that an auditor
    holding only the checkpoint's public key can still check the chain.
    """
    if not os.environ.get("RETENTION_PSEUDONYM_KEY") and not os.environ.get("RETENTION_PSEUDONYM_KEY_FILE"):
        return None
    return read_secret("pseudonym key", "RETENTION_PSEUDONYM_KEY", "RETENTION_PSEUDONYM_KEY_FILE")


def key_source() -> str:
    """The setting the pseudonym key is read from, as :func:`read_secret` picks it (the variable wins)."""
    return "RETENTION_PSEUDONYM_KEY" if os.environ.get("RETENTION_PSEUDONYM_KEY") else "RETENTION_PSEUDONYM_KEY_FILE"


def refuse_other_key(engine: sa.Engine, secret: bytes) -> None:
    """Refuse a pseudonym key the ledger's first authenticated entry does not verify under (exit 2).

    Why: any non-empty key is a valid HMAC key, so a wrong key file (another
    environment's, a test one) was accepted silently. Under it a run or a
    hold appended entries no key can verify afterwards, a hold or an erasure
    request matched no record, and a lookup found nothing.

    Why the first authenticated entry, not the newest: the key cannot be
    changed (every MAC is under it), so the key a ledger was begun with is
    its key. The newest entry cannot tell a wrong key from a forged or
    misconfigured head: judged by the head, a ledger that came to mix keys
    (entries appended under a wrong key before this check) let the wrong
    key go on writing and locked the right one out with no command to undo
    it, and a forged head stopped every nightly run. Judged by the first,
    only the engine's key passes, readers and writers alike, and a forged
    or foreign head stays what ``ledger verify`` names (exit 6) while the
    engine goes on working.
    No key bytes, no entry content in the refusal. One indexed read when
    the ledger began at format 3 or later; a ledger upgraded from formats
    1-2 is walked by primary key up to its first MAC'd entry (measured at
    1M such entries under load: 0.23 s SQLite, 0.43 s PostgreSQL, 0.50 s
    MariaDB, once per command; review keyrule). A ledger whose first
    authenticated entry a wrong key wrote (before this check) accepts only
    that key: docs/ledger.md says what to do. A database without the
    engine's tables, or a read that fails (a read-only role, a statement
    timeout), is left to the checks that follow: this check accepts rather
    than blocks on it.
    """
    refusal = key_verdict(engine, secret).refusal
    if refusal is not None:
        raise ConfigError(refusal)


@dataclass(frozen=True)
class KeyVerdict:
    """What :func:`key_verdict` found: the refusal's sentence, and whether an authenticated entry decided it.

    ``settled``: the verdict came from the ledger's first authenticated
    entry, which nothing but tampering changes, so a long-lived reader (the
    console) may keep it for the same key; a ledger without one (or a read
    that failed) decides nothing yet, and the next engine write may begin it.
    """

    refusal: str | None
    settled: bool


def key_verdict(engine: sa.Engine, secret: bytes) -> KeyVerdict:
    """:func:`refuse_other_key`'s check, returned rather than raised (the console shows it as a page)."""
    ledger = store.ledger
    try:
        with engine.connect() as conn:
            first = conn.execute(
                sa.select(ledger.c.seq, ledger.c.hash, ledger.c.mac)
                .where(ledger.c.seq >= 1, ledger.c.mac.is_not(None))  # as verify reads: a row below 1 is none
                .order_by(ledger.c.seq)
                .limit(1)
            ).first()
    except sa.exc.DBAPIError:  # no ledger table (db upgrade not run, a read-only role): said where it matters
        return KeyVerdict(None, False)
    if first is None:
        return KeyVerdict(None, False)
    if mac_valid(secret, first.hash, first.mac):
        return KeyVerdict(None, True)
    return KeyVerdict(
        f"the pseudonym key from {key_source()} is not the one this database's ledger was begun with (its first "
        f"authenticated entry, {first.seq}, does not verify under it); point it at the engine's key, or run: "
        "retention ledger verify",
        True,
    )


__all__ = [
    "KeyVerdict",
    "configured_secret",
    "entry_mac",
    "key_source",
    "key_verdict",
    "ledger_key",
    "mac_valid",
    "refuse_other_key",
]
