"""The installed package stands alone: its subpackages, migrations, reference packs and public API."""

from __future__ import annotations

import importlib.metadata
import sqlite3
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import retention
from retention.cli import main
from retention.errors import ConfigError
from retention.resources import builtin_pack_names, migrations_folder
from retention.store.config import create_engine

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_in_the_wheel() -> None:
    """pyproject.toml lists packages by name, so a new subpackage must be added there: this test says which."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "retention").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set()
    assert setuptools["package-dir"] == {"retention._migrations": "migrations", "retention._rules": "rules"}
    assert {"retention._migrations", "retention._migrations.versions", "retention._rules"} <= listed


def test_migrations_and_reference_packs_are_package_resources() -> None:
    """Found through importlib.resources, not through a path relative to a checkout."""
    folder = migrations_folder()
    assert (folder / "env.py").is_file() and (folder / "script.py.mako").is_file()
    assert sorted(p.name for p in (folder / "versions").glob("0*.py")) == sorted(
        p.name for p in (ROOT / "migrations" / "versions").glob("0*.py")
    )
    assert builtin_pack_names() == ["marketplace", "nl-shop", "woocommerce-nl"]


def test_the_public_api() -> None:
    """`import retention` offers load, plan, run and verify, typed, with the installed version."""
    assert {"load_pack", "plan_run", "run", "verify_ledger", "load_catalog", "RetentionError"} <= set(retention.__all__)
    assert all(hasattr(retention, name) for name in retention.__all__)
    assert retention.__version__ == importlib.metadata.version("retention")
    assert (Path(retention.__file__).parent / "py.typed").is_file()
    loaded, as_of = retention.load_pack(Path("builtin:marketplace"), "2026-06-01")
    assert (loaded.id, as_of.isoformat()) == ("marketplace", "2026-05-31T22:00:00+00:00")


def test_log_options_after_the_command() -> None:
    """`--log-format` and `--log-level` are checked after the subcommand as they are before it."""
    runner = CliRunner()
    bad = runner.invoke(main, ["db", "current", "--log-level", "loud"])
    assert bad.exit_code == 2
    assert "Invalid value for '--log-level': 'loud' is not one of 'debug', 'info', 'warning', 'error', 'critical'." in (
        bad.output
    )
    assert "--log-format [auto|json|console]" in runner.invoke(main, ["plan", "--help"]).output


@pytest.mark.only_on("sqlite")
def test_sqlite_journal_mode_changes_only_on_request(db_url: str) -> None:
    """The engine leaves a SQLite file's journal mode alone unless the URL asks (?journal_mode=wal)."""
    path = sa.engine.make_url(db_url).database
    assert path is not None
    engine = create_engine(db_url)
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE app (id INTEGER PRIMARY KEY)"))
        conn.commit()
    engine.dispose()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("delete",)
    wal = create_engine(f"{db_url}?journal_mode=wal")
    with wal.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL, safe in WAL mode
    wal.dispose()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(ConfigError, match="unknown SQLite journal_mode 'wall' in the database URL; valid: delete"):
        create_engine(f"{db_url}?journal_mode=wall")
