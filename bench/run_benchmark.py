"""Benchmark: one grid through (a) the engine, (b) the NumPy twin, (c) a per-configuration loop.

    python bench/run_benchmark.py [grids/benchmark.toml] [--numpy-sample N] [--loop-sample K]

(a) `sweep.engine.run` end to end: every memory component, validity, the exact frontier, the
    summary and the Parquet files. (b) The same formula functions on NumPy float64 arrays over
    decoded flat indices (a random sample of N configurations, extrapolated), with the same
    fit decision and per-cell reduction. (c) The same functions called once per
    configuration, as today's calculators do (K sampled, extrapolated). Each part runs in its
    own process, which reports its peak RSS. Prints configurations/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def engine_part(grid_path: str) -> dict:
    from sweep import engine
    from sweep.grid import load

    grid = load(grid_path)
    with tempfile.TemporaryDirectory() as tmp:
        grid = replace(grid, output_dir=str(Path(tmp) / grid.name))
        start = time.perf_counter()
        manifest = engine.run(grid, progress=False)
        seconds = time.perf_counter() - start
    return {"configurations": grid.size, "seconds": seconds,
            "compile_seconds": manifest["timing"]["compile_seconds"],
            "rate": grid.size / seconds, "peak_rss_gib": peak_rss_gib(),
            "frontier_points": manifest["frontier_points"], "feasible": manifest["feasible"]}


def _sample(grid, layout, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.sort(rng.integers(0, grid.size, size=min(n, grid.size), dtype=np.int64))


def numpy_part(grid_path: str, n: int) -> dict:
    """The NumPy twin: decode flat indices, evaluate, decide, reduce per kept cell."""
    from sweep.engine import evaluate_flat
    from sweep.engine.frontier import Kept
    from sweep.enumerate import Layout, Tables
    from sweep.grid import load

    grid = load(grid_path)
    layout, kept, tables = Layout.of(grid), Kept.of(grid), Tables(grid)
    flat = _sample(grid, layout, n)
    start = time.perf_counter()
    best = np.full(kept.shape(grid), -np.inf)
    batch = 1 << 18
    for i in range(0, len(flat), batch):
        fits, value, coords = evaluate_flat(grid, layout, tables, flat[i:i + batch])
        cell = tuple(coords[name] if name in coords else np.zeros(len(fits), int)
                     for name in kept.names)
        np.maximum.at(best, tuple(c[fits] for c in cell), value[fits])
    seconds = time.perf_counter() - start
    return {"configurations": len(flat), "seconds": seconds, "rate": len(flat) / seconds,
            "peak_rss_gib": peak_rss_gib()}


def loop_part(grid_path: str, k: int) -> dict:
    """One configuration at a time: scalar inputs, one `estimate` call each."""
    import jax

    from sweep.enumerate import Layout, Tables, constrain, decode, flat_inputs
    from sweep.grid import load
    from sweep.memory.total import estimate

    grid = load(grid_path)
    layout, tables = Layout.of(grid), Tables(grid)
    flat = _sample(grid, layout, k)
    start = time.perf_counter()
    for index in flat:
        coords = {name: int(i) for name, i in decode(layout, np.array(index)).items()}
        arch, cfg, hw = flat_inputs(tables, layout, coords)
        arch, cfg, hw = jax.tree_util.tree_map(float, (arch, cfg, hw))
        cfg, allowed = constrain(grid, cfg)
        est = estimate(arch, cfg, hw)
        bool(allowed and est.fits)
    seconds = time.perf_counter() - start
    return {"configurations": len(flat), "seconds": seconds, "rate": len(flat) / seconds,
            "peak_rss_gib": peak_rss_gib()}


def _subprocess(part: str, *args) -> dict:
    # The engine runs with the XLA flags that run_sweep.py sets.
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_prefer_vector_width=512").strip()
    out = subprocess.run([sys.executable, __file__, "--part", part, *map(str, args)],
                         capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", nargs="?", default="grids/benchmark.toml")
    parser.add_argument("--numpy-sample", type=int, default=1 << 20)
    parser.add_argument("--loop-sample", type=int, default=300)
    parser.add_argument("--part", choices=("engine", "numpy", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "engine":
        print(json.dumps(engine_part(args.grid)))
        return
    if args.part == "numpy":
        print(json.dumps(numpy_part(args.grid, args.numpy_sample)))
        return
    if args.part == "loop":
        print(json.dumps(loop_part(args.grid, args.loop_sample)))
        return
    engine = _subprocess("engine", args.grid)
    twin = _subprocess("numpy", args.grid, "--numpy-sample", args.numpy_sample)
    loop = _subprocess("loop", args.grid, "--loop-sample", args.loop_sample)
    print(f"grid {args.grid}: {engine['configurations']:,} configurations, "
          f"{engine['feasible']:,} fit, {engine['frontier_points']} frontier points")
    print(f"{'method':<34}{'configs/s':>12}{'vs loop':>10}{'peak RSS GiB':>14}")
    rows = [
        (f"engine (end to end, {engine['seconds']:.1f} s; "
         f"{engine['compile_seconds']:.1f} s compile)", engine),
        (f"NumPy twin ({twin['configurations']:,} sampled)", twin),
        (f"per-configuration loop ({loop['configurations']} sampled)", loop),
    ]
    for name, row in rows:
        print(f"{name:<34}{row['rate']:>12.3g}{row['rate'] / loop['rate']:>10.3g}"
              f"{row['peak_rss_gib']:>14.2f}")
    print(f"engine / NumPy twin: {engine['rate'] / twin['rate']:.1f}x; "
          f"engine / loop: {engine['rate'] / loop['rate']:.3g}x")


if __name__ == "__main__":
    main()
