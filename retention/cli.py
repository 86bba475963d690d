"""The ``retention`` command line: parse, call the library, print, exit.

This is the only module that exits. It catches :class:`RetentionError`
(and maps it to the documented exit code); anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from retention import commands, logs, params
from retention.clock import AsOf, Period
from retention.config import database_url, safe_url
from retention.errors import ConfigError, RetentionError, describe_database_error, is_database_error

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3
EXIT_GUARD = 4
EXIT_LOCKED = 5
EXIT_LEDGER = 6

# Off a terminal (cron, pipes, tests) tables are laid out for 100 columns, the
# width every table is designed to fit without cutting a name.
TABLE_WIDTH = 100
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else TABLE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else TABLE_WIDTH)

LOG_FORMATS = ["auto", "json", "console"]
LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


class RetentionCommand(click.Command):
    """A command whose usage line names its required options, not only ``[OPTIONS]``."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        required = [
            f"{param.opts[0]} {param.make_metavar(ctx)}" if not param.is_flag else param.opts[0]
            for param in self.get_params(ctx)
            if isinstance(param, click.Option) and param.required
        ]
        return [*required, *super().collect_usage_pieces(ctx)]


class RetentionGroup(params.OneLineGroup):
    """Groups whose commands are :class:`RetentionCommand` and whose subgroups are alike."""

    command_class = RetentionCommand
    group_class = type


def _log_settings() -> dict[str, str]:
    """The log format and level in force: the root options, overridden after the subcommand."""
    root = click.get_current_context().find_root()
    settings: dict[str, str] = root.meta.setdefault("retention.logs", {"format": "auto", "level": "info"})
    return settings


def _configure_logs(quiet: frozenset[str] = frozenset()) -> None:
    settings = _log_settings()
    fmt = settings["format"]
    logs.configure(json=None if fmt == "auto" else fmt == "json", level=settings["level"], quiet=quiet)


def json_logs() -> bool:
    """True when logs are JSON lines (asked for, or stderr is not a terminal)."""
    fmt = _log_settings()["format"]
    return logs.uses_json(None if fmt == "auto" else fmt == "json")


def machine_only() -> bool:
    """True with ``--log-format json``: the output is then JSON lines and nothing else."""
    return _log_settings()["format"] == "json"


def _set_log_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--log-format``/``--log-level`` given after the subcommand override the ones before it."""
    if value is None or ctx.resilient_parsing:
        return
    _log_settings()["format" if param.name == "log_format" else "level"] = value.lower()
    _configure_logs()


def _log_options() -> list[click.Option]:
    return [
        click.Option(
            ["--log-format"],
            type=click.Choice(LOG_FORMATS),
            default=None,
            expose_value=False,
            callback=_set_log_option,
            help="Log format on stderr (also accepted before the command); auto: JSON unless a terminal.",
        ),
        click.Option(
            ["--log-level"],
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            default=None,
            expose_value=False,
            callback=_set_log_option,
            help="Minimum log level (also accepted before the command).",
        ),
    ]


def _add_log_options(group: click.Group) -> None:
    """Every leaf command accepts the log options after its name, as cron lines tend to put them."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _add_log_options(command)
        else:
            command.params.extend(_log_options())


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


def utc_option(func: F) -> F:
    return click.option(
        "--utc",
        is_flag=True,
        help="Show instants in UTC instead of the pack's timezone.",
    )(func)


def zone_options(func: F) -> F:
    """``--rules``/``--pack`` only to show instants in the pack's timezone, and ``--utc``."""
    func = utc_option(func)
    func = click.option(
        "--pack", "pack_id", default=None, help="Pack whose timezone to use, when --rules holds several."
    )(func)
    return click.option(
        "--rules",
        "rules",
        envvar="RETENTION_RULES",
        default=None,
        type=click.Path(path_type=Path),
        help="Rule pack (or RETENTION_RULES) whose timezone instants are shown in; default UTC.",
    )(func)


def handled(func: F) -> F:
    """Turn RetentionError into its message and exit code, a database error into one safe line.

    A database error (a lost connection, a full disk, a lock wait that timed
    out) ends the command with exit 1 and one line from
    :func:`describe_database_error`: the driver's message, its DETAIL and the
    statement's parameters can hold personal data, so they are shown only
    with ``--traceback``. Anything else is a bug and keeps its traceback.

    With ``--log-format json`` the error is a log event too, so that a job's
    output holds nothing but JSON lines.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except RetentionError as exc:
            if ctx.find_root().params.get("traceback"):
                raise
            if machine_only():
                logs.get_logger().error(
                    "command_failed", error_type=type(exc).__name__, error=str(exc), exit_code=exc.exit_code
                )
            else:
                err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            if not is_database_error(exc) or ctx.find_root().params.get("traceback"):
                raise
            message = describe_database_error(exc)
            if machine_only():
                logs.get_logger().error(
                    "command_failed", error_type=type(exc).__name__, error=message, exit_code=EXIT_FAILURE
                )
            else:
                err_console.print(
                    f"[red]error:[/red] {escape(message)} (the full error with --traceback)", highlight=False
                )
            ctx.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


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
def main(traceback: bool, log_format: str, log_level: str) -> None:
    """Retention enforcement: keep the promises of your privacy policy in your database.

    Exit codes: 0 success, 1 failure, 2 configuration error (rule pack, settings,
    schema), 3 partial failure (some datasets failed), 4 mass-deletion guard tripped,
    5 another run holds the lock, 6 ledger verification failed.

    --log-format and --log-level are accepted after the command too.
    """
    settings = _log_settings()
    settings["format"], settings["level"] = log_format, log_level.lower()
    _configure_logs()


@main.command()
@db_option
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=Path("retention-keys"),
    show_default=True,
    help="Where to create the key files (mode 0600; keep this folder out of version control).",
)
@handled
def init(db: str | None, folder: Path) -> None:
    """Create the pseudonym key and checkpoint signing key, and the engine's tables."""
    created = commands.init(database_url(db), folder)
    for path in created:
        console.print(f"created {path} (mode 0600)", highlight=False)
    console.print(
        f"export RETENTION_PSEUDONYM_KEY_FILE={folder / 'pseudonym.key'}\n"
        f"export RETENTION_SIGNING_KEY_FILE={folder / 'signing.pem'}\n"
        f"database {safe_url(database_url(db))} is ready; next: retention check --rules PACK.yaml --db URL "
        "(--rules builtin:marketplace tries a reference pack)",
        highlight=False,
    )


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
    CSV has one row per finding (a header only when there is none).
    """
    report = commands.check(rules, db)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif fmt == "csv":
        _print_rows(report.as_dict()["findings"], ["level", "dataset", "table", "column", "message"], fmt)
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
        for line in report.notices:
            console.print(line, highlight=False)
    if report.errors:
        sys.exit(EXIT_CONFIG)


as_of_option = click.option(
    "--as-of",
    "as_of",
    type=params.AS_OF,
    default=None,
    help="Evaluate at this instant: YYYY-MM-DD (00:00 in the pack's timezone) or ISO 8601, "
    f"from {params.EARLIEST_DAY} to {params.LATEST_DAY}. Default: now.",
)
lock_timeout_option = click.option(
    "--lock-timeout",
    "lock_timeout",
    type=click.IntRange(1, 86_400),
    envvar="RETENTION_LOCK_TIMEOUT",
    default=None,
    help="Seconds a statement waits for a lock another session holds before that dataset fails "
    "(or RETENTION_LOCK_TIMEOUT; default 300).",
)
pack_option = click.option("--pack", "pack_id", default=None, help="Pack id, when --rules holds several packs.")


@main.command()
@rules_option()
@db_option
@pack_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output for people (table) or CI (json).",
)
@click.option("--strict", is_flag=True, help="Exit 1 when a personal-looking column is covered by no dataset.")
@handled
def coverage(rules: Path, db: str | None, pack_id: str | None, fmt: str, strict: bool) -> None:
    """List personal-looking columns no dataset of the pack reaches, with the dataset they would belong to.

    Reads table and column names, types, foreign keys and at most 200 values
    of each short text column (never printed). A column is covered when a
    dataset deletes its rows, masks it or reads it as a clock; partly covered
    when those datasets limit their rows with 'where'. With --strict, exit 1
    while any column is not covered at all (partly covered ones do not fail).
    """
    report = commands.coverage(rules, database_url(db), pack_id)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for title, columns in (
            ("not covered", report.uncovered),
            ("partly covered", report.partial),
            ("covered", report.covered),
        ):
            if columns:
                console.print(f"{title}:", highlight=False)
                for column in columns:
                    console.print(f"  {escape(column.describe())}", highlight=False)
        console.print(report.summary(), highlight=False)
    if strict and report.uncovered:
        sys.exit(EXIT_FAILURE)


@main.group()
def archive() -> None:
    """The intermediate archive: encrypted payloads and their keys (docs/backups.md)."""


@archive.command("keygen")
@click.option(
    "--key-file",
    "key_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to create the key-encryption key (mode 0600, never overwritten).",
)
@handled
def archive_keygen(key_file: Path) -> None:
    """Create the archive's key-encryption key; point RETENTION_ARCHIVE_KEY_FILE at it to encrypt payloads."""
    from retention import shred

    created = shred.keygen(key_file)
    console.print(f"created {key_file} (key id {shred.kek_id(created.current)})", highlight=False)


@archive.command("show")
@db_option
@click.option("--dataset", required=True, type=params.NAME, help="Dataset of the archived record.")
@click.option("--key", "record_key", required=True, type=params.RECORD_KEY, help="The record's key.")
@handled
def archive_show(db: str | None, dataset: str, record_key: str) -> None:
    """Print one archived payload (JSON), decrypted under the live keys; a shredded one is an error."""
    click.echo(commands.archive_show(database_url(db), dataset, record_key))


@archive.command("encrypt")
@db_option
@handled
def archive_encrypt(db: str | None) -> None:
    """Encrypt the payloads archived before RETENTION_ARCHIVE_KEY_FILE was set (plain ones stay readable until then)."""
    count = commands.archive_encrypt(database_url(db))
    console.print(f"{count} payloads encrypted", highlight=False)


@archive.command("rotate-key")
@db_option
@handled
def archive_rotate_key(db: str | None) -> None:
    """Replace the key-encryption key: data keys are rewrapped, payloads untouched, the old key erased."""
    key_id = commands.archive_rotate_key(database_url(db))
    console.print(f"archive key rotated; new key id {key_id}", highlight=False)


celery_options = [
    click.option(
        "--queue",
        default="retention",
        show_default=True,
        type=params.NAME,
        help="Celery queue the tasks go to (the worker's --queue).",
    ),
    click.option(
        "--broker",
        envvar="RETENTION_CELERY_BROKER_URL",
        default=None,
        help="Celery broker URL (or RETENTION_CELERY_BROKER_URL; default amqp://guest:guest@127.0.0.1:5672//).",
    ),
    click.option(
        "--result-backend",
        "result_backend",
        envvar="RETENTION_CELERY_RESULT_BACKEND",
        default=None,
        help="Celery result backend URL (or RETENTION_CELERY_RESULT_BACKEND; default redis://127.0.0.1:6379/0).",
    ),
]


def with_celery_options(func: F) -> F:
    for option in reversed(celery_options):
        func = option(func)
    return func


def dispatch_options(units: str, when: str = "") -> Callable[[F], F]:
    """--via, --parallel, the Celery options and --timeout of a command that runs ``units`` (shards, targets)."""

    def sentence(text: str) -> str:
        return text[:1].upper() + text[1:]

    def decorate(func: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--via",
                    type=click.Choice(["local", "celery"]),
                    default="local",
                    show_default=True,
                    help=sentence(
                        f"{when}run the {units} here (subprocesses) or enqueue them for `retention worker` processes."
                    ),
                ),
                click.option(
                    "--parallel",
                    type=click.IntRange(1, 64),
                    default=2,
                    show_default=True,
                    help=sentence(f"{when}{units} run at once with local execution, each in its own process."),
                ),
                *celery_options,
                click.option(
                    "--timeout",
                    type=click.FloatRange(1, 7 * 86_400),
                    default=None,
                    help=f"With --via celery: stop waiting after this many seconds (unfinished {units} exit 1; "
                    "their tasks go on).",
                ),
            ]
        ):
            func = option(func)
        return func

    return decorate


def _plan_rows(summary: Any) -> list[dict[str, Any]]:
    return list(summary.rows())


PLAN_COLUMNS = [
    "dataset",
    "transition",
    "count",
    "change",
    "due_from",
    "due_to",
    "clock_from",
    "clock_to",
    "sample_keys",
    "anomalies",
    "held_back",
]


def _print_plan_table(summary: Any, zone: str) -> None:
    """The plan for people, fit for 100 columns: one row per dataset and transition.

    Due dates and clock dates are ranges shown as two lines (from, to) in the
    pack's timezone; what belongs to a dataset rather than a transition
    (anomalies, records awaiting review) follows the table once per dataset.
    """
    columns = ["dataset", "transition", "count", *(["change"] if summary.previous else []), "due", "clocks", "samples"]
    table = _table(columns, zone, caption=True)
    for row in _plan_rows(summary):
        cells = {
            "dataset": row["dataset"],
            "transition": row["transition"],
            "count": str(row["count"]),
            "change": "" if row.get("change") is None else f"{row['change']:+d}",
            "due": _range(row.get("due_from"), row.get("due_to"), zone),
            "clocks": _range(row.get("clock_from"), row.get("clock_to"), zone, dates=True),
            "samples": row.get("sample_keys") or "",
        }
        table.add_row(*(cells[c] for c in columns))
    console.print(table)
    noted: set[str] = set()
    for row in _plan_rows(summary):
        dataset = row["dataset"]
        if dataset in noted:
            continue
        noted.add(dataset)
        if row.get("anomalies"):
            console.print(f"{dataset}: skipped, never moved: {row['anomalies']} clocks", highlight=False)
        if row.get("awaiting_review"):
            console.print(
                f"{dataset}: {row['awaiting_review']} due purges go to review (retention review list)",
                highlight=False,
            )


def _range(low: dt.datetime | None, high: dt.datetime | None, zone: str, dates: bool = False) -> str:
    """``from`` and ``to`` on two lines (one when equal); clock ranges as local dates only."""
    if low is None or high is None:
        return ""
    show: Callable[[dt.datetime], str] = (
        (lambda v: _local(v, zone).strftime("%Y-%m-%d")) if dates else (lambda v: _cell(v, zone))
    )
    first, last = show(low), show(high)
    return first if first == last else f"{first}\n{last}"


@main.command()
@rules_option()
@db_option
@as_of_option
@pack_option
@format_option
@utc_option
@click.option("--no-record", is_flag=True, help="Do not keep this plan's counts for the next comparison.")
@click.option(
    "--shards",
    type=click.IntRange(1, 1024),
    default=None,
    metavar="N",
    help="Show how `run --shard I/N` splits the work: per dataset and shard, key range and counts.",
)
@lock_timeout_option
@handled
def plan(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    fmt: str,
    utc: bool,
    no_record: bool,
    shards: int | None,
    lock_timeout: int | None,
) -> None:
    """Dry run: list every transition `run` would perform, writing nothing.

    For the same database state and --as-of, `run` performs exactly these
    transitions. Anomalies (NULL, zero, invalid or future clocks) are counted,
    never moved. Due dates are shown in the pack's timezone (--utc for UTC).

    Plan never writes to the application's tables. It keeps its counts in
    the engine's runs table (unless --no-record) to show the change since
    the last plan. It needs only SELECT: where the engine's tables are
    missing or unreadable (a read-only role, a database never upgraded) it
    plans as a first run would, says so, and records nothing.
    """
    if shards is not None:
        split = commands.plan_shards(rules, database_url(db), shards, as_of, pack_id)
        if fmt == "json":
            click.echo(json.dumps(split, indent=2, default=str))
            return
        rows = [{**row, "counts": ", ".join(f"{t} {n}" for t, n in row["counts"].items()) or "-"} for row in split]
        _print_rows(rows, ["dataset", "shard", "key_space", "from", "below", "records", "transitions", "counts"], fmt)
        return
    summary = commands.plan(rules, database_url(db), as_of, pack_id, record=not no_record, lock_timeout=lock_timeout)
    if fmt == "json":
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    if fmt == "csv":
        _print_rows(_plan_rows(summary), [*PLAN_COLUMNS, "previous"], fmt)
        return
    zone = display_zone(rules, summary.pack_id, utc)
    since = f"; change since the plan as of {when(summary.previous['as_of'], zone)}" if summary.previous else ""
    console.print(
        f"plan for pack {summary.pack_id} ({summary.pack_digest[:12]}) as of "
        f"{when(summary.as_of, zone)}: {summary.total()} transitions{since}",
        highlight=False,
    )
    _print_plan_table(summary, zone)
    for note in summary.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if fmt == "table":
        for dataset, dropped in summary.partitions.items():
            if dropped:
                rows = sum(d["rows"] for d in dropped)
                console.print(
                    f"{dataset}: {len(dropped)} partitions ({rows} of the records above) will be dropped whole: "
                    + ", ".join(d["partition"] for d in dropped),
                    highlight=False,
                )
        for hold in summary.held_back:
            console.print(
                f"hold {hold['hold_id']} ({hold['scope']}: {hold['reason']}) holds back {hold['count']} "
                f"due records of {hold['dataset']}",
                highlight=False,
            )


@main.command()
@rules_option()
@db_option
@as_of_option
@pack_option
@click.option(
    "--archive-db",
    "archive_url",
    envvar="RETENTION_ARCHIVE_DATABASE_URL",
    default=None,
    help="Separate database for the intermediate archive (default: the engine's tables).",
)
@click.option(
    "--allow-mass",
    "allow_mass",
    multiple=True,
    metavar="DATASET",
    help="Override the mass-deletion guard of DATASET for this run ('*' for all); recorded in the ledger.",
)
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Write Prometheus metrics here (a .prom file in node_exporter's textfile folder).",
)
@click.option(
    "--accept-short-notice",
    is_flag=True,
    help="Apply a pack version whose notice period has not run out (see pack history); recorded in the ledger.",
)
@format_option
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bars on a terminal (they need a plan first, to know each dataset's total).",
)
@click.option(
    "--shard",
    type=params.SHARD,
    default=None,
    metavar="I/N",
    help="Run shard I (0 to N-1) of N: every dataset's records in this shard's key range (docs/scaling.md).",
)
@click.option(
    "--run-group",
    envvar="RETENTION_RUN_GROUP",
    default=None,
    metavar="G",
    help="The run group the shard belongs to: its N shards make one logical run (default: the as-of day and N).",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 1024),
    default=None,
    metavar="N",
    help="Run all N shards, one unit each: here in --parallel processes, or as Celery tasks with --via celery.",
)
@dispatch_options("shards", when="With --shards: ")
@lock_timeout_option
@handled
def run(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    archive_url: str | None,
    allow_mass: tuple[str, ...],
    metrics_file: Path | None,
    accept_short_notice: bool,
    fmt: str,
    no_progress: bool,
    shard: Any,
    run_group: str | None,
    shards: int | None,
    via: str,
    parallel: int,
    queue: str,
    broker: str | None,
    result_backend: str | None,
    timeout: float | None,
    lock_timeout: int | None,
) -> None:
    """Apply every transition due, one transaction per batch, with ledger entries.

    Needs the pseudonym key (RETENTION_PSEUDONYM_KEY or RETENTION_PSEUDONYM_KEY_FILE).
    Exit 0 on success, 3 when some datasets failed (the others were applied),
    4 when a mass-deletion guard refused a dataset, 5 when another run holds the lock.
    SIGTERM stops the run after its current batch (exit 1; the next run continues).

    On a terminal a bar per dataset shows transitions done, rate and time left;
    with JSON logs a run_progress event every 10 batches says the same. With
    --log-format json and no --format, the output is JSON log lines only
    (run_finished carries the counts).
    """
    import signal
    import threading

    if shards is not None:
        if shard is not None:
            raise ConfigError("--shards N runs every shard; --shard I/N runs one: give one of them")
        _run_shards(
            rules,
            database_url(db),
            as_of,
            pack_id,
            archive_url,
            shards,
            run_group=run_group,
            via=via,
            parallel=parallel,
            celery=(queue, broker, result_backend, timeout),
            allow_mass=allow_mass,
            accept_short_notice=accept_short_notice,
            metrics_file=metrics_file,
            fmt=fmt,
            lock_timeout=lock_timeout,
        )
        return
    if via != "local":
        raise ConfigError("--via celery runs shards: give --shards N (a fleet: retention fleet run --via celery)")
    ctx = click.get_current_context()
    quiet_output = machine_only() and ctx.get_parameter_source("fmt") == click.core.ParameterSource.DEFAULT
    url = database_url(db)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def apply(on_batch: Callable[[Any], None] | None) -> Any:
        return commands.run(
            rules,
            url,
            as_of,
            pack_id,
            archive_url,
            on_batch=on_batch,
            allow_mass=allow_mass,
            metrics_file=metrics_file,
            should_stop=stop.is_set,
            lock_timeout=lock_timeout,
            accept_short_notice=accept_short_notice,
            shard=shard,
            run_group=run_group,
        )

    bar = fmt == "table" and not no_progress and shard is None
    with _run_progress(rules, url, as_of, pack_id, bar=bar) as on_batch:
        result = apply(on_batch)
        on_batch.finish(result.counts)
    if quiet_output:
        _exit_for(result)
        return
    rows = [{"dataset": d, "transition": t, "count": c} for d, per in result.counts.items() for t, c in per.items()]
    rows += [{"dataset": d, "transition": "FAILED", "count": None, "error": e} for d, e in result.failures.items()]
    rows += [{"dataset": d, "transition": "GUARDED", "count": None, "error": e} for d, e in result.guarded.items()]
    if fmt != "table":
        _print_rows(rows, ["dataset", "transition", "count", "error"], fmt)
        _exit_for(result)
        return
    part = f" shard {result.shard}" if result.shard else ""
    console.print(f"run {result.run_id}{part}: {result.status}, {result.batches} batches", highlight=False)
    _print_rows(rows, ["dataset", "transition", "count"], fmt)
    for dataset, error in result.failures.items():
        err_console.print(f"dataset {dataset} failed: {error}", highlight=False)
    for message in result.guarded.values():
        err_console.print(message, highlight=False)
    _exit_for(result)


class _NoProgress:
    """What a run reports its batches to when nobody watches a bar."""

    def __init__(self, log_progress: Any = None) -> None:
        self._log_progress = log_progress

    def __call__(self, batch: Any) -> None:
        if self._log_progress is not None:
            self._log_progress.on_batch(batch)

    def finish(self, counts: Any) -> None:
        """Nothing to settle: the run's own summary follows."""


class _BarProgress(_NoProgress):
    def __init__(self, bars: Any) -> None:
        super().__init__()
        self._bars = bars

    def __call__(self, batch: Any) -> None:
        self._bars.on_batch(batch)

    def finish(self, counts: Any) -> None:
        self._bars.finish(counts)


@contextmanager
def _run_progress(
    rules: Path, url: str, as_of: AsOf | str | None, pack_id: str | None, bar: bool
) -> Iterator[_NoProgress]:
    """Bars on a terminal (totals from a plan), run_progress log events with JSON logs, else nothing.

    While the bars show, per-batch log events are not printed (the bars say
    the same) and other log lines are printed above the bars.
    """
    from retention.progress import BarProgress, LogProgress, totals_from_plan

    if json_logs():
        yield _NoProgress(LogProgress(logs.get_logger()))
        return
    if not (bar and err_console.is_terminal):
        yield _NoProgress()
        return
    from retention.ledger import pseudonym_secret

    pseudonym_secret()  # a run without its key fails now, not after a plan
    with err_console.status("planning, to know how much each dataset has to move…"):
        summary = commands.plan(rules, url, as_of, pack_id, record=False)
    totals = totals_from_plan(summary.transitions)
    from rich.file_proxy import FileProxy

    with BarProgress(err_console, totals) as bars:
        settings = _log_settings()
        logs.configure(
            json=False,
            level=settings["level"],
            stream=FileProxy(bars.console, sys.stderr),  # type: ignore[arg-type]
            quiet=frozenset({"batch_applied"}),
        )
        try:
            yield _BarProgress(bars)
        finally:
            _configure_logs()


def _exit_for(result: Any) -> None:
    """The run's exit code: 1 interrupted, 3 partial, 4 guarded, else 0."""
    if result.status == "interrupted":
        if not machine_only():
            err_console.print("run interrupted after its current batch; the next run continues", highlight=False)
        sys.exit(EXIT_FAILURE)
    if result.failures:
        sys.exit(EXIT_PARTIAL)
    if result.guarded:
        sys.exit(EXIT_GUARD)


@main.command()
@rules_option()
@db_option
@click.option("--dataset", required=True, type=params.NAME, help="Dataset name from the pack.")
@click.option("--key", required=True, type=params.RECORD_KEY, help="The record's key (primary key value).")
@as_of_option
@pack_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@utc_option
@handled
def explain(
    rules: Path,
    db: str | None,
    dataset: str,
    key: str,
    as_of: AsOf | None,
    pack_id: str | None,
    fmt: str,
    utc: bool,
) -> None:
    """Explain one record: its clocks, due dates, state, holds and next transition.

    Instants are shown in the pack's timezone (--utc for UTC); JSON has them in UTC.
    """
    result = commands.explain(rules, database_url(db), dataset, key, as_of, pack_id)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    zone = display_zone(rules, pack_id, utc)
    console.print(f"{dataset} {key} as of {when(result.as_of, zone)}", highlight=False)
    if not result.exists:
        console.print("  no such record in the source table, and no engine state for it")
        return
    since = f" since {when(result.since, zone)}" if result.since else ""
    console.print(f"  state: {result.state}{since}", highlight=False)
    for clock in result.clocks:
        console.print(
            f"  clock {clock['clock']} = {clock['value']}{_local_date(clock)}, "
            f"{_kept(clock)}"
            f"{'; anomaly: ' + clock['anomaly'] if clock['anomaly'] else ''}"
            f"{' (' + clock['detail'] + ')' if clock.get('detail') else ''} — {clock['basis']}",
            highlight=False,
        )
    if result.excluded:
        stays = "never moves" if result.state == "active" else f"stays {result.state}"
        console.print(f"  excluded by where: not a record of dataset {dataset}; {stays}", highlight=False)
    if result.anomaly:
        console.print(f"  skipped: {result.anomaly} clock; never moved by a run", highlight=False)
    for state, due_at in result.due.items():
        console.print(f"  due for {state}: {when(due_at, zone)}", highlight=False)
    for hold in result.holds:
        console.print(f"  held by hold {hold['id']} ({hold['scope']}): {hold['reason']}", highlight=False)
    for step in result.due_now:
        held = " (held: will not move)" if step["held"] else ""
        console.print(
            f"  due now: {step['transition']} (due {when(step['due_at'], zone)}){held} — {step['basis']}",
            highlight=False,
        )
        if step["action"] == commands.STATE_ONLY:
            console.print(
                f"    {step['transition']} is recorded in the engine's tables only; the source row is not changed",
                highlight=False,
            )
    if result.next_transition:
        nxt = result.next_transition
        console.print(
            f"  next: {nxt['transition']} on {when(nxt['due_at'], zone)} ({nxt['action']}) — {nxt['basis']}",
            highlight=False,
        )
    elif any(clock.get("pending") for clock in result.clocks) and not result.excluded:
        console.print("  next: when the expiry clock passes")
    elif not result.due_now and not result.excluded:
        console.print("  no further transition")


def _local_date(clock: dict[str, Any]) -> str:
    return "" if clock.get("pending") else f" (local date {clock['local_date']})"


def _kept(clock: dict[str, Any]) -> str:
    if clock["period"] == "expires":
        return "due when it passes (expiry clock)" + ("; not yet" if clock.get("pending") else "")
    return f"kept {clock['period']}{' from the financial year end' if clock['anchor'] != 'event' else ''}"


def _actor() -> str:
    import getpass

    return getpass.getuser()


@main.group()
def pack() -> None:
    """Pack versions: when each was first seen, and whether it gave its notice."""


@pack.command("history")
@rules_option()
@db_option
@format_option
@handled
def pack_history(rules: Path, db: str | None, fmt: str) -> None:
    """List every version under --rules: digest, first seen, effective from, notice status.

    Seeing a version records its first sighting, as check, plan and run do.
    Status: ok; short (takes effect less than the pack's notice after it was
    first seen) or back-dated (takes effect before it was first seen), which
    run refuses until the notice has run out, unless --accept-short-notice;
    first version (nothing to give notice of); no notice (the pack sets none).
    """
    rows = [
        {
            "pack": v.loaded.id,
            "version": v.loaded.pack.version,
            "digest": v.loaded.digest if fmt != "table" else v.loaded.digest[:12],
            "first_seen": v.first_seen_at,
            "effective_from": v.loaded.pack.effective_from,
            "notice": str(v.loaded.pack.notice) if v.loaded.pack.notice is not None else None,
            "status": v.status,
            "not_before": v.not_before,
        }
        for v in commands.pack_history(rules, database_url(db))
    ]
    _print_rows(
        rows, ["pack", "version", "digest", "first_seen", "effective_from", "notice", "status", "not_before"], fmt
    )


@main.group()
def hold() -> None:
    """Legal holds: nothing they cover moves until released (ledger entries both ways)."""


@hold.command("add")
@db_option
@rules_option(required=False)
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="Hold every record of this subject id."
)
@click.option(
    "--email",
    type=params.EMAIL,
    default=None,
    help="Hold every record of this e-mail address (trimmed, lower-cased), guest rows too.",
)
@click.option("--dataset", type=params.NAME, default=None, help="Hold a whole dataset, or with --key one record.")
@click.option("--key", "record_key", type=params.RECORD_KEY, default=None, help="Hold one record of --dataset.")
@click.option("--reason", type=params.REASON, required=True, help="Why (case number, authority request, ...).")
@click.option("--by", "placed_by", type=params.NAME, default=None, help="Who places it (default: the OS user).")
@handled
def hold_add(
    db: str | None,
    rules: Path | None,
    subject_key: str | None,
    email: str | None,
    dataset: str | None,
    record_key: str | None,
    reason: str,
    placed_by: str | None,
) -> None:
    """Place a hold on a subject (by id, e-mail address or both), a dataset or one record."""
    scope: Literal["subject", "dataset", "record"] = (
        "subject" if subject_key or email else ("record" if record_key else "dataset")
    )
    if scope == "dataset" and not dataset:
        raise click.UsageError("give --subject, --email, --dataset, or --dataset with --key")
    if scope == "record" and not dataset:
        raise click.UsageError("--key needs --dataset")
    hold_id = commands.hold_add(
        database_url(db),
        scope=scope,
        reason=reason,
        placed_by=placed_by or _actor(),
        dataset=dataset,
        record_key=record_key,
        subject_key=subject_key,
        email=email,
        rules=rules,
    )
    console.print(f"hold {hold_id} placed ({scope})", highlight=False)


@hold.command("release")
@db_option
@click.argument("hold_id", type=params.ROW_ID)
@click.option("--reason", type=params.REASON, required=True, help="Why the hold ends.")
@click.option("--by", "released_by", type=params.NAME, default=None, help="Who releases it (default: the OS user).")
@handled
def hold_release(db: str | None, hold_id: int, reason: str, released_by: str | None) -> None:
    """Release hold HOLD_ID; the next run moves what it held back if still due."""
    commands.hold_release(database_url(db), hold_id, reason=reason, released_by=released_by or _actor())
    console.print(f"hold {hold_id} released", highlight=False)


@hold.command("list")
@db_option
@click.option("--all", "include_released", is_flag=True, help="Include released holds.")
@format_option
@zone_options
@handled
def hold_list(
    db: str | None, include_released: bool, fmt: str, rules: Path | None, pack_id: str | None, utc: bool
) -> None:
    """List holds in place (or all with --all)."""
    rows = commands.hold_list(database_url(db), include_released=include_released)
    _print_rows(
        rows,
        _email_column(
            rows,
            fmt,
            HOLD_COLUMNS,
        ),
        fmt,
        zone=display_zone(rules, pack_id, utc),
    )


HOLD_COLUMNS = [
    "id",
    "scope",
    "dataset",
    "record_key",
    "subject_key",
    "email",
    "reason",
    "placed_by",
    "placed_at",
    "released_at",
]


def _email_column(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> list[str]:
    """A table shows the e-mail column only when some row has an address (CSV and JSON always do)."""
    if fmt == "table" and not any(row.get("email") for row in rows):
        return [c for c in columns if c != "email"]
    return columns


@main.group()
def erasure() -> None:
    """Erasure requests (GDPR art. 17): applied at the next run, with response deadlines."""


@erasure.command("add")
@db_option
@rules_option()
@pack_option
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="The subject's id (e.g. customer id)."
)
@click.option(
    "--email",
    type=params.EMAIL,
    default=None,
    help="The person's e-mail address (trimmed, lower-cased): reaches guest rows known only by it.",
)
@click.option("--received", type=params.DAY, required=True, help="Date the request was received (YYYY-MM-DD).")
@click.option("--note", type=params.REASON, default=None, help="Free text for operators (no personal data, please).")
@handled
def erasure_add(
    db: str | None,
    rules: Path,
    pack_id: str | None,
    subject_key: str | None,
    email: str | None,
    received: dt.date,
    note: str | None,
) -> None:
    """Record an erasure request; the next run moves the person's records.

    Name the person by --subject, --email or both: the request reaches every
    record carrying either (a customer's account records by id, their guest
    orders by e-mail address). The deadline is 1 month after receipt, moved
    to the next working day when it ends on a weekend or a public holiday of
    the pack's country.
    """
    if not subject_key and not email:
        raise click.UsageError("give --subject, --email, or both")
    request_id, deadline, moved = commands.erasure_add(
        database_url(db), rules, pack_id, subject_key=subject_key, received=received, note=note, email=email
    )
    why = f" (moved from {moved})" if moved else ""
    console.print(f"erasure request {request_id}: answer by {deadline.isoformat()}{why}", highlight=False)
    if commands.subject_known(database_url(db), rules, pack_id, subject_key, email) is False:
        err_console.print(
            f"warning: no dataset holds a record of this {'person' if email else 'subject'}; request {request_id} "
            f"will be processed with the outcome 'no records found' (check the {'id or address' if email else 'id'})",
            highlight=False,
        )


@erasure.command("list")
@db_option
@rules_option(required=False)
@pack_option
@click.option("--all", "include_closed", is_flag=True, help="Include closed requests.")
@format_option
@handled
def erasure_list(db: str | None, rules: Path | None, pack_id: str | None, include_closed: bool, fmt: str) -> None:
    """List requests with their deadline; flags those due within 7 days and overdue.

    With --rules (or RETENTION_RULES), the moved column names the weekend days
    and public holidays of the pack's country that pushed each deadline back.
    """
    rows = commands.erasure_list(database_url(db), include_closed=include_closed, rules=rules, pack_id=pack_id)
    columns = [
        "id",
        "subject_key",
        "email",
        "received_on",
        "deadline",
        "flag",
        "status",
        "outcome",
        "extended_on",
        "note",
    ]
    columns = _email_column(rows, fmt, columns)
    if fmt != "table":
        after = columns.index("deadline") + 1
        _print_rows(rows, columns[:after] + (["moved"] if rules is not None else []) + columns[after:], fmt)
        return
    _print_rows(rows, columns, fmt)
    for row in rows:
        if row.get("moved"):
            console.print(f"request {row['id']}: deadline moved from {row['moved']}", highlight=False)


@erasure.command("extend")
@db_option
@rules_option()
@pack_option
@click.argument("request_id", type=params.ROW_ID)
@click.option("--reason", type=params.REASON, required=True, help="Why more time is needed (GDPR art. 12(3)).")
@handled
def erasure_extend(db: str | None, rules: Path, pack_id: str | None, request_id: int, reason: str) -> None:
    """Extend a request's deadline once, by 2 months (then moved off weekends and public holidays)."""
    deadline, moved = commands.erasure_extend(database_url(db), rules, pack_id, request_id, reason=reason)
    why = f" (moved from {moved})" if moved else ""
    console.print(f"erasure request {request_id}: answer by {deadline.isoformat()}{why}", highlight=False)


@erasure.command("close")
@db_option
@click.argument("request_id", type=params.ROW_ID)
@handled
def erasure_close(db: str | None, request_id: int) -> None:
    """Close a request once it has been answered."""
    commands.erasure_close(database_url(db), request_id)
    console.print(f"erasure request {request_id} closed", highlight=False)


@main.command()
@click.option(
    "--db",
    "db",
    default="sqlite:///retention-demo.sqlite",
    show_default=True,
    help="Where to build the sample shop (its tables are dropped and rebuilt).",
)
@click.option(
    "--customers",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Number of synthetic customers.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=7,
    show_default=True,
    help="Random seed (the shop is reproducible).",
)
@click.option(
    "--rules",
    "rules",
    default=Path("builtin:marketplace"),
    type=click.Path(path_type=Path),
    show_default=True,
    help="The pack to demonstrate.",
)
@handled
def demo(db: str, customers: int, seed: int, rules: Path) -> None:
    """Build a sample shop on SQLite and show check, plan, run and ledger verification.

    The shop has years of synthetic customers, orders, invoices, browsing and
    analytics events, review-widget access logs and payment tokens. A demo
    pseudonym key is created in .retention-demo/ unless one is configured.
    """
    import os

    if _log_settings()["level"] == "info":
        _log_settings()["level"] = "error"  # the demo prints its own story; keep errors only
        _configure_logs()
    if not os.environ.get("RETENTION_PSEUDONYM_KEY") and not os.environ.get("RETENTION_PSEUDONYM_KEY_FILE"):
        key_file = commands.demo_key_file(Path(".retention-demo"))
        os.environ["RETENTION_PSEUDONYM_KEY_FILE"] = str(key_file)
        console.print(f"using a demo pseudonym key in {key_file} (mode 0600)", highlight=False)
    console.rule("1. build the sample shop")
    summary = commands.demo_build(db, customers=customers, seed=seed)
    console.print(
        ", ".join(f"{table} {count}" for table, count in summary.items()) + f" rows in {safe_url(db)}",
        highlight=False,
    )
    console.rule("2. check the rule pack against the schema")
    report = commands.check(rules, db)
    for finding in report.findings:
        console.print(str(finding), highlight=False)
    console.print(f"{rules}: {len(report.errors)} errors, {len(report.findings) - len(report.errors)} warnings")
    console.rule("3. plan (dry run): what tonight's run will do")
    plan_summary = commands.plan(rules, db)
    _print_plan_table(plan_summary, display_zone(rules, plan_summary.pack_id, utc=False))
    console.print(f"{plan_summary.total()} transitions planned", highlight=False)
    console.rule("4. run (the first run clears years of backlog, so guards are overridden: see the ledger)")
    result = commands.run(rules, db, allow_mass=("*",))
    rows = [{"dataset": d, "transition": t, "count": c} for d, per in result.counts.items() for t, c in per.items()]
    _print_rows(rows, ["dataset", "transition", "count"], "table")
    console.print(f"run {result.run_id}: {result.status} in {result.batches} batches", highlight=False)
    console.rule("5. run again: nothing left to do")
    again = commands.run(rules, db)
    console.print(
        f"run {again.run_id}: {again.status}, {sum(sum(v.values()) for v in again.counts.values())} transitions",
        highlight=False,
    )
    console.rule("6. verify the ledger")
    verdict = commands.ledger_verify(db)
    console.print(
        f"ledger: {verdict.entries} entries, chain {'verified' if verdict.ok else 'BROKEN: ' + verdict.reason}",
        highlight=False,
    )
    console.rule("next")
    console.print(
        f"retention explain --db {db} --rules {rules} --dataset customers --key 1\n"
        f"retention plan --db {db} --rules {rules} --as-of 2028-01-01\n"
        f"retention ledger verify --db {db}",
        highlight=False,
    )
    if not verdict.ok:
        sys.exit(EXIT_LEDGER)
    if result.failures:
        sys.exit(EXIT_PARTIAL)


@main.group("ledger")
def ledger_group() -> None:
    """The purge ledger: verify, show, export, look up, checkpoint, prove."""


@ledger_group.command("verify")
@db_option
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=params.INPUT_FILE,
    default=None,
    help="Also check against this signed checkpoint (JSON from `ledger checkpoint`); needs the signer's public key.",
)
@click.option(
    "--public-key",
    "public_key",
    type=params.INPUT_FILE,
    default=None,
    help="PEM public key of the checkpoint signer (or RETENTION_CHECKPOINT_PUBLIC_KEY / _FILE); "
    "the key inside a checkpoint is never trusted.",
)
@handled
def ledger_verify(db: str | None, checkpoint_file: Path | None, public_key: Path | None) -> None:
    """Recompute the hash chain (and a checkpoint); exit 6 naming the first broken entry."""
    verdict = commands.ledger_verify(database_url(db), checkpoint_file, public_key)
    if verdict.ok:
        extra = f", checkpoint {checkpoint_file} holds" if checkpoint_file else ""
        console.print(f"ledger verified: {verdict.entries} entries{extra}", highlight=False)
        return
    err_console.print(f"ledger verification failed: {verdict.reason}", highlight=False)
    sys.exit(EXIT_LEDGER)


def ledger_filters(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--since", type=params.AS_OF, default=None, help="Entries recorded at or after this date/instant (UTC)."
            ),
            click.option(
                "--until", type=params.AS_OF, default=None, help="Entries recorded before this date/instant (UTC)."
            ),
            click.option("--dataset", type=params.NAME, default=None, help="Only this dataset."),
            click.option("--transition", default=None, help="Only this transition, e.g. active->purged."),
            click.option("--run", "run_id", default=None, help="Only entries of this run id."),
        ]
    ):
        func = option(func)
    return func


# For people: what, when and how many; --format csv or json adds the basis,
# pseudonyms, hashes and full run ids.
LEDGER_TABLE = ["seq", "recorded_at", "dataset", "transition", "count", "due_at", "run_id"]
# A lookup lists one row per record (a v2 item, or a v1 entry): the count is always 1.
LOOKUP_TABLE = ["seq", "item", "recorded_at", "dataset", "transition", "action", "due_at", "run_id"]
LEDGER_COLUMNS = [
    "seq",
    "recorded_at",
    "dataset",
    "transition",
    "action",
    "count",
    "due_at",
    "basis",
    "record_pseudonym",
    "run_id",
]


@ledger_group.command("show")
@db_option
@ledger_filters
@click.option(
    "--limit", type=click.IntRange(0, 10**9), default=100, show_default=True, help="At most this many entries (0: all)."
)
@format_option
@zone_options
@handled
def ledger_show(
    db: str | None,
    since: AsOf | None,
    until: AsOf | None,
    dataset: str | None,
    transition: str | None,
    run_id: str | None,
    limit: int,
    fmt: str,
    rules: Path | None,
    pack_id: str | None,
    utc: bool,
) -> None:
    """Show ledger entries, oldest first, filtered by date range, dataset, transition or run."""
    rows = commands.ledger_entries(
        database_url(db),
        since=since,
        until=until,
        dataset=dataset,
        transition=transition,
        run_id=run_id,
        limit=limit,
    )
    _print_rows(rows, LEDGER_TABLE if fmt == "table" else LEDGER_COLUMNS, fmt, zone=display_zone(rules, pack_id, utc))


@ledger_group.command("export")
@db_option
@ledger_filters
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True)
@click.option(
    "--output",
    type=params.OUTPUT_FILE,
    default=None,
    help="File to write (default stdout).",
)
@handled
def ledger_export(
    db: str | None,
    since: AsOf | None,
    until: AsOf | None,
    dataset: str | None,
    transition: str | None,
    run_id: str | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Export entries (every column, hashes included) for auditors as CSV or JSON lines."""
    count = commands.ledger_export(
        database_url(db),
        fmt,
        output,
        since=since,
        until=until,
        dataset=dataset,
        transition=transition,
        run_id=run_id,
    )
    if output is not None:
        console.print(f"{count} entries written to {output}", highlight=False)


@ledger_group.command("lookup")
@db_option
@click.option("--dataset", type=params.NAME, default=None, help="Dataset of the record (with --key).")
@click.option("--key", "record_key", type=params.RECORD_KEY, default=None, help="The record's key.")
@click.option(
    "--subject",
    "subject_key",
    type=params.SUBJECT_ID,
    default=None,
    help="A subject id: every entry about this person.",
)
@click.option(
    "--email",
    type=params.EMAIL,
    default=None,
    help="An e-mail address (trimmed, lower-cased): every entry about records carrying it.",
)
@format_option
@zone_options
@handled
def ledger_lookup(
    db: str | None,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    email: str | None,
    fmt: str,
    rules: Path | None,
    pack_id: str | None,
    utc: bool,
) -> None:
    """Find the entries of one record, subject or e-mail address by computing its pseudonym (needs the key)."""
    rows = commands.ledger_lookup(
        database_url(db), dataset=dataset, record_key=record_key, subject_key=subject_key, email=email
    )
    horizons = [(row["seq"], row.pop("backups")) for row in rows]
    if fmt != "table":
        for row, (_, found) in zip(rows, horizons, strict=True):
            row["backups"] = None if found is None else found.as_dict()
    _print_rows(
        rows,
        LOOKUP_TABLE if fmt == "table" else ["seq", "item", *LEDGER_COLUMNS[1:], "request_id", "review_id"],
        fmt,
        zone=display_zone(rules, pack_id, utc),
    )
    if fmt == "table":
        for seq, found in dict(horizons).items():  # an entry listed once per item says it once
            if found is not None:
                console.print(f"entry {seq}: {found.sentence()}", highlight=False)


@ledger_group.command("checkpoint")
@db_option
@click.option(
    "--key",
    "key_file",
    type=params.INPUT_FILE,
    default=None,
    help="Ed25519 private key (PEM, mode 0600); default RETENTION_SIGNING_KEY_FILE.",
)
@click.option(
    "--output",
    type=params.OUTPUT_FILE,
    default=None,
    help="Write the checkpoint JSON here (keep a copy outside this database).",
)
@handled
def ledger_checkpoint(db: str | None, key_file: Path | None, output: Path | None) -> None:
    """Sign the current head (sequence, hash, time) so a rewritten chain is detectable later."""
    document = commands.ledger_checkpoint(database_url(db), key_file)
    text = json.dumps(document, indent=2, sort_keys=True)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"checkpoint of entry {document['seq']} written to {output}", highlight=False)
    else:
        click.echo(text)


@ledger_group.command("keygen")
@click.option(
    "--key",
    "key_file",
    type=params.OUTPUT_FILE,
    required=True,
    help="Where to write the new private key (created with mode 0600).",
)
@click.option(
    "--public",
    "public_file",
    type=params.OUTPUT_FILE,
    default=None,
    help="Also write the public key (PEM) to this file, for auditors.",
)
@handled
def ledger_keygen(key_file: Path, public_file: Path | None) -> None:
    """Create an Ed25519 signing key for checkpoints; prints the public key to give auditors."""
    public = commands.ledger_keygen(key_file)
    if public_file is not None:
        public_file.write_bytes(public)
    click.echo(public.decode("ascii"), nl=False)


@ledger_group.command("prove")
@db_option
@click.option("--dataset", type=params.NAME, default=None, help="Dataset of the record (with --key).")
@click.option("--key", "record_key", type=params.RECORD_KEY, default=None, help="The record's key.")
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="A subject id: every record of this person."
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=params.INPUT_FILE,
    required=True,
    help="A signed checkpoint (from `ledger checkpoint`) at or after the record's entries.",
)
@click.option("--output", type=params.OUTPUT_FILE, default=None, help="Write the proof here (default stdout).")
@handled
def ledger_prove(
    db: str | None,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    checkpoint_file: Path,
    output: Path | None,
) -> None:
    """Write a self-contained proof that a record (or a subject's records) was moved, checkable offline."""
    document = commands.ledger_prove(
        database_url(db), checkpoint_file, dataset=dataset, record_key=record_key, subject_key=subject_key
    )
    text = json.dumps(document, indent=1, sort_keys=True)
    if output is None:
        click.echo(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    console.print(
        f"proof of {len(document['records'])} ledger record(s), chain of {len(document['chain'])} entries to "
        f"the checkpoint of entry {document['checkpoint']['seq']}, written to {output}",
        highlight=False,
    )


@ledger_group.command("verify-proof")
@click.argument("proof_file", type=params.INPUT_FILE)
@click.option(
    "--public-key",
    "public_key",
    type=params.INPUT_FILE,
    default=None,
    help="PEM public key of the checkpoint signer (or RETENTION_CHECKPOINT_PUBLIC_KEY / _FILE).",
)
@click.option("--dataset", type=params.NAME, default=None, help="With --key: check the proof is about this record.")
@click.option(
    "--key", "record_key", type=params.RECORD_KEY, default=None, help="The record's key (needs the pseudonym key)."
)
@handled
def ledger_verify_proof(proof_file: Path, public_key: Path | None, dataset: str | None, record_key: str | None) -> None:
    """Check a proof from `ledger prove` offline, without any database; exit 6 with the reason if it fails."""
    verdict = commands.ledger_verify_proof(proof_file, public_key, dataset=dataset, record_key=record_key)
    if not verdict.ok:
        err_console.print(f"proof rejected: {verdict.reason}", highlight=False)
        sys.exit(EXIT_LEDGER)
    console.print("proof ok", highlight=False)
    for line in verdict.lines:
        console.print(f"  {line}", highlight=False)


@main.command()
@rules_option()
@db_option
@as_of_option
@pack_option
@click.option(
    "--horizon",
    type=params.PeriodType(Period(years=5)),
    default="P6M",
    show_default=True,
    help="How far the weekly forecast looks ahead (at most P5Y: one plan per week).",
)
@click.option(
    "--html",
    "html_file",
    type=params.OUTPUT_FILE,
    required=True,
    help="Write the self-contained HTML report here.",
)
@lock_timeout_option
@handled
def report(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    horizon: Period,
    html_file: Path,
    lock_timeout: int | None,
) -> None:
    """HTML report: what is due now and a chart of upcoming transitions per week."""
    summary, forecast = commands.report(
        rules, database_url(db), as_of, horizon, html_file, pack_id, lock_timeout=lock_timeout
    )
    total = sum(sum(v) for v in forecast.series.values())
    console.print(
        f"{html_file}: {summary.total()} transitions due now, {total} more over {len(forecast.starts)} weeks",
        highlight=False,
    )


@main.command()
@rules_option()
@db_option
@pack_option
@click.option(
    "--cron",
    envvar="RETENTION_SCHEDULE",
    default="30 2 * * *",
    show_default=True,
    help="When to run: 5 crontab fields (or 6 with seconds first); or RETENTION_SCHEDULE.",
)
@click.option(
    "--timezone",
    "timezone",
    envvar="RETENTION_SCHEDULE_TIMEZONE",
    default="UTC",
    show_default=True,
    help="Timezone of the cron expression; or RETENTION_SCHEDULE_TIMEZONE.",
)
@click.option(
    "--archive-db",
    "archive_url",
    envvar="RETENTION_ARCHIVE_DATABASE_URL",
    default=None,
    help="Separate database for the intermediate archive.",
)
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Prometheus textfile written after each run.",
)
@lock_timeout_option
@handled
def scheduler(
    rules: Path,
    db: str | None,
    pack_id: str | None,
    cron: str,
    timezone: str,
    archive_url: str | None,
    metrics_file: Path | None,
    lock_timeout: int | None,
) -> None:
    """Run `retention run` on a cron schedule (no overlap, missed runs coalesced) until SIGTERM."""
    commands.scheduler(
        rules, database_url(db), cron, timezone, pack_id, archive_url, metrics_file, lock_timeout=lock_timeout
    )


# --------------------------------------------------------------------------
# fleets of databases and the Celery backend
# --------------------------------------------------------------------------


def _as_of_text(as_of: AsOf | None) -> str | None:
    """An as-of as the text a subprocess or a task parses back (the same date or instant)."""
    if as_of is None:
        return None
    return as_of.day.isoformat() if as_of.day is not None else as_of.instant.isoformat()  # type: ignore[union-attr]


@main.group()
def fleet() -> None:
    """Fleets of databases: one run per target database, each with its own lock, ledger and exit status."""


@fleet.command("run")
@click.option(
    "--targets",
    "targets",
    envvar="RETENTION_FLEET_FILE",
    required=True,
    type=click.Path(path_type=Path),
    help="Fleet file (YAML) naming the target databases (or RETENTION_FLEET_FILE).",
)
@click.option(
    "--target",
    "only",
    multiple=True,
    type=params.NAME,
    metavar="NAME",
    help="Run only this target (repeatable); default every target of the file.",
)
@as_of_option
@dispatch_options("targets")
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Write Prometheus metrics here, every series labelled by target.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output for people (table) or machines (json, csv).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@lock_timeout_option
@handled
def fleet_run(
    targets: Path,
    only: tuple[str, ...],
    as_of: AsOf | None,
    parallel: int,
    via: str,
    queue: str,
    broker: str | None,
    result_backend: str | None,
    timeout: float | None,
    metrics_file: Path | None,
    fmt: str,
    as_json: bool,
    lock_timeout: int | None,
) -> None:
    """Run every target of a fleet file: one unit of work per database, then a summary.

    Each target gets its own run (lock, ledger, exit status) as `retention run`
    would give it; locally each runs in its own process, at most --parallel at
    once, so one target's crash does not stop the others. With --via celery
    one task per target goes to the queue and `retention worker` processes run
    them. Exits with the worst target's code (2 > 6 > 1 > 3 > 5 > 4 > 0); a
    target whose database cannot be reached counts as 3.
    """
    import signal
    import threading

    from retention import fleet as fleet_module

    loaded = fleet_module.load_fleet(targets)
    names = list(only) or loaded.names()
    for name in names:
        loaded.target(name)  # an unknown --target is refused before anything runs
    fmt = "json" if as_json else fmt
    as_of_text = _as_of_text(as_of)
    log = logs.get_logger()
    settings = _log_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _FleetProgress(names, bar=fmt == "table" and err_console.is_terminal and not json_logs()) as progress:
        if via == "local":
            outcomes = fleet_module.run_local(
                loaded,
                names,
                parallel=parallel,
                as_of=as_of_text,
                lock_timeout=lock_timeout,
                log_format="json" if json_logs() else "console",
                log_level=settings["level"],
                on_start=lambda name: progress.state(name, "STARTED"),
                on_done=lambda outcome: progress.state(outcome.target, "SUCCESS"),
                should_stop=stop.is_set,
            )
        else:
            from retention import workers

            app = workers.make_app(broker, result_backend)
            workers.check_broker(app)
            results = workers.enqueue_fleet(
                app, loaded, names, queue=queue, as_of=as_of_text, lock_timeout=lock_timeout
            )
            log.info("fleet_enqueued", targets=len(names), queue=queue)
            outcomes = workers.wait(results, timeout=timeout, on_state=progress.state)
    if metrics_file is not None:
        fleet_module.write_fleet_metrics(metrics_file, outcomes)
    code = fleet_module.worst_exit(outcomes)
    log.info(
        "fleet_finished",
        targets=len(outcomes),
        failed=[o.target for o in outcomes if o.exit_code != 0],
        exit_code=code,
    )
    zones = {t.name: t.timezone for t in loaded.spec.targets}
    _print_fleet(outcomes, fmt, code, zones)
    sys.exit(code)


class _FleetProgress:
    """A bar of targets done on a terminal (queued, running, done), else nothing."""

    def __init__(self, names: list[str], bar: bool) -> None:
        self._names = names
        self._bar = bar
        self._states: dict[str, str] = {}

    def __enter__(self) -> _FleetProgress:
        if self._bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("targets"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[running]}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("targets", total=len(self._names), running="")
        return self

    def state(self, name: str, state: str) -> None:
        self._states[name] = state
        if not self._bar:
            return
        done = sum(s in ("SUCCESS", "FAILURE", "REVOKED") for s in self._states.values())
        running = sorted(n for n, s in self._states.items() if s == "STARTED")
        shown = ", ".join(running[:3]) + (f" +{len(running) - 3}" if len(running) > 3 else "")
        self._progress.update(self._task, completed=done, running=f"running: {shown}" if shown else "")

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._progress.stop()


def _print_fleet(outcomes: list[Any], fmt: str, code: int, zones: dict[str, str], what: str = "targets") -> None:
    """The fleet summary: one row per target, its finishing time in the target's timezone."""
    rows = [
        {
            "target": o.target,
            "status": o.status,
            "exit": o.exit_code,
            "finished": when(dt.datetime.fromisoformat(o.finished_at), zones.get(o.target, "UTC"))
            if o.finished_at
            else None,
            "transitions": o.transitions,
            "batches": o.batches,
            "seconds": f"{o.seconds:.1f}",
            "run_id": o.run_id,
            "error": o.error or "; ".join(f"{d}: {e}" for d, e in {**o.failures, **o.guarded}.items()) or None,
        }
        for o in outcomes
    ]
    if fmt == "json":
        click.echo(
            json.dumps(
                {"exit_code": code, what: [o.as_dict() | {"transitions": o.transitions} for o in outcomes]},
                indent=2,
            )
        )
        return
    columns = ["target", "status", "exit", "transitions", "seconds", "finished", "error"]
    if fmt == "csv":
        _print_rows(rows, [*columns[:4], "batches", *columns[4:6], "run_id", "error"], fmt)
        return
    failed = [o.target for o in outcomes if o.exit_code != 0]
    head = "fleet" if what == "targets" else "run"
    _print_rows(rows, columns, fmt, title=f"{head}: {len(outcomes)} {what}")
    if failed:
        err_console.print(
            f"{head}: {len(failed)} of {len(outcomes)} {what} failed: {', '.join(failed)} (exit {code})",
            highlight=False,
        )
    else:
        console.print(f"{head}: all {len(outcomes)} {what} succeeded", highlight=False)


def _run_shards(
    rules: Path,
    url: str,
    as_of: AsOf | None,
    pack_id: str | None,
    archive_url: str | None,
    count: int,
    *,
    run_group: str | None,
    via: str,
    parallel: int,
    celery: tuple[str, str | None, str | None, float | None],
    allow_mass: tuple[str, ...],
    accept_short_notice: bool,
    metrics_file: Path | None,
    fmt: str,
    lock_timeout: int | None,
) -> None:
    """`run --shards N`: every shard of one run group, here or on Celery, then a summary per shard."""
    import signal
    import threading
    import uuid

    from retention import fleet as fleet_module
    from retention.policy import load_catalog

    load_catalog(rules)  # a broken pack fails here, not in N places
    # One explicit group for all N shards: each would otherwise derive it on its own (around midnight, two days).
    group = run_group or f"shards-{uuid.uuid4().hex[:12]}"
    as_of_text = _as_of_text(as_of)
    names = [fleet_module.shard_name(i, count) for i in range(count)]
    log = logs.get_logger()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _FleetProgress(names, bar=fmt == "table" and err_console.is_terminal and not json_logs()) as progress:
        if via == "local":
            spec = {
                "kind": "shard",
                "count": count,
                "run_group": group,
                "as_of": as_of_text,
                "pack_id": pack_id,
                "lock_timeout": lock_timeout,
                "allow_mass": list(allow_mass),
                "accept_short_notice": accept_short_notice,
                "log_format": "json" if json_logs() else "console",
                "log_level": _log_settings()["level"],
            }
            env = {"RETENTION_DATABASE_URL": url, "RETENTION_RULES": str(rules)}  # off the command line
            if archive_url:
                env["RETENTION_ARCHIVE_DATABASE_URL"] = archive_url
            outcomes = fleet_module.run_pool(
                {name: {**spec, "index": i} for i, name in enumerate(names)},
                parallel=parallel,
                env=env,
                on_start=lambda name: progress.state(name, "STARTED"),
                on_done=lambda outcome: progress.state(outcome.target, "SUCCESS"),
                should_stop=stop.is_set,
            )
        else:
            from retention import workers

            queue, broker, result_backend, timeout = celery
            app = workers.make_app(broker, result_backend)
            workers.check_broker(app)
            results = workers.enqueue_shards(
                app,
                count,
                run_group=group,
                queue=queue,
                as_of=as_of_text,
                pack_id=pack_id,
                lock_timeout=lock_timeout,
                allow_mass=allow_mass,
                accept_short_notice=accept_short_notice,
            )
            log.info("shards_enqueued", total=count, queue=queue, run_group=group)
            outcomes = workers.wait(results, timeout=timeout, on_state=progress.state)
    if metrics_file is not None:
        fleet_module.write_fleet_metrics(metrics_file, outcomes)
    code = fleet_module.worst_exit(outcomes)
    log.info("shards_finished", total=count, failed=[o.target for o in outcomes if o.exit_code], exit_code=code)
    if fmt != "json":
        console.print(f"run group {group}: {count} shards", highlight=False)
    _print_fleet(outcomes, fmt, code, {}, what="shards")
    sys.exit(code)


@main.command()
@click.option(
    "--targets",
    "targets",
    envvar="RETENTION_FLEET_FILE",
    default=None,
    type=click.Path(path_type=Path),
    help="Fleet file the fleet tasks resolve their targets in (or RETENTION_FLEET_FILE).",
)
@rules_option(required=False)
@db_option
@with_celery_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Tasks this worker runs at once, each in a child process.",
)
@handled
def worker(
    targets: Path | None,
    rules: Path | None,
    db: str | None,
    queue: str,
    broker: str | None,
    result_backend: str | None,
    concurrency: int,
) -> None:
    """Start a Celery worker that runs the tasks `fleet run --via celery` enqueues (until SIGTERM).

    Tasks are acknowledged when they finish, one at a time per process: if this
    worker dies mid-task the broker gives the task to another worker, which
    runs it again from what the database holds (nothing is done twice).
    Database URLs and keys come from this worker's own fleet file, --rules,
    --db and environment; tasks carry target names, shard numbers and run
    groups only.
    """
    from retention import workers

    if rules is not None:
        from retention.policy import load_catalog

        load_catalog(rules)  # a broken pack fails now, not at the first task
    workers.start_worker(
        fleet_file=targets,
        rules=rules,
        db_url=db,
        queue=queue,
        concurrency=concurrency,
        broker=broker,
        backend=result_backend,
        log_level=_log_settings()["level"],
    )


@main.group()
def review() -> None:
    """Disposition review: approve or reject purges of datasets declared `review: true`."""


@review.command("list")
@db_option
@click.option("--all", "include_done", is_flag=True, help="Include rejected and completed batches.")
@format_option
@zone_options
@handled
def review_list(
    db: str | None, include_done: bool, fmt: str, rules: Path | None, pack_id: str | None, utc: bool
) -> None:
    """List review batches awaiting a decision (or all with --all)."""
    rows = commands.review_list(database_url(db), include_done=include_done)
    columns = ["id", "dataset", "status", "items", "created_at", "decided_by", "reason"]
    _print_rows(rows, columns, fmt, zone=display_zone(rules, pack_id, utc))


@review.command("show")
@db_option
@click.argument("batch_id", type=params.ROW_ID)
@format_option
@zone_options
@handled
def review_show(db: str | None, batch_id: int, fmt: str, rules: Path | None, pack_id: str | None, utc: bool) -> None:
    """Show the records of review batch BATCH_ID and when each became due."""
    batch, items = commands.review_show(database_url(db), batch_id)
    if fmt == "table":
        console.print(
            f"review batch {batch['id']} of {batch['dataset']}: {batch['status']}, {len(items)} records",
            highlight=False,
        )
    _print_rows(items, ["record_key", "transition", "due_at"], fmt, zone=display_zone(rules, pack_id, utc))


def _decision(approve: bool) -> Callable[..., None]:
    @db_option
    @click.argument("batch_id", type=params.ROW_ID)
    @click.option("--by", "by", type=params.NAME, default=None, help="Who decides (default: the OS user).")
    @click.option("--reason", type=params.REASON, required=True, help="Why; goes to the ledger.")
    @handled
    def decide(db: str | None, batch_id: int, by: str | None, reason: str) -> None:
        commands.review_decide(database_url(db), batch_id, approve=approve, by=by or _actor(), reason=reason)
        console.print(f"review batch {batch_id} {'approved' if approve else 'rejected'}", highlight=False)

    return decide


review.command("approve", help="Approve batch BATCH_ID: the next run purges what is still due and not held.")(
    _decision(True)
)
review.command("reject", help="Reject batch BATCH_ID: its records are kept and not proposed again.")(_decision(False))


@main.group()
def user() -> None:
    """Accounts of the auditor console: auditor reads, approver also decides reviews, admin also manages accounts."""


@user.command("add")
@db_option
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice(["auditor", "approver", "admin"]), help="What the account may do."
)
@click.option(
    "--no-password",
    is_flag=True,
    help="An account that signs in only through the authenticating proxy (serve --auth proxy).",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
@handled
def user_add(db: str | None, name: str, role: str, no_password: bool, password_stdin: bool) -> None:
    """Create console account NAME with --role; the password is hashed with argon2id."""
    password: str | None = None
    if not no_password:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    commands.user_add(database_url(db), name, role, password, created_by=_actor())
    how = "signs in through the proxy" if no_password else "signs in with a password"
    console.print(f"account {name} added as {role} ({how})", highlight=False)


@user.command("list")
@db_option
@format_option
@handled
def user_list(db: str | None, fmt: str) -> None:
    """List console accounts, their roles and whether they are disabled."""
    rows = commands.user_list(database_url(db))
    _print_rows(rows, ["name", "role", "has_password", "created_at", "created_by", "disabled_at"], fmt)


@user.command("disable")
@db_option
@click.argument("name")
@handled
def user_disable(db: str | None, name: str) -> None:
    """Disable console account NAME; its open sessions stop working at once."""
    commands.user_disable(database_url(db), name, by=_actor())
    console.print(f"account {name} disabled", highlight=False)


@main.command()
@db_option
@rules_option(required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--auth",
    type=click.Choice(["password", "proxy"]),
    default="password",
    show_default=True,
    help="password: console accounts sign in; proxy: trust the user header of --trusted-proxy addresses.",
)
@click.option(
    "--proxy-header",
    default="X-Forwarded-User",
    show_default=True,
    help="With --auth proxy, the header naming the signed-in account (oauth2-proxy: X-Forwarded-User).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="ADDRESS",
    help="With --auth proxy, an address or network (CIDR) whose user header is believed; repeatable.",
)
@click.option(
    "--checkpoints",
    type=click.Path(path_type=Path),
    envvar="RETENTION_CHECKPOINTS",
    default=None,
    help="A checkpoint file or a folder of them (from `ledger checkpoint`); or RETENTION_CHECKPOINTS.",
)
@click.option(
    "--public-key",
    type=click.Path(path_type=Path, exists=True),
    envvar="RETENTION_CHECKPOINT_PUBLIC_KEY",
    default=None,
    help="PEM public key that checkpoints must verify against; or RETENTION_CHECKPOINT_PUBLIC_KEY.",
)
@click.option("--session-hours", default=8.0, show_default=True, type=float, help="How long a sign-in lasts.")
@click.option(
    "--schedule",
    envvar="RETENTION_SCHEDULE",
    default=None,
    help="The scheduler's cron expression, to show the next run; or RETENTION_SCHEDULE.",
)
@click.option(
    "--schedule-timezone",
    envvar="RETENTION_SCHEDULE_TIMEZONE",
    default="UTC",
    show_default=True,
    help="Timezone of --schedule; or RETENTION_SCHEDULE_TIMEZONE.",
)
@click.option("--horizon", default="P3M", show_default=True, help="How far the forecast page looks ahead.")
@handled
def serve(
    db: str | None,
    rules: Path | None,
    host: str,
    port: int,
    auth: Literal["password", "proxy"],
    proxy_header: str,
    trusted_proxies: tuple[str, ...],
    checkpoints: Path | None,
    public_key: Path | None,
    session_hours: float,
    schedule: str | None,
    schedule_timezone: str,
    horizon: str,
) -> None:
    """Run the auditor console: a read-only, signed-in web view of the ledger, runs, requests and reviews.

    Sign-in cookies are Secure: serve it behind a TLS reverse proxy (a browser on
    localhost accepts them over plain HTTP). The session-signing key comes from
    RETENTION_CONSOLE_SECRET or RETENTION_CONSOLE_SECRET_FILE (random otherwise:
    sessions end at restart); lookups need the pseudonym key.
    """
    from retention.web import ConsoleSettings

    settings = ConsoleSettings(
        db_url=database_url(db),
        rules=rules,
        auth=auth,
        proxy_header=proxy_header,
        trusted_proxies=trusted_proxies,
        checkpoints=checkpoints,
        public_key=public_key,
        session_hours=session_hours,
        schedule=schedule,
        schedule_timezone=schedule_timezone,
        forecast_horizon=horizon,
    )
    console.print(f"retention console on http://{host}:{port}/ ({auth} sign-in); Ctrl+C stops it", highlight=False)
    commands.serve(settings, host, port)


# Free text and long identifiers wrap to make a table fit; every other cell (names
# people copy into --dataset or --transition, dates, counts) stays whole on one line.
WRAPPING_COLUMNS = frozenset(
    {
        "action",
        "anomalies",
        "basis",
        "clocks",
        "due",
        "error",
        "moved",
        "note",
        "reason",
        "record_key",
        "record_pseudonym",
        "run_id",
        "sample_keys",
        "samples",
        "subject_key",
    }
)
NUMBER_COLUMNS = frozenset({"count", "change", "items", "id", "seq", "hold_id", "exit", "transitions", "seconds"})
# Shorter headers for people (JSON and CSV keep the field names).
HEADERS = {
    "decided_by": "by",
    "extended_on": "extended",
    "placed_at": "placed",
    "placed_by": "by",
    "received_on": "received",
    "record_key": "record",
    "released_at": "released",
    "subject_key": "subject",
}
# Identifiers shown by their first characters in tables, as pack digests are.
ABBREVIATED = {"run_id": 8, "record_pseudonym": 12}


def _table(
    columns: list[str], zone: str | None = None, caption: bool = False, instants: frozenset[str] = frozenset()
) -> Table:
    """A table that fits the console: names, dates and counts whole, free text wrapped, nothing cut.

    Columns of instants may break between the date and the time of day.
    """
    table = Table(caption=f"times in {zone}" if caption and zone else None, caption_justify="left")
    for column in columns:
        header = HEADERS.get(column, column)
        wraps = column in WRAPPING_COLUMNS or column in instants
        table.add_column(
            header,
            no_wrap=not wraps,
            min_width=(10 if column in instants else min(len(header), 12)) if wraps else None,
            overflow="fold",
            justify="right" if column in NUMBER_COLUMNS else "left",
        )
    return table


def _print_rows(
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: str,
    title: str | None = None,
    zone: str = "UTC",
) -> None:
    """Print rows as a rich table (instants in ``zone``), JSON or CSV (instants in UTC, ISO 8601)."""
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=_json_default))
        return
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    instants = frozenset(c for c in columns if any(isinstance(row.get(c), dt.datetime) for row in rows))
    table = _table(columns, zone, caption=bool(instants), instants=instants)
    table.title = title
    for row in rows:
        cells = []
        for column in columns:
            cell = _cell(row.get(column), zone)
            cells.append(cell[: ABBREVIATED[column]] if column in ABBREVIATED else cell)
        table.add_row(*cells)
    console.print(table)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _local(value: dt.datetime, zone: str) -> dt.datetime:
    from retention.clock import zone as tz

    if value.tzinfo is None:  # the engine stores UTC; some drivers hand it back naive
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC if zone == "UTC" else tz(zone))


def _cell(value: Any, zone: str = "UTC") -> str:
    """Table cells for people: instants in ``zone`` to the minute (a local midnight as its date)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        local = _local(value, zone)
        if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
            return local.strftime("%Y-%m-%d")
        return local.strftime("%Y-%m-%d %H:%M")
    return str(value)


def when(value: dt.datetime, zone: str) -> str:
    """An instant in a sentence: to the minute, with its zone's abbreviation (CET, CEST, UTC)."""
    return _local(value, zone).strftime("%Y-%m-%d %H:%M %Z")


def display_zone(rules: Path | None, pack_id: str | None, utc: bool) -> str:
    """The zone instants are shown in: the pack's, unless --utc or no single pack names one."""
    if utc or rules is None:
        return "UTC"
    from retention.policy import load_catalog

    zones = {p.pack.timezone for p in load_catalog(rules).packs if pack_id is None or p.id == pack_id}
    return zones.pop() if len(zones) == 1 else "UTC"


_add_log_options(main)

if __name__ == "__main__":  # pragma: no cover
    main()
