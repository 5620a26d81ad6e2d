"""The verdict engine: an OONI-format measurement → OONI's blocking plus a precise outcome.

    from netvigil.verdict import analyze
    verdict = analyze(measurement)          # pure: no I/O, no clock, no globals
    verdict.blocking, verdict.outcome       # "dns", "tls/interception", "http/blockpage:ooni.ru_3"…

The fingerprint database is loaded once (``load_fingerprints()``, cached) and may be passed in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netvigil.verdict.engine import analyze
    from netvigil.verdict.fingerprints import (
        Fingerprint,
        Fingerprints,
        Match,
        load_fingerprints,
    )
    from netvigil.verdict.model import OUTCOMES, Verdict

# Imported on first use (PEP 562): ``netvigil.verdict.cli`` is in this package, and
# ``netvigil analyze --help`` must not wait for the engine.
_WHERE = {
    "analyze": "netvigil.verdict.engine",
    "Fingerprint": "netvigil.verdict.fingerprints",
    "Fingerprints": "netvigil.verdict.fingerprints",
    "Match": "netvigil.verdict.fingerprints",
    "load_fingerprints": "netvigil.verdict.fingerprints",
    "OUTCOMES": "netvigil.verdict.model",
    "Verdict": "netvigil.verdict.model",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "OUTCOMES",
    "Fingerprint",
    "Fingerprints",
    "Match",
    "Verdict",
    "analyze",
    "load_fingerprints",
]
