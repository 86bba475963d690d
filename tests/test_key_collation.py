"""The collation MariaDB/MySQL keep a source's keys in, and which collations a separate store may keep them in.

Pure decisions on server versions and collation names
(retention/dialects/mysql_keys.py): MySQL 8 is not installed here, so its
names are checked as names. The expected values are the servers' documented
collations, written out by hand.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from retention.dialects.mysql import MySQLDialect
from retention.dialects.mysql_keys import key_collation, store_key_refusal
from retention.store.tables import SOURCE_KEY


@pytest.mark.parametrize(
    ("mariadb", "version", "wanted"),
    [
        (True, (10, 11, 19), "utf8mb4_nopad_bin"),  # the server here
        (True, (10, 2, 0), "utf8mb4_nopad_bin"),  # NO PAD collations since 10.2.2
        (True, (10, 1, 48), "utf8mb4_bin"),
        (True, (11, 4, 5), "utf8mb4_nopad_bin"),
        (False, (8, 0, 17), "utf8mb4_0900_bin"),  # added in MySQL 8.0.17
        (False, (8, 4, 3), "utf8mb4_0900_bin"),
        (False, (8, 0, 16), "utf8mb4_bin"),
        (False, (5, 7, 44), "utf8mb4_bin"),
        (False, None, "utf8mb4_bin"),  # compiled before any connection: no server to ask
    ],
)
def test_the_engine_keeps_keys_in_the_servers_no_pad_binary_collation(
    mariadb: bool, version: tuple[int, ...] | None, wanted: str
) -> None:
    assert key_collation(mariadb, version) == wanted


NEW_MARIADB = key_collation(True, (10, 11, 19))
OLD_MARIADB = key_collation(True, (10, 1, 48))
NEW_MYSQL = key_collation(False, (8, 4, 3))
OLD_MYSQL = key_collation(False, (5, 7, 44))


@pytest.mark.parametrize(
    ("main", "found", "store_best", "alter_to"),
    [
        # Accepted: the store keeps apart every two keys the main database keeps apart.
        ("utf8mb4_nopad_bin", "utf8mb4_nopad_bin", NEW_MARIADB, "accepted"),
        ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", NEW_MYSQL, "accepted"),  # a MySQL 8 store beside MariaDB
        ("utf8mb4_0900_bin", "utf8mb4_nopad_bin", NEW_MARIADB, "accepted"),
        (None, "utf8mb4_nopad_bin", NEW_MARIADB, "accepted"),  # a PostgreSQL or SQLite main database
        ("utf8mb4_bin", "utf8mb4_bin", OLD_MARIADB, "accepted"),  # both old: the main one merges 'a ' itself
        ("utf8mb4_bin", "utf8mb4_bin", NEW_MARIADB, "accepted"),  # an old main database, a newer store server
        ("utf8mb4_bin", "utf8mb4_nopad_bin", NEW_MARIADB, "accepted"),
        # Refused, fixed by a statement: the store's server has a collation that keeps them apart.
        ("utf8mb4_nopad_bin", "utf8mb4_bin", NEW_MARIADB, "utf8mb4_nopad_bin"),  # a store made before 0021
        ("utf8mb4_nopad_bin", "utf8mb4_unicode_520_ci", NEW_MARIADB, "utf8mb4_nopad_bin"),  # before 0020
        ("utf8mb4_nopad_bin", "utf8mb4_0900_ai_ci", NEW_MYSQL, "utf8mb4_0900_bin"),  # MySQL 8's default: case-blind
        ("utf8mb4_nopad_bin", "utf8mb4_0900_as_cs", NEW_MYSQL, "utf8mb4_0900_bin"),  # not byte-exact
        ("utf8mb4_nopad_bin", "utf8mb4_general_nopad_ci", NEW_MARIADB, "utf8mb4_nopad_bin"),
        ("utf8mb4_nopad_bin", "utf8mb3_bin", NEW_MARIADB, "utf8mb4_nopad_bin"),  # drops 4-byte characters
        ("utf8mb4_nopad_bin", None, NEW_MARIADB, "utf8mb4_nopad_bin"),  # not a text column
        (None, None, NEW_MARIADB, "utf8mb4_nopad_bin"),  # not a text column beside a PostgreSQL/SQLite main database
        (None, "utf8mb4_bin", NEW_MYSQL, "utf8mb4_0900_bin"),
        ("utf8mb4_bin", "utf8mb4_general_ci", OLD_MARIADB, "utf8mb4_bin"),  # both old: case is still kept apart
        ("utf8mb4_bin", "latin1_swedish_ci", OLD_MYSQL, "utf8mb4_bin"),
        # Refused, no statement fixes it: a store server without NO PAD beside a main database that keeps 'a ' apart.
        ("utf8mb4_nopad_bin", "utf8mb4_bin", OLD_MARIADB, None),  # review-maria should-fix 4
        ("utf8mb4_0900_bin", "utf8mb4_bin", OLD_MYSQL, None),
        ("utf8mb4_nopad_bin", "utf8mb4_general_ci", OLD_MYSQL, None),
        (None, "utf8mb4_bin", OLD_MARIADB, None),  # a PostgreSQL or SQLite main database
    ],
)
def test_a_separate_store_must_keep_apart_the_keys_the_main_database_keeps_apart(
    main: str | None, found: str | None, store_best: str, alter_to: str | None
) -> None:
    """Decided from the main database's key collation, the store column's, and the store server's best (its version).

    Before, the store was compared with its own server's best only, so an
    older server's ``utf8mb4_bin`` passed beside a NO PAD main database and
    writing the payload of 'a ' replaced that of 'a' (review-maria 4).
    """
    refusal = store_key_refusal(main, found, store_best)
    assert ("accepted" if refusal is None else refusal.alter_to) == alter_to


def test_a_store_no_statement_can_fix_is_refused_with_the_reason() -> None:
    refusal = store_key_refusal("utf8mb4_nopad_bin", "utf8mb4_bin", "utf8mb4_bin")
    assert refusal is not None
    assert refusal.why == (
        "keys that differ only in case or by trailing spaces collide, and the store's server has no NO PAD binary "
        "collation (MariaDB 10.2+, MySQL 8.0.17+) to keep them apart as the main database does "
        "(key collation utf8mb4_nopad_bin)"
    )


@pytest.mark.parametrize("name", ["mysql", "mariadb"])
def test_both_dialect_names_compile_keys_in_the_servers_collation(name: str) -> None:
    """A ``mariadb://`` URL makes a dialect named "mariadb": its key comparisons and key columns name the collation too.

    Compiled against a dialect set as a MariaDB 10.11 connection leaves it;
    without the collation a key compared case- and pad-blind (review-maria 1).
    """
    dialect = sa.make_url(f"{name}+pymysql://").get_dialect()()
    dialect.server_version_info, dialect.is_mariadb = (10, 11, 19), True
    assert dialect.name == name
    source = sa.table("src", sa.column("k", sa.String(20)))
    where = str(MySQLDialect().key_text(source.c.k).in_(["a"]).compile(dialect=dialect))
    assert where.endswith("AS CHAR(191)) COLLATE utf8mb4_nopad_bin IN (__[POSTCOMPILE_param_1])"), where
    assert SOURCE_KEY.compile(dialect=dialect) == "VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
