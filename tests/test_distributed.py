"""Scale-out: two processes under jax.distributed (CPU, on localhost) write the same files,
byte for byte, as one process; when one fails, the other stops with its error."""

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


def _two(grid_path: Path, *flags: str) -> list[subprocess.Popen]:
    coordinator = ["--coordinator", f"localhost:{_free_port()}", "--num-processes", "2"]
    return [_run(grid_path, *flags, *coordinator, "--process-id", str(i)) for i in (1, 0)]


def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "out"
    grid_path = tmp_path / "small.toml"
    grid_path.write_text(SMALL.replace("OUT", str(out)))
    one = _run(grid_path)
    assert one.wait(timeout=300) == 0, one.stderr.read()
    single = _files(out)
    import shutil

    shutil.rmtree(out)
    for worker in _two(grid_path):
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
    assert _files(out) == single
    states = sorted(p.name for p in (out / ".sweep" / "state").iterdir())
    assert states == ["state-0-of-2.npz", "state-1-of-2.npz"]  # one resumable part each


def _errors(worker: subprocess.Popen) -> list[str]:
    """The error lines of a worker that failed with a clear error (JAX did not abort it)."""
    code = worker.wait(timeout=120)
    err = worker.stderr.read()
    assert code == 2 and "Traceback" not in err and "Terminating process" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_one_failing_stops_the_other_with_its_error(tmp_path):
    """Process 0 refuses the directory (a file the tool never wrote, under --force); process
    1, waiting for it, stops with that error instead of a collective's timeout (a traceback
    after 30 s before `engine.peers`) or a wait without end."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    grid_path = tmp_path / "small.toml"
    grid_path.write_text(SMALL.replace("OUT", str(out)))
    second, first = _two(grid_path, "--force")
    errors = [_errors(first), _errors(second)]
    assert len(errors[0]) == 1 and "notes.txt" in errors[0][0]
    assert errors[1] == [errors[0][0].replace("error: ", "error: process 0 failed: ", 1)], errors
    assert (out / "notes.txt").read_text() == "mine"


def test_process_1_failing_at_the_end_stops_process_0(tmp_path):
    """Process 1 cannot write its resumable state (a folder where its file goes): process 0,
    which hosts the coordination service, reports that error and goes last, so that JAX
    does not abort process 1 ("Terminating process because the JAX distributed service
    detected fatal errors", seen here when process 0 went first)."""
    out = tmp_path / "out"
    grid_path = tmp_path / "small.toml"
    grid_path.write_text(SMALL.replace("OUT", str(out)))
    assert _run(grid_path).wait(timeout=300) == 0
    (out / ".sweep" / "state" / "state-1-of-2.npz" / "in-the-way").mkdir(parents=True)
    second, first = _two(grid_path, "--force")
    errors = [_errors(first), _errors(second)]
    assert len(errors[1]) == 1 and "state-1-of-2.npz" in errors[1][0]
    assert errors[0] == [errors[1][0].replace("error: ", "error: process 1 failed: ", 1)], errors
