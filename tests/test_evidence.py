"""The evidence log: RFC 6962 Merkle proofs, signed tree heads, offline verification, the CLI."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netvigil.evidence import cli as evidence_cli
from netvigil.evidence.log import (
    BAD_SIGNATURE,
    INCONSISTENT,
    PAYLOAD_ALTERED,
    PROOF_MISMATCH,
    TreeHead,
    build_bundle,
    canonical_json,
    measurement_leaf_data,
    measurement_leaf_hash,
    public_key_pem,
    sign_tree_head,
    verify_leaf_hash,
    verify_measurement,
    verify_tree_head,
)
from netvigil.evidence.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# --------------------------------------------------------------------------------------------
# A straightforward recursive reference, written from RFC 6962 §2.1 text.


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return [] if m in (0, len(d)) else ref_subproof(m, d, True)


LEAVES64 = [leaf_hash(i.to_bytes(4, "big") + b"netvigil") for i in range(64)]
ROOTS64 = [ref_mth(LEAVES64[:n]) for n in range(65)]

# --------------------------------------------------------------------------------------------
# Known vectors: the Certificate Transparency reference leaves, roots and proofs, as published
# in Google's certificate-transparency (merkle_tree_test) and transparency-dev/merkle
# (testonly/constants.go). Data only.

CT_LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def test_ct_vectors() -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    tree = MerkleTree(hashes)
    for n in range(9):
        assert root_hash(hashes[:n]).hex() == CT_ROOTS[n]
        assert tree.root(n).hex() == CT_ROOTS[n]
    for (i, n), want in CT_INCLUSION.items():
        assert [p.hex() for p in tree.inclusion_proof(i, n)] == want
        assert verify_inclusion(hashes[i], i, n, [bytes.fromhex(p) for p in want], tree.root(n))
    for (m, n), want in CT_CONSISTENCY.items():
        assert [p.hex() for p in consistency_proof(m, n, hashes)] == want
        proof = [bytes.fromhex(p) for p in want]
        assert verify_consistency(m, n, tree.root(m), tree.root(n), proof)


def test_roots_and_inclusion_every_leaf_up_to_64() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT
    for n in range(1, 65):
        tree.append(LEAVES64[n - 1])
        assert tree.root() == ROOTS64[n] == root_hash(LEAVES64[:n])
        for i in range(n):
            proof = tree.inclusion_proof(i)
            assert proof == ref_path(i, LEAVES64[:n]) == inclusion_proof(i, n, LEAVES64)
            assert verify_inclusion(LEAVES64[i], i, n, proof, ROOTS64[n])
    # historical sizes from the full tree
    for n in range(1, 65):
        assert tree.root(n) == ROOTS64[n]
        assert tree.inclusion_proof(n // 2, n) == ref_path(n // 2, LEAVES64[:n])


def test_consistency_every_pair_up_to_64() -> None:
    tree = MerkleTree(LEAVES64)
    for n in range(65):
        for m in range(n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref_proof(m, LEAVES64[:n]), (m, n)
            assert verify_consistency(m, n, ROOTS64[m], ROOTS64[n], proof), (m, n)
            if 0 < m < n:
                assert not verify_consistency(m, n, ROOTS64[m], ROOTS64[n - 1], proof)
                assert not verify_consistency(m, n, ROOTS64[m - 1], ROOTS64[n], proof)


def test_random_indices_up_to_5000() -> None:
    rnd = random.Random(6962)
    leaves = [leaf_hash(rnd.randbytes(20)) for _ in range(5000)]
    tree = MerkleTree(leaves)
    assert tree.root() == ref_mth(leaves) == root_hash(leaves)
    for _ in range(25):
        n = rnd.randint(1, 5000)
        i = rnd.randrange(n)
        proof = tree.inclusion_proof(i, n)
        assert proof == ref_path(i, leaves[:n])
        assert verify_inclusion(leaves[i], i, n, proof, tree.root(n))
        m = rnd.randint(0, n)
        cproof = tree.consistency_proof(m, n)
        assert cproof == ref_proof(m, leaves[:n])
        assert verify_consistency(m, n, tree.root(m), tree.root(n), cproof)


def test_mangled_inclusion_proofs_rejected() -> None:
    for n in range(1, 33):
        root = ROOTS64[n]
        for i in range(n):
            proof = ref_path(i, LEAVES64[:n])
            leaf = LEAVES64[i]
            assert not verify_inclusion(leaf, i, n, [*proof, b"\xab" * 32], root)
            # (A wrong tree size alone can pass when it gives the path the same shape, e.g.
            # leaf 0 of 3 or of 4: the size is bound by the signed tree head, tested below.)
            assert not verify_inclusion(leaf, n, n, proof, root)
            if n > 1:
                assert not verify_inclusion(leaf, i, n, proof[:-1], root)
                assert not verify_inclusion(leaf, i ^ 1 if (i ^ 1) < n else i - 1, n, proof, root)
                for j in range(len(proof)):
                    bad = list(proof)
                    bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
                    assert not verify_inclusion(leaf, i, n, bad, root)


def test_mangled_consistency_proofs_rejected() -> None:
    for n in range(2, 33):
        for m in range(1, n):
            proof = ref_proof(m, LEAVES64[:n])
            args = (m, n, ROOTS64[m], ROOTS64[n])
            assert not verify_consistency(*args, [*proof, b"\xcd" * 32])
            assert not verify_consistency(*args, proof[:-1])
            assert not verify_consistency(n, m, ROOTS64[n], ROOTS64[m], proof)
            for j in range(len(proof)):
                bad = list(proof)
                bad[j] = bytes([bad[j][0] ^ 0x80]) + bad[j][1:]
                assert not verify_consistency(*args, bad)
    assert verify_consistency(4, 4, ROOTS64[4], ROOTS64[4], [])
    assert not verify_consistency(4, 4, ROOTS64[4], ROOTS64[5], [])
    assert not verify_consistency(4, 4, ROOTS64[4], ROOTS64[4], [ROOTS64[4]])
    assert verify_consistency(0, 8, EMPTY_ROOT, ROOTS64[8], [])
    assert not verify_consistency(0, 8, ROOTS64[1], ROOTS64[8], [])


@pytest.mark.parametrize(
    "args",
    [
        (b"\x00" * 31, 0, 1, [], b"\x00" * 32),
        ("not bytes", 0, 1, [], b"\x00" * 32),
        (b"\x00" * 32, -1, 1, [], b"\x00" * 32),
        (b"\x00" * 32, 0, -5, [], b"\x00" * 32),
        (b"\x00" * 32, True, 2, [], b"\x00" * 32),
        (b"\x00" * 32, 0, 2**64, [], b"\x00" * 32),
        (b"\x00" * 32, 0, 2, [b"\x00" * 32] * 1_000_000, b"\x00" * 32),
        (b"\x00" * 32, 0, 2, "abc", b"\x00" * 32),
        (b"\x00" * 32, 0, 2, [b"short"], b"\x00" * 32),
    ],
)
def test_verify_inclusion_hostile(args: Any) -> None:
    assert verify_inclusion(*args) is False


def test_verify_consistency_hostile() -> None:
    r = ROOTS64[8]
    assert not verify_consistency(-1, 8, r, r, [])
    assert not verify_consistency(2, 8, r, r, [r] * 1_000_000)
    assert not verify_consistency(2, 8, r[:31], r, [r])
    assert not verify_consistency(2**70, 2**71, r, r, [r])


def test_tree_rejects_bad_arguments() -> None:
    tree = MerkleTree(LEAVES64[:5])
    with pytest.raises(ValueError):
        tree.append(b"x")
    with pytest.raises(ValueError):
        tree.inclusion_proof(5)
    with pytest.raises(ValueError):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.consistency_proof(4, 3)


# --------------------------------------------------------------------------------------------
# The log: leaves, signed tree heads, bundles


def _measurement(i: int) -> dict[str, Any]:
    return {
        "measurement_uid": f"20240101T000000Z_webconnectivity_KZ_{i:04d}",
        "probe_cc": "KZ",
        "probe_asn": "AS9198",
        "input": f"https://site{i}.example/",
        "test_keys": {"blocking": "tcp_ip", "body": "<html>Доступ ограничен</html>", "n": i},
    }


class Log:
    def __init__(self, n: int = 10, seed: int = 0, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.pem = public_key_pem(self.key)
        self.measurements = [_measurement(i + seed) for i in range(n)]
        self.tree = MerkleTree(measurement_leaf_hash(m) for m in self.measurements)

    def head(self, size: int | None = None) -> TreeHead:
        size = self.tree.size if size is None else size
        return sign_tree_head(self.key, size, self.tree.root(size), 1_700_000_000_000 + size)

    def bundle(self, i: int, size: int | None = None, trusted: int | None = None) -> dict[str, Any]:
        return build_bundle(self.tree, i, self.head(size), trusted).to_json()


@pytest.fixture(scope="module")
def log() -> Log:
    return Log()


def test_leaf_encoding_is_canonical_and_ignores_x_evidence() -> None:
    a = {"b": 1, "a": "é"}
    assert canonical_json(a) == '{"a":"é","b":1}'.encode()
    data = measurement_leaf_data(a)
    assert data == b"netvigil-measurement-v1\x00" + hashlib.sha256(canonical_json(a)).digest()
    assert measurement_leaf_hash({"a": "é", "b": 1, "x_evidence": {"any": 1}}) == leaf_hash(data)


def test_tree_head_signing_and_json(log: Log) -> None:
    head = log.head()
    assert len(head.signed_bytes()) == 81 and head.signed_bytes()[0] == 1
    assert verify_tree_head(log.key.public_key(), head)
    again = TreeHead.from_json(json.loads(json.dumps(head.to_json())))
    assert again == head
    other = Ed25519PrivateKey.generate()
    assert not verify_tree_head(other.public_key(), head)
    moved = TreeHead(head.tree_size + 1, *list(vars(head).values())[1:])
    assert not verify_tree_head(log.key.public_key(), moved)


def test_valid_measurement(log: Log) -> None:
    for i in range(10):
        res = verify_measurement(log.measurements[i], log.bundle(i), None, log.pem)
        assert res.ok, res.reason
    # at an older size too, with the collector's x_evidence attached
    m = dict(log.measurements[3], x_evidence=log.bundle(3, size=5))
    assert verify_measurement(m, m["x_evidence"], None, log.pem).ok


def test_tampered_payload_rejected(log: Log) -> None:
    m = copy.deepcopy(log.measurements[4])
    m["test_keys"]["blocking"] = "tcp_ip".replace("t", "T", 1)  # one changed byte
    res = verify_measurement(m, log.bundle(4), None, log.pem)
    assert not res.ok and not res.malformed
    assert res.reason.startswith(PAYLOAD_ALTERED)
    # without the leaf hash in the bundle, still rejected: the proof no longer leads to the root
    bundle = log.bundle(4)
    del bundle["leaf_hash"]
    res = verify_measurement(m, bundle, None, log.pem)
    assert not res.ok and res.reason.startswith(PROOF_MISMATCH)


def _flip(b64: str) -> str:
    import base64

    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("forge", ["flip", "index", "size", "long", "short", "swap"])
def test_forged_proof_rejected(log: Log, forge: str) -> None:
    bundle = log.bundle(5)
    if forge == "flip":
        bundle["proof"][1] = _flip(bundle["proof"][1])
    elif forge == "index":
        bundle["leaf_index"] = 4
        del bundle["leaf_hash"]
    elif forge == "size":
        bundle["tree_size"] = 9
    elif forge == "long":
        bundle["proof"].append(bundle["proof"][0])
    elif forge == "short":
        bundle["proof"].pop()
    else:
        bundle["proof"][0], bundle["proof"][1] = bundle["proof"][1], bundle["proof"][0]
    res = verify_measurement(log.measurements[5], bundle, None, log.pem)
    assert not res.ok and not res.malformed
    assert res.reason.startswith(PROOF_MISMATCH), res.reason


def test_forged_signature_rejected(log: Log) -> None:
    bundle = log.bundle(2)
    bundle["tree_head"]["signature"] = _flip(bundle["tree_head"]["signature"])
    res = verify_measurement(log.measurements[2], bundle, None, log.pem)
    assert not res.ok and res.reason == BAD_SIGNATURE
    # a head re-signed over a forged root, by someone else's key
    bundle = log.bundle(2)
    bundle["tree_head"] = sign_tree_head(
        Ed25519PrivateKey.generate(), 10, log.tree.root(), 1
    ).to_json()
    res = verify_measurement(log.measurements[2], bundle, None, log.pem)
    assert not res.ok and res.reason.startswith(BAD_SIGNATURE)
    # the root in the head changed after signing
    bundle = log.bundle(2)
    bundle["tree_head"]["root_hash"] = _flip(bundle["tree_head"]["root_hash"])
    assert verify_measurement(log.measurements[2], bundle, None, log.pem).reason == BAD_SIGNATURE


def test_consistent_trusted_head_accepted() -> None:
    big = Log(n=16)
    trusted = big.head(16).to_json()
    res = verify_measurement(
        big.measurements[3], big.bundle(3, size=10, trusted=16), trusted, big.pem
    )
    assert res.ok and res.trusted_size == 16, res.reason
    # equal size, and an older trusted head (proof from it to the bundle's)
    assert verify_measurement(big.measurements[3], big.bundle(3), trusted, big.pem).ok
    older = big.head(7).to_json()
    assert verify_measurement(
        big.measurements[3], big.bundle(3, size=10, trusted=7), older, big.pem
    ).ok
    # no consistency proof: rejected
    res = verify_measurement(big.measurements[3], big.bundle(3, size=10), trusted, big.pem)
    assert not res.ok and res.reason.startswith(INCONSISTENT)


def test_inconsistent_tree_head_rejected() -> None:
    honest = Log(n=16)
    # the same log key signing a different history: entry 2 replaced, then extended
    forked = Log(n=16, key=honest.key)
    forked.measurements[2] = _measurement(999)
    forked.tree = MerkleTree(measurement_leaf_hash(m) for m in forked.measurements)
    fork_head = forked.head(16).to_json()
    assert verify_tree_head(honest.key.public_key(), TreeHead.from_json(fork_head))
    # the collector's (honest) proof from 10 to 16 does not reach the forked root
    bundle = honest.bundle(5, size=10, trusted=16)
    res = verify_measurement(honest.measurements[5], bundle, fork_head, honest.pem)
    assert not res.ok and res.reason == INCONSISTENT
    # nor does the forked log's own proof start from the honest head
    bundle["consistency_to_trusted"] = build_bundle(forked.tree, 5, forked.head(10), 16).to_json()[
        "consistency_to_trusted"
    ]
    res = verify_measurement(honest.measurements[5], bundle, fork_head, honest.pem)
    assert not res.ok and res.reason == INCONSISTENT
    # a split view at the same size
    res = verify_measurement(
        honest.measurements[5], honest.bundle(5, size=16), fork_head, honest.pem
    )
    assert not res.ok and res.reason == INCONSISTENT


def test_payload_removal_keeps_log_verifiable(log: Log) -> None:
    bundle = log.bundle(7)
    leaf = measurement_leaf_hash(log.measurements[7])
    res = verify_leaf_hash(leaf, bundle, log.head().to_json(), log.pem)
    assert res.ok and "payload removed" in res.reason
    # the other entries still verify against the same head
    assert verify_measurement(log.measurements[8], log.bundle(8), None, log.pem).ok
    assert not verify_leaf_hash(b"\x00" * 32, bundle, None, log.pem).ok


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(proof=["AAAA"] * 100_000),
        lambda b: b.update(proof=["not base64!!"]),
        lambda b: b.update(proof="AAAA"),
        lambda b: b.update(leaf_index=-1),
        lambda b: b.update(tree_size=-10),
        lambda b: b.update(tree_size=True),
        lambda b: b.update(leaf_index=2**64),
        lambda b: b.update(leaf_hash="A" * 10_000),
        lambda b: b["tree_head"].update(signature="@@@@"),
        lambda b: b["tree_head"].update(root_hash="AAAA"),
        lambda b: b["tree_head"].update(tree_size="10"),
        lambda b: b.pop("tree_head"),
        lambda b: b.update(consistency_to_trusted=[None]),
    ],
)
def test_hostile_bundle_one_line(log: Log, mutate: Any) -> None:
    bundle = log.bundle(1)
    mutate(bundle)
    res = verify_measurement(log.measurements[1], bundle, None, log.pem)
    assert not res.ok and res.malformed
    assert res.reason and "\n" not in res.reason and len(res.reason) < 200


def test_hostile_other_inputs(log: Log) -> None:
    bundle = log.bundle(1)
    for res in [
        verify_measurement(log.measurements[1], [], None, log.pem),  # type: ignore[arg-type]
        verify_measurement(log.measurements[1], bundle, {"tree_size": -1}, log.pem),
        verify_measurement(log.measurements[1], bundle, None, b"not a key"),
        verify_measurement({"x": "\ud800"}, bundle, None, log.pem),
        verify_measurement("nope", bundle, None, log.pem),  # type: ignore[arg-type]
    ]:
        assert not res.ok and res.malformed and "\n" not in res.reason


# --------------------------------------------------------------------------------------------
# netvigil verify


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    evidence_cli.add_parser(parser.add_subparsers(dest="command"))
    rc = evidence_cli.run(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _write(path: Path, obj: Any) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False))
    return str(path)


def test_cli(log: Log, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "log.pem"
    key.write_bytes(log.pem)
    m = dict(log.measurements[6], x_evidence=log.bundle(6))
    mfile = _write(tmp_path / "m.json", m)
    head = _write(tmp_path / "head.json", log.head().to_json())
    ok = ["verify", mfile, "--log-key", str(key)]

    rc, out, _ = _run_cli([*ok, "--tree-head", head], capsys)
    assert rc == 0 and out.startswith("VALID")
    rc, out, _ = _run_cli([*ok, "--json"], capsys)
    assert rc == 0 and json.loads(out)["valid"] is True

    # separate bundle file
    bare = _write(tmp_path / "bare.json", log.measurements[6])
    proof = _write(tmp_path / "bundle.json", log.bundle(6))
    rc, out, _ = _run_cli(["verify", bare, "--proof", proof, "--log-key", str(key)], capsys)
    assert rc == 0, out

    # one byte changed
    altered = _write(
        tmp_path / "alt.json", json.dumps(m, ensure_ascii=False).replace("AS9198", "AS9199")
    )
    rc, out, _ = _run_cli(["verify", altered, "--log-key", str(key)], capsys)
    assert (
        rc == 1
        and out.strip()
        == f"INVALID: {PAYLOAD_ALTERED}: its hash is not the leaf the proof was issued for"
    )

    # payload removed: only x_evidence left
    removed = _write(tmp_path / "removed.json", {"x_evidence": log.bundle(6)})
    rc, out, _ = _run_cli(["verify", removed, "--log-key", str(key)], capsys)
    assert rc == 0 and "payload removed" in out

    # bad input: exit 2 with one line
    for argv in [
        ["verify", bare, "--log-key", str(key)],  # no bundle anywhere
        ["verify", str(tmp_path / "missing.json"), "--log-key", str(key)],
        ["verify", _write(tmp_path / "bad.json", "{nope"), "--log-key", str(key)],
        ["verify", _write(tmp_path / "dup.json", '{"a":1,"a":2}'), "--log-key", str(key)],
        [
            "verify",
            _write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000),
            "--log-key",
            str(key),
        ],
        ["verify", mfile, "--log-key", mfile],
        ["verify", mfile, "--log-key", str(key), "--tree-head", bare],
    ]:
        rc, out, err = _run_cli(argv, capsys)
        assert rc == 2, (argv, out, err)
        assert err.count("\n") == 1 and err.startswith("netvigil: "), err
    # no key: a required option, refused by the parser (exit 2) before anything is read
    with pytest.raises(SystemExit) as caught:
        _run_cli(["verify", mfile], capsys)
    assert caught.value.code == 2 and "--log-key" in capsys.readouterr().err
