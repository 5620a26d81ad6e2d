"""What the evidence log commits to, signed tree heads, and offline verification.

**Leaf.** A measurement's leaf data is ``LEAF_PREFIX + SHA-256(canonical_json(measurement))``
where ``canonical_json`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False).encode()`` and a top-level ``x_evidence`` key (the inclusion bundle the
collector attaches afterwards) is left out. The leaf hash is the RFC 6962 hash of that. Because
the log only holds the leaf hash, a payload removed for a person's safety leaves the log intact
and still verifiable (:func:`verify_leaf_hash`).

**Signed tree head.** The Ed25519 signature covers exactly these 81 bytes (big-endian)::

    0      1 byte   version = 0x01
    1      8 bytes  tree_size      (u64)
    9      8 bytes  timestamp_ms   (u64, milliseconds since the Unix epoch)
    17    32 bytes  root_hash      (RFC 6962 root of the first tree_size leaves)
    49    32 bytes  log_id         (SHA-256 of the log's raw 32-byte Ed25519 public key)

The log key must sign nothing else. In JSON, hashes and the signature are standard base64.

**Bundle** (what a researcher keeps next to a measurement)::

    {"leaf_index": 5, "tree_size": 8, "leaf_hash": "b64", "proof": ["b64", ...],
     "tree_head": {"tree_size": 8, "timestamp_ms": ..., "root_hash": "b64",
                   "log_id": "b64", "signature": "b64"},
     "consistency_to_trusted": ["b64", ...]}      # optional

``leaf_hash`` is optional; with it a changed payload is named as such rather than as a proof
that does not lead to the root. ``consistency_to_trusted`` is the RFC 6962 consistency proof
between the bundle's head and a later (or earlier) head the reader trusts, always from the
smaller tree to the larger.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from netvigil.evidence.merkle import (
    HASH_SIZE,
    MAX_PROOF_LEN,
    MAX_TREE_SIZE,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

LEAF_PREFIX = b"netvigil-measurement-v1\x00"
EVIDENCE_KEY = "x_evidence"
TREE_HEAD_VERSION = 1
SIGNATURE_SIZE = 64
_HEAD_FORMAT = ">BQQ32s32s"

# The one-line reasons verification gives (tests and the CLI rely on these words).
PAYLOAD_ALTERED = "payload altered"
PROOF_MISMATCH = "proof does not lead to the signed root"
BAD_SIGNATURE = "tree head signature invalid"
INCONSISTENT = "trusted head is not consistent with the bundle's"
LEAF_ALTERED = "leaf hash altered"
# What a removed payload can prove: only that its leaf hash is in the log.
PAYLOAD_REMOVED = "payload removed; its leaf is in the log"


class EvidenceFormatError(ValueError):
    """Malformed evidence (bundle, tree head, key): the message is one line."""


# ---------------------------------------------------------------------------------------------
# leaves


def canonical_json(obj: Any) -> bytes:
    """The stable encoding a measurement is hashed in."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def measurement_leaf_data(measurement: dict[str, Any]) -> bytes:
    """``LEAF_PREFIX + SHA-256(canonical_json(measurement without x_evidence))``."""
    if not isinstance(measurement, dict):
        raise EvidenceFormatError("a measurement must be a JSON object")
    body = {k: v for k, v in measurement.items() if k != EVIDENCE_KEY}
    try:
        encoded = canonical_json(body)
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as exc:
        raise EvidenceFormatError(
            f"measurement cannot be canonically encoded ({type(exc).__name__})"
        ) from None
    return LEAF_PREFIX + hashlib.sha256(encoded).digest()


def measurement_leaf_hash(measurement: dict[str, Any]) -> bytes:
    return leaf_hash(measurement_leaf_data(measurement))


# ---------------------------------------------------------------------------------------------
# keys and tree heads


def log_id_for(public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, binascii.Error):
        raise EvidenceFormatError("log key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceFormatError("log key is not an Ed25519 public key")
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    log_id: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return tree_head_message(self.tree_size, self.timestamp_ms, self.root_hash, self.log_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "timestamp_ms": self.timestamp_ms,
            "root_hash": _b64(self.root_hash),
            "log_id": _b64(self.log_id),
            "signature": _b64(self.signature),
        }

    @classmethod
    def from_json(cls, obj: Any, what: str = "tree head") -> TreeHead:
        if not isinstance(obj, dict):
            raise EvidenceFormatError(f"{what} must be a JSON object")
        return cls(
            tree_size=_u64(obj, "tree_size", what),
            timestamp_ms=_u64(obj, "timestamp_ms", what),
            root_hash=_b64_field(obj, "root_hash", what, HASH_SIZE),
            log_id=_b64_field(obj, "log_id", what, HASH_SIZE),
            signature=_b64_field(obj, "signature", what, SIGNATURE_SIZE),
        )


def tree_head_message(tree_size: int, timestamp_ms: int, root: bytes, log_id: bytes) -> bytes:
    """The fixed 81-byte encoding that is signed (see the module docstring)."""
    for name, value in (("tree_size", tree_size), ("timestamp_ms", timestamp_ms)):
        if not _is_u64(value):
            raise EvidenceFormatError(f"{name} must be an integer between 0 and 2**64-1")
    if len(root) != HASH_SIZE or len(log_id) != HASH_SIZE:
        raise EvidenceFormatError("root hash and log id must be 32 bytes")
    return struct.pack(_HEAD_FORMAT, TREE_HEAD_VERSION, tree_size, timestamp_ms, root, log_id)


def sign_tree_head(key: Ed25519PrivateKey, size: int, root: bytes, timestamp_ms: int) -> TreeHead:
    log_id = log_id_for(key.public_key())
    signature = key.sign(tree_head_message(size, timestamp_ms, root, log_id))
    return TreeHead(size, timestamp_ms, bytes(root), log_id, signature)


def verify_tree_head(public_key: Ed25519PublicKey, head: TreeHead) -> bool:
    """Is ``head`` signed by ``public_key`` and does it name that key's log?"""
    try:
        if head.log_id != log_id_for(public_key):
            return False
        public_key.verify(head.signature, head.signed_bytes())
    except (InvalidSignature, EvidenceFormatError, TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# bundles


@dataclass(frozen=True)
class InclusionBundle:
    leaf_index: int
    tree_size: int
    proof: list[bytes]
    tree_head: TreeHead
    leaf_hash: bytes | None = None
    consistency_to_trusted: list[bytes] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "proof": [_b64(p) for p in self.proof],
            "tree_head": self.tree_head.to_json(),
        }
        if self.leaf_hash is not None:
            out["leaf_hash"] = _b64(self.leaf_hash)
        if self.consistency_to_trusted is not None:
            out["consistency_to_trusted"] = [_b64(p) for p in self.consistency_to_trusted]
        return out

    @classmethod
    def from_json(cls, obj: Any) -> InclusionBundle:
        what = "bundle"
        if not isinstance(obj, dict):
            raise EvidenceFormatError("bundle must be a JSON object")
        leaf = _b64_field(obj, "leaf_hash", what, HASH_SIZE) if "leaf_hash" in obj else None
        consistency = None
        if obj.get("consistency_to_trusted") is not None:
            consistency = _proof_field(obj, "consistency_to_trusted")
        return cls(
            leaf_index=_u64(obj, "leaf_index", what),
            tree_size=_u64(obj, "tree_size", what),
            proof=_proof_field(obj, "proof"),
            tree_head=TreeHead.from_json(obj.get("tree_head"), "bundle tree_head"),
            leaf_hash=leaf,
            consistency_to_trusted=consistency,
        )


def build_bundle(
    tree: MerkleTree, leaf_index: int, head: TreeHead, trusted_size: int | None = None
) -> InclusionBundle:
    """The bundle for ``leaf_index`` under ``head`` (a head of ``tree``, at any past size).

    ``trusted_size``: also include the consistency proof between ``head`` and the tree of that
    size (smaller tree first).
    """
    consistency = None
    if trusted_size is not None:
        lo, hi = sorted((head.tree_size, trusted_size))
        consistency = tree.consistency_proof(lo, hi)
    return InclusionBundle(
        leaf_index=leaf_index,
        tree_size=head.tree_size,
        proof=tree.inclusion_proof(leaf_index, head.tree_size),
        tree_head=head,
        leaf_hash=tree.leaf_hash(leaf_index),
        consistency_to_trusted=consistency,
    )


# ---------------------------------------------------------------------------------------------
# verification


@dataclass
class VerifyResult:
    ok: bool
    reason: str
    malformed: bool = False
    leaf_hash: bytes | None = None
    leaf_index: int | None = None
    tree_size: int | None = None
    trusted_size: int | None = None
    checks: list[str] = field(default_factory=list)
    payload_removed: bool = False  # only the leaf hash was checked (no payload to hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.ok,
            "reason": self.reason,
            "malformed": self.malformed,
            "leaf_hash": None if self.leaf_hash is None else _b64(self.leaf_hash),
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "trusted_size": self.trusted_size,
            "checks": self.checks,
            "payload_removed": self.payload_removed,
        }


def verify_measurement(
    measurement: dict[str, Any],
    bundle: dict[str, Any],
    trusted_head: dict[str, Any] | None,
    public_key_pem: bytes,
) -> VerifyResult:
    """Offline: is this measurement, unaltered, in the log the key signs for?

    Checks, in order: the bundle's head is signed by the key; the measurement's leaf hash is
    the one the bundle was issued for; the proof leads from it to the signed root; and, when
    a trusted head is given, the two heads are consistent (one tree extends the other).
    Never raises: malformed input gives ``ok=False, malformed=True`` with a one-line reason.
    """
    try:
        computed = measurement_leaf_hash(measurement)
    except EvidenceFormatError as exc:
        return VerifyResult(False, str(exc), malformed=True)
    return _verify(computed, bundle, trusted_head, public_key_pem, payload=True)


def verify_leaf_hash(
    leaf_hash_: bytes,
    bundle: dict[str, Any],
    trusted_head: dict[str, Any] | None,
    public_key_pem: bytes,
) -> VerifyResult:
    """Like :func:`verify_measurement` for an entry whose payload was removed: its leaf hash.

    What this proves, and all it proves: a leaf with this hash is at the bundle's index in the
    tree the signed head commits to. The removed payload cannot be checked, and nothing else
    (a uid, a reason for the removal) is committed to by the log. A bundle that names a
    different leaf hash than the one given fails (``LEAF_ALTERED``)."""
    if not isinstance(leaf_hash_, bytes) or len(leaf_hash_) != HASH_SIZE:
        return VerifyResult(False, "leaf hash must be 32 bytes", malformed=True)
    return _verify(leaf_hash_, bundle, trusted_head, public_key_pem, payload=False)


def _verify(
    computed: bytes,
    bundle_obj: dict[str, Any],
    trusted_obj: dict[str, Any] | None,
    pem: bytes,
    *,
    payload: bool,
) -> VerifyResult:
    try:
        key = load_public_key(pem)
        bundle = InclusionBundle.from_json(bundle_obj)
        trusted = None if trusted_obj is None else TreeHead.from_json(trusted_obj, "trusted head")
    except EvidenceFormatError as exc:
        return VerifyResult(False, str(exc), malformed=True, leaf_hash=computed)
    head = bundle.tree_head
    res = VerifyResult(
        False,
        "",
        leaf_hash=computed,
        leaf_index=bundle.leaf_index,
        tree_size=head.tree_size,
        payload_removed=not payload,
    )

    def fail(reason: str) -> VerifyResult:
        res.reason = reason
        return res

    if not verify_tree_head(key, head):
        if head.log_id != log_id_for(key):
            return fail(f"{BAD_SIGNATURE}: the head is from another log (log_id differs)")
        return fail(BAD_SIGNATURE)
    res.checks.append(f"tree head of size {head.tree_size} is signed by the log key")
    if bundle.tree_size != head.tree_size:
        return fail(f"{PROOF_MISMATCH}: the bundle's tree_size differs from its signed head's")
    if bundle.leaf_index >= head.tree_size:
        return fail(f"{PROOF_MISMATCH}: leaf index {bundle.leaf_index} is beyond the tree")
    if bundle.leaf_hash is not None and bundle.leaf_hash != computed:
        if payload:
            return fail(f"{PAYLOAD_ALTERED}: its hash is not the leaf the proof was issued for")
        return fail(f"{LEAF_ALTERED}: the leaf hash given is not the one the proof was issued for")
    if not verify_inclusion(
        computed, bundle.leaf_index, head.tree_size, bundle.proof, head.root_hash
    ):
        if payload and bundle.leaf_hash is None:
            return fail(f"{PROOF_MISMATCH} (or the payload was altered)")
        return fail(PROOF_MISMATCH)
    res.checks.append(f"leaf {bundle.leaf_index} is included in that tree")

    if trusted is not None:
        res.trusted_size = trusted.tree_size
        if not verify_tree_head(key, trusted):
            return fail(f"trusted head: {BAD_SIGNATURE}")
        lo, hi = sorted((head, trusted), key=lambda h: h.tree_size)
        proof = bundle.consistency_to_trusted or []
        if lo.tree_size != hi.tree_size and not proof and lo.tree_size != 0:
            return fail(f"{INCONSISTENT}: the bundle carries no consistency proof")
        if not verify_consistency(lo.tree_size, hi.tree_size, lo.root_hash, hi.root_hash, proof):
            return fail(INCONSISTENT)
        res.checks.append(f"consistent with the trusted head of size {trusted.tree_size}")

    res.ok = True
    res.reason = (
        ("valid" if payload else PAYLOAD_REMOVED)
        + f": leaf {bundle.leaf_index} is in the signed tree of size {head.tree_size}"
        + (
            ""
            if trusted is None
            else f", consistent with the trusted head of size {trusted.tree_size}"
        )
    )
    return res


# ---------------------------------------------------------------------------------------------
# JSON field helpers: every failure is one line naming the field


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_u64(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_TREE_SIZE


def _u64(obj: dict[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    if not _is_u64(value):
        raise EvidenceFormatError(f"{what}: {name} must be an integer between 0 and 2**64-1")
    assert isinstance(value, int)
    return value


def _decode_b64(value: object, where: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * size:
        raise EvidenceFormatError(f"{where} must be a base64 string of {size} bytes")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EvidenceFormatError(f"{where} is not valid base64") from None
    if len(raw) != size:
        raise EvidenceFormatError(f"{where} must be {size} bytes, not {len(raw)}")
    return raw


def decode_hash(value: object, where: str) -> bytes:
    """A base64 string of a 32-byte hash, or :class:`EvidenceFormatError` naming ``where``."""
    return _decode_b64(value, where, HASH_SIZE)


def _b64_field(obj: dict[str, Any], name: str, what: str, size: int) -> bytes:
    return _decode_b64(obj.get(name), f"{what}: {name}", size)


def _proof_field(obj: dict[str, Any], name: str) -> list[bytes]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise EvidenceFormatError(f"bundle: {name} must be a list of base64 hashes")
    if len(value) > MAX_PROOF_LEN:
        raise EvidenceFormatError(
            f"bundle: {name} has {len(value)} hashes; no proof is longer than {MAX_PROOF_LEN}"
        )
    return [_decode_b64(v, f"bundle: {name}[{i}]", HASH_SIZE) for i, v in enumerate(value)]
