"""`explain --compare`: what Megatron-LM's and DeepSpeed's own estimators say for the same
configuration, beside ours, so a user sees where and why we differ."""

from __future__ import annotations

from dataclasses import dataclass

from sweep import xp
from sweep.config import TrainConfig
from sweep.memory.model_states import deepspeed, megatron, megatron_padded_vocab
from sweep.memory.shard import stage_shard
from sweep.model import Architecture

MEGATRON_NOTE = (
    "weights+optimizer: compute_weight_and_optimizer_memory; activations: "
    "compute_activation_memory (Korthikanti Table 2 with sequence parallelism and selective "
    "recompute assumed: sbh(18 + 4f/h) per layer; no attention s² term, GQA or SwiGLU "
    "widths); no runtime terms"
)
DEEPSPEED_NOTE = (
    "estimate_zero2/zero3_model_states_mem_needs: model states only; activations, logits and "
    "runtime memory are not estimated"
)


@dataclass(frozen=True)
class Comparison:
    name: str
    model_state_bytes: float
    activation_bytes: float
    note: str

    @property
    def total_bytes(self) -> float:
        return self.model_state_bytes + self.activation_bytes


def megatron_activation_bytes(arch: Architecture, cfg: TrainConfig):
    """Megatron-LM `compute_activation_memory` (theoretical_memory_usage.py, NVIDIA/Megatron-LM
    commit 00caa53af30912914981c86f39db123961678bbd), first pipeline stage, term for term."""
    s, b, h, p = cfg.seq_len, cfg.micro_batch, arch.hidden_size, cfg.pp
    memory = s * b * h * (18 + 4 * arch.ffn_hidden_size / h) * arch.num_layers
    memory = memory + 8 * s * b * p + s * b * h * p
    penalty = 1 + (p - 1) / (p * cfg.vpp)
    memory = xp.where(cfg.vpp > 1, memory * penalty, memory)
    discount = xp.minimum(1, cfg.grad_accum / p)
    memory = xp.where((cfg.vpp <= 1) & (p > 1), memory * discount, memory)
    output = s * b * h * 4 * (1 + megatron_padded_vocab(arch, cfg) / h)
    memory = memory + xp.where(p == 1, output, 0)
    return memory / cfg.tp


def compare(arch: Architecture, cfg: TrainConfig) -> list[Comparison]:
    """Megatron-LM's report and DeepSpeed's estimator (stage 2 or 3 as configured; ZeRO-2
    for stages 0-1) for the configuration, evaluated in the caller's precision."""
    meg = megatron(arch, cfg.replace(zero_stage=xp.minimum(cfg.zero_stage, 1)))
    ds_cfg = cfg.replace(zero_stage=xp.where(cfg.zero_stage >= 3, 3, 2))
    ds = deepspeed(stage_shard(arch, ds_cfg, 0), ds_cfg)

    def states(s):
        return float(s.weights + s.master_weights + s.gradients + s.optimizer_states)

    return [
        Comparison("megatron", states(meg), float(megatron_activation_bytes(arch, cfg)),
                   MEGATRON_NOTE),
        Comparison("deepspeed", states(ds), 0.0, DEEPSPEED_NOTE),
    ]
