"""Rows whose key is NULL beyond the active purge: erasure requests, masking, partition drops, followers.

Such a row is no record (tests/test_set_purge_null_keys.py), yet it can hold
a person's data. Review ``fixnull``: an erasure request of a subject with one
was closed as erased with the row intact (must-fix 1); plan left it out of a
partition drop that takes it (must-fix 2); a follower's was never counted
(must-fix 3).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from scaffold import loaded_pack, yearly_dataset
from test_partitions import PACK as PARTITIONED
from test_set_purge_batches import KEY

from retention.cli import main
from retention.engine import execute, set_purge
from retention.ledger import chain as ledger
from retention.policy import validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects

AS_OF = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
OLD = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
NEW = dt.datetime(2024, 12, 1, 12, tzinfo=dt.UTC)

ERASING = """
pack: nullerase
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
batch_size: 3
datasets:
  events:
    table: ne_events
    key: id
    subject_key: user_id
    basis: one year
ERASURE
    keep:
      - clock: {column: collected, type: timestamptz}
        period: P1Y
    lifecycle:
LIFECYCLE
"""
VARIANTS = {
    "delete": ("    on_erasure: purged", "      - to: purged\n        action: delete"),
    "deactivate": (
        "    on_erasure: inactive",
        "      - to: inactive\n        action: deactivate\n        set: {active: 0}\n"
        "      - to: purged\n        after: P1Y\n        action: delete",
    ),
    "mask": (
        "    on_erasure:\n      mask: {name: null}\n      keep_until: purged",
        "      - to: purged\n        action: delete",
    ),
}


def erasing(variant: str) -> str:
    """The ERASING pack's text, its erasure and lifecycle those of ``VARIANTS[variant]``."""
    erasure, lifecycle = VARIANTS[variant]
    return ERASING.replace("ERASURE", erasure).replace("LIFECYCLE", lifecycle)


def run_command(db_url: str, tmp_path: Path, text: str, *more: str) -> Result:
    """``retention run`` of the pack ``text`` as of 2025-01-01, under the key the requests were filed with."""
    path = tmp_path / "pack.yaml"
    path.write_text(text)
    key_file = tmp_path / "pseudonym.key"  # the key the request was filed under: another one is refused
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    return CliRunner().invoke(
        main,
        ["run", "--rules", str(path), "--db", db_url, "--as-of", "2025-01-01", *more],
        env={"RETENTION_PSEUDONYM_KEY": "", "RETENTION_PSEUDONYM_KEY_FILE": str(key_file)},
    )


def _events(engine: sa.Engine) -> sa.Table:
    """The ERASING pack's table, created: its key ``id`` may hold NULL."""
    events = sa.Table(
        "ne_events",
        sa.MetaData(),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(10), nullable=True, unique=True),
        sa.Column("user_id", sa.String(40)),
        sa.Column("name", sa.String(40)),
        sa.Column("active", sa.Integer),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    events.create(engine)
    return events


def _subject_with_a_null_key(engine: sa.Engine, variant: str) -> tuple[sa.Table, str, int]:
    """u1 asks for erasure and has row 'a' and a NULL-key row, neither due; u2's 'b' is due.

    Returns the table, the pack's text and the request's id.
    """
    events = _events(engine)
    rows = [("a", "u1", NEW), (None, "u1", NEW), ("b", "u2", OLD)]
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"n": n, "id": k, "user_id": u, "name": f"name-{u}", "active": 1, "collected": at}
                for n, (k, u, at) in enumerate(rows)
            ],
        )
    text = erasing(variant)
    loaded = loaded_pack(text)
    with engine.begin() as conn:
        subjects.add_request(conn, subject_key="u1", received=dt.date(2024, 12, 15), pack=loaded.pack, secret=KEY)
        request = conn.execute(sa.select(store.erasure_requests.c.id)).scalar_one()
    return events, text, request


def _why(request: int) -> str:
    return (
        f"erasure request {request}: 1 rows of this subject in events have no key (NULL); "
        "the engine cannot erase them, so the request stays open"
    )


@pytest.mark.parametrize("set_based", ["1", "0"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_erasure_request_stays_open_while_a_null_key_row_holds_the_subject(
    migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch, variant: str, set_based: str
) -> None:
    """The engine cannot reach the NULL-key row, so the request does not close as erased; plan and run say why."""
    monkeypatch.setenv(set_purge.SWITCH, set_based)
    events, text, request = _subject_with_a_null_key(migrated, variant)
    loaded = loaded_pack(text)
    why = _why(request)
    planned = execute.plan(migrated, loaded, AS_OF)
    assert planned.anomalies["events"].get("null_key") == 1
    assert why in planned.notes
    for _ in (1, 2):
        result = execute.run(migrated, loaded, AS_OF, secret=KEY)
        assert result.failures == {}
        assert result.anomalies["events"].get("null_key") == 1
        assert result.notes == [why]
    er = store.erasure_requests
    with migrated.connect() as conn:
        left = conn.execute(sa.select(events.c.name).where(events.c.id.is_(None))).scalars().all()
        requests = [tuple(r) for r in conn.execute(sa.select(er.c.status, er.c.outcome))]
        closed = conn.execute(
            sa.select(sa.func.count()).where(store.ledger.c.transition == "erasure_processed")
        ).scalar_one()
        assert ledger.verify(conn, secret=KEY).ok
    assert left == ["name-u1"]  # the engine cannot address it: it stays, and so does the request
    assert requests == [("open", None)]
    assert closed == 0


@pytest.mark.only_on("postgresql")
def test_a_dropped_partition_takes_its_null_key_rows_and_plan_says_so(migrated: sa.Engine) -> None:
    """Two old monthly partitions (ids 1, 2 and a NULL id), one recent: plan, run and ledger all count 3."""
    with migrated.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE access_log (n INTEGER NOT NULL, id BIGINT, user_id INTEGER NOT NULL, "
                "at TIMESTAMPTZ NOT NULL, PRIMARY KEY (n, at)) PARTITION BY RANGE (at)"
            )
        )
        for low, high in (("2024-01-01", "2024-02-01"), ("2024-02-01", "2024-03-01"), ("2026-10-01", "2026-11-01")):
            conn.execute(
                sa.text(
                    f"CREATE TABLE access_log_{low[:7].replace('-', '_')} PARTITION OF access_log "
                    f"FOR VALUES FROM ('{low}T00:00:00+00:00') TO ('{high}T00:00:00+00:00')"
                )
            )
        conn.execute(
            sa.text("INSERT INTO access_log (n, id, user_id, at) VALUES (:n, :id, 1, :at)"),
            [
                {"n": 1, "id": 1, "at": dt.datetime(2024, 1, 5, tzinfo=dt.UTC)},
                {"n": 2, "id": None, "at": dt.datetime(2024, 1, 6, tzinfo=dt.UTC)},
                {"n": 3, "id": 2, "at": dt.datetime(2024, 2, 5, tzinfo=dt.UTC)},
                {"n": 4, "id": 3, "at": dt.datetime(2026, 10, 5, tzinfo=dt.UTC)},
            ],
        )
    loaded = validate_pack(PARTITIONED, Path("<test>"), "t")
    as_of = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    planned = execute.plan(migrated, loaded, as_of)
    result = execute.run(migrated, loaded, as_of, secret=KEY)
    with migrated.connect() as conn:
        left = sorted(tuple(r) for r in conn.execute(sa.text("SELECT n, id FROM access_log")))
        logged = conn.execute(
            sa.select(sa.func.sum(store.ledger.c.count)).where(store.ledger.c.dataset == "access")
        ).scalar_one()
    assert planned.transitions["access"] == {"active->purged": 3}
    assert "null_key" not in planned.anomalies["access"]
    assert result.counts["access"] == {"active->purged": 3}
    assert logged == 3
    assert left == [(4, 3)]


FOLLOWING = (
    """
pack: follow
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
"""
    + yearly_dataset("orders", "fo_orders", "one year")
    + """  lines:
    table: fo_lines
    key: line_id
    basis: with its order
    follows: {dataset: orders, via: order_id, "on": {purged: purged}}
    lifecycle:
      - to: purged
        action: delete
"""
)


def test_a_followers_null_key_rows_are_counted(migrated: sa.Engine) -> None:
    """A follower (no ``keep``) lists its NULL-key line, which stays when its order goes."""
    md = sa.MetaData()
    orders = sa.Table(
        "fo_orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", sa.DateTime(timezone=True)),
    )
    lines = sa.Table(
        "fo_lines",
        md,
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("line_id", sa.String(10), nullable=True, unique=True),
        sa.Column("order_id", sa.Integer),
    )
    md.create_all(migrated)
    with migrated.begin() as conn:
        conn.execute(orders.insert(), [{"id": 1, "collected": OLD}])
        rows = [{"n": 1, "line_id": "x", "order_id": 1}, {"n": 2, "line_id": None, "order_id": 1}]
        conn.execute(lines.insert(), rows)
    loaded = loaded_pack(FOLLOWING)
    planned = execute.plan(migrated, loaded, AS_OF)
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    with migrated.connect() as conn:
        left = [tuple(r) for r in conn.execute(sa.select(lines.c.n, lines.c.line_id))]
    assert planned.anomalies["lines"] == {"null_key": 1}
    assert result.failures == {}
    assert result.anomalies["lines"] == {"null_key": 1}
    assert left == [(2, None)]


def test_the_run_command_prints_why_the_request_stays_open(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """One note line, ids and counts only (no key, subject or name)."""
    _, text, request = _subject_with_a_null_key(migrated, "delete")
    out = run_command(db_url, tmp_path, text)
    assert out.exit_code == 0, out.output
    assert f"note: {_why(request)}" in out.output
    assert "u1" not in out.output and "name-" not in out.output


def test_a_null_key_row_only_erasure_where_reaches_is_counted(migrated: sa.Engine) -> None:
    """``where`` leaves the NULL-key row out, ``erasure_where`` takes it in: counted, and the request stays open."""
    events, text, request = _subject_with_a_null_key(migrated, "delete")
    with migrated.begin() as conn:
        conn.execute(events.update().where(events.c.id.is_(None)).values(active=0))
    reach = "    on_erasure: purged\n    where: {active: 1}\n    erasure_where: {name: {not: null}}"
    text = text.replace("    on_erasure: purged", reach)
    loaded = loaded_pack(text)
    planned = execute.plan(migrated, loaded, AS_OF)
    result = execute.run(migrated, loaded, AS_OF, secret=KEY)
    with migrated.connect() as conn:
        status = conn.execute(sa.select(store.erasure_requests.c.status)).scalar_one()
    assert planned.anomalies["events"].get("null_key") == 1
    assert result.anomalies["events"].get("null_key") == 1
    assert result.notes == [_why(request)]
    assert status == "open"
