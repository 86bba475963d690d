"""Click parameter types shared by the commands: hostile input stops here with one line and exit 2.

Each type turns command-line text into a checked value (an :class:`AsOf`, a
:class:`Period`, a bounded identifier, a path that can be written), so the
library never parses CLI text and a value the engine cannot store or compute
with is refused before any database is opened. Every failure is one line,
``error: Invalid value for '--as-of': ...``, like the engine's own errors.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import stat
import sys
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from retention.errors import ConfigError
from retention.timing.clock import EARLIEST_DAY, LATEST_DAY, AsOf, Period, PeriodSyntaxError, iana_zone

_CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]")


class OneLineUsageError(click.UsageError):
    """A usage error shown as one ``error:`` line (no usage block), exit 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"error: {self.format_message()}{hint}", file=file or sys.stderr)


def one_line(exc: click.UsageError) -> OneLineUsageError:
    """The same error, shown as one line."""
    if isinstance(exc, OneLineUsageError):
        return exc
    return OneLineUsageError(_from_environment(exc) or exc.format_message(), exc.ctx)


def _from_environment(exc: click.UsageError) -> str | None:
    """A bad value read from a ``RETENTION_*`` variable, said as that variable's (None when it was typed).

    Why: ``RETENTION_LOCK_TIMEOUT=junk`` was refused as "Invalid value for
    '--lock-timeout'", naming a flag the operator never typed; the variable
    is set in a unit file or a crontab, which is where they must look.
    """
    if not isinstance(exc, click.BadParameter) or exc.param_hint is not None or exc.ctx is None:
        return None
    param = exc.param
    if param is None or param.name is None:
        return None
    if exc.ctx.get_parameter_source(param.name) is not click.core.ParameterSource.ENVIRONMENT:
        return None
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    name = next((n for n in names if os.environ.get(n)), None)  # the one click read: the first one set
    if name is None:
        return None
    return f"Invalid value for {name} (from the environment): {exc.message}"


def refuse_repeated(command: click.Command, ctx: click.Context, args: list[str]) -> None:
    """Refuse an option that takes one value given twice (``erasure add --subject 1 --subject 2``).

    Why: click kept the last one silently, so a request was filed for subject 2 while the line also named
    subject 1, and ``--json --no-json`` was whichever came last. Options that collect (``multiple``, counts)
    and eager ones (``--help``) may repeat. The values are not repeated in the message: they can be
    personal data. Parsing errors are left to click's own parse, which follows.
    """
    if ctx.resilient_parsing or not args:
        return
    try:
        _, _, order = command.make_parser(ctx).parse_args(args=list(args))  # a copy: the parser consumes it
    except click.UsageError:
        return
    if any(isinstance(param, click.Option) and param.is_eager for param in order):
        return  # --help and --version answer whatever else the line holds
    seen: set[click.Parameter] = set()
    for param in order:
        if not isinstance(param, click.Option) or param.multiple or param.count:
            continue
        if param in seen:
            if param.is_flag and not param.secondary_opts:
                continue  # a plain flag twice says the same thing twice
            names = "/".join(param.opts + param.secondary_opts)
            what = "it is on or off" if param.is_flag else "it takes one value"
            raise OneLineUsageError(f"{names} is given more than once; {what} (give it once)", ctx)
        seen.add(param)


class OneLineGroup(click.Group):
    """A group whose usage errors, its subcommands' included, are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        refuse_repeated(self, ctx, args)
        return super().parse_args(ctx, args)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from None


class _Type(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        raise click.BadParameter(message, ctx=ctx, param=param)


class AsOfType(_Type):
    """``YYYY-MM-DD`` or ISO 8601 date and time, between 1900-01-01 and 8998-12-31."""

    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> AsOf:
        if isinstance(value, AsOf):
            return value
        try:
            return AsOf.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DayType(_Type):
    """A calendar date ``YYYY-MM-DD`` between 1900-01-01 and 8998-12-31."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            parsed = AsOf.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if parsed.day is None:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)
        return parsed.day


class PeriodType(_Type):
    """An ISO 8601 calendar period, not empty, no longer than ``longest``."""

    name = "period"

    def __init__(self, longest: Period) -> None:
        self.longest = longest

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Period:
        if isinstance(value, Period):
            return value
        try:
            period = Period.parse(str(value))
        except PeriodSyntaxError as exc:
            self.fail(str(exc), param, ctx)
        if period == Period():
            # A zero horizon forecast nothing ("0 more over 0 weeks") and looked like a quiet half year.
            self.fail(f"{value} is empty; give at least P1D", param, ctx)
        if not period.within(self.longest):
            self.fail(f"{value} is longer than {self.longest}, the longest this option accepts", param, ctx)
        return period


class TextType(_Type):
    """Text for a bounded column: non-empty, at most ``max_length`` characters, no control characters.

    Subject ids and record keys live in 191-character columns (the longest
    MySQL can index in utf8mb4); a longer one would fail inside the database.
    """

    name = "text"

    def __init__(self, max_length: int, what: str = "text") -> None:
        self.max_length = max_length
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text.strip():
            self.fail(f"the {self.what} is empty", param, ctx)
        if len(text) > self.max_length:
            self.fail(f"the {self.what} has {len(text)} characters; at most {self.max_length}", param, ctx)
        bad = _CONTROL.search(text)
        if bad is not None:
            self.fail(f"the {self.what} contains the control character U+{ord(bad.group()):04X}", param, ctx)
        return text


class ZoneType(_Type):
    """An IANA zone name (``localtime`` and paths would depend on the machine), for a schedule."""

    name = "zone"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return iana_zone(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class CronType(_Type):
    """A cron expression: 5 crontab fields, or 6 with seconds first.

    Checked when the command starts: ``serve --schedule junk`` (or
    RETENTION_SCHEDULE=junk) started and its home page failed later.
    """

    name = "cron"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from retention.ops.scheduler import trigger_for  # APScheduler: loaded by the two commands that take one

        try:
            trigger_for(str(value), "UTC")  # the fields do not depend on the zone
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class LogLevelType(_Type):
    """One of the standard level names, any case."""

    name = "level"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        level = str(value).lower()
        if level not in LOG_LEVELS or level.upper() not in logging.getLevelNamesMapping():
            self.fail(f"{value!r} is not a log level; valid: {', '.join(LOG_LEVELS)}", param, ctx)
        return level


class OutputFile(_Type):
    """A file to write: not a folder, in a folder that exists (or will be created) and can be written."""

    name = "file"

    def __init__(self, create_folders: bool = False, probe: bool = False) -> None:
        self.create_folders = create_folders
        self.probe = probe

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        if not str(value).strip():
            self.fail("no file name given", param, ctx)
        try:
            existing = path.stat().st_mode if path.exists() else None
        except OSError as exc:  # a name too long, a loop of links
            self.fail(f"{path} cannot be written ({exc.strerror or type(exc).__name__})", param, ctx)
        if existing is not None and stat.S_ISDIR(existing):
            self.fail(f"{path} is a folder; give a file name", param, ctx)
        if existing is not None and (not stat.S_ISREG(existing) or path.is_symlink()):
            # A FIFO, a device, /dev/fd/N (a process substitution), a link (/dev/stdout): written through, never
            # created in its folder
            self._try_opening(path, existing, param, ctx)
            return path
        folder = path.parent
        if self.create_folders:
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
        if folder.exists() and not folder.is_dir():
            self.fail(f"{folder} is a file, not a folder", param, ctx)
        if not folder.is_dir():
            self.fail(f"the folder {folder} does not exist", param, ctx)
        if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            self.fail(f"{path} cannot be written (permission denied)", param, ctx)
        if self.probe:
            self._try_writing(folder, path, param, ctx)
        return path

    def _try_opening(self, path: Path, mode: int, param: click.Parameter | None, ctx: click.Context | None) -> None:
        """Check an existing path that is not a regular file by opening it for writing, as the writer will.

        Its folder is not asked: ``/dev/fd`` takes no new file, yet ``--output
        >(gzip > f.gz)`` (``/dev/fd/63``) is how a file-only option is piped.
        A FIFO is not opened: a probe that opened and closed it would end the
        stream of a reader already waiting (it would read an empty file), and
        one without a reader yet cannot be opened without blocking (ENXIO)
        though the writer's own open will wait for it. Its permission bits are
        all that can be asked without touching the stream.
        """
        if stat.S_ISFIFO(mode):
            if not os.access(path, os.W_OK):
                self.fail(f"{path} cannot be written (permission denied)", param, ctx)
            return
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY))  # no O_TRUNC, no O_CREAT
        except OSError as exc:
            self.fail(f"{path} cannot be written ({exc.strerror or type(exc).__name__})", param, ctx)

    def _try_writing(self, folder: Path, path: Path, param: click.Parameter | None, ctx: click.Context | None) -> None:
        """Create and remove a file beside ``path``, as the writer will, before any work is done.

        ``os.access`` asks the permission bits, which root passes everywhere: a
        folder of ``/proc`` or a read-only mount answers yes and then refuses
        the file once the run has committed. A real file is the only honest
        test; it is written where the metrics' own temporary file will be.
        """
        import tempfile

        _sweep_probes(folder)
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=PROBE_PREFIX, delete=True):
                pass
        except OSError as exc:
            # ENOENT for an existing folder (/proc): the folder takes no new files, which is what to say
            reason = f"{folder} takes no new files" if exc.errno == errno.ENOENT else exc.strerror
            self.fail(f"{path} cannot be written ({reason or type(exc).__name__})", param, ctx)


PROBE_PREFIX = ".retention-probe-"
PROBE_STALE_SECONDS = 60.0


def _sweep_probes(folder: Path) -> None:
    """Remove probe files a killed command left behind: empty, named as a probe, older than a minute.

    Why: a command killed (SIGKILL, OOM, power) between creating its probe
    and removing it leaves an empty ``.retention-probe-*`` file for good, one
    more each time; in a metrics folder read by node_exporter they pile up
    unseen. A probe lives for microseconds and is never written to, so an
    empty one older than a minute is no running command's: removing it
    cannot race another probe. A file that is not empty, not a regular file
    (a symlink) or not ours to remove is left as it is, silently: the sweep
    is housekeeping, the probe that follows is the check.
    """
    import time

    cutoff = time.time() - PROBE_STALE_SECONDS
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(PROBE_PREFIX):
                    _remove_stale_probe(entry, cutoff)
    except OSError:  # a folder that cannot be listed: the probe that follows says what matters
        return


def _remove_stale_probe(entry: os.DirEntry[str], cutoff: float) -> None:
    """Remove one probe file when it is a stale one (see :func:`_sweep_probes`)."""
    try:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_size == 0 and info.st_mtime < cutoff:
            Path(entry.path).unlink()
    except OSError:  # gone meanwhile (another command's sweep), or not ours to remove
        return


class InputFile(_Type):
    """A regular file that exists and can be read."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        if not path.exists():
            self.fail(f"{path} does not exist", param, ctx)
        if not path.is_file():
            self.fail(f"{path} is not a regular file", param, ctx)
        if not os.access(path, os.R_OK):
            self.fail(f"{path} cannot be read (permission denied)", param, ctx)
        return path


class RunGroupType(_Type):
    """A run group's name: 1 to 100 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.

    The name is stored (``retention_runs.run_group``), hashed into the group's
    run id, matched by ``run-groups --run-group``, shown in logs, the console
    and the summary, and a Kubernetes Job name (the sharded CronJob's
    ``RETENTION_RUN_GROUP``) or ``night-2026-11-26`` fits it. Anything else
    (spaces, quotes, slashes, ``!``) would be a second spelling of a group or
    break a label or a shell line, so it is refused before the run starts.
    """

    name = "run group"
    _FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if self._FORM.fullmatch(text) is None:
            self.fail(
                f"{_shown(text)} is not a run group name: 1 to 100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
                param,
                ctx,
            )
        return text


def _shown(text: str) -> str:
    """``text`` quoted for an error line: control characters escaped, at most 40 characters."""
    short = text if len(text) <= 40 else text[:40] + "…"
    return repr(short)


class ShardType(_Type):
    """``I/N``: shard I (0 to N - 1) of N."""

    name = "shard"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from retention.engine.shards import ShardSpec, parse_shard
        from retention.errors import ConfigError

        if isinstance(value, ShardSpec):
            return value
        try:
            return parse_shard(str(value))
        except ConfigError as exc:
            self.fail(str(exc).removeprefix(f"--shard {str(value)!r}: "), param, ctx)


AS_OF = AsOfType()
SHARD = ShardType()
DAY = DayType()
SUBJECT_ID = TextType(191, "subject id")
EMAIL = TextType(320, "e-mail address")
RECORD_KEY = TextType(191, "record key")
NAME = TextType(100, "name")
REASON = TextType(2000, "text")
TRANSITION = TextType(40, "transition")
"""A ledger transition filter: ``retention_ledger.transition`` holds 40 characters; a longer one matches nothing."""
RUN_ID = TextType(36, "run id")
"""A run id (a UUID) or the start of one."""
LOG_LEVEL = LogLevelType()
OUTPUT_FILE = OutputFile(probe=True)
"""Every file a command writes (an export, a checkpoint, a proof, a key, a report) is probed before the work: a
folder that takes no new files (``/proc``, a read-only mount, which ``os.access`` passes for root) was a traceback
once the checkpoint had been signed or the export read."""
METRICS_FILE = OutputFile(create_folders=True, probe=True)
RUN_GROUP = RunGroupType()
RUN_GROUP_FILTER = TextType(191, "run group")
"""A group name to select (``run-groups --run-group``): any stored name, new-form or not; bounded, one line."""
INPUT_FILE = InputFile()
ZONE = ZoneType()
CRON = CronType()
ROW_ID = click.IntRange(1, 2**31 - 1)
"""Ids of holds, erasure requests and review batches (32-bit integer columns)."""

__all__ = [
    "AS_OF",
    "CRON",
    "DAY",
    "EARLIEST_DAY",
    "EMAIL",
    "INPUT_FILE",
    "LATEST_DAY",
    "LOG_LEVEL",
    "METRICS_FILE",
    "NAME",
    "OUTPUT_FILE",
    "REASON",
    "RECORD_KEY",
    "ROW_ID",
    "RUN_GROUP",
    "RUN_GROUP_FILTER",
    "RUN_ID",
    "SUBJECT_ID",
    "TRANSITION",
    "ZONE",
    "OneLineGroup",
    "PeriodType",
    "refuse_repeated",
]
