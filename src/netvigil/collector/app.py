"""The collector's HTTP API (Starlette/ASGI). See :data:`netvigil.collector.openapi.SCHEMA`.

Everything a client sends is hostile data: it is parsed as strict JSON, validated, stored
compressed and served back as JSON; it is never rendered or evaluated. Errors are
``{"error": ..., "detail": ...}`` with a precise 4xx; anything unexpected becomes
``500 {"error": "internal"}`` and is logged here, never sent.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from netvigil.collector.openapi import SEARCH_ASN, SEARCH_TIME, openapi_schema
from netvigil.collector.service import (
    CollectorLog,
    ValidationError,
    parse_json,
    valid_uid,
    validate,
)
from netvigil.collector.store import SearchQuery
from netvigil.evidence.log import public_key_pem

log = logging.getLogger("netvigil.collector")

MAX_BODY = 2 * 1024 * 1024
MAX_DECOMPRESSED = 8 * 1024 * 1024
BODY_TIMEOUT = 30.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_INT64 = 2**63 - 1  # SQLite and PostgreSQL integers: a larger cursor overflows the query


@dataclass
class CollectorConfig:
    data_dir: Path  # the log key, and the SQLite database unless database_url is set
    database_url: str | None = None  # postgresql://… to store in PostgreSQL instead
    admin_token: bytes | None = None
    rate: float = 200.0  # tokens per second per client IP; 0 disables the limit
    burst: float = 400.0
    max_body: int = MAX_BODY
    max_decompressed: int = MAX_DECOMPRESSED
    body_timeout: float = BODY_TIMEOUT


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _error(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail, **extra}, status_code=status, headers=headers
    )


# ---------------------------------------------------------------------------------------------
# rate limiting (pure ASGI, so it runs before any body is read)


class RateLimitMiddleware:
    """A token bucket per client IP; 429 with ``Retry-After`` when it is empty."""

    MAX_CLIENTS = 100_000

    def __init__(self, app: ASGIApp, rate: float, burst: float) -> None:
        self.app = app
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate <= 0:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = str(client[0]) if client else "unknown"
        now = time.monotonic()
        tokens, last = self.buckets.get(ip, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[ip] = (tokens, now)
            retry = max(1, math.ceil((1.0 - tokens) / self.rate))
            response = _error(
                429,
                "rate_limited",
                "too many requests from this address",
                {"Retry-After": str(retry)},
            )
            await response(scope, receive, send)
            return
        self.buckets[ip] = (tokens - 1.0, now)
        self.buckets.move_to_end(ip)
        while len(self.buckets) > self.MAX_CLIENTS:
            self.buckets.popitem(last=False)
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# request helpers


async def read_body(request: Request, cfg: CollectorConfig) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(length) > cfg.max_body:
            raise ApiError(413, "too_large", f"body is larger than {cfg.max_body} bytes")
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(cfg.body_timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > cfg.max_body:
                    raise ApiError(413, "too_large", f"body is larger than {cfg.max_body} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "timeout", "the request body was not received in time") from None
    except ClientDisconnect:
        # the client hung up mid-body: its business, not a server fault (one log line)
        raise ApiError(
            400, "client_disconnected", f"the client hung up after {total} bytes of the body"
        ) from None
    raw = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise ApiError(415, "unsupported_encoding", "Content-Encoding must be gzip or identity")
    return gunzip_bounded(raw, cfg.max_decompressed)


def gunzip_bounded(raw: bytes, limit: int) -> bytes:
    """Decompress one gzip member, refusing to produce more than ``limit`` bytes."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error:
        raise ApiError(400, "bad_gzip", "the body is not valid gzip") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ApiError(413, "too_large", f"the decompressed body is larger than {limit} bytes")
    if not d.eof:
        raise ApiError(400, "bad_gzip", "the gzip body is truncated")
    return out


def _str_param(request: Request, name: str) -> str | None:
    """A query parameter, or None when absent; present but empty is a 400 (as the schema says)."""
    raw = request.query_params.get(name)
    if raw is not None and raw == "":
        raise ApiError(400, "bad_request", f"{name} is empty")
    return raw


def _int_param(
    request: Request, name: str, default: int | None, lo: int, hi: int = MAX_INT64
) -> int:
    """An integer in lo..hi (the schema's bounds; a larger one would overflow SQL integers)."""
    raw = _str_param(request, name)
    if raw is None:
        if default is None:
            raise ApiError(400, "bad_request", f"{name} is required")
        return default
    # isascii: str.isdigit() also accepts '²' and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {lo} to {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {lo} to {hi}")
    return value


def _in_log(name: str, value: int, limit: int, what: str) -> int:
    """A well-formed number the log cannot answer for (yet): 404, as for an unknown uid."""
    if value > limit:
        raise ApiError(404, "not_found", f"{name} {value} is beyond {what} ({limit})")
    return value


def _time_param(request: Request, name: str) -> str | None:
    raw = _str_param(request, name)
    if raw is None:
        return None
    if SEARCH_TIME.fullmatch(raw) is None:
        raise ApiError(400, "bad_request", f"{name} must be YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ")
    # compared as text with the stored "YYYY-MM-DD hh:mm:ss"
    return f"{raw[:10]} {raw[11:19] if len(raw) > 10 else '00:00:00'}"


# ---------------------------------------------------------------------------------------------
# the application


def _allowed(by_method: Mapping[str, Any]) -> list[str]:
    methods = set(by_method) | {"OPTIONS"}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _by_method(
    by_method: Mapping[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    allow = ", ".join(_allowed(by_method))

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return endpoint


def create_app(cfg: CollectorConfig) -> Starlette:
    state: dict[str, CollectorLog] = {}

    def clog() -> CollectorLog:
        c = state.get("log")
        if c is None:
            c = state["log"] = CollectorLog(cfg.data_dir, database_url=cfg.database_url)
        return c

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clog()
        try:
            yield
        finally:
            c = state.pop("log", None)
            if c is not None:
                await asyncio.to_thread(c.close)

    def check_admin(request: Request) -> None:
        if "authorization" not in request.headers:
            # authentication first, as the schema's bearer scheme says: 401, even when disabled
            raise ApiError(
                401,
                "unauthorized",
                "a valid admin bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if cfg.admin_token is None:
            raise ApiError(403, "forbidden", "admin operations are disabled (no admin token file)")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, cfg.admin_token):
            raise ApiError(
                401,
                "unauthorized",
                "a valid admin bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def submit(request: Request) -> Response:
        raw = await read_body(request, cfg)
        try:
            prepared = validate(parse_json(raw))
        except ValidationError as exc:
            status = 400 if str(exc).startswith(("invalid JSON", "body is not UTF-8")) else 422
            raise ApiError(
                status, "invalid_measurement" if status == 422 else "bad_json", str(exc)
            ) from None
        result = await asyncio.wrap_future(clog().submit(prepared))
        return JSONResponse(
            {
                "measurement_uid": result.uid,
                "leaf_index": result.leaf_index,
                "leaf_hash": _b64(result.leaf_hash),
                "duplicate": result.duplicate,
            },
            status_code=200 if result.duplicate else 201,
        )

    def _uid(request: Request) -> str:
        uid = str(request.path_params["uid"])
        if not valid_uid(uid):
            raise ApiError(404, "not_found", "no measurement with this uid")
        return uid

    async def get_measurement(request: Request) -> Response:
        uid = _uid(request)
        c = clog()
        row = await asyncio.to_thread(c.store.get, uid)
        if row is None:
            raise ApiError(404, "not_found", "no measurement with this uid")
        bundle = c.bundle(row.leaf_index).to_json()
        if row.payload is None:
            return _error(
                410,
                "gone",
                f"the payload was removed: {row.removed_reason or 'no reason given'}",
                measurement_uid=row.uid,
                leaf_index=row.leaf_index,
                leaf_hash=_b64(row.leaf_hash),
                x_evidence=bundle,
            )
        body = json.loads(zlib.decompress(row.payload))
        body["x_evidence"] = bundle
        return JSONResponse(body, headers={"X-Measurement-Uid": row.uid})

    async def list_measurements(request: Request) -> Response:
        cc = _str_param(request, "probe_cc")
        if cc is not None and not (len(cc) == 2 and cc.isascii() and cc.isalpha()):
            raise ApiError(400, "bad_request", "probe_cc must be two letters")
        asn = _str_param(request, "probe_asn")
        if asn is not None:
            if SEARCH_ASN.fullmatch(asn) is None:
                raise ApiError(400, "bad_request", 'probe_asn must look like "AS1234"')
            asn = f"AS{int(asn.removeprefix('AS'))}"
        domain = _str_param(request, "domain")
        if domain is not None and len(domain) > 253:
            raise ApiError(400, "bad_request", "domain is too long")
        test_name = _str_param(request, "test_name")
        if test_name is not None and len(test_name) > 64:
            raise ApiError(400, "bad_request", "test_name is too long")
        after = _int_param(request, "cursor", -1, 0)
        query = SearchQuery(
            probe_cc=None if cc is None else cc.upper(),
            probe_asn=asn,
            domain=None if domain is None else domain.lower(),
            test_name=test_name,
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            after_leaf=after,
            limit=_int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        )
        rows = await asyncio.to_thread(clog().store.search, query)
        results = [
            {
                "measurement_uid": r.uid,
                "leaf_index": r.leaf_index,
                "received_at": r.received_at,
                "probe_cc": r.probe_cc,
                "probe_asn": r.probe_asn,
                "test_name": r.test_name,
                "input": r.input,
                "domain": r.domain,
                "measurement_start_time": r.measurement_start_time,
                "payload_removed": r.removed,
            }
            for r in rows
        ]
        next_cursor = str(rows[-1].leaf_index) if len(rows) == query.limit else None
        return JSONResponse({"results": results, "next_cursor": next_cursor})

    async def tree_head(request: Request) -> Response:
        return JSONResponse(clog().head.to_json())

    async def inclusion(request: Request) -> Response:
        c = clog()
        head = c.head
        size = _int_param(request, "tree_size", head.tree_size, 1)
        index = _int_param(request, "leaf_index", None, 0)
        _in_log("tree_size", size, head.tree_size, "the latest tree head's size")
        _in_log("leaf_index", index, size - 1, "the last leaf of that tree")
        leaf, proof = c.inclusion(index, size)
        return JSONResponse(
            {
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": _b64(leaf),
                "root_hash": _b64(c.root(size)),
                "proof": [_b64(p) for p in proof],
            }
        )

    async def consistency(request: Request) -> Response:
        c = clog()
        head = c.head
        second = _int_param(request, "second", head.tree_size, 0)
        first = _int_param(request, "first", None, 0)
        _in_log("second", second, head.tree_size, "the latest tree head's size")
        _in_log("first", first, second, "second")
        proof = c.consistency(first, second)
        return JSONResponse(
            {
                "first": first,
                "second": second,
                "first_root": _b64(c.root(first)),
                "second_root": _b64(c.root(second)),
                "proof": [_b64(p) for p in proof],
            }
        )

    async def public_key(request: Request) -> Response:
        return Response(public_key_pem(clog().key), media_type="application/x-pem-file")

    async def public_keys(request: Request) -> Response:
        keys = await asyncio.to_thread(clog().store.public_keys)
        current = public_key_pem(clog().key)
        return JSONResponse(
            {
                "keys": [
                    {
                        "log_id": _b64(log_id),
                        "public_key_pem": pem.decode("ascii"),
                        "added_ms": added,
                        "current": pem == current,
                    }
                    for log_id, pem, added in keys
                ]
            }
        )

    async def remove_payload(request: Request) -> Response:
        check_admin(request)
        uid = _uid(request)
        reason = _str_param(request, "reason") or "removed for a person's safety"
        if len(reason) > 500:
            raise ApiError(400, "bad_request", "reason is longer than 500 characters")
        row = await asyncio.wrap_future(clog().remove_payload(uid, reason))
        if row is None:
            raise ApiError(404, "not_found", "no measurement with this uid")
        return JSONResponse(
            {
                "measurement_uid": row.uid,
                "leaf_index": row.leaf_index,
                "leaf_hash": _b64(row.leaf_hash),
                "removed": True,
            }
        )

    async def rotate_key(request: Request) -> Response:
        check_admin(request)
        head = await asyncio.wrap_future(clog().rotate_key())
        return JSONResponse(
            {
                "tree_head": head.to_json(),
                "public_key_pem": public_key_pem(clog().key).decode("ascii"),
            }
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.error == "client_disconnected":
            client = request.client.host if request.client else "unknown"
            log.info("%s %s from %s: %s", request.method, request.url.path, client, exc.detail)
        headers = exc.extra.pop("headers", None)
        return _error(exc.status, exc.error, exc.detail, headers, **exc.extra)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        names = {404: "not_found", 405: "method_not_allowed"}
        return _error(
            exc.status_code, names.get(exc.status_code, "http_error"), str(exc.detail), exc.headers
        )

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal"}, status_code=500)

    Endpoint = Callable[[Request], Awaitable[Response]]
    endpoints: dict[str, dict[str, Endpoint]] = {
        "/api/v1/measurements": {"GET": list_measurements, "POST": submit},
        "/api/v1/measurements/{uid}": {"GET": get_measurement},
        "/api/v1/measurements/{uid}/payload": {"DELETE": remove_payload},
        "/api/v1/log/tree-head": {"GET": tree_head},
        "/api/v1/log/inclusion": {"GET": inclusion},
        "/api/v1/log/consistency": {"GET": consistency},
        "/api/v1/log/public-key": {"GET": public_key},
        "/api/v1/log/public-keys": {"GET": public_keys},
        "/api/v1/admin/rotate-key": {"POST": rotate_key},
        "/openapi.json": {"GET": openapi},
    }
    # One route per path, so that a 405's Allow and an OPTIONS answer name every method the
    # path serves (two routes for one path made OPTIONS answer "Allow: POST" though GET works).
    routes = [
        Route(path, _by_method(by_method), methods=_allowed(by_method))
        for path, by_method in endpoints.items()
    ]
    handlers: dict[Any, Callable[[Request, Exception], Any]] = {
        ApiError: api_error,
        HTTPException: http_error,
        Exception: internal,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(RateLimitMiddleware, rate=cfg.rate, burst=cfg.burst)
    app.state.collector = state
    return app
