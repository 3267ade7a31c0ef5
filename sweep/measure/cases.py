"""The measured cases: reference blocks and whole models over shapes, dtypes, attention kernels
and recompute modes, each compared with the formula (`memory.activations`)."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from sweep import model as m
from sweep.config import TrainConfig
from sweep.measure.reference import Block, DecoderModel, Options, rope_tables
from sweep.measure.saved import saved_tensor_bytes
from sweep.memory import activations
from sweep.model import Architecture

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Block layouts beyond pre-norm: Gemma 2/3 (GeGLU, sandwich norms, per-head q/k norms), OLMo 2
# (post-norms, whole-projection q/k norms), Falcon-7B (parallel block on one LayerNorm, plain
# GeLU), Falcon-40B (parallel, two LayerNorms) and a squared-ReLU MLP (Nemotron-4).
NORM_STYLES = {
    "gemma": dict(mlp_activation=m.ACTIVATION_GELU, norm_placement=m.SANDWICH_NORM,
                  qk_norm=m.QK_NORM_HEAD, tied_embeddings=1),
    "olmo2": dict(norm_placement=m.POST_NORM, qk_norm=m.QK_NORM_FULL),
    "falcon": dict(gated_mlp=0, norm_bias=1, parallel_attention=m.PARALLEL_SHARED_NORM,
                   tied_embeddings=1),
    "falcon2": dict(gated_mlp=0, norm_bias=1, parallel_attention=m.PARALLEL_TWO_NORMS),
    "relu2": dict(gated_mlp=0, mlp_activation=m.ACTIVATION_RELU2, norm_bias=1),
}
PRECISION = {"fp32": "fp32", "bf16": "bf16-mixed"}


def _arch(style: str, h: int, heads: int, kv_heads: int, ffn: int, layers: int,
          vocab: int = 512, experts: int = 0) -> Architecture:
    """GPT-2 style (LayerNorm, biases, GeLU, learned positions, dropout, tied head) or Llama
    style (RMSNorm, SwiGLU, RoPE, GQA, untied), optionally Mixtral-style MoE."""
    common = dict(hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                  head_dim=h // heads, ffn_hidden_size=ffn, vocab_size=vocab,
                  max_position_embeddings=1024)
    if style == "gpt2":
        return Architecture(**common, gated_mlp=0, norm_bias=1, tied_embeddings=1,
                            linear_bias=1, learned_position_embeddings=1, dropout=1)
    if style in NORM_STYLES:
        return Architecture(**common, **NORM_STYLES[style])
    moe = dict(num_experts=experts, num_experts_per_tok=2, moe_ffn_hidden_size=ffn) if experts \
        else {}
    return Architecture(**common, gated_mlp=1, **moe)


@dataclass(frozen=True)
class Case:
    scope: str  # "block" (one transformer block) or "model" (embedding to loss)
    style: str  # gpt2, llama, mixtral
    dtype: str
    attention: str  # sdpa or explicit
    recompute: str
    b: int
    s: int
    h: int
    heads: int
    kv_heads: int
    ffn: int
    layers: int

    @property
    def arch(self) -> Architecture:
        experts = 4 if self.style == "mixtral" else 0
        return _arch(self.style, self.h, self.heads, self.kv_heads, self.ffn, self.layers,
                     experts=experts)

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_names(
            micro_batch=self.b, seq_len=self.s, precision=PRECISION[self.dtype],
            flash_attention=self.attention == "sdpa", recompute=self.recompute, device="cpu",
            n_gpus=1,
        )


def cases() -> list[Case]:
    """Shapes x dtypes x attention kernels x recompute modes, for blocks and whole models.

    SDPA with attention dropout falls back to the math kernel on the CPU (s² tensors that
    FlashAttention on a GPU does not keep), so GPT-2-style cases use explicit attention.
    """
    shapes = [  # (b, s, h, heads, kv_heads, ffn)
        (1, 128, 64, 4, 4, 256),
        (2, 64, 128, 8, 2, 352),
        (2, 256, 96, 6, 1, 256),
        (4, 32, 256, 8, 8, 688),
    ]
    out = []
    for scope, style, dtype, recompute, shape in itertools.product(
        ("block", "model"), ("gpt2", "llama", "mixtral"), DTYPES, ("none", "selective", "full"),
        shapes,
    ):
        b, s, h, heads, kv_heads, ffn = shape
        if style == "gpt2":
            kv_heads, ffn = heads, 4 * h
        if scope == "block" and recompute == "full":
            continue  # full recompute is a per-block checkpoint: measured on whole models
        for attention in ("explicit",) if style == "gpt2" else ("sdpa", "explicit"):
            out.append(Case(scope, style, dtype, attention, recompute, b, s, h, heads,
                            kv_heads, ffn, layers=1 if scope == "block" else 2))
    # The other block layouts: one shape (MQA for Falcon-7B's style), bf16, SDPA.
    for style, scope, recompute in itertools.product(
        NORM_STYLES, ("block", "model"), ("none", "selective", "full")
    ):
        if scope == "block" and recompute == "full":
            continue
        kv_heads = 1 if style == "falcon" else 2
        out.append(Case(scope, style, "bf16", "sdpa", recompute, 2, 64, 128, 8, kv_heads, 352,
                        layers=1 if scope == "block" else 2))
    return out


def measure(case: Case) -> int:
    """Bytes saved for backward by the reference implementation (seeded, training mode)."""
    torch.manual_seed(0)
    arch, dtype = case.arch, DTYPES[case.dtype]
    options = Options(flash_attention=case.attention == "sdpa", recompute=case.recompute)
    if case.scope == "block":
        module = Block(arch, options, moe=case.style == "mixtral").to(dtype).train()
        x = torch.randn(case.b, case.s, case.h, dtype=dtype, requires_grad=True)
        rope = None if arch.learned_position_embeddings else rope_tables(
            case.s, int(arch.head_dim), dtype)
        constants = (*module.parameters(), *(rope or ()))
        return saved_tensor_bytes(lambda x: module(x, rope), x, exclude=constants)
    model = DecoderModel(arch, options).to(dtype).train()
    ids = torch.randint(0, int(arch.vocab_size), (case.b, case.s))
    targets = torch.randint(0, int(arch.vocab_size), (case.b, case.s))
    return saved_tensor_bytes(model, ids, targets, exclude=tuple(model.parameters()),
                              held=lambda: model.checkpoint_constants)


def formula(case: Case) -> float:
    """Our formula for the same case, evaluated with NumPy (the same code the sweep jits)."""
    arch = Architecture(**{k: np.float64(v) for k, v in asdict(case.arch).items()})
    cfg = TrainConfig(**{k: np.float64(v) for k, v in asdict(case.config).items()})
    if case.scope == "block":
        return float(activations.layer_bytes(arch, cfg, np.float64(case.style == "mixtral")))
    return float(activations.model_saved_bytes(arch, cfg))


def run() -> list[dict]:
    """Every case: its parameters, measured and formula bytes, and the relative error."""
    rows = []
    for case in cases():
        measured, predicted = measure(case), formula(case)
        rows.append({**asdict(case), "measured_bytes": measured, "formula_bytes": predicted,
                     "error": predicted / measured - 1})
    return rows
