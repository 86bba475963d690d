"""The engine's columns that hold a source's record or subject key, and the DDL that changes their collation.

For the migrations that set it on MariaDB/MySQL (0020_keycase: byte order,
0021_keypad: no trailing-space padding either) and their downgrades, which
refuse, before their first ``ALTER``, to merge two keys that a column keeps
apart. MariaDB changes one table per non-transactional ``ALTER`` (rebuilding
it, ``ALGORITHM=COPY``): a downgrade that failed on the third table (a
duplicate key) would leave the first two changed while the database still
names the newer revision, so every column is checked first.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from retention.errors import ConfigError

COLUMNS: dict[str, tuple[str, ...]] = {
    "retention_record_states": ("record_key", "subject_key", "leader_key"),
    "retention_archive": ("record_key",),
    "retention_erasure_masks": ("record_key",),
    "retention_review_items": ("record_key",),
    "retention_holds": ("record_key", "subject_key"),
    "retention_erasure_requests": ("subject_key",),
}
"""The engine's columns that hold a source's record or subject key, by table."""


def alter_statements(bind: sa.Connection, collation: str) -> list[str]:
    """One ``ALTER TABLE`` per table giving its key columns ``collation`` (a clause; "" for the table's default).

    Each column keeps its type, nullability and comment, read from the
    catalog as the earlier migrations left them; its indexes are rebuilt by
    the same statement.
    """
    quote = bind.dialect.identifier_preparer.quote
    statements = []
    for table, columns in COLUMNS.items():
        found = bind.execute(
            sa.text(
                "SELECT column_name, column_type, is_nullable, column_comment FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = :t"
            ),
            {"t": table},
        ).all()
        current = {name.lower(): (kind, nullable, comment) for name, kind, nullable, comment in found}
        parts = []
        for column in columns:
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
    bind: sa.Connection, revision: str, restored: Callable[[str], tuple[str, str]], differing: str
) -> None:
    """Refuse a downgrade below ``revision`` if any listed column holds two keys its restored collation merges.

    ``restored(table)`` gives the collation the downgrade restores there and
    an expression of ``{column}`` in it. Two values that are distinct in the
    column now but equal there, in one column, refuse it (a subject's too: a
    hold or erasure request on one would reach the other's records). The
    message names the table and column and how such keys differ
    (``differing``), never the keys.
    """
    quote = bind.dialect.identifier_preparer.quote
    for table, columns in COLUMNS.items():
        collation, expression = restored(table)
        for column in columns:
            merged = expression.format(column=quote(column))
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
