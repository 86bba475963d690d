"""deploy/ works as its README says: manifests validate, units verify, cron reads the environment file."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from retention.errors import ConfigError
from retention.store.config import read_secret

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RETENTION = Path(sys.executable).parent / "retention"
INSTALLED = "/opt/retention/venv/bin/retention"
ENV_LINE = re.compile(r"^[A-Z_][A-Z0-9_]*=[^\s\"'`$\\]*$")


def _manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()) if doc]


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.27", kubernetes_validate.latest_version()])
def test_kubernetes_manifests_validate_offline(version: str) -> None:
    """Each manifest passes strict schema validation (no unknown field) on the oldest and newest supported API."""
    kinds = []
    for manifest in _manifests():
        kubernetes_validate.validate(manifest, version, strict=True)
        kinds.append(manifest["kind"])
    assert kinds == ["Secret", "ConfigMap", "CronJob"]


def _pod() -> dict[str, Any]:
    (cronjob,) = [m for m in _manifests() if m["kind"] == "CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def test_the_key_reaches_the_engine_with_the_mode_it_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret's file is group-readable (fsGroup), which the engine refuses; the init container's copy it accepts.

    The copy runs here with the manifest's own command, from a file with the
    mode Kubernetes gives the Secret, and the engine's read_secret reads it.
    """
    pod = _pod()
    context = pod["securityContext"]
    uid = context["runAsUser"]
    assert context["runAsNonRoot"] is True and context["fsGroup"] == context["runAsGroup"] == uid == 10001
    volumes = {v["name"]: v for v in pod["volumes"]}
    (init,) = pod["initContainers"]
    (engine,) = pod["containers"]
    secret_mode = volumes["secret"]["secret"]["defaultMode"]
    assert secret_mode == 0o440  # read by the init container through its group (fsGroup)
    # The engine's container mounts the copy only, read-only, from memory.
    engine_mounts = {m["name"]: m for m in engine["volumeMounts"]}
    assert "secret" not in engine_mounts and engine_mounts["keys"]["readOnly"] is True
    assert volumes["keys"]["emptyDir"]["medium"] == "Memory"
    key_env = {e["name"]: e.get("value") for e in engine["env"]}["RETENTION_PSEUDONYM_KEY_FILE"]
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert key_env.startswith(engine_mounts["keys"]["mountPath"] + "/")

    # What Kubernetes writes: the Secret with defaultMode (fsGroup only adds group read).
    secret_dir, keys_dir = tmp_path / "secret", tmp_path / "keys"
    secret_dir.mkdir()
    keys_dir.mkdir()
    mounted = secret_dir / "pseudonym.key"
    mounted.write_text("0123456789abcdef0123456789abcdef")
    mounted.chmod(secret_mode)
    monkeypatch.delenv("RETENTION_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(mounted))
    with pytest.raises(ConfigError, match="is readable by others"):
        read_secret("pseudonym key", "RETENTION_PSEUDONYM_KEY", "RETENTION_PSEUDONYM_KEY_FILE")

    command = [
        w.replace(init_mounts["secret"], str(secret_dir)).replace(init_mounts["keys"], str(keys_dir))
        for w in init["command"]
    ]
    subprocess.run(command, check=True)
    copied = keys_dir / Path(key_env).name
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600 and copied.stat().st_uid == os.getuid()
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", str(copied))
    key = read_secret("pseudonym key", "RETENTION_PSEUDONYM_KEY", "RETENTION_PSEUDONYM_KEY_FILE")
    assert key == b"0123456789abcdef0123456789abcdef"


def test_the_cronjob_command_is_a_valid_retention_command() -> None:
    """The container's arguments parse as a `retention` command line (no unknown option)."""
    from test_cli_docs import _parse_errors

    (engine,) = _pod()["containers"]
    assert _parse_errors(tuple(engine["args"]), template=False) == []


def sharded_cronjob() -> dict[str, Any]:
    """The Indexed Job's CronJob (deploy/kubernetes/sharded-cronjob.yaml)."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sharded-cronjob.yaml").read_text()) if d]
    (cronjob,) = docs
    assert cronjob["kind"] == "CronJob"
    return cronjob


def sharded_container() -> dict[str, Any]:
    """The engine's container of the Indexed Job's pods."""
    (engine,) = sharded_cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return engine  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", ["1.27", kubernetes_validate.latest_version()])
def test_the_indexed_job_validates_offline(version: str) -> None:
    """The sharded CronJob passes strict validation: an Indexed Job of N pods, N shards, one run group per Job."""
    cronjob = sharded_cronjob()
    kubernetes_validate.validate(cronjob, version, strict=True)
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["completionMode"] == "Indexed"
    shards = job["completions"]
    assert job["parallelism"] == shards and shards > 1
    engine = sharded_container()
    args = engine["args"]
    assert args[args.index("--shard") + 1] == f"$(JOB_COMPLETION_INDEX)/{shards}"
    assert args[args.index("--run-group") + 1] == "$(RETENTION_RUN_GROUP)"
    env = {e["name"]: e for e in engine["env"]}
    # Both come from the pod itself: its completion index and its Job's name (unique per scheduled run).
    index = env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["RETENTION_RUN_GROUP"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    # The same pod otherwise: the Secret and ConfigMap of cronjob.yaml, the key copied by the init container.
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert template["initContainers"] == _pod()["initContainers"]
    assert template["volumes"] == _pod()["volumes"]


def test_the_indexed_job_command_is_a_valid_retention_command() -> None:
    """The pod's arguments, with the index and group the kubelet puts in, parse as a `retention` command line."""
    from test_cli_docs import _parse_errors

    args = [
        a.replace("$(JOB_COMPLETION_INDEX)", "2").replace("$(RETENTION_RUN_GROUP)", "g")
        for a in sharded_container()["args"]
    ]
    assert _parse_errors(tuple(args), template=False) == []


# --------------------------------------------------------------------------
# The environment file, cron and systemd
# --------------------------------------------------------------------------


def _env_assignments(text: str) -> dict[str, str]:
    """The variables an EnvironmentFile sets, read the way systemd reads the simple form (KEY=VALUE lines)."""
    result = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        result[key] = value
    return result


def test_the_environment_file_keeps_to_the_form_cron_and_systemd_share() -> None:
    """VARIABLE=value lines only: no export, no quotes, spaces, $, backquotes or backslashes."""
    text = (DEPLOY / "retention.env").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines and all(ENV_LINE.match(line) for line in lines), lines
    assert {"RETENTION_DATABASE_URL", "RETENTION_RULES", "RETENTION_PSEUDONYM_KEY_FILE"} <= set(_env_assignments(text))


def test_sh_and_systemd_read_the_same_variables(tmp_path: Path) -> None:
    """What `set -a; . FILE` exports is exactly what the KEY=VALUE reading gives."""
    env_file = DEPLOY / "retention.env"
    dump = subprocess.run(
        ["sh", "-c", f'set -a; . "{env_file}"; set +a; exec env'],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = dict(line.split("=", 1) for line in dump.splitlines() if "=" in line)
    expected = _env_assignments(env_file.read_text())
    assert {k: exported.get(k) for k in expected} == expected


def _cron_command() -> str:
    """The command of the crontab's job line (/etc/cron.d format: 5 fields, a user, the command)."""
    jobs = [
        line
        for line in (DEPLOY / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    (job,) = jobs
    fields = job.split(None, 6)
    assert fields[5] == "retention"  # the user
    assert "%" not in fields[6]  # cron turns % into newlines
    return fields[6]


def _machine(tmp_path: Path, rules: str) -> tuple[Path, dict[str, Path]]:
    """A machine laid out as deploy/README.md says, under tmp_path: env file, key, log folder, a demo database."""
    etc = tmp_path / "etc"
    etc.mkdir()
    key = etc / "pseudonym.key"
    key.write_text("deploy-test-key")
    key.chmod(0o600)
    paths = {
        "db": tmp_path / "shop.sqlite",
        "metrics": tmp_path / "textfile" / "retention.prom",
        "log": tmp_path / "run.log",
        "lock": tmp_path / "retention.lock",
    }
    values = {
        "RETENTION_DATABASE_URL": f"sqlite:///{paths['db']}",
        "RETENTION_RULES": rules,
        "RETENTION_PSEUDONYM_KEY_FILE": str(key),
        "RETENTION_METRICS_FILE": str(paths["metrics"]),
        "PGPASSFILE": str(etc / "pgpass"),
    }
    lines = []
    for line in (DEPLOY / "retention.env").read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values else line)
    env_file = etc / "env"
    env_file.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [str(RETENTION), "demo", "--customers", "60", "--db", values["RETENTION_DATABASE_URL"]],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "RETENTION_PSEUDONYM_KEY_FILE": str(key)},
        capture_output=True,
        check=True,
    )
    return env_file, paths


def _run_cron_line(tmp_path: Path, env_file: Path, paths: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    command = (
        _cron_command()
        .replace("/etc/retention/env", str(env_file))
        .replace(INSTALLED, str(RETENTION))
        .replace("/run/lock/retention.lock", str(paths["lock"]))
        .replace("/var/log/retention/run.log", str(paths["log"]))
    )
    # cron starts jobs with a bare environment: nothing of this process's RETENTION_* leaks in.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LOGNAME": "retention"}
    return subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) is not installed")
def test_the_cron_line_starts_the_engine_with_the_environment_file(tmp_path: Path) -> None:
    """The crontab's own line runs the engine with the file's variables: database, rules, key, metrics file."""
    env_file, paths = _machine(tmp_path, "builtin:marketplace")
    done = _run_cron_line(tmp_path, env_file, paths)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")  # cron mails nothing
    log = paths["log"].read_text().splitlines()
    import json

    events = [json.loads(line) for line in log]  # JSON lines only
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "succeeded"
    assert events[0]["pack"] == "marketplace"  # RETENTION_RULES was seen
    metrics = paths["metrics"].read_text()  # RETENTION_METRICS_FILE was seen
    assert 'retention_last_run_status{pack="marketplace",status="succeeded"} 1.0' in metrics

    # A broken setting: the job prints one line, which cron mails.
    broken = env_file.read_text().replace("RETENTION_RULES=builtin:marketplace", "RETENTION_RULES=/nowhere/rules")
    env_file.write_text(broken)
    failed = _run_cron_line(tmp_path, env_file, paths)
    assert failed.stdout == (f"the nightly retention run failed with exit code 2; see {paths['log']}\n"), failed.stderr
    assert json.loads(paths["log"].read_text().splitlines()[-1])["event"] == "command_failed"


SYSTEMD_UNITS = ["retention.service", "retention.timer", "retention-failed@.service", "retention-scheduler.service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts every unit, with the engine installed where ExecStart says."""
    for name in SYSTEMD_UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALLED, str(RETENTION)))
    result = subprocess.run(
        # The alert template is checked through the instance OnFailure= starts.
        ["systemd-analyze", "verify", *(str(tmp_path / n.replace("@.", "@retention.service.")) for n in SYSTEMD_UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_units_run_the_engine_with_the_environment_file() -> None:
    """Both services read /etc/retention/env and run a valid `retention` command with JSON logs."""
    from test_cli_docs import _parse_errors

    variables = _env_assignments((DEPLOY / "retention.env").read_text())
    for name in ("retention.service", "retention-scheduler.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        assert "EnvironmentFile=/etc/retention/env" in text.splitlines()
        (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        words = shlex.split(exec_start.removeprefix("ExecStart="))
        assert words[0] == INSTALLED and "--log-format" in words
        # Required options come from the environment file, as they do under systemd.
        args = (*words[1:], "--rules", variables["RETENTION_RULES"])
        assert _parse_errors(args, template=False) == [], name


# --------------------------------------------------------------------------
# The container file
# --------------------------------------------------------------------------


def test_the_containerfile_installs_the_wheel_and_runs_unprivileged() -> None:
    """Checked without a container engine: wheel not editable, uid 10001, health check `retention --version`."""
    text = (DEPLOY / "Containerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2, "a build stage for the wheel and a runtime stage"
    build, runtime = stages
    assert "pip wheel" in build and " -e " not in text and "--editable" not in text
    assert (
        "COPY --from=wheel /dist/" in runtime
        and "pip install --no-cache-dir --quiet /tmp/dist/retention-*.whl" in runtime
    )
    assert not re.search(r"^COPY (?!--from)", runtime, flags=re.MULTILINE), "the runtime stage copies only the wheel"
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert re.search(r'^HEALTHCHECK .*CMD \["retention", "--version"\]$', runtime, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["retention"\]$', runtime, flags=re.MULTILINE)
    # The CronJob's pod runs as the image's user.
    assert _pod()["securityContext"]["runAsUser"] == 10001
