"""RFC 6962 / RFC 9162 Merkle hash trees: hashes, roots, inclusion and consistency proofs.

- leaf hash  ``SHA-256(0x00 || leaf_data)``; node hash ``SHA-256(0x01 || left || right)``;
- the tree over ``n`` leaves splits at ``k``, the largest power of two smaller than ``n``
  (RFC 6962 §2.1); the root of the empty tree is ``SHA-256("")``;
- proofs are produced as RFC 6962 §2.1.1 PATH and §2.1.2 PROOF/SUBPROOF, in the same order
  (the sibling nearest the leaf first), and verified with the RFC 9162 §2.1.3.2 and §2.1.4.2
  algorithms, so they interoperate with Certificate Transparency logs and
  transparency-dev/merkle.

:class:`MerkleTree` is the incremental, append-only tree a log keeps: it stores every complete
(perfect) subtree hash, level by level, in contiguous ``bytearray`` s (2 × 32 bytes per leaf),
so appending costs amortised O(1) hashes and a root or proof for any size up to the current one
costs O(log n) hashes. The module-level functions take a plain list of leaf hashes.

Verification functions never raise on hostile input: they return ``False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
# A tree of at most 2**64 - 1 leaves never needs a proof longer than this.
MAX_TREE_SIZE = (1 << 64) - 1
MAX_PROOF_LEN = 64
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    if n < 2:
        raise ValueError("split_point needs n >= 2")
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(h: object, what: str) -> bytes:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")
    return bytes(h)


def _is_size(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_TREE_SIZE


class MerkleTree:
    """An append-only RFC 6962 tree over leaf hashes.

    ``_levels[k]`` holds, back to back, the hashes of the complete subtrees of height ``k``:
    entry ``i`` covers leaves ``[i * 2**k, (i + 1) * 2**k)``. Level 0 is the leaf hashes.
    Every complete subtree of every earlier tree size is in there too, so roots and proofs
    for historical sizes come for free.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        for h in leaf_hashes:
            self.append(h)

    def __len__(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash_: bytes) -> int:
        """Append a leaf hash; return its index."""
        h = _check_hash(leaf_hash_, "leaf hash")
        index = self._size
        self._levels[0] += h
        self._size += 1
        level = 0
        # A level whose entry count becomes even has completed a subtree one level up.
        while (len(self._levels[level]) // HASH_SIZE) % 2 == 0:
            row = self._levels[level]
            parent = node_hash(bytes(row[-2 * HASH_SIZE : -HASH_SIZE]), bytes(row[-HASH_SIZE:]))
            level += 1
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += parent
        return index

    def append_data(self, data: bytes) -> int:
        """Append ``leaf_hash(data)``; return its index."""
        return self.append(leaf_hash(data))

    def leaf_hash(self, index: int) -> bytes:
        if not (isinstance(index, int) and 0 <= index < self._size):
            raise IndexError("leaf index out of range")
        return self._node(0, index)

    def _node(self, level: int, index: int) -> bytes:
        off = index * HASH_SIZE
        return bytes(self._levels[level][off : off + HASH_SIZE])

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self._size
        if not _is_size(size) or size > self._size:
            raise ValueError(f"tree size {size!r} is not between 0 and {self._size}")
        return size

    def _range_hash(self, start: int, end: int, memo: dict[tuple[int, int], bytes]) -> bytes:
        """MTH(D[start:end]) for a range that occurs in the RFC 6962 recursion.

        Such a range is either a complete, aligned subtree (one lookup) or a right-edge range
        ``[start, tree_end)``: its left child is complete and its right child is again a
        right-edge range. ``memo`` makes the right edge cost O(log n) once per proof.
        """
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:  # complete subtree
            return self._node(n.bit_length() - 1, start // n)
        key = (start, end)
        cached = memo.get(key)
        if cached is None:
            k = split_point(n)
            cached = node_hash(
                self._range_hash(start, start + k, memo), self._range_hash(start + k, end, memo)
            )
            memo[key] = cached
        return cached

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` leaves (default: all)."""
        size = self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size, {})

    def inclusion_proof(self, leaf_index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(leaf_index, D[0:size])."""
        size = self._check_size(size)
        if not (isinstance(leaf_index, int) and 0 <= leaf_index < size):
            raise ValueError(f"leaf index {leaf_index!r} is not in a tree of size {size}")
        memo: dict[tuple[int, int], bytes] = {}
        path: list[bytes] = []
        start, end, m = 0, size, leaf_index
        while end - start > 1:
            k = split_point(end - start)
            if m < k:
                path.append(self._range_hash(start + k, end, memo))
                end = start + k
            else:
                path.append(self._range_hash(start, start + k, memo))
                start, m = start + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(first, D[0:second]); empty when ``first`` is 0 or ``second``."""
        second = self._check_size(second)
        if not _is_size(first) or first > second:
            raise ValueError(f"first size {first!r} is not between 0 and {second}")
        if first in (0, second):
            return []
        memo: dict[tuple[int, int], bytes] = {}
        proof: list[bytes] = []
        start, end, m, whole = 0, second, first, True
        while m != end - start:
            n = end - start
            k = split_point(n)
            if m <= k:
                proof.append(self._range_hash(start + k, end, memo))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k, memo))
                start, m, whole = start + k, m - k, False
        if not whole:
            proof.append(self._range_hash(start, end, memo))
        proof.reverse()
        return proof


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """Root hash of the tree over ``leaves`` (leaf hashes, not leaf data)."""
    level = [_check_hash(h, "leaf hash") for h in leaves]
    if not level:
        return EMPTY_ROOT
    # Pairing level by level and carrying an odd last node up unchanged gives the RFC 6962
    # shape: the split at the largest power of two is exactly where carried nodes join.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(leaf_index: int, tree_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 audit path for ``leaf_index`` in the tree of the first ``tree_size``."""
    if not _is_size(tree_size) or tree_size > len(leaf_hashes):
        raise ValueError(f"tree size {tree_size!r} is not between 0 and {len(leaf_hashes)}")
    return MerkleTree(leaf_hashes[:tree_size]).inclusion_proof(leaf_index)


def consistency_proof(m: int, n: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2 consistency proof between the trees of the first ``m`` and ``n``."""
    if not _is_size(n) or n > len(leaf_hashes):
        raise ValueError(f"tree size {n!r} is not between 0 and {len(leaf_hashes)}")
    return MerkleTree(leaf_hashes[:n]).consistency_proof(m)


def _proof_ok(proof: object) -> bool:
    return (
        isinstance(proof, list | tuple)
        and len(proof) <= MAX_PROOF_LEN
        and all(isinstance(p, bytes) and len(p) == HASH_SIZE for p in proof)
    )


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` lead from ``leaf_hash`` at ``leaf_index`` to ``root``?"""
    if not (
        isinstance(leaf_hash, bytes)
        and len(leaf_hash) == HASH_SIZE
        and isinstance(root, bytes)
        and len(root) == HASH_SIZE
        and _is_size(leaf_index)
        and _is_size(tree_size)
        and _proof_ok(proof)
    ):
        return False
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of size ``m`` with ``root_m`` a prefix of ``n``/``root_n``?

    Sizes equal: the proof must be empty and the roots equal. ``m == 0``: the proof must be
    empty (every tree extends the empty one).
    """
    if not (
        _is_size(m)
        and _is_size(n)
        and isinstance(root_m, bytes)
        and len(root_m) == HASH_SIZE
        and isinstance(root_n, bytes)
        and len(root_n) == HASH_SIZE
        and _proof_ok(proof)
    ):
        return False
    if m > n:
        return False
    if m == n:
        return len(proof) == 0 and root_m == root_n
    if m == 0:
        return len(proof) == 0 and root_m == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: its root is a node of the larger tree
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root_m and sr == root_n and sn == 0
