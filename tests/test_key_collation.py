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
from retention.dialects.mysql_keys import keeps_keys_apart, key_collation
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


@pytest.mark.parametrize(
    ("collation", "wanted", "apart"),
    [
        ("utf8mb4_nopad_bin", "utf8mb4_nopad_bin", True),
        ("utf8mb4_0900_bin", "utf8mb4_0900_bin", True),  # MySQL 8: its binary NO PAD collation
        ("utf8mb4_0900_bin", "utf8mb4_nopad_bin", True),  # a MySQL 8 store beside a MariaDB main database
        ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", True),
        ("utf8mb4_bin", "utf8mb4_nopad_bin", False),  # PAD SPACE: 'a' and 'a ' collide
        ("utf8mb4_bin", "utf8mb4_0900_bin", False),
        ("utf8mb4_bin", "utf8mb4_bin", True),  # the best an older server has, and the engine's own there
        ("utf8mb4_0900_ai_ci", "utf8mb4_0900_bin", False),  # MySQL 8's default: NO PAD but case-blind
        ("utf8mb4_0900_as_cs", "utf8mb4_0900_bin", False),  # case-exact, yet not byte-exact (equal canonical forms)
        ("utf8mb4_general_nopad_ci", "utf8mb4_nopad_bin", False),
        ("utf8mb4_general_ci", "utf8mb4_nopad_bin", False),
        ("utf8mb4_unicode_520_ci", "utf8mb4_nopad_bin", False),
        ("utf8mb3_bin", "utf8mb4_nopad_bin", False),  # a 3-byte character set drops what it cannot hold
        (None, "utf8mb4_nopad_bin", False),  # not a text column
    ],
)
def test_a_separate_store_keeps_keys_apart_only_in_a_binary_no_pad_collation(
    collation: str | None, wanted: str, apart: bool
) -> None:
    assert keeps_keys_apart(collation, wanted) is apart


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
