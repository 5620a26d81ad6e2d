"""Probe side of the collector: a local outbox, the privacy scrub and ``netvigil upload``."""

from __future__ import annotations

from .cli import queue_measurements
from .outbox import Outbox, OutboxBusy, OutboxFull, canonical_json, default_outbox_dir
from .scrub import ScrubOptions, scrub
from .uploader import (
    CollectorURLError,
    UploadConfig,
    UploadSummary,
    parse_collector_url,
    upload_outbox,
)

__all__ = [
    "CollectorURLError",
    "Outbox",
    "OutboxBusy",
    "OutboxFull",
    "ScrubOptions",
    "UploadConfig",
    "UploadSummary",
    "canonical_json",
    "default_outbox_dir",
    "parse_collector_url",
    "queue_measurements",
    "scrub",
    "upload_outbox",
]
