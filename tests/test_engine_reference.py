"""The engine against a reference that shares none of its machinery: every configuration of a
grid enumerated with `itertools.product` over the axes, `estimate` called on the whole list in
float64, the constraints and objectives written again here, the frontier found by pairwise
dominance. Grids of every shape (no axis swept, one, many), every kind of computed objective
(none, a product, a memory value), a fixed global batch, and the kernel's multi-block path
forced on small grids."""

import itertools

import jax
import numpy as np
import polars as pl
import pytest

from sweep import engine
from sweep.config import Hardware, TrainConfig
from sweep.engine import kernel
from sweep.grid import parse
from sweep.memory.total import estimate
from sweep.timing import step_time
from sweep.vocabulary import FRAMEWORKS, MODES

MEGATRON = FRAMEWORKS.index("megatron")


def reference(grid):
    """(rows, feasible per group): every configuration that fits, in grid order, with its
    group, objective values and index; counts of those that fit per group."""
    swept = [a for a in grid.axes if len(a) > 1]
    combos = list(itertools.product(*[range(len(a)) for a in swept]))
    n = len(combos)
    index = {a.name: np.array([c[i] for c in combos], int) if n and swept else np.zeros(n, int)
             for i, a in enumerate(swept)}
    if not swept:
        n, index = 1, {}

    def column(name):
        axis = grid.axis(name)
        return axis.values[index[name]] if name in index else np.full(n, axis.values[0])

    model = index.get("model", np.zeros(n, int))
    gpu = index.get("gpu", np.zeros(n, int))
    archs = [m.arch for m in grid.models]
    arch = jax.tree_util.tree_map(lambda *xs: np.array(xs, float)[model], *archs)
    hardware = [g.hardware() for g in grid.gpus]
    hw = Hardware(**{f: np.array([float(getattr(h, f)) for h in hardware])[gpu]
                     for f in Hardware.__dataclass_fields__})
    values = {f: column(f).astype(float) for f in TrainConfig.__dataclass_fields__}
    if grid.gpus_per_node_from_gpu:
        values["gpus_per_node"] = np.array([float(g.devices_per_node) for g in grid.gpus])[gpu]
    allowed = np.ones(n, bool)
    if grid.tp_within_node:
        allowed &= values["tp"] <= values["gpus_per_node"]
    if grid.whole_nodes:
        allowed &= values["n_gpus"] % values["gpus_per_node"] == 0
    if grid.global_batch_tokens:
        data_parallel = values["n_gpus"] / (values["tp"] * values["pp"] * values["cp"])
        accum = grid.global_batch_tokens / (values["micro_batch"] * values["seq_len"]
                                            * data_parallel)
        allowed &= (accum >= 1) & (accum == np.round(accum))
        values["grad_accum"] = accum
    cfg = TrainConfig(**values)
    est = estimate(arch, cfg, hw)
    fits = allowed & np.broadcast_to(est.fits, (n,))
    total = np.broadcast_to(est.per_gpu_total_bytes, (n,))
    computed = {
        "tokens_per_gpu": values["micro_batch"] * values["seq_len"]
        / (values["tp"] * values["pp"] * values["cp"]),
        "per_gpu_total_bytes": total,
        "headroom_bytes": np.broadcast_to(est.gpu_capacity_bytes, (n,)) - total,
        "params": np.broadcast_to(est.params_total, (n,)),
    }
    time_keys = {"step_s", "tokens_per_s", "days_to_train", "cost_to_train"}
    if time_keys & {o.key for o in grid.objectives}:
        t = step_time(arch, cfg, hw)
        seconds, tokens = np.broadcast_to(t.step_s, (n,)), np.broadcast_to(t.tokens_per_step, n)
        computed |= {"step_s": seconds, "tokens_per_s": tokens / seconds,
                     "days_to_train": grid.token_budget * seconds / tokens / 86400,
                     "cost_to_train": grid.token_budget * seconds / tokens / 3600
                     * values["n_gpus"] * hw.price_per_gpu_hour_usd}
    frame = {"config_index": np.arange(n), "grad_accum": np.broadcast_to(values["grad_accum"], n),
             "gpus_per_node": values["gpus_per_node"],
             "per_gpu_total_bytes_": total}
    for name in {*grid.group_by, *(o.key for o in grid.objectives)}:
        if name in computed:
            frame[name] = computed[name]
        elif name in grid.group_by:  # groups by their labels, as the files show them
            frame[name] = np.array(grid.axis(name).labels)[index.get(name, np.zeros(n, int))]
        else:
            frame[name] = column(name)
    rows = pl.DataFrame(frame).filter(pl.Series(fits))
    counts = rows.group_by(list(grid.group_by)).len() if grid.group_by else None
    return rows, counts


def dominated(points: np.ndarray, up: list[bool]) -> np.ndarray:
    """points[i] is dominated by another point (>= everywhere after orientation, > once)."""
    p = points * np.where(up, 1.0, -1.0)
    ge = (p[None, :, :] >= p[:, None, :]).all(-1)
    gt = (p[None, :, :] > p[:, None, :]).any(-1)
    return (ge & gt).any(1)


def rounded(value) -> float:
    """To 12 significant digits: the float64 formulas here and in the registry may order
    their operations differently (the cost of a run, for one)."""
    return float(f"{float(value):.12g}")


def reference_frontier(grid, rows: pl.DataFrame) -> set:
    """(group labels, objective values, config index) of every Pareto-optimal point; a point
    reached by several configurations is shown by the first in grid order."""
    keys = [o.key for o in grid.objectives]
    up = [o.maximize for o in grid.objectives]
    out = set()
    groups = rows.group_by(list(grid.group_by)) if grid.group_by else [((), rows)]
    for labels, part in groups:
        firsts = part.sort("config_index").unique(subset=keys, keep="first")
        points = firsts.select(keys).to_numpy().astype(float)
        keep = ~dominated(points, up)
        for row in firsts.filter(pl.Series(keep)).iter_rows(named=True):
            out.add((tuple(map(str, labels)), tuple(rounded(row[k]) for k in keys),
                     int(row["config_index"])))
    return out


def engine_frontier(grid, tmp_path):
    """(frontier points as `reference_frontier` gives them, manifest, summary, rows)."""
    manifest = engine.run(grid, progress=False)
    front = pl.read_parquet(tmp_path / "out" / "frontier", hive_partitioning=True)
    keys = [o.key for o in grid.objectives]
    got = {(tuple(str(r[g]) for g in grid.group_by), tuple(rounded(r[k]) for k in keys),
            int(r["config_index"])) for r in front.iter_rows(named=True)}
    summary = pl.read_parquet(tmp_path / "out" / "summary.parquet")
    return got, manifest, summary, front


def check(grid, tmp_path):
    got, manifest, summary, front = engine_frontier(grid, tmp_path)
    rows, counts = reference(grid)
    assert len(rows) > 0  # the grid is not vacuous
    assert manifest["feasible"] == len(rows)
    assert got == reference_frontier(grid, rows)
    # The rows' derived values are the configuration's as evaluated.
    by_index = {r["config_index"]: r for r in rows.iter_rows(named=True)}
    for row in front.iter_rows(named=True):
        expected = by_index[row["config_index"]]
        assert row["grad_accum"] == expected["grad_accum"]
        assert row["gpus_per_node"] == expected["gpus_per_node"]
        assert row["per_gpu_total_bytes"] == pytest.approx(expected["per_gpu_total_bytes_"],
                                                           rel=1e-12)
    if counts is not None:
        expected = {tuple(map(str, r[:-1])): r[-1] for r in counts.iter_rows()}
        actual = {tuple(str(r[g]) for g in grid.group_by): r["feasible"]
                  for r in summary.iter_rows(named=True)}
        assert {k: v for k, v in actual.items() if v} == expected


def grid_of(tmp_path, axes: str, extra: str = "", chunk: int = 1 << 24):
    text = (f'name = "ref"\n[axes]\n{axes}\n{extra}\n'
            f'[output]\ndir = "{tmp_path / "out"}"\nchunk_size = {chunk}\n')
    return parse(text, "ref.toml")


PLANNER = """
model = ["llama-3.1-8b", "mixtral-8x7b"]
gpu = ["a100-40gb", "h100-sxm-80gb"]
n_gpus = [8, 16, 32, 64]
tp = [1, 2, 4]
pp = [1, 2]
cp = [1, 2]
ep = [1, 8]
zero_stage = [0, 1, 3]
framework = ["megatron", "deepspeed", "fsdp"]
finetune = ["full", "lora"]
micro_batch = [1, 2]
seq_len = [4096, 8192]
recompute = ["none", "full"]
"""


TIME_PLANNER = """
model = ["llama-3.1-8b", "mixtral-8x7b"]
gpu = ["a100-40gb", "h100-sxm-80gb"]
n_gpus = [8, 16, 32]
tp = [1, 2, 4]
pp = [1, 2]
ep = [1, 8]
zero_stage = [1, 3]
framework = ["megatron", "fsdp"]
micro_batch = [1, 2]
recompute = ["none", "full"]
"""


def test_time_objective_with_global_batch(tmp_path):
    """A time-valued objective (the step time reads nearly every axis, and m per
    configuration with a global batch): the fastest configuration per GPU count, GPU and
    model, against the step time of every configuration in float64."""
    grid = grid_of(tmp_path, TIME_PLANNER, """
[constraints]
global_batch_tokens = 262144
[frontier]
group_by = ["gpu", "model"]
objectives = ["-n_gpus", "+tokens_per_s"]
""")
    check(grid, tmp_path)


def test_cost_objective_with_grad_accum_axis(tmp_path):
    """m as an axis, a token budget and a price per GPU type: the cheapest configuration to
    train per GPU count and context length (days to train is the same path without the
    price)."""
    grid = grid_of(tmp_path, TIME_PLANNER + "grad_accum = [1, 4]\nseq_len = [2048, 4096]", """
[cost]
token_budget = 1e11
price_per_gpu_hour_usd = {"a100-40gb" = 1.1, "h100-sxm-80gb" = 2.5}
[frontier]
group_by = ["gpu"]
objectives = ["-n_gpus", "+seq_len", "-cost_to_train"]
""")
    check(grid, tmp_path)


@pytest.mark.parametrize("rows_per_block", [kernel.ROWS_PER_BLOCK_CONFIGS, 8])
def test_global_batch_memory_objective_by_gpu_and_model(tmp_path, monkeypatch, rows_per_block):
    """A planner's grid: fixed global batch (m per configuration), a memory objective, groups
    of GPU and model, MoE and three frameworks; then with 8 configurations per block and small
    chunks (the multi-block, multi-chunk path)."""
    monkeypatch.setattr(kernel, "ROWS_PER_BLOCK_CONFIGS", rows_per_block)
    chunk = 1 << 24 if rows_per_block > 8 else 512
    grid = grid_of(tmp_path, PLANNER, """
[constraints]
global_batch_tokens = 262144
[frontier]
group_by = ["gpu", "model"]
objectives = ["-n_gpus", "+seq_len", "-per_gpu_total_bytes"]
""", chunk)
    check(grid, tmp_path)


@pytest.mark.parametrize("global_batch", [False, True])
def test_a_wide_near_capacity_band_is_decided_on_the_host(tmp_path, monkeypatch, global_batch):
    """With the band the kernel cannot decide widened to 20% of the allocatable bytes, many
    configurations are left to the host's float64 (the kernel marks them, a block at a time);
    the result is still the reference's. Eight configurations per block and small chunks."""
    monkeypatch.setattr(kernel, "NEAR", 0.2)
    monkeypatch.setattr(kernel, "ROWS_PER_BLOCK_CONFIGS", 8)
    constraints = "[constraints]\nglobal_batch_tokens = 262144\n" if global_batch else ""
    grid = grid_of(tmp_path, PLANNER, constraints + """
[frontier]
group_by = ["gpu", "model"]
objectives = ["-n_gpus", "+seq_len", "-per_gpu_total_bytes"]
""", 512)
    check(grid, tmp_path)


def test_interleaved_pipeline_global_batch_tokens_objective(tmp_path, monkeypatch):
    """Megatron's interleaved schedule needs m a multiple of pp, known only per configuration
    with a global batch; a product objective (tokens per GPU); many blocks."""
    monkeypatch.setattr(kernel, "ROWS_PER_BLOCK_CONFIGS", 16)
    grid = grid_of(tmp_path, """
model = ["llama-3.1-8b", "llama-2-13b"]
gpu = ["h100-sxm-80gb"]
n_gpus = [8, 16, 32, 64]
tp = [1, 2]
pp = [2, 4]
vpp = [1, 2]
zero_stage = [0, 1]
framework = ["megatron", "generic"]
micro_batch = [1, 2, 4]
seq_len = [2048, 4096, 8192]
recompute = ["none", "selective"]
""", """
[constraints]
global_batch_tokens = 131072
[frontier]
objectives = ["-n_gpus", "+params", "+tokens_per_gpu"]
""")
    check(grid, tmp_path)


def test_headroom_objective_grouped_by_model(tmp_path):
    grid = grid_of(tmp_path, """
model = ["llama-3.1-8b", "qwen2.5-7b", "llama-3.1-70b"]
gpu = ["a100-80gb", "rtx-4090"]
n_gpus = [1, 2, 4, 8]
zero_stage = [0, 2, 3]
framework = ["fsdp", "deepspeed"]
finetune = ["full", "lora", "qlora"]
lora_rank = [16, 64]
offload = ["none", "optimizer"]
micro_batch = [1, 4]
seq_len = [2048, 16384]
recompute = ["none", "full"]
""", """
[frontier]
group_by = ["model"]
objectives = ["-n_gpus", "+seq_len", "+headroom_bytes"]
""")
    check(grid, tmp_path)


def test_per_rank_parameter_tables_on_outer_and_inner_axes(tmp_path, monkeypatch):
    """The per-rank block and linear counts come from tables the host computes over the axes
    they read (model, tp, ep, etp, LoRA rank and targets): with small chunks some of those
    axes are outer (one value per chunk) and some inner, dense and MoE models, LoRA and
    QLoRA; a memory objective reads them."""
    monkeypatch.setattr(kernel, "ROWS_PER_BLOCK_CONFIGS", 16)
    grid = grid_of(tmp_path, """
model = ["llama-3.1-8b", "mixtral-8x7b", "qwen2.5-7b"]
gpu = ["h100-sxm-80gb"]
n_gpus = [8, 16]
tp = [1, 2, 4]
ep = [1, 2, 8]
etp = [0, 1]
zero_stage = [1, 3]
framework = ["megatron", "deepspeed"]
finetune = ["full", "lora", "qlora"]
lora_rank = [8, 64]
lora_targets = ["q_proj,v_proj", "all-linear"]
seq_len = [2048, 8192]
""", """
[frontier]
group_by = ["model"]
objectives = ["-n_gpus", "+seq_len", "-per_gpu_total_bytes"]
""", chunk=64)
    check(grid, tmp_path)


@pytest.mark.parametrize("axes", [
    'model = ["llama-3.1-8b"]\ngpu = ["h100-sxm-80gb"]',  # nothing swept
    'model = ["llama-3.1-8b"]\ngpu = ["h100-sxm-80gb"]\nn_gpus = [1, 2, 4, 8, 16]',
    'model = ["llama-3.1-8b"]\ngpu = ["h100-sxm-80gb"]\nseq_len = [1024, 4096, 16384, 65536]',
    'model = ["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b"]\ngpu = ["h100-sxm-80gb"]',
])
def test_grids_of_any_shape(tmp_path, axes):
    """No axis swept, only n_gpus, only seq_len, only the model: each runs and matches."""
    grid = grid_of(tmp_path, axes + "\nzero_stage = [3]", """
[frontier]
objectives = ["-n_gpus", "+params", "+seq_len"]
""")
    check(grid, tmp_path)


def test_inference_and_training_modes(tmp_path):
    """Inference (weights, KV cache) and training in one grid, the kernel's sides the same."""
    grid = grid_of(tmp_path, """
model = ["llama-3.1-8b", "llama-3.1-70b"]
gpu = ["a100-80gb"]
n_gpus = [1, 2, 4, 8]
tp = [1, 2, 4, 8]
mode = ["train", "inference"]
micro_batch = [1, 8, 32]
seq_len = [4096, 32768]
""", """
[frontier]
group_by = ["mode"]
objectives = ["-n_gpus", "+params", "+seq_len", "-per_gpu_total_bytes"]
""")
    assert MODES.index("inference") == 1
    check(grid, tmp_path)
