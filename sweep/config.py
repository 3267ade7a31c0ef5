"""The configuration of one training run and the hardware it runs on, as numeric pytrees.

Field names are the project's vocabulary (see `vocabulary.py`): the same keys name grid axes,
`explain` flags (underscores as dashes) and Parquet columns. Categorical fields hold the integer
code of their value, so that every field can be an array axis of a sweep.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax

from sweep import vocabulary as vocab

DEEPSPEED_ADDITIONAL_BUFFER_FACTOR = 1.5  # DeepSpeed's estimator default (stage_1_and_2.py)
# Share of the allocator's reserved memory lost to fragmentation: reserved = allocated /
# (1 - fragmentation). GMLake (Guo et al., ASPLOS 2024) measured 15% on average (up to 33%)
# for eight LLMs trained with PyTorch's caching allocator on A100-80GB.
DEFAULT_FRAGMENTATION = 0.15


COUNT, NUMBER, BOOLEAN, CATEGORY, TARGETS = "count", "number", "boolean", "category", "targets"


def key(default, kind: str, doc: str, low: float | None = None, high: float | None = None,
        below: float | None = None):
    """A configuration field: its default (codes for categories), what kind of value it takes
    (how grid files and command-line flags read it), what it means (the flag's help) and the
    values allowed: low <= value <= high, value < below (counts are whole numbers)."""
    if kind == COUNT and low is None:
        low = 0
    return dataclasses.field(default=default, metadata={
        "kind": kind, "doc": doc, "low": low, "high": high, "below": below})


def value_problem(name: str, value) -> str | None:
    """What is wrong with `value` for the numeric key `name` (None when it is allowed):
    finite, whole for counts, within the key's range."""
    meta = FIELDS[name].metadata
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if meta["kind"] == COUNT and not float(value).is_integer():
        return f"must be a whole number, got {value!r}"
    low, high, below = meta["low"], meta["high"], meta["below"]
    if low is not None and value < low or high is not None and value > high \
            or below is not None and value >= below:
        allowed = " and ".join(x for x in (
            f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else "",
            f"< {below:g}" if below is not None else "") if x)
        return f"must be {allowed}, got {value:g}"
    return None


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainConfig:
    """One training (or inference) configuration. Each field is a vocabulary key: a grid axis,
    an `explain` flag (`--n-gpus`), a Parquet column; `kind` and `doc` in its metadata."""

    n_gpus: float = key(8, COUNT, "GPUs in the job", low=1)
    gpus_per_node: float = key(8, COUNT, "GPUs per node (default: the GPU catalog's node)",
                               low=1)
    tp: float = key(1, COUNT, "tensor-parallel degree", low=1)
    pp: float = key(1, COUNT, "pipeline-parallel degree", low=1)
    vpp: float = key(1, COUNT, "virtual pipeline stages per rank (Megatron interleaving)", low=1)
    cp: float = key(1, COUNT, "context-parallel degree", low=1)
    ep: float = key(1, COUNT, "expert-parallel degree", low=1)
    etp: float = key(0, COUNT, "expert tensor-parallel degree (0: same as tp, Megatron's "
                               "default)")
    sp: float = key(0, BOOLEAN, "sequence parallelism (Megatron, with tp > 1)")
    zero_stage: float = key(0, COUNT, "ZeRO stage 0-3 (FSDP: 2 = SHARD_GRAD_OP, 3 = FULL_SHARD)",
                            high=3)
    framework: float = key(0, CATEGORY, "whose memory accounting")
    precision: float = key(1, CATEGORY, "weights, gradients and compute dtypes")
    optimizer: float = key(0, CATEGORY, "optimizer (its states per parameter)")
    micro_batch: float = key(1, COUNT, "sequences per micro-batch", low=1)
    seq_len: float = key(4096, COUNT, "tokens per sequence", low=1)
    grad_accum: float = key(1, COUNT, "micro-batches per step (gradient accumulation)", low=1)
    recompute: float = key(0, CATEGORY, "activation recomputation")
    flash_attention: float = key(1, BOOLEAN, "FlashAttention (no s x s scores saved)")
    offload: float = key(0, CATEGORY, "ZeRO/FSDP offload to host RAM or NVMe")
    finetune: float = key(0, CATEGORY, "full training or LoRA/QLoRA adapters")
    lora_rank: float = key(16, COUNT, "LoRA rank r", low=1)
    lora_targets: float = key(0b1111111, TARGETS, "LoRA target modules")
    frozen_layers: float = key(0, COUNT, "freeze the embedding and this many leading blocks "
                                         "(full fine-tuning)")
    zero_init: float = key(1, BOOLEAN, "DeepSpeed zero.Init (ZeRO-3 host memory)")
    additional_buffer_factor: float = key(DEEPSPEED_ADDITIONAL_BUFFER_FACTOR, NUMBER,
                                          "DeepSpeed estimator's host-memory safety factor", low=0)
    recompute_layers: float = key(0, COUNT, "with recompute full: blocks per stage recomputed "
                                            "(0: all)")
    fused_cross_entropy: float = key(0, BOOLEAN, "chunked/fused loss: no vocabulary-sized "
                                                 "logits are kept")
    loss_fusion: float = key(0, BOOLEAN, "Megatron-LM --cross-entropy-loss-fusion (a fused "
                                         "kernel, not chunked)")
    capacity_factor: float = key(0, NUMBER, "MoE expert capacity (0: dropless, exactly top-k "
                                            "per token)", low=0)
    mode: float = key(0, CATEGORY, "training or inference")
    kv_cache_dtype: float = key(0, CATEGORY, "inference: KV cache dtype")
    device: float = key(0, CATEGORY, "where byte layouts differ (dropout masks, norm "
                                     "statistics): cuda or the CPU reference")
    fragmentation: float = key(DEFAULT_FRAGMENTATION, NUMBER,
                               "share of reserved memory lost to allocator fragmentation",
                               low=0, below=1)
    first_stage_layers: float = key(0, COUNT, "blocks on the first pipeline stage (0: the even "
                                              "split; Megatron-LM "
                                              "--decoder-first-pipeline-num-layers)")
    last_stage_layers: float = key(0, COUNT, "blocks on the last pipeline stage (0: the even "
                                             "split)")
    embedding_in_split: float = key(0, BOOLEAN, "count the embedding as a layer of the "
                                                "pipeline split")
    loss_in_split: float = key(0, BOOLEAN, "count the loss as a layer of the pipeline split")

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


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


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

