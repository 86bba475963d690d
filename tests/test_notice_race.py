"""A version's first sighting committed by another process while ``run`` records its own (review `plan`, finding 1).

``run`` must then count the version's notice from that other sighting: a
status built from a read made before the write would call the version "not
seen", and ``run`` would apply it at once, without its notice check.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_notice import VERSION

from retention.engine import notice
from retention.policy import LoadedPack, load_catalog
from retention.store import tables as store


def _versions(tmp_path: Path) -> tuple[LoadedPack, LoadedPack]:
    """Version 1 (in force since 2020) and version 2, taking effect two days from today."""
    rules = tmp_path / "rules"
    rules.mkdir()
    effective = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)
    (rules / "v1.yaml").write_text(VERSION.format(version="1", effective="2020-01-01", period="P1Y"))
    (rules / "v2.yaml").write_text(VERSION.format(version="2", effective=effective, period="P2Y"))
    by_version = {p.pack.version: p for p in load_catalog(rules).packs}
    return by_version["1"], by_version["2"]


def test_a_sighting_committed_by_another_process_meanwhile_is_counted(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _versions(tmp_path)
    other = sa.create_engine(db_url)  # process B: a `check`, a writing `plan`, another shard
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    with other.begin() as conn:
        notice.record(conn, [v1], long_ago, "run")
    real = notice.record
    raced: list[dt.datetime] = []

    def racing(conn: sa.Connection, packs: Any, now: dt.datetime, seen_by: str, **kwargs: Any) -> bool:
        if not raced:  # B sights version 2 first, after this process read the sightings, before it writes
            raced.append(now)
            with other.begin() as b:
                real(b, [v2], now, "check")
        return real(conn, packs, now, seen_by, **kwargs)

    monkeypatch.setattr(notice, "record", racing)
    try:
        versions = notice.sight_versions(migrated, [v1, v2], "run", must_record=True)
    finally:
        other.dispose()
    assert versions is not None
    result = {v.loaded.pack.version: v for v in versions}
    assert raced, "the other process's sighting was not made"
    assert result["2"].status == "short", result["2"]
    assert result["2"].first_seen_at is not None
    assert result["2"].refuses(dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    assert result["1"].status == "first version" and result["1"].first_seen_at is not None
    with migrated.connect() as conn:
        rows = conn.execute(sa.select(store.pack_sightings.c.version, store.pack_sightings.c.seen_by)).all()
    assert sorted(tuple(r) for r in rows) == [("1", "run"), ("2", "check")]  # B's sighting stands, once


def _refuse_new_sightings(engine: sa.Engine) -> None:
    """An operator's rule on the sightings table that fails every insert: a trigger (SQLite) or a CHECK."""
    table = store.pack_sightings.name
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER refuse_sightings BEFORE INSERT ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            conn.execute(sa.text(f"ALTER TABLE {table} ADD CONSTRAINT refuse_sightings CHECK (seen_by = 'nobody')"))


def test_an_insert_refused_by_a_constraint_is_not_taken_for_a_race(migrated: sa.Engine, tmp_path: Path) -> None:
    """A failed first sighting that no other process recorded is that error, at once, not three retries and a
    ConcurrentChangeError blaming other processes (review `keys`; before, SQLite and PostgreSQL, whose trigger and
    CHECK failures are integrity errors, ended in ConcurrentChangeError)."""
    v1, v2 = _versions(tmp_path)
    _refuse_new_sightings(migrated)
    with pytest.raises(sa.exc.DBAPIError) as refused:
        notice.sight_versions(migrated, [v1, v2], "run", must_record=True)
    assert "refuse" in str(refused.value.orig).lower() or "constraint" in str(refused.value.orig).lower()
    # A check (no must_record) goes on without recording, the versions reported as not seen.
    versions = notice.sight_versions(migrated, [v1, v2], "check")
    assert versions is not None
    assert {v.loaded.pack.version: v.first_seen_at for v in versions} == {"1": None, "2": None}
