"""tests/slow_tier_ids.txt names tests that exist: an id left behind by a rename would silently return its test
to the fast tier (or, for a ``fast`` variant, to no tier at all), so every id's file and function are checked."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import SLOW_TIER_IDS

ROOT = Path(__file__).parent.parent


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_slow_tier_id_names_a_test_function_that_exists() -> None:
    assert len(SLOW_TIER_IDS) > 100
    missing = []
    for nodeid in SLOW_TIER_IDS:
        file, _, name = nodeid.partition("::")
        path = ROOT / file
        if not path.is_file() or name.partition("[")[0] not in _functions(path):
            missing.append(nodeid)
    assert missing == []


def test_a_fast_variant_left_out_has_a_slow_sibling() -> None:
    """A ``fast`` variant runs in neither tier only because its ``tiers`` sibling ``slow`` runs in the slow tier:
    the listed test's own ``parametrize`` decorators must call ``tiers``."""
    without = []
    for nodeid, fast_variant in SLOW_TIER_IDS.items():
        if fast_variant:
            file, _, name = nodeid.partition("::")
            tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
            function = next(
                node
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef) and node.name == name.partition("[")[0]
            )
            if not any("tiers(" in ast.unparse(decorator) for decorator in function.decorator_list):
                without.append(nodeid)
    assert without == []


def test_every_slow_tier_id_is_whole() -> None:
    """An id cut short (a parameter holding ``#`` or a space, which the list's format cannot hold) moves nothing."""
    assert [nodeid for nodeid in SLOW_TIER_IDS if nodeid.count("[") != nodeid.count("]") or " " in nodeid] == []
