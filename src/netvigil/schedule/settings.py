"""What a schedule measures, where its files live, and the run history.

Files (each directory follows the XDG variables, so a throwaway ``HOME`` or ``XDG_*`` keeps
everything in one place):

- ``$XDG_CONFIG_HOME/netvigil/schedule.json``: the installed schedule (``Settings`` plus how
  it is triggered). No secret is stored: a collector or helper URL with credentials, a query or
  a fragment is refused.
- ``$XDG_STATE_HOME/netvigil/schedule/history.jsonl``: one record per run, the newest
  ``HISTORY_LIMIT`` kept; ``run.lock`` there keeps two runs from overlapping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netvigil.measure import InputError

SUITES = ("web", "im", "all")
_LISTS = ("urls", "input_files", "lists", "references")
HISTORY_LIMIT = 200
_MAX_CONFIG_BYTES = 1024 * 1024
_MAX_HISTORY_BYTES = 4 * 1024 * 1024
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "netvigil"


def config_file() -> Path:
    return config_dir() / "schedule.json"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "netvigil" / "schedule"


def parse_duration(text: str, option: str) -> float:
    """``"30s"``, ``"5m"``, ``"6h"``, ``"1d"`` or plain seconds → seconds (InputError else)."""
    match = _DURATION.match(text)
    if match is None:
        raise InputError(f"{option} {text!r}: give a duration such as 30s, 10m, 6h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if seconds > 366 * 86400:
        raise InputError(f"{option} {text!r}: at most a year")
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Settings:
    """One run's inputs: the suite, what to measure, the probe's options, where results go."""

    suite: str = "web"
    urls: tuple[str, ...] = ()
    input_files: tuple[str, ...] = ()  # absolute paths, read at every run
    lists: tuple[str, ...] = ()
    upload: str | None = None  # the collector the user chose; None: nothing is uploaded
    helper: str | None = None
    resolver: str | None = None
    ca_bundle: str | None = None
    no_doh: bool = False
    probe_cc: str | None = None
    probe_asn: str | None = None
    timeout: float = 10.0
    concurrency: int = 20
    outbox: str | None = None  # None: the default outbox
    upload_timeout: float = 10.0  # per request; a run tries each measurement twice at most
    im_endpoints: str | None = None  # measure's --im-endpoints (the testbed writes one)
    # measure's network check around a run (where measure has one): off, or its targets
    network_check: bool = True
    references: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in _LISTS:
            raw = values.get(name, ())
            if not isinstance(raw, list | tuple) or not all(isinstance(x, str) for x in raw):
                raise InputError(f"schedule config: {name} must be a list of strings")
            values[name] = tuple(raw)
        for item in fields(cls):
            if item.name not in values or item.name in _LISTS:
                continue
            value, default = values[item.name], item.default
            if default is None:
                ok = value is None or isinstance(value, str)
            elif isinstance(default, bool | str):
                ok = type(value) is type(default)
            else:  # a number
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if ok:
                    values[item.name] = int(value) if isinstance(default, int) else float(value)
            if not ok:
                raise InputError(f"schedule config: {item.name} has the wrong type")
        return cls(**values)


def _check_url_without_secrets(url: str, option: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InputError(f"{option} {url!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{option} {url!r}: give an http(s)://HOST[:PORT] URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InputError(
            f"{option}: no credentials, query or fragment in the URL — "
            "a schedule's files never hold secrets"
        )


def validate(settings: Settings, *, suites_supported: tuple[str, ...]) -> None:
    """Everything a run needs, checked now: one-line InputError saying what to fix."""
    from netvigil.measure import gather_inputs
    from netvigil.upload.uploader import CollectorURLError, parse_collector_url

    if settings.suite not in SUITES:
        raise InputError(f"--suite {settings.suite!r}: choose one of {', '.join(SUITES)}")
    if settings.suite not in suites_supported:
        raise InputError(
            f"--suite {settings.suite}: this netvigil's 'measure' has no messaging-app "
            "experiments yet — use --suite web"
        )
    if settings.suite == "im" and (settings.urls or settings.input_files or settings.lists):
        raise InputError(
            "--suite im measures the messaging apps and takes no URLs — use --suite all for both"
        )
    if settings.suite in ("web", "all"):
        for name in settings.input_files:
            if name == "-":
                raise InputError("--input-file -: a schedule cannot read stdin — give a file")
        gather_inputs(list(settings.urls), list(settings.input_files), list(settings.lists))
    if settings.upload is not None:
        try:
            parse_collector_url(settings.upload)
        except CollectorURLError as exc:
            raise InputError(f"--upload: {exc}") from None
    if settings.helper is not None:
        _check_url_without_secrets(settings.helper, "--helper")
    if settings.im_endpoints is not None:
        if settings.suite == "web":
            raise InputError("--im-endpoints is for --suite im or all")
        if not Path(settings.im_endpoints).is_file():
            raise InputError(f"--im-endpoints {settings.im_endpoints}: no such file")
    if settings.ca_bundle is not None and not Path(settings.ca_bundle).is_file():
        raise InputError(f"--ca-bundle {settings.ca_bundle}: no such file — give a PEM file")
    if settings.probe_cc is not None and not re.fullmatch(r"[A-Za-z]{2}", settings.probe_cc):
        raise InputError(f"--probe-cc {settings.probe_cc!r}: give a two-letter country code")
    if settings.probe_asn is not None and not re.fullmatch(r"AS\d{1,10}", settings.probe_asn):
        raise InputError(f"--probe-asn {settings.probe_asn!r}: give a network such as AS9198")
    if not 1 <= settings.timeout <= 600:
        raise InputError("--timeout: give seconds between 1 and 600")
    if not 1 <= settings.upload_timeout <= 600:
        raise InputError("--upload-timeout: give seconds between 1 and 600")
    if not 1 <= settings.concurrency <= 1000:
        raise InputError("--concurrency: give a number between 1 and 1000")


@dataclass(frozen=True)
class Installed:
    """The schedule as installed: its settings and how it is triggered."""

    settings: Settings
    every: float
    jitter: float
    via: str  # "systemd" or "cron"
    installed_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "every": self.every,
            "jitter": self.jitter,
            "via": self.via,
            "installed_at": self.installed_at,
            "settings": self.settings.to_dict(),
            **self.extra,
        }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_installed(installed: Installed, path: Path | None = None) -> Path:
    path = path or config_file()
    _write_atomic(path, json.dumps(installed.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_installed(path: Path | None = None) -> Installed | None:
    """The installed schedule, None when there is none; InputError for a damaged file."""
    path = path or config_file()
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the schedule ({exc.strerror})") from None
    try:
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            raise ValueError("not a schedule")
        return Installed(
            settings=Settings.from_dict(data["settings"]),
            every=float(data.get("every", 0)),
            jitter=float(data.get("jitter", 0)),
            via=str(data.get("via", "")),
            installed_at=str(data.get("installed_at", "")),
        )
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"{path}: damaged schedule ({exc}) — 'netvigil schedule remove' then install again"
        ) from None


# -- history ---------------------------------------------------------------------------------


def history_file() -> Path:
    return state_dir() / "history.jsonl"


def append_history(record: dict[str, Any], path: Path | None = None) -> None:
    """Append one run's record; past ``HISTORY_LIMIT`` lines the oldest are dropped."""
    path = path or history_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    records = read_history(path, limit=HISTORY_LIMIT + 1)
    if len(records) > HISTORY_LIMIT:
        kept = records[-HISTORY_LIMIT:]
        _write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def read_history(path: Path | None = None, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """The newest ``limit`` records, oldest first; torn or foreign lines are skipped."""
    path = path or history_file()
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - _MAX_HISTORY_BYTES))
            raw = handle.read(_MAX_HISTORY_BYTES)
    except FileNotFoundError:
        return []
    records: list[dict[str, Any]] = []
    for line in raw.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records[-limit:] if limit > 0 else []
