"""Grid files: ranges, catalog resolution, and errors that name the file and the key."""

from pathlib import Path

import numpy as np
import pytest

from sweep.errors import SweepError
from sweep.grid import load, parse

ROOT = Path(__file__).resolve().parents[1]
BASE = """
[axes]
model = ["llama-3.1-8b"]
gpu = ["h100-sxm-80gb"]
"""


def grid(extra: str = "", base: str = BASE):
    return parse(base + extra, "g.toml")


def test_ranges():
    g = grid('n_gpus = {pow2 = [3, 64]}\nseq_len = {range = [1024, 4096, 1024]}\n'
             'micro_batch = [4, 1, 2]')
    assert list(g.axis("n_gpus").values) == [4, 8, 16, 32, 64]
    assert list(g.axis("seq_len").values) == [1024, 2048, 3072, 4096]
    assert list(g.axis("micro_batch").values) == [1, 2, 4]  # sorted
    assert g.size == 5 * 4 * 3
    with pytest.raises(SweepError, match="listed twice: 2"):
        grid("micro_batch = [4, 1, 2, 2]")


def test_family_log_range_orders_models_by_size():
    g = parse('[axes]\nmodel = {family = "llama3", params = {log_range = [1e9, 1e11, 3]}}\n'
              'gpu = ["a100-80gb"]', "g.toml")
    assert [m.extra["target_params"] for m in g.models] == pytest.approx([1e9, 1e10, 1e11])


def test_categories_and_booleans():
    g = grid('framework = ["fsdp", "megatron"]\nsp = [true, false]')
    assert g.axis("framework").labels == ("megatron", "fsdp")
    assert list(g.axis("sp").values) == [0, 1]


def test_defaults_for_unnamed_keys():
    g = grid()
    assert g.axis("precision").labels == ("bf16-mixed",) and g.size == 1
    assert [o.text for o in g.objectives] == ["-n_gpus", "+params", "+seq_len",
                                              "+tokens_per_gpu"]


@pytest.mark.parametrize(("extra", "message"), [
    ("tensor_parallel = [1, 2]", r"`axes.tensor_parallel`: unknown key"),
    ("tpp = [1]", r"Did you mean 'tp'"),
    ("tp = []", r"`axes.tp`: is empty"),
    ('tp = ["two"]', r"`axes.tp`: values must be numbers"),
    ('precision = ["fp64"]', r"`axes.precision`: `precision` must be one of"),
    ("n_gpus = {pow2 = [64, 8]}", r"`axes.n_gpus`: range must be"),
    ("sp = [1]", r"`axes.sp`: must be true, false"),
    ("[constraints]\nwhole_node = true", r"`constraints.whole_node`: unknown key"),
    ("[constraints]\nglobal_batch_tokens = -5", r"global_batch_tokens`: must be a whole number"),
    ("[frontier]\nobjectives = [\"+speed\"]", r"`frontier.objectives`"),
    ("[frontier]\nobjectives = [\"+tokens_per_gpu\", \"-per_gpu_total_bytes\"]",
     r"at most one objective"),
    ("[frontier]\ngroup_by = [\"gpu\"]\nobjectives = [\"-gpu\"]", r"`frontier.objectives`"),
    ("[output]\nchunk_size = 0", r"`output.chunk_size`"),
    ("[extra]\nx = 1", r"`extra`: unknown key"),
])
def test_errors_name_file_and_key(extra, message):
    with pytest.raises(SweepError, match=message) as err:
        grid(extra)
    assert str(err.value).startswith("g.toml: ")


def test_unknown_catalog_names():
    with pytest.raises(SweepError, match=r"axes.model.*llama-3.1-70b"):
        parse('[axes]\nmodel = ["llama3-70b"]\ngpu = ["a100-80gb"]', "g.toml")
    with pytest.raises(SweepError, match=r"axes.gpu.*h100-sxm-80gb"):
        parse('[axes]\nmodel = ["llama-2-7b"]\ngpu = ["h100"]', "g.toml")


def test_impossible_constraints():
    with pytest.raises(SweepError, match="tp_within_node"):
        grid("tp = [16]\nn_gpus = [64]")
    with pytest.raises(SweepError, match="smallest tp·pp·cp"):
        grid("tp = [4]\npp = [4]\nn_gpus = [8]")
    with pytest.raises(SweepError, match="whole_nodes"):
        grid("n_gpus = [1, 2]\n[constraints]\nwhole_nodes = true")


def test_not_toml():
    with pytest.raises(SweepError, match="not valid TOML"):
        parse("[axes\n", "g.toml")


@pytest.mark.parametrize("path", sorted((ROOT / "grids").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_grids_parse(path):
    g = load(path)
    assert g.size >= 1 and g.name == path.stem
    assert np.all([len(a) >= 1 for a in g.axes])


def test_default_grid_runs(tmp_path):
    """`python run_sweep.py` with no arguments: the default grid, end to end."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "run_sweep.py", "--no-progress", "--out",
                           str(tmp_path / "default")], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert "frontier points" in done.stdout and "duckdb" in done.stdout
    assert (tmp_path / "default" / "summary.parquet").exists()
