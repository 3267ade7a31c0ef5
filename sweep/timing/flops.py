"""FLOPs of training, derived per GEMM from the Linear inventory of `sweep/model.py`.

Notation: docs/notation.md (per micro-batch, on one GPU). Here mostly T = b·s/c tokens of a
micro-batch on a rank, h hidden size, V vocabulary, a and k query and key/value heads, d_qk and
d_v the head widths of QK^T and of AV, t and t_e the tensor- and expert-tensor-parallel degrees
(a Linear is split as `split` says), E routed experts, E_k of them per token (top-k), cf the
capacity factor, r the LoRA rank, L blocks, L_frozen leading frozen blocks, s_k the keys one
query attends (s as the papers count, or what a kernel computes), G tokens per step.

A GEMM of a (rows x inner) by an (inner x cols) matrix costs 2·rows·inner·cols FLOPs (one
multiply and one add per term). One linear layer in -> out applied to T tokens: forward
2·T·in·out, backward the same twice (input gradient "dgrad" and weight gradient "wgrad").
Routed experts: each token passes through E_k of the E experts, so an expert linear counts
E_k/E of its `count` per token. Attention core per query: QK^T 2·s_k·a·d_qk and AV
2·s_k·a·d_v; logits 2·h·V per token.

For a GPT-3 block (MHA, GeLU 4h, L blocks, tied head) this reduces to Narayanan et al. 2021
(arXiv 2104.04473, §5.1, eq. 3, written with G = batch·s tokens per step):
72·G·L·h²·(1 + s/(6h) + V/(12·L·h)) without and 96·G·L·h²·(1 + s/(6h) + V/(16·L·h)) with full
activation recomputation (tests check both).

Model FLOPs (what MFU divides by; Korthikanti et al. 2022, arXiv 2205.05198, §6.1): the FLOPs
the training step needs, without recomputation; attention counted with s_k = s, the full s²
score matrix, as Narayanan et al. 2021 eq. 3, Korthikanti et al. 2022, PaLM (Chowdhery et
al. 2022, App. B: 6Ψ + 12·L·a·d·s per token) and Megatron-LM up to core_r0.8.0
(megatron/training/training.py `num_floating_point_operations`, commit baf94af3) count it; the
current Megatron-LM (commit d98e8a64) halves the s² term for the causal mask. Executed FLOPs
(what the time model spends): causal attention computes s_k ≈ (s + 1)/2 keys per query in a
FlashAttention kernel (blocks above the diagonal are skipped) and all s with an explicit
softmax (the mask is applied after QK^T). Frozen blocks need no weight gradients, and no input
gradients either below the first trainable block; LoRA needs input gradients through the
frozen weights but weight gradients of the adapters only.
"""

from __future__ import annotations

from sweep import model, xp
from sweep.config import TrainConfig
from sweep.model import Architecture

FMA_FLOPS = 2  # one multiply-accumulate = 2 FLOPs
FULL, LORA = 0, 1  # codes of vocabulary.FINETUNES (qlora = 2 trains adapters like lora)


def _active_per_token(lin: model.Linear, arch: Architecture, padding=1.0):
    """How many times one token passes through `lin`: its count, or E_k/E of it for routed
    experts (times the capacity padding when executed with a capacity factor)."""
    if not lin.expert:
        return lin.count
    return lin.count * arch.num_experts_per_tok / xp.maximum(arch.num_experts, 1) * padding


def capacity_padding(cfg: TrainConfig):
    """Token slots an expert computes per routed token: cf with a capacity factor (padded
    to capacity, as Megatron-LM's `--moe-pad-expert-input-to-capacity`), 1 when dropless."""
    return xp.where(cfg.capacity_factor > 0, xp.maximum(cfg.capacity_factor, 1), 1)


def _linear_terms(arch: Architecture, moe: bool, tp, etp, ep, padding=1.0):
    """Per linear of a block on one rank: (FLOPs per token, operand elements per token,
    weight elements per call), the last two for the GEMM's memory traffic."""
    terms = []
    for lin in model.block_linears(arch, moe):
        rows, cols = lin.dims_on_rank(etp if lin.expert else tp)
        active = _active_per_token(lin, arch, padding)
        terms.append((FMA_FLOPS * rows * cols * active, (rows + cols) * active,
                      rows * cols * lin.count_on_rank(ep)))
    return terms


def block_linear_work(arch: Architecture, moe: bool, tp=1, etp=1, ep=1, padding=1.0):
    """(forward FLOPs per token, activation elements per token, weight elements) of every
    linear of one dense (moe False) or MoE block on one rank: Σ 2·in·out·(tokens through
    it), Σ (in + out)·(tokens through it) its GEMMs read and write, Σ in·out of the weights
    the rank holds; in and out as the rank holds them."""
    terms = _linear_terms(arch, moe, tp, etp, ep, padding)
    return tuple(sum(term[i] for term in terms) for i in range(3))


def block_linear_flops(arch: Architecture, moe: bool, tp=1, etp=1, padding=1.0):
    """Forward FLOPs per token of the block's linears on one rank (`block_linear_work`)."""
    return block_linear_work(arch, moe, tp, etp, 1, padding)[0]


def block_lora_flops(arch: Architecture, moe: bool, rank, target_mask, tp=1, etp=1):
    """Forward FLOPs per token of the LoRA adapters of one block: 2·r·(in + out) per
    targeted linear and token through it (lora_A: in -> r, lora_B: r -> out)."""
    total = 0.0
    for lin in model.block_linears(arch, moe):
        if lin.lora_target is None:
            continue
        rows, cols = lin.dims_on_rank(etp if lin.expert else tp)
        total = total + (model.lora_target_bit(target_mask, lin.lora_target) * FMA_FLOPS
                         * rank * (rows + cols) * _active_per_token(lin, arch))
    return total


def attention_widths(arch: Architecture):
    """(d_qk, d_v): head widths of QK^T and AV (MLA: d_nope + d_rope and d_v)."""
    d_qk = xp.where(arch.mla > 0, arch.qk_nope_head_dim + arch.qk_rope_head_dim, arch.head_dim)
    d_v = xp.where(arch.mla > 0, arch.v_head_dim, arch.head_dim)
    return d_qk, d_v


def context_per_query(arch: Architecture, seq_len):
    """Keys one query attends in the model-FLOPs count: s, or the window s_w if smaller."""
    window = xp.where(arch.sliding_window > 0, arch.sliding_window, seq_len)
    return xp.minimum(seq_len, window)


def causal_keys_per_query(arch: Architecture, seq_len):
    """Mean keys a causal query attends: (1/s)·Σ_i min(i, s_w) = (s + 1)/2 without a window,
    s_w - s_w·(s_w - 1)/(2s) with a window s_w < s. What a FlashAttention kernel computes."""
    w = context_per_query(arch, seq_len)
    return w - w * (w - 1) / (2 * seq_len)


def attention_core_flops(arch: Architecture, keys_per_query, tp=1):
    """Forward FLOPs per query token of QK^T and AV on one rank (heads split by t):
    2·s_k·(a/t)·(d_qk + d_v)."""
    d_qk, d_v = attention_widths(arch)
    return FMA_FLOPS * keys_per_query * arch.num_heads / tp * (d_qk + d_v)


def head_flops(arch: Architecture, tp=1):
    """Forward FLOPs per token of the output projection: 2·h·V/t (vocab-parallel)."""
    return FMA_FLOPS * arch.hidden_size * arch.vocab_size / tp


def trainable_blocks(arch: Architecture, cfg: TrainConfig, layers=None, first_layer=0):
    """Blocks among `layers` from `first_layer` after the frozen prefix (all when
    L_frozen = 0)."""
    layers = arch.num_layers if layers is None else layers
    frozen = xp.minimum(xp.maximum(cfg.frozen_layers - first_layer, 0), layers)
    return layers - frozen


def gemm_passes(cfg: TrainConfig):
    """GEMM passes of a trainable block's base weights: forward, dgrad and wgrad (3), or
    forward and dgrad only under LoRA/QLoRA (the adapters carry the weight gradients)."""
    return xp.where(cfg.finetune == FULL, 3, 2)


def _by_block_kind(arch: Architecture, layers, first_layer, per_block):
    """Σ over the dense and MoE blocks among `layers` of `per_block(moe)`."""
    n_moe = model.moe_layer_count(arch, layers, first_layer)
    return (layers - n_moe) * per_block(False) + n_moe * per_block(True)


def model_flops_per_token(arch: Architecture, cfg: TrainConfig):
    """Model FLOPs per trained token (the whole model, no recomputation, attention over s).

    Trainable blocks: 3 passes of the linears (2 under LoRA) plus 3 of the adapters, and the
    attention core forward and backward (3x); frozen leading blocks: forward only; the head
    3 passes when trained, 2 (forward, dgrad) when frozen under LoRA.
    """
    keys = context_per_query(arch, cfg.seq_len)
    layers = arch.num_layers
    trained = trainable_blocks(arch, cfg)
    frozen = layers - trained
    linear = {moe: block_linear_flops(arch, moe) for moe in (False, True)}
    adapters = {moe: block_lora_flops(arch, moe, cfg.lora_rank, cfg.lora_targets)
                for moe in (False, True)}
    linear_all = _by_block_kind(arch, layers, 0, linear.get)
    linear_frozen = _by_block_kind(arch, frozen, 0, linear.get)
    lora = xp.where(cfg.finetune == FULL, 0, _by_block_kind(arch, layers, 0, adapters.get))
    attention = attention_core_flops(arch, keys)
    linear_trained = linear_all - linear_frozen
    head_passes = xp.where(cfg.finetune == FULL, 3, 2)
    return (
        gemm_passes(cfg) * linear_trained + linear_frozen + 3 * lora
        + (3 * trained + frozen) * attention
        + head_passes * head_flops(arch)
    )


def model_flops_per_step(arch: Architecture, cfg: TrainConfig, tokens_per_step):
    """Model FLOPs of one optimizer step: tokens per step times `model_flops_per_token`."""
    return tokens_per_step * model_flops_per_token(arch, cfg)


FLASH_BACKWARD = 2.5  # FlashAttention's backward FLOPs / forward (it recomputes QK^T)
NO_RECOMPUTE, SELECTIVE, FULL_RECOMPUTE = 0, 1, 2  # codes of vocabulary.RECOMPUTES


def recomputed_share(arch: Architecture, cfg: TrainConfig):
    """Share of the blocks full recomputation reruns: `recompute_layers` per stage (0: all)."""
    per_stage = arch.num_layers / cfg.pp
    blocks = xp.where(cfg.recompute_layers > 0, xp.minimum(cfg.recompute_layers, per_stage),
                      per_stage)
    return blocks / per_stage


def hardware_flops_per_token(arch: Architecture, cfg: TrainConfig):
    """FLOPs the GPUs execute per trained token (what HFU divides by).

    Model FLOPs, with the attention core over the keys the kernel computes (causal: about
    half of s with FlashAttention, all s without), FlashAttention's backward at 2.5x its
    forward, plus recomputation: full reruns the forward of the recomputed trainable blocks,
    selective the forward of their attention core. For a GPT-3 block with explicit attention
    and full recomputation this is Narayanan et al. 2021 eq. 3,
    96·G·L·h²·(1 + s/(6h) + V/(16·L·h)) per step.
    """
    flash = cfg.flash_attention > 0
    keys = xp.where(flash, causal_keys_per_query(arch, cfg.seq_len),
                    context_per_query(arch, cfg.seq_len))
    attention = attention_core_flops(arch, keys)
    attention_passes = xp.where(flash, 1 + FLASH_BACKWARD, 3)
    trained = trainable_blocks(arch, cfg)
    frozen = arch.num_layers - trained
    full_attention = attention_core_flops(arch, context_per_query(arch, cfg.seq_len))
    model = model_flops_per_token(arch, cfg)
    executed = model + (trained * attention_passes + frozen) * attention - (
        3 * trained + frozen) * full_attention
    forward = {moe: block_linear_flops(arch, moe) + xp.where(
        cfg.finetune == FULL, 0, block_lora_flops(arch, moe, cfg.lora_rank, cfg.lora_targets))
        for moe in (False, True)}
    trained_forward = _by_block_kind(arch, trained, frozen, forward.get) + trained * attention
    recompute = xp.where(cfg.recompute == FULL_RECOMPUTE,
                         recomputed_share(arch, cfg) * trained_forward,
                         xp.where(cfg.recompute == SELECTIVE, trained * attention, 0))
    return executed + recompute
