"""RFC 9162 Merkle trees: the bottom-up root equals the RFC's recursive definition, and audit paths verify."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from retention.ledger import merkle


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, written from the text: MTH({}) = SHA-256(); split at the largest power of 2 < n."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"item {i}".encode()) for i in range(n)]


def test_known_vectors() -> None:
    """Leaf and node hashes are domain separated; a one-leaf tree's root is its leaf hash."""
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    one = _leaves(1)
    assert merkle.root(one) == one[0]
    a, b = _leaves(2)
    assert merkle.root([a, b]) == hashlib.sha256(b"\x01" + a + b).digest()


@given(st.integers(min_value=0, max_value=300))
def test_root_equals_the_recursive_definition(n: int) -> None:
    """For every size, the bottom-up root is RFC 9162's MTH."""
    leaves = _leaves(n)
    assert merkle.root(leaves) == _mth(leaves)


@given(st.integers(min_value=1, max_value=200), st.data())
def test_every_audit_path_verifies_and_tampering_fails(n: int, data: st.DataObject) -> None:
    """A path proves its leaf at its index; any other leaf, index, size, path byte or root is refused."""
    leaves = _leaves(n)
    top = merkle.root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    path = merkle.audit_path(leaves, index)
    assert merkle.verify_path(leaves[index], index, n, path, top)
    other = merkle.leaf_hash(b"not an item")
    assert not merkle.verify_path(other, index, n, path, top)
    if n > 1:
        assert not merkle.verify_path(leaves[index], (index + 1) % n, n, path, top)
        position = data.draw(st.integers(min_value=0, max_value=len(path) - 1))
        bad = bytearray(path[position])
        bad[0] ^= 1
        assert not merkle.verify_path(
            leaves[index], index, n, [*path[:position], bytes(bad), *path[position + 1 :]], top
        )
    assert not merkle.verify_path(leaves[index], index, n, path, bytes(32))
