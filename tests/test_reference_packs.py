"""The reference packs in rules/ load, and the WooCommerce one fits the real WooCommerce schema.

tests/schemas/woocommerce holds the tables WordPress and WooCommerce create
(per dialect); `check --db` must find every table, column, key and clock type
the pack names there, on every database (issue 14, check 5).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from test_schemas import create_schema

from retention.cli import main
from retention.store import migrate

RULES = Path(__file__).resolve().parent.parent / "rules"


def test_check_passes_on_every_reference_pack() -> None:
    result = CliRunner().invoke(main, ["check", "--rules", str(RULES)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in RULES.glob("*.yaml"))
    assert "woocommerce-nl.yaml" in names
    assert len([line for line in result.output.splitlines() if line.startswith("ok: ")]) == len(names)


def test_woocommerce_nl_fits_the_woocommerce_schema(engine: sa.Engine, db_url: str) -> None:
    create_schema(engine, "woocommerce")
    migrate.upgrade(engine)
    pack = RULES / "woocommerce-nl.yaml"
    result = CliRunner().invoke(main, ["check", "--rules", str(pack), "--db", db_url])
    assert result.exit_code == 0, result.output
    assert not [line for line in result.output.splitlines() if line.startswith("error")], result.output
