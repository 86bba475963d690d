"""The person page's set-based explain equals ``explain`` record by record (issue 24: the person page's speed).

``explain_records`` reads a dataset's records' facts (source rows, state
rows, the runs that moved them, holds) in a few queries for all of them;
``explain_in``, what ``retention explain`` prints, reads them one record at
a time. On the console world (a subject hold, an erasure request, records
archived and purged, a review dataset) both must give equal explanations
for every record of every dataset of many people, now and a year on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from console_world import AS_OF, SECRET, build_world

from retention.commands.explain_many import explain_records
from retention.commands.person import _record_keys
from retention.commands.runs import explain_in
from retention.engine.clock_sql import DatasetSQL
from retention.engine.plan import PlanContext, build_planners
from retention.ledger import pseudonyms
from retention.policy import load_file


def test_explain_records_equals_explain_per_record(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
    world = build_world(migrated, db_url, tmp_path, customers=20)
    assert world.settings.rules is not None
    loaded = load_file(world.settings.rules)
    with migrated.connect() as conn:
        emails = [str(e) for e in conn.execute(sa.text("SELECT email FROM customers ORDER BY id LIMIT 2")).scalars()]
    people: list[tuple[str | None, str | None, str | None]] = [(str(c), None, None) for c in range(1, 21)]
    people += [(None, pseudonyms.normalise_email(e), pseudonyms.email_pseudonym(SECRET, e)) for e in emails]
    compared = {"held": 0, "moved": 0, "due": 0, "clocks read": 0}
    # The set-based path reads the active records' clocks in one query per dataset: no per-record read.
    per_record: list[object] = []
    read_one = DatasetSQL.readings

    def counted(self: DatasetSQL, conn: sa.Connection, key: object, as_of: object) -> object:
        per_record.append(key)
        return read_one(self, conn, key, as_of)  # type: ignore[arg-type]

    monkeypatch.setattr(DatasetSQL, "readings", counted)
    for when in (AS_OF, AS_OF.replace(year=2027)):
        with migrated.connect() as conn:
            planners = build_planners(conn, PlanContext(loaded, when))
            for named in people:
                for name in loaded.pack.datasets:
                    keys = _record_keys(conn, planners[name], named)
                    before = len(per_record)
                    together = explain_records(conn, loaded, when, name, keys, planners)
                    assert len(per_record) == before, (name, keys)
                    assert list(together) == keys
                    for key in keys:
                        alone = explain_in(conn, loaded, when, name, key, planners)
                        assert together[key] == alone, (name, key)
                        compared["held"] += bool(alone.holds)
                        compared["moved"] += alone.moved_at is not None
                        compared["due"] += bool(alone.due_now)
                        compared["clocks read"] += bool(alone.clocks)
    # The comparison saw held records, records moved by a run, records due now and records with clocks.
    assert all(compared.values()), compared
