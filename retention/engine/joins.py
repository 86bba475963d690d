"""A dataset's subject read through joins (docs/rules.md, "Subjects through joins").

WooCommerce orders name the lookup table's ``customer_id``; the person is
that row's ``user_id``. The subject is then a correlated scalar subquery per
hop, so every place that compares a record's subject (holds, erasure
requests, ``follows`` by subject, the ledger's subject pseudonyms) reads the
person's id with the very SQL it used for a plain column.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.policy.model import Dataset, Subject


def subject_expression(conn: sa.Connection, table: sa.Table, dataset: Dataset) -> ColumnElement[Any] | None:
    """The subject of rows of ``table``: a column, a chain of lookups, or None."""
    from retention.engine.evaluate import column_of

    if dataset.subject_key is not None:
        return column_of(table, dataset.subject_key, "subject_key")
    if dataset.subject is None:
        return None
    return _chain(conn, table, dataset, dataset.subject, "subject")


def email_expression(conn: sa.Connection, table: sa.Table, dataset: Dataset) -> ColumnElement[Any] | None:
    """The normalised e-mail address of rows of ``table`` (``lower(trim(...))``, see ``fold_case``), or None.

    Normalisation is trimming surrounding spaces and lower-casing in the
    database, as :func:`retention.subjects.events.database_email` does to an
    address an operator types; nothing provider-specific (dots or ``+tags``
    of one mail provider) is removed.
    An empty address is no identity (NULL).
    """
    from retention.engine.evaluate import column_of

    if dataset.email is None:
        return None
    if isinstance(dataset.email, str):
        value = column_of(table, dataset.email, "email")
    else:
        value = _chain(conn, table, dataset, dataset.email, "email")
    normal = dialect_for(conn).fold_case(sa.func.trim(value))
    return sa.func.nullif(normal, "")


def _chain(conn: sa.Connection, table: sa.Table, dataset: Dataset, chain: Subject, role: str) -> ColumnElement[Any]:
    from retention.engine.evaluate import column_of, reflect_table

    value: ColumnElement[Any] = column_of(table, chain.column, role)
    for index, hop in enumerate(chain.through):
        other = reflect_table(conn, hop.table, dataset.schema_)
        column_of(other, hop.key, f"{role} through key")
        column_of(other, hop.column, f"{role} through column")
        alias = other.alias(f"{role}_{index}")
        # Correlated explicitly: the subject is compared inside EXISTS subqueries
        # (holds, erasure requests), where automatic correlation would look
        # only one level up and join the dataset's table a second time.
        query = sa.select(alias.c[hop.column]).where(alias.c[hop.key] == value).correlate_except(alias)
        value = query.scalar_subquery()
    return value
