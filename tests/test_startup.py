"""Start-up: a command loads only what it needs, and the compiled fingerprints are cached.

(The timings are benchmarks/bench_startup.py's: nothing here is timed.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netvigil import cli
from netvigil.verdict import _fpcache
from netvigil.verdict import fingerprints as fpmod

DATA = Path(__file__).parent / "data"
HEAVY = (
    "pandas",
    "pyarrow",
    "dask",
    "duckdb",
    "starlette",
    "uvicorn",
    "cryptography",
    "numpy",
    "rich",
)


def _loaded_after(code: str, tmp_path: Path) -> list[str]:
    """The HEAVY modules a fresh interpreter has loaded after running ``code``."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_import_cli_loads_no_heavy_module(tmp_path: Path) -> None:
    assert _loaded_after("import netvigil.cli", tmp_path) == []


@pytest.mark.parametrize("argv", [["--help"], ["analyze", "--help"], ["--version"]])
def test_help_loads_no_heavy_module(argv: list[str], tmp_path: Path) -> None:
    code = (
        "from netvigil.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert _loaded_after(code, tmp_path) == []


def test_analyze_of_one_measurement_loads_no_table_or_server_library(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_bytes((DATA / "ooni_samples.jsonl").read_bytes().splitlines()[0] + b"\n")
    code = (
        "from netvigil.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['analyze', {str(one)!r}]) == 0"
    )
    loaded = _loaded_after(code, tmp_path)
    assert not {"pandas", "pyarrow", "dask", "duckdb", "starlette", "uvicorn", "rich"} & set(loaded)


def test_stand_in_help_lines_are_the_commands_own() -> None:
    """COMMANDS repeats each command's help line for ``netvigil --help``: it must say what the
    command's own parser says, in the same order."""

    def listed(parser: object) -> list[tuple[str, str | None]]:
        sub = next(
            a
            for a in getattr(parser, "_actions", [])
            if a.__class__.__name__ == "_SubParsersAction"
        )
        return [(a.dest, a.help) for a in sub._choices_actions]

    full = listed(cli.build_parser())
    lazy = listed(cli.build_parser(needed=()))
    assert lazy == full
    assert [name for name, _ in full[1:]] == list(cli.COMMANDS)


def test_only_the_named_command_is_built() -> None:
    assert cli._command_of(["analyze", "x.jsonl"]) == "analyze"
    assert cli._command_of(["--help"]) is None
    parser = cli.build_parser(needed={"analyze"})
    args = parser.parse_args(["analyze", "--json", "-j", "2", "x.jsonl"])
    assert (args.command, args.json, args.jobs, args.files) == ("analyze", True, 2, ["x.jsonl"])


# ----------------------------------------------------------------------------------------------
# The fingerprint cache


@functools.cache
def _sample_bodies() -> list[str]:
    """Response bodies of the real OONI samples (blockpages among them), and two made here.
    Read when a test needs them, line by line: collecting the suite must not grow pytest's
    memory (the hostile-file tests measure their child's peak RSS, which a vfork'ed child
    inherits from pytest)."""
    bodies: list[str] = []
    with (DATA / "ooni_samples.jsonl").open("rb") as f:
        for line in f:
            keys = json.loads(line).get("test_keys") or {}
            for request in keys.get("requests") or []:
                body = (request.get("response") or {}).get("body")
                if isinstance(body, str) and body and len(bodies) < 40:
                    bodies.append(body)
    return [
        *bodies,
        "<title>Access denied</title> blocked by order of the court",
        "x" * 5000 + "Доступ к сайту ограничен" + "y" * 5000,
    ]


@pytest.fixture(scope="module")
def compiled() -> fpmod.Fingerprints:
    return fpmod.compile_shipped()


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("NETVIGIL_NO_CACHE", raising=False)
    return tmp_path / "netvigil"


def _answers(fps: fpmod.Fingerprints) -> list[object]:
    out: list[object] = [fps.match_response(body, {"Server": "nginx"}) for body in _sample_bodies()]
    out += [fps.match_dns(ip) for ip in ("10.10.34.34", "195.175.254.2", "1.1.1.1")]
    return out


def test_cache_round_trip_answers_like_the_compiled_database(
    cache_home: Path, compiled: fpmod.Fingerprints
) -> None:
    key = _fpcache.cache_key()
    assert _fpcache.write(key, compiled)
    path = _fpcache.cache_path(key)
    assert path is not None and path.parent == cache_home and path.exists()
    assert path.stat().st_mode & 0o077 == 0  # the user's own file
    loaded = _fpcache.read(key)
    assert isinstance(loaded, fpmod.Fingerprints)
    assert loaded.fingerprints == compiled.fingerprints
    assert _answers(loaded) == _answers(compiled)
    # every regular expression came back as the same pattern
    for location, fresh in compiled._sets.items():
        again = loaded._sets[location]
        assert [(s.whole, s.pieces) for s, _ in again.regexes] == [
            (s.whole, s.pieces) for s, _ in fresh.regexes
        ]
        assert again.literals._regex == fresh.literals._regex


def test_load_fingerprints_uses_the_cache_and_survives_corruption(
    cache_home: Path, compiled: fpmod.Fingerprints, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = fpmod.load_fingerprints.__wrapped__
    first = load()  # compiles and writes the cache
    path = _fpcache.cache_path(_fpcache.cache_key())
    assert path is not None and path.exists()

    def no_compile() -> fpmod.Fingerprints:
        raise AssertionError("compiled although cached")

    monkeypatch.setattr(fpmod, "compile_shipped", no_compile)
    assert _answers(load()) == _answers(first)

    good = path.read_bytes()
    damaged = [
        good[:-1] + bytes([good[-1] ^ 0xFF]),  # one bit pattern changed in the payload
        good[: len(good) // 2],  # cut short
        b"",  # empty
        b"\x00" * 4096,  # garbage
        good.replace(b"netvigil-fingerprints-cache/1", b"netvigil-fingerprints-cache/9"),
    ]
    monkeypatch.setattr(fpmod, "compile_shipped", lambda: compiled)
    for blob in damaged:
        path.write_bytes(blob)
        assert _fpcache.read(_fpcache.cache_key()) is None
        assert _answers(load()) == _answers(compiled)  # compiled again, no error
        assert path.read_bytes() != blob  # and the cache rewritten


def test_a_pickle_of_anything_else_is_refused(cache_home: Path) -> None:
    """Even with a valid checksum, only the database's own classes are unpickled."""

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled a callable",))

    key = _fpcache.cache_key()
    payload = pickle.dumps(Evil())
    path = _fpcache.cache_path(key)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b"netvigil-fingerprints-cache/1\n" + key.encode() + b"\n"
    path.write_bytes(header + hashlib.sha256(payload).digest() + payload)
    assert _fpcache.read(key) is None


def test_cache_key_changes_with_the_data(tmp_path: Path) -> None:
    shipped = Path(fpmod.__file__).parent / "data"
    data = tmp_path / "data"
    for name in ("ooni", "censoredplanet", "citizenlab"):
        shutil.copytree(shipped / name, data / name)
    sources = [Path(fpmod.__file__)]
    base = _fpcache.key_for(data, "0.1.0", sources)
    assert _fpcache.key_for(data, "0.1.0", sources) == base
    assert _fpcache.key_for(data, "0.1.1", sources) != base  # the package version

    csv = data / "ooni" / "fingerprints_http.csv"
    original = csv.read_bytes()
    csv.write_bytes(original.replace(b"blocked", b"Blocked", 1))
    changed = _fpcache.key_for(data, "0.1.0", sources)
    assert changed != base
    csv.write_bytes(original)
    assert _fpcache.key_for(data, "0.1.0", sources) == base
    (data / "citizenlab" / "extra.json").write_text("[]", "utf-8")
    assert _fpcache.key_for(data, "0.1.0", sources) != base


def test_no_cache_dir_or_switched_off_means_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: fpmod.Fingerprints
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("NETVIGIL_NO_CACHE", "1")
    assert not _fpcache.write(_fpcache.cache_key(), compiled)
    assert not (tmp_path / "netvigil").exists()
    monkeypatch.delenv("NETVIGIL_NO_CACHE")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", "utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # cache dir cannot be made
    assert not _fpcache.write(_fpcache.cache_key(), compiled)
    assert _fpcache.read(_fpcache.cache_key()) is None


@pytest.mark.parametrize("command", [["testbed", "profiles"], ["--help"], ["query", "--help"]])
def test_a_reader_that_went_away_ends_any_command_quietly(command: list[str]) -> None:
    """`netvigil … | head -1` for every command: the pipe's reader is gone before the command
    prints, so its first write fails; it must end quietly (141, or 0 where argparse's help
    printer already swallowed the error itself) with no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netvigil.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before netvigil has started up
    stderr = proc.stderr.read().decode("utf-8", "replace")
    assert proc.wait(timeout=60) in (0, 141), stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
