"""`fewest`: the smallest n_gpus per GPU type that fits, and nothing smaller does."""

from dataclasses import replace

import numpy as np

from sweep import engine
from sweep.fewest import fewest, fewest_grid
from sweep.grid import Axis


def test_fewest_is_minimal(tmp_path):
    grid = fewest_grid("llama-3.1-8b", 4096, ["a100-40gb", "l40s", "h200-141gb"],
                       frameworks=("deepspeed",), max_gpus=64, out=str(tmp_path / "few"))
    frame = fewest(grid)
    assert set(frame["gpu"]) == {"a100-40gb", "l40s", "h200-141gb"}
    assert (frame["per_gpu_total_bytes"] <= frame["gpu_capacity_bytes"]).all()
    assert (tmp_path / "few" / "fewest.parquet").exists()
    for row in frame.iter_rows(named=True):
        n = row["n_gpus"]
        if n == 1:
            continue
        # Every configuration of the grid with fewer GPUs of that type fails.
        gpu = [g for g in grid.gpus if g.name == row["gpu"]]
        smaller = [v for v in grid.axis("n_gpus").values if v < n]
        axes = tuple(
            Axis("n_gpus", np.array(smaller), tuple(f"{v:g}" for v in smaller))
            if a.name == "n_gpus" else
            Axis("gpu", np.zeros(1), (row["gpu"],)) if a.name == "gpu" else a
            for a in grid.axes)
        probe = replace(grid, axes=axes, gpus=tuple(gpu),
                        output_dir=str(tmp_path / f"probe-{row['gpu']}"))
        assert engine.run(probe, progress=False)["feasible"] == 0
