"""Setting up: the library behind ``init``, ``db``, ``check``, ``pack history`` and ``demo``."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retention.dialects import dialect_for
from retention.engine import notice
from retention.engine.notice import sight_versions
from retention.engine.schema import Finding, check_schema, identity_collations
from retention.errors import ConfigError
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, load_catalog
from retention.store import migrate
from retention.store.config import create_engine
from retention.store.connect import connect_error, open_engine, refuse_missing_sqlite_file
from retention.timing.clock import utcnow


@dataclass
class CheckReport:
    """What ``check`` found: the packs it validated and schema findings."""

    packs: list[LoadedPack]
    findings: list[Finding] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # versions taking effect before their notice ran out

    @property
    def pack_warnings(self) -> list[str]:
        """Clauses of the packs that are likely mistakes (file:line: sentence), found without a database."""
        return [f"warning: {problem}" for loaded in self.packs for problem in loaded.warnings]

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
            "notices": self.notices,
            "warnings": self.pack_warnings,
        }


def check(rules: Path, db_url: str | None = None) -> CheckReport:
    """Validate every pack under ``rules``; with a database, check its schema too."""
    catalog = load_catalog(rules)
    report = CheckReport(list(catalog.packs))
    if db_url is None:
        return report
    engine = create_engine(db_url)
    refuse_missing_sqlite_file(engine, db_url)  # a typo'd path: no empty file listing every table as missing
    try:
        with engine.connect() as conn:
            for loaded in catalog.packs:
                report.findings.extend(check_schema(conn, loaded.pack))
                report.findings.extend(identity_collations(conn, loaded.pack))
        versions = sight_versions(engine, catalog.packs, "check")
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    finally:
        engine.dispose()
    report.notices = [f"warning: {v.sentence()}" for v in versions or () if v.short]
    return report


def pack_history(rules: Path, db_url: str) -> list[notice.VersionNotice]:
    """Every version under ``rules`` with its first sighting and notice status (records sightings)."""
    catalog = load_catalog(rules)
    engine = open_engine(db_url)
    try:
        return sight_versions(engine, catalog.packs, "check") or []
    finally:
        engine.dispose()


def _unknown_revision(revision: str) -> ConfigError:
    return ConfigError(
        f"unknown revision {revision!r}; valid: head, base or a shipped revision (newest: {migrate.head_revision()})"
    )


def _place(revision: str | None, stored: bool = False) -> int | None:
    """Where ``revision`` (a shipped id, a unique prefix of one, head or base) sits from base (0); None when not
    a plain revision (``+1``, ``-1``, ``heads``...), which is left to Alembic, or a ``stored`` one not shipped
    (tables of a newer release: Alembic says so itself)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision is None or revision == "base":
        return 0
    script = ScriptDirectory.from_config(migrate.alembic_config())
    order = [r.revision for r in reversed(list(script.walk_revisions()))]
    if revision == "head":
        return len(order)
    if not re.fullmatch(r"[0-9A-Za-z_]+", revision):
        return None
    try:
        found = script.get_revision(revision)
    except CommandError:
        if stored:
            return None
        raise _unknown_revision(revision) from None
    if found is None or found.revision not in order:
        return None
    return order.index(found.revision) + 1


def db_upgrade(db_url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the engine's migrations; return the revisions before and after.

    A revision older than the tables' is refused: Alembic did nothing and the command said "X -> X" with exit 0,
    so an operator who meant to go back believed the tables had been moved.
    """
    from alembic.util import CommandError

    engine = create_engine(db_url)
    try:
        before = migrate.current_revision(engine)
        target, now = _place(revision), _place(before, stored=True)
        if target is not None and now is not None and target < now:
            raise ConfigError(
                f"the engine's tables are at {before}, after {revision}: upgrade never goes back; "
                f"to remove the later migrations run: retention db downgrade {revision}"
            )
        migrate.upgrade(engine, revision)
        return before, migrate.current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    except CommandError:
        raise _unknown_revision(revision) from None
    finally:
        engine.dispose()


def db_current(db_url: str) -> tuple[str | None, str | None]:
    engine = create_engine(db_url)
    refuse_missing_sqlite_file(engine, db_url)  # reading or removing tables creates no file
    try:
        return migrate.current_revision(engine), migrate.head_revision()
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    finally:
        engine.dispose()


def db_downgrade(db_url: str, revision: str) -> tuple[str | None, str | None]:
    """Remove migrations down to ``revision``; return the revisions before and after.

    A revision later than the tables' is refused, and one equal to it is said to change nothing: either used
    to print "downgraded to REVISION" with exit 0 (``downgrade head`` too) while no table had changed.
    """
    from alembic.util import CommandError

    engine = create_engine(db_url)
    refuse_missing_sqlite_file(engine, db_url)  # reading or removing tables creates no file
    try:
        before = migrate.current_revision(engine)
        target, now = _place(revision), _place(before, stored=True)
        if target is not None and now is not None and target > now:
            raise ConfigError(
                f"the engine's tables are at {before or 'none'}, before {revision}: downgrade never goes forward; "
                f"run: retention db upgrade --revision {revision}"
            )
        migrate.downgrade(engine, revision)
        return before, migrate.current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise connect_error(db_url, exc) from None
    except CommandError:
        raise _unknown_revision(revision) from None
    finally:
        engine.dispose()


def demo_key_file(folder: Path) -> Path:
    """A random pseudonym key for the demo, in a 0600 file (kept across demos)."""
    import secrets

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pseudonym.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def demo_build(db_url: str, *, customers: int, seed: int) -> dict[str, int]:
    """Rebuild the sample shop and the engine's tables from scratch."""
    from retention.demo import build_shop

    url = sa.engine.make_url(db_url)
    file = dialect_for(url).database_file(url)
    if file is not None:
        file.unlink(missing_ok=True)
    engine = create_engine(db_url)
    try:
        migrate.downgrade(engine, "base") if migrate.current_revision(engine) else None
        migrate.upgrade(engine)
        summary = build_shop(engine, seed=seed, customers=customers, end=utcnow().date())
        return dict(summary.rows)
    except sa.exc.OperationalError as exc:
        if exc.statement is None or exc.connection_invalidated:
            raise connect_error(db_url, exc) from None
        raise
    finally:
        engine.dispose()


PUBLIC_KEY_FILE = "signing.pub.pem"


def init(db_url: str, folder: Path) -> list[Path]:
    """Key files for a new installation (never overwritten) and the engine's tables.

    Besides the two secret keys (mode 0600), the signing key's public half
    (``signing.pub.pem``, mode 0644): what auditors verify checkpoints and
    proofs with, so it is there to hand over from the start.
    """
    refuse_key_folder(folder)
    created = []
    key = folder / "pseudonym.key"
    signing = folder / "signing.pem"
    public = folder / PUBLIC_KEY_FILE
    try:
        if not key.exists():
            demo_key_file(folder)
            created.append(key)
        if not signing.exists():
            ledger.generate_signing_key(signing)
            created.append(signing)
        if not public.exists():
            public.write_bytes(ledger.public_pem(ledger.load_signing_key(signing).public_key()))
            public.chmod(0o644)
            created.append(public)
    except OSError as exc:
        raise ConfigError(f"cannot create the key files in {folder}: {_reason(exc)}") from None
    db_upgrade(db_url)
    return created


def refuse_key_folder(folder: Path) -> None:
    """Refuse a key folder that names a file, or lies under one, with that reason (exit 2).

    Why: ``init --dir /proc/keys`` said "cannot create the key files in
    /proc/keys: File exists", the error of the folder's creation, which
    reads as if key files were there already. A missing folder is created.
    """
    try:
        for path in (folder, *folder.parents):
            if path.is_dir():
                return
            if path.exists() or path.is_symlink():
                where = "it is" if path == folder else f"{path} is"
                what = "a file" if path.exists() else "a link to nothing"
                raise ConfigError(f"cannot create the key files in {folder}: {where} {what}, not a folder")
    except OSError as exc:  # a parent this user cannot enter: is_dir() and exists() raise, not answer
        raise ConfigError(f"cannot create the key files in {folder}: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    """The reason a key file could not be written, as an operator acts on it."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (give --dir a folder this user can write)"
    if exc.errno == errno.EROFS:
        return "read-only file system (give --dir a writable folder)"
    return (exc.strerror or type(exc).__name__).lower()
