"""The reference packs in rules/ load, and the WooCommerce one fits the real WooCommerce schema.

tests/schemas/woocommerce holds the tables WordPress and WooCommerce create
(per dialect); `check --db` must find every table, column, key and clock type
the pack names there, on every database (issue 14, check 5).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from conftest import migrate_isolated
from test_schemas import create_schema

from retention.cli import main

RULES = Path(__file__).resolve().parent.parent / "rules"


def test_check_passes_on_every_reference_pack() -> None:
    result = CliRunner().invoke(main, ["check", "--rules", str(RULES)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in RULES.glob("*.yaml"))
    assert "woocommerce-nl.yaml" in names
    assert len([line for line in result.output.splitlines() if line.startswith("ok: ")]) == len(names)


def test_woocommerce_nl_fits_the_woocommerce_schema(engine: sa.Engine, db_url: str) -> None:
    migrate_isolated(engine)
    create_schema(engine, "woocommerce")
    pack = RULES / "woocommerce-nl.yaml"
    result = CliRunner().invoke(main, ["check", "--rules", str(pack), "--db", db_url])
    assert result.exit_code == 0, result.output
    assert not [line for line in result.output.splitlines() if line.startswith("error")], result.output


# --------------------------------------------------------------------------
# builtin:woocommerce-nl keeps nothing of an order after the order (issue 23)
# --------------------------------------------------------------------------

ORDER_ROWS = {
    "wp_wc_order_addresses": [
        {"id": 1, "order_id": 9, "address_type": "billing", "first_name": "G", "email": "guest@example.test"},
        {"id": 2, "order_id": 9, "address_type": "shipping", "first_name": "G"},
        {"id": 3, "order_id": 1, "address_type": "billing", "first_name": "A", "email": "alice@example.test"},
    ],
    "wp_woocommerce_order_items": [
        {"order_item_id": 1, "order_item_name": "Mug", "order_item_type": "line_item", "order_id": 9},
        {"order_item_id": 2, "order_item_name": "Tea", "order_item_type": "line_item", "order_id": 1},
    ],
    "wp_woocommerce_order_itemmeta": [
        {"meta_id": 1, "order_item_id": 1, "meta_key": "_qty", "meta_value": "2"},
        {"meta_id": 2, "order_item_id": 2, "meta_key": "_qty", "meta_value": "1"},
    ],
}


def _ids(engine: sa.Engine, table: str, column: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(int(v) for v in conn.execute(sa.text(f"SELECT {column} FROM {table}")).scalars())


def test_woocommerce_nl_retains_the_order_tables_with_their_order(engine: sa.Engine) -> None:
    """On main: order 9 (on hold since 2015, due 2023) stayed for ever (its status was not final), and with
    any purged order its wp_wc_orders row, addresses and line items stayed behind."""
    from test_schemas import load_rows

    from retention.engine import execute
    from retention.policy import load_file

    create_schema(engine, "woocommerce")
    load_rows(engine, "woocommerce")
    migrate_isolated(engine)
    with engine.begin() as conn:
        for table, rows in ORDER_ROWS.items():
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            for row in rows:
                conn.execute(reflected.insert().values(**row))
    loaded = load_file(RULES / "woocommerce-nl.yaml")
    as_of = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    result = execute.run(engine, loaded, as_of, secret=b"reference-packs-key", allow_mass=("*",))
    assert result.status == "succeeded", result.failures
    orders = _ids(engine, "wp_wc_order_stats", "order_id")
    assert 9 not in orders and 1 in orders  # on hold 2015: past its term; 2021: kept until 2029
    assert _ids(engine, "wp_wc_orders", "id") == orders  # the HPOS order row goes with its order
    assert _ids(engine, "wp_wc_order_addresses", "id") == [3]
    assert _ids(engine, "wp_woocommerce_order_items", "order_item_id") == [2]
    assert _ids(engine, "wp_woocommerce_order_itemmeta", "meta_id") == [2]


def test_the_posts_variant_fits_a_schema_without_hpos_tables(engine: sa.Engine, db_url: str) -> None:
    """On main `check --db` on a schema without wp_wc_orders failed outright ('table does not exist')."""
    create_schema(engine, "woocommerce")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE wp_wc_order_addresses"))
        conn.execute(sa.text("DROP TABLE wp_wc_orders"))
    migrate_isolated(engine)
    result = CliRunner().invoke(main, ["check", "--rules", "builtin:woocommerce-nl-posts", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert not [line for line in result.output.splitlines() if line.startswith("error")], result.output
    full = CliRunner().invoke(main, ["check", "--rules", "builtin:woocommerce-nl", "--db", db_url])
    assert full.exit_code == 2
    assert "error: wp_wc_orders: table does not exist (dataset order_records)" in full.output


def test_the_posts_variant_is_the_pack_without_the_hpos_parts() -> None:
    """The two files state one policy: every dataset but those over HPOS tables is the same."""
    from retention.policy import load_file

    full = load_file(RULES / "woocommerce-nl.yaml").pack
    posts = load_file(RULES / "woocommerce-nl-posts.yaml").pack
    assert set(full.datasets) - set(posts.datasets) == {"order_records", "order_addresses"}
    for name, ds in posts.datasets.items():
        expected = full.datasets[name]
        if name == "orders":
            expected = expected.model_copy(update={"email": None})
        assert ds == expected, name
    assert posts.model_dump(exclude={"pack", "title", "datasets"}) == full.model_dump(
        exclude={"pack", "title", "datasets"}
    )
