"""``netvigil explorer DIR --export OUT``: the same pages as a static site (no server).

Written: ``index.html`` (overview), ``country/CC.html``, ``domain/CC/DOMAIN.html`` and
``domain/all/DOMAIN.html`` for the most blocked domains, ``measurement/UID.html`` (and
``UID.json``, with its proof when the collector has it) for the latest measurements of each
domain page, ``log-key/LOGID.pem``, and ``static/``. Bounded: at most ``max_domains`` domain
pages and ``per_domain`` measurements each. The pages carry the same CSP as a ``<meta>``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .app import _CC, _DOMAIN, _UID, static_files
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
)

__all__ = ["export_site"]


# frame-ancestors is not honoured (and is reported) in a <meta> policy: the rest is.
_META_CSP = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'self\'; '
    "script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; object-src 'none'\">"
)


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str) and path.suffix == ".html":
        data = data.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + _META_CSP, 1)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def export_site(
    pipeline_dir: Path,
    out: Path,
    collector_dir: Path | None = None,
    inputs: list[Path] | None = None,
    *,
    database: str | None = None,
    max_domains: int = 200,
    per_domain: int = 20,
) -> dict[str, int]:
    input_files = InputFiles(inputs) if inputs else None
    collector = open_collector(collector_dir, database)
    pipeline = Pipeline(pipeline_dir)
    counts = {"pages": 0, "measurements": 0}
    try:
        _write(out / "index.html", overview_page(pipeline, Scope(), Links(True, 0)))
        counts["pages"] += 1
        # Names from the data become file names: only those the server would accept.
        for cc in filter(_CC.match, pipeline.countries_list()):
            try:
                _write(
                    out / "country" / f"{cc}.html",
                    country_page(pipeline, Scope(cc=cc), Links(True, 1)),
                )
                counts["pages"] += 1
            except PageError:
                continue
        uids: set[str] = set()
        pairs = pipeline.domain_pairs(max_domains)
        for cc, domain in pairs:
            if not (_CC.match(cc) and _DOMAIN.match(domain)):
                continue
            for where in (cc, None):
                path = out / "domain" / (where or "all") / f"{domain}.html"
                if path.exists():
                    continue
                s = Scope(cc=where, domain=domain)
                try:
                    _write(path, domain_page(pipeline, s, Links(True, 2)))
                except PageError:
                    continue
                counts["pages"] += 1
                for sel in (dataclasses.replace(s, blocked=True), s):
                    found = pipeline.search(sel, offset=0, limit=per_domain)
                    uids.update(r["measurement_uid"] for r in found)
        keys: set[bytes] = set()
        for uid in sorted(u for u in uids if _UID.match(u) and not u.startswith(".")):
            m = load_measurement(pipeline, collector, uid, input_files)
            _write(out / "measurement" / f"{uid}.html", measurement_page(m, Links(True, 1)))
            _write(
                out / "measurement" / f"{uid}.json",
                json.dumps(m.document(), ensure_ascii=False, sort_keys=True, default=str),
            )
            if m.logged is not None and m.logged.head is not None and m.logged.log_key_pem:
                keys.add(m.logged.head.log_id)
                _write(out / "log-key" / f"{m.logged.head.log_id.hex()}.pem", m.logged.log_key_pem)
            counts["measurements"] += 1
        for name, data in static_files().items():
            _write(out / "static" / name, data)
    finally:
        pipeline.close()
    return counts
