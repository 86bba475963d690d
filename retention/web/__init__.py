"""The auditor console: a read-only, authenticated web view of the ledger and registers.

``retention serve`` runs :func:`create_app` with uvicorn (:mod:`retention.web.server`). See docs/console.md.
"""

from retention.web.app import create_app
from retention.web.console import ConsoleSettings

__all__ = ["ConsoleSettings", "create_app"]
