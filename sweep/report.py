"""The capacity-planning report: one self-contained, interactive HTML page from a run's outputs.

    python run_sweep.py report outputs/<run>      # writes outputs/<run>/report/report.html

The page works offline and alone (Plotly's JavaScript is inlined, nothing is fetched): a
title and what was run (question, grid, axes, constraints, counts, versions), then per kind
of output in the run directory:

  largest/         the largest trainable model vs GPUs, one line per node type, and a table
                   of node type x GPUs with every configuration behind it;
  fewest.parquet   the fewest GPUs of each type that train the model;
  frontier/        the Pareto frontier of a sweep (GPUs vs the objectives that vary);

and a stacked memory breakdown of chosen configurations against each GPU's usable capacity
(per node type: its largest model on the most GPUs, its fewest-GPU configuration, or its best
frontier point). Numbers read in human units (`sweep.units`). `series.json` holds exactly the
numbers plotted.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import tomllib
from pathlib import Path

import plotly.io as pio
import polars as pl
import pyarrow.parquet as pq
from plotly.offline import get_plotlyjs

from sweep import units
from sweep.errors import SweepError
from sweep.memory.total import GPU_COMPONENTS
from sweep.outdir import OutputDir
from sweep.report_plots import (
    breakdown_figure,
    coinciding,
    configuration_lines,
    fewest_figure,
    frontier_figure,
    largest_figure,
    time_figure,
)
from sweep.report_style import COMPONENT_NAMES, series_styles

PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "modeBarButtonsToRemove": ["lasso2d", "select2d"],
               "toImageButtonOptions": {"format": "png", "scale": 2}}
OPEN_TABLE_ROWS = 20  # longer tables start folded
# column -> (header, formatter), in table order; a column missing from a frame is left out.
COLUMNS = {
    "gpu": ("node type", str), "nodes": ("nodes", units.count), "n_gpus": ("GPUs", units.count),
    "model": ("model", str), "params": ("parameters", units.params),
    "hidden_size": ("width", units.count), "num_layers": ("layers", units.count),
    "framework": ("framework", str), "zero_stage": ("ZeRO", units.count),
    "tp": ("TP", units.count), "pp": ("PP", units.count), "cp": ("CP", units.count),
    "ep": ("EP", units.count), "recompute": ("recompute", str), "offload": ("offload", str),
    "micro_batch": ("micro-batch", units.count), "grad_accum": ("grad. accum.", units.count),
    "seq_len": ("context", units.tokens), "tokens_per_gpu": ("tokens/GPU", units.tokens),
    **{f"{k}_bytes": (COMPONENT_NAMES[k], units.bytes_) for k in GPU_COMPONENTS},
    "per_gpu_total_bytes": ("memory/GPU", units.bytes_),
    "gpu_capacity_bytes": ("capacity/GPU", units.bytes_),
    "headroom_bytes": ("headroom", units.bytes_),
    "host_bytes_per_node": ("host RAM/node", units.bytes_),
    "binding_constraint": ("limit", lambda v: str(v).replace("_", " ")),
}
TEXT_COLUMNS = {"gpu", "model", "framework", "recompute", "offload", "binding_constraint"}
# a configuration's table row; a family model's width and depth are in its name
FRONTIER_COLUMNS = tuple(k for k in COLUMNS if k not in ("hidden_size", "num_layers") and (
    not k.endswith("_bytes") or k in ("per_gpu_total_bytes", "gpu_capacity_bytes",
                                      "headroom_bytes", "host_bytes_per_node")))
STRATEGY_COLUMNS = tuple(k for k in FRONTIER_COLUMNS if k != "tokens_per_gpu")  # derived
BREAKDOWN_COLUMNS = ("gpu", "n_gpus", "model", "params",
                     *(f"{k}_bytes" for k in GPU_COMPONENTS),
                     "per_gpu_total_bytes", "gpu_capacity_bytes")
ALWAYS_SHOWN = {"gpu", "n_gpus", "per_gpu_total_bytes", "gpu_capacity_bytes"}
OBJECTIVE_NAMES = {"n_gpus": "GPUs", "params": "parameters", "seq_len": "context length",
                   "tokens_per_gpu": "tokens per GPU"}
AXIS_FORMATS = {"n_gpus": units.count, "seq_len": units.tokens, "micro_batch": units.count}
CONSTRAINT_TEXT = {"tp_within_node": "tensor parallelism within a node",
                   "whole_nodes": "whole nodes only"}


# ---- inputs -------------------------------------------------------------------------------

def _read(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    frame = pl.read_parquet(path, hive_partitioning=True)
    frame = frame.with_columns(pl.col(pl.Categorical).cast(pl.String))
    return frame if len(frame) else None


def _meta(run: Path) -> dict[str, str]:
    """The key-value metadata of the run's first Parquet file (versions, grid name, hash and
    text: every output file of a run carries the same)."""
    for path in sorted(run.glob("**/*.parquet")):
        meta = pq.read_schema(path).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items() if k != b"ARROW:schema"}
    return {}


# ---- what was run -------------------------------------------------------------------------

def _values(key: str, values: list) -> str:
    fmt = AXIS_FORMATS.get(key)
    return ", ".join(fmt(v) if fmt and isinstance(v, int | float) else str(v) for v in values)


def axis_text(key: str, spec) -> str:
    """A grid axis as written, in words: '4 – 512, powers of two', 'llama3 family', '8k'."""
    fmt = AXIS_FORMATS.get(key, units.count)
    if isinstance(spec, list):
        return _values(key, spec)
    if isinstance(spec, dict) and "family" in spec:
        return f"{spec['family']} family (sizes searched)"
    if isinstance(spec, dict) and "pow2" in spec:
        low, high = spec["pow2"]
        return f"{fmt(low)} – {fmt(high)}, powers of two"
    if isinstance(spec, dict) and "range" in spec:
        start, stop, step = spec["range"]
        return f"{fmt(start)} – {fmt(stop)} in steps of {fmt(step)}"
    if isinstance(spec, dict) and "log_range" in spec:
        low, high, n = spec["log_range"]
        return f"{n} log-spaced values, {fmt(low)} – {fmt(high)}"
    return str(spec)


def _constraints(grid: dict) -> str:
    parts = []
    for key, value in grid.get("constraints", {}).items():
        if key == "global_batch_tokens":
            parts.append(f"global batch of {units.tokens(value)} tokens")
        elif value is True:
            parts.append(CONSTRAINT_TEXT.get(key, key.replace("_", " ")))
        elif value is not False:
            parts.append(f"{key.replace('_', ' ')} = {value}")
    return "; ".join(parts) or "none"


def _objectives(objectives: list[str]) -> str:
    words = []
    for o in objectives:
        key = o.lstrip("+-")
        words.append(("fewest " if o.startswith("-") else "most ") + OBJECTIVE_NAMES.get(key, key))
    return ", ".join(words)


def question(kind: str, grid: dict) -> str:
    axes = grid.get("axes", {})
    if kind == "fewest":
        model = ", ".join(axes.get("model", []))
        context = _values("seq_len", axes.get("seq_len", []))
        return f"How few GPUs of each type can train {model} with {context} tokens of context?"
    if kind == "largest":
        return "What is the largest model each node type can train, at each cluster size?"
    objectives = grid.get("frontier", {}).get("objectives", [])
    return f"Which configurations are Pareto-optimal for {_objectives(objectives)}?"


def _run_facts(kind: str, grid: dict, manifest: dict, meta: dict, name: str) -> list[tuple]:
    """(label, text) rows of the 'what was run' list."""
    axes = grid.get("axes", {})
    facts = [("question", question(kind, grid)),
             ("grid", f"{grid.get('name', name)}"
                      + (f" ({path})" if (path := manifest.get("grid", {}).get("path", ""))
                         and not path.startswith("<") else ""))]
    if "model" in axes:
        facts.append(("models", axis_text("model", axes["model"])))
    if "gpu" in axes:
        gpus = axes["gpu"]
        facts.append(("node types", f"{len(gpus)}: {', '.join(gpus)}"))
    strategy = [f"{COLUMNS.get(k, (k.replace('_', ' '),))[0]} {axis_text(k, v)}"
                for k, v in axes.items() if k not in ("model", "gpu")]
    facts.append(("searched", " · ".join(strategy)))
    facts.append(("constraints", _constraints(grid)))
    if grid.get("frontier", {}).get("objectives") and kind == "frontier":
        facts.append(("objectives", _objectives(grid["frontier"]["objectives"])))
    if "configurations" in manifest:
        facts.append(("configurations", f"{units.count(manifest['configurations'])} evaluated, "
                                        f"{units.count(manifest['feasible'])} fit"))
    if meta:
        facts.append(("versions", f"engine {meta.get('engine_version', '?')}, formulas "
                                  f"{meta.get('formula_version', '?')}, grid hash "
                                  f"{meta.get('grid_hash', '?')[:12]}"))
    return facts


# ---- tables -------------------------------------------------------------------------------

def _cell(value, fmt) -> str:
    return "" if value is None else html.escape(fmt(value))


def table(frame: pl.DataFrame, keys=STRATEGY_COLUMNS) -> str:
    """An HTML table in human units; columns the same in every row move to a note below."""
    shown, same = [], []
    for key in keys:
        if key not in frame.columns:
            continue
        header, fmt = COLUMNS[key]
        if key not in ALWAYS_SHOWN and frame[key].n_unique() == 1 and len(frame) > 1:
            same.append(f"{header} {_cell(frame[key][0], fmt)}")
        else:
            shown.append(key)

    def cls(key):
        return "" if key in TEXT_COLUMNS else " class='num'"

    head = "".join(f"<th{cls(k)}>{html.escape(COLUMNS[k][0])}</th>" for k in shown)
    body = "".join(
        "<tr>" + "".join(f"<td{cls(k)}>{_cell(row[k], COLUMNS[k][1])}</td>" for k in shown)
        + "</tr>" for row in frame.iter_rows(named=True))
    note = f"<p class='note'>In every row: {' · '.join(same)}.</p>" if same else ""
    return (f"<div class='table-wrap'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>{note}")


def _folded(summary: str, content: str, rows: int) -> str:
    opened = " open" if rows <= OPEN_TABLE_ROWS else ""
    return f"<details{opened}><summary>{html.escape(summary)}</summary>{content}</details>"


def largest_pivot(frame: pl.DataFrame, gpus: list[str]) -> str:
    """Node type x GPUs: the largest model that fits, shaded by size; each cell's tooltip
    gives the configuration."""
    counts = sorted(frame["n_gpus"].unique().to_list())
    low, high = frame["params"].min(), frame["params"].max()
    head = "<th>node type \\ GPUs</th>" + "".join(f"<th class='num'>{units.count(n)}</th>"
                                          for n in counts)
    rows = []
    for gpu in gpus:
        part = {r["n_gpus"]: r for r in frame.filter(pl.col("gpu") == gpu).to_dicts()}
        cells = [f"<th>{html.escape(gpu)}</th>"]
        for n in counts:
            row = part.get(n)
            if row is None:
                cells.append("<td class='num empty'>–</td>")
                continue
            shade = 0.06 + 0.42 * (_log_position(row["params"], low, high))
            tip = html.escape("\n".join(configuration_lines(row)))
            cells.append(f"<td class='num' style='background:rgba(46,145,229,{shade:.2f})' "
                         f"title='{tip}'>{units.params(row['params'])}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<div class='table-wrap'><table class='pivot'><caption>Largest model that fits "
            f"(parameters), by node type and number of GPUs; hover a cell for its "
            f"configuration</caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>")


def _log_position(value: float, low: float, high: float) -> float:
    return 0.0 if high <= low else math.log(value / low) / math.log(high / low)


# ---- the page -----------------------------------------------------------------------------

HOW_TO = ("Hover a point for its configuration; click a node type in the legend to hide it, "
          "double-click it to show it alone; drag to zoom, double-click the plot to reset.")


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory's outputs, as the report reads them."""

    path: Path
    largest: pl.DataFrame | None
    fewest: pl.DataFrame | None
    frontier: pl.DataFrame | None
    manifest: dict
    grid: dict
    grid_text: str
    meta: dict
    gpus: list[str]  # node types in report (catalog) order

    @property
    def fewest_rows(self) -> pl.DataFrame | None:
        """The fewest-GPU row of each node type (a fewest run also holds the cheapest)."""
        if self.fewest is None or "pick" not in self.fewest.columns:
            return self.fewest
        return self.fewest.filter(pl.col("pick") == "fewest")

    @property
    def timed(self) -> pl.DataFrame | None:
        """The rows that carry a step time: every row of the run's result."""
        for frame in (self.largest, self.fewest, self.frontier):
            if frame is not None and "tokens_per_s" in frame.columns:
                return frame
        return None

    @property
    def kind(self) -> str:
        return "largest" if self.largest is not None else \
            "fewest" if self.fewest is not None else "frontier"

    def by_gpu(self, frame: pl.DataFrame, *then: str) -> pl.DataFrame:
        """`frame` with node types in report order, then by `then`."""
        order = pl.col("gpu").replace_strict({g: i for i, g in enumerate(self.gpus)},
                                             return_dtype=pl.Int64)
        return frame.sort(order, *then)


def read_run(path: Path) -> Run:
    path = Path(path)
    largest, fewest = _read(path / "largest"), _read(path / "fewest.parquet")
    frontier = _read(path / "frontier")
    if largest is None and frontier is None and fewest is None:
        raise SweepError(f"{path}: no largest/, fewest.parquet or frontier/ with results to "
                         "report on; run a grid, `run_sweep.py largest` or `fewest` first.")
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    meta = _meta(path)
    text = manifest.get("grid", {}).get("text") or meta.get("grid_text", "")
    names = set()
    for frame in (largest, fewest, frontier):
        if frame is not None:
            names |= set(frame["gpu"].to_list())
    return Run(path, largest, fewest, frontier, manifest, tomllib.loads(text), text,
               {k: v for k, v in meta.items() if k != "grid_text"}, list(series_styles(names)))


def _plot(fig, div_id: str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=PLOT_CONFIG, default_width="100%",
                       default_height=f"{fig.layout.height}px")


def _coinciding_note(groups: list[list[str]]) -> str:
    if not groups:
        return ""
    text = "; ".join(" = ".join(g) for g in groups)
    return (f"<p class='note'>Identical results (the line drawn on top is dashed, so both "
            f"show): {html.escape(text)}.</p>")


def _section(anchor: str, heading: str, intro: str, *parts: str) -> str:
    return (f"<section id='{anchor}'><h2>{html.escape(heading)}</h2>"
            f"<p class='intro'>{intro}</p>{''.join(parts)}</section>")


def _largest_section(run: Run, styles, series: dict) -> str:
    fig, series["largest"] = largest_figure(run.largest, styles)
    full = table(run.by_gpu(run.largest, "n_gpus"))
    return _section(
        "largest", "Largest trainable model",
        "For every node type and cluster size, the biggest model of the grid's family that "
        "fits with any strategy searched (the depth is bisected exactly per width). " + HOW_TO,
        _plot(fig, "plot-largest"), _coinciding_note(coinciding(series["largest"])),
        largest_pivot(run.largest, run.gpus),
        _folded(f"Every configuration behind the plot ({len(run.largest)} rows)", full,
                len(run.largest)))


def _fewest_section(run: Run, styles, series: dict) -> str:
    fig, series["fewest"] = fewest_figure(run.fewest_rows, styles)
    return _section(
        "fewest", "Fewest GPUs",
        "The smallest number of GPUs of each type that fits the model with one of the "
        "strategies searched, and the strategy that does it. Hover a dot for the full "
        "configuration.",
        _plot(fig, "plot-fewest"), table(_fewest_order(run)))


def _fewest_order(run: Run) -> pl.DataFrame:
    return run.by_gpu(run.fewest_rows).sort("n_gpus", maintain_order=True)


def _frontier_section(run: Run, styles, series: dict) -> str:
    spec = run.grid.get("frontier", {}).get("objectives", [])
    fig, series["frontier"] = frontier_figure(run.frontier, styles,
                                              [o.lstrip("+-") for o in spec])
    rows = run.by_gpu(run.frontier, "n_gpus")
    return _section(
        "frontier", "Pareto frontier",
        "The configurations that no other one beats on every objective at once "
        f"({html.escape(_objectives(spec))}), one panel per node type on shared axes. Hover a "
        "point for its configuration; drag to zoom (all panels follow), double-click to reset.",
        _plot(fig, "plot-frontier"),
        _folded(f"Every frontier point ({len(rows)} rows)", table(rows, FRONTIER_COLUMNS),
                len(rows)))


def _chosen(run: Run) -> tuple[pl.DataFrame, str]:
    """The configurations whose memory is broken down, one per node type, and why."""
    if run.largest is not None:
        frame = run.largest.sort("n_gpus").group_by("gpu", maintain_order=True).last()
        why = "each node type's largest model on the most GPUs of the grid"
    elif run.fewest is not None:
        frame, why = run.fewest_rows, "each node type's fewest-GPU configuration"
    else:
        frame = run.frontier.group_by("gpu", maintain_order=True).first()
        why = "each node type's first frontier point in objective order (fewest GPUs first)"
    return run.by_gpu(frame), why


def _time_section(run: Run, styles, series: dict) -> str:
    fig, series["time"] = time_figure(run.timed, styles)
    return _section(
        "time", "Time and cost",
        "The step time model (sweep/timing; checked against published runs in "
        "docs/time_accuracy.md) on the configurations above: at each GPU count the fastest "
        "(tokens per second, all GPUs) and the cheapest (USD per million tokens at each GPU's "
        "price per hour). Hover a point for its configuration.",
        _plot(fig, "plot-time"))


def _breakdown_section(run: Run, series: dict) -> str:
    chosen, why = _chosen(run)
    fig, series["breakdown"] = breakdown_figure(chosen)
    return _section(
        "breakdown", "Memory per GPU",
        f"What fills the most loaded GPU in {html.escape(why)}, against the memory the "
        "driver leaves usable (black mark). Hover a bar for every component.",
        _plot(fig, "plot-breakdown"),
        _folded("Components per GPU", table(chosen, BREAKDOWN_COLUMNS), len(chosen)))


def title(run: Run) -> str:
    """The grid's description, or for a `fewest` run (whose grid has none) its question."""
    if run.grid.get("description"):
        return run.grid["description"]
    if run.kind == "fewest":
        axes = run.grid.get("axes", {})
        return (f"Fewest GPUs to train {', '.join(axes.get('model', []))} at "
                f"{_values('seq_len', axes.get('seq_len', []))} context, by node type")
    return run.grid.get("name") or run.path.name


def _header(run: Run, toc: list[tuple[str, str]]) -> str:
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                    for k, v in _run_facts(run.kind, run.grid, run.manifest, run.meta,
                                           run.path.name))
    grid_file = (f"<details><summary>Grid file</summary><pre>{html.escape(run.grid_text)}"
                 "</pre></details>") if run.grid_text else ""
    nav = " · ".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t in toc)
    return (f"<header><p class='kicker'>llm-memory-sweep report · "
            f"{html.escape(run.grid.get('name', run.path.name))}</p>"
            f"<h1>{html.escape(title(run))}</h1><nav>{nav}</nav></header>"
            f"<section id='run'><h2>What was run</h2><dl>{facts}</dl>{grid_file}</section>")


FOOTER = ("<footer>Estimated reserved memory on the most loaded GPU (GiB = 2<sup>30</sup> bytes, "
          "B = 10<sup>9</sup> parameters, 8k = 8,192 tokens). Made by <code>python run_sweep.py "
          "report</code>; this file needs no network. The camera icon above a plot saves it as "
          "a PNG.</footer>")


def render(run: Run) -> tuple[str, dict]:
    """The page's HTML and the numbers it plots."""
    styles = series_styles(run.gpus)
    series, sections, toc = {}, [], [("run", "What was run")]
    if run.largest is not None:
        sections.append(_largest_section(run, styles, series))
        toc.append(("largest", "Largest trainable model"))
    if run.fewest is not None:
        sections.append(_fewest_section(run, styles, series))
        toc.append(("fewest", "Fewest GPUs"))
    elif run.frontier is not None:  # a fewest run's frontier is its fewest.parquet
        sections.append(_frontier_section(run, styles, series))
        toc.append(("frontier", "Pareto frontier"))
    if run.timed is not None:
        sections.append(_time_section(run, styles, series))
        toc.append(("time", "Time and cost"))
    sections.append(_breakdown_section(run, series))
    toc.append(("breakdown", "Memory per GPU"))
    page = PAGE.format(title=html.escape(title(run)), style=STYLE, plotly=get_plotlyjs(),
                       body=_header(run, toc) + "".join(sections) + FOOTER)
    return page, series


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/{report.html, series.json}; returns the HTML's path."""
    page, series = render(read_run(run_dir))
    writer = OutputDir(run_dir)
    with writer.lock():
        writer.write_bytes("report/series.json", json.dumps(series, indent=1).encode())
        return writer.write_bytes("report/report.html", page.encode())


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style>
<script type="text/javascript">{plotly}</script>
</head><body><main>{body}</main></body></html>
"""

STYLE = """
:root{--ink:#1f2933;--muted:#52606d;--line:#d9dee4;--soft:#f5f7fa;--accent:#2e91e5}
*{box-sizing:border-box}
body{margin:0;background:var(--soft);color:var(--ink);
 font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 40px;background:#fff;
 box-shadow:0 0 0 1px var(--line)}
header{padding-bottom:4px}
.kicker{margin:0;color:var(--muted);font-size:13px;letter-spacing:.04em;text-transform:uppercase}
h1{font-size:28px;line-height:1.25;margin:6px 0 10px}
h2{font-size:21px;margin:34px 0 6px;padding-top:8px;border-top:1px solid var(--line)}
nav a{color:var(--accent);text-decoration:none;margin-right:4px}
nav a:hover{text-decoration:underline}
.intro{color:var(--muted);margin:4px 0 12px;max-width:900px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:10px 0}
dt{color:var(--muted);font-weight:600}dd{margin:0}
details{margin:10px 0}summary{cursor:pointer;color:var(--accent);font-weight:600}
pre{background:var(--soft);padding:12px;border-radius:6px;overflow:auto;font-size:13px}
.table-wrap{overflow-x:auto;margin:12px 0}
table{border-collapse:collapse;font-size:13.5px;font-variant-numeric:tabular-nums}
caption{text-align:left;color:var(--muted);padding:4px 0 8px;caption-side:top}
th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
thead th{position:sticky;top:0;background:#fff;border-bottom:2px solid #9aa5b1}
tbody tr:nth-child(even){background:#fafbfc}
.num{text-align:right}
table.pivot td{min-width:58px}table.pivot td.empty{color:#b0b8c1}
table.pivot tbody th{font-weight:600}
.note{color:var(--muted);font-size:13px;margin:4px 0}
.plotly-graph-div{margin:6px 0}
footer{margin-top:36px;padding-top:12px;border-top:1px solid var(--line);color:var(--muted);
 font-size:13px}
"""
