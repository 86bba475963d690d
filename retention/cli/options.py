"""What every command shares: exit codes, log options, the common options, and how errors end a command.

Only the command line exits: :func:`handled` turns a :class:`RetentionError` into its message and
documented exit code, so that no command callback catches errors on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from retention import logs
from retention.cli import params
from retention.cli.output import display_zone, err_console
from retention.errors import ConfigError, RetentionError, describe_database_error, is_database_error
from retention.timing import display

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3
EXIT_GUARD = 4
EXIT_LOCKED = 5
EXIT_LEDGER = 6

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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        params.refuse_repeated(self, ctx, args)
        return super().parse_args(ctx, args)


class RetentionGroup(params.OneLineGroup):
    """Groups whose commands are :class:`RetentionCommand` and whose subgroups are alike."""

    command_class = RetentionCommand
    group_class = type


def _asked() -> str | None:
    """``--tz`` as given (before or after the command), or None."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().meta.get("retention.tz") if ctx is not None else None


def log_settings() -> dict[str, str]:
    """The log format and level in force: the root options, overridden after the subcommand."""
    root = click.get_current_context().find_root()
    settings: dict[str, str] = root.meta.setdefault("retention.logs", {"format": "auto", "level": "info"})
    return settings


def configure_logs(quiet: frozenset[str] = frozenset()) -> None:
    settings = log_settings()
    fmt = settings["format"]
    logs.configure(json=None if fmt == "auto" else fmt == "json", level=settings["level"], quiet=quiet)


def json_logs() -> bool:
    """True when logs are JSON lines (asked for, or stderr is not a terminal)."""
    fmt = log_settings()["format"]
    return logs.uses_json(None if fmt == "auto" else fmt == "json")


def machine_only() -> bool:
    """True with ``--log-format json``: the output is then JSON lines and nothing else."""
    return log_settings()["format"] == "json"


def _set_log_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--log-format``/``--log-level`` given after the subcommand override the ones before it."""
    if value is None or ctx.resilient_parsing:
        return
    log_settings()["format" if param.name == "log_format" else "level"] = value.lower()
    configure_logs()


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


def set_tz_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--tz`` before or after the subcommand: the zone every table and sentence shows instants in."""
    if value is None or ctx.resilient_parsing:
        return
    try:
        ctx.find_root().meta["retention.tz"] = display.checked(value, "--tz")
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--tz: "), ctx=ctx, param=param) from None


TZ_HELP = "Show dates and times in this IANA zone (or RETENTION_TZ, TZ); default the pack's timezone."


def _tz_option() -> click.Option:
    return click.Option(
        ["--tz"], default=None, metavar="ZONE", expose_value=False, callback=set_tz_option, help=TZ_HELP
    )


def add_log_options(command: click.Command) -> None:
    """Every leaf command accepts the log options (and --tz) after its name, as cron lines tend to put them."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_log_options(sub)
    else:
        command.params.extend([*_log_options(), _tz_option()])


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
        "--pack",
        "pack_id",
        default=None,
        help="Pack whose timezone to use, when --rules holds several (needs --rules).",
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
        with _display_zone_logged(kwargs, after_pack=getattr(func, ZONE_AFTER_PACK, False)):
            return handle(*args, **kwargs)

    def handle(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            display.chosen(ctx.find_root().meta.get("retention.tz"))  # a zone that cannot be used: refused first
            refuse_two_zones(ctx, kwargs)
            refuse_pack_without_rules(kwargs)
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


def refuse_two_zones(ctx: click.Context, kwargs: dict[str, Any]) -> None:
    """Refuse ``--utc`` together with ``--tz`` (before or after the command): exit 2, before anything is read.

    Why: ``--utc`` used to win silently, so ``plan --tz Europe/Paris --utc``
    printed UTC times to someone who had asked for Paris ones; nothing is
    accepted that cannot take effect. ``RETENTION_TZ`` and ``TZ`` are set
    for every job of a host: ``--utc`` typed on one command still overrides them.
    """
    if kwargs.get("utc") and ctx.find_root().meta.get("retention.tz") is not None:
        raise ConfigError("--utc and --tz name two zones: give one")


def refuse_pack_without_rules(kwargs: dict[str, Any]) -> None:
    """Refuse ``--pack`` on a command whose ``--rules`` is optional and was not given (nor RETENTION_RULES).

    Why: ``hold list --pack shop`` (or ``status``, ``ledger show``, ``erasure list``) showed UTC with exit 0:
    the pack was never read, so the timezone or calendar it was typed for did not apply.
    """
    if kwargs.get("pack_id") is not None and "rules" in kwargs and kwargs["rules"] is None:
        raise ConfigError("--pack needs --rules (or RETENTION_RULES): it picks one of the packs found there")


ZONE_AFTER_PACK = "retention_zone_after_pack"


def zone_after_pack(func: F) -> F:
    """A command that names the display zone in its logs itself, once it has read its pack (:func:`bind_zone`).

    ``run`` reads its pack only once it holds the lock (a refused run reads
    nothing); reading it here first, for the logs' zone, cost a refused run
    a pack load and a read run a second one.
    """
    setattr(func, ZONE_AFTER_PACK, True)
    return func


def bind_zone(catalog: Any, pack_id: str | None) -> None:
    """Name the display zone of a :func:`zone_after_pack` command in its logs, from the catalog it has read."""
    import structlog

    from retention.cli.output import catalog_zone

    if display.chosen(_asked()) is not None:
        return  # bound already: a zone asked for wins over the pack's
    structlog.contextvars.bind_contextvars(display_tz=catalog_zone(catalog, pack_id))


@contextmanager
def _display_zone_logged(kwargs: dict[str, Any], after_pack: bool = False) -> Iterator[None]:
    """Every log line of the command names the display zone (``display_tz``); timestamps stay UTC.

    A pack or zone that cannot be read is left for the command itself to report.
    ``after_pack``: only a zone asked for (--tz, --utc, RETENTION_TZ, TZ) is
    bound here; the pack's is bound by the command once it has read it.
    """
    import structlog

    rules = kwargs.get("rules")
    if after_pack:
        try:
            zone = display_zone(None, None, bool(kwargs.get("utc"))) if display.chosen(_asked()) else None
        except RetentionError:
            zone = None
        try:
            if zone is None:
                yield
            else:
                with structlog.contextvars.bound_contextvars(display_tz=zone):
                    yield
        finally:
            structlog.contextvars.unbind_contextvars("display_tz")
        return
    try:
        zone = display_zone(rules if isinstance(rules, Path) else None, kwargs.get("pack_id"), bool(kwargs.get("utc")))
    except RetentionError:
        zone = None
    if zone is None:
        yield
        return
    with structlog.contextvars.bound_contextvars(display_tz=zone):
        yield


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


_CELERY_ONLY = ("queue", "broker", "result_backend", "timeout")


def refuse_ignored_dispatch(via: str, units: str | None) -> None:
    """Refuse a dispatch option typed on the command line that the chosen mode ignores (exit 2).

    Why: ``run --parallel 8`` without ``--shards``, ``--queue`` or
    ``--timeout`` without ``--via celery``, ``--parallel`` with it, were
    accepted and did nothing, so an operator believed a setting was in force
    that was not. ``units`` is the option that makes units (``--shards N``),
    None when the command runs one. Values from the environment (a broker
    URL set for every job) are left alone.
    """
    ctx = click.get_current_context()

    def typed(name: str) -> str | None:
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            return None
        return next(p.opts[0] for p in ctx.command.params if p.name == name)

    if units is None:
        for name in ("parallel", *_CELERY_ONLY):
            if flag := typed(name):
                raise ConfigError(f"{flag} applies only with --shards N; a whole run or one --shard runs here, alone")
        return
    ignored = ("parallel",) if via == "celery" else _CELERY_ONLY
    for name in ignored:
        if flag := typed(name):
            mode = (
                "--via local (Celery workers run as many as their --concurrency)"
                if via == "celery"
                else ("--via celery")
            )
            raise ConfigError(f"{flag} applies only with {mode}")


def actor() -> str:
    import getpass

    return getpass.getuser()


def command(name: str | None = None, **attrs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """A command of this CLI: its usage line names its required options (:class:`RetentionCommand`)."""
    return click.command(name, cls=RetentionCommand, **attrs)


def group(name: str | None = None, **attrs: Any) -> Callable[[Callable[..., Any]], click.Group]:
    """A group of commands whose usage errors are one line and whose commands are :class:`RetentionCommand`."""
    return click.group(name, cls=RetentionGroup, **attrs)
