"""Shard bounds (issue 25): computed once per group, in one ordered pass whatever N, NULL keys spread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_shards import AS_OF, PACK, SECRET, outcome, prepare

from retention.engine import execute, shard_run, shards
from retention.engine.plan import PlanContext, build_planners
from retention.engine.shards import ShardSpec
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, load_file
from retention.store.config import create_engine


def _statements(engine: sa.Engine, loaded: LoadedPack, count: int) -> int:
    """How many statements computing the bounds for ``count`` shards takes."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        with engine.connect() as conn:
            planners = build_planners(conn, PlanContext(loaded, AS_OF))
            seen.clear()
            shards.compute_bounds(conn, planners, count)
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    return len(seen)


def test_bounds_take_the_same_statements_for_any_number_of_shards(db_url: str, tmp_path: Path) -> None:
    """One ordered pass per key space: no statement per cut point (each of which walked the index from its start)."""
    path = tmp_path / "shards.yaml"
    path.write_text(PACK, encoding="utf-8")
    loaded = load_file(path)
    engine = prepare(db_url, loaded)
    try:
        assert _statements(engine, loaded, 2) == _statements(engine, loaded, 64) == _statements(engine, loaded, 1024)
    finally:
        engine.dispose()


def test_shards_starting_together_compute_the_bounds_once(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shards.yaml"
    path.write_text(PACK, encoding="utf-8")
    loaded = load_file(path)
    engine = prepare(db_url, loaded)
    calls: list[int] = []
    real = shard_run.compute_bounds

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(shard_run, "compute_bounds", counted)
    errors: list[BaseException] = []
    results: list[execute.RunResult] = []

    def one(index: int) -> None:
        own = create_engine(db_url)
        try:
            results.append(
                execute.run_shard(own, loaded, AS_OF, secret=SECRET, shard=ShardSpec(index, 4), run_group="race")
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert sorted(r.status for r in results) == ["succeeded"] * 4
        assert len(calls) == 1
        assert ledger.verify(engine).ok
        assert outcome(engine)["states"]  # the group ran and closed
    finally:
        engine.dispose()
