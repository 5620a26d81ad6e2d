"""The tamper-evident evidence log: an RFC 6962/9162 Merkle log over accepted measurements.

Pure library (no network): :mod:`.merkle` (hashes, roots, proofs, the incremental tree),
:mod:`.log` (leaf encoding, signed tree heads, bundles, offline verification) and :mod:`.cli`
(``netvigil verify``).
"""

from netvigil.evidence.log import (
    EvidenceFormatError,
    InclusionBundle,
    TreeHead,
    VerifyResult,
    build_bundle,
    canonical_json,
    measurement_leaf_data,
    measurement_leaf_hash,
    sign_tree_head,
    verify_leaf_hash,
    verify_measurement,
    verify_tree_head,
)
from netvigil.evidence.merkle import (
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EvidenceFormatError",
    "InclusionBundle",
    "MerkleTree",
    "TreeHead",
    "VerifyResult",
    "build_bundle",
    "canonical_json",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "measurement_leaf_data",
    "measurement_leaf_hash",
    "root_hash",
    "sign_tree_head",
    "verify_consistency",
    "verify_inclusion",
    "verify_leaf_hash",
    "verify_measurement",
    "verify_tree_head",
]
