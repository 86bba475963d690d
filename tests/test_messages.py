"""Messages people read: one clean line each, never ``error: error:``, with the hint they need.

Every case below is a command that fails the way an operator's first try
does; each output is checked for the doubled prefix, for being one line,
and for its own sentence.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from test_engine import SECRET

from retention.cli import main
from retention.engine import execute
from retention.policy import load_file
from retention.subjects import events as subjects
from retention.web import server

PACK = """
pack: messages
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {{max_share: 1.0}}
datasets:
  events:
    table: events
    key: id
    subject_key: owner
    on_erasure: archived
    basis: 13 months
    keep:
      - clock: {{column: {clock}, type: {kind}}}
        period: P13M
    lifecycle:
      - to: archived
        action: archive
        columns: [id]
        then: delete
      - to: purged
        after: P1Y
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_clean_line(result: Result) -> str:
    assert "error: error:" not in result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def events(migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
    md = sa.MetaData()
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.Integer),
        sa.Column("created", sa.DateTime(timezone=True)),
    )
    md.create_all(migrated)
    with migrated.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO events (id, owner, created) VALUES (1, 7, :at)"), {"at": dt.datetime(2020, 1, 1)}
        )
    return migrated


def test_a_schema_mismatch_is_one_line_without_a_doubled_prefix(events: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """``run`` against a table without the pack's clock column: exit 2, "error:" once, one line."""
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK.format(clock="missing_column", kind="timestamptz"), encoding="utf-8")
    result = invoke("run", "--rules", str(pack), "--db", db_url)
    assert result.exit_code == 2
    line = one_clean_line(result)
    assert line.startswith("error: events.missing_column: ") and "(dataset events)" in line, line


def test_an_epoch_clock_on_a_datetime_column_reads_an_epoch(events: sa.Engine, db_url: str, tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK.format(clock="created", kind="epoch"), encoding="utf-8")
    result = invoke("check", "--rules", str(pack), "--db", db_url)
    assert result.exit_code == 2
    assert "which cannot hold an epoch clock" in result.output and "a epoch" not in result.output


def test_postgres_scheme_gets_a_hint() -> None:
    line = one_clean_line(invoke("db", "current", "--db", "postgres://app@127.0.0.1/shop"))
    assert line == (
        "error: database URL scheme postgres:// is not accepted (SQLAlchemy dropped that name); "
        "write postgresql:// instead"
    )


@pytest.mark.parametrize("url", ["postgresql://app@127.0.0.1:1/shop", "mysql://root@127.0.0.1:1/shop"])
def test_connection_refused_is_one_sentence(url: str) -> None:
    line = one_clean_line(invoke("db", "current", "--db", url))
    assert line == (
        f"error: cannot connect to {url}: connection refused "
        "(is the database server running, and listening on that host and port?)"
    )


def test_serve_with_a_missing_pack_fails_before_showing_its_url(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda *args: started.append(args))
    result = invoke("serve", "--db", db_url, "--rules", str(tmp_path / "missing.yaml"), "--tz", "UTC")
    assert result.exit_code == 2 and started == []
    assert "http://" not in result.output
    assert one_clean_line(result).startswith(f"error: {tmp_path / 'missing.yaml'}: no such file or folder")


def test_explain_after_an_erasure_gives_the_move_not_the_receipt(
    events: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Archived by an erasure request received 2026-03-02: "since" is the run that archived it (2026-03-10)."""
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK.format(clock="created", kind="timestamptz").replace("P13M", "P30Y"), encoding="utf-8")
    loaded = load_file(pack)
    with events.begin() as conn:
        subjects.add_request(conn, subject_key="7", received=dt.date(2026, 3, 2), pack=loaded.pack, secret=SECRET)
    run_at = dt.datetime(2026, 3, 10, 8, tzinfo=dt.UTC)
    assert execute.run(events, loaded, run_at, secret=SECRET).status == "succeeded"
    result = invoke("explain", "--rules", str(pack), "--db", db_url, "--dataset", "events", "--key", "1")
    assert result.exit_code == 0, result.output
    state = next(line for line in result.output.splitlines() if "state:" in line)
    assert state.startswith("  state: archived since 2026-03-10 09:00 CET (the run that moved it)"), state
    assert "due from 2026-03-02" in state


def test_no_raised_message_starts_with_its_own_error_prefix() -> None:
    """The CLI writes "error:" itself; a message that starts with it would read "error: error:"."""
    import ast

    offenders = []
    for path in sorted((Path(__file__).resolve().parent.parent / "retention").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")).endswith(
                "Error"
            ):
                for arg in node.args[:1]:
                    first = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else arg
                    if isinstance(first, ast.Constant) and str(first.value).lower().startswith("error"):
                        offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
