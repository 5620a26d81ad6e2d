"""`netvigil schedule`: install/status/remove in a throwaway home with a fake `systemctl` and
`crontab` (they record every call), runs through the outbox to a real collector on loopback
that is first unreachable then up, the lock, the loop, and the unit files checked by the real
`systemd-analyze` (and run by the real user manager when this machine has one).

Every URL is an IP literal on 127.0.0.1 (no DNS), no control helper, no DoH.
"""

from __future__ import annotations

import json
import os
import shutil
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

from conftest import needs_testbed
from netvigil.cli import main
from netvigil.schedule import Settings, run_loop, run_once, runner, settings, timers

FAKE_SYSTEMCTL = """#!/bin/sh
printf 'systemctl %s\\n' "$*" >> "$FAKE_LOG"
if [ -n "$FAKE_NO_SYSTEMD" ]; then
  echo "Failed to connect to bus: No medium found" >&2
  exit 1
fi
case "$*" in
  *NextElapseUSecRealtime*) echo "Mon 2026-12-07 06:00:00 UTC" ;;
esac
exit 0
"""

FAKE_CRONTAB = """#!/bin/sh
printf 'crontab %s\\n' "$*" >> "$FAKE_LOG"
case "$1" in
  -l) if [ -f "$FAKE_CRONTAB" ]; then /bin/cat "$FAKE_CRONTAB"; else
        echo "no crontab for $USER" >&2; exit 1; fi ;;
  -) /bin/cat > "$FAKE_CRONTAB" ;;
esac
"""


# On loopback: no DoH, and no network check around a run (its reference targets are real
# sites; the testbed test below keeps it).
LOCAL: dict[str, Any] = {"no_doh": True, "timeout": 3, "network_check": False}


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> str:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "netvigil.cli", "collector"),
                *("--data", str(tmp_path / "collector"), "--listen", f"127.0.0.1:{port}"),
                *("--rate", "0"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/api/v1/log/tree-head", timeout=2).status_code == 200:
                    return base
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail("the collector did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway home, its XDG directories, and a PATH of fake systemctl and crontab."""
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("NETVIGIL_TESTBED", "NETVIGIL_COLLECTOR_URL", "NETVIGIL_HELPER_URL"):
        monkeypatch.delenv(name, raising=False)
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("crontab", FAKE_CRONTAB)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_CRONTAB", str(tmp_path / "crontab"))
    monkeypatch.delenv("FAKE_NO_SYSTEMD", raising=False)
    return tmp_path


def _calls(home: Path) -> list[str]:
    log = home / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _consent() -> None:
    from netvigil.measure import ensure_consent

    ensure_consent(True, False)


def _units(home: Path) -> tuple[Path, Path]:
    folder = home / "xdg_config_home" / "systemd" / "user"
    return folder / "netvigil-measure.service", folder / "netvigil-measure.timer"


def _config(home: Path) -> Path:
    return home / "xdg_config_home" / "netvigil" / "schedule.json"


def _history(home: Path) -> list[dict[str, Any]]:
    path = home / "xdg_state_home" / "netvigil" / "schedule" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- install, status, remove -----------------------------------------------------------------


def test_install_writes_a_user_timer_and_service_and_enables_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("schedule", "install", "--every", "6h", "--jitter", "30m", "--list", "kz"),
            *("--upload", "http://127.0.0.1:9/", "--consent", "--no-doh", "--no-network-check"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    service, timer = _units(home)
    service_text, timer_text = service.read_text(), timer.read_text()
    assert "Type=oneshot" in service_text
    exec_start = next(line for line in service_text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (
        f'ExecStart="{sys.executable}" "-m" "netvigil.cli" "schedule" "run" '
        f'"--config" "{_config(home)}"'
    )
    assert f'"XDG_STATE_HOME={home / "xdg_state_home"}"' in service_text
    assert "OnCalendar=*-*-* 00/6:00:00" in timer_text
    assert "RandomizedDelaySec=1800" in timer_text
    assert "Persistent=true" in timer_text
    assert "Unit=netvigil-measure.service" in timer_text
    assert "WantedBy=timers.target" in timer_text
    assert _calls(home) == [
        "systemctl --user show-environment",
        "crontab -l",  # a line left by an earlier cron install would be removed
        "systemctl --user daemon-reload",
        "systemctl --user enable --now netvigil-measure.timer",
        "systemctl --user show netvigil-measure.timer --property=NextElapseUSecRealtime --value",
    ]
    saved = json.loads(_config(home).read_text())
    assert saved["via"] == "systemd" and saved["every"] == 21600 and saved["jitter"] == 1800
    assert saved["settings"]["lists"] == ["kz"]
    assert saved["settings"]["upload"] == "http://127.0.0.1:9/"
    assert saved["settings"]["outbox"] == str(home / "xdg_data_home" / "netvigil" / "outbox")
    assert (home / "xdg_config_home" / "netvigil" / "consent.json").exists()
    assert "next run: Mon 2026-12-07 06:00:00 UTC" in out


def test_status_then_remove_undoes_everything_and_remove_is_idempotent(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", "install", "--every", "1h", "--list", "kz", "--consent"]) == 0
    capsys.readouterr()
    assert main(["schedule", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["installed"]["via"] == "systemd"
    assert status["installed"]["jitter"] == 360  # a tenth of --every
    assert status["next_run"] == "Mon 2026-12-07 06:00:00 UTC"
    assert status["outbox"]["pending"] == 0 and status["runs"] == []
    assert main(["schedule", "status"]) == 0
    text = capsys.readouterr().out
    assert "every 1h" in text and "via systemd" in text and "nothing is uploaded" in text
    (home / "calls.log").unlink()
    assert main(["schedule", "remove"]) == 0
    out = capsys.readouterr().out
    assert "schedule removed" in out
    assert not any(path.exists() for path in _units(home))
    assert not _config(home).exists()
    assert _calls(home) == [
        "systemctl --user disable --now netvigil-measure.timer",
        "systemctl --user daemon-reload",
        "crontab -l",
    ]
    (home / "calls.log").unlink()
    assert main(["schedule", "remove"]) == 0  # again: nothing to do, nothing disabled
    assert "nothing to remove" in capsys.readouterr().out
    assert _calls(home) == ["crontab -l"]
    assert main(["schedule", "status"]) == 0
    assert "no schedule installed" in capsys.readouterr().out


def test_without_a_systemd_user_session_a_tagged_crontab_line_is_used(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_NO_SYSTEMD", "1")
    mine = "17 3 * * * /usr/local/bin/backup  # the user's own line"
    (home / "crontab").write_text(mine + "\n")
    code = main(
        [*("schedule", "install", "--every", "30m", "--jitter", "5m", "-l", "kz", "--consent")]
    )
    assert code == 0, capsys.readouterr().err
    lines = (home / "crontab").read_text().splitlines()
    assert lines[0] == mine and len(lines) == 2
    line = lines[1]
    assert line.startswith("*/30 * * * * ") and line.endswith(" # netvigil-schedule")
    assert f"{sys.executable} -m netvigil.cli schedule run --config {_config(home)}" in line
    assert "--jitter 300s" in line  # cron's jitter: a random sleep inside the command
    assert f"XDG_CONFIG_HOME={home / 'xdg_config_home'}" in line
    assert not any(path.exists() for path in _units(home))
    assert json.loads(_config(home).read_text())["via"] == "cron"
    # installing again replaces the line, never adds a second one
    assert main(["schedule", "install", "--every", "2h", "-l", "kz"]) == 0
    lines = (home / "crontab").read_text().splitlines()
    assert lines[0] == mine and len(lines) == 2 and lines[1].startswith("0 */2 * * * ")
    capsys.readouterr()
    assert main(["schedule", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["installed"]["via"] == "cron" and status["next_run"]
    assert main(["schedule", "remove"]) == 0
    assert (home / "crontab").read_text().splitlines() == [mine]
    assert not _config(home).exists()
    assert main(["schedule", "remove"]) == 0
    assert (home / "crontab").read_text().splitlines() == [mine]


def test_neither_systemd_nor_cron_says_to_use_the_loop(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_NO_SYSTEMD", "1")
    (home / "bin" / "crontab").unlink()
    assert main(["schedule", "install", "--every", "1h", "-l", "kz", "--consent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No medium found" in err[0] and "schedule loop" in err[0]
    assert not _config(home).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "7h", "-l", "kz"], "divide the hour or the day"),
        (["--every", "10s", "-l", "kz"], "at least 1m"),
        (["--every", "soon", "-l", "kz"], "give a duration"),
        (["--every", "1h", "--jitter", "2h", "-l", "kz"], "shorter than --every"),
        (["--every", "1h", "-l", "xx"], "no test list 'xx'"),
        (["--every", "1h"], "nothing to measure"),
        (["--every", "1h", "-f", "/nonexistent/urls.txt"], "no such file"),
        (["--every", "1h", "-l", "kz", "--upload", "http://192.0.2.1/"], "refusing plain http"),
        (["--every", "1h", "-l", "kz", "--upload", "https://u:pw@c.example/"], "no credentials"),
        (["--every", "1h", "-l", "kz", "--helper", "https://h.example/?token=x"], "never hold"),
        (["--every", "1h", "-l", "kz", "--upload"], "NETVIGIL_COLLECTOR_URL"),
        (["--every", "1h", "-l", "kz", "--probe-cc", "KAZ"], "two-letter"),
        (["--every", "1h", "-l", "kz", "--suite", "im"], None),
        (["--every", "1h", "--suite", "all"], None),
    ],
)
def test_install_mistakes_are_one_line_and_nothing_is_written(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str | None
) -> None:
    if message is None:  # until measure has the messaging-app suite, im and all are refused
        if "im" not in runner.supported_suites():
            message = "no messaging-app experiments"
        elif "im" in args:
            message = "takes no URLs"  # a list with --suite im
        else:
            message = "nothing to measure"  # --suite all: the apps and URLs
    assert main(["schedule", "install", "--consent", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not _config(home).exists() and not any(p.exists() for p in _units(home))
    assert not [c for c in _calls(home) if "enable" in c]


def test_install_without_consent_off_a_terminal_writes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", "install", "--every", "1h", "-l", "kz"]) == 2  # stdin: no tty
    err = capsys.readouterr().err
    assert "informed consent" in err and "--consent" in err
    assert not _config(home).exists() and not any(p.exists() for p in _units(home))


def test_the_unit_files_pass_systemd_analyze_verify(home: Path, tmp_path: Path) -> None:
    """The real systemd parses what we write (no user manager needed)."""
    analyze = shutil.which("systemd-analyze", path="/usr/bin:/bin")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    assert main(["schedule", "install", "--every", "15m", "-l", "kz", "--consent"]) == 0
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for every in ("15m", "6h", "1d"):
        timer = _units(home)[1]
        timer.write_text(timers.timer_text(settings.parse_duration(every, "--every"), 60))
        done = subprocess.run(
            [analyze, "verify", "--user", *map(str, _units(home))],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr
        calendar = timers.calendar_for(settings.parse_duration(every, "--every")).on_calendar
        normalized = subprocess.run(
            [analyze, "calendar", calendar], capture_output=True, text=True, timeout=60
        )
        assert normalized.returncode == 0, normalized.stderr


def test_the_real_systemd_user_manager_runs_a_scheduled_run(home: Path, site: str) -> None:
    """Once against the real `systemd-run --user`, where this machine has a user manager."""
    real_path = "/usr/local/bin:/usr/bin:/bin"
    if shutil.which("systemd-run", path=real_path) is None:
        pytest.skip("systemd-run is not installed")
    probe = subprocess.run(
        ["systemctl", "--user", "show-environment"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": real_path},
    )
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[0]
        pytest.skip(f"no systemd user manager reachable here (systemctl --user: {why})")
    _consent()
    config = _config(home)
    settings.save_installed(
        settings.Installed(
            settings=Settings(urls=(f"{site}/real-systemd",), **LOCAL),
            every=3600,
            jitter=0,
            via="systemd",
            installed_at="now",
        ),
        config,
    )
    environment = [f"--setenv={k}={v}" for k, v in timers._xdg_environment().items()]
    done = subprocess.run(
        [
            *("systemd-run", "--user", "--wait", "--collect", "--quiet", *environment),
            *timers.run_argv(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": real_path},
    )
    assert done.returncode == 0, done.stderr
    assert _history(home)[-1]["status"] == "ok"


# -- runs ------------------------------------------------------------------------------------


def test_runs_keep_results_while_the_collector_is_down_and_send_them_when_it_is_up(
    home: Path, site: str, start_collector: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()  # nothing listens there yet
    collector_url = f"http://127.0.0.1:{port}"
    code = main(
        [
            *("schedule", "install", "--every", "1h", f"{site}/sched/a", f"{site}/sched/b"),
            *(
                "--upload",
                collector_url,
                "--consent",
                "--no-doh",
                "--no-network-check",
                "--timeout",
                "3",
            ),
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["schedule", "run", "--json", "--config", str(_config(home))]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "ok" and first["measurements"] == 2 and first["queued"] == 2
    # no control helper on loopback: the page is fetched, the verdict honestly "unknown"
    assert first["outcomes"] == {"unknown": 2} and first["tests"] == {"web_connectivity": 2}
    assert first["upload"]["sent"] == 0 and first["upload"]["reachable"] is False
    assert first["outbox_pending"] == 2
    outbox = home / "xdg_data_home" / "netvigil" / "outbox"
    assert len(list((outbox / "pending").glob("*.json"))) == 2

    base = start_collector(port)
    assert main(["schedule", "run", "--json"]) == 0  # the installed schedule, as the timer
    second = json.loads(capsys.readouterr().out)
    assert second["upload"]["sent"] == 4 and second["upload"]["pending"] == 0
    assert second["upload"]["reachable"] is True and second["outbox_pending"] == 0
    rows = httpx.get(f"{base}/api/v1/measurements", params={"limit": "100"}).json()["results"]
    assert sorted(r["input"] for r in rows) == sorted([f"{site}/sched/a", f"{site}/sched/b"] * 2)

    history = _history(home)
    assert [r["status"] for r in history] == ["ok", "ok"]
    for record in history:
        assert {"started", "ended", "measurements", "outcomes", "upload", "error"} <= set(record)
        assert "probe_ip" not in json.dumps(record) and site not in json.dumps(record)
    assert main(["schedule", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["outbox"]["pending"] == 0 and len(status["runs"]) == 2
    assert main(["schedule", "status"]) == 0
    text = capsys.readouterr().out
    assert "upload: sent 0, pending 2 (collector unreachable)" in text
    assert "upload: sent 4, pending 0" in text


def test_a_run_without_upload_keeps_everything_in_the_outbox(home: Path, site: str) -> None:
    _consent()
    box = home / "box"
    record = run_once(Settings(urls=(f"{site}/keep",), **LOCAL, outbox=str(box)))
    assert record["status"] == "ok" and record["upload"] is None
    assert record["outbox_pending"] == 1
    stored = json.loads(next((box / "pending").glob("*.json")).read_text())
    assert stored["input"] == f"{site}/keep" and stored["probe_ip"] == "127.0.0.1"


def test_an_upload_with_nothing_pending_contacts_no_collector(home: Path) -> None:
    _consent()
    dead = f"http://127.0.0.1:{_free_port()}/"
    record = run_once(Settings(**LOCAL, upload=dead, outbox=str(home / "empty")))
    assert record["status"] == "failed" and "nothing to measure" in record["error"]
    assert record["upload"]["reachable"] is None and record["upload"]["sent"] == 0


def test_a_fault_is_recorded_and_what_is_pending_is_still_counted(home: Path, site: str) -> None:
    urls = home / "urls.txt"
    urls.write_text(f"{site}/fault\n")
    settings_ = Settings(input_files=(str(urls),), **LOCAL)
    record = run_once(settings_)  # no consent on file
    assert record["status"] == "failed" and "informed consent" in record["error"]
    assert record["measurements"] == 0
    _consent()
    urls.unlink()  # the file went away after install
    record = run_once(settings_)
    assert record["status"] == "failed" and "no such file" in record["error"]
    urls.write_text(f"{site}/fault\n")
    assert run_once(settings_)["status"] == "ok"
    assert [r["status"] for r in _history(home)] == ["failed", "failed", "ok"]


def test_the_lock_keeps_two_runs_from_overlapping(home: Path, site: str) -> None:
    _consent()
    one = Settings(urls=(f"{site}/lock",), **LOCAL)
    with runner.run_lock():
        record = run_once(one)
        with pytest.raises(runner.RunBusy), runner.run_lock():
            pass
    assert record["status"] == "skipped" and "in progress" in record["error"]
    assert "measurements" not in record
    assert run_once(one)["status"] == "ok"  # released
    assert [r["status"] for r in _history(home)] == ["skipped", "ok"]


def test_a_run_in_another_process_holds_the_lock(home: Path, site: str) -> None:
    _consent()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from netvigil.schedule.runner import run_lock\n"
            "with run_lock():\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        record = run_once(Settings(urls=(f"{site}/other",), **LOCAL))
        assert record["status"] == "skipped"
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def test_run_loop_repeats_the_run_and_stops_when_told(home: Path, site: str) -> None:
    _consent()
    one = Settings(urls=(f"{site}/loop",), **LOCAL)
    seen: list[dict[str, Any]] = []
    started = time.monotonic()
    records = run_loop(one, every=0.3, count=3, jitter=0.05, on_run=seen.append)
    assert len(records) == 3 and seen == records
    assert time.monotonic() - started >= 0.6  # two waits between three runs
    assert all(r["status"] == "ok" and r["measurements"] == 1 for r in records)
    assert records[-1]["outbox_pending"] == 3
    stop = threading.Event()
    records = run_loop(one, every=0.1, count=None, on_run=lambda _: stop.set(), stop=stop)
    assert len(records) == 1
    assert len(_history(home)) == 4
    with pytest.raises(ValueError):
        run_loop(one, every=0, count=1)


def test_schedule_loop_on_the_command_line(
    home: Path, site: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("schedule", "loop", "--every", "1s", "--count", "2", "--jitter", "0"),
            *(
                f"{site}/cli-loop",
                "--no-doh",
                "--no-network-check",
                "--timeout",
                "3",
                "--consent",
                "--json",
            ),
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert main(["schedule", "run"]) == 2  # no options and nothing installed
    assert "no schedule in" in capsys.readouterr().err


def test_the_history_is_bounded(home: Path) -> None:
    path = home / "history.jsonl"
    for n in range(settings.HISTORY_LIMIT + 7):
        settings.append_history({"n": n}, path)
    records = settings.read_history(path)
    assert len(records) == settings.HISTORY_LIMIT
    assert records[0]["n"] == 7 and records[-1]["n"] == settings.HISTORY_LIMIT + 6
    with open(path, "a") as handle:
        handle.write('{"torn": \n')
    assert len(settings.read_history(path)) == settings.HISTORY_LIMIT


@pytest.mark.parametrize(
    ("every", "on_calendar", "cron"),
    [
        ("5m", "*-*-* *:00/5:00", "*/5 * * * *"),
        ("30m", "*-*-* *:00/30:00", "*/30 * * * *"),
        ("1h", "*-*-* 00/1:00:00", "0 */1 * * *"),
        ("6h", "*-*-* 00/6:00:00", "0 */6 * * *"),
        ("1d", "*-*-* 00:00:00", "0 0 * * *"),
    ],
)
def test_calendars(every: str, on_calendar: str, cron: str) -> None:
    calendar = timers.calendar_for(settings.parse_duration(every, "--every"))
    assert (calendar.on_calendar, calendar.cron) == (on_calendar, cron)


def test_next_cron_start() -> None:
    from datetime import datetime

    now = datetime(2026, 12, 7, 23, 47, 10)
    assert timers.Calendar("minute", 15).next_after(now) == datetime(2026, 12, 8, 0, 0)
    assert timers.Calendar("minute", 5).next_after(now) == datetime(2026, 12, 7, 23, 50)
    assert timers.Calendar("hour", 6).next_after(now) == datetime(2026, 12, 8, 0, 0)
    assert timers.Calendar("hour", 6).next_after(now.replace(hour=7)) == datetime(
        2026, 12, 7, 12, 0
    )
    assert timers.Calendar("day", 1).next_after(now) == datetime(2026, 12, 8, 0, 0)


def test_im_and_all_go_through_measure_suite_once_measure_has_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plumbing to ``netvigil measure --suite`` (the messaging-app experiments are another
    part's): the options reach measure's parser, its OONI JSONL output is read back."""
    from netvigil import measure

    if "im" not in runner.supported_suites():
        original = measure.add_parser

        def with_suite(subparsers: Any) -> None:
            original(subparsers)
            subparsers.choices["measure"].add_argument("--suite", default="web")
            if "--im-endpoints" not in subparsers.choices["measure"]._option_string_actions:
                subparsers.choices["measure"].add_argument("--im-endpoints")

        monkeypatch.setattr(measure, "add_parser", with_suite)
    seen: list[Any] = []

    def fake_run(args: Any) -> int:
        seen.append(args)
        with open(args.output, "a", encoding="utf-8") as handle:
            for app in ("telegram", "whatsapp"):
                keys = {"x_network_status": {"status": "online", "evidence": []}}
                handle.write(json.dumps({"test_name": app, "test_keys": keys}) + "\n")
            handle.write("not json\n")
        print("verdicts on stdout are not the schedule's output")
        return 0

    monkeypatch.setattr(measure, "run", fake_run)
    _consent()
    assert runner.supported_suites() == ("web", "im", "all")
    endpoints = home / "im-endpoints.toml"
    endpoints.write_text("# the testbed's override\n")
    im = Settings(suite="im", probe_cc="KZ", no_doh=True, timeout=4, im_endpoints=str(endpoints))
    settings.validate(im, suites_supported=runner.supported_suites())
    record = run_once(im)
    assert record["status"] == "ok", record
    assert record["tests"] == {"telegram": 1, "whatsapp": 1}
    assert record["network"] == {"online": 2} and record["queued"] == 2
    (args,) = seen
    assert args.im_endpoints == str(endpoints)
    assert (args.suite, args.probe_cc, args.no_doh, args.timeout, args.json) == (
        "im",
        "KZ",
        True,
        4.0,
        True,
    )
    record = run_once(Settings(suite="all", lists=("kz",), no_doh=True))
    assert record["status"] == "ok" and seen[-1].suite == "all" and seen[-1].list == ["kz"]


@needs_testbed
@pytest.mark.testbed
@pytest.mark.timeout(300)
def test_schedule_loop_in_the_testbed_uploads_to_its_collector(tmp_path: Path) -> None:
    """The demo's use: the loop inside 'client', results through the outbox to the testbed's
    collector, the verdicts as the profile's truth says (360tv.ru: HTTPS intercepted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETVIGIL_", "XDG_"))}
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        env[name] = str(tmp_path / name.lower())
    done = subprocess.run(
        [
            *(sys.executable, "-m", "netvigil.cli", "testbed", "run", "-p", "kz-2024", "--"),
            *("netvigil", "schedule", "loop", "--every", "2s", "--count", "2", "--jitter", "0"),
            *("https://360tv.ru/", "http://360tv.ru/", "--upload", "--json", "--timeout", "5"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 2, done.stdout
    for record in records:
        assert record["status"] == "ok" and record["measurements"] == 2
        assert record["outcomes"] == {"ok": 1, "tls/interception": 1}
        assert record["upload"]["sent"] == 2 and record["upload"]["reachable"] is True
        assert record["outbox_pending"] == 0
    history = tmp_path / "xdg_state_home" / "netvigil" / "schedule" / "history.jsonl"
    assert len(history.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "damage",
    [
        "not json",
        '{"settings": []}',
        '{"settings": {"timeout": "ten"}}',
        '{"settings": {"no_doh": null}}',
        '{"settings": {"lists": "kz"}}',
        '{"settings": {"upload": 5}}',
    ],
)
def test_a_damaged_schedule_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    _config(home).parent.mkdir(parents=True)
    _config(home).write_text(damage)
    assert main(["schedule", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "schedule" in err[0], err
    assert main(["schedule", "status"]) == 2
    assert "schedule remove" in capsys.readouterr().err
    assert main(["schedule", "remove"]) == 0 and not _config(home).exists()


def test_status_prints_a_hostile_history_as_plain_text(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = home / "xdg_state_home" / "netvigil" / "schedule" / "history.jsonl"
    history.parent.mkdir(parents=True)
    hostile = {"status": {"x": 1}, "outcomes": [1], "error": "\x1b[2Jgone", "upload": "x"}
    history.write_text(json.dumps(hostile) + "\n" + json.dumps({"outcomes": {"a\x07": 1}}) + "\n")
    assert main(["schedule", "status"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "gone" in out
