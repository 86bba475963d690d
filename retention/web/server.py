"""Serving the auditor console: checks first, then uvicorn until interrupted.

``retention serve`` is a thin layer over :func:`serve`; the checks run before
the port opens, so that a broken pack or an unreachable database is one line
on the terminal, not an error page at the first request.
"""

from __future__ import annotations

import uvicorn

from retention.errors import RetentionError
from retention.logs import get_logger
from retention.policy import load_catalog
from retention.web.app import check_database, create_app
from retention.web.console import Console, ConsoleSettings


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
