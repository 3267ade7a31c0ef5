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
from sweep.config import COUNT, FIELDS, NUMBER, TrainConfig, value_problem
from sweep.errors import SweepError
from sweep.memory.total import GPU_COMPONENTS, Estimate, estimate
from sweep.model import ModelSpec
from sweep.nearest import describe as describe_changes
from sweep.nearest import nearest
from sweep.timing.cost import MAX_PRICE_PER_GPU_HOUR_USD

GIB = 2**30

MODEL_STATE_COMPONENTS = ("weights", "master_weights", "gradients", "optimizer_states")
# Per framework code: (formula of each model-state component, source). Symbols as in
# docs/notation.md: P, P_t parameters and trainable parameters on the GPU's shard, N the ranks
# it is sharded over, w, g, M bytes per weight, gradient, master element, o(P_t) optimizer
# states, LL the largest module, B one block.
FORMULAS = (
    (("w·P (/N at ZeRO-3)", "M·P_t (/N at ZeRO>=1)", "g·P_t (/N at ZeRO>=2)",
      "o(P_t) (/N at ZeRO>=1)"),
     "Rajbhandari et al. 2020 (ZeRO) §5, Table 1"),
    (("ZeRO-1/2: w·P; ZeRO-3: w·P/N + w·LL", "M·P_t/N",
      "ZeRO-1/2: (g + 4)·P_t/N; ZeRO-3: 4·P_t/N + g·LL", "o(P_t)/N"),
     "DeepSpeed estimate_zero2_model_states_mem_needs (stage_1_and_2.py @02aa38c3) and "
     "estimate_zero3_model_states_mem_needs (stage3.py @007cca6a)"),
    (("w·P", "M·P/N (distributed optimizer, N = D·c)", "4·P (fp32 main_grad)",
      "o(P)/N (distributed optimizer)"),
     "Megatron-LM compute_weight_and_optimizer_memory (theoretical_memory_usage.py @00caa53a; "
     "EP/ETP split @e851e7d2)"),
    (("ZeRO-3: 2·w·B gathered units; ZeRO-2: w·P", "4·P_t/N (fp32 sharded parameters)",
      "4·P_t/N + g·B", "o(P_t)/N"),
     "PyTorch FSDP2 fully_shard with MixedPrecisionPolicy(bf16, reduce fp32)"),
)
RUNTIME_FORMULAS = {
    "activations": "saved tensors per block x L/p x micro-batches in flight "
                   "(memory/activations.py; Korthikanti 2022 Table 2 generalised)",
    "logits": "fp32 log-probs 4·T·V/t + loss gradient 4·T·V/t + targets 8·T",
    "kv_cache": "inference: 2·b·s·(k/t)·d·(L/p)·e_kv (memory/inference.py)",
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
    assumed: tuple[str, ...] = ()  # keys the user did not give (their defaults were used)
    nearest: tuple = ()  # when it does not fit: `nearest.Suggestion`s that do
    hardware: object = None  # config.Hardware as evaluated (the price as given)
    token_budget: float = 0.0  # tokens to train on (0: none)

    @property
    def evaluation(self) -> outputs.Evaluation:
        hw = self.gpu.hardware() if self.hardware is None else self.hardware
        return outputs.Evaluation(_as_numpy(self.cfg), self.result, _as_numpy(hw),
                                  _as_numpy(self.model.arch), self.token_budget)

    @property
    def training(self) -> bool:
        return self.cfg.to_names()["mode"] != "inference"

    def time_json(self) -> dict:
        """Step time, rates, MFU and the breakdown (seconds), then cost (USD, days)."""
        ev = self.evaluation
        t = ev.time
        time = {k: _number(getattr(t, k)) for k in TIME_KEYS}
        time["breakdown_s"] = {k: _number(getattr(t.breakdown, k)) for k in outputs.TIME_PARTS}
        values = outputs.values(ev)
        cost = {k: _number(values[k]) for k in COST_KEYS}
        if not self.token_budget:
            cost = {k: v for k, v in cost.items() if k not in outputs.BUDGET_QUANTITIES}
        else:
            cost["token_budget"] = _number(self.token_budget)
        return {"time": time, "cost": cost}

    def to_json(self, compare: bool = False) -> dict:
        """The model, GPU and configuration (vocabulary names) and the keys assumed, every
        quantity of the registry, whether it fits, the nearest configurations that do when it
        does not, and with `compare` the other estimators' figures."""
        quantities = {k: _number(v) for k, v in outputs.values(self.evaluation).items()
                      if self.training or k not in outputs.TRAINING_ONLY}
        out = {"model": self.model.name, "gpu": self.gpu.name,
               "configuration": {k: _number(v) for k, v in self.cfg.to_names().items()},
               "assumed": list(self.assumed), **quantities, "fits": bool(self.result.fits)}
        if self.training:
            out.update(self.time_json())
        if not self.result.fits:
            out["nearest"] = [{"changes": {k: _number(v) for k, v in s.changes.items()},
                               "per_gpu_total_bytes": _number(s.per_gpu_total_bytes)}
                              for s in self.nearest]
        if compare:
            out["compare"] = [
                {"estimator": c.name, "model_state_bytes": _number(c.model_state_bytes),
                 "activation_bytes": _number(c.activation_bytes),
                 "total_bytes": _number(c.total_bytes), "what_it_counts": c.note}
                for c in comparisons(self)]
        return out


TIME_KEYS = ("step_s", "tokens_per_s", "tokens_per_gpu_per_s", "model_flops_per_step", "mfu")
COST_KEYS = ("price_per_gpu_hour_usd", "cost_per_million_tokens", "days_to_train",
             "cost_to_train")


def _number(value):
    """An exact int when the value is whole (bytes, counts), else a float; strings as they
    are; None (JSON null) for NaN, so the JSON stays valid."""
    value = np.asarray(value)
    if value.dtype.kind in "USO":
        return str(value.item())
    value = float(value)
    if not np.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def explain(model: str | ModelSpec, gpu_name: str, assumed=(), token_budget: float = 0.0,
            price_per_gpu_hour_usd: float | None = None, **values) -> Explanation:
    """Evaluate one configuration of a model (a `ModelSpec`, or anything `catalog.model`
    takes). `values` are vocabulary keys with user-facing values; `assumed` names those the
    user did not give; `token_budget` (tokens) gives days and cost to train, at the
    catalog's price per GPU-hour or `price_per_gpu_hour_usd`. When it does not fit, the
    nearest configurations that do."""
    spec = model if isinstance(model, ModelSpec) else catalog.model(model)
    gpu = catalog.gpu(gpu_name)
    for name, value, high in (("token_budget", token_budget, float("inf")),
                              ("price_per_gpu_hour_usd", price_per_gpu_hour_usd,
                               MAX_PRICE_PER_GPU_HOUR_USD)):
        if value is not None and not (np.isfinite(value) and 0 <= value <= high):
            raise SweepError(f"`{name}` (--{name.replace('_', '-')}): must be a finite "
                             f"number in 0..{high:g}, got {value!r}")
    values.setdefault("gpus_per_node", gpu.devices_per_node)
    for name, value in values.items():
        if FIELDS[name].metadata["kind"] in (COUNT, NUMBER):
            problem = value_problem(name, value)
            if problem:
                raise SweepError(f"`{name}` (--{name.replace('_', '-')}): {problem}")
    cfg = TrainConfig.from_names(**values)
    hardware = gpu.hardware(price_per_gpu_hour_usd)
    arch, cfg64, hw = (_as_numpy(x) for x in (spec.arch, cfg, hardware))
    result = jax.tree_util.tree_map(lambda x: float(np.asarray(x)), estimate(arch, cfg64, hw))
    reasons = validity.describe(result.invalid)
    if reasons:
        raise SweepError(_invalid_message(spec, cfg, reasons))
    suggestions = () if result.fits else tuple(nearest(arch, cfg, hw))
    return Explanation(spec, gpu, cfg, result, tuple(assumed), suggestions, hardware,
                       float(token_budget))


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


TRAINING_ONLY = ("master_weights", "gradients", "optimizer_states", "buffers")
INFERENCE_FORMULAS = {
    "weights": "w·P: every weight of the shard (memory/model_states.py)",
    "activations": "one token's decode workspace (memory/inference.py)",
    "logits": "the next token's logits, fp32 (memory/inference.py)",
}
# Assumptions worth stating when the user left them at their defaults, per mode.
TRAINING_ASSUMPTIONS = ("seq_len", "micro_batch", "grad_accum", "framework", "zero_stage",
                        "precision", "optimizer", "recompute", "offload", "finetune",
                        "flash_attention", "fused_cross_entropy", "fragmentation", "mode")
INFERENCE_ASSUMPTIONS = ("seq_len", "micro_batch", "precision", "kv_cache_dtype",
                         "flash_attention", "fragmentation", "mode")


def format_table(ex: Explanation) -> str:
    """Header, the values assumed, component, bytes, GiB, share of the total and formula
    source, then the verdict (and the nearest configurations that fit, when it does not)."""
    r = ex.result
    total = r.per_gpu_total_bytes
    formulas, source = FORMULAS[int(ex.cfg.framework)]
    formula_of = dict(zip(MODEL_STATE_COMPONENTS, formulas, strict=True))
    shown = ex.cfg.to_names()
    inference = shown["mode"] == "inference"
    header = (
        f"{ex.model.display_name} on {ex.gpu.display_name}: n_gpus={shown['n_gpus']:g} "
        f"(tp={shown['tp']:g} pp={shown['pp']:g} cp={shown['cp']:g} ep={shown['ep']:g}), "
        + (f"inference, micro_batch={shown['micro_batch']:g} seq_len={shown['seq_len']:g}, "
           f"{shown['precision']}, kv_cache {shown['kv_cache_dtype']}" if inference else
           f"{shown['framework']} zero_stage={shown['zero_stage']:g}, {shown['precision']}, "
           f"{shown['optimizer']}, offload={shown['offload']}, finetune={shown['finetune']}")
    )
    listed = INFERENCE_ASSUMPTIONS if inference else TRAINING_ASSUMPTIONS
    assumed = describe_changes({k: shown[k] for k in listed if k in ex.assumed})
    stage = {0: "first", 1: "last", 2: "second"}[int(r.stage)]
    trainable = "" if inference else f"trainable {r.params_trainable:,.0f}, "
    params = (f"params: total {r.params_total:,.0f}, {trainable}on this GPU "
              f"{r.params_per_gpu:,.0f} ({stage} pipeline stage)")
    rows = [("component", "bytes", "GiB", "share", "formula")]
    for k in GPU_COMPONENTS:
        if inference and k in TRAINING_ONLY:
            continue
        value = getattr(r, k)
        share = f"{value / total:6.1%}" if total else "-"
        formula = formula_of.get(k) or RUNTIME_FORMULAS[k]
        if inference and k in INFERENCE_FORMULAS:
            formula = INFERENCE_FORMULAS[k]
        rows.append((k, f"{value:,.0f}", f"{value / GIB:.2f}", share, formula))
    allocated = total - r.overhead
    rows.append(("peak allocated", f"{allocated:,.0f}", f"{allocated / GIB:.2f}",
                 f"{allocated / total:6.1%}", "every tensor component"))
    rows.append(("total per GPU", f"{total:,.0f}", f"{total / GIB:.2f}", "100.0%",
                 "estimated reserved: allocated + overhead"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [header]
    if assumed:
        lines.append("assumed (not given): " + assumed)
    lines += [params, ""]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in (1, 2, 3)]
        lines.append("  ".join(cells + [row[4]]).rstrip())
    capacity = r.gpu_capacity_bytes
    offloaded = f"; offload={shown['offload']} moves states off the GPU" if ex.cfg.offload else ""
    lines.append("")
    if not inference:
        lines.append(f"model states: {source}; sweep/memory/model_states.py{offloaded}")
        phase = "the start of backward" if r.phase == 0 else "the end of backward / step"
        lines.append(f"peak: {phase}, on the {stage} pipeline stage")
    lines += [
        f"GPU capacity: {capacity / GIB:.2f} GiB ({ex.gpu.memory_bytes / GIB:.2f} GiB x usable "
        f"fraction {ex.gpu.usable_fraction}); headroom {(capacity - total) / GIB:.2f} GiB",
        f"host RAM per node: {r.host_bytes_per_node / GIB:.2f} GiB needed of "
        f"{ex.gpu.host_memory_bytes_per_node / GIB:.2f} GiB"
        + (f"; NVMe per node: {r.nvme_bytes_per_node / GIB:.2f} GiB"
           if r.nvme_bytes_per_node else ""),
        f"fits: {'yes' if r.fits else 'NO'}",
    ]
    if not inference:
        lines += ["", *format_time(ex)]
    if not r.fits:
        lines.append("nearest configurations that fit (fewest changes first):" if ex.nearest
                     else "nothing within two changes (GPUs x2-x16, ZeRO, recompute, offload, "
                          "tp/pp/cp, micro-batch, fused loss) fits")
        for suggestion in ex.nearest:
            lines.append(f"  {describe_changes(suggestion.changes):<46} "
                         f"{suggestion.per_gpu_total_bytes / GIB:7.2f} GiB of "
                         f"{suggestion.gpu_capacity_bytes / GIB:.2f}")
    return "\n".join(lines)


def format_time(ex: Explanation) -> list[str]:
    """The step time's breakdown (seconds, share), rates, MFU and cost."""
    from sweep import units

    data = ex.time_json()
    t, cost = data["time"], data["cost"]
    step = t["step_s"]
    lines = [f"step time: {units.duration(step)} (sweep/timing; docs/time_accuracy.md): "
             f"{units.tokens(t['tokens_per_s'])} tokens/s, "
             f"{units.tokens(t['tokens_per_gpu_per_s'])} per GPU; MFU "
             f"{units.percent(t['mfu'])} (model FLOPs without recompute / dense bf16 peak)"]
    for key, seconds in t["breakdown_s"].items():
        if seconds:
            lines.append(f"  {key:<10} {seconds:12.4f} s {seconds / step:6.1%}  "
                         f"{outputs.TIME_PARTS[key]}")
    price = cost["price_per_gpu_hour_usd"]
    given = price != ex.gpu.price_per_gpu_hour_usd
    line = (f"cost: {units.money(price)} per GPU-hour ({'given' if given else 'catalog'}), "
            f"{units.unit_price(cost['cost_per_million_tokens'])} per million tokens")
    if ex.token_budget:
        line += (f"; {units.tokens(ex.token_budget)} tokens take "
                 f"{units.days(cost['days_to_train'])} and cost "
                 f"{units.money(cost['cost_to_train'])}")
    else:
        line += " (--token-budget gives days and cost to train)"
    lines.append(line)
    return lines


def comparisons(ex: Explanation):
    """Megatron-LM's and DeepSpeed's estimates for the configuration (`sweep.compare`)."""
    from sweep.compare import compare

    return compare(_as_numpy(ex.model.arch), _as_numpy(ex.cfg))


def format_comparison(ex: Explanation) -> str:
    """Ours beside Megatron-LM's and DeepSpeed's estimators for the same configuration."""
    r = ex.result
    ours_states = sum(getattr(r, k) for k in MODEL_STATE_COMPONENTS)
    ours_rest = r.per_gpu_total_bytes - ours_states
    lines = ["", "", "compared with (GiB per GPU; model states = weights, master weights, "
                 "gradients, optimizer states; the rest = everything else it counts):",
             f"  {'':10} {'model states':>12} {'the rest':>12} {'total':>9}  what it counts"]
    lines.append(f"  {'ours':10} {ours_states / GIB:12.2f} {ours_rest / GIB:12.2f} "
                 f"{r.per_gpu_total_bytes / GIB:9.2f}  activations, logits, buffers, overhead")
    for c in comparisons(ex):
        lines.append(f"  {c.name:10} {c.model_state_bytes / GIB:12.2f} "
                     f"{c.activation_bytes / GIB:12.2f} {c.total_bytes / GIB:9.2f}  {c.note}")
    return "\n".join(lines)


def _as_numpy(tree):
    return jax.tree_util.tree_map(np.float64, tree)


def render(ex: Explanation, *, as_json: bool, compare: bool = False) -> str:
    if as_json:
        return json.dumps(ex.to_json(compare), indent=2)
    return format_table(ex) + (format_comparison(ex) if compare else "")
