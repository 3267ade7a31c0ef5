"""The capacity-planning report: a self-contained HTML page (PNGs inlined, no server, no
network) plus the PNGs, from a run's outputs.

    python run_sweep.py report outputs/<run>

Plots (matplotlib): the largest trainable model vs number of GPUs, one line per node type
(from `largest/`); the Pareto frontier of a sweep, parameters vs GPUs per GPU type (from
`frontier/`); a stacked memory breakdown of chosen configurations (the best point of each
group, or each node type's largest model on the most GPUs). `series.json` holds exactly the
numbers plotted.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from sweep.errors import SweepError  # noqa: E402
from sweep.memory.total import GPU_COMPONENTS  # noqa: E402
from sweep.outdir import OutputDir  # noqa: E402

GIB = 2**30
DPI = 110


def _read(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    frame = pl.read_parquet(path, hive_partitioning=True)
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String))


def largest_plot(frame: pl.DataFrame, path: Path) -> dict:
    """Largest trainable parameters vs GPUs, one line per node type."""
    series = {}
    fig, ax = plt.subplots(figsize=(8, 5))
    for (gpu,), part in frame.sort("gpu", "n_gpus").group_by("gpu", maintain_order=True):
        x, y = part["n_gpus"].to_list(), part["params"].to_list()
        series[gpu] = {"n_gpus": x, "params": y}
        ax.plot(x, [v / 1e9 for v in y], marker="o", label=gpu)
    _params_vs_gpus(fig, ax, path, "largest trainable model (B params)",
                    "Largest trainable model per node type")
    return series


def frontier_plot(frame: pl.DataFrame, path: Path) -> dict:
    """Frontier points: parameters vs GPUs per GPU type (marker size: context length)."""
    series = {}
    fig, ax = plt.subplots(figsize=(8, 5))
    ordered = frame.sort("gpu", "n_gpus", "params", "seq_len")
    for (gpu,), part in ordered.group_by("gpu", maintain_order=True):
        x, y = part["n_gpus"].to_list(), part["params"].to_list()
        series[gpu] = {"n_gpus": x, "params": y, "seq_len": part["seq_len"].to_list()}
        sizes = [10 + 40 * s / max(part["seq_len"].max(), 1) for s in part["seq_len"]]
        ax.scatter(x, [v / 1e9 for v in y], s=sizes, alpha=0.7, label=gpu)
    _params_vs_gpus(fig, ax, path, "model (B params)",
                    "Pareto frontier: fewer GPUs, bigger model, longer context, more tokens/GPU")
    return series


def _params_vs_gpus(fig, ax, path: Path, ylabel: str, title: str) -> None:
    """Log-log axes of parameters vs GPUs, legend by GPU type, saved to `path`."""
    ax.set(xscale="log", yscale="log", xlabel="GPUs", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def breakdown_plot(frame: pl.DataFrame, labels: list[str], path: Path) -> dict:
    """Stacked per-GPU memory components (GiB) of the given configurations."""
    series = {k: [v / GIB for v in frame[f"{k}_bytes"].to_list()] for k in GPU_COMPONENTS}
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 5))
    bottom = [0.0] * len(labels)
    for k in GPU_COMPONENTS:
        ax.bar(labels, series[k], bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, series[k], strict=True)]
    ax.plot(labels, [v / GIB for v in frame["gpu_capacity_bytes"].to_list()], "k_",
            markersize=30, label="capacity")
    ax.set(ylabel="GiB per GPU", title="Memory breakdown of chosen configurations")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
    return {"labels": labels, **series}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    run = path.parent.parent
    OutputDir(run).write(str(path.relative_to(run)),
                         lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    plt.close(fig)


def _table(frame: pl.DataFrame, columns: list[str]) -> str:
    columns = [c for c in columns if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for row in frame.select(columns).iter_rows():
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;font-size:12px;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}"""


def write_report(run: Path) -> Path:
    """Write run/report/{report.html, *.png, series.json}; returns the HTML's path."""
    run = Path(run)
    frontier = _read(run / "frontier")
    biggest = _read(run / "largest")
    if frontier is None and biggest is None:
        raise SweepError(f"{run}: no frontier/ or largest/ to report on; run a grid or "
                         "`run_sweep.py largest` first.")
    out = run / "report"
    with OutputDir(run).lock():
        return _write_report(run, out, frontier, biggest)


def _write_report(run: Path, out: Path, frontier, biggest) -> Path:
    sections, series = [], {}
    manifest = run / "manifest.json"
    title = json.loads(manifest.read_text())["grid"]["name"] if manifest.exists() else run.name
    strategy = ["gpu", "nodes", "n_gpus", "model", "params", "hidden_size", "num_layers",
                "framework", "zero_stage", "tp", "pp", "cp", "recompute", "offload",
                "micro_batch", "seq_len", "per_gpu_total_gib", "binding_constraint"]
    chosen = None
    if biggest is not None:
        series["largest"] = largest_plot(biggest, out / "largest.png")
        sections.append("<h2>Largest trainable model per node type</h2>"
                        + _img(out / "largest.png", "largest model vs GPUs")
                        + _table(biggest.sort("gpu", "n_gpus"), strategy))
        chosen = biggest.sort("n_gpus").group_by("gpu", maintain_order=True).last().sort("gpu")
    if frontier is not None:
        series["frontier"] = frontier_plot(frontier, out / "frontier.png")
        sections.append("<h2>Pareto frontier</h2>" + _img(out / "frontier.png", "frontier")
                        + _table(frontier.sort("gpu", "n_gpus"), strategy))
        if chosen is None:
            chosen = frontier.sort("gpu", "n_gpus").group_by("gpu", maintain_order=True).first()
    labels = [f"{r['gpu']} x{r['n_gpus']:.0f}" for r in chosen.iter_rows(named=True)]
    series["breakdown"] = breakdown_plot(chosen, labels, out / "breakdown.png")
    sections.append("<h2>Memory breakdown</h2>" + _img(out / "breakdown.png", "breakdown"))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(sections) + "</body></html>")
    writer = OutputDir(run)
    writer.write_bytes("report/series.json", json.dumps(series, indent=1).encode())
    writer.write_bytes("report/report.html", page.encode())
    return out / "report.html"
