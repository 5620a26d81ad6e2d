"""`netvigil measure --suite im|all`: the messaging apps through measure's own path (output file,
summary, errors), against the loopback world of tests/im_world.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from im_world import World, assert_loopback
from netvigil import measure


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netvigil.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def test_suite_im_takes_no_urls() -> None:
    done = _cli("measure", "--suite", "im", "https://a.example/", "--consent")
    assert done.returncode != 0
    assert "takes no URLs" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_inside_the_testbed_the_override_is_mandatory(tmp_path: Path) -> None:
    env = {
        "NETVIGIL_TESTBED": "1",
        "NETVIGIL_IM_ENDPOINTS": "",
        "NETVIGIL_CA_BUNDLE": "",
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    done = _cli("measure", "--suite", "im", "--no-progress", env=env)
    assert done.returncode != 0
    assert "never be dialled" in done.stderr


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    measure.add_parser(parser.add_subparsers())
    return parser.parse_args(["measure", *argv])


class _WorldThread:
    """The loopback world in a thread of its own: measure.run has its own event loop."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> World:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.world.start(), self.loop).result(30)
        return self.world

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.world.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_suite_im_writes_four_measurements_and_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("NETVIGIL_TESTBED", raising=False)
    out = tmp_path / "m.jsonl"
    with _WorldThread(World()) as world:
        assert world.config is not None
        config = world.config

        def fake_config(args: Any) -> Any:
            from dataclasses import replace

            return replace(config, im_endpoints=args.im_endpoints)

        monkeypatch.setattr(measure, "config_from_args", fake_config)
        args = _args(
            "--suite", "im", "--consent", "--no-progress", "-o", str(out),
            "--im-endpoints", world.override_path,
        )  # fmt: skip
        assert measure.run(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(m["test_name"] for m in lines) == sorted(
        ["telegram", "whatsapp", "signal", "facebook_messenger"]
    )
    for m in lines:
        assert_loopback(m)
        assert m["test_keys"]["x_netvigil_verdict"]["test_name"] == m["test_name"]
    printed = capsys.readouterr().out
    assert "4 messaging apps measured" in printed
