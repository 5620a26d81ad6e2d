"""Messaging-app verdicts against OONI on real measurements (``tests/data/conformance_im/``).

Every row is a real OONI measurement of ``telegram``, ``whatsapp``, ``signal`` or
``facebook_messenger`` (origins, commits and licences in ``index.csv`` and
``tests/data/README.md``). Three things are compared:

- the per-app keys (``telegram_tcp_blocking``, ``whatsapp_endpoints_status``, …) that netvigil
  recomputes from the events, against the keys the probe wrote: the keys are removed from the
  measurement before it is analysed, so the verdict cannot have read them;
- the probe's own anomaly (probe-cli's summary rule applied to the probe's keys) against
  netvigil's ``evidence["ooni_anomaly"]["probe"]``;
- OONI Explorer's published anomaly/failure (the Explorer fixture's own flags, or the scores
  ooni/backend's fastpath tests expect) against the verdict's ``blocking`` (True/False, None
  for a failed measurement).

``pytest -s tests/test_conformance_im.py`` prints the agreement table by test and generation.
"""

from __future__ import annotations

import copy
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from netvigil.verdict import analyze
from netvigil.verdict.im import OONI_KEYS
from netvigil.verdict.model import OONI_DIFFERS, pair_allowed

DATA = Path(__file__).parent / "data" / "conformance_im"
INDEX = list(csv.DictReader((DATA / "index.csv").open(encoding="utf-8")))
MEASUREMENTS = [
    json.loads(line)
    for line in (DATA / "messaging.jsonl").read_text("utf-8").splitlines()
    if line.strip()
]
ROWS = list(zip(INDEX, MEASUREMENTS, strict=True))


def _stripped(m: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(m)
    for key in OONI_KEYS[m["test_name"]]:
        out["test_keys"].pop(key, None)
    return out


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, list) and isinstance(theirs, list):
        return sorted(ours) == sorted(theirs)  # probe-cli appends in completion order
    return bool(ours == theirs)


def _probe_anomaly_from_keys(test: str, tk: dict[str, Any]) -> bool | None:
    """probe-cli's summary rule (MeasurementSummaryKeys) applied to the probe's own keys."""
    if test == "telegram":
        if "telegram_tcp_blocking" not in tk:
            return None
        return bool(
            tk.get("telegram_web_failure") is not None
            or tk.get("telegram_tcp_blocking") is True
            or tk.get("telegram_http_blocking") is True
        )
    if test == "whatsapp":
        return "blocked" in (
            tk.get("whatsapp_endpoints_status"),
            tk.get("registration_server_status"),
            tk.get("whatsapp_web_status"),
        )
    if test == "signal":
        return tk.get("signal_backend_status") == "blocked"
    return tk.get("facebook_dns_blocking") is True or tk.get("facebook_tcp_blocking") is True


def _recomputable(m: dict[str, Any]) -> bool:
    return "probe" not in analyze(m).evidence["ooni_key_sources"].values()


def _key_comparison(m: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(agreeing, compared, disagreements) over the keys recomputed from the events."""
    v = analyze(_stripped(m))
    tk = m["test_keys"]
    agree = compared = 0
    wrong: list[str] = []
    for key, value in v.evidence["ooni"].items():
        if v.evidence["ooni_key_sources"].get(key) != "events" or key not in tk:
            continue
        compared += 1
        if _same(value, tk[key]):
            agree += 1
        else:
            wrong.append(f"{key}: ours {value!r}, probe {tk[key]!r}")
    return agree, compared, wrong


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_keys_are_recomputed_not_read(index: int) -> None:
    _, m = ROWS[index]
    full = analyze(m)
    stripped = analyze(_stripped(m))
    sources = full.evidence["ooni_key_sources"]
    for key, value in full.evidence["ooni"].items():
        if sources[key] == "events":
            assert stripped.evidence["ooni"][key] == value, key
    if "probe" not in sources.values():
        assert stripped.outcome == full.outcome
        assert stripped.evidence["endpoints"] == full.evidence["endpoints"]


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_recomputed_keys_equal_the_probes(index: int) -> None:
    _, m = ROWS[index]
    agree, compared, wrong = _key_comparison(m)
    assert not wrong, wrong
    assert agree == compared


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_anomaly_agrees_with_ooni_explorer(index: int) -> None:
    row, m = ROWS[index]
    if not row["explorer_anomaly"]:
        pytest.skip("no published Explorer flag for this measurement")
    v = analyze(m)
    expected = None if row["explorer_failure"] == "true" else row["explorer_anomaly"] == "true"
    assert v.blocking is expected, (v.blocking, v.evidence["ooni_anomaly"])
    assert v.accessible is (None if expected is None else not expected)


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_probe_anomaly_agrees(index: int) -> None:
    _, m = ROWS[index]
    if not _recomputable(m):
        pytest.skip("the events lack what the keys rest on (legacy Facebook: no ASN)")
    theirs = _probe_anomaly_from_keys(m["test_name"], m["test_keys"])
    ours = analyze(_stripped(m)).evidence["ooni_anomaly"]["probe"]
    assert ours == theirs


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_one_judgement_per_measurement(index: int) -> None:
    _, m = ROWS[index]
    v = analyze(m)
    if pair_allowed(v.outcome, v.blocking, v.test_name):
        assert "ooni_differs" not in v.evidence
    else:
        differs = v.evidence["ooni_differs"]
        assert differs["reason"] == OONI_DIFFERS[differs["case"]]
    assert v.blocked == (v.outcome_base not in ("ok", "down", "unknown", "unsupported"))
    for e in v.evidence["endpoints"]:
        assert set(e) == {"app", "endpoint", "kind", "outcome", "failure"}
    json.dumps(v.to_dict())


def test_agreement_table() -> None:
    """The numbers for the closing note: printed with ``pytest -s``."""
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row, m in ROWS:
        v = analyze(m)
        cell = table[(m["test_name"], v.evidence["generation"])]
        cell["n"] += 1
        agree, compared, _ = _key_comparison(m)
        cell["keys_ok"] += agree
        cell["keys"] += compared
        theirs = _probe_anomaly_from_keys(m["test_name"], m["test_keys"])
        sources = v.evidence["ooni_key_sources"].values()
        cell["read"] += sum(1 for s in sources if s == "probe")
        if theirs is not None and _recomputable(m):
            cell["probe"] += 1
            cell["probe_ok"] += int(
                analyze(_stripped(m)).evidence["ooni_anomaly"]["probe"] == theirs
            )
        if row["explorer_anomaly"]:
            expected = (
                None if row["explorer_failure"] == "true" else row["explorer_anomaly"] == "true"
            )
            cell["explorer"] += 1
            cell["explorer_ok"] += int(v.blocking is expected)
    lines = [
        "",
        "messaging-app agreement with OONI (tests/data/conformance_im)",
        "keys: recomputed from the events = the probe's (read: no events to recompute from);",
        "probe: the probe's anomaly rule; explorer: Explorer's published anomaly/failure",
        f"{'test':<19} {'generation':<28} {'n':>2} {'keys':>7} {'read':>4} {'probe':>6} "
        f"{'explorer':>8}",
    ]
    total: dict[str, int] = defaultdict(int)
    for (test, gen), cell in sorted(table.items()):
        for k, n in cell.items():
            total[k] += n
        lines.append(
            f"{test:<19} {gen:<28} {cell['n']:>2} {cell['keys_ok']:>3}/{cell['keys']:<3} "
            f"{cell['read']:>4} "
            f"{cell['probe_ok']:>2}/{cell['probe']:<3} {cell['explorer_ok']:>3}/{cell['explorer']:<4}"
        )
    lines.append(
        f"{'all':<19} {'':<28} {total['n']:>2} {total['keys_ok']:>3}/{total['keys']:<3} "
        f"{total['read']:>4} "
        f"{total['probe_ok']:>2}/{total['probe']:<3} {total['explorer_ok']:>3}/{total['explorer']:<4}"
    )
    print("\n".join(lines))
    assert total["keys"] > 0 and total["explorer"] >= 13
    assert total["keys_ok"] == total["keys"]
    assert total["explorer_ok"] == total["explorer"]
    assert total["probe_ok"] == total["probe"]
