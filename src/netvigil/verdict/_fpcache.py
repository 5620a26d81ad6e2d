"""The compiled fingerprint database, cached in the user's cache directory.

Compiling the shipped fingerprints costs ~1-2 s, nearly all of it in ``re`` parsing and
compiling the big anchor-and-trie patterns: more than everything else ``netvigil analyze``
does for one measurement. The compiled :class:`~netvigil.verdict.fingerprints.Fingerprints`
is therefore pickled once into ``$XDG_CACHE_HOME/netvigil`` (``~/.cache/netvigil``), with each
regular expression stored as the regex engine's compiled code, so that loading it skips the
compile too.

Safe because:

- the file's name is its key: a SHA-256 of the data files, this package's version, the
  source of ``fingerprints.py`` and of this module, and the interpreter's version and regex
  engine (``_sre.MAGIC``, ``CODESIZE``): any change there is another file, never a stale one;
- the file holds a SHA-256 of its payload, checked before anything is unpickled: a corrupt or
  cut file is ignored (and rebuilt);
- unpickling accepts only the classes the database is made of (no arbitrary callable);
- the regex code is the engine's own (``re._compiler._code``), checked by ``_sre.compile``
  when loaded; the pattern is compiled the ordinary way if anything about it fails;
- the file is written to a temporary name and renamed (atomic), mode 0600 in a 0700 directory;
- every error (no home, read-only disk, a full disk) means "compile instead", never a failure.

``NETVIGIL_NO_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

_FORMAT = b"netvigil-fingerprints-cache/1\n"
_DATA_DIRS = ("ooni", "censoredplanet", "citizenlab")
MAX_CACHE_BYTES = 256 * 1024 * 1024  # a file larger than this is not ours: ignored


def cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME")
    if base and os.path.isabs(base):
        return Path(base) / "netvigil"
    home = os.environ.get("HOME")
    if not home:
        return None
    return Path(home) / ".cache" / "netvigil"


@functools.cache
def cache_key() -> str:
    """The key of the shipped database in this interpreter (computed once: ~10 ms)."""
    from netvigil import __version__
    from netvigil.verdict import fingerprints

    data = resources.files("netvigil.verdict").joinpath("data")
    return key_for(data, __version__, (Path(fingerprints.__file__), Path(__file__)))


def key_for(data: Traversable, version: str, sources: Sequence[Path]) -> str:
    """SHA-256 of the data files (names and bytes), the package version, the given source
    files, and the interpreter's version and regex engine."""
    import _sre  # type: ignore[import-not-found]

    digest = hashlib.sha256(_FORMAT)
    for part in (version, sys.version, str(_sre.MAGIC), str(_sre.CODESIZE)):
        digest.update(part.encode() + b"\0")
    for source in sources:
        digest.update(source.read_bytes() + b"\0")
    for name in _DATA_DIRS:
        for entry in sorted(data.joinpath(name).iterdir(), key=lambda e: e.name):
            if entry.is_file():
                digest.update(f"{name}/{entry.name}\0".encode())
                digest.update(entry.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_path(key: str) -> Path | None:
    directory = cache_dir()
    return None if directory is None else directory / f"fingerprints-{key[:32]}.pickle"


def _enabled() -> bool:
    return os.environ.get("NETVIGIL_NO_CACHE", "") in ("", "0")


# ---------------------------------------------------------------------------------------------
# Regular expressions as compiled code


def _restore_pattern(
    pattern: str,
    flags: int,
    code: list[int],
    groups: int,
    groupindex: dict[str, int],
    indexgroup: tuple[str | None, ...],
) -> re.Pattern[str]:
    import _sre

    try:
        compiled: re.Pattern[str] = _sre.compile(
            pattern, flags, code, groups, groupindex, indexgroup
        )
        return compiled
    except Exception:  # refused by the engine's validator: compile it the ordinary way
        return re.compile(pattern, flags)


def _pattern_parts(compiled: re.Pattern[str]) -> tuple[Any, ...] | None:
    """What ``re._compiler.compile`` hands to ``_sre.compile`` for this pattern (None if the
    interpreter's ``re`` internals are not the ones this was written for)."""
    try:
        from re import _compiler, _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(compiled.pattern, compiled.flags)
        code = _compiler._code(parsed, compiled.flags)
        groupindex = dict(parsed.state.groupdict)
        indexgroup: list[str | None] = [None] * parsed.state.groups
        for name, index in groupindex.items():
            indexgroup[index] = name
        parts = (
            compiled.pattern,
            compiled.flags | parsed.state.flags,
            [int(op) for op in code],  # opcodes are int subclasses pickle refuses
            parsed.state.groups - 1,
            groupindex,
            tuple(indexgroup),
        )
        again = _restore_pattern(*parts)
        if (again.pattern, again.flags, again.groups, dict(again.groupindex)) != (
            compiled.pattern,
            compiled.flags,
            compiled.groups,
            dict(compiled.groupindex),
        ):
            return None
        return parts
    except Exception:
        return None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, re.Pattern) and isinstance(obj.pattern, str):
            parts = _pattern_parts(obj)
            if parts is not None:
                return _restore_pattern, parts
        return NotImplemented


# The classes the database is made of: nothing else is unpickled.
_ALLOWED = {
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("collections", "OrderedDict"),
    (__name__, "_restore_pattern"),
    *(
        ("netvigil.verdict.fingerprints", name)
        for name in (
            "Fingerprint",
            "Fingerprints",
            "LiteralMatcher",
            "_GramIndex",
            "_LocationSet",
            "_RegexSignature",
        )
    ),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"not part of a fingerprint database: {module}.{name}")


# ---------------------------------------------------------------------------------------------
# Reading and writing


def read(key: str) -> Any:
    """The cached database for ``key``, or None (absent, corrupt, foreign, disabled)."""
    path = cache_path(key)
    if path is None or not _enabled():
        return None
    try:
        with path.open("rb") as f:
            blob = f.read(MAX_CACHE_BYTES + 1)
    except OSError:
        return None
    header = _FORMAT + key.encode() + b"\n"
    if len(blob) > MAX_CACHE_BYTES or not blob.startswith(header):
        return None
    digest, payload = blob[len(header) : len(header) + 32], blob[len(header) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        return None
    try:
        return _Unpickler(io.BytesIO(payload)).load()
    except Exception:  # a file we did not write, or from a version we do not know
        return None


def write(key: str, value: Any) -> bool:
    """Cache ``value`` under ``key`` (atomically); False when it could not be."""
    path = cache_path(key)
    if path is None or not _enabled():
        return False
    try:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        payload = buffer.getvalue()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_FORMAT + key.encode() + b"\n")
                f.write(hashlib.sha256(payload).digest())
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True
    except Exception:  # no cache dir, read-only, disk full, unpicklable: compile next time
        return False
