"""Report styles: series tell apart by colour (measured with CIEDE2000, written here from the
paper and checked on its published test pairs) and by marker, whatever their number; log
axes tick at readable values."""

import itertools
import math

import pytest
from plotly.validator_cache import ValidatorCache

from sweep import catalog
from sweep.report_style import (
    color,
    param_ticks,
    pow2_ticks,
    series_styles,
    symbol,
    token_ticks,
)


def srgb_to_lab(hex_color: str) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB colour: IEC 61966-2-1 linearisation, then CIE 15:2004."""
    rgb = [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def ciede2000(lab1, lab2) -> float:
    """ΔE00 of Sharma, Wu and Dalal, 'The CIEDE2000 color-difference formula', Color Research
    & Application 30(1), 2005, equations (1)-(22)."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar**7 / (c_bar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0
    dlp, dcp = l2 - l1, c2p - c1p
    dh = 0.0 if c1p * c2p == 0 else (h2p - h1p + 180) % 360 - 180
    dhp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dh / 2))
    lp, cp = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        hp = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hp = (h1p + h2p) / 2
    else:
        hp = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    t = (1 - 0.17 * math.cos(math.radians(hp - 30)) + 0.24 * math.cos(math.radians(2 * hp))
         + 0.32 * math.cos(math.radians(3 * hp + 6)) - 0.20 * math.cos(math.radians(4 * hp - 63)))
    rc = 2 * math.sqrt(cp**7 / (cp**7 + 25**7))
    rt = -math.sin(math.radians(60 * math.exp(-(((hp - 275) / 25) ** 2)))) * rc
    sl = 1 + 0.015 * (lp - 50) ** 2 / math.sqrt(20 + (lp - 50) ** 2)
    sc, sh = 1 + 0.045 * cp, 1 + 0.015 * cp * t
    return math.sqrt((dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2
                     + rt * (dcp / sc) * (dhp / sh))


@pytest.mark.parametrize(("lab1", "lab2", "expected"), [  # Sharma et al. 2005, Table 1
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
])
def test_ciede2000_reproduces_the_papers_pairs(lab1, lab2, expected):
    assert ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)


def test_every_catalog_node_type_has_its_own_colour_and_marker():
    styles = series_styles(catalog.gpus())
    assert len(styles) == 14
    assert len({s.symbol for s in styles.values()}) == 14
    labs = [srgb_to_lab(s.color) for s in styles.values()]
    closest = min(ciede2000(a, b) for a, b in itertools.combinations(labs, 2))
    assert closest > 15  # a100-40gb and rtx-4090 were one blue (ΔE00 0) with a 10-colour cycle
    for lab in labs:  # no pastel on the white page: none lighter than tab10's orange (L* 67)
        assert lab[0] < 68


def test_any_number_of_series_stays_distinct():
    names = [f"node-{i:03d}" for i in range(150)]
    styles = series_styles(names)
    assert len({s.color.lower() for s in styles.values()}) == 150
    assert len({s.symbol for s in list(styles.values())[:68]}) == 68
    valid = set(ValidatorCache.get_validator("scatter.marker", "symbol").values)
    assert all(symbol(i) in valid for i in range(68))
    assert all(len(color(i)) == 7 and color(i).startswith("#") for i in range(300))


def test_a_node_type_keeps_its_style_across_reports():
    few = series_styles(["h100-sxm-80gb", "mi300x"])
    every = series_styles(catalog.gpus())
    assert few["h100-sxm-80gb"] == every["h100-sxm-80gb"]
    assert few["mi300x"] == every["mi300x"]
    assert list(series_styles(["zz-custom", "tpu-v6e", "a100-40gb"])) == \
        ["a100-40gb", "tpu-v6e", "zz-custom"]  # catalog order, unknown names after


def test_gpu_ticks_are_powers_of_two():
    assert pow2_ticks(4, 512) == ([4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                                  ["4", "8", "16", "32", "64", "128", "256", "512"])
    assert pow2_ticks(1, 4096)[1][-3:] == ["1,024", "2,048", "4,096"]
    assert pow2_ticks(3, 40)[0] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]  # covers the data


def test_parameter_ticks_read_in_b_and_t():
    values, labels = param_ticks(24.8e9, 5.85e12)
    assert labels == ["20B", "50B", "100B", "200B", "500B", "1T", "2T", "5T", "10T"]
    assert values[0] <= 24.8e9 and values[-1] >= 5.85e12
    assert param_ticks(7.24e9, 405e9)[1] == ["5B", "10B", "20B", "50B", "100B", "200B", "500B"]


def test_context_ticks_read_in_k():
    assert token_ticks(4096, 131072)[1] == ["4k", "8k", "16k", "32k", "64k", "128k"]
