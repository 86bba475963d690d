"""One exclusion rule for whole runs and shard groups (issue 25, check 2), on every database.

A whole run is refused (exit 5) while a run group is open, whether its
shards' processes live (a shard's lock held elsewhere) or are gone; shards
are refused while a whole run holds the database. The group is closed by
its last shard, or by ``run-groups --close-stale`` only once no process
holds any of its shards; ``ledger verify`` passes throughout.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_shards import AS_OF, PACK, SECRET, prepare

from retention.cli import main
from retention.engine import execute
from retention.engine.shards import ShardSpec
from retention.errors import ConfigError, LockHeldError
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, load_file
from retention.store import tables as store

LATER = AS_OF + dt.timedelta(days=1)


def _pack(tmp_path: Path) -> tuple[Path, LoadedPack]:
    path = tmp_path / "shards.yaml"
    path.write_text(PACK, encoding="utf-8")
    return path, load_file(path)


def _group(engine: sa.Engine, group: str) -> tuple[str, list[tuple[int, str]]]:
    run_id = execute.group_run_id(group)
    rs = store.run_shards
    with engine.connect() as conn:
        status = conn.execute(sa.select(store.runs.c.status).where(store.runs.c.id == run_id)).scalar_one()
        shards = conn.execute(sa.select(rs.c.shard, rs.c.status).where(rs.c.run_id == run_id).order_by(rs.c.shard))
        return status, [(int(s), str(t)) for s, t in shards]


def _cli_run(path: Path, url: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        ["run", "--rules", str(path), "--db", url, "--as-of", LATER.date().isoformat(), *extra],
        env={"RETENTION_PSEUDONYM_KEY": SECRET.decode()},
    )
    return result.exit_code, result.output


def test_whole_run_refused_while_a_group_is_open(db_url: str, tmp_path: Path) -> None:
    path, loaded = _pack(tmp_path)
    engine = prepare(db_url, loaded)
    try:
        shard = execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(1, 3), run_group="g")
        assert shard.status == "succeeded"
        # Shard 0's process lives (it holds its lock); shard 2 has not started.
        with engine.connect() as conn:
            live = execute.RunLock(conn, "another-process", ShardSpec(0, 3))
            live.acquire()
            try:
                # (SQLite sees the live shard's lock row first; the others, the open group.)
                with pytest.raises(LockHeldError, match=r"run group 'g' is open|another retention run holds"):
                    execute.run(engine, loaded, LATER, secret=SECRET)
                code, output = _cli_run(path, db_url)
                assert code == 5 and "Traceback" not in output, output
            finally:
                live.release()
        # No process holds any shard now; the group is still open, and still refuses a whole run.
        with pytest.raises(LockHeldError, match="run group 'g' is open"):
            execute.run(engine, loaded, LATER, secret=SECRET)
        code, output = _cli_run(path, db_url)
        assert code == 5 and "run group 'g' is open (1 of 3 shards done)" in output, output
        assert _group(engine, "g") == ("running", [(1, "succeeded")])  # not marked abandoned
        assert ledger.verify(engine).ok
        for index in (0, 2):
            assert (
                execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(index, 3), run_group="g").status
                == "succeeded"
            )
        assert _group(engine, "g") == ("succeeded", [(0, "succeeded"), (1, "succeeded"), (2, "succeeded")])
        # Closed by its last shard: whole runs go on.
        assert execute.run(engine, loaded, LATER, secret=SECRET).status == "succeeded"
        assert ledger.verify(engine).ok
    finally:
        engine.dispose()


def test_shards_refused_while_a_whole_run_holds_the_database(db_url: str, tmp_path: Path) -> None:
    path, loaded = _pack(tmp_path)
    engine = prepare(db_url, loaded)
    try:
        with engine.connect() as conn:
            whole = execute.RunLock(conn, "a-whole-run")
            whole.acquire()
            try:
                with pytest.raises(LockHeldError):
                    execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(0, 2), run_group="w")
                code, output = _cli_run(path, db_url, "--shard", "1/2", "--run-group", "w")
                assert code == 5, output
            finally:
                whole.release()
        assert ledger.verify(engine).ok
    finally:
        engine.dispose()


def test_close_stale_needs_every_shard_free(db_url: str, tmp_path: Path) -> None:
    _, loaded = _pack(tmp_path)
    engine = prepare(db_url, loaded)
    try:
        assert (
            execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(2, 3), run_group="night").status
            == "succeeded"
        )
        env = {"RETENTION_DATABASE_URL": db_url}
        listed = CliRunner().invoke(main, ["run-groups", "--format", "json"], env=env)
        assert listed.exit_code == 0, listed.output
        assert [(g["run_group"], g["shards"], g["done"]) for g in json.loads(listed.output)] == [("night", 3, 1)]
        with engine.connect() as conn:
            live = execute.RunLock(conn, "another-process", ShardSpec(1, 3))
            live.acquire()
            try:
                kept = CliRunner().invoke(main, ["run-groups", "--close-stale"], env=env)
                assert kept.exit_code == 0 and "night: left open: shard 1/3 is held by a live process" in kept.output
            finally:
                live.release()
        assert _group(engine, "night")[0] == "running"
        closed = CliRunner().invoke(main, ["run-groups", "--close-stale"], env=env)
        assert closed.exit_code == 0 and "night: closed: 1 of 3 shards done" in closed.output, closed.output
        assert _group(engine, "night") == ("abandoned", [(2, "succeeded")])
        with engine.connect() as conn:
            counts = conn.execute(
                sa.select(store.runs.c.counts).where(store.runs.c.id == execute.group_run_id("night"))
            ).scalar_one()
        assert any(json.loads(counts).values())  # what shard 2 committed
        # A closed group takes no more shards; whole runs go on.
        with pytest.raises(ConfigError, match="closed as abandoned"):
            execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(0, 3), run_group="night")
        assert execute.run(engine, loaded, LATER, secret=SECRET).status == "succeeded"
        assert ledger.verify(engine).ok
    finally:
        engine.dispose()
