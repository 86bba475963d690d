"""Console accounts from the command line: one function per ``retention user`` command.

The console's own pages manage accounts through :mod:`retention.web.accounts`
on the console's connection; these open the database themselves and record
the change in the access log as made "from the command line".
"""

from __future__ import annotations

from typing import Any

from retention.store.connect import open_engine
from retention.web import accounts


def user_add(db_url: str, name: str, role: str, password: str | None, *, created_by: str) -> None:
    """Create a console account (``password`` None: signs in through the proxy only)."""
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            accounts.add_user(conn, name, role, password, created_by=created_by)
            accounts.log_access(conn, created_by, "account_added", f"{name} ({role}) from the command line")
    finally:
        engine.dispose()


def user_list(db_url: str) -> list[dict[str, Any]]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return accounts.list_users(conn)
    finally:
        engine.dispose()


def user_disable(db_url: str, name: str, *, by: str) -> None:
    """Disable a console account; its sessions stop working at their next request."""
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            accounts.disable_user(conn, name)
            accounts.log_access(conn, by, "account_disabled", f"{name} from the command line")
    finally:
        engine.dispose()
