"""The collector's :class:`~netvigil.collector.store.Store` on PostgreSQL (psycopg 3).

Same semantics as :class:`~netvigil.collector.store.SQLiteStore`: one writer connection, used
only from the collector's writer thread, commits a batch of measurements together with the
signed tree head over them in one transaction (``synchronous_commit=on``); each reading thread
gets a read-only connection of its own. The content hash is a unique column: inserts use
``ON CONFLICT DO NOTHING`` and a batch in which any row already exists is rolled back as a
whole, so the stored leaves never diverge from the signed head (the writer then rebuilds its
tree from the store and the client's retry is answered as a duplicate).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from netvigil.collector.store import (
    MeasurementRow,
    SearchQuery,
    SearchRow,
    search_sql,
)
from netvigil.evidence.log import TreeHead

# Schema changes are serialised across processes by this advisory lock key.
_SCHEMA_LOCK = 0x6E76_636F_6C6C  # "nvcoll"

SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    uid TEXT PRIMARY KEY,
    content_sha256 BYTEA NOT NULL UNIQUE,
    leaf_index BIGINT NOT NULL UNIQUE,
    leaf_hash BYTEA NOT NULL,
    received_at TEXT NOT NULL,
    probe_cc TEXT NOT NULL,
    probe_asn TEXT NOT NULL,
    test_name TEXT NOT NULL,
    input TEXT,
    domain TEXT,
    measurement_start_time TEXT NOT NULL,
    payload BYTEA,
    removed_reason TEXT
);
CREATE INDEX IF NOT EXISTS m_cc ON measurements (probe_cc, leaf_index);
CREATE INDEX IF NOT EXISTS m_asn ON measurements (probe_asn, leaf_index);
CREATE INDEX IF NOT EXISTS m_domain ON measurements (domain, leaf_index);
CREATE INDEX IF NOT EXISTS m_test ON measurements (test_name, leaf_index);
CREATE INDEX IF NOT EXISTS m_start ON measurements (measurement_start_time);
CREATE TABLE IF NOT EXISTS tree_heads (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    size BIGINT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    root BYTEA NOT NULL,
    log_id BYTEA NOT NULL,
    signature BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS th_size ON tree_heads (size);
CREATE TABLE IF NOT EXISTS log_keys (
    log_id BYTEA PRIMARY KEY,
    public_pem BYTEA NOT NULL,
    added_ms BIGINT NOT NULL
);
"""

_COLUMNS = (
    "uid, content_sha256, leaf_index, leaf_hash, received_at, probe_cc, probe_asn, test_name,"
    " input, domain, measurement_start_time, payload, removed_reason"
)
_INSERT = (
    f"INSERT INTO measurements ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (content_sha256) DO NOTHING RETURNING leaf_index"
)


class DuplicateContentError(RuntimeError):
    """A batch row's content hash is already stored (another writer got there first)."""


def _row(r: tuple[Any, ...]) -> MeasurementRow:
    return MeasurementRow(*r)


def _params(r: MeasurementRow) -> tuple[object, ...]:
    return (
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


class PostgresStore:
    """:class:`Store` on a PostgreSQL database given by a libpq DSN (``postgresql://…``)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._closed = False
        self._writer = self._connect_writer()
        with self._writer.transaction():
            self._writer.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._writer.execute(SCHEMA)
        self._local = threading.local()
        self._readers: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._readers_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            self.dsn, autocommit=True, application_name="netvigil-collector", connect_timeout=10
        )

    def _connect_writer(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = self._connect()
        conn.execute("SET synchronous_commit = on")
        return conn

    def _w(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The writer connection (call with the write lock held), reconnected if it broke.

        A failed batch is reported to its clients; the next one gets a fresh connection, so a
        database restart does not wedge the collector.
        """
        if self._writer.broken and not self._closed:
            self._writer.close()
            self._writer = self._connect_writer()
        return self._writer

    def _reader(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect()
            conn.execute("SET default_transaction_read_only = on")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- writer side -------------------------------------------------------------------------

    def find_by_content(self, content_sha256: bytes) -> MeasurementRow | None:
        with self._write_lock:
            r = (
                self._w()
                .execute(
                    f"SELECT {_COLUMNS} FROM measurements WHERE content_sha256 = %s",
                    (content_sha256,),
                )
                .fetchone()
            )
        return None if r is None else _row(r)

    def commit_batch(self, rows: list[MeasurementRow], head: TreeHead) -> None:
        with self._write_lock:
            conn = self._w()
            with conn.transaction(), conn.cursor() as cur:
                self._insert_batch(cur, rows)
                self._insert_head(cur, head)

    @staticmethod
    def _insert_batch(cur: psycopg.Cursor[tuple[Any, ...]], rows: list[MeasurementRow]) -> None:
        if rows:
            cur.executemany(_INSERT, [_params(r) for r in rows], returning=True)
        inserted = 0
        while rows:
            inserted += len(cur.fetchall())
            if not cur.nextset():
                break
        if inserted != len(rows):
            raise DuplicateContentError(
                f"{len(rows) - inserted} of {len(rows)} measurements are already stored"
            )

    @staticmethod
    def _insert_head(cur: psycopg.Cursor[tuple[Any, ...]], head: TreeHead) -> None:
        cur.execute(
            "INSERT INTO tree_heads (size, timestamp_ms, root, log_id, signature)"
            " VALUES (%s,%s,%s,%s,%s)",
            (head.tree_size, head.timestamp_ms, head.root_hash, head.log_id, head.signature),
        )

    def store_head(self, head: TreeHead) -> None:
        with self._write_lock, self._w().cursor() as cur:
            self._insert_head(cur, head)

    def remove_payload(self, uid: str, reason: str) -> MeasurementRow | None:
        with self._write_lock:
            conn = self._w()
            conn.execute(
                "UPDATE measurements SET payload = NULL, input = NULL, domain = NULL,"
                " removed_reason = %s WHERE uid = %s",
                (reason, uid),
            )
            # Prune the old row version now rather than whenever autovacuum gets to it. Unlike
            # SQLite's secure_delete this does not promise the bytes are overwritten on disk
            # (free page space and WAL segments may keep them): see the module's caveats.
            conn.execute("VACUUM measurements")
            r = conn.execute(
                f"SELECT {_COLUMNS} FROM measurements WHERE uid = %s", (uid,)
            ).fetchone()
        return None if r is None else _row(r)

    def add_public_key(self, log_id: bytes, public_pem: bytes, added_ms: int) -> None:
        with self._write_lock:
            self._w().execute(
                "INSERT INTO log_keys (log_id, public_pem, added_ms) VALUES (%s,%s,%s)"
                " ON CONFLICT (log_id) DO NOTHING",
                (log_id, public_pem, added_ms),
            )

    # -- reader side -------------------------------------------------------------------------

    def get(self, uid: str) -> MeasurementRow | None:
        r = (
            self._reader()
            .execute(f"SELECT {_COLUMNS} FROM measurements WHERE uid = %s", (uid,))
            .fetchone()
        )
        return None if r is None else _row(r)

    def search(self, query: SearchQuery) -> list[SearchRow]:
        sql, params = search_sql(query, "%s")
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
        if r is None:
            return None
        size, ts, root, log_id, sig = r
        return TreeHead(int(size), int(ts), bytes(root), bytes(log_id), bytes(sig))

    def public_keys(self) -> list[tuple[bytes, bytes, int]]:
        rows = (
            self._reader()
            .execute("SELECT log_id, public_pem, added_ms FROM log_keys ORDER BY added_ms, log_id")
            .fetchall()
        )
        return [(bytes(a), bytes(b), int(c)) for a, b, c in rows]

    def leaf_hashes(self) -> Iterator[bytes]:
        # A connection of its own, with a server-side cursor: streams any number of leaves and
        # leaves no half-read result behind on a shared connection if the caller stops early.
        with (
            self._connect() as conn,
            conn.transaction(),
            conn.cursor(name="netvigil_leaves") as cur,
        ):
            cur.itersize = 10_000
            cur.execute("SELECT leaf_index, leaf_hash FROM measurements ORDER BY leaf_index")
            for expected, (index, h) in enumerate(cur):
                if index != expected:
                    raise RuntimeError(f"store is corrupt: leaf {expected} is missing")
                yield bytes(h)

    def count(self) -> int:
        r = self._reader().execute("SELECT COUNT(*) FROM measurements").fetchone()
        assert r is not None
        return int(r[0])

    def close(self) -> None:
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()
