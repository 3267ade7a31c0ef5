"""The exact path: configurations given by flat index, evaluated in float64 NumPy with the
same formulas as the kernel (the near-capacity ones the kernel leaves to the host, the
frontier's rows, the feasible dump, the benchmark's NumPy twin)."""

from __future__ import annotations

import numpy as np

from sweep.engine.frontier import computed_objective
from sweep.enumerate import Layout, Tables, constrain, decode, flat_inputs
from sweep.grid import Grid
from sweep.memory.total import estimate
from sweep.outputs import Evaluation

BATCH = 1 << 20  # configurations per NumPy float64 evaluation


def evaluation(grid: Grid, layout: Layout, tables: Tables, flat) -> tuple[Evaluation, object,
                                                                           dict]:
    """(evaluation, fits, per-axis indices) of flat indices (layout order)."""
    coords = decode(layout, flat)
    arch, cfg, hw = flat_inputs(tables, layout, coords)
    cfg, allowed = constrain(grid, cfg, hw)
    est = estimate(arch, cfg, hw)
    return Evaluation(cfg, est, hw), allowed & est.fits, coords


def objective_value(grid: Grid, ev: Evaluation):
    """The computed objective, oriented so that larger is better (0 when there is none)."""
    objective = computed_objective(grid)
    if objective is None:
        return 0.0
    quantity, sign = objective
    return sign * quantity.compute(ev)


def evaluate_flat(grid: Grid, layout: Layout, tables: Tables, flat):
    """(fits, computed objective, per-axis indices) of flat indices, in float64 NumPy."""
    ev, fits, coords = evaluation(grid, layout, tables, flat)
    shape = np.shape(flat)
    value = np.broadcast_to(objective_value(grid, ev), shape)
    return np.broadcast_to(fits, shape), value, coords


def full_flat(layout: Layout, outer_index, local) -> np.ndarray:
    """Flat indices (layout order) of a chunk's inner flat indices."""
    local = np.asarray(local, np.int64)
    if not layout.outer:
        return local
    return np.ravel_multi_index(
        (*[np.full(local.shape, i) for i in outer_index],
         *np.unravel_index(local, layout.inner_shape)), layout.sizes)


def unpack_near(bits: np.ndarray, layout: Layout, permutation) -> np.ndarray:
    """Inner flat indices (canonical inner order) of the configurations a kernel marked near
    capacity, from its packed mask in the plan's dimension order."""
    shape = layout.inner_shape
    size = int(np.prod(shape, dtype=np.int64))
    local = np.flatnonzero(np.unpackbits(bits)[:size])
    coords = np.unravel_index(local, [shape[i] for i in permutation])
    by_dim = dict(zip(permutation, coords, strict=True))
    return np.ravel_multi_index(tuple(by_dim[i] for i in range(len(shape))), shape)
