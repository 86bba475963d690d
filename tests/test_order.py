"""The order datasets run in (retention/engine/order.py): leaders first, readers before writers, FK children first.

Each test builds its own tables and pack; the expected order is written out
by hand from docs/rules.md ("How a run decides"), not computed by engine/order.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from retention.engine.order import dataset_order
from retention.errors import SchemaError
from retention.policy import validate_pack


def _pack(datasets: dict[str, Any]) -> Any:
    for dataset in datasets.values():
        dataset.setdefault("basis", "test")
    doc = {"pack": "order", "version": "1", "effective_from": "2000-01-01", "timezone": "UTC", "datasets": datasets}
    return validate_pack(doc, Path("<order>"), yaml.safe_dump(doc)).pack


def _tables(engine: sa.Engine, *, fk: bool = False) -> None:
    meta = sa.MetaData()
    sa.Table("o_people", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("seen", sa.Date))
    sa.Table(
        "o_orders",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("o_people.id") if fk else None),
        sa.Column("placed", sa.Date),
    )
    sa.Table(
        "o_events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("person_id", sa.Integer),
        sa.Column("at", sa.Date),
    )
    meta.create_all(engine)


def _keep(column: str, **aggregate: str) -> list[dict[str, Any]]:
    return [{"clock": {"column": column, "type": "date", **aggregate}, "period": "P1Y"}]


DELETE = [{"to": "purged", "action": "delete"}]


def test_leader_runs_before_its_followers_whatever_the_pack_order(engine: sa.Engine) -> None:
    _tables(engine)
    pack = _pack(
        {
            "events": {
                "table": "o_events",
                "key": "id",
                "subject_key": "person_id",
                "follows": {"dataset": "people", "on": {"purged": "purged"}},
                "lifecycle": DELETE,
            },
            "people": {
                "table": "o_people",
                "key": "id",
                "subject_key": "id",
                "keep": _keep("seen"),
                "lifecycle": DELETE,
            },
        }
    )
    with engine.connect() as conn:
        assert dataset_order(conn, pack) == ["people", "events"]


def test_reader_runs_before_the_dataset_deleting_what_it_reads(engine: sa.Engine) -> None:
    _tables(engine)
    pack = _pack(
        {
            "orders": {"table": "o_orders", "key": "id", "keep": _keep("placed"), "lifecycle": DELETE},
            "people": {
                "table": "o_people",
                "key": "id",
                "subject_key": "id",
                "keep": _keep("placed", aggregate="max", table="o_orders", on="person_id"),
                "lifecycle": [{"to": "inactive", "action": "deactivate", "set": {"seen": None}}],
            },
        }
    )
    with engine.connect() as conn:
        assert dataset_order(conn, pack) == ["people", "orders"]


def test_siblings_changing_their_leaders_clock_tables_are_not_a_cycle(engine: sa.Engine) -> None:
    """WooCommerce's shape: the person's clock reads orders and events, both follow the person."""
    _tables(engine)
    follow = {"dataset": "people", "on": {"purged": "purged"}}
    pack = _pack(
        {
            "orders": {
                "table": "o_orders",
                "key": "id",
                "subject_key": "person_id",
                "keep": _keep("placed"),
                "follows": follow,
                "lifecycle": DELETE,
            },
            "events": {
                "table": "o_events",
                "key": "id",
                "subject_key": "person_id",
                "keep": _keep("at"),
                "follows": follow,
                "lifecycle": DELETE,
            },
            "people": {
                "table": "o_people",
                "key": "id",
                "subject_key": "id",
                "keep": _keep("placed", aggregate="max", table="o_orders", on="person_id")
                + _keep("at", aggregate="max", table="o_events", on="person_id"),
                "lifecycle": DELETE,
            },
        }
    )
    with engine.connect() as conn:
        assert dataset_order(conn, pack) == ["people", "orders", "events"]


def test_two_datasets_deleting_what_the_other_reads_are_refused_naming_the_cycle(engine: sa.Engine) -> None:
    _tables(engine)
    pack = _pack(
        {
            "orders": {
                "table": "o_orders",
                "key": "id",
                "keep": _keep("at", aggregate="max", table="o_events", on="person_id"),
                "lifecycle": DELETE,
            },
            "events": {
                "table": "o_events",
                "key": "id",
                "keep": _keep("placed", aggregate="max", table="o_orders", on="person_id"),
                "lifecycle": DELETE,
            },
        }
    )
    with engine.connect() as conn, pytest.raises(SchemaError) as caught:
        dataset_order(conn, pack)
    message = str(caught.value)
    assert "cannot be ordered" in message
    assert "orders reads o_events, which events changes" in message
    assert "events reads o_orders, which orders changes" in message


def test_rows_referencing_a_deleted_parent_change_first(engine: sa.Engine) -> None:
    _tables(engine, fk=True)
    pack = _pack(
        {
            "people": {
                "table": "o_people",
                "key": "id",
                "subject_key": "id",
                "keep": _keep("seen"),
                "lifecycle": DELETE,
            },
            "orders": {"table": "o_orders", "key": "id", "keep": _keep("placed"), "lifecycle": DELETE},
        }
    )
    with engine.connect() as conn:
        assert dataset_order(conn, pack) == ["orders", "people"]
