"""The explorer's pages, as functions of the data: the server and the static export share them.

A :class:`Links` object says where a page lives (a URL with the filters in its query string on
the server; a relative ``.html`` file in the export), so the same page renders for both.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import shlex
import urllib.parse
from collections.abc import Sequence
from typing import Any

from netvigil.verdict import OUTCOMES, analyze

from .data import Pipeline, Scope
from .evidence import CollectorData, Logged
from .html import Child, Safe, block, el, join, page, text
from .inputs import InputFiles
from .svg import colour, timeline

__all__ = [
    "Links",
    "PageError",
    "country_page",
    "domain_page",
    "measurement_page",
    "overview_page",
    "search_page",
]

RAW_JSON_LIMIT = 256 * 1024
PAGE_SIZE = 50

_OUTCOME_WORDS = {
    "ok": "the site was reachable as the control saw it",
    "down": "the site was down for the control too (not censorship)",
    "unknown": "the measurement cannot tell",
    "unsupported": "this test is not judged by the verdict engine",
    "captive-portal": "a captive portal asked for a login (not censorship)",
    "dns/nxdomain": "the DNS answer said the name does not exist",
    "dns/bogon": "DNS answered with a private or reserved address",
    "dns/bogus": "DNS answered with addresses that are not the site's",
    "dns/blockpage": "DNS pointed to a server that serves a blockpage",
    "dns/timeout": "the DNS query timed out",
    "dns/injected": "a forged DNS answer was injected",
    "tcp/timeout": "the TCP connection timed out",
    "tcp/reset": "the TCP connection was reset",
    "tcp/unreachable": "the site's address was unreachable",
    "tls/reset": "the TLS handshake was reset",
    "tls/timeout": "the TLS handshake timed out",
    "tls/interception": "the TLS connection was intercepted: a certificate that is not the site's was presented",
    "tls/failure": "the TLS handshake failed",
    "http/blockpage": "the network served a blockpage instead of the site",
    "http/reset": "the HTTP connection was reset",
    "http/timeout": "the HTTP request timed out",
    "http/failure": "the HTTP request failed",
    "http/throttled": "the download was throttled",
    "http/diff": "the page differed from the control's",
}


class PageError(Exception):
    """404: the thing a URL names is not in the data (a one-line reason)."""


@dataclasses.dataclass(frozen=True)
class Links:
    """Where pages live. ``static_site``: relative ``.html`` paths from a page at ``depth``."""

    static_site: bool = False
    depth: int = 0

    def _root(self) -> str:
        return "../" * self.depth if self.static_site else "/"

    def static(self) -> str:
        return self._root() + "static/"

    @staticmethod
    def _query(params: dict[str, Any]) -> str:
        kept = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        return ("?" + urllib.parse.urlencode(kept)) if kept else ""

    def overview(self, **filters: Any) -> str:
        if self.static_site:
            return self._root() + "index.html"
        return "/" + self._query(filters)

    def country(self, cc: str, **filters: Any) -> str:
        if self.static_site:
            return f"{self._root()}country/{cc}.html"
        return f"/country/{cc}" + self._query(filters)

    def domain(self, domain: str, cc: str | None = None, **filters: Any) -> str:
        if self.static_site:
            return f"{self._root()}domain/{cc or 'all'}/{domain}.html"
        return "/domain/" + urllib.parse.quote(domain) + self._query({"cc": cc, **filters})

    def measurement(self, uid: str) -> str:
        if self.static_site:
            return f"{self._root()}measurement/{uid}.html"
        return "/measurement/" + urllib.parse.quote(uid, safe="")

    def measurement_json(self, uid: str) -> str:
        if self.static_site:
            return f"{self._root()}measurement/{uid}.json"
        return "/measurement/" + urllib.parse.quote(uid, safe="") + ".json"

    def log_key(self, log_id_hex: str) -> str:
        if self.static_site:
            return f"{self._root()}log-key/{log_id_hex}.pem"
        return f"/log-key/{log_id_hex}.pem"

    def search(self, **filters: Any) -> str | None:
        if self.static_site:
            return None  # a search needs the server
        return "/search" + self._query(filters)


# -- small pieces -----------------------------------------------------------------------------


def _share(blocked: int, total: int) -> str:
    return f"{100 * blocked / total:.1f}%" if total else "–"


def _asn(asn: int) -> str:
    return f"AS{asn}"


def _day(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    return "" if value is None else str(value)


def _table(
    caption: str, headers: Sequence[str], rows: Sequence[Sequence[Child]], *, empty: str = "nothing"
) -> Safe:
    if not rows:
        return el("p", {"class": "empty"}, f"{caption}: {empty}.")
    return el(
        "table",
        None,
        el("caption", None, caption),
        el("thead", None, el("tr", None, [el("th", {"scope": "col"}, h) for h in headers])),
        el("tbody", None, [el("tr", None, [el("td", None, c) for c in r]) for r in rows]),
    )


def _a(href: str | None, label: Child) -> Safe:
    return el("a", {"href": href}, label) if href else join([label])


def _nav(links: Links, crumbs: Sequence[tuple[str, str | None]]) -> Safe:
    items: list[Child] = [
        el("a", {"href": links.overview(), "class": "brand"}, "netvigil explorer")
    ]
    search = links.search()
    if search:
        items.append(el("a", {"href": search}, "Search"))
    trail = [el("li", None, _a(href, label)) for label, href in crumbs]
    return join(
        [
            el("nav", {"aria-label": "site"}, items),
            el("nav", {"aria-label": "breadcrumb"}, el("ol", {"class": "crumbs"}, trail))
            if trail
            else None,
        ]
    )


def _filters_form(action: str | None, s: Scope, fields: Sequence[str]) -> Safe:
    if action is None:
        return Safe("")
    inputs: list[Child] = []
    values = {
        "cc": s.cc,
        "asn": s.asn,
        "domain": s.domain,
        "outcome": s.outcome,
        "test_name": s.test_name,
        "since": s.since,
        "until": s.until,
    }
    labels = {
        "cc": "country",
        "asn": "network (ASN)",
        "domain": "domain",
        "outcome": "outcome",
        "test_name": "test",
        "since": "from (UTC day)",
        "until": "to (UTC day)",
    }
    for f in fields:
        kind = "date" if f in ("since", "until") else "text"
        v = values[f]
        if f == "outcome":
            options = [el("option", {"value": ""}, "any")] + [
                el("option", {"value": o, "selected": o == v}, o) for o in OUTCOMES
            ]
            inputs.append(el("label", None, labels[f], " ", el("select", {"name": f}, options)))
            continue
        inputs.append(
            el(
                "label",
                None,
                labels[f],
                " ",
                el("input", {"type": kind, "name": f, "value": "" if v is None else str(v)}),
            )
        )
    inputs.append(el("button", {"type": "submit"}, "Apply"))
    return el("form", {"method": "get", "action": action, "class": "filters"}, inputs)


def _onset_labels(onsets: Sequence[dict[str, Any]]) -> dict[dt.date, str]:
    out: dict[dt.date, list[str]] = {}
    for o in onsets:
        out.setdefault(o["day"], []).append(f"{o['domain']} on AS{o['probe_asn']}")
    return {
        d: ", ".join(v[:6]) + (f" and {len(v) - 6} more" if len(v) > 6 else "")
        for d, v in out.items()
    }


def _onsets_table(links: Links, onsets: Sequence[dict[str, Any]], caption: str) -> Safe:
    return _table(
        caption,
        ["day", "country", "network", "domain", "blocked share", "baseline", "measurements", "p"],
        [
            [
                _day(o["day"]),
                _a(links.country(o["probe_cc"]), o["probe_cc"]),
                _asn(o["probe_asn"]),
                _a(links.domain(o["domain"], o["probe_cc"]), o["domain"]),
                f"{100 * o['blocked_share']:.0f}%",
                f"{100 * o['baseline_share']:.0f}%",
                f"{o['measurements']:,}",
                f"{o['p_value']:.1e}",
            ]
            for o in onsets
        ],
        empty="no sudden onset of blocking",
    )


# -- pages --------------------------------------------------------------------------------------


def overview_page(p: Pipeline, s: Scope, links: Links) -> Safe:
    countries = p.countries(s)
    onsets = p.onsets(s)
    days, counts = p.timeline(s)
    body = [
        el("h1", None, "Measurements by country"),
        _filters_form(links.overview() if not links.static_site else None, s, ["since", "until"]),
        timeline(
            "All countries: measurements per day by outcome", days, counts, _onset_labels(onsets)
        ),
        _table(
            "Countries (blocked share over the period)",
            [
                "country",
                "measurements",
                "blocked",
                "blocked share",
                "networks",
                "domains",
                "first day",
                "last day",
            ],
            [
                [
                    _a(links.country(c["probe_cc"], since=s.since, until=s.until), c["probe_cc"]),
                    f"{c['measurements']:,}",
                    f"{c['blocked']:,}",
                    _share(c["blocked"], c["measurements"]),
                    c["networks"],
                    c["domains"],
                    _day(c["first_day"]),
                    _day(c["last_day"]),
                ]
                for c in countries
            ],
            empty="no measurements",
        ),
        _onsets_table(links, onsets, "Latest onsets of blocking"),
    ]
    return page("Overview", body, static=links.static(), nav=_nav(links, []))


def country_page(p: Pipeline, s: Scope, links: Links) -> Safe:
    assert s.cc is not None
    networks = p.networks(s)
    if not networks:
        raise PageError(f"no measurements from {s.cc} in this period")
    domains = p.domains(s)
    mix = p.outcome_mix(s)
    onsets = p.onsets(s)
    days, counts = p.timeline(s)
    blocked_mix = [
        m for m in mix if m["outcome"] not in ("ok", "down", "unknown", "captive-portal")
    ]
    total = sum(int(m["n"]) for m in mix) or 1
    f = {"since": s.since, "until": s.until}
    body = [
        el("h1", None, f"Country {s.cc}" + (f", network AS{s.asn}" if s.asn else "")),
        _filters_form(
            None if links.static_site else links.country(s.cc), s, ["asn", "since", "until"]
        ),
        timeline(f"{s.cc}: measurements per day by outcome", days, counts, _onset_labels(onsets)),
        _table(
            "Networks",
            [
                "network",
                "measurements",
                "blocked",
                "blocked share",
                "blocked domains",
                "first day",
                "last day",
            ],
            [
                [
                    _a(
                        None if links.static_site else links.country(s.cc, asn=n["probe_asn"], **f),
                        _asn(n["probe_asn"]),
                    ),
                    f"{n['measurements']:,}",
                    f"{n['blocked']:,}",
                    _share(n["blocked"], n["measurements"]),
                    n["blocked_domains"],
                    _day(n["first_day"]),
                    _day(n["last_day"]),
                ]
                for n in networks
            ],
        ),
        _table(
            "Domains ranked by blocked share",
            [
                "domain",
                "measurements",
                "blocked",
                "blocked share",
                "networks",
                "first day",
                "last day",
            ],
            [
                [
                    _a(
                        links.domain(
                            d["domain"], s.cc, **({} if links.static_site else {"asn": s.asn, **f})
                        ),
                        d["domain"],
                    ),
                    f"{d['measurements']:,}",
                    f"{d['blocked']:,}",
                    _share(d["blocked"], d["measurements"]),
                    d["networks"],
                    _day(d["first_day"]),
                    _day(d["last_day"]),
                ]
                for d in domains
            ],
        ),
        _table(
            "The mix of techniques (blocking outcomes)",
            ["outcome", "measurements", "share of all"],
            [
                [_swatch(m["outcome"]), f"{int(m['n']):,}", _share(int(m["n"]), total)]
                for m in blocked_mix
            ],
            empty="no blocking seen",
        ),
        _onsets_table(links, onsets, f"Onsets of blocking in {s.cc}"),
    ]
    crumbs = [(s.cc, None)]
    return page(f"Country {s.cc}", body, static=links.static(), nav=_nav(links, crumbs))


def _swatch(outcome: str) -> Safe:
    return join(
        [
            el(
                "svg",
                {"width": 10, "height": 10, "aria-hidden": "true"},
                el("rect", {"width": 10, "height": 10, "fill": colour(outcome)}),
            ),
            " ",
            outcome,
        ]
    )


def domain_page(p: Pipeline, s: Scope, links: Links) -> Safe:
    assert s.domain is not None
    per_network = p.network_timelines(s)
    if not per_network:
        raise PageError(f"no measurements of {s.domain} here in this period")
    techniques = p.techniques(s)
    first = min((d[0] for _, d, _ in per_network if d), default=None)
    last = max((d[-1] for _, d, _ in per_network if d), default=None)
    fingerprints = p.evidence_names(s, "fingerprint")
    roots = p.evidence_names(s, "root")
    latest_blocked = p.search(dataclasses.replace(s, blocked=True), offset=0, limit=20)
    latest = p.search(s, offset=0, limit=10)
    where = f" in {s.cc}" if s.cc else " everywhere"
    charts = [
        timeline(f"{s.domain} on {cc} AS{asn}: measurements per day by outcome", days, counts)
        for (cc, asn), days, counts in per_network
    ]
    body = [
        el("h1", None, f"{s.domain}{where}"),
        el("p", None, f"Measured from {_day(first)} to {_day(last)} (UTC days)."),
        _filters_form(
            None if links.static_site else links.domain(s.domain),
            s,
            ["cc", "asn", "since", "until"],
        ),
        el("h2", None, "Per network"),
        charts,
        _table(
            "Techniques: first and last seen",
            ["country", "network", "outcome", "first seen", "last seen", "measurements"],
            [
                [
                    t["probe_cc"],
                    _asn(t["probe_asn"]),
                    _swatch(t["outcome"]),
                    _day(t["first_seen"]),
                    _day(t["last_seen"]),
                    f"{int(t['n']):,}",
                ]
                for t in techniques
            ],
            empty="never blocked",
        ),
        _table(
            "Blockpage fingerprints",
            ["country", "network", "fingerprint", "measurements", "first seen", "last seen"],
            [
                [
                    r["probe_cc"],
                    _asn(r["probe_asn"]),
                    el("code", None, r["name"]),
                    f"{r['n']:,}",
                    _day(r["first_seen"]),
                    _day(r["last_seen"]),
                ]
                for r in fingerprints
            ],
            empty="none matched",
        ),
        _table(
            "Interception roots",
            ["country", "network", "root", "measurements", "first seen", "last seen"],
            [
                [
                    r["probe_cc"],
                    _asn(r["probe_asn"]),
                    r["name"],
                    f"{r['n']:,}",
                    _day(r["first_seen"]),
                    _day(r["last_seen"]),
                ]
                for r in roots
            ],
            empty="none seen",
        ),
        _results_table(links, latest_blocked, "Latest blocked measurements"),
        _results_table(links, latest, "Latest measurements"),
    ]
    more = links.search(cc=s.cc, asn=s.asn, domain=s.domain, since=s.since, until=s.until)
    if more:
        body.append(
            el("p", None, el("a", {"href": more}, f"All measurements of {s.domain}{where}"))
        )
    crumbs = [(s.cc, links.country(s.cc)), (s.domain, None)] if s.cc else [(s.domain, None)]
    return page(f"{s.domain}{where}", body, static=links.static(), nav=_nav(links, crumbs))


def _results_table(links: Links, rows: Sequence[dict[str, Any]], caption: str) -> Safe:
    return _table(
        caption,
        [
            "time (UTC)",
            "country",
            "network",
            "test",
            "input",
            "outcome",
            "confidence",
            "measurement",
        ],
        [
            [
                _day(r["measurement_start_time"]),
                r["probe_cc"],
                _asn(r["probe_asn"]),
                r["test_name"],
                text(r["input"] or "", 120),
                _swatch(r["outcome"]),
                f"{r['confidence']:.2f}",
                el(
                    "a",
                    {"href": links.measurement(r["measurement_uid"])},
                    el("code", None, r["measurement_uid"]),
                ),
            ]
            for r in rows
        ],
        empty="no measurements",
    )


def search_page(
    p: Pipeline, s: Scope, page_no: int, links: Links
) -> tuple[Safe, list[dict[str, Any]]]:
    rows = p.search(s, offset=(page_no - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    f = {
        "cc": s.cc,
        "asn": s.asn,
        "domain": s.domain,
        "outcome": s.outcome,
        "test_name": s.test_name,
        "since": s.since,
        "until": s.until,
    }
    pager: list[Child] = []
    if page_no > 1:
        pager.append(
            el("a", {"href": links.search(**f, page=page_no - 1), "rel": "prev"}, "← previous")
        )
    pager.append(el("span", None, f" page {page_no} "))
    if more:
        pager.append(
            el("a", {"href": links.search(**f, page=page_no + 1), "rel": "next"}, "next →")
        )
    body = [
        el("h1", None, "Search measurements"),
        _filters_form(
            links.search(), s, ["cc", "asn", "domain", "outcome", "test_name", "since", "until"]
        ),
        el(
            "p",
            {"class": "export"},
            "Export these results: ",
            el("a", {"href": links.search(**f, format="csv")}, "CSV"),
            " · ",
            el("a", {"href": links.search(**f, format="json")}, "JSON"),
            " (at most 10,000 rows)",
        ),
        _results_table(
            links,
            rows,
            f"Results {(page_no - 1) * PAGE_SIZE + 1 if rows else 0}–{(page_no - 1) * PAGE_SIZE + len(rows)}",
        ),
        el("nav", {"aria-label": "pages", "class": "pager"}, pager),
    ]
    return page("Search", body, static=links.static(), nav=_nav(links, [("search", None)])), rows


# -- one measurement ----------------------------------------------------------------------------


@dataclasses.dataclass
class MeasurementData:
    row: dict[str, Any]
    observations: list[dict[str, Any]]
    logged: Logged | None
    verdict_evidence: dict[str, Any] | None
    # The measurement as submitted: the collector's copy, else the pipeline's input file's.
    body: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        """What the download holds: the measurement from the log (with ``x_evidence``), else
        the pipeline's verdict row and observations."""
        if self.logged is not None and self.logged.body is not None:
            return self.logged.document()
        if self.body is not None:
            return self.body
        return {"verdict": _jsonable(self.row), "observations": _jsonable(self.observations)}


def load_measurement(
    p: Pipeline, c: CollectorData | None, uid: str, inputs: InputFiles | None = None
) -> MeasurementData:
    row = p.measurement(uid)
    logged = c.logged(uid, row) if c is not None else None
    if row is None and logged is None:
        raise PageError(f"no measurement {uid}")
    if row is None:
        assert logged is not None
        lb = logged.body or {}
        row = {
            "measurement_uid": uid,
            "test_name": lb.get("test_name"),
            "input": lb.get("input"),
            "probe_cc": lb.get("probe_cc"),
            "probe_asn": lb.get("probe_asn"),
            "measurement_start_time": lb.get("measurement_start_time"),
            "outcome": "unknown",
            "technique": "",
            "blocked": False,
            "confidence": 0.0,
            "fingerprint": None,
            "root": None,
            "domain": "",
            "source": "collector",
            "day": None,
        }
    obs = p.observations(uid, row.get("day"))
    evidence: dict[str, Any] | None = None
    body = logged.body if logged is not None else None
    if body is None and inputs is not None:
        body = inputs.find(uid, row.get("source"))
    if body is not None:
        try:
            v = analyze(body)
            evidence = v.evidence
            if row.get("source") == "collector":
                row.update(outcome=v.outcome_base, blocked=v.blocked, confidence=v.confidence)
        except Exception as exc:  # a hostile body must give a page, not a crash
            evidence = {"error": f"verdict failed: {type(exc).__name__}"}
    return MeasurementData(row, obs, logged, evidence, body)


def _obj(v: Any) -> dict[str, Any]:
    """``v`` if it is a JSON object, else an empty one (a measurement's shape is not trusted)."""
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dt.datetime | dt.date):
        return _day(v)
    return v


def sentence(row: dict[str, Any]) -> str:
    outcome = str(row.get("outcome") or "unknown")
    words = _OUTCOME_WORDS.get(outcome, outcome)
    asn = row.get("probe_asn")
    where = f"AS{asn}" if isinstance(asn, int) else str(asn)
    s = (
        f"On {_day(row.get('measurement_start_time'))} UTC, {row.get('test_name')} measured "
        f"{row.get('input') or row.get('domain') or '(no input)'} from {where} in {row.get('probe_cc')}: "
        f"{words} ({outcome}), confidence {float(row.get('confidence') or 0):.2f}"
    )
    if row.get("root"):
        s += f", under the interception root “{row['root']}”"
    if row.get("fingerprint"):
        s += f", blockpage fingerprint “{row['fingerprint']}”"
    return s + "."


def _dns_section(m: MeasurementData) -> Safe:
    tk = m.body.get("test_keys") if m.body is not None else None
    if isinstance(tk, dict):
        probe: list[str] = []
        for q in _list(tk.get("queries"))[:50]:
            if not isinstance(q, dict):
                continue
            for a in _list(q.get("answers"))[:50]:
                if isinstance(a, dict):
                    probe.append(str(a.get("ipv4") or a.get("ipv6") or a.get("hostname") or ""))
            if q.get("failure"):
                probe.append(f"failure: {q.get('failure')}")
        dns = _obj(_obj(tk.get("control")).get("dns"))
        ctl = [str(a) for a in _list(dns.get("addrs"))[:100]]
        if dns.get("failure"):
            ctl.append(f"failure: {dns.get('failure')}")
        both = sorted(set(probe) & set(ctl))
        return join(
            [
                el("h2", None, "DNS: the probe's answers against the control's"),
                _table(
                    "DNS answers",
                    ["probe saw", "control saw"],
                    [
                        [
                            el(
                                "ul",
                                None,
                                [
                                    el("li", {"class": "same" if a in both else "differs"}, a)
                                    for a in probe
                                ],
                            ),
                            el(
                                "ul",
                                None,
                                [
                                    el("li", {"class": "same" if a in both else "differs"}, a)
                                    for a in ctl
                                ],
                            ),
                        ]
                    ],
                ),
                el(
                    "p",
                    None,
                    f"{len(both)} answer(s) in common." if both else "No answer in common.",
                ),
            ]
        )
    dns_rows = [o for o in m.observations if o["obs_type"] == "dns"]
    return join(
        [
            el("h2", None, "DNS"),
            _table(
                "DNS answers (the control's are in the raw measurement, from the collector)",
                ["hostname", "resolver", "type", "answer", "failure", "t (s)"],
                [
                    [
                        o["hostname"],
                        o["resolver"],
                        o["answer_type"] or o["query_type"],
                        o["answer"],
                        o["failure"],
                        "" if o["t"] is None else f"{o['t']:.3f}",
                    ]
                    for o in dns_rows
                ],
            ),
        ]
    )


def _steps_section(m: MeasurementData) -> Safe:
    rows = [o for o in m.observations if o["obs_type"] != "dns"]
    return join(
        [
            el("h2", None, "TCP, TLS and HTTP steps"),
            _table(
                "Steps, in the order they happened",
                ["step", "endpoint", "detail", "result", "t (s)"],
                [
                    [
                        o["obs_type"].upper(),
                        o["url"]
                        or (f"{o['ip']}:{o['port']}" if o["ip"] else "")
                        or o["server_name"],
                        _step_detail(o),
                        o["failure"] or "success",
                        "" if o["t"] is None else f"{o['t']:.3f}",
                    ]
                    for o in rows
                ],
            ),
        ]
    )


def _step_detail(o: dict[str, Any]) -> str:
    if o["obs_type"] == "tls":
        return " ".join(
            x
            for x in (
                f"SNI {o['server_name']}" if o["server_name"] else "",
                o["tls_version"] or "",
                f"leaf {o['cert_sha256'][:16]}…" if o["cert_sha256"] else "",
            )
            if x
        )
    if o["obs_type"] == "http":
        size = f"{o['body_length']:,} bytes" if o["body_length"] is not None else ""
        return " ".join(
            x
            for x in (
                f"status {o['status_code']}" if o["status_code"] else "",
                size,
                "(truncated)" if o["body_truncated"] else "",
            )
            if x
        )
    return ""


def _interception_section(ev: dict[str, Any]) -> Safe:
    found = ev.get("interception")
    if not isinstance(found, dict):
        return Safe("")
    certs = [c for c in (found.get("certificates") or []) if isinstance(c, dict)]
    real = _obj(found.get("real"))
    copied = _obj(found.get("copied"))
    leaf = certs[0] if certs else {}

    def mark(flag: Any, yes: str, no: str) -> Safe:
        if flag is True:
            return el("strong", {"class": "copied"}, yes)
        if flag is False:
            return el("span", None, no)
        return el("span", None, "–")

    rows: list[list[Child]] = [
        [
            "subject",
            leaf.get("subject"),
            real.get("subject") or "–",
            mark(copied.get("subject"), "copied", "differs"),
        ],
        [
            "SAN",
            ", ".join(map(str, leaf.get("san") or [])),
            ", ".join(map(str, real.get("san") or [])) or "–",
            mark(copied.get("san"), "copied", "differs"),
        ],
        ["issuer", leaf.get("issuer"), real.get("issuer") or "–", ""],
        [
            "serial",
            leaf.get("serial"),
            real.get("serial") or "–",
            mark(copied.get("serial_prefix"), "kept above the low 33 bits", "not kept"),
        ],
        [
            "not before",
            leaf.get("not_before"),
            real.get("not_before") or "–",
            f"moved {copied.get('validity_shift_hours')} h earlier"
            if copied.get("validity_shift_hours")
            else "",
        ],
        [
            "key",
            leaf.get("key"),
            real.get("key") or "–",
            mark(copied.get("key_differs"), "not the site's key", "the site's own key"),
        ],
        [
            "extensions dropped",
            "",
            "",
            ", ".join(map(str, copied.get("extensions_dropped") or [])) or "–",
        ],
    ]
    chain = [el("li", None, c.get("subject") or c.get("error") or "?") for c in certs]
    known = _obj(found.get("known_root"))
    reasons = [el("li", None, r) for r in (found.get("kz2019_reasons") or [])[:10]]
    return join(
        [
            el("h2", None, "Interception: the presented chain beside the real one"),
            _table(
                "Leaf certificate: presented to the probe vs the site's real one (seen by the control)",
                ["field", "presented (forged)", "real", "copied?"],
                rows,
            ),
            el("h3", None, "Presented chain (leaf first)"),
            el("ol", {"class": "chain"}, chain),
            el("p", None, "Known interception root: ", _known_root(known)),
            el("ul", None, reasons) if reasons else None,
            el("p", None, found.get("note")) if found.get("note") else None,
        ]
    )


def _response_bodies(m: MeasurementData) -> list[tuple[str, str, str]]:
    tk = m.body.get("test_keys") if m.body is not None else None
    out: list[tuple[str, str, str]] = []
    for r in _list(_obj(tk).get("requests"))[:5]:
        if not isinstance(r, dict):
            continue
        req, resp = _obj(r.get("request")), _obj(r.get("response"))
        b = resp.get("body")
        if isinstance(b, dict):  # OONI's {"format": "base64", "data": …}
            b = f"(binary body, {len(str(b.get('data', '')))} base64 characters)"
        headers = _obj(resp.get("headers"))
        head = "\n".join(f"{k}: {v}" for k, v in list(headers.items())[:50])
        out.append((str(req.get("url", "")), head, "" if b is None else str(b)))
    return out


def _known_root(known: dict[str, Any] | None) -> Child:
    if not known:
        return "none matched"
    root = _obj(known.get("root"))
    how = (
        "proven (the root's own key signed the chain)"
        if known.get("proven")
        else f"matched by {known.get('match')}"
    )
    return join(
        [
            el("strong", None, str(root.get("name") or "?")),
            f" — {root.get('operator') or ''}; {how}",
            f"; {root.get('years')}" if root.get("years") else "",
        ]
    )


def _blockpage_section(ev: dict[str, Any], m: MeasurementData) -> Safe:
    fp = ev.get("fingerprint")
    if not isinstance(fp, dict):
        return Safe("")
    bodies = [
        join(
            [
                el("h3", None, "Response to ", el("code", None, url)),
                el(
                    "p",
                    None,
                    "Headers and body as received, shown as text; the page is never rendered.",
                ),
                el("pre", {"class": "raw"}, block(head, 8000)),
                el("pre", {"class": "raw"}, block(b, 8000)),
            ]
        )
        for url, head, b in _response_bodies(m)
    ]
    return join(
        [
            el("h2", None, "Blockpage"),
            el(
                "p",
                None,
                "The page itself is never rendered: only the fingerprint and the text that matched it.",
            ),
            _table(
                "Fingerprint match",
                ["field", "value"],
                [
                    [k, el("code", None, str(fp.get(k)))]
                    for k in ("name", "source", "scope", "location", "pattern_type", "pattern")
                ],
            ),
            el("h3", None, "Matching text"),
            el("pre", {"class": "raw"}, block(fp.get("excerpt", ""), 2000)),
            bodies,
        ]
    )


def _log_section(m: MeasurementData, links: Links) -> Safe:
    lg = m.logged
    if lg is None:
        return join(
            [
                el("h2", None, "Evidence log"),
                el(
                    "p",
                    None,
                    "Not found in a collector's log (start the explorer with --collector-data or --database to look).",
                ),
            ]
        )
    items: list[Child] = []
    head = lg.head
    if lg.verify is not None:
        status = "verifies" if lg.verify.ok else "DOES NOT verify"
        items.append(
            el(
                "p",
                {"class": "proof-ok" if lg.verify.ok else "proof-bad"},
                el("strong", None, f"Inclusion proof {status}"),
                f": {lg.verify.reason}",
            )
        )
    if lg.error:
        items.append(el("p", {"class": "proof-bad"}, lg.error))
    if lg.removed_reason or lg.body is None:
        items.append(
            el(
                "p",
                None,
                f"Payload removed: {lg.removed_reason or 'no reason given'} (the leaf stays in the log).",
            )
        )
    rows: list[list[Child]] = [
        ["collector id", el("code", None, lg.uid)],
        ["leaf index", f"{lg.leaf_index:,}"],
        ["received", lg.received_at],
    ]
    if head is not None:
        rows += [
            ["tree size", f"{head.tree_size:,}"],
            ["signed tree head root", el("code", None, base64.b64encode(head.root_hash).decode())],
            [
                "signed at (UTC)",
                dt.datetime.fromtimestamp(head.timestamp_ms / 1000, dt.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S"
                ),
            ],
            ["log id", el("code", None, head.log_id.hex())],
            ["signature", el("code", {"class": "wrap"}, base64.b64encode(head.signature).decode())],
        ]
    items.append(_table("Its place in the log", ["", ""], rows))
    if head is not None and lg.log_key_pem is not None:
        uid = m.row["measurement_uid"]
        fname = f"{uid}.json"
        cmd = f"netvigil verify {shlex.quote(fname)} --log-key {shlex.quote(head.log_id.hex()[:16] + '.pem')}"
        items.append(
            el(
                "p",
                None,
                "Check it yourself: download ",
                el(
                    "a",
                    {"href": links.measurement_json(uid), "download": fname},
                    "the measurement with its proof",
                ),
                " and ",
                el(
                    "a",
                    {
                        "href": links.log_key(head.log_id.hex()),
                        "download": head.log_id.hex()[:16] + ".pem",
                    },
                    "the log's public key",
                ),
                ", then run:",
            )
        )
        items.append(el("pre", {"class": "command"}, el("code", None, cmd)))
    return join([el("h2", None, "Evidence log"), items])


def measurement_page(m: MeasurementData, links: Links) -> Safe:
    row = m.row
    uid = str(row["measurement_uid"])
    doc = m.document()
    raw = json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True, default=str)
    cut = len(raw) > RAW_JSON_LIMIT  # block() cuts there and says how much is left
    asn = row.get("probe_asn")
    facts: list[list[Child]] = [
        ["test", row.get("test_name")],
        ["input", row.get("input")],
        ["country", row.get("probe_cc")],
        ["network", f"AS{asn}" if isinstance(asn, int) else asn],
        ["start time (UTC)", _day(row.get("measurement_start_time"))],
        ["outcome", _swatch(str(row.get("outcome")))],
        ["technique", row.get("technique")],
        ["blocked", "yes" if row.get("blocked") else "no"],
        ["confidence", f"{float(row.get('confidence') or 0):.2f}"],
        ["OONI blocking", row.get("blocking")],
        ["fingerprint", row.get("fingerprint")],
        ["interception root", row.get("root")],
        ["source file", row.get("source")],
    ]
    ev = m.verdict_evidence or {}
    cc = row.get("probe_cc")
    domain = row.get("domain")
    body = [
        el("h1", None, "Measurement ", el("code", None, uid)),
        el("p", {"class": "verdict"}, sentence(row)),
        _table("The measurement", ["", ""], facts),
        _dns_section(m),
        _steps_section(m),
        _interception_section(ev),
        _blockpage_section(ev, m),
        _log_section(m, links),
        el("h2", None, "The verdict's evidence"),
        el(
            "pre",
            {"class": "raw"},
            block(
                json.dumps(ev, indent=1, ensure_ascii=False, sort_keys=True, default=str),
                RAW_JSON_LIMIT,
            ),
        )
        if ev
        else el("p", None, "The detailed evidence needs the raw measurement (from the collector)."),
        el("h2", None, "Raw JSON"),
        el(
            "p",
            None,
            el("a", {"href": links.measurement_json(uid), "download": f"{uid}.json"}, "Download"),
            " (cut at 256 KiB below; the download is whole)" if cut else "",
        ),
        el("pre", {"class": "raw"}, block(raw, RAW_JSON_LIMIT)),
    ]
    crumbs: list[tuple[str, str | None]] = []
    if isinstance(cc, str) and cc:
        crumbs.append((cc, links.country(cc)))
        if isinstance(domain, str) and domain:
            crumbs.append((domain, links.domain(domain, cc)))
    crumbs.append((uid, None))
    return page(f"Measurement {uid}", body, static=links.static(), nav=_nav(links, crumbs))
