"""`largest`: bisection on device against a dense scan of the family in float64."""

import jax
import numpy as np
import pytest

from sweep import families
from sweep.config import TrainConfig
from sweep.errors import SweepError
from sweep.grid import parse
from sweep.largest import WIDTHS, TimeBudget, depth_ranges, largest
from sweep.memory.total import estimate
from sweep.model import total_params
from sweep.timing import step_time

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


def dense_scan(grid, gpu, n_gpus, in_time=None) -> tuple[float, float]:
    """The largest family member that fits, and the largest that also trains in time, by
    trying every depth (a multiple of pp) of every width, all at once."""
    shallow, deep = depth_ranges()
    spec = next(g for g in grid.gpus if g.name == gpu)
    hw = jax.tree_util.tree_map(np.float64, spec.hardware())
    best, best_in_time = 0.0, 0.0
    for tp in (1, 2):
        for pp in (1, 2):
            depths = np.arange(pp, 1025, pp, dtype=float)[None, :]
            member = (depths >= shallow[:, None]) & (depths <= deep[:, None])
            arch = families.llama3_architecture(WIDTHS[:, None], depths)
            cfg = TrainConfig.from_names(
                n_gpus=n_gpus, gpus_per_node=spec.devices_per_node, tp=tp, pp=pp,
                zero_stage=3, framework="deepspeed", seq_len=4096, recompute="full")
            params = np.broadcast_to(total_params(arch), member.shape)
            fits = member & estimate(arch, cfg, hw).fits
            if fits.any():
                best = max(best, float(params[fits].max()))
            if in_time is not None:
                fits = fits & in_time(arch, cfg, hw)
                if fits.any():
                    best_in_time = max(best_in_time, float(params[fits].max()))
    return best, best_in_time


def test_bisection_equals_dense_scan():
    """Without and with a time budget (1e10 tokens in half a day), against every depth tried:
    its memory and its step time computed here, days = tokens·τ_step/(tokens per step)/86400."""
    grid = parse(GRID, "largest.toml")
    found = largest(grid)
    found_in_time = largest(grid, budget=TimeBudget(days=0.5, tokens=1e10))

    def in_time(arch, cfg, hw):
        t = step_time(arch, cfg, hw)
        return 1e10 * t.step_s / t.tokens_per_step / 86400 <= 0.5

    for gpu in ("a100-40gb", "l40s"):
        for n_gpus in (8, 16):
            best, best_in_time = dense_scan(grid, gpu, n_gpus, in_time)
            for frame, expected in ((found, best), (found_in_time, best_in_time)):
                row = frame.filter((frame["gpu"] == gpu) & (frame["n_gpus"] == n_gpus))
                assert float(row["params"][0]) == pytest.approx(expected, rel=1e-12), (
                    gpu, n_gpus)
            assert found_in_time.filter((found_in_time["gpu"] == gpu)
                                        & (found_in_time["n_gpus"] == n_gpus))[
                "days_to_train"][0] <= 0.5
            assert best_in_time < best  # the budget binds


def test_a_budget_needs_days_and_one_token_count():
    with pytest.raises(SweepError, match="time budget"):
        TimeBudget(days=3)
    with pytest.raises(SweepError, match="time budget"):
        TimeBudget(days=3, tokens=1e12, tokens_per_param=20)


def test_needs_a_family():
    grid = parse(GRID.replace('{family = "llama3", params = [1e9]}', '["llama-2-7b"]'), "g.toml")
    with pytest.raises(SweepError, match="needs a model family"):
        largest(grid)
