"""`netvigil analyze` on large and live input: streamed, summarised, parallel, pipe-friendly.

Real OONI measurements only (tests/data/ooni_samples.jsonl and the conformance corpus), repeated
where a test needs many lines. Every child process is bounded in time.
"""

from __future__ import annotations

import gzip
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netvigil.verdict import cli as verdict_cli

DATA = Path(__file__).parent / "data"
SAMPLES = DATA / "ooni_samples.jsonl"
COMMAND = [sys.executable, "-m", "netvigil.cli", "analyze"]


def _real_lines() -> list[bytes]:
    lines = [line for line in SAMPLES.read_bytes().splitlines() if line.strip()]
    with gzip.open(DATA / "conformance" / "real.jsonl.gz", "rb") as f:
        lines += [line.rstrip(b"\n") for line in f if line.strip()]
    return lines


def _write(path: Path, count: int) -> list[bytes]:
    lines = _real_lines()
    chosen = [lines[i % len(lines)] for i in range(count)]
    path.write_bytes(b"".join(line + b"\n" for line in chosen))
    return chosen


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LINES="24", COLUMNS="80")
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_piped_inputs_are_never_cut_to_the_width(tmp_path: Path) -> None:
    measurement = json.loads(SAMPLES.read_bytes().splitlines()[0])
    long_url = "https://forbidden.example.kz/" + "/".join(f"section-{i}" for i in range(20))
    measurement["input"] = long_url
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(measurement) + "\n", "utf-8")
    done = _run(str(path))
    assert done.returncode == 0, done.stderr
    assert long_url in done.stdout
    assert "…" not in done.stdout


def test_more_than_a_screenful_is_summarised_and_all_lists_every_row(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    lines = _write(path, 120)
    done = _run(str(path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert len(out.splitlines()) < 120  # not one row per measurement
    assert "blocked URLs" in out and "totals by test and outcome" in out
    assert out.index("blocked URLs") < out.index("totals by test and outcome")
    assert "web_connectivity" in out and "unsupported" in out
    assert "120 measurements" in out
    # the blocked URLs are those the verdicts say are blocked, the most measured first
    verdicts = [json.loads(v) for v in _run("--json", str(path)).stdout.splitlines()]
    # a messaging-app measurement has no input: the table names its test instead
    blocked = {v["input"] or f"({v['test_name']})" for v in verdicts if v["blocked"]}
    assert blocked and all(url in out for url in blocked)

    every = _run("--all", str(path))
    assert every.returncode == 0, every.stderr
    inputs = [json.loads(line).get("input") or "" for line in lines]
    listed = [line for line in every.stdout.splitlines() if line.endswith(tuple(inputs))]
    assert len(listed) >= 120
    assert "blocked URLs" not in every.stdout


def test_verdicts_are_printed_as_their_lines_arrive() -> None:
    """``analyze -`` on a live stream: the first verdict comes while stdin is still open."""
    line = SAMPLES.read_bytes().splitlines()[0] + b"\n"
    proc = subprocess.Popen(
        [*COMMAND, "--json", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line)
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no verdict while the input was still open"
        first = json.loads(proc.stdout.readline())
        assert first["input"] == json.loads(line)["input"]
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("mode", [["--json"], ["--all"]])
def test_a_closed_pipe_ends_quietly(tmp_path: Path, mode: list[str]) -> None:
    """``analyze … | head -1``: no BrokenPipeError traceback, no error message."""
    path = tmp_path / "many.jsonl"
    _write(path, 400)  # far more output than a pipe buffers
    proc = subprocess.Popen(
        [*COMMAND, *mode, str(path)],  # default -j: the pool is stopped too
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        raise AssertionError("analyze did not stop when its reader went away")
    err = proc.stderr.read().decode("utf-8", "replace")
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err, err
    assert proc.returncode == verdict_cli.EXIT_BROKEN_PIPE


def test_parallel_output_is_in_input_order_and_equal_to_one_process(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    count = verdict_cli.PARALLEL_AFTER + 3 * verdict_cli.CHUNK_ITEMS + 17  # the pool is used
    lines = _write(path, count)
    (tmp_path / "bad.jsonl").write_bytes(b"{broken\n" + lines[0] + b"\n")
    one = _run("--json", "-j", "1", str(path))
    two = _run("--json", "-j", "2", str(path), str(tmp_path / "bad.jsonl"))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    assert two.stdout.splitlines()[:count] == one.stdout.splitlines()
    assert len(two.stdout.splitlines()) == count + 1
    got = [json.loads(v) for v in two.stdout.splitlines()[:count]]
    wanted = [json.loads(line) for line in lines]
    assert [(v["report_id"], v["measurement_start_time"]) for v in got] == [
        (m.get("report_id"), m.get("measurement_start_time")) for m in wanted
    ]
    assert "bad.jsonl:1: invalid JSON" in two.stderr


def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit):
            verdict_cli.main(["-j", bad, str(SAMPLES)])
        assert "-j/--jobs" in capsys.readouterr().err


def test_progress_only_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verdict_cli.main(["--json", "-j", "1", str(SAMPLES)]) == 0
    assert capsys.readouterr().err == ""  # stderr is not a terminal: no progress line
    monkeypatch.setattr(verdict_cli, "_isatty", lambda stream: stream is sys.stderr)
    monkeypatch.setattr(verdict_cli._Progress, "SHOW_AFTER", 0.0)
    assert verdict_cli.main(["--json", "-j", "1", str(SAMPLES)]) == 0
    err = capsys.readouterr().err
    assert "\r[" in err and "measurements" in err and "%" in err
    assert err.endswith("\r\x1b[K")  # erased at the end
