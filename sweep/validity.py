"""Which configurations are valid, as a bit mask: 0 is valid, each set bit names a reason.

Inside a sweep an invalid configuration is a flag, never an exception; `explain` turns the set
bits into an error message with the offending values.
"""

from __future__ import annotations

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import GPU_PLATFORM, Hardware, TrainConfig
from sweep.memory.model_states import (
    DEEPSPEED,
    FSDP,
    GENERIC,
    MEGATRON,
    NO_OFFLOAD,
    OFFLOAD_OPTIMIZER,
    OFFLOAD_PARAMS,
)
from sweep.memory.shard import FULL, QLORA, expert_tp, stage_layer_counts
from sweep.model import Architecture

# (key, explanation) per bit, in bit order. Keys are stable: they are Parquet column values.
REASONS = (
    ("degrees", "n_gpus must be a multiple of tp·pp·cp"),
    ("heads_tp", "num_heads and num_kv_heads must be multiples of tp"),
    ("layers_pp", "every pipeline stage needs a whole number of blocks, a multiple of vpp: "
                  "num_layers (plus the embedding and loss when counted in the split) a "
                  "multiple of pp·vpp, or with first/last_stage_layers the rest a multiple of "
                  "the other stages (Megatron-LM get_num_layers_to_build); uneven stages need "
                  "pp > 1 and no embedding/loss in the split"),
    ("experts_ep", "ep must divide num_experts (and be 1 for a dense model)"),
    ("expert_ranks", "n_gpus/pp must be a multiple of ep·etp"),
    ("vpp", "vpp > 1 needs pp > 1"),
    ("zero_stage", "zero_stage must be 0-3 (megatron: 0 or 1; fsdp: 0, 2 or 3)"),
    ("offload", "offload needs ZeRO (optimizer: stage >= 1; params/nvme: stage 3); "
                "megatron has none; fsdp only offloads optimizer+params at stage >= 2"),
    ("finetune", "lora/qlora need lora_rank > 0 and a framework other than megatron; "
                 "qlora needs 16-bit precision"),
    ("optimizer", "megatron supports adamw, sgd and sgd-momentum"),
    ("frozen_layers", "frozen_layers must be within 0..num_layers (full fine-tuning only)"),
    ("seq_len_cp", "seq_len must be a multiple of cp"),
    ("positive", "n_gpus and every parallel degree must be >= 1"),
    ("cp_flash", "context parallelism (cp > 1) needs flash_attention"),
    ("inference", "inference needs zero_stage 0, no offload and full (not lora) weights"),
    ("ranges", "recompute_layers and capacity_factor must be >= 0, fragmentation in [0, 1)"),
    ("batch", "micro_batch and seq_len must be >= 1"),
    ("pipeline_zero", "DeepSpeed's pipeline engine refuses ZeRO-2 and ZeRO-3 with pp > 1 "
                      "(deepspeed/runtime/pipe/engine.py: 'ZeRO-2 and ZeRO-3 are incompatible "
                      "with pipeline parallelism')"),
    ("interleaved_microbatches", "Megatron-LM's interleaved schedule (vpp > 1) needs the "
                                 "micro-batches per step (grad_accum) to be a multiple of pp "
                                 "(megatron/core/pipeline_parallel/schedules.py, "
                                 "microbatch_group_size_per_vp_stage = pp)"),
    ("platform", "DeepSpeed, Megatron-LM and FSDP2 run on GPUs (CUDA, ROCm); on a TPU only "
                 "the generic (XLA/JAX ZeRO-style) accounting applies"),
)
BIT = {key: 1 << i for i, (key, _) in enumerate(REASONS)}

MEGATRON_OPTIMIZERS = vocab.codes("optimizer", "adamw", "sgd", "sgd-momentum")
SIXTEEN_BIT = vocab.codes("precision", "bf16-mixed", "fp16-mixed", "bf16")


def _is_any(code, allowed):
    hit = code == allowed[0]
    for value in allowed[1:]:
        hit = hit | (code == value)
    return hit


def checks(arch: Architecture, cfg: TrainConfig, hw: Hardware | None = None) -> dict:
    """Each reason's check, True where the configuration passes it (the hardware ones only
    when `hw` is given)."""
    moe = arch.num_experts > 0
    framework, zero, offload = cfg.framework, cfg.zero_stage, cfg.offload
    zero_ok = _is_any(framework, (GENERIC, DEEPSPEED)) & (zero >= 0) & (zero <= 3)
    zero_ok = zero_ok | ((framework == MEGATRON) & _is_any(zero, (0, 1)))
    zero_ok = zero_ok | ((framework == FSDP) & _is_any(zero, (0, 2, 3)))
    offload_ok = (offload == NO_OFFLOAD) | (
        _is_any(framework, (GENERIC, DEEPSPEED))
        & xp.where(offload == OFFLOAD_OPTIMIZER, zero >= 1, zero >= 3)
    )
    offload_ok = offload_ok | ((framework == FSDP) & (offload == OFFLOAD_PARAMS) & (zero >= 2))
    lora = cfg.finetune != FULL
    finetune_ok = ~lora | (
        (cfg.lora_rank > 0)
        & (framework != MEGATRON)
        & ((cfg.finetune != QLORA) | _is_any(cfg.precision, SIXTEEN_BIT))
    )
    frozen_ok = (cfg.frozen_layers >= 0) & (cfg.frozen_layers <= arch.num_layers)
    frozen_ok = frozen_ok & ((cfg.frozen_layers == 0) | (~lora & (framework != MEGATRON)))
    positive = (
        (cfg.tp >= 1) & (cfg.pp >= 1) & (cfg.cp >= 1) & (cfg.ep >= 1) & (cfg.vpp >= 1)
        & (cfg.n_gpus >= 1) & (cfg.etp >= 0)
    )
    passed = {
        "degrees": xp.divides(cfg.tp * cfg.pp * cfg.cp, cfg.n_gpus),
        "heads_tp": xp.divides(cfg.tp, arch.num_heads) & xp.divides(cfg.tp, arch.num_kv_heads),
        "layers_pp": pipeline_split_ok(arch, cfg),
        "experts_ep": xp.where(moe, xp.divides(cfg.ep, arch.num_experts), cfg.ep == 1),
        "expert_ranks": ~moe | xp.divides(cfg.ep * expert_tp(cfg), cfg.n_gpus / cfg.pp),
        "vpp": (cfg.vpp == 1) | (cfg.pp > 1),
        "zero_stage": zero_ok,
        "offload": offload_ok,
        "finetune": finetune_ok,
        "optimizer": (framework != MEGATRON) | _is_any(cfg.optimizer, MEGATRON_OPTIMIZERS),
        "frozen_layers": frozen_ok,
        "seq_len_cp": xp.divides(cfg.cp, cfg.seq_len),
        "positive": positive,
        "cp_flash": (cfg.cp == 1) | (cfg.flash_attention > 0),
        "inference": (cfg.mode == 0) | ((zero == 0) & (offload == NO_OFFLOAD) & ~lora),
        "ranges": (cfg.recompute_layers >= 0) & (cfg.capacity_factor >= 0)
        & (cfg.fragmentation >= 0) & (cfg.fragmentation < 1),
        "batch": (cfg.micro_batch >= 1) & (cfg.seq_len >= 1),
        "pipeline_zero": (framework != DEEPSPEED) | (cfg.pp == 1) | (zero <= 1),
        "interleaved_microbatches": microbatches_ok(grouped_microbatches(cfg), cfg.pp,
                                                    cfg.grad_accum),
    }
    if hw is not None:
        passed["platform"] = (hw.platform == GPU_PLATFORM) | (framework == GENERIC)
    return passed


def grouped_microbatches(cfg: TrainConfig):
    """Megatron-LM's interleaved schedule (vpp > 1) runs micro-batches in groups of pp."""
    return (cfg.framework == MEGATRON) & (cfg.vpp > 1)


def microbatches_ok(grouped, pp, grad_accum):
    """Where micro-batches run in groups of pp, grad_accum is a whole number of groups."""
    return ~grouped | ((grad_accum >= pp) & xp.divides(pp, grad_accum))


def pipeline_split_ok(arch: Architecture, cfg: TrainConfig):
    """Megatron-LM's checks of the split (transformer_block.py `get_num_layers_to_build`):
    whole, non-negative block counts on every stage, each a multiple of vpp."""
    first, middle, last = stage_layer_counts(arch, cfg)
    uneven = (cfg.first_stage_layers > 0) | (cfg.last_stage_layers > 0)
    in_split = (cfg.embedding_in_split > 0) | (cfg.loss_in_split > 0)
    counts_ok = True
    for count in (first, middle, last):
        counts_ok = counts_ok & (count >= 0) & xp.divides(cfg.vpp, count) & xp.divides(1, count)
    given = (cfg.first_stage_layers > 0) * 1 + (cfg.last_stage_layers > 0) * 1
    rest = arch.num_layers - cfg.first_stage_layers - cfg.last_stage_layers
    flags_ok = ((cfg.first_stage_layers >= 0) & (cfg.last_stage_layers >= 0)
                & ((cfg.pp - given > 0) | (rest == 0))
                & ~(uneven & in_split) & ~((uneven | in_split) & (cfg.pp == 1)))
    return counts_ok & flags_ok


def invalid_reasons(arch: Architecture, cfg: TrainConfig, hw: Hardware | None = None):
    """Bit mask of `REASONS` violated by the configuration (0 = valid)."""
    mask = 0
    for key, ok in checks(arch, cfg, hw).items():
        mask = mask + xp.where(ok, 0, BIT[key])
    return mask


def describe(mask: int) -> list[tuple[str, str]]:
    """The (key, explanation) pairs whose bits are set in `mask`."""
    return [reason for i, reason in enumerate(REASONS) if int(mask) >> i & 1]
