"""Runtime memory: communication buffers, the optimizer step's transient, and what the process
holds outside its tensors (CUDA context, NCCL, allocator fragmentation).

Notation as in `model_states.py` (T trainable parameters on the GPU's shard, N sharding ranks,
B one block, w and g weight and gradient bytes).
"""

from __future__ import annotations

from sweep import xp
from sweep.config import Hardware, TrainConfig
from sweep.memory import bytes as b
from sweep.memory.model_states import FSDP, GENERIC, MEGATRON, NO_OFFLOAD
from sweep.memory.shard import StageShard, dense_shard_degree, expert_shard_degree

# DeepSpeed ZeRO defaults, in elements (deepspeed/runtime/zero/config.py, commit
# 1b88ac366fc922254d56abda5cf6b1f266556d19): reduce_bucket_size and allgather_bucket_size
# 5e8, stage3_max_live_parameters 1e9 ("the maximum number of parameters resident per GPU
# before releasing"; with stage3_max_reuse_distance 1e9 the last blocks of the forward pass
# stay gathered for the backward pass).
DEEPSPEED_REDUCE_BUCKET = 5e8
DEEPSPEED_ALLGATHER_BUCKET = 5e8
DEEPSPEED_MAX_LIVE_PARAMETERS = 1e9
ADAMW = 0  # code of vocabulary.OPTIMIZERS


def ddp_bucket_bytes(shard: StageShard, cfg: TrainConfig):
    """PyTorch DDP (zero_stage 0 with `generic` or `fsdp`) copies every gradient into its
    all-reduce buckets: "gradient_as_bucket_view ... the saved memory size will be equal to
    the total gradients size" (torch.nn.parallel.DistributedDataParallel docs). Under
    autocast (fsdp profile) the gradients are fp32, else g. None without data parallelism."""
    trainable = shard.trainable_dense + shard.trainable_expert
    grad_bytes = xp.where(
        (cfg.framework == FSDP) & (b.master_bytes(cfg.precision) > 0),
        b.FP32_BYTES, b.gradient_bytes(cfg.precision),
    )
    return xp.where(dense_shard_degree(cfg) > 1, grad_bytes * trainable, 0)


def deepspeed_bucket_bytes(shard: StageShard, cfg: TrainConfig):
    """ZeRO-1/2: a gradient reduce bucket (g bytes) and a parameter all-gather bucket (w), at
    DeepSpeed's default sizes capped at the parameters the rank holds. ZeRO-3: the reduce
    bucket and the gathered parameters up to the live budget, w·min(1e9, P), beyond the
    largest module's w·LL already counted as weights (prefetched parameters are within it)."""
    params = shard.base_dense + shard.base_expert + shard.adapters
    w, g = b.weight_bytes(cfg.precision), b.gradient_bytes(cfg.precision)
    reduce = g * xp.minimum(DEEPSPEED_REDUCE_BUCKET, params)
    live = xp.maximum(xp.minimum(DEEPSPEED_MAX_LIVE_PARAMETERS, params) - shard.largest_module, 0)
    gather = w * xp.where(cfg.zero_stage >= 3, live,
                          xp.minimum(DEEPSPEED_ALLGATHER_BUCKET, params))
    return reduce + gather


def fsdp_reduce_bytes(shard: StageShard, cfg: TrainConfig):
    """FSDP2 casts a unit's unsharded gradient to reduce_dtype (fp32) for its reduce-scatter
    (`foreach_reduce`): 4·B while the bf16 gradient g·B is still held."""
    mixed = b.master_bytes(cfg.precision) > 0
    return xp.where(mixed, b.FP32_BYTES * shard.block, 0)


def communication_bytes(shard: StageShard, cfg: TrainConfig):
    """Communication buffers by framework and ZeRO stage (Megatron-LM's buckets are views
    into its contiguous gradient buffer, already counted as gradients)."""
    sharded = cfg.zero_stage >= 1
    ddp = ddp_bucket_bytes(shard, cfg)
    generic = xp.where(sharded, deepspeed_bucket_bytes(shard, cfg), ddp)
    fsdp = xp.where(cfg.zero_stage >= 2, fsdp_reduce_bytes(shard, cfg), ddp)
    out = xp.where(cfg.framework == FSDP, fsdp, generic)
    return xp.where(cfg.framework == MEGATRON, 0, out)


def optimizer_step_bytes(shard: StageShard, cfg: TrainConfig):
    """The step's transient: PyTorch's foreach AdamW (`_multi_tensor_adamw`) materialises
    sqrt(v) for every parameter of the shard, one state-sized temporary. DeepSpeed's FusedAdam,
    Megatron-LM's fused Adam and bitsandbytes' 8-bit kernels update in place. With the
    optimizer offloaded the step runs on the CPU (DeepSpeedCPUAdam, FSDP2 CPUOffloadPolicy):
    nothing on the GPU."""
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
    allocator's fragmentation: reserved = allocated/(1 - fragmentation)."""
    fragmentation = allocated * cfg.fragmentation / (1 - cfg.fragmentation)
    return hw.runtime_overhead_bytes + fragmentation


def reserved_bytes(allocated, cfg: TrainConfig, hw: Hardware):
    """allocated + `overhead_bytes`, as one product: allocated/(1 - f) + runtime overhead."""
    return allocated / (1 - cfg.fragmentation) + hw.runtime_overhead_bytes

