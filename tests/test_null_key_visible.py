"""A person's rows whose key is NULL, seen everywhere (review of ``nullvis``'s brief).

1. Plan and run asked each open request about each dataset with NULL keys,
   one statement per request: a backlog made plan slower by a statement a
   request. Now one statement per dataset, grouped by request.
2. The run record kept no word of why a request stayed open, so the
   console's run page could not say it later.
3. The person page and ``explain`` said nothing of a person's NULL-key rows
   (and the person page listed one as a record whose key reads "None").
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from console_world import World, csrf_of, sign_in
from scaffold import loaded_pack
from test_null_key_requests import AS_OF, NEW, _events, _subject_with_a_null_key, _why, erasing
from test_set_purge_batches import KEY

from retention.cli import main
from retention.commands import explain_many
from retention.commands import person as people
from retention.commands.explain_many import explain_records
from retention.commands.person import person
from retention.commands.runs import explain_in
from retention.engine import execute
from retention.engine.null_keys import NullKeyNote, stored_anomalies
from retention.engine.plan import PlanContext, build_planners
from retention.engine.shards import ShardSpec
from retention.policy import LoadedPack
from retention.store import tables as store
from retention.subjects import events as subjects
from retention.web import create_app, pages

NO_KEY = "rows have no key (NULL): the engine cannot move or erase them"


def _loaded() -> LoadedPack:
    return loaded_pack(erasing("delete"))


def _many_subjects_with_null_keys(engine: sa.Engine, loaded: LoadedPack, subjects_: range) -> list[int]:
    """Per subject ``i``: ``i % 3 + 1`` NULL-key rows and an open request. Returns the requests' ids.

    No keyed row: plan's erasure pass would walk those in batches, which this test does not count.
    """
    events = sa.Table("ne_events", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.n), 0))).scalar_one() + 1
        rows: list[dict[str, Any]] = []
        for i in subjects_:
            for _ in range(i % 3 + 1):
                rows.append({"n": first + len(rows), "id": None, "user_id": f"u{i}", "name": "x", "collected": NEW})
        conn.execute(events.insert(), [{**r, "active": 1} for r in rows])
        for i in subjects_:
            received = dt.date(2024, 12, 15)
            subjects.add_request(conn, subject_key=f"u{i}", received=received, pack=loaded.pack, secret=KEY)
        er = store.erasure_requests
        return list(conn.execute(sa.select(er.c.id).order_by(er.c.id)).scalars())[-len(subjects_) :]


def _statements(engine: sa.Engine, loaded: LoadedPack) -> tuple[int, list[str]]:
    """How many statements one plan sends, and its notes."""
    sent = [0]

    def count(*_: Any) -> None:
        sent[0] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        notes = execute.plan(engine, loaded, AS_OF, record=False).notes
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return sent[0], notes


def _sentence(request: int, rows: int) -> str:
    return _why(request).replace(": 1 rows", f": {rows} rows")


def test_plan_asks_once_per_dataset_however_many_requests_a_null_key_holds_open(migrated: sa.Engine) -> None:
    """1 request, then 31: the same statements (before: one more per request), and a note for each, in id order."""
    _events(migrated)
    loaded = _loaded()
    ids = _many_subjects_with_null_keys(migrated, loaded, range(1))
    execute.plan(migrated, loaded, AS_OF, record=False)  # first reads (reflection) out of the way
    one, notes = _statements(migrated, loaded)
    assert notes == [_sentence(ids[0], 1)]
    ids += _many_subjects_with_null_keys(migrated, loaded, range(1, 31))
    many, notes = _statements(migrated, loaded)
    assert notes == [_sentence(request, i % 3 + 1) for i, request in enumerate(ids)]
    assert many == one


def test_the_run_record_keeps_why_a_request_stays_open(migrated: sa.Engine) -> None:
    """The run page says it from the record (ids and counts only); the anomalies table shows only anomalies."""
    _, text, request = _subject_with_a_null_key(migrated, "delete")
    result = execute.run(migrated, loaded_pack(text), AS_OF, secret=KEY)
    assert result.notes == [_why(request)]
    with migrated.connect() as conn:
        stored = json.loads(conn.execute(sa.select(store.runs.c.anomalies)).scalar_one())
        run = pages._run(conn, result.run_id)
    assert "u1" not in json.dumps(stored) and "name-" not in json.dumps(stored)
    # Written out: the stored form is what the run page and its readers parse (the anomaly counts and the request's).
    assert stored == {
        "events": {"future": 0, "invalid": 0, "null": 0, "null_key": 1, f"null_key_request:{request}": 1, "zero": 0}
    }
    assert result.anomalies["events"]["null_key"] == 1
    assert run is not None
    assert run["open_requests"] == [_why(request)]
    assert run["anomaly_counts"]["events"]["null_key"] == 1
    assert not any(kind.startswith("null_key_request") for kind in run["anomaly_counts"]["events"])


def test_a_sharded_run_record_keeps_it_too(migrated: sa.Engine) -> None:
    """The group's record, written by the closing shard, keeps the note its shard printed."""
    _, text, request = _subject_with_a_null_key(migrated, "delete")
    loaded = loaded_pack(text)
    for i in range(2):
        result = execute.run_shard(migrated, loaded, AS_OF, secret=KEY, shard=ShardSpec(i, 2), run_group="g")
    with migrated.connect() as conn:
        run = pages._run(conn, result.run_id)
    assert run is not None
    assert run["open_requests"] == [_why(request)]


def test_person_page_counts_the_persons_null_key_rows(migrated: sa.Engine) -> None:
    """u1 has record 'a' and a NULL-key row: one record explained, and the NULL-key row counted, not listed."""
    _, text, _request = _subject_with_a_null_key(migrated, "delete")
    loaded = loaded_pack(text)
    with migrated.connect() as conn:
        seen = person(conn, loaded, AS_OF, KEY, subject_key="u1")
        other = person(conn, loaded, AS_OF, KEY, subject_key="u2")
    (events,) = seen.datasets
    assert [r.explanation.key for r in events.records] == ["a"]
    assert events.null_keys == 1
    assert other.datasets[0].null_keys == 0


def test_person_page_counts_null_key_rows_once_per_dataset(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """person() counts the person's NULL-key rows once per dataset; its records' explanations do not count again.

    The page shows only the dataset's count; a count per record was a
    statement (a scan of the NULL-key rows) whose result nothing showed.
    """
    _, text, _request = _subject_with_a_null_key(migrated, "delete")
    asked: list[Any] = []
    real = explain_many.subject_null_keys

    def counting(conn: sa.Connection, planner: Any, identities: Any) -> list[int]:
        asked.append(identities)
        return real(conn, planner, identities)

    monkeypatch.setattr(explain_many, "subject_null_keys", counting)
    with migrated.connect() as conn:
        seen = person(conn, loaded_pack(text), AS_OF, KEY, subject_key="u1")
    (events,) = seen.datasets
    assert events.null_keys == 1
    assert [r.explanation.key for r in events.records] == ["a"]
    assert asked == []
    assert "subject_null_keys" not in events.records[0].as_dict()


def test_explain_says_the_subjects_null_key_rows(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """`explain --key a` (u1's record) counts u1's NULL-key rows; explain-many agrees; 'b' (u2) has none."""
    _, text, _request = _subject_with_a_null_key(migrated, "delete")
    loaded = loaded_pack(text)
    with migrated.connect() as conn:
        planners = build_planners(conn, PlanContext(loaded, AS_OF))
        alone = {key: explain_in(conn, loaded, AS_OF, "events", key, planners) for key in ("a", "b")}
        many = explain_records(conn, loaded, AS_OF, "events", ["a", "b"], planners)
    assert alone["a"].subject_null_keys == many["a"].subject_null_keys == 1
    assert alone["b"].subject_null_keys == many["b"].subject_null_keys == 0
    path = tmp_path / "pack.yaml"
    path.write_text(text)
    args = ["explain", "--rules", str(path), "--db", db_url, "--dataset", "events", "--as-of", "2025-01-01"]
    out = CliRunner().invoke(main, [*args, "--key", "a"])
    assert out.exit_code == 0, out.output
    assert f"1 {NO_KEY}" in out.output
    assert "u1" not in out.output
    shown = json.loads(CliRunner().invoke(main, [*args, "--key", "a", "--format", "json"]).output)
    assert shown["subject_null_keys"] == 1
    assert NO_KEY not in CliRunner().invoke(main, [*args, "--key", "b"]).output


def test_run_page_shows_the_open_requests_apart_from_the_anomalies(world: World, migrated: sa.Engine) -> None:
    """The console's run page: the note as `run` printed it, not a row "null_key_request:7" among the anomalies."""
    runs = store.runs
    stored = stored_anomalies({"customers": {"null": 2}}, [NullKeyNote(7, "customers", 3)])
    assert stored == {"customers": {"null": 2, "null_key_request:7": 3}}  # the stored format, as old records hold it
    with migrated.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == world.run_id).values(anomalies=json.dumps(stored)))
    c = sign_in(create_app(world.settings), "auditor")
    page = html.unescape(c.get(f"/runs/{world.run_id}").text)
    assert "Erasure requests left open" in page
    assert NullKeyNote(7, "customers", 3).sentence in page
    assert "null_key_request" not in page
    assert re.search(r"<td>customers</td><td>null</td><td class=\"num\">2</td>", page)


def test_person_page_says_the_rows_with_no_key(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset where the person has only NULL-key rows: the summary and a section say so, not "none" alone."""
    real = people.person

    def with_null_keys(*args: Any, **kwargs: Any) -> people.Person:
        found = real(*args, **kwargs)
        found.datasets[0].null_keys = 2
        return found

    monkeypatch.setattr(people, "person", with_null_keys)
    c = sign_in(create_app(world.settings), "auditor")
    response = c.post("/person", data={"csrf_token": csrf_of(c), "kind": "subject", "key": "no-such-person"})
    assert response.status_code == 200, response.text
    page = html.unescape(response.text)
    assert "2 with no key" in page
    assert f"2 {NO_KEY}." in page
    assert "No dataset holds a record of this person" not in page


def _identified_events(engine: sa.Engine, rows: list[tuple[str | None, str, str | None]], **options: Any) -> LoadedPack:
    """``ne_events`` with an e-mail column, holding ``rows`` (key, subject, address), and the pack reading it.

    ``options``: the subject column's type (``user_id``), ``email=False`` for a pack that reads no address,
    and ``variant`` (a key of ``VARIANTS``) for what an erasure does.
    """
    user_id = options.pop("user_id", sa.String(40))
    email = options.pop("email", True)
    variant = options.pop("variant", "delete")
    table = sa.Table(
        "ne_events",
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(10), nullable=True, unique=True),
        sa.Column("user_id", user_id),
        sa.Column("mail", sa.String(80)),
        sa.Column("name", sa.String(40)),
        sa.Column("active", sa.Integer),
        sa.Column("collected", sa.DateTime(timezone=True)),
        **options,
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"n": n, "id": k, "user_id": u, "mail": m, "name": "x", "active": 1, "collected": NEW}
                for n, (k, u, m) in enumerate(rows)
            ],
        )
    text = erasing(variant)
    return loaded_pack(
        text.replace("    subject_key: user_id\n", "    subject_key: user_id\n    email: mail\n") if email else text
    )


def _requests(engine: sa.Engine, loaded: LoadedPack, named: list[tuple[str | None, str | None]]) -> list[int]:
    """Open requests by (subject id, address), received before AS_OF; their ids in that order."""
    received = dt.date(2024, 12, 15)
    with engine.begin() as conn:
        return [
            subjects.add_request(conn, subject_key=s, email=e, received=received, pack=loaded.pack, secret=KEY)
            for s, e in named
        ]


def test_requests_by_subject_and_by_email_are_grouped_alike(migrated: sa.Engine) -> None:
    """Rows named by id, by address or both: a request counts each of its rows once, whichever identity matched.

    The third request carries both identities: row 0 matches it by id and by
    address and counts once (3 rows: 0, 1, 2), as main's per-request count did.
    """
    rows = [(None, "u1", "x@example.com"), (None, "u9", "X@Example.com "), (None, "u1", None), ("k", "u1", None)]
    loaded = _identified_events(migrated, rows)
    ids = _requests(migrated, loaded, [("u1", None), (None, "x@example.com"), ("u1", "x@example.com")])
    notes = execute.plan(migrated, loaded, AS_OF).notes
    assert notes == [_sentence(ids[0], 2), _sentence(ids[1], 2), _sentence(ids[2], 3)]


def _case_insensitive(engine: sa.Engine) -> dict[str, Any]:
    """A subject column that ignores case: SQLite NOCASE, MariaDB general_ci, PostgreSQL a nondeterministic ICU one."""
    name = engine.dialect.name
    if name == "sqlite":
        return {"user_id": sa.String(40, collation="NOCASE")}
    if name == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE COLLATION ne_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
            )
        return {"user_id": sa.String(40, collation="ne_ci")}
    return {"user_id": sa.String(40, collation="utf8mb4_general_ci")}


def test_a_case_insensitive_subject_column_counts_as_per_request(migrated: sa.Engine) -> None:
    """NULL-key rows 'U1' and 'u1' under a case-insensitive collation, requests 'u1' and 'U1': one row each.

    A subject is the characters the source holds (``store.SOURCE_KEY``), on
    every database: 'U1' and 'u1' are two people, whatever the column's
    collation (``Dialect.exact_text``). Before (review must-fix 1): on
    SQLite the grouped rows were joined with the request's column on the
    left, so the group of 'U1' and 'u1' counted for one spelling only (2
    rows and none, where main's per-request count said 2 and 2).
    """
    loaded = _identified_events(migrated, [(None, "U1", None), (None, "u1", None)], **_case_insensitive(migrated))
    ids = _requests(migrated, loaded, [("u1", None), ("U1", None)])
    notes = execute.plan(migrated, loaded, AS_OF).notes
    assert notes == [_sentence(ids[0], 1), _sentence(ids[1], 1)]


def test_a_case_insensitive_subject_alone_gets_no_note_for_another_person(migrated: sa.Engine) -> None:
    """One NULL-key row 'U1', a request for 'u1' (the review's repro): not u1's row, so the request closes.

    Before: on SQLite the run printed no note while ``pending_for_subject``
    (NOCASE) kept the request open: open for good, with no word why.
    """
    loaded = _identified_events(migrated, [(None, "U1", None)], **_case_insensitive(migrated))
    _requests(migrated, loaded, [("u1", None)])
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    with migrated.connect() as conn:
        status = conn.execute(sa.select(store.erasure_requests.c.status)).scalar_one()
    assert (result.notes, status) == ([], "processed")
