"""The Celery backend (issue 16, check 2): a worker SIGKILLed mid-task, another takes over, nothing twice.

A real worker (a subprocess) against the local RabbitMQ and Redis, one queue
per test. The worker is killed (its whole process group, SIGKILL) while a
target's run has committed batches but not finished; a second worker gets
the unacknowledged task and runs that target again. Every target must end
exactly as a golden, unfaulted run leaves it: same rows, same ledger moves,
none twice, the ledger verifying.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import isolated_database
from fleet_world import (
    AS_OF,
    SECRET,
    World,
    build_target,
    deleted_visits,
    golden,
    ledger_ok,
    moves,
    no_record_moved_twice,
    runs,
    tables,
    write_fleet,
    write_pack,
)

from retention.ops.workers import DEFAULT_BACKEND, DEFAULT_BROKER
from retention.store.config import create_engine

BROKER = os.environ.get("RETENTION_TEST_CELERY_BROKER_URL", DEFAULT_BROKER)
BACKEND = os.environ.get("RETENTION_TEST_CELERY_RESULT_BACKEND", DEFAULT_BACKEND)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def services() -> None:
    """RabbitMQ and Redis answer; else skip, and under CI=true fail."""
    from kombu.utils.url import url_to_parts

    missing = []
    for name, url in (("RabbitMQ", BROKER), ("Redis", BACKEND)):
        parts = url_to_parts(url)
        if not _answers(parts.hostname or "127.0.0.1", parts.port or (5672 if name == "RabbitMQ" else 6379)):
            missing.append(f"{name} at {parts.hostname}:{parts.port}")
    if not missing:
        return
    reason = f"{' and '.join(missing)} unreachable"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own, deleted afterwards."""
    name = f"retention-test-{uuid.uuid4().hex[:12]}"
    yield name
    from kombu import Connection

    with Connection(BROKER, connect_timeout=5) as conn, suppress(Exception):  # not declared if the test failed early
        conn.default_channel.queue_delete(name)


class Workers:
    """`retention worker` processes of one test, each in its own process group."""

    def __init__(self, fleet_file: Path, queue: str, env: dict[str, str], log_dir: Path) -> None:
        self.args = [
            sys.executable, "-m", "retention.cli", "--log-format", "json", "worker",
            "--targets", str(fleet_file), "--queue", queue, "--concurrency", "1",
        ]  # fmt: skip
        self.env = env
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.started.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children (no warm shutdown, no acknowledgement)."""
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                self.kill(process)


def _running_run_with_entries(url: str) -> str | None:
    """The id of a run still 'running' that has committed ledger entries, if any."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT r.id FROM retention_runs r JOIN retention_ledger l ON l.run_id = r.id "
                    "WHERE r.status = 'running' AND r.mode = 'run' GROUP BY r.id HAVING count(*) >= 3"
                )
            ).first()
            return None if row is None else str(row[0])
    except sa.exc.DBAPIError:
        return None  # tables being created, or a lock on SQLite
    finally:
        engine.dispose()


def test_a_worker_killed_mid_task_is_replaced_and_nothing_happens_twice(
    services: None, queue: str, tmp_path: Path
) -> None:
    """4 fleet targets via Celery; SIGKILL the worker mid-run; a second worker finishes; all as golden runs."""
    pack = write_pack(tmp_path)
    with ExitStack() as stack:

        def fresh(dialect: str) -> str:
            return stack.enter_context(isolated_database(dialect, tmp_path))

        # The first target is slowed (a trigger sleeps at each DELETE of visits) and queued
        # first, so the worker is killed inside its run.
        plan = [("slow-c", "postgresql", 31, 60, 0.12), ("slow-d", "postgresql", 32, 30, 0.0)]
        plan += [("shop-a", "sqlite", 33, 30, 0.0), ("shop-b", "sqlite", 34, 30, 0.0)]
        worlds: dict[str, World] = {
            name: build_target(name, fresh(d), seed, n=n, slow=slow) for name, d, seed, n, slow in plan
        }
        goldens = {name: golden(worlds[name], fresh(d), seed, n, tmp_path) for name, d, seed, n, _ in plan}
        fleet_file, urls = write_fleet(tmp_path, [(n, w.url) for n, w in worlds.items()], pack)
        env = {
            **os.environ,
            **urls,
            "RETENTION_PSEUDONYM_KEY": SECRET,
            "RETENTION_CELERY_BROKER_URL": BROKER,
            "RETENTION_CELERY_RESULT_BACKEND": BACKEND,
        }
        workers = Workers(fleet_file, queue, env, tmp_path)
        stack.callback(workers.close)
        first = workers.start()
        client = subprocess.Popen(
            [
                sys.executable, "-m", "retention.cli", "fleet", "run", "--via", "celery", "--queue", queue,
                "--targets", str(fleet_file), "--as-of", AS_OF, "--json", "--timeout", "240",
            ],
            env={k: v for k, v in env.items() if not k.startswith("FLEET_URL_")},  # the sender knows no URL
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        stack.callback(lambda: client.poll() is None and client.kill())

        deadline = time.monotonic() + 90
        killed_run = None
        while killed_run is None:
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text(errors="replace")[-3000:]
            assert first.poll() is None, (tmp_path / "worker-0.log").read_text(errors="replace")[-3000:]
            killed_run = _running_run_with_entries(worlds["slow-c"].url)
            time.sleep(0.05)
        workers.kill(first)
        workers.start()

        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err.decode(errors="replace")[-3000:]
        report = json.loads(out)
        assert report["exit_code"] == 0
        assert [t["target"] for t in report["targets"]] == list(worlds)
        assert all(t["status"] == "succeeded" for t in report["targets"]), report

        killed = runs(worlds["slow-c"].url)
        assert killed[0] == (killed_run, "abandoned") and killed[1][1] == "succeeded", killed
        for name, world in worlds.items():
            expected = goldens[name]
            assert tables(world.url) == tables(expected.url), name
            assert moves(world) == moves(expected), name
            assert no_record_moved_twice(world), name
            visits = {key for (dataset, key, _), _ in moves(world).items() if dataset == "visits"}
            assert visits == deleted_visits(world) and visits, name
            assert ledger_ok(world.url), name
            outcome = next(t for t in report["targets"] if t["target"] == name)
            assert outcome["run_id"] == runs(world.url)[-1][0]
        # The rerun did only what the killed run had left: together they make the golden run.
        done_by_rerun = next(t for t in report["targets"] if t["target"] == "slow-c")["transitions"]
        assert 0 < done_by_rerun < sum(moves(goldens["slow-c"]).values())


def test_shards_on_celery_survive_a_killed_worker(services: None, queue: str, tmp_path: Path) -> None:
    """`run --shards 4 --via celery`; SIGKILL the worker mid-shard; a second one finishes; as one golden run."""
    pack = write_pack(tmp_path)
    with ExitStack() as stack:
        url = stack.enter_context(isolated_database("postgresql", tmp_path))
        world = build_target("shop", url, 51, n=80, slow=0.12)
        expected = golden(world, stack.enter_context(isolated_database("postgresql", tmp_path)), 51, 80, tmp_path)
        env = {
            **os.environ,
            "RETENTION_PSEUDONYM_KEY": SECRET,
            "RETENTION_CELERY_BROKER_URL": BROKER,
            "RETENTION_CELERY_RESULT_BACKEND": BACKEND,
        }
        worker_env = {**env, "RETENTION_DATABASE_URL": url}  # the worker's own setting; the sender has none
        args = [
            sys.executable, "-m", "retention.cli", "--log-format", "json", "worker",
            "--rules", str(pack), "--queue", queue, "--concurrency", "1",
        ]  # fmt: skip
        workers = Workers(tmp_path / "unused.yaml", queue, worker_env, tmp_path)
        workers.args = args
        stack.callback(workers.close)
        first = workers.start()
        client = subprocess.Popen(
            [
                sys.executable, "-m", "retention.cli", "run", "--rules", str(pack), "--shards", "4",
                "--via", "celery", "--queue", queue, "--as-of", AS_OF, "--format", "json", "--timeout", "240",
            ],
            env={k: v for k, v in env.items() if k != "RETENTION_DATABASE_URL"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        stack.callback(lambda: client.poll() is None and client.kill())

        deadline = time.monotonic() + 90
        while _running_run_with_entries(url) is None:
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text(errors="replace")[-3000:]
            assert first.poll() is None, (tmp_path / "worker-0.log").read_text(errors="replace")[-3000:]
            time.sleep(0.05)
        workers.kill(first)
        workers.start()

        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err.decode(errors="replace")[-3000:]
        report = json.loads(out)
        assert [s["target"] for s in report["shards"]] == [f"shard {i}/4" for i in range(4)]
        assert all(s["status"] == "succeeded" for s in report["shards"]), report
        assert tables(url) == tables(expected.url)
        assert moves(world) == moves(expected)
        assert no_record_moved_twice(world)
        visits = {key for (dataset, key, _), _ in moves(world).items() if dataset == "visits"}
        assert visits == deleted_visits(world) and visits
        assert ledger_ok(url)
        # The killed shard's committed batches were not redone: the reported shards did less than the whole.
        assert 0 < sum(s["transitions"] for s in report["shards"]) < sum(moves(expected).values())
        # ...yet the run's totals, committed batch by batch (issue 25), are the golden run's.
        group_run = report["shards"][0]["run_id"]
        assert _run_counts(url, group_run) == _run_counts(expected.url, runs(expected.url)[-1][0])
        # The dispatcher reports the shard that ran twice (the redelivered task).
        again = [s for s in report["shards"] if s["attempts"] > 1]
        assert len(again) == 1 and again[0]["redelivered"], report


def _run_counts(url: str, run_id: str) -> dict[str, dict[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            text = conn.execute(
                sa.text("SELECT counts FROM retention_runs WHERE id = :id"), {"id": run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    return {name: per for name, per in json.loads(text).items() if per}
