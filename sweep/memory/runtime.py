"""Runtime memory: communication buffers, the optimizer step's transient, and what the process
holds outside its tensors (CUDA context, NCCL, allocator fragmentation).

Notation: docs/notation.md. Here mostly P_t trainable parameters on the GPU's shard, N sharding
ranks, w and g weight and gradient bytes, O the runtime overhead, φ the fragmentation.
"""

from __future__ import annotations

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import Hardware, TrainConfig
from sweep.memory import bytes as b
from sweep.memory.model_states import FSDP, GENERIC, MEGATRON, NO_OFFLOAD
from sweep.memory.shard import StageShard, dense_shard_degree, expert_shard_degree

# DeepSpeed ZeRO defaults, in elements (deepspeed/runtime/zero/config.py, commit
# 1b88ac366fc922254d56abda5cf6b1f266556d19): reduce_bucket_size and allgather_bucket_size 5e8.
DEEPSPEED_REDUCE_BUCKET = 5e8
DEEPSPEED_ALLGATHER_BUCKET = 5e8
ADAMW = vocab.code("optimizer", "adamw")


def ddp_bucket_bytes(shard: StageShard, cfg: TrainConfig):
    """PyTorch DDP (zero_stage 0 with `generic`) copies every gradient into its all-reduce
    buckets: "gradient_as_bucket_view ... the saved memory size will be equal to the total
    gradients size" (torch.nn.parallel.DistributedDataParallel docs), g·P_t. None without data
    parallelism. (FSDP2's `replicate`, the fsdp profile's zero_stage 0, reduces one unit at a
    time: model_states.fsdp.)"""
    trainable = shard.trainable_dense + shard.trainable_expert
    return xp.where(dense_shard_degree(cfg) > 1, b.gradient_bytes(cfg.precision) * trainable, 0)


def deepspeed_bucket_bytes(shard: StageShard, cfg: TrainConfig):
    """ZeRO-1/2: a gradient reduce bucket (g bytes) and a parameter all-gather bucket (w), at
    DeepSpeed's default sizes capped at the parameters the rank holds; ZeRO-3: the reduce
    bucket (its gathered parameters are model_states.deepspeed's)."""
    params = shard.base_dense + shard.base_expert + shard.adapters
    w, g = b.weight_bytes(cfg.precision), b.gradient_bytes(cfg.precision)
    reduce = g * xp.minimum(DEEPSPEED_REDUCE_BUCKET, params)
    gather = w * xp.minimum(DEEPSPEED_ALLGATHER_BUCKET, params)
    return reduce + xp.where(cfg.zero_stage >= 3, 0, gather)


def communication_bytes(shard: StageShard, cfg: TrainConfig):
    """Persistent communication buffers by framework and ZeRO stage: DDP's bucket copy of the
    gradients, DeepSpeed's buckets. Megatron-LM's buckets are views into its contiguous
    gradient buffer, already counted as gradients; FSDP2's reduce-scatter and all-reduce
    buffers exist only in backward (model_states.fsdp)."""
    sharded = cfg.zero_stage >= 1
    generic = xp.where(sharded, deepspeed_bucket_bytes(shard, cfg), ddp_bucket_bytes(shard, cfg))
    return xp.where((cfg.framework == MEGATRON) | (cfg.framework == FSDP), 0, generic)


# Transformer Engine's grouped GEMM (MoE experts) gives each of its streams its own cuBLASLt
# workspace (TransformerEngine module/base.py `get_multi_stream_cublas_workspace`,
# `_NUM_MAX_CUBLAS_STREAMS` = 4).
TE_GROUPED_GEMM_STREAMS = 4


def workspace_bytes(arch, cfg: TrainConfig, hw: Hardware):
    """Library workspaces inside PyTorch's allocator: the BLAS workspaces of every process
    (`blas_workspace_bytes`: one per cuBLAS handle and stream, PyTorch's CublasHandlePool.cpp),
    and with Megatron-LM Transformer Engine's (`te_workspace_bytes`), four more for its grouped
    GEMM when the model has routed experts."""
    te = 1 + TE_GROUPED_GEMM_STREAMS * (arch.num_experts > 0)
    return hw.blas_workspace_bytes + xp.where(cfg.framework == MEGATRON,
                                              te * hw.te_workspace_bytes, 0)


def optimizer_step_bytes(shard: StageShard, cfg: TrainConfig):
    """The step's transient: PyTorch's foreach AdamW (`_multi_tensor_adamw`) materialises the
    square root of the second moment (`exp_avg_sq`) for every parameter of the shard, one
    state-sized temporary. DeepSpeed's FusedAdam, Megatron-LM's fused Adam and bitsandbytes'
    8-bit kernels update in place. With the optimizer offloaded the step runs on the CPU
    (DeepSpeedCPUAdam, FSDP2 CPUOffloadPolicy): nothing on the GPU."""
    sharded = cfg.zero_stage >= 1
    trainable = (shard.trainable_dense / xp.where(sharded, dense_shard_degree(cfg), 1)
                 + shard.trainable_expert / xp.where(sharded, expert_shard_degree(cfg), 1))
    state = xp.lookup(b.STATE_ELEMENT_BYTES, cfg.precision) * trainable
    foreach = (cfg.framework == GENERIC) | (cfg.framework == FSDP)
    on_gpu = cfg.offload == NO_OFFLOAD
    return xp.where(foreach & (cfg.optimizer == ADAMW) & on_gpu, state, 0)


def overhead_bytes(allocated, cfg: TrainConfig, hw: Hardware):
    """Outside the tensors: the GPU type's runtime overhead (CUDA context, cuBLAS workspaces,
    NCCL buffers; `runtime_overhead_bytes` in the GPU catalog, with its source) plus the
    allocator's fragmentation φ: reserved = allocated/(1 - φ)."""
    fragmentation = allocated * cfg.fragmentation / (1 - cfg.fragmentation)
    return hw.runtime_overhead_bytes + fragmentation


def reserved_bytes(allocated, cfg: TrainConfig, hw: Hardware):
    """allocated + `overhead_bytes`, as one product: allocated/(1 - φ) + O."""
    return allocated / (1 - cfg.fragmentation) + hw.runtime_overhead_bytes

