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

A measurement whose only key is "x_evidence" had its payload removed: its leaf hash (kept in
the bundle) is checked instead.

Exit status: 0 valid, 1 invalid (tampered payload, forged proof, bad signature, inconsistent
heads), 2 bad input.

Example:
  netvigil verify m.json --tree-head head.json --log-key log.pub.pem
"""


class _InputError(Exception):
    pass


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
    p.add_argument("--log-key", metavar="KEY.pem", help="the log's Ed25519 public key (PEM)")
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
    if set(measurement) <= {EVIDENCE_KEY}:
        # Payload removed: only the leaf hash in the bundle remains to be checked.
        try:
            leaf = decode_hash(bundle.get("leaf_hash"), "bundle: leaf_hash")
        except EvidenceFormatError as exc:
            raise _InputError(f"payload removed and {exc}") from None
        return verify_leaf_hash(leaf, bundle, trusted, pem)
    return verify_measurement(measurement, bundle, trusted, pem)


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
        print(json.dumps(result.to_json(), ensure_ascii=False))
    elif result.ok:
        print(f"VALID: {_one_line(result.reason)}")
    elif result.malformed:
        print(f"netvigil: {_one_line(result.reason)}", file=sys.stderr)
    else:
        print(f"INVALID: {_one_line(result.reason)}")
    if result.ok:
        return 0
    return 2 if result.malformed else 1
