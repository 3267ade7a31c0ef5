"""The sweep engine's outputs: Parquet, DuckDB, resume, refusal, devices, the frontier's
cumulative maximum (values against a reference: test_engine_reference.py)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep import engine
from sweep.engine.frontier import frontier_cells, pareto_mask
from sweep.errors import SweepError
from sweep.grid import parse

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
name = "small"
[axes]
model = ["llama-3.1-8b", "mistral-7b", "llama-2-13b"]
gpu = ["a100-40gb", "h100-sxm-80gb"]
n_gpus = {pow2 = [1, 8]}
tp = [1, 2]
zero_stage = [0, 3]
micro_batch = [1, 2]
seq_len = [2048, 8192]
recompute = ["none", "full"]
[output]
dir = "OUT"
chunk_size = 64
"""


def small(tmp_path, text=SMALL):
    return parse(text.replace("OUT", str(tmp_path / "out")), "small.toml")


def test_outputs_and_duckdb(tmp_path):
    grid = small(tmp_path)
    engine.run(grid, progress=False)
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grid_hash"] == grid.hash and manifest["configurations"] == grid.size
    rows = duckdb.sql(
        f"SELECT gpu, count(*) AS n, max(per_gpu_total_bytes <= gpu_capacity_bytes) AS ok "
        f"FROM read_parquet('{out}/frontier/*/*.parquet', hive_partitioning = true) "
        f"GROUP BY gpu ORDER BY gpu").fetchall()
    front = pl.read_parquet(out / "frontier", hive_partitioning=True)
    assert rows == [(g, len(front.filter(pl.col("gpu") == g)), True)
                    for g in sorted(set(front["gpu"]))]
    import pyarrow.parquet as pq

    meta = pq.read_schema(next((out / "frontier").glob("*/*.parquet"))).metadata
    assert meta[b"grid_hash"].decode() == grid.hash
    assert meta[b"grid_text"].decode() == grid.text
    assert b"engine_version" in meta and b"formula_version" in meta and b"units" in meta


def _files(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".sweep" not in p.parts}


def test_rerun_is_byte_identical_and_resumes(tmp_path):
    grid = small(tmp_path)
    engine.run(grid, progress=False)
    first = _files(tmp_path / "out")
    # An interrupted run: stop after 3 chunks, then resume to the end.
    shutil.rmtree(tmp_path / "out")
    partial = engine.run(grid, progress=False, max_chunks=3)
    assert partial["complete"] is False and partial["chunks_done"] == 3
    assert not (tmp_path / "out" / "manifest.json").exists()
    engine.run(grid, progress=False)
    assert _files(tmp_path / "out") == first


def test_refuses_another_grids_output(tmp_path):
    engine.run(small(tmp_path), progress=False)
    other = small(tmp_path, SMALL.replace('seq_len = [2048, 8192]', 'seq_len = [4096]'))
    with pytest.raises(SweepError, match="different grid"):
        engine.run(other, progress=False)
    engine.run(other, progress=False, force=True)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["grid_hash"] == \
        other.hash


def test_feasible_dump(tmp_path):
    text = SMALL.replace("chunk_size = 64", "chunk_size = 64\nfeasible_dump = true")
    grid = small(tmp_path, text)
    manifest = engine.run(grid, progress=False)
    dump = pl.read_parquet(tmp_path / "out" / "feasible")
    assert len(dump) == manifest["feasible"]
    assert (dump["per_gpu_total_bytes"] <= dump["gpu_capacity_bytes"]).all()


def test_forced_host_devices_give_identical_files(tmp_path):
    """4 forced CPU devices (a fresh process) write the same files as 1 device."""
    grid_path = tmp_path / "g.toml"
    out = tmp_path / "out"
    grid_path.write_text(SMALL.replace("OUT", str(out)))
    outputs = {}
    for devices in (1, 4):
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
        code = ("import jax, sys; from sweep import engine; from sweep.grid import load; "
                f"assert len(jax.local_devices()) == {devices}; "
                f"engine.run(load(sys.argv[1]), progress=False)")
        subprocess.run([sys.executable, "-c", code, str(grid_path)], cwd=ROOT, env=env,
                       check=True)
        outputs[devices] = _files(out)
        shutil.rmtree(out)
    assert outputs[1] == outputs[4]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(1, 4), min_size=1, max_size=3),
       st.lists(st.booleans(), min_size=3, max_size=3), st.data())
def test_frontier_cells_equal_pairwise_dominance(groups, sizes, maximize, data):
    """On random cells (values or -inf), the cumulative-max frontier equals brute force."""
    shape = (groups, *sizes)
    values = data.draw(st.lists(st.sampled_from([-np.inf, 0.0, 1.0, 2.0, 3.0]),
                                min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    best = np.array(values).reshape(shape)
    up = maximize[: len(sizes)]
    got = frontier_cells(best, list(range(1, len(shape))), up)
    for g in range(groups):
        cells = np.argwhere(np.isfinite(best[g]))
        if not len(cells):
            assert not got[g].any()
            continue
        points = np.column_stack([cells, best[g][tuple(cells.T)]])
        keep = pareto_mask(points, [*up, True])
        expected = np.zeros(best[g].shape, bool)
        expected[tuple(cells[keep].T)] = True
        assert (got[g] == expected).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_unpack_near_reads_every_marked_configuration(sizes, data):
    """The near-capacity mask, rows x columns in the plan's dimension order with each row's
    bits packed, unpacks to the marked configurations' inner indices in canonical order:
    checked element by element against the mask read in full (`np.nonzero` over the
    permuted array)."""
    from types import SimpleNamespace

    from sweep.engine.exact import unpack_near

    shape = tuple(sizes)
    permutation = data.draw(st.permutations(range(len(shape))))
    row_dims = data.draw(st.integers(0, len(shape)))  # the leading ones make the rows
    marked = np.array(data.draw(st.lists(st.booleans(), min_size=int(np.prod(shape)),
                                         max_size=int(np.prod(shape)))))
    canonical = marked.reshape(shape)
    in_plan_order = np.transpose(canonical, permutation)
    n_rows = int(np.prod([shape[i] for i in permutation[:row_dims]]))
    bits = np.packbits(in_plan_order.reshape(n_rows, -1), axis=1)
    expected = set(np.flatnonzero(canonical))
    got = unpack_near(bits, SimpleNamespace(inner_shape=shape), list(permutation))
    assert sorted(got.tolist()) == sorted(expected)
    assert len(got) == len(expected)


def test_a_grid_with_other_swept_values_reuses_the_kernel(tmp_path, monkeypatch):
    """Swept values are the kernel's arguments: a grid with the same axes and sizes but other
    models, GPUs and counts loads the first grid's kernel, and its files are byte for byte
    those of a run that compiles its own (the cache off)."""
    monkeypatch.setenv("LLM_MEMORY_SWEEP_CACHE", str(tmp_path / "cache"))
    first = engine.run(small(tmp_path / "a"), progress=False)
    other_text = (SMALL.replace('"llama-3.1-8b", "mistral-7b", "llama-2-13b"',
                                '"qwen2.5-7b", "llama-3.1-70b", "mixtral-8x7b"')
                  .replace('"a100-40gb", "h100-sxm-80gb"', '"h100-sxm-80gb", "a100-80gb"')
                  .replace("pow2 = [1, 8]", "pow2 = [2, 16]")
                  .replace("seq_len = [2048, 8192]", "seq_len = [1024, 4096]"))
    other = small(tmp_path / "b", other_text)
    reused = engine.run(other, progress=False)
    files = _files(tmp_path / "b" / "out")
    shutil.rmtree(tmp_path / "b" / "out")
    monkeypatch.setenv("LLM_MEMORY_SWEEP_CACHE", "off")
    compiled = engine.run(other, progress=False)
    assert not first["timing"]["cached"] and reused["timing"]["cached"]
    assert not compiled["timing"]["cached"]
    assert reused["feasible"] == compiled["feasible"] > 0
    assert files == _files(tmp_path / "b" / "out")


def test_other_framework_values_compile_their_own_kernel(tmp_path, monkeypatch):
    """Tracing reads the framework codes (only their profiles are traced): a grid that
    sweeps other frameworks over the same sizes does not load the first one's kernel."""
    monkeypatch.setenv("LLM_MEMORY_SWEEP_CACHE", str(tmp_path / "cache"))
    text = SMALL.replace("[output]", 'framework = ["deepspeed", "fsdp"]\n[output]')
    engine.run(small(tmp_path / "a", text), progress=False)
    other = engine.run(small(tmp_path / "b", text.replace('"deepspeed", "fsdp"',
                                                          '"generic", "fsdp"')),
                       progress=False)
    assert not other["timing"]["cached"]


def test_the_kernels_xla_options_are_known_and_an_unknown_one_is_left_out():
    """The CPU options of both programs, for small and large grids, are ones this XLA knows
    (else `_compiled` would silently drop them), and an option XLA does not know is left
    out, not an error."""
    import jax

    from sweep.engine import kernel

    lowered = jax.jit(lambda x: x * 2.0).lower(1.0)
    for program in (kernel.TERMS, kernel.REDUCE):
        for size in (1, kernel.QUICK_COMPILE_CONFIGS):
            options = kernel.compiler_options("cpu", program, size)
            assert float(lowered.compile(options)(3.0)) == 6.0
    assert kernel.compiler_options("cpu", kernel.TERMS, 1)["xla_backend_optimization_level"] == 0
    assert float(kernel._compiled(lowered, {"xla_no_such_option": True})(3.0)) == 6.0
    with pytest.raises(Exception, match="No such compile option"):
        lowered.compile({"xla_no_such_option": True})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_live_rows_come_first_in_order_as_numpys_nonzero_gives_them(alive):
    """`kernel._live_first` (32 rows to a word, population counts) against NumPy's
    `flatnonzero`: every length, including partial last words and no live row."""
    import jax

    from sweep.engine.kernel import _live_first

    alive = np.array(alive)
    want = np.zeros(len(alive), np.uint32)
    live = np.flatnonzero(alive)
    want[:len(live)] = live
    np.testing.assert_array_equal(np.asarray(jax.jit(_live_first)(alive)), want)
