"""Inference (serving) memory: the KV cache and the decode-step workspace.

`micro_batch` is the number of concurrent sequences and `seq_len` their context length, so a
sweep over micro_batch answers "how many concurrent sequences fit".

Notation: docs/notation.md. Here b concurrent sequences, s their context length, s_w the
attention window, k KV heads, d head dim, L layers, V vocabulary, t and p the tensor and
pipeline degrees, e_kv the bytes of a cached element.
"""

from __future__ import annotations

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import TrainConfig
from sweep.memory import bytes as b
from sweep.memory.activations import element_bytes
from sweep.model import Architecture

# Bytes per cached element by `kv_cache_dtype` (bf16, fp8, int8); fp8/int8 caches keep
# per-head scales, a few bytes per token and head, not counted.
KV_CACHE_BYTES = vocab.by_code("kv_cache_dtype", {"bf16": b.BF16_BYTES, "fp8": b.FP8_BYTES,
                                                   "int8": b.INT8_BYTES})


def kv_cache_bytes(arch: Architecture, cfg: TrainConfig):
    """2·b·s_w·(k/t)·d·(L/p)·e_kv, s_w = min(s, sliding_window) (Mistral's rolling buffer).

    Key and value per KV head (GQA/MQA cache k heads, split by t); MLA (DeepSeek-V3) caches
    the compressed latent and the shared RoPE key, (d_ckv + d_rope) per token and layer,
    replicated across t. With `full_attention_interval` set, floor(L/interval) of the L layers
    attend fully and cache all s tokens (Gemma 2/3, gpt-oss), the others s_w, and the average
    per layer takes the place of s_w.
    """
    window = xp.where(arch.sliding_window > 0, xp.minimum(cfg.seq_len, arch.sliding_window),
                      cfg.seq_len)
    full_layers = xp.where(arch.full_attention_interval > 0, xp.floor(
        arch.num_layers / xp.maximum(arch.full_attention_interval, 1)), 0)
    window = (full_layers * cfg.seq_len + (arch.num_layers - full_layers) * window) \
        / arch.num_layers
    per_token_layer = xp.where(
        arch.mla > 0,
        arch.kv_lora_rank + arch.qk_rope_head_dim,
        2 * arch.num_kv_heads / cfg.tp * arch.head_dim,
    )
    element = xp.lookup(KV_CACHE_BYTES, cfg.kv_cache_dtype)
    return cfg.micro_batch * window * per_token_layer * arch.num_layers / cfg.pp * element


def decode_workspace_bytes(arch: Architecture, cfg: TrainConfig):
    """Transient tensors of one decode step in the layer being computed: q, k, v, the
    attention output and the MLP's inner tensors (3 for SwiGLU, 2 for GeLU) for b tokens (one
    per sequence)."""
    heads = (arch.num_heads + 2 * arch.num_kv_heads) / cfg.tp * arch.head_dim
    attention = heads + arch.num_heads / cfg.tp * arch.head_dim
    mlp = (2 + arch.gated_mlp) * arch.ffn_hidden_size / cfg.tp
    return element_bytes(cfg) * cfg.micro_batch * (attention + mlp + 2 * arch.hidden_size)


def decode_logits_bytes(arch: Architecture, cfg: TrainConfig):
    """fp32 logits of the next token for every sequence: 4·b·V/t."""
    return b.FP32_BYTES * cfg.micro_batch * arch.vocab_size / cfg.tp
