"""README's first command: `retention demo` runs to the end on the embedded SQLite default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The demo builds the shop, plans, runs, reruns with nothing left, and verifies the ledger."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention.cli",
            "demo",
            "--customers",
            "300",
            "--rules",
            str(ROOT / "rules" / "marketplace.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for heading in ("1. build the sample shop", "3. plan (dry run)", "4. run", "6. verify the ledger"):
        assert heading in out
    assert "customers 300, orders" in out
    assert ": succeeded, 0 transitions" in out  # the second run finds nothing to do
    assert "chain verified" in out
    key = tmp_path / ".retention-demo" / "pseudonym.key"
    assert key.stat().st_mode & 0o777 == 0o600
