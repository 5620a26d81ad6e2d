"""The collector's core, independent of HTTP: validation, the evidence log and the writer thread.

Submissions are queued to one writer thread, which takes whatever has accumulated (up to
``MAX_BATCH``), assigns leaf indexes, appends the leaves to the in-memory Merkle tree, signs a
tree head over the new size and commits rows and head in one transaction (group commit). Only
then are the submitters answered, so an acknowledged measurement is durable and covered by a
stored signed head. The tree is rebuilt from the stored leaf hashes at start-up and checked
against the latest stored head.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import queue
import re
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netvigil.collector.store import DB_FILE as DB_FILE
from netvigil.collector.store import MeasurementRow, Store, open_store
from netvigil.evidence.log import (
    EVIDENCE_KEY,
    LEAF_PREFIX,
    EvidenceFormatError,
    InclusionBundle,
    TreeHead,
    build_bundle,
    canonical_json,
    log_id_for,
    public_key_pem,
    sign_tree_head,
)
from netvigil.evidence.merkle import MerkleTree, leaf_hash

log = logging.getLogger("netvigil.collector")

MAX_BATCH = 1000
MAX_DEPTH = 64
# Level 1: a third of level 6's CPU on the submission path, and most of its saving.
PAYLOAD_ZLIB_LEVEL = 1
KEY_FILE = "log-key.pem"

_TEST_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CC = re.compile(r"[A-Z]{2}")
_ASN = re.compile(r"AS[0-9]{1,10}")
_START_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_UID = re.compile(r"[0-9]{14}\.[0-9]{6}_[A-Z]{2}_[a-z0-9]{1,64}_[0-9a-f]{16}")
SCRUBBED_IP = "127.0.0.1"
MAX_INPUT_LEN = 8192


class ValidationError(ValueError):
    """The submission is not an acceptable OONI measurement: a one-line, precise reason."""


@dataclass(frozen=True)
class Prepared:
    """A validated submission, ready for the writer."""

    body: dict[str, Any]
    content_sha256: bytes
    leaf_hash: bytes
    payload: bytes
    probe_cc: str
    probe_asn: str
    test_name: str
    input: str | None
    domain: str | None
    measurement_start_time: str


@dataclass(frozen=True)
class SubmitResult:
    uid: str
    leaf_index: int
    leaf_hash: bytes
    duplicate: bool


def _depth_ok(obj: Any, limit: int) -> bool:
    # Only containers go on the stack: most values are leaves, and this runs on every
    # submission.
    if not isinstance(obj, dict | list):
        return True
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return False
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return True


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN/Infinity); :class:`ValidationError` with a one-line reason.

    orjson: several times faster than ``json`` on the submission path, and strict already
    (it refuses NaN, Infinity and invalid UTF-8).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("body is not UTF-8") from None
        if "recursion" in str(exc):
            raise ValidationError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        reason = str(exc).split(":", 1)[0]
        raise ValidationError(
            f"invalid JSON: {reason} at line {exc.lineno} column {exc.colno}"
        ) from None


def domain_of(input_: str | None) -> str | None:
    if not input_:
        return None
    try:
        host = urlsplit(input_).hostname if "://" in input_ else None
    except ValueError:
        return None
    if not host:
        return None
    return host.lower()[:253]


def validate(obj: Any) -> Prepared:
    """Check the OONI envelope and compute everything the store needs."""
    if not isinstance(obj, dict):
        raise ValidationError("a measurement must be a JSON object")
    if not _depth_ok(obj, MAX_DEPTH):
        raise ValidationError(f"JSON nested deeper than {MAX_DEPTH} levels")
    body = {k: v for k, v in obj.items() if k != EVIDENCE_KEY}
    if body.get("data_format_version") != "0.2.0":
        raise ValidationError('data_format_version must be "0.2.0"')
    test_name = body.get("test_name")
    if not isinstance(test_name, str) or not _TEST_NAME.fullmatch(test_name):
        raise ValidationError("test_name must match [a-z][a-z0-9_]{0,63}")
    if "input" not in body:
        raise ValidationError("input is required (a string or null)")
    input_ = body["input"]
    if input_ is not None and not isinstance(input_, str):
        raise ValidationError("input must be a string or null")
    if input_ is not None and len(input_) > MAX_INPUT_LEN:
        raise ValidationError(f"input is longer than {MAX_INPUT_LEN} characters")
    start = body.get("measurement_start_time")
    if not isinstance(start, str) or not _START_TIME.fullmatch(start):
        raise ValidationError('measurement_start_time must be "YYYY-MM-DD hh:mm:ss"')
    try:
        datetime.fromisoformat(start)  # the regex fixed the shape; this checks the calendar
    except ValueError:
        raise ValidationError("measurement_start_time is not a valid date and time") from None
    cc = body.get("probe_cc")
    if not isinstance(cc, str) or not _CC.fullmatch(cc):
        raise ValidationError("probe_cc must be two upper-case letters")
    asn = body.get("probe_asn")
    if not isinstance(asn, str) or not _ASN.fullmatch(asn):
        raise ValidationError('probe_asn must look like "AS1234"')
    if not isinstance(body.get("test_keys"), dict):
        raise ValidationError("test_keys must be an object")
    if "probe_ip" in body and body["probe_ip"] != SCRUBBED_IP:
        raise ValidationError('probe_ip must be scrubbed (absent or "127.0.0.1")')
    try:
        encoded = canonical_json(body)
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as exc:
        raise ValidationError(
            f"measurement cannot be canonically encoded ({type(exc).__name__})"
        ) from None
    except EvidenceFormatError as exc:  # pragma: no cover - canonical_json does not raise it
        raise ValidationError(str(exc)) from None
    content = hashlib.sha256(encoded).digest()
    return Prepared(
        body=body,
        content_sha256=content,
        leaf_hash=leaf_hash(LEAF_PREFIX + content),
        payload=zlib.compress(encoded, PAYLOAD_ZLIB_LEVEL),
        probe_cc=cc,
        probe_asn=asn,
        test_name=test_name,
        input=input_,
        domain=domain_of(input_),
        measurement_start_time=start,
    )


def valid_uid(uid: str) -> bool:
    return bool(_UID.fullmatch(uid))


def make_uid(now: datetime, cc: str, test_name: str) -> str:
    """OONI-style: ``YYYYMMDDhhmmss.ffffff_CC_testname_<16 hex>``."""
    compact = test_name.replace("_", "")[:64] or "unknown"
    return f"{now:%Y%m%d%H%M%S.%f}_{cc}_{compact}_{secrets.token_hex(8)}"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The log's Ed25519 key in ``path`` (PKCS#8 PEM), created with mode 0600 if missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        write_key(path, key)
        return key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded


def write_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_Job = tuple[str, Any, "concurrent.futures.Future[Any]"]


class CollectorLog:
    """The evidence log over a :class:`Store`, with the writer thread."""

    def __init__(
        self, data_dir: Path, store: Store | None = None, database_url: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key_path = self.data_dir / KEY_FILE
        self.key = load_or_create_key(self.key_path)
        self.store: Store = store if store is not None else open_store(self.data_dir, database_url)
        self.tree = MerkleTree(self.store.leaf_hashes())
        self.tree_lock = threading.Lock()
        self.store.add_public_key(
            log_id_for(self.key.public_key()), public_key_pem(self.key), _now_ms()
        )
        head = self.store.latest_head()
        if head is not None and (
            head.tree_size != self.tree.size or head.root_hash != self.tree.root()
        ):
            raise RuntimeError(
                f"stored tree head (size {head.tree_size}) does not match the stored leaves"
                f" (size {self.tree.size}): refusing to start"
            )
        if head is None or head.log_id != log_id_for(self.key.public_key()):
            head = sign_tree_head(self.key, self.tree.size, self.tree.root(), _now_ms())
            self.store.store_head(head)
        self.head: TreeHead = head
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="collector-writer", daemon=True)
        self._closed = False
        self._thread.start()

    # -- public, thread-safe -----------------------------------------------------------------

    def submit(self, prepared: Prepared) -> concurrent.futures.Future[SubmitResult]:
        return self._enqueue("submit", prepared)

    def remove_payload(
        self, uid: str, reason: str
    ) -> concurrent.futures.Future[MeasurementRow | None]:
        return self._enqueue("remove", (uid, reason))

    def rotate_key(self) -> concurrent.futures.Future[TreeHead]:
        return self._enqueue("rotate", None)

    def bundle(self, leaf_index: int) -> InclusionBundle:
        head = self.head
        with self.tree_lock:
            return build_bundle(self.tree, leaf_index, head)

    def inclusion(self, leaf_index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        with self.tree_lock:
            return self.tree.leaf_hash(leaf_index), self.tree.inclusion_proof(leaf_index, tree_size)

    def consistency(self, first: int, second: int) -> list[bytes]:
        with self.tree_lock:
            return self.tree.consistency_proof(first, second)

    def root(self, size: int) -> bytes:
        with self.tree_lock:
            return self.tree.root(size)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self.store.close()

    # -- writer thread -----------------------------------------------------------------------

    def _enqueue(self, kind: str, arg: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._closed:
            fut.set_exception(RuntimeError("collector is shutting down"))
            return fut
        self._queue.put((kind, arg, fut))
        return fut

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch: list[_Job] = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            submits = [j for j in batch if j[0] == "submit"]
            if submits:
                self._guard(self._commit_submissions, submits)
            for job in batch:
                if job[0] in ("remove", "rotate"):
                    self._guard(self._admin_job, [job])
            if stop:
                return

    def _guard(self, fn: Callable[[list[_Job]], None], jobs: list[_Job]) -> None:
        try:
            fn(jobs)
        except BaseException as exc:
            log.exception("collector writer failed")
            for _, _, fut in jobs:
                if not fut.done():
                    fut.set_exception(exc)

    def _admin_job(self, jobs: list[_Job]) -> None:
        kind, arg, fut = jobs[0]
        if kind == "remove":
            fut.set_result(self.store.remove_payload(*arg))
        else:
            fut.set_result(self._rotate())

    def _commit_submissions(self, jobs: list[_Job]) -> None:
        results: list[SubmitResult] = []
        rows: list[MeasurementRow] = []
        seen: dict[bytes, SubmitResult] = {}
        now = datetime.now(UTC)
        received = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        base = self.tree.size
        for _, p, _ in jobs:
            assert isinstance(p, Prepared)
            dup = seen.get(p.content_sha256)
            if dup is None:
                existing = self.store.find_by_content(p.content_sha256)
                if existing is not None:
                    dup = SubmitResult(existing.uid, existing.leaf_index, existing.leaf_hash, True)
                    seen[p.content_sha256] = dup
            if dup is not None:
                results.append(SubmitResult(dup.uid, dup.leaf_index, dup.leaf_hash, True))
                continue
            row = MeasurementRow(
                uid=make_uid(now, p.probe_cc, p.test_name),
                content_sha256=p.content_sha256,
                leaf_index=base + len(rows),
                leaf_hash=p.leaf_hash,
                received_at=received,
                probe_cc=p.probe_cc,
                probe_asn=p.probe_asn,
                test_name=p.test_name,
                input=p.input,
                domain=p.domain,
                measurement_start_time=p.measurement_start_time,
                payload=p.payload,
            )
            rows.append(row)
            res = SubmitResult(row.uid, row.leaf_index, row.leaf_hash, False)
            seen[p.content_sha256] = SubmitResult(row.uid, row.leaf_index, row.leaf_hash, True)
            results.append(res)
        if rows:
            with self.tree_lock:
                for row in rows:
                    self.tree.append(row.leaf_hash)
                root = self.tree.root()
                size = self.tree.size
            head = sign_tree_head(self.key, size, root, _now_ms())
            try:
                self.store.commit_batch(rows, head)
            except BaseException:
                with self.tree_lock:  # undo the appends: rebuild from what is committed
                    self.tree = MerkleTree(self.store.leaf_hashes())
                raise
            self.head = head
        for (_, _, fut), res in zip(jobs, results, strict=True):
            fut.set_result(res)

    def _rotate(self) -> TreeHead:
        new = Ed25519PrivateKey.generate()
        old_id = log_id_for(self.key.public_key()).hex()[:16]
        retired = self.data_dir / f"log-key.retired-{_now_ms()}-{old_id}.pem"
        write_key(retired, self.key)
        self.store.add_public_key(log_id_for(new.public_key()), public_key_pem(new), _now_ms())
        write_key(self.key_path, new)
        self.key = new
        with self.tree_lock:
            size, root = self.tree.size, self.tree.root()
        head = sign_tree_head(new, size, root, _now_ms())
        self.store.store_head(head)
        self.head = head
        return head
