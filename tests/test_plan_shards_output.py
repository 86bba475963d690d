"""`plan --shards` piped (issue 25): counts and key bounds are never cut to fit the 100-column table."""

from __future__ import annotations

import pytest

from retention.cli import output as cli


def test_piped_shard_table_keeps_every_number_whole(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {
            "dataset": "order_lines",
            "shard": f"{i}/4",
            "key_space": "subject",
            "from": "customer-000123456" if i else None,
            "below": "customer-000999999" if i < 3 else None,
            "records": 128027 + i,
            "transitions": 1_280_270 + i,
            "counts": "active->inactive 64000, inactive->purged 64027, archived->purged 1152243",
        }
        for i in range(4)
    ]
    cli.print_rows(rows, cli.SHARD_COLUMNS, "table", drop_order=cli.SHARD_DROP_ORDER)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= cli.TABLE_WIDTH
    for i in range(4):
        assert f" {128027 + i} " in out and f" {1_280_270 + i} " in out and f"{i}/4" in out
    assert "order_lines" in out and "left out to fit" in out
