"""Capture real ClientHellos from local TLS clients, on loopback inside a fresh network namespace.

    python tools/capture_client_hellos.py --out src/netvigil/sitecheck/data/live_hellos.jsonl

The script re-executes itself under ``unshare --net``: the namespace has only ``lo``, so no
client (a browser's background updates included) can reach anything but our listener. The
listener peeks the ClientHello (MSG_PEEK), then completes TLS with a throw-away self-signed
certificate when the client accepts it, to read the User-Agent the client really sends.
Every client runs with a timeout; a client that is not installed is skipped and said so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.sitecheck.clienthello import ClientHello, parse_client_hello

SITE = "site.test"
CLIENT_TIMEOUT = 60.0
PEEK_LIMIT = 1 << 16


def _write_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SITE)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Listener:
    """Accepts connections; records the first ClientHello and User-Agent of each."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.set_alpn_protocols(["http/1.1"])
        self.records: list[tuple[bytes, str | None]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        hello = b""
        deadline = time.monotonic() + 5.0
        try:
            while time.monotonic() < deadline:
                hello = conn.recv(PEEK_LIMIT, socket.MSG_PEEK)
                parsed = parse_client_hello(hello)
                if isinstance(parsed, ClientHello):
                    hello = hello[: parsed.length]
                    break
                if not parsed.need_more or not hello:
                    return
                time.sleep(0.01)
            user_agent = None
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < PEEK_LIMIT:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"user-agent:"):
                        user_agent = line.split(b":", 1)[1].strip().decode("latin-1")
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                tls.close()
            except (OSError, ssl.SSLError):
                pass  # the client refused our certificate: the hello is still recorded
            with self.lock:
                self.records.append((hello, user_agent))
        except OSError:
            return
        finally:
            conn.close()


def _clients(port: int, home: Path, go_client: list[str] | None) -> dict[str, list[str]]:
    url = f"https://{SITE}:{port}/"
    resolve = f"MAP {SITE} 127.0.0.1"
    go = {"go-net-http": [*go_client, url.replace(SITE, "127.0.0.1")]} if go_client else {}
    return go | {
        "curl": ["curl", "-sk", "--max-time", "20", "--resolve", f"{SITE}:{port}:127.0.0.1", url],
        "openssl-s_client": [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            SITE,
            "-quiet",
        ],
        "gnutls-cli": ["gnutls-cli", "--insecure", "-p", str(port), "127.0.0.1"],
        "chromium": [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            f"--host-resolver-rules={resolve}",
            f"--user-data-dir={home / 'chromium'}",
            "--no-first-run",
            "--disable-background-networking",
            "--dump-dom",
            url,
        ],
        "firefox-esr": [
            "firefox-esr",
            "--headless",
            "--no-remote",
            "--profile",
            str(home / "firefox"),
            "--screenshot",
            str(home / "shot.png"),
            url,
        ],
    }


GO_CLIENT = """package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"time"
)

func main() {
	client := &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	response, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Println(runtime.Version(), err)
		return
	}
	response.Body.Close()
}
"""


def _go_client(home: Path) -> list[str] | None:
    """A Go net/http client built from GO_CLIENT (standard library only, built offline)."""
    if shutil.which("go") is None:
        return None
    source = home / "goclient.go"
    source.write_text(GO_CLIENT)
    binary = home / "goclient"
    env = {
        **os.environ,
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(home / "gocache"),
        "GOPATH": str(home / "gopath"),
        "GO111MODULE": "off",
        "GOTOOLCHAIN": "local",
    }
    done = subprocess.run(
        ["go", "build", "-o", str(binary), str(source)],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    return [str(binary)] if done.returncode == 0 else None


def _python_client(port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=SITE) as tls,
    ):
        tls.sendall(
            f"GET / HTTP/1.1\r\nHost: {SITE}\r\nUser-Agent: Python-ssl/{sys.version.split()[0]}"
            f" ({ssl.OPENSSL_VERSION})\r\n\r\n".encode()
        )
        tls.recv(1024)


def _version(command: str) -> str:
    try:
        done = subprocess.run(
            [command, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def capture(out: Path, repeat: int) -> int:
    home = Path(tempfile.mkdtemp(prefix="nv-capture-"))
    cert, key = _write_cert(home)
    go_client = _go_client(home)
    captured: list[dict[str, str | None]] = []
    runs = [("python-ssl", None), *_clients(0, home, go_client).items()]
    if go_client is None:
        print("skipped go-net-http: no Go toolchain", file=sys.stderr)
    for attempt in range(repeat):
        for name, command in runs:
            # A fresh browser profile per run: each capture is a first visit, as a site sees.
            shutil.rmtree(home / "firefox", ignore_errors=True)
            shutil.rmtree(home / "chromium", ignore_errors=True)
            (home / "firefox").mkdir()
            # site.test to loopback without a resolver, so Firefox sends SNI like a visitor.
            (home / "firefox" / "user.js").write_text(
                'user_pref("network.dns.localDomains", "site.test");\n'
            )
            listener = Listener(cert, key)
            try:
                if command is None:
                    _python_client(listener.port)
                    version = f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}"
                else:
                    argv = _clients(listener.port, home, go_client)[name]
                    if shutil.which(argv[0]) is None:
                        print(f"skipped {name}: not installed", file=sys.stderr)
                        continue
                    version_command = {
                        "openssl-s_client": ["openssl", "version"],
                        "go-net-http": ["go", "version"],
                    }.get(name)
                    if version_command is None:
                        version = _version(argv[0])
                    else:
                        version = subprocess.run(
                            version_command, capture_output=True, text=True, check=False
                        ).stdout.strip()
                    try:
                        subprocess.run(
                            argv,
                            input=b"GET / HTTP/1.0\r\n\r\n",
                            capture_output=True,
                            timeout=CLIENT_TIMEOUT,
                            check=False,
                        )
                    except subprocess.TimeoutExpired:
                        print(f"{name}: timed out (kept what was captured)", file=sys.stderr)
                time.sleep(0.5)
            finally:
                listener.stop.set()
                listener.thread.join(2)
                listener.sock.close()
            with listener.lock:
                records = list(listener.records)
            if not records:
                print(f"{name}: no ClientHello captured", file=sys.stderr)
                continue
            hello, user_agent = records[0]
            captured.append(
                {
                    "label": f"live/{name}" + (f"-{attempt + 1}" if attempt else ""),
                    "client": name,
                    "client_version": version,
                    "user_agent": user_agent,
                    "client_hello_record_hex": hello.hex(),
                    "source": "captured on loopback in a fresh network namespace by "
                    "tools/capture_client_hellos.py on Debian 12, "
                    + datetime.date.today().isoformat(),
                }
            )
            print(f"{name}: {version!r} UA={user_agent!r} {len(hello)} bytes", file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in captured))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=1, help="captures per client (max 10)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = max(1, min(args.repeat, 10))
    if not args.inside:
        # A fresh network namespace with only loopback: nothing here can leave the machine.
        argv = ["unshare", "--net", "--", sys.executable, __file__, "--inside"]
        argv += ["--out", str(args.out), "--repeat", str(repeat)]
        return subprocess.run(argv, check=False, timeout=1800).returncode
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ.pop("http_proxy", None)
    os.environ.pop("https_proxy", None)
    return capture(args.out, repeat)


if __name__ == "__main__":
    sys.exit(main())
