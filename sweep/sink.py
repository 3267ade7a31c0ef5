"""Parquet and JSON outputs: zstd, key-value metadata, hive partitions, atomic writes.

Every write goes to a temporary file in the same directory and is renamed into place, so an
interrupted run never leaves a half-written file. Files carry no timestamps: re-running a grid
rewrites them byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

ENGINE_VERSION = "0.2.0"
FORMULA_VERSION = "2"  # bump when a formula changes what it returns
UNITS = {"*_bytes": "bytes", "*_gib": "GiB (2^30 bytes)", "params": "count (1e9 = 1B)"}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def metadata(grid) -> dict[str, str]:
    return {
        "engine_version": ENGINE_VERSION,
        "formula_version": FORMULA_VERSION,
        "grid_name": grid.name,
        "grid_hash": grid.hash,
        "grid_text": grid.text,
        "units": json.dumps(UNITS, sort_keys=True),
    }


def write_parquet(frame: pl.DataFrame, path: Path, meta: dict[str, str]) -> None:
    """zstd Parquet with `meta` in the schema's key-value metadata, written atomically."""
    table = frame.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def write_partitioned(frame: pl.DataFrame, root: Path, column: str, meta: dict[str, str]) -> list:
    """One file per value of `column` under root/column=value/ (hive layout); the partition
    column is kept out of the files, as readers take it from the path."""
    written = []
    for (value,), part in frame.group_by(column, maintain_order=True):
        path = root / f"{column}={value}" / "part-0.parquet"
        write_parquet(part.drop(column), path, meta)
        written.append(path)
    return written
