"""The report's interactive plots (Plotly): each builder takes a frame of configurations and
returns the figure and exactly the numbers it plots (for `series.json`).

Every point hovers with its configuration (model, strategy, memory against capacity); clicking
a legend entry hides its series, double-clicking shows only it. GPU counts sit on log axes
ticked at powers of two, parameters at 1-2-5 steps (1B, 2B, 5B), context lengths at powers of
two (4k, 8k). Node types keep one colour and marker across all plots (`report_style`).
"""

from __future__ import annotations

import html
import json
import math

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from sweep import units
from sweep.memory.total import GPU_COMPONENTS
from sweep.report_style import (
    COMPONENT_COLORS,
    COMPONENT_NAMES,
    SeriesStyle,
    log_range,
    param_ticks,
    pow2_ticks,
    token_ticks,
)
from sweep.report_text import HUMAN  # one unit per column, as the printed tables show it

GIB = 2**30
FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, "
                  "sans-serif", "size": 14, "color": "#1f2933"}
GRID_COLOR = "#e4e7eb"
PLOT_HEIGHT = 560
FACET_HEIGHT = 250  # px per row of frontier panels
BAR_ROW_HEIGHT = 58  # px per breakdown bar: two label lines and a gap
DOT_ROW_HEIGHT = 34
SIZE_MIN, SIZE_MAX, SIZE_STEP = 8.0, 26.0, 5.0  # marker diameter (px) per doubling of the value
SIZE_LEGEND_ENTRIES = 6
AXIS_LABELS = {"n_gpus": "GPUs", "params": "parameters", "seq_len": "context length (tokens)",
               "tokens_per_gpu": "tokens per GPU per micro-batch",
               "tokens_per_s": "tokens per second", "step_s": "seconds per step",
               "days_to_train": "days to train", "cost_to_train": "cost to train (USD)",
               "cost_per_million_tokens": "USD per million tokens", "mfu": "MFU"}
LOWER_IS_BETTER = ("step_s", "days_to_train", "cost_to_train", "cost_per_million_tokens")
TIME_AXES = ("tokens_per_s", "tokens_per_gpu_per_s", "step_s", "days_to_train",
             "cost_to_train", "cost_per_million_tokens", "mfu")
SIZE_LABELS = {"params": "parameters", "seq_len": "context", "tokens_per_gpu": "tokens/GPU",
               "tokens_per_s": "tokens/s", "tokens_per_gpu_per_s": "tokens/s per GPU",
               "step_s": "step time", "days_to_train": "days", "cost_to_train": "cost",
               "cost_per_million_tokens": "USD/M tokens", "mfu": "MFU"}


def _value(row: dict, key: str, default=None):
    value = row.get(key)
    return default if value is None else value


def strategy(row: dict) -> str:
    """'megatron · ZeRO-1 · TP 8 · PP 16 · selective recompute · optimizer offload'."""
    parts = [str(_value(row, "framework", ""))]
    if row.get("zero_stage") is not None:
        parts.append(f"ZeRO-{row['zero_stage']:.0f}")
    for key in ("tp", "pp", "cp", "ep"):
        if _value(row, key, 1) != 1:
            parts.append(f"{key.upper()} {units.count(row[key])}")
    if _value(row, "recompute", "none") != "none":
        parts.append(f"{row['recompute']} recompute")
    if _value(row, "offload", "none") != "none":
        parts.append(f"{row['offload']} offload")
    return " · ".join(p for p in parts if p)


def model_text(row: dict) -> str:
    """'406B · llama-3.1-405b' (with width × depth for family members)."""
    text = f"{units.params(row['params'])} · {row['model']}"
    if row.get("hidden_size") is not None and row.get("num_layers") is not None:
        text += f" (width {units.count(row['hidden_size'])}, {units.count(row['num_layers'])} " \
                "layers)"
    return text


def cluster_text(row: dict) -> str:
    """'h100-sxm-80gb × 512 GPUs (64 nodes)'."""
    gpus = units.count(row["n_gpus"])
    text = f"{row['gpu']} × {gpus} GPU{'s' if row['n_gpus'] != 1 else ''}"
    nodes = row["n_gpus"] / row["gpus_per_node"] if row.get("gpus_per_node") else 0
    if nodes >= 1:  # "1 GPU (0.125 nodes)" says nothing
        text += f" ({units.count(nodes)} node{'s' if nodes != 1 else ''})"
    return text


def configuration_lines(row: dict) -> list[str]:
    """The configuration behind a point, line by line: cluster, model, strategy, batch,
    memory against capacity."""
    batch = [f"micro-batch {units.count(row['micro_batch'])}"] if "micro_batch" in row else []
    if "seq_len" in row:
        batch.append(f"context {units.tokens(row['seq_len'])}")
    if _value(row, "grad_accum", 1) != 1:
        batch.append(f"grad. accumulation {units.count(row['grad_accum'])}")
    used = row["per_gpu_total_bytes"] / row["gpu_capacity_bytes"]
    lines = [cluster_text(row), f"model: {model_text(row)}", f"strategy: {strategy(row)}",
             " · ".join(batch),
             f"memory per GPU: {units.bytes_(row['per_gpu_total_bytes'])} of "
             f"{units.bytes_(row['gpu_capacity_bytes'])} ({units.percent(used)})"]
    return [line for line in lines if line]


def hover(row: dict) -> str:
    """A point's hover label: its configuration, the cluster in bold."""
    first, *rest = configuration_lines(row)
    return "<br>".join([f"<b>{html.escape(first)}</b>", *map(html.escape, rest)])


def coinciding(series: dict[str, dict]) -> list[list[str]]:
    """Groups of series (two or more) whose plotted numbers are identical, in series order."""
    groups: dict[str, list[str]] = {}
    for name, points in series.items():
        groups.setdefault(json.dumps(points, sort_keys=True), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _layout(title: str, height: int, **axes) -> dict:
    return {
        "title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 18}},
        "height": height, "font": FONT, "template": "plotly_white", "autosize": True,
        "margin": {"l": 90, "r": 30, "t": 60, "b": 70},
        "hoverlabel": {"font": {"size": 13, "family": FONT["family"]}, "align": "left"},
        "legend": {"title": {"text": "node type"}, "font": {"size": 13}, "itemsizing": "constant",
                   "itemdoubleclick": "toggleothers"},
        **axes,
    }


def _log_axis(title: str, values: list[float], ticks) -> dict:
    low, high = min(values), max(values)
    tickvals, ticktext = ticks(low, high)
    return {"title": {"text": title}, "type": "log", "automargin": True, "tickvals": tickvals,
            "ticktext": ticktext, "range": log_range(low, high), "gridcolor": GRID_COLOR,
            "zeroline": False}


def _generic_ticks(key):
    def ticks(low, high):
        values = _steps_125(low, high)
        return values, [HUMAN[key](v) for v in values]
    return ticks


TICKS = {"n_gpus": pow2_ticks, "params": param_ticks, "seq_len": token_ticks,
         "tokens_per_gpu": token_ticks, **{k: _generic_ticks(k) for k in TIME_AXES}}


def largest_figure(frame: pl.DataFrame, styles: dict[str, SeriesStyle]):
    """The largest trainable model vs GPUs, one line per node type; the legend lists the
    node types from the largest model at the most GPUs down, as the lines end."""
    series, traces = {}, []
    for gpu in styles:
        part = frame.filter(pl.col("gpu") == gpu).sort("n_gpus")
        if not len(part):
            continue
        x, y = part["n_gpus"].to_list(), part["params"].to_list()
        series[gpu] = {"n_gpus": x, "params": y}
        style = styles[gpu]
        traces.append((-y[-1], go.Scatter(
            x=x, y=y, name=gpu, mode="lines+markers", text=[hover(r) for r in part.to_dicts()],
            hovertemplate="%{text}<extra></extra>",
            line={"color": style.color, "width": 2},
            marker={"color": style.color, "symbol": style.symbol, "size": 9,
                    "line": {"color": "white", "width": 0.5}})))
    traces = [t for _, t in sorted(traces, key=lambda t: t[0])]
    on_top = set()  # a line drawn over an identical one is dashed, so both show
    for group in coinciding(series):
        on_top |= set([t.name for t in traces if t.name in group][1:])
    for trace in traces:
        if trace.name in on_top:
            trace.line.dash = "dash"
    fig = go.Figure(traces)
    fig.update_layout(**_layout(
        "Largest trainable model by node type and number of GPUs", PLOT_HEIGHT,
        xaxis=_log_axis("GPUs", frame["n_gpus"].to_list(), pow2_ticks),
        yaxis=_log_axis("largest model (parameters)", frame["params"].to_list(),
                        param_ticks)))
    return fig, series


def frontier_axes(frame: pl.DataFrame, objectives: list[str]) -> tuple[str, str, str | None]:
    """(x, y, size) of the frontier plot: GPUs across, then the objectives that vary in the
    frame (parameters, context, tokens per GPU) up and as marker size."""
    timed = [k for k in objectives if k in TIME_AXES]
    varying = [k for k in (*timed, "params", "seq_len", "tokens_per_gpu")
               if k in frame.columns and frame[k].n_unique() > 1
               and (not objectives or k in objectives or k == "params")]
    y = varying[0] if varying else "params"
    size = varying[1] if len(varying) > 1 else None
    return "n_gpus", y, size


def _sizes(values: list[float], low: float, high: float) -> list[float]:
    """Marker diameters: a fixed step per doubling of the value, at most SIZE_MAX."""
    doublings = max(math.log2(high / low), 1e-9)
    step = min(SIZE_STEP, (SIZE_MAX - SIZE_MIN) / doublings)
    return [SIZE_MIN + step * math.log2(v / low) for v in values]


def _size_legend(key: str, low: float, high: float, distinct: list[float]) -> list[go.Scatter]:
    """Grey markers in a second legend that read the marker size."""
    shown = distinct if len(distinct) <= SIZE_LEGEND_ENTRIES else \
        [2.0**e for e in range(math.ceil(math.log2(low)), math.floor(math.log2(high)) + 1)]
    if len(shown) > SIZE_LEGEND_ENTRIES:
        shown = shown[:: math.ceil(len(shown) / SIZE_LEGEND_ENTRIES)]
    return [go.Scatter(x=[None], y=[None], mode="markers", name=HUMAN[key](v),
                       hoverinfo="skip", showlegend=True,
                       marker={"size": d, "color": "rgba(90,100,115,0.35)",
                               "line": {"color": "#5a6473", "width": 1.5}})
            for v, d in zip(shown, _sizes(shown, low, high), strict=True)]


def facet_grid(n: int) -> tuple[int, int]:
    """(rows, columns) of small multiples: up to 4 across."""
    cols = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    return math.ceil(n / cols), cols


def _thinned(axis: dict, most: int) -> dict:
    """Every other tick when more than `most` would crowd a narrow panel."""
    if len(axis["tickvals"]) <= most:
        return axis
    keep = slice(0, None, 2)
    return {**axis, "tickvals": axis["tickvals"][keep], "ticktext": axis["ticktext"][keep]}


def frontier_figure(frame: pl.DataFrame, styles: dict[str, SeriesStyle], objectives: list[str]):
    """Frontier points as small multiples, one panel per node type on shared log axes: GPUs
    vs the first varying objective, marker size by the next (translucent markers with a
    solid outline, so points of equal position and different size stay visible)."""
    xkey, ykey, skey = frontier_axes(frame, objectives)
    gpus = [g for g in styles if g in set(frame["gpu"].to_list())]
    rows, cols = facet_grid(len(gpus))
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=gpus, horizontal_spacing=0.035,
                        vertical_spacing=min(0.1, 0.5 / rows))
    low, high = (frame[skey].min(), frame[skey].max()) if skey else (None, None)
    series = {}
    for i, gpu in enumerate(gpus):
        part = frame.filter(pl.col("gpu") == gpu).sort(xkey, ykey, *([skey] if skey else []))
        points = {k: part[k].to_list() for k in (xkey, ykey, skey) if k}
        series[gpu] = points
        style = styles[gpu]
        fig.add_trace(go.Scatter(
            x=points[xkey], y=points[ykey], name=gpu, mode="markers", showlegend=False,
            text=[hover(r) for r in part.to_dicts()], hovertemplate="%{text}<extra></extra>",
            marker={"color": style.color, "symbol": style.symbol, "opacity": 0.75,
                    "size": _sizes(points[skey], low, high) if skey else 11,
                    "line": {"color": style.color, "width": 1.5}}),
            row=i // cols + 1, col=i % cols + 1)
    if skey:
        for trace in _size_legend(skey, low, high, sorted(frame[skey].unique().to_list())):
            fig.add_trace(trace)
    xaxis = _thinned(_log_axis("", frame[xkey].to_list(), TICKS[xkey]), 12 - 2 * cols)
    yaxis = _log_axis("", frame[ykey].to_list(), TICKS[ykey])
    fig.update_xaxes(**{k: v for k, v in xaxis.items() if k != "title"})
    fig.update_yaxes(**{k: v for k, v in yaxis.items() if k != "title"})
    fig.update_xaxes(showticklabels=True)  # every panel reads alone
    fig.update_xaxes(title_text=AXIS_LABELS[xkey], row=rows)
    fig.update_yaxes(title_text=AXIS_LABELS[ykey], col=1, row=(rows + 1) // 2)
    for i, annotation in enumerate(fig.layout.annotations):  # panel titles in series colour
        annotation.update(font={"size": 14, "color": styles[gpus[i]].color})
    most = "fewest" if ykey in LOWER_IS_BETTER else "most"
    layout = _layout(f"Pareto frontier per node type: fewest GPUs for the {most} "
                     f"{AXIS_LABELS[ykey]}", 90 + FACET_HEIGHT * rows + (70 if skey else 0))
    layout["margin"] = {**layout["margin"], "l": 105, "t": 80, "b": 120 if skey else 60}
    if skey:
        layout["legend"] = {"title": {"text": f"marker size: {SIZE_LABELS[skey]}"},
                            "orientation": "h", "x": 0, "xanchor": "left", "y": 0.01,
                            "yanchor": "bottom", "yref": "container", "itemclick": False,
                            "itemdoubleclick": False, "font": {"size": 13}}
    fig.update_layout(**layout)
    return fig, {"axes": {"x": xkey, "y": ykey, "size": skey}, "series": series}


def fewest_figure(frame: pl.DataFrame, styles: dict[str, SeriesStyle]):
    """The fewest GPUs of each type that train the model: one dot per node type, fewest
    first, labelled with GPUs and nodes."""
    rows = sorted(frame.to_dicts(), key=lambda r: (r["n_gpus"], list(styles).index(r["gpu"])))
    traces = [go.Scatter(
        x=[r["n_gpus"]], y=[r["gpu"]], name=r["gpu"], mode="markers+text",
        text=[cluster_text(r).split(" × ", 1)[1]], textposition="middle right",
        hovertext=[hover(r)], hovertemplate="%{hovertext}<extra></extra>", showlegend=False,
        marker={"color": styles[r["gpu"]].color, "symbol": styles[r["gpu"]].symbol, "size": 13})
        for r in rows]
    xaxis = _log_axis("fewest GPUs that fit", [r["n_gpus"] for r in rows], pow2_ticks)
    xaxis["range"] = [xaxis["range"][0], xaxis["range"][1] + 0.6]  # room for the labels
    fig = go.Figure(traces)
    fig.update_layout(**_layout(
        "Fewest GPUs that train the model, by node type",
        120 + DOT_ROW_HEIGHT * len(rows), xaxis=xaxis,
        yaxis={"autorange": "reversed", "type": "category", "gridcolor": GRID_COLOR}))
    return fig, {r["gpu"]: r["n_gpus"] for r in rows}


def _steps_125(low: float, high: float) -> list[float]:
    """1-2-5 steps from below `low` to above `high` (log axes of rates and prices)."""
    values, decade = [], 10.0 ** math.floor(math.log10(low))
    while decade <= high * 10:
        values += [m * decade for m in (1, 2, 5) if low / 1.5 <= m * decade <= high * 1.5]
        decade *= 10
    return values


TIME_PANELS = (("tokens_per_s", "fastest: tokens/s", max),
               ("cost_per_million_tokens", "cheapest: USD per million tokens", min))


def time_figure(frame: pl.DataFrame, styles: dict[str, SeriesStyle]):
    """Throughput and cost against GPUs, one line per node type: at each GPU count the
    fastest configuration (left) and the cheapest (right) among the rows given."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[title for _, title, _ in TIME_PANELS])
    series = {}
    frame = frame.filter(pl.col("tokens_per_s").is_finite() & (pl.col("tokens_per_s") > 0))
    for col, (key, _, pick) in enumerate(TIME_PANELS, start=1):
        best = pl.col(key).max() if pick is max else pl.col(key).min()
        for gpu in styles:
            part = frame.filter(pl.col("gpu") == gpu)
            if not len(part):
                continue
            top = part.filter(pl.col(key) == best.over("n_gpus")).sort("n_gpus").unique(
                "n_gpus", keep="first", maintain_order=True)
            x, y = top["n_gpus"].to_list(), top[key].to_list()
            series.setdefault(gpu, {})[key] = {"n_gpus": x, key: y}
            style = styles[gpu]
            fig.add_trace(go.Scatter(
                x=x, y=y, name=gpu, legendgroup=gpu, showlegend=col == 1,
                mode="lines+markers", text=[hover(r) for r in top.to_dicts()],
                hovertemplate="%{text}<extra></extra>",
                line={"color": style.color, "width": 2},
                marker={"color": style.color, "symbol": style.symbol, "size": 9}),
                row=1, col=col)
        values = frame[key].to_list()
        if values:
            low, high = min(values), max(values)
            tickvals, ticktext = TICKS[key](low, high)
            fig.update_yaxes(type="log", tickvals=tickvals, ticktext=ticktext,
                             gridcolor=GRID_COLOR, row=1, col=col)
            fig.update_xaxes(**_log_axis("GPUs", frame["n_gpus"].to_list(), pow2_ticks),
                             row=1, col=col)
    fig.update_layout(**_layout("Step time: throughput and cost by node type and number of GPUs",
                                PLOT_HEIGHT))
    return fig, series


def breakdown_label(row: dict) -> str:
    """A bar's two-line label: cluster and model, then the strategy."""
    return f"<b>{cluster_text(row)}</b> · {units.params(row['params'])} {row['model']}" \
           f"<br>{strategy(row)}"


def breakdown_figure(frame: pl.DataFrame):
    """Stacked per-GPU memory components of chosen configurations, with each bar's usable
    capacity marked and labelled with the total against it."""
    rows = frame.to_dicts()
    labels = [breakdown_label(r) for r in rows]
    series = {"labels": labels}
    traces = []
    for key in GPU_COMPONENTS:
        gib = [r[f"{key}_bytes"] / GIB for r in rows]
        series[key] = gib
        if not any(gib):
            continue  # e.g. no KV cache in training: no empty legend entry
        traces.append(go.Bar(
            y=labels, x=gib, name=COMPONENT_NAMES[key], orientation="h",
            marker={"color": COMPONENT_COLORS[key], "line": {"color": "white", "width": 0.5}},
            customdata=[units.bytes_(r[f"{key}_bytes"]) for r in rows],
            hovertemplate=f"{COMPONENT_NAMES[key]}: %{{customdata}}<extra></extra>"))
    capacity = [r["gpu_capacity_bytes"] / GIB for r in rows]
    series["capacity"] = capacity
    traces.append(go.Scatter(
        y=labels, x=capacity, name="usable capacity", mode="markers+text",
        marker={"symbol": "line-ns", "size": BAR_ROW_HEIGHT * 0.62,
                "line": {"color": "#111827", "width": 3}},
        text=[f"{units.bytes_(r['per_gpu_total_bytes'])} of "
              f"{units.bytes_(r['gpu_capacity_bytes'])}" for r in rows],
        textposition="middle right", textfont={"size": 12, "color": "#3e4c59"},
        customdata=[units.bytes_(r["gpu_capacity_bytes"]) for r in rows],
        hovertemplate="usable capacity: %{customdata}<extra></extra>"))
    fig = go.Figure(traces)
    most = max(max(capacity), max(r["per_gpu_total_bytes"] / GIB for r in rows))
    layout = _layout("Memory per GPU of the chosen configurations", 200 + BAR_ROW_HEIGHT
                     * len(rows),
                     xaxis={"title": {"text": "GiB per GPU (most loaded rank)"},
                            "range": [0, most * 1.32], "gridcolor": GRID_COLOR},
                     yaxis={"autorange": "reversed", "automargin": True,
                            "tickfont": {"size": 12}})
    layout.update(barmode="stack", bargap=0.38, hovermode="y unified",
                  # below the axis title, so that two rows of entries never reach the title
                  legend={"title": {"text": "component"}, "orientation": "h", "x": 0,
                          "traceorder": "normal", "xanchor": "left", "y": 0,
                          "yref": "container", "yanchor": "bottom", "font": {"size": 13}})
    layout["margin"] = {**layout["margin"], "t": 60, "b": 150}
    fig.update_layout(**layout)
    return fig, series
