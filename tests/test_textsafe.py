"""Untrusted strings are plain text on the terminal, in every command (issue 11, item 6).

A censor controls strings netvigil prints: a forged certificate's issuer name, a blockpage, a
URL, a profile's names, a file's name. Each command runs here on such values, placed where the
network or the file puts them, with a terminal-like console (``FORCE_COLOR``: rich writes its
own colour codes). The output must not crash (rich ``MarkupError``), must contain no ESC, BEL,
C1 CSI, OSC 8 hyperlink or raw BiDi override coming from the data (rich's own SGR colour codes
are the only escape sequences allowed), and must still show the value, made visible.
``--json`` output stays exact. No test leaves loopback.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import re
import socketserver
import ssl
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from netvigil import textsafe
from netvigil.cli import main as netvigil_main
from netvigil.experiments import interception_check as ic

# The values of the issue, one by one: markup, a markup hyperlink, an ESC sequence (clear the
# screen), an OSC 8 hyperlink ended by BEL, a BiDi override, a carriage return.
HOSTILE = [
    "[/bold]",
    "[link=file:///etc/passwd]x[/link]",
    "\x1b[2J",
    "\x1b]8;;http://evil/\x07",
    "\u202e",
    "\r",
]
ALL_HOSTILE = "Evil " + " ".join(HOSTILE) + " end"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colour/bold codes


def assert_terminal_safe(output: str, *shown: str) -> None:
    """No control sequence from data reached the terminal, and each `shown` value is visible."""
    assert "\x1b]8;" not in output, "an OSC 8 hyperlink reached the terminal"
    plain = SGR.sub("", output)
    for bad in ("\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\r", "\x08"):
        assert bad not in plain, f"{bad!r} reached the terminal: {plain[:2000]!r}"
    for value in shown:
        assert textsafe.visible(value) in plain, (value, plain[:3000])


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A colour terminal for rich; consent and saved choices in a private config folder."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("NETVIGIL_TESTBED", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = netvigil_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------------------------
# The helper


def _unsafe(c: str) -> bool:
    cp = ord(c)
    return (
        cp < 0x20
        or 0x7F <= cp <= 0x9F
        or 0x202A <= cp <= 0x202E
        or 0x2066 <= cp <= 0x2069
        or cp in (0x200E, 0x200F, 0x061C, 0x2028, 0x2029, 0xFEFF)
        or 0xD800 <= cp <= 0xDFFF
    )


def test_visible_examples() -> None:
    v = textsafe.visible
    assert v("\x1b[2J") == "\\x1b[2J"
    assert v("\x1b]8;;http://evil/\x07") == "\\x1b]8;;http://evil/\\x07"
    assert v("moc.\u202eevil") == "moc.<U+202E>evil"
    assert v("a\rb\x08\x7f\x9b") == "a\\x0db\\x08\\x7f\\x9b"
    assert v("lone \ud800 surrogate") == "lone <U+D800> surrogate"
    assert v("[/bold]") == "[/bold]"  # markup is harmless once it is a Text: kept as written
    # ordinary text of any script is unchanged, ZWNJ (Persian) and ZWJ (emoji) included
    for fine in ("tengrinews.kz", "Қазақстан", "سایت\u200cها", "👩\u200d💻", "日本語", "a\\b"):
        assert v(fine) == fine
    assert v(None) == "None" and v(12) == "12"
    # bounded: a 1 MB "title" is cut, and says how much
    long = v("x" * 1_000_000)
    assert len(long) < textsafe.DEFAULT_LIMIT + 40 and long.endswith("[+999000 chars]")
    assert v("x" * 50, limit=10) == "x" * 10 + "… [+40 chars]"
    assert v("a\nb\r\nc", multiline=True) == "a\nb\\x0d\nc"
    assert v("a\nb") == "a\\x0ab"


@given(st.text(alphabet=st.characters(codec=None), max_size=300))
def test_visible_has_no_control_character_and_is_idempotent(value: str) -> None:
    out = textsafe.visible(value, limit=None)
    assert not any(_unsafe(c) for c in out), out
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in out)
    assert textsafe.visible(out, limit=None) == out  # escaping twice changes nothing
    out.encode("utf-8")  # lone surrogates are gone: the terminal's encoder cannot fail


@given(st.text(max_size=200))
def test_text_is_never_markup(value: str) -> None:
    rendered = textsafe.text(value, "bold")
    assert isinstance(rendered, Text)
    assert rendered.plain == textsafe.visible(value)
    console = Console(force_terminal=True, color_system="truecolor", width=80, record=True)
    with console.capture() as capture:
        console.print(rendered)
    assert_terminal_safe(capture.get())


def test_make_console_prints_strings_literally() -> None:
    import io

    stream = io.StringIO()
    console = textsafe.make_console(stream, force_terminal=True)
    console.print("Evil [/bold] Root [link=file:///etc/passwd]x[/link] :smile:")
    out = stream.getvalue()
    assert "Evil [/bold] Root [link=file:///etc/passwd]x[/link] :smile:" in SGR.sub("", out)
    assert "\x1b]8;" not in out


def test_log_lines_quote_client_strings_as_text() -> None:
    """The collector and the helper log request paths and URLs a client chose."""
    import io
    import logging

    stream = io.StringIO()
    logger = logging.getLogger("netvigil.test.textsafe")
    logger.propagate = False
    logger.addHandler(textsafe.log_handler("%(levelname)s %(message)s", stream))
    try:
        logger.error("unhandled error on %s %s", "GET", "/" + ALL_HOSTILE)
        try:
            raise ValueError("boom \x1b[2J")
        except ValueError:
            logger.exception("fetching %s failed", "http://x/\u202e")
    finally:
        logger.handlers.clear()
    out = stream.getvalue()
    assert_terminal_safe(out, "/" + ALL_HOSTILE, "boom \x1b[2J", "http://x/\u202e")
    assert "Traceback (most recent call last):\n" in out  # tracebacks keep their lines


# ----------------------------------------------------------------------------------------------
# check: the issuer name of a forged chain, served on loopback, with a control that saw the real
# one (so the verdict is "intercepted" and the headline names the hostile issuer)


def _cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    san: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _chain(
    domain: str, root_name: str
) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert(root_name, root_name, root_key, root_key, ca=True)
    leaf = _cert(domain, root_name, leaf_key, root_key, ca=False, san=domain)
    return [leaf, root], leaf_key


class _Servers:
    """A TLS server presenting the forged chain and an OONI-style helper that saw the real one."""

    def __init__(self, tmp: Path, domain: str, forged_issuer: str) -> None:
        real, _ = _chain(domain, "Genuine Root")
        forged, forged_key = _chain(domain, forged_issuer)
        self.bundle = tmp / "roots.pem"
        self.bundle.write_bytes(real[1].public_bytes(serialization.Encoding.PEM))
        chain_pem, key_pem = tmp / "forged.pem", tmp / "forged.key"
        chain_pem.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in forged))
        key_pem.write_bytes(
            forged_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain_pem, key_pem)
        real_chain = [
            {
                "data": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode(),
                "format": "base64",
            }
            for c in real
        ]

        class TLS(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                # the probe hangs up after the handshake: an error here is expected
                with contextlib.suppress(OSError, ssl.SSLError):
                    context.wrap_socket(self.request, server_side=True).close()

        class Helper(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                request = json.loads(self.rfile.read(length))
                endpoints = request["tcp_connect"]
                body = json.dumps(
                    {
                        "dns": {"addrs": [], "failure": None},
                        "http_request": {"failure": None, "status_code": 200},
                        "tcp_connect": {e: {"status": True, "failure": None} for e in endpoints},
                        "tls_handshake": {
                            e: {"status": True, "failure": None, "x_peer_certificates": real_chain}
                            for e in endpoints
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.tls = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TLS)
        self.helper = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Helper)
        self.tls.daemon_threads = self.helper.daemon_threads = True
        self.port = self.tls.server_address[1]
        self.helper_url = f"http://127.0.0.1:{self.helper.server_address[1]}/"
        for server in (self.tls, self.helper):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()

    def close(self) -> None:
        for server in (self.tls, self.helper):
            server.shutdown()
            server.server_close()


@pytest.fixture
def forged_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[_Servers]:
    servers = _Servers(tmp_path, "victim.test", request.param)
    real_check = ic.check_domain

    async def on_loopback(
        domain: str, config: Any, *, timeout: float, port: int = 443, address: str | None = None
    ) -> ic.DomainResult:
        # every name is "resolved" to our loopback server: no resolver is ever asked
        return await real_check(
            domain, config, timeout=timeout, port=servers.port, address="127.0.0.1"
        )

    monkeypatch.setattr(ic, "check_domain", on_loopback)
    yield servers
    servers.close()


@pytest.mark.parametrize(
    "forged_site", [f"Evil {h} Root" for h in HOSTILE], indirect=True, ids=range(len(HOSTILE))
)
def test_check_prints_a_hostile_issuer_as_text(
    forged_site: _Servers, terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = _issuer_of(forged_site)
    argv = ["check", "victim.test", "--only", "--consent", "--timeout", "3"]
    argv += ["--helper", forged_site.helper_url, "--ca-bundle", str(forged_site.bundle)]
    code, out, err = _run(argv, capsys)
    assert code == 1, (out, err)  # the verdict is given: interception, not a traceback
    assert "HTTPS to 1 site is intercepted" in out
    assert_terminal_safe(out + err, issuer)
    # --json stays exact: the issuer as the certificate has it
    code, out, _ = _run([*argv, "--json"], capsys)
    doc = json.loads(out)
    assert code == 1 and doc["domains"][0]["issuer"] == issuer
    assert issuer in doc["headline"]


def _issuer_of(site: _Servers) -> str:
    pem = (site.bundle.parent / "forged.pem").read_bytes()
    leaf = x509.load_pem_x509_certificates(pem)[0]
    value = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def test_check_rejects_a_hostile_name_in_plain_text(
    terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["check", ALL_HOSTILE, "--only", "--consent"], capsys)
    assert code == 2
    assert_terminal_safe(out + err, "[/bold]", "\x1b[2J")


# ----------------------------------------------------------------------------------------------
# analyze: the input URL, blockpage title and headers, failure strings, probe_cc/asn of a file

SAMPLES = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"


def _hostile_measurements() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, line in enumerate(SAMPLES.read_text("utf-8").splitlines()[:4]):
        m = json.loads(line)
        value = HOSTILE[n % len(HOSTILE)]
        m["input"] = f"https://x.kz/{value}"
        m["probe_cc"] = "K\x1bZ" if n == 0 else m.get("probe_cc")
        m["probe_asn"] = "AS1\u202e" if n == 1 else m.get("probe_asn")
        keys = m.setdefault("test_keys", {})
        for req in keys.get("requests") or []:
            response = req.get("response") or {}
            response["body"] = f"<title>{ALL_HOSTILE}</title>"
            response["headers"] = {"Server": ALL_HOSTILE}
            req["failure"] = req.get("failure") and f"generic_timeout_error {value}"
        if keys.get("dns_experiment_failure"):
            keys["dns_experiment_failure"] = f"dns_nxdomain_error {value}"
        out.append(m)
    extra = json.loads(SAMPLES.read_text("utf-8").splitlines()[0])
    extra["input"] = "https://x.kz/[/bold]"  # the crash
    out.append(extra)
    return out


def test_analyze_prints_hostile_measurements_as_text(
    tmp_path: Path, terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    measurements = _hostile_measurements()
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in measurements), "utf-8")
    code, out, err = _run(["analyze", str(path)], capsys)
    assert code == 0, err
    assert_terminal_safe(out + err, "https://x.kz/[/bold]", "K\x1bZ")
    assert "x.kz/\\x1b[2J" in out and "<U+202E>" in out
    # --json is exact: the URL as the file has it
    code, out, _ = _run(["analyze", str(path), "--json"], capsys)
    inputs = [json.loads(line)["input"] for line in out.splitlines()]
    assert inputs == [m["input"] for m in measurements]


def test_analyze_bad_line_is_reported_as_text(
    tmp_path: Path, terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"bad\x1b[2J\u202e{HOSTILE[0].replace('/', '')}.jsonl"
    path.write_text("{not json\n", "utf-8")
    _, out, err = _run(["analyze", str(path)], capsys)  # its exit status is another test's
    assert_terminal_safe(out + err, path.name)


# ----------------------------------------------------------------------------------------------
# measure: an input URL (the probe measures a loopback server) and a skipped bad input


def test_measure_prints_hostile_urls_as_text(
    terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"<title>{ALL_HOSTILE}</title>".encode()
            self.send_response(200)
            self.send_header("Server", "\x1b]8;;http://evil/\x07x")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    try:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/[/bold]\x1b[2J\u202e[link=file:///etc/passwd]x[/link]"
        bad = "ftp://bad/\x1b]8;;http://evil/\x07\r"
        argv = ["measure", url, bad, "--consent", "--no-doh", "--no-progress"]
        code, out, err = _run([*argv, "--resolver", "127.0.0.1", "--timeout", "3"], capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, err
    assert_terminal_safe(out + err, url, bad[:-1])


# ----------------------------------------------------------------------------------------------
# query and pipeline: domain, cc, asn, fingerprint and root values in the pipeline's output


def test_query_prints_hostile_pipeline_values_as_text(
    tmp_path: Path, terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_pipeline_aggregate import D, ts, verdict, write_verdicts

    rows = [
        verdict(
            f"h{i}",
            ts(D(2024, 3, 8), 8 + i),
            "tls/interception",
            domain=f"x{i}.kz{value}",
            cc="K\x1bZ" if i == 0 else "KZ",
            fingerprint=value,
            root=f"Evil {value} Root",
        )
        for i, value in enumerate(HOSTILE)
    ]
    write_verdicts(tmp_path, rows)
    for what in ("blocked", "networks", "outcomes"):
        code, out, err = _run(["query", str(tmp_path), "--what", what], capsys)
        assert code == 0, err
        assert_terminal_safe(out + err)
    code, out, err = _run(["query", str(tmp_path), "--limit", "100"], capsys)
    assert_terminal_safe(out + err, "x0.kz[/bold]", "x2.kz\x1b[2J", "x4.kz\u202e")
    code, out, err = _run(
        ["query", str(tmp_path), "--sql", "SELECT domain, probe_cc FROM verdicts"], capsys
    )
    assert_terminal_safe(out + err, "K\x1bZ", "x1.kz[link=file:///etc/passwd]x[/link]")
    code, out, err = _run(["query", str(tmp_path), "--domain", ALL_HOSTILE], capsys)
    assert_terminal_safe(out + err)
    code, out, _ = _run(["query", str(tmp_path), "--json", "--limit", "100"], capsys)
    assert {r["domain"] for r in json.loads(out)["rows"]} == {r["domain"] for r in rows}


def test_report_and_pipeline_messages_are_text(
    tmp_path: Path, terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from netvigil.pipeline.aggregate import build_aggregates
    from test_pipeline_aggregate import D, ts, verdict, write_verdicts

    out_dir = tmp_path / "out"
    write_verdicts(out_dir, [verdict("h1", ts(D(2024, 3, 8)), "dns/nxdomain", domain="e.kz\x1b")])
    build_aggregates(out_dir)
    html = tmp_path / "r\x1b[2J\u202e\r.html"
    code, out, err = _run(["report", str(out_dir), "--html", str(html)], capsys)
    assert code == 0, err
    assert_terminal_safe(out + err, html.name)
    # the pipeline's summary names input files and quotes corrupt lines
    src = tmp_path / "in\x1b]8;;\x07\u202e.jsonl"
    src.write_text('{"\x1b[2J": [\n' + SAMPLES.read_text("utf-8").splitlines()[0] + "\n", "utf-8")
    code, out, err = _run(
        ["pipeline", "run", str(src), "--out", str(tmp_path / "p"), "--workers", "1"], capsys
    )
    assert code == 0, err
    assert_terminal_safe(out + err, src.name)


# ----------------------------------------------------------------------------------------------
# testbed: a profile's names (truth, demo before bring-up, status)

HOSTILE_PROFILE = """\
name = "evil\\u001b[2J[/bold]"
description = "Evil [link=file:///etc/passwd]x[/link]\\u001b]8;;http://evil/\\u0007 \\u202e end"
isp = "ISP \\r[/bold]"
country = "ZZ"
domains = ["good.example"]

[[site]]
domain = "gone.example"
kind = "down"
title = "Gone \\u001b[2J"

[[rule]]
action = "dns-nxdomain"
domain = ["good.example"]
"""


def test_testbed_commands_print_profile_names_as_text(
    tmp_path: Path,
    terminal: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = tmp_path / "evil.toml"
    profile.write_text(HOSTILE_PROFILE, "utf-8")
    code, out, err = _run(["testbed", "truth", "--profile", str(profile)], capsys)
    assert code == 0, err
    assert_terminal_safe(out + err, "evil\x1b[2J[/bold]", "\r[/bold]")
    from netvigil.testbed import control

    monkeypatch.setattr(control, "run", lambda *a, **k: 0)  # no bring-up: only what is printed
    code, out, err = _run(["testbed", "demo", "--profile", str(profile)], capsys)
    assert code == 0, err
    assert_terminal_safe(out + err, "Evil [link=file:///etc/passwd]x[/link]")
    code, out, err = _run(["testbed", "status", "--name", ALL_HOSTILE], capsys)
    assert code == 1
    assert_terminal_safe(out + err, "[/bold]")
    code, out, err = _run(["testbed", "profiles"], capsys)
    assert code == 0
    assert_terminal_safe(out + err)


# ----------------------------------------------------------------------------------------------
# verify, upload, collector: messages that quote a file, a measurement or a path


def test_verify_upload_collector_messages_are_text(
    tmp_path: Path, terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "log.pem"
    key.write_text("not a key")
    measurement = tmp_path / "m\x1b[2J\u202e\x07.json"
    measurement.write_text("{}")
    code, out, err = _run(["verify", str(measurement), "--log-key", str(key)], capsys)
    assert code == 2
    assert_terminal_safe(out + err, measurement.name)

    from netvigil.upload.cli import queue_measurements

    m = json.loads(SAMPLES.read_text("utf-8").splitlines()[0])
    m["input"] = f"https://x.kz/{ALL_HOSTILE}"
    m["test_name"] = "web_connectivity\x1b[2J"
    outbox = tmp_path / "outbox"
    queue_measurements([m], outbox)
    code, out, err = _run(["upload", "--dry-run", "--outbox", str(outbox)], capsys)
    assert code == 0, err
    assert_terminal_safe(out + err, "https://x.kz/Evil [/bold]")

    token = tmp_path / "token\x1b[2J\u202e"
    token.write_text("short")
    code, out, err = _run(
        ["collector", "--data", str(tmp_path / "data"), "--admin-token-file", str(token)], capsys
    )
    assert code == 2
    assert_terminal_safe(out + err, token.name)
