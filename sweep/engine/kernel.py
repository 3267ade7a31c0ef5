"""The chunk kernel: one chunk of a grid (its outer axes fixed) decided and reduced on device.

Sides. `fit_terms` gives the pipeline stages' pieces on the sub-grid of the axes they depend
on, every stage at once along a leading stage axis (a formula is traced once, not once per
stage); the terms program returns them stacked, and the reduce program takes them apart,
subtracts A and folds the checks and the node's memory into the live-row test
(`Sides.resolved`). `split_terms` regroups
them into a static side (terms of the parallel layout, ZeRO, precision, GPU, ...), laid
out as a matrix of (shared, static-only) dimensions, and a dynamic side (batch, context,
recompute, ...) as (shared, dynamic-only); `shared` are the inner axes both depend on. A
configuration is one shared index, one static row and one dynamic column, and its fit
margin is a few operations on them:

    margin = max over stages of max(backward + dynamic, step) - A

with A the allocatable bytes (less the library workspaces K, `fit_terms`; folded into
`backward` and `step`), or with a fixed global batch, where m = grad_accum is known only per
configuration (it needs both the batch and the data-parallel size), m = per_replica/replicas
and

    margin = max over stages of max(base + [m > 1]·accumulated + min(cap, m)·per_microbatch
                                    + once, step) - A.

A failed static check (or host and NVMe bytes the node cannot hold) makes the static row
dead; a failed dynamic check is +inf on its side. A configuration surely fits when
margin <= -NEAR·A; within ±NEAR·A float32 cannot tell, and the host decides in float64.
The computed objective is `value = scale·margin + static·dynamic` (`outputs.Quantity.device`);
a time objective's value is `timing.combine` of its atoms (terms on their own sub-grids),
which each block reads for its rows (`atom_readers`, `read_atoms`).

Pruning. A static row is dead when even the smallest dynamic column cannot fit (a failed
check, a model too large for the shard); live rows are sorted first and evaluated in blocks
of about `ROWS_PER_BLOCK_CONFIGS` configurations until they run out.

Results (`ChunkResult`): per kept inner cell the best value among the configurations that
fit and the rank (inner canonical index) of the first configuration reaching it, the count
of those that fit per inner group cell, and the near-capacity configurations as a mask of
rows x dynamic columns (dimensions in `KernelPlan.permutation` order), each row's bits packed
in bytes: a block packs its own rows, and the chunk's mask is an eighth of the bytes to clear
(`benchmark_1e10`: 7.6 MB per chunk as booleans).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sweep import xp
from sweep.engine.frontier import Kept, computed_objective
from sweep.enumerate import (
    Layout,
    Tables,
    broadcast_inputs,
    global_batch_split,
    layout_constraints,
    rank_inputs,
)
from sweep.grid import Grid
from sweep.memory.shard import on_stage_axis, stage_values
from sweep.memory.total import fit_terms, node_limits
from sweep.outputs import OfMargin, OfTime
from sweep.validity import grouped_microbatches, microbatches_ok

NEAR = 1e-5
ROWS_PER_BLOCK_CONFIGS = 1 << 18  # configurations evaluated per block of static rows
NO_RANK = np.iinfo(np.int32).max  # the rank of a cell where nothing fits


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StageSides:
    """One stage's terms. Static: `backward` (base, plus the accumulated gradients when m is
    known) and `step`, less A once `Sides.resolved` (`host` and `nvme`: the bytes the stage
    puts in the node's memory, checked in the live-row test); with a global batch also
    `accumulated` and `cap`. Dynamic: `dynamic` (the whole dynamic part when m is
    known, else `once`), +inf where a dynamic check fails once resolved; with a global batch
    `per_microbatch`."""

    backward: object
    step: object
    dynamic: object
    accumulated: object = 0.0
    cap: object = 1.0
    per_microbatch: object = 0.0
    host: object = 0.0
    nvme: object = 0.0


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GlobalBatch:
    """m = per_replica/replicas (dynamic over static), a whole number >= 1; where `grouped`
    (static) also a multiple of `pp` (Megatron's interleaved schedule)."""

    per_replica: object
    inverse_replicas: object
    replicas: object
    grouped: object
    pp: object


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Value:
    """The computed objective, larger is better: scale·margin + static·dynamic (`scale` None
    when the objective does not read the margin), or, for a time objective, its value from
    `atoms` (a pytree of terms on their own sub-grids, gathered per configuration)."""

    scale: object
    static: object
    dynamic: object
    atoms: object = None


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Sides:
    """`stages`: one `StageSides` per pipeline stage, or (as `split_terms` and the terms
    program give them) one whose leaves hold every stage along a leading axis, of size 1
    where a term is the same on every stage (`unstacked` takes them apart). A and the
    checks are applied by `resolved`: the terms program leaves that to the reduce program,
    so that each term is computed on its own sub-grid (XLA would otherwise fuse a term's
    whole formula into the loop over the checks' larger grid)."""

    stages: tuple[StageSides, ...] | StageSides
    tolerance: object  # static: NEAR·A
    value: Value
    batch: GlobalBatch | None
    static_checks: tuple = ()  # each on its own sub-grid; all must hold
    dynamic_checks: tuple = ()
    allocatable: object = 0.0  # static: A
    node_limits: tuple = (np.inf, np.inf)  # static: the node's host RAM and NVMe bytes

    def resolved(self) -> Sides:
        """The sides with one `StageSides` per stage, the static terms less A and the dynamic
        term +inf where a dynamic check fails. The static checks are left to the live-row
        test (`static_ok`): a row that fails one is dead, and the live rows need them no
        more. Folded into every static term (+inf where one fails), they made each term span
        every check's axes, evaluated over all of them per stage (measured here:
        planner_mixed's reduce programs spent 37 of their ~250 ms on it; evaluating them in
        the test costs part of that back, a few percent in all)."""
        dynamic_ok = _all(self.dynamic_checks)

        def resolve(s: StageSides) -> StageSides:
            return dataclasses.replace(
                s, backward=s.backward - self.allocatable, step=s.step - self.allocatable,
                dynamic=xp.where(dynamic_ok, s.dynamic, np.inf), host=0.0, nvme=0.0)

        return dataclasses.replace(
            self, stages=tuple(resolve(s) for s in self.unstacked().stages), static_checks=(),
            dynamic_checks=(), allocatable=0.0, node_limits=(np.inf, np.inf))

    def static_ok(self):
        """Where every static check holds and the node holds every stage's host and NVMe
        bytes (broadcastable to the static terms)."""
        host_limit, nvme_limit = self.node_limits
        ok = _all(self.static_checks)
        for s in self.unstacked().stages:
            ok = ok & (s.host <= host_limit) & (s.nvme <= nvme_limit)
        return ok

    def unstacked(self) -> Sides:
        """The sides with one `StageSides` per stage (arrays or their shapes)."""
        if isinstance(self.stages, tuple):
            return self
        n_stages = max(np.shape(a)[0] for a in jax.tree_util.tree_leaves(self.stages))

        def view(a, i):
            j = i if np.shape(a)[0] > 1 else 0
            if isinstance(a, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct(a.shape[1:], a.dtype)
            return a[j]

        stages = tuple(jax.tree_util.tree_map(lambda a, i=i: view(a, i), self.stages)
                       for i in range(n_stages))
        return dataclasses.replace(self, stages=stages)

    def map(self, static: Callable, dynamic: Callable) -> Sides:
        """The sides, one `StageSides` per stage, with `static` applied to every static term
        and `dynamic` to every dynamic one (the atoms of a time objective are left as they
        are)."""
        stages = tuple(StageSides(static(s.backward), static(s.step), dynamic(s.dynamic),
                                  static(s.accumulated), static(s.cap),
                                  dynamic(s.per_microbatch), static(s.host), static(s.nvme))
                       for s in self.unstacked().stages)
        v = self.value
        value = Value(None if v.scale is None else static(v.scale), static(v.static),
                      dynamic(v.dynamic), v.atoms)
        batch = None if self.batch is None else GlobalBatch(
            dynamic(self.batch.per_replica), static(self.batch.inverse_replicas),
            static(self.batch.replicas), static(self.batch.grouped), static(self.batch.pp))
        def static_unless_constant(a):
            return a if isinstance(a, float) else static(a)

        return Sides(stages, static(self.tolerance), value, batch,
                     tuple(static(c) for c in self.static_checks),
                     tuple(dynamic(c) for c in self.dynamic_checks),
                     static_unless_constant(self.allocatable),
                     tuple(static_unless_constant(a) for a in self.node_limits))

    def side_dims(self) -> tuple[set[int], set[int]]:
        """The dimensions the static terms vary along, and those the dynamic ones do."""
        static, dynamic = set(), set()
        self.map(lambda a: static.update(dims(a)), lambda a: dynamic.update(dims(a)))
        return static, dynamic


def dims(*arrays) -> set[int]:
    """Dimensions along which any of the arrays varies."""
    out = set()
    for a in arrays:
        shape = a.shape if hasattr(a, "shape") else np.shape(a)  # arrays and their shapes
        out |= {i for i, size in enumerate(shape) if size > 1}
    return out


def _all(checks):
    """True where every check holds (a check is a bool, or a number that is 0 where it
    fails)."""
    ok = True
    for check in checks:
        ok = ok & (check != 0)
    return ok


def _place_checks(checks, static_dims: set, dynamic_dims: set):
    """(static checks, dynamic checks): each check joins the side that has all its axes; one
    that needs axes of both sides joins the static side, whose rows then span those axes too
    (they become shared). Constant checks that hold are dropped."""
    static, dynamic = [], []
    for check in checks:
        if check is True:
            continue
        need = dims(check)
        if not need & (dynamic_dims - static_dims):
            static.append(check)
        elif not need & (static_dims - dynamic_dims):
            dynamic.append(check)
        else:
            static.append(check)
            static_dims |= need
    return tuple(static), tuple(dynamic)


def _objective_value(grid: Grid, arch, cfg, hw, rank, dynamic_only: set) -> Value:
    """The computed objective's device form (`outputs.Quantity.device`): a product's factors
    go to the dynamic side when they vary along an axis only the dynamic side has; a time
    quantity's atoms stay on their own sub-grids (`time_value` combines them)."""
    objective = computed_objective(grid)
    if objective is None:
        return Value(None, 0.0, 0.0)
    quantity, sign = objective
    form = quantity.device
    if isinstance(form, OfTime):  # outputs of the terms program: computed on their own axes
        return Value(None, 1.0, 1.0, form.atoms(arch, cfg, hw, rank))
    if isinstance(form, OfMargin):
        return Value(xp.materialize(sign * form.scale(cfg, hw)),
                     xp.materialize(sign * form.offset(cfg, hw)), 1.0)
    static, dynamic = sign, 1.0
    for factor in form.factors:
        term = factor(cfg, hw)
        if dims(term) & dynamic_only:
            dynamic = dynamic * term
        else:
            static = static * term
    return Value(None, xp.materialize(static), xp.materialize(dynamic))


@xp.reusing()
def split_terms(grid: Grid, arch, cfg, hw, rank=None) -> Sides:
    """`fit_terms` regrouped so that each term stays on the sub-grid of its own axes (`rank`:
    `shard.rank_params` from the host, `enumerate.rank_inputs`). Formulas that many others
    call are evaluated once (`xp.reusing`)."""
    frameworks = tuple(int(code) for code in grid.axis("framework").values)
    batch = None
    if grid.global_batch_tokens:
        per_replica, replicas = global_batch_split(grid, cfg)
        # The interleaved schedule's check needs m; it is made per configuration below.
        cfg = cfg.replace(grad_accum=cfg.pp)
        batch = GlobalBatch(xp.materialize(per_replica * 1.0),
                            xp.materialize(1 / replicas), xp.materialize(replicas * 1.0),
                            xp.materialize(grouped_microbatches(cfg) * 1.0), cfg.pp * 1.0)
    terms = fit_terms(arch, cfg, hw, frameworks, rank)
    known_m = batch is None
    pieces, axis = terms.stages, terms.stage_axis  # every stage along axis 0
    parts = pieces.parts(cfg.grad_accum) if known_m else None
    if known_m:
        views = stage_values(parts, axis)
        static_dims = dims(*[p.backward for p in views], *[p.step for p in views])
        dynamic_dims = dims(*[p.dynamic for p in views])
    else:
        views = stage_values(pieces, axis)
        static_dims = dims(*[p.base for p in views], *[p.step for p in views],
                           *[p.accumulated for p in views],
                           *[p.in_flight_cap for p in views], batch.replicas)
        dynamic_dims = dims(*[p.per_microbatch for p in views],
                            *[p.once for p in views], batch.per_replica)
    host, nvme = terms.host_bytes_per_node, terms.nvme_bytes_per_node
    static_dims |= dims(*jax.tree_util.tree_leaves(stage_values((host, nvme), axis)))
    checks = [*terms.checks.values(), layout_constraints(grid, cfg, hw)]
    static_checks, dynamic_checks = _place_checks(checks, static_dims, dynamic_dims)
    allocatable = terms.allocatable_bytes
    # The stages stay stacked, and host and NVMe bytes are compared with the node's in the
    # reduce program: XLA evaluates each term once for all stages (as per-stage outputs, or
    # taken apart here, it would fuse the whole formula into each).
    if known_m:
        stages = StageSides(parts.backward, parts.step, parts.dynamic, host=host, nvme=nvme)
    else:
        stages = StageSides(pieces.base, pieces.step, pieces.once, pieces.accumulated,
                            pieces.in_flight_cap, pieces.per_microbatch, host, nvme)
    stages = jax.tree_util.tree_map(lambda a: on_stage_axis(a, axis), stages)
    value = _objective_value(grid, arch, cfg, hw, rank, dynamic_dims - static_dims)
    return Sides(stages, xp.materialize(NEAR * allocatable), value, batch, static_checks,
                 dynamic_checks, allocatable, node_limits(hw))


class ChunkResult(NamedTuple):
    """One chunk's reduction (kept dimensions in canonical order)."""

    best: jax.Array  # per kept inner cell: the best value where something fits, else -inf
    rank: jax.Array  # per kept inner cell: inner canonical index reaching it, else NO_RANK
    count: jax.Array  # per inner group cell: configurations that surely fit
    n_near: jax.Array  # configurations the host decides (near capacity)
    near_bits: jax.Array  # their mask: rows x columns packed per row (`exact.unpack_near`)


@dataclass(frozen=True)
class KernelPlan:
    """How a kernel lays a chunk out: the inner dimensions that are shared, static-only and
    dynamic-only (in the order of the near mask), and rows (shared, static-only indices)
    per block."""

    shared: tuple[int, ...]
    static_only: tuple[int, ...]
    dynamic_only: tuple[int, ...]
    rows_per_block: int

    @property
    def permutation(self) -> tuple[int, ...]:
        return (*self.shared, *self.static_only, *self.dynamic_only)


def plan_of(sides: Sides, shape, keep: frozenset) -> KernelPlan:
    """The split of the inner dimensions (from the sides or their shapes), kept ones first
    within each group (reductions run over trailing dimensions)."""
    static, dynamic = sides.side_dims()

    def ordered(group):
        return tuple(sorted(group, key=lambda d: (d not in keep, d)))

    shared = ordered(static & dynamic)
    static_only = ordered(set(range(len(shape))) - dynamic)  # with the axes nothing reads
    dynamic_only = ordered(dynamic - static)
    c_size, s_size, d_size = (math.prod(shape[i] for i in g)
                              for g in (shared, static_only, dynamic_only))
    rows = max(1, min(c_size * s_size, ROWS_PER_BLOCK_CONFIGS // max(d_size, 1)))
    return KernelPlan(shared, static_only, dynamic_only, rows)


def matrix(array, rows, cols, shape, namespace=jnp, dtype=jnp.float32):
    """`array` (broadcastable to `shape`) as a prod(rows) x prod(cols) matrix (in `namespace`:
    jax.numpy in the kernel, NumPy float64 in the benchmark's twin)."""
    n = len(shape)
    a = namespace.asarray(array, dtype)
    a = a.reshape((1,) * (n - a.ndim) + a.shape)
    full = tuple(shape[i] if i in rows or i in cols else 1 for i in range(n))
    a = namespace.broadcast_to(a, full)
    rest = [i for i in range(n) if i not in rows and i not in cols]
    a = namespace.transpose(a, [*rows, *cols, *rest])
    return a.reshape(math.prod(shape[i] for i in rows), math.prod(shape[i] for i in cols))


def _ranks(group, shape) -> np.ndarray:
    """Each index of a matrix dimension over `group`'s dimensions, as its part of the inner
    canonical index (row-major over `shape`)."""
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    if not group:
        return np.zeros(1, np.int32)
    grids = np.indices([shape[i] for i in group]).reshape(len(group), -1)
    return (np.array([strides[i] for i in group])[:, None] * grids).sum(0).astype(np.int32)


def _microbatches(batch: GlobalBatch):
    """(m, ok): micro-batches per step, exact in float32 where whole (products of integers
    below 2^24 are exact), and whether the configuration's batch is valid
    (`validity.microbatches_ok` where micro-batches run in groups of pp)."""
    m = jnp.round(batch.per_replica * batch.inverse_replicas)
    ok = (m >= 1) & (m * batch.replicas == batch.per_replica)
    return m, ok & microbatches_ok(batch.grouped > 0, batch.pp, m)


def margin_of(sides: Sides, m=None):
    """The fit margin of every configuration the (broadcastable) sides span (`xp`: the
    kernel's and the NumPy twin's)."""
    margin = -np.inf
    for s in sides.stages:
        allocated = s.backward + s.dynamic
        if m is not None:
            allocated = (allocated + xp.where(m > 1, s.accumulated, 0)
                         + xp.minimum(s.cap, m) * s.per_microbatch)
        margin = xp.maximum(margin, xp.maximum(allocated, s.step))
    return margin


def _cells(safe, near, value, rank, axes):
    """Over `axes`: the best value where it fits and the smallest rank reaching it, the
    count that fit, the count near capacity. Four plain reductions, not one variadic
    reduction whose comparator picks (value, rank) pairs: XLA's CPU backend vectorizes the
    plain ones, and evaluated a block's margins one element at a time inside the variadic
    one (measured here, the same HLO otherwise: planner_mixed's reduce programs 0.27-0.33 ->
    0.24-0.30 s for 32 chunks, the block reduction's fusion 115-135 -> 13-15 ms;
    benchmark_1e10's 6.2-7.0 -> 5.2-6.7 s)."""
    fitting = jnp.where(safe, value, -jnp.inf).astype(jnp.float32)
    best = jnp.max(fitting, axes)
    reaching = safe & (fitting == jnp.expand_dims(best, axes))
    first = jnp.min(jnp.where(reaching, rank, NO_RANK).astype(jnp.int32), axes)
    return (best, first, jnp.sum(safe, axes, dtype=jnp.int32),
            jnp.sum(near, axes, dtype=jnp.int32))


def time_value(grid: Grid) -> Callable | None:
    """(atoms gathered for a block, m) -> the time objective's oriented value, or None."""
    objective = computed_objective(grid)
    if objective is None or not isinstance(objective[0].device, OfTime):
        return None
    quantity, sign = objective
    return lambda atoms, m: sign * quantity.device.value(atoms, m, grid.token_budget)


def live_rows(sides: Sides, ok, plan: KernelPlan, shape, namespace=jnp):
    """Per row (shared, static-only index): whether it passes `ok` (`Sides.static_ok`) and even its
    smallest dynamic column could fit (`sides` resolved). With a global batch m >= 1 and
    min(cap, m) >= 1, so per_microbatch + once bounds the dynamic part from below. Computed
    on the terms' own broadcast shapes, then laid out as rows once (a transpose per term
    would cost more than the whole test)."""
    n = len(shape)
    best_case = -np.inf
    for stage in sides.stages:
        low = stage.dynamic + (stage.per_microbatch if sides.batch is not None else 0)
        low = namespace.asarray(low)
        low = low.reshape((1,) * (n - low.ndim) + low.shape)
        low = namespace.min(low, axis=tuple(plan.dynamic_only), keepdims=True)
        best_case = namespace.maximum(best_case,
                                      namespace.maximum(stage.backward + low, stage.step))
    alive = (best_case <= sides.tolerance) & ok
    return matrix(alive, plan.shared, plan.static_only, shape, namespace, bool).reshape(-1)


def computed_once(function: Callable, operand):
    """`function(operand)`, computed into memory once. XLA's CPU fusion copies an elementwise
    producer into each of its consumers, and into a windowed one once per element of the
    window: the live-row test, over every row of the chunk and reading every static check,
    ran about 20 times over in the cumulative sum `_live_first` then had (measured here: the
    planner grid's reduce programs 0.59 -> 0.48 s; with the test fused into its consumers
    again, 0.22 -> 0.31-0.35 s for 32 chunks at 1c812db). XLA keeps a conditional's branches
    out of its consumers' fusions; both branches are `function`, and the predicate, whether
    a float the operand holds is NaN, is one XLA cannot fold (`optimization_barrier` is no
    boundary on the CPU, `xp.materialize`; a conditional with two identical trivial branches
    is folded away)."""
    floats = [a for a in jax.tree_util.tree_leaves(operand)
              if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating) and a.size]
    if not floats:
        return function(operand)
    first = jnp.ravel(floats[0])[0]
    return jax.lax.cond(first != first, function, function, operand)


WORD_BITS = 32  # rows per word of `_live_first`'s packed live-row test


def _live_first(alive):
    """The indices of the live rows in order, then zeros: `jnp.nonzero(alive, size=n,
    fill_value=0)` without a cumulative sum over every row. The rows are packed 32 to a
    word; a live row's position is the live rows of the words before its own (a cumulative
    sum over the words only) plus the set bits below its own in its word (a population
    count): elementwise, where XLA's CPU backend made the cumulative sum over all rows a
    dozen windowed reductions (measured here, jitted alone on a planner_mixed chunk's
    172,800 rows, 13% live: 1.5 -> 0.9 ms; the scatter is most of what is left). Unsigned,
    as every index derived from them: XLA then adds no wrap of negative indices to each
    gather and scatter, nor a sign fix to each division (a third of the reduce program's
    instructions)."""
    n = alive.shape[0]
    bits = jnp.pad(alive, (0, -n % WORD_BITS)).reshape(-1, WORD_BITS)
    bit = jnp.left_shift(jnp.uint32(1), jnp.arange(WORD_BITS, dtype=jnp.uint32))
    words = jnp.sum(jnp.where(bits, bit, jnp.uint32(0)), axis=1, dtype=jnp.uint32)
    live_in_word = jax.lax.population_count(words)
    before_word = jnp.cumsum(live_in_word, dtype=jnp.uint32) - live_in_word
    below = jax.lax.population_count(words[:, None] & (bit - jnp.uint32(1)))
    position = (before_word[:, None] + below).reshape(-1)[:n]
    return jnp.zeros(n, jnp.uint32).at[jnp.where(alive, position, jnp.uint32(n))].set(
        jnp.arange(n, dtype=jnp.uint32), mode="drop")


def row_coordinates(rows, plan: KernelPlan, shape) -> dict:
    """Each row's index along every shared and static-only dimension (a row is
    shared index · static-only size + static-only index, each row-major over its group)."""
    s_size = math.prod(shape[i] for i in plan.static_only)
    coords = {}
    for group, index in ((plan.shared, rows // s_size), (plan.static_only, rows % s_size)):
        stride = 1
        for i in reversed(group):
            coords[i] = (index // stride) % shape[i]
            stride *= shape[i]
    return coords


def own_index(coords: dict, axes, shape):
    """The row-major index over `axes` (sizes from `shape`) of each row's coordinates."""
    index, stride = 0, 1
    for i in reversed(axes):
        index = index + coords[i] * stride
        stride *= shape[i]
    return index


def at_rows(array, coords: dict, shape, namespace=jnp, dtype=jnp.float32):
    """A static term's value at each row (one value for all rows when it is constant): read
    from its own sub-grid, never laid out over every row of the chunk."""
    n = len(shape)
    a = namespace.asarray(array, dtype)
    a = a.reshape((1,) * (n - a.ndim) + a.shape)
    own = [i for i in range(n) if a.shape[i] > 1]
    return a.reshape(-1)[own_index(coords, own, a.shape)] if own else a.reshape(1)


def atom_readers(atoms, plan: KernelPlan, shape, namespace=jnp, dtype=jnp.float32
                 ) -> tuple[list, object]:
    """For every atom of a time objective, how a block of rows reads it: ("static", one
    value per row, `at_rows`), ("dynamic", a column vector per shared index) or, for an atom
    that varies along static-only and dynamic-only axes at once, ("mixed", its own rows x
    every column, with its row axes); an atom with the pipeline stages along a leading axis
    (one dimension more than the grid, `shard.stage_axis`) as ("stages", one reader per
    stage), taken apart here, after the terms program; and the pytree's structure
    (`namespace`, `dtype`: as `matrix`)."""
    shared, static_only, dynamic_only = plan.shared, plan.static_only, plan.dynamic_only
    row_axes = (*shared, *static_only)

    def reader(a):
        if np.ndim(a) == len(shape) + 1:
            return ("stages", tuple(reader(a[i]) for i in range(np.shape(a)[0])))
        d = dims(a)
        if not d:
            return ("scalar", namespace.asarray(a, dtype).reshape(()))
        if not d & set(dynamic_only):
            return ("static", namespace.asarray(a, dtype))
        if not d & set(static_only):
            return ("dynamic", matrix(a, shared, dynamic_only, shape, namespace, dtype))
        own = tuple(i for i in row_axes if i in d)
        return ("mixed", matrix(a, own, dynamic_only, shape, namespace, dtype), own)

    leaves, treedef = jax.tree_util.tree_flatten(atoms)
    return [reader(a) for a in leaves], treedef


def read_atoms(readers, treedef, coords: dict, c, shape):
    """The atoms of a block (rows of `coords`, `row_coordinates`; `c` their shared indices):
    rows x columns (or broadcastable to it), an atom of the stages with them stacked ahead."""

    def read(kind, term, *own):
        if kind == "scalar":
            return term
        if kind == "static":
            return at_rows(term, coords, shape, xp.namespace(term), term.dtype)[:, None]
        if kind == "dynamic":
            return term[c]
        if kind == "mixed":
            return term[own_index(coords, own[0], shape)]
        parts = [read(*r) for r in term]
        namespace = xp.namespace(*parts)
        return namespace.stack(namespace.broadcast_arrays(*parts))

    return jax.tree_util.tree_unflatten(treedef, [read(*r) for r in readers])


def reduce_chunk(sides: Sides, plan: KernelPlan, shape, inner, kept: Kept,
                 time_of: Callable | None = None) -> ChunkResult:
    """The chunk's reduction over its live rows only (see the module docstring). A row is one
    (shared, static-only) index: static terms are one value per row, dynamic ones a vector of
    columns per shared index; a time objective (`time_of`, `time_value`) reads its atoms
    per row and column (`atom_readers`)."""
    shared, static_only, dynamic_only = plan.shared, plan.static_only, plan.dynamic_only
    keep = {i for i, n in enumerate(inner) if n in kept.names}
    c_size, s_size, d_size = (math.prod(shape[i] for i in g)
                              for g in (shared, static_only, dynamic_only))
    n_rows = c_size * s_size
    # The static checks are evaluated inside the live-row test's branch: over every check's
    # axes they are fused into the test, never written out.
    alive = computed_once(lambda s: live_rows(s.resolved(), s.static_ok(), plan, shape), sides)
    sides = sides.resolved()
    # Static terms stay on their own sub-grids (a block reads its rows, `at_rows`); dynamic
    # ones are small (shared x dynamic-only) matrices.
    terms = sides.map(lambda a: jnp.asarray(a, jnp.float32),
                      lambda a: matrix(a, shared, dynamic_only, shape))
    if time_of is not None:
        readers, treedef = atom_readers(sides.value.atoms, plan, shape)
    rank_c, rank_s, rank_d = (jnp.asarray(_ranks(g, shape))
                              for g in (shared, static_only, dynamic_only))

    # Dead rows: even the smallest column cannot fit.
    n_alive = jnp.sum(alive, dtype=jnp.int32)
    order = _live_first(alive)
    rows_per_block = plan.rows_per_block
    n_blocks = (n_alive + rows_per_block - 1) // rows_per_block
    order = jnp.concatenate([order, jnp.zeros(rows_per_block, jnp.uint32)])

    def sizes(group):
        return [shape[i] for i in group]

    ck, sk, dk = ([i for i in g if i in keep] for g in (shared, static_only, dynamic_only))
    c_kept, s_kept, d_kept = (math.prod(sizes(g)) for g in (ck, sk, dk))
    # Kept dimensions lead their group's index: the kept cell of an index is a quotient.
    c_rest, s_rest, d_rest = c_size // c_kept, s_size // s_kept, d_size // d_kept

    def fit(one, m, ok):
        """(margin, surely fits, near capacity) of a block's configurations."""
        margin = margin_of(one, m)
        safe = (margin <= -one.tolerance) & ok
        return margin, safe, (margin <= one.tolerance) & ~safe & ok

    def body(block, carry):
        best, rank, count, n_near, near_mask = carry
        index = block * rows_per_block + jnp.arange(rows_per_block)
        rows = jax.lax.dynamic_slice(order, (block * rows_per_block,), (rows_per_block,))
        c, s = rows // s_size, rows % s_size
        coords = row_coordinates(rows, plan, shape)
        one = terms.map(lambda a: at_rows(a, coords, shape)[:, None], lambda a: a[c])
        ok = (index < n_alive)[:, None]
        m = None
        if sides.batch is not None:
            m, batch_ok = _microbatches(one.batch)
            ok = ok & batch_ok
        margin, safe, near = fit(one, m, ok)
        value = one.value.static * one.value.dynamic
        if time_of is not None:  # with a global batch m is the configuration's, else the axis
            value = time_of(read_atoms(readers, treedef, coords, c, shape), m)
        if one.value.scale is not None:
            value = value + one.value.scale * margin
        rank_of = (rank_c[c] + rank_s[s])[:, None] + rank_d[None, :]
        shape3 = (rows_per_block, d_kept, d_rest)
        b_best, b_rank, b_count, b_near = _cells(
            *(jnp.broadcast_to(x, safe.shape).reshape(shape3)
              for x in (safe, near, value, rank_of)), (2,))
        cell = (s // s_rest, c // c_rest)  # the kept static and shared cell of each row
        new_best = best.at[cell].max(b_best)
        candidate = jnp.where(b_best == new_best[cell], b_rank, NO_RANK)
        rank = jnp.where(best == new_best, rank, NO_RANK).at[cell].min(candidate)
        count = count.at[cell].add(b_count)
        block_near = jnp.sum(b_near)
        # Few blocks hold a configuration near capacity: only they mark theirs, computed
        # again inside the branch (closed over, `near` would be computed for every block).
        # Rows are distinct live rows (padding rows read row 0 and mark nothing): `max` of
        # their packed bytes is their bits.
        near_mask = jax.lax.cond(
            block_near > 0,
            lambda mask, *args: mask.at[rows].max(jnp.packbits(fit(*args)[2], axis=1)),
            lambda mask, *args: mask, near_mask, one, m, ok)
        return new_best, rank, count, n_near + block_near, near_mask

    cells = (s_kept, c_kept, d_kept)
    carry = (jnp.full(cells, -jnp.inf, jnp.float32), jnp.full(cells, NO_RANK, jnp.int32),
             jnp.zeros(cells, jnp.int32), jnp.int32(0),
             jnp.zeros((n_rows, (d_size + 7) // 8), jnp.uint8))
    best, rank, count, n_near, near_mask = jax.lax.fori_loop(0, n_blocks, body, carry)
    # (kept static, kept shared, kept dynamic) -> kept dims in canonical order.
    back = np.argsort([*sk, *ck, *dk])
    kept_shape = sizes(sk) + sizes(ck) + sizes(dk)
    best, rank, count = (jnp.transpose(x.reshape(kept_shape), back) for x in (best, rank, count))
    return ChunkResult(best, rank, count, n_near, near_mask)


@dataclass(frozen=True)
class Kernel:
    """A grid's compiled kernel for a set of devices, one chunk per device per call:
    `terms` (outer indices n_dev x outer, swept tables) -> `Sides` per device, `reduce`
    (those sides) -> `ChunkResult` per device (a leading device dimension on every leaf).
    Two programs, so that the plan is read from the traced terms' shapes."""

    plan: KernelPlan
    terms: Callable
    reduce: Callable
    compile_seconds: float
    cached: bool = False  # loaded from the cache (`engine.cache`), not compiled

    def __call__(self, indices, arrays) -> ChunkResult:
        return self.reduce(self.terms(indices, arrays))


def compile_kernel(grid: Grid, layout: Layout, kept: Kept, devices) -> Kernel:
    """Trace and compile the kernel of `grid` for `devices`, or load it from the cache
    (`engine.cache`: a hit skips tracing and compiling)."""
    with _collector_paused():
        return _compile_kernel(grid, layout, kept, devices)


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the duration. Tracing allocates millions of
    short-lived objects, and each collection of the oldest generation walks every object of
    the imported JAX and polars: measured here in fresh processes on the default grid, a
    first run compiles in 4.6-5.2 s with it paused instead of 5.6-5.7 s (four runs each).
    What tracing leaves behind is collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _compile_kernel(grid: Grid, layout: Layout, kept: Kept, devices) -> Kernel:
    import time

    from jax.experimental import serialize_executable

    from sweep.engine import cache

    if layout.chunk_configs >= NO_RANK:
        raise ValueError(f"a chunk of {layout.chunk_configs:,} configurations is too large "
                         "(ranks are int32); lower output.chunk_size")
    started = time.perf_counter()
    tables = Tables(grid)
    # The swept tables are the programs' arguments, not constants: a grid with the same axes,
    # sizes and fixed values but other swept values (models, GPUs, counts) reuses the kernel.
    # Tracing reads the framework codes themselves (only their profiles are traced).
    fixed = {k: v for k, v in tables.arrays.items() if Tables.axis_of(k) not in layout.names}
    key = cache.kernel_key(
        layout, kept, ROWS_PER_BLOCK_CONFIGS, NEAR, [o.text for o in grid.objectives],
        grid.group_by, grid.tp_within_node, grid.whole_nodes, grid.global_batch_tokens,
        grid.native_frameworks, grid.token_budget,
        grid.gpus_per_node_from_gpu, [(d.platform, d.device_kind, d.id) for d in devices],
        grid.axis("framework").values, fixed)
    # Under jax.distributed a reloaded executable refuses its inputs (jax 0.10: "CopyArrays
    # only supports destination device list of the same size"): compile every time.
    cached = cache.load(key) if jax.process_count() == 1 else None
    if cached is not None:
        try:
            plan, terms, reduce = cached
            # Loading rebuilds each program's HLO outside the GIL: side by side, as they
            # compile (measured here: 0.41-0.52 s for planner_mixed's two instead of
            # 0.56-0.82 s one after the other).
            load = serialize_executable.deserialize_and_load
            return Kernel(plan, *_side_by_side(lambda: load(*terms), lambda: load(*reduce)),
                          time.perf_counter() - started, cached=True)
        except Exception as err:  # noqa: BLE001 - a stale entry: compile again
            print(f"note: recompiling the kernel ({type(err).__name__})", file=sys.stderr)
    plan, terms, reduce = _compile(grid, layout, kept, devices, tables)
    if jax.process_count() == 1:
        cache.store(key, (plan, serialize_executable.serialize(terms),
                          serialize_executable.serialize(reduce)))
    return Kernel(plan, terms, reduce, time.perf_counter() - started)


def _program_output(x):
    """A term as the terms program returns it: float32 (checks stay bool), a leading device
    axis."""
    x = jnp.asarray(x)
    return (x if x.dtype == jnp.bool_ else x.astype(jnp.float32))[None]


def chunk_mesh(devices):
    """The kernel's device mesh: one chunk per device along the axis "chunks"."""
    from jax.sharding import Mesh

    return Mesh(np.array(devices), ("chunks",))


def replicated(arrays, devices):
    """`arrays` (the swept tables) on every device of the kernel's mesh, once: passed as NumPy
    arrays, they would be copied to the devices again with every call."""
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.device_put(arrays, NamedSharding(chunk_mesh(devices), PartitionSpec()))


def _compile(grid: Grid, layout: Layout, kept: Kept, devices, tables: Tables):
    """(plan, terms, reduce): the two compiled programs of `Kernel` and the plan read from the
    traced terms' shapes."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    inner, shape = layout.inner_names, layout.inner_shape
    kept_inner = [n for n in inner if n in kept.names]
    not_group = tuple(k for k, n in enumerate(kept_inner) if n not in kept.group)
    keep = frozenset(i for i, n in enumerate(inner) if n in kept.names)
    mesh = chunk_mesh(devices)
    by_chunk = NamedSharding(mesh, P("chunks"))

    def per_device(function, in_specs):
        # One chunk per device: index the block's single row instead of vmapping, so that
        # lax.cond stays a branch.
        return jax.jit(jax.shard_map(function, mesh=mesh, in_specs=in_specs,
                                     out_specs=P("chunks"), check_vma=False))

    def terms(indices, arrays):
        outer_index = tuple(indices[0, j] for j in range(layout.outer))  # sliced once
        arch, cfg, hw = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        rank = rank_inputs(tables, layout, outer_index, arrays)
        sides = split_terms(grid, arch, cfg, hw, rank)
        return jax.tree_util.tree_map(_program_output, sides)

    indices = jax.ShapeDtypeStruct((len(devices), layout.outer), jnp.int32)
    traced = per_device(terms, (P("chunks"), P())).trace(indices,
                                                         tables.swept_arrays(layout))
    plan = plan_of(jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                                          traced.out_info), shape, keep)

    def reduce(sides):
        result = reduce_chunk(jax.tree_util.tree_map(lambda x: x[0], sides), plan, shape,
                              inner, kept, time_value(grid))
        count = jnp.sum(result.count, axis=not_group) if not_group else result.count
        return jax.tree_util.tree_map(lambda x: x[None], result._replace(count=count))

    sides_in = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=by_chunk), traced.out_info)
    # The terms program (the larger) compiles while the reduce program is traced and lowered,
    # then both compile side by side.
    terms_lowered = traced.lower()
    platform = devices[0].platform
    return plan, *_side_by_side(
        lambda: _compiled(terms_lowered, compiler_options(platform, TERMS, grid.size)),
        lambda: _compiled(per_device(reduce, P("chunks")).trace(sides_in).lower(),
                          compiler_options(platform, REDUCE, grid.size)))


def _side_by_side(first: Callable, second: Callable) -> tuple:
    """(first(), second()), `first` on a thread while `second` runs here: XLA compiles and
    loads programs outside the GIL, so the two use both cores."""
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(first)
        other = second()
        return started.result(), other


TERMS, REDUCE = "terms", "reduce"  # the kernel's two programs
# Grids of fewer configurations compile at XLA's optimization level 0 (`compiler_options`).
QUICK_COMPILE_CONFIGS = 10**7


def compiler_options(platform: str, program: str, configurations: int) -> dict:
    """XLA options of the kernel's `program` (`TERMS` or `REDUCE`) for a grid of
    `configurations`, on the CPU (measured here: jaxlib 0.10.2, 2 cores):

    - the terms program with XLA's older (LLVM IR) fusion emitters instead of its MLIR ones:
      bench/grids/time_1e10.toml's compiles in 2.6 s instead of 3.9-4.7 s, the default
      grid's in 1.0 s instead of 1.8 s, and runs as fast (the reduce program keeps the MLIR
      emitters: with the older ones it ran up to a fifth slower);
    - below `QUICK_COMPILE_CONFIGS`, both programs at optimization level 0 (LLVM without
      its optimizations): the default grid's terms and reduce programs compile in 1.1 and
      1.3 s instead of 1.5 and 1.6 s, capacity_planning's in 1.8 and 1.6 s instead of 2.2
      and 2.4 s (one process, one after the other). They run up to 3x slower
      (finetune_lora's 1.1e8 configurations 1.5 s longer), which below 1e7 configurations
      costs less than it saves: a cached run of one_model_every_node (8.7e6) takes
      0.7-0.85 s instead of 0.5 s, of the default grid about as long (0.45-0.55 s).
    """
    if platform != "cpu":
        return {}
    options = {"xla_cpu_use_fusion_emitters": False} if program == TERMS else {}
    if configurations < QUICK_COMPILE_CONFIGS:
        options["xla_backend_optimization_level"] = 0
    return options


def _compiled(lowered, options: dict):
    """`lowered` compiled with `options`, or without them where this XLA does not know one
    (the option names are XLA's, and change between versions)."""
    try:
        return lowered.compile(options)
    except Exception as err:  # noqa: BLE001 - jaxlib raises a plain XlaRuntimeError
        if options and "No such compile option" in str(err):
            return lowered.compile()
        raise
