"""When a configuration does not fit: the nearest configurations that do.

A small sweep around it: every single change from `MOVES` (more GPUs, a higher ZeRO stage,
recompute, offload, more tensor/pipeline/context parallelism, a smaller micro-batch, a fused
loss) and every pair of changes to different keys, evaluated at once on NumPy float64 arrays
with `estimate` and the validity checks. Those that are valid and fit are ranked by what
changes least: fewer keys changed, then a lower `cost` (a code change before a bigger
cluster), then fewer bytes.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import jax
import numpy as np

from sweep import vocabulary as vocab
from sweep.config import BOOLEAN, TrainConfig
from sweep.memory.total import estimate

RECOMPUTE_COST = {"selective": 1, "full": 2}
OFFLOAD_COST = {"optimizer": 3, "optimizer+params": 4}
DOUBLING_COST = {"tp": 2, "pp": 2, "cp": 2, "n_gpus": 3}  # per doubling
ZERO_STEP_COST = 1
MICRO_BATCH_COST = 1
FUSED_LOSS_COST = 1
SHOWN = 5
KINDS = {f.name: f.metadata["kind"] for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class Suggestion:
    changes: dict  # key -> new value (vocabulary names)
    cost: float
    per_gpu_total_bytes: float
    gpu_capacity_bytes: float


def moves(names: dict) -> list[tuple[dict, float]]:
    """(changes, cost) of every single change considered from `names` (a configuration in
    vocabulary names)."""
    out: list[tuple[dict, float]] = []
    for factor in (2, 4, 8, 16):
        doublings = int(np.log2(factor))
        out.append(({"n_gpus": names["n_gpus"] * factor}, DOUBLING_COST["n_gpus"] * doublings))
        for key in ("tp", "pp", "cp"):
            if factor <= 8:
                out.append(({key: names[key] * factor}, DOUBLING_COST[key] * doublings))
    for stage in range(int(names["zero_stage"]) + 1, 4):
        out.append(({"zero_stage": stage}, ZERO_STEP_COST * (stage - names["zero_stage"])))
    for mode, cost in RECOMPUTE_COST.items():
        if vocab.RECOMPUTES.index(mode) > vocab.RECOMPUTES.index(names["recompute"]):
            out.append(({"recompute": mode}, cost))
    for mode, cost in OFFLOAD_COST.items():
        if mode != names["offload"]:
            out.append(({"offload": mode}, cost))
    micro_batch = names["micro_batch"]
    while micro_batch > 1:
        micro_batch //= 2
        out.append(({"micro_batch": micro_batch}, MICRO_BATCH_COST))
    if not names["fused_cross_entropy"]:
        out.append(({"fused_cross_entropy": 1}, FUSED_LOSS_COST))
    return out


def candidates(names: dict) -> list[tuple[dict, float]]:
    """Every single move and every pair of moves to different keys."""
    single = moves(names)
    pairs = [({**a, **b}, ca + cb) for (a, ca), (b, cb) in itertools.combinations(single, 2)
             if not set(a) & set(b)]
    return single + pairs


def nearest(arch, cfg: TrainConfig, hw, limit: int = SHOWN) -> list[Suggestion]:
    """The `limit` nearest configurations to `cfg` that are valid and fit (float64)."""
    names = cfg.to_names()
    options = candidates(names)
    if not options:
        return []
    configs = [TrainConfig.from_names(**{**names, **changes}) for changes, _ in options]
    stacked = jax.tree_util.tree_map(lambda *xs: np.array(xs, np.float64), *configs)
    as64 = lambda tree: jax.tree_util.tree_map(np.float64, tree)  # noqa: E731
    est = estimate(as64(arch), stacked, as64(hw))
    n = len(options)
    fits = np.broadcast_to(est.fits, (n,))
    total = np.broadcast_to(est.per_gpu_total_bytes, (n,))
    capacity = float(np.asarray(est.gpu_capacity_bytes).max())
    found = [Suggestion(changes, cost, float(total[i]), capacity)
             for i, (changes, cost) in enumerate(options) if fits[i]]
    found.sort(key=lambda s: (len(s.changes), s.cost, s.per_gpu_total_bytes))
    return found[:limit]


def describe(changes: dict) -> str:
    """'zero_stage 3, recompute full, fused_cross_entropy true'."""
    def shown(key, value):
        if KINDS[key] == BOOLEAN:
            return str(bool(value)).lower()
        return f"{value:g}" if isinstance(value, float | int) else str(value)

    return ", ".join(f"{k} {shown(k, v)}" for k, v in changes.items())
