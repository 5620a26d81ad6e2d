"""`netvigil verify`: check a measurement and its inclusion proof offline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from netvigil import textsafe
from netvigil.evidence.log import (
    EVIDENCE_KEY,
    LEAF_ALTERED,
    EvidenceFormatError,
    VerifyResult,
    decode_hash,
    verify_leaf_hash,
    verify_measurement,
)

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_KEY_BYTES = 64 * 1024

DESCRIPTION = """\
Check, offline, that a measurement is in the netvigil evidence log unaltered.

The inclusion bundle (leaf index, proof, signed tree head) is read from --proof, or from the
measurement's own "x_evidence" key, where the collector puts it. With --tree-head, a tree head
you saved earlier (or later), the bundle's head must also be consistent with it: the log
cannot have shown you a different history.

A payload removed from the collector (for a person's safety) can be verified from what the
collector answers for it, HTTP 410, saved exactly as served:
  {"error": "gone", "detail": REASON, "measurement_uid": UID, "leaf_index": N,
   "leaf_hash": B64, "x_evidence": BUNDLE}
(or, older, an object whose only key is "x_evidence"). Such a file is recognised by its keys:
only these, with "error" equal to "gone". What it can prove, and all it proves: its leaf hash
is in the log ("payload removed; its leaf is in the log"). The leaf hash must be the one the
bundle was issued for, and leaf_index its index: a change to either is INVALID. The uid and
the reason are the collector's words, which the log does not commit to: they are not checked
(and are said to be not checked). A file with any other key is verified as a measurement.

Exit status: 0 valid, 1 invalid (tampered payload, forged proof, bad signature, inconsistent
heads), 2 bad input.

Example:
  netvigil verify m.json --tree-head head.json --log-key log.pub.pem
"""


# The collector's answer for a measurement whose payload was removed (HTTP 410, "gone"):
# collector/app.py get_measurement, the "Removed" schema of its OpenAPI document.
REMOVED_ANSWER_KEYS = frozenset(
    {"error", "detail", "measurement_uid", "leaf_index", "leaf_hash", EVIDENCE_KEY}
)
NOT_COVERED = (
    "not checked: the payload (removed), and the uid and reason in the collector's answer,"
    " which the log does not commit to"
)


class _InputError(Exception):
    pass


def _is_removed_answer(obj: dict[str, Any]) -> bool:
    """A removed payload's record: the collector's 410 answer, or only ``x_evidence``."""
    if set(obj) <= {EVIDENCE_KEY}:
        return True
    return set(obj) <= REMOVED_ANSWER_KEYS and obj.get("error") == "gone"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check a measurement and its evidence-log proof offline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("measurement", metavar="MEASUREMENT.json", help="the measurement (JSON)")
    p.add_argument(
        "--proof", metavar="BUNDLE.json", help="inclusion bundle (default: x_evidence in the file)"
    )
    p.add_argument("--tree-head", metavar="HEAD.json", help="a signed tree head you trust")
    p.add_argument(
        "--log-key", required=True, metavar="KEY.pem", help="the log's Ed25519 public key (PEM)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _InputError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _read(path: str, limit: int, what: str) -> bytes:
    try:
        with Path(path).open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise _InputError(
            f"{path}: cannot read {what} ({exc.strerror or type(exc).__name__})"
        ) from None
    if len(data) > limit:
        raise _InputError(f"{path}: {what} is larger than {limit} bytes")
    return data


def _read_json_object(path: str, what: str) -> dict[str, Any]:
    data = _read(path, MAX_FILE_BYTES, what)
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _InputError as exc:
        raise _InputError(f"{path}: {what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _InputError(f"{path}: {what} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise _InputError(f"{path}: {what} must be a JSON object")
    return obj


def _verify(args: Any) -> VerifyResult:
    if not args.log_key:
        raise _InputError("--log-key is required (the log's Ed25519 public key, PEM)")
    pem = _read(args.log_key, MAX_KEY_BYTES, "log key")
    measurement = _read_json_object(args.measurement, "measurement")
    if args.proof:
        bundle: Any = _read_json_object(args.proof, "bundle")
    elif EVIDENCE_KEY in measurement:
        bundle = measurement[EVIDENCE_KEY]
    else:
        raise _InputError(f"{args.measurement}: no {EVIDENCE_KEY} in the file; give --proof")
    trusted = None
    if args.tree_head:
        trusted = _read_json_object(args.tree_head, "tree head")
        if isinstance(trusted.get("tree_head"), dict):
            trusted = trusted["tree_head"]
    if not isinstance(bundle, dict):
        raise _InputError("bundle must be a JSON object")
    if _is_removed_answer(measurement):
        return _verify_removed(measurement, bundle, trusted, pem)
    return verify_measurement(measurement, bundle, trusted, pem)


def _verify_removed(
    answer: dict[str, Any], bundle: dict[str, Any], trusted: dict[str, Any] | None, pem: bytes
) -> VerifyResult:
    """Payload removed: the leaf hash the answer names (else its bundle's) must be the bundle's
    and be included under the signed head; the answer's leaf_index must be the bundle's."""
    try:
        if "leaf_hash" in answer:
            leaf = decode_hash(answer["leaf_hash"], "leaf_hash")
        else:
            leaf = decode_hash(bundle.get("leaf_hash"), "bundle: leaf_hash")
    except EvidenceFormatError as exc:
        raise _InputError(f"payload removed and {exc}") from None
    if "leaf_index" in answer:
        given, proven = answer["leaf_index"], bundle.get("leaf_index")
        if type(given) is not int or type(proven) is not int or given != proven:
            return VerifyResult(
                False,
                f"{LEAF_ALTERED}: the answer's leaf_index is not the one its proof is for",
                leaf_hash=leaf,
                payload_removed=True,
            )
    return verify_leaf_hash(leaf, bundle, trusted, pem)


def _one_line(text: str) -> str:
    # For the terminal: a reason may quote the file (a forged field, a URL): plain text only.
    return textsafe.visible(" ".join(text.split()), limit=300)


def run(args: Any) -> int:
    try:
        result = _verify(args)
    except _InputError as exc:
        if getattr(args, "json", False):
            msg = " ".join(str(exc).split())[:300]
            print(json.dumps({"valid": False, "malformed": True, "reason": msg}))
        else:
            print(f"netvigil: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    if args.json:
        doc = result.to_json()
        if result.payload_removed and result.ok:
            doc["not_checked"] = NOT_COVERED
        print(json.dumps(doc, ensure_ascii=False))
    elif result.ok:
        print(f"VALID: {_one_line(result.reason)}")
        if result.payload_removed:
            print(f"  ({NOT_COVERED})")
    elif result.malformed:
        print(f"netvigil: {_one_line(result.reason)}", file=sys.stderr)
    else:
        print(f"INVALID: {_one_line(result.reason)}")
    if result.ok:
        return 0
    return 2 if result.malformed else 1
