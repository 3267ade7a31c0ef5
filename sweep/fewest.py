"""The fewest GPUs of each type that train a given model at a given context length, the
fastest strategy at that size and the cheapest cluster.

It is a sweep whose frontier per GPU type has two objectives, -n_gpus and +tokens_per_s, at a
fixed global batch (`global_batch_tokens`, default 1024 sequences): for every GPU count the
fastest configuration that fits, where it is faster than every smaller count. Its first point
is the fewest GPUs, with the fastest strategy at that size (ties to the first in the grid's
order); the cheapest is the point of lowest cost per million tokens, which lies on that
frontier (at a fixed count the cheapest is the fastest, and a cheaper smaller cluster would
be faster per GPU). GPUs run the frameworks asked (Megatron-LM, DeepSpeed, FSDP2 by default),
TPUs the generic accounting (`native_frameworks`: what exists on each); offload is tried only
when allowed.
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
micro_batch = [1, 2, 4]
seq_len = [{seq_len}]
recompute = {recompute}
offload = {offload}
"""
GPU_FRAMEWORKS = ("megatron", "deepspeed", "fsdp")
RECOMPUTES = ("none", "selective", "full")
DEFAULT_BATCH_SEQUENCES = 1024
PICKS = ("fewest", "cheapest")  # the fewest GPUs (fastest at that size); the cheapest


def fewest_grid(model: str, seq_len: int, gpus: list[str] | None = None,
                frameworks=GPU_FRAMEWORKS, max_gpus: int = 65536, out: str | None = None,
                finetune: str = "full", precision: str = "bf16-mixed",
                recompute=RECOMPUTES, offload: bool = False,
                global_batch_tokens: int | None = None) -> Grid:
    """The grid `fewest` sweeps: every catalog GPU (or `gpus`) and common strategies, in the
    fine-tuning mode and precision asked, with the recompute modes allowed and optimizer
    offload only when allowed, at a global batch of `global_batch_tokens` (default 1024
    sequences)."""
    batch = global_batch_tokens or DEFAULT_BATCH_SEQUENCES * seq_len
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
            + f"[constraints]\nnative_frameworks = true\nglobal_batch_tokens = {batch}\n"
            + '[frontier]\ngroup_by = ["gpu"]\nobjectives = ["-n_gpus", "+tokens_per_s"]\n'
            + f'[output]\ndir = {json.dumps(out or f"outputs/{name}")}\n')
    return parse(text, f"<fewest {model} {seq_len}>")


def fewest(grid: Grid, *, force: bool = False, progress: bool = False) -> pl.DataFrame:
    """Run the grid and write fewest.parquet: per node type that can train the model, a row
    `pick = "fewest"` (the fewest GPUs, the fastest strategy at that size) and a row
    `pick = "cheapest"` (lowest cost per million tokens), with the whole nodes each takes."""
    out = OutputDir(grid.output_dir)
    with out.lock():
        engine.run(grid, force=force, progress=progress)
        frontier = out.root / "frontier"
        frame = pl.read_parquet(frontier, hive_partitioning=True) \
            if frontier.exists() else pl.DataFrame()
        if len(frame):
            frame = frame.with_columns(pl.col("gpu").cast(pl.String),
                                       (pl.col("n_gpus") / pl.col("gpus_per_node")).ceil()
                                       .alias("nodes"))
            smallest = frame.sort("gpu", "n_gpus").group_by("gpu", maintain_order=True).first()
            cheapest = frame.sort("gpu", "cost_per_million_tokens", "n_gpus").group_by(
                "gpu", maintain_order=True).first()
            frame = pl.concat([smallest.with_columns(pick=pl.lit(PICKS[0])),
                               cheapest.with_columns(pick=pl.lit(PICKS[1]))])
        sink.write_parquet(out, "fewest.parquet", frame, sink.metadata(grid))
    return frame
