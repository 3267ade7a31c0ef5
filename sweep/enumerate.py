"""From grid axes to the formula's inputs, without materialising the Cartesian product.

The swept axes are the dimensions of the evaluated arrays, in the grid's canonical order. A
chunk fixes the leading (outer) dimensions and spans the rest: each input leaf is an axis'
values reshaped to its own dimension (size 1 elsewhere), so every term of the formulas is
computed once per combination of the axes it depends on and only the final sums and masks
are full size (NumPy/XLA broadcasting). The same construction, given explicit per-axis
indices, gives flat 1-D inputs for the NumPy twin and for looking up single configurations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import jax
import numpy as np

from sweep import xp
from sweep.config import GPU_PLATFORM, Hardware, TrainConfig
from sweep.grid import Grid, stacked_architectures
from sweep.memory.model_states import GENERIC
from sweep.memory.shard import RankParams, rank_params
from sweep.model import Architecture

CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig))
ARCH_FIELDS = tuple(f.name for f in fields(Architecture))
HARDWARE_FIELDS = tuple(f.name for f in fields(Hardware))


RANK_KEY = "rank"  # the key prefix of the `Tables.rank_tables` among the kernel's arguments

# Axes that (nearly) every memory term depends on come first among the outer (per-chunk)
# axes: fixing them does not make a chunk recompute terms that other chunks also compute.
OUTER_PREFERENCE = ("model", "tp", "pp", "cp", "precision", "vpp", "sp", "ep")


@dataclass(frozen=True)
class Layout:
    """Swept dimensions and how they split into outer (one index per chunk) and inner.

    `names` lists the outer dimensions first (in `OUTER_PREFERENCE` order), then the inner
    ones in the grid's canonical order; `canonical` maps back to the grid's order."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    outer: int
    canonical: tuple[str, ...] = ()

    @classmethod
    def of(cls, grid: Grid, chunk_size: int | None = None) -> Layout:
        chunk_size = chunk_size or grid.chunk_size
        canonical = tuple(a.name for a in grid.swept)
        size = {a.name: len(a) for a in grid.swept}
        order = [n for n in OUTER_PREFERENCE if n in size]
        order += [n for n in canonical if n not in order]
        outer = 0
        while outer < len(order) - 1 and math.prod(size[n] for n in order[outer:]) > chunk_size:
            outer += 1
        names = (*order[:outer], *[n for n in canonical if n not in order[:outer]])
        return cls(names, tuple(size[n] for n in names), outer, canonical)

    @classmethod
    def with_outer(cls, grid: Grid, outer_names) -> Layout:
        """A layout whose outer (fixed) axes are `outer_names`, the rest inner."""
        canonical = tuple(a.name for a in grid.swept)
        size = {a.name: len(a) for a in grid.swept}
        outer = [n for n in canonical if n in outer_names]
        names = (*outer, *[n for n in canonical if n not in outer])
        return cls(names, tuple(size[n] for n in names), len(outer), canonical)

    def canonical_index(self, coords: dict[str, np.ndarray]) -> np.ndarray:
        """Flat index in the grid's own axis order (stable across layouts)."""
        if not self.canonical:
            return np.zeros(np.shape(next(iter(coords.values()), 0)), np.int64)
        size = dict(zip(self.names, self.sizes, strict=True))
        return np.ravel_multi_index(tuple(coords[n] for n in self.canonical),
                                    tuple(size[n] for n in self.canonical))

    @property
    def inner_names(self) -> tuple[str, ...]:
        return self.names[self.outer:]

    @property
    def inner_shape(self) -> tuple[int, ...]:
        return self.sizes[self.outer:]

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return self.sizes[: self.outer]

    @property
    def n_chunks(self) -> int:
        return math.prod(self.outer_shape)

    @property
    def chunk_configs(self) -> int:
        return math.prod(self.inner_shape)

    def outer_index(self, chunk: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(chunk, self.outer_shape)) \
            if self.outer else ()


class Tables:
    """Per-axis value tables of a grid, by key: `model.<field>` (one entry per model),
    `gpu.<field>` (per GPU) and `<config key>` (per value of that axis)."""

    def __init__(self, grid: Grid):
        self.grid = grid
        arch = stacked_architectures(grid)
        gpus = grid.gpus
        self.arrays: dict[str, np.ndarray] = {
            f"model.{name}": np.asarray(getattr(arch, name), float) for name in ARCH_FIELDS
        }
        hardware = [g.hardware() for g in gpus]
        for name in HARDWARE_FIELDS:
            self.arrays[f"gpu.{name}"] = np.array([float(getattr(h, name)) for h in hardware])
        self.arrays["gpu.devices_per_node"] = np.array([float(g.devices_per_node) for g in gpus])
        for name in CONFIG_FIELDS:
            self.arrays[name] = np.asarray(grid.axis(name).values, float)
        self._ranks: dict[Layout, RankParams] = {}

    @staticmethod
    def axis_of(key: str) -> str:
        return key.split(".")[0]

    def inputs(self, pick):
        """(arch, cfg, hw) where `pick(key)` returns table `key` as wanted (a constant, a
        broadcast array or a gathered 1-D array)."""
        arch = Architecture(**{name: pick(f"model.{name}") for name in ARCH_FIELDS})
        config = {name: pick(name) for name in CONFIG_FIELDS}
        if self.grid.gpus_per_node_from_gpu:
            config["gpus_per_node"] = pick("gpu.devices_per_node")
        hw = Hardware(**{name: pick(f"gpu.{name}") for name in HARDWARE_FIELDS})
        return arch, TrainConfig(**config), hw

    def swept_arrays(self, layout: Layout) -> dict[str, np.ndarray]:
        """The tables of swept axes and the `rank_tables` that vary (passed to the jitted
        kernel as arguments, so that XLA does not constant-fold the whole grid)."""
        swept = {k: v.astype(np.float32) for k, v in self.arrays.items()
                 if self.axis_of(k) in layout.names}
        ranks = rank_keys(self.rank_tables(layout))
        return {**swept, **{k: np.asarray(v, np.float32) for k, v in ranks.items()
                            if np.ndim(v)}}

    def rank_tables(self, layout: Layout) -> RankParams:
        """`shard.rank_params` in float64 over the swept axes it reads: one dimension per
        axis of `layout` (outer ones included), of size 1 where it does not read it; a number
        where it reads none."""
        if layout not in self._ranks:
            whole = Layout(layout.names, layout.sizes, 0, layout.canonical)
            arch, cfg, _ = broadcast_inputs(self, whole, ())
            self._ranks[layout] = rank_params(arch, cfg)
        return self._ranks[layout]


def broadcast_inputs(tables: Tables, layout: Layout, outer_index, arrays=None, namespace=np):
    """Inputs of one chunk: outer axes at `outer_index` (traceable), inner axes broadcast.

    `arrays` overrides the swept tables (traced arguments inside jit)."""
    position = {name: i for i, name in enumerate(layout.names)}
    n_inner = len(layout.inner_shape)
    arrays = tables.arrays if arrays is None else {**tables.arrays, **arrays}

    def pick(key: str):
        table = arrays[key]
        axis = tables.axis_of(key)
        if axis not in position:
            return float(table[0])
        j = position[axis]
        if j < layout.outer:
            return xp.at_leading(namespace.asarray(table), (outer_index[j],))
        shape = [1] * n_inner
        shape[j - layout.outer] = table.shape[0]
        return table.reshape(shape)

    return tables.inputs(pick)


def rank_keys(ranks: RankParams) -> dict:
    """The leaves of a `RankParams` by key (`rank.kinds.dense.lora`, ...)."""
    leaves = jax.tree_util.tree_flatten_with_path(ranks)[0]
    return {RANK_KEY + jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def rank_inputs(tables: Tables, layout: Layout, outer_index, arrays=None) -> RankParams:
    """`shard.rank_params` of one chunk from the host's `Tables.rank_tables`: a table's outer
    dimensions at `outer_index` (traceable), its inner ones kept; `arrays` overrides the
    tables that vary (traced arguments inside jit), a constant stays a number."""
    ranks = tables.rank_tables(layout)
    arrays = {} if arrays is None else arrays

    def pick(key, table):
        table = arrays.get(key, table)
        if not np.ndim(table):
            return table
        return xp.at_leading(table, tuple(outer_index[j] if table.shape[j] > 1 else 0
                                          for j in range(layout.outer)))

    picked = [pick(key, table) for key, table in rank_keys(ranks).items()]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(ranks), picked)


def flat_inputs(tables: Tables, layout: Layout, indices: dict[str, np.ndarray]):
    """1-D inputs for explicit per-axis indices (`indices[name]` for every swept axis)."""

    def pick(key: str):
        table = tables.arrays[key]
        axis = tables.axis_of(key)
        if axis not in indices:
            return float(table[0])
        return table[indices[axis]]

    return tables.inputs(pick)


def decode(layout: Layout, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Per-axis indices of flat configuration indices (mixed radix, int64: past 2^31); none
    when nothing is swept (the one configuration)."""
    if not layout.sizes:
        return {}
    coords = np.unravel_index(np.asarray(flat, dtype=np.int64), layout.sizes)
    return dict(zip(layout.names, coords, strict=True))


def layout_constraints(grid: Grid, cfg: TrainConfig, hw: Hardware):
    """The grid's constraints: tp_within_node (tp <= gpus_per_node), whole_nodes (n_gpus a
    multiple of gpus_per_node) and native_frameworks (GPUs run DeepSpeed, Megatron-LM or
    FSDP2, not the generic accounting; TPUs only the generic one, as validity requires)."""
    ok = True
    if grid.tp_within_node:
        ok = ok & (cfg.tp <= cfg.gpus_per_node)
    if grid.whole_nodes:
        ok = ok & xp.divides(cfg.gpus_per_node, cfg.n_gpus)
    if grid.native_frameworks:
        ok = ok & ((hw.platform != GPU_PLATFORM) | (cfg.framework != GENERIC))
    return ok


def global_batch_split(grid: Grid, cfg: TrainConfig):
    """With a fixed global batch of G tokens, grad_accum = per_replica/replicas:
    per_replica = G/(micro_batch·seq_len) micro-batches, replicas = D = n/(tp·pp·cp)."""
    return (grid.global_batch_tokens / (cfg.micro_batch * cfg.seq_len),
            cfg.n_gpus / (cfg.tp * cfg.pp * cfg.cp))


def constrain(grid: Grid, cfg: TrainConfig, hw: Hardware):
    """Apply the grid's constraints: (cfg with derived grad_accum, constraint mask):
    `layout_constraints`, and with global_batch_tokens grad_accum from `global_batch_split`,
    a whole number >= 1."""
    ok = layout_constraints(grid, cfg, hw)
    if grid.global_batch_tokens:
        per_replica, replicas = global_batch_split(grid, cfg)
        accum = per_replica / replicas
        ok = ok & (accum >= 1) & xp.divides(1.0, accum)
        cfg = cfg.replace(grad_accum=accum)
    return cfg, ok
