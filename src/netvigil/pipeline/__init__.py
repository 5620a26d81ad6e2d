"""The measurement pipeline: OONI files and the collector's store → partitioned Parquet tables
(verdicts, observations, aggregates; see :mod:`netvigil.pipeline.schema`).

Engines: :func:`netvigil.pipeline.local.run_local` (processes on this machine) and a Dask
engine; both run :func:`netvigil.pipeline.local.process_files` per batch of files.
"""

from __future__ import annotations

from netvigil.pipeline.sources import FileReport, PipelineInputError, SourceFile, discover

__all__ = ["FileReport", "PipelineInputError", "SourceFile", "discover"]
