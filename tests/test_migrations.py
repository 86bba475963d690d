"""Migrations on every database: upgrade, downgrade, upgrade, and metadata parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from retention.errors import ConfigError
from retention.store import migrate
from retention.store.config import create_engine
from retention.store.tables import metadata


def test_upgrade_downgrade_upgrade(engine: sa.Engine) -> None:
    """The schema can be built, removed entirely and built again."""
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert not [t for t in sa.inspect(engine).get_table_names() if t.startswith("retention_")]
    migrate.upgrade(engine)
    assert set(metadata.tables) <= set(sa.inspect(engine).get_table_names())


def test_migrations_match_metadata(migrated: sa.Engine) -> None:
    """Autogenerate finds nothing to change: the migrations build exactly store/tables.py."""
    with migrated.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # MySQL reports comments and LONGTEXT variants in ways autogenerate cannot match.
    relevant = [d for d in diff if not (isinstance(d, list) or d[0] in {"modify_comment"})]
    if migrated.dialect.name == "sqlite":
        # SQLAlchemy does not reflect SQLite's expression indexes (0017 keys the item pseudonym indexes on a
        # prefix), so autogenerate asks to add them: they are read from sqlite_master instead.
        with migrated.connect() as conn:
            indexes = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")).all())
        for column in ("record_pseudonym", "subject_pseudonym", "email_pseudonym"):
            name = f"ix_retention_ledger_items_{column}"
            assert indexes[name] == f"CREATE INDEX {name} ON retention_ledger_items (substr({column}, 1, 16))"
            relevant = [d for d in relevant if not (d[0] == "add_index" and d[1].name == name)]
    assert relevant == []


def test_ledger_rows_cannot_be_updated_or_deleted(migrated: sa.Engine) -> None:
    """The database refuses UPDATE and DELETE on the ledger for the engine's connection."""
    with migrated.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger (seq, recorded_at, transition, count, prev_hash, hash) "
                "VALUES (1, '2026-01-01 00:00:00', 'test', 1, 'a', 'b')"
            )
        )
    for statement in ("UPDATE retention_ledger SET hash = 'c'", "DELETE FROM retention_ledger"):
        try:
            with migrated.begin() as conn:
                conn.execute(sa.text(statement))
        except sa.exc.DBAPIError as exc:
            assert "append-only" in str(exc.orig)
        else:
            raise AssertionError(f"{statement} was not refused")
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT hash FROM retention_ledger")).scalar_one() == "b"


_PSEUDONYM_INDEXES = (
    "ix_retention_ledger_items_record_pseudonym",
    "ix_retention_ledger_items_subject_pseudonym",
    "ix_retention_ledger_items_email_pseudonym",
)


def _pseudonym_index_kinds(conn: sa.Connection) -> dict[str, str]:
    """Each item pseudonym index's method (PostgreSQL) or key length (MariaDB/MySQL), as the server reports it."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT i.relname, a.amname FROM pg_class i JOIN pg_am a ON a.oid = i.relam "
                "JOIN pg_namespace n ON n.oid = i.relnamespace "  # this test's schema only: workers run side by side
                "WHERE i.relname LIKE 'ix_retention_ledger_items_%' AND n.nspname = current_schema()"
            )
        )
        return {name: method for name, method in rows}
    if conn.dialect.name in ("mysql", "mariadb"):
        rows = conn.execute(sa.text("SHOW INDEX FROM retention_ledger_items")).mappings()
        return {r["Key_name"]: f"prefix {r['Sub_part']}" for r in rows if r["Key_name"] != "PRIMARY"}
    rows = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_%'"))
    return {name: "btree" for (name,) in rows}


def test_compact_pseudonym_indexes_up_and_down(engine: sa.Engine) -> None:
    """0016 makes the item pseudonym indexes compact and its downgrade restores 0015's, items kept throughout."""
    compact = {
        "postgresql": ["hash", "btree", "btree"],
        "mysql": ["prefix 16"] * 3,
        "mariadb": ["prefix 16"] * 3,
        "sqlite": ["btree"] * 3,
    }[engine.dialect.name]
    full = {"postgresql": ["btree"] * 3, "mysql": ["prefix None"] * 3, "mariadb": ["prefix None"] * 3}.get(
        engine.dialect.name, ["btree"] * 3
    )
    record = "ab" * 32
    migrate.upgrade(engine, "0015_lean")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_ledger_items (entry_seq, idx, record_pseudonym, subject_pseudonym, due_at) "
                "VALUES (1, 0, :r, :s, '2026-01-01 00:00:00')"
            ),
            {"r": record, "s": "cd" * 32},
        )
    for revision, expected in (("head", compact), ("0015_lean", full), ("head", compact)):
        if revision == "head":
            migrate.upgrade(engine)
        else:
            migrate.downgrade(engine, revision)
        with engine.connect() as conn:
            kinds = _pseudonym_index_kinds(conn)
            assert [kinds.get(name) for name in _PSEUDONYM_INDEXES] == expected, revision
            found = conn.execute(
                sa.text("SELECT subject_pseudonym FROM retention_ledger_items WHERE record_pseudonym = :r"),
                {"r": record},
            ).scalar_one()
            assert found == "cd" * 32


def test_the_revision_check_reads_what_alembic_reads(engine: sa.Engine) -> None:
    """``revision_on`` and ``head_revision`` (read without Alembic) agree with Alembic on every database.

    Empty database, an intermediate revision and the head; the head read
    from the files' text is Alembic's ``get_current_head``.
    """
    from alembic.script import ScriptDirectory

    alembic_head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert migrate.head_revision() == alembic_head
    for step in (None, "0015_lean", "head"):
        if step is not None:
            migrate.upgrade(engine, step)
        with engine.connect() as conn:
            expected = MigrationContext.configure(conn).get_current_revision()
            assert migrate.revision_on(conn) == expected == (alembic_head if step == "head" else step)


def test_the_scanned_head_leaves_branches_and_odd_files_to_alembic(tmp_path: Path) -> None:
    """A merge (tuple ``down_revision``), two heads or a dangling parent are not guessed: None, Alembic decides."""

    def write(name: str, revision: str, down: str) -> None:
        (tmp_path / f"{name}.py").write_text(f'"""x"""\n\nrevision = "{revision}"\ndown_revision = {down}\n')

    write("a", "a", "None")
    write("b", "b", '"a"')
    assert migrate.scanned_head(tmp_path) == "b"
    write("c", "c", '"a"')
    assert migrate.scanned_head(tmp_path) is None  # two heads, b and c
    write("d", "d", '("b", "c")')
    assert migrate.scanned_head(tmp_path) is None  # a merge
    for path in tmp_path.glob("*.py"):
        path.unlink()
    write("e", "e", '"missing"')
    assert migrate.scanned_head(tmp_path) is None  # one head, but its parent is in no file


@pytest.mark.only_on("postgresql")
def test_block_bodies_are_compressed_by_lz4_on_postgresql(migrated: sa.Engine) -> None:
    """0018: lz4 where the server has it (pglz cost 2 µs a record in a purge), else stored uncompressed."""
    with migrated.connect() as conn:
        lz4 = conn.execute(
            sa.text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        ).scalar_one()
        compression, storage = conn.execute(
            sa.text(
                "SELECT attcompression, attstorage FROM pg_attribute "
                "WHERE attrelid = 'retention_ledger_blocks'::regclass AND attname = 'body'"
            )
        ).one()
    assert (compression, storage) == (("l", "x") if lz4 else ("", "e"))


_SOURCE_KEYS = {
    "retention_record_states": ("record_key", "subject_key", "leader_key"),
    "retention_archive": ("record_key",),
    "retention_erasure_masks": ("record_key",),
    "retention_review_items": ("record_key",),
    "retention_holds": ("record_key", "subject_key"),
    "retention_erasure_requests": ("subject_key",),
}
"""The engine's columns holding a source's record or subject key (migration 0020_keycase), written out here."""


Columns = dict[tuple[str, str], tuple[str | None, str, str]]


def _columns(conn: sa.Connection) -> Columns:
    """(table, column) -> (collation, nullable, comment) of the engine's text columns (MariaDB/MySQL)."""
    rows = conn.execute(
        sa.text(
            "SELECT table_name, column_name, collation_name, is_nullable, column_comment "
            "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name LIKE 'retention%' "
            "AND collation_name IS NOT NULL"
        )
    ).all()
    return {(t, c): (collation, nullable, comment) for t, c, collation, nullable, comment in rows}


def _state(conn: sa.Connection, key: str, dataset: str = "d") -> None:
    conn.execute(
        sa.text(
            "INSERT INTO retention_record_states (dataset, record_key, state, since, run_id) "
            "VALUES (:d, :k, 'archived', '2026-01-01 00:00:00', 'r')"
        ),
        {"d": dataset, "k": key},
    )


def _refused(
    engine: sa.Engine,
    table: str,
    column: str,
    before: Columns,
    columns: Columns,
    revisions: tuple[str, str] = ("0020_keycase", "0019_pdrop"),
    differing: str = "differing only in case or accents",
) -> None:
    """The downgrade from ``revisions[0]`` to ``revisions[1]`` is refused naming the column and the collation it
    had there (``before``); nothing changed (collations as in ``columns``, the revision)."""
    with pytest.raises(ConfigError) as refused:
        migrate.downgrade(engine, revisions[1])
    old = before[(table, column)][0]
    assert str(refused.value) == (
        f"refusing to downgrade below {revisions[0]}: {table}.{column} holds keys that {old} takes for one "
        f"({differing}); nothing was changed"
    )
    with engine.connect() as conn:
        assert _columns(conn) == columns
    assert migrate.current_revision(engine) == revisions[0]


def _upgrade_keeps_twins(engine: sa.Engine, old: str, new: str, key: str, twin: str) -> tuple[Columns, Columns]:
    """At ``old`` MariaDB refuses a state for ``twin`` beside one for ``key`` (a duplicate key); at ``new`` every
    database keeps both. The engine's text columns at ``old`` and at ``new`` (MariaDB; empty elsewhere)."""
    maria = engine.dialect.name in ("mysql", "mariadb")
    migrate.upgrade(engine, old)
    with engine.begin() as conn:
        _state(conn, key)
        before = _columns(conn) if maria else {}
    if maria:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            _state(conn, twin)
    migrate.upgrade(engine, new)
    with engine.begin() as conn:
        _state(conn, twin)
        keys = conn.execute(sa.text("SELECT record_key FROM retention_record_states")).scalars()
        assert sorted(keys) == sorted([key, twin])
        return before, _columns(conn) if maria else {}


def _only_key_columns_in(collation: str, before: Columns, after: Columns) -> None:
    """The listed key columns, and only they, are in ``collation``; what ``before`` lists is otherwise unchanged
    (nullability, comments, every other column)."""
    wanted = {(t, c) for t, columns in _SOURCE_KEYS.items() for c in columns}
    assert {k for k, v in after.items() if v[0] == collation} == wanted
    assert {k: v[1:] for k, v in after.items() if k in before} == {k: v[1:] for k, v in before.items()}
    assert {k: v for k, v in after.items() if k in before and k not in wanted} == {
        k: v for k, v in before.items() if k not in wanted
    }


def _mask(conn: sa.Connection, key: str, dataset: str = "d") -> None:
    conn.execute(
        sa.text(
            "INSERT INTO retention_erasure_masks (dataset, record_key, request_id, run_id, masked_at) "
            "VALUES (:d, :k, 1, 'r', '2026-01-01 00:00:00')"
        ),
        {"d": dataset, "k": key},
    )


def test_key_columns_keep_keys_that_differ_only_in_case_up_and_down(engine: sa.Engine) -> None:
    """0020 gives the key columns utf8mb4_bin on MariaDB, nothing else changed; its downgrade restores the default.

    At 0019 MariaDB's case-insensitive default refuses a state for 'a' beside
    one for 'A' (a duplicate key); at head every database keeps both.
    PostgreSQL and SQLite keep both before and after (their default
    comparisons are byte-wise): 0020 changes nothing there. On MariaDB the
    downgrade is refused before its first ALTER while any listed column holds
    such twins (in the first table converted or only in a later one), and
    goes ahead when one subject merely appears on two records, or twin record
    keys are in two datasets (never compared with each other).
    """
    maria = engine.dialect.name in ("mysql", "mariadb")
    before, after = _upgrade_keeps_twins(engine, "0019_pdrop", "0020_keycase", "A", "a")
    if maria:
        _only_key_columns_in("utf8mb4_bin", before, after)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM retention_record_states WHERE record_key = 'a' AND subject_key IS NULL"))
    if maria:
        # Two keys the old collation cannot keep apart, first in the first table converted, then only in a later
        # one: refused before the first ALTER, every table still utf8mb4_bin and the revision still 0020.
        with engine.begin() as conn:
            _state(conn, "a")
        _refused(engine, "retention_record_states", "record_key", before, after)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM retention_record_states WHERE record_key = 'a' COLLATE utf8mb4_bin"))
            for key in ("M", "m"):
                _mask(conn, key)
        _refused(engine, "retention_erasure_masks", "record_key", before, after)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM retention_erasure_masks WHERE record_key = 'm' COLLATE utf8mb4_bin"))
            # One subject on two records is no twin, nor are record keys in two datasets: the downgrade goes ahead.
            for key in ("S1", "S2"):
                _state(conn, key)
            conn.execute(sa.text("UPDATE retention_record_states SET subject_key = 's' WHERE record_key LIKE 'S%'"))
            _mask(conn, "m", "d2")
            _state(conn, "a", "d2")
    migrate.downgrade(engine, "0019_pdrop")
    with engine.connect() as conn:
        if maria:
            assert _columns(conn) == before
        masks = conn.execute(sa.text("SELECT dataset, record_key FROM retention_erasure_masks"))
        assert sorted(masks) == ([("d", "M"), ("d2", "m")] if maria else [])
    migrate.upgrade(engine)


def test_key_columns_keep_keys_that_differ_only_by_trailing_spaces_up_and_down(engine: sa.Engine) -> None:
    """0021 gives the key columns MariaDB's NO PAD binary collation, nothing else changed; its downgrade restores
    utf8mb4_bin.

    At 0020 MariaDB's utf8mb4_bin (PAD SPACE) refuses a state for 'a ' beside
    one for 'a' (a duplicate key); at head every database keeps both. The
    downgrade is refused before its first ALTER while any listed column
    holds such twins (a record key in the first table converted, one only in
    a later table, a subject key, even on records of two datasets), and goes
    ahead when none is left but record keys in two datasets.
    """
    maria = engine.dialect.name in ("mysql", "mariadb")
    before, after = _upgrade_keeps_twins(engine, "0020_keycase", "head", "a", "a ")
    if maria:
        _only_key_columns_in("utf8mb4_bin", {}, before)
        _only_key_columns_in("utf8mb4_nopad_bin", before, after)
        down = ("0021_keypad", "0020_keycase")
        spaces = "differing only by trailing spaces"
        _refused(engine, "retention_record_states", "record_key", before, after, down, spaces)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM retention_record_states WHERE record_key = 'a '"))
            for key in ("M", "M  "):
                _mask(conn, key)
        _refused(engine, "retention_erasure_masks", "record_key", before, after, down, spaces)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM retention_erasure_masks WHERE record_key = 'M  '"))
            _state(conn, "S1")
            _state(conn, "S2", "d2")  # a subject's twin in another dataset is one still
            conn.execute(sa.text("UPDATE retention_record_states SET subject_key = 's' WHERE record_key = 'S1'"))
            conn.execute(sa.text("UPDATE retention_record_states SET subject_key = 's ' WHERE record_key = 'S2'"))
        _refused(engine, "retention_record_states", "subject_key", before, after, down, spaces)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE retention_record_states SET subject_key = 's' WHERE record_key = 'S2'"))
            # Record keys in two datasets are no twins (a subject's are, above): the downgrade goes ahead.
            _state(conn, "a ", "d2")
            _mask(conn, "M  ", "d2")
    migrate.downgrade(engine, "0020_keycase")
    with engine.connect() as conn:
        if maria:
            assert _columns(conn) == before
        keys = conn.execute(sa.text("SELECT dataset, record_key FROM retention_record_states")).all()
        assert sorted(keys) == (
            [("d", "S1"), ("d", "a"), ("d2", "S2"), ("d2", "a ")] if maria else [("d", "a"), ("d", "a ")]
        )
    migrate.upgrade(engine)


@pytest.mark.only_on("mariadb")
def test_a_mariadb_url_gets_the_compact_pseudonym_indexes(db_url: str) -> None:
    """Through a ``mariadb://`` URL (a dialect named "mariadb", which reads only ``mariadb_`` options) the ledger
    items' pseudonym indexes keep their first 16 characters, as through ``mysql://`` (migration 0016)."""
    engine = create_engine(sa.make_url(db_url).set(drivername="mariadb").render_as_string(hide_password=False))
    try:
        assert engine.dialect.name == "mariadb"
        migrate.upgrade(engine)
        with engine.connect() as conn:
            parts = conn.execute(
                sa.text(
                    "SELECT column_name, sub_part FROM information_schema.statistics WHERE table_schema = DATABASE() "
                    "AND table_name = 'retention_ledger_items' AND column_name LIKE '%pseudonym'"
                )
            ).all()
    finally:
        engine.dispose()
    assert sorted(parts) == [("email_pseudonym", 16), ("record_pseudonym", 16), ("subject_pseudonym", 16)]
