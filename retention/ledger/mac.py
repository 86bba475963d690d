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


def refuse_other_key(engine: sa.Engine, secret: bytes) -> None:
    """Refuse a pseudonym key neither the ledger's newest nor its oldest authenticated entry verifies under (exit 2).

    Why: any non-empty key is a valid HMAC key, so a wrong key file (another
    environment's, a test one) was accepted silently. Under it a run or a
    hold appended entries no key can verify afterwards, a hold or an erasure
    request matched no record, and a lookup found nothing. Two indexed reads
    before anything is written. Both entries must fail: one forged entry at
    the head is not a wrong key, and ``ledger verify`` or ``prove`` names it.
    A ledger with no MAC (new, or from before format 3) accepts any key; a
    database without the engine's tables is left to the checks that follow.
    """
    ledger = store.ledger
    query = sa.select(ledger.c.seq, ledger.c.hash, ledger.c.mac).where(ledger.c.mac.is_not(None)).limit(1)
    try:
        with engine.connect() as conn:
            newest = conn.execute(query.order_by(ledger.c.seq.desc())).first()
            if newest is None or mac_valid(secret, newest.hash, newest.mac):
                return
            oldest = conn.execute(query.order_by(ledger.c.seq)).one()
    except sa.exc.DBAPIError:  # no ledger table (db upgrade not run, a read-only role): said where it matters
        return
    if not mac_valid(secret, oldest.hash, oldest.mac):
        which = (
            f"entry {newest.seq}'s MAC does"
            if oldest.seq == newest.seq
            else (f"the MACs of entries {oldest.seq} and {newest.seq} do")
        )
        raise ConfigError(
            f"the pseudonym key is not the one this database's ledger was written with ({which} not verify under "
            "it); point RETENTION_PSEUDONYM_KEY_FILE at the engine's key"
        )


__all__ = ["configured_secret", "entry_mac", "ledger_key", "mac_valid", "refuse_other_key"]
