"""`fewest`: the smallest n_gpus per GPU type that fits, and nothing smaller does; the fastest
strategy at that size and the cheapest cluster."""

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from sweep import engine
from sweep.fewest import fewest, fewest_grid
from sweep.grid import Axis, Objective

FEWER = Objective("n_gpus", maximize=False)  # the probe needs no step time


def test_fewest_is_minimal(tmp_path):
    grid = fewest_grid("llama-3.1-8b", 4096, ["a100-40gb", "l40s", "h200-141gb"],
                       frameworks=("deepspeed",), max_gpus=64, out=str(tmp_path / "few"))
    frame = fewest(grid)
    assert set(frame["gpu"]) == {"a100-40gb", "l40s", "h200-141gb"}
    assert (frame["per_gpu_total_bytes"] <= frame["gpu_capacity_bytes"]).all()
    assert (tmp_path / "few" / "fewest.parquet").exists()
    # Every configuration of the grid with fewer GPUs of a type fails: one probe sweep of
    # the counts below the largest answer, counted per (gpu, n_gpus).
    fewest_of = dict(frame.filter(pl.col("pick") == "fewest").select("gpu", "n_gpus").iter_rows())
    smaller = [v for v in grid.axis("n_gpus").values if v < max(fewest_of.values())]
    axes = tuple(Axis("n_gpus", np.array(smaller), tuple(f"{v:g}" for v in smaller))
                 if a.name == "n_gpus" else a for a in grid.axes)
    probe = replace(grid, axes=axes, group_by=("gpu", "n_gpus"), objectives=(FEWER,),
                    output_dir=str(tmp_path / "probe"))
    engine.run(probe, progress=False)
    summary = pl.read_parquet(tmp_path / "probe" / "summary.parquet").with_columns(
        pl.col("gpu").cast(pl.String))
    for row in summary.iter_rows(named=True):
        if float(row["n_gpus"]) < fewest_of[row["gpu"]]:  # group labels are text
            assert row["feasible"] == 0, row


def test_every_node_type_gets_a_framework_it_runs_and_options_hold(tmp_path):
    """TPUs answer with the generic (XLA) accounting and GPUs with the frameworks asked;
    without --offload nothing is offloaded; the recompute modes and fine-tuning mode asked
    are the ones used; nodes are whole numbers."""
    grid = fewest_grid("llama-3.1-8b", 8192, ["h100-sxm-80gb", "tpu-v5p"],
                       frameworks=("fsdp",), max_gpus=64, out=str(tmp_path / "few"),
                       finetune="lora", recompute=("none", "selective"))
    frame = fewest(grid)
    by_gpu = {r["gpu"]: r for r in frame.iter_rows(named=True)}
    assert by_gpu["h100-sxm-80gb"]["framework"] == "fsdp"
    assert by_gpu["tpu-v5p"]["framework"] == "generic"
    assert set(frame["offload"]) == {"none"}
    assert set(frame["recompute"]) <= {"none", "selective"}
    assert set(frame["finetune"]) == {"lora"}
    assert all(float(n).is_integer() and n >= 1 for n in frame["nodes"])


def test_fastest_and_cheapest_against_every_feasible_configuration(tmp_path):
    """The fewest row is the fastest configuration at the smallest count and the cheapest row
    the lowest cost per million tokens of all, per GPU type, checked against the feasible
    dump (every configuration that fits, evaluated on the host)."""
    grid = fewest_grid("llama-3.1-8b", 4096, ["a100-80gb", "h100-sxm-80gb"],
                       frameworks=("megatron", "fsdp"), max_gpus=32, out=str(tmp_path / "few"))
    frame = fewest(grid)
    dump = replace(grid, feasible_dump=True, output_dir=str(tmp_path / "all"))
    engine.run(dump, progress=False)
    every = pl.read_parquet(tmp_path / "all" / "feasible").with_columns(
        pl.col("gpu").cast(pl.String))
    for gpu in ("a100-80gb", "h100-sxm-80gb"):
        mine = every.filter(pl.col("gpu") == gpu)
        fewest_row = frame.filter((pl.col("gpu") == gpu) & (pl.col("pick") == "fewest"))
        cheapest_row = frame.filter((pl.col("gpu") == gpu) & (pl.col("pick") == "cheapest"))
        smallest = mine["n_gpus"].min()
        assert fewest_row["n_gpus"].item() == smallest
        fastest = mine.filter(pl.col("n_gpus") == smallest)["tokens_per_s"].max()
        assert fewest_row["tokens_per_s"].item() == pytest.approx(fastest, rel=1e-6)
        assert cheapest_row["cost_per_million_tokens"].item() == pytest.approx(
            mine["cost_per_million_tokens"].min(), rel=1e-6)
