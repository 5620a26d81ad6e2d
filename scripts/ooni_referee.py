"""OONI's own pipeline as a referee for netvigil's measurements (a manual tool, not a test).

Run it with the Python of a scratch venv holding a checkout of ooni/data (``oonipipeline``) and
``chdb`` (ClickHouse in-process); ``scripts/ooni-referee.sh`` builds that venv and calls this:

    python scripts/ooni_referee.py DIR [DIR ...]

Each DIR holds ``measurements.jsonl`` (what ``netvigil measure -o`` wrote) and ``truth.jsonl``
(``netvigil testbed truth --json`` of the same profile). For each DIR this builds OONI's
observations (``write_observations_to_db``), runs OONI's rule-based web analysis
(``get_analysis_web_fuzzy_logic``) on a fresh in-process ClickHouse, turns the analysis row into
one verdict per URL and prints it next to the truth.

From OONI's analysis row to a verdict (OONI's v5 analysis has no HTTP layer): each layer's
``top_<layer>_rule_id`` names the rule that scored it, and the rule's ``outcome_class`` in
``oonipipeline.analysis.rules`` says blocked / down / ok. The verdict is the first layer (DNS,
TCP, TLS) whose rule says blocked; else ``down`` if a layer says down; else ``ok`` when the DNS
layer says ok (OONI trusts nothing it cannot tie to the system resolver); else ``none`` (no
verdict). Scored like the issue's table: URLs the truth blocks at DNS, TCP or TLS must get that
layer, unblocked (``ok``) URLs must get ``ok``; HTTP-layer and honest ``down`` cases are listed
but not scored.

Two adaptations, both outside the measurements:
- the testbed's "Internet" is 198.18.0.0/15 (RFC 2544), which OONI counts as a bogon range; here
  it is taken out of oonidata's bogon list so testbed sites count as public addresses (bogon
  answers the censor injects, 10/8 or 127/8, stay bogons);
- no network: the IP-to-ASN database is replaced by one that knows no address (testbed
  addresses have no ASN anyway), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

LAYERS = ("dns", "tcp", "tls")
MAX_LINE = 64 * 1024 * 1024


def _patch_bogons() -> None:
    from oonidata import datautils

    testbed = ipaddress.ip_network("198.18.0.0/15")  # the testbed has no IPv6
    assert testbed in datautils.bogon_ipv4_ranges, "ooni/data's bogon list changed: check"
    datautils.bogon_ipv4_ranges[:] = [n for n in datautils.bogon_ipv4_ranges if n != testbed]


class NoNetinfo:
    """A NetinfoDB that knows no address or network (nothing downloaded)."""

    def lookup_ip(self, ts: Any, ip: str) -> None:
        return None

    def lookup_asn(self, ts: Any, asn: int) -> None:
        return None


def _sql_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dt.datetime):
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_sql_value(v) for v in value) + ")"  # only used after IN
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return "'" + text + "'"


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def chdb_connection(path: str) -> Any:
    """OONI's ClickhouseConnection, its few driver calls answered by an in-process chdb."""
    from chdb import session
    from oonipipeline.db.connections import ClickhouseConnection

    class ChdbConnection(ClickhouseConnection):  # type: ignore[misc]
        def __init__(self) -> None:
            from collections import defaultdict

            self.session = session.Session(path)
            self.row_buffer = defaultdict(list)
            self.write_batch_size = 1_000_000
            self.max_block_size = 1_000_000

        def _query(self, sql: str, params: dict[str, Any] | None) -> list[list[Any]]:
            if params:
                sql = sql % {k: _sql_value(v) for k, v in params.items()}
            res = self.session.query(sql, "JSONCompactEachRowWithNames")
            text = res.bytes().decode() if hasattr(res, "bytes") else str(res)
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        def execute(self, query_str: str, rows: Any = None, *args: Any, **kwargs: Any) -> Any:
            if rows:
                head, _, _ = query_str.partition(" VALUES")
                body = "\n".join(
                    json.dumps({k: _json_value(v) for k, v in row.items()}) for row in rows
                )
                self.session.query(
                    f"{head} SETTINGS input_format_skip_unknown_fields=1 FORMAT JSONEachRow\n{body}"
                )
                return None
            out = self._query(query_str, kwargs.get("params"))
            return out[1:] if out else []

        def _execute(self, *args: Any, **kwargs: Any) -> Any:
            return self.execute(*args, **kwargs)

        def execute_iter(self, sql: str, params: Any = None, with_column_types: bool = False):  # type: ignore[no-untyped-def]
            out = self._query(sql, params)
            names = out[0] if out else []
            if with_column_types:
                yield [(n, "") for n in names]
            yield from (tuple(row) for row in out[1:])

        def close(self) -> None:
            self.flush()

    return ChdbConnection()


def create_tables(db: Any) -> None:
    from oonipipeline.db.create_tables import make_create_queries

    for query, _name in make_create_queries():
        db.session.query(query)


def rule_classes() -> dict[str, dict[str, str]]:
    from oonipipeline.analysis.rules import LAYER_RULES

    return {
        layer: {r.rule_id: r.outcome_class.name.lower() for r in rules}
        for layer, rules in LAYER_RULES.items()
    }


def ooni_verdict(row: dict[str, Any], classes: dict[str, dict[str, str]]) -> tuple[str, str]:
    """(verdict, the rule per layer) from one analysis row; see the module's docstring."""
    per_layer = {
        layer: classes[layer].get(str(row.get(f"top_{layer}_rule_id")), "unknown")
        for layer in LAYERS
    }
    rules = " ".join(f"{layer}:{row.get(f'top_{layer}_rule_id')}" for layer in LAYERS)
    for layer in LAYERS:
        if per_layer[layer] == "blocked":
            return layer, rules
    if "down" in per_layer.values():
        return "down", rules
    if per_layer["dns"] == "ok":
        return "ok", rules
    return "none", rules


def expected(truth: str) -> str | None:
    """What OONI's analysis should say for a truth outcome; None: not scored."""
    layer = truth.split("/", 1)[0]
    if layer in LAYERS:
        return layer
    return "ok" if truth == "ok" else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line[:MAX_LINE]))
    return out


def referee(directory: Path, classes: dict[str, dict[str, str]], verbose: bool) -> tuple[int, int]:
    from oonidata.dataclient import load_measurement
    from oonipipeline.analysis.web_analysis import get_analysis_web_fuzzy_logic
    from oonipipeline.tasks.observations import write_observations_to_db

    truth = {row["url"]: row for row in read_jsonl(directory / "truth.jsonl")}
    measurements = read_jsonl(directory / "measurements.jsonl")
    by_uid: dict[str, str] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ooni-referee-") as tmp:
        db = chdb_connection(tmp)
        create_tables(db)
        netinfo = NoNetinfo()
        times = []
        for index, raw in enumerate(measurements):
            url = str(raw.get("input"))
            uid = raw.get("measurement_uid") or (
                "nv" + hashlib.sha256(f"{index}:{url}".encode()).hexdigest()[:30]
            )
            raw = {**raw, "measurement_uid": uid}
            by_uid[uid] = url
            times.append(dt.datetime.strptime(raw["measurement_start_time"], "%Y-%m-%d %H:%M:%S"))
            try:
                msmt = load_measurement(msmt=raw)
                write_observations_to_db(
                    db=db, netinfodb=netinfo, msmt=msmt, bucket_date="1984-01-01"
                )
            except Exception as exc:  # a measurement OONI cannot read is a result, not a crash
                errors[url] = f"{type(exc).__name__}: {exc}"[:200]
        db.flush()
        rows = list(
            get_analysis_web_fuzzy_logic(
                db=db,
                start_time=min(times) - dt.timedelta(days=1),
                end_time=max(times) + dt.timedelta(days=1),
                probe_cc=[],
            )
        )
    analysis = {by_uid.get(str(r["measurement_uid"]), ""): r for r in rows}
    right = scored = 0
    lines = []
    for url, t in truth.items():
        want = expected(t["outcome"])
        if url in errors:
            got, rules = "error", errors[url]
        elif url in analysis:
            got, rules = ooni_verdict(analysis[url], classes)
        else:
            got, rules = "missing", ""
        mark = " "
        if want is not None:
            scored += 1
            right += got == want
            mark = "✓" if got == want else "✗"
        lines.append(f"  {mark} {t['outcome']:18} {got:8} {url}  [{rules}]")
    print(f"{directory.name}: OONI right on {right}/{scored} (DNS/TCP/TLS-blocked or unblocked)")
    if verbose:
        print("\n".join(lines))
    return right, scored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--quiet", "-q", action="store_true", help="totals only")
    args = parser.parse_args(argv)
    _patch_bogons()
    classes = rule_classes()
    totals = Counter[str]()
    for directory in args.dirs:
        right, scored = referee(directory, classes, not args.quiet)
        totals["right"] += right
        totals["scored"] += scored
    print(f"all: OONI right on {totals['right']}/{totals['scored']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
