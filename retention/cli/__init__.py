"""The ``retention`` command line: parse, call the library, print, exit.

This is the only package that exits. It catches :class:`RetentionError`
(and maps it to the documented exit code); anything else is a bug and
shows its traceback.

One module per command group, each a thin layer of click over the library
(:mod:`retention.commands`): ``admin`` (init, db, check, pack, demo), ``run``
(plan, run, explain, report), ``subjects`` (hold, erasure, review), ``ledger``,
``archive`` (coverage, archive), ``ops`` (scheduler, fleet, worker) and ``web`` (user, serve); what they share
is in ``options`` and ``output``. This module is the root group and the table
of contents.
"""

from __future__ import annotations

import click

from retention.cli import admin, archive, ledger, ops, params, run, subjects, web
from retention.cli.options import (
    LOG_FORMATS,
    TZ_HELP,
    RetentionGroup,
    add_log_options,
    configure_logs,
    log_settings,
    set_tz_option,
)


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


main.add_command(admin.init)
main.add_command(admin.db)
main.add_command(admin.check)
main.add_command(admin.pack)
main.add_command(admin.demo)
main.add_command(archive.coverage)
main.add_command(archive.archive)
main.add_command(run.plan)
main.add_command(run.run)
main.add_command(run.explain)
main.add_command(run.report)
main.add_command(run.status)
main.add_command(subjects.hold)
main.add_command(subjects.erasure)
main.add_command(subjects.review)
main.add_command(ledger.ledger_group)
main.add_command(ops.scheduler)
main.add_command(ops.fleet)
main.add_command(ops.worker)
main.add_command(ops.run_groups)
main.add_command(web.user)
main.add_command(web.serve)

add_log_options(main)
