"""`explain --compare`: what Megatron-LM's and DeepSpeed's own estimators say for the same
configuration, beside ours, so a user sees where and why we differ.

Megatron-LM's is `report_theoretical_memory` of megatron/training/theoretical_memory_usage.py
at NVIDIA/Megatron-LM commit d98e8a64ddf34856e74b24714e3bedb2f5a39553 (core 0.20), reproduced
term for term, the source's own simplifications included: its distributed optimizer divides by
`args.data_parallel_size` = D = n/(t·p·c) (the framework shards over N = n/(t·p), which our
`megatron` profile follows), it counts the most loaded shard as 1/p of the blocks plus one
embedding, and MTP modules as plain transformer layers of the last layer's kind. Notation:
docs/notation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import TrainConfig
from sweep.memory.model_states import MEGATRON_VOCAB_DIVISOR, deepspeed
from sweep.memory.shard import expert_tp, stage_shard
from sweep.model import NORM_WEIGHT, Architecture, moe_layer_count

SELECTIVE = vocab.code("recompute", "selective")
MEGATRON_ACTIVATION_OVERHEAD = 1.05  # "buffer for optimizer and miscellaneous temporaries"

MEGATRON_NOTE = (
    "report_theoretical_memory (theoretical_memory_usage.py @d98e8a64): weights+optimizer with "
    "the optimizer over dp = n/(t·p·c); activations per Korthikanti Table 2, sbh(18 + 4f/h)/t "
    "with SP and selective recompute, else sbh(10 + 24/t)·1.05; no attention s² term, GQA or "
    "SwiGLU widths; no runtime terms"
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


def megatron_padded_vocab(arch: Architecture, cfg: TrainConfig):
    """`_vocab_size_with_padding`: V rounded up to a multiple of vocab_multiple·t (128·t)."""
    multiple = xp.where(arch.vocab_multiple > 0, arch.vocab_multiple,
                        MEGATRON_VOCAB_DIVISOR) * cfg.tp
    return xp.ceil(arch.vocab_size / multiple) * multiple


def megatron_weight_and_optimizer_bytes(arch: Architecture, cfg: TrainConfig):
    """`compute_weight_and_optimizer_memory`, term for term: tp-sharded attention, MLP and
    shared experts; replicated norms and router; routed experts split by etp·ep; the most
    loaded shard holds 1/p of the blocks, every MTP module and one embedding (two with untied
    embeddings at p = 1); 18 bytes per parameter, or 6 + 12/D with the distributed optimizer,
    D = n/(t·p·c) for dense parameters and n/(t_e·x·p) in its place for expert parameters. No
    biases but the router's with `add_bias_linear`; norm_size = 1 (RMSNorm) or 2 (LayerNorm);
    gated multiplier 3/2."""
    h, a, k, d = arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim
    norm_size = NORM_WEIGHT + arch.norm_bias
    gated = xp.where(arch.gated_mlp > 0, 3 / 2, 1)
    q_head = arch.qk_nope_head_dim + arch.qk_rope_head_dim
    q_term = xp.where(arch.q_lora_rank > 0, arch.q_lora_rank * (h + a * q_head + norm_size),
                      h * a * q_head)
    mla_attention = (
        q_term
        + arch.kv_lora_rank * (h + a * (arch.qk_nope_head_dim + arch.v_head_dim) + norm_size)
        + h * arch.qk_rope_head_dim
        + a * arch.v_head_dim * h
    )
    standard_attention = 2 * h * (a * d + k * d)  # 2·h·h·((1 + k/a)·(a·d/h)) in the source
    attention = xp.where(arch.mla > 0, mla_attention, standard_attention)
    dense_mlp = 2 * h * arch.ffn_hidden_size * gated
    shared = 2 * h * arch.num_shared_experts * arch.shared_expert_ffn_hidden_size * gated
    routed = 2 * h * arch.moe_ffn_hidden_size * arch.num_experts * gated
    layernorms = 2 * h * norm_size
    router = xp.where(arch.num_experts > 0, (h + arch.linear_bias) * arch.num_experts, 0)
    n_moe = moe_layer_count(arch)
    n_dense = arch.num_layers - n_moe
    mtp_moe = arch.mtp_layers * moe_layer_count(arch, 1, arch.num_layers - 1)
    mtp_dense = arch.mtp_layers - mtp_moe
    embedding = h * megatron_padded_vocab(arch, cfg)
    tp_sharded_block = (attention + dense_mlp) * n_dense + (attention + shared) * n_moe
    tp_sharded_mtp = (attention + dense_mlp) * mtp_dense + (attention + shared) * mtp_moe
    replicated_block = layernorms * n_dense + (layernorms + router) * n_moe + norm_size * h
    replicated_mtp = layernorms * mtp_dense + (layernorms + router) * mtp_moe
    untied_single_stage = (1 - arch.tied_embeddings) * (cfg.pp == 1)
    tp_sharded = (tp_sharded_block / cfg.pp + tp_sharded_mtp
                  + embedding * (1 + untied_single_stage)) / cfg.tp
    replicated = replicated_block / cfg.pp + replicated_mtp
    expert = routed * (n_moe / cfg.pp + mtp_moe) / (expert_tp(cfg) * cfg.ep)
    distributed = cfg.zero_stage >= 1
    data_parallel = cfg.n_gpus / (cfg.tp * cfg.pp * cfg.cp)
    expert_data_parallel = cfg.n_gpus / (expert_tp(cfg) * cfg.ep * cfg.pp)

    def bytes_per_parameter(group):
        return xp.where(distributed, 6 + 12 / group, 18)

    return ((tp_sharded + replicated) * bytes_per_parameter(data_parallel)
            + expert * bytes_per_parameter(expert_data_parallel))


def megatron_activation_bytes(arch: Architecture, cfg: TrainConfig):
    """`report_theoretical_memory`'s activations, first pipeline stage: with sequence
    parallelism and selective recompute `compute_activation_memory` (Korthikanti Table 2,
    sbh(18 + 4f/h) per layer), else `compute_activation_memory_without_sp` (sbh(10 + 24/t) per
    layer, 2-byte logits and final-norm output, times 1.05); embedding inputs and dropout for
    p micro-batches, the interleaved penalty 1 + (p - 1)/(p·v), the 1F1B discount
    min(1, m/p), the output layer at p = 1."""
    s, mb, h, p, t = cfg.seq_len, cfg.micro_batch, arch.hidden_size, cfg.pp, cfg.tp
    vocab = megatron_padded_vocab(arch, cfg)
    with_sp = (cfg.sp > 0) & (cfg.recompute == SELECTIVE)
    per_layer = xp.where(with_sp, s * mb * h * (18 + 4 * arch.ffn_hidden_size / h),
                         s * mb * h * (10 + 24 / t))
    memory = per_layer * arch.num_layers + 8 * s * mb * p + s * mb * h * p
    penalty = 1 + (p - 1) / (p * cfg.vpp)
    memory = xp.where(cfg.vpp > 1, memory * penalty, memory)
    discount = xp.minimum(1, cfg.grad_accum / p)
    memory = xp.where((cfg.vpp <= 1) & (p > 1), memory * discount, memory)
    output_sp = s * mb * h * 4 * (1 + vocab / h)
    output_no_sp = 2 * (s * mb * vocab / t + s * mb * h)
    memory = memory + xp.where(p == 1, xp.where(with_sp, output_sp, output_no_sp), 0)
    return xp.where(with_sp, memory / t, memory * MEGATRON_ACTIVATION_OVERHEAD)


def compare(arch: Architecture, cfg: TrainConfig) -> list[Comparison]:
    """Megatron-LM's report and DeepSpeed's estimator (stage 2 or 3 as configured; ZeRO-2
    for stages 0-1) for the configuration, evaluated in the caller's precision."""
    meg_cfg = cfg.replace(zero_stage=xp.minimum(cfg.zero_stage, 1))
    ds_cfg = cfg.replace(zero_stage=xp.where(cfg.zero_stage >= 3, 3, 2))
    ds = deepspeed(stage_shard(arch, ds_cfg, 0), ds_cfg)
    ds_states = (ds.weights + ds.gathered + ds.master_weights + ds.gradients
                 + ds.transient_gradients + ds.optimizer_states)
    return [
        Comparison("megatron", float(megatron_weight_and_optimizer_bytes(arch, meg_cfg)),
                   float(megatron_activation_bytes(arch, cfg)), MEGATRON_NOTE),
        Comparison("deepspeed", float(ds_states), 0.0, DEEPSPEED_NOTE),
    ]
