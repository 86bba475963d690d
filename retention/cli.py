"""The ``retention`` command line: parse, call the library, print, exit.

This is the only module that exits. It catches :class:`RetentionError`
(and maps it to the documented exit code); anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from retention import commands, logs
from retention.config import database_url, safe_url
from retention.errors import RetentionError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3
EXIT_GUARD = 4
EXIT_LOCKED = 5
EXIT_LEDGER = 6

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db",
        envvar="RETENTION_DATABASE_URL",
        default=None,
        help="Database URL (default: RETENTION_DATABASE_URL, else sqlite:///retention.sqlite).",
    )(func)


def rules_option(required: bool = True) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option(
            "--rules",
            "rules",
            envvar="RETENTION_RULES",
            required=required,
            type=click.Path(path_type=Path),
            help="Rule pack file or folder (or RETENTION_RULES).",
        )(func)

    return decorate


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default="table",
        show_default=True,
        help="Output for people (table) or machines (json, csv).",
    )(func)


def handled(func: F) -> F:
    """Turn RetentionError into its message and exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except RetentionError as exc:
            if ctx.find_root().params.get("traceback"):
                raise
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
            ctx.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--traceback", is_flag=True, help="Show Python tracebacks for bug reports.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="Log format on stderr; auto means JSON unless stderr is a terminal.",
)
@click.option("--log-level", default="info", show_default=True, help="Minimum log level.")
@click.version_option(package_name="retention")
def main(traceback: bool, log_format: str, log_level: str) -> None:
    """Retention enforcement: keep the promises of your privacy policy in your database.

    Exit codes: 0 success, 1 failure, 2 configuration error (rule pack, settings,
    schema), 3 partial failure (some datasets failed), 4 mass-deletion guard tripped,
    5 another run holds the lock, 6 ledger verification failed.
    """
    logs.configure(json=None if log_format == "auto" else log_format == "json", level=log_level)


@main.group()
def db() -> None:
    """The engine's own tables (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@handled
def db_upgrade(db: str | None, revision: str) -> None:
    """Create or upgrade the engine's tables in the database."""
    url = database_url(db)
    before, after = commands.db_upgrade(url, revision)
    console.print(f"database {safe_url(url)}: {before or 'empty'} -> {after}", highlight=False)


@db.command("current")
@db_option
@handled
def db_current(db: str | None) -> None:
    """Show the revision of the engine's tables and the newest one shipped."""
    current, head = commands.db_current(database_url(db))
    console.print(f"current: {current or 'none (run retention db upgrade)'}; shipped head: {head}")


@db.command("downgrade")
@db_option
@click.argument("revision")
@handled
def db_downgrade(db: str | None, revision: str) -> None:
    """Downgrade the engine's tables to REVISION ('base' removes them, ledger included)."""
    commands.db_downgrade(database_url(db), revision)
    console.print(f"downgraded to {revision}")


@main.command()
@rules_option()
@click.option("--db", "db", default=None, help="Also check the pack against this database.")
@format_option
@handled
def check(rules: Path, db: str | None, fmt: str) -> None:
    """Validate rule packs; with --db, also against the live schema.

    Errors (exit 2) name the file and line, or the table and column. Warnings
    (missing indexes on clock columns, tables without primary key) do not fail.
    """
    report = commands.check(rules, db)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for loaded in report.packs:
            console.print(
                f"ok: {loaded.source}: pack {loaded.id} {loaded.pack.version} "
                f"(effective {loaded.pack.effective_from}, {len(loaded.pack.datasets)} datasets, "
                f"digest {loaded.digest[:12]})",
                highlight=False,
            )
        for finding in report.findings:
            target = err_console if finding.level == "error" else console
            target.print(str(finding), highlight=False)
    if report.errors:
        sys.exit(EXIT_CONFIG)


def _print_rows(
    rows: list[dict[str, Any]], columns: list[str], fmt: str, title: str | None = None
) -> None:
    """Print rows as a rich table, JSON or CSV."""
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
