"""Benchmark: grids through the engine, its NumPy twins and a per-configuration loop.

    python bench/run_benchmark.py [GRID ...] [--twin-chunks K] [--flat-sample N]
                                  [--loop-sample M]

For each grid (default: `GRIDS`), each part in its own process:
  engine, first run   `sweep.engine.run` end to end (compile, sweep, exact frontier rows,
                      Parquet) with an empty kernel cache;
  engine, cached      the same again: the compiled kernel comes from the cache;
  structured twin     the engine's algorithm (same sides, pruning, blocks, reduction) in
                      NumPy float64 on K sampled chunks (bench/numpy_twin.py), extrapolated;
  flat twin           `estimate` on 1-D NumPy arrays of N sampled configurations;
  loop                one `estimate` call per configuration, M sampled.
Prints configurations/s per part and the ratios, as a Markdown table.
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
sys.path.insert(0, str(ROOT / "bench"))

GRIDS = ("grids/benchmark_1e10.toml", "bench/grids/time_1e10.toml",
         "bench/grids/planner_mixed.toml",
         "bench/grids/megatron_cp_vpp.toml", "bench/grids/finetune_lora.toml",
         "grids/capacity_planning.toml", "grids/default.toml")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def engine_part(grid_path: str) -> dict:
    from sweep import engine
    from sweep.cli import freeze_survivors
    from sweep.grid import load

    grid = load(grid_path)
    freeze_survivors()  # as run_sweep.py does before a sweep
    with tempfile.TemporaryDirectory() as tmp:
        grid = replace(grid, output_dir=str(Path(tmp) / grid.name))
        start = time.perf_counter()
        manifest = engine.run(grid, progress=False)
        seconds = time.perf_counter() - start
    return {"configurations": grid.size, "seconds": seconds,
            "compile_seconds": manifest["timing"]["compile_seconds"],
            "rate": grid.size / seconds, "peak_rss_gib": peak_rss_gib(),
            "frontier_points": manifest["frontier_points"], "feasible": manifest["feasible"]}


def _setup(grid_path: str):
    from sweep.engine.frontier import Kept
    from sweep.enumerate import Layout, Tables
    from sweep.grid import load

    grid = load(grid_path)
    return grid, Layout.of(grid), Kept.of(grid), Tables(grid)


def structured_part(grid_path: str, chunks: int) -> dict:
    from numpy_twin import structured_chunk

    grid, layout, kept, tables = _setup(grid_path)
    rng = np.random.default_rng(0)
    picked = rng.choice(layout.n_chunks, size=min(chunks, layout.n_chunks), replace=False)
    start = time.perf_counter()
    for chunk in picked:
        structured_chunk(grid, layout, kept, tables, int(chunk))
    seconds = time.perf_counter() - start
    n = len(picked) * layout.chunk_configs
    return {"configurations": n, "seconds": seconds, "rate": n / seconds,
            "peak_rss_gib": peak_rss_gib()}


def _sample(grid, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.sort(rng.integers(0, grid.size, size=min(n, grid.size), dtype=np.int64))


def flat_part(grid_path: str, n: int) -> dict:
    from numpy_twin import flat_batch

    grid, layout, kept, tables = _setup(grid_path)
    flat = _sample(grid, n)
    start = time.perf_counter()
    for i in range(0, len(flat), 1 << 18):
        flat_batch(grid, layout, kept, tables, flat[i:i + (1 << 18)])
    seconds = time.perf_counter() - start
    return {"configurations": len(flat), "seconds": seconds, "rate": len(flat) / seconds,
            "peak_rss_gib": peak_rss_gib()}


def loop_part(grid_path: str, k: int) -> dict:
    """One configuration at a time: scalar inputs, one `estimate` call each."""
    import jax

    from sweep.engine.exact import objective_value
    from sweep.enumerate import constrain, decode, flat_inputs
    from sweep.memory.total import estimate
    from sweep.outputs import Evaluation

    grid, layout, _, tables = _setup(grid_path)
    flat = _sample(grid, k)
    start = time.perf_counter()
    for index in flat:
        coords = {name: int(i) for name, i in decode(layout, np.array(index)).items()}
        arch, cfg, hw = flat_inputs(tables, layout, coords)
        arch, cfg, hw = jax.tree_util.tree_map(float, (arch, cfg, hw))
        cfg, allowed = constrain(grid, cfg, hw)
        est = estimate(arch, cfg, hw)
        if allowed and est.fits:  # the objective of what fits (a step time, say)
            float(objective_value(grid, Evaluation(cfg, est, hw, arch, grid.token_budget)))
    seconds = time.perf_counter() - start
    return {"configurations": len(flat), "seconds": seconds, "rate": len(flat) / seconds,
            "peak_rss_gib": peak_rss_gib()}


PARTS = {"engine": engine_part, "structured": structured_part, "flat": flat_part,
         "loop": loop_part}


def _subprocess(part: str, grid: str, *args, env=None) -> dict:
    env = {**os.environ, **(env or {})}
    # The engine runs with the XLA flags that run_sweep.py sets.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_prefer_vector_width=512").strip()
    out = subprocess.run([sys.executable, __file__, "--part", part, grid, *map(str, args)],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(f"{part} on {grid} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rate(x: float) -> str:
    return f"{x:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="*", default=list(GRIDS))
    parser.add_argument("--twin-chunks", type=int, default=2)
    parser.add_argument("--flat-sample", type=int, default=1 << 18)
    parser.add_argument("--loop-sample", type=int, default=200)
    parser.add_argument("--part", choices=tuple(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.part:
        grid, *extra = args.grids + rest
        print(json.dumps(PARTS[args.part](grid, *map(int, extra))))
        return
    print("| grid | configurations | engine, first run (compile) | engine, cached kernel "
          "| structured NumPy twin | flat NumPy twin | loop | cached engine / structured "
          "twin | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for grid in args.grids:
        with tempfile.TemporaryDirectory() as cache:
            env = {"LLM_MEMORY_SWEEP_CACHE": cache}
            cold = _subprocess("engine", grid, env=env)
            warm = _subprocess("engine", grid, env=env)
        twin = _subprocess("structured", grid, args.twin_chunks)
        flat = _subprocess("flat", grid, args.flat_sample)
        loop = _subprocess("loop", grid, args.loop_sample)
        name = Path(grid).stem
        print(f"| {name} | {cold['configurations']:.3g} | {_rate(cold['rate'])}/s "
              f"({cold['compile_seconds']:.1f} s) | {_rate(warm['rate'])}/s "
              f"({warm['seconds']:.1f} s) | {_rate(twin['rate'])}/s | {_rate(flat['rate'])}/s "
              f"| {_rate(loop['rate'])}/s | {warm['rate'] / twin['rate']:.2g}x "
              f"| {max(cold['peak_rss_gib'], warm['peak_rss_gib']):.2f} |", flush=True)


if __name__ == "__main__":
    main()
