"""One vocabulary of names for grid files, CLI flags, Parquet columns and the Python API.

Categorical keys are carried through the formulas as integer codes (their index in the tuples
below) so that they can be swept as array axes; their string values are what users type.
The order of each tuple is part of the on-disk format: append, never reorder.
"""

from __future__ import annotations

import difflib

from sweep.errors import SweepError

FRAMEWORKS = ("generic", "deepspeed", "megatron", "fsdp")
# bf16-autocast: PyTorch autocast (`torch.autocast(dtype=bfloat16)`, the Hugging Face Trainer's
# `bf16=True`): fp32 parameters, gradients and optimizer states, bf16 compute.
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16", "fp8-mixed", "bf16-autocast")
OPTIMIZERS = ("adamw", "adam8bit", "adafactor", "sgd", "sgd-momentum", "lion")
RECOMPUTES = ("none", "selective", "full")
OFFLOADS = ("none", "optimizer", "optimizer+params", "nvme")
FINETUNES = ("full", "lora", "qlora")
MODES = ("train", "inference")
DEVICES = ("cuda", "cpu")  # what stores activations: cuda (and ROCm, TPU) vs the CPU reference
KV_CACHE_DTYPES = ("bf16", "fp8", "int8")
# LoRA target modules, as Hugging Face PEFT names them; a set of targets is a bit mask.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "framework": FRAMEWORKS,
    "precision": PRECISIONS,
    "optimizer": OPTIMIZERS,
    "recompute": RECOMPUTES,
    "offload": OFFLOADS,
    "finetune": FINETUNES,
    "mode": MODES,
    "device": DEVICES,
    "kv_cache_dtype": KV_CACHE_DTYPES,
}


def code(key: str, name: str) -> int:
    """The integer code of a categorical value, for the formulas' named constants
    (`MEGATRON = code("framework", "megatron")`): never a bare number."""
    return CATEGORIES[key].index(name)


def codes(key: str, *names: str) -> tuple[int, ...]:
    return tuple(code(key, name) for name in names)


def by_code(key: str, values: dict) -> tuple:
    """A lookup table over a category's codes from {name: value}; every name must be there."""
    missing = set(CATEGORIES[key]) - set(values)
    if missing or set(values) - set(CATEGORIES[key]):
        raise ValueError(f"{key} table: missing {sorted(missing)}, unknown "
                         f"{sorted(set(values) - set(CATEGORIES[key]))}")
    return tuple(values[name] for name in CATEGORIES[key])


def closest(name: str, allowed: tuple[str, ...] | list[str], n: int = 3) -> list[str]:
    """The allowed names closest to `name` (for 'did you mean' messages): names containing it
    first, then the most similar by `difflib`."""
    key = name.lower()
    containing = [a for a in allowed if key and key in a.lower()]
    similar = difflib.get_close_matches(key, list(allowed), n=n, cutoff=0.4)
    return list(dict.fromkeys(containing + similar))[:n]


def did_you_mean(name: str, allowed: tuple[str, ...] | list[str]) -> str:
    near = closest(name, allowed)
    return f" Did you mean {', '.join(repr(x) for x in near)}?" if near else ""


def encode(key: str, value: str) -> int:
    """Integer code of a categorical value; SweepError naming the key and allowed values."""
    allowed = CATEGORIES[key]
    if value not in allowed:
        hint = did_you_mean(value, allowed)
        msg = f"`{key}` must be one of {list(allowed)}, got {value!r}.{hint}"
        raise SweepError(msg)
    return allowed.index(value)


def decode(key: str, code: int) -> str:
    return CATEGORIES[key][int(code)]


def encode_lora_targets(targets: str) -> int:
    """Bit mask of LoRA target modules from 'q_proj,v_proj', 'all-linear' or 'attention'."""
    names = {"all-linear": LORA_TARGETS, "attention": LORA_TARGETS[:4]}.get(
        targets, tuple(t.strip() for t in targets.split(",") if t.strip())
    )
    mask = 0
    for name in names:
        if name not in LORA_TARGETS:
            allowed = [*LORA_TARGETS, "all-linear", "attention"]
            msg = (
                f"`lora_targets` entries must be among {allowed}, got {name!r}."
                f"{did_you_mean(name, allowed)}"
            )
            raise SweepError(msg)
        mask |= 1 << LORA_TARGETS.index(name)
    if mask == 0:
        raise SweepError("`lora_targets` is empty; name at least one module, e.g. 'q_proj,v_proj'.")
    return mask


def decode_lora_targets(mask: int) -> str:
    return ",".join(n for i, n in enumerate(LORA_TARGETS) if int(mask) >> i & 1)
