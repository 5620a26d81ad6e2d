"""The verdict engine: an OONI-format measurement → OONI's blocking plus a precise outcome.

    from netvigil.verdict import analyze
    verdict = analyze(measurement)          # pure: no I/O, no clock, no globals
    verdict.blocking, verdict.outcome       # "dns", "tls/interception", "http/blockpage:ooni.ru_3"…

The fingerprint database is loaded once (``load_fingerprints()``, cached) and may be passed in.
"""

from netvigil.verdict.engine import analyze
from netvigil.verdict.fingerprints import Fingerprint, Fingerprints, Match, load_fingerprints
from netvigil.verdict.model import OUTCOMES, Verdict

__all__ = [
    "OUTCOMES",
    "Fingerprint",
    "Fingerprints",
    "Match",
    "Verdict",
    "analyze",
    "load_fingerprints",
]
