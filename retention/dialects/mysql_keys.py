"""MariaDB and MySQL: the collation in which the engine keeps and compares a source's record and subject keys.

Python, the per-record evaluator and every CLI lookup compare keys as
strings: 'A' and 'a' are two keys, and so are 'a' and 'a '. A source key
column may keep either pair apart (a ``_bin``/``_cs`` collation keeps case
apart; a NO PAD one, MariaDB's ``utf8mb4_nopad_bin`` or MySQL 8's
``utf8mb4_0900_*``, keeps trailing spaces apart), so the engine's own key
columns and its comparisons with the source must too. ``utf8mb4_bin``
(migration 0020_keycase) is PAD SPACE: 'a' and 'a ' compared equal there, a
duplicate key for a NO PAD source's two records and a hold typed 'a' that
held 'a '. Migration 0021_keypad moves the columns to the server's NO PAD
binary collation; :class:`KeyCollated` compares source keys in it.

The collation is chosen when a statement or a column is compiled, from the
server the connection reached: one :class:`~retention.dialects.mysql.MySQLDialect`
serves MariaDB and MySQL, whose NO PAD binary collations have different
names (neither server knows the other's on the versions supported here).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

PAD_BINARY = "utf8mb4_bin"
"""Byte order, trailing spaces ignored: the engine's key collation before 0021_keypad, and on servers without NO PAD."""

NO_PAD_BINARY = frozenset({"utf8mb4_nopad_bin", "utf8mb4_0900_bin"})
"""utf8mb4 collations equal only when the strings are (MariaDB >= 10.2, MySQL >= 8.0.17): as Python compares."""


def key_collation(mariadb: bool, version: tuple[int, ...] | None) -> str:
    """The collation of the engine's key columns on this server: its NO PAD binary one where it has one.

    MariaDB added ``utf8mb4_nopad_bin`` in 10.2, MySQL ``utf8mb4_0900_bin``
    in 8.0.17; older servers (and a statement compiled before any connection,
    ``version`` None) keep ``utf8mb4_bin``, where keys that differ only by
    trailing spaces are one key (docs/dialects.md).
    """
    if version is None:
        return PAD_BINARY
    if mariadb:
        return "utf8mb4_nopad_bin" if version >= (10, 2) else PAD_BINARY
    return "utf8mb4_0900_bin" if version >= (8, 0, 17) else PAD_BINARY


def server_key_collation(dialect: sa.Dialect) -> str:
    """:func:`key_collation` of the server ``dialect`` last connected to (SQLAlchemy sets both on first connect)."""
    return key_collation(bool(getattr(dialect, "is_mariadb", False)), getattr(dialect, "server_version_info", None))


def keeps_keys_apart(collation: str | None, main: str | None) -> bool:
    """Whether a key column in ``collation`` keeps apart every two keys the main database's (``main``) keeps apart.

    The main database's collation itself, or any NO PAD binary one: a
    separate archive store may live on another server (MySQL 8's
    ``utf8mb4_0900_bin`` beside a MariaDB main database). ``utf8mb4_bin``
    only where the main database's key columns are ``utf8mb4_bin`` too (an
    older server, which takes 'a' and 'a ' for one key itself); beside a NO
    PAD main database, or a PostgreSQL/SQLite one (``main`` None: byte-wise
    comparison), it takes the two records 'a' and 'a ' for one. A column
    with no collation (an integer, a ``VARBINARY``) never: beside a
    byte-wise main database ``None == None`` would pass it, and a
    non-strict server turns every text key into 0 there (review storeref).
    """
    return collation is not None and (collation == main or collation in NO_PAD_BINARY)


class StoreKeyRefusal(NamedTuple):
    """Why a separate store's key column is refused, and the collation that would fix it (None: none on that server)."""

    why: str
    alter_to: str | None


def store_key_refusal(main: str | None, found: str | None, store_best: str) -> StoreKeyRefusal | None:
    """Refuse a separate store's ``record_key`` in ``found`` that would merge keys the main database keeps apart.

    ``main`` is the main database's key collation (None: not MariaDB/MySQL,
    keys compared byte-wise), ``store_best`` the store server's own
    :func:`key_collation`. The payload write deletes by key before it
    inserts, so a store that takes two of the main database's keys for one
    silently replaces a retained payload. A store on a server without NO PAD
    (MariaDB < 10.2, MySQL < 8.0.17) cannot be altered into keeping 'a' and
    'a ' apart: the fix is another server, not a statement.
    """
    if keeps_keys_apart(found, main):
        return None
    if keeps_keys_apart(store_best, main):
        return StoreKeyRefusal("keys that differ only in case or by trailing spaces collide", store_best)
    return StoreKeyRefusal(
        f"keys that differ only in case or by trailing spaces collide, and the store's server has no NO PAD binary "
        f"collation (MariaDB 10.2+, MySQL 8.0.17+) to keep them apart as the main database does "
        f"({'key collation ' + main if main else 'keys compared byte for byte'})",
        None,
    )


class KeyCollated(ColumnElement[Any]):
    """``text COLLATE <the server's key collation>`` on MariaDB/MySQL; ``text`` as it is elsewhere.

    An explicit collation wins over both implicit ones (the source column's,
    the engine column's): comparing ``utf8mb4_nopad_bin`` with a
    ``utf8mb4_bin`` column implicitly is "Illegal mix of collations" (error
    1267), and with a ``_ci`` one the binary collation wins anyway. The
    engine's columns have this collation, so their indexes serve the
    comparison (``eq_ref`` on the state and hold probes).
    """

    inherit_cache = True
    _traverse_internals = [("text", InternalTraversal.dp_clauseelement)]

    def __init__(self, text: ColumnElement[Any]) -> None:
        self.text = text
        self.type = text.type

    def get_children(self, **kw: Any) -> tuple[ColumnElement[Any], ...]:
        return (self.text,)

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.text._from_objects)


@compiles(KeyCollated)
def _key_collated(element: KeyCollated, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.text, **kw))


# By dialect *name*, which is "mariadb" for a ``mariadb://`` URL (MySQLDialect.names, driver_url):
# a name left out here falls back to the generic compiler, no COLLATE, and the key compares case-blind.
@compiles(KeyCollated, "mysql")
@compiles(KeyCollated, "mariadb")
def _key_collated_mysql(element: KeyCollated, compiler: Any, **kw: Any) -> str:
    return f"{compiler.process(element.text, **kw)} COLLATE {server_key_collation(compiler.dialect)}"


class KeyVarchar(mysql.VARCHAR):
    """A key column's type on MariaDB/MySQL: ``VARCHAR(n)`` in utf8mb4 and the server's key collation.

    For tables made from the metadata (``create(checkfirst=True)``: a
    separate archive store); the main database's get it from the migrations.
    """

    inherit_cache = True


@compiles(KeyVarchar, "mysql")
@compiles(KeyVarchar, "mariadb")
def _key_varchar(type_: KeyVarchar, compiler: Any, **kw: Any) -> str:
    return f"VARCHAR({type_.length}) CHARACTER SET utf8mb4 COLLATE {server_key_collation(compiler.dialect)}"
