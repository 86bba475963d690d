"""Shards within one database (issue 16, checks 1 and 4): the shards of a run group do what one run does.

Two identical copies of a small shop (people, orders that follow them by
subject, and text-keyed tokens without a subject) are brought to
records in several states by one ordinary run; then one copy gets a single
run and the other the N shards of a run group, one after the other or side
by side (threads with engines of their own, or processes started the way
the Kubernetes Indexed Job starts them). The expected outcome is the
single run on the other copy, and the plan the single run was checked
against: states, source rows, the ledger's per-record moves, erasure
requests, and ``ledger verify``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import db_templates
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import isolated_database, migrate_isolated
from ledger_view import record_moves
from test_deploy import sharded_container, sharded_cronjob

from retention.cli import main
from retention.engine import execute
from retention.engine.shards import ShardSpec, parse_shard
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, load_file
from retention.store import tables as store
from retention.store.config import create_engine
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"shards-test-key"
FIRST = dt.datetime(2021, 3, 1, tzinfo=UTC)  # brings records into later states
AS_OF = dt.datetime(2022, 1, 15, tzinfo=UTC)  # the run compared

PACK = """\
pack: shards
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  people:
    table: people
    key: id
    subject_key: id
    basis: policy
    keep:
      - clock: {column: last_seen, type: epoch}
        period: P1Y
    on_erasure: purged
    lifecycle:
      - to: inactive
        action: deactivate
        set: {disabled: 1}
      - to: purged
        after: P6M
        action: delete
  orders:
    table: orders
    key: id
    subject_key: person_id
    basis: policy
    follows: {dataset: people, on: {inactive: inactive, purged: purged}}
    keep:
      - clock: {column: placed, type: epoch}
        period: P2Y
    on_erasure: purged
    lifecycle:
      - to: inactive
      - to: purged
        after: P3M
        action: delete
  tokens:
    table: tokens
    key: token
    basis: policy
    keep:
      - clock: {column: issued, type: epoch}
        period: P90D
    lifecycle:
      - to: purged
        action: delete
"""


def _instant(rng: random.Random, start: dt.datetime, days: int) -> int:
    """Seconds since 1970 (epoch clocks: cheap to compare on SQLite, which stores datetimes as text)."""
    return int((start + dt.timedelta(days=rng.randrange(days), hours=rng.randrange(24))).timestamp())


def _rows() -> dict[str, list[dict[str, Any]]]:
    """The shop's rows, the same on every call."""
    rng = random.Random(16)
    base = dt.datetime(2018, 1, 1, tzinfo=UTC)
    people = [{"id": i, "last_seen": _instant(rng, base, 1460), "disabled": 0} for i in range(1, 61)]
    orders = [
        {"id": i, "person_id": None if i % 29 == 0 else rng.randrange(1, 61), "placed": _instant(rng, base, 1460)}
        for i in range(1, 151)
    ]
    tokens = sorted({f"t{rng.randrange(10**6):06d}" for _ in range(40)})
    token_rows = [{"token": t, "issued": _instant(rng, dt.datetime(2020, 6, 1, tzinfo=UTC), 580)} for t in tokens]
    return {"people": people, "orders": orders, "tokens": token_rows}


def _tables() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "people",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_seen", sa.BigInteger, index=True),
        sa.Column("disabled", sa.Integer, nullable=False),
    )
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("person_id", sa.Integer, index=True),
        sa.Column("placed", sa.BigInteger, index=True),
    )
    sa.Table(
        "tokens",
        md,
        sa.Column("token", sa.String(20), primary_key=True),
        sa.Column("issued", sa.BigInteger, index=True),
    )
    return md


KEYS = {name: [str(r.get("id", r.get("token"))) for r in rows] for name, rows in _rows().items()}


def prepare(url: str, loaded: LoadedPack) -> sa.Engine:
    """A copy of the shop after a first ordinary run, with an erasure request and a hold in place.

    Built once per session, database and pack (``db_templates.populated``) and
    copied into each test's empty database: the shop, its first run and the
    requests were most of each shard test (1-3 s a test). Built in place where
    there is no template (no pg_dump), the database is not empty, or its
    collation is not the template's.
    """
    engine = create_engine(url)
    dialect = db_templates.dialect_name(engine)
    template = db_templates.populated(
        dialect, f"shards-{loaded.digest}", lambda eng, _url, _folder: _shop(eng, loaded), isolated_database
    )
    with engine.connect() as conn:
        empty = not sa.inspect(conn).get_table_names()
        collation = db_templates.collation_of(conn)
    if template is None or not empty or template.collation != collation:
        _shop(engine, loaded)
    else:
        template.copy_into(engine)
    return engine


def _shop(engine: sa.Engine, loaded: LoadedPack) -> None:
    """The shop's tables and rows, a first run at FIRST, two erasure requests and a hold, in a migrated database."""
    migrate_isolated(engine)
    md = _tables()
    md.create_all(engine)
    with engine.begin() as conn:
        for name, rows in _rows().items():
            conn.execute(md.tables[name].insert(), rows)
    assert execute.run(engine, loaded, FIRST, secret=SECRET).status == "succeeded"
    with engine.begin() as conn:
        subjects.add_request(conn, subject_key="5", received=dt.date(2021, 6, 1), pack=loaded.pack, secret=SECRET)
        subjects.add_request(conn, subject_key="44", received=dt.date(2021, 6, 1), pack=loaded.pack, secret=SECRET)
        subjects.place_hold(
            conn, scope="subject", reason="dispute", placed_by="test", secret=SECRET, subject_key="7", pack=loaded.pack
        )


def outcome(engine: sa.Engine) -> dict[str, Any]:
    """Everything a run leaves behind that must not depend on how it was split."""
    md = _tables()
    rs, er = store.record_states, store.erasure_requests
    with engine.connect() as conn:
        tables = {
            name: sorted(tuple(str(v) for v in row) for row in conn.execute(sa.select(table)))
            for name, table in md.tables.items()
        }
        states = sorted(
            (r.dataset, r.record_key, r.state, r.since)
            for r in conn.execute(sa.select(rs.c.dataset, rs.c.record_key, rs.c.state, rs.c.since))
        )
        requests = sorted((r.subject_key, r.status, r.outcome) for r in conn.execute(sa.select(er)))
    moves = Counter((d, k, t, due) for d, k, t, due in record_moves(engine, SECRET, KEYS))
    return {"tables": tables, "states": states, "requests": requests, "moves": moves}


def _totals(per_shard: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for counts in per_shard:
        for name, per in counts.items():
            mine = total.setdefault(name, {})
            for transition, n in per.items():
                mine[transition] = mine.get(transition, 0) + n
    return {name: per for name, per in total.items() if per}


_REFERENCE: dict[str, tuple[dict[str, dict[str, int]], dict[str, Any]]] = {}


@pytest.fixture
def reference(dialect: str, tmp_path: Path) -> tuple[LoadedPack, dict[str, dict[str, int]], dict[str, Any]]:
    """(pack, the plan's counts, the outcome) of one ordinary run on a copy (made once per database)."""
    path = tmp_path / "shards.yaml"
    path.write_text(PACK, encoding="utf-8")
    loaded = load_file(path)
    if dialect not in _REFERENCE:
        with isolated_database(dialect, tmp_path) as url:
            _REFERENCE[dialect] = _single_run(url, loaded)
    return loaded, *_REFERENCE[dialect]


def _single_run(url: str, loaded: LoadedPack) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    engine = prepare(url, loaded)
    try:
        planned = execute.plan(engine, loaded, AS_OF).transitions
        result = execute.run(engine, loaded, AS_OF, secret=SECRET)
        assert result.status == "succeeded"
        assert {n: p for n, p in result.counts.items() if p} == {n: p for n, p in planned.items() if p}
        # The copy moves records of every kind: sanity of the fixture, not of the engine.
        assert {"people", "orders", "tokens"} <= {n for n, p in planned.items() if p}
        assert sum(planned["orders"].values()) > 10 and "inactive->purged" in planned["people"]
        return {n: p for n, p in planned.items() if p}, outcome(engine)
    finally:
        engine.dispose()


def _group_status(engine: sa.Engine, group: str) -> tuple[str, list[str]]:
    run_id = execute.group_run_id(group)
    with engine.connect() as conn:
        status = conn.execute(sa.select(store.runs.c.status).where(store.runs.c.id == run_id)).scalar_one()
        shards = conn.execute(
            sa.select(store.run_shards.c.status)
            .where(store.run_shards.c.run_id == run_id)
            .order_by(store.run_shards.c.shard)
        ).scalars()
        return status, list(shards)


@pytest.mark.parametrize("shards,parallel", [(1, False), (3, False), (3, True), (7, False), (7, True)])
def test_shards_make_the_single_run(
    dialect: str,
    tmp_path: Path,
    reference: tuple[LoadedPack, dict[str, dict[str, int]], dict[str, Any]],
    shards: int,
    parallel: bool,
) -> None:
    """N shards, one after the other or side by side, leave what one run leaves; the plan counts their union."""
    loaded, planned, expected = reference
    with ExitStack() as stack:
        url = stack.enter_context(isolated_database(dialect, tmp_path))
        engine = prepare(url, loaded)
        stack.callback(engine.dispose)
        results: list[execute.RunResult] = []
        errors: list[BaseException] = []

        def one(index: int) -> None:
            own = create_engine(url) if parallel else engine
            try:
                results.append(
                    execute.run_shard(
                        own, loaded, AS_OF, secret=SECRET, shard=ShardSpec(index, shards), run_group="night-1"
                    )
                )
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)
            finally:
                if parallel:
                    own.dispose()

        if parallel:
            threads = [threading.Thread(target=one, args=(i,)) for i in range(shards)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for index in range(shards):
                one(index)
        assert not errors, errors
        assert sorted(r.status for r in results) == ["succeeded"] * shards, [r.failures for r in results]
        assert _totals([r.counts for r in results]) == planned
        assert outcome(engine) == expected
        assert _group_status(engine, "night-1") == ("succeeded", ["succeeded"] * shards)
        assert ledger.verify(engine).ok
        # A shard run again finds nothing left to do and leaves the group closed.
        again = execute.run_shard(engine, loaded, AS_OF, secret=SECRET, shard=ShardSpec(0, shards), run_group="night-1")
        assert again.status == "succeeded" and not any(again.counts.values())
        assert _group_status(engine, "night-1")[0] == "succeeded"


def _expand(arg: str, env: dict[str, str]) -> str:
    """``$(VAR)`` in a container argument, expanded from the container's environment as the kubelet does."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


def test_indexed_job_simulation(
    dialect: str,
    tmp_path: Path,
    reference: tuple[LoadedPack, dict[str, dict[str, int]], dict[str, Any]],
) -> None:
    """The Indexed Job's pods, simulated: N processes with the manifest's own arguments match check 1.

    Each gets JOB_COMPLETION_INDEX and the Job's name as the kubelet gives
    them, and ``$(VAR)`` in the arguments is expanded the kubelet's way.
    """
    loaded, planned, expected = reference
    job = sharded_cronjob()["spec"]["jobTemplate"]["spec"]
    shards = job["completions"]
    group = "retention-sharded-29012345"  # the Job the CronJob made for one night
    args = list(sharded_container()["args"])
    args[args.index("--rules") + 1] = str(tmp_path / "shards.yaml")
    args += ["--as-of", AS_OF.date().isoformat()]
    with isolated_database(dialect, tmp_path) as url:
        engine = prepare(url, loaded)
        try:
            base = {**os.environ, "RETENTION_DATABASE_URL": url, "RETENTION_PSEUDONYM_KEY": SECRET.decode()}
            pods = []
            for index in range(shards):
                env = {**base, "JOB_COMPLETION_INDEX": str(index), "RETENTION_RUN_GROUP": group}
                command = [_expand(arg, env) for arg in args]
                pods.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "retention.cli", *command],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            finished = [pod.communicate(timeout=300) for pod in pods]
            for pod, (_, err) in zip(pods, finished, strict=True):
                assert pod.returncode == 0, err[-2000:]
            assert outcome(engine) == expected
            assert _group_status(engine, group) == ("succeeded", ["succeeded"] * shards)
            assert ledger.verify(engine).ok
            with engine.connect() as conn:
                counts = conn.execute(
                    sa.select(store.runs.c.counts).where(store.runs.c.id == execute.group_run_id(group))
                ).scalar_one()
            assert {n: p for n, p in json.loads(counts).items() if p} == planned
        finally:
            engine.dispose()


def test_plan_shows_the_split(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """plan --shards N: per dataset and shard a key range; the shards' counts add up to the plan's."""
    path = tmp_path / "shards.yaml"
    path.write_text(PACK, encoding="utf-8")
    loaded = load_file(path)
    md = _tables()
    md.create_all(migrated)
    with migrated.begin() as conn:
        for name, rows in _rows().items():
            conn.execute(md.tables[name].insert(), rows)
    planned = execute.plan(migrated, loaded, AS_OF).transitions
    split = execute.plan_shards(migrated, loaded, AS_OF, 3)
    for name, per in planned.items():
        rows = [r for r in split if r["dataset"] == name]
        assert len(rows) == 3
        assert sum(r["records"] for r in rows) == len(_rows()[name])  # every record in exactly one shard
        assert sum(r["transitions"] for r in rows) == sum(per.values())
    people = [r for r in split if r["dataset"] == "people"]
    orders = [r for r in split if r["dataset"] == "orders"]
    # Orders travel with their person: the same ranges of the subject key.
    assert [(r["from"], r["below"]) for r in people] == [(r["from"], r["below"]) for r in orders]
    assert people[0]["from"] is None and people[-1]["below"] is None
    # The subject space is cut at the quantiles of its largest dataset, orders (NULL subjects left out).
    subject_keys = sorted(r["person_id"] for r in _rows()["orders"] if r["person_id"] is not None)
    third = len(subject_keys) // 3
    assert [r["below"] for r in people[:2]] == [subject_keys[third], subject_keys[len(subject_keys) * 2 // 3]]
    # Orders without a person (NULL subject) are spread by their own id, not all left to shard 0 (issue 25):
    # ids 29, 58, 87, 116, 145 cut at their own thirds (58 and 116).
    nulls = []
    for row in orders:
        low, high = row["from"], row["below"]
        in_range = [
            r for r in _rows()["orders"]
            if r["person_id"] is not None and (low is None or r["person_id"] >= low)
            and (high is None or r["person_id"] < high)
        ]  # fmt: skip
        nulls.append(row["records"] - len(in_range))
    assert nulls == [1, 2, 2]
    tokens = sorted(KEYS["tokens"])  # text keys: binary order
    cuts = [tokens[len(tokens) // 3], tokens[len(tokens) * 2 // 3]]
    assert [r["below"] for r in split if r["dataset"] == "tokens"][:2] == cuts

    result = CliRunner().invoke(
        main, ["plan", "--rules", str(path), "--db", db_url, "--shards", "3", "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("dataset,shard,key_space,from,below,records,transitions")
    assert len(lines) == 1 + 3 * len(loaded.pack.datasets) and ",2/3," in result.output


def test_shard_option_errors() -> None:
    """--shard I/N: a one-line error for anything else."""
    assert parse_shard("2/7") == ShardSpec(2, 7)
    for bad in ("7/7", "1", "a/3", "-1/3", "0/0", "0/1025", "0/100000000000"):  # N bounded as --shards (issue 28)
        result = CliRunner().invoke(main, ["run", "--rules", "builtin:marketplace", "--shard", bad])
        assert result.exit_code == 2
        assert "--shard" in result.output and "Traceback" not in result.output


def test_a_shard_runs_once_at_a_time(migrated: sa.Engine, dialect: str, tmp_path: Path) -> None:
    """A shard's lock keeps a second process off that shard, not off the others; a whole run waits for shards."""
    from retention.errors import LockHeldError

    path = tmp_path / "shards.yaml"
    path.write_text(PACK, encoding="utf-8")
    loaded = load_file(path)
    md = _tables()
    md.create_all(migrated)
    with migrated.begin() as conn:
        for name, rows in _rows().items():
            conn.execute(md.tables[name].insert(), rows)
    with migrated.connect() as conn:
        held = execute.RunLock(conn, "another-process", ShardSpec(1, 3))
        held.acquire()
        try:
            with pytest.raises(LockHeldError, match="shard 1/3"):
                execute.run_shard(migrated, loaded, FIRST, secret=SECRET, shard=ShardSpec(1, 3), run_group="g")
            other = execute.run_shard(migrated, loaded, FIRST, secret=SECRET, shard=ShardSpec(2, 3), run_group="g")
            assert other.status == "succeeded" and any(other.counts.values())
            if dialect != "mariadb":  # MariaDB's named locks have no shared mode (docs/scaling.md)
                with pytest.raises(LockHeldError):
                    execute.run(migrated, loaded, FIRST, secret=SECRET)
        finally:
            held.release()
    # The group is not finished while shards 0 and 1 have not run.
    assert _group_status(migrated, "g") == ("running", ["succeeded"])
