"""Progress committed with the data (issue 25, check 1): a killed shard's work is counted exactly once.

The golden run is one whole run on a copy of the shop of tests/test_shards.py
(small batches, so each shard takes many transactions). On another copy each
shard of a group of three is started in a process of its own that SIGKILLs
itself after its k-th committed batch, and then run again: the end data,
record states, the ledger's moves per record, the run's totals per dataset
and transition and every erasure request's outcome and ``erasure_processed``
count must equal the golden run's, as the shards' attempts are recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import isolated_database
from test_shards import AS_OF, PACK, SECRET, outcome, prepare

from retention.engine import execute
from retention.engine.shards import ShardSpec
from retention.errors import LockHeldError
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, load_file
from retention.store import tables as store

SMALL_BATCHES = PACK.replace("timezone: UTC\n", "timezone: UTC\nbatch_size: 3\n")
GROUP = "night-killed"

KILLED_SHARD = """
import datetime as dt, os, signal, sys
from pathlib import Path
from retention.engine import execute
from retention.store.config import create_engine
from retention.policy import load_file
from retention.engine.shards import ShardSpec

url, pack, index, count, after, as_of, secret = sys.argv[1:]
done = [0]


def on_batch(_batch):
    done[0] += 1
    if done[0] >= int(after):
        os.kill(os.getpid(), signal.SIGKILL)


execute.run_shard(
    create_engine(url), load_file(Path(pack)), dt.datetime.fromisoformat(as_of), secret=secret.encode(),
    shard=ShardSpec(int(index), int(count)), run_group="night-killed", on_batch=on_batch,
)
"""


def _erasure_entries(engine: sa.Engine) -> list[tuple[int, str, int]]:
    """(request id, outcome, count) of every ``erasure_processed`` entry."""
    lg = store.ledger
    with engine.connect() as conn:
        rows = conn.execute(sa.select(lg.c.detail, lg.c.count).where(lg.c.transition == "erasure_processed")).all()
    entries = []
    for detail, count in rows:
        data = json.loads(detail)
        entries.append((int(data["erasure_request"]), str(data["outcome"]), int(count)))
    return sorted(entries)


def _golden(url: str, loaded: LoadedPack) -> dict[str, Any]:
    engine = prepare(url, loaded)
    try:
        result = execute.run(engine, loaded, AS_OF, secret=SECRET)
        assert result.status == "succeeded"
        assert result.batches > 20  # many transactions per shard: a kill lands among them
        return {
            "totals": {n: p for n, p in result.counts.items() if p},
            "outcome": outcome(engine),
            "erasures": _erasure_entries(engine),
        }
    finally:
        engine.dispose()


def _run_shard_again(engine: sa.Engine, loaded: LoadedPack, index: int) -> execute.RunResult:
    """The rerun; the killed session's lock may take a moment to go on a busy server."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(index, 3), run_group=GROUP)
        except LockHeldError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("after", [1, 4])
def test_a_killed_shard_rerun_counts_each_record_once(dialect: str, tmp_path: Path, after: int) -> None:
    pack = tmp_path / "small.yaml"
    pack.write_text(SMALL_BATCHES, encoding="utf-8")
    loaded = load_file(pack)
    for name in ("golden", "killed"):
        (tmp_path / name).mkdir()
    with isolated_database(dialect, tmp_path / "golden") as url:
        golden = _golden(url, loaded)
    # Subject 5's request erases records (in the first shard); subject 44 has none left.
    assert [e[1] for e in golden["erasures"]] == ["erased", "no records found"] and golden["erasures"][0][2] > 1
    with isolated_database(dialect, tmp_path / "killed") as url:
        engine = prepare(url, loaded)
        try:
            arguments = [AS_OF.isoformat(), SECRET.decode()]
            for index in range(3):
                killed = subprocess.run(
                    [sys.executable, "-c", KILLED_SHARD, url, str(pack), str(index), "3", str(after), *arguments],
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                assert killed.returncode == -9, killed.stderr[-2000:]
            reruns = [_run_shard_again(engine, loaded, index) for index in range(3)]
            assert [r.status for r in reruns] == ["succeeded"] * 3
            run_id = execute.group_run_id(GROUP)
            with engine.connect() as conn:
                row = conn.execute(sa.select(store.runs).where(store.runs.c.id == run_id)).one()
                attempts = list(
                    conn.execute(
                        sa.select(store.run_shards.c.attempts)
                        .where(store.run_shards.c.run_id == run_id)
                        .order_by(store.run_shards.c.shard)
                    ).scalars()
                )
            assert row.status == "succeeded"
            assert {n: p for n, p in json.loads(row.counts).items() if p} == golden["totals"]
            assert _erasure_entries(engine) == golden["erasures"]
            assert outcome(engine) == golden["outcome"]
            assert ledger.verify(engine).ok
            # The dispatcher and `status` see each shard's attempts: the kill and the rerun.
            assert [r.attempts for r in reruns] == [2, 2, 2] and attempts == [2, 2, 2]
        finally:
            engine.dispose()


def test_counts_are_written_with_each_batch(db_url: str, tmp_path: Path) -> None:
    """A whole run's counts are in retention_run_counts as they are in its result (one row per transition)."""
    pack = tmp_path / "small.yaml"
    pack.write_text(SMALL_BATCHES, encoding="utf-8")
    loaded = load_file(pack)
    engine = prepare(db_url, loaded)
    try:
        result = execute.run(engine, loaded, AS_OF, secret=SECRET)
        rc = store.run_counts
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(rc.c.dataset, rc.c.transition, rc.c.count).where(
                    rc.c.run_id == result.run_id, rc.c.shard == store.WHOLE_RUN
                )
            ).all()
        written: dict[str, dict[str, int]] = {}
        for dataset, transition, count in rows:
            written.setdefault(dataset, {})[transition] = int(count)
        assert written == {n: p for n, p in result.counts.items() if p}
    finally:
        engine.dispose()
