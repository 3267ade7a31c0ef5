"""The fewest GPUs of each type that train a given model at a given context length.

It is a sweep whose frontier has one objective, -n_gpus, per GPU type: the engine's exact
reduction gives the smallest feasible n_gpus of each type, and the configuration behind it
(ties to the first in the grid's order: the lowest tp, pp, ZeRO stage, ... that fit). GPUs
run the frameworks asked (Megatron-LM, DeepSpeed, FSDP2 by default), TPUs the generic
accounting (`native_frameworks`: what exists on each); offload is tried only when allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from sweep import catalog, engine, sink
from sweep.grid import Grid, parse
from sweep.outdir import OutputDir, safe_name

STRATEGIES = """
n_gpus = {{pow2 = [1, {max_gpus}]}}
tp = [1, 2, 4, 8]
pp = [1, 2, 4, 8, 16, 32]
cp = {cp}
zero_stage = [0, 1, 2, 3]
framework = {frameworks}
precision = {precision}
finetune = {finetune}
micro_batch = [1]
seq_len = [{seq_len}]
recompute = {recompute}
offload = {offload}
"""
GPU_FRAMEWORKS = ("megatron", "deepspeed", "fsdp")
RECOMPUTES = ("none", "selective", "full")


def fewest_grid(model: str, seq_len: int, gpus: list[str] | None = None,
                frameworks=GPU_FRAMEWORKS, max_gpus: int = 65536, out: str | None = None,
                finetune: str = "full", precision: str = "bf16-mixed",
                recompute=RECOMPUTES, offload: bool = False) -> Grid:
    """The grid `fewest` sweeps: every catalog GPU (or `gpus`) and common strategies, in the
    fine-tuning mode and precision asked, with the recompute modes allowed and optimizer
    offload only when allowed."""
    gpus = gpus or list(catalog.gpus())
    spec = catalog.model(model)
    cp = "[1, 2, 4, 8]" if seq_len >= 32768 else "[1]"
    name = safe_name(f"fewest-{Path(spec.name).name}-{seq_len}")
    text = (f'name = "{name}"\n[axes]\nmodel = {json.dumps([model])}\n'
            f"gpu = {json.dumps(gpus)}\n"
            + STRATEGIES.format(max_gpus=max_gpus, cp=cp,
                                frameworks=json.dumps([*frameworks, "generic"]),
                                seq_len=seq_len, precision=json.dumps([precision]),
                                finetune=json.dumps([finetune]),
                                recompute=json.dumps(list(recompute)),
                                offload=json.dumps(["none", "optimizer"] if offload
                                                   else ["none"]))
            + "[constraints]\nnative_frameworks = true\n"
            + '[frontier]\ngroup_by = ["gpu"]\nobjectives = ["-n_gpus"]\n'
            + f'[output]\ndir = {json.dumps(out or f"outputs/{name}")}\n')
    return parse(text, f"<fewest {model} {seq_len}>")


def fewest(grid: Grid, *, force: bool = False, progress: bool = False) -> pl.DataFrame:
    """Run the grid and write fewest.parquet: one row per node type that can train the
    model, with the whole nodes it takes."""
    out = OutputDir(grid.output_dir)
    with out.lock():
        engine.run(grid, force=force, progress=progress)
        frontier = out.root / "frontier"
        frame = pl.read_parquet(frontier, hive_partitioning=True) \
            if frontier.exists() else pl.DataFrame()
        if len(frame):
            frame = frame.with_columns(pl.col("gpu").cast(pl.String)).sort("gpu")
            frame = frame.with_columns(
                (pl.col("n_gpus") / pl.col("gpus_per_node")).ceil().alias("nodes"))
        sink.write_parquet(out, "fewest.parquet", frame, sink.metadata(grid))
    return frame
