"""A test's copy of the session's migrated template is what the migrations make (see db_templates.py)."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import Any

import db_templates
import pytest
import sqlalchemy as sa
from conftest import isolated_database, migrate_isolated
from console_world import World, build_world

from retention.store import migrate
from retention.store.config import create_engine


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns, keys, indexes, foreign keys and triggers, as the database reports them."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        shape: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            shape[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")), c.get("comment"))
                    for c in inspector.get_columns(table)
                ],
                "primary key": inspector.get_pk_constraint(table),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(table)
                ),
                "foreign keys": sorted(
                    (f["name"], tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in inspector.get_foreign_keys(table)
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
                ),
                "checks": sorted((c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)),
            }
        shape["collations"] = sorted(_collations(conn))
        if conn.dialect.name == "sqlite":  # expression indexes (migration 0017), which the inspector leaves out
            shape["index definitions"] = sorted(
                tuple(r) for r in conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            )
        shape["triggers"] = sorted(_triggers(conn))
        shape["alembic_version"] = migrate.revision_on(conn)
    return shape


def _collations(conn: sa.Connection) -> list[tuple[str, ...]]:
    """Each table's and text column's collation from the catalog (the inspector's types leave them out)."""
    name = conn.dialect.name
    if name == "sqlite":  # collations live only in the CREATE TABLE text
        return [tuple(r) for r in conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")]
    if name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT table_name, column_name, coalesce(collation_name, '') FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        )
        return [tuple(r) for r in rows]
    rows = conn.exec_driver_sql(
        "SELECT t.table_name, coalesce(c.column_name, ''), coalesce(c.collation_name, t.table_collation) "
        "FROM information_schema.tables t LEFT JOIN information_schema.columns c "
        "ON c.table_schema = t.table_schema AND c.table_name = t.table_name AND c.collation_name IS NOT NULL "
        "WHERE t.table_schema = database()"
    )
    return [tuple(r) for r in rows]


def _triggers(conn: sa.Connection) -> list[tuple[str, ...]]:
    name = conn.dialect.name
    if name == "sqlite":
        return [
            tuple(r)
            for r in conn.exec_driver_sql("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
        ]
    if name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
        )
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        return [(r[0], r[1], r[2].replace(f"{schema}.", "").replace(f'"{schema}".', "")) for r in rows]
    rows = conn.exec_driver_sql("SHOW TRIGGERS")
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]  # name, event, table, statement, timing


def test_a_copy_of_the_template_is_what_the_migrations_make(engine: sa.Engine, dialect: str, tmp_path: Path) -> None:
    """Same tables, columns, keys, indexes, foreign keys, triggers and revision as a database migrated for real."""
    migrate.upgrade(engine)
    with isolated_database(dialect, tmp_path) as url:
        copy = create_engine(url)
        try:
            migrate_isolated(copy)
            copied = _schema(copy)
        finally:
            copy.dispose()
    assert copied == _schema(engine)
    assert copied["alembic_version"] == migrate.head_revision()


def _application_table(engine: sa.Engine) -> None:
    """An application's table, with an index and a text column, made before the engine's tables (as on every
    real first ``retention db upgrade``)."""
    meta = sa.MetaData()
    sa.Table(
        "app_customers",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("last_login", sa.Date),
        sa.Index("ix_app_customers_email", "email"),
    )
    meta.create_all(engine)


def test_a_copy_beside_an_application_table_is_what_the_migrations_make(
    engine: sa.Engine, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL and MariaDB copy the template into a database that already holds an application's tables
    (db_templates.upgrade): that copy must add what the migrations add and keep the application's table.

    On SQLite such a database is migrated (the backup API would replace the
    file and lose the application's table); the comparison then checks that.
    """
    _application_table(engine)
    migrate.upgrade(engine)
    with isolated_database(dialect, tmp_path) as url:
        copy = create_engine(url)
        try:
            _application_table(copy)
            if dialect != "sqlite":
                real_upgrade = migrate.upgrade

                def not_on_the_copy(target: sa.Engine, revision: str = "head") -> None:
                    assert target is not copy, "migrated, not copied: this test would not compare the copy"
                    real_upgrade(target, revision)  # the session's template, if this test builds it

                monkeypatch.setattr(migrate, "upgrade", not_on_the_copy)
            migrate_isolated(copy)
            monkeypatch.undo()
            copied = _schema(copy)
        finally:
            copy.dispose()
    assert "app_customers" in copied
    assert copied == _schema(engine)
    assert copied["alembic_version"] == migrate.head_revision()


def _rows(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted (as text: a copy must hold the same values, not only as many)."""
    with engine.connect() as conn:
        md = sa.MetaData()
        md.reflect(conn)
        return {
            name: sorted(tuple(str(v) for v in row) for row in conn.execute(sa.select(table)))
            for name, table in sorted(md.tables.items())
        }


def test_a_copy_of_the_console_world_is_the_world_built(
    world: World, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``world`` fixture's copy holds what ``build_world`` makes: the same schema, and the same rows where
    a build is deterministic (the shop, the runs' counts); its files are the test's own."""
    copy = create_engine(world.db_url)
    (tmp_path / "fresh").mkdir()
    with isolated_database(dialect, tmp_path / "fresh") as url:
        fresh = create_engine(url)
        try:
            migrate_isolated(fresh)
            built = build_world(fresh, url, tmp_path / "fresh")
            assert _schema(copy) == _schema(fresh)
            copied, made = _rows(copy), _rows(fresh)
        finally:
            fresh.dispose()
            copy.dispose()
    assert copied.keys() == made.keys()
    assert {t: len(r) for t, r in copied.items()} == {t: len(r) for t, r in made.items()}
    for table in ("customers", "orders", "notes", "reviewed_notes"):
        assert copied[table] == made[table], table
    assert (world.review_id, world.customer_with_entries, world.pii) == (
        built.review_id,
        built.customer_with_entries,
        built.pii,
    )
    for path in (world.settings.rules, world.settings.public_key, world.signing_key):
        assert path is not None and path.parent == tmp_path and path.is_file()
    assert world.settings.checkpoints == tmp_path / "checkpoints"
    assert [p.name for p in world.settings.checkpoints.iterdir()] == ["checkpoint-1.json"]


def test_workers_share_a_template_built_once_and_its_database_is_dropped_after(tmp_path: Path) -> None:
    """Two workers asking at once (two threads here: an fcntl lock excludes each open of the lock file alike):
    one builds, the other waits and loads what it saved; the controller then drops the database it made."""
    made: list[str] = []
    dropped: list[tuple[str, str]] = []

    def create(dialect: str, directory: Path) -> str:
        url = f"sqlite:///{directory / f'db-{len(made)}.sqlite'}"
        made.append(url)
        return url

    builder: list[int] = []
    other_tried = threading.Event()
    flock = fcntl.flock

    def watched_flock(file: Any, operation: int) -> None:
        if builder and threading.get_ident() != builder[0]:
            other_tried.set()  # the other worker reached the lock while the first one builds
        flock(file, operation)

    def build(url: str, directory: Path) -> db_templates.Template:
        builder.append(threading.get_ident())
        # Returns only once the other thread has tried the lock: the overlap is certain, not left to a sleep.
        assert other_tried.wait(30), "the other thread never reached the lock during the build"
        return db_templates.Template("sqlite", url, [], files=directory, made={"built in": url})

    got: list[db_templates.Template | None] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db_templates, "_shared", [])
        patch.setattr(db_templates.fcntl, "flock", watched_flock)
        db_templates.share(tmp_path, create)
        workers = [
            threading.Thread(target=lambda: got.append(db_templates._shared_template("sqlite", "a world", build)))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
    assert len(made) == 1
    assert [template.made if template else None for template in got] == [{"built in": made[0]}] * 2
    db_templates.drop_shared(tmp_path, lambda dialect, url: dropped.append((dialect, url)))
    assert dropped == [("sqlite", made[0])]
