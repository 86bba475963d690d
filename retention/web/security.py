"""Sessions, CSRF tokens and the trusted-proxy check of the console.

A session is a signed cookie (itsdangerous, HMAC-SHA256 under the console
secret) holding the account name and the time it was issued; it is
``HttpOnly``, ``Secure`` and ``SameSite=Strict``. The account is looked up on
every request, so disabling it ends its sessions at once. Every form carries
a CSRF token that must equal the one in a second signed cookie (a
double-submit token an attacker can neither read nor forge); a POST without
it is refused before anything runs.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "retention_session"
CSRF_COOKIE = "retention_csrf"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Session:
    """Who a valid session cookie names."""

    user: str


class CookieSigner:
    """Signs and checks the session and CSRF cookies with the console secret."""

    def __init__(self, secret: bytes, max_age_seconds: int) -> None:
        self._session = URLSafeTimedSerializer(secret, salt="retention-console-session")
        self._csrf = URLSafeTimedSerializer(secret, salt="retention-console-csrf")
        self.max_age = max_age_seconds

    def session_cookie(self, user: str) -> str:
        return self._session.dumps({"u": user, "n": secrets.token_urlsafe(8)})

    def read_session(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data: Any = self._session.loads(value, max_age=self.max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str):
            return None
        return Session(data["u"])

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
