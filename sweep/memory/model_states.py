"""Model-state memory per GPU: weights, fp32 master weights, gradients, optimizer states.

Notation: docs/notation.md. Here mostly P parameters on the GPU's shard (before ZeRO), P_t the
trainable ones, N the ranks ZeRO/FSDP shard them over (n/(t·p) dense, n/(t_e·p·x) experts),
w, g, M weight, gradient and fp32 master bytes per element, o(P_t) optimizer-state bytes, LL the
largest module, B one block (an FSDP unit), U its gathered bytes, R the root parameters.

Each framework profile is a function of (shard, cfg) returning a `ModelStates`; `model_states`
selects the profile by the `framework` code. A sum over the dense and routed-expert parts is
written `per_rank(dense, expert)`, each divided by its own N where it is sharded.

A training step has two peaks (sweep/memory/total.py): the start of the backward pass (every
saved activation and the loss gradient) and the end of backward / optimizer step (every
gradient, no activation). What exists when is part of each profile: `weights`, `gradients`,
`master_weights` and `optimizer_states` persist; `gathered` weights exist from the forward pass
to the end of backward only (ZeRO-3/FSDP all-gathered units, autocast's bf16 casts);
`transient_gradients` are created during backward (`param.grad`, gradient shards: with
`zero_grad(set_to_none=True)`, PyTorch's default, none exist before it unless gradients
accumulate over micro-batches); `backward_transient` is what only the end of backward holds
(units gathered for backward, unsharded unit gradients, reduce-scatter copies).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import TrainConfig
from sweep.memory import bytes as b
from sweep.memory.shard import (
    FULL,
    QLORA,
    StageShard,
    dense_shard_degree,
    expert_shard_degree,
    gpus_on_node,
)
from sweep.model import Architecture

GENERIC, DEEPSPEED, MEGATRON, FSDP = vocab.codes("framework", "generic", "deepspeed",
                                                 "megatron", "fsdp")
NO_OFFLOAD, OFFLOAD_OPTIMIZER, OFFLOAD_PARAMS, OFFLOAD_NVME = vocab.codes(
    "offload", "none", "optimizer", "optimizer+params", "nvme")

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
# DeepSpeed ZeRO-3 `stage3_max_live_parameters` default (deepspeed/runtime/zero/config.py,
# commit 1b88ac366fc922254d56abda5cf6b1f266556d19).
DEEPSPEED_MAX_LIVE_PARAMETERS = 1e9
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
AUTOCAST = vocab.code("precision", "bf16-autocast")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ModelStates:
    """Model-state bytes on one GPU, by when they exist (see the module docstring), and what
    is offloaded to each node's host RAM and NVMe."""

    weights: object
    master_weights: object
    gradients: object
    optimizer_states: object
    host_bytes_per_node: object
    nvme_bytes_per_node: object
    gathered: object = 0.0
    transient_gradients: object = 0.0
    backward_transient: object = 0.0

    def replace(self, **changes) -> ModelStates:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class _Rates:
    """Per-group byte totals before any sharding: all weights, and the gradients (g·P_t),
    master copies (M·P_t) and optimizer states (o(P_t)) of the trainable parameters."""

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


@xp.reused
def linear_rate(cfg: TrainConfig):
    """Bytes per block-linear weight: NF4 with its constants under QLoRA, else
    `LINEAR_WEIGHT_BYTES` (fp8 in fp8-mixed)."""
    nf4 = b.NF4_BYTES + b.NF4_CONSTANT_BYTES
    return xp.where(cfg.finetune == QLORA, nf4, b.linear_weight_bytes(cfg.precision))


@xp.reused
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


@xp.reused
def unit_bytes(shard: StageShard, cfg: TrainConfig):
    """One gathered FSDP/ZeRO-3 unit (the heaviest block with its adapters) at compute bytes:
    its linear weights at `linear_rate`, the rest at w."""
    w = b.weight_bytes(cfg.precision)
    rest = shard.block - shard.block_linear_unit
    return shard.block_linear_unit * linear_rate(cfg) + (rest + shard.adapters_unit) * w


@xp.reused
def autocast_cast_bytes(shard: StageShard, cfg: TrainConfig):
    """PyTorch autocast casts every weight a linear uses to bf16 and the linear saves that
    cast for its backward (torch/amp/autocast_mode.py: casts of leaves that require grad are
    cached until the region exits; `aten::mm` saves both operands): 2 bytes per block-linear
    and head weight, alive from the forward pass into the backward, whatever the sharding
    (the casts are of the gathered weights). QLoRA's NF4 base is dequantised per use by
    bitsandbytes' `matmul_4bit`, which saves the quantised weight, so nothing is cast."""
    linears = xp.where(cfg.finetune == QLORA, 0, shard.block_linear + shard.head_linear)
    return xp.where(cfg.precision == AUTOCAST, b.BF16_BYTES * linears, 0)


@xp.reused
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


@xp.reused
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


@xp.reused
def _sharded(cfg: TrainConfig, dense, expert, from_stage=1):
    """dense/N_dense + expert/N_expert, sharded only when zero_stage >= `from_stage`."""
    dense_degree, expert_degree = _shard_degrees(cfg, from_stage)
    return dense / dense_degree + expert / expert_degree


@xp.reused
def _shard_degrees(cfg: TrainConfig, from_stage):
    """(N_dense, N_expert) where zero_stage >= `from_stage`, else (1, 1)."""
    on = cfg.zero_stage >= from_stage
    return xp.where(on, dense_shard_degree(cfg), 1), xp.where(on, expert_shard_degree(cfg), 1)


def generic(shard: StageShard, cfg: TrainConfig) -> ModelStates:
    """Rajbhandari et al. 2020 (ZeRO), §5 and Table 1: per device

    stage 0: w·P + (g + M)·P_t + o(P_t);  1 (optimizer states sharded): w·P + g·P_t +
    (M·P_t + o(P_t))/N;  2 (and gradients): w·P + (g·P_t + M·P_t + o(P_t))/N;  3 (and
    parameters): (w·P + (g + M)·P_t + o(P_t))/N (the paper's Ψ: without tensor or pipeline
    parallelism, in full training, P = P_t = Ψ). With mixed-precision AdamW, w = g = 2 and
    M·P_t + o(P_t) = 12·P_t. The gradients are created in backward (transient). At stage 3 the
    block being computed and the one prefetched are gathered, 2·U, from the forward pass to the
    end of backward, which also holds one unit's unreduced gradient; at stage 2 the end of
    backward holds one unit's gradients before their reduce-scatter. Offload (ZeRO-Offload, Ren
    et al. 2021): `optimizer` moves master and states to host RAM; `optimizer+params` (stage 3,
    ZeRO-Infinity) also the weight and gradient partitions, the GPU keeping the two gathered
    blocks and one module's gradient; `nvme` puts the partitions on NVMe, swapped through pinned
    host buffers (`nvme_swap_buffer_bytes`). Under autocast the bf16 casts of the weights
    (`autocast_cast_bytes`) are gathered too.
    """
    r = _rates(shard, cfg)
    g = b.gradient_bytes(cfg.precision)
    units = xp.where(cfg.zero_stage >= 3, FSDP_LIVE_UNITS * unit_bytes(shard, cfg), 0)
    unit_grads = g * trainable_unit(shard, cfg)
    states = ModelStates(
        weights=_sharded(cfg, r.weights_dense, r.weights_expert, 3),
        master_weights=_sharded(cfg, r.master_dense, r.master_expert, 1),
        gradients=0,
        optimizer_states=_sharded(cfg, r.states_dense, r.states_expert, 1),
        host_bytes_per_node=0,
        nvme_bytes_per_node=0,
        gathered=units + autocast_cast_bytes(shard, cfg),
        transient_gradients=_sharded(cfg, r.grads_dense, r.grads_expert, 2),
        backward_transient=xp.where(cfg.zero_stage >= 2, units + unit_grads, 0),
    )
    return _offload(shard, cfg, states, g * shard.largest_module)


def nvme_swap_buffer_bytes(shard: StageShard, cfg: TrainConfig):
    """Pinned host RAM one GPU's process holds to swap its partitions to NVMe (DeepSpeed's
    defaults, `NVME_*`): 4 fp32 buffers of the largest optimizer sub-group, min(1e9, P_t/N)
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


def _offload(shard, cfg, states: ModelStates, live_grads) -> ModelStates:
    """Move offloaded per-GPU partitions to host RAM or NVMe (both reported per node: every
    GPU of the run on the node moves its own): the optimizer's master and states, and with
    params (stage 3) the weight and gradient partitions, the GPU then keeping one module's
    gradient (`live_grads`) as it is moved out."""
    optimizer_off = cfg.offload >= OFFLOAD_OPTIMIZER
    params_off = cfg.offload >= OFFLOAD_PARAMS
    moved_optimizer = xp.where(optimizer_off, states.master_weights + states.optimizer_states, 0)
    moved_params = xp.where(params_off, states.weights + states.transient_gradients, 0)
    moved = (moved_optimizer + moved_params) * gpus_on_node(cfg)
    to_nvme = cfg.offload == OFFLOAD_NVME
    pinned = nvme_swap_buffer_bytes(shard, cfg) * gpus_on_node(cfg)
    return states.replace(
        weights=xp.where(params_off, 0, states.weights),
        master_weights=xp.where(optimizer_off, 0, states.master_weights),
        optimizer_states=xp.where(optimizer_off, 0, states.optimizer_states),
        transient_gradients=xp.where(params_off, live_grads, states.transient_gradients),
        host_bytes_per_node=xp.where(to_nvme, pinned, moved),
        nvme_bytes_per_node=xp.where(to_nvme, moved, 0),
    )


@xp.reused
def trainable_unit(shard: StageShard, cfg: TrainConfig):
    """Trainable parameters of one unit (block): the block in full fine-tuning, its adapters
    under LoRA/QLoRA."""
    return xp.where(cfg.finetune == FULL, shard.block, shard.adapters_unit)


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
    sibling has it. Here 2 -> w, the fp16 grads -> g, 4 + 8 -> M + o(1); with bf16/fp16-mixed
    AdamW these are exactly DeepSpeed's numbers. The gradients are created in backward; at
    ZeRO-3 the gathered parameters are the largest module 2LL and the live parameters up to
    `stage3_max_live_parameters` (`runtime.deepspeed_live_parameters`). `nvme`
    (ZeRO-Infinity) puts the offloaded partitions on NVMe and pins swap buffers in host RAM
    (`nvme_swap_buffer_bytes`). Stage 0 (no ZeRO) uses `generic`.
    """
    r = _rates(shard, cfg)
    w, g = b.weight_bytes(cfg.precision), b.gradient_bytes(cfg.precision)
    ll = shard.largest_module
    fp32_grads = _sharded(cfg, DEEPSPEED_FP32_GRAD_BYTES * r.trainable_dense,
                          DEEPSPEED_FP32_GRAD_BYTES * r.trainable_expert)
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
    stage3 = cfg.zero_stage >= 3

    # DeepSpeed's "16" (4 fp32 grads + 4 fp32 params + 8 states) and "18" (+ 2 fp16 params),
    # the partitions of every process on the node.
    node_share = (fp32_grads + master + states + xp.where(off_params, weights_part, 0)) * on_node
    zero_init = cfg.zero_init > 0
    init = xp.where(stage3 & zero_init, DEEPSPEED_INIT_BYTES * ll * on_node, init_host)
    offloaded_host = xp.where(stage3 & zero_init, node_share, xp.maximum(init_host, node_share))
    host = xp.where(to_nvme, xp.maximum(init * abf, nvme_swap_buffer_bytes(shard, cfg) * on_node),
                    xp.where(off_opt, offloaded_host, init) * abf)
    live = w * deepspeed_live_parameters(shard, cfg)
    chosen = ModelStates(
        weights=xp.where(stage3, xp.where(off_params, 0, weights_part),
                         r.weights_dense + r.weights_expert),
        master_weights=xp.where(off_opt, 0, master),
        gradients=0,
        optimizer_states=xp.where(off_opt, 0, states),
        host_bytes_per_node=host,
        nvme_bytes_per_node=xp.where(to_nvme, node_share, 0),
        gathered=xp.where(stage3, w * ll + live, 0) + autocast_cast_bytes(shard, cfg),
        # Offloaded, the 16-bit gradients go to the host as they are reduced (GPU: 2P, 4LL).
        transient_gradients=xp.where(stage3, g * ll, xp.where(off_opt, 0, grads16))
        + xp.where(off_opt, 0, fp32_grads),
        backward_transient=xp.where(stage3, w * ll, 0),
    )
    return _select(cfg.zero_stage == 0, generic(shard, cfg), chosen)


def deepspeed_live_parameters(shard: StageShard, cfg: TrainConfig):
    """ZeRO-3's gathered parameters beyond the largest module: up to
    `stage3_max_live_parameters` (1e9, deepspeed/runtime/zero/config.py) stay resident, and with
    `stage3_max_reuse_distance` (1e9) the last blocks of the forward pass stay gathered for the
    backward pass: min(1e9, P) - LL, at least nothing."""
    params = shard.base_dense + shard.base_expert + shard.adapters
    live = xp.maximum(xp.minimum(DEEPSPEED_MAX_LIVE_PARAMETERS, params) - shard.largest_module, 0)
    return xp.where(cfg.zero_stage >= 3, live, 0)


def _select(condition, if_true: ModelStates, if_false: ModelStates) -> ModelStates:
    return jax.tree_util.tree_map(lambda a, c: xp.where(condition, a, c), if_true, if_false)


# ---- Megatron-LM -------------------------------------------------------------------------------

MEGATRON_VOCAB_DIVISOR = 128  # `--make-vocab-size-divisible-by` default, times tp


def megatron_padded_vocab(arch: Architecture, cfg: TrainConfig):
    """Megatron-LM `_vocab_size_with_padding`: V rounded up to a multiple of 128·t."""
    multiple = MEGATRON_VOCAB_DIVISOR * cfg.tp
    return xp.ceil(arch.vocab_size / multiple) * multiple


def megatron(shard: StageShard, cfg: TrainConfig) -> ModelStates:
    """Megatron-LM's weight and optimizer memory on the stage's shard (counted from the
    module shapes, with the vocabulary padded as Megatron pads it: `megatron_padded_vocab`,
    applied in total.py).

    Megatron-LM's bytes per parameter (megatron/training/theoretical_memory_usage.py,
    NVIDIA/Megatron-LM commit d98e8a64ddf34856e74b24714e3bedb2f5a39553): 18 without the
    distributed optimizer, 6 + 12/N with it (zero_stage 1); "bf16 model params, fp32 main
    gradients, fp32 main params, and fp32 Adam states", i.e. w = 2 (fp8 in the blocks' linears
    with fp8-mixed, `--fp8-param-gather`), main grad 4 in a buffer allocated with the model
    (persistent), M + o(1) = 12. Other precisions and optimizers change w, M and o alone. N is
    the group the distributed optimizer shards over: for dense parameters the data-parallel
    ranks together with the context-parallel ones, n/(t·p) = D·c (megatron/core/distributed/
    distributed_data_parallel.py: `data_parallel_group = self.intra_dp_cp_group`;
    megatron/core/optimizer/__init__.py), not the D = n/(t·p·c) of the source's estimate
    (`args.data_parallel_size`), which would make more context parallelism cost more memory;
    for routed experts the expert data-parallel group, n/(t_e·x·p).
    """
    r = _rates(shard, cfg)
    distributed = cfg.zero_stage >= 1
    dense_dp = xp.where(distributed, dense_shard_degree(cfg), 1)
    expert_dp = xp.where(distributed, expert_shard_degree(cfg), 1)
    trainable = r.trainable_dense + r.trainable_expert
    return ModelStates(
        weights=r.weights_dense + r.weights_expert,
        master_weights=r.master_dense / dense_dp + r.master_expert / expert_dp,
        gradients=MEGATRON_MAIN_GRAD_BYTES * trainable,
        optimizer_states=r.states_dense / dense_dp + r.states_expert / expert_dp,
        host_bytes_per_node=0,
        nvme_bytes_per_node=0,
    )


# ---- PyTorch FSDP2 -----------------------------------------------------------------------------


def fsdp(shard: StageShard, cfg: TrainConfig) -> ModelStates:
    """PyTorch FSDP2 (`fully_shard` per block and on the root), mixed precision as
    `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`; zero_stage 0 is FSDP2's
    `replicate` (DDP).

    Sources (pytorch/pytorch, torch 2.13): torch/distributed/fsdp/_fully_shard/_fsdp_api.py,
    _fsdp_state.py, _fsdp_param_group.py (`_init_mp_dtypes`: a uniform original dtype is
    required of the trainable parameters only, so a frozen base may be stored in another
    dtype), _fsdp_param.py and _fsdp_collectives.py `foreach_reduce`; measured with
    FSDPMemTracker in sweep/measure/step.py. Every parameter is sharded over N ranks in its
    original dtype: in mixed precision the trainable ones in fp32 (our master, 4·P_t/N) with
    fp32 gradient shards (4·P_t/N, created in backward) and optimizer states o(P_t)/N, the
    frozen ones as stored (`frozen_bytes`: a LoRA/QLoRA base at its compute bytes, frozen blocks
    in fp32). In fp32 or pure bf16 the shard is the parameters themselves (w·P_t/N + frozen/N).

    Gathered: with `reshard_after_forward=True` (zero_stage 3) the root's parameters R stay
    gathered from its forward to the end of backward (the root is not resharded) and at the
    start of backward one block is being all-gathered: w·R + U; the end of backward holds the
    root, two units (the one computed and the one prefetched) with one unit's unsharded
    gradient g·B and its fp32 reduce-scatter input 4·B, or, at the root's own reduce (its
    parameters resharded, its gradient shard not yet made), g·R + 4·R. With False
    (zero_stage 2) every unit stays gathered from forward to backward, w·P.
    Non-float storage (QLoRA's NF4 codes) is all-gathered as it is (_fsdp_param.py: no cast).
    `replicate`: fp32 parameters (4P) with bf16 copies through forward and backward (w·P), fp32
    gradients (4·P_t, created in backward) all-reduced one unit at a time through a 4·B buffer.
    `optimizer+params` is `CPUOffloadPolicy`: parameter, gradient and optimizer-state shards
    in host RAM, the step on the CPU.
    """
    r = _rates(shard, cfg)
    w, g = b.weight_bytes(cfg.precision), b.gradient_bytes(cfg.precision)
    mixed = b.master_bytes(cfg.precision) > 0
    reduce_bytes = xp.where(mixed, b.FP32_BYTES, 0)  # the fp32 copy a reduce-scatter reads
    stage = cfg.zero_stage
    unit = unit_bytes(shard, cfg)
    unit_grads = trainable_unit(shard, cfg)
    root_grads = xp.where(cfg.finetune == FULL, shard.root_trainable, 0)
    root = w * shard.root
    all_weights = r.weights_dense + r.weights_expert
    trainable_shard = _sharded(cfg, xp.where(mixed, 0, w * r.trainable_dense),
                               xp.where(mixed, 0, w * r.trainable_expert), 2)
    frozen_shard = _sharded(cfg, r.frozen_dense, r.frozen_expert, 2)
    weight_shard = xp.where(stage >= 2, trainable_shard + frozen_shard, all_weights)
    grad_bytes = xp.where(mixed, b.FP32_BYTES, g)
    grad_shard = _sharded(cfg, grad_bytes * r.trainable_dense, grad_bytes * r.trainable_expert, 2)
    gathered = xp.where(stage >= 3, root + unit, all_weights)
    # The root reduces last, its parameters already resharded and its own gradient shard not
    # yet made; a block reduces with the root and two units gathered.
    root_reduce = (g + reduce_bytes) * root_grads - _sharded(cfg, grad_bytes * root_grads, 0, 2)
    end_of_backward = xp.where(
        stage >= 3,
        xp.maximum(root_reduce,
                   root + FSDP_LIVE_UNITS * unit + (g + reduce_bytes) * unit_grads),
        all_weights + (g + reduce_bytes) * unit_grads)
    replicate = stage < 2
    offloaded = cfg.offload >= OFFLOAD_PARAMS
    master = _sharded(cfg, r.master_dense, r.master_expert, 2)
    states = _sharded(cfg, r.states_dense, r.states_expert, 2)
    frozen_all = r.frozen_dense + r.frozen_expert
    # `replicate` casts to bf16 only what is stored in fp32: a LoRA base is used as it is.
    base_at_compute = xp.where(cfg.finetune == FULL, 0, frozen_all)
    persistent = xp.where(replicate, xp.where(mixed, frozen_all, all_weights), weight_shard)
    on_host = (persistent + master + grad_shard + states) * gpus_on_node(cfg)
    return ModelStates(
        weights=xp.where(offloaded, 0, persistent),
        master_weights=xp.where(offloaded, 0, master),
        gradients=0,
        optimizer_states=xp.where(offloaded, 0, states),
        host_bytes_per_node=xp.where(offloaded, on_host, 0),
        nvme_bytes_per_node=0,
        gathered=xp.where(replicate, xp.where(mixed, all_weights - base_at_compute, 0), gathered)
        + autocast_cast_bytes(shard, cfg),
        transient_gradients=xp.where(offloaded, g * unit_grads, grad_shard),
        backward_transient=xp.where(replicate, b.FP32_BYTES * unit_grads, end_of_backward),
    )


PROFILES = {GENERIC: generic, DEEPSPEED: deepspeed, MEGATRON: megatron, FSDP: fsdp}


def model_states(shard: StageShard, cfg: TrainConfig,
                 frameworks=tuple(PROFILES)) -> ModelStates:
    """The profile named by `cfg.framework`: every profile in `frameworks` (the codes the
    framework can take; a sweep passes its grid's) is evaluated and one is selected, so that
    the framework can be a swept axis."""
    codes = sorted(frameworks)
    chosen = PROFILES[codes[-1]](shard, cfg)
    for code in codes[:-1]:
        chosen = _select(cfg.framework == code, PROFILES[code](shard, cfg), chosen)
    return chosen
