"""The console's pseudonym key, refused when it is not the key the database's ledger was begun with.

Why: any non-empty key is a valid HMAC key, so a console started with
another environment's key file turned every typed id into a pseudonym the
ledger never held, and its lookup, person and proof pages said "no
records". A page that needs the key now gets it only through
:meth:`KeyCheck.secret`, which raises :class:`KeyRefused` for a wrong key;
the route wrapper turns that into a 503 page naming the setting.
"""

from __future__ import annotations

import hashlib
import threading
import time

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.ledger import mac as ledger_mac
from retention.ledger import pseudonyms
from retention.logs import get_logger

log = get_logger()

# A kept verdict is read again after this long: a database restored from another environment under a running
# console is noticed within minutes, at one indexed read per five minutes.
RECHECK_SECONDS = 300.0
_FINGERPRINT = b"retention-console-key-check\x1f"


class KeyRefused(Exception):
    """The configured pseudonym key is not the ledger's: a page that needs it cannot be answered.

    Not a :class:`~retention.errors.RetentionError`: a handler catching those
    to show its own message must not turn this into "no records".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyCheck:
    """The verdict on the configured key, kept per process for the key it was reached for.

    Why a kept verdict is safe: it comes from the ledger's first
    authenticated entry, which the engine never rewrites (only tampering
    changes it, and ``ledger verify`` names that), so the same key gets the
    same verdict for as long as the entry stands. The key is read on every
    request, as before, and the verdict is kept under a one-way fingerprint
    of the bytes read, not under the file's mtime: a replaced key file
    (copied with its timestamp, or within the mtime's granularity) is a new
    key at once, and no key bytes stay in the process beyond the request.
    Only one verdict is kept. A ledger with no authenticated entry yet
    decides nothing and is asked again on the next request, since the
    engine's next write begins it. Without this, a ledger upgraded from
    formats 1-2 would be walked up to its first MAC'd entry on every
    request (up to half a second at 1M entries, mac.refuse_other_key).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: tuple[bytes, ledger_mac.KeyVerdict, float] | None = None

    def secret(self, engine: sa.Engine) -> bytes | None:
        """The pseudonym key, None when none is configured; :class:`KeyRefused` when it is not the ledger's."""
        try:
            secret = pseudonyms.pseudonym_secret()
        except ConfigError:
            return None
        fingerprint = hashlib.sha256(_FINGERPRINT + secret).digest()
        now = time.monotonic()
        with self._lock:
            kept = self._kept
        if kept is not None and kept[0] == fingerprint and now - kept[2] < RECHECK_SECONDS:
            verdict = kept[1]
        else:
            verdict = ledger_mac.key_verdict(engine, secret)
            already = kept is not None and kept[0] == fingerprint and kept[1].refusal is not None
            with self._lock:
                self._kept = (fingerprint, verdict, now) if verdict.settled else None
            if verdict.refusal is not None and not already:  # once per key, not once per request
                log.error("console_pseudonym_key_refused", setting=ledger_mac.key_source(), status=verdict.refusal)
        if verdict.refusal is not None:
            raise KeyRefused(verdict.refusal)
        return secret
