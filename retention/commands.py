"""One public function per CLI command: the library behind ``retention``.

Everything the CLI does is callable from Python; the CLI only parses,
prints and exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retention import migrate
from retention.config import create_engine
from retention.errors import ConfigError
from retention.policy import LoadedPack, load_catalog
from retention.schema import Finding, check_schema


@dataclass
class CheckReport:
    """What ``check`` found: the packs it validated and schema findings."""

    packs: list[LoadedPack]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "packs": [
                {
                    "file": str(p.source),
                    "pack": p.id,
                    "version": p.pack.version,
                    "effective_from": p.pack.effective_from.isoformat(),
                    "digest": p.digest,
                }
                for p in self.packs
            ],
            "findings": [
                {
                    "level": f.level,
                    "dataset": f.dataset,
                    "table": f.table,
                    "column": f.column,
                    "message": f.message,
                }
                for f in self.findings
            ],
        }


def _connect_error(url: str, exc: sa.exc.OperationalError) -> ConfigError:
    from retention.config import safe_url

    return ConfigError(f"cannot connect to {safe_url(url)}: {str(exc.orig).strip()}")


def check(rules: Path, db_url: str | None = None) -> CheckReport:
    """Validate every pack under ``rules``; with a database, check its schema too."""
    catalog = load_catalog(rules)
    report = CheckReport(list(catalog.packs))
    if db_url is None:
        return report
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            for loaded in catalog.packs:
                report.findings.extend(check_schema(conn, loaded.pack))
    except sa.exc.OperationalError as exc:
        raise _connect_error(db_url, exc) from None
    finally:
        engine.dispose()
    return report


def db_upgrade(db_url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the engine's migrations; return the revisions before and after."""
    engine = create_engine(db_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        return before, migrate.current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise _connect_error(db_url, exc) from None
    finally:
        engine.dispose()


def db_current(db_url: str) -> tuple[str | None, str | None]:
    engine = create_engine(db_url)
    try:
        return migrate.current_revision(engine), migrate.head_revision()
    except sa.exc.OperationalError as exc:
        raise _connect_error(db_url, exc) from None
    finally:
        engine.dispose()


def db_downgrade(db_url: str, revision: str) -> None:
    engine = create_engine(db_url)
    try:
        migrate.downgrade(engine, revision)
    except sa.exc.OperationalError as exc:
        raise _connect_error(db_url, exc) from None
    finally:
        engine.dispose()
