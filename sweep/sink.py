"""Parquet and JSON outputs: zstd, key-value metadata, hive partitions, written atomically
through `outdir.OutputDir` (temporary file in `.sweep/tmp/`, renamed into place), so an
interrupted run never leaves a half-written file where readers look. Files carry no
timestamps: re-running a grid rewrites them byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sweep.outdir import OutputDir

ENGINE_VERSION = "0.3.0"
FORMULA_VERSION = "3"  # bump when a formula changes what it returns
UNITS = {"*_bytes": "bytes", "*_gib": "GiB (2^30 bytes)", "params": "count (1e9 = 1B)"}


def metadata(grid) -> dict[str, str]:
    return {
        "engine_version": ENGINE_VERSION,
        "formula_version": FORMULA_VERSION,
        "grid_name": grid.name,
        "grid_hash": grid.hash,
        "grid_text": grid.text,
        "units": json.dumps(UNITS, sort_keys=True),
    }


def parquet_writer(frame: pl.DataFrame, meta: dict[str, str]) -> Callable[[Path], None]:
    """A function writing `frame` as zstd Parquet with `meta` in the schema's key-value
    metadata to the path it is given (for `OutputDir.write`)."""
    table = frame.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    return lambda path: pq.write_table(table, path, compression="zstd")


def write_parquet(out: OutputDir, relative: str, frame: pl.DataFrame,
                  meta: dict[str, str]) -> str:
    out.write(relative, parquet_writer(frame, meta))
    return relative


def write_partitioned(out: OutputDir, root: str, frame: pl.DataFrame, column: str,
                      meta: dict[str, str]) -> list[str]:
    """One file per value of `column` under root/column=value/ (hive layout), relative paths
    returned; the partition column is kept out of the files, as readers take it from the
    path. Partitions of ours under `root` that this frame no longer has are removed."""
    written = []
    for (value,), part in frame.group_by(column, maintain_order=True):
        written.append(write_parquet(out, f"{root}/{column}={value}/part-0.parquet",
                                     part.drop(column), meta))
    for stale in sorted(out.owned()):
        if stale.startswith(f"{root}/{column}=") and stale not in written:
            out.remove(stale)
    return written
