"""A measurement's raw JSON from the pipeline's own input files (``--inputs``).

The verdict table says which file a measurement came from (``source``, relative to the root
the pipeline was given). Given the same roots, the explorer reads that one file with the
pipeline's own bounded reader and picks the record whose id is the measurement's (its own
``measurement_uid``, else ``"nv"`` + the SHA-256 of its bytes, as the pipeline computed it).
The collector's copy, when there is one, is preferred (it comes with its proof).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from netvigil.pipeline.sources import FileReport, SourceFile, _classify, read_records

__all__ = ["InputFiles"]

# Records read at most to find one measurement (a generated hourly file holds hundreds).
MAX_RECORDS = 200_000


class InputFiles:
    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        for r in self.roots:
            if not r.exists():
                raise FileNotFoundError(f"{r}: no such file or directory")

    def _candidates(self, source: str) -> list[Path]:
        out: list[Path] = []
        for root in self.roots:
            if root.is_file():
                if root.name == source:
                    out.append(root)
                continue
            path = (root / source).resolve()
            if path.is_file() and path.is_relative_to(root):
                out.append(path)
        return out

    def find(self, uid: str, source: str | None) -> dict[str, Any] | None:
        if not source:
            return None
        for path in self._candidates(source):
            kind = _classify(path)
            if kind is None or kind in ("sqlite", "yaml"):
                continue  # the collector's store is read with --collector-data
            src = SourceFile(name=source, path=str(path), kind=kind, size=path.stat().st_size)
            for n, record in enumerate(read_records(src, FileReport(source))):
                if n >= MAX_RECORDS:
                    break
                try:
                    m = orjson.loads(record.raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(m, dict):
                    continue
                own = m.get("measurement_uid")
                if isinstance(own, str) and own:
                    found = own == uid
                else:
                    found = "nv" + hashlib.sha256(record.raw).hexdigest()[:30] == uid
                if found:
                    return m
        return None
