"""Odd stored clock values end to end: plan, run and explain agree and never crash.

Issue 10 cases 4, 5, 7 and issue 11 item 4: a value the SQL selects and
Python cannot parse used to stop the run; SQLite text with a ``T`` or an
offset fell due a day late in plan and run; a zero date crashed explain; a
garbage meta value was skipped by an aggregate's max. Each database gets
the odd values it can actually hold, with the class docs/rules.md gives
them written out by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from sqlalchemy.dialects import mysql

from retention.cli import main
from retention.engine import execute
from retention.policy import load_file

UTC = dt.UTC
SECRET = b"test-pseudonym-key"
# 00:00 on 1 March 2023 in Paris: a clock on 29 Feb 2020 (Paris) kept P3Y is due exactly then.
AS_OF = dt.datetime(2023, 2, 28, 23, tzinfo=UTC)
PACK: dict[str, Any] = {
    "pack": "odd-clocks",
    "version": "1",
    "effective_from": "2000-01-01",
    "timezone": "Europe/Paris",
    "guard": {"max_share": 1.0},
    "datasets": {
        "people": {
            "table": "people",
            "key": "id",
            "basis": "test",
            "keep": [{"clock": {"column": "seen", "type": "timestamptz"}, "period": "P3Y"}],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
        "users": {
            "table": "users",
            "key": "id",
            "basis": "test",
            "keep": [
                {
                    "clock": {
                        "aggregate": "max",
                        "table": "usermeta",
                        "on": "user_id",
                        "column": "meta_value",
                        "type": "epoch_text",
                        "where": {"meta_key": "wc_last_active"},
                    },
                    "period": "P1Y",
                },
                {"clock": {"column": "registered", "type": "date"}, "period": "P1Y"},
            ],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
    },
}
# Per database: id -> (stored value, class). Key 1 is due exactly at AS_OF,
# key 2 one day later (its instant is 1 March in Paris).
ODD: dict[str, dict[int, tuple[Any, str | None]]] = {
    "sqlite": {
        1: ("2020-02-29T09:00:00+01:00", None),
        2: ("2020-02-29 23:30:00-01:00", None),
        3: ("2020-02-30", "invalid"),
        4: ("2020-01-01garbage", "invalid"),
        5: ("0000-00-00 00:00:00", "zero"),
        6: ("2031-01-01T00:00Z", "future"),
        7: (None, "null"),
        8: (20200101, "invalid"),
        9: ("2020-01-01T10:00:00+99:00", "invalid"),
    },
    "mariadb": {
        1: ("2020-02-29 08:00:00", None),
        2: ("2020-02-29 23:30:00", None),
        3: ("2020-02-30 00:00:00", "invalid"),
        4: ("2020-00-00 00:00:00", "invalid"),
        5: ("0000-00-00 00:00:00", "zero"),
        6: ("2031-01-01 00:00:00", "future"),
        7: (None, "null"),
        8: ("2021-02-29 00:00:00", "invalid"),
    },
    "postgresql": {
        1: ("2020-02-29 08:00:00+00", None),
        2: ("2020-02-29 23:30:00+00", None),
        3: ("-infinity", "zero"),
        4: ("0044-03-15 10:00:00+00 BC", "zero"),
        5: ("infinity", "future"),
        6: ("10000-01-01 00:00:00+00", "future"),
        7: (None, "null"),
        8: ("1899-12-31 23:00:00+00", "zero"),
    },
}


def _build(engine: sa.Engine, dialect: str, tmp_path: Path) -> Path:
    md = sa.MetaData()
    seen = {"sqlite": sa.DateTime(), "mariadb": mysql.DATETIME(fsp=6), "postgresql": sa.DateTime(timezone=True)}
    sa.Table(
        "people",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seen", seen[dialect]),
    )
    sa.Table(
        "users",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("registered", sa.Date),
    )
    sa.Table(
        "usermeta",
        md,
        sa.Column("umeta_id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, index=True),
        sa.Column("meta_key", sa.String(255)),
        sa.Column("meta_value", sa.Text),
    )
    md.create_all(engine)
    placeholder = "CAST(:seen AS timestamptz)" if dialect == "postgresql" else ":seen"
    rows = [{"id": k, "seen": v} for k, (v, _) in ODD[dialect].items()]
    with engine.begin() as conn:
        if dialect == "mariadb":
            conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        conn.execute(sa.text(f"INSERT INTO people (id, seen) VALUES (:id, {placeholder})"), rows)
        if dialect == "mariadb":
            conn.exec_driver_sql("SET SESSION sql_mode = DEFAULT")
        # User 1's only activity meta is garbage: it must not fall back on the
        # registration date alone. User 2 has a valid activity and a garbage
        # value under another key, which the where filter leaves out.
        conn.execute(
            sa.text("INSERT INTO users (id, registered) VALUES (:id, :registered)"),
            [{"id": 1, "registered": dt.date(2020, 1, 1)}, {"id": 2, "registered": dt.date(2020, 1, 1)}],
        )
        conn.execute(
            sa.text("INSERT INTO usermeta (user_id, meta_key, meta_value) VALUES (:u, :k, :v)"),
            [
                {"u": 1, "k": "wc_last_active", "v": "yesterday"},
                {"u": 2, "k": "wc_last_active", "v": "1590000000"},  # 2020-05-20
                {"u": 2, "k": "nickname", "v": "not a number"},
            ],
        )
    rules = tmp_path / "odd.yaml"
    rules.write_text(yaml.safe_dump(PACK))
    return rules


def _expected_anomalies(dialect: str) -> dict[str, int]:
    counts = {"null": 0, "zero": 0, "invalid": 0, "future": 0}
    for _, category in ODD[dialect].values():
        if category is not None:
            counts[category] += 1
    return counts


def test_odd_values_are_counted_and_the_run_goes_on(migrated: sa.Engine, dialect: str, tmp_path: Path) -> None:
    """Plan counts odd values as anomalies, run moves exactly the valid due record, and the next dataset runs."""
    rules = _build(migrated, dialect, tmp_path)
    loaded = load_file(rules)
    summary = execute.plan(migrated, loaded, AS_OF)
    assert summary.transitions["people"] == {"active->purged": 1}
    assert summary.anomalies["people"] == _expected_anomalies(dialect)
    assert summary.transitions["users"] == {"active->purged": 1}
    assert summary.anomalies["users"]["invalid"] == 1
    result = execute.run(migrated, loaded, AS_OF, secret=SECRET)
    assert result.status == "succeeded", result
    assert result.counts["people"] == {"active->purged": 1}
    assert result.counts["users"] == {"active->purged": 1}
    with migrated.connect() as conn:
        people = set(conn.execute(sa.text("SELECT id FROM people")).scalars())
        users = set(conn.execute(sa.text("SELECT id FROM users")).scalars())
    assert people == set(ODD[dialect]) - {1}
    assert users == {1}  # the garbage activity keeps user 1; user 2 was last active in May 2020


def test_explain_reads_every_odd_value(migrated: sa.Engine, dialect: str, db_url: str, tmp_path: Path) -> None:
    """explain answers for every stored value: the class, what is wrong with an invalid one, never a traceback."""
    rules = _build(migrated, dialect, tmp_path)
    runner = CliRunner()

    def explain(dataset: str, key: int) -> str:
        args = ["explain", "--rules", str(rules), "--db", db_url, "--dataset", dataset, "--key", str(key)]
        result = runner.invoke(main, [*args, "--as-of", "2023-03-01"])
        assert result.exit_code == 0, result.output
        return result.output

    for key, (_, category) in ODD[dialect].items():
        output = explain("people", key)
        if category is None:
            assert "skipped" not in output, output
        elif category != "null":
            assert f"; anomaly: {category}" in output, output
            assert f"  skipped: {category} clock; never moved by a run" in output, output
    assert "  due now: active->purged (due 2023-03-01 00:00 CET) — test" in explain("people", 1)
    assert "  due for purged: 2023-03-02 00:00 CET" in explain("people", 2)
    if dialect == "sqlite":
        assert "  clock seen = None (local date None), kept P3Y; anomaly: invalid (day out of range) — test" in (
            explain("people", 3)
        )
    users = explain("users", 1)
    assert (
        "  clock max(usermeta.meta_value) = None (local date None), kept P1Y; anomaly: invalid "
        "(1 of 1 related rows invalid: not digits without a leading zero) — test"
    ) in users
    assert "yesterday" not in users
