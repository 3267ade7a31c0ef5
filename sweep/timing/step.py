"""Time of one training step: compute, exposed communication, pipeline bubble, optimizer.

Notation: docs/notation.md (one GPU, one micro-batch unless said). Here mostly n GPUs, t, c, p,
v, x the tensor, context, pipeline, virtual-pipeline and expert degrees, D = n/(t·p·c) the
data-parallel degree, m micro-batches per step, T = b·s/c tokens on a rank, e activation bytes,
e_g block-GEMM operand bytes, τ_f and τ_b the forward and backward compute time of a
micro-batch on a stage, τ_max and τ_fill a micro-batch's time on the slowest stage and on the
first.

One stage, one micro-batch (`stage_work`): every block's linears, attention core and
memory-bound kernels forward (`efficiency`), the backward as 2 further GEMM passes (1 under
LoRA, none for frozen blocks), 2x the attention core (2.5x in FlashAttention, which
recomputes QK^T: Dao-AILab/flash-attention benchmarks/benchmark_flash_attention.py `flops`)
and 2x the memory traffic; the head and the loss on the stage that holds them; recomputation
(full: one more forward of the recomputed blocks, selective: of the attention core); the
exposed TP, CP, EP and PP communication of that micro-batch. The step (`step_time`):
m·τ_max + (p - 1)/v·τ_fill (`schedule`), plus data-parallel / ZeRO communication, the
optimizer step and offload transfers of the most loaded stage. Every term is evaluated on
both the first and the last pipeline stage (the first fills the pipeline, the last holds the
head) at once, along a leading stage axis (`shard.stage_axis`), and each depends only on the
axes it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import jax

from sweep import model, xp
from sweep.config import Hardware, TrainConfig
from sweep.memory import bytes as b
from sweep.memory.model_states import weight_bytes
from sweep.memory.shard import (
    RankParams,
    dense_shard_degree,
    end_stages,
    expert_shard_degree,
    expert_tp,
    gpus_on_node,
    holds_head,
    on_stage_axis,
    stage_axis,
    stage_layers,
    stage_shard,
)
from sweep.model import Architecture
from sweep.timing import comms, schedule
from sweep.timing import efficiency as eff
from sweep.timing import flops as fl

SELECTIVE, FULL_RECOMPUTE = fl.SELECTIVE, fl.FULL_RECOMPUTE
FULL_FINETUNE, QLORA = 0, 2  # codes of vocabulary.FINETUNES
GENERIC, DEEPSPEED, MEGATRON, FSDP = comms.GENERIC, comms.DEEPSPEED, comms.MEGATRON, comms.FSDP
BF16_MIXED, FP8_MIXED = 1, 4  # codes of vocabulary.PRECISIONS
OFFLOAD_OPTIMIZER, OFFLOAD_PARAMS, OFFLOAD_NVME = 1, 2, 3  # codes of vocabulary.OFFLOADS

FLASH_BACKWARD = fl.FLASH_BACKWARD
TP_COLLECTIVES_PER_PASS = 2  # per block: after attention and after the MLP (Megatron-LM)
EP_ALL_TO_ALLS_PER_PASS = 2  # per MoE block: dispatch and combine
# Cross-entropy on vocab-parallel logits, bytes moved per logit element, counted from
# Megatron-LM's `_VocabParallelCrossEntropy` (megatron/core/tensor_parallel/cross_entropy.py,
# commit d98e8a64, unchanged since core_r0.8.0): forward .float() (read 2, write 4), max
# (read 4), in-place subtraction of the max (4 + 4), in-place exp (4 + 4), sum (4), in-place
# division by the sum (4 + 4); backward grad_input.mul_ (4 + 4) and the cast of the
# gradient back to bf16 for the head's backward (4 + 2): 52. Fused (chunked) losses read the
# logits once forward and once backward and write the gradient in place: 6.
CROSS_ENTROPY_BYTES_PER_LOGIT = 52
FUSED_CROSS_ENTROPY_BYTES_PER_LOGIT = 6
# QLoRA dequantises every NF4 weight to bf16 before each GEMM pass: read 0.5, write 2 bytes
# (the GEMM's read of the bf16 copy is in its operands).
QLORA_DEQUANT_BYTES_PER_WEIGHT = b.NF4_BYTES + b.BF16_BYTES
# Host-side optimizer step with offloaded states (DeepSpeed CPU Adam): memory-bound on the
# node's DRAM. Assumption, unverified: 100 GB/s sustained per node, about a quarter of a
# 2-socket DDR4/DDR5 server's peak.
CPU_OPTIMIZER_BYTES_PER_S_PER_NODE = 100e9


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Breakdown:
    """Seconds of one step by cause; they sum to `StepTime.step_s`.

    compute: forward and backward of every micro-batch on the slowest stage (GEMMs,
    attention, memory-bound kernels, head and loss); recompute: the extra forward work of
    activation recomputation; tp, cp, ep, pp, dp: communication left exposed per dimension
    (dp includes ZeRO/FSDP gathers); bubble: pipeline fill and drain; optimizer: the
    optimizer step on the GPU (or the host, when offloaded); offload: PCIe/NVMe transfers.
    """

    compute: object
    recompute: object
    tp: object
    cp: object
    ep: object
    pp: object
    dp: object
    bubble: object
    optimizer: object
    offload: object


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StepTime:
    """The time of one optimizer step and the rates it gives.

    mfu = model_flops_per_step / (step_s · n_gpus · dense bf16 peak): model FLOPs without
    recomputation, attention over the full s x s scores (`flops` module docstring), whatever
    the training precision.
    """

    step_s: object
    tokens_per_step: object
    tokens_per_s: object
    tokens_per_gpu_per_s: object
    model_flops_per_step: object
    mfu: object
    breakdown: Breakdown


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StageWork:
    """Seconds of one micro-batch on one stage: compute, recompute, exposed communication,
    and the forward and backward compute that overlapped communication can hide behind."""

    compute: object
    recompute: object
    tp: object
    cp: object
    ep: object
    pp: object
    forward: object
    backward: object

    @property
    def total(self):
        return self.compute + self.recompute + self.tp + self.cp + self.ep + self.pp


def _on_own_axes(parts):
    """The fields of a dataclass of intermediate terms, each computed on the sub-grid of its
    own axes (`xp.materialize`) before the stages' terms broadcast them. (The atoms of
    `step_atoms` need no barrier: in the sweep's kernel they are its terms program's
    outputs.)"""
    return type(parts)(**{f.name: xp.materialize(getattr(parts, f.name))
                          for f in fields(parts)})


def tokens_per_microbatch(cfg: TrainConfig):
    """T = b·s/c."""
    return cfg.micro_batch * cfg.seq_len / cfg.cp


def tokens_per_step(cfg: TrainConfig):
    """G = b·s·m·D: every data-parallel replica's micro-batches (c ranks share a sequence)."""
    return cfg.micro_batch * cfg.seq_len * cfg.grad_accum * cfg.n_gpus / (
        cfg.tp * cfg.pp * cfg.cp)


def elementwise_elements(arch: Architecture, cfg: TrainConfig, moe: bool):
    """Elements one block's memory-bound forward kernels read and write per token on one
    rank, and the dropout-mask bytes (bool masks) besides.

    Two norms (read, write h), two fused bias-dropout-residual adds (read 2h, write h): 10h,
    split by t only with sequence parallelism; the activation (GeLU: read f, write f; SwiGLU:
    read 2f, write f) split by t; RoPE on q and k (read, write); in an MoE block the
    activation of every routed slot, the token permutation (dispatch and combine, each a read
    and a write of h per slot) and the router's softmax over E.
    """
    sp_div = xp.where(cfg.sp > 0, cfg.tp, 1)
    h = arch.hidden_size
    hidden = 10 * h / sp_div
    masks = arch.dropout * 2 * h / sp_div  # one byte per element each
    act_per_width = xp.where(arch.gated_mlp > 0, 3, 2)
    rotary = (1 - arch.learned_position_embeddings) * 2 * 2 * (
        arch.num_heads + arch.num_kv_heads) * xp.where(
        arch.mla > 0, arch.qk_rope_head_dim, arch.head_dim) / cfg.tp
    if not moe:
        return hidden + act_per_width * arch.ffn_hidden_size / cfg.tp + rotary, masks
    slots = arch.num_experts_per_tok * fl.capacity_padding(cfg)
    routed = slots * (act_per_width * arch.moe_ffn_hidden_size / expert_tp(cfg) + 4 * h)
    shared = act_per_width * arch.num_shared_experts * arch.shared_expert_ffn_hidden_size
    return hidden + routed + shared / cfg.tp + 2 * arch.num_experts + rotary, masks


def explicit_attention_bytes(arch: Architecture, cfg: TrainConfig):
    """HBM bytes per query token of explicit (non-flash) attention, forward: q, k, v and the
    output e·(a/t)·(2·d_qk + 2·d_v), and the s scores each QK^T writes, the softmax reads and
    writes and AV reads (4e), with dropout read and written again plus a bool mask (2e + 1)."""
    e = eff.activation_bytes(cfg)
    d_qk, d_v = fl.attention_widths(arch)
    heads = arch.num_heads / cfg.tp
    per_score = 4 * e + arch.dropout * (2 * e + 1)
    return heads * (e * (2 * d_qk + 2 * d_v) + fl.context_per_query(arch, cfg.seq_len)
                    * per_score)


@dataclass(frozen=True)
class BlockTimes:
    """Seconds of one block for one micro-batch: forward GEMMs (block linears, LoRA),
    attention core, memory-bound kernels, and its TP, CP, EP communication per pass."""

    gemm: object
    lora: object
    attention: object
    memory: object
    tp_comm: object
    cp_comm: object
    ep_comm: object

    @property
    def forward(self):
        return self.gemm + self.lora + self.attention + self.memory


def block_times(arch: Architecture, cfg: TrainConfig, hw: Hardware, moe: bool) -> BlockTimes:
    """One dense or MoE block, one micro-batch, forward; communication of one pass."""
    T = tokens_per_microbatch(cfg)
    tp, etp, ep = cfg.tp, expert_tp(cfg), cfg.ep
    padding = fl.capacity_padding(cfg)
    e, e_g = eff.activation_bytes(cfg), eff.block_gemm_operand_bytes(cfg)
    gemm_peak, peak = eff.block_gemm_peak(hw, cfg), eff.bf16_peak(hw, cfg)

    linear, act_elements, weight_elements = fl.block_linear_work(arch, moe, tp, etp, ep,
                                                                 padding)
    dequant = (cfg.finetune == QLORA) * QLORA_DEQUANT_BYTES_PER_WEIGHT * weight_elements
    gemm = eff.gemm_seconds(T * linear, e_g * (T * act_elements + weight_elements) + dequant,
                            hw, gemm_peak)
    lora = xp.where(cfg.finetune == FULL_FINETUNE, 0, eff.gemm_seconds(
        T * fl.block_lora_flops(arch, moe, cfg.lora_rank, cfg.lora_targets, tp, etp), 0, hw,
        peak))

    flash = cfg.flash_attention > 0
    keys = xp.where(flash, fl.causal_keys_per_query(arch, cfg.seq_len),
                    fl.context_per_query(arch, cfg.seq_len))
    attention_flops = T * fl.attention_core_flops(arch, keys, tp)
    attention = xp.where(
        flash, eff.flash_attention_seconds(attention_flops, hw, peak),
        eff.gemm_seconds(attention_flops, T * explicit_attention_bytes(arch, cfg), hw, peak))

    elements, mask_bytes = elementwise_elements(arch, cfg, moe)
    memory = eff.memory_seconds(T * (e * elements + mask_bytes), hw)

    activation = e * T * arch.hidden_size
    tp_comm = TP_COLLECTIVES_PER_PASS * comms.all_reduce_seconds(
        activation, tp, comms.ring_bandwidth(tp, 1, cfg, hw))
    d_qk, d_v = fl.attention_widths(arch)
    kv_width = xp.where(arch.mla > 0, arch.num_heads * (d_qk + d_v),
                        arch.num_kv_heads * 2 * arch.head_dim)
    kv_chunk = e * T * kv_width / tp
    cp_comm = (cfg.cp - 1) * kv_chunk / comms.ring_bandwidth(cfg.cp, tp, cfg, hw)
    slots_bytes = e * T * arch.num_experts_per_tok * padding * arch.hidden_size
    ep_comm = 0.0
    if moe:
        ep_comm = EP_ALL_TO_ALLS_PER_PASS * comms.all_to_all_seconds(
            slots_bytes, ep, etp, cfg, hw)
    return _on_own_axes(BlockTimes(gemm=gemm, lora=lora, attention=attention, memory=memory,
                                   tp_comm=tp_comm, cp_comm=cp_comm, ep_comm=ep_comm))


@dataclass(frozen=True)
class HeadTimes:
    forward: object
    total: object


def _head_seconds(arch: Architecture, cfg: TrainConfig, hw: Hardware) -> HeadTimes:
    """Head GEMM (all passes) and loss of one micro-batch on the stage holding the head."""
    T = tokens_per_microbatch(cfg)
    e = eff.activation_bytes(cfg)
    vocab = arch.vocab_size / cfg.tp
    forward = eff.gemm_seconds(
        T * fl.head_flops(arch, cfg.tp),
        e * (T * arch.hidden_size + arch.hidden_size * vocab + T * vocab), hw,
        eff.bf16_peak(hw, cfg))
    passes = xp.where(cfg.finetune == FULL_FINETUNE, 3, 2)
    per_logit = xp.where(cfg.fused_cross_entropy > 0, FUSED_CROSS_ENTROPY_BYTES_PER_LOGIT,
                         CROSS_ENTROPY_BYTES_PER_LOGIT)
    loss = eff.memory_seconds(T * vocab * per_logit, hw)
    return _on_own_axes(HeadTimes(forward, passes * forward + loss))


@dataclass(frozen=True)
class LayerTimes:
    """What every stage shares: one dense and one MoE block, and the head with the loss
    (forward, all passes)."""

    dense: BlockTimes
    moe: BlockTimes
    head_forward: object
    head: object


def layer_times(arch: Architecture, cfg: TrainConfig, hw: Hardware) -> LayerTimes:
    head = _head_seconds(arch, cfg, hw)
    return LayerTimes(dense=block_times(arch, cfg, hw, False),
                      moe=block_times(arch, cfg, hw, True), head_forward=head.forward,
                      head=head.total)


def stage_work(arch: Architecture, cfg: TrainConfig, hw: Hardware, overlap: comms.Overlap,
               stage, times: LayerTimes | None = None) -> StageWork:
    """One micro-batch's forward and backward on the first (`FIRST`) or last (`LAST`) stage,
    or on every stage of a `stage_axis`."""
    times = layer_times(arch, cfg, hw) if times is None else times
    layers, first_layer = stage_layers(arch, cfg, stage)
    trained = fl.trainable_blocks(arch, cfg, layers, first_layer)
    frozen = layers - trained
    n_moe = model.moe_layer_count(arch, layers, first_layer)
    n_moe_frozen = model.moe_layer_count(arch, frozen, first_layer)
    kinds = ((times.dense, layers - n_moe, frozen - n_moe_frozen),
             (times.moe, n_moe, n_moe_frozen))
    gemm_backward = fl.gemm_passes(cfg) - 1
    flash = cfg.flash_attention > 0
    attention_backward = xp.where(flash, FLASH_BACKWARD, 2)

    def total(select):
        """Σ over block kinds of select(times, all blocks, frozen blocks)."""
        return sum(select(bt, n, nf) for bt, n, nf in kinds)

    forward = total(lambda bt, n, nf: n * bt.forward)
    backward = total(lambda bt, n, nf: (n - nf) * (
        gemm_backward * bt.gemm + 2 * bt.lora + attention_backward * bt.attention
        + 2 * bt.memory))
    gemm_time = total(lambda bt, n, nf: n * bt.gemm + (n - nf) * gemm_backward * bt.gemm)
    attention_time = total(lambda bt, n, nf: (n + (n - nf) * attention_backward)
                           * bt.attention)

    # Full recompute runs the forward of the recomputed trainable blocks again (taken from
    # the front, as the memory model keeps them); selective recomputes the attention core.
    recomputed = xp.where(cfg.recompute_layers > 0,
                          xp.minimum(cfg.recompute_layers, layers), layers)
    share = xp.minimum(recomputed, trained) / xp.maximum(trained, 1)
    trained_forward = total(lambda bt, n, nf: (n - nf) * bt.forward)
    trained_attention = total(lambda bt, n, nf: (n - nf) * bt.attention)
    recompute = xp.where(cfg.recompute == FULL_RECOMPUTE, share * trained_forward,
                         xp.where(cfg.recompute == SELECTIVE, trained_attention, 0))
    recomputed_passes = xp.where(cfg.recompute == FULL_RECOMPUTE, share, 0)

    head_forward, head = times.head_forward, times.head
    with_head = holds_head(cfg, stage)
    forward = forward + with_head * head_forward
    compute = forward + backward + with_head * (head - head_forward)

    # A trained block communicates in its forward, its backward and its recomputed forward;
    # a frozen one in its forward only.
    tp_comm = total(lambda bt, n, nf: (n + (n - nf) * (1 + recomputed_passes)) * bt.tp_comm)
    cp_comm = total(lambda bt, n, nf: (n + (n - nf) * (2 + recomputed_passes)) * bt.cp_comm)
    ep_comm = total(lambda bt, n, nf: (n + (n - nf) * (1 + recomputed_passes)) * bt.ep_comm)
    tp = comms.exposed(tp_comm, gemm_time, overlap.tp)
    cp = comms.exposed(cp_comm, attention_time, overlap.cp)
    ep = comms.exposed(ep_comm, gemm_time, overlap.ep)

    # Stage boundaries: an activation forward and its gradient backward per model chunk,
    # T·h·e, split over the t ranks of a stage with sequence parallelism or by Megatron-LM's
    # scatter/gather optimization (Narayanan et al. 2021 §4.1: each TP rank sends 1/t through
    # its own NIC, the receiving node all-gathers it over NVLink).
    split = (cfg.sp > 0) | (cfg.framework == MEGATRON)
    boundary = eff.activation_bytes(cfg) * tokens_per_microbatch(cfg) * arch.hidden_size / (
        xp.where(split, cfg.tp, 1))
    pp_comm = (cfg.pp > 1) * 2 * cfg.vpp * boundary / comms.point_to_point_bandwidth(
        cfg.n_gpus, cfg, hw)
    pp = comms.exposed(pp_comm, compute, overlap.pp)
    return StageWork(compute=compute, recompute=recompute, tp=tp, cp=cp, ep=ep, pp=pp,
                     forward=forward, backward=backward)


def _gradient_reduce_bytes(cfg: TrainConfig):
    """Bytes per gradient element reduced across data parallelism: fp32 in Megatron-LM with
    bf16 (megatron/training/arguments.py: "bfloat16 requires gradient accumulation and
    all-reduce to be done in fp32") and in FSDP2 with an fp32 reduce dtype; else the
    gradient's own bytes."""
    fp32_reduce = ((cfg.framework == MEGATRON) & ((cfg.precision == BF16_MIXED)
                                                   | (cfg.precision == FP8_MIXED))) | (
        cfg.framework == FSDP)
    return xp.where(fp32_reduce, b.FP32_BYTES, b.gradient_bytes(cfg.precision))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StepComms:
    """One stage's per-step terms before they meet the compute they overlap with: the
    data-parallel collectives by when they run (`forward` and `backward` of every
    micro-batch; `step_reduce` behind the last backward, `step_gather` behind the first
    forward), whether there is a data-parallel group (`active`), the optimizer step, and the
    offload transfers (`offload_step` once per step, `offload_microbatch` every micro-batch
    behind its forward and backward)."""

    active: object
    forward: object
    backward: object
    step_reduce: object
    step_gather: object
    optimizer: object
    offload_step: object
    offload_microbatch: object


def step_comms(arch: Architecture, cfg: TrainConfig, hw: Hardware, stage,
               rank: RankParams | None = None) -> StepComms:
    """Data-parallel gradient reduction and parameter gathers, optimizer and offload, on one
    stage (or every stage of a `stage_axis`).

    Collectives by ZeRO stage (group: the N = n/(t·p) ranks holding the same dense parameters,
    n/(t_e·p·x) for routed experts): stage 0 all-reduces the gradients of the trainable
    parameters once per step; stages 1-2 reduce-scatter them and all-gather the updated
    parameters; stage 3 all-gathers all the weights before the forward and again before the
    backward of every micro-batch and reduce-scatters the gradients after it. Gradients are
    reduced every micro-batch in DeepSpeed from stage 2 (deepspeed/runtime/engine.py
    `allreduce_gradients`: "ZeRO stage >= 2 communicates during non gradient accumulation
    boundaries as well") and in FSDP (`fully_shard` syncs every backward by default), else once
    per step. Overlapped, a per-step reduction hides behind the last micro-batch's backward and
    a per-step gather behind the first forward; per-micro-batch gathers behind that
    micro-batch's forward and backward (`stage_step_seconds`).
    """
    shard = stage_shard(arch, cfg, stage, rank)
    g_dense, g_expert = dense_shard_degree(cfg), expert_shard_degree(cfg)
    etp = expert_tp(cfg)
    dense_bw = comms.ring_bandwidth(g_dense, cfg.tp, cfg, hw)
    expert_bw = comms.ring_bandwidth(g_expert, etp * cfg.ep, cfg, hw)
    grad_bytes = _gradient_reduce_bytes(cfg)
    w = b.weight_bytes(cfg.precision)
    dense_w, expert_w = weight_bytes(shard, cfg)

    def collective(fn, dense_bytes, expert_bytes):
        return fn(dense_bytes, g_dense, dense_bw) + fn(expert_bytes, g_expert, expert_bw)

    grads = (grad_bytes * shard.trainable_dense, grad_bytes * shard.trainable_expert)
    zero = cfg.zero_stage
    all_reduce = collective(comms.all_reduce_seconds, *grads)
    reduce_scatter = collective(comms.reduce_scatter_seconds, *grads)
    gather_updated = collective(comms.all_gather_seconds, w * shard.trainable_dense,
                                w * shard.trainable_expert)
    gather_all = collective(comms.all_gather_seconds, dense_w, expert_w)

    per_microbatch_grads = (zero >= 3) | ((zero >= 2) & (
        (cfg.framework == DEEPSPEED) | (cfg.framework == FSDP)))
    grad_comm = xp.where(zero == 0, all_reduce, reduce_scatter)
    # FSDP's SHARD_GRAD_OP (stage 2) gathers once per micro-batch and keeps the parameters
    # for the backward; stage 3 gathers before the forward and again before the backward;
    # stages 1-2 otherwise gather the updated parameters once per step.
    gathers = xp.where(zero >= 3, 2, xp.where((zero == 2) & (cfg.framework == FSDP), 1, 0))
    step_gather = xp.where((zero >= 1) & (gathers == 0), gather_updated, 0)

    # Optimizer: read the gradient, read and write the master copy and the states, write
    # the compute copy, and read the gradient once more for the norm (clipping).
    sharded = zero >= 1
    updated = (shard.trainable_dense / xp.where(sharded, g_dense, 1)
               + shard.trainable_expert / xp.where(sharded, g_expert, 1))
    states = b.optimizer_state_bytes(cfg.optimizer, cfg.precision, 1.0, 0.0)
    per_param = 2 * grad_bytes + 2 * (b.master_bytes(cfg.precision) + states) + w
    on_host = cfg.offload >= OFFLOAD_OPTIMIZER
    host_step = updated * per_param * gpus_on_node(cfg) / CPU_OPTIMIZER_BYTES_PER_S_PER_NODE
    optimizer = xp.where(on_host, host_step, eff.memory_seconds(updated * per_param, hw))

    # Offload: gradient partitions to the host and updated parameters back over PCIe every
    # step; with offloaded parameters every micro-batch copies its parameter shard to the GPU
    # for the forward and the backward gathers (prefetched with them); NVMe adds reading and
    # writing the offloaded states, and the parameter shards, through the node's drives.
    pcie, nvme = hw.pcie_bandwidth_bytes_per_s, hw.nvme_bandwidth_bytes_per_s
    node = gpus_on_node(cfg)
    shard_w = dense_w / g_dense + expert_w / g_expert
    step_copies = comms.transfer_seconds(updated * (grad_bytes + w), pcie)
    param_copies = comms.transfer_seconds(2 * shard_w, pcie)
    state_bytes = updated * (b.master_bytes(cfg.precision) + states)
    to_nvme = cfg.offload == OFFLOAD_NVME
    nvme_step = comms.transfer_seconds(to_nvme * 2 * state_bytes * node, nvme)
    nvme_params = comms.transfer_seconds(to_nvme * 2 * shard_w * node, nvme)
    return StepComms(
        active=(g_dense * g_expert > 1) * 1.0,
        forward=(gathers >= 1) * gather_all,
        backward=(gathers >= 2) * gather_all + per_microbatch_grads * grad_comm,
        step_reduce=(1 - per_microbatch_grads) * grad_comm,
        step_gather=step_gather,
        optimizer=optimizer,
        offload_step=xp.where(on_host, step_copies + nvme_step, 0),
        offload_microbatch=xp.where(cfg.offload >= OFFLOAD_PARAMS, param_copies + nvme_params,
                                    0),
    )


def stage_step_seconds(c: StepComms, work: StageWork, overlap: comms.Overlap, m):
    """(dp, optimizer, offload) seconds of one stage's step with m micro-batches: the
    per-micro-batch collectives behind that micro-batch's forward and backward, the per-step
    ones behind the last backward and the first forward."""
    per_microbatch = (comms.exposed(c.forward, work.forward, overlap.dp_param)
                      + comms.exposed(c.backward, work.backward, overlap.dp_grad))
    per_step = (comms.exposed(c.step_reduce, work.backward, overlap.dp_grad)
                + comms.exposed(c.step_gather, work.forward, overlap.dp_param))
    dp = xp.where(c.active > 0, m * per_microbatch + per_step, 0)
    offload = c.offload_step + m * comms.exposed(c.offload_microbatch,
                                                 work.forward + work.backward,
                                                 overlap.dp_param)
    return dp, c.optimizer, offload


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StepAtoms:
    """Every term of a step on the sub-grid of its own axes; `combine` makes the step of m
    micro-batches from them with a few operations per configuration (the sweep's kernel
    gathers them per configuration it evaluates, `engine/kernel.py`). `work` and `comms` hold
    the first and the last stage along every leaf's leading axis (`shard.end_stages`: x[0]
    and x[-1]; of size 1 where a term is the same on both, and everywhere when pp is the
    constant 1, where they are one stage)."""

    work: StageWork
    comms: StepComms
    overlap: comms.Overlap
    bubble_microbatches: object  # (p - 1)/v
    tokens_per_microbatch: object  # b·s·D: tokens of one micro-batch on every replica
    flops_per_token: object  # model FLOPs per token
    gpu_peak: object  # n · dense bf16 peak
    n_gpus: object
    grad_accum: object


def step_atoms(arch: Architecture, cfg: TrainConfig, hw: Hardware,
               overlap: comms.Overlap | None = None, rank: RankParams | None = None
               ) -> StepAtoms:
    """The step's `StepAtoms` on the first and the last stage (`rank`: `shard.rank_params`,
    when computed beforehand)."""
    overlap = comms.framework_overlap(cfg) if overlap is None else overlap
    stages = stage_axis(end_stages(cfg), (arch, cfg, hw))
    work = stage_work(arch, cfg, hw, overlap, stages, layer_times(arch, cfg, hw))

    def on_stages(tree):
        return jax.tree_util.tree_map(lambda a: on_stage_axis(a, stages), tree)

    return StepAtoms(
        work=on_stages(work),
        comms=on_stages(step_comms(arch, cfg, hw, stages, rank)),
        overlap=overlap,
        bubble_microbatches=xp.materialize(schedule.bubble_microbatches(cfg)),
        tokens_per_microbatch=xp.materialize(tokens_per_step(cfg.replace(grad_accum=1))),
        flops_per_token=xp.materialize(fl.model_flops_per_token(arch, cfg)),
        gpu_peak=cfg.n_gpus * hw.bf16_dense_flops,
        n_gpus=cfg.n_gpus,
        grad_accum=cfg.grad_accum,
    )


def combine(a: StepAtoms, m=None) -> StepTime:
    """The step of m micro-batches (default `a.grad_accum`) from its atoms:
    m·τ_max + (p - 1)/v·τ_fill (`schedule`) plus the data-parallel, optimizer and offload time
    of the most loaded stage."""
    m = a.grad_accum if m is None else m
    (first, first_comms), (last, last_comms) = (
        jax.tree_util.tree_map(lambda x, i=i: x[i], (a.work, a.comms)) for i in (0, -1))
    use_last = last.total > first.total
    slowest = {k: xp.where(use_last, getattr(last, k), getattr(first, k)) for k in SLOWEST}
    first_dp, first_opt, first_off = stage_step_seconds(first_comms, first, a.overlap, m)
    last_dp, last_opt, last_off = stage_step_seconds(last_comms, last, a.overlap, m)
    breakdown = Breakdown(
        **{k: m * v for k, v in slowest.items()},
        dp=xp.maximum(first_dp, last_dp),
        bubble=a.bubble_microbatches * first.total,
        optimizer=xp.maximum(first_opt, last_opt),
        offload=xp.maximum(first_off, last_off),
    )
    step_s = sum(jax.tree_util.tree_leaves(breakdown))
    tokens = m * a.tokens_per_microbatch
    model_flops = tokens * a.flops_per_token
    return StepTime(
        step_s=step_s,
        tokens_per_step=tokens,
        tokens_per_s=tokens / step_s,
        tokens_per_gpu_per_s=tokens / step_s / a.n_gpus,
        model_flops_per_step=model_flops,
        mfu=model_flops / (step_s * a.gpu_peak),
        breakdown=breakdown,
    )


SLOWEST = ("compute", "recompute", "tp", "cp", "ep", "pp")


def step_time(arch: Architecture, cfg: TrainConfig, hw: Hardware,
              overlap: comms.Overlap | None = None) -> StepTime:
    """The time of one optimizer step and its breakdown (see the module docstring):
    `combine(step_atoms(...))`.

    `overlap` defaults to what `cfg.framework` achieves (`comms.framework_overlap`); pass one
    to model other flags (the published runs of `sweep/timing/published.toml` do).
    """
    return combine(step_atoms(arch, cfg, hw, overlap))
