"""The collector API: storage, validation, limits, the evidence log and restarts (in-process)."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from conftest import PgCluster
from netvigil.collector.app import CollectorConfig, create_app
from netvigil.collector.service import KEY_FILE, PAYLOAD_ZLIB_LEVEL
from netvigil.evidence.log import (
    PAYLOAD_ALTERED,
    TreeHead,
    canonical_json,
    load_public_key,
    verify_leaf_hash,
    verify_measurement,
    verify_tree_head,
)
from netvigil.evidence.merkle import verify_consistency

TOKEN = b"s3cret-admin-token-0123456789"
API = "/api/v1"


def measurement(n: int = 0, **over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "annotations": {"engine_name": "netvigil"},
        "data_format_version": "0.2.0",
        "input": f"https://site{n}.example.org/path?q=<script>alert(1)</script>",
        "measurement_start_time": "2026-11-27 18:00:00",
        "probe_asn": "AS1234",
        "probe_cc": "KZ",
        "probe_ip": "127.0.0.1",
        "report_id": f"20261127T180000Z_webconnectivity_KZ_1234_n1_{n:016d}",
        "software_name": "netvigil",
        "test_name": "web_connectivity",
        "test_keys": {"requests": [{"response": {"body": "<html>blocked</html>"}}], "n": n},
    }
    m.update(over)
    return m


# -- storage backends: every store-using test runs on SQLite and on PostgreSQL ------------------

# The PostgreSQL cluster (pg_cluster, PgCluster) is a session fixture of conftest.py.


MakeClient = Callable[..., TestClient]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(backend: str, request: pytest.FixtureRequest) -> MakeClient:
    """make(data_dir, **cfg) → a TestClient on this backend (one database per data dir)."""
    urls: dict[Path, str] = {}
    cluster: PgCluster | None = None
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")

    def make_(data: Path, **cfg: Any) -> TestClient:
        if cluster is not None:
            if data not in urls:
                urls[data] = cluster.new_database()
            cfg["database_url"] = urls[data]
        return make_client(data, **cfg)

    make_.urls = urls  # type: ignore[attr-defined]
    return make_


def make_client(data: Path, **cfg: Any) -> TestClient:
    cfg.setdefault("admin_token", TOKEN)
    app = create_app(CollectorConfig(data_dir=data, **cfg))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(make: MakeClient, tmp_path: Path) -> Iterator[TestClient]:
    with make(tmp_path / "data") as c:
        yield c


def submit(c: TestClient, m: Any, **kw: Any) -> Any:
    return c.post(f"{API}/measurements", content=json.dumps(m).encode(), **kw)


def pem(c: TestClient) -> bytes:
    r = c.get(f"{API}/log/public-key")
    assert r.status_code == 200
    return bytes(r.content)


# ---------------------------------------------------------------------------------------------


def test_submit_get_search(client: TestClient) -> None:
    r = submit(client, measurement(1))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["duplicate"] is False and body["leaf_index"] == 0
    uid = body["measurement_uid"]
    assert uid.split("_")[1:3] == ["KZ", "webconnectivity"]
    submit(client, measurement(2, probe_cc="RU", probe_asn="AS9"))
    submit(client, measurement(3, measurement_start_time="2026-12-01 00:00:00"))

    got = client.get(f"{API}/measurements/{uid}")
    assert got.status_code == 200
    doc = got.json()
    assert doc["input"] == measurement(1)["input"]
    assert "x_evidence" in doc

    def search(**q: Any) -> list[str]:
        r = client.get(f"{API}/measurements", params=q)
        assert r.status_code == 200, r.text
        return [x["input"] for x in r.json()["results"]]

    assert len(search()) == 3
    assert search(probe_cc="RU") == [measurement(2)["input"]]
    assert search(probe_asn="AS9") == [measurement(2)["input"]]
    assert search(domain="site1.example.org") == [measurement(1)["input"]]
    assert search(since="2026-12-01") == [measurement(3)["input"]]
    assert len(search(until="2026-12-01")) == 2
    assert len(search(test_name="web_connectivity")) == 3
    # cursor pagination
    page = client.get(f"{API}/measurements", params={"limit": 2}).json()
    assert len(page["results"]) == 2 and page["next_cursor"]
    rest = client.get(f"{API}/measurements", params={"limit": 2, "cursor": page["next_cursor"]})
    assert [x["leaf_index"] for x in rest.json()["results"]] == [2]
    assert client.get(f"{API}/measurements", params={"limit": 1001}).status_code == 400
    assert client.get(f"{API}/measurements", params={"cursor": "x"}).status_code == 400
    assert client.get(f"{API}/measurements/nope").status_code == 404


def test_idempotent_resubmission(client: TestClient) -> None:
    a = submit(client, measurement(1)).json()
    # Same content, different key order and an x_evidence key: same leaf.
    m = dict(reversed(list(measurement(1).items())))
    m["x_evidence"] = {"forged": True}
    r = submit(client, m)
    assert r.status_code == 200
    b = r.json()
    assert b["duplicate"] is True
    assert (b["measurement_uid"], b["leaf_index"]) == (a["measurement_uid"], a["leaf_index"])
    assert client.get(f"{API}/log/tree-head").json()["tree_size"] == 1


def test_gzip_and_bomb(client: TestClient) -> None:
    raw = gzip.compress(json.dumps(measurement(7)).encode())
    r = client.post(f"{API}/measurements", content=raw, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 201, r.text
    bomb = gzip.compress(b" " * (9 * 1024 * 1024))
    assert len(bomb) < 2 * 1024 * 1024
    r = client.post(f"{API}/measurements", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert r.json()["error"] == "too_large"
    r = client.post(
        f"{API}/measurements", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 400
    r = client.post(f"{API}/measurements", content=raw, headers={"Content-Encoding": "br"})
    assert r.status_code == 415


def test_oversize_body(client: TestClient) -> None:
    big = measurement(1, test_keys={"x": "a" * (2 * 1024 * 1024)})
    r = submit(client, big)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream is cut off too
        for _ in range(300):
            yield b"x" * 10_000

    r = client.post(f"{API}/measurements", content=chunks())
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"data_format_version": "0.3.0"}, 'data_format_version must be "0.2.0"'),
        ({"probe_cc": "kz"}, "probe_cc must be two upper-case letters"),
        ({"probe_asn": "1234"}, 'probe_asn must look like "AS1234"'),
        ({"measurement_start_time": "2026-11-27T18:00:00Z"}, "measurement_start_time must be"),
        ({"measurement_start_time": "2026-13-45 18:00:00"}, "not a valid date"),
        ({"test_keys": []}, "test_keys must be an object"),
        ({"input": 5}, "input must be a string or null"),
        ({"test_name": "Web Connectivity"}, "test_name must match"),
    ],
)
def test_bad_schema_422(client: TestClient, change: dict[str, Any], detail: str) -> None:
    r = submit(client, measurement(1, **change))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_measurement"
    assert detail in r.json()["detail"]


def test_public_probe_ip_rejected(client: TestClient) -> None:
    r = submit(client, measurement(1, probe_ip="203.0.113.7"))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("probe_ip must be scrubbed")
    m = measurement(2)
    del m["probe_ip"]
    assert submit(client, m).status_code == 201
    assert submit(client, measurement(1, input=None)).status_code == 201


def test_malformed_inputs_no_5xx(client: TestClient) -> None:
    bodies = [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[1,2,3]",
        b'"string"',
        b"null",
        b"NaN",
        b'{"test_keys": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps(measurement(1, test_keys=_nested(200))).encode(),
        json.dumps(measurement(1, input="h" * 1_500_000)).encode(),
        json.dumps({"data_format_version": "0.2.0"}).encode(),
    ]
    for body in bodies:
        r = client.post(f"{API}/measurements", content=body)
        assert r.status_code < 500, (body[:40], r.text)
        assert set(r.json()) >= {"error"}
        assert "Traceback" not in r.text
    for path in [
        f"{API}/log/inclusion?leaf_index=-1",
        f"{API}/log/inclusion?leaf_index=99999999999999999999999",
        f"{API}/log/inclusion",
        f"{API}/log/consistency?first=5&second=2",
        f"{API}/measurements?since=yesterday",
        f"{API}/measurements/{'x' * 5000}",
    ]:
        r = client.get(path)
        assert 400 <= r.status_code < 500, (path, r.text)
        assert "error" in r.json()


def _nested(depth: int) -> Any:
    v: Any = {}
    for _ in range(depth):
        v = {"a": v}
    return v


def test_proof_bundle_verifies_offline(client: TestClient) -> None:
    uids = [submit(client, measurement(i)).json()["measurement_uid"] for i in range(5)]
    key = pem(client)
    for uid in uids:
        doc = client.get(f"{API}/measurements/{uid}").json()
        bundle = doc.pop("x_evidence")
        res = verify_measurement(doc, bundle, None, key)
        assert res.ok, res.reason
    doc["test_keys"]["n"] = 999  # tampered
    res = verify_measurement(doc, bundle, None, key)
    assert not res.ok and PAYLOAD_ALTERED in res.reason
    head = TreeHead.from_json(client.get(f"{API}/log/tree-head").json())
    assert verify_tree_head(load_public_key(key), head)
    assert head.tree_size == 5
    inc = client.get(f"{API}/log/inclusion", params={"leaf_index": 2, "tree_size": 4}).json()
    assert len(inc["proof"]) == 2


def test_consistency_between_heads(client: TestClient) -> None:
    submit(client, measurement(1))
    submit(client, measurement(2))
    submit(client, measurement(3))
    h1 = client.get(f"{API}/log/tree-head").json()
    for i in range(4, 12):
        submit(client, measurement(i))
    h2 = client.get(f"{API}/log/tree-head").json()
    r = client.get(
        f"{API}/log/consistency", params={"first": h1["tree_size"], "second": h2["tree_size"]}
    ).json()
    proof = [base64.b64decode(p) for p in r["proof"]]
    assert verify_consistency(
        h1["tree_size"],
        h2["tree_size"],
        base64.b64decode(h1["root_hash"]),
        base64.b64decode(h2["root_hash"]),
        proof,
    )
    # A measurement's bundle under h2, checked against the saved earlier head h1.
    first = client.get(f"{API}/measurements", params={"limit": 1}).json()["results"][0]
    doc = client.get(f"{API}/measurements/{first['measurement_uid']}").json()
    bundle = doc.pop("x_evidence")
    bundle["consistency_to_trusted"] = r["proof"]
    assert verify_measurement(doc, bundle, h1, pem(client)).ok


def test_payload_removal_keeps_leaf(
    client: TestClient,
    make: MakeClient,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    res = submit(client, measurement(1)).json()
    submit(client, measurement(2))
    uid = res["measurement_uid"]
    url = f"{API}/measurements/{uid}/payload"
    payload = zlib.compress(canonical_json(measurement(1)), PAYLOAD_ZLIB_LEVEL)

    def stored() -> bytes:
        if backend == "sqlite":
            return b"".join(f.read_bytes() for f in (tmp_path / "data").glob("collector.sqlite3*"))
        # PostgreSQL: what the database holds (its files are the server's; see store_postgres)
        # PostgreSQL: the table's heap file after a checkpoint, and what the database returns.
        # (Its WAL segments still hold the old row until they are recycled: see store_postgres.)
        dsn = make.urls[tmp_path / "data"]  # type: ignore[attr-defined]
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT payload, input, domain FROM measurements").fetchall()
            rel = conn.execute("SELECT pg_relation_filepath('measurements')").fetchone()
            conn.execute("CHECKPOINT")
        assert rel is not None
        cluster = request.getfixturevalue("pg_cluster")
        heap = b"".join(f.read_bytes() for f in cluster.data_dir.glob(f"{rel[0]}*"))
        return heap + b"|".join(
            x if isinstance(x, bytes) else str(x).encode() for r in rows for x in r if x
        )

    assert payload[:48] in stored()
    assert client.delete(url).status_code == 401
    assert client.delete(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.delete(url, headers={"Authorization": f"Bearer {TOKEN.decode()}"})
    assert r.status_code == 200, r.text
    gone = client.get(f"{API}/measurements/{uid}")
    assert gone.status_code == 410
    body = gone.json()
    assert body["leaf_hash"] == res["leaf_hash"]
    assert "test_keys" not in body and "input" not in json.dumps(body["x_evidence"])
    v = verify_leaf_hash(base64.b64decode(body["leaf_hash"]), body["x_evidence"], None, pem(client))
    assert v.ok, v.reason
    # the payload's bytes are gone from the database files (and WAL), not just unlinked
    assert payload[:48] not in stored()
    assert b"site1.example.org" not in stored()  # input and domain are cleared too
    listed = client.get(f"{API}/measurements").json()["results"]
    assert listed[0]["payload_removed"] is True
    # the same content resubmitted stays a duplicate of the removed leaf
    assert submit(client, measurement(1)).json()["duplicate"] is True


def test_admin_requires_token(make: MakeClient, tmp_path: Path) -> None:
    with make(tmp_path / "d1") as c:
        assert c.post(f"{API}/admin/rotate-key").status_code == 401
    with make(tmp_path / "d2", admin_token=None) as c:
        # no credentials: 401 first (the schema's bearer scheme); credentials but admin off: 403
        assert c.post(f"{API}/admin/rotate-key").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN.decode()}"}
        assert c.post(f"{API}/admin/rotate-key", headers=bearer).status_code == 403


def test_key_rotation(client: TestClient) -> None:
    submit(client, measurement(1))
    old_head = client.get(f"{API}/log/tree-head").json()
    old_pem = pem(client)
    r = client.post(
        f"{API}/admin/rotate-key", headers={"Authorization": f"Bearer {TOKEN.decode()}"}
    )
    assert r.status_code == 200
    new_pem = pem(client)
    assert new_pem != old_pem
    keys = client.get(f"{API}/log/public-keys").json()["keys"]
    assert {k["public_key_pem"].encode() for k in keys} == {old_pem, new_pem}
    assert verify_tree_head(load_public_key(old_pem), TreeHead.from_json(old_head))
    uid = submit(client, measurement(2)).json()["measurement_uid"]
    doc = client.get(f"{API}/measurements/{uid}").json()
    assert verify_measurement(doc, doc.pop("x_evidence"), None, new_pem).ok


def test_rate_limit(make: MakeClient, tmp_path: Path) -> None:
    with make(tmp_path / "d", rate=1.0, burst=3.0) as c:
        codes = [c.get(f"{API}/log/tree-head").status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200]
        assert 429 in codes
        r = c.get(f"{API}/log/tree-head")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"] == "rate_limited"


def test_restart_keeps_tree(make: MakeClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with make(data) as c:
        uids = [submit(c, measurement(i)).json()["measurement_uid"] for i in range(7)]
        head1 = c.get(f"{API}/log/tree-head").json()
        key1 = pem(c)
    assert (data / KEY_FILE).stat().st_mode & 0o777 == 0o600
    with make(data) as c:
        head2 = c.get(f"{API}/log/tree-head").json()
        assert (head2["tree_size"], head2["root_hash"]) == (head1["tree_size"], head1["root_hash"])
        assert pem(c) == key1
        r = submit(c, measurement(3)).json()
        assert r["duplicate"] is True and r["measurement_uid"] == uids[3]
        assert submit(c, measurement(100)).json()["leaf_index"] == 7
        cons = c.get(f"{API}/log/consistency", params={"first": 7}).json()
        doc = c.get(f"{API}/measurements/{uids[0]}").json()
        bundle = doc.pop("x_evidence")
        bundle["consistency_to_trusted"] = cons["proof"]
        assert verify_measurement(doc, bundle, head1, key1).ok
        bundle_head = c.get(f"{API}/log/tree-head").json()
        assert verify_consistency(
            7,
            bundle_head["tree_size"],
            base64.b64decode(head1["root_hash"]),
            base64.b64decode(bundle_head["root_hash"]),
            [base64.b64decode(p) for p in cons["proof"]],
        )


def test_unexpected_error_is_500_without_trace(client: TestClient, monkeypatch: Any) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("secret internal detail")

    collector = client.app.state.collector["log"]  # type: ignore[attr-defined]
    monkeypatch.setattr(collector.store, "search", boom)
    r = client.get(f"{API}/measurements")
    assert r.status_code == 500
    assert r.json() == {"error": "internal"}
    assert "secret" not in r.text


def test_openapi(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    for path in [
        "/api/v1/measurements",
        "/api/v1/measurements/{uid}",
        "/api/v1/measurements/{uid}/payload",
        "/api/v1/log/tree-head",
        "/api/v1/log/inclusion",
        "/api/v1/log/consistency",
        "/api/v1/log/public-key",
        "/api/v1/log/public-keys",
        "/api/v1/admin/rotate-key",
    ]:
        assert path in schema["paths"]
    assert client.get("/nowhere").json()["error"] == "not_found"
    assert client.put(f"{API}/measurements").status_code == 405
