"""Deploy files an operator can trust as they are (issue 24): a sandboxed unit, exit 5 not a failure,
optional paths optional, and a README that installs what it uses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"


def _setting(text: str, name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{name}=")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["retention.service", "retention-scheduler.service"])
def test_units_pass_systemd_analyze_security_at_2_or_less(unit: str, tmp_path: Path) -> None:
    (tmp_path / unit).write_text((SYSTEMD / unit).read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0 and score.group(2) == "OK", score.group(0)
    assert result.returncode == 0, result.stdout[-2000:]


def test_exit_5_is_not_a_failure_and_optional_paths_are_optional() -> None:
    """Another run holding the lock (exit 5) marks no failure; a host without node_exporter still starts."""
    run = (SYSTEMD / "retention.service").read_text()
    assert _setting(run, "SuccessExitStatus") == ["5"]
    for unit in ("retention.service", "retention-scheduler.service"):
        (paths,) = _setting((SYSTEMD / unit).read_text(), "ReadWritePaths")
        assert all(path.startswith("-") for path in paths.split()), paths


def test_readme_installs_build_before_using_it() -> None:
    for line in (ROOT / "README.md").read_text().splitlines():
        if "python3 -m build" in line:
            assert line.index("pip install -q build") < line.index("python3 -m build"), line


def test_version_answers_without_loading_the_engine() -> None:
    """`retention --version` (the container's health check) prints what click prints, without SQLAlchemy loaded."""
    import sys

    probe = (
        "import sys; sys.argv = ['retention', '--version']; from retention.launcher import main; main(); "
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'structlog', 'retention.commands') if m in sys.modules))"
    )
    fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    line, loaded = fast.stdout.splitlines()
    assert loaded == "[]"
    full = subprocess.run(
        [sys.executable, "-m", "retention.cli", "--version"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert line == full.stdout.strip().replace("python -m retention.cli", "retention")


def test_a_command_imports_only_its_own_commands() -> None:
    """`retention run` loads the run commands, not the ledger, archive and admin ones (their imports were most
    of a CLI process's start); `from retention.commands import x` still finds every name."""
    import sys

    probe = (
        "import sys; sys.argv = ['retention', 'run', '--help']; from retention.launcher import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('retention.commands.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.splitlines()[-1] == "[]"  # the help needs no command at all
    probe = (
        "import sys; from retention import commands; commands.run\n"
        "print(sorted(m for m in sys.modules if m.startswith('retention.commands.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    # files: the output-path helpers (standard library only) every command that writes a file shares.
    expected = "['retention.commands.files', 'retention.commands.runs', 'retention.commands.subjects']"
    assert done.stdout.strip() == expected
    import retention.commands as commands

    for name in commands.__all__:
        value = getattr(commands, name)
        assert name.isupper() or value.__module__ == f"retention.commands.{commands._WHERE[name]}", name
    assert sorted(commands.__all__) == sorted(commands._WHERE)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        commands.nothing  # noqa: B018


def test_init_writes_the_public_key_auditors_verify_with(db_url: str, tmp_path: Path) -> None:
    """`init` leaves signing.pub.pem (0644) beside the 0600 keys; a checkpoint signed by the key verifies with it."""
    from click.testing import CliRunner

    from retention.cli import main

    folder = tmp_path / "keys"
    result = CliRunner().invoke(main, ["init", "--db", db_url, "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    public = folder / "signing.pub.pem"
    assert public.stat().st_mode & 0o777 == 0o644
    assert f"created {public} (mode 0644): the public key to give auditors" in result.output
    checkpoint = tmp_path / "cp.json"
    signed = CliRunner().invoke(
        main,
        ["ledger", "checkpoint", "--db", db_url, "--key", str(folder / "signing.pem"), "--output", str(checkpoint)],
    )
    assert signed.exit_code == 0, signed.output
    verified = CliRunner().invoke(
        main, ["ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint), "--public-key", str(public)]
    )
    assert verified.exit_code == 0, verified.output
    again = CliRunner().invoke(main, ["init", "--db", db_url, "--dir", str(folder)])
    assert again.exit_code == 0 and "created" not in again.output
