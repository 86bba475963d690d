"""The Indexed Job's failure policy, simulated (issue 25, check 4): exit 2, 4, 6 fail the index at once.

The Job controller's decision for a failed pod is reproduced from the
manifest's own ``podFailurePolicy`` (rules in order, first match wins; no
match counts against ``backoffLimitPerIndex``), and the pods are real
``retention`` processes started with the manifest's own arguments, as in
tests/test_shards.py. A pack that does not load (exit 2) is not run again;
a shard whose lock is held by a dying pod (exit 5) is, and its retry
finishes the shard.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from test_shards import AS_OF, PACK, SECRET, _expand, prepare, sharded_cronjob

from retention.engine import execute
from retention.engine.shards import ShardSpec
from retention.policy import load_file


def controller_action(job: dict[str, Any], container: str, exit_code: int) -> str:
    """What the Job controller does with a pod that failed with ``exit_code`` (Kubernetes' podFailurePolicy)."""
    for rule in job.get("podFailurePolicy", {}).get("rules", []):
        on_exit = rule.get("onExitCodes")
        if on_exit is None:
            continue  # onPodConditions: a disruption (eviction, preemption), not an exit code
        if on_exit.get("containerName", container) != container:
            continue
        listed = exit_code in on_exit["values"]
        if listed == (on_exit["operator"] == "In"):
            return str(rule["action"])
    return "Count"


def run_index(
    job: dict[str, Any], index: int, env: dict[str, str], args: list[str], before_retry: Any = None
) -> list[int]:
    """Start the pods of one index until it succeeds, its retries run out, or the policy fails it; their exit codes."""
    codes: list[int] = []
    container = job["template"]["spec"]["containers"][0]["name"]
    while True:
        pod_env = {**env, "JOB_COMPLETION_INDEX": str(index)}
        pod = subprocess.run(
            [sys.executable, "-m", "retention.cli", *[_expand(a, pod_env) for a in args]],
            env=pod_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        codes.append(pod.returncode)
        if pod.returncode == 0:
            return codes
        action = controller_action(job, container, pod.returncode)
        if action in ("FailIndex", "FailJob"):
            return codes
        if action == "Count" and len(codes) > job["backoffLimitPerIndex"]:
            return codes
        if before_retry is not None:
            before_retry()


def test_the_policy_reads_as_intended() -> None:
    job = sharded_cronjob()["spec"]["jobTemplate"]["spec"]
    assert "backoffLimit" not in job and job["backoffLimitPerIndex"] >= 1 and job["activeDeadlineSeconds"] > 0
    actions = {code: controller_action(job, "retention", code) for code in range(7)}
    assert actions == {0: "Count", 1: "Count", 2: "FailIndex", 3: "Count", 4: "FailIndex", 5: "Count", 6: "FailIndex"}


def test_exit_2_is_not_retried_and_exit_5_is(db_url: str, tmp_path: Path) -> None:
    cronjob = sharded_cronjob()
    job = cronjob["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    pack = tmp_path / "shards.yaml"
    pack.write_text(PACK, encoding="utf-8")
    loaded = load_file(pack)
    engine = prepare(db_url, loaded)
    try:
        env = {
            **os.environ,
            "RETENTION_DATABASE_URL": db_url,
            "RETENTION_PSEUDONYM_KEY": SECRET.decode(),
            "RETENTION_RUN_GROUP": "retention-sharded-29012346",
            "RETENTION_ALLOW_MASS": "",
        }
        args = [*container["args"], "--as-of", AS_OF.date().isoformat()]
        broken = list(args)
        broken[broken.index("--rules") + 1] = str(tmp_path / "missing.yaml")
        assert run_index(job, 0, env, broken) == [2]  # one pod: a configuration error is not retried

        args[args.index("--rules") + 1] = str(pack)
        shards = job["completions"]
        with engine.connect() as conn:
            dying = execute.RunLock(conn, "a-dying-pod", ShardSpec(1, shards))
            dying.acquire()
            try:
                codes = run_index(job, 1, env, args, before_retry=dying.release)
            finally:
                dying.release()
        assert codes == [5, 0]  # the lock was still held; the retry ran the shard
        with engine.connect() as conn:
            rs = store_run_shards(conn, execute.group_run_id("retention-sharded-29012346"))
        assert rs == [(1, "succeeded")]
    finally:
        engine.dispose()


def store_run_shards(conn: sa.Connection, run_id: str) -> list[tuple[int, str]]:
    from retention.store import tables as store

    rs = store.run_shards
    return [
        (int(s), str(t))
        for s, t in conn.execute(sa.select(rs.c.shard, rs.c.status).where(rs.c.run_id == run_id).order_by(rs.c.shard))
    ]
