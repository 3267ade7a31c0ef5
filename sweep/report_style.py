"""How the report draws series: one colour and one marker per series, whatever their number,
and readable ticks on log axes.

Colours: D3's `category10` (matplotlib's `tab10`) with its two lightest, olive and cyan,
darkened to CIELAB lightness 66 and 58 (no colour of the palette is lighter than tab10's orange,
67), then 14 more picked once, each the sRGB colour (in steps of 15 per channel, lightness
25-65, chroma at least 35: dark enough for a white page, not grey) farthest by CIEDE2000 from
the ones before it; no two of the 24 are closer than 16 ΔE00 (1 is about "just noticeable").
Past 24, generated hues (golden-angle steps at alternating lightness). Markers: 24 filled
shapes, then their open outlines, then 20 of them open with a dot: 68 distinct markers, after
which (colour, marker) pairs stay distinct because the colours do. Node types keep the same style in
every report: they are ordered by the GPU catalog first, so `h100-sxm-80gb` looks the same in a
sweep of 4 node types and in one of 14.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Iterable

from sweep import catalog, units

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#a5a51b", "#1399a8",  # tab10, olive and cyan darkened
           "#3c4b00", "#0000d2", "#87005a", "#966900", "#00785a", "#ff6978", "#e10078",
           "#8796f0", "#4b4b87", "#5a3c00", "#870000", "#4ba587", "#697800", "#960fb4")
GOLDEN_ANGLE = (3 - math.sqrt(5)) / 2  # hue step (in turns) that keeps new hues apart
GENERATED_LIGHTNESS = (0.38, 0.52)
GENERATED_SATURATION = 0.75
SHAPES = ("circle", "square", "diamond", "triangle-up", "cross", "triangle-down", "x", "pentagon",
          "star", "hexagram", "triangle-left", "hourglass", "triangle-right", "bowtie",
          "star-square", "diamond-wide", "star-diamond", "hexagon", "diamond-tall", "octagon",
          "star-triangle-up", "star-triangle-down", "square-x", "circle-x")
NO_DOT = {"hourglass", "bowtie", "square-x", "circle-x"}  # Plotly draws these without a dot
SYMBOLS = (SHAPES + tuple(f"{s}-open" for s in SHAPES)
           + tuple(f"{s}-open-dot" for s in SHAPES if s not in NO_DOT))

# Memory components: model states in blues and greens, activations and logits in warm colours,
# the runtime's share in greys, so a bar reads as "states | activations | runtime".
COMPONENT_COLORS = {
    "weights": "#1f4e9c", "master_weights": "#4f86d9", "gradients": "#2a9d8f",
    "optimizer_states": "#8ecae6", "activations": "#e76f51", "logits": "#f4a261",
    "kv_cache": "#c1121f", "buffers": "#8d99ae", "overhead": "#c9ced6",
}
COMPONENT_NAMES = {
    "weights": "weights", "master_weights": "master weights", "gradients": "gradients",
    "optimizer_states": "optimizer states", "activations": "activations", "logits": "logits",
    "kv_cache": "KV cache", "buffers": "buffers", "overhead": "runtime overhead",
}
PARAM_STEPS = (1, 2, 5)  # ticks of a parameter axis: 1B, 2B, 5B, 10B, ...


@dataclasses.dataclass(frozen=True)
class SeriesStyle:
    color: str
    symbol: str


def color(index: int) -> str:
    """The palette's colour `index`, or a generated one past its end."""
    if index < len(PALETTE):
        return PALETTE[index]
    k = index - len(PALETTE)
    r, g, b = colorsys.hls_to_rgb((k * GOLDEN_ANGLE) % 1.0,
                                  GENERATED_LIGHTNESS[k % len(GENERATED_LIGHTNESS)],
                                  GENERATED_SATURATION)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def symbol(index: int) -> str:
    return SYMBOLS[index % len(SYMBOLS)]


def ordered(names: Iterable[str]) -> list[str]:
    """Node types in catalog order, names the catalog does not know after them, sorted."""
    names = set(names)
    known = [n for n in catalog.gpus() if n in names]
    return known + sorted(names - set(known))


def series_styles(names: Iterable[str]) -> dict[str, SeriesStyle]:
    """One distinct (colour, marker) per name; catalog GPUs keep their catalog position."""
    positions = {n: i for i, n in enumerate(catalog.gpus())}
    styles, extra = {}, len(positions)
    for name in ordered(names):
        if name in positions:
            i = positions[name]
        else:
            i, extra = extra, extra + 1
        styles[name] = SeriesStyle(color(i), symbol(i))
    return styles


def pow2_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Powers of two from `low` to `high` (GPU counts): values and labels '1', ..., '1,024'."""
    first, last = math.floor(math.log2(max(low, 1))), math.ceil(math.log2(max(high, 1)))
    values = [2.0**e for e in range(first, last + 1)]
    return values, [units.count(v) for v in values]


def token_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Powers of two from `low` to `high` (context lengths): values and labels '4k', '128k'."""
    values, _ = pow2_ticks(low, high)
    return values, [units.tokens(v) for v in values]


def param_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """1-2-5 steps per decade covering `low`..`high`: values and labels '1B', '2B', '5B'."""
    values = []
    for decade in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        values += [step * 10.0**decade for step in PARAM_STEPS]
    below = [v for v in values if v <= low]
    above = [v for v in values if v >= high]
    lo, hi = (below[-1] if below else values[0]), (above[0] if above else values[-1])
    values = [v for v in values if lo <= v <= hi]
    return values, [units.params(v) for v in values]


def log_range(low: float, high: float, pad: float = 1.35) -> list[float]:
    """A log axis range (log10 units) from `low`/pad to `high`*pad."""
    return [math.log10(low / pad), math.log10(high * pad)]
