"""Exact Pareto frontiers on the merged cells of the kept axes.

A sweep keeps, for every cell of the kept axes (group axes and objective axes), the best value
of the one computed objective among the configurations that fit (-inf where none does). With
every objective axis oriented so that a higher index is better, a cell is dominated when some
other cell of its group at least as good on every axis holds a value at least as large, i.e.
when the reverse cumulative maximum one step further along any objective axis reaches its value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep.grid import Grid
from sweep.outputs import BY_NAME, OBJECTIVES


def objective_axis(key: str) -> str | None:
    """The grid axis an objective ranks by (`params` ranks models), None for a quantity the
    kernel computes per configuration."""
    if key in OBJECTIVES:
        return None
    return "model" if key == "params" else key


@dataclass(frozen=True)
class Kept:
    """The axes a reduction keeps: group axes then objective axes, in canonical order."""

    names: tuple[str, ...]  # every kept axis (swept or not), canonical order
    group: tuple[str, ...]  # the group axes, canonical order (the order of count arrays)
    objective_axes: tuple[str, ...]

    @classmethod
    def of(cls, grid: Grid) -> Kept:
        objective_axes = tuple(a for a in map(objective_axis, (o.key for o in grid.objectives))
                               if a is not None)
        wanted = set(grid.group_by) | set(objective_axes)
        names = tuple(a.name for a in grid.axes if a.name in wanted)
        group = tuple(n for n in names if n in grid.group_by)
        return cls(names, group, objective_axes)

    def shape(self, grid: Grid) -> tuple[int, ...]:
        return tuple(len(grid.axis(n)) for n in self.names)

    def group_shape(self, grid: Grid) -> tuple[int, ...]:
        return tuple(len(grid.axis(n)) for n in self.group)


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
        name = objective_axis(objective.key)
        if name in kept.names:
            dims.append(kept.names.index(name))
            up.append(objective.maximize)
    return frontier_cells(best, dims, up)


def pareto_mask(points: np.ndarray, maximize) -> np.ndarray:
    """Exact non-dominated mask of `points` (one row per point, one column per objective)
    under per-column directions, by pairwise
    comparison (for checking; the engine uses `frontier_cells`)."""
    signs = np.where(np.asarray(maximize), 1.0, -1.0)
    p = np.asarray(points, dtype=float) * signs
    ge = (p[None, :, :] >= p[:, None, :]).all(-1)
    gt = (p[None, :, :] > p[:, None, :]).any(-1)
    return ~(ge & gt).any(1)


def computed_objective(grid: Grid):
    """(quantity, sign) of the grid's one objective computed per configuration, sign +1 to
    maximise and -1 to minimise (the kernel maximises sign·quantity); None when every
    objective is an axis."""
    for objective in grid.objectives:
        if objective.key in OBJECTIVES:
            return BY_NAME[objective.key], 1.0 if objective.maximize else -1.0
    return None
