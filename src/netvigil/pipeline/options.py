"""Choices and bounds of the pipeline's commands, in a module light enough for the CLI.

Building ``netvigil``'s argument parser must not import pyarrow or DuckDB (seconds on a cold
start): the commands' modules import these from here, and so does ``pipeline/cli.py``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIMIT", "DEFAULT_TOP", "MAX_LIMIT", "NETWORK_STATUSES", "QUESTIONS"]

# What ``netvigil query --what`` answers.
QUESTIONS = ("blocked", "timeline", "events", "networks", "outcomes", "apps", "network")
# What ``--network`` filters on: the probe's own network status (``unchecked``: none recorded).
NETWORK_STATUSES = ("online", "degraded", "offline", "unchecked")
DEFAULT_LIMIT = 50
MAX_LIMIT = 100_000
# How many domains ``netvigil report`` draws a timeline for.
DEFAULT_TOP = 30
