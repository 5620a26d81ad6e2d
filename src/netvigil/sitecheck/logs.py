"""Offline mode: verdicts and aggregates over a site's access logs.

Input is JSON lines or CSV, one request a line, as HAProxy, nginx with a JA4 module or a CDN
writes them: a ClientHello (hex or base64), or a JA4 / JA4_r string, and the User-Agent;
optionally a time and the client address. Field names are matched case-insensitively against
common spellings (``FIELD_NAMES``).

Privacy: the client address is reduced at once to its ASN (from a MaxMind-format database the
operator gives) or, without one, to a truncated prefix (IPv4 /24, IPv6 /48), and only that is
kept; nothing else about the client leaves this module except the
fingerprints and the verdict.

Bounds: lines longer than ``MAX_LINE`` are skipped (counted as errors); a line that cannot be
read becomes an error row, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime
import io
import ipaddress
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO, Any

from netvigil.sitecheck.clienthello import ClientHello, parse_client_hello
from netvigil.sitecheck.ja4check import judge_ja4
from netvigil.sitecheck.mmdb import MMDBError, MMDBReader, asn_label
from netvigil.sitecheck.reference import ReferenceDB
from netvigil.sitecheck.verdict import LIKELY_INTERCEPTED, Verdict, judge

MAX_LINE = 1 << 18
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "client_hello": (
        "client_hello",
        "client_hello_hex",
        "client_hello_b64",
        "clienthello",
        "tls_client_hello",
        "ssl_client_hello",
        "client_hello_record_hex",
    ),
    "ja4": ("ja4", "ja4_r", "ja4r", "tls_ja4", "ssl_ja4", "ja4_fingerprint"),
    "user_agent": ("user_agent", "http_user_agent", "useragent", "ua", "user-agent"),
    "time": ("time", "timestamp", "@timestamp", "time_iso8601", "ts", "datetime", "date"),
    "client": ("client_ip", "remote_addr", "src_ip", "client", "ip", "clientip", "client_addr"),
}


def decode_client_hello(text: str) -> bytes | None:
    """Hex (with or without separators) or base64; None if neither."""
    compact = "".join(text.split()).replace(":", "")
    try:
        return bytes.fromhex(compact)
    except ValueError:
        pass
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def truncate_address(address: str, v4_bits: int = 24, v6_bits: int = 48) -> str | None:
    """The network prefix of an address (``198.51.100.0/24``); None if it is no address."""
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    bits = v4_bits if parsed.version == 4 else v6_bits
    return str(ipaddress.ip_network(f"{parsed}/{bits}", strict=False))


def _hour(value: str) -> str | None:
    """``YYYY-MM-DDTHH`` (UTC) of an ISO 8601 time or a Unix timestamp."""
    value = value.strip()
    if not value:
        return None
    try:
        stamp = float(value)
        moment = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    except (ValueError, OverflowError, OSError):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is not None:
            moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H")


@dataclass(slots=True)
class LogRow:
    line: int
    hour: str | None
    prefix: str | None
    verdict: Verdict | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"line": self.line, "hour": self.hour, "prefix": self.prefix}
        if self.verdict is not None:
            row.update(self.verdict.to_json())
        if self.error is not None:
            row["verdict"] = "error"
            row["error"] = self.error
        return row


def _pick(record: dict[str, str], name: str) -> str:
    for key in FIELD_NAMES[name]:
        value = record.get(key)
        if value:
            return value
    return ""


def _bounded_lines(stream: IO[str]) -> Iterator[str | None]:
    """The stream's lines, each read with a bound; None for a line over ``MAX_LINE``, whose
    rest is skipped without ever holding it whole."""
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            while line and not line.endswith("\n"):
                line = stream.readline(MAX_LINE + 1)
            yield None
            continue
        yield line


def _records(stream: IO[str]) -> Iterator[tuple[int, dict[str, str] | None]]:
    """(line number, record with lower-cased keys) per line; None for an unreadable one.

    Streamed, never materialised: a site's log may be larger than memory."""
    lines = _bounded_lines(stream)
    first = next(lines, "")
    if first is not None and first.lstrip().startswith("{"):
        for number, line in enumerate(itertools.chain([first], lines), start=1):
            if line is None:
                yield number, None
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                yield number, None
                continue
            if not isinstance(value, dict):
                yield number, None
                continue
            yield number, {str(k).lower(): "" if v is None else str(v) for k, v in value.items()}
        return
    header = [name.strip().lower() for name in next(csv.reader(io.StringIO(first or "")), [])]
    for number, line in enumerate(lines, start=2):
        if line is None:
            yield number, None
            continue
        try:
            cells = next(csv.reader([line]), [])
        except csv.Error:
            yield number, None
            continue
        if not cells:
            continue
        yield number, dict(zip(header, cells, strict=False))


def judge_record(record: dict[str, str], db: ReferenceDB) -> tuple[Verdict | None, str | None]:
    """The verdict for one log record, or why there is none."""
    user_agent = _pick(record, "user_agent")
    hello_text = _pick(record, "client_hello")
    if hello_text:
        data = decode_client_hello(hello_text)
        if data is None:
            return None, "client hello is neither hex nor base64"
        hello = parse_client_hello(data)
        if not isinstance(hello, ClientHello):
            return None, f"client hello: {hello.reason}"
        return judge(hello, user_agent, db), None
    ja4_text = _pick(record, "ja4")
    if ja4_text:
        return judge_ja4(ja4_text, user_agent, db)
    return None, "no client hello or JA4 field"


@dataclass(slots=True)
class Bucket:
    visits: int = 0
    intercepted: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    products: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Report:
    """Counts per verdict, per (prefix, hour) and the onsets flagged among them."""

    rows: int = 0
    errors: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)

    def add(self, row: LogRow) -> None:
        self.rows += 1
        if row.verdict is None:
            self.errors += 1
            return
        verdict = row.verdict
        self.verdicts[verdict.verdict] += 1
        for reason in verdict.reasons:
            self.rules[reason.rule] += 1
        key = (row.prefix or "unknown", row.hour or "unknown")
        bucket = self.buckets.setdefault(key, Bucket())
        bucket.visits += 1
        bucket.verdicts[verdict.verdict] += 1
        if verdict.verdict == LIKELY_INTERCEPTED:
            bucket.intercepted += 1
            if verdict.best_match is not None:
                bucket.products[verdict.best_match.name] += 1

    def onsets(self) -> list[dict[str, Any]]:
        """Hours whose intercepted share jumps, by the pipeline's onset rule (per hour)."""
        from netvigil.pipeline.aggregate import (
            DEFAULT_BASELINE_DAYS,
            DEFAULT_JUMP,
            DEFAULT_MAX_P,
            DEFAULT_MIN_BASELINE_DAYS,
            DEFAULT_MIN_MEASUREMENTS,
            onset_p_value,
        )

        found: list[dict[str, Any]] = []
        by_prefix: dict[str, dict[datetime.datetime, Bucket]] = {}
        for (prefix, hour), bucket in self.buckets.items():
            try:
                moment = datetime.datetime.strptime(hour, "%Y-%m-%dT%H")
            except ValueError:
                continue
            by_prefix.setdefault(prefix, {})[moment] = bucket
        jump = Fraction(repr(DEFAULT_JUMP))
        p_limit = Fraction(repr(DEFAULT_MAX_P))
        for prefix, hours in sorted(by_prefix.items()):
            for moment, bucket in sorted(hours.items()):
                if bucket.visits < DEFAULT_MIN_MEASUREMENTS:
                    continue
                baseline = [
                    hours[m]
                    for step in range(1, DEFAULT_BASELINE_DAYS + 1)
                    if (m := moment - datetime.timedelta(hours=step)) in hours
                ]
                if len(baseline) < DEFAULT_MIN_BASELINE_DAYS:
                    continue
                base_visits = sum(b.visits for b in baseline)
                base_intercepted = sum(b.intercepted for b in baseline)
                share = Fraction(bucket.intercepted, bucket.visits)
                if share < Fraction(base_intercepted, base_visits) + jump:
                    continue
                p_value = onset_p_value(
                    bucket.intercepted, bucket.visits, base_intercepted, base_visits
                )
                if p_value <= p_limit:
                    found.append(
                        {
                            "prefix": prefix,
                            "hour": moment.strftime("%Y-%m-%dT%H"),
                            "visits": bucket.visits,
                            "intercepted": bucket.intercepted,
                            "baseline_share": float(Fraction(base_intercepted, base_visits)),
                            "p_value": float(p_value),
                        }
                    )
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "errors": self.errors,
            "verdicts": dict(self.verdicts),
            "rules": dict(self.rules.most_common()),
            "networks": [
                {
                    "prefix": prefix,
                    "hour": hour,
                    "visits": bucket.visits,
                    "intercepted": bucket.intercepted,
                    "intercepted_share": round(bucket.intercepted / bucket.visits, 4),
                    "verdicts": dict(bucket.verdicts),
                    "products": dict(bucket.products.most_common(3)),
                }
                for (prefix, hour), bucket in sorted(self.buckets.items())
            ],
            "onsets": self.onsets(),
        }


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_prometheus(report: Report) -> str:
    """The report in Prometheus' text exposition format (counts; latest hour per prefix)."""
    lines = [
        "# HELP netvigil_sitecheck_visits_total Visits judged, by verdict.",
        "# TYPE netvigil_sitecheck_visits_total counter",
    ]
    for verdict, count in sorted(report.verdicts.items()):
        lines.append(f'netvigil_sitecheck_visits_total{{verdict="{_label(verdict)}"}} {count}')
    lines += [
        "# HELP netvigil_sitecheck_rule_total Reasons given for likely-intercepted visits.",
        "# TYPE netvigil_sitecheck_rule_total counter",
    ]
    for rule, count in sorted(report.rules.items()):
        lines.append(f'netvigil_sitecheck_rule_total{{rule="{_label(rule)}"}} {count}')
    latest: dict[str, tuple[str, Bucket]] = {}
    for (prefix, hour), bucket in report.buckets.items():
        if prefix not in latest or hour > latest[prefix][0]:
            latest[prefix] = (hour, bucket)
    lines += [
        "# HELP netvigil_sitecheck_intercepted_share Share of likely-intercepted visits per "
        "client network (truncated prefix) in its latest hour.",
        "# TYPE netvigil_sitecheck_intercepted_share gauge",
    ]
    for prefix, (hour, bucket) in sorted(latest.items()):
        share = bucket.intercepted / bucket.visits
        lines.append(
            f'netvigil_sitecheck_intercepted_share{{prefix="{_label(prefix)}",'
            f'hour="{_label(hour)}"}} {share:.4f}'
        )
    lines += [
        "# HELP netvigil_sitecheck_onsets Hours flagged by the onset rule.",
        "# TYPE netvigil_sitecheck_onsets gauge",
        f"netvigil_sitecheck_onsets {len(report.onsets())}",
    ]
    return "\n".join(lines) + "\n"


def client_network(address: str, asn_db: MMDBReader | None = None) -> str | None:
    """The client's network as aggregates keep it: ``AS64500 Name`` when the operator's
    MaxMind-format ASN database knows the address, else its truncated prefix. The address
    itself is not kept."""
    if asn_db is not None:
        try:
            label = asn_label(asn_db.get(address))
        except MMDBError:
            label = None
        if label is not None:
            return label
    return truncate_address(address)


def analyse(
    stream: IO[str],
    db: ReferenceDB | None = None,
    max_rows: int | None = None,
    asn_db: MMDBReader | None = None,
) -> Iterator[LogRow]:
    """One ``LogRow`` per log line (up to ``max_rows``)."""
    db = db if db is not None else ReferenceDB.shipped()
    for count, (number, record) in enumerate(_records(stream)):
        if max_rows is not None and count >= max_rows:
            return
        if record is None:
            yield LogRow(number, None, None, None, "unreadable line")
            continue
        hour = _hour(_pick(record, "time"))
        prefix = client_network(_pick(record, "client"), asn_db)
        verdict, error = judge_record(record, db)
        yield LogRow(number, hour, prefix, verdict, error)
