"""Model and GPU catalogs: TOML data files shipped in the package, every entry with its source.

`model(name_or_path)` takes a catalog name, an architecture file, a Hugging Face `config.json`,
snapshot directory or cached hub id;
`gpu(name)` a catalog name. Unknown names get a `SweepError` listing the closest names.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass
from importlib import resources

from sweep import architecture
from sweep.config import GPU_PLATFORM, TPU_PLATFORM, Hardware
from sweep.errors import SweepError
from sweep.model import ModelSpec
from sweep.vocabulary import did_you_mean

CATALOG_MODEL_KEYS = ("display_name", "family", "source", "published_params",
                      "published_params_source")


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
    blas_workspace_bytes: int
    te_workspace_bytes: int
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
            blas_workspace_bytes=float(self.blas_workspace_bytes),
            te_workspace_bytes=float(self.te_workspace_bytes),
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
            platform=float(TPU_PLATFORM if self.vendor == "Google" else GPU_PLATFORM),
        )


def _read_toml(filename: str) -> dict:
    return tomllib.loads(resources.files(__package__).joinpath(filename).read_text("utf-8"))


@functools.cache
def models() -> dict[str, ModelSpec]:
    """Every catalog model, by name."""
    out = {}
    for name, entry in _read_toml("models.toml").items():
        where = f"models.toml [{name}]"
        for key in CATALOG_MODEL_KEYS:
            if key not in entry:
                raise SweepError(f"{where}: `{key}`: missing (every catalog entry has "
                                 f"{', '.join(CATALOG_MODEL_KEYS)})")
        out[name] = dataclasses.replace(
            architecture.spec_from_table(entry, where, name, entry["source"]), name=name)
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
    """A model by catalog name, architecture file (`.toml`, or `.json` without `model_type`),
    Hugging Face `config.json`, snapshot directory, hub id cached locally (`org/name`,
    `org/name@revision`), or `megatron:PATH` (a Megatron-LM argument list, YAML or launch
    script, sweep/megatron_args.py); see `sweep.model_input.resolve`."""
    from sweep.model_input import resolve

    return resolve(name_or_path, lambda name: _lookup(models(), name, "model"))


def gpu(name: str) -> GpuSpec:
    return _lookup(gpus(), name, "gpu")
