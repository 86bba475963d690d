"""The ``retention`` command line: parse, call the library, print, exit.

This is the only package that exits. It catches :class:`RetentionError`
(and maps it to the documented exit code); anything else is a bug and
shows its traceback.

One module per command group, each a thin layer of click over the library
(:mod:`retention.commands`): ``admin`` (init, db, check, pack, demo), ``run``
(plan, run, explain, report), ``subjects`` (hold, erasure, review), ``ledger``,
``archive`` (coverage, archive), ``partitions``, ``ops`` (scheduler, fleet, worker) and ``web`` (user,
serve); what they share is in ``options`` and ``output``. This module is the root group and the table
of contents.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import click

from retention.cli import params
from retention.cli.options import (
    LOG_FORMATS,
    TZ_HELP,
    RetentionGroup,
    add_log_options,
    configure_logs,
    log_settings,
    set_tz_option,
)

# The commands: name -> (module of retention.cli, attribute). Imported when named, not all up front:
# `retention run` refused the lock (exit 5) spent most of its time importing every other command.
COMMANDS = {
    "init": ("admin", "init"),
    "db": ("admin", "db"),
    "check": ("admin", "check"),
    "pack": ("admin", "pack"),
    "demo": ("admin", "demo"),
    "coverage": ("archive", "coverage"),
    "archive": ("archive", "archive"),
    "plan": ("run", "plan"),
    "run": ("run", "run"),
    "explain": ("run", "explain"),
    "report": ("run", "report"),
    "status": ("run", "status"),
    "hold": ("subjects", "hold"),
    "erasure": ("subjects", "erasure"),
    "review": ("subjects", "review"),
    "ledger": ("ledger", "ledger_group"),
    "scheduler": ("ops", "scheduler"),
    "fleet": ("ops", "fleet"),
    "worker": ("ops", "worker"),
    "run-groups": ("ops", "run_groups"),
    "partitions": ("partitions", "partitions"),
    "user": ("web", "user"),
    "serve": ("web", "serve"),
}


class _Commands(dict[str, click.Command]):
    """The root's commands, each imported (and given the log options) the first time it is looked up."""

    def _load(self, name: str) -> click.Command:
        if not dict.__contains__(self, name):
            module, attr = COMMANDS[name]
            command = getattr(importlib.import_module(f"retention.cli.{module}"), attr)
            add_log_options(command)
            dict.__setitem__(self, name, command)
        return dict.__getitem__(self, name)

    def __getitem__(self, name: str) -> click.Command:
        return self._load(name)

    def get(self, name: str, default: Any = None) -> Any:
        return self._load(name) if name in COMMANDS else default

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)

    def keys(self) -> Any:
        return COMMANDS.keys()

    def values(self) -> Any:
        return [self._load(name) for name in COMMANDS]

    def items(self) -> Any:
        return [(name, self._load(name)) for name in COMMANDS]


@click.group(cls=RetentionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--traceback", is_flag=True, help="Show Python tracebacks for bug reports.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    show_default=True,
    help="Log format on stderr; auto means JSON unless stderr is a terminal.",
)
@click.option(
    "--log-level",
    type=params.LOG_LEVEL,
    default="info",
    show_default=True,
    help=f"Minimum log level: {', '.join(params.LOG_LEVELS)}.",
)
@click.version_option(package_name="retention")
@click.option("--tz", default=None, metavar="ZONE", expose_value=False, callback=set_tz_option, help=TZ_HELP)
def main(traceback: bool, log_format: str, log_level: str) -> None:
    """Retention enforcement: keep the promises of your privacy policy in your database.

    Exit codes: 0 success, 1 failure, 2 configuration error (rule pack, settings,
    schema), 3 partial failure (some datasets failed), 4 mass-deletion guard tripped,
    5 another run holds the lock, 6 ledger verification failed.

    --log-format, --log-level and --tz are accepted after the command too.
    """
    settings = log_settings()
    settings["format"], settings["level"] = log_format, log_level.lower()
    configure_logs()


main.commands = _Commands()
