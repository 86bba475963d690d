"""Serving the auditor console: checks first, then uvicorn until interrupted.

``retention serve`` is a thin layer over :func:`serve`; the checks run before
the port opens, so that a broken pack or an unreachable database is one line
on the terminal, not an error page at the first request.
"""

from __future__ import annotations

import socket

import uvicorn

from retention.errors import ConfigError, RetentionError
from retention.logs import get_logger
from retention.policy import load_catalog
from retention.web.app import check_database, create_app
from retention.web.console import Console, ConsoleSettings


def check_listen(host: str, port: int) -> None:
    """Refuse an address the console cannot listen on (in use, not this machine's, not a host) with one line.

    Why: uvicorn found out only after the console said it was serving, then
    exited 3 (which means "partial failure" here) with the socket error on a
    line of its own. A bind and close now; a port taken in the instant
    between them still fails in uvicorn.
    """
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).split(" (while attempting")[0]
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


def serve(settings: ConsoleSettings, host: str, port: int) -> None:
    """Run the auditor console (``retention.web``) with uvicorn until interrupted."""
    if settings.rules is not None:
        load_catalog(settings.rules)  # a broken pack fails now, not on the forecast page
    app = create_app(settings)
    console: Console = app.state.console
    try:
        check_database(console)
    except RetentionError:
        console.dispose()
        raise
    get_logger().info("console_started", mode=settings.auth, path=f"http://{host}:{port}/")
    try:
        # proxy_headers=False: the peer address is the real one, which --auth proxy relies on;
        # no access log: the console logs route templates, never raw paths or client addresses.
        uvicorn.run(
            app,
            host=host,
            port=port,
            proxy_headers=False,
            access_log=False,
            server_header=False,
            log_config=None,
            log_level="warning",
        )
    finally:
        console.dispose()
