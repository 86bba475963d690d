"""`after_from: previous | clock | entry`: what a lifecycle step's `after` counts from (issue 14, check 4).

The expected dates are worked out by hand in the table below (Regulation
1182/71 art. 3: the event day is not counted; a period in years ends on the
same date, or on the month's last day when that date does not exist), and
the records are run night after night on every database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from retention.engine import execute
from retention.errors import PackError
from retention.policy import load_file, validate_pack
from retention.store import tables as store

BRUSSELS = ZoneInfo("Europe/Brussels")
D = dt.date
# (clock date, keep period, purge `after`) -> for each after_from: (inactive due, purged due), local dates at 00:00.
CASES: list[tuple[D, str, str, dict[str, tuple[D, D]]]] = [
    # Kept through 28 Feb 2021 (29 Feb 2020 + 1 year, clamped); inactive from 1 Mar 2021.
    # previous: 28 Feb 2021 + 3Y = 28 Feb 2024 kept, due 29 Feb 2024.
    # entry: from 1 Mar 2021 (not counted) + 3Y = 1 Mar 2024 kept, due 2 Mar 2024.
    # clock: 29 Feb 2020 + 3Y = 28 Feb 2023 kept, due 1 Mar 2023.
    (
        D(2020, 2, 29),
        "P1Y",
        "P3Y",
        {
            "previous": (D(2021, 3, 1), D(2024, 2, 29)),
            "entry": (D(2021, 3, 1), D(2024, 3, 2)),
            "clock": (D(2021, 3, 1), D(2023, 3, 1)),
        },
    ),
    # Kept through 29 Feb 2024, inactive from 1 Mar 2024.
    # previous: 29 Feb 2024 + 5Y = 28 Feb 2029, due 1 Mar 2029.
    # entry: 1 Mar 2024 + 5Y = 1 Mar 2029, due 2 Mar 2029.
    # clock: 29 Feb 2020 + 5Y = 28 Feb 2025, due 1 Mar 2025.
    (
        D(2020, 2, 29),
        "P4Y",
        "P5Y",
        {
            "previous": (D(2024, 3, 1), D(2029, 3, 1)),
            "entry": (D(2024, 3, 1), D(2029, 3, 2)),
            "clock": (D(2024, 3, 1), D(2025, 3, 1)),
        },
    ),
    # Kept through 28 Feb 2020, inactive from 29 Feb 2020.
    # previous: 28 Feb 2020 + 1Y = 28 Feb 2021, due 1 Mar 2021.
    # entry: 29 Feb 2020 + 1Y = 28 Feb 2021 (clamped), due 1 Mar 2021 as well.
    # clock: 28 Feb 2019 + 1Y = 28 Feb 2020: already over, so purged with inactive on 29 Feb 2020.
    (
        D(2019, 2, 28),
        "P1Y",
        "P1Y",
        {
            "previous": (D(2020, 2, 29), D(2021, 3, 1)),
            "entry": (D(2020, 2, 29), D(2021, 3, 1)),
            "clock": (D(2020, 2, 29), D(2020, 2, 29)),
        },
    ),
    # Kept through 28 Feb 2021, inactive from 1 Mar 2021; purge 1 month later.
    # previous: 28 Feb 2021 + 1M = 28 Mar 2021, due 29 Mar.
    # entry: 1 Mar 2021 + 1M = 1 Apr 2021, due 2 Apr.
    # clock: 28 Feb 2020 + 1M = 28 Mar 2020: over, purged with inactive on 1 Mar 2021.
    (
        D(2020, 2, 28),
        "P1Y",
        "P1M",
        {
            "previous": (D(2021, 3, 1), D(2021, 3, 29)),
            "entry": (D(2021, 3, 1), D(2021, 4, 2)),
            "clock": (D(2021, 3, 1), D(2021, 3, 1)),
        },
    ),
]
MODES = ("previous", "entry", "clock")


def _pack_text(mode: str) -> str:
    datasets = []
    for index, (_, period, after, _) in enumerate(CASES):
        datasets.append(
            f"""\
  case{index}:
    table: case{index}
    key: id
    basis: test
    keep:
      - clock: {{column: closed_on, type: date}}
        period: {period}
    lifecycle:
      - to: inactive
      - to: purged
        after: {after}
        after_from: {mode}
        action: delete
"""
        )
    return (
        f"pack: after-from\nversion: '1'\neffective_from: 2000-01-01\ntimezone: Europe/Brussels\n"
        f"guard: {{max_share: 1.0}}\ndatasets:\n{''.join(datasets)}"
    )


def _midnight(day: D) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=BRUSSELS).astimezone(dt.UTC)


@pytest.mark.parametrize("mode", MODES)
def test_after_from_dates_around_29_february(migrated: sa.Engine, tmp_path: Path, mode: str) -> None:
    """Night by night, each record enters inactive and purged exactly on the hand-computed dates."""
    md = sa.MetaData()
    tables = [
        sa.Table(
            f"case{i}",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("closed_on", sa.Date),
        )
        for i in range(len(CASES))
    ]
    md.create_all(migrated)
    with migrated.begin() as conn:
        for table, case in zip(tables, CASES, strict=True):
            conn.execute(table.insert(), [{"id": 1, "closed_on": case[0]}])
    path = tmp_path / "pack.yaml"
    path.write_text(_pack_text(mode))
    loaded = load_file(path)
    expected = {f"case{i}": case[3][mode] for i, case in enumerate(CASES)}
    moments = sorted(
        {
            _midnight(day) + delta
            for pair in expected.values()
            for day in pair
            for delta in (-dt.timedelta(seconds=1), dt.timedelta(0))
        }
    )
    entered: dict[tuple[str, str], dt.datetime] = {}
    for moment in moments:
        result = execute.run(migrated, loaded, moment, secret=b"k" * 32)
        assert result.status == "succeeded", result.failures
        for dataset, counts in result.counts.items():
            for transition in counts:
                entered.setdefault((dataset, transition.split("->")[1]), moment)
    got = {name: (entered.get((name, "inactive")), entered.get((name, "purged"))) for name in expected}
    want = {name: (_midnight(a), _midnight(b)) for name, (a, b) in expected.items()}
    assert got == want
    with migrated.connect() as conn:
        dues = dict(
            conn.execute(
                sa.select(store.ledger.c.dataset, sa.func.max(store.ledger.c.due_at))
                .where(store.ledger.c.transition == "inactive->purged")
                .group_by(store.ledger.c.dataset)
            ).all()
        )
    assert {k: v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v for k, v in dues.items()} == {
        name: b for name, (_, b) in want.items()
    }


@pytest.mark.parametrize("mode", MODES)
def test_after_from_in_one_run(migrated: sa.Engine, tmp_path: Path, mode: str) -> None:
    """A record first seen after both dates goes through both states in one run, with the same due dates."""
    md = sa.MetaData()
    tables = [
        sa.Table(f"case{i}", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("closed_on", sa.Date))
        for i in range(len(CASES))
    ]
    md.create_all(migrated)
    with migrated.begin() as conn:
        for table, case in zip(tables, CASES, strict=True):
            conn.execute(table.insert(), [{"id": 1, "closed_on": case[0]}])
    path = tmp_path / "pack.yaml"
    path.write_text(_pack_text(mode))
    execute.run(migrated, load_file(path), _midnight(D(2030, 1, 1)), secret=b"k" * 32)
    with migrated.connect() as conn:
        rows = conn.execute(
            sa.select(store.ledger.c.dataset, store.ledger.c.transition, store.ledger.c.due_at).where(
                store.ledger.c.dataset.is_not(None)
            )
        ).all()
    got = {
        (r.dataset, r.transition): r.due_at.replace(tzinfo=dt.UTC) if r.due_at.tzinfo is None else r.due_at
        for r in rows
    }
    want = {}
    for i, case in enumerate(CASES):
        inactive, purged = case[3][mode]
        want[(f"case{i}", "active->inactive")] = _midnight(inactive)
        want[(f"case{i}", "inactive->purged")] = _midnight(purged)
    assert got == want


@pytest.mark.parametrize(
    ("lifecycle", "keep", "message"),
    [
        ([{"to": "purged", "action": "delete", "after_from": "clock"}], 1, "applies to the steps after it"),
        ([{"to": "inactive"}, {"to": "purged", "action": "delete", "after_from": "clock"}], 2, "exactly one keep rule"),
        ([{"to": "inactive"}, {"to": "purged", "action": "delete", "after_from": "start"}], 1, "after_from"),
    ],
)
def test_after_from_errors(lifecycle: list[dict[str, str]], keep: int, message: str) -> None:
    """after_from is for later steps; `clock` needs one clock; only the three values."""
    data = {
        "pack": "p",
        "version": "1",
        "effective_from": "2020-01-01",
        "datasets": {
            "s": {
                "table": "s",
                "key": "id",
                "basis": "b",
                "keep": [{"clock": {"column": f"c{i}"}, "period": "P1Y"} for i in range(keep)],
                "lifecycle": lifecycle,
            }
        },
    }
    with pytest.raises(PackError, match=message):
        validate_pack(data, Path("<test>"), "")
