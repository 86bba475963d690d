"""Test helper: target databases of a fleet, their fleet file, and what a run did to each.

Every target is the engine test shop (tests/test_engine.py: accounts, visits,
logs) built from a seed in an isolated database, with the engine's tables
at head and the engine test pack as a YAML file. A golden copy of a target is
the same seed in another isolated database, run once without faults.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from ledger_view import record_moves
from test_engine import PACK, build

from retention.ledger import chain as ledger
from retention.store import migrate
from retention.store.config import create_engine

SECRET = "fleet-test-pseudonym-key"
AS_OF = "2026-06-01"
UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@dataclass
class World:
    """A built target: its URL, the keys its tables held before any run."""

    name: str
    url: str
    keys: dict[str, list[int]]


def write_pack(folder: Path) -> Path:
    path = folder / "engine-test.yaml"
    path.write_text(yaml.safe_dump(PACK, sort_keys=False), encoding="utf-8")
    return path


def build_target(name: str, url: str, seed: int, n: int = 40, slow: float = 0.0) -> World:
    """The shop of ``seed`` in the database at ``url``; on PostgreSQL ``slow`` seconds per visits DELETE."""
    engine = create_engine(url)
    try:
        rows = build(engine, seed, n=n)
        migrate.upgrade(engine)
        if slow and engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS "
                        f"$$ BEGIN PERFORM pg_sleep({slow}); RETURN NULL; END $$"
                    )
                )
                conn.execute(
                    sa.text(
                        "CREATE TRIGGER slow AFTER DELETE ON visits FOR EACH STATEMENT EXECUTE FUNCTION slow_down()"
                    )
                )
    finally:
        engine.dispose()
    return World(name, url, {table: [r["id"] for r in table_rows] for table, table_rows in rows.items()})


def write_fleet(
    folder: Path, targets: list[tuple[str, str]], pack: Path, secret_files: frozenset[str] = frozenset()
) -> tuple[Path, dict[str, str]]:
    """A fleet file for ``(name, url)`` pairs; returns it and the environment holding the URLs.

    Targets named in ``secret_files`` read their URL from a 0600 file, the others from a variable.
    """
    env: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    for name, url in targets:
        variable = "FLEET_URL_" + name.upper().replace("-", "_")
        if name in secret_files:
            secret = folder / f"{name}.url"
            secret.write_text(url + "\n", encoding="utf-8")
            secret.chmod(0o600)
            database = {"file": secret.name}
        else:
            env[variable] = url
            database = {"env": variable}
        entries.append({"name": name, "database": database, "pack": pack.name, "timezone": "Europe/Paris"})
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump({"fleet": "test", "targets": entries}, sort_keys=False), encoding="utf-8")
    return path, env


def moves(world: World) -> Counter[tuple[str, str, str]]:
    """(dataset, key, transition) of every per-record ledger move (summary datasets under key "*")."""
    found = record_moves(create_engine(world.url), SECRET.encode(), world.keys)
    counter: Counter[tuple[str, str, str]] = Counter()
    for dataset, key, transition, due in found:
        counter[(dataset, key, transition)] += due if key == "*" and isinstance(due, int) else 1
    return counter


def no_record_moved_twice(world: World) -> bool:
    """No (dataset, record, transition) in the ledger twice (summary datasets carry counts, not records)."""
    return all(count == 1 for (_, key, _), count in moves(world).items() if key != "*")


def tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The shop's rows after the runs, ordered: what a run changed must be the same as a golden run's."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "accounts": [
                    tuple(r) for r in conn.execute(sa.text("SELECT id, email, active FROM accounts ORDER BY id"))
                ],
                "visits": [r[0] for r in conn.execute(sa.text("SELECT id FROM visits ORDER BY id"))],
                "logs": [r[0] for r in conn.execute(sa.text("SELECT id FROM logs ORDER BY id"))],
            }
    finally:
        engine.dispose()


def runs(url: str) -> list[tuple[str, str]]:
    """(run id, status) of every run the target recorded, oldest first."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    sa.text("SELECT id, status FROM retention_runs WHERE mode = 'run' ORDER BY started_at")
                )
            ]
    finally:
        engine.dispose()


def ledger_ok(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(ledger.verify(conn).ok)
    finally:
        engine.dispose()


def deleted_visits(world: World) -> set[str]:
    """Visits no longer in the table: what the ledger's purges of visits must name, each once."""
    remaining = {str(k) for k in tables(world.url)["visits"]}
    return {str(k) for k in world.keys["visits"]} - remaining


def golden(world: World, url: str, seed: int, n: int, folder: Path) -> World:
    """The same shop in another database, run once in this process without faults."""
    from retention import commands

    copy = build_target(world.name, url, seed, n=n)
    saved = os.environ.get("RETENTION_PSEUDONYM_KEY")
    os.environ["RETENTION_PSEUDONYM_KEY"] = SECRET
    try:
        result = commands.run(write_pack(folder), url, AS_OF)
    finally:
        if saved is None:
            os.environ.pop("RETENTION_PSEUDONYM_KEY")
        else:
            os.environ["RETENTION_PSEUDONYM_KEY"] = saved
    assert result.status == "succeeded", result
    return copy
