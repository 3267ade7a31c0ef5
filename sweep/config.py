"""The configuration of one training run and the hardware it runs on, as numeric pytrees.

Field names are the project's vocabulary (see `vocabulary.py`): the same keys name grid axes,
`explain` flags (underscores as dashes) and Parquet columns. Categorical fields hold the integer
code of their value, so that every field can be an array axis of a sweep.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from sweep import vocabulary as vocab

DEEPSPEED_ADDITIONAL_BUFFER_FACTOR = 1.5  # DeepSpeed's estimator default (stage_1_and_2.py)
# Share of the allocator's reserved memory lost to fragmentation: reserved = allocated /
# (1 - fragmentation). GMLake (Guo et al., ASPLOS 2024) measured 15% on average (up to 33%)
# for eight LLMs trained with PyTorch's caching allocator on A100-80GB.
DEFAULT_FRAGMENTATION = 0.15


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainConfig:
    n_gpus: float = 8
    gpus_per_node: float = 8
    tp: float = 1
    pp: float = 1
    vpp: float = 1
    cp: float = 1
    ep: float = 1
    etp: float = 0  # expert tensor parallelism; 0 = same as tp (Megatron-LM's default)
    sp: float = 0
    zero_stage: float = 0
    framework: float = 0
    precision: float = 1
    optimizer: float = 0
    micro_batch: float = 1
    seq_len: float = 4096
    grad_accum: float = 1
    recompute: float = 0
    flash_attention: float = 1
    offload: float = 0
    finetune: float = 0
    lora_rank: float = 16
    lora_targets: float = 0b1111111
    frozen_layers: float = 0
    zero_init: float = 1
    additional_buffer_factor: float = DEEPSPEED_ADDITIONAL_BUFFER_FACTOR
    recompute_layers: float = 0  # with recompute = full: blocks per stage recomputed, 0 = all
    fused_cross_entropy: float = 0  # chunked/fused loss: no V-sized logits are kept
    loss_fusion: float = 0  # Megatron-LM --cross-entropy-loss-fusion: a fused kernel, not chunked
    capacity_factor: float = 0  # MoE expert capacity; 0 = dropless (exactly top-k per token)
    mode: float = 0  # train, inference
    kv_cache_dtype: float = 0  # bf16, fp8, int8 (inference)
    device: float = 0  # cuda, cpu: where byte layouts differ (dropout masks, norm statistics)
    fragmentation: float = DEFAULT_FRAGMENTATION
    # Uneven pipeline stages (Megatron-LM --decoder-first/last-pipeline-num-layers; 0: the even
    # split) and the embedding or loss counted as a layer in the split
    # (--account-for-embedding-in-pipeline-split, --account-for-loss-in-pipeline-split).
    first_stage_layers: float = 0
    last_stage_layers: float = 0
    embedding_in_split: float = 0
    loss_in_split: float = 0

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_names(cls, **values) -> TrainConfig:
        """Build from user-facing values: categorical strings are encoded, booleans become 0/1."""
        encoded = {}
        for key, value in values.items():
            if key in vocab.CATEGORIES and isinstance(value, str):
                value = vocab.encode(key, value)
            elif key == "lora_targets" and isinstance(value, str):
                value = vocab.encode_lora_targets(value)
            encoded[key] = float(value)
        return cls(**encoded)

    def to_names(self) -> dict:
        """The inverse of `from_names`, for printing (scalar configs only)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in vocab.CATEGORIES:
                out[f.name] = vocab.decode(f.name, value)
            elif f.name == "lora_targets":
                out[f.name] = vocab.decode_lora_targets(value)
            else:
                out[f.name] = float(value)
        return out


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hardware:
    """What the formulas need to know of a GPU and its node.

    The memory formulas read the first four fields; the time model (`sweep/timing`) the rest.
    Bandwidths are per GPU and one direction unless named per node; 0 means unknown (the time
    terms that need it come out infinite). `GpuSpec.hardware()` fills every field from the
    catalog.
    """

    memory_bytes: float
    usable_fraction: float  # of memory_bytes, what the driver exposes to the framework
    host_memory_bytes_per_node: float
    runtime_overhead_bytes: float = 0.0  # CUDA context, NCCL buffers: outside the allocator
    blas_workspace_bytes: float = 0.0  # cuBLAS workspaces, allocated from PyTorch's allocator
    te_workspace_bytes: float = 0.0  # Transformer Engine's cuBLASLt workspace
    bf16_dense_flops: float = 0.0  # peak dense tensor FLOP/s
    fp8_dense_flops: float = 0.0  # 0: no native fp8 matmul
    matmul_efficiency: float = 0.0  # best-shape GEMM FLOP/s / peak (mamf-finder)
    hbm_bandwidth_bytes_per_s: float = 0.0
    intra_node_bandwidth_bytes_per_s: float = 0.0  # scale-up link (NVLink, Infinity Fabric, ICI)
    inter_node_bandwidth_bytes_per_s: float = 0.0  # scale-out network share of one GPU
    scale_up_domain_gpus: float = 0.0  # GPUs on the scale-up link; 0: the node
    pcie_bandwidth_bytes_per_s: float = 0.0  # GPU <-> host
    nvme_bandwidth_bytes_per_s: float = 0.0  # per node, all local NVMe drives together
    nvme_bytes_per_node: float = 0.0
    price_per_gpu_hour_usd: float = 0.0
    platform: float = 0.0  # GPU (CUDA or ROCm) or TPU, `PLATFORMS`


GPU_PLATFORM, TPU_PLATFORM = 0, 1  # what software stacks run on the accelerator
PLATFORMS = ("gpu", "tpu")

