"""What the commands print: the sweep's summary (frontier points per group, where the time
went, the top points per group in human units, how to open the files) and tables in human
units for `largest` and `fewest`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

from sweep import units
from sweep.grid import Grid

TOP = 5
# How each column prints; columns not named here print as they are.
HUMAN = {
    "params": units.params, "params_per_gpu": units.params, "params_trainable": units.params,
    "seq_len": units.tokens, "tokens_per_gpu": units.tokens, "micro_batch": units.count,
    "n_gpus": units.count, "nodes": units.count, "tp": units.count, "pp": units.count,
    "cp": units.count, "ep": units.count, "vpp": units.count, "zero_stage": units.count,
    "grad_accum": units.count, "hidden_size": units.count, "num_layers": units.count,
    "lora_rank": units.count,
    "per_gpu_total_bytes": units.bytes_, "headroom_bytes": units.bytes_,
    "host_bytes_per_node": units.bytes_,
    "step_s": units.duration, "tokens_per_s": units.tokens, "tokens_per_gpu_per_s": units.tokens,
    "mfu": units.percent, "days_to_train": units.days, "cost_to_train": units.money,
    "cost_per_million_tokens": units.unit_price,
    "price_per_gpu_hour_usd": units.money,
}


def human(frame: pl.DataFrame, columns: list[str]) -> str:
    """`columns` of `frame` as an aligned text table in human units."""
    columns = [c for c in columns if c in frame.columns]
    rows = [columns]
    for row in frame.select(columns).iter_rows(named=True):
        rows.append([HUMAN[c](row[c]) if c in HUMAN and row[c] is not None else str(row[c])
                     for c in columns])
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def reading_hint(path: str) -> list[str]:
    """How to open the output with what the install brings (polars; DuckDB when present)."""
    lines = [f"python -c \"import polars as pl; print(pl.read_parquet('{path}', "
             "hive_partitioning=True))\""]
    if importlib.util.find_spec("duckdb"):
        lines.append(f"python -c \"import duckdb; print(duckdb.sql(\\\"SELECT * FROM "
                     f"read_parquet('{path}/*/*.parquet', hive_partitioning = true) "
                     "LIMIT 20\\\"))\"")
    return lines


def summary(grid: Grid, manifest: dict) -> str:
    if not manifest.get("complete", True):
        return (f"stopped after {manifest['chunks_done']} of {manifest['chunks']} chunks; "
                "the same command resumes")
    out = Path(grid.output_dir)
    frontier = out / "frontier"
    frame = pl.read_parquet(frontier, hive_partitioning=True) if frontier.exists() else None
    group = list(grid.group_by)
    lines = [f"{manifest['configurations']:,} configurations, {manifest['feasible']:,} fit; "
             f"{manifest['frontier_points']} frontier points "
             f"({', '.join(manifest['objectives'])})"]
    if group and frame is not None and len(frame):
        counts = frame.group_by(group, maintain_order=True).len()
        per = ", ".join(f"{' '.join(map(str, r[:-1]))} {r[-1]}" for r in counts.iter_rows())
        lines.append(f"frontier points per {', '.join(group)}: {per}")
    timing = manifest.get("timing")
    if timing:
        compute = timing["compute_seconds"]
        lines.append(f"{timing['seconds']:.1f} s: {timing['compile_seconds']:.1f} s "
                     f"{'loading the cached kernel' if timing.get('cached') else 'compiling'}, "
                     f"{compute:.1f} s computing {timing['configurations']:,} configurations "
                     f"({timing['configurations_per_second']:,.3g}/s)")
        if timing.get("resumed_chunks"):
            lines.append(f"resumed: {timing['resumed_chunks']} of {manifest['chunks']} chunks "
                         "came from the interrupted run's saved state")
    elif manifest:
        lines.append("nothing to compute: every chunk was already done (results rewritten "
                     "from the saved state)")
    if manifest.get("feasible") == 0:
        from sweep.engine.exact import why_nothing_fits

        lines += why_nothing_fits(grid)
    if frame is not None and len(frame):
        shown = ["model", "n_gpus", "seq_len", "tp", "pp", "cp", "zero_stage", "micro_batch",
                 "recompute", "offload", "tokens_per_gpu", "per_gpu_total_bytes"]
        shown += [o.key for o in grid.objectives if o.key not in shown]
        if group:
            top = frame.group_by(group, maintain_order=True).head(TOP)
            lines += ["", f"top {TOP} frontier points per {', '.join(group)}:",
                      human(top, [*group, *(c for c in shown if c not in group)])]
        else:
            lines += ["", f"top {TOP} frontier points:", human(frame.head(TOP), shown)]
    lines += ["", f"output: {out}/ (frontier/, summary.parquet, manifest.json)",
              *reading_hint(str(frontier))]
    return "\n".join(lines)
