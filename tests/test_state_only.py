"""A lifecycle step without an action: the state is recorded in the engine's tables only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine import execute
from retention.errors import PackError
from retention.policy import load_file, validate_pack
from retention.store import tables as store

UTC = dt.UTC
PACK_TEXT = """\
pack: contacts
version: "1"
effective_from: 2020-01-01
guard: {max_share: 1.0}
datasets:
  contacts:
    table: contacts
    key: id
    basis: Contact kept 1 year after the last message
    keep:
      - clock: {column: last_message_at, type: timestamp}
        period: P1Y
    lifecycle:
      - to: inactive
      - to: purged
        after: P6M
        action: delete
"""
ROWS = [
    {"id": 1, "name": "A", "email": "a@example.org", "last_message_at": dt.datetime(2023, 2, 28, 10)},
    {"id": 2, "name": "B", "email": "b@example.org", "last_message_at": dt.datetime(2023, 3, 1, 10)},
    {"id": 3, "name": "C", "email": "c@example.org", "last_message_at": dt.datetime(2024, 6, 1, 10)},
]


@pytest.fixture
def contacts(migrated: sa.Engine, tmp_path: Path) -> tuple[sa.Table, Path]:
    table = sa.Table(
        "contacts",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("last_message_at", sa.DateTime, nullable=False),
    )
    table.create(migrated)
    with migrated.begin() as conn:
        conn.execute(table.insert(), ROWS)
    path = tmp_path / "contacts.yaml"
    path.write_text(PACK_TEXT)
    return table, path


def _rows(engine: sa.Engine, table: sa.Table) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def test_inactive_without_action_records_the_state_and_leaves_the_row(
    migrated: sa.Engine, contacts: tuple[sa.Table, Path]
) -> None:
    """Contact 1 (kept through 28 Feb 2024) is inactive from 29 Feb; its row is unchanged; a ledger entry says so."""
    table, path = contacts
    loaded = load_file(path)
    before = _rows(migrated, table)
    result = execute.run(migrated, loaded, dt.datetime(2024, 3, 1, 12, tzinfo=UTC), secret=b"k" * 32)
    assert result.status == "succeeded", result.failures
    assert result.counts == {"contacts": {"active->inactive": 1}}
    assert _rows(migrated, table) == before
    with migrated.connect() as conn:
        states = conn.execute(
            sa.select(store.record_states.c.record_key, store.record_states.c.state, store.record_states.c.since)
        ).all()
        entries = conn.execute(
            sa.select(store.ledger.c.transition, store.ledger.c.action, store.ledger.c.count).where(
                store.ledger.c.dataset == "contacts"
            )
        ).all()
    assert [(k, s, since.replace(tzinfo=None)) for k, s, since in states] == [
        ("1", "inactive", dt.datetime(2024, 2, 29))
    ]
    assert [tuple(e) for e in entries] == [("active->inactive", "record_state", 1)]
    # Six months from 28 Feb 2024, the last day before it entered inactive: purged on 29 Aug 2024 00:00.
    early = execute.run(migrated, loaded, dt.datetime(2024, 8, 28, 23, 59, tzinfo=UTC), secret=b"k" * 32)
    assert early.counts == {"contacts": {"active->inactive": 1}}  # contact 2, due 2 Mar
    later = execute.run(migrated, loaded, dt.datetime(2024, 8, 29, tzinfo=UTC), secret=b"k" * 32)
    assert later.counts == {"contacts": {"inactive->purged": 1}}
    assert [r[0] for r in _rows(migrated, table)] == [2, 3]
    # Contact 2, inactive since 2 Mar 2024, goes six months later on 2 Sep.
    last = execute.run(migrated, loaded, dt.datetime(2024, 9, 2, tzinfo=UTC), secret=b"k" * 32)
    assert last.counts == {"contacts": {"inactive->purged": 1}}
    assert _rows(migrated, table) == before[2:]


def test_explain_says_the_row_is_not_changed(migrated: sa.Engine, db_url: str, contacts: tuple[sa.Table, Path]) -> None:
    """explain names the step as recording the state only."""
    _, path = contacts
    args = ["explain", "--rules", str(path), "--db", db_url, "--dataset", "contacts", "--key"]
    runner = CliRunner()
    due = runner.invoke(main, [*args, "1", "--as-of", "2024-03-02"])
    assert due.exit_code == 0, due.output
    assert "    active->inactive is recorded in the engine's tables only; the source row is not changed" in due.output
    upcoming = runner.invoke(main, [*args, "3", "--as-of", "2024-07-01"])
    assert "(record the state only (source row unchanged))" in upcoming.output


@pytest.mark.parametrize("state", ["archived", "purged"])
def test_only_inactive_may_go_without_an_action(state: str) -> None:
    """Archiving or purging without an action would leave the data where the ledger says it is gone."""
    data = {
        "pack": "p",
        "version": "1",
        "effective_from": "2020-01-01",
        "datasets": {
            "s": {
                "table": "s",
                "key": "id",
                "basis": "b",
                "keep": [{"clock": {"column": "c"}, "period": "P1Y"}],
                "lifecycle": [{"to": state}],
            }
        },
    }
    with pytest.raises(PackError, match=f"state '{state}' needs an action"):
        validate_pack(data, Path("<test>"), "")
