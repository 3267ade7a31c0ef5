"""Whole-training-step cases: the reference model at real sizes (Llama-3.1-8B and 70B blocks with
their embedding and head), how it is trained, and the matching `Architecture` + `TrainConfig`.

Each case names the feature it covers (the labels of `FEATURES`, not notation symbols):
"a": one rank, no sharding (generic profile, zero_stage 0), and DDP-style data parallelism with
FSDP2's `replicate` per block and root in mixed precision (fsdp profile at zero_stage 0);
"b": FSDP2 `fully_shard` per block and root with `MixedPrecisionPolicy(bf16, fp32)` (fsdp
profile; reshard_after_forward True is zero_stage 3, False zero_stage 2);
"c": activation checkpointing per block (recompute full); "d": frozen leading blocks (and the
embedding); "e": LoRA and QLoRA-style frozen bases under FSDP2; "f": `torch.autocast(bf16)`
with fp32 parameters (precision bf16-autocast).
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep import catalog
from sweep.config import TrainConfig
from sweep.model import Architecture

FEATURES = {
    "a": "one rank / DDP-style",
    "b": "FSDP2",
    "c": "activation checkpointing",
    "d": "frozen leading blocks",
    "e": "LoRA / QLoRA under FSDP2",
    "f": "autocast",
}
NODE_GPUS = 8
WRAPS = ("none", "fully_shard", "replicate")  # one rank; FSDP2; FSDP2's DDP (`replicate`)
# reshard_after_forward -> our zero_stage (FULL_SHARD / SHARD_GRAD_OP)
FSDP_ZERO_STAGE = {True: 3, False: 2}


@dataclass(frozen=True)
class StepCase:
    """One training step to track. `wrap`: one of `WRAPS`, applied per block and to the
    root. `precision` is our vocabulary's: fp32, bf16 (pure bf16
    parameters, gradients and states), bf16-mixed (FSDP2 with fp32 sharded parameters and
    bf16 compute; for LoRA/QLoRA a bf16 or NF4 frozen base and fp32 adapters), bf16-autocast
    (fp32 parameters, forward under `torch.autocast`)."""

    name: str
    feature: str
    model: str = "llama-3.1-8b"
    blocks: int = 2
    micro_batch: int = 1
    seq_len: int = 4096
    grad_accum: int = 1
    wrap: str = "none"
    world_size: int = 1
    reshard_after_forward: bool = True
    precision: str = "bf16"
    recompute: str = "none"
    frozen_layers: int = 0
    finetune: str = "full"
    lora_rank: int = 16

    @property
    def arch(self) -> Architecture:
        """The catalog model's shapes with this case's number of blocks."""
        return catalog.model(self.model).arch.replace(num_layers=float(self.blocks))

    @property
    def config(self) -> TrainConfig:
        framework, zero_stage = {
            "none": ("generic", 0),
            "fully_shard": ("fsdp", FSDP_ZERO_STAGE[self.reshard_after_forward]),
            "replicate": ("fsdp", 0),
        }[self.wrap]
        return TrainConfig.from_names(
            framework=framework, zero_stage=zero_stage, precision=self.precision,
            optimizer="adamw", n_gpus=self.world_size,
            gpus_per_node=min(self.world_size, NODE_GPUS), micro_batch=self.micro_batch,
            seq_len=self.seq_len, grad_accum=self.grad_accum, recompute=self.recompute,
            frozen_layers=self.frozen_layers, finetune=self.finetune, lora_rank=self.lora_rank,
            lora_targets="all-linear", flash_attention=True, device="cpu", fragmentation=0,
        )

    def describe(self) -> str:
        parts = [f"{self.model} x{self.blocks} blocks", f"b={self.micro_batch}",
                 f"s={self.seq_len}", self.precision]
        if self.wrap == "fully_shard":
            parts.append(f"FSDP2 N={self.world_size} reshard={self.reshard_after_forward}")
        elif self.wrap == "replicate":
            parts.append(f"replicate N={self.world_size}")
        if self.grad_accum > 1:
            parts.append(f"grad_accum={self.grad_accum}")
        if self.recompute != "none":
            parts.append(f"recompute={self.recompute}")
        if self.frozen_layers:
            parts.append(f"frozen={self.frozen_layers}")
        if self.finetune != "full":
            parts.append(f"{self.finetune} r={self.lora_rank}")
        return ", ".join(parts)


FSDP = dict(wrap="fully_shard", world_size=8, precision="bf16-mixed")


def quick_cases() -> list[StepCase]:
    """Small and fast (two or three 8B blocks): at least one per feature."""
    return [
        StepCase("single-bf16", "a"),
        StepCase("single-bf16-accum2", "a", grad_accum=2),
        StepCase("single-fp32", "a", precision="fp32"),
        StepCase("replicate", "a", wrap="replicate", world_size=8, precision="bf16-mixed"),
        StepCase("fsdp-reshard", "b", **FSDP),
        StepCase("fsdp-no-reshard", "b", **FSDP, reshard_after_forward=False),
        StepCase("fsdp-checkpoint", "c", **FSDP, recompute="full"),
        StepCase("single-checkpoint", "c", recompute="full"),
        StepCase("fsdp-frozen", "d", blocks=3, frozen_layers=2, **FSDP),
        StepCase("single-frozen", "d", blocks=3, frozen_layers=2),
        StepCase("fsdp-lora", "e", finetune="lora", **FSDP),
        StepCase("fsdp-qlora", "e", finetune="qlora", **FSDP),
        StepCase("single-autocast", "f", precision="bf16-autocast"),
    ]


def doc_cases() -> list[StepCase]:
    """The test cases plus larger ones: 4 blocks, 70B blocks, world sizes 8 to 64, longer
    sequences."""
    big = dict(wrap="fully_shard", precision="bf16-mixed")
    return quick_cases() + [
        StepCase("fsdp-8b-x4-n16", "b", blocks=4, world_size=16, **big),
        StepCase("fsdp-70b-x2-n64", "b", model="llama-3.1-70b", world_size=64, **big),
        StepCase("fsdp-70b-x2-n32-no-reshard", "b", model="llama-3.1-70b", world_size=32,
                 reshard_after_forward=False, **big),
        StepCase("fsdp-70b-x4-n64-checkpoint-s8k", "c", model="llama-3.1-70b", blocks=4,
                 world_size=64, seq_len=8192, recompute="full", **big),
        StepCase("fsdp-8b-x4-n8-s1k", "b", blocks=4, seq_len=1024, world_size=8, **big),
        StepCase("fsdp-70b-x4-n64-frozen2", "d", model="llama-3.1-70b", blocks=4,
                 frozen_layers=2, world_size=64, **big),
        StepCase("fsdp-70b-x2-n64-qlora", "e", model="llama-3.1-70b", finetune="qlora",
                 world_size=64, **big),
        StepCase("fsdp-70b-x2-n64-lora-r64", "e", model="llama-3.1-70b", finetune="lora",
                 lora_rank=64, world_size=64, **big),
        StepCase("single-8b-x4-autocast-s8k", "f", blocks=4, seq_len=8192,
                 precision="bf16-autocast"),
        StepCase("single-8b-x4-s1k", "a", blocks=4, seq_len=1024),
    ]
