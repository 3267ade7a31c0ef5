"""`explain`'s wall time against importing JAX, in fresh processes, one run each in turn.

    python bench/explain_latency.py [--runs N]

Prints the median wall time of `python -c "import jax.numpy"` and of three `explain`
commands (one that fits, one that does not and searches the nearest configurations that do,
one with --compare --json), and their ratios to the import (the target: at most 1.5).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPLAIN = [sys.executable, "run_sweep.py", "explain"]
CASES = {
    'python -c "import jax.numpy"': [sys.executable, "-c", "import jax.numpy"],
    "explain, fits": EXPLAIN + ["--model", "llama-3.1-8b", "--gpu", "h100-sxm-80gb"],
    "explain, does not fit (+ nearest)": EXPLAIN + [
        "--model", "llama-3.1-70b", "--gpu", "h100-sxm-80gb", "--n-gpus", "64",
        "--zero-stage", "3"],
    "explain --compare --json": EXPLAIN + [
        "--model", "mixtral-8x7b", "--gpu", "a100-80gb", "--n-gpus", "16", "--ep", "8",
        "--framework", "megatron", "--zero-stage", "1", "--compare", "--json"],
}


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, command in CASES.items():
            times[name].append(wall(command))
    base = statistics.median(times[next(iter(CASES))])
    print(f"| command | median wall time ({args.runs} runs) | / import jax.numpy |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} s | {median / base:.2f} |")


if __name__ == "__main__":
    main()
