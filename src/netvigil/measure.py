"""`netvigil measure`: many URLs, concurrently, with progress, a summary and OONI JSONL output.

Inputs come from the command line, a file (one URL per line, or a Citizen Lab CSV) or a shipped
Citizen Lab list (``--list kz``). A malformed input is reported in one line and skipped; every
measurement is written to the output file the moment it is done, so an interruption loses
nothing already measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from netvigil import netstatus, textsafe
from netvigil.experiments.web_connectivity import ProbeConfig, WebConnectivity
from netvigil.net.trace import Trace
from netvigil.netstatus import ONLINE, NetworkChecker, NetworkStatus, NetworkWatch
from netvigil.upload import cli as _upload_cli

MAX_URL_LENGTH = 2048
MAX_INPUTS = 100_000


class InputError(ValueError):
    """A problem with what the user asked to measure, as one line."""


@dataclass
class Inputs:
    urls: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line each: where, what, why


def check_url(url: str) -> str | None:
    """None if `url` can be measured, else why not."""
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "not an http:// or https:// URL"
    if not host:
        return "has no host name"
    if any(c.isspace() for c in url):
        return "contains white space"
    return None


def list_names() -> list[str]:
    folder = resources.files("netvigil.data").joinpath("test-lists")
    return sorted(
        p.name[:-4]
        for p in folder.iterdir()
        if p.name.endswith(".csv") and not p.name.startswith("00-")
    )


def _read_lines(text: str, source: str, inputs: Inputs) -> None:
    first = text.split("\n", 1)[0]
    if first.startswith("url,") or first.startswith('"url"'):
        reader = csv.DictReader(io.StringIO(text))
        rows: Iterable[tuple[int, str]] = (
            (n + 2, (row.get("url") or "").strip()) for n, row in enumerate(reader)
        )
    else:
        rows = ((n + 1, line.strip()) for n, line in enumerate(text.splitlines()))
    for line_number, url in rows:
        if not url or url.startswith("#"):
            continue
        problem = check_url(url)
        if problem:
            inputs.skipped.append(f"{source}:{line_number}: '{url[:80]}' {problem} — skipped")
        else:
            inputs.urls.append(url)
        if len(inputs.urls) > MAX_INPUTS:
            raise InputError(f"{source}: more than {MAX_INPUTS} URLs — split the list")


def gather_inputs(urls: list[str], files: list[str], lists: list[str]) -> Inputs:
    inputs = Inputs()
    for url in urls:
        problem = check_url(url)
        if problem:
            inputs.skipped.append(f"argument: '{url[:80]}' {problem} — skipped")
        else:
            inputs.urls.append(url)
    for name in files:
        path = Path(name)
        if name != "-" and not path.is_file():
            raise InputError(
                f"{name}: no such file — give a file with one URL per line or a Citizen Lab CSV"
            )
        text = (
            sys.stdin.read() if name == "-" else path.read_text(encoding="utf-8", errors="replace")
        )
        _read_lines(text, name, inputs)
    for code in lists:
        code = code.lower()
        if code not in list_names():
            raise InputError(f"no test list '{code}' — use one of: {', '.join(list_names())}")
        data = (
            resources.files("netvigil.data")
            .joinpath("test-lists", f"{code}.csv")
            .read_text(encoding="utf-8")
        )
        _read_lines(data, f"list {code}", inputs)
    inputs.urls = list(dict.fromkeys(inputs.urls))
    if not inputs.urls and inputs.skipped:
        # The reasons would otherwise be lost: the caller prints them only when it goes on.
        first = inputs.skipped[0].removesuffix(" — skipped")
        more = f" (and {len(inputs.skipped) - 1} more)" if len(inputs.skipped) > 1 else ""
        raise InputError(f"nothing to measure: every input was skipped — {first}{more}")
    if not inputs.urls:
        raise InputError("nothing to measure — give URLs, --input-file FILE or --list CC")
    return inputs


@dataclass
class RunResult:
    verdicts: list[dict[str, Any]]
    seconds: float
    # test_keys.x_network_status of each verdict, in the same order (None: no network check)
    network: list[dict[str, Any] | None] = field(default_factory=list)


def network_checker(config: ProbeConfig) -> NetworkChecker:
    """The checks of a run: the probe's own resolver, its helper, its reference targets."""
    from netvigil.net import dns as ndns

    async def resolve(name: str, trace: Trace) -> ndns.DNSResult:
        if config.resolver is None:
            return await ndns.resolve_system(name, timeout=config.dns_timeout, trace=trace)
        return await ndns.resolve(
            name,
            config.resolver,
            port=config.resolver_port,
            timeout=config.dns_timeout,
            late_window=0.0,
            trace=trace,
        )

    step = min(5.0, config.connect_timeout)
    return NetworkChecker(
        resolve=resolve,
        resolver_name=config.resolver or "system",
        trust=config.trust,
        helper_url=config.helper_url,
        references=config.reference_urls,
        step_timeout=step,
        budget=max(step * 2, config.dns_timeout + step),
    )


async def reverdict_after_check(experiment: Any, measurement: dict[str, Any]) -> None:
    """The verdict again, now that the measurement has its network status: the experiment's
    own ``reverdict`` (it also refreshes OONI's keys), else the engine in a thread."""
    again = getattr(experiment, "reverdict", None)
    if again is not None:
        await again(measurement)
        return
    from netvigil.verdict import analyze

    verdict = await asyncio.to_thread(analyze, measurement)
    measurement["test_keys"]["x_netvigil_verdict"] = verdict.to_dict()


def reached_site(measurement: dict[str, Any]) -> bool:
    """The network carried this measurement: its verdict is ok, or a request got a response
    (without a control the verdict of a fetched page is only "unknown")."""
    test_keys = measurement.get("test_keys") or {}
    if (test_keys.get("x_netvigil_verdict") or {}).get("outcome") == "ok":
        return True
    for request in test_keys.get("requests") or []:
        if not isinstance(request, dict):
            continue
        response = request.get("response")
        if not request.get("failure") and isinstance(response, dict) and response.get("code"):
            return True
    return False


Release = Callable[[dict[str, Any], NetworkStatus | None], Awaitable[None]]


@dataclass
class WatchedRun:
    """Measurements of one run and the network watch around them (None: no check): a
    measurement is released at once without a watch, else when the watch knows its status."""

    watch: NetworkWatch | None
    release: Release

    def begin(self) -> NetworkStatus | None:
        return self.watch.begin() if self.watch is not None else None

    async def done(self, measurement: dict[str, Any], before: NetworkStatus | None) -> None:
        if self.watch is None or before is None:
            await self.release(measurement, None)
            return
        await self.watch.done(measurement, before, reached_site(measurement))


@contextlib.asynccontextmanager
async def watched_run(config: Any, release: Release) -> AsyncIterator[WatchedRun]:
    """The network watch of a run (websites and messaging apps alike), when the config asks for
    it: checks before, while failures pile up and at the end; an interruption still releases
    every measurement held, so nothing already measured is lost."""
    watch: NetworkWatch | None = None
    if getattr(config, "network_check", False):  # a stand-in experiment may have no config
        watch = NetworkWatch(network_checker(config), release=release)
        await watch.start()
    finished = asyncio.Event()
    watcher = asyncio.create_task(watch.run(finished)) if watch is not None else None
    try:
        yield WatchedRun(watch, release)
        if watch is not None:
            await watch.finish()
    except BaseException:
        if watch is not None:
            await watch.flush()  # an interruption loses nothing already measured
        raise
    finally:
        finished.set()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def run_measurements(
    experiment: WebConnectivity,
    urls: list[str],
    *,
    concurrency: int = 100,
    per_host: int = 1,
    output: IO[str] | None = None,
    progress: Progress | None = None,
    collected: list[dict[str, Any]] | None = None,
) -> RunResult:
    """Measure every URL with at most `concurrency` in flight and `per_host` per host name.

    `collected`: also append every measurement there (for `--upload`). With the config's
    `network_check`, the network is checked around the measurements (netvigil.netstatus) and
    a measurement is written once its network status is known: at once for a site that
    answered, after the next check for a failure (a cut in the middle of a run blames no site).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    overall = asyncio.Semaphore(max(1, concurrency))
    hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(
        lambda: asyncio.Semaphore(max(1, per_host))
    )
    verdicts: list[dict[str, Any]] = []
    network: list[dict[str, Any] | None] = []
    counts: Counter[str] = Counter()
    task_id = progress.add_task("measuring", total=len(urls), outcomes="") if progress else None
    await experiment.prepare()  # the verdict engine loads before any reply can be kept waiting

    async def emit(measurement: dict[str, Any], status: NetworkStatus | None) -> None:
        if status is not None:
            measurement["test_keys"]["x_network_status"] = status.to_dict()
            if status.status != ONLINE:
                await reverdict_after_check(experiment, measurement)
        verdict = measurement["test_keys"]["x_netvigil_verdict"]
        verdicts.append(verdict)
        network.append(status.to_dict() if status is not None else None)
        if output is not None:
            output.write(json.dumps(measurement, separators=(",", ":")) + "\n")
            output.flush()
        if collected is not None:
            collected.append(measurement)
        outcome = str(verdict.get("outcome", ""))
        counts[
            "offline"
            if outcome.startswith("network/")
            else "blocked"
            if verdict.get("blocked")
            else "ok"
        ] += 1
        if progress is not None and task_id is not None:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            progress.update(task_id, advance=1, outcomes=summary)

    async with watched_run(getattr(experiment, "config", None), emit) as run:

        async def one(url: str) -> None:
            host = (urlsplit(url).hostname or "").lower()
            async with hosts[host], overall:
                before = run.begin()
                measurement = await experiment.measure(url)
            await run.done(measurement, before)

        await asyncio.gather(*(one(u) for u in urls))
    return RunResult(verdicts, loop.time() - started, network)


def make_progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[outcomes]}"),
        console=Console(stderr=True),
        transient=False,
    )


def network_lines(result: RunResult) -> list[str]:
    """What the network checks found, in plain words (empty when it was online throughout)."""
    statuses = [n for n in result.network if n is not None]
    offline = sum(1 for v in result.verdicts if v.get("outcome") == "network/offline")
    degraded = sum(1 for v in result.verdicts if v.get("outcome") == "network/degraded")
    lines: list[str] = []
    if result.verdicts and offline == len(result.verdicts):
        lines.append("the network was offline: no site is blamed")
    elif offline:
        lines.append(
            f"the network was offline during {offline} of {len(result.verdicts)} measurements: "
            "those sites are not blamed"
        )
    if degraded:
        lines.append(
            f"the network was degraded: {degraded} failure(s) matched its failing checks and "
            "are not blamed on their sites"
        )
    failed: dict[tuple[str, str], str] = {}
    for status in statuses:
        if status.get("status") == ONLINE:
            continue
        for check in status.get("evidence") or []:
            if check.get("failure"):
                key = (str(check.get("check")), str(check.get("target")))
                failed[key] = f"{check.get('stage')}: {check.get('failure')} at {check.get('t')}"
    lines += [f"  {kind} {target}: {how}" for (kind, target), how in sorted(failed.items())]
    return lines


def print_summary(result: RunResult, console: Console) -> None:
    lines = network_lines(result)
    if result.verdicts and lines and lines[0].startswith("the network was offline: "):
        console.print(
            Text(f"{len(result.verdicts)} URLs measured in {result.seconds:.1f} s; ")
            + textsafe.text(lines[0], "bold yellow")
        )
        for line in lines[1:]:
            console.print(textsafe.text(line))
        return
    _print_outcomes(result, console)
    for line in lines:
        console.print(textsafe.text(line, "yellow"))


def _print_outcomes(result: RunResult, console: Console) -> None:
    by_outcome: dict[str, list[str]] = defaultdict(list)
    apps = 0
    for verdict in result.verdicts:
        # a messaging-app measurement has no input: it is named by its test
        label = verdict.get("input") or verdict.get("test_name") or ""
        apps += not verdict.get("input")
        by_outcome[str(verdict.get("outcome", "unknown"))].append(str(label))
    url_count = len(result.verdicts) - apps
    what = " and ".join(
        part
        for part in (
            f"{url_count} URLs" if url_count else "",
            f"{apps} messaging apps" if apps else "",
        )
        if part
    )
    # Inputs and outcomes come from files and the network: plain text only (textsafe).
    table = Table(
        title=Text(f"{what or '0 URLs'} measured in {result.seconds:.1f} s"),
        title_justify="left",
    )
    table.add_column("outcome")
    table.add_column("URLs" if not apps else "measurements", justify="right")
    table.add_column("examples", overflow="fold")

    def order(item: tuple[str, list[str]]) -> tuple[int, str]:
        name = item[0]
        quiet = ("down", "unknown", "network/offline", "network/degraded")
        return (0 if name == "ok" else 1 if name in quiet else 2, name)

    for outcome, urls in sorted(by_outcome.items(), key=order):
        style = (
            "green"
            if outcome == "ok"
            else "yellow"
            if outcome in ("down", "unknown", "network/offline", "network/degraded")
            else "bold red"
        )
        examples = ", ".join(urls[:3]) + (f" … (+{len(urls) - 3})" if len(urls) > 3 else "")
        table.add_row(textsafe.text(outcome, style), str(len(urls)), textsafe.text(examples))
    console.print(table)


def consent_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "netvigil" / "consent.json"


CONSENT_TEXT = """\
Before netvigil measures your network, please read this.

- The sites you test are contacted from YOUR connection. Anyone watching it (your ISP, your
  employer, the state) can see that you connected to them, including blocked ones. In some
  countries testing for censorship can have legal or personal consequences.
- netvigil never records your public IP address, and uploads nothing unless you ask it to.
- Measurements are written only where you tell it (--output).
"""


def ensure_consent(assume_yes: bool, stdin_is_tty: bool) -> None:
    """Informed consent before the first real-network run; remembered afterwards."""
    path = consent_path()
    if path.exists():
        return
    if not assume_yes:
        if not stdin_is_tty:
            raise InputError(
                "first real-network run needs your informed consent — run it once in a terminal, "
                "or pass --consent after reading 'netvigil measure --help'"
            )
        print(CONSENT_TEXT, file=sys.stderr)
        answer = input("Type 'yes' to measure from this network: ").strip().lower()
        if answer != "yes":
            raise InputError("no consent given — nothing was measured")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"consent": True, "text_version": 1}) + "\n")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "measure",
        help="measure websites from this network (OONI web_connectivity)",
        description=(
            "Measure websites from this network against an uncensored control and say how each is "
            "blocked. Inside the testbed (netvigil testbed run ... -- netvigil measure ...) the "
            "resolvers, the control helper and the trust anchor come from the testbed. On a real "
            "network: the system resolver, a DoH resolver as a second opinion, the Mozilla roots "
            "(certifi, never the OS store) and the control helper you give with --helper."
        ),
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="http:// or https:// URLs to measure")
    p.add_argument(
        "--suite",
        choices=("web", "im", "all"),
        default="web",
        help="web: the URLs given (OONI web_connectivity; the default); im: the messaging apps "
        "(OONI telegram, whatsapp, signal, facebook_messenger); all: both",
    )
    p.add_argument(
        "--im-endpoints",
        metavar="FILE",
        help="an endpoint override file for the messaging apps (the testbed writes one; see "
        "docs/messaging-experiments.md)",
    )
    p.add_argument(
        "--input-file",
        "-f",
        action="append",
        default=[],
        metavar="FILE",
        help="one URL per line, or a Citizen Lab CSV; - for stdin",
    )
    p.add_argument(
        "--list",
        "-l",
        action="append",
        default=[],
        metavar="CC",
        help="a shipped Citizen Lab test list (kz, ru, ir, cn, by, cis, global)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write OONI measurements here (JSONL)")
    p.add_argument(
        "--json", action="store_true", help="print one verdict object per URL instead of a table"
    )
    p.add_argument("--concurrency", type=int, default=100, help="URLs in flight (default 100)")
    p.add_argument(
        "--per-host",
        type=int,
        default=1,
        help="URLs in flight per host name (default 1: a site is not hammered, "
        "and its URLs do not slow each other down)",
    )
    p.add_argument(
        "--resolver",
        metavar="IP",
        help="the resolver to test (default: system, or the testbed's ISP)",
    )
    p.add_argument("--second-resolver", metavar="IP", help="a second resolver, asked over UDP")
    p.add_argument("--doh", metavar="URL", help="a DoH resolver as second opinion (real networks)")
    p.add_argument("--no-doh", action="store_true", help="no DoH second opinion")
    p.add_argument("--helper", metavar="URL", help="control helper URL (OONI-compatible)")
    p.add_argument(
        "--ca-bundle", metavar="PEM", help="trust anchors (default: certifi's Mozilla roots)"
    )
    p.add_argument("--probe-cc", default=None, help="country code to record (default ZZ)")
    p.add_argument("--probe-asn", default=None, help="network to record, e.g. AS9198 (default AS0)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per network step (default 10)"
    )
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="URL",
        help="a reference target for the network check: http(s)://host/ or dns://IP "
        "(repeatable; default: the testbed's, or Apple's, Microsoft's and Cloudflare's "
        "connectivity-check addresses)",
    )
    p.add_argument(
        "--no-network-check",
        action="store_true",
        help="do not check the resolver, the helper and the reference targets around the run "
        "(then an offline network makes every site look blocked); NETVIGIL_NETWORK_CHECK=0 "
        "does the same outside the testbed unless --reference is given",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--consent",
        action="store_true",
        help="I have read the risks: measuring from my network is visible to whoever watches it",
    )
    p.add_argument(
        "--upload",
        action="store_true",
        help="after measuring, queue the measurements in the outbox (scrubbed) and send them to "
        "the collector you chose (--collector URL, or 'netvigil upload --collector URL "
        "--remember'); nothing is uploaded without --upload",
    )
    p.add_argument(
        "--collector",
        nargs="?",
        const=_upload_cli._FROM_ENV,
        metavar="URL",
        help="collector base URL for --upload (without URL: $NETVIGIL_COLLECTOR_URL, set "
        "inside the testbed)",
    )
    p.add_argument("--outbox", metavar="DIR", help="outbox directory for --upload")


DEFAULT_DOH = "https://dns.quad9.net/dns-query"


def probe_config(
    *,
    ca_bundle: str | None = None,
    resolver: str | None = None,
    second_resolver: str | None = None,
    doh: str | None = None,
    no_doh: bool = False,
    helper: str | None = None,
    probe_cc: str | None = None,
    probe_asn: str | None = None,
    timeout: float = 10.0,
    im_endpoints: str | None = None,
    network_check: bool = False,
    references: list[str] | None = None,
) -> ProbeConfig:
    """The probe's configuration: what the user gave, else the testbed's, else real-network defaults.

    `network_check`: check the network around the run (netvigil.netstatus) against
    `references` (reference targets), else the testbed's ($NETVIGIL_REFERENCE_URLS), else,
    on a real network, netstatus.DEFAULT_REFERENCES."""
    from netvigil.net.tls import TrustStore

    env = os.environ
    in_testbed = env.get("NETVIGIL_TESTBED") == "1"
    bundle = ca_bundle or (env.get("NETVIGIL_CA_BUNDLE") if in_testbed else None)
    if bundle and not Path(bundle).is_file():
        raise InputError(f"{bundle}: no such trust bundle — give a PEM file with --ca-bundle")
    try:
        trust = TrustStore.from_pem_file(bundle) if bundle else TrustStore.mozilla()
    except ValueError as exc:
        raise InputError(f"{bundle}: not a PEM certificate bundle ({exc})") from None
    timeout = max(1.0, float(timeout))
    try:
        reference_urls = netstatus.parse_references(
            references
            if references
            else [env.get(netstatus.REFERENCES_ENV, "")]
            if in_testbed
            else list(netstatus.DEFAULT_REFERENCES)
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return ProbeConfig(
        trust=trust,
        resolver=resolver or (env.get("NETVIGIL_RESOLVER") if in_testbed else None),
        second_resolver=second_resolver
        or (env.get("NETVIGIL_PUBLIC_RESOLVER") if in_testbed else None),
        doh_url=None if (no_doh or in_testbed) else (doh or DEFAULT_DOH),
        helper_url=helper or (env.get("NETVIGIL_HELPER_URL") if in_testbed else None),
        probe_cc=(probe_cc or env.get("NETVIGIL_PROBE_CC") or "ZZ").upper(),
        probe_asn=probe_asn or env.get("NETVIGIL_PROBE_ASN") or "AS0",
        connect_timeout=timeout,
        tls_timeout=timeout,
        http_timeout=timeout * 1.5,
        control_timeout=timeout * 3,
        url_budget=timeout * 6,
        annotations={"netvigil_testbed": env.get("NETVIGIL_TESTBED_PROFILE", "")}
        if in_testbed
        else {},
        im_endpoints=im_endpoints
        or (env.get("NETVIGIL_IM_ENDPOINTS") if in_testbed else None)
        or None,
        network_check=network_check,
        reference_urls=reference_urls if network_check else (),
    )


def testbed_config(timeout: float = 10.0) -> ProbeConfig:
    """Inside `netvigil testbed run`: everything from the testbed's environment."""
    return probe_config(timeout=timeout, network_check=True)


NETWORK_CHECK_ENV = "NETVIGIL_NETWORK_CHECK"


def network_check_wanted(args: Any) -> bool:
    """The network check (netvigil.netstatus) unless --no-network-check; on a real network
    without --reference, NETVIGIL_NETWORK_CHECK=0 also turns the default off (scripts, tests
    on loopback: no contact with the default reference targets). Inside the testbed it uses
    the testbed's own targets and is always on by default."""
    if args.no_network_check:
        return False
    if os.environ.get("NETVIGIL_TESTBED") == "1" or args.reference:
        return True
    return os.environ.get(NETWORK_CHECK_ENV, "1") != "0"


def config_from_args(args: Any) -> ProbeConfig:
    return probe_config(
        ca_bundle=args.ca_bundle,
        resolver=args.resolver,
        second_resolver=args.second_resolver,
        doh=args.doh,
        no_doh=args.no_doh,
        helper=args.helper,
        probe_cc=args.probe_cc,
        probe_asn=args.probe_asn,
        timeout=args.timeout,
        im_endpoints=getattr(args, "im_endpoints", None),
        network_check=network_check_wanted(args),
        references=list(args.reference),
    )


def upload_target(args: Any) -> tuple[str, bool] | None:
    """(collector URL, keep_network_name) for `--upload`, None without it; InputError, before
    anything is measured, for a missing or refused collector. Chosen as `netvigil upload`
    chooses: `--collector URL`, `--collector` alone ($NETVIGIL_COLLECTOR_URL), else the saved
    choice."""
    if not args.upload:
        if args.collector is not None or args.outbox is not None:
            raise InputError(
                "--collector and --outbox need --upload: nothing is uploaded without it"
            )
        return None
    url, error = _upload_cli._choose_collector(args)
    if error:
        raise InputError(error)
    if url is None:
        raise InputError(
            "--upload needs a collector: --collector URL, or save one once with "
            "'netvigil upload --collector URL --remember'"
        )
    from netvigil.upload.uploader import CollectorURLError, parse_collector_url

    try:
        parse_collector_url(url)
    except CollectorURLError as exc:
        raise InputError(str(exc)) from None
    keep = not args.collector and _upload_cli.saved_choice().get("keep_network_name") is True
    return url, keep


def upload_measurements(
    measurements: list[dict[str, Any]], url: str, keep_network_name: bool, outbox_dir: str | None
) -> tuple[int, str]:
    """Queue the measurements in the outbox and send the outbox: (exit code, one-line summary)."""
    from netvigil.upload.outbox import Outbox, OutboxBusy, OutboxFull
    from netvigil.upload.scrub import ScrubOptions
    from netvigil.upload.uploader import UploadConfig, upload_outbox

    options = ScrubOptions(keep_network_name=keep_network_name)
    try:
        queued = _upload_cli.queue_measurements(
            measurements, outbox_dir, keep_network_name=keep_network_name
        )
    except OutboxFull as exc:
        return 1, f"upload: {exc}"
    outbox = Outbox(outbox_dir, scrub_options=options)
    try:
        summary = asyncio.run(
            upload_outbox(outbox, UploadConfig(collector=url, scrub_options=options))
        )
    except OutboxBusy as exc:
        return 1, f"upload: queued {queued}, not sent: {exc}"
    line = (
        f"upload to {url}: queued {queued}, sent {summary.sent} "
        f"({summary.duplicates} already known), rejected {summary.rejected}, "
        f"still pending {summary.pending}"
    )
    if summary.pending:
        line += " (run 'netvigil upload' later to resend them)"
    return (0 if summary.pending == 0 and summary.rejected == 0 else 1), line


def run(args: Any) -> int:
    suite = getattr(args, "suite", "web")
    if suite == "im":
        if args.urls or args.input_file or args.list:
            raise InputError("--suite im measures the messaging apps and takes no URLs")
        inputs = Inputs()
    else:
        inputs = gather_inputs(list(args.urls), list(args.input_file), list(args.list))
    upload = upload_target(args)
    for line in inputs.skipped:
        print(textsafe.visible(f"netvigil: {line}"), file=sys.stderr)
    in_testbed = os.environ.get("NETVIGIL_TESTBED") == "1"
    if not in_testbed:
        ensure_consent(args.consent, sys.stdin.isatty())
    config = config_from_args(args)
    overrides = None
    if suite != "web":
        from netvigil.measure_im import SuiteError, im_overrides

        try:
            overrides = im_overrides(config)
        except SuiteError as exc:
            raise InputError(str(exc)) from None
    if config.helper_url is None and suite != "im":
        print(
            "netvigil: no control helper (--helper URL): verdicts will be less certain",
            file=sys.stderr,
        )
    experiment = WebConnectivity(config)
    output = open(args.output, "a", encoding="utf-8") if args.output else None  # noqa: SIM115
    progress = make_progress(not args.no_progress and not args.json and sys.stderr.isatty())
    collected: list[dict[str, Any]] | None = [] if upload is not None else None

    async def measure_all() -> RunResult:
        started = asyncio.get_running_loop().time()
        result = RunResult([], 0.0)
        if inputs.urls:
            result = await run_measurements(
                experiment,
                inputs.urls,
                concurrency=args.concurrency,
                per_host=args.per_host,
                output=output,
                progress=progress,
                collected=collected,
            )
        if overrides is not None:
            from netvigil.measure_im import run_im

            await run_im(
                config,
                overrides,
                output=output,
                progress=progress,
                collected=collected,
                verdicts=result.verdicts,
                network=result.network,
            )
        result.seconds = asyncio.get_running_loop().time() - started
        return result

    try:
        with progress if progress is not None else contextlib.nullcontext():
            result = asyncio.run(measure_all())
    finally:
        experiment.close()  # the verdict thread
        if output is not None:
            output.close()
    if args.json:
        for verdict, status in zip(result.verdicts, result.network, strict=True):
            print(json.dumps({**verdict, "network_status": status} if status else verdict))
    else:
        from netvigil.testbed.report import make_console

        print_summary(result, make_console())
        if inputs.skipped:
            print(f"  {len(inputs.skipped)} input(s) skipped (see above).")
        if args.output:
            print(textsafe.visible(f"  measurements: {args.output}"))
    if upload is not None and collected is not None:
        code, line = upload_measurements(collected, upload[0], upload[1], args.outbox)
        print(textsafe.visible(line), file=sys.stderr if args.json else sys.stdout)
        return code
    return 0
