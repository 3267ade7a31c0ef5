"""Orchestration: a grid's chunks through the compiled kernel on every local device (and
every process under `jax.distributed`), merged into a resumable state; then the frontier and
its configurations, evaluated exactly, written by `files`.

The state keeps, per kept cell, the best computed objective and the configuration behind it
(its index in the grid's own order: ties go to the first), per group the count that fit, and
which chunks are in them. Merging is exact and order-independent: the larger value, on ties
the smaller index; counts add.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from sweep.engine import files, peers
from sweep.engine.exact import BATCH, evaluate_flat, full_flat, unpack_near
from sweep.engine.frontier import Kept, grid_frontier
from sweep.engine.kernel import NO_RANK, ChunkResult, compile_kernel, replicated
from sweep.enumerate import Layout, Tables
from sweep.errors import SweepError
from sweep.grid import Grid
from sweep.outdir import OutputDir

CHECKPOINT_SECONDS = 10.0
NONE = -1  # the configuration index of a cell where nothing fits


@dataclass
class State:
    """Merged results so far: per kept cell the best computed objective and the canonical
    index of the first configuration reaching it, feasible count per group, chunks done."""

    best: np.ndarray
    index: np.ndarray
    count: np.ndarray
    done: np.ndarray

    @classmethod
    def empty(cls, best_shape, count_shape, n_chunks) -> State:
        return cls(np.full(best_shape, -np.inf, np.float64), np.full(best_shape, NONE, np.int64),
                   np.zeros(count_shape, np.int64), np.zeros(n_chunks, bool))

    def merge_cells(self, slot, best, index) -> None:
        """Merge candidate (best, index) arrays into the cells at `slot`: the larger value,
        on ties the smaller index (NONE never wins)."""
        old_best, old_index = self.best[slot], self.index[slot]
        better = (best > old_best) | ((best == old_best) & (index != NONE)
                                      & ((old_index == NONE) | (index < old_index)))
        self.best[slot] = np.where(better, best, old_best)
        self.index[slot] = np.where(better, index, old_index)

    def merge(self, other: State) -> None:
        self.merge_cells(Ellipsis, other.best, other.index)
        self.count += other.count
        self.done |= other.done

    def save(self, out: OutputDir, name: str, grid_hash: str) -> None:
        def produce(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, best=self.best, index=self.index, count=self.count,
                         done=self.done, grid_hash=np.array(grid_hash))

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
                state = cls(data["best"], data["index"], data["count"], data["done"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            print(f"note: ignoring unreadable resume state {path} ({type(err).__name__}); "
                  "its chunks are evaluated again", file=sys.stderr)
            return None
        if (state.best.shape, state.count.shape, state.done.shape) != shapes:
            return None
        return state


def progress_bar(total: int, done: int, enabled: bool, what: str = "configurations"):
    """A progress bar on stderr with rate and ETA (tqdm), starting at `done` of `total`."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit=f" {what}", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5, leave=True, file=sys.stderr)


def run(grid: Grid, *, force: bool = False, progress: bool = True,
        devices: list | None = None, max_chunks: int | None = None) -> dict:
    """Evaluate the whole grid and write the outputs; returns the manifest.

    Under `jax.distributed` (several processes, `jax.process_count() > 1`) process i of K
    takes chunks i, i + K, i + 2K, ... on its local devices and keeps its own resumable state in
    the shared output directory; process 0 merges the parts (max and sum: exact and
    order-independent) and writes the files, identical to a one-process run.
    `max_chunks` stops after that many new chunks (an interrupted run, for tests)."""
    check_size(grid)
    out = OutputDir(grid.output_dir)
    rank = jax.process_index()
    if rank != 0:
        return _run(grid, out, progress, devices, max_chunks)
    with out.lock():
        out.claim(grid.hash, grid.name, force=force)
        return _run(grid, out, progress, devices, max_chunks)


MAX_CONFIGURATIONS = 10**15  # about two weeks at this project's 2-core rate of ~1e9/s
MAX_CHUNKS = 10**8
BOOKKEEPING_SHARE = 0.25  # of the machine's memory, at most, for the merged state
STATE_BYTES_PER_CELL = 16  # best value (float64) and configuration index (int64)


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def check_size(grid: Grid) -> None:
    """Refuse, before anything is allocated, a grid whose configurations, chunks or merged
    bookkeeping (per kept cell) exceed the limits, with the figures and how to split it."""
    size = math.prod(len(a) for a in grid.axes)  # exact: Python integers
    split = ("split the grid (fewer values on an axis, or one grid per model or GPU) or "
             "group by fewer axes")
    if size >= 2**63:
        raise SweepError(f"{grid.path}: {size:.3g} configurations is beyond what a 64-bit index "
                         f"can count; {split}.")
    if size > MAX_CONFIGURATIONS:
        raise SweepError(f"{grid.path}: {size:.3g} configurations is over the limit of "
                         f"{MAX_CONFIGURATIONS:.0e} (weeks on one machine); {split}.")
    layout, kept = Layout.of(grid), Kept.of(grid)
    if layout.n_chunks > MAX_CHUNKS:
        raise SweepError(f"{grid.path}: {layout.n_chunks:,} chunks is over {MAX_CHUNKS:.0e}; "
                         "raise [output] chunk_size.")
    cells = math.prod(kept.shape(grid))
    budget = BOOKKEEPING_SHARE * machine_memory_bytes()
    if cells * STATE_BYTES_PER_CELL > budget:
        raise SweepError(
            f"{grid.path}: the frontier keeps {cells:,} cells (the product of the group_by "
            f"and objective axes: {', '.join(f'{n} {len(grid.axis(n))}' for n in kept.names)}), "
            f"{cells * STATE_BYTES_PER_CELL / 2**30:.1f} GiB of bookkeeping, over "
            f"{BOOKKEEPING_SHARE:.0%} of this machine's memory; {split}.")


def _state_name(rank: int, ranks: int) -> str:
    return f"state-{rank}-of-{ranks}.npz"


@dataclass(frozen=True)
class Sweep:
    """What every step of a run needs about the grid."""

    grid: Grid
    layout: Layout
    kept: Kept
    tables: Tables

    @classmethod
    def of(cls, grid: Grid) -> Sweep:
        return cls(grid, Layout.of(grid), Kept.of(grid), Tables(grid))

    @property
    def shapes(self):
        return (self.kept.shape(self.grid), self.kept.group_shape(self.grid),
                (self.layout.n_chunks,))

    def slot(self, names: tuple[str, ...], outer_index) -> tuple:
        """Index into a merged array over `names` where a chunk's result goes."""
        layout = self.layout
        slot = []
        for name in names:
            if name in layout.names[: layout.outer]:
                slot.append(outer_index[layout.names.index(name)])
            elif name in layout.names:
                slot.append(slice(None))
            else:
                slot.append(0)
        return tuple(slot)

    def canonical_of_ranks(self, outer_index, rank: np.ndarray) -> np.ndarray:
        """Canonical indices of a chunk's inner ranks (NO_RANK -> NONE)."""
        layout = self.layout
        found = rank != NO_RANK
        inner = np.unravel_index(np.where(found, rank, 0).astype(np.int64), layout.inner_shape)
        coords = dict(zip(layout.inner_names, inner, strict=True))
        coords.update({n: np.full(rank.shape, i) for n, i in
                       zip(layout.names[: layout.outer], outer_index, strict=True)})
        return np.where(found, layout.canonical_index(coords), NONE)

    def add_chunk(self, state: State, chunk: int, result: ChunkResult) -> None:
        outer_index = self.layout.outer_index(chunk)
        slot = self.slot(self.kept.names, outer_index)
        state.merge_cells(slot, result.best.astype(np.float64),
                          self.canonical_of_ranks(outer_index, result.rank))
        state.count[self.slot(self.kept.group, outer_index)] += result.count
        state.done[chunk] = True

    def decide_near(self, state: State, pending: list) -> None:
        """Near-capacity configurations (left out on device): decide them in float64 and merge
        those that fit into the state; empties `pending`."""
        flat = np.concatenate(pending) if pending else np.zeros(0, np.int64)
        pending.clear()
        for start in range(0, len(flat), BATCH):
            part = flat[start:start + BATCH]
            fits, value, coords = evaluate_flat(self.grid, self.layout, self.tables, part)
            canonical = self.layout.canonical_index(coords)
            # The kernel's values are float32: compare like with like.
            value = value.astype(np.float32).astype(np.float64)
            for j in np.flatnonzero(fits):
                cell = tuple(int(coords[n][j]) if n in coords else 0 for n in self.kept.names)
                state.merge_cells(cell, np.float64(value[j]), np.int64(canonical[j]))
                gcell = tuple(int(coords[n][j]) if n in coords else 0 for n in self.kept.group)
                state.count[gcell] += 1

    def chosen_flats(self, state: State) -> np.ndarray:
        """Flat indices (layout order) of the configurations behind the frontier's cells."""
        front = grid_frontier(state.best, self.grid, self.kept)
        canonical = state.index[front]
        names = self.layout.canonical
        sizes = dict(zip(self.layout.names, self.layout.sizes, strict=True))
        if not names:
            return np.zeros(len(canonical), np.int64)
        coords = dict(zip(names, np.unravel_index(canonical, [sizes[n] for n in names]),
                          strict=True))
        return np.ravel_multi_index(tuple(coords[n] for n in self.layout.names),
                                    self.layout.sizes)


def _run(grid: Grid, out: OutputDir, progress: bool, devices, max_chunks) -> dict:
    rank, ranks = jax.process_index(), jax.process_count()
    _barrier(ranks, "checked")
    sweep = Sweep.of(grid)
    layout = sweep.layout
    state_name = _state_name(rank, ranks)
    state = (State.load(out.state / state_name, grid.hash, sweep.shapes)
             or State.empty(*sweep.shapes))
    devices = devices or jax.local_devices()
    n_dev = len(devices)
    arrays = sweep.tables.swept_arrays(layout)
    mine = range(rank, layout.n_chunks, ranks)
    todo = [c for c in mine if not state.done[c]]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    shown = progress and rank == 0
    started = time.perf_counter()
    kernel = None
    if todo:
        if shown:
            print("preparing the kernel (compiled once per grid, then cached)...",
                  file=sys.stderr, flush=True)
        kernel = compile_kernel(grid, layout, sweep.kept, devices)
        if shown:
            print(f"{'loaded the cached kernel' if kernel.cached else 'compiled'} in "
                  f"{kernel.compile_seconds:.1f} s", file=sys.stderr, flush=True)
    pending: list[np.ndarray] = []  # near-capacity configurations, decided at checkpoints
    resumed = int(state.done[mine.start::mine.step].sum())
    bar = progress_bar(len(mine) * layout.chunk_configs, resumed * layout.chunk_configs,
                       shown and bool(todo))
    checkpointed = time.perf_counter()

    def checkpoint() -> None:
        sweep.decide_near(state, pending)
        state.save(out, state_name, grid.hash)

    batches = [todo[start:start + n_dev] for start in range(0, len(todo), n_dev)]

    def dispatch(batch):
        padded = batch + [batch[-1]] * (n_dev - len(batch))
        indices = np.array([layout.outer_index(c) for c in padded], np.int32).reshape(
            n_dev, layout.outer)
        return kernel(indices, arrays)

    try:
        if batches:
            arrays = replicated(arrays, devices)
            in_flight = dispatch(batches[0])
        for k, batch in enumerate(batches):
            done = in_flight
            # The next batch runs on the devices while this one's results are taken in.
            if k + 1 < len(batches):
                in_flight = dispatch(batches[k + 1])
            results = jax.device_get(done)
            for i, chunk in enumerate(batch):
                result = ChunkResult(*(x[i] for x in results))
                if result.n_near:
                    local = unpack_near(result.near_bits, layout, kernel.plan.permutation)
                    pending.append(full_flat(layout, layout.outer_index(chunk), local))
                sweep.add_chunk(state, chunk, result)
                if grid.feasible_dump:
                    files.dump_chunk(grid, layout, sweep.tables, chunk, out)
            bar.update(len(batch) * layout.chunk_configs)
            if time.perf_counter() - checkpointed > CHECKPOINT_SECONDS:
                checkpoint()
                if ranks > 1:
                    peers.check(rank)
                checkpointed = time.perf_counter()
    except KeyboardInterrupt:
        checkpoint()  # what finished is kept: the same command resumes from it
        raise
    checkpoint()
    bar.close()
    run_seconds = time.perf_counter() - started
    _barrier(ranks, "swept")
    configurations = len(todo) * layout.chunk_configs
    compile_seconds = kernel.compile_seconds if kernel else 0.0
    timing = {"seconds": run_seconds, "compile_seconds": compile_seconds,
              "compute_seconds": run_seconds - compile_seconds,
              "cached": bool(kernel and kernel.cached), "configurations": configurations,
              "configurations_per_second": configurations / max(run_seconds, 1e-9),
              "resumed_chunks": resumed, "processes": ranks}
    merged = _merge_parts(out, grid, sweep.shapes, ranks)
    if not merged.done.all():
        return {"complete": False, "chunks_done": int(merged.done.sum()),
                "chunks": layout.n_chunks}
    if rank == 0:
        manifest = files.write_results(grid, layout, sweep.tables, sweep.kept.group,
                                       merged.count, sweep.chosen_flats(merged), out)
    _barrier(ranks, "written")
    if rank != 0:
        manifest = json.loads((out.root / "manifest.json").read_text())
    # Timing goes to the caller, not into the files (they stay byte-identical across runs).
    if todo:
        manifest["timing"] = timing
    return manifest


def _barrier(ranks: int, name: str) -> None:
    if ranks > 1:
        peers.barrier(name, jax.process_index(), ranks)


def _merge_parts(out: OutputDir, grid: Grid, shapes, ranks: int) -> State:
    """Every process's state, merged."""
    merged = State.empty(*shapes)
    for rank in range(ranks):
        part = State.load(out.state / _state_name(rank, ranks), grid.hash, shapes)
        if part is not None:
            merged.merge(part)
    return merged
