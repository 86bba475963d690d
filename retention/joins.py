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

from retention.policy.model import Dataset


def subject_expression(conn: sa.Connection, table: sa.Table, dataset: Dataset) -> ColumnElement[Any] | None:
    """The subject of rows of ``table``: a column, a chain of lookups, or None."""
    from retention.evaluate import column_of, reflect_table

    if dataset.subject_key is not None:
        return column_of(table, dataset.subject_key, "subject_key")
    if dataset.subject is None:
        return None
    value: ColumnElement[Any] = column_of(table, dataset.subject.column, "subject")
    for index, hop in enumerate(dataset.subject.through):
        other = reflect_table(conn, hop.table, dataset.schema_)
        column_of(other, hop.key, "subject through key")
        column_of(other, hop.column, "subject through column")
        alias = other.alias(f"subject_{index}")
        # Correlated explicitly: the subject is compared inside EXISTS subqueries
        # (holds, erasure requests), where automatic correlation would look
        # only one level up and join the dataset's table a second time.
        query = sa.select(alias.c[hop.column]).where(alias.c[hop.key] == value).correlate_except(alias)
        value = query.scalar_subquery()
    return value
