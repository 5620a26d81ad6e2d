"""Append rows to a hive-partitioned Parquet table with bounded memory and open files.

``OUT/<table>/day=YYYY-MM-DD/part-<writer_id>-<seq>.parquet``. Rows are buffered as column
lists per partition and written as row groups of at most ``row_group_rows`` rows; at most
``max_buffered_rows`` rows are held in all, and at most ``max_open`` files are open (the least
recently used is closed, and a later row for its day starts a new ``seq`` file). A file is
written under a ``.tmp`` name and renamed when closed, so readers globbing ``*.parquet`` never
see a half-written file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PartitionedWriter"]


class _Partition:
    __slots__ = ("buffer", "path", "writer")

    def __init__(self) -> None:
        # One tuple of column values per row (taken in C by itemgetter, transposed by zip at
        # flush time): far cheaper per row than appending to one list per column.
        self.buffer: list[tuple[Any, ...]] = []
        self.writer: pq.ParquetWriter | None = None
        self.path: Path | None = None


class PartitionedWriter:
    """Rows of one table, written by one writer (its ``writer_id`` makes file names unique
    across the processes or cluster workers writing the same table)."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        table_name: str,
        schema: pa.Schema,
        writer_id: str,
        *,
        row_group_rows: int = 65_536,
        max_buffered_rows: int = 262_144,
        max_open: int = 16,
        compression: str = "zstd",
    ) -> None:
        if not writer_id or "/" in writer_id or writer_id.startswith("."):
            raise ValueError(f"writer_id {writer_id!r} cannot be part of a file name")
        self.root = Path(out_dir) / table_name
        self.schema = schema
        self.writer_id = writer_id
        self.row_group_rows = max(1, row_group_rows)
        self.max_buffered_rows = max(self.row_group_rows, max_buffered_rows)
        self.max_open = max(1, max_open)
        self.compression = compression
        self._names: list[str] = list(schema.names)
        if len(self._names) == 1:  # itemgetter of one name returns the value, not a tuple
            name = self._names[0]
            self._values: Any = lambda row: (row[name],)
        else:
            self._values = itemgetter(*self._names)
        self._parts: dict[str, _Partition] = {}
        self._open: OrderedDict[str, None] = OrderedDict()  # days with an open file, LRU first
        self._buffered = 0
        self._seq = 0
        self.rows_written = 0
        self.files: list[Path] = []  # every file this writer finished
        self._closed = False

    def append(self, row: Mapping[str, Any], day: str) -> None:
        """Add one row (a mapping with every schema column) to partition ``day``."""
        part = self._parts.get(day)
        if part is None:
            part = self._parts[day] = _Partition()
        part.buffer.append(self._values(row))
        self._buffered += 1
        if len(part.buffer) >= self.row_group_rows:
            self._flush(day, part)
        elif self._buffered >= self.max_buffered_rows:
            self._flush_biggest()

    def extend(self, rows: list[dict[str, Any]], day: str) -> None:
        """Add rows that share partition ``day``."""
        if not rows:
            return
        part = self._parts.get(day)
        if part is None:
            part = self._parts[day] = _Partition()
        values = self._values
        part.buffer.extend(values(row) for row in rows)
        self._buffered += len(rows)
        while len(part.buffer) >= self.row_group_rows:
            self._flush(day, part)
        if self._buffered >= self.max_buffered_rows:
            self._flush_biggest()

    def _flush_biggest(self) -> None:
        # Many days each below a row group: write the biggest to bound memory.
        day, part = max(self._parts.items(), key=lambda kv: len(kv[1].buffer))
        self._flush(day, part)

    def _flush(self, day: str, part: _Partition) -> None:
        """Write at most one row group of ``part``'s buffer."""
        if not part.buffer:
            return
        rows = part.buffer[: self.row_group_rows]
        del part.buffer[: self.row_group_rows]
        columns = zip(*rows, strict=True)
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, self.schema, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        writer = self._writer_for(day, part)
        writer.write_table(table, row_group_size=len(rows))
        self.rows_written += len(rows)
        self._buffered -= len(rows)

    def _writer_for(self, day: str, part: _Partition) -> pq.ParquetWriter:
        if part.writer is not None:
            self._open.move_to_end(day)
            return part.writer
        while len(self._open) >= self.max_open:
            old_day, _ = self._open.popitem(last=False)
            self._finish(self._parts[old_day])
        directory = self.root / f"day={day}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"part-{self.writer_id}-{self._seq:05d}.parquet"
        self._seq += 1
        part.path = path
        part.writer = pq.ParquetWriter(
            str(path) + ".tmp", self.schema, compression=self.compression
        )
        self._open[day] = None
        return part.writer

    def _finish(self, part: _Partition) -> None:
        if part.writer is None or part.path is None:
            return
        part.writer.close()
        os.replace(str(part.path) + ".tmp", part.path)
        self.files.append(part.path)
        part.writer = None
        part.path = None

    def close(self) -> None:
        """Write what is buffered and close every file. Safe to call twice."""
        if self._closed:
            return
        for day, part in sorted(self._parts.items()):
            while part.buffer:
                self._flush(day, part)
        for part in self._parts.values():
            self._finish(part)
        self._open.clear()
        self._parts.clear()
        self._closed = True

    def abort(self) -> None:
        """Close without publishing: half-written ``.tmp`` files are removed."""
        for part in self._parts.values():
            if part.writer is not None and part.path is not None:
                try:
                    part.writer.close()
                finally:
                    Path(str(part.path) + ".tmp").unlink(missing_ok=True)
                part.writer = None
        self._parts.clear()
        self._open.clear()
        self._closed = True

    def __enter__(self) -> PartitionedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()
