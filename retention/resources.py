"""Files the package ships: the Alembic migrations and the reference rule packs.

Both live at the top of the repository (``migrations/``, ``rules/``) and are
installed inside the package as ``retention._migrations`` and
``retention._rules`` (pyproject.toml maps them), so an installed wheel, an
editable install and a checkout all find them through
:mod:`importlib.resources`, whatever the current directory.

A reference pack is named ``builtin:NAME`` wherever ``--rules`` takes a path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from retention.errors import ConfigError, PackError, PackProblem

BUILTIN_PREFIX = "builtin:"


def _folder(package: str, what: str) -> Path:
    """The on-disk folder of a shipped resource package.

    Alembic and the pack loader need real paths; a zipped install has none,
    so it is refused with a sentence rather than a traceback.
    """
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise ConfigError(f"the {what} are missing from this installation of retention; reinstall it") from None
    if not isinstance(root, Path):
        raise ConfigError(f"the {what} of retention are not on disk ({root}); install retention unzipped")
    return root


def migrations_folder() -> Path:
    """The folder holding Alembic's ``env.py`` and ``versions/``."""
    return _folder("retention._migrations", "migrations")


def builtin_pack_names() -> list[str]:
    """Names of the reference packs, for ``builtin:NAME``."""
    return sorted(p.stem for p in _folder("retention._rules", "reference packs").glob("*.yaml"))


def resolve_rules(path: Path | str) -> Path:
    """The file or folder a ``--rules`` value names: a path, ``builtin:NAME`` or ``builtin:`` for all."""
    text = str(path)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(path)
    name = text[len(BUILTIN_PREFIX) :].strip()
    folder = _folder("retention._rules", "reference packs")
    if not name:
        return folder
    candidate = folder / f"{name}.yaml"
    if not candidate.is_file():
        valid = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in builtin_pack_names())
        raise PackError([PackProblem(text, None, f"no reference pack {name!r}; valid: {valid}")])
    return candidate
