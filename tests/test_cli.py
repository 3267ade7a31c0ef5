"""The command line as a user meets it: --help lists every subcommand, shipped grids run by
name from any directory, `grids` lists them, summaries say what happened."""

import os
import subprocess
import sys
from pathlib import Path

from sweep.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand(capsys):
    try:
        main(["--help"])
    except SystemExit as done:
        assert done.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


def test_grids_lists_the_shipped_grids(capsys):
    assert main(["grids"]) == 0
    text = capsys.readouterr().out
    for name in ("default", "capacity_planning", "largest_model", "benchmark_1e10"):
        assert name in text


def test_a_shipped_grid_runs_by_name_from_another_directory(tmp_path):
    """`llm-memory-sweep long_context_finetune` from an empty directory: the grid comes with
    the package, the output lands in that directory, the summary says what happened."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-c", "from sweep.cli import entry; entry()",
           "long_context_finetune", "--no-progress"]
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "outputs" / "long_context_finetune" / "manifest.json").exists()
    assert "frontier points per gpu: a100-80gb" in done.stdout
    assert "s computing" in done.stdout and "import polars as pl" in done.stdout
    again = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "nothing to compute" in again.stdout


def test_unknown_grid_names_the_shipped_ones(capsys):
    assert main(["capacity_planing"]) == 2
    err = capsys.readouterr().err
    assert "capacity_planning" in err and "Traceback" not in err
