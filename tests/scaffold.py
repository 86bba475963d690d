"""Set-up the tests share: the events pack, the events table, packs from YAML, a terminal for the CLI.

Many tests purge a table ``events`` a year after its ``collected`` column
and then look at the ledger; they differ in the pack's name, its batch size
and whether the events name a subject. Written once here, so that a change
to the pack language or the table is made in one place.
"""

from __future__ import annotations

import datetime as dt
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from retention.policy import LoadedPack, validate_pack

ROOT = Path(__file__).resolve().parent.parent


def events_pack(name: str, *, batch_size: int | None = None, subject: bool = False, more: str = "") -> str:
    """A pack whose dataset ``events`` (key ``id``) is purged a year after ``collected``.

    ``subject``: the events name their person (``subject_key: user_id``);
    ``more``: further datasets, as YAML lines indented under ``datasets:``.
    """
    batch = f"batch_size: {batch_size}\n" if batch_size is not None else ""
    subject_key = "    subject_key: user_id\n" if subject else ""
    return (
        f'\npack: {name}\nversion: "1"\neffective_from: 2020-01-01\ntimezone: UTC\nguard: {{max_share: 1.0}}\n'
        f"{batch}datasets:\n  events:\n    table: events\n    key: id\n{subject_key}    basis: one year\n"
        "    keep:\n      - clock: {column: collected, type: timestamp}\n        period: P1Y\n"
        "    lifecycle:\n      - to: purged\n        action: delete\n" + more
    )


def ledger_env(secret: str) -> dict[str, str]:
    """The CLI's environment for the ledger tests: this pseudonym key, and no other key, checkpoint or database
    from the machine's own environment, which would change what the commands sign, check or open."""
    return {
        "RETENTION_PSEUDONYM_KEY": secret,
        "RETENTION_PSEUDONYM_KEY_FILE": "",
        "RETENTION_SIGNING_KEY_FILE": "",
        "RETENTION_CHECKPOINT_PUBLIC_KEY": "",
        "RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": "",
        "RETENTION_DATABASE_URL": "",
    }


def loaded_pack(text: str) -> LoadedPack:
    """A pack from its YAML text, validated as the CLI would (the text is the one its digest is taken of)."""
    return validate_pack(yaml.safe_load(text), Path("<test>"), text)


def utc_pack(name: str, datasets: str) -> str:
    """A pack's text: ``datasets`` (YAML, indented by two) under the header most tests share (UTC, no guard)."""
    return f'pack: {name}\nversion: "1"\neffective_from: 2020-01-01\ntimezone: UTC\nguard: {{max_share: 1.0}}\n' + (
        f"datasets:\n{datasets}"
    )


def yearly_dataset(
    name: str, table: str, basis: str, *, subject_key: str | None = None, period: str = "P1Y", more: str = ""
) -> str:
    """A dataset's YAML, indented under ``datasets:``: keyed by ``id``, purged ``period`` after ``collected``.

    ``more``: lines between ``basis`` and ``keep`` (``follows``, ``on_erasure``, ``review``), each indented by
    four and ending in a newline.
    """
    subject = f"    subject_key: {subject_key}\n" if subject_key else ""
    return (
        f"  {name}:\n    table: {table}\n    key: id\n{subject}    basis: {basis}\n{more}"
        f"    keep:\n      - clock: {{column: collected, type: timestamptz}}\n        period: {period}\n"
        "    lifecycle:\n      - to: purged\n        action: delete\n"
    )


def make_events(
    engine: sa.Engine,
    ids: Iterable[int],
    *,
    subject: bool = True,
    collected: Callable[[int], dt.datetime] = lambda i: dt.datetime(2020, 3, 1) + dt.timedelta(i),
) -> sa.Table:
    """The table ``events`` (``id``, ``user_id`` = id % 5 when ``subject``, ``collected``) with rows ``ids``."""
    md = sa.MetaData()
    columns = [sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)]
    if subject:
        columns.append(sa.Column("user_id", sa.Integer))
    columns.append(sa.Column("collected", sa.DateTime))
    events = sa.Table("events", md, *columns)
    md.create_all(engine)
    rows = [{"id": i, "collected": collected(i), **({"user_id": i % 5} if subject else {})} for i in ids]
    with engine.begin() as conn:
        conn.execute(events.insert(), rows)
    return events


def on_a_pty(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run ``retention ARGS`` with stdout and stderr on a terminal (the progress bars' path): (exit code, output)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "retention.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=ROOT,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    code = process.wait(timeout=30)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def count_batches(monkeypatch: pytest.MonkeyPatch, set_based: Any) -> list[int]:
    """The rows each set-based batch of ``set_based`` (SetPurge, SetArchive) moved, 0 for the last, empty one.

    The set-based paths fall back to the per-record one silently (a log
    line, the same outcome), so a test that means the set-based path counts
    its batches to know it ran.
    """
    batches: list[int] = []
    original = set_based.batch

    def counted(self: Any, conn: sa.Connection, after: Any) -> Any:
        done = original(self, conn, after)
        batches.append(0 if done is None else done[0].moved)
        return done

    monkeypatch.setattr(set_based, "batch", counted)
    return batches


def one_line_refusal(result: Any) -> str:
    """The one line of a CLI refusal (a click ``Result``): exit 2, no traceback, nothing else printed."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return lines[0]
