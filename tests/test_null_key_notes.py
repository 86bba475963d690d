"""Where and at what cost plan and run say why an erasure request stays open (review ``fixnull2``).

Should-fix 1: plan asked every open request about every nullable-key dataset,
NULL keys or not (SQLite reflects every key as nullable). Should-fix 2: a
sharded run dropped the note. Should-fix 3: ``plan --dataset`` and
``run --dataset`` noted different datasets.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from scaffold import loaded_pack, yearly_dataset
from test_null_key_requests import AS_OF, NEW, _events, _subject_with_a_null_key, _why, erasing, run_command
from test_set_purge_batches import KEY

from retention.engine import execute
from retention.engine.shards import ShardSpec
from retention.policy import LoadedPack
from retention.store import tables as store
from retention.subjects import events as subjects

OTHER = yearly_dataset("other", "nn_other", "one year")


def _statements(engine: sa.Engine, loaded: LoadedPack) -> int:
    """How many statements one plan sends."""
    sent = [0]

    def count(*_: Any) -> None:
        sent[0] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        execute.plan(engine, loaded, AS_OF)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return sent[0]


def test_plan_asks_nothing_per_request_of_a_dataset_without_null_keys(migrated: sa.Engine) -> None:
    """A nullable key with no NULL row: 30 more open requests add no statement to plan (before: one each)."""
    events = _events(migrated)
    with migrated.begin() as conn:
        conn.execute(
            events.insert(),
            [{"n": n, "id": f"k{n}", "user_id": f"u{n}", "name": "x", "active": 1, "collected": NEW} for n in range(5)],
        )
    loaded = loaded_pack(erasing("delete"))

    def ask(subjects_: range) -> None:
        with migrated.begin() as conn:
            for i in subjects_:
                subjects.add_request(
                    conn, subject_key=f"s{i}", received=dt.date(2024, 12, 15), pack=loaded.pack, secret=KEY
                )

    ask(range(1))
    execute.plan(migrated, loaded, AS_OF)  # first reads (reflection) out of the way
    one = _statements(migrated, loaded)
    ask(range(1, 31))
    many = _statements(migrated, loaded)
    assert many == one
    assert execute.plan(migrated, loaded, AS_OF).notes == []


def test_a_sharded_run_keeps_the_note(migrated: sa.Engine) -> None:
    """The shard that closes the group settles the requests, so it carries the note; the other has none."""
    _, text, request = _subject_with_a_null_key(migrated, "delete")
    loaded = loaded_pack(text)
    results = [
        execute.run_shard(migrated, loaded, AS_OF, secret=KEY, shard=ShardSpec(i, 2), run_group="g") for i in range(2)
    ]
    assert [r.notes for r in results] == [[], [_why(request)]]
    with migrated.connect() as conn:
        outcome = conn.execute(sa.select(store.erasure_requests.c.status, store.erasure_requests.c.outcome)).all()
    assert outcome == [("open", None)]


def test_run_with_shards_prints_the_note(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """`run --shards 2` prints the note line `run` prints, once, with no subject or name."""
    _, text, request = _subject_with_a_null_key(migrated, "delete")
    out = run_command(db_url, tmp_path, text, "--shards", "2", "--parallel", "1")
    assert out.exit_code == 0, out.output
    assert out.output.count(f"note: {_why(request)}") == 1, out.output
    assert "u1" not in out.output and "name-" not in out.output


def test_plan_and_run_note_the_same_datasets_under_dataset(migrated: sa.Engine) -> None:
    """`--dataset other`: both still say that events' NULL-key row keeps the request open (it does, in both)."""
    _, text, request = _subject_with_a_null_key(migrated, "delete")
    other = sa.Table(
        "nn_other",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    other.create(migrated)
    loaded = loaded_pack(text + OTHER)
    planned = execute.plan(migrated, loaded, AS_OF, datasets=["other"])
    ran = execute.run(migrated, loaded, AS_OF, secret=KEY, datasets=["other"])
    assert planned.notes == ran.notes == [_why(request)]
