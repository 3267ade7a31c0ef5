"""`explain`: every memory component of one configuration, with the formula each comes from.

It evaluates `memory.total.estimate`, the very function the sweep runs, on NumPy float64
scalars, so that byte counts are exact integers (the sweep decides in float32 and settles the
near-capacity cases in float64 the same way). `--json` prints the registry of output
quantities (`sweep/outputs.py`) under the same names as the Parquet columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax
import numpy as np

from sweep import catalog, outputs, validity
from sweep.catalog import GpuSpec
from sweep.config import TrainConfig
from sweep.errors import SweepError
from sweep.memory.total import GPU_COMPONENTS, Estimate, estimate
from sweep.model import ModelSpec

GIB = 2**30

MODEL_STATE_COMPONENTS = ("weights", "master_weights", "gradients", "optimizer_states")
# Per framework code: (formula of each model-state component, source). Symbols as in
# sweep/memory/model_states.py: P, T params and trainables on the GPU's shard, N sharding ranks,
# w, g, m bytes, o(T) optimizer states, LL largest module, B one block.
FORMULAS = (
    (("w·P (/N at ZeRO-3)", "m·T (/N at ZeRO>=1)", "g·T (/N at ZeRO>=2)", "o(T) (/N at ZeRO>=1)"),
     "Rajbhandari et al. 2020 (ZeRO) §5, Table 1"),
    (("ZeRO-1/2: w·P; ZeRO-3: w·P/N + w·LL", "m·T/N", "ZeRO-1/2: (g + 4)·T/N; ZeRO-3: 4·T/N + g·LL",
      "o(T)/N"),
     "DeepSpeed estimate_zero2_model_states_mem_needs (stage_1_and_2.py @02aa38c3) and "
     "estimate_zero3_model_states_mem_needs (stage3.py @007cca6a)"),
    (("w·P_shard", "m·P_shard/d (distributed optimizer)", "4·P_shard (fp32 main_grad)",
      "o·P_shard/d (distributed optimizer)"),
     "Megatron-LM compute_weight_and_optimizer_memory (theoretical_memory_usage.py @00caa53a; "
     "EP/ETP split @e851e7d2)"),
    (("ZeRO-3: 2·w·B gathered units; ZeRO-2: w·P", "4·T/N (fp32 sharded parameters)",
      "4·T/N + g·B", "o(T)/N"),
     "PyTorch FSDP2 fully_shard with MixedPrecisionPolicy(bf16, reduce fp32)"),
)
RUNTIME_FORMULAS = {
    "activations": "saved tensors per block x L/p x micro-batches in flight "
                   "(memory/activations.py; Korthikanti 2022 Table 2 generalised)",
    "logits": "fp32 log-probs 4·T·V/t + loss gradient 4·T·V/t + targets 8·T",
    "kv_cache": "inference: 2·B·s·(k/t)·d·(L/p)·bytes (memory/inference.py)",
    "buffers": "DDP/DeepSpeed/FSDP communication buffers + optimizer-step excess "
               "(memory/runtime.py)",
    "overhead": "CUDA context, cuBLAS, NCCL (GPU catalog) + fragmentation of reserved memory",
}


@dataclass(frozen=True)
class Explanation:
    model: ModelSpec
    gpu: GpuSpec
    cfg: TrainConfig
    result: Estimate

    def to_json(self) -> dict:
        """The model, GPU and configuration (vocabulary names), then every quantity of the
        registry, then whether it fits and why not."""
        ev = outputs.Evaluation(self.cfg, self.result, self.gpu.hardware())
        quantities = {k: _number(v) for k, v in outputs.values(ev).items()}
        return {"model": self.model.name, "gpu": self.gpu.name,
                "configuration": {k: _number(v) for k, v in self.cfg.to_names().items()},
                **quantities, "fits": bool(self.result.fits)}


def _number(value):
    """An exact int when the value is whole (bytes, counts), else a float; strings as they are."""
    value = np.asarray(value)
    if value.dtype.kind in "USO":
        return str(value.item())
    value = float(value)
    return int(value) if value.is_integer() else value


def explain(model: str | ModelSpec, gpu_name: str, **values) -> Explanation:
    """Evaluate one configuration of a model (a `ModelSpec`, or anything `catalog.model`
    takes). `values` are vocabulary keys with user-facing values."""
    spec = model if isinstance(model, ModelSpec) else catalog.model(model)
    gpu = catalog.gpu(gpu_name)
    values.setdefault("gpus_per_node", gpu.devices_per_node)
    cfg = TrainConfig.from_names(**values)
    arch, cfg64, hw = (_as_numpy(x) for x in (spec.arch, cfg, gpu.hardware()))
    result = jax.tree_util.tree_map(lambda x: float(np.asarray(x)), estimate(arch, cfg64, hw))
    reasons = validity.describe(result.invalid)
    if reasons:
        raise SweepError(_invalid_message(spec, cfg, reasons))
    return Explanation(model=spec, gpu=gpu, cfg=cfg, result=result)


def _invalid_message(spec: ModelSpec, cfg: TrainConfig, reasons) -> str:
    a = spec.arch
    shown = cfg.to_names()
    degrees = ", ".join(
        f"{k}={shown[k]:g}" for k in ("n_gpus", "tp", "pp", "vpp", "cp", "ep", "etp")
    )
    lines = [f"invalid configuration for {spec.display_name} ({degrees}, "
             f"framework={shown['framework']}, zero_stage={shown['zero_stage']:g}, "
             f"offload={shown['offload']}, finetune={shown['finetune']}):"]
    lines += [f"  - {text}" for _, text in reasons]
    lines.append(
        f"  model: num_layers={a.num_layers:g}, num_heads={a.num_heads:g}, "
        f"num_kv_heads={a.num_kv_heads:g}, num_experts={a.num_experts:g}"
    )
    return "\n".join(lines)


def format_table(ex: Explanation) -> str:
    """Component, bytes, GiB, share of the total and formula source, then the verdict."""
    r = ex.result
    total = r.per_gpu_total_bytes
    formulas, source = FORMULAS[int(ex.cfg.framework)]
    formula_of = dict(zip(MODEL_STATE_COMPONENTS, formulas, strict=True))
    shown = ex.cfg.to_names()
    header = (
        f"{ex.model.display_name} on {ex.gpu.display_name}: n_gpus={shown['n_gpus']:g} "
        f"(tp={shown['tp']:g} pp={shown['pp']:g} cp={shown['cp']:g} ep={shown['ep']:g}), "
        f"{shown['framework']} zero_stage={shown['zero_stage']:g}, {shown['precision']}, "
        f"{shown['optimizer']}, offload={shown['offload']}, finetune={shown['finetune']}"
    )
    params = (
        f"params: total {r.params_total:,.0f}, trainable {r.params_trainable:,.0f}, "
        f"on this GPU {r.params_per_gpu:,.0f} ({'last' if r.stage else 'first'} pipeline stage)"
    )
    rows = [("component", "bytes", "GiB", "share", "formula")]
    for k in GPU_COMPONENTS:
        value = getattr(r, k)
        share = f"{value / total:6.1%}" if total else "-"
        formula = formula_of.get(k) or RUNTIME_FORMULAS[k]
        rows.append((k, f"{value:,.0f}", f"{value / GIB:.2f}", share, formula))
    allocated = total - r.overhead
    rows.append(("peak allocated", f"{allocated:,.0f}", f"{allocated / GIB:.2f}",
                 f"{allocated / total:6.1%}", "every tensor component"))
    rows.append(("total per GPU", f"{total:,.0f}", f"{total / GIB:.2f}", "100.0%",
                 "estimated reserved: allocated + overhead"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [header, params, ""]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in (1, 2, 3)]
        lines.append("  ".join(cells + [row[4]]).rstrip())
    capacity = r.gpu_capacity_bytes
    offloaded = f"; offload={shown['offload']} moves states off the GPU" if ex.cfg.offload else ""
    lines += [
        "",
        f"model states: {source}; sweep/memory/model_states.py{offloaded}",
        f"GPU capacity: {capacity / GIB:.2f} GiB ({ex.gpu.memory_bytes / GIB:.2f} GiB x usable "
        f"fraction {ex.gpu.usable_fraction}); headroom {(capacity - total) / GIB:.2f} GiB",
        f"host RAM per node: {r.host_bytes_per_node / GIB:.2f} GiB needed of "
        f"{ex.gpu.host_memory_bytes_per_node / GIB:.2f} GiB"
        + (f"; NVMe per node: {r.nvme_bytes_per_node / GIB:.2f} GiB"
           if r.nvme_bytes_per_node else ""),
        f"fits: {'yes' if r.fits else 'NO'}",
    ]
    return "\n".join(lines)


def format_comparison(ex: Explanation) -> str:
    """Ours beside Megatron-LM's and DeepSpeed's estimators for the same configuration."""
    from sweep.compare import compare

    r = ex.result
    ours_states = sum(getattr(r, k) for k in MODEL_STATE_COMPONENTS)
    ours_rest = r.per_gpu_total_bytes - ours_states
    others = compare(_as_numpy(ex.model.arch), _as_numpy(ex.cfg))
    lines = ["", "compared with (GiB per GPU):",
             f"  {'':10} {'model states':>12} {'activations':>12} {'total':>9}"]
    lines.append(f"  {'ours':10} {ours_states / GIB:12.2f} {ours_rest / GIB:12.2f} "
                 f"{r.per_gpu_total_bytes / GIB:9.2f}  activations, logits, buffers, overhead")
    for c in others:
        lines.append(f"  {c.name:10} {c.model_state_bytes / GIB:12.2f} "
                     f"{c.activation_bytes / GIB:12.2f} {c.total_bytes / GIB:9.2f}  {c.note}")
    return "\n".join(lines)


def _as_numpy(tree):
    return jax.tree_util.tree_map(np.float64, tree)


def render(ex: Explanation, *, as_json: bool, compare: bool = False) -> str:
    if as_json:
        return json.dumps(ex.to_json(), indent=2)
    return format_table(ex) + (format_comparison(ex) if compare else "")
