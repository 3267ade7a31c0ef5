"""The report: one self-contained page whose plots are the Parquet data, in human units, that
a real browser renders offline (headless Chromium, skipped only where it is not installed)."""

import json
import re
import shutil
import subprocess

import polars as pl
import pytest
from test_engine import SMALL
from test_largest import GRID

from sweep import engine
from sweep.errors import SweepError
from sweep.fewest import fewest_grid
from sweep.grid import parse
from sweep.largest import largest
from sweep.outdir import OutputDir
from sweep.report import write_report
from sweep.report_style import series_styles
from sweep.sink import metadata, write_parquet, write_partitioned

PLOTS = ("plot-largest", "plot-frontier", "plot-time", "plot-breakdown")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
SCIENTIFIC = re.compile(r"\d\.\d+e[+-]\d\d")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with both a sweep's frontier and a `largest` answer, and its report."""
    run = tmp_path_factory.mktemp("report") / "run"
    engine.run(parse(SMALL.replace("OUT", str(run)), "small.toml"), progress=False)
    grid = parse(GRID, "largest.toml")
    write_partitioned(OutputDir(run), "largest", largest(grid), "gpu", metadata(grid))
    write_report(run)
    return run


def _page_without_scripts(run) -> str:
    return re.sub(r"<script.*?</script>", "", (run / "report" / "report.html").read_text(),
                  flags=re.S)


def test_plotted_numbers_are_the_parquet_data(run):
    series = json.loads((run / "report" / "series.json").read_text())
    biggest = pl.read_parquet(run / "largest", hive_partitioning=True)
    assert set(series["largest"]) == set(biggest["gpu"].cast(pl.String))
    for gpu, points in series["largest"].items():
        part = biggest.filter(pl.col("gpu").cast(pl.String) == gpu).sort("n_gpus")
        assert points["n_gpus"] == part["n_gpus"].to_list()
        assert points["params"] == part["params"].to_list()
    front = pl.read_parquet(run / "frontier", hive_partitioning=True)
    axes = series["frontier"]["axes"]
    assert (axes["x"], axes["y"]) == ("n_gpus", "params")
    assert axes["size"] in ("seq_len", "tokens_per_gpu") and front[axes["size"]].n_unique() > 1
    assert set(series["frontier"]["series"]) == set(front["gpu"].cast(pl.String))
    for gpu, points in series["frontier"]["series"].items():
        part = front.filter(pl.col("gpu").cast(pl.String) == gpu).sort(
            "n_gpus", "params", "seq_len")
        for key in axes.values():
            assert points[key] == part[key].to_list()
    # Time and cost (of the largest run's rows): per GPU count the fastest and the cheapest.
    for gpu, panels in series["time"].items():
        part = biggest.filter(pl.col("gpu").cast(pl.String) == gpu)
        for key, best in (("tokens_per_s", max), ("cost_per_million_tokens", min)):
            counts = sorted(set(part["n_gpus"].to_list()))
            assert panels[key]["n_gpus"] == counts
            assert panels[key][key] == [best(part.filter(pl.col("n_gpus") == n)[key].to_list())
                                        for n in counts]
    breakdown = series["breakdown"]
    # each node type's largest model on the most GPUs; the catalog lists a100-40gb before l40s
    chosen = biggest.sort("n_gpus").group_by("gpu").last().sort("gpu")
    assert len(breakdown["labels"]) == len(chosen)
    for i, row in enumerate(chosen.iter_rows(named=True)):
        label = breakdown["labels"][i]
        assert row["gpu"] in label and row["model"] in label  # names its model...
        assert row["framework"] in label and f"ZeRO-{row['zero_stage']:.0f}" in label  # strategy
        assert breakdown["weights"][i] == row["weights_bytes"] / 2**30
        assert breakdown["capacity"][i] == row["gpu_capacity_bytes"] / 2**30


def test_page_is_one_offline_file_in_human_units(run):
    page = (run / "report" / "report.html").read_text()
    assert sorted(p.name for p in (run / "report").iterdir()) == ["report.html", "series.json"]
    assert "Plotly.newPlot" in page and page.count("<script") == 1 + len(PLOTS)  # library once
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page)  # nothing fetched
    for div in PLOTS:
        assert f'id="{div}"' in page
    text = _page_without_scripts(run)
    assert not SCIENTIFIC.search(text), SCIENTIFIC.search(text)  # no 8.030e+09
    # llama-2-13b (13,015,864,320 parameters) is on the frontier, at 8192 tokens
    assert "13B" in text and "8k" in text and "GiB" in text


def test_fewest_run_gets_its_own_plot(run, tmp_path):
    """A `fewest` run's layout (fewest.parquet, the fewest grid in its metadata); its rows
    are stand-ins taken from the sweep's frontier, as the report only reads them."""
    grid = fewest_grid("llama-3.1-8b", 4096, ["a100-40gb", "h100-sxm-80gb"])
    frontier = pl.read_parquet(run / "frontier", hive_partitioning=True)
    frame = frontier.with_columns(pl.col("gpu").cast(pl.String)).sort("n_gpus").group_by(
        "gpu", maintain_order=True).first().sort("gpu")
    few = OutputDir(tmp_path / "few")
    with few.lock():
        write_parquet(few, "fewest.parquet", frame, metadata(grid))
    write_report(tmp_path / "few")
    series = json.loads((tmp_path / "few" / "report" / "series.json").read_text())
    assert series["fewest"] == dict(zip(frame["gpu"], frame["n_gpus"], strict=True))
    assert "frontier" not in series  # a fewest run's frontier is the same points
    assert "Fewest GPUs to train llama-3.1-8b at 4k context" in _page_without_scripts(
        tmp_path / "few")


def test_empty_run_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="no largest/, fewest.parquet or frontier/"):
        write_report(tmp_path)


def _render(url: str, shot, tmp_path) -> str:
    """The DOM after the page's scripts ran, and a screenshot, from headless Chromium:
    offline (every host name resolves nowhere), with a fresh profile."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--window-size=1280,2400", f"--screenshot={shot}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=True)
    return re.sub(r"<script.*?</script>", "", done.stdout, flags=re.S)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get "
                                             "install chromium; .ci/run installs it)")
def test_browser_renders_every_plot(run, tmp_path):
    import numpy as np
    from PIL import Image

    shot = tmp_path / "page.png"
    dom = _render((run / "report" / "report.html").as_uri(), shot, tmp_path)
    starts = [dom.index(f'id="{div}"') for div in PLOTS]  # in page order
    drawn = {div: dom[a:b] for div, a, b in zip(PLOTS, starts, [*starts[1:], len(dom)],
                                                strict=True)}
    for div, part in drawn.items():  # Plotly drew each plot: its div holds the SVG it made
        assert 'class="main-svg"' in part, f"{div} was not drawn"
    series = json.loads((run / "report" / "series.json").read_text())
    points = sum(len(s["n_gpus"]) for s in series["largest"].values())
    assert drawn["plot-largest"].count('class="point"') >= points  # every marker
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    assert pixels.shape == (2400, 1280, 3)
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    colours = len(np.unique(packed))
    inked = float((pixels.sum(-1) < 600).mean())  # neither white nor the page's grey
    assert colours > 200, f"only {colours} colours: a blank page?"
    assert inked > 0.02, f"only {inked:.1%} of the page is drawn on"
    gpus = set(series["largest"]) | set(series["frontier"]["series"])
    for gpu, style in series_styles(gpus).items():  # each node type's lines and markers show
        on_screen = int((packed == int(style.color[1:], 16)).sum())
        assert on_screen >= 20, f"{gpu} ({style.color}) is not on screen"
