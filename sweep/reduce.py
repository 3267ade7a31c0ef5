"""Feasibility, per-group counts and exact Pareto frontiers, reduced along the grid's axes.

A chunk's kernel keeps, for every cell of the kept axes (group axes and objective axes), the
best value of the one computed objective among the configurations that fit (-inf if none),
and counts the configurations that fit per group; everything else is reduced away on device.
Chunks merge by elementwise max and sum. The frontier is then exact on the merged cells:
with every objective axis oriented so that a higher index is better, a cell is dominated when
some other cell at least as good on every axis holds a value at least as large, i.e. when the
reverse cumulative maximum one step further along any objective axis reaches its value.

Configurations within `NEAR` (relative) of the GPU capacity are left out on device, where
float32 could misjudge them, and decided in float64 on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sweep.enumerate import Layout, Tables, broadcast_inputs, constrain, derived_objective
from sweep.grid import Grid
from sweep.memory.total import estimate

NEAR = 1e-5


@dataclass(frozen=True)
class Kept:
    """The axes a reduction keeps: group axes then objective axes, in canonical order."""

    names: tuple[str, ...]  # every kept axis (swept or not), canonical order
    group: tuple[str, ...]
    objective_axes: tuple[str, ...]

    @classmethod
    def of(cls, grid: Grid) -> Kept:
        objective_axes = tuple("model" if o.key == "params" else o.key for o in grid.objectives
                               if o.key not in ("tokens_per_gpu", "per_gpu_total_bytes",
                                                "headroom_bytes"))
        wanted = set(grid.group_by) | set(objective_axes)
        names = tuple(a.name for a in grid.axes if a.name in wanted)
        return cls(names, tuple(grid.group_by), objective_axes)

    def shape(self, grid: Grid) -> tuple[int, ...]:
        return tuple(len(grid.axis(n)) for n in self.names)


def fits_mask(grid: Grid, arch, cfg, hw):
    """(cfg, est, fits, near): valid, within the constraints, the GPU and the host's RAM;
    `near` marks those whose GPU total is within NEAR of capacity (decided on the host)."""
    cfg, allowed = constrain(grid, cfg)
    est = estimate(arch, cfg, hw)
    ok = allowed & (est.invalid == 0) & (est.host_bytes_per_node <= hw.host_memory_bytes_per_node)
    gap = est.gpu_capacity_bytes - est.per_gpu_total_bytes
    near = ok & (abs(gap) <= NEAR * est.gpu_capacity_bytes)
    return cfg, est, ok & (gap >= 0) & ~near, near


def make_kernel(grid: Grid, layout: Layout, kept: Kept):
    """The chunk kernel: (outer indices, swept tables) -> (best per kept inner cell, count per
    inner group cell, configurations near capacity)."""
    tables = Tables(grid)
    inner = layout.inner_names
    reduce_axes = tuple(i for i, n in enumerate(inner) if n not in kept.names)
    count_axes = tuple(i for i, n in enumerate(inner) if n not in kept.group)

    def kernel(outer_index, arrays):
        arch, cfg, hw = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        cfg, est, fits, near = fits_mask(grid, arch, cfg, hw)
        shape = layout.inner_shape
        fits = jnp.broadcast_to(fits, shape)
        value = jnp.broadcast_to(derived_objective(grid, cfg, est), shape)
        score = jnp.where(fits, value, -jnp.inf).astype(jnp.float32)
        best = jnp.max(score, axis=reduce_axes) if reduce_axes else score
        count = jnp.sum(fits, axis=count_axes, dtype=jnp.int32) if count_axes else \
            fits.astype(jnp.int32)
        return best, count, jnp.sum(jnp.broadcast_to(near, shape), dtype=jnp.int32)

    return kernel


def near_kernel(grid: Grid, layout: Layout):
    """The chunk's near-capacity mask, for the host to decide those in float64."""
    tables = Tables(grid)

    arrays = tables.swept_arrays(layout)

    def kernel(outer_index, arrays):
        arch, cfg, hw = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        _, _, _, near = fits_mask(grid, arch, cfg, hw)
        return jnp.broadcast_to(near, layout.inner_shape)

    return lambda outer_index: jax.jit(kernel)(outer_index, arrays)


def chunk_slot(grid: Grid, layout: Layout, kept_names: tuple[str, ...], outer_index):
    """Index into a merged array over `kept_names` where a chunk's result goes."""
    slot = []
    for name in kept_names:
        if name in layout.names[: layout.outer]:
            slot.append(outer_index[layout.names.index(name)])
        elif name in layout.names:
            slot.append(slice(None))
        else:
            slot.append(0)
    return tuple(slot)


def frontier_cells(best: np.ndarray, objective_dims, maximize) -> np.ndarray:
    """Boolean mask over cells: the exact Pareto frontier within each group.

    `best` holds the computed objective (larger is better; -inf: nothing fits); dimension
    `objective_dims[i]` is an objective axis, better at higher index when `maximize[i]`; the
    remaining dimensions are groups. A cell is on the frontier when something fits and no other
    cell of its group is at least as good on every objective axis with a value at least as
    large: when the reverse cumulative maximum one step further along any objective axis
    reaches its value.
    """
    flips = [d for d, up in zip(objective_dims, maximize, strict=True) if not up]
    oriented = np.flip(best, flips) if flips else best
    cummax = oriented
    for axis in objective_dims:
        cummax = np.flip(np.maximum.accumulate(np.flip(cummax, axis), axis=axis), axis)
    dominated = np.zeros(oriented.shape, dtype=bool)
    for axis in objective_dims:
        shifted = np.full(oriented.shape, -np.inf, dtype=cummax.dtype)
        src = [slice(None)] * oriented.ndim
        dst = [slice(None)] * oriented.ndim
        src[axis], dst[axis] = slice(1, None), slice(None, -1)
        shifted[tuple(dst)] = cummax[tuple(src)]
        dominated |= shifted >= oriented
    on_front = np.isfinite(oriented) & ~dominated
    return np.flip(on_front, flips) if flips else on_front


def grid_frontier(best: np.ndarray, grid: Grid, kept: Kept) -> np.ndarray:
    """`frontier_cells` for a grid's merged results (kept axes: groups and objective axes)."""
    dims, up = [], []
    for objective in grid.objectives:
        name = "model" if objective.key == "params" else objective.key
        if name in kept.names:
            dims.append(kept.names.index(name))
            up.append(objective.maximize)
    return frontier_cells(best, dims, up)


def pareto_mask(points: np.ndarray, maximize) -> np.ndarray:
    """Exact non-dominated mask of `points` (n x k) under per-column directions, by pairwise
    comparison (for checking; the engine uses `frontier_cells`)."""
    signs = np.where(np.asarray(maximize), 1.0, -1.0)
    p = np.asarray(points, dtype=float) * signs
    ge = (p[None, :, :] >= p[:, None, :]).all(-1)
    gt = (p[None, :, :] > p[:, None, :]).any(-1)
    return ~(ge & gt).any(1)
