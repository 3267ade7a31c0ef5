"""Scale-out: two processes under jax.distributed (CPU, gloo collectives on localhost) write
the same files, byte for byte, as one process."""

import socket
import subprocess
import sys
from pathlib import Path

from test_engine import SMALL, _files

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _run(grid_path: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run_sweep.py", str(grid_path), "--no-progress",
                             *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "out"
    grid_path = tmp_path / "small.toml"
    grid_path.write_text(SMALL.replace("OUT", str(out)))
    one = _run(grid_path)
    assert one.wait(timeout=300) == 0, one.stderr.read()
    single = _files(out)
    import shutil

    shutil.rmtree(out)
    port = _free_port()
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2"]
    workers = [_run(grid_path, *flags, "--process-id", str(i)) for i in (1, 0)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
    assert _files(out) == single
    states = sorted(p.name for p in (out / ".sweep" / "state").iterdir())
    assert states == ["state-0-of-2.npz", "state-1-of-2.npz"]  # one resumable part each
