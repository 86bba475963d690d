"""The console's application factory: settings, engines, security plumbing.

Every page handler is a plain function of the console, the request, the
signed-in viewer and the submitted form, run in a worker thread; the
wrapper around it settles, before the handler runs, who the viewer is
(session cookie, or the user header of a trusted proxy), whether their role
allows the route, and for a POST whether the CSRF token matches. Responses
carry a strict Content-Security-Policy (no script at all), so even text
that escaped escaping could not run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retention.errors import ConfigError
from retention.logs import get_logger
from retention.web import pages
from retention.web.console import Console, ConsoleSettings, Viewer
from retention.web.key_check import KeyRefused
from retention.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    cookie_options,
    csrf_matches,
    same_origin,
)

HERE = Path(__file__).resolve().parent
log = get_logger()

CSP = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the console's own
    # POSTs, which the Origin check must refuse; other sites still get no Referer.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


Handler = Callable[["Console", Request, Viewer, FormData | None], Response]


# --------------------------------------------------------------------------
# Route wrapper
# --------------------------------------------------------------------------


def guarded(console: Console, needed: str | None, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, authorise and check CSRF, then run ``handler`` in a worker thread.

    ``needed`` None means a public route (sign-in, health); otherwise the
    least role that may use it.
    """

    async def endpoint(request: Request) -> Response:
        session = console.signer.read_session(request.cookies.get(SESSION_COOKIE))
        fresh_cookie = None
        if session is not None and session.csrf is not None and console.settings.auth != "proxy":
            token: str | None = session.csrf  # bound to this session at sign-in
        else:
            token = console.signer.read_csrf(request.cookies.get(CSRF_COOKIE))
            if token is None:
                token, fresh_cookie = console.signer.new_csrf()
        request.state.csrf = token
        form: FormData | None = None
        if request.method == "POST":
            if not same_origin(request.headers, request.headers.get("host"), request.url.scheme):
                response = await run_in_threadpool(_refuse, console, request, 403, "csrf")
                return _with_cookie(response, fresh_cookie, console)
            form = await request.form()
            if fresh_cookie is not None or not csrf_matches(token, form.get(CSRF_FIELD)):
                response = await run_in_threadpool(_refuse, console, request, 403, "csrf")
                return _with_cookie(response, fresh_cookie, console)
        viewer = await run_in_threadpool(console.identify, request)
        request.state.viewer = viewer
        if needed is not None:
            if viewer is None:
                if console.settings.auth == "proxy":
                    response = await run_in_threadpool(_refuse, console, request, 401, "proxy")
                elif request.method == "GET":
                    response = RedirectResponse("/login", status_code=303)
                else:
                    response = await run_in_threadpool(_refuse, console, request, 401, "signin")
                return _with_cookie(response, fresh_cookie, console)
            if not viewer.can(needed):
                response = await run_in_threadpool(_refuse, console, request, 403, "role", needed)
                return _with_cookie(response, fresh_cookie, console)
        try:
            response = await run_in_threadpool(handler, console, request, viewer, form)  # type: ignore[arg-type]
        except KeyRefused as refused:  # a wrong key only ever found nothing: said, never shown as "no records"
            response = await run_in_threadpool(_wrong_key, console, request, refused)
        return _with_cookie(response, fresh_cookie, console)

    return endpoint


def _refuse(console: Console, request: Request, status: int, why: str, needed: str = "") -> Response:
    return console.render(request, "refused.html", status_code=status, why=why, needed=needed)


def _wrong_key(console: Console, request: Request, refused: KeyRefused) -> Response:
    """503: the page cannot be answered until the server holds the ledger's key (key_check.py)."""
    return console.render(
        request, "wrongkey.html", status_code=503, reason=refused.reason, unreadable=refused.unreadable
    )


def _with_cookie(response: Response, cookie: str | None, console: Console) -> Response:
    if cookie is not None:
        response.set_cookie(CSRF_COOKIE, cookie, **cookie_options(console.signer.max_age))
    return response


# --------------------------------------------------------------------------
# Middleware: security headers, request log, errors without details
# --------------------------------------------------------------------------


class Hardening:
    """Adds security headers, logs each request (route and status only) and hides errors.

    An unexpected exception becomes a plain 500 page; the log gets its type
    only, never its message (which could quote a value) nor a traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = {"code": 500, "sent": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                headers = [h for h in message.get("headers", []) if h[0] not in dict(SECURITY_HEADERS)]
                message["headers"] = headers + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # the one place a bug must not leak into a page or log
            log.error("console_request_failed", error_type=type(exc).__name__, mode=scope.get("method"))
            if not status["sent"]:
                response = PlainTextResponse("Internal error; the server log names its type.", status_code=500)
                await response(scope, receive, send_with_headers)
            return
        route = scope.get("route")
        log.info(
            "console_request",
            mode=scope.get("method"),
            path=getattr(route, "path", "?"),
            status=status["code"],
            seconds=round(time.monotonic() - started, 4),
        )


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console as an ASGI application (run by ``retention serve`` with uvicorn)."""
    console = Console(settings)
    routes: list[Route | Mount] = [
        Route(path, guarded(console, needed, handler), methods=[method], name=name)
        for method, path, needed, handler, name in pages.ROUTES
    ]
    routes.append(Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"))

    async def not_found(request: Request, exc: Exception) -> Response:
        return HTMLResponse("<!DOCTYPE html><title>Not found</title><p>Not found.</p>", status_code=404)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.console = console
    app.add_middleware(Hardening)
    return app


def check_database(console: Console) -> None:
    """Fail at start-up, with a sentence, when the engine's tables are missing or old."""
    from retention.store import migrate

    try:
        current = migrate.current_revision(console.reader)
    except sa.exc.OperationalError as exc:
        from retention.errors import connection_failure

        raise ConfigError(f"cannot connect to the database: {connection_failure(exc.orig)}") from None
    if current != migrate.head_revision():
        raise ConfigError(
            f"the engine's tables are at revision {current or 'none'}, not {migrate.head_revision()}; "
            "run: retention db upgrade"
        )
