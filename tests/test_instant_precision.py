"""The engine's instants keep their microseconds on every database, MariaDB's ``DATETIME`` included.

``UTCDateTime``'s ``impl`` is ``sa.DateTime``, which MariaDB would create as
``DATETIME``: whole seconds, the fraction rounded away on insert. The type
takes the dialect's ``instant_type()`` instead (``DATETIME(6)`` on MariaDB),
and the migrations create their columns through it. If that ever broke,
runs started within a second would tie in ``runs`` (ordered by
``started_at``), their durations in the console and the metrics would be
whole seconds, and a lock's heartbeat age would jump by seconds: what these
tests would catch on MariaDB (PostgreSQL and SQLite keep microseconds in any
case). Asked in the brief of branch ``mariaclk`` after a bench table showed
three round medians (bench/RESULTS.md, section ``mariaclk``).
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa

from retention.store import tables as store

STARTED = dt.datetime(2026, 12, 7, 20, 4, 5, 123456, tzinfo=dt.UTC)


def _instant_columns() -> list[tuple[str, str]]:
    return [
        (table.name, column.name)
        for table in store.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, store.UTCDateTime)
    ]


def test_every_instant_column_at_head_keeps_microseconds(migrated: sa.Engine) -> None:
    """Each ``UTCDateTime`` column the migrations created stores a fraction of a second (MariaDB: ``DATETIME(6)``)."""
    columns = _instant_columns()
    assert len(columns) > 20
    inspector = sa.inspect(migrated)
    whole_seconds = []
    for table, name in columns:
        reflected = next(c for c in inspector.get_columns(table) if c["name"] == name)
        if migrated.dialect.name in ("mysql", "mariadb") and getattr(reflected["type"], "fsp", None) != 6:
            whole_seconds.append(f"{table}.{name}: {reflected['type']}")
    assert whole_seconds == []


def test_run_records_keep_microseconds_and_order(migrated: sa.Engine) -> None:
    """Two runs 1 ms apart in the same second read back exactly, in order, with a 2.5 ms duration."""
    runs = store.runs
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    rows = [
        (second, STARTED + dt.timedelta(microseconds=1000), STARTED + dt.timedelta(microseconds=3500)),
        (first, STARTED, STARTED + dt.timedelta(microseconds=2500)),
    ]
    with migrated.begin() as conn:
        for run_id, started, finished in rows:
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    mode="run",
                    pack_id="p",
                    pack_digest="0" * 64,
                    as_of=STARTED,
                    started_at=started,
                    finished_at=finished,
                    status="succeeded",
                )
            )
    with migrated.connect() as conn:
        back = conn.execute(
            sa.select(runs.c.id, runs.c.started_at, runs.c.finished_at).order_by(runs.c.started_at)
        ).all()
    assert [r.id for r in back] == [first, second]
    assert back[0].started_at == STARTED
    assert [r.finished_at - r.started_at for r in back] == [dt.timedelta(microseconds=2500)] * 2
