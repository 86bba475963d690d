"""Three settings that were taken on trust (branch cli3): each is now checked, or its failure is one line.

* ``RETENTION_CHECKPOINT_PUBLIC_KEY`` is documented as the PEM text, and
  ``ledger verify`` reads it so; ``serve`` read it as a file path, so the
  documented value stopped the console. Both now accept the PEM text or a
  path (what ``serve`` deployments already pass), ``serve`` also reads
  ``RETENTION_CHECKPOINT_PUBLIC_KEY_FILE``, and a value that is neither is one
  line that never repeats it.
* A metrics file that cannot be written (``/proc/x.prom``: root passes every
  permission check) ended a run in a traceback. It is refused before the run
  (exit 2); if writing fails after the run committed, the work stands and the
  run says so in one line, exit 3 (partial: applied, one output missing).
* ``--run-group``/``RETENTION_RUN_GROUP`` took any text and stored it; the form
  is now letters, digits, ``.``, ``_``, ``-`` (a Kubernetes Job name fits).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from retention.cli import main, params
from retention.ledger import chain as ledger

KEY = {
    "RETENTION_PSEUDONYM_KEY": "cli-settings",
    "RETENTION_CHECKPOINT_PUBLIC_KEY": "",
    "RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": "",
    "RETENTION_METRICS_FILE": "",
    "RETENTION_RUN_GROUP": "",
}
PACK = """
pack: shop
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  subscribers:
    table: subscribers
    key: id
    basis: Newsletter
    keep:
      - clock: {column: subscribed_at, type: timestamp}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, args, env={**KEY, **(env or {})}, prog_name="retention")
    return result.exit_code, result.output.splitlines()


# --------------------------------------------------------------------------
# 1. The checkpoint public key: PEM text or a file, for serve as for ledger verify
# --------------------------------------------------------------------------


def _public_pem() -> bytes:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``serve`` up to the point it would listen: the settings it would serve with."""
    from retention.web import server

    started: list[Any] = []
    monkeypatch.setattr(server, "check_listen", lambda host, port: None)
    monkeypatch.setattr(server, "serve", lambda settings, host, port: started.append(settings))
    return started


def _raw(source: Path | bytes) -> bytes:
    """The key's raw bytes, from PEM text or a PEM file."""
    pem = source.read_bytes() if isinstance(source, Path) else source
    return serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


@pytest.mark.parametrize("how", ["text", "path-in-variable", "file-variable", "flag"])
def test_serve_takes_the_public_key_as_documented_and_as_deployed(tmp_path: Path, served: list[Any], how: str) -> None:
    """README: the variable holds PEM text; deploy/kubernetes/console.yaml passes ``--public-key FILE``."""
    pem = _public_pem()
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    db = tmp_path / "empty.sqlite"
    db.touch()  # integ refuses an absent SQLite file (nothing is created); serve never opens it here
    args = ["serve", "--db", f"sqlite:///{db}"]
    env = {
        "text": {"RETENTION_CHECKPOINT_PUBLIC_KEY": pem.decode()},
        "path-in-variable": {"RETENTION_CHECKPOINT_PUBLIC_KEY": str(path)},
        "file-variable": {"RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": str(path)},
        "flag": {},
    }[how]
    if how == "flag":
        args += ["--public-key", str(path)]
    code, lines = invoke(args, env=env)
    assert code == 0, lines
    [settings] = served
    assert settings.public_key is not None
    assert _raw(settings.public_key) == _raw(pem)


BAD_KEYS = [
    ({"RETENTION_CHECKPOINT_PUBLIC_KEY": "MCowBQYDK2VwAyEAsecretlookingbase64"}, "RETENTION_CHECKPOINT_PUBLIC_KEY"),
    (
        {
            "RETENTION_CHECKPOINT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAsecretlooking\n"
            "-----END PUBLIC KEY-----"
        },
        "RETENTION_CHECKPOINT_PUBLIC_KEY: not a PEM public key",
    ),
    (
        {"RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": "{tmp}/nowhere.pem"},
        "the public key {tmp}/nowhere.pem is not a regular",
    ),
    ({"RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": "{tmp}/junk.pem"}, "the public key {tmp}/junk.pem: not a PEM public key"),
]


@pytest.mark.parametrize(("env", "start"), BAD_KEYS, ids=["not-pem-nor-file", "broken-pem", "no-file", "junk-file"])
def test_a_public_key_that_is_no_key_stops_serve_in_one_line(
    tmp_path: Path, served: list[Any], env: dict[str, str], start: str
) -> None:
    """Exit 2 before serving, one line, and the variable's text (maybe key material) is not repeated."""
    (tmp_path / "junk.pem").write_text("MCowBQYDK2VwAyEAsecretlooking", encoding="utf-8")
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    code, lines = invoke(["serve", "--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"], env=env)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {start.format(tmp=tmp_path)}"), lines
    assert "secretlooking" not in lines[0]
    assert served == []


def test_a_public_key_flag_that_is_no_key_stops_serve(tmp_path: Path, served: list[Any]) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key", encoding="utf-8")
    code, lines = invoke(["serve", "--db", f"sqlite:///{tmp_path / 'a.sqlite'}", "--public-key", str(junk)])
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: the public key {junk}: not a PEM"), lines
    assert served == []


def test_ledger_verify_reads_a_path_in_the_variable_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same variable means the same in every command: a path there works for ``ledger verify`` as well."""
    pem = _public_pem()
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    monkeypatch.delenv("RETENTION_CHECKPOINT_PUBLIC_KEY_FILE", raising=False)
    monkeypatch.setenv("RETENTION_CHECKPOINT_PUBLIC_KEY", str(path))
    assert _raw(ledger.public_pem(ledger.configured_public_key())) == _raw(pem)
    monkeypatch.setenv("RETENTION_CHECKPOINT_PUBLIC_KEY", pem.decode())
    assert _raw(ledger.public_pem(ledger.configured_public_key())) == _raw(pem)


# --------------------------------------------------------------------------
# 2. The metrics file
# --------------------------------------------------------------------------

UNWRITABLE = "/proc/retention-cli3-test.prom"  # root passes os.access there; the kernel refuses the file


@pytest.mark.parametrize(
    "command",
    [["run", "--rules", "builtin:marketplace"], ["scheduler", "--rules", "builtin:marketplace"]],
    ids=["run", "scheduler"],
)
@pytest.mark.parametrize("from_env", [True, False], ids=["variable", "flag"])
def test_a_metrics_file_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, command: list[str], from_env: bool
) -> None:
    db = tmp_path / "absent.sqlite"
    args = [*command, "--db", f"sqlite:///{db}"]
    env = {"RETENTION_METRICS_FILE": UNWRITABLE} if from_env else {}
    if not from_env:
        args += ["--metrics-file", UNWRITABLE]
    code, lines = invoke(args, env=env)
    named = "RETENTION_METRICS_FILE (from the environment)" if from_env else "'--metrics-file'"
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: Invalid value for {named}: {UNWRITABLE} cannot be written ("), lines
    assert not db.exists()


def test_the_probe_says_proc_takes_no_new_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe, not os.access, refuses /proc (as non-root too), and not as "No such file or directory"."""
    import os

    monkeypatch.setattr(os, "access", lambda *_: True)
    with pytest.raises(click.BadParameter) as refused:
        params.METRICS_FILE.convert(UNWRITABLE, None, None)
    assert refused.value.message == f"{UNWRITABLE} cannot be written (/proc takes no new files)"


def test_a_writable_metrics_folder_keeps_no_probe_file(tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    assert params.METRICS_FILE.convert(str(folder / "r.prom"), None, None) == folder / "r.prom"
    assert list(folder.iterdir()) == []


KILLED_PROBE = """
import os, signal, sys, tempfile
from retention.cli import params
made = tempfile.NamedTemporaryFile
def killed(*args, **kwargs):
    held = made(*args, **kwargs)  # held: not closed (and so not removed) before the kill
    os.kill(os.getpid(), signal.SIGKILL)  # between creating the probe and removing it
tempfile.NamedTemporaryFile = killed
params.METRICS_FILE.convert(sys.argv[1], None, None)
"""


def test_a_probe_left_by_a_killed_command_is_removed_by_the_next(tmp_path: Path) -> None:
    """A command killed mid-probe leaves an empty .retention-probe-* file; the next probe removes it once stale.

    They used to stay for good, one more per killed command. Kept: a probe
    younger than a minute (another command's, running), a non-empty file and
    a symlink under the prefix (not the probe's).
    """
    import os
    import subprocess
    import sys
    import time

    folder = tmp_path / "textfile"
    folder.mkdir()
    killed = subprocess.run([sys.executable, "-c", KILLED_PROBE, str(folder / "r.prom")], check=False, timeout=60)
    assert killed.returncode == -9
    (left,) = folder.iterdir()
    assert left.name.startswith(".retention-probe-") and left.stat().st_size == 0
    fresh = folder / ".retention-probe-running"
    fresh.touch()
    written = folder / ".retention-probe-written"
    written.write_text("x", encoding="utf-8")
    target = tmp_path / "elsewhere"
    target.touch()
    link = folder / ".retention-probe-link"
    link.symlink_to(target)
    old = time.time() - 120
    for path in (left, written, target):
        os.utime(path, (old, old))
    os.utime(link, (old, old), follow_symlinks=False)
    assert params.METRICS_FILE.convert(str(folder / "r.prom"), None, None) == folder / "r.prom"
    assert sorted(p.name for p in folder.iterdir()) == [link.name, fresh.name, written.name]
    assert target.exists()


def _shop(migrated: sa.Engine, tmp_path: Path) -> Path:
    with migrated.begin() as conn:
        conn.execute(sa.text("CREATE TABLE subscribers (id INTEGER PRIMARY KEY, subscribed_at TIMESTAMP)"))
        conn.execute(
            sa.text("INSERT INTO subscribers (id, subscribed_at) VALUES (:i, :t)"),
            [{"i": i, "t": dt.datetime(2020, 1, 1)} for i in range(1, 4)],
        )
    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK, encoding="utf-8")
    return rules


def _disk_full(*_: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_metrics_file_failing_after_the_run_leaves_the_work_and_says_so(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills between the check and the write: the run's work and ledger stand, one line, exit 3."""
    from retention.reporting import metrics

    rules = _shop(migrated, tmp_path)
    monkeypatch.setattr(metrics, "write_to_textfile", _disk_full)
    prom = tmp_path / "retention.prom"
    code, lines = invoke(
        [
            "run",
            "--rules",
            str(rules),
            "--db",
            db_url,
            "--no-progress",
            "--as-of",
            "2026-01-01",
            "--metrics-file",
            str(prom),
        ]
    )
    assert code == 3, lines
    assert lines[-1] == (
        f"error: the metrics file {prom} could not be written (No space left on device); the run's work stands"
    )
    assert not any("Traceback" in line for line in lines)
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM subscribers")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT status FROM retention_runs")).scalars().all() == ["succeeded"]
    code, lines = invoke(["ledger", "verify", "--db", db_url])
    assert code == 0, lines


def test_a_metrics_file_failing_after_a_failed_run_keeps_the_runs_own_error(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure path writes metrics too: its OSError used to replace the run's error with a traceback."""
    from retention.reporting import metrics

    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK, encoding="utf-8")  # no subscribers table: the run fails on the schema
    monkeypatch.setattr(metrics, "write_to_textfile", _disk_full)
    code, lines = invoke(
        ["run", "--rules", str(rules), "--db", db_url, "--no-progress", "--metrics-file", str(tmp_path / "r.prom")]
    )
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and errors == ["error: subscribers: table does not exist (dataset subscribers)"], lines
    assert not any("Traceback" in line for line in lines)
    assert any('"metrics_not_written"' in line for line in lines), lines  # the log still says it


def test_fleet_metrics_that_cannot_be_written_are_one_line_and_exit_3(tmp_path: Path) -> None:
    """``fleet run`` and ``run --shards`` write their file after every target committed."""
    from retention.cli.dispatch import exit_after_metrics, write_fleet_metrics

    message = write_fleet_metrics(Path("/proc/retention-cli3/fleet.prom"), [])
    assert message is not None and message.startswith("the metrics file /proc/retention-cli3/fleet.prom could not")
    assert write_fleet_metrics(None, []) is None
    with click.Context(main):
        assert exit_after_metrics(0, message) == 3
        assert exit_after_metrics(4, message) == 4
        assert exit_after_metrics(0, None) == 0


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_shards_whose_metrics_fail_say_the_exit_they_end_with(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """``run --shards``: the JSON summary, the shards_finished event and the table line said 0 while it exited 3."""
    from retention.ops import fleet

    rules = _shop(migrated, tmp_path)
    monkeypatch.setattr(fleet, "write_fleet_metrics", _disk_full)
    prom = tmp_path / "m" / "shards.prom"
    args = ["run", "--rules", str(rules), "--db", db_url, "--as-of", "2026-01-01", "--shards", "2"]
    args += ["--parallel", "1", "--format", fmt, "--metrics-file", str(prom)]
    result = CliRunner().invoke(main, args, env={**KEY, "RETENTION_LOG_FORMAT": "json"}, prog_name="retention")
    lines = result.output.splitlines()
    assert result.exit_code == 3, lines
    if fmt == "json":
        assert json.loads(result.stdout)["exit_code"] == 3, result.stdout
    else:
        assert not any("succeeded" in line and "all 2 shards" in line for line in lines), lines
        assert "run: all 2 shards ran; exit 3" in lines, lines
    finished = [json.loads(line) for line in lines if '"shards_finished"' in line]
    assert [event["exit_code"] for event in finished] == [3], lines
    assert lines[-1] == (
        f"error: the metrics file {prom} could not be written (No space left on device); the run's work stands"
    )
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM subscribers")).scalar_one() == 0


def test_a_fleet_whose_metrics_fail_says_the_exit_it_ends_with(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fleet run``: the same as ``run --shards``, the JSON exit_code and fleet_finished said 0 while it exited 3."""
    from retention.ops import fleet

    rules = _shop(migrated, tmp_path)
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        f"targets:\n  - name: shop\n    database: {{env: CLI3_FLEET_URL}}\n    pack: {rules}\n", encoding="utf-8"
    )
    monkeypatch.setattr(fleet, "write_fleet_metrics", _disk_full)
    args = ["fleet", "run", "--targets", str(fleet_file), "--as-of", "2026-01-01", "--json"]
    args += ["--metrics-file", str(tmp_path / "fleet.prom")]
    env = {**KEY, "RETENTION_LOG_FORMAT": "json", "CLI3_FLEET_URL": db_url}
    result = CliRunner().invoke(main, args, env=env, prog_name="retention")
    lines = result.output.splitlines()
    assert result.exit_code == 3, lines
    assert json.loads(result.stdout)["exit_code"] == 3, result.stdout
    assert [json.loads(line)["exit_code"] for line in lines if '"fleet_finished"' in line] == [3], lines
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM subscribers")).scalar_one() == 0


# --------------------------------------------------------------------------
# 3. Run group names
# --------------------------------------------------------------------------

GOOD_GROUPS = ["night-2026-11-26", "2026-12-07-4", "shards-0123456789ab", "retention-sharded-29412345", "a.b_c", "G"]
BAD_GROUPS = ["bad name!", "", "-leading-dash", "a/b", "x" * 101, "nuit-\u00e9t\u00e9", "a\nb", "'quoted'"]


@pytest.mark.parametrize("name", GOOD_GROUPS)
def test_run_group_names_in_use_are_accepted(name: str) -> None:
    """The default (as-of day and N), ``run --shards``'s own, a Kubernetes Job name, the docs' example."""
    assert params.RUN_GROUP.convert(name, None, None) == name


GROUP_COMMANDS = {
    "shard": ["run", "--rules", "builtin:marketplace", "--shard", "0/2"],
    "shards": ["run", "--rules", "builtin:marketplace", "--shards", "2"],
}
# An empty variable is no value at all.
GROUP_CASES = [
    (where, i, from_env)
    for where in GROUP_COMMANDS
    for i, name in enumerate(BAD_GROUPS)
    for from_env in (False, True)
    if not (from_env and not name)
]


@pytest.mark.parametrize(
    ("where", "index", "from_env"), GROUP_CASES, ids=[f"{w}-{i}-{'env' if e else 'flag'}" for w, i, e in GROUP_CASES]
)
def test_a_run_group_name_of_another_form_is_refused(tmp_path: Path, where: str, index: int, from_env: bool) -> None:
    """It used to be stored as given ('bad name!' too); now one line, exit 2, before any run starts.

    The database is only read, to see whether the name is a stored group's
    (an absent SQLite file may be left empty by that look).
    """
    command, name = GROUP_COMMANDS[where], BAD_GROUPS[index]
    db = tmp_path / "absent.sqlite"
    args = [*command, "--db", f"sqlite:///{db}"]
    env = {"RETENTION_RUN_GROUP": name} if from_env else {}
    if not from_env:
        args += ["--run-group", name]
    code, lines = invoke(args, env=env)
    named = "RETENTION_RUN_GROUP (from the environment)" if from_env else "'--run-group'"
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: Invalid value for {named}: "), lines
    assert "is not a run group name: 1 to 100 letters, digits, '.', '_' or '-'" in lines[0]
    assert not db.exists() or db.stat().st_size == 0


@pytest.mark.parametrize(("name", "why"), [("", "is empty"), ("a\nb", "control character U+000A"), ("x" * 192, "192")])
def test_run_groups_filter_refuses_only_what_no_group_can_be_named(tmp_path: Path, name: str, why: str) -> None:
    """``run-groups --run-group`` selects: any stored name passes, text no column holds is one line, exit 2."""
    db = tmp_path / "absent.sqlite"
    code, lines = invoke(["run-groups", "--db", f"sqlite:///{db}", "--run-group", name])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: Invalid value for '--run-group': ") and why in lines[0], lines
    assert not db.exists()


@pytest.mark.parametrize("name", ["nightly job", "x" * 300, "a\nb"])
def test_a_whole_run_ignores_a_run_group_variable_of_any_form(
    migrated: sa.Engine, db_url: str, tmp_path: Path, name: str
) -> None:
    """A host may set RETENTION_RUN_GROUP for every job; a whole run does not use it, so it must not refuse it."""
    rules = _shop(migrated, tmp_path)
    args = ["run", "--rules", str(rules), "--db", db_url, "--no-progress", "--as-of", "2026-01-01"]
    code, lines = invoke(args, env={"RETENTION_RUN_GROUP": name})
    assert code == 0, lines
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT run_group FROM retention_runs")).scalars().all() == [None]


def test_a_group_stored_before_the_form_can_still_be_finished(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group named ``night 2026-12-07`` before the form was checked: listed, closed, finished by its shards."""
    import re

    rules = _shop(migrated, tmp_path)
    old = "night 2026-12-07"
    base = ["run", "--rules", str(rules), "--db", db_url, "--no-progress", "--as-of", "2026-01-01"]
    with monkeypatch.context() as before:  # the code before the form: any name was stored
        before.setattr(params.RunGroupType, "_FORM", re.compile(r".+"))
        code, lines = invoke([*base, "--shard", "0/2", "--run-group", old])
        assert code == 0, lines
    code, lines = invoke(["run-groups", "--db", db_url, "--run-group", old, "--format", "csv"])
    assert code == 0 and len(lines) == 2 and lines[1].startswith(f"{old},2,1,"), lines
    code, lines = invoke([*base, "--shard", "1/2", "--run-group", old])
    assert code == 0, lines
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT run_group, status FROM retention_runs")).all() == [(old, "succeeded")]
    code, lines = invoke(["run-groups", "--db", db_url, "--run-group", old, "--close-stale"])
    assert code == 0, lines  # the filter is taken (exit 2 before); the group is closed, nothing to do
    code, lines = invoke([*base, "--shard", "0/2", "--run-group", "new night"])
    assert code == 2 and "'new night' is not a run group name" in lines[0], lines  # a new group: the form
