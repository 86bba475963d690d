"""Format 5's block encoding and commitment (retention.ledger.blocks), held to hashes computed here by hand.

Pure functions, no database: the writers' tests hold the databases' blocks to
:func:`blocks.encode`, and these tests hold ``encode``, ``root`` and the proof
check to the byte layout docs/ledger.md gives, computed independently below.
"""

from __future__ import annotations

import hashlib

import pytest

from retention.ledger import blocks

DUE = "2025-10-01T22:00:00.000000Z"


def _pseudonym(n: int) -> bytes:
    return hashlib.sha256(f"p{n}".encode()).digest()


def _by_hand(items: list[tuple[bytes, bytes | None, str]]) -> bytes:
    rows = [r + (s if s is not None else b"\x00" * 32) + d.encode() for r, s, d in items]
    return b"".join(sorted(rows))


def _rfc9162(leaves: list[bytes]) -> bytes:
    """MTH by the recursive definition (RFC 9162 2.1.1), independent of merkle.root's bottom-up loop."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _rfc9162(leaves[:k]) + _rfc9162(leaves[k:])).digest()


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 200])
def test_block_layout_and_root_match_the_documented_bytes(n: int) -> None:
    items = [(_pseudonym(i), None if i % 3 == 0 else _pseudonym(1000 + i % 7), DUE) for i in range(n)]
    block = blocks.encode(items)
    expected = _by_hand(items)
    assert block == expected
    assert len(block) == 91 * n
    size = 64 * 91
    leaves = [hashlib.sha256(b"\x00" + expected[i : i + size]).digest() for i in range(0, len(expected), size)]
    assert len(leaves) == -(-n // 64)
    assert blocks.root(block) == _rfc9162(leaves)
    assert blocks.check(block) is None
    assert [item.idx for item in blocks.items(block)] == list(range(n))


def test_items_read_back_in_text_forms_and_found_by_pseudonym() -> None:
    items = [(_pseudonym(i), _pseudonym(500) if i < 3 else None, DUE) for i in range(10)]
    block = blocks.encode(items)
    order = sorted(range(10), key=lambda i: _pseudonym(i))
    for idx, i in enumerate(order):
        item = blocks.item_at(block, idx)
        assert item.record == _pseudonym(i).hex()
        assert item.subject == (_pseudonym(500).hex() if i < 3 else None)
        assert item.due_at == DUE
        assert blocks.find_record(block, _pseudonym(i)) == idx
    assert blocks.find_record(block, _pseudonym(99)) is None
    assert sorted(blocks.find_subject(block, _pseudonym(500))) == sorted(order.index(i) for i in range(3))
    assert blocks.find_subject(block, bytes(32)) == []


def test_a_needle_found_across_item_boundaries_is_not_an_item() -> None:
    """The subject search passes over an occurrence that is not at an item's subject field."""
    record_a, record_b = b"\x01" * 32, b"\x02" * 32
    subject = b"\x07" * 32
    block = blocks.encode([(record_a, None, DUE), (record_b, subject, DUE)])
    # Straddling: the last 16 bytes of item 0's subject field and the first 16 of a due field cannot match; put the
    # needle inside a record field instead: searching for a record pseudonym as a subject finds nothing.
    assert blocks.find_subject(block, record_b) == []
    assert blocks.find_subject(block, subject) == [1]


def test_malformed_blocks_are_named() -> None:
    good = blocks.encode([(_pseudonym(i), None, DUE) for i in range(3)])
    assert blocks.check(good[:-1]) is not None and "whole number" in str(blocks.check(good[:-1]))
    swapped = good[91:182] + good[:91] + good[182:]
    assert blocks.check(swapped) == "item 1 is not in ascending record pseudonym order"
    bad_due = good[:64] + b"2025-10-01 22:00:00.000000Z" + good[91:]
    assert blocks.check(bad_due) == "item 0: its due instant is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ"
    with pytest.raises(blocks.BlockError):
        blocks.item_bytes(b"short", None, DUE)
    with pytest.raises(blocks.BlockError):
        blocks.item_bytes(_pseudonym(1), None, "2025-10-01")


@pytest.mark.parametrize("n,idx", [(1, 0), (64, 63), (65, 64), (200, 130), (200, 0)])
def test_a_proof_part_verifies_and_any_changed_byte_fails(n: int, idx: int) -> None:
    block = blocks.encode([(_pseudonym(i), _pseudonym(9000 + i), DUE) for i in range(n)])
    root = blocks.root(block)
    chunk, path = blocks.proof_part(block, idx)
    item = blocks.item_at(block, idx)
    assert blocks.verify_item(item, chunk, path, n, root) is None
    other = (idx + 1) % n
    if other // 64 == idx // 64 and other != idx:
        # Another item of the same chunk does not pass for this one's position.
        moved = blocks.BlockItem(idx, blocks.item_at(block, other).record, item.subject, item.due_at)
        assert blocks.verify_item(moved, chunk, path, n, root) == "the item is not at its position in the chunk"
    flipped = bytearray(chunk)
    flipped[-1] ^= 1
    assert blocks.verify_item(item, bytes(flipped), path, n, root) is not None
    if path:
        wrong = [bytes(32), *path[1:]]
        assert blocks.verify_item(item, chunk, wrong, n, root) == (
            "the chunk and its audit path do not lead to the entry's Merkle root"
        )
    assert blocks.verify_item(item, chunk, path, n + 64, root) is not None
    late = blocks.BlockItem(idx, item.record, item.subject, "2025-10-02T22:00:00.000000Z")
    assert blocks.verify_item(late, chunk, path, n, root) == "the item is not at its position in the chunk"
