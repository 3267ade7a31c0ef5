"""The report: files exist, and the plotted series are the Parquet data."""

import json

import polars as pl
from test_engine import SMALL
from test_largest import GRID

from sweep import engine
from sweep.grid import parse
from sweep.largest import largest
from sweep.outdir import OutputDir
from sweep.report import write_report
from sweep.sink import metadata, write_partitioned


def test_report_plots_the_parquet_data(tmp_path):
    grid = parse(GRID, "largest.toml")
    run = tmp_path / "run"
    small = parse(SMALL.replace("OUT", str(run)), "small.toml")
    engine.run(small, progress=False)
    write_partitioned(OutputDir(run), "largest", largest(grid), "gpu", metadata(grid))
    page = write_report(run)
    out = run / "report"
    for name in ("report.html", "largest.png", "frontier.png", "breakdown.png", "series.json"):
        assert (out / name).stat().st_size > 1000
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3 and "http" not in text  # self-contained
    series = json.loads((out / "series.json").read_text())
    biggest = pl.read_parquet(run / "largest", hive_partitioning=True)
    for gpu, points in series["largest"].items():
        part = biggest.filter(pl.col("gpu").cast(pl.String) == gpu).sort("n_gpus")
        assert points["n_gpus"] == part["n_gpus"].to_list()
        assert points["params"] == part["params"].to_list()
    front = pl.read_parquet(run / "frontier", hive_partitioning=True)
    for gpu, points in series["frontier"].items():
        part = front.filter(pl.col("gpu").cast(pl.String) == gpu).sort(
            "n_gpus", "params", "seq_len")
        assert points["n_gpus"] == part["n_gpus"].to_list()
        assert points["params"] == part["params"].to_list()
    assert len(series["breakdown"]["labels"]) == biggest["gpu"].n_unique()
