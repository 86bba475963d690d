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
from typing import NoReturn

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.ledger import mac as ledger_mac
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

    def __init__(self, reason: str, *, unreadable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreadable = unreadable


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
        self._unreadable_logged: str | None = None

    def secret(self, engine: sa.Engine) -> bytes | None:
        """The pseudonym key, None when none is configured; :class:`KeyRefused` when it cannot serve the ledger.

        None only when neither setting is set, as the CLI decides
        (:func:`~retention.ledger.mac.configured_secret`): a key file that
        is set but missing, too open or empty used to read as "not
        configured", so the registers dropped their pseudonyms and lookups
        said "not configured" without a word in the log.

        One lock is held across the ledger read and the log call: requests
        arriving together (at start, or when the kept verdict expires) wait
        for one read and leave one log line, instead of each walking an
        upgraded ledger (up to half a second) and each logging.
        """
        try:
            secret = ledger_mac.configured_secret()
        except ConfigError as exc:
            return self._unreadable(str(exc))
        if secret is None:
            return None
        fingerprint = hashlib.sha256(_FINGERPRINT + secret).digest()
        with self._lock:
            self._unreadable_logged = None  # readable again: a later breakage is logged anew
            now = time.monotonic()
            kept = self._kept
            if kept is not None and kept[0] == fingerprint and now - kept[2] < RECHECK_SECONDS:
                verdict = kept[1]
            else:
                verdict = ledger_mac.key_verdict(engine, secret)
                already = kept is not None and kept[0] == fingerprint and kept[1].refusal is not None
                self._kept = (fingerprint, verdict, now) if verdict.settled else None
                if verdict.refusal is not None and not already:  # once per key, not once per request
                    log.error("console_pseudonym_key_refused", setting=ledger_mac.key_source(), status=verdict.refusal)
        if verdict.refusal is not None:
            raise KeyRefused(verdict.refusal)
        return secret

    def unchecked(self) -> bytes | None:
        """The configured key without the ledger check (the verify page names a failing MAC itself).

        A setting that is set but cannot be read is refused as in
        :meth:`secret`: ``ledger verify`` exits 2 on it, and the page used
        to verify the chain without MACs and say "ok".
        """
        try:
            return ledger_mac.configured_secret()
        except ConfigError as exc:
            return self._unreadable(str(exc))

    def _unreadable(self, problem: str) -> NoReturn:
        """Refuse a key setting that is set but cannot be read: the page names the setting, the log says why.

        The page shows the setting only (an auditor need not see server
        paths); the log line carries read_secret's sentence, which names the
        file and the fix but never the key. Logged once per problem, not
        per request; a setting put right clears it.
        """
        setting = ledger_mac.key_source()
        with self._lock:
            if self._unreadable_logged != problem:
                self._unreadable_logged = problem
                log.error("console_pseudonym_key_unreadable", setting=setting, status=problem)
        raise KeyRefused(f"the pseudonym key from {setting} cannot be read (the server log says why)", unreadable=True)
