"""Every CLI command has help text and a README entry; the README's commands exist."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from retention.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{path} "))
    return found


def test_every_command_has_help_text() -> None:
    """No command or group is left without a help sentence."""
    missing = [path for path, command in _commands(main) if not (command.help or "").strip()]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    """Each top-level command and group is documented in README.md."""
    undocumented = [path for path, _ in _commands(main) if " " not in path and f"retention {path}" not in README]
    assert undocumented == []


def test_help_runs_for_every_command() -> None:
    """`--help` works for every command, so no option declaration is broken."""
    runner = CliRunner()
    for path, _ in _commands(main):
        result = runner.invoke(main, [*path.split(), "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
