"""Hostile files the CLI reads: nested JSON proofs and checkpoints, a huge legal basis, a deep fleet file.

Auditors run `ledger verify-proof` on files from outside; 2 KB of `[` was a
RecursionError traceback with exit 1. Each case: one line, exit 2, written
here by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from retention.cli import main

ENV = {
    "RETENTION_PSEUDONYM_KEY": "hostile-files",
    "RETENTION_PSEUDONYM_KEY_FILE": "",
    "RETENTION_CHECKPOINT_PUBLIC_KEY": "",
    "RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": "",
    "RETENTION_DATABASE_URL": "",
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, prog_name="retention")


@pytest.fixture
def public_key(tmp_path: Path) -> Path:
    key, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert invoke("ledger", "keygen", "--key", str(key), "--public", str(public)).exit_code == 0
    return public


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_a_deeply_nested_proof_is_refused_in_one_line(tmp_path: Path, public_key: Path, opening: str) -> None:
    proof = tmp_path / "nested.json"
    proof.write_text(opening * 2048, encoding="utf-8")
    result = invoke("ledger", "verify-proof", str(proof), "--public-key", str(public_key))
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [f"error: proof {proof} nests deeper than 32 levels; refusing to read it"],
    )


def test_a_proof_nested_just_too_deep_but_well_formed_is_refused(tmp_path: Path, public_key: Path) -> None:
    """33 levels parse without recursion trouble, and are still refused before anything walks them."""
    proof = tmp_path / "deep.json"
    proof.write_text("[" * 33 + "]" * 33, encoding="utf-8")
    result = invoke("ledger", "verify-proof", str(proof), "--public-key", str(public_key))
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [f"error: proof {proof} nests deeper than 32 levels; refusing to read it"],
    )


def test_a_nested_checkpoint_is_refused_in_one_line(
    migrated: sa.Engine, db_url: str, tmp_path: Path, public_key: Path
) -> None:
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text("[" * 2048, encoding="utf-8")
    result = invoke(
        "ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint), "--public-key", str(public_key)
    )
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [f"error: checkpoint {checkpoint} nests deeper than 32 levels; refusing to read it"],
    )
    proved = invoke("ledger", "prove", "--db", db_url, "--subject", "1", "--checkpoint", str(checkpoint))
    assert (proved.exit_code, proved.output.splitlines()) == (
        2,
        [f"error: checkpoint {checkpoint} nests deeper than 32 levels; refusing to read it"],
    )


def test_an_oversized_checkpoint_is_refused(migrated: sa.Engine, db_url: str, tmp_path: Path, public_key: Path) -> None:
    checkpoint = tmp_path / "big.json"
    checkpoint.write_text('{"seq": 1, "pad": "' + "x" * 1_000_000 + '"}', encoding="utf-8")
    result = invoke(
        "ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint), "--public-key", str(public_key)
    )
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [f"error: checkpoint {checkpoint} is larger than 1,000,000 bytes; refusing to read it"],
    )


PACK = """pack: b
version: "1"
effective_from: 2020-01-01
timezone: UTC
datasets:
  events:
    table: events
    key: id
    basis: "{basis}"
    keep:
      - clock: {{column: collected, type: timestamp}}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""


def test_a_200_kb_basis_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """The basis is copied into every ledger entry of its rule: at most 2000 characters."""
    pack = tmp_path / "basis.yaml"
    pack.write_text(PACK.format(basis="x" * 200_000), encoding="utf-8")
    result = invoke("check", "--rules", str(pack))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: {pack}:9: datasets.events.basis: string should have at most 2000 characters"
    ]
    pack.write_text(PACK.format(basis="x" * 2000), encoding="utf-8")
    assert invoke("check", "--rules", str(pack)).exit_code == 0


def test_a_deeply_nested_fleet_file_is_refused(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("targets: " + "[" * 2048, encoding="utf-8")
    result = invoke("fleet", "run", "--targets", str(fleet), "--as-of", "2026-01-01")
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"error: {fleet}")
