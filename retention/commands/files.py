"""Writing a file the operator named: an error of the file system is one line, and an export never lands half-done.

Why: ``--output`` can name a new file, an earlier export, a symlink, a FIFO a
reader waits on, ``/dev/stdout`` or a process substitution (``/dev/fd/63``).
Only the first two may be replaced by a rename; the others are written through,
or the data would go where the consumer never looks. A full disk or a
read-only mount was a traceback after the work; it is now one line, exit 2.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from retention.errors import ConfigError

T = TypeVar("T")

TEMPORARY_PREFIX = ".retention-export-"
TEMPORARY_SUFFIX = ".part"


def cannot_write(path: Path, exc: OSError) -> ConfigError:
    """The one line for ``exc`` met while writing ``path`` (the operator's own path, never data)."""
    return ConfigError(f"cannot write {path}: {exc.strerror or type(exc).__name__}")


def replaceable(path: Path) -> bool:
    """True when ``path`` is new, or a regular file that is not a symlink: a rename over it loses nothing.

    A symlink, a FIFO, a character device or ``/dev/fd/N`` is written through:
    a rename would replace the link or the FIFO by a regular file, and a reader
    at the other end would never get the data.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise cannot_write(path, exc) from None
    return stat.S_ISREG(mode)


def write_text(path: Path, text: str) -> None:
    """``path.write_text`` in place, with an error of the file system as one line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise cannot_write(path, exc) from None


def write_bytes(path: Path, data: bytes) -> None:
    """``path.write_bytes`` in place, with an error of the file system as one line."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise cannot_write(path, exc) from None


def write_whole(output: Path, write: Callable[[TextIO], T]) -> T:
    """Run ``write`` on ``output``: through a temporary file renamed over it once complete, when that is safe.

    Why: an export stopped midway (Ctrl-C, a lost connection) left a truncated
    file under the name the auditor asked for, over any earlier complete export.
    The temporary name has a fixed length (``.retention-export-XXXXXXXX.part``),
    so any name the folder takes can be written. A path that is not
    :func:`replaceable` is opened for writing, as before, and may be left
    partial by an interruption (a FIFO's reader sees the end of its stream).
    """
    if not replaceable(output):
        try:
            with output.open("w", encoding="utf-8", newline="") as out:
                return write(out)
        except OSError as exc:
            raise cannot_write(output, exc) from None
    try:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX)
    except OSError as exc:
        raise cannot_write(output, exc) from None
    temporary = Path(name)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide an export that open("w") left readable
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            result = write(out)
        temporary.replace(output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise cannot_write(output, exc) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return result
