"""The auditor console: a read-only, authenticated web view of the ledger and registers.

``retention serve`` runs :func:`create_app` with uvicorn. See docs/console.md.
"""

from retention.web.app import ConsoleSettings, create_app

__all__ = ["ConsoleSettings", "create_app"]
