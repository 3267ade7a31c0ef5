"""The time model against published measurements: rebuilds docs/time_accuracy.md.

    python -m sweep.timing.validate            # rewrite docs/time_accuracy.md
    python -m sweep.timing.validate --fit      # print the calibration grid search

Every row of `published.toml` (Narayanan et al. 2021 Table 1, Korthikanti et al. 2022
Table 5, Megatron-LM's H100 weak-scaling table) is converted to a measured step time (its
iteration time, or the model FLOPs of the step counted as that source counts them divided by
its reported FLOP/s) and compared with `step_time` for the same configuration on the
catalog GPU. Error = ours / measured - 1.
"""

from __future__ import annotations

import argparse
import statistics
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from sweep import catalog
from sweep.config import TrainConfig
from sweep.model import Architecture
from sweep.timing import efficiency
from sweep.timing.comms import Overlap
from sweep.timing.step import StepTime, step_time

DOC = Path("docs/time_accuracy.md")
COMMAND = "python -m sweep.timing.validate"
SUMMARY_MARK = "<!-- summary: "


@dataclass(frozen=True)
class Row:
    """One published run: its configuration and its measured step time."""

    source: str
    label: str
    gpu: str
    arch: Architecture
    cfg: TrainConfig
    overlap: Overlap
    measured_step_s: float
    measured_text: str


def published() -> dict:
    text = resources.files(__package__).joinpath("published.toml").read_text("utf-8")
    return tomllib.loads(text)


def gpt_architecture(hidden, layers, heads, vocab, seq_len, dropout, tied) -> Architecture:
    """A GPT-3-style block as these papers train it: MHA, 4h GeLU MLP, LayerNorm, biases,
    learned positions."""
    return Architecture(
        hidden_size=float(hidden), num_layers=float(layers), num_heads=float(heads),
        num_kv_heads=float(heads), head_dim=float(hidden // heads),
        ffn_hidden_size=float(4 * hidden), vocab_size=float(vocab),
        max_position_embeddings=float(seq_len), gated_mlp=0, norm_bias=1,
        tied_embeddings=float(tied), linear_bias=1, learned_position_embeddings=1,
        dropout=float(dropout))


def narayanan_flops(batch, seq, layers, hidden, vocab):
    """Narayanan et al. 2021 eq. 3: 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))."""
    return 96 * batch * seq * layers * hidden**2 * (
        1 + seq / (6 * hidden) + vocab / (16 * layers * hidden))


def megatron_r080_flops(batch, seq, layers, hidden, vocab):
    """Megatron-Core r0.8.0 `num_floating_point_operations` for MHA, f = 4h, no SwiGLU, one
    routed expert: 12·B·s·L·h²·((1 + 1 + s/h) + 4 + V/(2·L·h))."""
    return 12 * batch * seq * layers * hidden**2 * (
        (2 + seq / hidden) + 4 + vocab / (2 * layers * hidden))


def korthikanti_model_flops(batch, seq, layers, hidden, vocab):
    """Korthikanti et al. 2022 §6.1, model FLOPs: 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))."""
    return 72 * batch * seq * layers * hidden**2 * (
        1 + seq / (6 * hidden) + vocab / (12 * layers * hidden))


MEASURES = {"tflops_narayanan": narayanan_flops, "tflops_megatron_r080": megatron_r080_flops}


def _row(run: dict, source: dict) -> Row:
    """One published run as our inputs: a row's own keys override its source's."""
    def get(key):
        return run.get(key, source.get(key))

    hidden, layers, heads, tp, pp = (run[k] for k in ("hidden", "layers", "heads", "tp", "pp"))
    seq, vocab, n, batch = get("seq_len"), get("vocab_size"), run["n_gpus"], run["global_batch"]
    micro = get("micro_batch")
    sp = tp > 1 if get("sp") == "with_tp" else bool(get("sp"))
    dp = n // (tp * pp)
    gpu = catalog.gpu(get("gpu"))
    arch = gpt_architecture(hidden, layers, heads, vocab, seq, get("dropout"),
                            get("tied_embeddings"))
    cfg = TrainConfig.from_names(
        n_gpus=n, gpus_per_node=gpu.devices_per_node, tp=tp, pp=pp, vpp=get("vpp"), sp=sp,
        zero_stage=get("zero_stage"), framework=get("framework"), precision=get("precision"),
        micro_batch=micro, seq_len=seq, grad_accum=batch // (micro * dp),
        recompute=get("recompute"), flash_attention=get("flash_attention"))
    measure = source["measure"]
    if measure == "iteration_s":
        measured, text = float(run["measured"]), f"{run['measured']} s"
    else:
        flops = MEASURES[measure](batch, seq, layers, hidden, vocab)
        measured, text = flops / (run["measured"] * 1e12 * n), f"{run['measured']} TFLOP/s"
    overlap = Overlap(**{k: float(v) for k, v in source["overlap"].items()})
    return Row(run["source"], run["label"], gpu.name, _as_f64(arch), _as_f64(cfg), overlap,
               measured, text)


def rows() -> list[Row]:
    data = published()
    return [_row(run, data["sources"][run["source"]]) for run in data["run"]]


def _as_f64(tree):
    import jax

    return jax.tree_util.tree_map(np.float64, tree)


def predict(row: Row) -> StepTime:
    hw = _as_f64(catalog.gpu(row.gpu).hardware())
    return step_time(row.arch, row.cfg, hw, row.overlap)


def errors(table: list[Row] | None = None) -> list[float]:
    """ours / measured - 1 per row."""
    table = rows() if table is None else table
    return [float(predict(r).step_s) / r.measured_step_s - 1 for r in table]


@dataclass(frozen=True)
class Summary:
    source: str
    rows: int
    median_abs: float
    worst_abs: float


def summarize(table: list[Row], errs: list[float]) -> list[Summary]:
    groups: dict[str, list[float]] = {}
    for r, e in zip(table, errs, strict=True):
        groups.setdefault(r.source, []).append(abs(e))
    groups["all"] = [abs(e) for e in errs]
    return [Summary(k, len(v), statistics.median(v), max(v)) for k, v in groups.items()]


WHY = {
    "narayanan2021": "1F1B (v = 1) and micro-batch 1 assumed; both unstated",
    "korthikanti2022": "interleaving and micro-batch from Calculon's inputs, not the paper",
    "megatron_h100": "micro-batch, recompute, SP and interleaving (v = L/p) unstated",
}


def _miss(row: Row, st: StepTime, err: float) -> str:
    """The largest modelled term besides compute, to say where a row's time goes."""
    b = st.breakdown
    parts = {"bubble": b.bubble, "tp": b.tp, "dp": b.dp, "pp": b.pp, "recompute": b.recompute,
             "optimizer": b.optimizer}
    name, value = max(parts.items(), key=lambda kv: float(kv[1]))
    share = float(value) / float(st.step_s)
    return f"{name} {share:.0%} of ours"


def render(table: list[Row]) -> str:
    errs = errors(table)
    summary = summarize(table, errs)
    lines = [
        "# Step time against published measurements",
        "",
        f"Rebuilt by `{COMMAND}` (also `python run_sweep.py validate --time`) from",
        "`sweep/timing/published.toml`, where every row's configuration and citation lives.",
        "Measured step time: the iteration time the source prints, or the model FLOPs of one",
        "step counted as that source counts them, divided by its reported per-GPU FLOP/s and",
        "the GPUs (see `published.toml`). Ours: `sweep.timing.step_time` for the same",
        "configuration on the catalog GPU (A100-SXM4-80GB, H100-SXM-80GB), with the overlap",
        "flags each source ran with. Error = ours / measured - 1; MFU is ours, by our",
        "definition (model FLOPs without recomputation, attention over the full s x s scores,",
        "dense bf16 peak).",
        "",
        "| source | rows | median abs error | worst abs error |",
        "|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s.source} | {s.rows} | {s.median_abs:.1%} | {s.worst_abs:.1%} |")
    overall = summary[-1]
    lines += [
        "",
        f"{SUMMARY_MARK}median={overall.median_abs:.4f} worst={overall.worst_abs:.4f} -->",
        "",
        "| source | run | GPUs | tp | pp | v | m | recompute | measured | measured step s "
        "| ours s | error | our MFU | largest other term |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = ("none", "selective", "full")
    for r, e in zip(table, errs, strict=True):
        st = predict(r)
        c = r.cfg
        lines.append(
            f"| {r.source} | {r.label} | {int(c.n_gpus)} | {int(c.tp)} | {int(c.pp)} "
            f"| {int(c.vpp)} | {int(c.grad_accum)} | {names[int(c.recompute)]} "
            f"| {r.measured_text} | {r.measured_step_s:.3f} | {float(st.step_s):.3f} "
            f"| {e:+.1%} | {float(st.mfu):.1%} | {_miss(r, st, e)} |")
    lines += ["", "## Where and why the model misses", ""]
    lines += [f"- {k}: {v}." for k, v in WHY.items()]
    lines += ["", "Calibrated constants (`sweep/timing/efficiency.py`): "
              f"IN_TRAINING_MATMUL_FRACTION = {efficiency.IN_TRAINING_MATMUL_FRACTION}, "
              f"HBM_FRACTION = {efficiency.HBM_FRACTION}.", ""]
    return "\n".join(lines)


def documented_summary(path: Path = DOC) -> dict[str, float]:
    """The median and worst error the committed doc states (for the tests)."""
    for line in path.read_text("utf-8").splitlines():
        if line.startswith(SUMMARY_MARK):
            fields = line[len(SUMMARY_MARK):].removesuffix(" -->").split()
            return {k: float(v) for k, v in (f.split("=") for f in fields)}
    raise ValueError(f"{path}: no summary line")


def write(path: Path = DOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(rows()), "utf-8")
    return path


def fit(grid_matmul, grid_hbm) -> None:
    """Print the median and worst absolute error over a grid of the two calibrated constants."""
    table = rows()
    saved = efficiency.IN_TRAINING_MATMUL_FRACTION, efficiency.HBM_FRACTION
    try:
        for kappa in grid_matmul:
            for eta in grid_hbm:
                efficiency.IN_TRAINING_MATMUL_FRACTION, efficiency.HBM_FRACTION = kappa, eta
                errs = [abs(e) for e in errors(table)]
                print(f"kappa={kappa:.2f} eta_W={eta:.2f} median={statistics.median(errs):.3f} "
                      f"worst={max(errs):.3f}")
    finally:
        efficiency.IN_TRAINING_MATMUL_FRACTION, efficiency.HBM_FRACTION = saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DOC))
    parser.add_argument("--fit", action="store_true", help="print the calibration grid")
    args = parser.parse_args(argv)
    if args.fit:
        fit(np.arange(0.70, 1.001, 0.05), (0.7, 0.8, 0.85, 0.9))
        return 0
    print(f"wrote {write(Path(args.out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
