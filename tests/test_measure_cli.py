"""`netvigil measure`: inputs, consent and errors (nothing here touches a network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netvigil.measure import InputError, check_url, gather_inputs, list_names


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netvigil.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def test_check_url() -> None:
    assert check_url("https://www.example.org/") is None
    assert check_url("ftp://example.org/") is not None
    assert check_url("http:///nohost") is not None
    assert check_url("http://exa mple.org/") is not None
    assert check_url("http://example.org:99999/") is not None
    assert check_url("https://x.org/" + "a" * 3000) is not None


def test_shipped_lists_load_with_their_urls() -> None:
    assert {"kz", "global", "ru"} <= set(list_names())
    inputs = gather_inputs([], [], ["kz"])
    assert len(inputs.urls) > 500
    assert all(u.startswith(("http://", "https://")) for u in inputs.urls)


def test_bad_lines_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(
        "https://a.example/\n# comment\nnot a url\n\nhttps://b.example/\nhttps://a.example/\n"
    )
    inputs = gather_inputs([], [str(listing)], [])
    assert inputs.urls == ["https://a.example/", "https://b.example/"]
    assert len(inputs.skipped) == 1 and inputs.skipped[0].startswith(f"{listing}:3:")


def test_errors_are_one_line() -> None:
    with pytest.raises(InputError, match="no test list 'zz'"):
        gather_inputs([], [], ["zz"])
    with pytest.raises(InputError, match="nothing to measure"):
        gather_inputs([], [], [])
    with pytest.raises(InputError, match="no such file"):
        gather_inputs([], ["/nonexistent/list.txt"], [])


def test_first_real_network_run_asks_for_consent(tmp_path: Path) -> None:
    # No terminal, no --consent: refuse in one line, before any measurement.
    env = {"XDG_CONFIG_HOME": str(tmp_path), "NETVIGIL_TESTBED": ""}
    result = _cli("measure", "https://www.example.org/", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "informed consent" in lines[0]
    assert not (tmp_path / "netvigil" / "consent.json").exists()


def test_measure_reports_bad_trust_bundle_in_one_line(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    (tmp_path / "netvigil").mkdir()
    (tmp_path / "netvigil" / "consent.json").write_text('{"consent": true}')
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    result = _cli("measure", "https://www.example.org/", "--ca-bundle", str(bad), env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "bad.pem" in result.stderr
