"""Merkle trees as RFC 9162 (Certificate Transparency v2) defines them, section 2.1.

A ledger v2 entry commits to its per-record items through the root of such
a tree; an auditor handed one item, its audit path and the entry can check
that the item is in the entry without seeing any other item. Leaf and node
hashes are domain-separated (a 0x00 or 0x01 prefix), so a node can never be
passed off as a leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes, bottom-up.

    Pairing neighbours level by level and carrying an odd last node up
    unchanged builds exactly the tree of RFC 9162's recursive definition
    (split at the largest power of two below n): a test holds the two equal.
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    sha256 = hashlib.sha256
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, leaves) of RFC 9162 section 2.1.3.1, nearest sibling first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    # Walk down from the root, remembering the sibling subtree at each split.
    siblings: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            siblings.append(root(leaves[lo : lo + k]))
            lo = lo + k
    path.extend(reversed(siblings))
    return path


def verify_path(leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does ``path`` prove ``leaf`` at ``index`` in a tree of ``size`` with this root?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


__all__ = ["EMPTY_ROOT", "audit_path", "leaf_hash", "node_hash", "root", "verify_path"]
