"""The DDL that changes the collation of the engine's columns holding a source's record or subject key.

For the migrations that set it on MariaDB/MySQL (0020_keycase: byte order,
0021_keypad: no trailing-space padding either) and their downgrades, which
refuse, before their first ``ALTER``, to merge two keys that a column keeps
apart. MariaDB changes one table per non-transactional ``ALTER`` (rebuilding
it, ``ALGORITHM=COPY``): a downgrade that failed on the third table (a
duplicate key) would leave the first two changed while the database still
names the newer revision, so every column is checked first.

Each migration passes its own literal list of columns (:data:`KeyColumns`):
a table added later must not change what an old revision does on an older
database (nor fail it on a column that does not exist there yet). The
functions' behaviour is frozen with those revisions: a later one that needs
other DDL gets a function of its own, not a change here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sqlalchemy as sa

from retention.errors import ConfigError

KeyColumns = Mapping[str, Mapping[str, str | None]]
"""table -> key column -> the column its keys are unique within (a record key's ``dataset``), or None (global).

Record keys name a record of one dataset (the states', archive's, masks'
and review items' primary keys include the dataset; a record hold names
its dataset): 'a' in one dataset and 'a ' in another never meet. A subject
key is one person's across every dataset (a subject hold or erasure request
reaches them all), so subject keys are compared globally.
"""


def alter_statements(bind: sa.Connection, columns: KeyColumns, collation: str) -> list[str]:
    """One ``ALTER TABLE`` per table giving its key columns ``collation`` (a clause; "" for the table's default).

    Each column keeps its type, nullability and comment, read from the
    catalog as the earlier migrations left them; its indexes are rebuilt by
    the same statement.
    """
    quote = bind.dialect.identifier_preparer.quote
    statements = []
    for table, keys in columns.items():
        found = bind.execute(
            sa.text(
                "SELECT column_name, column_type, is_nullable, column_comment FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = :t"
            ),
            {"t": table},
        ).all()
        current = {name.lower(): (kind, nullable, comment) for name, kind, nullable, comment in found}
        parts = []
        for column in keys:
            kind, nullable, comment = current[column]
            null = "NULL" if nullable == "YES" else "NOT NULL"
            said = f" COMMENT {_literal(comment)}" if comment else ""
            parts.append(f"MODIFY {quote(column)} {kind} {collation} {null}{said}")
        statements.append(f"ALTER TABLE {quote(table)} {', '.join(parts)}")
    return statements


def _literal(text: str) -> str:
    """A string literal for DDL (no bind parameters there): quotes and backslashes doubled, colons escaped.

    The statement goes through ``sa.text``, which would take ``:word`` for a bind parameter.
    """
    return "'" + text.replace("\\", "\\\\").replace("'", "''").replace(":", "\\:") + "'"


def refuse_merged(
    bind: sa.Connection,
    columns: KeyColumns,
    revision: str,
    restored: Callable[[str], tuple[str, str]],
    differing: str,
) -> None:
    """Refuse a downgrade below ``revision`` if any listed column holds two keys its restored collation merges.

    ``restored(table)`` gives the collation the downgrade restores there and
    an expression of ``{column}`` in it. Two values that are distinct in the
    column now but equal there, in one column and one scope (a record key's
    dataset; every row for a subject key), refuse it: a subject's too, as a
    hold or erasure request on one would reach the other's records. Twins in
    two datasets are left alone; the old collation never compares them. The
    message names the table and column and how such keys differ
    (``differing``), never the keys.
    """
    quote = bind.dialect.identifier_preparer.quote
    for table, keys in columns.items():
        collation, expression = restored(table)
        for column, scope in keys.items():
            merged = expression.format(column=quote(column))
            if scope is not None:
                merged = f"{quote(scope)}, {merged}"
            twins = bind.execute(
                sa.text(
                    f"SELECT 1 FROM {quote(table)} WHERE {quote(column)} IS NOT NULL "
                    f"GROUP BY {merged} HAVING COUNT(DISTINCT {quote(column)}) > 1 LIMIT 1"
                )
            ).first()
            if twins is not None:
                raise ConfigError(
                    f"refusing to downgrade below {revision}: {table}.{column} holds keys that {collation} takes "
                    f"for one ({differing}); nothing was changed"
                )
