"""Nothing is lost: --force removes only what the tool wrote, a second writer is refused, a run
killed or failing in any phase leaves no file a reader trips on and resumes to the same bytes."""

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_engine import SMALL, _files

from sweep import engine, outdir
from sweep.cli import main
from sweep.engine import orchestrate
from sweep.errors import SweepError
from sweep.grid import parse

ROOT = Path(__file__).resolve().parents[1]
OTHER = SMALL.replace("seq_len = [2048, 8192]", "seq_len = [4096]")


def one_error(err: str) -> str:
    """The one error line of a CLI's stderr (progress and headers aside), no traceback."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


class SimulatedKill(BaseException):
    """Stands for SIGKILL in-process: no `except Exception` handler sees it."""


def small(text=SMALL):
    """The grid writing `out` relative to the working directory (each test's tmp_path), so
    that every test's files, grid text included, are byte-comparable with `reference`."""
    return parse(text.replace('"OUT"', '"out"'), "small.toml")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The files of one clean run of the small grid."""
    here = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("reference"))
    try:
        engine.run(small(), progress=False)
        return _files(Path("out"))
    finally:
        os.chdir(here)


def test_force_refuses_a_directory_with_foreign_files(tmp_path):
    engine.run(small(), progress=False)
    out = tmp_path / "out"
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("a,b\n")
    before = _files(out)
    with pytest.raises(SweepError, match=r"did not write \(notes.txt, sub/data.csv\)"):
        engine.run(small(OTHER), progress=False, force=True)
    assert _files(out) == before  # nothing removed, nothing written


def test_force_removes_only_the_previous_runs_files(tmp_path):
    dump = SMALL.replace("chunk_size = 64", "chunk_size = 64\nfeasible_dump = true")
    engine.run(small(dump), progress=False)
    out = tmp_path / "out"
    first = set(_files(out))
    assert any(p.parts[0] == "feasible" for p in first)
    with pytest.raises(SweepError, match="different grid"):
        engine.run(small(OTHER), progress=False)
    engine.run(small(OTHER), progress=False, force=True)
    now = set(_files(out))
    assert not any(p.parts[0] == "feasible" for p in now)  # the first run's dump is gone
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(str(p) for p in now if p.name != "manifest.json")


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x" * 101, "-x", "nul\x00"])
def test_bad_names_are_refused(name):
    text = SMALL.replace('name = "small"', f"name = {json.dumps(name)}")
    with pytest.raises(SweepError, match="`name` must be"):
        parse(text, "g.toml")


@pytest.mark.parametrize("path", ["../escape", "a/../../b", "bad\x00dir", "y" * 300])
def test_bad_output_dirs_are_refused(path):
    with pytest.raises(SweepError, match="output.dir"):
        parse(SMALL.replace('"OUT"', json.dumps(path)), "g.toml")


def test_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    grid = tmp_path / "g.toml"
    grid.write_text(SMALL.replace("OUT", str(tmp_path / "unused")))
    assert main([str(grid), "--out", str(target), "--no-progress"]) == 2
    assert "is a file" in one_error(capsys.readouterr().err) and target.read_text() == "x"


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, reference):
    out = tmp_path / "out"
    (out / outdir.TOOL_DIR).mkdir(parents=True)
    lock = out / outdir.TOOL_DIR / "lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(SweepError, match=f"another process \\(pid {sleeper.pid}"):
            engine.run(small(), progress=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    # The owner is gone: its lock is stale and taken over.
    engine.run(small(), progress=False)
    assert _files(out) == reference and not lock.exists()


@pytest.mark.parametrize("kill_at", [1, 3, 5])
def test_killed_in_any_write_resumes_to_the_same_files(tmp_path, monkeypatch, reference,
                                                      kill_at):
    """The k-th file move raises as a kill would: the temporary stays in .sweep/tmp (never
    where readers look), the frontier reads, and the re-run ends with the reference bytes."""
    moves = {"n": 0}
    real = os.replace

    def dying_replace(src, dst):
        moves["n"] += 1
        if moves["n"] == kill_at:
            raise SimulatedKill
        return real(src, dst)

    monkeypatch.setattr(outdir.os, "replace", dying_replace)
    with pytest.raises(SimulatedKill):
        engine.run(small(), progress=False)
    out = tmp_path / "out"
    if (out / "frontier").exists():
        pl.read_parquet(out / "frontier", hive_partitioning=True)  # readers are not tripped
    # What a real kill leaves (no finally block runs): a partial file in .sweep/tmp, and one
    # in engine 0.2's place beside the frontier files.
    (out / outdir.TOOL_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    (out / outdir.TOOL_DIR / "tmp" / "part-0.parquet.999.partial").write_bytes(b"PAR1")
    (out / "frontier" / "gpu=a100-40gb").mkdir(parents=True, exist_ok=True)
    (out / "frontier" / "gpu=a100-40gb" / ".part-0.parquet.tmp-999").write_bytes(b"PAR1")
    monkeypatch.setattr(outdir.os, "replace", real)
    engine.run(small(), progress=False)
    assert _files(out) == reference
    assert not (out / outdir.TOOL_DIR / "tmp").exists()


def test_truncated_state_and_manifest_resume(tmp_path, reference, capsys):
    grid = small()
    engine.run(grid, progress=False, max_chunks=3)
    out = tmp_path / "out"
    state = next((out / outdir.TOOL_DIR / "state").glob("*.npz"))
    state.write_bytes(state.read_bytes()[:100])
    engine.run(grid, progress=False)
    assert "unreadable resume state" in capsys.readouterr().err
    assert _files(out) == reference
    (out / "manifest.json").write_text('{"grid_hash": "ab')  # truncated by a crash
    engine.run(grid, progress=False)
    assert _files(out) == reference


def test_two_writers_making_the_same_folder(tmp_path, monkeypatch):
    """Each process of a multi-process run writes its own state into `.sweep/state/`: when
    another process makes that folder between this one's staging and its rename, the file
    goes into theirs, and neither is lost (seen here as 'Directory not empty', then a hang
    of the other process at its barrier)."""
    out = outdir.OutputDir(tmp_path / "out")
    real = os.replace

    def raced(src, dst):
        if Path(dst) == out.state:  # another process wins the race for the folder
            out.state.mkdir(parents=True)
            (out.state / "state-1-of-2.npz").write_bytes(b"theirs")
        return real(src, dst)

    monkeypatch.setattr(outdir.os, "replace", raced)
    out.write_state("state-0-of-2.npz", lambda tmp: tmp.write_bytes(b"mine"))
    assert sorted((p.name, p.read_bytes()) for p in out.state.iterdir()) == [
        ("state-0-of-2.npz", b"mine"), ("state-1-of-2.npz", b"theirs")]
    assert not any(p.is_file() for p in out.tmp.rglob("*"))  # nothing left staged


def test_disk_full_is_one_clear_error_and_resumable(tmp_path, monkeypatch, reference, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    Path("g.toml").write_text(SMALL.replace("OUT", "out"))
    with monkeypatch.context() as patch:
        patch.setattr("sweep.sink.pq.write_table", full)
        assert main(["g.toml", "--no-progress"]) == 2
    err = one_error(capsys.readouterr().err)
    assert "no space left on the device" in err and "frontier" in err
    engine.run(small(), progress=False)  # the same grid, not "a different grid"
    assert _files(tmp_path / "out") == reference


def test_ctrl_c_is_one_line_and_keeps_the_work(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = orchestrate.jax.device_get

    def interrupted(value):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(value)

    monkeypatch.setattr(orchestrate.jax, "device_get", interrupted)
    Path("g.toml").write_text(SMALL.replace("OUT", "out"))
    assert main(["g.toml", "--no-progress"]) == 130
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("interrupted")]
    assert len(lines) == 1 and "resume" in lines[0]
    with np.load(next((tmp_path / "out" / outdir.TOOL_DIR / "state").glob("*.npz"))) as data:
        assert data["done"].sum() == 2  # the two finished chunks are kept


def test_sigkill_at_a_random_moment_and_a_concurrent_writer(tmp_path, reference):
    """A real SIGKILL of a running sweep at a random moment; meanwhile a second grid aimed
    at the same directory is refused; the resumed run ends with the reference bytes."""
    Path("small.toml").write_text(SMALL.replace("OUT", "out"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_sweep.py"), "small.toml",
                             "--no-progress"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lock = tmp_path / "out" / outdir.TOOL_DIR / "lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        with pytest.raises(SweepError, match="another process"):
            engine.run(small(OTHER), progress=False)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    engine.run(small(), progress=False)
    assert _files(tmp_path / "out") == reference
