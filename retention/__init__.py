"""retention: keep the promises of a privacy policy inside your own SQL database.

The command line (``retention``) is a thin layer over this library. The
public surface is small: load a rule pack, plan a run (a dry run), apply it,
and verify the ledger::

    from pathlib import Path
    import retention

    rules = Path("builtin:marketplace")  # or your own pack file or folder
    loaded, as_of = retention.load_pack(rules)
    summary = retention.plan_run(rules, "sqlite:///shop.sqlite")
    result = retention.run(rules, "sqlite:///shop.sqlite")  # needs RETENTION_PSEUDONYM_KEY(_FILE)
    verdict = retention.verify_ledger("sqlite:///shop.sqlite")

Rules are a file, a folder or ``builtin:NAME`` (a reference pack shipped
with the package); databases are SQLAlchemy URLs. Everything the CLI does
beyond these is in :mod:`retention.commands`, one function per command.
Errors meant for people are :class:`RetentionError` subclasses whose
``exit_code`` the CLI returns.
"""

from __future__ import annotations

import datetime as dt
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from pathlib import Path

from retention.commands import ledger_verify as verify_ledger
from retention.commands import plan as plan_run
from retention.commands import run
from retention.engine.execute import RunResult
from retention.engine.plan import PlanSummary
from retention.errors import ConfigError, LedgerError, LockHeldError, PackError, RetentionError, SchemaError
from retention.ledger.chain import VerifyResult
from retention.policy import Catalog, LoadedPack, Pack, load_catalog

try:
    __version__ = _version("retention")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout without install
    __version__ = "0+unknown"


def load_pack(rules: Path, as_of: str | None = None, pack_id: str | None = None) -> tuple[LoadedPack, dt.datetime]:
    """The pack version in force at ``as_of`` (default now) and that instant in UTC."""
    from retention.commands import load_pack as _load_pack

    return _load_pack(rules, as_of, pack_id)


__all__ = [
    "Catalog",
    "ConfigError",
    "LedgerError",
    "LoadedPack",
    "LockHeldError",
    "Pack",
    "PackError",
    "PlanSummary",
    "RetentionError",
    "RunResult",
    "SchemaError",
    "VerifyResult",
    "__version__",
    "load_catalog",
    "load_pack",
    "plan_run",
    "run",
    "verify_ledger",
]
