"""How the ledger names a person without naming them: keyed pseudonyms, and the e-mail form they are taken of.

Both the chain (v1 entries) and the per-record items (v2) take their
pseudonyms here, and the engine, subjects and queries derive the same values
to find a person again: one definition, below everything that uses it.
"""

from __future__ import annotations

import hashlib
import hmac

from retention.store.config import read_secret


def normalise_email(address: str) -> str:
    """An e-mail address as its pseudonym is taken of: surrounding spaces trimmed, lower-cased by Python.

    The pseudonym's input only (state rows, ledger, holds and requests), so
    that a record and a request agree whatever database computed them. The
    engine compares clear addresses in the database instead
    (:func:`retention.subjects.events.database_email` for the typed one,
    :func:`retention.engine.joins.email_expression` for rows), whose
    lower-casing matches this one on SQLite (``retention_lower``) and MariaDB
    and on PostgreSQL only under a full ctype (docs/rules.md, "Identities").
    """
    return address.strip(" ").lower()


_XOR_36 = bytes(b ^ 0x36 for b in range(256))
_XOR_5C = bytes(b ^ 0x5C for b in range(256))
"""RFC 2104's pads as translation tables (as :mod:`hmac` makes them): keying no longer costs a loop in Python."""


class Keyed:
    """HMAC-SHA256 (RFC 2104) under one key, with both padded keys absorbed once.

    A purge takes two pseudonyms per record; copying two pre-keyed SHA-256
    states costs a fraction of keying a new HMAC object each time. A test
    holds the result to :func:`hmac.new`.
    """

    def __init__(self, secret: bytes) -> None:
        key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_XOR_36))
        self._outer = hashlib.sha256(key.translate(_XOR_5C))

    def pads(self) -> tuple[hashlib._Hash, hashlib._Hash]:
        """The inner and outer SHA-256 states with the padded key absorbed; copy them, never update them.

        For a loop that keys thousands of messages (:mod:`retention.ledger.bulk`)
        without a method call per message.
        """
        return self._inner, self._outer

    def digest(self, message: bytes) -> bytes:
        """The MAC as raw bytes (the ledger audit compares format-5 blocks' bytes).

        The one HMAC of the audit and of the pseudonym functions here. Loops
        that key thousands of messages copy its steps inline instead of
        calling it (:mod:`retention.ledger.bulk` from :meth:`pads`, SQLite's
        block aggregate in ``retention.dialects.sqlite``); tests hold those
        copies to ``hmac.new``.
        """
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, message: bytes) -> str:
        return self.digest(message).hex()


def keyed(secret: bytes) -> Keyed:
    """HMAC-SHA256 under ``secret``, keyed once: callers that key many messages keep it for their loop.

    Not cached across calls: a process-wide cache keyed by the secret kept
    every pseudonym key and run key a long-lived process ever used (and their
    padded states) until the process ended; the caller's loop holds it only
    as long as it needs it.
    """
    return Keyed(secret)


def pseudonym(secret: bytes, *parts: str) -> str:
    """Hex HMAC-SHA256 of the parts; the same input and key always give the same pseudonym."""
    # hmac.new, not a Keyed: one pseudonym keys one message, and keying a Keyed would cost more than it saves.
    return hmac.new(secret, "\x1f".join(parts).encode("utf-8"), "sha256").hexdigest()


def record_pseudonym(secret: bytes, dataset: str, record_key: str) -> str:
    return pseudonym(secret, "record", dataset, str(record_key))


def subject_pseudonym(secret: bytes, subject_key: str) -> str:
    return pseudonym(secret, "subject", str(subject_key))


def email_pseudonym(secret: bytes, email: str) -> str:
    """The pseudonym of an e-mail address, normalised first (trimmed, lower-cased; docs/rules.md, "Identities")."""
    return pseudonym(secret, "email", normalise_email(email))


def pseudonym_secret() -> bytes:
    """The operator's pseudonym key (environment or a 0600 file)."""
    return read_secret("pseudonym key", "RETENTION_PSEUDONYM_KEY", "RETENTION_PSEUDONYM_KEY_FILE")
