"""What a run writes: one row per configuration (its axis values and every quantity of the
registry, `sweep.outputs`), the frontier per GPU, the per-group summary and the manifest.

Layout of `outputs/<grid>/`:
  frontier/gpu=<name>/part-0.parquet   frontier points per GPU type (hive partitions)
  summary.parquet                      per group: configurations, feasible, best point
  feasible/chunk-<n>.parquet           every feasible configuration (`feasible_dump`)
  manifest.json                        what was run and what was written
  .sweep/                              the tool's bookkeeping: files it owns, lock, temporary
                                       files, resumable partial results (see outdir.py)
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from sweep import outputs, sink
from sweep import vocabulary as vocab
from sweep.engine.exact import BATCH, evaluate_flat, evaluation, full_flat
from sweep.enumerate import Layout, Tables
from sweep.grid import Grid
from sweep.outdir import OutputDir

LABELLED_AXES = ("model", "gpu", "lora_targets", *vocab.CATEGORIES)


def configurations_frame(grid: Grid, layout: Layout, tables: Tables, flat) -> pl.DataFrame:
    """One row per configuration (flat indices in layout order): every axis value, every
    quantity of the registry (float64), its index in the grid's own order."""
    ev, _, coords = evaluation(grid, layout, tables, flat)
    n = len(flat)
    columns = {}
    for axis in grid.axes:
        index = coords.get(axis.name, np.zeros(n, int))
        if axis.name in LABELLED_AXES:
            labels = np.array(axis.labels, dtype=object)[index]
            columns[axis.name] = pl.Series(axis.name, labels, dtype=pl.Categorical)
        else:
            columns[axis.name] = pl.Series(axis.name, axis.values[index], dtype=pl.Float64)
    # The registry's values are as evaluated: gpus_per_node from the GPU's node and grad_accum
    # from the global batch replace their axes' constants.
    for name, value in outputs.values(ev, n).items():
        string = outputs.BY_NAME[name].dtype == "string"
        columns[name] = pl.Series(name, value.astype(str) if string else value,
                                  dtype=pl.Categorical if string else pl.Float64)
    columns["config_index"] = pl.Series("config_index", layout.canonical_index(coords))
    return pl.DataFrame(columns)


def dump_chunk(grid: Grid, layout: Layout, tables: Tables, chunk: int, out: OutputDir) -> None:
    """Every feasible configuration of one chunk, evaluated in float64 in batches of BATCH
    configurations (memory bounded by the batch, not the chunk)."""
    outer_index = layout.outer_index(chunk)
    parts = []
    for start in range(0, layout.chunk_configs, BATCH):
        local = np.arange(start, min(start + BATCH, layout.chunk_configs))
        flat = full_flat(layout, outer_index, local)
        fits, _, _ = evaluate_flat(grid, layout, tables, flat)
        parts.append(configurations_frame(grid, layout, tables, flat[fits]))
    sink.write_parquet(out, f"feasible/chunk-{chunk:08d}.parquet", pl.concat(parts),
                       sink.metadata(grid))


def sorted_frame(frame: pl.DataFrame, grid: Grid) -> pl.DataFrame:
    """Rows by group, then each objective in its direction, then grid order."""
    keys = [*grid.group_by] + [o.key for o in grid.objectives] + ["config_index"]
    keys = [k for k in dict.fromkeys(keys) if k in frame.columns]
    maximize = {o.key: o.maximize for o in grid.objectives}
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String)).sort(
        keys, descending=[maximize.get(k, False) for k in keys])


def summary_frame(grid: Grid, group: tuple[str, ...], count: np.ndarray,
                  frame: pl.DataFrame) -> pl.DataFrame:
    """Per group: configurations, feasible count, frontier size and the best point (first in
    the objectives' order, ties to the lowest configuration index). `count` is over `group`
    (canonical order); the columns follow the grid's group_by."""
    rows = []
    group_sizes = [len(grid.axis(n)) for n in group]
    per_group = grid.size // max(math.prod(group_sizes), 1)
    # The frame is sorted by group, then by the objectives: a group's first row is its best.
    groups = (frame.group_by(list(grid.group_by), maintain_order=True) if grid.group_by
              else [((), frame)])
    by_group = {key: (len(points), points.head(1).to_dicts()[0])
                for key, points in groups if len(points)}
    for cell in np.ndindex(*group_sizes):
        at = dict(zip(group, cell, strict=True))
        labels = {n: grid.axis(n).labels[at[n]] for n in grid.group_by}
        # Labelled axes are keyed by label, numeric ones by value.
        key = tuple(labels[n] if n in LABELLED_AXES else float(grid.axis(n).values[at[n]])
                    for n in grid.group_by)
        n_points, best = by_group.get(key, (0, {}))
        rows.append({**labels, "configurations": per_group,
                     "feasible": int(count[cell]), "frontier_points": n_points,
                     **{f"best_{k}": v for k, v in best.items() if k not in labels}})
    return pl.DataFrame(rows)


def write_results(grid: Grid, layout: Layout, tables: Tables, group: tuple[str, ...],
                  count: np.ndarray, flats: np.ndarray, out: OutputDir) -> dict:
    """The frontier rows (flat indices of the chosen configurations), the summary and the
    manifest; returns the manifest."""
    meta = sink.metadata(grid)
    frame = sorted_frame(configurations_frame(grid, layout, tables, flats), grid)
    sink.write_partitioned(out, "frontier", frame, "gpu", meta)
    sink.write_parquet(out, "summary.parquet", summary_frame(grid, group, count, frame), meta)
    manifest = {
        "engine_version": sink.ENGINE_VERSION,
        "formula_version": sink.FORMULA_VERSION,
        "grid": {"name": grid.name, "path": grid.path, "hash": grid.hash, "text": grid.text},
        "grid_hash": grid.hash,
        "configurations": grid.size,
        "chunks": layout.n_chunks,
        "axes": {a.name: list(a.labels) for a in grid.swept},
        "objectives": [o.text for o in grid.objectives],
        "group_by": list(grid.group_by),
        "feasible": int(count.sum()),
        "frontier_points": len(frame),
        "files": sorted(out.owned() - {"manifest.json"}),
        "units": sink.UNITS,
    }
    out.write_json("manifest.json", manifest)
    return manifest
