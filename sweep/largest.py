"""The largest trainable model per node type and cluster size, found exactly by bisection.

Models come from the grid's family rule (`llama3`, sweep/families.py): a parameter count
fixes the width (a multiple of 1024), and the depth then sets the size, so the family's
members of one width are the depths in a contiguous range (`depth_ranges`). For every width,
every strategy of the grid (all axes but model) and every group (gpu, n_gpus), the depth is
bisected on device over whole blocks per pipeline stage within that range (memory grows with
depth for a fixed width and strategy; depth must be a multiple of pp): 10 halvings cover 512
blocks. The largest model of a group is the one with the most parameters among those; ties
go to the first in the grid's order.

With a time budget (`TimeBudget`: train on a number of tokens, fixed or per parameter, within
a number of days) a depth must also train in time: the step time grows with depth at a fixed
width and strategy, and so does the token count per parameter, so the bisection still holds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from sweep import families, xp
from sweep.engine import configurations_frame
from sweep.enumerate import Layout, Tables, broadcast_inputs, constrain
from sweep.errors import SweepError
from sweep.grid import Axis, Grid
from sweep.memory.total import estimate
from sweep.model import total_params
from sweep.timing import step_time
from sweep.timing.cost import days_to_train

WIDTHS = 1024.0 * np.arange(1, 65)  # 1024 .. 65536
MAX_LAYERS = 1024
HALVINGS = 11  # 2^11 > MAX_LAYERS + 1


@dataclasses.dataclass(frozen=True)
class TimeBudget:
    """Train on `tokens` (or `tokens_per_param` x the model's parameters) within `days`."""

    days: float
    tokens: float = 0.0
    tokens_per_param: float = 0.0

    def tokens_for(self, params):
        return self.tokens if self.tokens else self.tokens_per_param * params

    def __post_init__(self):
        counts = (self.tokens, self.tokens_per_param)
        finite = all(np.isfinite(v) for v in (self.days, *counts))
        # days > 0 and exactly one token count given, the other 0
        if not (finite and self.days > 0 and sorted(counts)[0] == 0 < sorted(counts)[1]):
            raise SweepError("a time budget is --days D with either --tokens T or "
                             f"--tokens-per-param R (got days={self.days!r}, "
                             f"tokens={self.tokens!r}, tokens_per_param={self.tokens_per_param!r})")

    def in_time(self, arch, cfg, hw):
        """Whether the configuration trains on the budget's tokens within its days."""
        t = step_time(arch, cfg, hw)
        tokens = self.tokens_for(total_params(arch))
        return days_to_train(t.step_s, t.tokens_per_step, tokens) <= self.days


def depth_ranges(widths=WIDTHS) -> tuple[np.ndarray, np.ndarray]:
    """(shallowest, deepest) depth of the family's members at each width: the depths whose
    parameter count the width rule maps back to that width (0, -1 when there are none)."""
    depths = np.arange(1, MAX_LAYERS + 1, dtype=float)
    params = total_params(families.llama3_architecture(widths[:, None], depths[None, :]))
    rule = np.vectorize(families.llama3_width)(params)
    member = rule == widths[:, None]
    shallow = np.where(member.any(1), depths[np.argmax(member, 1)], 0)
    deep = np.where(member.any(1), depths[MAX_LAYERS - 1 - np.argmax(member[:, ::-1], 1)], -1)
    return shallow, deep


def strategy_grid(grid: Grid) -> Grid:
    """The grid with its model axis reduced to one placeholder (the family replaces it)."""
    if not grid.models or "target_params" not in grid.models[0].extra:
        raise SweepError(f"{grid.path}: `axes.model`: `largest` needs a model family, e.g. "
                         "model = {family = \"llama3\", params = [1e9]}")
    axes = tuple(Axis("model", np.zeros(1), (grid.models[0].name,)) if a.name == "model" else a
                 for a in grid.axes)
    return dataclasses.replace(grid, axes=axes, models=grid.models[:1])


def _with_width_dim(tree):
    """Every array leaf gets a leading dimension of size 1 (the width axis)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.reshape(x, (1, *jnp.shape(x))) if jnp.ndim(x) else x, tree)


def depth_kernel(grid: Grid, layout: Layout, budget: TimeBudget | None = None):
    """jit: outer index -> blocks per stage (`k`, of shape widths x inner) of the deepest
    model that fits (and trains within `budget`)."""
    tables = Tables(grid)
    arrays = tables.swept_arrays(layout)
    n_inner = len(layout.inner_shape)
    widths = jnp.asarray(WIDTHS, jnp.float32).reshape((-1,) + (1,) * n_inner)
    shallow, deep = (jnp.asarray(d, jnp.float32).reshape((-1,) + (1,) * n_inner)
                     for d in depth_ranges())
    shape = (len(WIDTHS), *layout.inner_shape)

    @xp.reusing()  # the memory and the time budget share their sharding formulas
    def fits(outer_index, arrays, k):
        _, cfg, hw = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        cfg, hw = _with_width_dim(cfg), _with_width_dim(hw)
        arch = families.llama3_architecture(widths, k * cfg.pp)
        cfg, allowed = constrain(grid, cfg, hw)
        ok = allowed & estimate(arch, cfg, hw).fits & (k >= 1)
        if budget is not None:
            ok = ok & budget.in_time(arch, cfg, hw)
        return jnp.broadcast_to(ok, shape)

    def kernel(outer_index, arrays):
        _, cfg, _ = broadcast_inputs(tables, layout, outer_index, arrays, jnp)
        pp = _with_width_dim(cfg).pp
        k_min = jnp.broadcast_to(jnp.ceil(shallow / pp), shape)
        k_max = jnp.broadcast_to(jnp.floor(deep / pp), shape)

        def halve(_, bounds):
            low, high = bounds  # low fits (or k_min - 1), high does not (or k_max + 1)
            mid = jnp.floor((low + high) / 2)
            ok = (mid >= k_min) & fits(outer_index, arrays, mid)
            return jnp.where(ok, mid, low), jnp.where(ok, high, mid)

        low, _ = jax.lax.fori_loop(0, HALVINGS, halve, (k_min - 1, k_max + 1))
        return jnp.where(low >= k_min, low, 0)

    jitted = jax.jit(kernel)
    return lambda outer_index: np.asarray(jitted(jnp.asarray(outer_index, jnp.int32), arrays))


def largest(grid: Grid, progress: bool = False, budget: TimeBudget | None = None
            ) -> pl.DataFrame:
    """One row per (gpu, n_gpus): the largest model that fits (and trains within `budget`)
    and the strategy that does it."""
    from sweep.engine.orchestrate import progress_bar

    grid = strategy_grid(grid)
    layout = Layout.with_outer(grid, ("gpu",))
    tables = Tables(grid)
    depth = depth_kernel(grid, layout, budget)
    rows = []
    n_gpus_dim = layout.inner_names.index("n_gpus") if "n_gpus" in layout.inner_names else None
    bar = progress_bar(layout.n_chunks, 0, progress, "node types")
    for chunk in range(layout.n_chunks):
        bar.update(1 if chunk else 0)
        outer_index = layout.outer_index(chunk)
        k = depth(np.array(outer_index, np.int32)).astype(np.float64)
        pp = np.broadcast_to(_axis_values(grid, layout, "pp"), k.shape)
        layers = k * pp
        width = np.broadcast_to(WIDTHS.reshape((-1,) + (1,) * (k.ndim - 1)), k.shape)
        params = np.where(k >= 1, total_params(families.llama3_architecture(width, layers)), 0)
        groups = k.shape[1 + n_gpus_dim] if n_gpus_dim is not None else 1
        for g in range(groups):
            sub = params if n_gpus_dim is None else np.take(params, [g], axis=1 + n_gpus_dim)
            if sub.max() <= 0:
                continue
            flat_pick = int(np.argmax(sub.reshape(-1)))  # first of the largest, grid order
            index = np.unravel_index(flat_pick, sub.shape)
            full_index = list(index)
            if n_gpus_dim is not None:
                full_index[1 + n_gpus_dim] = g
            rows.append(_row(grid, layout, tables, outer_index, tuple(full_index),
                             float(width[tuple(full_index)]), float(layers[tuple(full_index)]),
                             budget))
    bar.update(1)
    bar.close()
    return pl.concat(rows) if rows else pl.DataFrame()


def _axis_values(grid: Grid, layout: Layout, name: str) -> np.ndarray:
    values = grid.axis(name).values
    if name not in layout.inner_names:
        return np.asarray(values[0])
    shape = [1] * (1 + len(layout.inner_shape))
    shape[1 + layout.inner_names.index(name)] = len(values)
    return values.reshape(shape)


def _row(grid, layout, tables, outer_index, index, width, layers, budget) -> pl.DataFrame:
    """The chosen configuration, evaluated exactly (float64), with its model's shape (and its
    days and cost to train on the budget's tokens)."""
    coords = dict(zip(layout.names[: layout.outer], [np.array([i]) for i in outer_index],
                      strict=True))
    coords.update({n: np.array([i]) for n, i in zip(layout.inner_names, index[1:], strict=True)})
    flat = np.ravel_multi_index(tuple(coords[n] for n in layout.names), layout.sizes)
    arch = families.llama3_architecture(width, layers)
    tokens = budget.tokens_for(float(total_params(arch))) if budget else grid.token_budget
    model_grid = dataclasses.replace(
        grid, models=(dataclasses.replace(grid.models[0], arch=arch),), token_budget=tokens)
    frame = configurations_frame(model_grid, layout, Tables(model_grid), flat)
    gpn = frame["gpus_per_node"][0]
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String)).with_columns(
        pl.lit(f"llama3-h{width:.0f}-l{layers:.0f}").alias("model"),
        pl.lit(width).alias("hidden_size"), pl.lit(layers).alias("num_layers"),
        (pl.col("n_gpus") / gpn).alias("nodes"),
    )
