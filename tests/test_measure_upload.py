"""`netvigil measure --upload`: measurements go through the outbox to the collector the user
chose, and nowhere without --upload. A real collector and a plain HTTP site, both on 127.0.0.1;
URLs are IP literals (no DNS), no control helper, no DoH."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from netvigil.cli import main
from netvigil.upload import Outbox


class _Site(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = b"<html><title>fine</title>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("collector")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "netvigil.cli", "collector", "--data", str(data)),
            *("--listen", f"127.0.0.1:{port}", "--rate", "0"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/api/v1/log/tree-head", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the collector did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("NETVIGIL_TESTBED", "NETVIGIL_COLLECTOR_URL", "NETVIGIL_HELPER_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _measure(*args: str) -> int:
    return main(["measure", "--consent", "--no-doh", "--no-progress", "--timeout", "3", *args])


def _listed(collector: str, path: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{collector}/api/v1/measurements", params={"limit": "1000"}).json()
    return [r for r in rows["results"] if str(r["input"]).endswith(path)]


def _save_choice(home: Path, url: str) -> None:
    folder = home / "config" / "netvigil"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "upload.json").write_text(json.dumps({"collector": url}))


def test_upload_sends_every_measurement_to_the_named_collector(
    home: Path, site: str, collector: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = home / "m.jsonl"
    urls = [f"{site}/named/a", f"{site}/named/b"]
    code = _measure(*urls, "-o", str(output), "--upload", "--collector", collector)
    out = capsys.readouterr().out
    assert code == 0, out
    line = [x for x in out.splitlines() if x.startswith("upload to ")]
    assert len(line) == 1 and "queued 2, sent 2" in line[0] and "still pending 0" in line[0]
    assert len(output.read_text().splitlines()) == 2  # the JSONL output is still written
    listed = _listed(collector, "/named/a") + _listed(collector, "/named/b")
    assert sorted(r["input"] for r in listed) == sorted(urls)
    sent = Outbox(home / "data" / "netvigil" / "outbox").answers()
    assert len(sent) == 2
    for answer in sent.values():
        uid = answer["measurement_uid"]
        body = httpx.get(f"{collector}/api/v1/measurements/{uid}").json()
        assert body["probe_ip"] == "127.0.0.1"  # scrubbed before it left the outbox


def test_explicit_outbox_and_json_mode(
    home: Path, site: str, collector: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = home / "box"
    code = _measure(
        f"{site}/json/a", "--json", "--upload", "--collector", collector, "--outbox", str(outbox)
    )
    captured = capsys.readouterr()
    assert code == 0
    assert all(json.loads(x) for x in captured.out.splitlines())  # stdout stays JSON
    assert "queued 1, sent 1" in captured.err
    assert len(Outbox(outbox).answers()) == 1
    assert len(_listed(collector, "/json/a")) == 1


def test_nothing_is_uploaded_without_upload(
    home: Path,
    site: str,
    collector: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _save_choice(home, collector)
    monkeypatch.setenv("NETVIGIL_COLLECTOR_URL", collector)
    assert _measure(f"{site}/never/a") == 0
    assert "upload" not in capsys.readouterr().out
    assert _listed(collector, "/never/a") == []
    assert not (home / "data" / "netvigil" / "outbox").exists()


def test_upload_uses_the_saved_choice_or_the_testbed_variable(
    home: Path,
    site: str,
    collector: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _save_choice(home, collector)
    assert _measure(f"{site}/saved/a", "--upload") == 0
    assert f"upload to {collector}: queued 1, sent 1" in capsys.readouterr().out
    assert len(_listed(collector, "/saved/a")) == 1
    (home / "config" / "netvigil" / "upload.json").unlink()
    monkeypatch.setenv("NETVIGIL_COLLECTOR_URL", collector)
    assert _measure(f"{site}/env/a", "--upload", "--collector") == 0
    assert f"upload to {collector}: queued 1, sent 1" in capsys.readouterr().out
    assert len(_listed(collector, "/env/a")) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upload"], "--upload needs a collector"),
        (["--upload", "--collector"], "NETVIGIL_COLLECTOR_URL"),
        (["--upload", "--collector", "http://192.0.2.1/"], "refusing plain http"),
        (["--collector", "http://127.0.0.1:1/"], "need --upload"),
    ],
)
def test_upload_mistakes_are_one_line_and_nothing_is_measured(
    home: Path, site: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = _Site.hits
    assert _measure(f"{site}/refused/a", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert _Site.hits == before


def test_unreachable_collector_keeps_measurements_pending(
    home: Path, site: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    code = _measure(
        f"{site}/dead/a", "--upload", "--collector", dead, "--outbox", str(home / "box")
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "queued 1, sent 0" in out and "still pending 1" in out
    assert len(list((home / "box" / "pending").glob("*.json"))) == 1
