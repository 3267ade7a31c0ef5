"""The whole-step accuracy table (our peak allocated vs PyTorch's trackers) for the docs."""

from __future__ import annotations

from pathlib import Path

import torch

from sweep.measure.step import GROUPS, PHASES, run
from sweep.measure.step_cases import FEATURES, doc_cases

DOC = Path("docs/step_accuracy.md")
COMMAND = "python run_sweep.py validate --step"
GIB = 2**30
TOLERANCE = 0.03  # what tests/test_step_memory.py requires of the quick cases


def _gib(value: float) -> str:
    return f"{value / GIB:.3f}"


def _where(row: dict) -> str:
    """The phase of the peak and the innermost module running: a block, the root itself (the
    loss, computed in the model's forward), or none (the hooks after the last module's
    backward: FSDP2's root reduce-scatter)."""
    tracked = row["tracked"]
    phase, module = tracked.peak_phase, tracked.peak.module
    if phase == "optimizer":
        return phase
    if not module:
        return f"{phase} (after the modules)"
    return f"{phase} ({module.split('.', 1)[1] if '.' in module else 'loss'})"


def _overview(rows: list[dict]) -> list[str]:
    lines = [
        "| case | feature | configuration | tracked peak | at | ours | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        case = r["case"]
        lines.append(
            f"| {case.name} | {case.feature}: {FEATURES[case.feature]} | {case.describe()} | "
            f"{_gib(r['tracked'].peak.total)} | {_where(r)} | {_gib(r['ours'].allocated)} | "
            f"{r['error']:+.1%} |")
    return lines


def _groups(rows: list[dict]) -> list[str]:
    header = " | ".join(GROUPS)
    lines = [
        f"| case | {header} |",
        "|---|" + "---|" * len(GROUPS),
    ]
    for r in rows:
        tracked, ours = r["tracked"].peak, r["ours"].phase_groups(r["ours"].peak_phase)
        cells = " | ".join(f"{_gib(tracked.group(g))} / {_gib(ours[g])}" for g in GROUPS)
        lines.append(f"| {r['case'].name} | {cells} |")
    return lines


def _phases(rows: list[dict]) -> list[str]:
    lines = [
        "| case | " + " | ".join(PHASES) + " |",
        "|---|" + "---|" * len(PHASES),
    ]
    for r in rows:
        tracked, ours = r["tracked"], r["ours"]
        cells = " | ".join(
            f"{_gib(tracked.phases[p].total)} / {_gib(ours.phase_total(p))}" for p in PHASES)
        lines.append(f"| {r['case'].name} | {cells} |")
    return lines


def _categories(rows: list[dict]) -> list[str]:
    lines = ["| case | phase | tracked categories at the peak (bytes) | optimizer states after "
             "the step |", "|---|---|---|---|"]
    for r in rows:
        tracked = r["tracked"]
        named = ", ".join(f"{k} {v:,}" for k, v in tracked.peak.categories.items() if v)
        lines.append(f"| {r['case'].name} | {tracked.peak_phase} | {named} | "
                     f"{tracked.state_bytes:,} |")
    return lines


def markdown(rows: list[dict]) -> str:
    within = sum(abs(r["error"]) <= TOLERANCE for r in rows)
    lines = [
        "# Whole training step: our peak vs PyTorch's memory trackers",
        "",
        f"Regenerate with `{COMMAND}` (torch {torch.__version__}, no GPU needed). Each case runs "
        "two training steps of the reference model (`sweep/measure/reference.py`: Llama-3.1-8B "
        "or -70B blocks with the full embedding, final norm, untied head and fp32 "
        "cross-entropy; SDPA; RMSNorm saving its input and fp32 rstd) inside "
        "`FakeTensorMode`, so that real sizes allocate nothing, as torchtitan's memory "
        "estimation does. The second, steady-state step is tracked by "
        "`torch.distributed._tools.mem_tracker.MemTracker` (one rank) or "
        "`torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker` (FSDP2 `fully_shard` per "
        "block and on the root, on a fake process group of N ranks), which attribute each "
        "storage to a category when it is created; the peak is kept separately for the "
        "forward passes, the backward passes and the optimizer step (AdamW, foreach, "
        "`zero_grad(set_to_none=True)`). The first step is untracked: it creates the optimizer "
        "states and fills DTensor's sharding-propagation cache, whose first-call fake "
        "allocations the trackers would count (they are no memory on a GPU).",
        "",
        "Ours is `sweep.memory.total.estimate` for the same shapes (`Architecture` with the "
        "case's block count) and `TrainConfig` (framework generic at zero_stage 0 for one rank; "
        "fsdp at zero_stage 3 for reshard_after_forward=True, 2 for False, 0 for FSDP2's "
        "`replicate` (DDP); `device = cpu`, no "
        "fragmentation, no runtime overhead), evaluated in float64: the peak allocated "
        "static + max(dynamic, step) of total.py. Error = ours / tracked - 1.",
        "",
        f"{len(rows)} cases; {within} within {TOLERANCE:.0%} of the tracked peak. "
        "GiB = 2^30 bytes.",
        "",
        "## Peak",
        "",
        *_overview(rows),
        "",
        "## At the peak, by component (tracked / ours, GiB)",
        "",
        "Tracked: parameters = Parameter, Buffer, Sharded Param, Unsharded Param, All Gather; "
        "gradients = Gradient, Sharded Grad, Unsharded Grad; optimizer = optimizer states and "
        "the step's temporaries; activations = Activation (forward), Temp (backward), the "
        "input ids and targets; buffers = Reduce Scatter (a reduce-scatter input being filled "
        "is still Temp). Ours, at the phase our estimate peaks in: parameters = weights + "
        "master_weights; gradients; optimizer = optimizer_states (+ the step's transient when "
        "it is the peak); activations = activations + logits; buffers = communication "
        "buffers.",
        "",
        *_groups(rows),
        "",
        "## Per phase (tracked peak / ours, GiB)",
        "",
        "Ours for the forward and backward passes is static + dynamic, for the optimizer step "
        "static + step.",
        "",
        *_phases(rows),
        "",
        "## Tracker categories at the peak",
        "",
        *_categories(rows),
    ]
    return "\n".join(lines) + "\n"


def write(path: Path = DOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(markdown(run(doc_cases())), encoding="utf-8")
    tmp.replace(path)
    return path
