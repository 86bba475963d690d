"""A subject that differs from a request's only in case is another person, whatever the column's collation.

The planner matches a record to the erasure request naming it in Python
(``PlannerReasons._requests``): 'U1' is not 'u1'. The SQL beside it used the
source column's collation: on SQLite a NOCASE column kept it through the
cast, so ``pending_for_subject`` (the column against a literal) found the
record of 'U1' for the request of 'u1' while the erasure pass (the engine's
column on the left: BINARY) did not select it. The request stayed open for
good, with no note, and the record was not erased either. PostgreSQL with a
nondeterministic column selected it for erasure, found no request for it in
Python, and left it: the same outcome. ``Dialect.exact_text`` makes every
comparison of identities exact (as ``store.SOURCE_KEY`` and MariaDB's binary
key collation already had it).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from test_null_key_requests import AS_OF, OLD
from test_null_key_visible import _case_insensitive, _identified_events, _requests
from test_set_purge_batches import KEY

from retention.commands.person import person
from retention.engine import execute, set_purge
from retention.engine.plan_values import subject_text
from retention.engine.run_datasets import planners_at
from retention.engine.schema import Finding, identity_collations
from retention.store import tables as store
from retention.subjects.events import place_hold

ROWS = [("a", "U1", None), ("b", "u1", None), ("c", "u2", None)]  # 'a' first: the key order the passes read


@pytest.mark.parametrize("set_based", ["1", "0"])
@pytest.mark.parametrize("email", [False, True], ids=["subject", "subject+email"])
def test_a_request_for_u1_erases_u1_and_closes(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, set_based: str, email: bool
) -> None:
    """Rows 'U1' (record a) and 'u1' (record b) in a case-insensitive column, a request for 'u1'.

    Expected, as the per-record matching (and docs/rules.md: a key as the
    source holds it) says: b erased, a and c kept, the request processed.
    Before, SQLite and PostgreSQL: b erased, the request open for good.
    MariaDB with an e-mail column (the OR keeps the EXISTS correlated): a
    and b both kept, the request open, as its subquery cache answered for
    'u1' what it had found for 'U1' (``MySQLDialect.on_connect``).
    """
    monkeypatch.setenv(set_purge.SWITCH, set_based)
    loaded = _identified_events(migrated, ROWS, email=email, **_case_insensitive(migrated))
    _requests(migrated, loaded, [("u1", None)])
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert result.failures == {}
    events = sa.Table("ne_events", sa.MetaData(), autoload_with=migrated)
    with migrated.connect() as conn:
        left = conn.execute(sa.select(events.c.id).order_by(events.c.n)).scalars().all()
        requests = conn.execute(sa.select(store.erasure_requests.c.status, store.erasure_requests.c.outcome)).all()
    assert (left, [tuple(r) for r in requests]) == (["a", "c"], [("processed", "erased")])


def test_the_person_page_of_u1_lists_u1s_record_only(migrated: sa.Engine) -> None:
    """The person page names records with the same comparison: u1 has b, not a ('U1')."""
    loaded = _identified_events(migrated, ROWS, email=False, **_case_insensitive(migrated))
    with migrated.connect() as conn:
        seen = person(conn, loaded, AS_OF, KEY, subject_key="u1")
    assert [r.explanation.key for r in seen.datasets[0].records] == ["b"]


@pytest.mark.parametrize("email", [False, True], ids=["subject", "subject+email"])
def test_the_lifecycle_passes_hold_back_u1_only(migrated: sa.Engine, email: bool) -> None:
    """The lifecycle passes' "no open erasure" (the negated EXISTS) frees 'U1' (a) and 'u2' (c), never 'u1' (b).

    Before, on MariaDB with an e-mail column: a and b were both free (the
    subquery cache reused 'U1''s answer for 'u1'), so b could move as if no
    request named it, e.g. archived rather than erased.
    """
    loaded = _identified_events(migrated, ROWS, email=email, **_case_insensitive(migrated))
    _requests(migrated, loaded, [("u1", None)])
    with migrated.connect() as conn:
        planner = planners_at(conn, loaded, AS_OF)[0]["events"]
        planner.probe(conn)
        free = sa.select(planner.key).where(planner.no_open_erasure(planner.live_who(conn))).order_by(planner.key)
        assert conn.execute(free).scalars().all() == ["a", "c"]


@pytest.mark.parametrize("email", [False, True], ids=["subject", "subject+email"])
def test_a_partial_erasure_for_u1_masks_u1_only(migrated: sa.Engine, email: bool) -> None:
    """A masking erasure (``on_erasure: mask``) for 'u1' masks b only, even with 'U1' (a) read first.

    The mask pass finds each row's request with a correlated scalar
    subquery (the lowest open request's id), which no rewrite decorrelates.
    Before, on MariaDB, with or without an e-mail column: its cache handed
    b the answer found for a (no request), so b was not masked.
    """
    loaded = _identified_events(migrated, ROWS, email=email, variant="mask", **_case_insensitive(migrated))
    _requests(migrated, loaded, [("u1", None)])
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert result.failures == {}
    events = sa.Table("ne_events", sa.MetaData(), autoload_with=migrated)
    with migrated.connect() as conn:
        names = conn.execute(sa.select(events.c.id, events.c.name).order_by(events.c.n)).all()
    assert [tuple(r) for r in names] == [("a", "x"), ("b", None), ("c", "x")]


@pytest.mark.parametrize("set_based", ["1", "0"])
@pytest.mark.parametrize("email", [False, True], ids=["subject", "subject+email"])
def test_a_hold_on_u1_keeps_u1s_record_only(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, set_based: str, email: bool
) -> None:
    """A subject hold on 'u1' beside 'U1', all rows due: plan and run hold b alone, and purge a and c.

    From the review of fixnullvis. Before: SQLite's plan said the hold kept
    2 records where the run kept 1 (b); PostgreSQL kept a and b. The hold is
    narrower than before on those two (CHANGELOG, docs/dialects.md).
    """
    monkeypatch.setenv(set_purge.SWITCH, set_based)
    loaded = _identified_events(migrated, ROWS, email=email, **_case_insensitive(migrated))
    events = sa.Table("ne_events", sa.MetaData(), autoload_with=migrated)
    with migrated.begin() as conn:
        conn.execute(events.update().values(collected=OLD))
        place_hold(conn, scope="subject", reason="r", placed_by="t", secret=KEY, subject_key="u1", pack=loaded.pack)
    plan = execute.plan(migrated, loaded, AS_OF)
    held = [(h["hold_id"], h["count"]) for h in plan.held_back]
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    assert result.failures == {}
    with migrated.connect() as conn:
        left = conn.execute(sa.select(events.c.id).order_by(events.c.n)).scalars().all()
    assert (held, left) == ([(1, 1)], ["b"])


def test_check_warns_of_a_case_insensitive_subject_column(migrated: sa.Engine) -> None:
    """``check`` names the table, the column and its collation (never a value) where the engine's exact
    matching differs from the column's: SQLite NOCASE, PostgreSQL nondeterministic. Not on MariaDB (binary
    keys there always), nor for an exact column."""
    loaded = _identified_events(migrated, ROWS, **_case_insensitive(migrated))
    with migrated.connect() as conn:
        found = identity_collations(conn, loaded.pack)
        sa.Table("ne_events", sa.MetaData()).drop(conn)  # the same pack over an exact column: nothing to say
        conn.commit()
    _identified_events(migrated, ROWS)
    with migrated.connect() as conn:
        exact = identity_collations(conn, loaded.pack)
    collation = {"sqlite": "NOCASE", "postgresql": "ne_ci"}.get(migrated.dialect.name)
    message = (
        f"subject column compares case-insensitively (collation {collation}); holds and erasure requests name "
        "only the exact characters, so a hold on one spelling keeps no record of another"
    )
    expected = [] if collation is None else [Finding("warning", "events", "ne_events", "user_id", message)]
    assert (found, exact) == (expected, [])


def test_a_subject_column_in_C_keeps_its_index(migrated: sa.Engine) -> None:
    """PostgreSQL: the exact comparison leaves a deterministic column's collation alone, so its index serves.

    ``COLLATE "default"`` on a "C" column (review of fixnullvis, should-fix 2)
    turned ``subject = 'u1'`` (pending_for_subject, holds, the person page)
    into a Seq Scan; "C" is exact already.
    """
    if migrated.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's collations")
    table = sa.Table(
        "ne_c",
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.String(64, collation="C"), index=True),
    )
    table.create(migrated)
    with migrated.begin() as conn:
        conn.execute(table.insert(), [{"n": n, "user_id": f"u{n}"} for n in range(20_000)])
        conn.execute(sa.text("ANALYZE ne_c"))
        query = sa.select(sa.func.count()).where(subject_text(conn, table.c.user_id) == "nomatch")
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = "\n".join(conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars())
    assert "Index" in plan and "Seq Scan" not in plan, plan
