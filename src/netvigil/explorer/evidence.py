"""The collector's store, read-only: a measurement as submitted, and its place in the log.

The SQLite file is opened with ``mode=ro`` (the collector may be running; nothing here writes).
The Merkle tree over every leaf is built once, on the first measurement page that needs a proof,
and rebuilt when the log has grown. The proof shown is checked here with the same code as
``netvigil verify``, against the log key the store holds for the head's log id.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

from netvigil.collector.store import DB_FILE
from netvigil.evidence.log import (
    EVIDENCE_KEY,
    TreeHead,
    VerifyResult,
    build_bundle,
    verify_leaf_hash,
    verify_measurement,
)
from netvigil.evidence.merkle import MerkleTree

__all__ = ["CollectorData", "Logged"]

MAX_PAYLOAD = 16 * 1024 * 1024


@dataclasses.dataclass
class Logged:
    """A measurement from the log: its body (None when removed) and its evidence."""

    uid: str
    leaf_index: int
    received_at: str
    body: dict[str, Any] | None
    removed_reason: str | None
    bundle: dict[str, Any] | None
    head: TreeHead | None
    verify: VerifyResult | None
    log_key_pem: bytes | None
    error: str | None = None

    def document(self) -> dict[str, Any]:
        """The measurement as the collector serves it: body plus ``x_evidence``."""
        out: dict[str, Any] = dict(self.body or {})
        if self.bundle is not None:
            out[EVIDENCE_KEY] = self.bundle
        return out


class CollectorData:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        path = self.data_dir / DB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no collector database here")
        self._uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        self._local = threading.local()
        self._tree: MerkleTree | None = None
        self._tree_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def find(self, uid: str, hint: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The stored row for ``uid`` (the collector's id), or for a measurement with its own
        ``measurement_uid`` found by its envelope (country, network, input, start time)."""
        cols = "uid, leaf_index, received_at, payload, removed_reason, leaf_hash"
        conn = self._conn()
        row = conn.execute(f"SELECT {cols} FROM measurements WHERE uid = ?", (uid,)).fetchone()
        if row is not None or hint is None:
            return row  # type: ignore[no-any-return]
        start = hint.get("measurement_start_time")
        if start is None:
            return None
        candidates = conn.execute(
            f"SELECT {cols} FROM measurements WHERE probe_cc = ? AND probe_asn = ?"
            " AND measurement_start_time = ? AND test_name = ? ORDER BY leaf_index LIMIT 50",
            (
                hint.get("probe_cc"),
                f"AS{hint.get('probe_asn')}",
                start.strftime("%Y-%m-%d %H:%M:%S"),
                hint.get("test_name"),
            ),
        ).fetchall()
        for cand in candidates:
            body = _decode(cand[3])
            if isinstance(body, dict) and body.get("measurement_uid") == uid:
                return cand  # type: ignore[no-any-return]
        return None

    def _current_tree(self) -> MerkleTree:
        conn = self._conn()
        with self._tree_lock:
            (count,) = conn.execute("SELECT COUNT(*) FROM measurements").fetchone()
            if self._tree is None or self._tree.size != count:
                cur = conn.execute("SELECT leaf_hash FROM measurements ORDER BY leaf_index")
                self._tree = MerkleTree(bytes(h) for (h,) in cur)
            return self._tree

    def latest_head(self) -> TreeHead | None:
        r = (
            self._conn()
            .execute(
                "SELECT size, timestamp_ms, root, log_id, signature FROM tree_heads"
                " ORDER BY id DESC LIMIT 1"
            )
            .fetchone()
        )
        if r is None:
            return None
        return TreeHead(int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4]))

    def key_for(self, log_id: bytes) -> bytes | None:
        r = (
            self._conn()
            .execute("SELECT public_pem FROM log_keys WHERE log_id = ?", (log_id,))
            .fetchone()
        )
        return None if r is None else bytes(r[0])

    def logged(self, uid: str, hint: dict[str, Any] | None = None) -> Logged | None:
        row = self.find(uid, hint)
        if row is None:
            return None
        found_uid, leaf_index, received_at, payload, removed, leaf = row
        body = _decode(payload) if payload is not None else None
        out = Logged(
            uid=found_uid,
            leaf_index=int(leaf_index),
            received_at=str(received_at),
            body=body if isinstance(body, dict) else None,
            removed_reason=removed,
            bundle=None,
            head=None,
            verify=None,
            log_key_pem=None,
        )
        if payload is not None and not isinstance(body, dict):
            out.error = "the stored payload could not be decoded"
        tree = self._current_tree()
        # The newest head the tree we read covers (a head written after our read is skipped).
        head = (
            self._conn()
            .execute(
                "SELECT size, timestamp_ms, root, log_id, signature FROM tree_heads"
                " WHERE size <= ? AND size > ? ORDER BY id DESC LIMIT 1",
                (tree.size, out.leaf_index),
            )
            .fetchone()
        )
        if head is None:
            out.error = "no signed tree head covers this leaf yet"
            return out
        th = TreeHead(int(head[0]), int(head[1]), bytes(head[2]), bytes(head[3]), bytes(head[4]))
        bundle = build_bundle(tree, out.leaf_index, th).to_json()
        out.bundle, out.head = bundle, th
        out.log_key_pem = self.key_for(th.log_id)
        if out.log_key_pem is None:
            out.error = "the store has no key for this head's log id"
            return out
        if out.body is not None:
            out.verify = verify_measurement(out.body, bundle, None, out.log_key_pem)
        else:
            out.verify = verify_leaf_hash(bytes(leaf), bundle, None, out.log_key_pem)
        return out


def _decode(payload: bytes | None) -> Any:
    if payload is None:
        return None
    try:
        d = zlib.decompressobj()
        raw = d.decompress(bytes(payload), MAX_PAYLOAD)
        if not d.eof:
            return None
        return json.loads(raw)
    except (zlib.error, ValueError, RecursionError):
        return None
