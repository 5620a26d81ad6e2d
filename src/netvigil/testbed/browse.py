"""The browser client role: real headless browsers in `client` visit sites served behind
``netvigil sitecheck front``, and the site's own verdict on each visit is compared with what
the censor did.

``netvigil testbed browse --profile P [--browser chromium,firefox] [URL ...]`` brings a testbed
up and runs this module inside `client` (``testbed run``). For each site visited:

1. a front (``netvigil sitecheck front --log``) is started in `internet`, with the site's own
   certificate, forwarding to the plain site (``http://ADDRESS:80``, served by the sites role);
2. an nftables ``dnat`` in `internet` sends the site's :443 to the front, so the front sits
   where the site is: a middlebox on the path meets it exactly as it would meet the site;
3. each browser visits each URL with a throw-away profile whose certificate store (an NSS
   database, as Chromium on Linux and Firefox keep it) trusts the testbed's web PKI root and,
   when the profile has one, the national root — as a citizen who installed it did: the
   interception is then invisible to the user, the page loads;
4. the fronts' logs say what the site saw on each connection; a visit is *flagged* when any of
   its connections was judged ``likely-intercepted``. The truth is the profile's: a name is
   intercepted when the first TLS rule matching it is ``tls-intercept``.

Every browser runs in its own process group with a time limit and is killed with it; the fronts
and the nftables table are removed at the end (and die with the testbed anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netvigil import textsafe
from netvigil.testbed import pki
from netvigil.testbed.plan import Plan, SitePlan

FRONT_BASE_PORT = 18443  # the fronts listen here (+ n) in `internet`; :443 is dnat-ed to them
NFT_TABLE = "netvigil_sitecheck"
VISIT_TIMEOUT = 40.0  # one browser visit, start-up included
FRONT_START_TIMEOUT = 20.0
SETTLE = 0.3  # after a browser exits, for the front to write its last line
BROWSERS = ("chromium", "firefox")
BROWSER_PROGRAMS = {"chromium": ("chromium",), "firefox": ("firefox-esr", "firefox")}

# Firefox's own background traffic (updates, telemetry, DoH, captive-portal checks) is not a
# visit: off, so the only connections a front sees are the page's.
FIREFOX_PREFS = {
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "network.trr.mode": 5,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "security.OCSP.enabled": 0,
    "extensions.update.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
}


@dataclass
class Visit:
    browser: str
    version: str
    url: str
    host: str
    intercepted: bool  # the truth: the profile's censor intercepts this name
    status: str = "ok"  # ok, timeout, not-installed, error: ...
    page_title: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    tls: dict[str, Any] = field(default_factory=dict)  # what Chromium negotiated (NetLog)

    @property
    def verdicts(self) -> list[str]:
        return [str(r.get("verdict", "")) for r in self.records]

    @property
    def flagged(self) -> bool:
        return "likely-intercepted" in self.verdicts

    @property
    def seen(self) -> bool:
        return bool(self.records)

    def to_json(self) -> dict[str, Any]:
        matches = sorted(
            {str(r["best_match"]["name"]) for r in self.records if r.get("best_match")}
        )
        reasons = sorted({str(x["rule"]) for r in self.records for x in r.get("reasons", [])})
        return {
            "browser": self.browser,
            "version": self.version,
            "url": self.url,
            "host": self.host,
            "intercepted": self.intercepted,
            "status": self.status,
            "page_title": self.page_title,
            "connections": len(self.records),
            "verdicts": self.verdicts,
            "flagged": self.flagged,
            "reasons": reasons,
            "best_match": matches,
            "user_agents": sorted({str(r.get("user_agent", "")) for r in self.records}),
            "ja4": sorted({str(r.get("ja4", "")) for r in self.records}),
            "front_client_hellos": [str(r.get("client_hello", "")) for r in self.records],
            "tls": self.tls,
        }


# -- the truth and the default visits ---------------------------------------------------------


def intercepted_by_censor(plan: Plan, host: str) -> bool:
    from netvigil.testbed.middlebox import tls_rule

    rule = tls_rule(plan, host)
    return rule is not None and rule.action == "tls-intercept"


def _plain_site(site: SitePlan) -> bool:
    """A site a browser can simply load: live, 200, no redirect, one address, not slowed."""
    return (
        site.kind not in ("down", "slow", "cdn")
        and site.status == 200
        and not site.redirect_to
        and len(site.addresses) == 1
        and site.delay_ms == 0
        and site.serve_rate_bps == 0
    )


def default_urls(plan: Plan, intercepted: int = 3, total: int = 5) -> list[str]:
    """Up to `intercepted` names the censor intercepts, then names it does not, `total` in
    all (profile order); each a plain site that the censor touches only with TLS rules."""
    candidates = visitable(plan)
    chosen = [url for url, truth in candidates if truth][:intercepted]
    chosen += [url for url, truth in candidates if not truth][: total - len(chosen)]
    return chosen


def all_urls(plan: Plan) -> list[str]:
    """Every site a visit can reach (see ``visitable``), intercepted or not."""
    return [url for url, _ in visitable(plan)]


def visitable(plan: Plan) -> list[tuple[str, bool]]:
    """(URL, intercepted by the censor) of every plain site whose visits reach the site: not
    blocked, reset, redirected or slowed before TLS, nor reset or held at the TLS stage."""
    from netvigil.testbed.middlebox import tls_rule

    blocked_elsewhere = ("dns-", "ip-", "tcp-", "http-", "throttle")
    every_action = tuple({r.action for r in plan.rules})
    out: list[tuple[str, bool]] = []
    for site in plan.sites:
        if not _plain_site(site):
            continue
        if plan.ip_rule(every_action, site.addresses[0]) is not None or any(
            r.action.startswith(blocked_elsewhere) and r.matches_name(site.domain)
            for r in plan.rules
            if r.matcher in ("domain", "sni", "host")
        ):
            continue
        rule = tls_rule(plan, site.domain)
        truth = rule is not None and rule.action == "tls-intercept"
        if rule is not None and not truth:
            continue
        out.append((f"https://{site.domain}/", truth))
    return out


# -- the fronts -------------------------------------------------------------------------------


def _netvigil() -> list[str]:
    script = Path(sys.executable).with_name("netvigil")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from netvigil.cli import main; sys.exit(main())"]


@dataclass
class Front:
    site: SitePlan
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def records(self) -> list[dict[str, Any]]:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


def start_front(plan: Plan, site: SitePlan, port: int, work: Path) -> Front:
    cert, key = pki.site_cert_paths(plan.pki_dir, site.domain)
    log = work / f"front-{site.domain}.jsonl"
    address = site.addresses[0]
    argv = [
        "ip",
        "netns",
        "exec",
        "internet",
        *_netvigil(),
        "sitecheck",
        "front",
        "--listen",
        f"{address}:{port}",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--upstream",
        f"http://{address}:80",
        "--log",
        str(log),
    ]
    # Its errors go to a file: a pipe nobody reads could fill and stall the front.
    errors = work / f"front-{site.domain}.err"
    with errors.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=sink, start_new_session=True
        )
    front = Front(site, port, log, process)
    assert process.stdout is not None
    deadline = time.monotonic() + FRONT_START_TIMEOUT
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 512)
            if not chunk:
                break
            line += chunk
        elif process.poll() is not None:
            break
    if not line.startswith(b"netvigil sitecheck front:"):
        stop_front(front)
        detail = errors.read_text(errors="replace").strip()[-2000:] or "no output"
        raise RuntimeError(f"the front for {site.domain} did not start: {detail}")
    return front


def stop_front(front: Front) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(front.process.pid, signal.SIGTERM)
    try:
        front.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(front.process.pid, signal.SIGKILL)
        front.process.wait(timeout=5)


def dnat_ruleset(fronts: Sequence[Front]) -> str:
    """`internet`'s nftables: each fronted site's :443 goes to its front (same address)."""
    lines = [
        f"table ip {NFT_TABLE} {{",
        "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
    ]
    for front in fronts:
        for address in front.site.addresses:
            lines.append(f"    ip daddr {address} tcp dport 443 dnat to {address}:{front.port}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _nft_internet(text: str | None, delete: bool = False) -> None:
    argv = ["ip", "netns", "exec", "internet", "nft"]
    if delete:
        subprocess.run([*argv, "delete", "table", "ip", NFT_TABLE], capture_output=True, timeout=20)
        return
    done = subprocess.run(
        [*argv, "-f", "-"], input=(text or "").encode(), capture_output=True, timeout=20
    )
    if done.returncode != 0:
        raise RuntimeError("nft in internet failed: " + done.stderr.decode(errors="replace"))


@contextlib.contextmanager
def fronted(plan: Plan, sites: Sequence[SitePlan], work: Path) -> Iterator[dict[str, Front]]:
    """Fronts for `sites` and the dnat in front of them, removed on the way out."""
    fronts: dict[str, Front] = {}
    try:
        for number, site in enumerate(sites):
            fronts[site.domain] = start_front(plan, site, FRONT_BASE_PORT + number, work)
        if fronts:
            _nft_internet(dnat_ruleset(list(fronts.values())))
        yield fronts
    finally:
        if fronts:
            _nft_internet(None, delete=True)
        for front in fronts.values():
            stop_front(front)


# -- the browsers -----------------------------------------------------------------------------


def browser_program(browser: str) -> str | None:
    for name in BROWSER_PROGRAMS[browser]:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_version(program: str) -> str:
    try:
        done = subprocess.run(
            [program, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def trusted_roots(plan: Plan) -> list[tuple[str, Path]]:
    """The roots the visitor trusts: the testbed's web PKI and every national root of the
    profile (the visitor installed it, as the ISPs told them to)."""
    roots = [("netvigil-testbed-webpki", plan.pki_dir / pki.WEBPKI_ROOT_FILE)]
    for root in plan.national_roots:
        roots.append((f"national-{root.id}", plan.pki_dir / f"national-root-{root.id}.pem"))
    return roots


def write_national_roots(plan: Plan) -> None:
    for root in plan.national_roots:
        path = plan.pki_dir / f"national-root-{root.id}.pem"
        if not path.exists():
            root_ca, _ = pki.national_ca(root)
            path.write_bytes(pki.cert_pem(root_ca.cert))


def make_nss_db(directory: Path, roots: Sequence[tuple[str, Path]]) -> None:
    """An NSS certificate database in `directory` trusting `roots` for TLS servers."""
    directory.mkdir(parents=True, exist_ok=True)
    certutil = shutil.which("certutil")
    if certutil is None:
        raise RuntimeError("certutil is missing (Debian: libnss3-tools)")
    db = f"sql:{directory}"
    subprocess.run(
        [certutil, "-N", "-d", db, "--empty-password"], check=True, capture_output=True, timeout=30
    )
    for nickname, pem in roots:
        subprocess.run(
            [certutil, "-A", "-d", db, "-n", nickname, "-t", "C,,", "-i", str(pem)],
            check=True,
            capture_output=True,
            timeout=30,
        )


def browser_argv(
    browser: str, program: str, home: Path, url: str, netlog: Path | None
) -> list[str]:
    if browser == "chromium":
        argv = [
            program,
            "--headless",
            "--no-sandbox",  # root in a namespace: Chromium's sandbox refuses to run as root
            "--disable-gpu",
            f"--user-data-dir={home / 'chromium'}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=Translate,OptimizationHints,MediaRouter",
        ]
        if netlog is not None:
            argv.append(f"--log-net-log={netlog}")
        return [*argv, "--dump-dom", url]
    return [
        program,
        "--headless",
        "--no-remote",
        "--profile",
        str(home / "firefox"),
        "--screenshot",
        str(home / "page.png"),
        url,
    ]


def prepare_profile(browser: str, home: Path, roots: Sequence[tuple[str, Path]]) -> None:
    """A fresh profile: a first visit, as a site sees it, with the visitor's trust store."""
    for name in ("chromium", "firefox", ".pki"):
        shutil.rmtree(home / name, ignore_errors=True)
    if browser == "chromium":
        make_nss_db(home / ".pki" / "nssdb", roots)  # where Chromium on Linux keeps it
    else:
        profile = home / "firefox"
        make_nss_db(profile, roots)  # cert9.db in the profile, as Firefox keeps it
        (profile / "user.js").write_text(
            "".join(
                f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in FIREFOX_PREFS.items()
            )
        )


def run_browser(argv: Sequence[str], home: Path, timeout: float) -> tuple[str, bytes]:
    """Run one browser in its own process group; every process of it is gone on return."""
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MOZ_HEADLESS": "1",
    }
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    status = "ok"
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        status = "timeout"
        out = b""
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=5)
    return status, out[: 1 << 20]


def page_title(dom: bytes) -> str:
    text = dom.decode("utf-8", errors="replace")
    start = text.find("<title>")
    end = text.find("</title>", start)
    return text[start + 7 : end].strip()[:200] if start >= 0 and end > start else ""


def visit(
    browser: str,
    program: str,
    version: str,
    url: str,
    plan: Plan,
    front: Front | None,
    home: Path,
    roots: Sequence[tuple[str, Path]],
    netlog: Path | None = None,
) -> Visit:
    host = (urlsplit(url).hostname or "").lower()
    result = Visit(browser, version, url, host, intercepted_by_censor(plan, host))
    prepare_profile(browser, home, roots)
    before = len(front.records()) if front is not None else 0
    status, out = run_browser(
        browser_argv(browser, program, home, url, netlog), home, VISIT_TIMEOUT
    )
    result.status = status
    if browser == "chromium":
        result.page_title = page_title(out)
        if netlog is not None:
            result.tls = netlog_summary(netlog)
    if front is not None:
        time.sleep(SETTLE)
        result.records = front.records()[before:]
    return result


NETLOG_LIMIT = 64 << 20


def netlog_summary(path: Path) -> dict[str, Any]:
    """What Chromium's NetLog says it sent and negotiated: every ClientHello (the handshake
    message, hex), each connection's version, cipher suite, key-exchange group, ALPN and the
    server's signature algorithm, and the SHA-256 of every certificate chain received."""
    import base64
    import hashlib
    import ssl

    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read(NETLOG_LIMIT))
    except (OSError, ValueError) as exc:
        return {"error": f"NetLog unreadable: {exc}"}
    names = {v: k for k, v in data.get("constants", {}).get("logEventTypes", {}).items()}
    hellos: list[str] = []
    sessions: list[dict[str, Any]] = []
    chains: list[list[str]] = []
    for event in data.get("events", []):
        kind = names.get(event.get("type"))
        params = event.get("params") or {}
        if kind == "SSL_HANDSHAKE_MESSAGE_SENT" and params.get("type") == 1:
            hellos.append(base64.b64decode(params.get("bytes", "")).hex())
        elif kind == "SSL_CONNECT" and "cipher_suite" in params:
            keys = ("version", "cipher_suite", "key_exchange_group", "next_proto")
            sessions.append({k: params.get(k) for k in (*keys, "peer_signature_algorithm")})
        elif kind == "SSL_CERTIFICATES_RECEIVED":
            chains.append(
                [
                    hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
                    for pem in params.get("certificates", [])
                ]
            )
    return {"client_hellos": hellos, "sessions": sessions, "certificate_chains": chains}


# -- the report -------------------------------------------------------------------------------


def score(visits: Sequence[Visit]) -> dict[str, Any]:
    """Precision and recall of the site's verdicts over the visits the site saw."""
    seen = [v for v in visits if v.seen]
    tp = sum(1 for v in seen if v.flagged and v.intercepted)
    fp = sum(1 for v in seen if v.flagged and not v.intercepted)
    fn = sum(1 for v in seen if not v.flagged and v.intercepted)
    tn = sum(1 for v in seen if not v.flagged and not v.intercepted)
    connections = [(r, v.intercepted) for v in seen for r in v.records]
    return {
        "visits": len(visits),
        "seen_by_site": len(seen),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
        "precision": None if tp + fp == 0 else tp / (tp + fp),
        "recall": None if tp + fn == 0 else tp / (tp + fn),
        "connections": len(connections),
        "connections_flagged": sum(
            1 for r, _ in connections if r.get("verdict") == "likely-intercepted"
        ),
        "connections_intercepted": sum(1 for _, truth in connections if truth),
    }


def agrees(v: Visit) -> bool:
    """The site saw the visit, and flagged it exactly when the censor intercepted it."""
    return v.seen and v.flagged == v.intercepted


def print_report(visits: Sequence[Visit], summary: dict[str, Any]) -> None:
    say = textsafe.visible
    for v in visits:
        truth = "intercepted by the censor" if v.intercepted else "not intercepted"
        verdicts = ", ".join(sorted(set(v.verdicts))) or "no connection reached the site"
        print(say(f"{v.browser:8} {v.url}  [{truth}]"))
        detail = f"page: {v.page_title!r}" if v.page_title else f"browser: {v.status}"
        print(say(f"    site saw {len(v.records)} connection(s): {verdicts}; {detail}"))
        data = v.to_json()
        if data["reasons"]:
            print(say("    reasons: " + ", ".join(data["reasons"])))
        if data["best_match"]:
            print(say("    the handshake looks like: " + "; ".join(data["best_match"])))
        if not agrees(v):
            print(say("    DISAGREES with the censor's truth"))
    precision = summary["precision"]
    recall = summary["recall"]
    print(
        f"visits {summary['visits']}, seen by the site {summary['seen_by_site']}: "
        f"flagged {summary['true_positives'] + summary['false_positives']} "
        f"(true {summary['true_positives']}, false {summary['false_positives']}), "
        f"missed {summary['false_negatives']}; precision "
        + ("n/a" if precision is None else f"{precision:.0%}")
        + ", recall "
        + ("n/a" if recall is None else f"{recall:.0%}")
    )


def run_visits(
    plan: Plan,
    urls: Sequence[str],
    browsers: Sequence[str],
    front: bool = True,
    netlog_dir: Path | None = None,
) -> list[Visit]:
    """Each browser visits each URL, one site at a time behind its front (a few processes
    whatever the number of sites). Run inside `client`. ValueError: a URL the profile does
    not serve over https."""
    sites: list[SitePlan] = []
    for url in urls:
        host = (urlsplit(url).hostname or "").lower()
        site = plan.site(host)
        if site is None or urlsplit(url).scheme != "https":
            raise ValueError(f"not an https URL of a site of this profile: {url}")
        if site not in sites:
            sites.append(site)
    write_national_roots(plan)
    roots = trusted_roots(plan)
    programs: dict[str, tuple[str, str]] = {}
    for browser in browsers:
        program = browser_program(browser)
        if program is None:
            print(f"{browser}: not installed, skipped", file=sys.stderr)
            continue
        programs[browser] = (program, browser_version(program))
    visits: list[Visit] = []
    work = Path(tempfile.mkdtemp(prefix="nv-browse-"))
    try:
        for site in sites:
            with fronted(plan, [site] if front else [], work) as fronts:
                for browser, (program, version) in programs.items():
                    for url in urls:
                        host = (urlsplit(url).hostname or "").lower()
                        if host != site.domain:
                            continue
                        netlog = None
                        if netlog_dir is not None and browser == "chromium":
                            netlog_dir.mkdir(parents=True, exist_ok=True)
                            netlog = netlog_dir / f"{len(visits)}-{host}.json"
                        home = work / "home"
                        found = fronts.get(host)
                        visits.append(
                            visit(browser, program, version, url, plan, found, home, roots, netlog)
                        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return visits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil.testbed.browse")
    parser.add_argument("--browser", default="chromium,firefox")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--netlog-dir", type=Path, default=None)
    parser.add_argument("--no-front", action="store_true", help="visit the sites directly")
    parser.add_argument("--all", action="store_true", help="every plain site of the profile")
    parser.add_argument("urls", nargs="*")
    args = parser.parse_args(argv)
    state = os.environ.get("NETVIGIL_TESTBED_STATE")
    if not state:
        print("run this inside the testbed: netvigil testbed browse", file=sys.stderr)
        return 2
    plan = Plan.load(state)
    browsers = [b.strip() for b in args.browser.split(",") if b.strip()]
    unknown = [b for b in browsers if b not in BROWSERS]
    if unknown:
        print(
            f"unknown browser(s): {', '.join(unknown)} (use {', '.join(BROWSERS)})", file=sys.stderr
        )
        return 2
    urls = args.urls or (all_urls(plan) if args.all else default_urls(plan))
    try:
        visits = run_visits(
            plan, urls, browsers, front=not args.no_front, netlog_dir=args.netlog_dir
        )
    except ValueError as exc:
        print(textsafe.visible(str(exc)), file=sys.stderr)
        return 2
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # A front that would not start, a certificate store certutil refused: one line.
        print(textsafe.visible(f"netvigil testbed browse: {exc}"), file=sys.stderr)
        return 1
    summary = score(visits)
    if args.json:
        for v in visits:
            print(json.dumps(v.to_json()))
        print(json.dumps({"summary": summary}))
    else:
        print_report(visits, summary)
    if args.no_front:
        return 0
    return 0 if visits and all(agrees(v) for v in visits) else 1


if __name__ == "__main__":
    sys.exit(main())
