"""Run a grid: chunks through the jitted kernel on every local device, merged, resumable;
then the frontier, its configurations evaluated exactly, and the files.

Layout of `outputs/<grid>/`:
  frontier/gpu=<name>/part-0.parquet   frontier points per GPU type (hive partitions)
  summary.parquet                      per group: configurations, feasible, best point
  feasible/chunk-<n>.parquet           every feasible configuration (`feasible_dump`)
  manifest.json                        what was run and what was written
  .sweep/                              the tool's bookkeeping: files it owns, lock, temporary
                                       files, resumable partial results (see outdir.py)
"""

from __future__ import annotations

import json
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from sweep import sink
from sweep import vocabulary as vocab
from sweep.enumerate import Layout, Tables, decode, flat_inputs
from sweep.grid import Grid
from sweep.memory.total import GPU_COMPONENTS, estimate
from sweep.outdir import OutputDir
from sweep.reduce import (
    Kept,
    cell_kernel,
    chunk_slot,
    fits_mask,
    grid_frontier,
    make_kernel,
    unpack_near,
)

CHECKPOINT_SECONDS = 10.0
GIB = 2**30


@dataclass
class State:
    """Merged results so far: best computed objective per kept cell, feasible count per group,
    and which chunks are in them."""

    best: np.ndarray
    count: np.ndarray
    done: np.ndarray

    @classmethod
    def empty(cls, best_shape, count_shape, n_chunks) -> State:
        return cls(np.full(best_shape, -np.inf, np.float64), np.zeros(count_shape, np.int64),
                   np.zeros(n_chunks, bool))

    def save(self, out: OutputDir, name: str, grid_hash: str) -> None:
        def produce(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, best=self.best, count=self.count, done=self.done,
                         grid_hash=np.array(grid_hash))

        out.write_state(name, produce)

    @classmethod
    def load(cls, path: Path, grid_hash: str, shapes) -> State | None:
        """The saved state, or None when absent, of another grid or shape, or unreadable
        (a file truncated by a crash: that run's work is redone, with a word on stderr)."""
        if not path.exists():
            return None
        try:
            with np.load(path) as data:
                if str(data["grid_hash"]) != grid_hash:
                    return None
                state = cls(data["best"], data["count"], data["done"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            print(f"note: ignoring unreadable resume state {path} ({type(err).__name__}); "
                  "its chunks are evaluated again", file=sys.stderr)
            return None
        if (state.best.shape, state.count.shape, state.done.shape) != shapes:
            return None
        return state


class Progress:
    """One status line on stderr: configurations/s and ETA."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.start, self.last = total, enabled, time.perf_counter(), 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and not force):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate else float("inf")
        sys.stderr.write(f"\r{done:,}/{self.total:,} configurations  {rate:,.3g}/s  "
                         f"ETA {eta:5.0f} s   ")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(grid: Grid, *, force: bool = False, progress: bool = True,
        devices: list | None = None, max_chunks: int | None = None) -> dict:
    """Evaluate the whole grid and write the outputs; returns the manifest.

    Under `jax.distributed` (several processes, `jax.process_count() > 1`) process p takes
    chunks p, p + P, p + 2P, ... on its local devices and keeps its own resumable state in
    the shared output directory; process 0 merges the parts (max and sum: exact and
    order-independent) and writes the files, identical to a one-process run.
    `max_chunks` stops after that many new chunks (an interrupted run, for tests)."""
    out = OutputDir(grid.output_dir)
    rank = jax.process_index()
    if rank != 0:
        return _run(grid, out, progress, devices, max_chunks)
    with out.lock():
        out.claim(grid.hash, grid.name, force=force)
        return _run(grid, out, progress, devices, max_chunks)


def _state_name(rank: int, ranks: int) -> str:
    return f"state-{rank}-of-{ranks}.npz"


def _run(grid: Grid, out: OutputDir, progress: bool, devices, max_chunks) -> dict:
    rank, ranks = jax.process_index(), jax.process_count()
    _barrier(ranks, "checked")
    layout = Layout.of(grid)
    kept = Kept.of(grid)
    shapes = (kept.shape(grid), tuple(len(grid.axis(n)) for n in kept.group),
              (layout.n_chunks,))
    state_name = _state_name(rank, ranks)
    state = State.load(out.state / state_name, grid.hash, shapes) or State.empty(*shapes)

    devices = devices or jax.local_devices()
    mesh = Mesh(np.array(devices), ("chunks",))
    tables = Tables(grid)
    arrays = tables.swept_arrays(layout)
    kernel = make_kernel(grid, layout, kept)

    def per_device(indices, arrays):
        # One chunk per device: index the block's single row instead of vmapping, so that
        # the kernel's lax.cond stays a branch.
        return jax.tree_util.tree_map(lambda x: x[None], kernel(indices[0], arrays))

    batched = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("chunks"), P()),
                                    out_specs=P("chunks"), check_vma=False))
    pending: list[np.ndarray] = []  # near-capacity configurations, decided at checkpoints
    mine = range(rank, layout.n_chunks, ranks)
    todo = [c for c in mine if not state.done[c]]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    bar = Progress(len(mine) * layout.chunk_configs, progress and rank == 0)
    started = time.perf_counter()
    compile_seconds = 0.0
    checkpointed = time.perf_counter()
    evaluated = int(state.done[mine.start::mine.step].sum()) * layout.chunk_configs
    n_dev = len(devices)

    def checkpoint() -> None:
        _decide_near(grid, layout, kept, tables, state, pending)
        state.save(out, state_name, grid.hash)

    try:
        for start in range(0, len(todo), n_dev):
            batch = todo[start:start + n_dev]
            padded = batch + [batch[-1]] * (n_dev - len(batch))
            indices = np.array([layout.outer_index(c) for c in padded], np.int32).reshape(
                n_dev, layout.outer)
            t0 = time.perf_counter()
            best, count, n_near, bits = jax.device_get(batched(jnp.asarray(indices), arrays))
            if start == 0:
                compile_seconds = time.perf_counter() - t0
            for i, chunk in enumerate(batch):
                outer_index = layout.outer_index(chunk)
                slot = chunk_slot(grid, layout, kept.names, outer_index)
                state.best[slot] = np.maximum(state.best[slot], best[i])
                gslot = chunk_slot(grid, layout, kept.group, outer_index)
                state.count[gslot] += count[i]
                if n_near[i]:
                    local = unpack_near(bits[i], layout, kernel.permutation)
                    pending.append(_full_flat(layout, outer_index, local))
                if grid.feasible_dump:
                    _dump_chunk(grid, layout, tables, chunk, out)
                state.done[chunk] = True
            evaluated += len(batch) * layout.chunk_configs
            bar.update(evaluated)
            # The first checkpoint right after compiling, so that a kill saves the work done.
            if start == 0 or time.perf_counter() - checkpointed > CHECKPOINT_SECONDS:
                checkpoint()
                checkpointed = time.perf_counter()
    except KeyboardInterrupt:
        checkpoint()  # what finished is kept: the same command resumes from it
        raise
    checkpoint()
    bar.update(evaluated, force=True)
    run_seconds = time.perf_counter() - started
    _barrier(ranks, "swept")
    timing = {"seconds": run_seconds, "compile_seconds": compile_seconds,
              "configurations": len(todo) * layout.chunk_configs,
              "configurations_per_second": len(todo) * layout.chunk_configs
              / max(run_seconds, 1e-9), "processes": ranks}
    merged = _merge_parts(out, grid, shapes, ranks)
    if not merged.done.all():
        return {"complete": False, "chunks_done": int(merged.done.sum()),
                "chunks": layout.n_chunks}
    if rank == 0:
        manifest = _finish(grid, layout, kept, tables, merged, out)
    _barrier(ranks, "written")
    if rank != 0:
        manifest = json.loads((out.root / "manifest.json").read_text())
    # Timing goes to the caller, not into the files (they stay byte-identical across runs).
    if todo:
        manifest["timing"] = timing
    return manifest


def _barrier(ranks: int, name: str) -> None:
    if ranks > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _merge_parts(out: OutputDir, grid: Grid, shapes, ranks: int) -> State:
    """Every process's state, merged: max of the best values, sum of the counts."""
    merged = State.empty(*shapes)
    for rank in range(ranks):
        part = State.load(out.state / _state_name(rank, ranks), grid.hash, shapes)
        if part is None:
            continue
        merged.best = np.maximum(merged.best, part.best)
        merged.count += part.count
        merged.done |= part.done
    return merged


def _full_flat(layout: Layout, outer_index, local) -> np.ndarray:
    """Flat indices (layout order) of a chunk's inner flat indices."""
    local = np.asarray(local, np.int64)
    if not layout.outer:
        return local
    return np.ravel_multi_index(
        (*[np.full(local.shape, i) for i in outer_index],
         *np.unravel_index(local, layout.inner_shape)), layout.sizes)


BATCH = 1 << 20  # configurations per NumPy float64 evaluation


def _decide_near(grid, layout, kept, tables, state, pending: list) -> None:
    """Near-capacity configurations (left out on device): decide them in float64 and merge
    those that fit into the state; empties `pending`."""
    flat = np.concatenate(pending) if pending else np.zeros(0, np.int64)
    pending.clear()
    for start in range(0, len(flat), BATCH):
        fits, value, coords = evaluate_flat(grid, layout, tables, flat[start:start + BATCH])
        for j in np.flatnonzero(fits):
            cell = tuple(int(coords[n][j]) if n in coords else 0 for n in kept.names)
            state.best[cell] = max(state.best[cell], float(value[j]))
            gcell = tuple(int(coords[n][j]) if n in coords else 0 for n in kept.group)
            state.count[gcell] += 1


def evaluate_flat(grid, layout, tables, flat):
    """(fits, computed objective, per-axis indices) of flat indices, in float64 NumPy."""
    from sweep.enumerate import derived_objective

    coords = decode(layout, flat)
    arch, cfg, hw = flat_inputs(tables, layout, coords)
    cfg, est, fits = fits_mask(grid, arch, cfg, hw)
    shape = np.shape(flat)
    value = np.broadcast_to(derived_objective(grid, cfg, est), shape)
    return np.broadcast_to(fits, shape), value, coords


def _dump_chunk(grid, layout, tables, chunk, out: OutputDir) -> None:
    """Every feasible configuration of one chunk, evaluated in float64 in batches of BATCH
    configurations (memory bounded by the batch, not the chunk)."""
    outer_index = layout.outer_index(chunk)
    parts = []
    for start in range(0, layout.chunk_configs, BATCH):
        local = np.arange(start, min(start + BATCH, layout.chunk_configs))
        flat = _full_flat(layout, outer_index, local)
        fits, _, _ = evaluate_flat(grid, layout, tables, flat)
        parts.append(configurations_frame(grid, layout, tables, flat[fits]))
    sink.write_parquet(out, f"feasible/chunk-{chunk:08d}.parquet", pl.concat(parts),
                       sink.metadata(grid))


def configurations_frame(grid, layout, tables, flat) -> pl.DataFrame:
    """One row per configuration: every axis value, memory columns, fit (float64)."""
    coords = decode(layout, flat)
    arch, cfg, hw = flat_inputs(tables, layout, coords)
    from sweep.enumerate import constrain

    cfg, _ = constrain(grid, cfg)
    est = estimate(arch, cfg, hw)
    n = len(flat)
    columns = {}
    for axis in grid.axes:
        index = coords.get(axis.name, np.zeros(n, int))
        if axis.name in ("model", "gpu") or axis.name in vocab.CATEGORIES \
                or axis.name == "lora_targets":
            labels = np.array(axis.labels, dtype=object)[index]
            columns[axis.name] = pl.Series(axis.name, labels, dtype=pl.Categorical)
        else:
            columns[axis.name] = pl.Series(axis.name, axis.values[index], dtype=pl.Float64)
    columns["grad_accum"] = pl.Series("grad_accum", np.broadcast_to(cfg.grad_accum, n) * 1.0)
    columns["gpus_per_node"] = pl.Series("gpus_per_node",
                                         np.broadcast_to(cfg.gpus_per_node, n) * 1.0)
    columns["params"] = pl.Series("params", np.broadcast_to(est.params_total, n) * 1.0)
    columns["params_per_gpu"] = pl.Series("params_per_gpu",
                                          np.broadcast_to(est.params_per_gpu, n) * 1.0)
    columns["tokens_per_gpu"] = pl.Series(
        "tokens_per_gpu", np.broadcast_to(cfg.micro_batch * cfg.seq_len
                                          / (cfg.tp * cfg.pp * cfg.cp), n) * 1.0)
    for k in GPU_COMPONENTS:
        columns[f"{k}_bytes"] = pl.Series(f"{k}_bytes", np.broadcast_to(getattr(est, k), n) * 1.0)
    total = np.broadcast_to(est.per_gpu_total_bytes, n) * 1.0
    capacity = np.broadcast_to(est.gpu_capacity_bytes, n) * 1.0
    host = np.broadcast_to(est.host_bytes_per_node, n) * 1.0
    host_capacity = np.broadcast_to(hw.host_memory_bytes_per_node, n) * 1.0
    columns["per_gpu_total_bytes"] = pl.Series("per_gpu_total_bytes", total)
    columns["per_gpu_total_gib"] = pl.Series("per_gpu_total_gib", total / GIB)
    columns["gpu_capacity_bytes"] = pl.Series("gpu_capacity_bytes", capacity)
    columns["headroom_bytes"] = pl.Series("headroom_bytes", capacity - total)
    columns["host_bytes_per_node"] = pl.Series("host_bytes_per_node", host)
    columns["host_capacity_bytes"] = pl.Series("host_capacity_bytes", host_capacity)
    gpu_share = total / capacity
    host_share = np.divide(host, host_capacity, out=np.zeros(n), where=host_capacity > 0)
    columns["binding_constraint"] = pl.Series(
        "binding_constraint", np.where(host_share > gpu_share, "host_memory", "gpu_memory"),
        dtype=pl.Categorical)
    columns["config_index"] = pl.Series("config_index", layout.canonical_index(coords))
    return pl.DataFrame(columns)


def _cell_configurations(grid, layout, kept, tables, cells) -> np.ndarray:
    """The configuration behind each frontier cell: among the cell's configurations that fit
    with the best computed objective, the first in the grid's own axis order (the
    tie-break). Each cell's configurations are decided on the device as in the sweep; those
    near capacity in float64 on the host."""
    cell_layout = Layout.with_outer(grid, kept.names)
    evaluate = cell_kernel(grid, cell_layout)
    inner = np.unravel_index(np.arange(cell_layout.chunk_configs), cell_layout.inner_shape)
    chosen = np.zeros(len(cells), np.int64)
    for i, cell in enumerate(cells):
        outer_index = [cell[kept.names.index(n)] for n in cell_layout.names[:cell_layout.outer]]
        safe, near, objective = (np.asarray(a) for a in
                                 evaluate(jnp.asarray(np.array(outer_index, np.int32))))
        coords = {n: np.full(len(safe), c) for n, c in
                  zip(cell_layout.names[:cell_layout.outer], outer_index, strict=True)}
        coords.update(zip(cell_layout.inner_names, inner, strict=True))
        flat = np.ravel_multi_index(tuple(coords[n] for n in layout.names), layout.sizes)
        objective = objective.astype(np.float64)
        if near.any():  # decide those in float64
            exact_fits, exact_value, _ = evaluate_flat(grid, layout, tables, flat[near])
            safe = safe.copy()
            safe[np.flatnonzero(near)] = exact_fits
            objective[np.flatnonzero(near)] = exact_value
        best = objective[safe].max()
        pick = np.flatnonzero(safe & (objective == best))
        order = layout.canonical_index({n: coords[n][pick] for n in layout.names})
        chosen[i] = flat[pick[np.argmin(order)]]
    return chosen


def _finish(grid, layout, kept, tables, state, out: OutputDir) -> dict:
    meta = sink.metadata(grid)
    front = grid_frontier(state.best, grid, kept)
    cells = [tuple(c) for c in np.argwhere(front)]
    flats = _cell_configurations(grid, layout, kept, tables, cells)
    frame = configurations_frame(grid, layout, tables, flats)
    frame = _sorted(frame, grid)
    sink.write_partitioned(out, "frontier", frame, "gpu", meta)
    summary = _summary(grid, kept, state, frame)
    sink.write_parquet(out, "summary.parquet", summary, meta)
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
        "feasible": int(state.count.sum()),
        "frontier_points": len(frame),
        "files": sorted(out.owned() - {"manifest.json"}),
        "units": sink.UNITS,
    }
    out.write_json("manifest.json", manifest)
    return manifest


def _sorted(frame: pl.DataFrame, grid: Grid) -> pl.DataFrame:
    keys = [*grid.group_by] + [o.key for o in grid.objectives] + ["config_index"]
    keys = [k for k in dict.fromkeys(keys) if k in frame.columns]
    descending = [False] * len(keys)
    for i, key in enumerate(keys):
        for o in grid.objectives:
            if o.key == key:
                descending[i] = o.maximize
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String)).sort(
        keys, descending=descending)


def _summary(grid, kept, state, frame: pl.DataFrame) -> pl.DataFrame:
    """Per group: configurations, feasible count, frontier size and the best point (first in
    the objectives' order, ties to the lowest configuration index)."""
    rows = []
    group_sizes = [len(grid.axis(n)) for n in kept.group]
    per_group = grid.size // max(math.prod(group_sizes), 1)
    for cell in np.ndindex(*group_sizes):
        labels = {n: grid.axis(n).labels[i] for n, i in zip(kept.group, cell, strict=True)}
        points = frame
        for name, label in labels.items():
            points = points.filter(pl.col(name) == label)
        best = points.head(1).to_dicts()[0] if len(points) else {}
        rows.append({**labels, "configurations": per_group,
                     "feasible": int(state.count[cell]), "frontier_points": len(points),
                     **{f"best_{k}": v for k, v in best.items() if k not in labels}})
    return pl.DataFrame(rows)
