"""The per-GPU memory of one configuration: every component, the total, and whether it fits.

`estimate` is the single entry point that `explain` calls on scalars and the sweep vmaps over
arrays. The total is the estimated reserved memory at the peak: every tensor component plus
the runtime overhead and the allocator's fragmentation (`overhead`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import numpy as np

from sweep import model, xp
from sweep import vocabulary as vocab
from sweep.config import Hardware, TrainConfig
from sweep.memory import activations as act
from sweep.memory import inference as inf
from sweep.memory import runtime
from sweep.memory.model_states import (
    MEGATRON,
    MEGATRON_VOCAB_DIVISOR,
    PROFILES,
    ModelStates,
    model_states,
)
from sweep.memory.shard import (
    FIRST,
    FULL,
    MIDDLE,
    RankParams,
    end_stages,
    holds_head,
    is_constant,
    stage_axis,
    stage_shard,
    stage_values,
)
from sweep.model import Architecture
from sweep.validity import checks as validity_checks
from sweep.validity import invalid_reasons

INFERENCE = vocab.code("mode", "inference")

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
    """Memory of one configuration on its most loaded GPU at its peak (bytes unless named
    otherwise); the components are those of the peak phase (`PHASES`)."""

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
    phase: object = 0.0  # BACKWARD or STEP: when the peak is


PHASES = ("backward", "step")  # start of backward; end of backward and optimizer step
BACKWARD, STEP = (PHASES.index(name) for name in PHASES)
# The bytes of a stage that does not exist (the middle one with pp <= 2): never the largest, and
# finite, so that adding an infinite (invalid) part still gives +inf in float32.
ABSENT_BYTES = -1e30


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StageParts:
    """A stage's allocated bytes in its two peaks, max(backward + dynamic, step): `backward` the
    static-side bytes at the start of backward (the model states, buffers and what the forward
    pass gathered), `dynamic` the activations, loss side and KV cache, `step` the static-side
    bytes at the end of backward and the optimizer step (every gradient, no activation)."""

    backward: object
    dynamic: object
    step: object


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StagePieces:
    """`StageParts` as functions of m = grad_accum, the micro-batches per step:
    backward = base + [m > 1]·accumulated (earlier micro-batches' gradients),
    dynamic = min(in_flight_cap, m)·per_microbatch + once. With a fixed global batch m is
    known only per configuration (it depends on the batch and on the data-parallel size), so
    the sweep combines these pieces itself."""

    base: object
    accumulated: object
    per_microbatch: object
    once: object
    in_flight_cap: object
    step: object

    def parts(self, grad_accum) -> StageParts:
        backward = self.base + (grad_accum > 1) * self.accumulated
        dynamic = xp.minimum(self.in_flight_cap, grad_accum) * self.per_microbatch + self.once
        return StageParts(xp.materialize(backward), xp.materialize(dynamic), self.step)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its components in each phase, totals, node memory, parts."""

    phases: tuple[dict, dict]  # components at the BACKWARD and STEP peaks
    persistent: object  # what persists between steps: model states and buffers
    allocated: object
    total: object
    peak_phase: object
    host: object
    nvme: object
    params_on_gpu: object
    pieces: StagePieces

    @property
    def components(self) -> dict:
        """The components of the phase at which the stage peaks."""
        backward, step = self.phases
        at_step = self.peak_phase == STEP
        return {k: xp.where(at_step, step[k], backward[k]) for k in GPU_COMPONENTS}


@dataclass(frozen=True)
class FitTerms:
    """What deciding `fits` needs, each term on the sub-grid of its own axes: every evaluated
    stage's pieces and its host and NVMe bytes per node (to compare with the node's,
    `node_limits`) along the leading axis of `stage_axis` (`shard.stage_values` takes them
    apart), the allocatable bytes, validity checks."""

    stages: StagePieces
    stage_axis: np.ndarray
    allocatable_bytes: object
    host_bytes_per_node: object
    nvme_bytes_per_node: object
    checks: dict


def fit_terms(arch: Architecture, cfg: TrainConfig, hw: Hardware,
              frameworks=tuple(PROFILES), rank: RankParams | None = None) -> FitTerms:
    """The terms of `estimate`'s fit decision, unsummed: total <= C is
    max(backward + dynamic, step) <= A = (C - O)·(1 - φ) on both stages (C capacity, O runtime
    overhead, φ fragmentation: docs/notation.md). The library workspaces K are in both peaks
    of every stage when training, so they move to the right: the pieces are those of a GPU
    without them, against A - K. K depends on the GPU, the pieces on the parallel layout,
    ZeRO, precision, ...: summed, each piece would span both, and the sweep's kernel evaluate
    its formula once per GPU (measured here: planner_mixed's terms programs 0.27 -> 0.12 s,
    benchmark_1e10's 3.3 -> 2.6 s). The sweep combines the terms with few operations per
    configuration. `rank`: `shard.rank_params`, when computed beforehand (the sweep's kernel
    gets them from the host)."""
    no_workspace = dataclasses.replace(hw, blas_workspace_bytes=0.0, te_workspace_bytes=0.0)
    stacked, codes = stacked_stages(arch, cfg, no_workspace, frameworks, rank)
    capacity = hw.memory_bytes * hw.usable_fraction
    workspace = (cfg.mode != INFERENCE) * runtime.workspace_bytes(arch, cfg, hw)
    allocatable = (capacity - hw.runtime_overhead_bytes) * (1 - cfg.fragmentation) - workspace
    return FitTerms(stacked.pieces, codes, allocatable, stacked.host, stacked.nvme,
                    validity_checks(arch, cfg, hw))


def evaluated_stages(cfg: TrainConfig) -> tuple[int, ...]:
    """The pipeline stages that can be the most loaded: the first and the last, and the second
    (MIDDLE) unless the split is even, where it never exceeds the first (as many blocks, fewer
    micro-batches in flight, no embedding). Decided from the values when they are constants
    (a sweep's unswept axes are Python numbers), else the middle stage is evaluated. With pp
    the constant 1 the first stage is the only one (`shard.end_stages`)."""
    ends = end_stages(cfg)
    split = (cfg.first_stage_layers, cfg.last_stage_layers, cfg.embedding_in_split,
             cfg.loss_in_split)
    even = all(is_constant(v, 0) for v in split)
    return ends if len(ends) == 1 or even else (*ends, MIDDLE)


def stacked_stages(arch: Architecture, cfg: TrainConfig, hw: Hardware,
                   frameworks=tuple(PROFILES), rank: RankParams | None = None
                   ) -> tuple[Stage, np.ndarray]:
    """(`stage_memory` of every one of the `evaluated_stages` along the leading axis, their
    `shard.stage_axis`): one evaluation, so a swept formula is traced once, not per stage."""
    codes = stage_axis(evaluated_stages(cfg), (arch, cfg, hw))
    return stage_memory(arch, cfg, hw, codes, frameworks, rank), codes


def every_stage(arch: Architecture, cfg: TrainConfig, hw: Hardware,
                frameworks=tuple(PROFILES)) -> list[Stage]:
    """`stage_memory` of each of the `evaluated_stages` (`stacked_stages` taken apart)."""
    return stage_values(*stacked_stages(arch, cfg, hw, frameworks))


def _largest(values):
    values = list(values)
    out = values[0]
    for value in values[1:]:
        out = xp.maximum(out, value)
    return out


def node_limits(hw: Hardware) -> tuple:
    """(host RAM, NVMe) bytes of one node, for what is offloaded to it."""
    return hw.host_memory_bytes_per_node, hw.nvme_bytes_per_node


def node_fits(host_bytes, nvme_bytes, hw: Hardware):
    """The node's RAM holds what is offloaded to it, and its NVMe what goes to NVMe."""
    host_limit, nvme_limit = node_limits(hw)
    return (host_bytes <= host_limit) & (nvme_bytes <= nvme_limit)


def framework_architecture(arch: Architecture, cfg: TrainConfig) -> Architecture:
    """The architecture as the framework builds it: Megatron-LM pads the vocabulary to a
    multiple of vocab_multiple·t (128·t by default; `_vocab_size_with_padding`,
    megatron/training/tokenizer/tokenizer.py), which grows the embedding, head and logits."""
    multiple = xp.where(arch.vocab_multiple > 0, arch.vocab_multiple,
                        MEGATRON_VOCAB_DIVISOR) * cfg.tp
    padded = xp.ceil(arch.vocab_size / multiple) * multiple
    return arch.replace(vocab_size=xp.where(cfg.framework == MEGATRON, padded, arch.vocab_size))


def stage_memory(arch: Architecture, cfg: TrainConfig, hw: Hardware, stage,
                 frameworks=tuple(PROFILES), rank: RankParams | None = None) -> Stage:
    """Every GPU component of one pipeline stage in the step's two peaks, and the total (of
    every stage along axis 0 for a stage array, `shard.stage_axis`).

    The start of the backward pass holds the model states and buffers that persist, what the
    forward pass gathered (ZeRO-3/FSDP units, autocast's weight casts), the gradients of
    earlier micro-batches when they accumulate (grad_accum > 1), and the dynamic part: the
    saved activations, and the larger of the loss gradient's peak and (with full recompute)
    one recomputed block. The end of backward and the optimizer step hold every gradient, the
    end of backward's buffers or the step's transient, no activation:
    allocated = max(backward + dynamic, step),
    total = allocated/(1 - φ) + O (φ fragmentation, O runtime overhead). `backward` and `step`
    depend on the static axes (parallel layout, ZeRO, precision, ...), `dynamic` on batch,
    context and recompute; `xp.materialize` keeps each part on its own sub-grid in a sweep, so
    that only the last line is evaluated per configuration. Inference holds the weights, the
    decode workspace, the next-token logits and the KV cache.
    """
    arch = framework_architecture(arch, cfg)
    shard = stage_shard(arch, cfg, stage, rank)
    states: ModelStates = model_states(shard, cfg, frameworks)
    inference = cfg.mode == INFERENCE
    training = 1 - inference
    communication = (runtime.communication_bytes(shard, cfg)
                     + runtime.workspace_bytes(arch, cfg, hw))
    accumulating = states.transient_gradients * (cfg.grad_accum > 1)
    persistent = (states.weights + states.master_weights + states.gradients
                  + states.optimizer_states + communication)
    blocks = act.block_bytes(arch, cfg)
    per_microbatch = act.stage_microbatch_bytes(arch, cfg, stage, blocks)
    loss = act.stage_loss_bytes(arch, cfg, stage)
    # Full recompute's working block is alive after the loss gradient is freed.
    after_loss = (act.stage_head_bytes(arch, cfg, stage, blocks)
                  + xp.maximum(act.stage_recompute_bytes(arch, cfg, stage, blocks) - loss, 0))
    in_flight = act.in_flight_microbatches(cfg, stage)
    # What is built in backward and what the step needs are alive at different times.
    step_transient = xp.maximum(runtime.optimizer_step_bytes(shard, cfg),
                                states.backward_transient)
    decode_logits = holds_head(cfg, stage) * inf.decode_logits_bytes(arch, cfg)
    kv_cache = xp.where(inference, inf.kv_cache_bytes(arch, cfg), 0)
    backward_phase = {
        "weights": states.weights + training * states.gathered,
        "master_weights": training * states.master_weights,
        "gradients": training * (states.gradients + accumulating),
        "optimizer_states": training * states.optimizer_states,
        "activations": xp.where(inference, inf.decode_workspace_bytes(arch, cfg),
                                in_flight * per_microbatch + after_loss),
        "logits": xp.where(inference, decode_logits, loss),
        "kv_cache": kv_cache,
        "buffers": training * communication,
    }
    step_phase = {
        "weights": training * states.weights,
        "master_weights": training * states.master_weights,
        "gradients": training * (states.gradients + states.transient_gradients),
        "optimizer_states": training * states.optimizer_states,
        "activations": 0.0, "logits": 0.0, "kv_cache": 0.0,
        "buffers": training * (communication + step_transient),
    }
    pieces = {
        "base": xp.where(inference, states.weights, persistent + states.gathered),
        "accumulated": training * states.transient_gradients,
        "per_microbatch": training * per_microbatch,
        "once": xp.where(inference, inf.decode_workspace_bytes(arch, cfg) + decode_logits
                         + kv_cache, after_loss + loss),
        "in_flight_cap": act.in_flight_cap(cfg, stage),
        "step": training * (persistent + states.transient_gradients + step_transient),
    }
    host = training * states.host_bytes_per_node
    nvme = training * states.nvme_bytes_per_node
    if not isinstance(stage, int) or stage == MIDDLE:  # a middle stage exists only with pp > 2
        exists = (stage != MIDDLE) | (cfg.pp > 2)
        pieces = {k: xp.where(exists, v, ABSENT_BYTES if k in ("base", "step") else 0)
                  for k, v in pieces.items()}
        host, nvme = (xp.where(exists, x, 0) for x in (host, nvme))
    pieces = StagePieces(**{k: xp.materialize(v) for k, v in pieces.items()})
    parts = pieces.parts(cfg.grad_accum)
    backward, dynamic, step = parts.backward, parts.dynamic, parts.step
    allocated = xp.maximum(backward + dynamic, step)
    peak_phase = xp.where(step > backward + dynamic, STEP, BACKWARD)
    phases = []
    for components, phase_allocated in ((backward_phase, backward + dynamic), (step_phase, step)):
        components = dict(components)
        components["overhead"] = runtime.overhead_bytes(phase_allocated, cfg, hw)
        phases.append(components)
    return Stage(
        phases=tuple(phases),
        persistent=training * persistent + inference * states.weights,
        allocated=allocated,
        total=runtime.reserved_bytes(allocated, cfg, hw),
        peak_phase=peak_phase,
        host=host,
        nvme=nvme,
        params_on_gpu=shard.base_dense + shard.base_expert + shard.adapters,
        pieces=pieces,
    )


def stage_components(arch: Architecture, cfg: TrainConfig, hw: Hardware, stage: int) -> dict:
    """Every GPU component of one given pipeline stage (`FIRST` or `LAST`) at its peak, with
    `allocated` (the peak allocated bytes: every tensor component), `static` (what persists
    between steps: model states and buffers) and `total`: for comparing with a measurement
    taken on a known rank."""
    memory = stage_memory(arch, cfg, hw, stage)
    return {**memory.components, "allocated": memory.allocated, "static": memory.persistent,
            "total": memory.total}


def trainable_params(arch: Architecture, cfg: TrainConfig):
    """Trainable parameters of the whole model: all but the frozen leading blocks (and the
    embedding with them), or the LoRA adapters."""
    kinds = model.block_kinds(arch, lora_rank=cfg.lora_rank, lora_targets=cfg.lora_targets)
    frozen = model.over_layers(arch, kinds, cfg.frozen_layers)
    frozen_total = frozen.dense + frozen.expert + (cfg.frozen_layers > 0) * model.embedding_params(
        arch
    )
    adapters = model.over_layers(arch, kinds, arch.num_layers).lora
    return xp.where(cfg.finetune == FULL, model.total_params(arch) - frozen_total, adapters)


def estimate(arch: Architecture, cfg: TrainConfig, hw: Hardware) -> Estimate:
    """Every memory component on the most loaded GPU at its peak, its total, capacity and fit.

    The first and the last pipeline stage are evaluated, and the second with an uneven split
    (`evaluated_stages`); the largest total is reported, and host RAM (and NVMe) per node is
    the largest of the stages'.
    fits = valid and total <= C = memory_bytes·usable_fraction and host bytes <= host RAM and
    NVMe bytes <= the node's NVMe.
    """
    codes = evaluated_stages(cfg)
    stages = every_stage(arch, cfg, hw)
    chosen = stages[0]
    components, code = chosen.components, FIRST
    total, params_on_gpu, phase = chosen.total, chosen.params_on_gpu, chosen.peak_phase
    for stage, memory in zip(codes[1:], stages[1:], strict=True):
        heavier = memory.total > total
        candidate = memory.components
        components = {k: xp.where(heavier, candidate[k], components[k]) for k in GPU_COMPONENTS}
        code = xp.where(heavier, stage, code)
        params_on_gpu = xp.where(heavier, memory.params_on_gpu, params_on_gpu)
        phase = xp.where(heavier, memory.peak_phase, phase)
        total = xp.maximum(total, memory.total)
    host = xp.materialize(_largest(m.host for m in stages))
    nvme = _largest(m.nvme for m in stages)
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
        params_per_gpu=params_on_gpu,
        stage=code,
        invalid=invalid,
        fits=fits,
        phase=phase,
    )
