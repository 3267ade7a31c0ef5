"""Model-state memory per GPU: weights, fp32 master weights, gradients, optimizer states.

Notation:

| symbol | meaning                                                                     |
|--------|-----------------------------------------------------------------------------|
| P      | parameters on the GPU's shard (`StageShard.base_*` + adapters), before ZeRO |
| T      | trainable parameters among them                                             |
| N      | ranks sharing them, over which ZeRO/FSDP shard (n/(t·p) dense, n/(t·p·x) experts) |
| w, g   | bytes of a weight / gradient element (`bytes.WEIGHT_BYTES`, `GRADIENT_BYTES`) |
| m      | fp32 master bytes per trainable parameter (4 in mixed precision, else 0)    |
| o(T)   | optimizer-state bytes of T parameters (`bytes.optimizer_state_bytes`)       |
| LL     | parameters of the largest module (DeepSpeed's `largest_layer_params`)       |
| B      | parameters of one block (an FSDP unit)                                      |

Each framework profile is a function of (shard, cfg) returning a `ModelStates`; `model_states`
selects the profile by the `framework` code. A sum over the dense and routed-expert parts is
written `per_rank(dense, expert)`, each divided by its own N where it is sharded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from sweep import xp
from sweep.config import TrainConfig
from sweep.memory import bytes as b
from sweep.memory.shard import (
    FULL,
    QLORA,
    StageShard,
    dense_shard_degree,
    expert_shard_degree,
    expert_tp,
    gpus_on_node,
)
from sweep.model import NORM_WEIGHT, Architecture, moe_layer_count

GENERIC, DEEPSPEED, MEGATRON, FSDP = 0, 1, 2, 3  # codes of vocabulary.FRAMEWORKS
NO_OFFLOAD, OFFLOAD_OPTIMIZER, OFFLOAD_PARAMS, OFFLOAD_NVME = 0, 1, 2, 3  # vocabulary.OFFLOADS

# DeepSpeed keeps an fp32 gradient partition for the optimizer step (`stage_1_and_2.py`
# comment: "4_grads_32bit"; docs/code-docs/source/memory.rst "Note about gradients").
DEEPSPEED_FP32_GRAD_BYTES = b.FP32_BYTES
# DeepSpeed's estimators: "when pytorch creates a model it creates it in fp32 by default (4
# bytes)", once per process on the node (memory.rst, "4 (in 4*n_gpus)").
DEEPSPEED_INIT_BYTES = b.FP32_BYTES
# Megatron-LM accumulates and all-reduces gradients in an fp32 `main_grad` buffer with bf16/fp16
# (`accumulate_allreduce_grads_in_fp32`), the 4 of its "18 bytes per parameter".
MEGATRON_MAIN_GRAD_BYTES = b.FP32_BYTES
# FSDP2 and ZeRO-3 keep gathered the unit (module) being computed and the one prefetched.
FSDP_LIVE_UNITS = 2
# ZeRO-Infinity (offload to NVMe) swaps through pinned host buffers, DeepSpeed's defaults
# (deepspeedai/DeepSpeed commit edaa7221267243c7be7fb49c5d5f5c4fb97b4641):
# offload_optimizer.buffer_count 4 buffers of the largest optimizer sub-group in fp32
# (runtime/swap_tensor/optimizer_utils.py `SwapBufferManager(num_elems=largest_numel,
# count=buffer_count)`; sub groups of `sub_group_size` = 1e9 elements, runtime/zero/config.py),
# offload_param.buffer_count 5 buffers of buffer_size 1e8 parameters, and up to max_in_cpu 1e9
# parameters kept in host RAM (runtime/zero/offload_config.py). "NVMe offloading requires pinned
# (page-locked) memory as swap buffers" (DeepSpeed issue #3000).
NVME_OPTIMIZER_BUFFERS = 4
NVME_SUB_GROUP_ELEMENTS = 1e9
NVME_PARAM_BUFFERS = 5
NVME_PARAM_BUFFER_ELEMENTS = 1e8
NVME_PARAMS_IN_CPU = 1e9
AUTOCAST = 5  # code of "bf16-autocast" in vocabulary.PRECISIONS


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ModelStates:
    weights: object
    master_weights: object
    gradients: object
    optimizer_states: object
    host_bytes_per_node: object
    nvme_bytes_per_node: object

    def replace(self, **changes) -> ModelStates:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class _Rates:
    """Per-group byte totals before any sharding: W (all weights), G, M, O of trainables."""

    weights_dense: object
    weights_expert: object
    grads_dense: object
    grads_expert: object
    master_dense: object
    master_expert: object
    states_dense: object
    states_expert: object
    trainable_dense: object
    trainable_expert: object
    frozen_dense: object  # bytes of the frozen parameters as stored (see `frozen_bytes`)
    frozen_expert: object


def linear_rate(cfg: TrainConfig):
    """Bytes per block-linear weight: NF4 with its constants under QLoRA, else
    `LINEAR_WEIGHT_BYTES` (fp8 in fp8-mixed)."""
    nf4 = b.NF4_BYTES + b.NF4_CONSTANT_BYTES
    return xp.where(cfg.finetune == QLORA, nf4, b.linear_weight_bytes(cfg.precision))


def weight_bytes(shard: StageShard, cfg: TrainConfig):
    """(dense, expert) bytes of the weights on the shard, unsharded.

    Block linear weights at `LINEAR_WEIGHT_BYTES` (fp8 in fp8-mixed), or NF4 with its
    double-quantised constants under QLoRA; everything else, and LoRA adapters, at w.
    """
    w = b.weight_bytes(cfg.precision)
    linear = linear_rate(cfg)
    dense_linear = shard.block_linear - shard.base_expert
    dense = dense_linear * linear + (shard.base_dense - dense_linear) * w + shard.adapters * w
    return dense, shard.base_expert * linear


def unit_bytes(shard: StageShard, cfg: TrainConfig):
    """One gathered FSDP/ZeRO-3 unit (the heaviest block with its adapters) at compute bytes:
    its linear weights at `linear_rate`, the rest at w."""
    w = b.weight_bytes(cfg.precision)
    rest = shard.block - shard.block_linear_unit
    return shard.block_linear_unit * linear_rate(cfg) + (rest + shard.adapters_unit) * w


def autocast_cast_bytes(shard: StageShard, cfg: TrainConfig):
    """PyTorch autocast casts every weight a linear uses to bf16 and the linear saves that
    cast for its backward (torch/amp/autocast_mode.py: casts of leaves that require grad are
    cached until the region exits; `aten::mm` saves both operands): 2 bytes per block-linear
    and head weight, alive from the forward pass into the backward, whatever the sharding
    (the casts are of the gathered weights). QLoRA's NF4 base is dequantised per use by
    bitsandbytes' `matmul_4bit`, which saves the quantised weight, so nothing is cast."""
    linears = xp.where(cfg.finetune == QLORA, 0, shard.block_linear + shard.head_linear)
    return xp.where(cfg.precision == AUTOCAST, b.BF16_BYTES * linears, 0)


def frozen_bytes(shard: StageShard, cfg: TrainConfig):
    """(dense, expert) bytes of the frozen parameters as stored: a LoRA/QLoRA base at its
    compute bytes (NF4 linears under QLoRA: loaded so by `from_pretrained`), the frozen blocks
    of a partial fine-tune at the model's own parameter bytes, fp32 when the framework keeps
    fp32 parameters (FSDP's and autocast's models are fp32 with bf16 compute)."""
    weights_dense, weights_expert = weight_bytes(shard, cfg)
    w = b.weight_bytes(cfg.precision)
    is_full = cfg.finetune == FULL
    keeps_fp32 = (cfg.framework == FSDP) & (b.master_bytes(cfg.precision) > 0)
    stored = xp.where(keeps_fp32, b.FP32_BYTES, w)
    base_dense = weights_dense - w * shard.adapters
    return (xp.where(is_full, stored * shard.frozen_dense, base_dense),
            xp.where(is_full, stored * shard.frozen_expert, weights_expert))


def _rates(shard: StageShard, cfg: TrainConfig) -> _Rates:
    weights_dense, weights_expert = weight_bytes(shard, cfg)
    g, m = b.gradient_bytes(cfg.precision), b.master_bytes(cfg.precision)
    frozen_dense, frozen_expert = frozen_bytes(shard, cfg)
    return _Rates(
        weights_dense=weights_dense,
        weights_expert=weights_expert,
        grads_dense=g * shard.trainable_dense,
        grads_expert=g * shard.trainable_expert,
        master_dense=m * shard.trainable_dense,
        master_expert=m * shard.trainable_expert,
        states_dense=b.optimizer_state_bytes(
            cfg.optimizer, cfg.precision, shard.trainable_dense, shard.factored_dense
        ),
        states_expert=b.optimizer_state_bytes(
            cfg.optimizer, cfg.precision, shard.trainable_expert, shard.factored_expert
        ),
        trainable_dense=shard.trainable_dense,
        trainable_expert=shard.trainable_expert,
        frozen_dense=frozen_dense,
        frozen_expert=frozen_expert,
    )


def _sharded(cfg: TrainConfig, dense, expert, from_stage=1):
    """dense/N_dense + expert/N_expert, sharded only when zero_stage >= `from_stage`."""
    on = cfg.zero_stage >= from_stage
    return dense / xp.where(on, dense_shard_degree(cfg), 1) + expert / xp.where(
        on, expert_shard_degree(cfg), 1
    )


def generic(shard: StageShard, cfg: TrainConfig) -> ModelStates:
    """Rajbhandari et al. 2020 (ZeRO), §5 and Table 1: per device

    stage 0: (w + g + m)Ψ + o;  1 (P_os): (w + g)Ψ + (mΨ + o)/N;  2 (P_os+g): wΨ + (gΨ + mΨ + o)/N;
    3 (P_os+g+p): (w + g + m)Ψ/N + o/N. With mixed-precision AdamW, w = g = 2 and m + o = KΨ,
    K = 12. At stage 3 the block being computed and the one prefetched are gathered,
    2·U (`unit_bytes`), beside the partitions. Offload (ZeRO-Offload, Ren et al. 2021):
    `optimizer` moves master and states to host RAM; `optimizer+params` (stage 3,
    ZeRO-Infinity) also the weight and gradient partitions, the GPU keeping the two gathered
    blocks and one module's gradient; `nvme` puts the partitions on NVMe, swapped through
    pinned host buffers (`nvme_swap_buffer_bytes`). Under autocast the bf16 casts of the
    weights are added (`autocast_cast_bytes`).
    """
    r = _rates(shard, cfg)
    gathered = xp.where(cfg.zero_stage >= 3, FSDP_LIVE_UNITS * unit_bytes(shard, cfg), 0)
    weights = _sharded(cfg, r.weights_dense, r.weights_expert, 3) + gathered
    grads = _sharded(cfg, r.grads_dense, r.grads_expert, 2)
    master = _sharded(cfg, r.master_dense, r.master_expert, 1)
    states = _sharded(cfg, r.states_dense, r.states_expert, 1)
    g = b.gradient_bytes(cfg.precision)
    live_grads = g * shard.largest_module
    states = _offload(shard, cfg, weights, master, grads, states, gathered, live_grads)
    return states.replace(weights=states.weights + autocast_cast_bytes(shard, cfg))


def nvme_swap_buffer_bytes(shard: StageShard, cfg: TrainConfig):
    """Pinned host RAM one GPU's process holds to swap its partitions to NVMe (DeepSpeed's
    defaults, `NVME_*`): 4 fp32 buffers of the largest optimizer sub-group, min(1e9, T/N)
    elements each, 5 parameter buffers of 1e8 elements at w, and the first min(1e9, P/N)
    parameters kept in host RAM at w."""
    w = b.weight_bytes(cfg.precision)
    trainable = _sharded(cfg, shard.trainable_dense, shard.trainable_expert)
    params = _sharded(cfg, shard.base_dense + shard.adapters, shard.base_expert)
    optimizer = NVME_OPTIMIZER_BUFFERS * b.FP32_BYTES * xp.minimum(NVME_SUB_GROUP_ELEMENTS,
                                                                   trainable)
    swapped_params = w * (NVME_PARAM_BUFFERS * NVME_PARAM_BUFFER_ELEMENTS
                          + xp.minimum(NVME_PARAMS_IN_CPU, params))
    return optimizer + swapped_params


def _offload(shard, cfg, weights, master, grads, states, live_weights, live_grads) -> ModelStates:
    """Move offloaded per-GPU components to host RAM or NVMe (both reported per node: every
    GPU of the run on the node moves its own partitions)."""
    optimizer_off = cfg.offload >= OFFLOAD_OPTIMIZER
    params_off = cfg.offload >= OFFLOAD_PARAMS
    moved_optimizer = xp.where(optimizer_off, master + states, 0)
    moved_params = xp.where(params_off, weights - live_weights + grads, 0)
    moved = (moved_optimizer + moved_params) * gpus_on_node(cfg)
    to_nvme = cfg.offload == OFFLOAD_NVME
    pinned = nvme_swap_buffer_bytes(shard, cfg) * gpus_on_node(cfg)
    return ModelStates(
        weights=xp.where(params_off, live_weights, weights),
        master_weights=xp.where(optimizer_off, 0, master),
        gradients=xp.where(params_off, live_grads, grads),
        optimizer_states=xp.where(optimizer_off, 0, states),
        host_bytes_per_node=xp.where(to_nvme, pinned, moved),
        nvme_bytes_per_node=xp.where(to_nvme, moved, 0),
    )


def deepspeed(shard: StageShard, cfg: TrainConfig) -> ModelStates:
    """DeepSpeed's ZeRO estimators, generalised to any precision, optimizer and to tensor and
    pipeline parallelism (each process holds its tp·pp shard; a node holds the partitions of
    every process on it).

    Source: deepspeedai/DeepSpeed, `estimate_zero2_model_states_mem_needs` in
    deepspeed/runtime/zero/stage_1_and_2.py (commit 02aa38c3a55174c87b33c4ad17a304389d037443)
    and `estimate_zero3_model_states_mem_needs` in deepspeed/runtime/zero/stage3.py (commit
    007cca6a2ffe3ed9d393459f4a3081bd54341ba6); N = GPUs sharing the shard, abf =
    additional_buffer_factor, n_node = GPUs of the run on one node.

    ZeRO-1/2 (one code path, stage_1_and_2.py), no offload: GPU 2P + 18P/N where
    18 = 2 fp16 grads + 4 fp32 grads + 4 fp32 params + 8 Adam states; CPU (model init)
    4P·n_node·abf. Offloaded optimizer: GPU 2P, CPU max(4P·n_node, 16P·n_node/N)·abf: the
    estimator's P·max(4N, 16)·abf on one node without tp/pp, where every partition lives on
    that node. ZeRO-3, no offload: GPU 4LL + 18P/N (2 fp16 params + 4 fp32 grads + 4 + 8); CPU
    4LL·n_node·abf with zero_init, else 4P·n_node·abf. Offloaded optimizer: GPU 4LL + 2P/N, CPU
    16P·n_node/N·abf (zero_init) or max(4P·n_node, 16P·n_node/N)·abf. Offloaded optimizer and
    params: GPU 4LL, CPU 18P·n_node/N·abf, likewise (the estimator's 16P/nodes and 18P/nodes).
    The ZeRO-2 estimator's offload figure, P·max(4·total_gpus, 16)·abf, is the per-node one
    only on a single node: for several nodes it counts every process's init copy and every
    node's partitions; the per-node figure is max(4·n_node, 16/nodes)·P·abf, as its ZeRO-3
    sibling has it. Here 2 -> w, the fp16 grads -> g,
    4 + 8 -> m + o(T); with bf16/fp16-mixed AdamW these are exactly DeepSpeed's numbers.
    `nvme` (ZeRO-Infinity) puts the offloaded partitions on NVMe and pins swap buffers in host
    RAM (`nvme_swap_buffer_bytes`). Stage 0 (no ZeRO) uses `generic`.
    """
    r = _rates(shard, cfg)
    w, g = b.weight_bytes(cfg.precision), b.gradient_bytes(cfg.precision)
    ll = shard.largest_module
    fp32_grads_dense = DEEPSPEED_FP32_GRAD_BYTES * r.trainable_dense
    fp32_grads_expert = DEEPSPEED_FP32_GRAD_BYTES * r.trainable_expert
    fp32_grads = _sharded(cfg, fp32_grads_dense, fp32_grads_expert)
    grads16 = _sharded(cfg, r.grads_dense, r.grads_expert)
    master = _sharded(cfg, r.master_dense, r.master_expert)
    states = _sharded(cfg, r.states_dense, r.states_expert)
    weights_part = _sharded(cfg, r.weights_dense, r.weights_expert)
    params = shard.base_dense + shard.base_expert + shard.adapters
    on_node = gpus_on_node(cfg)
    abf = cfg.additional_buffer_factor
    # P·4·n_node: an fp32 copy of its shard per process while the model is built on the CPU.
    init_host = DEEPSPEED_INIT_BYTES * params * on_node
    off_opt = cfg.offload >= OFFLOAD_OPTIMIZER
    off_params = cfg.offload >= OFFLOAD_PARAMS
    to_nvme = cfg.offload == OFFLOAD_NVME

    # DeepSpeed's "16" (4 fp32 grads + 4 fp32 params + 8 states) and "18" (+ 2 fp16 params),
    # the partitions of every process on the node.
    optimizer_part = fp32_grads + master + states
    node_share = (optimizer_part + xp.where(off_params, weights_part, 0)) * on_node
    pinned = nvme_swap_buffer_bytes(shard, cfg) * on_node
    stage12 = ModelStates(
        weights=r.weights_dense + r.weights_expert,
        master_weights=xp.where(off_opt, 0, master),
        gradients=xp.where(off_opt, 0, grads16 + fp32_grads),
        optimizer_states=xp.where(off_opt, 0, states),
        host_bytes_per_node=xp.where(off_opt, xp.maximum(init_host, node_share), init_host)
        * abf,
        nvme_bytes_per_node=0,
    )
    zero_init = cfg.zero_init > 0
    init3 = xp.where(zero_init, DEEPSPEED_INIT_BYTES * ll * on_node, init_host)
    stage3 = ModelStates(
        weights=w * ll + xp.where(off_params, 0, weights_part),
        master_weights=xp.where(off_opt, 0, master),
        gradients=g * ll + xp.where(off_opt, 0, fp32_grads),
        optimizer_states=xp.where(off_opt, 0, states),
        host_bytes_per_node=xp.where(
            off_opt, xp.where(zero_init, node_share, xp.maximum(init_host, node_share)), init3)
        * abf,
        nvme_bytes_per_node=0,
    )
    chosen = _select(cfg.zero_stage >= 3, stage3, stage12)
    init = xp.where(cfg.zero_stage >= 3, init3, init_host)
    chosen = chosen.replace(
        weights=chosen.weights + autocast_cast_bytes(shard, cfg),
        host_bytes_per_node=xp.where(to_nvme, xp.maximum(init * abf, pinned),
                                     chosen.host_bytes_per_node),
        nvme_bytes_per_node=xp.where(to_nvme, node_share, 0),
    )
    return _select(cfg.zero_stage == 0, generic(shard, cfg), chosen)


def _select(condition, if_true: ModelStates, if_false: ModelStates) -> ModelStates:
    return jax.tree_util.tree_map(lambda a, c: xp.where(condition, a, c), if_true, if_false)


# ---- Megatron-LM -------------------------------------------------------------------------------

MEGATRON_VOCAB_DIVISOR = 128  # `--make-vocab-size-divisible-by` default, times tp


def megatron_padded_vocab(arch: Architecture, cfg: TrainConfig):
    """Megatron-LM `_vocab_size_with_padding`: V rounded up to a multiple of 128·t."""
    multiple = MEGATRON_VOCAB_DIVISOR * cfg.tp
    return xp.ceil(arch.vocab_size / multiple) * multiple


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class MegatronShard:
    """Megatron-LM's parameter counts on its most loaded shard (first pipeline stage)."""

    dense: object  # tp-sharded + replicated: optimizer sharded over d = n/(t·p·c)
    expert: object  # routed experts: optimizer sharded over n/(t_e·x·p)


def megatron_shard(arch: Architecture, cfg: TrainConfig) -> MegatronShard:
    """`compute_weight_and_optimizer_memory`'s parameter counts, term for term.

    Source: megatron/training/theoretical_memory_usage.py in the expert-parallel version of
    yuzhongw-nvidia/Megatron-LM commit e851e7d22d2ad4c936d90284b257912b76e84115 (ported as
    Megatron-LM PR #4687): tp-sharded attention/MLP/embeddings, replicated norms and router,
    routed experts split by etp·ep, the optimizer sharded over d and the expert d. The older
    upstream version (NVIDIA/Megatron-LM commit 00caa53af30912914981c86f39db123961678bbd)
    agrees for dense models at tp = 1; it divides norms by tp and leaves out the router.
    No biases except the router's with `add_bias_linear`; norm_size = 1 (RMSNorm) or 2
    (LayerNorm); gated multiplier 3/2; MTP blocks and latent MoE are absent from the catalog.
    """
    h, a, k, d = arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim
    norm_size = NORM_WEIGHT + arch.norm_bias
    gated = xp.where(arch.gated_mlp > 0, 3 / 2, 1)
    q_head = arch.qk_nope_head_dim + arch.qk_rope_head_dim
    q_term = xp.where(
        arch.q_lora_rank > 0,
        arch.q_lora_rank * (h + a * q_head + norm_size),
        h * a * q_head,
    )
    mla_attention = (
        q_term
        + arch.kv_lora_rank * (h + a * (arch.qk_nope_head_dim + arch.v_head_dim) + norm_size)
        + h * arch.qk_rope_head_dim
        + a * arch.v_head_dim * h
    )
    # 2·h·h·((1 + k/a)·(a·d/h)) in the source.
    standard_attention = 2 * h * (a * d + k * d)
    attention = xp.where(arch.mla > 0, mla_attention, standard_attention)
    dense_mlp = 2 * h * arch.ffn_hidden_size * gated
    shared = 2 * h * arch.num_shared_experts * arch.shared_expert_ffn_hidden_size * gated
    routed = 2 * h * arch.moe_ffn_hidden_size * arch.num_experts * gated
    layernorms = 2 * h * norm_size
    router = xp.where(arch.num_experts > 0, (h + arch.linear_bias) * arch.num_experts, 0)
    n_moe = moe_layer_count(arch)
    n_dense = arch.num_layers - n_moe
    embedding = h * megatron_padded_vocab(arch, cfg)
    tp_sharded_block = (attention + dense_mlp) * n_dense + (attention + shared) * n_moe
    replicated_block = layernorms * n_dense + (layernorms + router) * n_moe + norm_size * h
    untied_single_stage = (1 - arch.tied_embeddings) * (cfg.pp == 1)
    tp_sharded = (tp_sharded_block / cfg.pp + embedding * (1 + untied_single_stage)) / cfg.tp
    expert = routed * n_moe / cfg.pp / (expert_tp(cfg) * cfg.ep)
    return MegatronShard(dense=tp_sharded + replicated_block / cfg.pp, expert=expert)


def megatron(arch: Architecture, cfg: TrainConfig) -> ModelStates:
    """Megatron-LM's weight and optimizer memory, split into our components.

    The source's bytes per parameter: 18 without the distributed optimizer, 6 + 12/d with it
    (zero_stage 1); "bf16 model params, fp32 main gradients, fp32 main params, and fp32 Adam
    states", i.e. w = 2, main grad 4, m + o = 12. Other precisions and optimizers change w, m
    and o alone. d is the group the distributed optimizer shards over: for dense parameters
    the data-parallel ranks together with the context-parallel ones, n/(t·p) (Megatron-LM
    megatron/core/distributed/distributed_data_parallel.py: `data_parallel_group =
    self.intra_dp_cp_group`, and megatron/core/optimizer/__init__.py, commit
    d98e8a64ddf34856e74b24714e3bedb2f5a39553), not the n/(t·p·c) of the source's estimate
    (`args.data_parallel_size`), which would make more context parallelism cost more memory;
    for routed experts the expert data-parallel group, n/(t_e·x·p).
    """
    shard = megatron_shard(arch, cfg)
    distributed = cfg.zero_stage >= 1
    dense_dp = xp.where(distributed, dense_shard_degree(cfg), 1)
    expert_dp = xp.where(distributed, expert_shard_degree(cfg), 1)
    params = shard.dense + shard.expert
    states_per_param = b.optimizer_state_bytes(cfg.optimizer, cfg.precision, 1, 0)
    optimizer_params = shard.dense / dense_dp + shard.expert / expert_dp
    return ModelStates(
        weights=b.weight_bytes(cfg.precision) * params,
        master_weights=b.master_bytes(cfg.precision) * optimizer_params,
        gradients=MEGATRON_MAIN_GRAD_BYTES * params,
        optimizer_states=states_per_param * optimizer_params,
        host_bytes_per_node=0,
        nvme_bytes_per_node=0,
    )


# ---- PyTorch FSDP2 -----------------------------------------------------------------------------


def fsdp(shard: StageShard, cfg: TrainConfig) -> ModelStates:
    """PyTorch FSDP2 (`fully_shard`), one unit per block, mixed precision as
    `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`.

    Sources (pytorch/pytorch, torch 2.13): torch/distributed/fsdp/_fully_shard/_fsdp_api.py,
    _fsdp_param_group.py (`_init_mp_dtypes`: a uniform original dtype is required of the
    trainable parameters only, so a frozen base may be stored in another dtype) and
    _fsdp_collectives.py `foreach_reduce`. Every parameter is sharded over N ranks in its
    original dtype: in mixed precision the trainable ones in fp32 (our master, 4T/N), with fp32
    gradient shards (4T/N) and optimizer states o(T)/N, the frozen ones as stored
    (`frozen_bytes`: a LoRA/QLoRA base at its compute bytes, frozen blocks in fp32). The
    compute copy is the all-gathered unit: with `reshard_after_forward=True` (zero_stage 3,
    FULL_SHARD) the unit computed and the one prefetched, 2·U; with False (zero_stage 2,
    SHARD_GRAD_OP) every unit stays gathered from forward to backward, w·P. One unit's unsharded
    gradient g·B (of its trainable parameters) is live before its reduce-scatter. In fp32 or
    pure bf16 the shard is the parameters themselves (w·T/N + frozen/N). zero_stage 0 is DDP
    under `torch.autocast`, whose cache keeps the bf16 cast of every weight for the backward
    pass: w·P + fp32 parameters 4P + fp32 gradients 4P + o(T). `optimizer+params` is
    `CPUOffloadPolicy`: parameter, gradient and optimizer-state shards in host RAM, the step on
    the CPU.
    """
    r = _rates(shard, cfg)
    w, g = b.weight_bytes(cfg.precision), b.gradient_bytes(cfg.precision)
    mixed = b.master_bytes(cfg.precision) > 0
    sharded = cfg.zero_stage >= 2
    compute_copy = xp.where(
        cfg.zero_stage >= 3, FSDP_LIVE_UNITS * unit_bytes(shard, cfg),
        r.weights_dense + r.weights_expert,
    )
    trainable_shard = xp.where(mixed, 0, w * r.trainable_dense), xp.where(
        mixed, 0, w * r.trainable_expert)
    frozen_shard = _sharded(cfg, r.frozen_dense, r.frozen_expert, 2)
    weight_shard = xp.where(
        sharded, _sharded(cfg, *trainable_shard, 2) + frozen_shard, 0)
    master = _sharded(cfg, r.master_dense, r.master_expert, 2)
    grad_bytes = xp.where(mixed, b.FP32_BYTES, g)
    grad_shard = _sharded(cfg, grad_bytes * r.trainable_dense, grad_bytes * r.trainable_expert, 2)
    states = _sharded(cfg, r.states_dense, r.states_expert, 2)
    is_full = cfg.finetune == FULL
    unit_grads = g * xp.where(is_full, shard.block, shard.adapters_unit)
    offloaded = cfg.offload >= OFFLOAD_PARAMS
    on_host = (weight_shard + master + grad_shard + states) * gpus_on_node(cfg)
    return ModelStates(
        weights=compute_copy + xp.where(offloaded, 0, weight_shard)
        + autocast_cast_bytes(shard, cfg),
        master_weights=xp.where(offloaded, 0, master),
        gradients=xp.where(sharded, unit_grads, 0) + xp.where(offloaded, 0, grad_shard),
        optimizer_states=xp.where(offloaded, 0, states),
        host_bytes_per_node=xp.where(offloaded, on_host, 0),
        nvme_bytes_per_node=0,
    )


PROFILES = {
    GENERIC: lambda arch, shard, cfg: generic(shard, cfg),
    DEEPSPEED: lambda arch, shard, cfg: deepspeed(shard, cfg),
    MEGATRON: lambda arch, shard, cfg: megatron(arch, cfg),
    FSDP: lambda arch, shard, cfg: fsdp(shard, cfg),
}


def model_states(arch: Architecture, shard: StageShard, cfg: TrainConfig,
                 frameworks=tuple(PROFILES)) -> ModelStates:
    """The profile named by `cfg.framework`: every profile in `frameworks` (the codes the
    framework can take; a sweep passes its grid's) is evaluated and one is selected, so that
    the framework can be a swept axis."""
    codes = sorted(frameworks)
    chosen = PROFILES[codes[-1]](arch, shard, cfg)
    for code in codes[:-1]:
        chosen = _select(cfg.framework == code, PROFILES[code](arch, shard, cfg), chosen)
    return chosen
