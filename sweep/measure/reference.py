"""Reference decoder models in PyTorch (GPT-2, Llama/Mixtral, Gemma, OLMo 2 and Falcon styles),
built from an `Architecture`, for counting what autograd really saves.

The layers follow the Hugging Face implementations' structure (`modeling_gpt2.py`,
`modeling_llama.py`, `modeling_mixtral.py`): pre-norm blocks, separate q/k/v/o projections,
RoPE applied as q·cos + rotate_half(q)·sin, GQA, top-k routed experts. Two choices are
those of fused training stacks rather than Hugging Face eager: RMSNorm saves its input and an
fp32 rstd (as Apex/Transformer Engine), and the loss is cross-entropy on fp32 logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sweep import model as m
from sweep.model import Architecture

DROPOUT = 0.1


@dataclass(frozen=True)
class Options:
    """How the reference model runs: attention kernel and recompute."""

    flash_attention: bool = True  # scaled_dot_product_attention, else explicit softmax
    recompute: str = "none"  # none, selective (attention core), full (whole blocks)


class _RMSNormFunction(torch.autograd.Function):
    """output = input·rstd·weight with rstd = 1/sqrt(mean(input²) + eps) in fp32; saves the
    input and rstd."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return (x32 * rstd).to(x.dtype) * weight

    @staticmethod
    def backward(ctx, grad):
        x, rstd, weight = ctx.saved_tensors
        x32, g32 = x.float(), (grad * weight).float()
        normed = x32 * rstd
        dx = rstd * (g32 - normed * (g32 * normed).mean(-1, keepdim=True))
        dw = (grad.float() * normed).sum(dim=tuple(range(grad.dim() - 1)))
        return dx.to(x.dtype), dw.to(weight.dtype), None


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return _RMSNormFunction.apply(x, self.weight, self.eps)


def _norm(arch: Architecture, width: int) -> nn.Module:
    return nn.LayerNorm(width) if arch.norm_bias else RMSNorm(width)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(seq_len: int, head_dim: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class Attention(nn.Module):
    """q/k/v/o projections, optional q/k norms (per head of width d as Qwen3's and Gemma 3's,
    or over the whole projection as OLMo 2's), RoPE, and the attention core."""

    def __init__(self, arch: Architecture, options: Options):
        super().__init__()
        h, a, k, d = (int(arch.hidden_size), int(arch.num_heads), int(arch.num_kv_heads),
                      int(arch.head_dim))
        qkv_bias = bool(arch.linear_bias or arch.qkv_bias)
        self.q_proj = nn.Linear(h, a * d, bias=qkv_bias)
        self.k_proj = nn.Linear(h, k * d, bias=qkv_bias)
        self.v_proj = nn.Linear(h, k * d, bias=qkv_bias)
        self.o_proj = nn.Linear(a * d, h, bias=bool(arch.linear_bias or arch.o_bias))
        self.qk_norm = int(arch.qk_norm)
        if self.qk_norm == m.QK_NORM_HEAD:
            self.q_norm, self.k_norm = _norm(arch, d), _norm(arch, d)
        elif self.qk_norm == m.QK_NORM_FULL:
            self.q_norm, self.k_norm = _norm(arch, a * d), _norm(arch, k * d)
        self.heads, self.kv_heads, self.head_dim = a, k, d
        self.dropout = DROPOUT if arch.dropout else 0.0
        self.options = options

    def core(self, q, k, v):
        """(b, a, s, d) queries, (b, k, s, d) keys and values -> (b, s, a·d)."""
        b, _, s, _ = q.shape
        if self.options.flash_attention:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True,
                                                 dropout_p=self.dropout)
        else:
            repeat = self.heads // self.kv_heads
            if repeat > 1:
                k = k.repeat_interleave(repeat, dim=1)
                v = v.repeat_interleave(repeat, dim=1)
            mask = torch.full((s, s), float("-inf"), dtype=q.dtype).triu(1)
            scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.head_dim)) + mask
            probs = F.dropout(scores.softmax(-1), self.dropout, self.training)
            out = probs @ v
        return out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)

    def _heads(self, x, proj, heads, norm):
        """(b, heads, s, d), normalised as `qk_norm` says."""
        b, s, _ = x.shape
        y = proj(x)
        if self.qk_norm == m.QK_NORM_FULL:
            y = norm(y)
        y = y.view(b, s, heads, self.head_dim)
        if self.qk_norm == m.QK_NORM_HEAD:
            y = norm(y)
        return y.transpose(1, 2)

    def forward(self, x, rope):
        b, s, _ = x.shape
        q = self._heads(x, self.q_proj, self.heads, getattr(self, "q_norm", None))
        k = self._heads(x, self.k_proj, self.kv_heads, getattr(self, "k_norm", None))
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        if self.options.recompute == "selective":
            out = checkpoint(self.core, q, k, v, use_reentrant=False)
        else:
            out = self.core(q, k, v)
        return self.o_proj(out)


def _gelu(x):
    return F.gelu(x, approximate="tanh")


def _relu2(x):
    return torch.pow(F.relu(x), 2)  # Megatron-LM's squared_relu


ACTIVATIONS = {m.ACTIVATION_GELU: _gelu, m.ACTIVATION_SILU: F.silu, m.ACTIVATION_RELU2: _relu2}


class MLP(nn.Module):
    """Gated down(act(gate(input))·up(input)) (SwiGLU; GeGLU) or plain down(act(up(input)))
    (GeLU (tanh); squared ReLU); `activation` is an `ACTIVATION_*` code."""

    def __init__(self, hidden: int, inner: int, gated: bool, bias: bool,
                 activation: int = m.ACTIVATION_DEFAULT):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=bias) if gated else None
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        default = F.silu if gated else _gelu
        self.act = ACTIVATIONS.get(activation, default)

    def forward(self, x):
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class SparseMoE(nn.Module):
    """Top-k routed experts (Mixtral's `MixtralSparseMoeBlock`) plus optional shared experts."""

    def __init__(self, arch: Architecture):
        super().__init__()
        h = int(arch.hidden_size)
        self.top_k = int(arch.num_experts_per_tok)
        self.router = nn.Linear(h, int(arch.num_experts), bias=False)
        act = int(arch.mlp_activation)
        self.experts = nn.ModuleList(
            MLP(h, int(arch.moe_ffn_hidden_size), bool(arch.gated_mlp), False, act)
            for _ in range(int(arch.num_experts))
        )
        shared = int(arch.num_shared_experts * arch.shared_expert_ffn_hidden_size)
        self.shared = MLP(h, shared, bool(arch.gated_mlp), False, act) if shared else None

    def forward(self, x):
        b, s, h = x.shape
        flat = x.reshape(-1, h)
        probs = self.router(flat).float().softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == index)
            if token.numel() == 0:
                continue
            routed = expert(flat[token]) * weights[token, slot, None]
            out = out.index_add(0, token, routed)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.view(b, s, h)


class Block(nn.Module):
    """Pre-norm block (Llama), post-norm (OLMo 2: norms on the sub-layer outputs only),
    sandwich (Gemma 2/3: both), or parallel attention and MLP on one shared input norm or two
    (Falcon)."""

    def __init__(self, arch: Architecture, options: Options, moe: bool):
        super().__init__()
        h = int(arch.hidden_size)
        self.placement, self.parallel = int(arch.norm_placement), int(arch.parallel_attention)
        if self.placement != m.POST_NORM:
            self.norm1 = _norm(arch, h)
            if self.parallel != m.PARALLEL_SHARED_NORM:
                self.norm2 = _norm(arch, h)
        if self.placement != m.PRE_NORM:
            self.post1, self.post2 = _norm(arch, h), _norm(arch, h)
        self.attention = Attention(arch, options)
        self.mlp = SparseMoE(arch) if moe else MLP(
            h, int(arch.ffn_hidden_size), bool(arch.gated_mlp),
            bool(arch.linear_bias or arch.mlp_bias), int(arch.mlp_activation))
        self.dropout = DROPOUT if arch.dropout else 0.0

    def _sublayer(self, layer, pre, post, x, *args):
        """post(layer(pre(x))), each norm present or not as the placement says."""
        y = layer(pre(x) if pre is not None else x, *args)
        return post(y) if post is not None else y

    def forward(self, x, rope=None):
        drop = lambda y: F.dropout(y, self.dropout, self.training)  # noqa: E731
        pre1, pre2 = getattr(self, "norm1", None), getattr(self, "norm2", None)
        post1, post2 = getattr(self, "post1", None), getattr(self, "post2", None)
        if self.parallel:
            attn_in = pre1(x)
            mlp_in = attn_in if self.parallel == m.PARALLEL_SHARED_NORM else pre2(x)
            return x + drop(self.attention(attn_in, rope)) + drop(self.mlp(mlp_in))
        x = x + drop(self._sublayer(self.attention, pre1, post1, x, rope))
        return x + drop(self._sublayer(self.mlp, pre2, post2, x))


class DecoderModel(nn.Module):
    """Embedding (+ learned positions), blocks, final norm, head, fp32 cross-entropy loss."""

    def __init__(self, arch: Architecture, options: Options):
        super().__init__()
        h, vocab = int(arch.hidden_size), int(arch.vocab_size)
        self.arch, self.options = arch, options
        self.embed = nn.Embedding(vocab, h)
        self.positions = (nn.Embedding(int(arch.max_position_embeddings), h)
                          if arch.learned_position_embeddings else None)
        first_moe = int(arch.first_k_dense_layers) if arch.num_experts else int(arch.num_layers)
        self.blocks = nn.ModuleList(
            Block(arch, options, moe=i >= first_moe) for i in range(int(arch.num_layers))
        )
        self.norm = _norm(arch, h)
        self.head = nn.Linear(h, vocab, bias=False)
        if arch.tied_embeddings:
            self.head.weight = self.embed.weight
        self.dropout = DROPOUT if arch.dropout else 0.0
        self.checkpoint_constants: tuple[torch.Tensor, ...] = ()

    def rope(self, seq_len: int, dtype):
        if self.positions is not None:
            return None
        return rope_tables(seq_len, int(self.arch.head_dim), dtype)

    def forward(self, ids, targets):
        x = self.embed(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1]))
        x = F.dropout(x, self.dropout, self.training)
        rope = self.rope(ids.shape[1], x.dtype)
        # Checkpointed blocks keep their no-grad inputs (the RoPE tables) for recomputation.
        self.checkpoint_constants = rope if rope and self.options.recompute == "full" else ()
        for block in self.blocks:
            if self.options.recompute == "full":
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


# ---- LoRA adapters and a 4-bit frozen base (whole training steps, sweep/measure/step.py) ----

# The 16 NF4 code values (Dettmers et al. 2023, QLoRA, Appendix E; bitsandbytes `get_4bit_type`).
NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
NF4_BLOCK = 64  # weights per absmax constant
NF4_SECOND_LEVEL_BLOCK = 256  # absmax constants per fp32 second-level constant
UINT8_LEVELS = 255


@torch.library.custom_op("sweep_measure::dequantize_nf4", mutates_args=())
def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, absmax2: torch.Tensor,
                   code: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """bf16 (out, in) weight from bitsandbytes-style double-quantised NF4: two 4-bit code indices
    per byte (high nibble first), one uint8 absmax per 64 weights scaled by one fp32 constant
    per 256 absmax values (bitsandbytes maps the uint8 absmax through a 256-entry table; here
    linearly). One op, as bitsandbytes' `dequantize_4bit` kernel, so that its only allocation
    is the bf16 output."""
    index = torch.stack((packed >> 4, packed & 0xF), dim=-1).flatten().long()
    scale = absmax.float() / UINT8_LEVELS * absmax2.repeat_interleave(NF4_SECOND_LEVEL_BLOCK)[
        : absmax.numel()]
    weight = code[index].view(-1, NF4_BLOCK) * scale[:, None]
    return weight.view(out_features, in_features).to(torch.bfloat16)


@dequantize_nf4.register_fake
def _(packed, absmax, absmax2, code, out_features, in_features):
    return packed.new_empty((out_features, in_features), dtype=torch.bfloat16)


class _NF4Matmul(torch.autograd.Function):
    """input @ weight.T with the weight dequantised from NF4 on the fly, as bitsandbytes'
    `MatMul4Bit` (bitsandbytes/autograd/_functions.py): the forward dequantises and multiplies
    and keeps a reference to the packed weight only (`ctx.tensors = (None, B)`), saving no
    activation; the backward dequantises again for the input gradient. The base is frozen: no
    weight gradient."""

    @staticmethod
    def forward(ctx, x, linear):
        ctx.linear = linear
        return x @ linear.dequantized().t()

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.linear.dequantized(), None


class NF4Linear(nn.Module):
    """A frozen linear layer stored as packed 4-bit NF4 (uint8, two weights a byte) with uint8
    absmax constants per 64 weights and fp32 second-level constants per 256 of those, the
    layout of bitsandbytes' `Linear4bit` with double quantisation; all three are parameters
    (requires_grad False) so that FSDP shards them."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        n = in_features * out_features
        blocks = n // NF4_BLOCK
        frozen = lambda *shape, dtype: nn.Parameter(  # noqa: E731
            torch.zeros(*shape, dtype=dtype), requires_grad=False)
        self.packed = frozen(n // 2, dtype=torch.uint8)
        self.absmax = frozen(blocks, dtype=torch.uint8)
        self.absmax2 = frozen(math.ceil(blocks / NF4_SECOND_LEVEL_BLOCK), dtype=torch.float32)
        self.register_buffer("code", torch.tensor(NF4_CODE, dtype=torch.float32))
        self.in_features, self.out_features = in_features, out_features

    def dequantized(self) -> torch.Tensor:
        return dequantize_nf4(self.packed, self.absmax, self.absmax2, self.code,
                              self.out_features, self.in_features)

    def forward(self, x):
        return _NF4Matmul.apply(x, self)


class LoRALinear(nn.Module):
    """PEFT's LoRA `Linear` (peft/tuners/lora/layer.py): base(x) + lora_B(lora_A(x))·alpha/r with
    the base frozen, lora_A (r x in) and lora_B (out x r) trainable, no LoRA dropout (r the LoRA
    rank)."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int, rank: int,
                 dtype: torch.dtype):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(in_features, rank, bias=False, dtype=dtype)
        self.lora_B = nn.Linear(rank, out_features, bias=False, dtype=dtype)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = 2.0  # alpha = 2r, a common choice; a scalar multiply saves nothing

    def forward(self, x):
        result = self.base(x)
        adapted = self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype))) * self.scaling
        return (result + adapted).to(result.dtype)


def add_adapters(model: DecoderModel, rank: int, targets: tuple[str, ...], quantize: bool,
                 adapter_dtype: torch.dtype) -> DecoderModel:
    """Freeze `model` and put LoRA adapters on the `targets` linears of every block (PEFT
    module names: q_proj ... down_proj); with `quantize` the frozen bases become `NF4Linear`
    (QLoRA). Embedding, norms and head stay frozen in their dtype."""
    model.requires_grad_(False)
    for block in model.blocks:
        for parent in (block.attention, block.mlp):
            for name in targets:
                base = getattr(parent, name, None)
                if not isinstance(base, nn.Linear):
                    continue
                if quantize:
                    base = NF4Linear(base.in_features, base.out_features)
                setattr(parent, name, LoRALinear(base, base.in_features, base.out_features,
                                                 rank, adapter_dtype))
    return model
