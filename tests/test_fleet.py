"""Fleets of databases run locally (issue 16, check 3): one unit per target, the worst status wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import isolated_database
from fleet_world import (
    AS_OF,
    SECRET,
    UNREACHABLE_URL,
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
from prometheus_client.parser import text_string_to_metric_families

from retention.cli import main
from retention.ops.fleet import TargetOutcome, load_fleet, worst_exit


def _fleet_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retention.cli", "fleet", "run", *args],
        env={**os.environ, **env, "RETENTION_PSEUDONYM_KEY": SECRET},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_fleet_with_an_unreachable_target_runs_the_others_and_exits_3(tmp_path: Path) -> None:
    """5 targets (SQLite files, PostgreSQL schemas, one unreachable): 4 complete as golden runs do; exit 3."""
    pack = write_pack(tmp_path)
    with ExitStack() as stack:

        def fresh(dialect: str) -> str:
            return stack.enter_context(isolated_database(dialect, tmp_path))

        plan = [("shop-a", "sqlite", 11), ("shop-b", "sqlite", 12), ("tenant-c", "postgresql", 13)]
        plan.append(("tenant-d", "postgresql", 14))
        worlds: dict[str, World] = {name: build_target(name, fresh(d), seed, n=25) for name, d, seed in plan}
        goldens = {name: golden(worlds[name], fresh(d), seed, 25, tmp_path) for name, d, seed in plan}
        targets = [(name, w.url) for name, w in worlds.items()]
        targets.insert(2, ("tenant-gone", UNREACHABLE_URL))
        fleet_file, env = write_fleet(tmp_path, targets, pack, secret_files=frozenset({"shop-b"}))
        metrics = tmp_path / "fleet.prom"

        first = _fleet_cli(
            "--targets", str(fleet_file), "--as-of", AS_OF, "--json", "--metrics-file", str(metrics), env=env
        )
        assert first.returncode == 3, first.stderr[-2000:]
        report = json.loads(first.stdout)
        assert report["exit_code"] == 3
        by_name = {t["target"]: t for t in report["targets"]}
        assert list(by_name) == [name for name, _ in targets]  # the file's order
        assert by_name["tenant-gone"]["status"] == "unreachable"
        assert by_name["tenant-gone"]["exit_code"] == 3
        assert "127.0.0.1" not in first.stdout + first.stderr  # no URL in output, not even masked

        for name, world in worlds.items():
            outcome = by_name[name]
            assert (outcome["status"], outcome["exit_code"]) == ("succeeded", 0), outcome
            expected = goldens[name]
            assert tables(world.url) == tables(expected.url), name
            assert moves(world) == moves(expected), name
            assert no_record_moved_twice(world), name
            visits = {key for (dataset, key, _), _ in moves(world).items() if dataset == "visits"}
            assert visits == deleted_visits(world) and visits, name
            gone_logs = len(world.keys["logs"]) - len(tables(world.url)["logs"])
            assert moves(world)[("logs", "*", "active->purged")] == gone_logs > 0, name
            assert outcome["transitions"] == sum(moves(world).values())
            assert ledger_ok(world.url)
            assert [status for _, status in runs(world.url)] == ["succeeded"]
            assert outcome["run_id"] == runs(world.url)[0][0]

        families = {f.name: f for f in text_string_to_metric_families(metrics.read_text(encoding="utf-8"))}
        codes = {s.labels["target"]: s.value for s in families["retention_fleet_target_exit_code"].samples}
        assert codes == {name: (3.0 if name == "tenant-gone" else 0.0) for name, _ in targets}
        moved = families["retention_fleet_records_transitioned"].samples
        assert sum(s.value for s in moved if s.labels["target"] == "shop-a") == by_name["shop-a"]["transitions"]

        second = _fleet_cli("--targets", str(fleet_file), "--as-of", AS_OF, env=env)
        assert second.returncode == 3
        assert "fleet: 1 of 5 targets failed: tenant-gone (exit 3)" in " ".join(second.stderr.split())
        assert "tenant-gone" in second.stdout and "unreachable" in second.stdout
        for name in worlds:
            assert len(runs(worlds[name].url)) == 2  # a second run, which had nothing left to do
            assert moves(worlds[name]) == moves(goldens[name])


def test_the_worst_status_wins() -> None:
    """Config beats ledger beats failure beats partial beats locked beats guarded beats success."""

    def worst(*codes: int) -> int:
        return worst_exit([TargetOutcome(str(i), "x", c) for i, c in enumerate(codes)])

    assert worst(0, 0) == 0
    assert worst(0, 4, 5) == 5
    assert worst(4, 3, 5, 0) == 3
    assert worst(3, 1) == 1
    assert worst(1, 6, 3) == 6
    assert worst(6, 2, 0) == 2
    assert worst() == 0


FLEET_ERRORS = [
    (
        "targets:\n  - name: a\n    database: postgresql://u:hunter2@db/shop\n    pack: p.yaml\n",
        "fleet.yaml:3: targets[0].database: a URL or key is never written in the fleet file; "
        "write {env: VARIABLE} or {file: PATH} instead",
    ),
    (
        "targets:\n  - name: a\n    database: {env: A}\n    pack: p.yaml\n    timezone: Mars/Olympus\n",
        "fleet.yaml:5: targets[0].timezone: unknown timezone 'Mars/Olympus'; "
        "use an IANA name such as Europe/Paris or UTC",
    ),
    (
        "targets:\n  - name: a\n    database: {env: A}\n    pack: p.yaml\n    packs: q\n",
        "fleet.yaml:5: unknown key 'packs' in targets[0]; valid: name, database, pack, pack_id, archive, "
        "pseudonym_key, timezone",
    ),
    (
        "targets:\n  - name: a\n    database: {env: A}\n    pack: p.yaml\n"
        "  - name: a\n    database: {file: a.url}\n    pack: p.yaml\n",
        "fleet.yaml:5: targets[1].name: target name 'a' appears twice",
    ),
    (
        "targets:\n  - name: a\n    database: {env: A, file: a.url}\n    pack: p.yaml\n",
        "fleet.yaml:3: targets[0].database: give exactly one of env (an environment variable) or file (a 0600 file)",
    ),
    ("targets:\n  - name: a\n    pack: p.yaml\n", "fleet.yaml:2: targets[0] is missing required key 'database'"),
    ("- a\n- b\n", "fleet.yaml:1: a fleet file must be a mapping with 'targets'"),
]


@pytest.mark.parametrize(("text", "message"), FLEET_ERRORS)
def test_a_bad_fleet_file_is_one_line_with_its_place_and_exit_2(
    text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a pack: `file:line: sentence`, exit 2, and a URL written inline is never echoed."""
    monkeypatch.chdir(tmp_path)
    Path("fleet.yaml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["fleet", "run", "--targets", "fleet.yaml"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: {message}"]
    assert "hunter2" not in result.output


def test_an_unknown_target_and_a_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--target names a target of the file; a target whose variable is unset fails alone with exit 2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_UNSET_URL", raising=False)
    Path("fleet.yaml").write_text(
        "targets:\n  - name: a\n    database: {env: FLEET_UNSET_URL}\n    pack: builtin:marketplace\n",
        encoding="utf-8",
    )
    unknown = CliRunner().invoke(main, ["fleet", "run", "--targets", "fleet.yaml", "--target", "b"])
    assert unknown.exit_code == 2
    assert unknown.output.splitlines() == ["error: fleet.yaml: no target named 'b'; targets: a"]
    fleet = load_fleet(Path("fleet.yaml"))
    from retention.ops.fleet import run_target

    outcome = run_target(fleet, "a")
    assert (outcome.status, outcome.exit_code) == ("config error", 2)
    assert outcome.error == "target a: the database URL is not configured; set FLEET_UNSET_URL"


def test_a_target_whose_process_crashes_does_not_take_the_others_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target's process killed by SIGKILL is that target's failure (exit 1); the other target completes."""
    pack = write_pack(tmp_path)
    with ExitStack() as stack:
        urls = [stack.enter_context(isolated_database("sqlite", tmp_path)) for _ in range(2)]
        worlds = [build_target("crash-me", urls[0], 41), build_target("fine", urls[1], 42)]
        fleet_file, env = write_fleet(tmp_path, [(w.name, w.url) for w in worlds], pack)
        # The interpreter the pool starts, as a shell that SIGKILLs itself for one target.
        wrapper = tmp_path / "python"
        wrapper.write_text(
            f'#!/bin/sh\ncase "$*" in *\'"target": "crash-me"\'*) kill -9 $$;; esac\nexec {sys.executable} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o700)
        monkeypatch.setattr(sys, "executable", str(wrapper))
        for key, value in {**env, "RETENTION_PSEUDONYM_KEY": SECRET}.items():
            monkeypatch.setenv(key, value)
        from retention.ops.fleet import run_local

        outcomes = run_local(load_fleet(fleet_file), ["crash-me", "fine"], parallel=2, as_of=AS_OF)
        crashed, fine = outcomes
        assert (crashed.target, crashed.status, crashed.exit_code) == ("crash-me", "crashed", 1)
        assert crashed.error == "the target's process ended: killed by signal 9"
        assert (fine.target, fine.status, fine.exit_code) == ("fine", "succeeded", 0)
        assert fine.transitions == sum(moves(worlds[1]).values()) > 0
        assert runs(worlds[0].url) == []  # it never got as far as a run
        assert worst_exit(outcomes) == 1


def test_run_shards_locally_makes_the_single_run(tmp_path: Path) -> None:
    """`run --shards 3` here (child processes): the rows and ledger moves of one unsharded run, none twice."""
    pack = write_pack(tmp_path)
    with ExitStack() as stack:
        url = stack.enter_context(isolated_database("sqlite", tmp_path))
        world = build_target("shop", url, 61, n=25)
        expected = golden(world, stack.enter_context(isolated_database("sqlite", tmp_path)), 61, 25, tmp_path)
        result = subprocess.run(
            [
                sys.executable, "-m", "retention.cli", "run", "--rules", str(pack), "--db", url, "--shards", "3",
                "--as-of", AS_OF, "--format", "json",
            ],
            env={**os.environ, "RETENTION_PSEUDONYM_KEY": SECRET},
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout)
        assert [s["target"] for s in report["shards"]] == ["shard 0/3", "shard 1/3", "shard 2/3"]
        assert sum(s["transitions"] for s in report["shards"]) == sum(moves(expected).values())
        assert tables(url) == tables(expected.url)
        assert moves(world) == moves(expected)
        assert no_record_moved_twice(world)
        assert ledger_ok(url)
