"""`largest`: bisection on device against a dense scan of the family in float64."""

import numpy as np
import pytest

from sweep import families
from sweep.config import TrainConfig
from sweep.errors import SweepError
from sweep.grid import parse
from sweep.largest import WIDTHS, depth_ranges, largest
from sweep.memory.total import estimate
from sweep.model import total_params

GRID = """
[axes]
model = {family = "llama3", params = [1e9]}
gpu = ["a100-40gb", "l40s"]
n_gpus = [8, 16]
tp = [1, 2]
pp = [1, 2]
zero_stage = [3]
framework = ["deepspeed"]
seq_len = [4096]
recompute = ["full"]
[constraints]
whole_nodes = true
"""


def test_family_ranges_cover_the_rule():
    shallow, deep = depth_ranges()
    for width, low, high in zip(WIDTHS[:20], shallow[:20], deep[:20], strict=True):
        for depth in (low, high):
            arch = families.llama3_architecture(width, depth)
            assert families.llama3_width(float(total_params(arch))) == width
        assert families.llama3_width(float(total_params(
            families.llama3_architecture(width, high + 1)))) != width


def test_bisection_equals_dense_scan():
    grid = parse(GRID, "largest.toml")
    found = largest(grid)
    shallow, deep = depth_ranges()
    for gpu in ("a100-40gb", "l40s"):
        spec = next(g for g in grid.gpus if g.name == gpu)
        for n_gpus in (8, 16):
            best = 0.0
            for width, low, high in zip(WIDTHS, shallow, deep, strict=True):
                if high < low:
                    continue
                for tp in (1, 2):
                    for pp in (1, 2):
                        depths = np.arange(np.ceil(low / pp) * pp, high + 1, pp)
                        if not len(depths):
                            continue
                        arch = families.llama3_architecture(width, depths)
                        cfg = TrainConfig.from_names(
                            n_gpus=n_gpus, gpus_per_node=spec.devices_per_node, tp=tp, pp=pp,
                            zero_stage=3, framework="deepspeed", seq_len=4096,
                            recompute="full")
                        fits = estimate(arch, cfg, spec.hardware()).fits
                        if fits.any():
                            best = max(best, float(total_params(arch)[fits].max()))
            row = found.filter((found["gpu"] == gpu) & (found["n_gpus"] == n_gpus))
            assert float(row["params"][0]) == pytest.approx(best, rel=1e-12), (gpu, n_gpus)


def test_needs_a_family():
    grid = parse(GRID.replace('{family = "llama3", params = [1e9]}', '["llama-2-7b"]'), "g.toml")
    with pytest.raises(SweepError, match="needs a model family"):
        largest(grid)
