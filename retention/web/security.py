"""Sessions, CSRF tokens and the trusted-proxy check of the console.

A session is a signed cookie (itsdangerous, HMAC-SHA256 under the console
secret) holding the account name and the time it was issued; it is
``HttpOnly``, ``Secure`` and ``SameSite=Strict``. The account is looked up on
every request, so disabling it ends its sessions at once. Every form carries
a CSRF token: before sign-in, the one in a second signed cookie (a
double-submit token an attacker can neither read nor forge); once signed in,
the one inside the session cookie, new at each sign-in, so that a token seen
in one session is refused in another. A POST without it, or whose Origin (or
Referer) names another site, is refused before anything runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "retention_session"
CSRF_COOKIE = "retention_csrf"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Session:
    """Who a valid session cookie names, and the CSRF token bound to it (None: a session from before binding)."""

    user: str
    csrf: str | None = None


class CookieSigner:
    """Signs and checks the session and CSRF cookies with the console secret."""

    def __init__(self, secret: bytes, max_age_seconds: int) -> None:
        self._session = URLSafeTimedSerializer(secret, salt="retention-console-session")
        self._csrf = URLSafeTimedSerializer(secret, salt="retention-console-csrf")
        self.max_age = max_age_seconds

    def session_cookie(self, user: str, csrf: str) -> str:
        """A session of ``user`` with its own CSRF token: forms of one session are refused in another."""
        return self._session.dumps({"u": user, "n": secrets.token_urlsafe(8), "c": csrf})

    def read_session(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data: Any = self._session.loads(value, max_age=self.max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str):
            return None
        csrf = data.get("c")
        return Session(data["u"], csrf if isinstance(csrf, str) else None)

    def new_csrf(self) -> tuple[str, str]:
        """A fresh token and the signed cookie that carries it."""
        token = secrets.token_urlsafe(24)
        return token, self._csrf.dumps(token)

    def read_csrf(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            token: Any = self._csrf.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None


def csrf_matches(expected: str | None, given: Any) -> bool:
    """Constant-time comparison of the cookie's token and the form's."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected or "", given)


def same_origin(headers: Any, host: str | None, scheme: str) -> bool:
    """A state-changing request comes from the console's own pages (Origin, else Referer, names this host).

    Browsers send ``Origin`` with every POST; a request with neither header
    (a script of the operator's) is let through to the CSRF check, which it
    cannot pass without a token anyway.
    """
    from urllib.parse import urlsplit

    source = headers.get("origin") or headers.get("referer")
    if not source:
        return True
    if source == "null":
        return False
    parts = urlsplit(source)
    return bool(host) and parts.netloc.lower() == (host or "").lower() and parts.scheme == scheme


def cookie_options(max_age: int | None) -> dict[str, Any]:
    """The attributes every console cookie gets."""
    return {"max_age": max_age, "httponly": True, "secure": True, "samesite": "strict", "path": "/"}


class TrustedProxies:
    """Addresses (or networks) whose user header the console believes."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def trusts(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


class PersonTicket:
    """The person a page is about, encrypted for that page's own follow-up form (the proof download).

    The id or e-mail address a viewer typed travels in POST bodies only; the
    proof button must name the person again without echoing them in the
    page. The ticket is the identity encrypted and authenticated (Fernet,
    under a key derived from the console secret), bound to the viewer's
    account name and good for ``max_age`` seconds; nothing is stored on the
    server, and the page's HTML holds no readable identity.
    """

    def __init__(self, secret: bytes, max_age_seconds: int = 900) -> None:
        key = hashlib.sha256(b"retention-console-person-ticket\x00" + secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self.max_age = max_age_seconds

    def issue(self, viewer: str, kind: str, value: str) -> str:
        return self._fernet.encrypt(json.dumps({"u": viewer, "k": kind, "v": value}).encode("utf-8")).decode("ascii")

    def read(self, viewer: str, ticket: str | None) -> tuple[str, str] | None:
        """(kind, value) of a valid, unexpired ticket issued to ``viewer``; None otherwise."""
        if not ticket or len(ticket) > 4096:
            return None
        try:
            data: Any = json.loads(self._fernet.decrypt(ticket.encode("ascii"), ttl=self.max_age))
        except (InvalidToken, ValueError, UnicodeError):
            return None
        if not isinstance(data, dict) or data.get("u") != viewer or data.get("k") not in ("subject", "email"):
            return None
        value = data.get("v")
        return (data["k"], value) if isinstance(value, str) and value else None
