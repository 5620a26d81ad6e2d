"""Offline mode: JSON lines / CSV logs with ClientHellos or JA4s, aggregates and the CLI."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest

from netvigil.cli import main
from netvigil.sitecheck.clienthello import ClientHello, parse_client_hello
from netvigil.sitecheck.fingerprint import ja4, ja4_r
from netvigil.sitecheck.ja4check import judge_ja4
from netvigil.sitecheck.logs import (
    MAX_LINE,
    Report,
    analyse,
    decode_client_hello,
    truncate_address,
)
from netvigil.sitecheck.reference import labelled_records

RECORDS = {str(r["label"]): r for r in labelled_records()}
CHROME_156 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
FIREFOX_153 = "Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0"


def _hex(label: str) -> str:
    return str(RECORDS[label]["client_hello_record_hex"])


def _hello(label: str) -> ClientHello:
    parsed = parse_client_hello(bytes.fromhex(_hex(label)))
    assert isinstance(parsed, ClientHello)
    return parsed


def test_addresses_are_truncated() -> None:
    assert truncate_address("198.51.100.77") == "198.51.100.0/24"
    assert truncate_address("2001:db8:1:2:3::4") == "2001:db8:1::/48"
    assert truncate_address("[2001:db8::1]") == "2001:db8::/48"
    assert truncate_address("not an address") is None


def test_hex_and_base64_both_decode() -> None:
    data = bytes.fromhex(_hex("live/curl"))
    assert decode_client_hello(data.hex()) == data
    assert decode_client_hello(base64.b64encode(data).decode()) == data
    assert decode_client_hello("%%%") is None


def test_ja4_r_and_ja4_judgements() -> None:
    chromium, python = _hello("live/chromium"), _hello("live/python-ssl")
    for text in (ja4(chromium), ja4_r(chromium)):
        verdict, error = judge_ja4(text, CHROME_156)
        assert error is None and verdict is not None and verdict.verdict == "consistent"
    verdict, _ = judge_ja4(ja4_r(python), CHROME_156)
    assert verdict is not None and verdict.verdict == "likely-intercepted"
    assert {"cipher-never-sent", "extension-never-sent"} <= {r.rule for r in verdict.reasons}
    verdict, _ = judge_ja4(ja4(python), CHROME_156)
    assert verdict is not None and verdict.verdict == "likely-intercepted"
    assert verdict.best_match is not None and "Python" in verdict.best_match.name
    # A TLS 1.2-only JA4 behind a current Firefox contradicts a stack fact by itself.
    verdict, _ = judge_ja4("t12d1516h2_8daaf6152771_e5627efa2ab1", FIREFOX_153)
    assert verdict is not None and [r.rule for r in verdict.reasons] == ["version-too-low"]
    # An unseen hashed JA4 with a plausible version is no evidence.
    verdict, _ = judge_ja4("t13d1516h2_000000000001_e5627efa2ab1", CHROME_156)
    assert verdict is not None and verdict.verdict == "unknown"
    for garbage in ("", "t13d1516h2", "x13d1516h2_a_b", "t13d1516h2_zz,01_0000", "_" * 9000):
        assert judge_ja4(garbage, CHROME_156)[0] is None


def _log_lines() -> list[dict[str, str]]:
    lines: list[dict[str, str]] = []
    # A network whose visitors turn from their browsers to an OpenSSL middlebox at 14:00.
    for hour in range(8, 15):
        for visit in range(4):
            intercepted = hour == 14
            lines.append(
                {
                    "time": f"2019-07-19T{hour:02d}:{visit * 10:02d}:00Z",
                    "client_ip": f"198.51.100.{visit + 1}",
                    "user_agent": CHROME_156,
                    "client_hello": _hex("live/python-ssl" if intercepted else "live/chromium"),
                }
            )
    lines.append(
        {
            "time": "2019-07-19T14:00:00Z",
            "client_ip": "203.0.113.9",
            "user_agent": FIREFOX_153,
            "ja4": ja4(_hello("live/firefox-esr")),
        }
    )
    lines.append({"time": "bad", "client_ip": "x", "user_agent": "curl/8", "client_hello": "zz"})
    return lines


def test_jsonl_report_flags_the_onset_and_keeps_only_prefixes() -> None:
    lines = [json.dumps(line) + "\n" for line in _log_lines()]
    lines.insert(5, '{"user_agent": "' + "x" * (MAX_LINE + 100) + '"}\n')  # over the bound
    text = "".join(lines) + "{broken\n"
    report = Report()
    rows = list(analyse(io.StringIO(text)))
    for row in rows:
        report.add(row)
    summary = report.to_json()
    assert summary["rows"] == 32 and summary["errors"] == 3
    assert summary["verdicts"] == {"consistent": 25, "likely-intercepted": 4}
    onsets = summary["onsets"]
    assert [(o["prefix"], o["hour"]) for o in onsets] == [("198.51.100.0/24", "2019-07-19T14")]
    dumped = json.dumps(summary) + json.dumps([r.to_json() for r in rows])
    assert '198.51.100.1"' not in dumped and "203.0.113.9" not in dumped
    flagged = [n for n in summary["networks"] if n["intercepted"]]
    assert flagged[0]["intercepted_share"] == 1.0 and "Python" in next(iter(flagged[0]["products"]))


def test_csv_logs_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, ["Time", "Client_Ip", "User_Agent", "Client_Hello", "Ja4"])
        writer.writeheader()
        for line in _log_lines():
            writer.writerow({k.title(): v for k, v in line.items()})
    assert main(["sitecheck", "logs", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verdicts"]["likely-intercepted"] == 4 and len(summary["onsets"]) == 1
    assert main(["sitecheck", "logs", str(path)]) == 0
    text = capsys.readouterr().out
    assert "onset: 198.51.100.0/24 at 2019-07-19T14" in text
    assert main(["sitecheck", "logs", str(path), "--rows", "--max-rows", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["sitecheck", "logs", str(path), "--prometheus"]) == 0
    metrics = capsys.readouterr().out
    assert 'netvigil_sitecheck_visits_total{verdict="likely-intercepted"} 4' in metrics
    assert (
        'netvigil_sitecheck_intercepted_share{prefix="198.51.100.0/24",hour="2019-07-19T14"} '
        "1.0000" in metrics
    )
    assert "netvigil_sitecheck_onsets 1" in metrics


def test_cli_hello(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sitecheck", "hello", _hex("live/curl"), "-A", CHROME_156, "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["verdict"] == "likely-intercepted" and verdict["best_match"]["name"].startswith(
        "curl"
    )
    assert main(["sitecheck", "hello", "zz", "-A", CHROME_156]) == 2
    assert main(["sitecheck", "hello", "160301", "-A", CHROME_156]) == 2
