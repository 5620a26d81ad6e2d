"""The collector's store, read-only: a measurement as submitted, and its place in the log.

The SQLite file is opened with ``mode=ro``, a PostgreSQL database in read-only sessions (the
collector may be running; nothing here writes).
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

__all__ = ["CollectorData", "CollectorDatabase", "Logged", "open_collector"]

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
    """The collector's SQLite store in ``data_dir``, read-only."""

    # The DB-API placeholder of the backend (sqlite3: ``?``, psycopg: ``%s``).
    _mark = "?"

    def __init__(self, data_dir: Path) -> None:
        path = Path(data_dir) / DB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no collector database here")
        self._uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        self._init_state()

    def _init_state(self) -> None:
        self._local = threading.local()
        self._tree: MerkleTree | None = None
        self._tree_lock = threading.Lock()

    def _connect(self) -> Any:
        conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _conn(self) -> Any:
        """This thread's read-only connection (a fresh one if the last one broke)."""
        conn: Any = getattr(self._local, "conn", None)
        if conn is not None and getattr(conn, "broken", False):
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def find(self, uid: str, hint: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The stored row for ``uid`` (the collector's id), or for a measurement with its own
        ``measurement_uid`` found by its envelope (country, network, input, start time)."""
        cols = "uid, leaf_index, received_at, payload, removed_reason, leaf_hash"
        m = self._mark
        conn = self._conn()
        row = conn.execute(f"SELECT {cols} FROM measurements WHERE uid = {m}", (uid,)).fetchone()
        if row is not None or hint is None:
            return row  # type: ignore[no-any-return]
        start = hint.get("measurement_start_time")
        if start is None:
            return None
        candidates = conn.execute(
            f"SELECT {cols} FROM measurements WHERE probe_cc = {m} AND probe_asn = {m}"
            f" AND measurement_start_time = {m} AND test_name = {m} ORDER BY leaf_index LIMIT 50",
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
            .execute(f"SELECT public_pem FROM log_keys WHERE log_id = {self._mark}", (log_id,))
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
                f" WHERE size <= {self._mark} AND size > {self._mark} ORDER BY id DESC LIMIT 1",
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


class CollectorDatabase(CollectorData):
    """The collector's PostgreSQL store (``--database DSN``), read-only.

    The same tables as the SQLite store (:mod:`netvigil.collector.store_postgres`), read with
    the same queries. Not through ``PostgresStore``: opening one creates the schema (a write).
    Each reading thread has its own session with ``default_transaction_read_only`` on, so
    nothing here can write. The DSN may hold a password: it is never shown, nor put in an
    error message.
    """

    _mark = "%s"

    def __init__(self, dsn: str) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("the database URL must start with postgresql://")
        self._dsn = dsn
        self._init_state()
        import psycopg

        try:
            self._conn().execute("SELECT 1 FROM measurements, tree_heads, log_keys LIMIT 0")
        except psycopg.errors.UndefinedTable:
            raise FileNotFoundError("the database has no collector tables") from None
        except psycopg.Error as exc:
            raise ValueError(f"cannot read the collector database: {self._scrub(exc)}") from None

    def __repr__(self) -> str:
        return "CollectorDatabase(<dsn hidden>)"

    def _scrub(self, exc: BaseException) -> str:
        """The error's message without the DSN or its password (libpq does not echo them, but
        a future version or a driver error might)."""
        from psycopg.conninfo import conninfo_to_dict

        text = str(exc).strip()
        secrets = [self._dsn]
        try:
            password = conninfo_to_dict(self._dsn).get("password")
        except Exception:  # a malformed DSN: the DSN itself is scrubbed
            password = None
        if password:
            secrets.append(str(password))
        for secret in secrets:
            text = text.replace(secret, "***")
        return text or type(exc).__name__

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(
            self._dsn, autocommit=True, application_name="netvigil-explorer", connect_timeout=10
        )
        conn.execute("SET default_transaction_read_only = on")
        return conn


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


def open_collector(data_dir: Path | None, dsn: str | None) -> CollectorData | None:
    """The collector's store given by ``--collector-data DIR`` or ``--database DSN``, if any."""
    if data_dir is not None and dsn is not None:
        raise ValueError("--collector-data and --database are mutually exclusive")
    if dsn is not None:
        return CollectorDatabase(dsn)
    return CollectorData(data_dir) if data_dir is not None else None
