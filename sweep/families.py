"""Model families: architectures generated from a parameter count, for sweeps over model size.

`llama3`: the Llama-3 shape (Dubey et al. 2024, "The Llama 3 Herd of Models", Table 3):
head dim 128, 8 KV heads (GQA), SwiGLU with inner width ~3.5h rounded up to a multiple of
1024 (14336 at h = 4096, 28672 at 8192), RMSNorm, RoPE, untied 128,256-token vocabulary.
Width follows depth as in the published sizes (h/L = 128 at 8B, 102 at 70B, 130 at 405B):
h = 1024·round((128·Ψ/12)^(1/3)/1024) from Ψ ≈ 12·h²·L with L = h/128, at least 1024 (Ψ the
parameter count, h, L: docs/notation.md); the depth is then the whole number of blocks whose
total is nearest Ψ (at least 1), so sizes match the target to within half a block. At 8e9 the
rule gives Llama-3.1-8B exactly (h 4096, 32 blocks, 8,030,261,248 parameters); at 70e9 h 9216
with 62 blocks (published: 8192 x 80); at 405e9 h 16384 with 118 blocks and inner width 57344
(published: 126 blocks, 53248).
"""

from __future__ import annotations

import math

from sweep import xp
from sweep.errors import SweepError
from sweep.model import Architecture, ModelSpec, total_params
from sweep.vocabulary import did_you_mean

FAMILIES = ("llama3",)
MIN_PARAMS = 1e6  # below this the rule's one-block minimum dominates the count

LLAMA3_HEAD_DIM = 128
LLAMA3_KV_HEADS = 8
LLAMA3_VOCAB = 128256
LLAMA3_FFN_MULTIPLE = 1024
LLAMA3_WIDTH_MULTIPLE = 1024  # h = 128 x heads with heads a multiple of the 8 KV groups


def llama3_width(params: float) -> int:
    """h from Ψ ≈ 12·h²·L with L = h/128, rounded to a multiple of 1024."""
    width = (LLAMA3_HEAD_DIM * params / 12) ** (1 / 3)
    return max(LLAMA3_WIDTH_MULTIPLE, LLAMA3_WIDTH_MULTIPLE * round(width / LLAMA3_WIDTH_MULTIPLE))


def llama3_architecture(hidden, layers) -> Architecture:
    """The Llama-3 shape at width `hidden` and depth `layers` (numbers or arrays)."""
    ffn = LLAMA3_FFN_MULTIPLE * xp.ceil(3.5 * hidden / LLAMA3_FFN_MULTIPLE)
    return Architecture(
        hidden_size=hidden * 1.0, num_layers=layers * 1.0,
        num_heads=hidden / LLAMA3_HEAD_DIM, num_kv_heads=LLAMA3_KV_HEADS * 1.0,
        head_dim=LLAMA3_HEAD_DIM * 1.0, ffn_hidden_size=ffn,
        vocab_size=LLAMA3_VOCAB * 1.0, max_position_embeddings=131072.0,
    )


def llama3(params: float) -> Architecture:
    """The Llama-3-shaped architecture whose parameter count is nearest `params`."""
    hidden = float(llama3_width(params))
    one = float(total_params(llama3_architecture(hidden, 1)))
    two = float(total_params(llama3_architecture(hidden, 2)))
    per_block, fixed = two - one, 2 * one - two
    layers = max(1, round((params - fixed) / per_block))
    return llama3_architecture(hidden, float(layers))


def generate(family: str, params: float) -> Architecture:
    if family == "llama3":
        return llama3(params)
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def model_spec(family: str, params) -> ModelSpec:
    """The family's model nearest `params` parameters, named `<family>-<size>b`."""
    if family not in FAMILIES:
        raise SweepError(f"`family`: must be one of {list(FAMILIES)}, got {family!r}."
                         f"{did_you_mean(str(family), list(FAMILIES))}")
    ok = isinstance(params, int | float) and not isinstance(params, bool)
    if not ok or not math.isfinite(params) or params < MIN_PARAMS:
        raise SweepError(f"`params`: must be a parameter count >= {MIN_PARAMS:g} (e.g. 13e9), "
                         f"got {params!r}")
    name = f"{family}-{params / 1e9:.4g}b"
    return ModelSpec(name=name, display_name=name, arch=generate(family, float(params)),
                     source=f"family rule {family} (sweep/families.py)",
                     extra={"target_params": float(params)})
