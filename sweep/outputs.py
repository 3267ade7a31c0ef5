"""The one registry of output quantities: every number the tool reports about a configuration,
named once, with its unit, dtype and how it is computed from the evaluated configuration.

The registry builds the Parquet columns of frontier and feasible rows (after the axis columns),
the keys of `explain --json`, the objectives a grid may name (those with a `device` form: how
the kernel computes them), and the data dictionary in the README (`sweep/docs.py`). A quantity
is computed from an `Evaluation`: the configuration as evaluated (`TrainConfig`, grad_accum
derived), its `Estimate`, the `Hardware`, the `Architecture` and the plan's token budget; the
step time (`sweep.timing.step_time`) is computed from them on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sweep import timing
from sweep.memory.total import GPU_COMPONENTS, PHASES
from sweep.timing.cost import cost_per_million_tokens
from sweep.timing.cost import cost_to_train as cost_for_budget
from sweep.timing.cost import days_to_train as days_for_budget

GIB = 2**30
STAGE_NAMES = ("first", "last", "second")  # codes of memory.shard FIRST, LAST, MIDDLE


@dataclass(frozen=True)
class Evaluation:
    """What a quantity is computed from (NumPy arrays or scalars, float64)."""

    cfg: object  # TrainConfig, grad_accum and gpus_per_node as evaluated
    est: object  # memory.total.Estimate
    hw: object  # config.Hardware
    arch: object = None  # model.Architecture (needed by the time quantities)
    token_budget: float = 0.0  # tokens to train on (0: none; days and cost to train are NaN)

    @cached_property
    def time(self) -> timing.StepTime:
        return timing.step_time(self.arch, self.cfg, self.hw)


@dataclass(frozen=True)
class Product:
    """On device: the quantity as a product of factors, each a function of (cfg, hw) that the
    kernel evaluates on the sub-grid of its own axes (`engine.kernel`)."""

    factors: tuple[Callable, ...]


@dataclass(frozen=True)
class OfMargin:
    """On device: scale·margin + offset, margin = the largest stage's allocated bytes minus the
    allocatable bytes (the kernel's fit margin); scale and offset functions of (cfg, hw)."""

    scale: Callable
    offset: Callable


@dataclass(frozen=True)
class OfTime:
    """On device: `atoms(arch, cfg, hw, rank)` (a pytree of terms, each on the sub-grid of its
    own axes; `rank`: `shard.rank_params`) and `value(atoms, m, token_budget)`, a few
    operations per configuration on the atoms gathered for it (the step time depends on
    nearly every axis, its atoms on few)."""

    atoms: Callable
    value: Callable


@dataclass(frozen=True)
class Quantity:
    name: str  # Parquet column, explain --json key, objective key
    unit: str
    dtype: str  # "float64", "int64" or "string"
    doc: str
    compute: Callable[[Evaluation], object]
    device: Product | OfMargin | OfTime | None = None  # how the kernel computes it: an objective
    needs_budget: bool = False  # meaningful only for a plan with a token budget
    training_only: bool = False  # NaN for an inference configuration (no training step)


def _component(key: str) -> Quantity:
    docs = {
        "weights": "parameters on the GPU at the peak: shards, gathered units, casts",
        "master_weights": "fp32 master copy in mixed precision",
        "gradients": "gradients at the peak (persistent and made in backward)",
        "optimizer_states": "optimizer states (AdamW m and v, ...)",
        "activations": "tensors saved for backward at the peak",
        "logits": "loss side: the fp32 softmax and the loss gradient's temporaries",
        "kv_cache": "inference: the KV cache",
        "buffers": "communication buckets, library workspaces, end-of-backward transients",
        "overhead": "CUDA context, NCCL and the allocator's fragmentation",
    }
    return Quantity(f"{key}_bytes", "bytes", "float64", docs[key],
                    lambda ev, k=key: getattr(ev.est, k))


def _binding(ev: Evaluation):
    """gpu_memory or host_memory: whichever is closer to its limit."""
    total, capacity = ev.est.per_gpu_total_bytes, ev.est.gpu_capacity_bytes
    host, host_capacity = ev.est.host_bytes_per_node, ev.hw.host_memory_bytes_per_node
    gpu_share = np.asarray(total, float) / np.asarray(capacity, float)
    host_share = np.divide(host, host_capacity, out=np.zeros(np.shape(gpu_share)),
                           where=np.asarray(host_capacity) > 0)
    return np.where(host_share > gpu_share, "host_memory", "gpu_memory")


def tokens_per_gpu(cfg):
    """micro_batch·seq_len/(tp·pp·cp): tokens a GPU holds per micro-step."""
    return cfg.micro_batch * cfg.seq_len / (cfg.tp * cfg.pp * cfg.cp)


def _inverse_free_fraction(cfg, hw):
    """1/(1 - fragmentation): reserved bytes per allocated byte."""
    return 1 / (1 - cfg.fragmentation)


def _capacity(cfg, hw):
    return hw.memory_bytes * hw.usable_fraction


# total = allocated/(1 - φ) + O and A = (C - O)·(1 - φ) (docs/notation.md: C capacity, O runtime
# overhead, φ fragmentation, A allocatable bytes), so total = margin/(1 - φ) + C and
# headroom = C - total = -margin/(1 - φ).
TOTAL_ON_DEVICE = OfMargin(_inverse_free_fraction, _capacity)
HEADROOM_ON_DEVICE = OfMargin(lambda cfg, hw: -_inverse_free_fraction(cfg, hw),
                              lambda cfg, hw: 0.0)


def _budget(token_budget):
    """The token budget, NaN where there is none (days and cost to train are then NaN)."""
    return np.where(np.asarray(token_budget) > 0, token_budget, np.nan)


# Time quantities: functions of (t, n_gpus, price, token_budget), t the `timing.StepTime`,
# price the USD per GPU-hour.
def step_seconds(t, n_gpus, price, token_budget):
    """τ_step: seconds of one optimizer step (`sweep.timing.step_time`)."""
    return t.step_s


def tokens_per_second(t, n_gpus, price, token_budget):
    """G/τ_step: tokens trained on per second, all GPUs."""
    return t.tokens_per_s


def tokens_per_gpu_per_second(t, n_gpus, price, token_budget):
    """G/(τ_step·n): tokens per second per GPU."""
    return t.tokens_per_gpu_per_s


def model_flops_utilization(t, n_gpus, price, token_budget):
    """MFU: model FLOPs of a step (no recomputation) / (τ_step · n · dense bf16 peak)."""
    return t.mfu


def cost_per_million(t, n_gpus, price, token_budget):
    """ρ·n·τ_step/3600/G·10^6: USD per million tokens at the GPU's price per hour."""
    return cost_per_million_tokens(t.step_s, t.tokens_per_step, n_gpus, price)


def days_to_train(t, n_gpus, price, token_budget):
    """G_train·τ_step/G/86400: days to train on the token budget."""
    return days_for_budget(t.step_s, t.tokens_per_step, token_budget)


def cost_to_train(t, n_gpus, price, token_budget):
    """ρ·n·24·days: USD to train on the token budget."""
    return cost_for_budget(t.step_s, t.tokens_per_step, n_gpus, price, token_budget)


def time_atoms(arch, cfg, hw, rank=None):
    """What the kernel evaluates on the sub-grids: the step's atoms and the price (`rank`:
    `shard.rank_params` from the host)."""
    return timing.step_atoms(arch, cfg, hw, rank=rank), hw.price_per_gpu_hour_usd


def _training_only(ev: Evaluation, value):
    """`value`, NaN for an inference configuration (it has no training step)."""
    return np.where(np.asarray(ev.cfg.mode) > 0, np.nan, value)


def _timed(name, unit, function, budget=False) -> Quantity:
    def compute(ev):
        return _training_only(ev, function(ev.time, ev.cfg.n_gpus, ev.hw.price_per_gpu_hour_usd,
                                           _budget(ev.token_budget) if budget else 0.0))

    def device(atoms, m, token_budget):
        step, price = atoms
        t = timing.combine(step, m)
        return function(t, step.n_gpus, price, token_budget)

    return Quantity(name, unit, "float64", function.__doc__.splitlines()[0], compute,
                    OfTime(time_atoms, device), needs_budget=budget, training_only=True)


def _breakdown(key: str) -> Quantity:
    return Quantity(f"time_{key}_s", "s", "float64",
                    f"seconds of the step: {TIME_PARTS[key]}",
                    lambda ev, k=key: _training_only(ev, getattr(ev.time.breakdown, k)),
                    training_only=True)


TIME_PARTS = {
    "compute": "forward and backward compute of every micro-batch on the slowest stage",
    "recompute": "the extra forward work of activation recomputation",
    "tp": "exposed tensor-parallel communication", "cp": "exposed context-parallel exchange",
    "ep": "exposed expert-parallel all-to-all", "pp": "exposed pipeline point-to-point",
    "dp": "exposed data-parallel reduction and ZeRO/FSDP gathers",
    "bubble": "pipeline fill and drain", "optimizer": "the optimizer step",
    "offload": "PCIe/NVMe transfers of offloaded states",
}

QUANTITIES: tuple[Quantity, ...] = (
    Quantity("grad_accum", "count", "float64",
             "micro-batches per step (derived from global_batch_tokens when the grid sets it)",
             lambda ev: ev.cfg.grad_accum),
    Quantity("gpus_per_node", "count", "float64", "GPUs per node (the GPU's node when unset)",
             lambda ev: ev.cfg.gpus_per_node),
    Quantity("params", "count", "float64", "parameters of the model (1e9 = 1B)",
             lambda ev: ev.est.params_total),
    Quantity("params_trainable", "count", "float64", "trainable parameters of the model",
             lambda ev: ev.est.params_trainable),
    Quantity("params_per_gpu", "count", "float64",
             "parameters one GPU holds before ZeRO/FSDP sharding",
             lambda ev: ev.est.params_per_gpu),
    Quantity("tokens_per_gpu", "tokens", "float64", tokens_per_gpu.__doc__,
             lambda ev: tokens_per_gpu(ev.cfg),
             Product((lambda cfg, hw: cfg.micro_batch * cfg.seq_len,
                      lambda cfg, hw: 1 / (cfg.tp * cfg.pp * cfg.cp)))),
    *(_component(k) for k in GPU_COMPONENTS),
    Quantity("per_gpu_total_bytes", "bytes", "float64",
             "estimated reserved memory per GPU at the peak", lambda ev: ev.est.per_gpu_total_bytes,
             TOTAL_ON_DEVICE),
    Quantity("per_gpu_total_gib", "GiB", "float64", "the same in GiB (2^30 bytes)",
             lambda ev: ev.est.per_gpu_total_bytes / GIB),
    Quantity("gpu_capacity_bytes", "bytes", "float64",
             "GPU memory x the fraction the driver exposes", lambda ev: ev.est.gpu_capacity_bytes),
    Quantity("headroom_bytes", "bytes", "float64", "capacity - total",
             lambda ev: ev.est.gpu_capacity_bytes - ev.est.per_gpu_total_bytes, HEADROOM_ON_DEVICE),
    Quantity("host_bytes_per_node", "bytes", "float64", "host RAM per node for offloaded states",
             lambda ev: ev.est.host_bytes_per_node),
    Quantity("host_capacity_bytes", "bytes", "float64", "the node's RAM",
             lambda ev: ev.hw.host_memory_bytes_per_node),
    Quantity("nvme_bytes_per_node", "bytes", "float64", "NVMe per node for offloaded states",
             lambda ev: ev.est.nvme_bytes_per_node),
    Quantity("peak_phase", "", "string",
             "when the peak is: backward (start of backward) or step (end of backward, "
             "optimizer step)", lambda ev: np.asarray(PHASES)[np.asarray(ev.est.phase, int)]),
    Quantity("peak_stage", "", "string",
             "the most loaded pipeline stage: first, last or second",
             lambda ev: np.asarray(STAGE_NAMES)[np.asarray(ev.est.stage, int)]),
    Quantity("binding_constraint", "", "string", _binding.__doc__, _binding),
    _timed("step_s", "s", step_seconds),
    _timed("tokens_per_s", "tokens/s", tokens_per_second),
    _timed("tokens_per_gpu_per_s", "tokens/s", tokens_per_gpu_per_second),
    Quantity("model_flops_per_step", "FLOP", "float64",
             "model FLOPs of one step (no recomputation, full s x s attention scores)",
             lambda ev: _training_only(ev, ev.time.model_flops_per_step), training_only=True),
    _timed("mfu", "fraction", model_flops_utilization),
    *(_breakdown(k) for k in TIME_PARTS),
    Quantity("price_per_gpu_hour_usd", "USD", "float64",
             "one GPU-hour (catalog price or the grid's cost.price_per_gpu_hour_usd)",
             lambda ev: ev.hw.price_per_gpu_hour_usd),
    _timed("cost_per_million_tokens", "USD", cost_per_million),
    _timed("days_to_train", "days", days_to_train, budget=True),
    _timed("cost_to_train", "USD", cost_to_train, budget=True),
)
BY_NAME = {q.name: q for q in QUANTITIES}
OBJECTIVES = tuple(q.name for q in QUANTITIES if q.device is not None)


def values(ev: Evaluation, n: int | None = None) -> dict:
    """Every quantity's value (broadcast to `n` rows when `n` is given)."""
    out = {}
    for q in QUANTITIES:
        value = np.asarray(q.compute(ev))
        if n is not None:
            value = np.broadcast_to(value, (n,))
        out[q.name] = value if q.dtype == "string" else value.astype(np.float64)
    return out


TIME_QUANTITIES = tuple(q.name for q in QUANTITIES if isinstance(q.device, OfTime))
TRAINING_ONLY = tuple(q.name for q in QUANTITIES if q.training_only)
BUDGET_QUANTITIES = tuple(q.name for q in QUANTITIES if q.needs_budget)
