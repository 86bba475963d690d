"""The ``retention`` script's entry point: ``--version`` answers before the engine is imported.

``retention --version`` is the container's health check and the first thing
an operator types; loading the engine (SQLAlchemy, Alembic, structlog, every
command) took seconds for a line of text. Everything else goes to the command
line of :mod:`retention.cli`, which prints the version the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from retention import __version__

        print(f"{Path(sys.argv[0]).name or 'retention'}, version {__version__}")
        return
    from retention.cli import main as cli

    cli()
