"""Transformer architectures and their parameter counts, derived from the shapes.

Notation: docs/notation.md. Here h hidden_size, L num_layers, a num_heads, k num_kv_heads (GQA:
k < a; MQA: k = 1), d head_dim, f ffn_hidden_size, V vocab_size, E num_experts, E_k
num_experts_per_tok (top-k), f_e moe_ffn_hidden_size, E_s and f_s num_shared_experts and
shared_expert_ffn_hidden_size (always-on experts), L_mtp mtp_layers (multi-token-prediction
modules, DeepSeek-V3), s_max max_position_embeddings, r the LoRA rank, t tp.

Categorical fields are integer codes (the constants below): `mlp_activation` (`ACTIVATION_*`),
`qk_norm` (`QK_NORM_*`), `norm_placement` (`*_NORM`), `parallel_attention` (`SEQUENTIAL`,
`PARALLEL_*`). Bias flags: `linear_bias` puts a bias on every attention and dense-MLP linear
(GPT-2/3, Megatron-LM `add_bias_linear`); `qkv_bias`, `o_bias`, `mlp_bias` on one group only;
`expert_bias` on the routed experts (gpt-oss), `router_bias` on the router (DeepSeek-V3's
`e_score_correction_bias`, gpt-oss). The human-readable form of every field (architecture
files, catalog entries) is documented in `sweep/architecture.py`.

Every field of `Architecture` is a number (flags are 0/1) so that an architecture is a pytree
that can be stacked into arrays and swept. Counts follow the module shapes of the Hugging Face
implementations (`modeling_llama.py`, `modeling_mixtral.py`, `modeling_qwen2.py`,
`modeling_gpt2.py`, `modeling_deepseek_v3.py`, and those of every type `sweep/hf_config.py`
reads); the catalog and config tests check them against the published totals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax

from sweep import xp
from sweep.vocabulary import LORA_TARGETS

# mlp_activation: the default is SiLU for a gated MLP (SwiGLU) and GeLU for a plain one.
ACTIVATION_DEFAULT, ACTIVATION_GELU, ACTIVATION_SILU, ACTIVATION_RELU2 = 0, 1, 2, 3
# qk_norm: RMSNorm/LayerNorm on queries and keys before RoPE, per head (width d: Qwen3,
# Gemma 3) or over all heads of the projection (widths a·d and k·d: OLMo 2).
QK_NORM_NONE, QK_NORM_HEAD, QK_NORM_FULL = 0, 1, 2
# norm_placement: norms on the sub-layer inputs (pre), on their outputs only (OLMo 2), or both
# (Gemma 2/3: four norms per block).
PRE_NORM, POST_NORM, SANDWICH_NORM = 0, 1, 2
# parallel_attention: attention and MLP read the same block input (GPT-J, Falcon), through one
# shared input norm (Falcon-7B) or one norm each (Falcon-40B/180B `new_decoder_architecture`).
SEQUENTIAL, PARALLEL_SHARED_NORM, PARALLEL_TWO_NORMS = 0, 1, 2


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Architecture:
    hidden_size: float
    num_layers: float
    num_heads: float
    num_kv_heads: float
    head_dim: float
    ffn_hidden_size: float
    vocab_size: float
    max_position_embeddings: float = 4096
    gated_mlp: float = 1  # SwiGLU: gate, up, down (3 matrices); 0: GeLU up, down (2)
    norm_bias: float = 0  # LayerNorm has a bias (1); RMSNorm has none (0)
    tied_embeddings: float = 0
    linear_bias: float = 0  # every linear layer has a bias (GPT-2/3)
    qkv_bias: float = 0  # only q, k, v have biases (Qwen2)
    learned_position_embeddings: float = 0
    num_experts: float = 0
    num_experts_per_tok: float = 0
    moe_ffn_hidden_size: float = 0
    num_shared_experts: float = 0
    shared_expert_ffn_hidden_size: float = 0
    first_k_dense_layers: float = 0
    router_bias: float = 0
    mla: float = 0  # multi-head latent attention (DeepSeek-V2/V3)
    q_lora_rank: float = 0
    kv_lora_rank: float = 0
    qk_nope_head_dim: float = 0
    qk_rope_head_dim: float = 0
    v_head_dim: float = 0
    sliding_window: float = 0
    dropout: float = 0  # trained with dropout on attention probabilities, residuals, embeddings
    mlp_activation: float = ACTIVATION_DEFAULT
    o_bias: float = 0  # bias on the attention output projection (Llama `attention_bias`)
    mlp_bias: float = 0  # biases on the dense MLP and shared experts
    expert_bias: float = 0  # biases on the routed experts' linears (gpt-oss)
    qk_norm: float = QK_NORM_NONE
    norm_placement: float = PRE_NORM
    parallel_attention: float = SEQUENTIAL
    attention_sinks: float = 0  # one learned sink logit per query head and layer (gpt-oss)
    full_attention_interval: float = 0  # with sliding_window: one layer in this many attends fully
    mtp_layers: float = 0  # multi-token-prediction modules after the last block
    # Megatron-LM pads the vocabulary to a multiple of vocab_multiple·tp
    # (`--make-vocab-size-divisible-by`); 0: its default, 128.
    vocab_multiple: float = 0

    def replace(self, **changes) -> Architecture:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture with where its numbers come from."""

    name: str
    display_name: str
    arch: Architecture
    source: str
    published_params: float = 0.0
    published_params_source: str = ""
    published_params_rounding: float = 0.0
    notes: str = ""
    extra: dict = field(default_factory=dict)


NORM_WEIGHT = 1  # a norm has one weight vector of width h (plus a bias vector for LayerNorm)

COLUMN, ROW, REPLICATED = "column", "row", "replicated"  # how tensor parallelism splits a Linear


@dataclass(frozen=True)
class Linear:
    """A linear layer `count` times in one block: weight in_features x out_features.

    `split` says which dimension tensor parallelism divides (Megatron-LM's column- and
    row-parallel linears); `expert` marks routed experts, divided over expert parallelism;
    `lora_target` is the PEFT module name LoRA attaches to (None: never a target).
    """

    name: str
    in_features: object
    out_features: object
    split: str
    count: object = 1
    bias: object = 0
    expert: bool = False
    lora_target: str | None = None

    def dims_on_rank(self, tp):
        """(in, out) of the weight shard on one TP rank."""
        in_div = tp if self.split == ROW else 1
        out_div = tp if self.split == COLUMN else 1
        return self.in_features / in_div, self.out_features / out_div

    def count_on_rank(self, ep):
        return self.count / ep if self.expert else self.count

    def weight_params(self, tp=1, ep=1):
        rows, cols = self.dims_on_rank(tp)
        return self.count_on_rank(ep) * rows * cols

    def bias_params(self, tp=1, ep=1):
        return self.count_on_rank(ep) * self.bias * self.dims_on_rank(tp)[1]

    def factored_second_moment(self, tp=1, ep=1):
        """Adafactor's factored second moment of the weight: one row and one column vector."""
        rows, cols = self.dims_on_rank(tp)
        return self.count_on_rank(ep) * (rows + cols)

    def lora_params(self, rank, tp=1, ep=1):
        """LoRA's lora_A (r x in) and lora_B (out x r), each split as the weight it adapts is."""
        rows, cols = self.dims_on_rank(tp)
        return self.count_on_rank(ep) * rank * (rows + cols)


@xp.reused
def norm_params(arch: Architecture, width):
    """Parameters of one norm of the given width: width * (1 + bias)."""
    return width * (NORM_WEIGHT + arch.norm_bias)


def attention_linears(arch: Architecture) -> list[Linear]:
    """The attention projections of one block (standard MHA/GQA/MQA or MLA).

    Standard: q_proj h x a·d, k_proj and v_proj h x k·d (column-parallel, biased when
    `linear_bias` or `qkv_bias`), o_proj a·d x h (row-parallel, biased when `linear_bias` or
    `o_bias`). Fused projections (Phi-3's qkv_proj, Falcon's query_key_value) hold the same
    shapes. MLA (DeepSeek-V3 `DeepseekV3Attention`): q_a_proj h x d_cq and kv_a_proj_with_mqa
    h x (d_ckv + d_rope) replicated; q_b_proj d_cq x a·(d_nope + d_rope) (or q_proj from h when
    q_lora_rank = 0) and kv_b_proj d_ckv x a·(d_nope + d_v) column-parallel; o_proj
    a·d_v x h.
    LoRA's k_proj and v_proj map to MLA's kv_a and kv_b projections.
    """
    h, a, k, d = arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim
    std = 1 - arch.mla
    qkv_bias = xp.maximum(arch.linear_bias, arch.qkv_bias)
    o_bias = xp.maximum(arch.linear_bias, arch.o_bias)
    q_head = arch.qk_nope_head_dim + arch.qk_rope_head_dim
    q_lora = arch.mla * (arch.q_lora_rank > 0)
    return [
        Linear("q_proj", h, a * d, COLUMN, std, qkv_bias, lora_target="q_proj"),
        Linear("k_proj", h, k * d, COLUMN, std, qkv_bias, lora_target="k_proj"),
        Linear("v_proj", h, k * d, COLUMN, std, qkv_bias, lora_target="v_proj"),
        Linear("o_proj", a * d, h, ROW, std, o_bias, lora_target="o_proj"),
        Linear("q_a_proj", h, arch.q_lora_rank, REPLICATED, q_lora, lora_target="q_proj"),
        Linear("q_b_proj", arch.q_lora_rank, a * q_head, COLUMN, q_lora, lora_target="q_proj"),
        Linear("mla_q_proj", h, a * q_head, COLUMN, arch.mla - q_lora, lora_target="q_proj"),
        Linear(
            "kv_a_proj_with_mqa", h, arch.kv_lora_rank + arch.qk_rope_head_dim, REPLICATED,
            arch.mla, lora_target="k_proj",
        ),
        Linear(
            "kv_b_proj", arch.kv_lora_rank, a * (arch.qk_nope_head_dim + arch.v_head_dim), COLUMN,
            arch.mla, lora_target="v_proj",
        ),
        Linear("mla_o_proj", a * arch.v_head_dim, h, ROW, arch.mla, lora_target="o_proj"),
    ]


def mlp_linears(arch: Architecture, inner, count=1, expert=False, prefix="") -> list[Linear]:
    """A gated (SwiGLU/GeGLU: gate, up, down) or plain (GeLU: up, down) MLP of width `inner`.

    Dense MLPs and shared experts are biased when `linear_bias` or `mlp_bias`; routed experts
    when `expert_bias` (gpt-oss `gate_up_proj_bias`, `down_proj_bias`). Fused gate_up
    projections (Phi-3, gpt-oss) hold the same shapes.
    """
    h = arch.hidden_size
    bias = arch.expert_bias if expert else xp.maximum(arch.linear_bias, arch.mlp_bias)
    return [
        Linear(prefix + "gate_proj", h, inner, COLUMN, count * arch.gated_mlp, bias, expert,
               "gate_proj"),
        Linear(prefix + "up_proj", h, inner, COLUMN, count, bias, expert, "up_proj"),
        Linear(prefix + "down_proj", inner, h, ROW, count, bias, expert, "down_proj"),
    ]


def block_linears(arch: Architecture, moe: bool) -> list[Linear]:
    """Every linear of one block: attention plus the dense MLP, or routed + shared experts and
    the router (h x E, replicated) in an MoE block."""
    if not moe:
        return attention_linears(arch) + mlp_linears(arch, arch.ffn_hidden_size)
    router = Linear("router", arch.hidden_size, arch.num_experts, REPLICATED, 1, arch.router_bias)
    return (
        attention_linears(arch)
        + mlp_linears(arch, arch.moe_ffn_hidden_size, arch.num_experts, True, "experts.")
        + mlp_linears(arch, arch.shared_expert_ffn_hidden_size, arch.num_shared_experts,
                      prefix="shared_experts.")
        + [router]
    )


def hidden_norms_per_block(arch: Architecture):
    """Norms of width h in one block: 2 (before attention and MLP, or after them with
    `POST_NORM`), 1 for a parallel block with one shared input norm, 4 with sandwich norms."""
    shared = xp.where(arch.parallel_attention == PARALLEL_SHARED_NORM, 1, 0)
    sandwich = xp.where(arch.norm_placement == SANDWICH_NORM, 2, 0)
    return 2 - shared + sandwich


def qk_norm_width(arch: Architecture):
    """Summed width of the query and key norms: 2·d per head (shared by the heads), or
    (a + k)·d over whole projections."""
    per_head = xp.where(arch.qk_norm == QK_NORM_HEAD, 2 * arch.head_dim, 0)
    full = xp.where(arch.qk_norm == QK_NORM_FULL,
                    (arch.num_heads + arch.num_kv_heads) * arch.head_dim, 0)
    return per_head + full


def block_norm_params(arch: Architecture):
    """Vector parameters of one block: its h-wide norms (`hidden_norms_per_block`), MLA's q_a
    and kv_a RMSNorms, the q/k norms and gpt-oss's attention sinks (a per block)."""
    mla_norms = arch.mla * (arch.kv_lora_rank + arch.q_lora_rank)
    return (
        hidden_norms_per_block(arch) * norm_params(arch, arch.hidden_size)
        + mla_norms
        + norm_params(arch, qk_norm_width(arch))
        + arch.attention_sinks * arch.num_heads
    )


def moe_layer_count(arch: Architecture, layers=None, first_layer=0):
    """MoE blocks among `layers` consecutive blocks starting at `first_layer`.

    Blocks before `first_k_dense_layers` use the dense MLP (DeepSeek-V3: 3).
    """
    layers = arch.num_layers if layers is None else layers
    dense_in_range = xp.minimum(xp.maximum(arch.first_k_dense_layers - first_layer, 0), layers)
    return xp.where(arch.num_experts > 0, layers - dense_in_range, 0)


def embedding_params(arch: Architecture, tp=1):
    """Input embedding V·h/t (vocab-parallel) plus learned positions s_max·h (replicated)."""
    positions = arch.learned_position_embeddings * arch.max_position_embeddings
    return arch.vocab_size * arch.hidden_size / tp + positions * arch.hidden_size


def head_params(arch: Architecture, tp=1):
    """Output projection V·h/t, absent when tied to the input embedding."""
    return (1 - arch.tied_embeddings) * arch.vocab_size * arch.hidden_size / tp


def final_norm_params(arch: Architecture):
    return norm_params(arch, arch.hidden_size)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LayerParams:
    """Parameters of one block or a run of layers on one rank, split by how they are sharded.

    `dense` is replicated across data-parallel ranks (sharded by ZeRO over dp); `expert` is the
    routed-expert part, already divided by the expert-parallel degree (sharded by ZeRO over the
    expert data-parallel group). `block_linear` is the part held in linear weights of the
    blocks, what QLoRA quantises to NF4 and fp8 training stores in fp8. `factored`: Adafactor's
    second-moment elements, `lora`: the LoRA adapters of rank r on the targeted linears (0
    where not counted: `mtp_params` leaves them out).
    """

    dense: object
    expert: object
    block_linear: object
    factored: object = 0.0
    lora: object = 0.0


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BlockKinds:
    """`LayerParams` of one dense and one MoE block on a rank: what every count over a run
    of blocks is made of (`over_layers`), computed once per rank and LoRA setting."""

    dense: LayerParams
    moe: LayerParams


def kind_params(arch: Architecture, moe: bool, tp=1, ep=1, etp=None, lora_rank=0,
                lora_targets=0) -> LayerParams:
    """`LayerParams` of one block of a kind (dense or MoE) on one TP/EP rank.

    Over the block's linears (`block_linears`): weights in_features·out_features (the split
    dimension divided by t, or by t_e for routed experts, whose count is divided by x),
    biases out_features (/t when column-parallel), Adafactor's rows + cols per matrix and the
    biases at full size, LoRA r·(in + out) on the targets in `lora_targets`; the norms'
    vectors (`block_norm_params`) are dense and factored at full size.
    """
    etp = tp if etp is None else etp
    weights = biases = expert = factored = lora = 0
    for lin in block_linears(arch, moe):
        lin_tp = etp if lin.expert else tp
        weight = lin.weight_params(lin_tp, ep)
        bias = lin.bias_params(tp, ep)
        weights = weights + weight
        biases = biases + bias
        expert = expert + (weight if lin.expert else 0)
        factored = factored + lin.factored_second_moment(lin_tp, ep) + bias
        if lin.lora_target is not None:
            lora = lora + (lora_target_bit(lora_targets, lin.lora_target)
                           * lin.lora_params(lora_rank, lin_tp, ep))
    norms = block_norm_params(arch)
    return LayerParams(dense=weights + biases - expert + norms, expert=expert,
                       block_linear=weights, factored=factored + norms, lora=lora)


def block_kinds(arch: Architecture, tp=1, ep=1, etp=None, lora_rank=0,
                lora_targets=0) -> BlockKinds:
    """`kind_params` of the dense and the MoE block."""
    return BlockKinds(*(kind_params(arch, moe, tp, ep, etp, lora_rank, lora_targets)
                        for moe in (False, True)))


def over_layers(arch: Architecture, kinds: BlockKinds, layers, first_layer=0) -> LayerParams:
    """`LayerParams` of `layers` consecutive blocks from `first_layer`: each dense and MoE
    block (`moe_layer_count`) counted as its kind."""
    n_moe = moe_layer_count(arch, layers, first_layer)
    return jax.tree_util.tree_map(lambda dense, moe: (layers - n_moe) * dense + n_moe * moe,
                                  kinds.dense, kinds.moe)


@xp.reused
def lora_target_bit(target_mask, name: str):
    """1 where module `name` is in the bit mask of `vocabulary.LORA_TARGETS`, else 0."""
    bit = 2 ** LORA_TARGETS.index(name)
    return xp.floor(target_mask / bit) - 2 * xp.floor(target_mask / (2 * bit))


MTP_NORMS = 3  # enorm, hnorm and the module's final norm


def mtp_params(arch: Architecture, tp=1, ep=1, etp=None,
               kinds: BlockKinds | None = None) -> LayerParams:
    """The L_mtp multi-token-prediction modules, held with the head (Megatron-LM
    `MultiTokenPredictionLayer`, megatron/core/transformer/multi_token_prediction.py @d98e8a6;
    DeepSeek-V3 README_WEIGHTS.md): each one block past the last (an MoE block when the model's
    are), the eh_proj projection 2h x h (column-parallel, no bias) and three norms; the
    embedding and the output head are shared with the main model. Adafactor's second moment
    (`factored`): the blocks', eh_proj's row and column vectors (2h + h/t) and the norms in
    full. `kinds`: the rank's `block_kinds`, when already computed.
    """
    h = arch.hidden_size
    kinds = block_kinds(arch, tp, ep, etp) if kinds is None else kinds
    blocks = over_layers(arch, kinds, arch.mtp_layers, arch.num_layers)
    projection = arch.mtp_layers * 2 * h * h / tp
    norms = arch.mtp_layers * MTP_NORMS * norm_params(arch, h)
    return LayerParams(dense=blocks.dense + projection + norms, expert=blocks.expert,
                       block_linear=blocks.block_linear + projection,
                       factored=blocks.factored + arch.mtp_layers * (2 * h + h / tp) + norms)


def total_params(arch: Architecture):
    """All parameters: embeddings + L blocks + final norm + head (+ every routed expert)
    + the multi-token-prediction modules."""
    kinds = block_kinds(arch)
    blocks = over_layers(arch, kinds, arch.num_layers)
    mtp = mtp_params(arch, kinds=kinds)
    return (
        embedding_params(arch)
        + blocks.dense
        + blocks.expert
        + final_norm_params(arch)
        + head_params(arch)
        + mtp.dense
        + mtp.expert
    )


def active_params(arch: Architecture):
    """Parameters one token passes through: routed experts counted E_k of E times."""
    kinds = block_kinds(arch)
    routed = (over_layers(arch, kinds, arch.num_layers).expert
              + mtp_params(arch, kinds=kinds).expert)
    inactive_share = 1 - arch.num_experts_per_tok / xp.maximum(arch.num_experts, 1)
    return total_params(arch) - routed * inactive_share


def largest_linear_params(arch: Architecture, tp=1):
    """Parameters of the largest single linear of a block on one TP rank: weight rows·cols
    plus its bias, over the linears of both block kinds that exist (count > 0)."""
    largest = 0.0
    for moe in (False, True):
        for lin in block_linears(arch, moe):
            rows, cols = lin.dims_on_rank(tp)
            single = rows * cols + lin.bias * cols
            largest = xp.maximum(largest, xp.where(lin.count > 0, single, 0))
    return largest


def largest_module_params(arch: Architecture, tp=1, largest_linear=None):
    """Parameters of the largest single module (DeepSpeed's `largest_layer_params`).

    DeepSpeed takes the max over modules of the parameters a module owns directly
    (`model_to_params`): here the embedding or head (V·h/t) or the biggest single linear
    (`largest_linear_params`, when not given). Fused expert weights are counted per expert, as
    in the Hugging Face implementations.
    """
    largest_linear = largest_linear_params(arch, tp) if largest_linear is None else largest_linear
    return xp.maximum(arch.vocab_size * arch.hidden_size / tp, largest_linear)
