"""The trigger of a schedule: a systemd user timer, or a crontab line where there is none.

systemd: ``$XDG_CONFIG_HOME/systemd/user/netvigil-measure.{service,timer}`` (``OnCalendar``
with ``Persistent=true``, so a run missed while the machine was off happens at the next boot;
``RandomizedDelaySec`` for the jitter), enabled with ``systemctl --user enable --now``.
cron: one line of the user's crontab, ending in ``CRON_TAG`` so that it can be found and
removed; its jitter is ``schedule run --jitter``, a random sleep inside the command.
Both call ``netvigil schedule run --config FILE`` with the XDG directories of the install, so
the run finds the same consent, outbox and history as the user's own commands.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from netvigil.measure import InputError

from .settings import format_duration

UNIT = "netvigil-measure"
CRON_TAG = "# netvigil-schedule"
_COMMAND_TIMEOUT = 30.0
_MAX_CRONTAB = 1024 * 1024
_XDG = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")


def units_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_paths() -> tuple[Path, Path]:
    folder = units_dir()
    return folder / f"{UNIT}.service", folder / f"{UNIT}.timer"


@dataclass(frozen=True)
class Calendar:
    """When runs start: every ``step`` ``unit`` ("minute", "hour" or "day")."""

    unit: str
    step: int

    @property
    def on_calendar(self) -> str:
        if self.unit == "minute":
            return f"*-*-* *:00/{self.step}:00"
        if self.unit == "hour":
            return f"*-*-* 00/{self.step}:00:00"
        return "*-*-* 00:00:00"

    @property
    def cron(self) -> str:
        if self.unit == "minute":
            return f"*/{self.step} * * * *"
        if self.unit == "hour":
            return f"0 */{self.step} * * *"
        return "0 0 * * *"

    def next_after(self, now: datetime) -> datetime:
        """The next start after ``now`` (local time), as cron computes it."""
        if self.unit == "day":
            return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.unit == "hour":
            base = now.replace(minute=0, second=0, microsecond=0)
            hour = (now.hour // self.step + 1) * self.step
            return base.replace(hour=0) + timedelta(hours=hour)
        base = now.replace(second=0, microsecond=0)
        minute = (now.minute // self.step + 1) * self.step
        return base.replace(minute=0) + timedelta(minutes=minute)


_EVEN = "5m, 10m, 15m, 20m, 30m, 1h, 2h, 3h, 4h, 6h, 8h, 12h or 1d"


def calendar_for(every: float) -> Calendar:
    """``every`` seconds as a calendar both systemd and cron keep to, or InputError: the period
    must divide an hour (minutes) or a day (hours), so every run is the same distance apart."""
    seconds = int(every)
    if seconds != every or seconds < 60:
        raise InputError(f"--every {format_duration(every)}: at least 1m, e.g. {_EVEN}")
    if seconds == 86400:
        return Calendar("day", 1)
    if seconds % 3600 == 0 and 24 % (seconds // 3600) == 0:
        return Calendar("hour", seconds // 3600)
    if seconds < 3600 and seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        return Calendar("minute", seconds // 60)
    raise InputError(
        f"--every {format_duration(every)}: a schedule must divide the hour or the day — "
        f"use {_EVEN}"
    )


def _xdg_environment() -> dict[str, str]:
    home = Path.home()
    defaults = {
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
    }
    return {name: os.environ.get(name) or str(defaults[name]) for name in _XDG}


def run_argv(config: Path, jitter: float = 0.0) -> list[str]:
    """What the trigger runs: this installation's netvigil, whatever the PATH."""
    argv = [sys.executable, "-m", "netvigil.cli", "schedule", "run", "--config", str(config)]
    if jitter:
        argv += ["--jitter", f"{int(jitter)}s"]
    for word in argv:
        if any(c in word for c in "\n\r\0"):
            raise InputError(f"{word!r}: a path with a line break cannot be scheduled")
    return argv


def _systemd_word(word: str, *, command: bool = True) -> str:
    """One quoted word of a unit file: ``%`` is a specifier everywhere, ``$`` a variable only
    in a command line."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def service_text(config: Path) -> str:
    argv = run_argv(config)
    environment = " ".join(
        _systemd_word(f"{k}={v}", command=False) for k, v in _xdg_environment().items()
    )
    return (
        "# Written by 'netvigil schedule install'; 'netvigil schedule remove' deletes it.\n"
        "[Unit]\n"
        "Description=netvigil: one scheduled measurement run\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"Environment={environment}\n"
        f"ExecStart={' '.join(_systemd_word(w) for w in argv)}\n"
        "Nice=10\n"
    )


def timer_text(every: float, jitter: float) -> str:
    calendar = calendar_for(every)
    return (
        "# Written by 'netvigil schedule install'; 'netvigil schedule remove' deletes it.\n"
        "[Unit]\n"
        f"Description=netvigil: measure every {format_duration(every)}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={calendar.on_calendar}\n"
        f"RandomizedDelaySec={int(jitter)}\n"
        "Persistent=true\n"
        f"Unit={UNIT}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def cron_line(every: float, jitter: float, config: Path) -> str:
    environment = [f"{k}={shlex.quote(v)}" for k, v in _xdg_environment().items()]
    command = " ".join([*environment, *(shlex.quote(w) for w in run_argv(config, jitter))])
    command = command.replace("%", "\\%")  # cron turns a bare % into a newline
    return f"{calendar_for(every).cron} {command} >/dev/null 2>&1 {CRON_TAG}"


# -- the tools -------------------------------------------------------------------------------


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT,
        check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def _why(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout or "").strip().splitlines()
    return (text[0] if text else f"exit status {result.returncode}")[:200]


def systemd_user_session() -> str | None:
    """None when ``systemctl --user`` reaches a user manager, else why not."""
    if shutil.which("systemctl") is None:
        return "no systemctl on PATH"
    try:
        result = _run(["systemctl", "--user", "show-environment"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"systemctl --user: {exc}"
    return None if result.returncode == 0 else f"systemctl --user: {_why(result)}"


def cron_available() -> str | None:
    return None if shutil.which("crontab") else "no crontab on PATH"


def choose_via(via: str) -> str:
    """``systemd`` or ``cron`` (``auto``: systemd when a user manager answers)."""
    if via in ("auto", "systemd"):
        missing = systemd_user_session()
        if missing is None:
            return "systemd"
        if via == "systemd":
            raise InputError(f"--via systemd: no systemd user session ({missing})")
        if cron_available() is None:
            return "cron"
        raise InputError(
            f"no systemd user session ({missing}) and no crontab — run "
            "'netvigil schedule loop' in the foreground instead"
        )
    if via == "cron":
        missing = cron_available()
        if missing is not None:
            raise InputError(f"--via cron: {missing}")
        return "cron"
    raise InputError(f"--via {via!r}: choose auto, systemd or cron")


def install_systemd(every: float, jitter: float, config: Path) -> list[Path]:
    """Write both units and enable the timer; on failure nothing is left behind."""
    service, timer = unit_paths()
    service.parent.mkdir(parents=True, exist_ok=True)
    service.write_text(service_text(config), encoding="utf-8")
    timer.write_text(timer_text(every, jitter), encoding="utf-8")
    for argv in (
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", f"{UNIT}.timer"],
    ):
        result = _run(argv)
        if result.returncode != 0:
            remove_systemd()
            raise InputError(f"{' '.join(argv)} failed: {_why(result)}")
    return [service, timer]


def remove_systemd() -> list[str]:
    """Disable and delete the units (nothing to do when there are none)."""
    done: list[str] = []
    present = [path for path in unit_paths() if path.exists()]
    if not present:
        return done
    have_systemctl = shutil.which("systemctl") is not None
    if have_systemctl:
        _run(["systemctl", "--user", "disable", "--now", f"{UNIT}.timer"])
    for path in present:
        path.unlink(missing_ok=True)
        done.append(f"deleted {path}")
    if have_systemctl:
        _run(["systemctl", "--user", "daemon-reload"])
    return done


def _crontab() -> list[str]:
    result = _run(["crontab", "-l"])
    if result.returncode != 0:  # "no crontab for USER"
        return []
    if len(result.stdout) > _MAX_CRONTAB:
        raise InputError("crontab -l: the crontab is larger than 1 MiB — not touching it")
    return result.stdout.splitlines()


def _write_crontab(lines: list[str]) -> None:
    result = _run(["crontab", "-"], stdin="".join(f"{line}\n" for line in lines))
    if result.returncode != 0:
        raise InputError(f"crontab -: {_why(result)}")


def install_cron(every: float, jitter: float, config: Path) -> str:
    line = cron_line(every, jitter, config)
    kept = [old for old in _crontab() if not old.rstrip().endswith(CRON_TAG)]
    _write_crontab([*kept, line])
    return line


def remove_cron() -> list[str]:
    if cron_available() is not None:
        return []
    lines = _crontab()
    kept = [line for line in lines if not line.rstrip().endswith(CRON_TAG)]
    if len(kept) == len(lines):
        return []
    _write_crontab(kept)
    return [f"removed {len(lines) - len(kept)} line(s) tagged '{CRON_TAG}' from the crontab"]


def next_trigger(via: str, every: float) -> str | None:
    """When the next run starts, as the trigger says (None when it cannot be told)."""
    if via == "systemd":
        if shutil.which("systemctl") is None:
            return None
        try:
            result = _run(
                [
                    *("systemctl", "--user", "show", f"{UNIT}.timer"),
                    *("--property=NextElapseUSecRealtime", "--value"),
                ]
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        value = result.stdout.strip()[:100]
        return value if result.returncode == 0 and value and value != "n/a" else None
    if via == "cron":
        try:
            calendar = calendar_for(every)
        except InputError:
            return None
        return calendar.next_after(datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M %Z")
    return None
