"""A hold committed while a batch runs, after its selection and before its witness, keeps the record.

The witness (``retention.engine.apply.witness``) reads the holds again under
the batch's row locks. On MariaDB the run's session was REPEATABLE READ: the
witness's holds subquery was then a consistent read from the snapshot the
batch's selection took, it missed the new hold and the batch deleted the held
record (review heldperf, "Holds placed mid-run"). PostgreSQL reads each
statement at READ COMMITTED. SQLite has no witness (the batch holds the
database's write lock): there the hold is committed before the batch's
transaction, at the dataset's first read, which the selection must see.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from engine_events import on_database

from retention.engine import execute
from retention.policy import load_file
from retention.store import migrate
from retention.store.config import create_engine
from retention.subjects import events as subjects

SECRET = b"k" * 16
PACK = {
    "pack": "midhold",
    "version": "1",
    "effective_from": "2020-01-01",
    "timezone": "UTC",
    "guard": {"max_share": 1.0},
    "datasets": {
        "events": {
            "table": "mid_events",
            "key": "id",
            "subject_key": "user_id",
            "email": "mail",
            "basis": "test",
            "on_erasure": "purged",
            "keep": [{"clock": {"column": "collected", "type": "timestamp"}, "period": "P1Y"}],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        }
    },
}
AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ROWS = 6


def _setup(engine: sa.Engine, tmp_path: Path) -> Any:
    migrate.upgrade(engine)
    table = sa.Table(
        "mid_events",
        sa.MetaData(),
        sa.Column("id", sa.String(10), primary_key=True),
        sa.Column("user_id", sa.String(10)),
        sa.Column("mail", sa.String(40)),
        sa.Column("collected", sa.DateTime),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": f"k{i}", "user_id": f"u{i}", "mail": f"m{i}@x.test", "collected": dt.datetime(2024, 1, 1)}
                for i in range(ROWS)
            ],
        )
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(PACK), encoding="utf-8")
    return load_file(path)


def _left(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT id FROM mid_events")).scalars())


@pytest.mark.parametrize(
    ("scope", "named", "kept"),
    [
        ("subject", {"scope": "subject", "subject_key": "u1"}, ["k1"]),
        ("email", {"scope": "subject", "email": "m2@x.test"}, ["k2"]),
        ("record", {"scope": "record", "dataset": "events", "record_key": "k3"}, ["k3"]),
        ("dataset", {"scope": "dataset", "dataset": "events"}, [f"k{i}" for i in range(ROWS)]),
    ],
)
def test_hold_placed_mid_batch_keeps_the_record(
    db_url: str, dialect: str, tmp_path: Path, scope: str, named: dict[str, str], kept: list[str]
) -> None:
    engine, other = create_engine(db_url), create_engine(db_url)
    try:
        loaded = _setup(engine, tmp_path)

        def hold(**fields: str) -> None:
            with other.begin() as conn:
                subjects.place_hold(conn, reason="r", placed_by="t", secret=SECRET, pack=loaded.pack, **fields)  # type: ignore[arg-type]

        hold(scope="subject", subject_key="nobody")  # a hold in place: the planner's probe keeps the holds test
        fired: list[str] = []

        def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            text = " ".join(statement.split()).upper()
            if fired or "MID_EVENTS" not in text:
                return
            # Server databases: the witness, after the batch's selection. SQLite: the dataset's first read.
            if dialect == "sqlite" or "FOR UPDATE" in text:
                fired.append(statement)
                hold(**named)

        with on_database(db_url, "before_cursor_execute", before):
            execute.run(engine, loaded, AS_OF, secret=SECRET)
        assert fired
        assert _left(engine) == kept
    finally:
        engine.dispose()
        other.dispose()
