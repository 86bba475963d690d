"""Production-shaped schemas: plan == run == the expected sets worked out by hand, on every database.

Each folder of ``tests/schemas/`` holds a schema written from public
documentation (WordPress + WooCommerce; a shop whose customers carry no
date and whose invoice lines hang off invoices by a real foreign key;
Sakila/Pagila rentals and payments): its DDL per database, synthetic rows
(``data.yaml``), a pack (``pack.yaml``) and ``expected.yaml``: three runs at
three as-of dates, with the events before each (holds, erasure requests)
and, per dataset and transition, the keys that move, derived by hand in
that file's comments.

For every run the test asserts, on SQLite (foreign keys enforced),
PostgreSQL and MariaDB (WooCommerce in a database created with
``COLLATE utf8mb4_unicode_520_ci``, as WordPress creates it):

* plan's counts (taken before the run) == run's counts == the expected counts;
* the keys plan lists (its batches) and the keys run moved (read back from
  the record states and source rows) == the expected sets;
* and, in a test of its own (so that it runs whatever the engine does), the
  independent oracle of ``naive_oracle`` predicts the same sets from the
  rows as each database returns them: a check of the hand derivation as
  much as of the oracle.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import naive_oracle as oracle
import pytest
import sqlalchemy as sa
import yaml

from retention.engine import execute
from retention.engine.plan import Batch
from retention.policy import LoadedPack, load_file
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine
from retention.subjects import events as subjects

HERE = Path(__file__).resolve().parent / "schemas"
SCHEMAS = ("woocommerce", "shop", "pagila")
SECRET = b"schemas-test-key"
UTC = dt.UTC
Sets = dict[str, dict[str, set[str]]]


class _Yaml12(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type information
    """YAML with 1.2 booleans only, so that ``on:`` stays a key (as the engine's loader reads it)."""


_Yaml12.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Yaml12)  # a SafeLoader subclass


def _dialect(engine: sa.Engine) -> str:
    return "mariadb" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name


def create_schema(engine: sa.Engine, name: str) -> None:
    """Run ``<dialect>.sql``: statements end with ';', comment lines start with '--'."""
    text = (HERE / name / f"{_dialect(engine)}.sql").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    with engine.begin() as conn:
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                conn.execute(sa.text(statement))


def _typed(value: Any, column_type: sa.types.TypeEngine[Any]) -> Any:
    """A YAML value as the Python value a driver binds for this column (not for SQLite: text as written)."""
    if not isinstance(value, str) or value.startswith("0000-00-00"):
        return value
    if isinstance(column_type, sa.DateTime):
        moment = dt.datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if column_type.timezone else moment
    if isinstance(column_type, sa.Date):
        return dt.date.fromisoformat(value)
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        return Decimal(value)
    return value


def load_rows(engine: sa.Engine, name: str) -> None:
    """Insert ``data.yaml``, choosing each database's variant of a value where one is given."""
    dialect = _dialect(engine)
    data = read_yaml(HERE / name / "data.yaml")
    with engine.begin() as conn:
        for table_name, rows in data.items():
            reflected = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
            prepared = []
            for row in rows:
                values = {}
                for column, value in row.items():
                    if isinstance(value, dict):
                        value = value.get(dialect, value["default"])
                    values[column] = value if dialect == "sqlite" else _typed(value, reflected.c[column].type)
                prepared.append(values)
            for columns in {tuple(r) for r in prepared}:  # rows may name different columns
                target = sa.table(table_name, *(sa.column(c) for c in columns))
                conn.execute(target.insert(), [r for r in prepared if tuple(r) == columns])


def local_midnight(day: str, tz: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def snapshot(engine: sa.Engine, loaded: LoadedPack) -> dict[tuple[str, str], str]:
    """Each record's state: its state row, else 'active' if its source row is there."""
    rs = store.record_states
    result: dict[tuple[str, str], str] = {}
    with engine.connect() as conn:
        for name, ds in loaded.pack.datasets.items():
            table = sa.table(ds.table, sa.column(ds.key))
            for key in conn.execute(sa.select(table.c[ds.key])).scalars():
                result[(name, str(key))] = "active"
        for row in conn.execute(sa.select(rs.c.dataset, rs.c.record_key, rs.c.state)):
            result[(row.dataset, row.record_key)] = row.state
    return result


def moved(before: dict[tuple[str, str], str], after: dict[tuple[str, str], str], loaded: LoadedPack) -> Sets:
    """The transitions between two snapshots; a record that is gone went all the way to purged."""
    result: Sets = {}
    for (name, key), start in before.items():
        states = loaded.pack.datasets[name].states
        end = after.get((name, key), "purged")
        for a, b in itertools.pairwise(states[states.index(start) : states.index(end) + 1]):
            result.setdefault(name, {}).setdefault(f"{a}->{b}", set()).add(key)
    return result


def planned_keys(engine: sa.Engine, loaded: LoadedPack, as_of: dt.datetime) -> Sets:
    result: Sets = {}

    def collect(batch: Batch) -> None:
        for follower in batch.followers:
            collect(follower)
        for move in batch.moves:
            for step in move.steps:
                name = f"{step.from_state}->{step.to_state}"
                result.setdefault(batch.dataset, {}).setdefault(name, set()).add(move.record_key)

    execute.plan(engine, loaded, as_of, on_batch=collect)
    return result


def as_counts(sets: Sets) -> dict[str, dict[str, int]]:
    return {d: {t: len(keys) for t, keys in per.items() if keys} for d, per in sets.items() if any(per.values())}


def nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {d: {t: n for t, n in per.items() if n} for d, per in counts.items() if any(per.values())}


def oracle_world(engine: sa.Engine, name: str, pack: dict[str, Any]) -> oracle.World:
    """Every row of the schema's tables, read raw, for the oracle."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    keys: dict[str, str] = {}
    data = read_yaml(HERE / name / "data.yaml")
    key_of = {ds["table"]: ds["key"] for ds in pack["datasets"].values()}
    with engine.connect() as conn:
        for table_name in data:
            key = key_of.get(table_name) or next(iter(data[table_name][0]))
            rows = conn.execute(sa.select(sa.text("*")).select_from(sa.table(table_name))).mappings()
            tables[table_name] = {str(r[key]): dict(r) for r in rows}
            keys[table_name] = key
    return oracle.World(pack=pack, tables=tables, keys=keys)


def apply_events(engine: sa.Engine, loaded: LoadedPack, events: list[dict[str, Any]]) -> None:
    """Place holds (numbered in order of placing), release them, file erasure requests."""
    holds = store.holds
    with engine.begin() as conn:
        for event in events:
            if "hold" in event:
                subjects.place_hold(
                    conn,
                    scope=event["hold"],
                    reason="schema test",
                    placed_by="test",
                    secret=SECRET,
                    dataset=event.get("dataset"),
                    record_key=event.get("key"),
                    subject_key=event.get("subject"),
                    email=event.get("email"),
                    pack=loaded.pack,
                )
            elif "release" in event:
                placed = conn.execute(sa.select(holds.c.id).order_by(holds.c.id)).scalars().all()
                subjects.release_hold(
                    conn, placed[event["release"]], released_by="test", reason="case closed", secret=SECRET
                )
            else:
                received = dt.date.fromisoformat(event["received"])
                subjects.add_request(
                    conn,
                    subject_key=event.get("erasure"),
                    email=event.get("erasure_email"),
                    secret=SECRET,
                    received=received,
                    pack=loaded.pack,
                )


@pytest.fixture(params=SCHEMAS)
def schema(request: pytest.FixtureRequest, dialect: str) -> tuple[str, sa.Engine]:
    """The schema's name and an engine on a fresh database with the engine's tables."""
    name: str = request.param
    fixture = "collated_db_url" if dialect == "mariadb" and name == "woocommerce" else "db_url"
    engine = create_engine(request.getfixturevalue(fixture))
    request.addfinalizer(engine.dispose)
    migrate.upgrade(engine)
    return name, engine


def _expected(run: dict[str, Any]) -> Sets:
    return {
        dataset: {t: {str(k) for k in keys} for t, keys in per.items()}
        for dataset, per in (run.get("expected") or {}).items()
    }


def _prepare(name: str, engine: sa.Engine) -> None:
    create_schema(engine, name)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    elif engine.dialect.name in ("mysql", "mariadb") and name == "woocommerce":
        with engine.connect() as conn:
            collation = conn.execute(sa.text("SELECT @@collation_database")).scalar()
        assert collation == "utf8mb4_unicode_520_ci"
    load_rows(engine, name)


def test_schema_expected_sets_match_the_oracle(schema: tuple[str, sa.Engine]) -> None:
    """The hand-derived sets and the independent oracle (on the rows as this database returns them) agree."""
    name, engine = schema
    _prepare(name, engine)
    pack = read_yaml(HERE / name / "pack.yaml")
    world = oracle_world(engine, name, pack)
    for index, run in enumerate(read_yaml(HERE / name / "expected.yaml")["runs"]):
        as_of = local_midnight(run["as_of"], pack["timezone"])
        for number, event in enumerate(run.get("before") or []):
            if "hold" in event:
                world.holds.append(
                    oracle.Hold(
                        event["hold"],
                        event.get("dataset"),
                        event.get("key"),
                        event.get("subject"),
                        email=oracle.normal_email(event.get("email")),
                    )
                )
            elif "release" in event:
                world.holds[event["release"]].active = False
            else:
                received = dt.date.fromisoformat(event["received"])
                world.requests.append(
                    oracle.Request(
                        100 * index + number,
                        event.get("erasure"),
                        received,
                        email=oracle.normal_email(event.get("erasure_email")),
                    )
                )
        prediction = oracle.plan_run(world, as_of)
        predicted: Sets = {}
        for (dataset, key), steps in prediction.steps.items():
            for step in steps:
                predicted.setdefault(dataset, {}).setdefault(f"{step.from_state}->{step.to_state}", set()).add(key)
        assert predicted == _expected(run), f"{name}, run {index + 1} at {run['as_of']}"
        oracle.apply(world, prediction)


def test_schema_plan_run_and_expected_sets_agree(schema: tuple[str, sa.Engine]) -> None:
    """At three as-of dates: plan counts == run counts == the hand-derived sets, and the keys too."""
    name, engine = schema
    _prepare(name, engine)
    loaded = load_file(HERE / name / "pack.yaml")
    for index, run in enumerate(read_yaml(HERE / name / "expected.yaml")["runs"]):
        where = f"{name}, run {index + 1} at {run['as_of']}"
        as_of = local_midnight(run["as_of"], loaded.pack.timezone)
        apply_events(engine, loaded, run.get("before") or [])
        expected = _expected(run)
        summary = execute.plan(engine, loaded, as_of)
        planned = nonzero(summary.transitions)
        assert planned == as_counts(expected), f"{where}: plan counts"
        for dataset in run.get("no_anomalies") or []:
            assert not any(summary.anomalies.get(dataset, {}).values()), f"{where}: {dataset} anomalies"
        assert planned_keys(engine, loaded, as_of) == expected, f"{where}: plan's keys"
        before = snapshot(engine, loaded)
        result = execute.run(engine, loaded, as_of, secret=SECRET)
        assert result.status == "succeeded", f"{where}: {result.status} {result.failures}"
        assert nonzero(result.counts) == as_counts(expected), f"{where}: run counts"
        assert moved(before, snapshot(engine, loaded), loaded) == expected, f"{where}: run's keys"
