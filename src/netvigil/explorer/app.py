"""``netvigil explorer``'s web application (Starlette): read-only, server-rendered, no inline code.

Every response carries a strict Content-Security-Policy (``default-src 'self'``; no inline
script or style, no ``unsafe-*``; ``frame-ancestors 'none'``), ``X-Content-Type-Options:
nosniff`` and ``Referrer-Policy: no-referrer``. Only GET and HEAD are routed. Query parameters
are checked against each page's list (an unknown, repeated, over-long or malformed one is a 400
with a one-line reason), and reach SQL only as bound parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from netvigil.verdict.model import OUTCOMES

from .data import Pipeline, Scope
from .evidence import open_collector
from .inputs import InputFiles
from .pages import (
    Links,
    PageError,
    country_page,
    domain_page,
    load_measurement,
    measurement_page,
    overview_page,
    search_page,
)

__all__ = ["SECURITY_HEADERS", "BadRequest", "create_app", "parse_scope"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
}
MAX_PARAM_LEN = 253
MAX_QUERY_LEN = 2048
MAX_PAGE = 200
MAX_EXPORT_ROWS = 10_000
_CC = re.compile(r"[A-Za-z]{2}\Z")
_ASN = re.compile(r"(?:AS|as)?([0-9]{1,10})\Z")
_DOMAIN = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?\Z")
_TEST = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_UID = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
_HEX = re.compile(r"[0-9a-f]{64}\Z")
_STATIC = {"explorer.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
_OUTCOME_BASES = frozenset(OUTCOMES)


class BadRequest(Exception):
    """A 400: the message is one line, safe to show."""


def parse_scope(params: list[tuple[str, str]], allowed: set[str]) -> tuple[Scope, dict[str, str]]:
    """Validated filters, and the other allowed parameters as text (page, format)."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name[:40]!r}")
        if name in seen:
            raise BadRequest(f"parameter {name!r} given twice")
        if len(value) > MAX_PARAM_LEN:
            raise BadRequest(f"parameter {name!r} is longer than {MAX_PARAM_LEN} characters")
        seen[name] = value.strip()
    v = {k: x for k, x in seen.items() if x != ""}
    kw: dict[str, Any] = {}
    if "cc" in v:
        if not _CC.match(v["cc"]):
            raise BadRequest("cc must be a two-letter country code like KZ")
        kw["cc"] = v["cc"].upper()
    if "asn" in v:
        m = _ASN.match(v["asn"])
        if not m or int(m[1]) >= 2**32:
            raise BadRequest("asn must be a network number like 9198 or AS9198")
        kw["asn"] = int(m[1])
    if "domain" in v:
        kw["domain"] = check_domain(v["domain"])
    for key in ("since", "until"):
        if key in v:
            try:
                day = dt.date.fromisoformat(v[key])
            except ValueError:
                raise BadRequest(f"{key} must be a date like 2022-01-05") from None
            if not dt.date(1990, 1, 1) <= day <= dt.date(2100, 12, 31):
                raise BadRequest(f"{key} must be between 1990 and 2100")
            kw[key] = day
    if kw.get("since") and kw.get("until") and kw["since"] > kw["until"]:
        raise BadRequest("since is after until")
    if "outcome" in v:
        if v["outcome"] not in _OUTCOME_BASES:
            raise BadRequest("outcome must be one of the verdict outcomes (like tls/interception)")
        kw["outcome"] = v["outcome"]
    if "test_name" in v:
        if not _TEST.match(v["test_name"]):
            raise BadRequest("test_name must look like web_connectivity")
        kw["test_name"] = v["test_name"]
    rest = {k: x for k, x in v.items() if k in ("page", "format")}
    return Scope(**kw), rest


def check_domain(value: str) -> str:
    d = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(d):
        raise BadRequest("domain must be a host name like example.org")
    return d


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8")


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode().lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    pipeline_dir: Path,
    collector_dir: Path | None = None,
    inputs: list[Path] | None = None,
    *,
    database: str | None = None,
) -> Starlette:
    input_files = InputFiles(inputs) if inputs else None
    collector = open_collector(collector_dir, database)
    pipeline = Pipeline(pipeline_dir)
    links = Links()

    def guarded(
        allowed: set[str], fn: Callable[[Request, Scope, dict[str, str]], Response]
    ) -> Handler:
        async def endpoint(request: Request) -> Response:
            if len(request.url.query) > MAX_QUERY_LEN:
                return PlainTextResponse(
                    f"bad request: query longer than {MAX_QUERY_LEN} characters\n", 400
                )
            try:
                scope, rest = parse_scope(request.query_params.multi_items(), allowed)
                return await asyncio.to_thread(fn, request, scope, rest)
            except BadRequest as exc:
                return PlainTextResponse(f"bad request: {exc}\n", 400)
            except PageError as exc:
                return PlainTextResponse(f"not found: {exc}\n", 404)

        return endpoint

    def overview(request: Request, s: Scope, rest: dict[str, str]) -> Response:
        return _html(overview_page(pipeline, s, links))

    def country(request: Request, s: Scope, rest: dict[str, str]) -> Response:
        cc = request.path_params["cc"]
        if not _CC.match(cc):
            raise BadRequest("the country must be a two-letter code like KZ")
        return _html(
            country_page(
                pipeline, Scope(cc=cc.upper(), asn=s.asn, since=s.since, until=s.until), links
            )
        )

    def domain(request: Request, s: Scope, rest: dict[str, str]) -> Response:
        d = check_domain(request.path_params["domain"])
        return _html(
            domain_page(
                pipeline, Scope(cc=s.cc, asn=s.asn, domain=d, since=s.since, until=s.until), links
            )
        )

    def measurement(request: Request, s: Scope, rest: dict[str, str]) -> Response:
        uid = request.path_params["uid"]
        as_json = uid.endswith(".json")
        uid = uid.removesuffix(".json")
        if not _UID.match(uid):
            raise BadRequest("a measurement id has only letters, digits, '.', '_' and '-'")
        m = load_measurement(pipeline, collector, uid, input_files)
        if as_json:
            data = json.dumps(m.document(), ensure_ascii=False, sort_keys=True, default=str)
            return Response(
                data,
                media_type="application/json",
                headers={"content-disposition": f'attachment; filename="{uid}.json"'},
            )
        return _html(measurement_page(m, links))

    def search(request: Request, s: Scope, rest: dict[str, str]) -> Response:
        fmt = rest.get("format", "html")
        if fmt not in ("html", "csv", "json"):
            raise BadRequest("format must be html, csv or json")
        try:
            page_no = int(rest.get("page", "1"))
        except ValueError:
            raise BadRequest("page must be a number") from None
        if not 1 <= page_no <= MAX_PAGE:
            raise BadRequest(f"page must be between 1 and {MAX_PAGE}")
        if fmt != "html":
            rows = pipeline.search(s, offset=0, limit=MAX_EXPORT_ROWS)
            return _export(rows, fmt)
        body, _ = search_page(pipeline, s, page_no, links)
        return _html(body)

    def log_key(request: Request, s: Scope, rest: dict[str, str]) -> Response:
        log_id = request.path_params["log_id"]
        if collector is None or not _HEX.match(log_id):
            raise PageError("no such log key")
        pem = collector.key_for(bytes.fromhex(log_id))
        if pem is None:
            raise PageError("no such log key")
        return Response(
            pem,
            media_type="application/x-pem-file",
            headers={"content-disposition": f'attachment; filename="{log_id[:16]}.pem"'},
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("not found\n", 404)
        data = resources.files("netvigil.explorer").joinpath("static", name).read_bytes()
        return Response(data, media_type=_STATIC[name])

    filters = {"cc", "asn", "domain", "since", "until", "outcome", "test_name"}
    routes = [
        Route("/", guarded({"since", "until"}, overview), methods=["GET", "HEAD"]),
        Route(
            "/country/{cc}", guarded({"asn", "since", "until"}, country), methods=["GET", "HEAD"]
        ),
        Route(
            "/domain/{domain}",
            guarded({"cc", "asn", "since", "until"}, domain),
            methods=["GET", "HEAD"],
        ),
        Route("/measurement/{uid}", guarded(set(), measurement), methods=["GET", "HEAD"]),
        Route("/search", guarded(filters | {"page", "format"}, search), methods=["GET", "HEAD"]),
        Route("/log-key/{log_id}.pem", guarded(set(), log_key), methods=["GET", "HEAD"]),
        Route("/static/{name}", static, methods=["GET", "HEAD"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pipeline.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    app.state.pipeline = pipeline
    app.state.collector = collector
    return app


EXPORT_COLUMNS = (
    "measurement_uid",
    "measurement_start_time",
    "probe_cc",
    "probe_asn",
    "test_name",
    "domain",
    "input",
    "outcome",
    "technique",
    "blocked",
    "confidence",
    "fingerprint",
    "root",
)


def _export(rows: list[dict[str, Any]], fmt: str) -> Response:
    def cell(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return v.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return v

    if fmt == "json":
        data = json.dumps(
            {
                "rows": [{k: cell(r[k]) for k in EXPORT_COLUMNS} for r in rows],
                "truncated": len(rows) >= MAX_EXPORT_ROWS,
            },
            ensure_ascii=False,
        )
        return Response(
            data,
            media_type="application/json",
            headers={"content-disposition": 'attachment; filename="measurements.json"'},
        )
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(EXPORT_COLUMNS)
    for r in rows:
        # A cell a spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote.
        w.writerow([_csv_safe(cell(r[k])) for k in EXPORT_COLUMNS])
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="measurements.csv"'},
    )


def _csv_safe(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def static_files() -> dict[str, bytes]:
    base = resources.files("netvigil.explorer").joinpath("static")
    return {name: base.joinpath(name).read_bytes() for name in _STATIC}
