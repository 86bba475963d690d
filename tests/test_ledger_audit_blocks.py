"""The complete audit's format-5 matching: hits confirmed on the items' bytes, and its table of prefixes.

The ledger is the one of tests/test_ledger_format5_read.py (written by the
reference writers; every pseudonym and position computed there with hmac).
"""

from __future__ import annotations

import random
import re
import threading
from typing import Any

import pytest
import sqlalchemy as sa
import test_ledger_format5_read as format5
from test_ledger_format5_read import (
    RUN_OF,
    SECRET,
    batch_of,
    put_back,
    record_of,
    where_is,
)

from retention import commands
from retention.reporting import ledger_audit

WHOLE_BODY = re.compile(r"(?<!substr\()[`\"]?retention_ledger_blocks[`\"]?\.[`\"]?body\b", re.IGNORECASE)


ledger5 = format5.ledger5  # the fixture, under its own name


PUT_BACK = (12, 27, 9, 33)


def test_hits_are_confirmed_on_the_items_bytes_not_whole_blocks(
    ledger5: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows put back whose claims are in two blocks: named, and no block is read whole but by the pass's load.

    Each page's hits are confirmed on a span of their block read by
    ``substr`` (one statement a page with hits); the former confirmation read
    whole blocks again, once per page and block. The live keys, in pages of
    three: evt-009, evt-012, evt-027 (9 and 12 share a block), then evt-033,
    evt-035, evt-036 (33 is in 27's block, hit again), then pages without
    hits.
    """
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET)
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY_FILE", "")
    monkeypatch.setattr(ledger_audit, "_CHUNK", 3)
    for i in PUT_BACK:
        put_back(ledger5, i)
    here = threading.get_ident()
    engine = ledger5["engine"]

    def audited() -> tuple[list[str], list[str]]:
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if threading.get_ident() == here:
                statements.append(statement)

        sa.event.listen(engine, "before_cursor_execute", seen)
        try:
            result = commands.audit_claims_of(engine, ledger5["pack"])
        finally:
            sa.event.remove(engine, "before_cursor_execute", seen)
        return result.problems, statements

    def spans(statements: list[str]) -> int:
        return sum(1 for s in statements if "substr(" in s.lower() and "ledger_blocks" in s)

    expected = []
    for i in sorted(PUT_BACK, key=lambda i: (ledger5["seqs"][batch_of(i)], where_is(batch_of(i), i)[0])):
        batch = batch_of(i)
        expected.append(
            f"dataset events: entry {ledger5['seqs'][batch]} item {where_is(batch, i)[0]} "
            f"(record {record_of(RUN_OF[batch], i).hex()[:16]}) says active->purged (delete), but the live table "
            "still holds that record"
        )
    assert len({batch_of(i) for i in PUT_BACK}) == 2 and batch_of(9) == batch_of(12) and batch_of(27) == batch_of(33)
    problems, statements = audited()
    assert problems == expected
    whole = [s for s in statements if WHOLE_BODY.search(s)]
    assert len(whole) == 1, whole  # the one pass's load of the prefixes
    assert spans(statements) == 2  # one a page with hits: 27's block is read again as a span, not whole
    # One span a statement (the bound on the bytes a statement reads): the same claims named, the first page's two
    # blocks in two statements.
    monkeypatch.setattr(ledger_audit, "_SPAN_BYTES", 1)
    problems, statements = audited()
    assert problems == expected
    assert spans(statements) == 3


def test_a_prefix_table_that_grows_still_finds_every_claim() -> None:
    """Sized for 10 claims and given 5,000 (it grows seven times): every claim is found, and only it.

    Prefixes drawn so that many share their low bits (long probe runs),
    some repeat (two claims, one prefix) and one is 0 (the empty slot's mark).
    """
    pick = random.Random(7)
    claims: dict[int, list[int]] = {0: [1]}
    for loc in range(2, 5_001):
        prefix = pick.choice([pick.getrandbits(64), pick.getrandbits(40) << 24, pick.choice(list(claims))])
        claims.setdefault(prefix, []).append(loc)
    table = ledger_audit._PrefixTable(10)
    first = len(table.keys)
    for prefix, locs in claims.items():
        for loc in locs:
            table.add(prefix, loc)
    assert len(table.keys) >= 8 * first and table.used == 5_000
    for prefix, locs in claims.items():
        found = table.get(prefix)
        if prefix in (0, 1):  # 0 shares 1's slots: both are told apart by the exact comparison after
            found = [loc for loc in found if loc in locs]
        assert sorted(found) == locs
    assert table.get(pick.getrandbits(64) | 1 << 63) == []


def test_a_prefix_table_sized_for_a_passs_claims_never_grows() -> None:
    """A pass's claims are its expected share give or take a few square roots: its table holds them as sized.

    Uniform prefixes (HMAC outputs) of two runs split into passes by
    :func:`ledger_audit._block_passes` as the audit splits them; each pass's
    table sized as ``_match_dataset`` sizes it and given the claims in its
    ranges. The big run's passes expect 4,096 claims each, a power of two:
    a table with no room beyond ``expected`` would grow in about half of them.
    """
    space = 1 << 64
    for seed in (1, 2, 3):
        pick = random.Random(seed)
        runs = {
            "big": [pick.getrandbits(64) for _ in range(1 << 16)],
            "small": [pick.getrandbits(64) for _ in range(3_000)],
        }
        block_runs = {run: len(prefixes) for run, prefixes in runs.items()}
        passes = ledger_audit._block_passes(block_runs, 4_096)
        assert len(passes) == 17
        seen = 0
        for ranges in passes:
            expected = sum(block_runs[r] * (high - low) // space for r, low, high in ranges)
            table = ledger_audit._PrefixTable(expected)
            size = len(table.keys)
            for run, low, high in ranges:
                for prefix in runs[run]:
                    if low <= prefix < high:
                        table.add(prefix, seen)
                        seen += 1
                        assert len(table.keys) == size, (seed, ranges)
        assert seen == (1 << 16) + 3_000  # every claim in one pass
