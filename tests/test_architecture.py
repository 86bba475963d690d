"""The package layout is the architecture: imports only go down the layers, and nothing imports in a loop.

The contracts live in pyproject.toml (``[tool.importlinter]``) and are
checked by import-linter, from the code's own imports (function-local ones
included). The two planted imports prove the contracts can fail: a copy of
the package with one import added must break them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package found first on the path from ``root`` (a checkout or a copy of one)."""
    script = (
        "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def planted(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the checkout's package and contracts with ``line`` added at the end of ``module``."""
    shutil.copytree(ROOT / "retention", tmp_path / "retention", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return tmp_path


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_the_layers_name_every_package() -> None:
    """A new package must take its place in the layers, or its imports would go unchecked."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["id"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    top = {
        f"retention.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / "retention").iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py") or (path / "__init__.py").is_file()
    }
    assert top - named == set()


def test_a_back_import_breaks_the_layers(tmp_path: Path) -> None:
    """The bottom importing the engine: the layers contract names the import and its line."""
    result = lint_imports(planted(tmp_path, "retention/timing/datetext.py", "from retention.engine import plan"))
    assert result.returncode != 0
    assert "retention.timing is not allowed to import retention.engine" in result.stdout
    assert "retention.timing.datetext -> retention.engine.plan" in result.stdout


def test_an_import_cycle_inside_a_package_breaks_the_contract(tmp_path: Path) -> None:
    """Two modules of one package importing each other (the ledger's pseudonyms and its items)."""
    result = lint_imports(planted(tmp_path, "retention/ledger/pseudonyms.py", "from retention.ledger import items"))
    assert result.returncode != 0
    assert "No cycles are allowed in retention.ledger." in result.stdout
    assert ".pseudonyms -> .items" in result.stdout
