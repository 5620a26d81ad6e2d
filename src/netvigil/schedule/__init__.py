"""Unattended measurement: ``netvigil schedule`` (install, run, loop, status, remove).

For code (the testbed's demo): ``Settings`` says what a run measures, ``run_once`` does one
run and ``run_loop`` repeats it; see docs/schedule.md.
"""

from __future__ import annotations

from .runner import run_loop, run_once
from .settings import Settings

__all__ = ["Settings", "run_loop", "run_once"]
