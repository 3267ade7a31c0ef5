"""Scaling benchmark: one grid with 1..N forced CPU devices in one process, and with 1..P
processes under jax.distributed on localhost.

    python bench/scaling.py [grids/benchmark.toml] [--devices 1 2 4] [--processes 1 2]

Prints wall-clock seconds and configurations/s for each setting (end to end, including
compilation, the frontier and the files). On a GPU host, --devices is the number of GPUs
made visible (CUDA_VISIBLE_DEVICES) instead.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _size(grid: str) -> int:
    sys.path.insert(0, str(ROOT))
    from sweep.grid import load

    return load(grid).size


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _launch(grid: str, out: str, env: dict, flags=()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run_sweep.py", grid, "--no-progress", "--out",
                             out, "--force", *flags], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(grid: str, devices: int = 1, processes: int = 1) -> float:
    env = dict(os.environ)
    gpu = "cuda" in subprocess.run([sys.executable, "-c", "import jax; print(jax.devices())"],
                                   capture_output=True, text=True).stdout.lower()
    if gpu:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(devices)))
    else:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if processes == 1:
            workers = [_launch(grid, tmp, env)]
        else:
            flags = ["--coordinator", f"localhost:{_port()}", "--num-processes", str(processes)]
            workers = [_launch(grid, tmp, env, [*flags, "--process-id", str(i)])
                       for i in range(processes)]
        for worker in workers:
            if worker.wait() != 0:
                raise RuntimeError(worker.stderr.read())
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", nargs="?", default="grids/benchmark.toml")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    tomllib.loads(Path(ROOT / args.grid).read_text())  # fail early on a bad path
    size = _size(args.grid)
    print(f"{args.grid}: {size:,} configurations")
    print(f"{'setting':<28}{'seconds':>10}{'configs/s':>12}")
    for devices in args.devices:
        seconds = timed(args.grid, devices=devices)
        print(f"{f'1 process, {devices} device(s)':<28}{seconds:>10.1f}{size / seconds:>12.3g}")
    for processes in args.processes:
        if processes == 1:
            continue
        seconds = timed(args.grid, processes=processes)
        print(f"{f'{processes} processes, 1 device each':<28}{seconds:>10.1f}"
              f"{size / seconds:>12.3g}")


if __name__ == "__main__":
    main()
