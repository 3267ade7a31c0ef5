"""Model and GPU catalogs: TOML data files shipped in the package, every entry with its source.

`model(name_or_path)` takes a catalog name or the path of a Hugging Face `config.json`;
`gpu(name)` a catalog name. Unknown names get a `SweepError` listing the closest names.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

from sweep.config import Hardware
from sweep.errors import SweepError
from sweep.model import Architecture, ModelSpec
from sweep.vocabulary import did_you_mean

MLP_KINDS = {"gelu": 0, "swiglu": 1}
NORM_KINDS = {"rmsnorm": 0, "layernorm": 1}
_NUMERIC_MODEL_KEYS = {f.name for f in fields(Architecture)}


@dataclass(frozen=True)
class GpuSpec:
    name: str
    display_name: str
    vendor: str
    memory_bytes: float
    memory_note: str
    usable_fraction: float
    usable_fraction_source: str
    bf16_dense_flops: float
    fp8_dense_flops: float
    hbm_bandwidth_bytes_per_s: float
    devices_per_node: int
    host_memory_bytes_per_node: float
    intra_node_bandwidth_bytes_per_s: float
    inter_node_bandwidth_bytes_per_s: float
    bandwidth_note: str
    source: str
    runtime_overhead_bytes: int
    runtime_overhead_source: str
    matmul_efficiency: float
    matmul_efficiency_note: str
    pcie_bandwidth_bytes_per_s: float
    nvme_bandwidth_bytes_per_s: float
    nvme_bytes_per_node: float
    io_note: str
    price_per_gpu_hour_usd: float
    price_note: str
    scale_up_domain_gpus: int = 0  # GPUs on one NVLink/ICI domain when larger than the node

    def hardware(self, price_per_gpu_hour_usd: float | None = None) -> Hardware:
        """The numbers the formulas read; `price_per_gpu_hour_usd` overrides the catalog's."""
        price = self.price_per_gpu_hour_usd if price_per_gpu_hour_usd is None else (
            price_per_gpu_hour_usd)
        return Hardware(
            memory_bytes=float(self.memory_bytes),
            usable_fraction=float(self.usable_fraction),
            host_memory_bytes_per_node=float(self.host_memory_bytes_per_node),
            runtime_overhead_bytes=float(self.runtime_overhead_bytes),
            bf16_dense_flops=float(self.bf16_dense_flops),
            fp8_dense_flops=float(self.fp8_dense_flops),
            matmul_efficiency=float(self.matmul_efficiency),
            hbm_bandwidth_bytes_per_s=float(self.hbm_bandwidth_bytes_per_s),
            intra_node_bandwidth_bytes_per_s=float(self.intra_node_bandwidth_bytes_per_s),
            inter_node_bandwidth_bytes_per_s=float(self.inter_node_bandwidth_bytes_per_s),
            scale_up_domain_gpus=float(max(self.scale_up_domain_gpus, self.devices_per_node)),
            pcie_bandwidth_bytes_per_s=float(self.pcie_bandwidth_bytes_per_s),
            nvme_bandwidth_bytes_per_s=float(self.nvme_bandwidth_bytes_per_s),
            nvme_bytes_per_node=float(self.nvme_bytes_per_node),
            price_per_gpu_hour_usd=float(price),
        )


def _read_toml(filename: str) -> dict:
    return tomllib.loads(resources.files(__package__).joinpath(filename).read_text("utf-8"))


def architecture_from_entry(entry: dict, where: str) -> Architecture:
    """An `Architecture` from a catalog entry (`mlp`/`norm` names, booleans as 0/1)."""
    values = {}
    for key, value in entry.items():
        if key == "mlp":
            values["gated_mlp"] = _choice(MLP_KINDS, value, where, key)
        elif key == "norm":
            values["norm_bias"] = _choice(NORM_KINDS, value, where, key)
        elif key in _NUMERIC_MODEL_KEYS:
            values[key] = float(value)
    values["mla"] = float("kv_lora_rank" in entry)
    return Architecture(**values)


def _choice(choices: dict, value, where: str, key: str):
    if value not in choices:
        raise SweepError(f"{where}: `{key}` must be one of {list(choices)}, got {value!r}.")
    return choices[value]


@functools.cache
def models() -> dict[str, ModelSpec]:
    """Every catalog model, by name."""
    out = {}
    for name, entry in _read_toml("models.toml").items():
        out[name] = ModelSpec(
            name=name,
            display_name=entry["display_name"],
            arch=architecture_from_entry(entry, f"models.toml [{name}]"),
            source=entry["source"],
            published_params=float(entry["published_params"]),
            published_params_source=entry["published_params_source"],
            published_params_rounding=float(entry.get("published_params_rounding", 0.0)),
            notes=entry.get("notes", ""),
            extra={"family": entry["family"]},
        )
    return out


@functools.cache
def gpus() -> dict[str, GpuSpec]:
    """Every catalog GPU/accelerator, by name."""
    return {name: GpuSpec(name=name, **entry) for name, entry in _read_toml("gpus.toml").items()}


def _lookup(catalog: dict, name: str, kind: str):
    key = name.strip().lower()
    if key in catalog:
        return catalog[key]
    by_display = {spec.display_name.lower(): spec for spec in catalog.values()}
    if key in by_display:
        return by_display[key]
    raise SweepError(f"unknown {kind} {name!r}.{did_you_mean(key, list(catalog))}"
                     f" Known {kind}s: {', '.join(catalog)}.")


def model(name_or_path: str) -> ModelSpec:
    """A catalog model by name, or a Hugging Face `config.json` read from disk."""
    path = Path(name_or_path)
    if name_or_path.endswith(".json") or path.is_file() or (path / "config.json").is_file():
        from sweep.hf_config import read_hf_config

        return read_hf_config(path / "config.json" if path.is_dir() else path)
    return _lookup(models(), name_or_path, "model")


def gpu(name: str) -> GpuSpec:
    return _lookup(gpus(), name, "gpu")
