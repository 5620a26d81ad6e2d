"""API fuzzing (hypothesis) against the collector app in-process: never a 5xx, and every 4xx
is a JSON ``{"error": ..., "detail": ...}`` body.

Random JSON bodies (OONI envelopes with fields replaced by wrong types, huge numbers, unicode,
deep nesting; arbitrary JSON; raw bytes), Content-Encoding variants (gzip, truncated gzip,
unknown encodings), random query parameters for search and proofs (negative, huge,
non-numeric, unicode), random uids and paths, and random methods. Bounded: a fixed number of
examples per test, no deadline. The app logs its own 500s, so a failure shows the traceback.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from netvigil.collector.app import CollectorConfig, create_app

EXAMPLES = 300
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def envelope(n: int = 0) -> dict[str, Any]:
    return {
        "annotations": {"engine_name": "netvigil"},
        "data_format_version": "0.2.0",
        "input": f"https://site{n}.example.org/",
        "measurement_start_time": "2026-11-27 18:00:00",
        "probe_asn": "AS1234",
        "probe_cc": "KZ",
        "report_id": f"20261127T180000Z_webconnectivity_KZ_1234_n1_{n:016d}",
        "software_name": "netvigil",
        "software_version": "0.1.0",
        "test_name": "web_connectivity",
        "test_version": "0.5.28",
        "test_keys": {"n": n},
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    cfg = CollectorConfig(data_dir=tmp_path_factory.mktemp("fuzz-collector"), rate=0)
    with TestClient(create_app(cfg)) as c:
        # a few real measurements, so searches and proofs have something to find
        for n in range(5):
            assert c.post("/api/v1/measurements", json=envelope(n)).status_code == 201
        yield c


def check(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), response.text[:300]
        assert "Traceback" not in response.text


# -- strategies --------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "\ud7ff", "😀" * 5, "AS1", "KZ", "0.2.0", "2026-02-30 25:61:61"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
FIELDS = sorted(envelope())


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """A valid envelope with some fields replaced by random values, removed, or nested deep."""
    body: dict[str, Any] = envelope(draw(st.integers(min_value=0, max_value=10**6)))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        action = draw(st.sampled_from(["replace", "delete", "nest"]))
        if action == "delete":
            body.pop(name, None)
        elif action == "nest":
            value: Any = body[name]
            for _ in range(draw(st.integers(min_value=1, max_value=200))):
                value = [value] if draw(st.booleans()) else {"k": value}
            body[name] = value
        else:
            body[name] = draw(json_values)
    for key, value in draw(st.dictionaries(st.text(max_size=20), json_values, max_size=3)).items():
        body[key] = value
    return body


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


raw_bodies = (
    envelopes().map(lambda b: json.dumps(b).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=300)
    | st.integers(min_value=1, max_value=100_000).map(_deep)
    | st.sampled_from(
        [b"", b"{", b'{"a": NaN}', b"[Infinity]", b"\xff\xfe{}", b"null", b"1e999999"]
    )
)
ENCODINGS = ["gzip", "x-gzip", "identity", "", "GZIP", " gzip ", "br", "deflate", "gzip, gzip", "*"]
# Header values must be latin-1 for the client itself; anything printable in there.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
param_text = (
    st.integers(min_value=-(10**30), max_value=10**30).map(str)
    | st.text(max_size=25)
    | st.sampled_from(["", "0", "-1", "1e3", "0x10", " 1", "1 ", "+1", "٣", "²", "9" * 40])
)
INT_PARAMS = {"limit", "tree_size", "leaf_index", "first", "second"}


# -- tests -------------------------------------------------------------------------------------


@FUZZ
@given(
    body=raw_bodies,
    encoding=st.sampled_from([None, *ENCODINGS]),
    compress=st.booleans(),
    truncate=st.integers(min_value=0, max_value=20),
    content_type=header_text,
)
def test_submit_never_5xx(
    client: TestClient,
    body: bytes,
    encoding: str | None,
    compress: bool,
    truncate: int,
    content_type: str,
) -> None:
    data = gzip.compress(body) if compress else body
    if compress and truncate:
        data = data[: max(0, len(data) - truncate)]
    headers = {"Content-Type": content_type or "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    check(client.post("/api/v1/measurements", content=data, headers=headers))


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "probe_cc",
                "probe_asn",
                "domain",
                "test_name",
                "since",
                "until",
                "cursor",
                "limit",
                "x",
            ]
        ),
        param_text,
        max_size=5,
    )
)
def test_search_never_5xx(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/api/v1/measurements", params=params)
    check(response)
    if response.status_code == 200:
        assert isinstance(response.json()["results"], list)


@FUZZ
@given(
    endpoint=st.sampled_from(
        ["inclusion", "consistency", "tree-head", "public-key", "public-keys"]
    ),
    params=st.dictionaries(
        st.sampled_from(["tree_size", "leaf_index", "first", "second", "y"]), param_text, max_size=4
    ),
)
def test_log_endpoints_never_5xx(client: TestClient, endpoint: str, params: dict[str, str]) -> None:
    check(client.get(f"/api/v1/log/{endpoint}", params=params))


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.text(max_size=80).map(lambda uid: "/api/v1/measurements/" + quote(uid, safe="")),
        st.text(max_size=80).map(
            lambda uid: "/api/v1/measurements/" + quote(uid, safe="") + "/payload"
        ),
        st.sampled_from(
            ["/api/v1/admin/rotate-key", "/openapi.json", "/", "/api/v1/log", "/api/v1/../etc"]
        ),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(
            lambda p: "/" + p
        ),
    ),
    authorization=st.none() | header_text | header_text.map(lambda t: "Bearer " + t),
)
def test_paths_methods_and_headers_never_5xx(
    client: TestClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    try:
        response = client.request(method, path, headers=headers)
    except httpx.InvalidURL:
        assume(False)  # a path the HTTP client itself refuses (e.g. "//:A"): never reaches us
        return
    assert response.status_code < 500, (method, path, response.status_code)
    if 400 <= response.status_code < 500 and method != "HEAD":
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str)


def test_unicode_digits_in_integer_parameters(client: TestClient) -> None:
    check(client.get("/api/v1/measurements", params={"limit": "²"}))
    check(client.get("/api/v1/log/consistency", params={"first": "²"}))
