"""What every page of the console shares: how it was started, who is asking, its engines and templates.

Below both the pages and the application that routes to them, so that a
page can name the console and its viewer without importing the routes.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from retention.errors import ConfigError
from retention.logs import get_logger
from retention.store.config import read_secret
from retention.timing import display
from retention.web import accounts
from retention.web.database import read_only_engine, writable_engine
from retention.web.key_check import KeyCheck
from retention.web.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    CookieSigner,
    PersonTicket,
    TrustedProxies,
)

HERE = Path(__file__).resolve().parent
log = get_logger()


@dataclass(frozen=True)
class ConsoleSettings:
    """How ``retention serve`` was started."""

    db_url: str
    rules: Path | None = None
    auth: Literal["password", "proxy"] = "password"
    proxy_header: str = "X-Forwarded-User"
    trusted_proxies: tuple[str, ...] = ()
    checkpoints: Path | None = None
    # The checkpoint signer's key: a PEM file (read at each use, so a replaced file counts) or PEM text.
    public_key: Path | bytes | None = field(default=None, repr=False)
    session_hours: float = 8.0
    schedule: str | None = None
    schedule_timezone: str = "UTC"
    forecast_horizon: str = "P3M"
    # The zone dates are shown in (``serve --tz``, RETENTION_TZ, TZ, else the pack's): as in the CLI.
    display_timezone: str = "UTC"
    secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Viewer:
    """The person behind a request, once authenticated."""

    name: str
    role: str

    def can(self, needed: str) -> bool:
        return accounts.allows(self.role, needed)


def console_secret(settings: ConsoleSettings) -> bytes:
    """The key signing session and CSRF cookies: configured, or random for this process."""
    if settings.secret is not None:
        return settings.secret
    try:
        return read_secret("console secret", "RETENTION_CONSOLE_SECRET", "RETENTION_CONSOLE_SECRET_FILE")
    except ConfigError:
        log.warning("console_secret_generated", status="sessions end when the server restarts")
        return secrets.token_bytes(32)


class Console:
    """What every handler needs: settings, both engines, templates, the cookie signer."""

    def __init__(self, settings: ConsoleSettings) -> None:
        if settings.auth == "proxy" and not settings.trusted_proxies:
            raise ConfigError("--auth proxy needs at least one --trusted-proxy address or network")
        try:
            self.proxies = TrustedProxies(settings.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"--trusted-proxy: {exc}") from None
        self.settings = settings
        self.secret = console_secret(settings)
        self.signer = CookieSigner(self.secret, int(settings.session_hours * 3600))
        self.tickets = PersonTicket(self.secret)
        self.reader = read_only_engine(settings.db_url)
        self.writer = writable_engine(settings.db_url)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        zone = settings.display_timezone
        env.filters["instant"] = lambda value: display.when(value, zone)
        env.filters["day"] = lambda value: display.day(value, zone)
        env.globals["display_zone"] = zone
        env.globals["pdf_available"] = pdf_available()
        env.filters["short"] = lambda v: "" if v is None else str(v)[:12]
        env.globals["csrf_field"] = CSRF_FIELD
        env.globals["auth_mode"] = settings.auth
        self.templates = Jinja2Templates(env=env)
        self.caches: dict[str, tuple[float, Any]] = {}
        self.key_check = KeyCheck()

    def pseudonym_secret(self) -> bytes | None:
        """The pseudonym key (None when none is configured); KeyRefused when it is not the ledger's key."""
        return self.key_check.secret(self.reader)

    def dispose(self) -> None:
        self.reader.dispose()
        self.writer.dispose()

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.setdefault("viewer", request.state.viewer if hasattr(request.state, "viewer") else None)
        context["csrf"] = request.state.csrf
        context["path"] = request.url.path
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def log_access(self, viewer: Viewer | None, kind: str, outcome: str | None = None) -> None:
        with self.writer.begin() as conn:
            accounts.log_access(conn, viewer.name if viewer else None, kind, outcome)

    def cached(self, key: str, seconds: float, compute: Callable[[], Any]) -> Any:
        """A value computed at most once per ``seconds`` and key (the forecast: per pack digest, day and ledger head).

        Entries of other keys (yesterday's, a replaced pack's) are dropped when a new one is stored,
        so the cache holds what the pages currently ask for, not every day the server has seen.
        """
        hit = self.caches.get(key)
        if hit is not None and time.monotonic() - hit[0] < seconds:
            return hit[1]
        value = compute()
        prefix = key.split(":", 1)[0]
        for old in [k for k in self.caches if k.split(":", 1)[0] == prefix]:
            del self.caches[old]
        self.caches[key] = (time.monotonic(), value)
        return value

    # -- who is asking ---------------------------------------------------

    def identify(self, request: Request) -> Viewer | None:
        """The viewer from the session cookie, or from the proxy header of a trusted proxy."""
        if self.settings.auth == "proxy":
            peer = request.client.host if request.client else None
            name = request.headers.get(self.settings.proxy_header)
            if not name or not self.proxies.trusts(peer):
                return None
        else:
            session = self.signer.read_session(request.cookies.get(SESSION_COOKIE))
            if session is None:
                return None
            name = session.user
        with self.reader.connect() as conn:
            found = accounts.find_account(conn, name)
        if found is None or found.disabled_at is not None:
            return None
        return Viewer(str(found.name), str(found.role))  # the account's own name, however it was typed

    def today(self) -> dt.date:
        """Today's calendar date in the display zone (what "overdue" is measured against)."""
        from retention.timing.clock import utcnow

        return display.local(utcnow(), self.settings.display_timezone).date()


def pdf_available() -> bool:
    """Whether WeasyPrint can render here (installed, and its Pango library loads): else no PDF link."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True
