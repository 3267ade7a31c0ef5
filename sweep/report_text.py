"""What `run_sweep.py` prints when a sweep ends: top frontier points per group, where the
files are, and how to open them."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sweep.grid import Grid

TOP = 5
GIB = 2**30


def summary(grid: Grid, manifest: dict) -> str:
    if not manifest.get("complete", True):
        return f"stopped after {manifest['chunks_done']} of {manifest['chunks']} chunks"
    out = Path(grid.output_dir)
    lines = [
        f"{manifest['configurations']:,} configurations, {manifest['feasible']:,} fit; "
        f"{manifest['frontier_points']} frontier points "
        f"({', '.join(manifest['objectives'])}) per {', '.join(manifest['group_by'])}",
    ]
    timing = manifest.get("timing")
    if timing:
        lines.append(f"{timing['seconds']:.1f} s ({timing['compile_seconds']:.1f} s compiling), "
                     f"{timing['configurations_per_second']:,.3g} configurations/s")
    frontier = out / "frontier"
    if frontier.exists():
        frame = pl.read_parquet(frontier, hive_partitioning=True)
        shown = [c for c in ("gpu", "model", "n_gpus", "seq_len", "tp", "pp", "zero_stage",
                             "micro_batch", "recompute", "offload", "tokens_per_gpu")
                 if c in frame.columns]
        with pl.Config(tbl_rows=TOP * 20, tbl_cols=20, tbl_width_chars=160,
                       tbl_hide_dataframe_shape=True):
            top = (frame.with_columns((pl.col("per_gpu_total_bytes") / GIB).round(1)
                                      .alias("GiB"))
                   .group_by(grid.group_by[0], maintain_order=True).head(TOP))
            lines += ["", f"top {TOP} frontier points per {grid.group_by[0]}:",
                      str(top.select(shown + ["GiB"]))]
    lines += [
        "",
        f"output: {out}/ (frontier/, summary.parquet, manifest.json)",
        f"duckdb -c \"SELECT * FROM read_parquet('{out}/frontier/*/*.parquet', "
        "hive_partitioning = true) LIMIT 20\"",
    ]
    return "\n".join(lines)
