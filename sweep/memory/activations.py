"""Activation memory: the tensors autograd saves for the backward pass, derived from the shapes.

Notation: docs/notation.md (per micro-batch, on one GPU). Here mostly T = b·s/c tokens on a
rank, h, f, a, k, d, V the model's widths, heads and vocabulary, t and c the tensor- and
context-parallel degrees (sequence parallelism splits the rest by t), e the bytes of a saved
activation, e_r of the residual stream (fp32 under autocast: its fp32 parameters keep the
residual stream, norms and RoPE tables in fp32), e_m of a dropout mask (`native_dropout` keeps
a bool mask on a GPU; `at::dropout` on the CPU multiplies by a noise tensor of the input's
dtype), σ of a norm statistic, n_c the saved copies of a norm's output (under autocast one bf16
cast per linear reading it: q, k, v: 3; gate, up: 2), r the LoRA rank.

What each operation saves (PyTorch autograd, checked by `sweep/measure` with
`torch.autograd.graph.saved_tensors_hooks` on reference blocks):
linear: its input; LayerNorm: input, mean and rstd; RMSNorm (fused, as Apex/Transformer
Engine): input and fp32 rstd; GeLU, SiLU: input; ReLU: output (squared ReLU: the ReLU output,
which the square also saves, and the square); softmax: output; dropout: mask (and the product
its consumer saves); elementwise product of two activations: both; RoPE: only cos and sin;
scaled_dot_product_attention with FlashAttention: q, k, v, output and fp32 logsumexp (b·a·s);
explicit attention: q, k, v expanded to a heads, softmax output (b·a·s²), dropout mask and
output; cross-entropy: fp32 log-probabilities (T·V) and the int64 targets.

Frozen parameters change what is saved: nothing is saved before the first tensor that requires
grad (frozen leading blocks save nothing, a frozen embedding saves no ids), a frozen linear
saves no input of its own (under LoRA only the adapted linears' inputs, plus each adapter's
T·r input to lora_B), a frozen head no input.

For a GPT-3 block (explicit attention, dropout, GeLU at 4h, LayerNorm, e = 2, e_m = 1) this is
exactly Korthikanti et al. 2022, Table 2, sbh(34 + 5as/h), up to the per-token norm
statistics; with tensor parallelism sbh(10 + 24/t + 5as/(ht)), with sequence parallelism
sbh/t·(34 + 5as/h), with selective recompute sbh·34/t, with full recompute 2sbh.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import TrainConfig
from sweep.memory import bytes as b
from sweep.memory.shard import (
    FIRST,
    FULL,
    by_stage,
    holds_embedding,
    holds_head,
    stage_layers,
)
from sweep.model import (
    PARALLEL_SHARED_NORM,
    PARALLEL_TWO_NORMS,
    QK_NORM_HEAD,
    QK_NORM_NONE,
    SANDWICH_NORM,
    Architecture,
    lora_target_bit,
    moe_layer_count,
)

CPU = vocab.code("device", "cpu")
NO_RECOMPUTE, SELECTIVE, FULL_RECOMPUTE = vocab.codes("recompute", "none", "selective", "full")
AUTOCAST = vocab.code("precision", "bf16-autocast")
FP32 = vocab.code("precision", "fp32")
MEGATRON = vocab.code("framework", "megatron")
# Loss-side bytes per logit at the loss-gradient peak, beside the saved fp32 softmax (4 per
# logit). PyTorch's cross_entropy on fp32 logits (log_softmax + nll_loss): in
# LogSoftmaxBackward0 the gradient w.r.t. the log-probabilities (nll_loss_backward) and w.r.t.
# the logits (_log_softmax_backward_data) are alive, 8 (measured with MemTracker,
# sweep/measure/step.py). Megatron-LM's vocab_parallel_cross_entropy computes the gradient in
# place in the saved fp32 softmax and casts it to the 16-bit logits' dtype, 2
# (megatron/core/tensor_parallel/cross_entropy.py; the functional tests' peaks,
# reference/megatron).
PYTORCH_LOSS_GRADIENT_BYTES = 2 * b.FP32_BYTES
MEGATRON_LOSS_GRADIENT_BYTES = b.BF16_BYTES
# Megatron-LM's fused kernel (`--cross-entropy-loss-fusion`, megatron/core/fusions/
# fused_cross_entropy.py) builds the fp32 gradient anew in `calculate_gradients` before the
# 16-bit cast: 4 more per logit (the functional tests' peaks, reference/megatron).
MEGATRON_FUSED_LOSS_GRADIENT_BYTES = b.FP32_BYTES + b.BF16_BYTES
INT64_BYTES = 8  # token ids and routing indices
FP32_BYTES = b.FP32_BYTES
BOOL_BYTES = 1


@xp.reused
def element_bytes(cfg: TrainConfig):
    """e: bytes of a saved activation, 4 in fp32 training, else 2 (bf16/fp16; fp8 training
    keeps bf16 activations outside its GEMMs)."""
    return xp.where(cfg.precision == FP32, b.FP32_BYTES, b.BF16_BYTES)


@xp.reused
def residual_bytes(cfg: TrainConfig):
    """e_r: the residual stream's dtype, what norms and RoPE tables save: fp32 under autocast
    (the parameters and embedding output are fp32; autocast casts only per linear), else e."""
    return xp.where(cfg.precision == AUTOCAST, FP32_BYTES, element_bytes(cfg))


def norm_output_copies(cfg: TrainConfig, readers):
    """n_c: saved copies of a norm's output read by `readers` linears: under autocast each
    linear saves its own bf16 cast of the fp32 output, else they share one tensor."""
    return xp.where(cfg.precision == AUTOCAST, readers, 1)


@xp.reused
def mask_bytes(cfg: TrainConfig):
    """e_m: a bool mask per element on a GPU; the CPU keeps a noise tensor of dtype e."""
    return xp.where(cfg.device == CPU, element_bytes(cfg), BOOL_BYTES)


@xp.reused
def tokens(cfg: TrainConfig):
    """T = b·s/c, the tokens whose activations one rank keeps."""
    return cfg.micro_batch * cfg.seq_len / cfg.cp


@xp.reused
def norm_stat_bytes(arch: Architecture, cfg: TrainConfig):
    """Statistics of one norm per normalised vector: LayerNorm mean and rstd at σ, RMSNorm
    rstd in fp32."""
    layernorm_stat = xp.where(cfg.device == CPU, element_bytes(cfg), FP32_BYTES)
    return xp.where(arch.norm_bias > 0, 2 * layernorm_stat, FP32_BYTES)


@xp.reused
def norm_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """One norm: its input e_r·T·h plus per-token statistics (`norm_stat_bytes`)."""
    return n_tokens * (residual_bytes(cfg) * arch.hidden_size + norm_stat_bytes(arch, cfg))


@xp.reused
def _lora(cfg: TrainConfig):
    return cfg.finetune != FULL


@xp.reused
def _adapted(cfg: TrainConfig, *names):
    """1 where a linear named in `names` trains (full fine-tuning, or a LoRA target), else 0:
    only then does it save its own input."""
    hit = 0
    for name in names:
        hit = xp.maximum(hit, lora_target_bit(cfg.lora_targets, name))
    return xp.where(_lora(cfg), hit, 1)


def lora_adapter_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """Each adapter saves lora_A's output, lora_B's input: e·T·r per adapted linear of a
    block (q, k, v, o, gate, up, down as targeted; PEFT with lora_dropout = 0)."""
    targets = 0
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"):
        targets = targets + lora_target_bit(cfg.lora_targets, name)
    targets = targets + arch.gated_mlp * lora_target_bit(cfg.lora_targets, "gate_proj")
    return xp.where(_lora(cfg), element_bytes(cfg) * n_tokens * cfg.lora_rank * targets, 0)


@xp.reused
def post_norm_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """Sandwich norms (Gemma 2/3) add a norm on each sub-layer's output, which saves that
    output and its statistics (`norm_bytes`). Post-norms alone (OLMo 2) save as many bytes as
    pre-norms: the sub-layer reads the block input instead of a norm's output, and the norm
    saves the sub-layer's output instead of the block input."""
    return xp.where(arch.norm_placement == SANDWICH_NORM, norm_bytes(arch, cfg, n_tokens), 0)


def parallel_shared_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """What the MLP of a parallel block (Falcon, GPT-J) shares with its attention, so saves
    no second time: with one shared input norm, that norm and its output (e·T·h + stats +
    e·T·h); with two norms, the block input both norms save (e·T·h)."""
    block_input = element_bytes(cfg) * n_tokens * arch.hidden_size
    shared_norm = norm_bytes(arch, cfg, n_tokens) + block_input
    return xp.where(arch.parallel_attention == PARALLEL_SHARED_NORM, shared_norm,
                    xp.where(arch.parallel_attention == PARALLEL_TWO_NORMS, block_input, 0))


def qk_norm_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """q/k norms (Qwen3, Gemma 3, OLMo 2) save their inputs, the q and k projections' outputs,
    e·T·(a + k)·d/t, and statistics per head and token (`QK_NORM_HEAD`) or per token for
    each of the two whole-projection norms (`QK_NORM_FULL`). RoPE after them saves only its
    tables, so the normalised q and k are saved once, by the attention core."""
    heads = (arch.num_heads + arch.num_kv_heads) / cfg.tp
    vectors = xp.where(arch.qk_norm == QK_NORM_HEAD, heads, 2)
    per_token = element_bytes(cfg) * heads * arch.head_dim + vectors * norm_stat_bytes(arch, cfg)
    return xp.where(arch.qk_norm > QK_NORM_NONE, n_tokens * per_token, 0)


@xp.reused
def _sp_divisor(cfg: TrainConfig):
    """Tensors outside the TP regions are split by t only with sequence parallelism."""
    return xp.where(cfg.sp > 0, cfg.tp, 1)


def attention_core_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """What the attention core and the out-projection save, per TP rank (heads split by t).

    FlashAttention/SDPA: q, k, v, the output and the fp32 logsumexp, e·T·(2a + 2k)·d + 4·T·a;
    the out-projection's input is a view of that output (the kernel writes the (b, s, a, d)
    layout of its transposed query). With MLA (DeepSeek-V2/V3) q and k are d_nope + d_rope
    wide per head (192) and v and the output d_v (128), a heads each. Explicit: q, k and v
    expanded to a heads, the softmax output e·T·a·s, with dropout its mask and output
    (e_m + e)·T·a·s, and the out-projection's input, a copy of the (b, a, s, d) product:
    4·e·T·a·d + scores. Selective recompute (Korthikanti et al. 2022 §4.2) keeps only the
    core's inputs q, k, v and its output (the out-projection's input): e·T·(2a + 2k)·d.
    """
    e = element_bytes(cfg)
    heads, kv_heads = arch.num_heads / cfg.tp, arch.num_kv_heads / cfg.tp
    qk_width = xp.where(arch.mla > 0, arch.qk_nope_head_dim + arch.qk_rope_head_dim,
                        arch.head_dim)
    v_width = xp.where(arch.mla > 0, arch.v_head_dim, arch.head_dim)
    q_k_v_out = e * n_tokens * ((heads + kv_heads) * qk_width + (kv_heads + heads) * v_width)
    flash = q_k_v_out + FP32_BYTES * n_tokens * heads
    # The softmax output (fp32 under autocast: the mask and scores promote), the dropout mask,
    # and the probabilities' copy that probs @ v saves: the dropout output, or autocast's cast.
    autocast = cfg.precision == AUTOCAST
    copy = xp.where(autocast | (arch.dropout > 0), e, 0)
    scores = n_tokens * heads * cfg.seq_len * (residual_bytes(cfg) + arch.dropout
                                               * mask_bytes(cfg) + copy)
    # q and k, v expanded to a heads, and the out-projection's input, a copy of the (b, a, s, d)
    # product saved only when the projection trains (flash attention's output is saved by the
    # kernel anyway).
    explicit = e * n_tokens * heads * (2 * qk_width + (1 + _adapted(cfg, "o_proj")) * v_width)
    core = xp.where(cfg.flash_attention > 0, flash, explicit + scores)
    return xp.where(cfg.recompute == SELECTIVE, q_k_v_out, core)


def mla_latent_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """MLA's compressed q and kv (DeepSeek-V3 `DeepseekV3Attention`): each latent's RMSNorm saves
    its input and fp32 rstd and the up-projection saves the norm's output, 2·e·T·d_ckv + 4·T
    for the kv latent and, when q is compressed, 2·e·T·d_cq + 4·T for the q latent, replicated
    across t (the down projections are)."""
    e = element_bytes(cfg)
    q_latent = arch.q_lora_rank > 0
    per_token = 2 * e * (arch.q_lora_rank * q_latent + arch.kv_lora_rank) \
        + FP32_BYTES * (1 + q_latent)
    return xp.where(arch.mla > 0, n_tokens * per_token, 0)


def attention_block_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """Attention part of one block on one TP rank: the pre-norm, its output (the q/k/v
    projections' input), a sandwich post-norm and the residual dropout mask, which only SP
    splits by t, and the q/k norms and the core (`attention_core_bytes`)."""
    e = element_bytes(cfg)
    readers = xp.where(arch.mla > 0, 2, 3)  # q, k, v (MLA: q_a and kv_a) read the norm
    copies = norm_output_copies(cfg, readers) * _adapted(cfg, "q_proj", "k_proj", "v_proj")
    replicated = norm_bytes(arch, cfg, n_tokens) + copies * e * n_tokens * arch.hidden_size
    replicated = replicated + arch.dropout * mask_bytes(cfg) * n_tokens * arch.hidden_size
    replicated = replicated + post_norm_bytes(arch, cfg, n_tokens)
    return (replicated / _sp_divisor(cfg) + qk_norm_bytes(arch, cfg, n_tokens)
            + mla_latent_bytes(arch, cfg, n_tokens) + attention_core_bytes(arch, cfg, n_tokens))


def mlp_bytes(arch: Architecture, cfg: TrainConfig, n_tokens, inner):
    """A dense MLP of inner width `inner` on one TP rank (inner split by t).

    GeLU: the activation's input and output, 2·e·T·f/t. SwiGLU: the gate (SiLU's input), SiLU's
    output and the up projection (the product's operands) and the product (down's input),
    4·e·T·f/t; Megatron-LM's fused SwiGLU (`SwiGLUFunction`, megatron/core/fusions/
    fused_bias_swiglu.py, on by default) saves the fused fc1 output 2f and fc2 its output f:
    3·e·T·f/t (`mlp_inner_tensors`). The down projection's input is saved only when it trains.
    """
    tensors = mlp_inner_tensors(arch, cfg) - 1 + _adapted(cfg, "down_proj")
    return n_tokens * tensors * element_bytes(cfg) * inner / cfg.tp


@xp.reused
def mlp_inner_tensors(arch: Architecture, cfg: TrainConfig):
    """Saved inner-width tensors per token of a (dense or expert) MLP: 4 for SwiGLU as PyTorch
    runs it, 3 with Megatron-LM's fused SwiGLU, 2 for GeLU."""
    gated = xp.where(cfg.framework == MEGATRON, 3, 4)
    return xp.where(arch.gated_mlp > 0, gated, 2)


def mlp_input_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """The pre-MLP norm's output, saved by the gate and up projections (n_c copies under
    autocast) when they train."""
    readers = 1 + arch.gated_mlp
    copies = norm_output_copies(cfg, readers) * _adapted(cfg, "gate_proj", "up_proj")
    return copies * element_bytes(cfg) * n_tokens * arch.hidden_size


def mlp_block_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """MLP part of one dense block: pre-norm, its output, the MLP, residual dropout mask, a
    sandwich post-norm, less what a parallel block shares with its attention."""
    replicated = norm_bytes(arch, cfg, n_tokens) + mlp_input_bytes(arch, cfg, n_tokens)
    replicated = replicated + arch.dropout * mask_bytes(cfg) * n_tokens * arch.hidden_size
    replicated = replicated + _norm_changes_bytes(arch, cfg, n_tokens)
    return replicated / _sp_divisor(cfg) + mlp_bytes(arch, cfg, n_tokens, arch.ffn_hidden_size)


def routed_slots(arch: Architecture, cfg: TrainConfig, n_tokens):
    """Token-expert pairs processed: T·E_k dropless, or padded to cf·T·E_k."""
    slots = n_tokens * arch.num_experts_per_tok
    return xp.where(cfg.capacity_factor > 0, slots * xp.maximum(cfg.capacity_factor, 1), slots)


def moe_block_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """MoE part of one block (dropless by default; capacity_factor pads the routed slots).

    Router: its input (the pre-MLP norm's output) and the fp32 softmax over E, the top-k indices
    (int64) and weights (fp32) with their per-token sum: e·T·h + T·(4E + 8·E_k + 4·E_k + 4).
    Each routed token-expert pair as Mixtral's sparse MoE block runs it: its gathered input, the
    expert's output and the weighted output (kept by `index_add`) 3·e·h, its token and slot
    indices (one int64 (pairs, 2) `nonzero` storage) 2·8, its routing weight e, and the expert's
    MLP (4·e·f_e/t_e for SwiGLU); as Megatron-LM's grouped experts run it
    (megatron/core/transformer/moe/experts.py, the probabilities applied in the fused
    activation, `weighted_bias_swiglu_impl`, and unpermutation by index): the fc1 input e·h, the
    MLP (3·e·f_e/t_e) and the fp32 probability. With expert parallelism the all-to-all brings
    each rank as many pairs as it sends (balanced routing). Shared experts save as a dense MLP
    of width E_s·f_s.
    """
    e = element_bytes(cfg)
    top_k = arch.num_experts_per_tok
    replicated = norm_bytes(arch, cfg, n_tokens) + mlp_input_bytes(arch, cfg, n_tokens)
    replicated = replicated + _norm_changes_bytes(arch, cfg, n_tokens)
    router = n_tokens * (
        FP32_BYTES * arch.num_experts + (INT64_BYTES + FP32_BYTES) * top_k + FP32_BYTES
    )
    slots = routed_slots(arch, cfg, n_tokens)
    expert_tp = xp.where(cfg.etp > 0, cfg.etp, cfg.tp)
    expert_mlp = mlp_inner_tensors(arch, cfg) * e * arch.moe_ffn_hidden_size / expert_tp
    pytorch_slot = 3 * e * arch.hidden_size + 2 * INT64_BYTES + e
    megatron_slot = e * arch.hidden_size + FP32_BYTES
    per_slot = xp.where(cfg.framework == MEGATRON, megatron_slot, pytorch_slot) + expert_mlp
    shared = mlp_bytes(
        arch, cfg, n_tokens, arch.num_shared_experts * arch.shared_expert_ffn_hidden_size
    )
    return (replicated + router) / _sp_divisor(cfg) + slots * per_slot + shared


def _norm_changes_bytes(arch: Architecture, cfg: TrainConfig, n_tokens):
    """The MLP side's sandwich post-norm less what a parallel block shares."""
    return post_norm_bytes(arch, cfg, n_tokens) - parallel_shared_bytes(arch, cfg, n_tokens)


@dataclass(frozen=True)
class BlockBytes:
    """Saved bytes of one dense and one MoE block for one micro-batch (`block_bytes`)."""

    dense: object
    moe: object

    def of(self, moe):
        """The block's bytes: MoE where `moe` > 0, else dense."""
        return xp.where(moe > 0, self.moe, self.dense)


def block_bytes(arch: Architecture, cfg: TrainConfig) -> BlockBytes:
    """Saved bytes of a dense and an MoE block, one micro-batch: the attention part, the
    dense MLP or the MoE part, and the LoRA adapters' inputs."""
    n_tokens = tokens(cfg)
    attention = attention_block_bytes(arch, cfg, n_tokens)
    adapters = lora_adapter_bytes(arch, cfg, n_tokens)
    return BlockBytes(attention + mlp_block_bytes(arch, cfg, n_tokens) + adapters,
                      attention + moe_block_bytes(arch, cfg, n_tokens) + adapters)


def layer_bytes(arch: Architecture, cfg: TrainConfig, moe):
    """Saved bytes of one block (dense when `moe` is 0, MoE when 1), one micro-batch."""
    return block_bytes(arch, cfg).of(moe)


def layer_input_bytes(arch: Architecture, cfg: TrainConfig):
    """A block's input e_r·T·h (/t with SP): all that full recompute keeps of a block."""
    return residual_bytes(cfg) * tokens(cfg) * arch.hidden_size / _sp_divisor(cfg)


def embedding_bytes(arch: Architecture, cfg: TrainConfig):
    """Input side of the first stage: int64 token ids, learned position ids, embedding dropout
    mask (as Megatron-LM's `compute_activation_memory`: 8sbp + sbhp); nothing when the
    embedding is frozen (LoRA/QLoRA, frozen leading blocks): nothing there requires grad."""
    n_tokens = tokens(cfg)
    ids = INT64_BYTES * n_tokens + arch.learned_position_embeddings * INT64_BYTES * cfg.seq_len
    dropout = arch.dropout * mask_bytes(cfg) * n_tokens * arch.hidden_size / _sp_divisor(cfg)
    return xp.where(embedding_trains(cfg), ids + dropout, 0)


def embedding_trains(cfg: TrainConfig):
    return (cfg.finetune == FULL) & (cfg.frozen_layers <= 0)


def rope_bytes(arch: Architecture, cfg: TrainConfig):
    """cos and sin tables (s x d, dtype e_r) shared by every block: 2·e_r·s·d, once per
    stage."""
    rotary = 1 - arch.learned_position_embeddings
    d = xp.where(arch.mla > 0, arch.qk_rope_head_dim, arch.head_dim)
    return rotary * 2 * residual_bytes(cfg) * cfg.seq_len / cfg.cp * d


def head_bytes(arch: Architecture, cfg: TrainConfig):
    """Output side of the last stage: final norm and its output (the head's input; not saved
    when the head is frozen)."""
    n_tokens = tokens(cfg)
    head_input = xp.where(_lora(cfg), 0, element_bytes(cfg) * n_tokens * arch.hidden_size)
    return (norm_bytes(arch, cfg, n_tokens) + head_input) / _sp_divisor(cfg)


def logits_saved_bytes(arch: Architecture, cfg: TrainConfig):
    """Cross-entropy on fp32 logits: the log-probabilities 4·T·V/t, the int64 targets 8·T and
    `nll_loss`'s fp32 total-weight scalar.

    A fused/chunked cross-entropy (`fused_cross_entropy`) keeps no V-sized tensor, only the
    fp32 logsumexp per token.
    """
    n_tokens = tokens(cfg)
    log_probs = FP32_BYTES * n_tokens * arch.vocab_size / cfg.tp
    kept = xp.where(cfg.fused_cross_entropy > 0, FP32_BYTES * n_tokens, log_probs)
    return kept + INT64_BYTES * n_tokens + FP32_BYTES


def logits_gradient_bytes(arch: Architecture, cfg: TrainConfig):
    """The loss gradient's temporaries beside the saved softmax at the start of backward, per
    logit T·V/t: 8 with PyTorch's cross_entropy, 2 with Megatron-LM's vocab-parallel one, 6
    with its fused kernel (`PYTORCH_LOSS_GRADIENT_BYTES`, `MEGATRON_LOSS_GRADIENT_BYTES`,
    `MEGATRON_FUSED_LOSS_GRADIENT_BYTES`); none with a chunked loss (`fused_cross_entropy`)."""
    megatron = xp.where(cfg.loss_fusion > 0, MEGATRON_FUSED_LOSS_GRADIENT_BYTES,
                        MEGATRON_LOSS_GRADIENT_BYTES)
    per_logit = xp.where(cfg.framework == MEGATRON, megatron, PYTORCH_LOSS_GRADIENT_BYTES)
    grad = per_logit * tokens(cfg) * arch.vocab_size / cfg.tp
    return xp.where(cfg.fused_cross_entropy > 0, 0, grad)


def in_flight_cap(cfg: TrainConfig, stage=FIRST):
    """m_cap such that the first, middle or last pipeline stage holds min(m_cap, m)
    micro-batches' activations at once (in whole-stage equivalents), m = grad_accum
    micro-batches per step, from Megatron-LM's warm-up counts
    (megatron/core/pipeline_parallel/schedules.py, `get_pp_rank_microbatches` at
    d98e8a64ddf34856e74b24714e3bedb2f5a39553). Rank i of p: 1F1B warms up p - i - 1
    micro-batches, so m_cap = p - i: p on the first stage, p - 1 on the second, 1 on the last.
    Interleaved with v model chunks of L/(p·v) layers the rank holds
    min(2·(p - i - 1) + (v - 1)·p + 1, m·v) chunks: m_cap = (2·(p - i - 1) + (v - 1)·p + 1)/v,
    p + (p - 1)/v stages on the first (Korthikanti et al. 2022 §4.2.3: p·(1 + (p - 1)/(p·v)))
    and ((v - 1)·p + 1)/v on the last. Without pipelining m_cap = 1."""
    p, v = cfg.pp, cfg.vpp
    rank_behind = by_stage(stage, p - 1, p - 2, 0)  # p - i - 1, i = 0, 1, p - 1
    return xp.where(v > 1, (2 * rank_behind + (v - 1) * p + 1) / v, rank_behind + 1)


def in_flight_microbatches(cfg: TrainConfig, stage=FIRST):
    """Micro-batches in flight on a pipeline stage: min(`in_flight_cap`, grad_accum)."""
    return xp.minimum(in_flight_cap(cfg, stage), cfg.grad_accum)


def blocks_bytes(arch: Architecture, cfg: TrainConfig, layers, first_layer,
                 blocks: BlockBytes | None = None):
    """Saved bytes of `layers` blocks from `first_layer`, one micro-batch, with recompute.

    Full recompute keeps each recomputed block's input; `recompute_layers` (0 = all) blocks of
    the stage are recomputed, the rest keep everything. Frozen leading blocks save nothing:
    only the blocks from the first trainable one count. `blocks`: `block_bytes`, when
    already computed.
    """
    frozen = xp.minimum(xp.maximum(cfg.frozen_layers - first_layer, 0), layers)
    first_layer, layers = first_layer + frozen, layers - frozen
    n_moe = moe_layer_count(arch, layers, first_layer)
    blocks = block_bytes(arch, cfg) if blocks is None else blocks
    dense_block, moe_block = blocks.dense, blocks.moe
    full = (layers - n_moe) * dense_block + n_moe * moe_block
    recomputed = xp.where(cfg.recompute_layers > 0, xp.minimum(cfg.recompute_layers, layers),
                          layers)
    # Recomputed blocks are taken from the front; MoE blocks follow any dense prefix.
    dense_recomputed = xp.minimum(recomputed, layers - n_moe)
    kept = full - dense_recomputed * dense_block - (recomputed - dense_recomputed) * moe_block
    with_full_recompute = recomputed * layer_input_bytes(arch, cfg) + kept
    return xp.where(cfg.recompute == FULL_RECOMPUTE, with_full_recompute, full)


def recompute_working_bytes(arch: Architecture, cfg: TrainConfig, layers, first_layer,
                            blocks: BlockBytes | None = None):
    """During backward a fully recomputed block holds all its activations again, one block at
    a time: the largest block's saved bytes."""
    n_moe = moe_layer_count(arch, layers, first_layer)
    blocks = block_bytes(arch, cfg) if blocks is None else blocks
    largest = blocks.of(n_moe)
    return xp.where(cfg.recompute == FULL_RECOMPUTE, largest, 0)


def model_saved_bytes(arch: Architecture, cfg: TrainConfig):
    """Everything one forward of the whole model saves, for one micro-batch on one rank with
    no pipelining: embedding side, every block (with recompute), RoPE tables, final norm and
    head input, and the loss's saved tensors. What `sweep/measure` counts."""
    return (
        embedding_bytes(arch, cfg) - unsaved_first_norm_bytes(arch, cfg)
        + blocks_bytes(arch, cfg, arch.num_layers, 0)
        + rope_bytes(arch, cfg)
        + head_bytes(arch, cfg)
        + logits_saved_bytes(arch, cfg)
    )


def mtp_bytes(arch: Architecture, cfg: TrainConfig, blocks: BlockBytes | None = None):
    """Multi-token-prediction modules on the last stage (DeepSeek-V3; Megatron-LM
    `--mtp-num-layers`), each: its embedding and hidden norms (enorm, hnorm) and its head norm,
    the projection's input (the two normed halves, 2·e·T·h), a block of the last block's kind
    and the head's input."""
    n_tokens = tokens(cfg)
    moe = moe_layer_count(arch, 1, arch.num_layers - 1)
    sides = 3 * (norm_bytes(arch, cfg, n_tokens)
                 + element_bytes(cfg) * n_tokens * arch.hidden_size) / _sp_divisor(cfg)
    blocks = block_bytes(arch, cfg) if blocks is None else blocks
    per_module = blocks.of(moe) + sides
    return arch.mtp_layers * per_module


def unsaved_first_norm_bytes(arch: Architecture, cfg: TrainConfig):
    """Under LoRA the model's first norm saves nothing: its input (the frozen embedding's
    output) and its weight need no gradient."""
    return xp.where(_lora(cfg), norm_bytes(arch, cfg, tokens(cfg)) / _sp_divisor(cfg), 0)


def stage_microbatch_bytes(arch: Architecture, cfg: TrainConfig, stage,
                           blocks: BlockBytes | None = None):
    """Saved activations of one micro-batch in flight on a pipeline stage: its blocks, the
    embedding side on the first stage, the RoPE tables."""
    layers, first_layer = stage_layers(arch, cfg, stage)
    with_embedding = holds_embedding(cfg, stage)
    return (blocks_bytes(arch, cfg, layers, first_layer, blocks)
            + with_embedding * (embedding_bytes(arch, cfg) - unsaved_first_norm_bytes(arch, cfg))
            + rope_bytes(arch, cfg))


def stage_head_bytes(arch: Architecture, cfg: TrainConfig, stage,
                     blocks: BlockBytes | None = None):
    """Saved once, on the stage holding the head: the final norm and head input, MTP modules."""
    return holds_head(cfg, stage) * (head_bytes(arch, cfg) + mtp_bytes(arch, cfg, blocks))


def stage_saved_bytes(arch: Architecture, cfg: TrainConfig, stage):
    """Saved activations the first (`stage` 0) or last (1) pipeline stage holds at the start
    of backward: `stage_microbatch_bytes` for every micro-batch in flight
    (`in_flight_microbatches`) and `stage_head_bytes`. The loss side is `stage_loss_bytes`."""
    return (in_flight_microbatches(cfg, stage) * stage_microbatch_bytes(arch, cfg, stage)
            + stage_head_bytes(arch, cfg, stage))


def stage_loss_bytes(arch: Architecture, cfg: TrainConfig, stage):
    """Loss-side tensors at the start of backward on the stage holding the head: the saved
    softmax and targets of the main loss and of each MTP module's loss, and one loss
    gradient's temporaries (`logits_gradient_bytes`)."""
    saved = (1 + arch.mtp_layers) * logits_saved_bytes(arch, cfg)
    return holds_head(cfg, stage) * (saved + logits_gradient_bytes(arch, cfg))


def stage_recompute_bytes(arch: Architecture, cfg: TrainConfig, stage,
                          blocks: BlockBytes | None = None):
    """Full recompute rebuilds one block's activations at a time during backward, after the
    loss gradient is freed (`recompute_working_bytes`)."""
    layers, first_layer = stage_layers(arch, cfg, stage)
    return recompute_working_bytes(arch, cfg, layers, first_layer, blocks)
