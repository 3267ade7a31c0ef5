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
    return Evaluation(cfg, est, hw, arch, grid.token_budget), allowed & est.fits, coords


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
    capacity, from its mask: rows x columns in the plan's dimension order, each row's bits
    packed in bytes (`numpy.packbits(..., axis=1)`, zero-padded to whole bytes)."""
    shape = layout.inner_shape
    size = int(np.prod(shape, dtype=np.int64))
    n_rows, row_bytes = bits.shape
    columns = size // n_rows
    flat = np.ascontiguousarray(bits).reshape(-1)
    # Few bytes are set: unpack only the 64-bit words that hold one (a chunk's whole mask is
    # millions of bits), and the last bytes that make no whole word.
    whole = flat.size // 8 * 8
    words = np.flatnonzero(flat[:whole].view(np.uint64))
    read = np.concatenate([(words[:, None] * 8 + np.arange(8)).reshape(-1),
                           np.arange(whole, flat.size)])
    padded = (read[:, None] * 8 + np.arange(8)).reshape(-1)
    padded = padded[np.unpackbits(flat[read]).astype(bool)]
    row, column = np.divmod(padded, row_bytes * 8)
    local = row * columns + column
    coords = np.unravel_index(local, [shape[i] for i in permutation])
    by_dim = dict(zip(permutation, coords, strict=True))
    return np.ravel_multi_index(tuple(by_dim[i] for i in range(len(shape))), shape)


DIAGNOSIS_SAMPLE = 20_000


def why_nothing_fits(grid: Grid, sample: int = DIAGNOSIS_SAMPLE) -> list[str]:
    """Lines saying what excluded the configurations of a grid where nothing fits, from a
    random sample evaluated exactly: the grid's constraints, each validity reason, and among
    the valid ones GPU memory (with the smallest total against the capacity) or host RAM."""
    from sweep.enumerate import layout_constraints
    from sweep.validity import REASONS

    layout, tables = Layout.of(grid), Tables(grid)
    if grid.size <= sample:
        flat = np.arange(grid.size, dtype=np.int64)
    else:
        rng = np.random.default_rng(0)
        flat = np.unique(rng.integers(0, grid.size, size=sample, dtype=np.int64))
    ev, _, _ = evaluation(grid, layout, tables, flat)  # ev.cfg: grad_accum as derived
    n = len(flat)
    constrained = ~np.broadcast_to(layout_constraints(grid, ev.cfg, ev.hw), (n,))
    batch = np.zeros(n, bool)
    if grid.global_batch_tokens:
        _, allowed = constrain(grid, ev.cfg, ev.hw)
        batch = ~np.broadcast_to(allowed, (n,)) & ~constrained
    invalid = np.broadcast_to(ev.est.invalid, (n,)).astype(np.int64)
    lines = [f"nothing fits; of {n:,} sampled configurations:"]

    def share(mask) -> str:
        return f"{mask.mean():.0%} ({int(mask.sum()):,})"

    if constrained.any():
        lines.append(f"  {share(constrained)} excluded by the grid's constraints "
                     "(tp_within_node, whole_nodes, native_frameworks)")
    if batch.any():
        lines.append(f"  {share(batch)} excluded by global_batch_tokens (no whole number "
                     "of micro-batches >= 1 per data-parallel rank)")
    for bit, (key, text) in enumerate(REASONS):
        hit = (invalid >> bit & 1).astype(bool)
        if hit.any():
            lines.append(f"  {share(hit)} invalid: {key} ({text})")
    valid = (invalid == 0) & ~constrained & ~batch
    total = np.broadcast_to(ev.est.per_gpu_total_bytes, (n,))
    capacity = np.broadcast_to(ev.est.gpu_capacity_bytes, (n,))
    too_big = valid & (total > capacity)
    if too_big.any():
        i = np.flatnonzero(too_big)[np.argmin((total / capacity)[too_big])]
        lines.append(f"  {share(too_big)} valid but over GPU memory (the closest needs "
                     f"{total[i] / 2**30:.1f} GiB of {capacity[i] / 2**30:.1f} GiB)")
    host = valid & ~too_big
    if host.any():
        lines.append(f"  {share(host)} valid and within GPU memory but over the node's host "
                     "RAM or NVMe (offloaded states)")
    return lines
