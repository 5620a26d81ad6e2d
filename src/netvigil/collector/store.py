"""Collector storage: the :class:`Store` interface and its SQLite implementation.

Every write goes through one writer connection, owned by the collector's writer thread
(:mod:`netvigil.collector.service`); a batch of new measurements and the signed tree head over
them are committed in one transaction with ``synchronous=FULL``, so a submission the API
acknowledged is on disk together with a head that covers it. Reads use one connection per
reading thread (WAL lets them run while the writer commits).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from netvigil.evidence.log import TreeHead

DB_FILE = "collector.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    uid TEXT PRIMARY KEY,
    content_sha256 BLOB NOT NULL UNIQUE,
    leaf_index INTEGER NOT NULL UNIQUE,
    leaf_hash BLOB NOT NULL,
    received_at TEXT NOT NULL,
    probe_cc TEXT NOT NULL,
    probe_asn TEXT NOT NULL,
    test_name TEXT NOT NULL,
    input TEXT,
    domain TEXT,
    measurement_start_time TEXT NOT NULL,
    payload BLOB,
    removed_reason TEXT
);
CREATE INDEX IF NOT EXISTS m_cc ON measurements (probe_cc, leaf_index);
CREATE INDEX IF NOT EXISTS m_asn ON measurements (probe_asn, leaf_index);
CREATE INDEX IF NOT EXISTS m_domain ON measurements (domain, leaf_index);
CREATE INDEX IF NOT EXISTS m_test ON measurements (test_name, leaf_index);
CREATE INDEX IF NOT EXISTS m_start ON measurements (measurement_start_time);
CREATE TABLE IF NOT EXISTS tree_heads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    root BLOB NOT NULL,
    log_id BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS th_size ON tree_heads (size);
CREATE TABLE IF NOT EXISTS log_keys (
    log_id BLOB PRIMARY KEY,
    public_pem BLOB NOT NULL,
    added_ms INTEGER NOT NULL
);
"""

_SEARCH_COLUMNS = (
    "uid, leaf_index, received_at, probe_cc, probe_asn, test_name, input, domain, "
    "measurement_start_time, payload IS NULL"
)


def search_sql(query: SearchQuery, mark: str) -> tuple[str, list[object]]:
    """The search query for either backend; ``mark`` is its placeholder ("?" or "%s")."""
    where = [f"leaf_index > {mark}"]
    params: list[object] = [query.after_leaf]
    for column in ("probe_cc", "probe_asn", "domain", "test_name"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if query.since is not None:
        where.append(f"measurement_start_time >= {mark}")
        params.append(query.since)
    if query.until is not None:
        where.append(f"measurement_start_time < {mark}")
        params.append(query.until)
    sql = (
        f"SELECT {_SEARCH_COLUMNS} FROM measurements WHERE {' AND '.join(where)}"
        f" ORDER BY leaf_index LIMIT {mark}"
    )
    params.append(query.limit)
    return sql, params


@dataclass(frozen=True)
class MeasurementRow:
    """A measurement as stored (``payload`` is zlib-compressed canonical JSON, or None)."""

    uid: str
    content_sha256: bytes
    leaf_index: int
    leaf_hash: bytes
    received_at: str
    probe_cc: str
    probe_asn: str
    test_name: str
    input: str | None
    domain: str | None
    measurement_start_time: str
    payload: bytes | None
    removed_reason: str | None = None


@dataclass(frozen=True)
class SearchQuery:
    probe_cc: str | None = None
    probe_asn: str | None = None
    domain: str | None = None
    test_name: str | None = None
    since: str | None = None  # inclusive, "YYYY-MM-DD hh:mm:ss"
    until: str | None = None  # exclusive
    after_leaf: int = -1  # cursor: only leaf indexes greater than this
    limit: int = 100


@dataclass(frozen=True)
class SearchRow:
    uid: str
    leaf_index: int
    received_at: str
    probe_cc: str
    probe_asn: str
    test_name: str
    input: str | None
    domain: str | None
    measurement_start_time: str
    removed: bool


class Store(Protocol):
    """What the collector needs from a database (:class:`SQLiteStore`, or PostgresStore)."""

    def find_by_content(self, content_sha256: bytes) -> MeasurementRow | None:
        """Writer side: the stored row with this content hash (idempotent resubmission)."""

    def commit_batch(self, rows: list[MeasurementRow], head: TreeHead) -> None:
        """Writer side: insert ``rows`` and ``head`` in one durable transaction."""

    def store_head(self, head: TreeHead) -> None:
        """Writer side: store a signed tree head on its own (start-up, key rotation)."""

    def remove_payload(self, uid: str, reason: str) -> MeasurementRow | None:
        """Writer side: drop payload, input and domain (overwritten on disk), keep the leaf.

        Returns the row as it now is, or None for an unknown uid.
        """

    def add_public_key(self, log_id: bytes, public_pem: bytes, added_ms: int) -> None:
        """Writer side: remember a log key (kept for ever, so old heads stay verifiable)."""

    def get(self, uid: str) -> MeasurementRow | None: ...

    def search(self, query: SearchQuery) -> list[SearchRow]: ...

    def latest_head(self) -> TreeHead | None: ...

    def public_keys(self) -> list[tuple[bytes, bytes, int]]:
        """(log_id, public PEM, added_ms), oldest first."""

    def leaf_hashes(self) -> Iterator[bytes]:
        """Every leaf hash in leaf-index order (to rebuild the tree at start-up)."""

    def count(self) -> int: ...

    def close(self) -> None: ...


def _head(row: tuple[int, int, bytes, bytes, bytes]) -> TreeHead:
    size, ts, root, log_id, sig = row
    return TreeHead(int(size), int(ts), bytes(root), bytes(log_id), bytes(sig))


def _row(r: tuple[object, ...]) -> MeasurementRow:
    return MeasurementRow(*r)  # type: ignore[arg-type]


class SQLiteStore:
    """:class:`Store` on one SQLite file in WAL mode."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._writer = self._connect()
        # A removed payload is overwritten on disk, not just unlinked from the b-tree.
        self._writer.execute("PRAGMA secure_delete=ON")
        self._writer.executescript(SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- writer side -------------------------------------------------------------------------

    def find_by_content(self, content_sha256: bytes) -> MeasurementRow | None:
        with self._write_lock:
            r = self._writer.execute(
                "SELECT * FROM measurements WHERE content_sha256 = ?", (content_sha256,)
            ).fetchone()
        return None if r is None else _row(r)

    def commit_batch(self, rows: list[MeasurementRow], head: TreeHead) -> None:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO measurements VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.uid,
                            r.content_sha256,
                            r.leaf_index,
                            r.leaf_hash,
                            r.received_at,
                            r.probe_cc,
                            r.probe_asn,
                            r.test_name,
                            r.input,
                            r.domain,
                            r.measurement_start_time,
                            r.payload,
                            r.removed_reason,
                        )
                        for r in rows
                    ],
                )
                self._insert_head(head)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _insert_head(self, head: TreeHead) -> None:
        self._writer.execute(
            "INSERT INTO tree_heads (size, timestamp_ms, root, log_id, signature)"
            " VALUES (?,?,?,?,?)",
            (head.tree_size, head.timestamp_ms, head.root_hash, head.log_id, head.signature),
        )

    def store_head(self, head: TreeHead) -> None:
        with self._write_lock:
            self._insert_head(head)

    def remove_payload(self, uid: str, reason: str) -> MeasurementRow | None:
        with self._write_lock:
            self._writer.execute(
                "UPDATE measurements SET payload = NULL, input = NULL, domain = NULL,"
                " removed_reason = ? WHERE uid = ?",
                (reason, uid),
            )
            # The old page images also live in the WAL until a checkpoint: fold them in now.
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            r = self._writer.execute("SELECT * FROM measurements WHERE uid = ?", (uid,)).fetchone()
        return None if r is None else _row(r)

    def add_public_key(self, log_id: bytes, public_pem: bytes, added_ms: int) -> None:
        with self._write_lock:
            self._writer.execute(
                "INSERT OR IGNORE INTO log_keys VALUES (?,?,?)", (log_id, public_pem, added_ms)
            )

    # -- reader side -------------------------------------------------------------------------

    def get(self, uid: str) -> MeasurementRow | None:
        r = self._reader().execute("SELECT * FROM measurements WHERE uid = ?", (uid,)).fetchone()
        return None if r is None else _row(r)

    def search(self, query: SearchQuery) -> list[SearchRow]:
        sql, params = search_sql(query, "?")
        rows = self._reader().execute(sql, params).fetchall()
        return [SearchRow(*r[:9], removed=bool(r[9])) for r in rows]  # type: ignore[misc]

    def latest_head(self) -> TreeHead | None:
        r = (
            self._reader()
            .execute(
                "SELECT size, timestamp_ms, root, log_id, signature FROM tree_heads"
                " ORDER BY id DESC LIMIT 1"
            )
            .fetchone()
        )
        return None if r is None else _head(r)

    def public_keys(self) -> list[tuple[bytes, bytes, int]]:
        rows = self._reader().execute("SELECT * FROM log_keys ORDER BY added_ms, log_id")
        return [(bytes(a), bytes(b), int(c)) for a, b, c in rows.fetchall()]

    def leaf_hashes(self) -> Iterator[bytes]:
        cur = self._reader().execute("SELECT leaf_index, leaf_hash FROM measurements ORDER BY 1")
        for expected, (index, h) in enumerate(cur):
            if index != expected:
                raise RuntimeError(f"store is corrupt: leaf {expected} is missing")
            yield bytes(h)

    def count(self) -> int:
        (n,) = self._reader().execute("SELECT COUNT(*) FROM measurements").fetchone()
        return int(n)

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()


def open_store(data_dir: Path, database_url: str | None = None) -> Store:
    """The collector's store: SQLite in ``data_dir``, or PostgreSQL if a DSN is given."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("the database URL must start with postgresql://")
        from netvigil.collector.store_postgres import PostgresStore

        return PostgresStore(database_url)
    return SQLiteStore(Path(data_dir) / DB_FILE)
