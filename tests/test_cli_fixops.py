"""Output files written where the operator pointed them (branch fixops, after the review of opsaudit).

* ``ledger export --output`` renamed a temporary file over the path: a FIFO a
  reader waited on, a symlink or ``/dev/stdout`` became a regular file and the
  consumer never got the data. Only a new path or a regular file is replaced.
* The pre-write probe created a file in the path's folder: ``--output
  /dev/fd/63`` (a process substitution) was refused, as ``/dev/fd`` takes no new
  files. An existing path that is not a regular file is now checked as itself.
* The temporary name added 15 characters to the file's: a long valid name was a
  traceback; any error of the file system on an output is one line, exit 2.

Files only: no database difference is involved, so these run on SQLite.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from scaffold import one_line_refusal

from retention.cli import main
from retention.commands import files

ENV = {"RETENTION_PSEUDONYM_KEY": "fixops-key"}


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, env=ENV, prog_name="retention")


refused = one_line_refusal


@pytest.fixture
def ledger_db(tmp_path: Path) -> str:
    """A SQLite database whose ledger holds one entry (a hold placed)."""
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    for args in (["db", "upgrade", "--db", url], ["hold", "add", "--db", url, "--subject", "1", "--reason", "r"]):
        done = invoke(args)
        assert done.exit_code == 0, done.output
    return url


class Reader:
    """Reads a FIFO or a pipe to its end in a thread, as ``cat f.fifo | wc -l`` would."""

    def __init__(self, open_: object) -> None:
        self.data = b""
        self._open = open_
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self._open() as stream:  # type: ignore[operator]
            self.data = stream.read()

    def wait(self, unblock: Path | None = None) -> bytes:
        self._thread.join(timeout=20)
        if self._thread.is_alive() and unblock is not None:
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))  # no writer ever came: end the reader
            self._thread.join(timeout=5)
        assert not self._thread.is_alive()
        return self.data


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, Reader]]:
    path = tmp_path / "ledger.fifo"
    os.mkfifo(path)
    yield path, Reader(lambda: path.open("rb"))


def test_export_to_a_fifo_writes_through_to_its_reader(ledger_db: str, fifo: tuple[Path, Reader]) -> None:
    """The FIFO was renamed over (a regular file), its reader waited forever, and the export said it was written."""
    path, reader = fifo
    done = invoke(["ledger", "export", "--db", ledger_db, "--format", "csv", "--output", str(path)])
    assert done.exit_code == 0, done.output
    data = reader.wait(unblock=path)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert b"hold_placed" in data and len(data.splitlines()) == 2  # header and the one entry


def test_export_through_a_symlink_writes_its_target(ledger_db: str, tmp_path: Path) -> None:
    """The link became a regular file and its target kept the old content."""
    target = tmp_path / "real.csv"
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    done = invoke(["ledger", "export", "--db", ledger_db, "--format", "csv", "--output", str(link)])
    assert done.exit_code == 0, done.output
    assert link.is_symlink() and link.readlink() == target
    assert "hold_placed" in target.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_only_a_new_path_or_a_regular_file_is_replaced(tmp_path: Path) -> None:
    regular = tmp_path / "r.csv"
    regular.write_text("", encoding="utf-8")
    (tmp_path / "link").symlink_to(regular)
    assert files.replaceable(tmp_path / "new.csv")
    assert files.replaceable(regular)
    assert not files.replaceable(tmp_path / "link")
    assert not files.replaceable(Path("/dev/null"))


@pytest.mark.parametrize("command", [["ledger", "export", "--format", "csv"], ["ledger", "checkpoint"]], ids=" ".join)
def test_a_process_substitution_is_written_to(ledger_db: str, tmp_path: Path, command: list[str]) -> None:
    """``--output >(wc -l)`` (``/dev/fd/63``) was refused: the probe created a file in ``/dev/fd``, which takes none."""
    key = tmp_path / "signing.pem"
    assert invoke(["ledger", "keygen", "--key", str(key)]).exit_code == 0
    read_end, write_end = os.pipe()
    reader = Reader(lambda: os.fdopen(read_end, "rb"))
    try:
        extra = ["--key", str(key)] if command[1] == "checkpoint" else []
        done = invoke([*command, "--db", ledger_db, *extra, "--output", f"/dev/fd/{write_end}"])
    finally:
        os.close(write_end)
    assert done.exit_code == 0, done.output
    data = reader.wait()
    assert (b"hold_placed" if command[1] == "export" else b'"seq": 1') in data


def test_a_fifo_is_checked_without_ending_its_readers_stream(ledger_db: str, fifo: tuple[Path, Reader]) -> None:
    """A probe that opened and closed the FIFO would hand its reader an empty stream before the real write."""
    path, reader = fifo
    key = path.parent / "signing.pem"
    assert invoke(["ledger", "keygen", "--key", str(key)]).exit_code == 0
    done = invoke(["ledger", "checkpoint", "--db", ledger_db, "--key", str(key), "--output", str(path)])
    assert done.exit_code == 0, done.output
    assert b'"seq": 1' in reader.wait(unblock=path)


def test_a_path_that_cannot_be_opened_for_writing_is_refused_before_the_work(tmp_path: Path) -> None:
    """An existing path that is not a regular file is opened for writing (no truncation) to check it: a socket
    passed the folder probe, the private key was written, then the public half was a traceback."""
    import socket

    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        line = refused(invoke(["ledger", "keygen", "--key", str(tmp_path / "k.pem"), "--public", str(sock_path)]))
    assert line == (
        f"error: Invalid value for '--public': {sock_path} cannot be written (No such device or address) "
        "(see 'retention ledger keygen --help')"
    )
    assert not (tmp_path / "k.pem").exists()


LONG_NAME = "x" * 245 + ".csv"  # 249 characters: a valid name, but not with 15 more around it


def test_export_to_a_long_valid_name_is_written(ledger_db: str, tmp_path: Path) -> None:
    """The temporary name added 15 characters: a traceback (File name too long), exit 1."""
    target = tmp_path / LONG_NAME
    done = invoke(["ledger", "export", "--db", ledger_db, "--format", "csv", "--output", str(target)])
    assert done.exit_code == 0, done.output
    assert "hold_placed" in target.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_archive_key_file_with_a_long_valid_name_is_one_line(tmp_path: Path) -> None:
    """Its temporary ``NAME.tmp`` was too long: a traceback, exit 1."""
    target = tmp_path / ("k" * 253)
    line = refused(invoke(["archive", "keygen", "--key-file", str(target)]))
    assert line == f"error: cannot write {target}: File name too long"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


FULL = "/dev/full"  # a character device whose every write fails: ENOSPC, as on a full disk


@pytest.mark.parametrize(
    "command",
    [
        ["ledger", "export", "--format", "csv", "--db", "{db}", "--output", FULL],
        ["ledger", "checkpoint", "--db", "{db}", "--key", "{key}", "--output", FULL],
        ["ledger", "keygen", "--key", "{dir}/new.pem", "--public", FULL],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_write_that_fails_is_one_line(ledger_db: str, tmp_path: Path, command: list[str]) -> None:
    """A full disk (or any error of the file system) on the output was a traceback after the work, exit 1."""
    if not Path(FULL).exists():
        pytest.skip("no /dev/full here")
    key = tmp_path / "signing.pem"
    assert invoke(["ledger", "keygen", "--key", str(key)]).exit_code == 0
    args = [a.format(db=ledger_db, key=key, dir=tmp_path) for a in command]
    assert refused(invoke(args)) == f"error: cannot write {FULL}: No space left on device"
    assert Path(FULL).is_char_device()
    assert not (tmp_path / "new.pem").exists()  # no private key without its public half


# --------------------------------------------------------------------------
# An option that takes one value, given twice: the last one won silently
# --------------------------------------------------------------------------

REPEATED = [
    (
        [
            "erasure",
            "add",
            "--rules",
            "builtin:marketplace",
            "--subject",
            "1",
            "--subject",
            "2",
            "--received",
            "2026-01-01",
        ],
        "--subject",
        "retention erasure add",
    ),
    (["ledger", "export", "--format", "csv", "--format", "jsonl"], "--format", "retention ledger export"),
    (["--tz", "UTC", "--tz", "Europe/Paris", "status"], "--tz", "retention"),
]


@pytest.mark.parametrize(("args", "option", "where"), REPEATED, ids=[r[1] for r in REPEATED])
def test_an_option_taking_one_value_given_twice_is_refused(
    tmp_path: Path, args: list[str], option: str, where: str
) -> None:
    """``erasure add --subject 1 --subject 2`` filed a request for subject 2 alone, exit 0."""
    db = ["--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"] if args[0] != "fleet" else []
    line = refused(invoke([*args, *db]))
    assert line == f"error: {option} is given more than once; it takes one value (give it once) (see '{where} --help')"
    assert not (tmp_path / "absent.sqlite").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--help", "--tz", "UTC", "--tz", "UTC"],
        ["--version", "--tz", "UTC", "--tz", "UTC"],
        ["--traceback", "--traceback", "--version"],
    ],
    ids=["help", "version", "plain-flag"],
)
def test_help_version_and_a_plain_flag_twice_are_not_refused(args: list[str]) -> None:
    """--help and --version answer whatever else the line holds; a flag with no 'off' twice says one thing."""
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "more than once" not in result.output


def test_a_plain_flag_twice_runs_the_command(tmp_path: Path) -> None:
    result = invoke(["fleet", "run", str(tmp_path / "absent.yaml"), "--json", "--json"])
    assert "more than once" not in result.output


def test_an_option_that_collects_may_repeat(tmp_path: Path) -> None:
    args = ["partitions", "status", "--rules", "builtin:marketplace", "--dataset", "orders", "--dataset", "customers"]
    result = invoke([*args, "--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"])
    assert "more than once" not in result.output
