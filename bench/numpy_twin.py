"""The engine's algorithm on NumPy: what the benchmark's JAX/NumPy ratio is measured against.

`structured_chunk` runs one chunk the way `sweep.engine.kernel` does (the same sides from
`split_terms` on the chunk's sub-grids, the same rows pruned, blocks of rows against every
column, the same per-cell reduction), in float64 NumPy; `flat_batch` is the plain twin:
decode flat indices, evaluate `estimate` on 1-D arrays, reduce per kept cell. Both return
(best value per kept cell, count that fit) for checking against the engine.
"""

from __future__ import annotations

import math

import numpy as np

from sweep.engine.exact import evaluate_flat
from sweep.engine.kernel import (
    at_rows,
    atom_readers,
    live_rows,
    margin_of,
    matrix,
    plan_of,
    read_atoms,
    row_coordinates,
    split_terms,
    time_value,
)
from sweep.enumerate import broadcast_inputs, rank_inputs


def _matrix(array, rows, cols, shape):
    return matrix(array, rows, cols, shape, np, np.float64)


def structured_chunk(grid, layout, kept, tables, chunk: int):
    """(best per kept inner cell, count per kept inner cell) of one chunk, kernel-style."""
    inner, shape = layout.inner_names, layout.inner_shape
    keep = frozenset(i for i, n in enumerate(inner) if n in kept.names)
    outer_index = layout.outer_index(chunk)
    arch, cfg, hw = broadcast_inputs(tables, layout, outer_index)
    sides = split_terms(grid, arch, cfg, hw, rank_inputs(tables, layout, outer_index))
    plan = plan_of(sides, shape, keep)
    ok, sides = sides.static_ok(), sides.resolved()
    shared, static_only, dynamic_only = plan.shared, plan.static_only, plan.dynamic_only
    c_size, s_size, d_size = (math.prod(shape[i] for i in g)
                              for g in (shared, static_only, dynamic_only))
    terms = sides.map(lambda a: np.asarray(a, np.float64),
                      lambda a: _matrix(a, shared, dynamic_only, shape))
    time_of = time_value(grid)
    if time_of is not None:
        readers, treedef = atom_readers(sides.value.atoms, plan, shape, np, np.float64)
    alive = np.flatnonzero(live_rows(sides, ok, plan, shape, np))
    ck, sk, dk = ([i for i in g if i in keep] for g in (shared, static_only, dynamic_only))
    c_kept, s_kept, d_kept = (math.prod(shape[i] for i in g) for g in (ck, sk, dk))
    c_rest, s_rest, d_rest = c_size // c_kept, s_size // s_kept, d_size // d_kept
    best = np.full((s_kept, c_kept, d_kept), -np.inf)
    count = np.zeros((s_kept, c_kept, d_kept), np.int64)
    for start in range(0, len(alive), plan.rows_per_block):
        rows = alive[start:start + plan.rows_per_block]
        c, s = rows // s_size, rows % s_size
        coords = row_coordinates(rows, plan, shape)
        one = terms.map(lambda a: at_rows(a, coords, shape, np, np.float64)[:, None],  # noqa: B023
                        lambda a: a[c])  # noqa: B023
        ok = True
        m = None
        if sides.batch is not None:
            b = one.batch
            m = np.round(b.per_replica * b.inverse_replicas)
            ok = (m >= 1) & (m * b.replicas == b.per_replica)
            ok = ok & ((b.grouped <= 0) | ((m >= b.pp) & (m == b.pp * np.floor(m / b.pp))))
        margin = margin_of(one, m)
        # Decided in float64 outright: no near-capacity band to hand to a second pass.
        fits = np.broadcast_to((margin <= 0) & ok, margin.shape)
        value = one.value.static * one.value.dynamic
        if time_of is not None:  # a time objective: its atoms read per configuration
            value = time_of(read_atoms(readers, treedef, coords, c, shape), m)
        if one.value.scale is not None:
            value = value + one.value.scale * margin
        value = np.where(fits, np.broadcast_to(value, fits.shape), -np.inf)
        shape3 = (len(rows), d_kept, d_rest)
        cell = (s // s_rest, c // c_rest)
        np.maximum.at(best, cell, value.reshape(shape3).max(axis=2))
        np.add.at(count, cell, fits.reshape(shape3).sum(axis=2))
    return best, count


def flat_batch(grid, layout, kept, tables, flat: np.ndarray):
    """(best per kept cell, count per kept cell) of the given flat indices, evaluated one
    configuration per element of 1-D arrays."""
    best = np.full(kept.shape(grid), -np.inf)
    count = np.zeros(kept.shape(grid), np.int64)
    fits, value, coords = evaluate_flat(grid, layout, tables, flat)
    cell = tuple((coords[n] if n in coords else np.zeros(len(fits), int))[fits]
                 for n in kept.names)
    np.maximum.at(best, cell, value[fits])
    np.add.at(count, cell, 1)
    return best, count
