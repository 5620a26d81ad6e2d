"""`netvigil verify` of a removed payload: the collector's 410 answer, saved exactly as served.

A real collector (``netvigil collector``) runs on 127.0.0.1 with an admin token; a payload is
removed through its API and the 410 answer fetched and saved byte for byte. What the answer can
prove is that its leaf hash is in the log: ``verify`` says exactly that (exit 0), and refuses
an answer whose leaf hash or leaf index was changed (exit 1; exit 2 for a leaf hash that is not
a hash at all). The uid and the reason are not covered by the log: changing them does not
change the result, and the output says they were not checked.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from netvigil.cli import main
from netvigil.evidence.log import LEAF_ALTERED, PAYLOAD_ALTERED, PAYLOAD_REMOVED, PROOF_MISMATCH

TOKEN = "removal-test-admin-token-0123456789"


def _measurement(n: int) -> dict[str, Any]:
    return {
        "annotations": {"engine_name": "netvigil"},
        "data_format_version": "0.2.0",
        "input": f"https://site{n}.example.org/",
        "measurement_start_time": "2026-12-06 18:00:00",
        "probe_asn": "AS1234",
        "probe_cc": "KZ",
        "probe_ip": "127.0.0.1",
        "report_id": f"20261206T180000Z_webconnectivity_KZ_1234_n1_{n:016d}",
        "software_name": "netvigil",
        "test_name": "web_connectivity",
        "test_keys": {"requests": [], "n": n},
    }


@dataclass
class Removed:
    """What a researcher saves: the 410 answer as served, the log key, a tree head."""

    gone: bytes
    key: Path
    head: Path
    leaf_hash: str
    folder: Path


@pytest.fixture(scope="module")
def removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Removed]:
    folder = tmp_path_factory.mktemp("verify-removed")
    token = folder / "admin.token"
    token.write_text(TOKEN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "netvigil.cli", "collector", "--data", str(folder / "data")),
            *("--listen", f"127.0.0.1:{port}", "--rate", "0"),
            *("--admin-token-file", str(token)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/log/tree-head", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the collector did not start")
        with httpx.Client(timeout=10) as client:
            answers = [
                client.post(f"{api}/measurements", content=json.dumps(_measurement(n))).json()
                for n in range(3)
            ]
            uid = answers[1]["measurement_uid"]
            deleted = client.delete(
                f"{api}/measurements/{uid}/payload",
                params={"reason": "removed for a person's safety"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert deleted.status_code == 200, deleted.text
            gone = client.get(f"{api}/measurements/{uid}")
            assert gone.status_code == 410
            key = folder / "log.pub.pem"
            key.write_bytes(client.get(f"{api}/log/public-key").content)
            head = folder / "head.json"
            head.write_bytes(client.get(f"{api}/log/tree-head").content)
        yield Removed(gone.content, key, head, answers[1]["leaf_hash"], folder)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _verify(
    removed: Removed, body: bytes, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    path = removed.folder / "answer.json"
    path.write_bytes(body)
    status = main(["verify", str(path), "--log-key", str(removed.key), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _edited(body: bytes, change: Any) -> bytes:
    answer = json.loads(body)
    change(answer)
    return json.dumps(answer).encode()


def _flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_the_410_answer_as_served_verifies(
    removed: Removed, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = json.loads(removed.gone)
    assert answer["error"] == "gone" and answer["leaf_hash"] == removed.leaf_hash
    status, out, err = _verify(removed, removed.gone, capsys)
    assert status == 0, out + err
    assert out.startswith(f"VALID: {PAYLOAD_REMOVED}: leaf 1 is in the signed tree of size 3")
    assert "not checked: the payload (removed), and the uid and reason" in out
    # with the tree head saved from the collector, and as JSON
    status, out, _ = _verify(removed, removed.gone, capsys, "--tree-head", str(removed.head))
    assert status == 0 and "consistent with the trusted head of size 3" in out
    status, out, _ = _verify(removed, removed.gone, capsys, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["valid"] is True and doc["payload_removed"] is True
    assert doc["leaf_hash"] == removed.leaf_hash and "not_checked" in doc


def test_a_separate_proof_file_works_too(
    removed: Removed, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = json.loads(removed.gone)
    proof = removed.folder / "bundle.json"
    proof.write_text(json.dumps(answer.pop("x_evidence")))
    status, out, _ = _verify(removed, json.dumps(answer).encode(), capsys, "--proof", str(proof))
    assert status == 0 and out.startswith(f"VALID: {PAYLOAD_REMOVED}")


def test_an_altered_leaf_hash_does_not_verify(
    removed: Removed, capsys: pytest.CaptureFixture[str]
) -> None:
    def top(a: dict[str, Any]) -> None:
        a["leaf_hash"] = _flip(a["leaf_hash"])

    def in_bundle(a: dict[str, Any]) -> None:
        a["x_evidence"]["leaf_hash"] = _flip(a["x_evidence"]["leaf_hash"])

    def both(a: dict[str, Any]) -> None:
        top(a)
        in_bundle(a)

    def only_in_bundle_left(a: dict[str, Any]) -> None:
        del a["leaf_hash"]
        in_bundle(a)

    for change in (top, in_bundle):
        status, out, _ = _verify(removed, _edited(removed.gone, change), capsys)
        assert status == 1, out
        assert out.strip() == (
            f"INVALID: {LEAF_ALTERED}: the leaf hash given is not the one the proof was issued for"
        )
    for change in (both, only_in_bundle_left):  # the same wrong hash everywhere: no proof
        status, out, _ = _verify(removed, _edited(removed.gone, change), capsys)
        assert (status, out.strip()) == (1, f"INVALID: {PROOF_MISMATCH}")

    # not a hash at all: bad input
    garbage = _edited(removed.gone, lambda a: a.update(leaf_hash="not base64!"))
    status, _, err = _verify(removed, garbage, capsys)
    assert status == 2 and "payload removed and leaf_hash is not valid base64" in err


def test_other_fields(removed: Removed, capsys: pytest.CaptureFixture[str]) -> None:
    # the leaf index is what the proof is for: changed, the answer is not the log's
    moved = _edited(removed.gone, lambda a: a.update(leaf_index=0))
    status, out, _ = _verify(removed, moved, capsys)
    assert status == 1 and out.startswith(f"INVALID: {LEAF_ALTERED}: the answer's leaf_index")
    # the uid and the reason are the collector's words, not the log's: not checked, and said so
    for change in (
        lambda a: a.update(measurement_uid="20261206000000.000000_RU_webconnectivity_0"),
        lambda a: a.update(detail="the payload was removed: anything at all"),
    ):
        status, out, _ = _verify(removed, _edited(removed.gone, change), capsys)
        assert status == 0 and "not checked" in out
    # anything else is not the collector's 410 answer: it is verified as a measurement
    for change in (
        lambda a: a.update(error="not gone"),
        lambda a: a.update(input="https://example.org/"),
    ):
        status, out, _ = _verify(removed, _edited(removed.gone, change), capsys)
        assert status == 1 and out.startswith(f"INVALID: {PAYLOAD_ALTERED}")
