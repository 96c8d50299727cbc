"""RFC 6962/9162 Merkle tree: known roots, and proofs checked for many tree sizes."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from remsguard.domain.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    memory_subtree,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency reference test vectors (merkle_tree_test.cc).
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC's recursive definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def hashes(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_known_roots() -> None:
    assert root_of([]) == EMPTY_ROOT
    for n in range(1, 9):
        assert root_of([leaf_hash(x) for x in CT_LEAVES[:n]]).hex() == CT_ROOTS[n - 1]
        assert reference_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


@given(st.integers(min_value=0, max_value=300))
def test_compact_range_matches_reference_and_reports_complete_nodes(n: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    acc = CompactRange()
    sub = memory_subtree([leaf_hash(x) for x in leaves])
    for i, leaf in enumerate(leaves):
        for level, index, h in acc.append(leaf_hash(leaf)):
            assert h == sub(index << level, (index + 1) << level)
        assert acc.size == i + 1
    assert acc.root() == reference_root(leaves)
    resumed = CompactRange(acc.size, acc.stack)
    assert resumed.root() == acc.root()


@settings(max_examples=300)
@given(st.data())
def test_inclusion_proofs_verify_and_reject_tampering(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=2000))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    leaves = hashes(size)
    sub = memory_subtree(leaves)
    root = sub(0, size)
    path = inclusion_proof(index, size, sub)
    assert len(path) <= (size - 1).bit_length()
    assert verify_inclusion(leaves[index], index, size, path, root)
    assert not verify_inclusion(leaf_hash(b"other"), index, size, path, root)
    if size > 1:
        assert not verify_inclusion(leaves[index], (index + 1) % size, size, path, root)
    if path:
        bad = [*path]
        bad[0] = leaf_hash(b"x")
        assert not verify_inclusion(leaves[index], index, size, bad, root)
        assert not verify_inclusion(leaves[index], index, size, path[:-1], root)
    assert not verify_inclusion(leaves[index], index, size, [*path, root], root)


@settings(max_examples=300)
@given(st.data())
def test_consistency_proofs_verify_and_reject_forks(data: st.DataObject) -> None:
    new = data.draw(st.integers(min_value=0, max_value=2000))
    old = data.draw(st.integers(min_value=0, max_value=new))
    leaves = hashes(new)
    sub = memory_subtree(leaves)
    old_root, new_root = root_of(leaves[:old]), root_of(leaves)
    proof = consistency_proof(old, new, sub)
    assert verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        forked = root_of([*leaves[: old - 1], leaf_hash(b"forged")])
        assert not verify_consistency(old, new, forked, new_root, proof)
        assert not verify_consistency(old, new, old_root, leaf_hash(b"x"), proof)


def test_bad_arguments() -> None:
    sub = memory_subtree(hashes(4))
    for index, size in ((4, 4), (-1, 4), (0, 0)):
        try:
            inclusion_proof(index, size, sub)
        except ValueError:
            continue
        raise AssertionError(f"no error for {index}, {size}")
    assert not verify_inclusion(b"", 5, 4, [], b"")
    assert not verify_consistency(5, 4, b"", b"", [])
