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

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sweep import xp
from sweep.enumerate import Layout, Tables, broadcast_inputs, constrain, derived_objective
from sweep.grid import Grid
from sweep.memory.total import estimate, fit_terms

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
    """(cfg, est, fits) in the caller's precision: `estimate`'s fit within the constraints."""
    cfg, allowed = constrain(grid, cfg)
    est = estimate(arch, cfg, hw)
    return cfg, est, allowed & est.fits


@dataclass(frozen=True)
class Sides:
    """The fit decision split by axes. Per stage: `static` = static part - A (+inf where a
    static check fails), `step` = static + step - A (the optimizer step's margin, +inf where a
    static check fails) and `dynamic` (+inf where a dynamic check fails), A the allocatable
    bytes; `tolerance` = NEAR·A. The margin max over stages of max(static + dynamic, step) is
    <= -tolerance where a configuration surely fits, within ±tolerance where float32 cannot
    tell (the host decides in float64). `leftover`: checks that fit neither side."""

    static: tuple
    step: tuple
    dynamic: tuple
    tolerance: object
    leftover: object
    value: object


def split_terms(grid: Grid, arch, cfg, hw) -> Sides:
    """`fit_terms` regrouped so that each term stays on the sub-grid of its own axes.

    Per stage, allocated = static + max(dynamic, step) must not exceed the allocatable bytes
    A. Checks that depend on no axis only the dynamic part has are folded into the static
    side as +inf, checks on no static-only axis into the dynamic side.
    """
    cfg, allowed = constrain(grid, cfg)
    frameworks = tuple(int(code) for code in grid.axis("framework").values)
    terms = fit_terms(arch, cfg, hw, frameworks)
    static_dims = _dims(*[p.backward for p in terms.stages], *[p.step for p in terms.stages])
    dynamic_dims = _dims(*[p.dynamic for p in terms.stages])
    static_ok, dynamic_ok, leftover = True, True, True
    for check in [*terms.checks.values(), terms.host_ok, allowed]:
        dims = _dims(check)
        if dims <= static_dims | (dims - dynamic_dims):
            static_ok = static_ok & check  # no axis that only the dynamic side has
        elif dims <= dynamic_dims | (dims - static_dims):
            dynamic_ok = dynamic_ok & check
        else:
            leftover = leftover & check
    allocatable = terms.allocatable_bytes
    static, step, dynamic = [], [], []
    for parts in terms.stages:
        static.append(xp.materialize(xp.where(static_ok, parts.backward - allocatable, np.inf)))
        step.append(xp.materialize(xp.where(static_ok, parts.step - allocatable, np.inf)))
        dynamic.append(xp.materialize(xp.where(dynamic_ok, parts.dynamic, np.inf)))
    memory_objective = any(o.key in ("per_gpu_total_bytes", "headroom_bytes")
                           for o in grid.objectives)
    est = estimate(arch, cfg, hw) if memory_objective else None
    value = xp.materialize(derived_objective(grid, cfg, est))
    return Sides(tuple(static), tuple(step), tuple(dynamic), NEAR * allocatable, leftover,
                 value)


def _dims(*arrays) -> set[int]:
    """Dimensions along which any of the arrays varies."""
    out = set()
    for a in arrays:
        out |= {i for i, size in enumerate(np.shape(a)) if size > 1}
    return out


def _matrix(array, rows, cols, shape):
    """`array` (broadcastable to `shape`) as a prod(rows) x prod(cols) matrix."""
    n = len(shape)
    a = jnp.asarray(array, jnp.float32)
    a = a.reshape((1,) * (n - a.ndim) + a.shape)
    full = tuple(shape[i] if i in rows or i in cols else 1 for i in range(n))
    a = jnp.broadcast_to(a, full)
    rest = [i for i in range(n) if i not in rows and i not in cols]
    a = jnp.transpose(a, [*rows, *cols, *rest])
    return a.reshape(math.prod(shape[i] for i in rows), math.prod(shape[i] for i in cols))


def _margin(static_side, dynamic_side, sides: Sides):
    margin = -jnp.inf
    for static, step, dynamic in zip(sides.static, sides.step, sides.dynamic, strict=True):
        margin = jnp.maximum(margin, jnp.maximum(static_side(static) + dynamic_side(dynamic),
                                                 static_side(step)))
    return margin


def _blocks(sides: Sides, shape, keep=frozenset()):
    """(shared, static-only, dynamic-only) inner dimensions, kept ones first within each
    block (so that reductions run over trailing dimensions); None when the terms do not
    split that way (checks on both sides' axes, or a value that varies with static axes)."""
    n = len(shape)
    static = _dims(*sides.static, *sides.step, sides.tolerance)
    dynamic = _dims(*sides.dynamic)
    if _dims(sides.leftover):
        return None

    def ordered(dims):
        return sorted(dims, key=lambda d: (d not in keep, d))

    shared = ordered(static & dynamic)
    static_only = ordered(set(range(n)) - dynamic)  # with the axes nothing depends on
    dynamic_only = ordered(dynamic - static)
    if not _dims(sides.value) <= set(shared) | set(dynamic_only):
        return None
    return shared, static_only, dynamic_only


ROWS_PER_BLOCK_CONFIGS = 1 << 18  # configurations evaluated per block of static rows


def pruned_reduce(sides: Sides, shape, inner, kept: Kept):
    """The chunk's reduction over the live static rows only.

    A static row (one combination of the static-only axes) is dead when no configuration in
    it can fit: a static check failed (+inf), or even the smallest dynamic part does not fit.
    Many are (invalid degrees, ZeRO/offload combinations, host RAM, models too big for the
    shard). Live rows are sorted first and evaluated in blocks until they run out, each
    block's best value, count and near count scattered into the kept cells by the row's
    kept static coordinates. Returns (best, count, near count, near mask in the
    (shared, static-only, dynamic-only) layout, permutation), or None when the terms do not
    split into static and dynamic sides.
    """
    keep = frozenset(i for i, n in enumerate(inner) if n in kept.names)
    blocks = _blocks(sides, shape, keep)
    if blocks is None:
        return None
    shared, static_only, dynamic_only = blocks

    def stat(a):
        return _matrix(a, shared, static_only, shape)

    def dyn(a):
        return _matrix(a, shared, dynamic_only, shape)

    mats = Sides(tuple(map(stat, sides.static)), tuple(map(stat, sides.step)),
                 tuple(map(dyn, sides.dynamic)), stat(sides.tolerance), True, dyn(sides.value))
    c_size, s_size = mats.static[0].shape
    d_size = mats.dynamic[0].shape[1]
    # Dead rows: even the smallest dynamic part does not fit with any shared value.
    best_case = _margin(lambda a: a, lambda a: jnp.min(a, axis=1, keepdims=True), mats)
    alive = jnp.any(best_case <= mats.tolerance, axis=0)
    order = jnp.argsort(~alive, stable=True).astype(jnp.int32)
    n_alive = jnp.sum(alive, dtype=jnp.int32)

    rows_per_block = max(1, min(s_size, ROWS_PER_BLOCK_CONFIGS // max(c_size * d_size, 1)))
    n_blocks = (n_alive + rows_per_block - 1) // rows_per_block
    order = jnp.concatenate([order, jnp.zeros(rows_per_block, jnp.int32)])

    def sizes(dims):
        return [shape[i] for i in dims]

    ck = [i for i in shared if i in keep]
    sk = [i for i in static_only if i in keep]
    dk = [i for i in dynamic_only if i in keep]
    c_kept, s_kept, d_kept = (math.prod(sizes(x)) for x in (ck, sk, dk))
    s_rest = s_size // s_kept  # rows per kept static cell (kept dims lead the row index)

    def body(block, carry):
        best, count, n_near, near_mask = carry
        index = block * rows_per_block + jnp.arange(rows_per_block)
        rows = jax.lax.dynamic_slice(order, (block * rows_per_block,), (rows_per_block,))
        live = index < n_alive
        margin = _margin(lambda a: jnp.where(live, a[:, rows], jnp.inf)[:, :, None],
                         lambda a: a[:, None, :], mats)
        safe, near = _classify(margin, mats.tolerance[:, rows][:, :, None], True)
        shape5 = (c_kept, c_size // c_kept, rows_per_block, d_kept, d_size // d_kept)
        b_best, b_count, b_near = _reduce_cells(
            safe.reshape(shape5), near.reshape(shape5),
            jnp.broadcast_to(mats.value[:, None, :], safe.shape).reshape(shape5), (1, 4))
        cell = rows // s_rest  # kept static cell of each row
        best = best.at[cell].max(jnp.transpose(b_best, (1, 0, 2)))
        count = count.at[cell].add(jnp.transpose(b_count, (1, 0, 2)))
        near_mask = near_mask.at[:, rows, :].max(near)
        return best, count, n_near + jnp.sum(b_near), near_mask

    carry = (jnp.full((s_kept, c_kept, d_kept), -jnp.inf, jnp.float32),
             jnp.zeros((s_kept, c_kept, d_kept), jnp.int32), jnp.int32(0),
             jnp.zeros((c_size, s_size, d_size), bool))
    best, count, n_near, near_mask = jax.lax.fori_loop(0, n_blocks, body, carry)
    # (kept static, kept shared, kept dynamic) -> kept dims in canonical order.
    dims = [*sk, *ck, *dk]
    order_back = np.argsort(dims)
    best = jnp.transpose(best.reshape(sizes(sk) + sizes(ck) + sizes(dk)), order_back)
    count = jnp.transpose(count.reshape(sizes(sk) + sizes(ck) + sizes(dk)), order_back)
    return best, count, n_near, near_mask, [*shared, *static_only, *dynamic_only]


def _classify(margin, tolerance, leftover):
    """(safe, near): surely fits, or too close to the limit for float32 to tell."""
    safe = (margin <= -tolerance) & leftover
    return safe, (margin <= tolerance) & ~safe & leftover


def _reduce_cells(safe, near, value, dims):
    """Over `dims`, in one pass: best value where it fits, count that fit, count near."""
    return jax.lax.reduce(
        (jnp.where(safe, value, -jnp.inf).astype(jnp.float32), safe.astype(jnp.int32),
         near.astype(jnp.int32)),
        (np.float32(-np.inf), np.int32(0), np.int32(0)),
        lambda a, b: (jnp.maximum(a[0], b[0]), a[1] + b[1], a[2] + b[2]), dims)


def plain_decision(sides: Sides, shape):
    """(safe, near, value) by plain broadcasting over the inner dimensions (canonical
    order): the same arithmetic per configuration as `pruned_reduce`."""
    safe, near = _classify(_margin(lambda a: a, lambda a: a, sides), sides.tolerance,
                           sides.leftover)
    return (jnp.broadcast_to(safe, shape), jnp.broadcast_to(near, shape),
            jnp.broadcast_to(sides.value, shape))


def broadcast_reduce(sides: Sides, shape, inner, kept: Kept):
    """`pruned_reduce`'s results for terms that do not split into static and dynamic sides:
    every configuration evaluated, one variadic reduce over the dimensions not kept
    (separate reductions would each recompute the decision)."""
    safe, near, value = plain_decision(sides, shape)
    drop = tuple(k for k, n in enumerate(inner) if n not in kept.names)
    best, count, n_near = _reduce_cells(safe, near, value, drop)
    return best, count, jnp.sum(n_near), near, list(range(len(shape)))


def make_kernel(grid: Grid, layout: Layout, kept: Kept):
    """The chunk kernel: (outer indices, swept tables) -> (best per kept inner cell, count per
    inner group cell, number of near-capacity configurations, their mask packed in bits when
    there are any). The mask is in the reduction's dimension order, `kernel.permutation`
    (set when the kernel is traced)."""
    tables = Tables(grid)
    inner, shape = layout.inner_names, layout.inner_shape
    size = math.prod(shape)
    packed = (size + 7) // 8
    kept_inner = [n for n in inner if n in kept.names]
    not_group = tuple(k for k, n in enumerate(kept_inner) if n not in kept.group)

    def pack(near):
        return jnp.packbits(jnp.pad(near.reshape(-1), (0, packed * 8 - size)))

    def kernel(outer_index, arrays):
        arch, cfg, hw = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        sides = split_terms(grid, arch, cfg, hw)
        best, count, n_near, near, permutation = (
            pruned_reduce(sides, shape, inner, kept) or broadcast_reduce(sides, shape, inner,
                                                                         kept))
        kernel.permutation = permutation
        count = jnp.sum(count, axis=not_group) if not_group else count
        bits = jax.lax.cond(n_near > 0, pack, lambda _: jnp.zeros(packed, jnp.uint8), near)
        return best, count, n_near, bits

    kernel.permutation = None
    return kernel


def unpack_near(bits: np.ndarray, layout: Layout, permutation) -> np.ndarray:
    """Inner flat indices (canonical inner order) of the configurations a kernel marked near
    capacity, from its packed mask in the decision's dimension order."""
    shape = layout.inner_shape
    size = math.prod(shape)
    local = np.flatnonzero(np.unpackbits(bits)[:size])
    coords = np.unravel_index(local, [shape[i] for i in permutation])
    by_dim = dict(zip(permutation, coords, strict=True))
    return np.ravel_multi_index(tuple(by_dim[i] for i in range(len(shape))), shape)


def cell_kernel(grid: Grid, layout: Layout):
    """(safe, near, value) over the inner axes for fixed outer axes, in canonical inner order:
    the configurations behind one frontier cell (`layout` has the kept axes outer)."""
    tables = Tables(grid)
    arrays = tables.swept_arrays(layout)
    shape = layout.inner_shape

    def kernel(outer_index, arrays):
        arch, cfg, hw = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        return tuple(a.reshape(-1) for a in
                     plain_decision(split_terms(grid, arch, cfg, hw), shape))

    jitted = jax.jit(kernel)
    return lambda outer_index: jitted(outer_index, arrays)


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
