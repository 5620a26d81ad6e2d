"""The probe's local outbox: every measurement is stored here before any upload.

Layout under the outbox directory (default ``$XDG_DATA_HOME/netvigil/outbox``)::

    pending/<sha256>.json          scrubbed canonical JSON, waiting to be sent
    sent/<sha256>.json             accepted by a collector ...
    sent/answers.jsonl             ... with its answer (measurement_uid, leaf_index, leaf_hash),
                                   one line per measurement, appended
    rejected/<sha256>.json         refused by a collector with a 4xx ...
    rejected/<sha256>.reason.json  ... and why
    tmp/                           files being written

A file is named by the SHA-256 of its canonical JSON, so a measurement is stored once. Every
file is written atomically (temporary file, ``fsync``, ``rename``, ``fsync`` of the directory):
after a crash a file is either complete or absent. The one exception is marking a measurement
sent (see ``mark_sent``), which a crash may undo harmlessly; its answer is a line appended to
one log rather than a file of its own, because creating a file costs more than the upload.
Nothing lives only in memory. The outbox is bounded (``max_files``/``max_bytes`` of pending
measurements): ``add`` raises ``OutboxFull`` (one line) rather than dropping anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scrub import ScrubOptions, scrub

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "Outbox",
    "OutboxBusy",
    "OutboxFull",
    "PendingEntry",
    "canonical_json",
    "default_outbox_dir",
]

DEFAULT_MAX_FILES = 100_000
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
_STALE_TMP = 3600.0
_ID_LEN = 64


class OutboxFull(Exception):
    """The outbox holds its maximum; ``queued`` measurements of this call were stored."""

    def __init__(self, message: str, queued: int = 0) -> None:
        super().__init__(message)
        self.queued = queued


class OutboxBusy(Exception):
    """Another ``netvigil upload`` holds the outbox."""


def default_outbox_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "netvigil" / "outbox"


def canonical_json(measurement: Any) -> bytes:
    return json.dumps(
        measurement, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PendingEntry:
    id: str
    path: Path
    size: int


class Outbox:
    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_files: int = DEFAULT_MAX_FILES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        scrub_options: ScrubOptions | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else default_outbox_dir()
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.scrub_options = scrub_options or ScrubOptions()
        self.pending_dir = self.root / "pending"
        self.sent_dir = self.root / "sent"
        self.rejected_dir = self.root / "rejected"
        self.tmp_dir = self.root / "tmp"
        self.answers_path = self.sent_dir / "answers.jsonl"
        self._answers_lock = threading.Lock()
        for folder in (self.pending_dir, self.sent_dir, self.rejected_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._usage: list[int] | None = None
        # The uploader marks files sent from worker threads: the running totals need a lock.
        self._usage_lock = threading.Lock()
        self._clean_tmp()

    # -- writing ---------------------------------------------------------------------------

    def _clean_tmp(self) -> None:
        now = time.time()
        for path in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_TMP:
                    path.unlink()

    def _write_atomic(self, final: Path, data: bytes, *, durable: bool = True) -> None:
        tmp = self.tmp_dir / f"{final.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if durable:
            _fsync_dir(final.parent)

    def _move(self, source: Path, target: Path, *, durable: bool = True) -> None:
        size = source.stat().st_size
        os.replace(source, target)
        self._account(-1, -size)
        if durable:
            _fsync_dir(target.parent)
            _fsync_dir(source.parent)

    def usage(self) -> tuple[int, int]:
        """(files, bytes) pending: scanned once per ``Outbox``, then kept up to date."""
        if self._usage is None:
            entries = self.pending()
            self._usage = [len(entries), sum(entry.size for entry in entries)]
        return self._usage[0], self._usage[1]

    def _account(self, files: int, size: int) -> None:
        with self._usage_lock:
            if self._usage is not None:
                self._usage[0] = max(0, self._usage[0] + files)
                self._usage[1] = max(0, self._usage[1] + size)

    def add(self, measurement: dict[str, Any]) -> tuple[str, bool]:
        """Scrub and store one measurement: (id, newly stored). Raises ``OutboxFull``."""
        data = canonical_json(scrub(measurement, self.scrub_options))
        ident = hashlib.sha256(data).hexdigest()
        name = f"{ident}.json"
        if any((folder / name).exists() for folder in self._states()):
            return ident, False
        files, size = self.usage()
        if files + 1 > self.max_files or size + len(data) > self.max_bytes:
            raise OutboxFull(
                f"outbox {self.root} is full ({files} measurements, {size} bytes pending; "
                f"limits {self.max_files} files, {self.max_bytes} bytes): "
                "run 'netvigil upload' or raise the limit; nothing was dropped"
            )
        self._write_atomic(self.pending_dir / name, data)
        self._account(1, len(data))
        return ident, True

    def _states(self) -> tuple[Path, Path, Path]:
        return self.pending_dir, self.sent_dir, self.rejected_dir

    # -- reading ---------------------------------------------------------------------------

    def pending(self) -> list[PendingEntry]:
        """Pending measurements, oldest first."""
        entries: list[tuple[float, PendingEntry]] = []
        with os.scandir(self.pending_dir) as it:
            for item in it:
                if not _is_id_file(item.name):
                    continue
                try:
                    stat = item.stat()
                except FileNotFoundError:
                    continue
                entry = PendingEntry(item.name[:_ID_LEN], Path(item.path), stat.st_size)
                entries.append((stat.st_mtime, entry))
        entries.sort(key=lambda pair: (pair[0], pair[1].id))
        return [entry for _, entry in entries]

    def read(self, ident: str) -> bytes | None:
        try:
            return (self.pending_dir / f"{ident}.json").read_bytes()
        except FileNotFoundError:
            return None

    def state(self, ident: str) -> str | None:
        for label, folder in zip(("pending", "sent", "rejected"), self._states(), strict=True):
            if (folder / f"{ident}.json").exists():
                return label
        return None

    def answer(self, ident: str) -> dict[str, Any] | None:
        """The collector's answer for a sent measurement, or the reason it was rejected."""
        reason = self.rejected_dir / f"{ident}.reason.json"
        for path in (self.sent_dir / f"{ident}.answer.json", reason):  # (older outboxes)
            try:
                value = json.loads(path.read_bytes())
            except FileNotFoundError:
                continue
            except ValueError:  # cut short by a crash
                return None
            return value if isinstance(value, dict) else None
        return self.answers().get(ident)

    def answers(self) -> dict[str, dict[str, Any]]:
        """Every answer in ``sent/answers.jsonl`` by measurement id (the last one wins)."""
        found: dict[str, dict[str, Any]] = {}
        try:
            handle = open(self.answers_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return found
        with handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:  # a line torn by a crash (appended without fsync)
                    continue
                if isinstance(record, dict) and isinstance(record.get("answer"), dict):
                    ident = record.get("id")
                    if isinstance(ident, str):
                        found[ident] = record["answer"]
        return found

    def count(self, state: str) -> int:
        folder = {"pending": self.pending_dir, "sent": self.sent_dir}.get(state, self.rejected_dir)
        return sum(1 for name in os.listdir(folder) if _is_id_file(name))

    # -- state changes ---------------------------------------------------------------------

    def mark_sent(self, ident: str, answer: dict[str, Any]) -> None:
        """Append the collector's answer to ``sent/answers.jsonl``, then move the measurement
        to ``sent/``.

        Without fsync, unlike every other change here: the collector accepted the measurement
        and submission is idempotent, so if a crash of this machine forgets the move, the
        measurement is still pending, is sent again and the collector answers "duplicate" with
        the same leaf (a torn last line of the log is skipped when read). The fsyncs, and a new
        file per answer, cost more than the upload itself.
        """
        line = canonical_json({"id": ident, "answer": answer}) + b"\n"
        with self._answers_lock:
            fd = os.open(self.answers_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write of the whole line: lines never interleave
            finally:
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self._move(
                self.pending_dir / f"{ident}.json", self.sent_dir / f"{ident}.json", durable=False
            )

    def mark_rejected(self, ident: str, reason: dict[str, Any]) -> None:
        self._write_atomic(self.rejected_dir / f"{ident}.reason.json", canonical_json(reason))
        with contextlib.suppress(FileNotFoundError):
            self._move(self.pending_dir / f"{ident}.json", self.rejected_dir / f"{ident}.json")

    @contextlib.contextmanager
    def upload_lock(self) -> Iterator[None]:
        """Only one uploader per outbox at a time (``OutboxBusy`` otherwise)."""
        fd = os.open(self.root / ".upload.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise OutboxBusy(
                        f"another 'netvigil upload' is using the outbox {self.root}"
                    ) from None
                raise
            yield
        finally:
            os.close(fd)


def _is_id_file(name: str) -> bool:
    return (
        len(name) == _ID_LEN + 5
        and name.endswith(".json")
        and all(c in "0123456789abcdef" for c in name[:_ID_LEN])
    )
