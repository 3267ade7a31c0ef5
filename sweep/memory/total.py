"""The per-GPU memory of one configuration: every component, the total, and whether it fits.

`estimate` is the single entry point that `explain` calls on scalars and the sweep vmaps over
arrays. The total is the estimated reserved memory at the peak: every tensor component plus
the runtime overhead and the allocator's fragmentation (`overhead`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from sweep import model, xp
from sweep.config import Hardware, TrainConfig
from sweep.memory import activations as act
from sweep.memory import inference as inf
from sweep.memory import runtime
from sweep.memory.model_states import PROFILES, ModelStates, model_states
from sweep.memory.shard import FIRST, FULL, LAST, holds_head, stage_shard
from sweep.model import Architecture
from sweep.validity import checks as validity_checks
from sweep.validity import invalid_reasons

INFERENCE = 1  # code of vocabulary.MODES

GPU_COMPONENTS = (
    "weights",
    "master_weights",
    "gradients",
    "optimizer_states",
    "activations",
    "logits",
    "kv_cache",
    "buffers",
    "overhead",
)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Estimate:
    """Memory of one configuration on its most loaded GPU (bytes unless named otherwise)."""

    weights: object
    master_weights: object
    gradients: object
    optimizer_states: object
    activations: object
    logits: object
    kv_cache: object
    buffers: object
    overhead: object
    per_gpu_total_bytes: object
    host_bytes_per_node: object
    nvme_bytes_per_node: object
    gpu_capacity_bytes: object
    params_total: object
    params_trainable: object
    params_per_gpu: object
    stage: object  # 0: first pipeline stage is the most loaded, 1: last
    invalid: object  # bit mask of validity.REASONS
    fits: object


@dataclass(frozen=True)
class StageParts:
    """A stage's allocated bytes as static + max(dynamic, step) (see `_per_stage`)."""

    static: object
    dynamic: object
    step: object


@dataclass(frozen=True)
class FitTerms:
    """What deciding `fits` needs, each term on the sub-grid of its own axes: per stage the
    static and dynamic parts and the step, the allocatable bytes, host RAM, validity checks."""

    stages: tuple[StageParts, StageParts]
    allocatable_bytes: object
    host_ok: object
    checks: dict


def fit_terms(arch: Architecture, cfg: TrainConfig, hw: Hardware,
              frameworks=tuple(PROFILES)) -> FitTerms:
    """The terms of `estimate`'s fit decision, unsummed: total <= capacity is
    static + max(dynamic, step) <= (capacity - runtime overhead)·(1 - fragmentation) on both
    stages. The sweep combines them with few operations per configuration."""
    stages, host, nvme = [], [], []
    for stage in (FIRST, LAST):
        _, _, stage_host, stage_nvme, _, parts = _per_stage(arch, cfg, hw, stage, frameworks)
        stages.append(parts)
        host.append(stage_host)
        nvme.append(stage_nvme)
    capacity = hw.memory_bytes * hw.usable_fraction
    allocatable = (capacity - hw.runtime_overhead_bytes) * (1 - cfg.fragmentation)
    host_ok = node_fits(xp.maximum(host[0], host[1]), xp.maximum(nvme[0], nvme[1]), hw)
    return FitTerms(tuple(stages), allocatable, host_ok, validity_checks(arch, cfg, hw))


def node_fits(host_bytes, nvme_bytes, hw: Hardware):
    """The node's RAM holds what is offloaded to it, and its NVMe what goes to NVMe."""
    return (host_bytes <= hw.host_memory_bytes_per_node) & (nvme_bytes <= hw.nvme_bytes_per_node)


def _per_stage(arch: Architecture, cfg: TrainConfig, hw: Hardware, stage: int,
               frameworks=tuple(PROFILES)):
    """Every GPU component on one pipeline stage, training or inference, and its total.

    The total is written so that it splits by the axes its terms depend on: `static` (model
    states and communication buffers: parallel layout, ZeRO, precision, ...), `dynamic`
    (activations, logits, KV cache: batch, context, recompute, ...) and the optimizer step's
    transient, which runs once the activations are freed:
    total = (static + max(dynamic, step))/(1 - fragmentation) + runtime overhead,
    the sum of the components below. `xp.materialize` keeps each part on its own sub-grid
    in a sweep, so that only this last line is evaluated per configuration.
    """
    shard = stage_shard(arch, cfg, stage)
    states: ModelStates = model_states(arch, shard, cfg, frameworks)
    inference = cfg.mode == INFERENCE
    training_only = lambda value: xp.where(inference, 0, value)  # noqa: E731
    activations = xp.where(inference, inf.decode_workspace_bytes(arch, cfg),
                           act.stage_activation_bytes(arch, cfg, stage))
    logits = xp.where(inference, holds_head(cfg, stage) * inf.decode_logits_bytes(arch, cfg),
                      act.stage_logits_bytes(arch, cfg, stage))
    kv_cache = xp.where(inference, inf.kv_cache_bytes(arch, cfg), 0)
    communication = training_only(runtime.communication_bytes(shard, cfg))
    step = xp.materialize(training_only(runtime.optimizer_step_bytes(shard, cfg)))
    components = {
        "weights": states.weights,
        "master_weights": training_only(states.master_weights),
        "gradients": training_only(states.gradients),
        "optimizer_states": training_only(states.optimizer_states),
        "activations": activations,
        "logits": logits,
        "kv_cache": kv_cache,
    }
    static = xp.materialize(
        states.weights + components["master_weights"] + components["gradients"]
        + components["optimizer_states"] + communication
    )
    dynamic = xp.materialize(activations + logits + kv_cache)
    components["buffers"] = communication + xp.maximum(step - dynamic, 0)
    allocated = static + xp.maximum(dynamic, step)
    components["overhead"] = runtime.overhead_bytes(allocated, cfg, hw)
    total = runtime.reserved_bytes(allocated, cfg, hw)
    params_on_gpu = shard.base_dense + shard.base_expert + shard.adapters
    host = training_only(states.host_bytes_per_node)
    nvme = training_only(states.nvme_bytes_per_node)
    parts = StageParts(static=static, dynamic=dynamic, step=step)
    return components, total, host, nvme, params_on_gpu, parts


def stage_components(arch: Architecture, cfg: TrainConfig, hw: Hardware, stage: int) -> dict:
    """Every GPU component of one given pipeline stage (`FIRST` or `LAST`), with `allocated`
    (the peak allocated bytes: every tensor component, the total less the overhead), `static`
    (model states and buffers) and `total`: `_per_stage` for comparing with a measurement
    taken on a known rank."""
    components, total, *_, parts = _per_stage(arch, cfg, hw, stage)
    allocated = parts.static + xp.maximum(parts.dynamic, parts.step)
    return {**components, "allocated": allocated, "static": parts.static, "total": total}


def trainable_params(arch: Architecture, cfg: TrainConfig):
    """Trainable parameters of the whole model: all but the frozen leading blocks (and the
    embedding with them), or the LoRA adapters."""
    frozen = model.layers_params(arch, cfg.frozen_layers)
    frozen_total = frozen.dense + frozen.expert + (cfg.frozen_layers > 0) * model.embedding_params(
        arch
    )
    adapters = model.layers_lora_params(
        arch, arch.num_layers, 0, cfg.lora_rank, cfg.lora_targets
    )
    return xp.where(cfg.finetune == FULL, model.total_params(arch) - frozen_total, adapters)


def estimate(arch: Architecture, cfg: TrainConfig, hw: Hardware) -> Estimate:
    """Every memory component on the most loaded GPU, its total, capacity and fit.

    The first and the last pipeline stage are evaluated; the larger total is reported, and
    host RAM (and NVMe) per node is the larger of the two stages'.
    fits = valid and total <= memory_bytes·usable_fraction and host bytes <= host RAM and
    NVMe bytes <= the node's NVMe.
    """
    first, first_total, first_host, first_nvme, first_params, _ = _per_stage(arch, cfg, hw, FIRST)
    last, last_total, last_host, last_nvme, last_params, _ = _per_stage(arch, cfg, hw, LAST)
    use_last = last_total > first_total
    components = {k: xp.where(use_last, last[k], first[k]) for k in GPU_COMPONENTS}
    total = xp.maximum(first_total, last_total)
    host = xp.materialize(xp.maximum(first_host, last_host))
    nvme = xp.maximum(first_nvme, last_nvme)
    capacity = hw.memory_bytes * hw.usable_fraction
    invalid = xp.materialize(invalid_reasons(arch, cfg, hw))
    fits = (invalid == 0) & (total <= capacity) & node_fits(host, nvme, hw)
    return Estimate(
        **components,
        per_gpu_total_bytes=total,
        host_bytes_per_node=host,
        nvme_bytes_per_node=nvme,
        gpu_capacity_bytes=capacity,
        params_total=model.total_params(arch),
        params_trainable=trainable_params(arch, cfg),
        params_per_gpu=xp.where(use_last, last_params, first_params),
        stage=xp.where(use_last, LAST, FIRST),
        invalid=invalid,
        fits=fits,
    )
