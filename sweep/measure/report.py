"""The accuracy table (formula vs measured saved-for-backward bytes) for the docs."""

from __future__ import annotations

from pathlib import Path

import torch

from sweep.measure.cases import run

DOC = Path("docs/activation_accuracy.md")
COMMAND = "python run_sweep.py validate"


def markdown(rows: list[dict]) -> str:
    worst = max(abs(r["error"]) for r in rows)
    lines = [
        "# Activation memory: formula vs measured",
        "",
        f"Regenerate with `{COMMAND}` (needs `pip install \".[validate]\"`, torch "
        f"{torch.__version__}). Each row counts the bytes that autograd saves for backward in a "
        "reference PyTorch implementation (`sweep/measure/reference.py`), deduplicated by "
        "storage with `torch.autograd.graph.saved_tensors_hooks`, against "
        "`sweep/memory/activations.py` evaluated with `device = cpu` (dropout masks and "
        "LayerNorm statistics in the activation dtype, as the CPU kernels keep them).",
        "",
        f"{len(rows)} cases; largest relative error {worst:.2e}.",
        "",
        "| scope | style | dtype | attention | recompute | b | s | h | heads | kv heads | ffn "
        "| layers | measured bytes | formula bytes | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scope']} | {r['style']} | {r['dtype']} | {r['attention']} | "
            f"{r['recompute']} | {r['b']} | {r['s']} | {r['h']} | {r['heads']} | "
            f"{r['kv_heads']} | {r['ffn']} | {r['layers']} | {r['measured_bytes']:,} | "
            f"{r['formula_bytes']:,.0f} | {r['error']:+.2e} |"
        )
    return "\n".join(lines) + "\n"


def write(path: Path = DOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(markdown(run()), encoding="utf-8")
    tmp.replace(path)
    return path
