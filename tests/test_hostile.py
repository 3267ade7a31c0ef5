"""Hostile input never reaches a traceback or a meaningless number: a fixed corpus of the
malformed grids, model files and flags that once got one, and hypothesis over grid files
and `explain` flags. Every case exits 0 with finite, non-negative numbers, or 2 with one
error line (or 1 for `explain --check` when it does not fit); nothing else."""

import json
import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.cli import main
from sweep.config import FIELDS
from sweep.errors import SweepError
from sweep.grid import parse

HEAD = '[axes]\nmodel = ["llama-3.1-8b"]\ngpu = ["a100-80gb"]\n'


def refused(capsys, argv) -> str:
    """Run the CLI; assert it exits 2 with one error line and no traceback; the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


GRIDS = {  # grid file text -> a fragment of the error it must give
    "nan axis": (HEAD + "n_gpus = [nan]", "must be finite"),
    "inf axis": (HEAD + "n_gpus = [inf]", "must be finite"),
    "fractional count": (HEAD + "zero_stage = [1.5]", "whole number"),
    "fractional micro-batch": (HEAD + "micro_batch = [0.5]", "whole number"),
    "zero grad_accum": (HEAD + "grad_accum = [0]", ">= 1"),
    "zero stage 4": (HEAD + "zero_stage = [4]", "<= 3"),
    "fragmentation 1": (HEAD + "fragmentation = [1.0]", "< 1"),
    "pow2 to inf": (HEAD + "n_gpus = {pow2 = [1, inf]}", "finite numbers"),
    "huge range": (HEAD + "seq_len = {range = [1, 1e15, 1]}", "at most"),
    "duplicate values": (HEAD + "tp = [1, 2, 2]", "listed twice"),
    "duplicate categories": (HEAD + 'recompute = ["full", "full"]', "listed twice"),
    "empty lora targets": (HEAD + "lora_targets = []", "lora_targets"),
    "global batch inf": (HEAD + "[constraints]\nglobal_batch_tokens = inf", "whole number"),
    "global batch fraction": (HEAD + "[constraints]\nglobal_batch_tokens = 0.5",
                              "whole number"),
    "family params zero": ('[axes]\nmodel = {family = "llama3", params = [0]}\n'
                           'gpu = ["a100-80gb"]', ">= 1e+06"),
    "family params negative": ('[axes]\nmodel = {family = "llama3", params = [-1e9]}\n'
                               'gpu = ["a100-80gb"]', ">= 1e+06"),
    "family params nan": ('[axes]\nmodel = {family = "llama3", params = [nan]}\n'
                          'gpu = ["a100-80gb"]', "finite"),
    "too many family models": ('[axes]\nmodel = {family = "llama3", params = '
                               '{log_range = [1e9, 1e12, 99901]}}\ngpu = ["a100-80gb"]',
                               "at most"),
    "same model twice": ('[axes]\nmodel = ["llama-3.1-8b", "llama-3.1-8b"]\n'
                         'gpu = ["a100-80gb"]', "listed twice"),
    "duplicate group_by": (HEAD + '[frontier]\ngroup_by = ["gpu", "gpu"]', "listed twice"),
    "chunk size 1": (HEAD + "[output]\nchunk_size = 1", "chunk_size"),
    "name ..": ('name = ".."\n' + HEAD, "name"),
    "name .": ('name = "."\n' + HEAD, "name"),
    "NUL in dir": (HEAD + '[output]\ndir = "out\\u0000x"', "dir"),
    "long dir": (HEAD + f'[output]\ndir = "{"x" * 5000}"', "dir"),
    "deep nesting": (HEAD + "tp = " + "[" * 200 + "1" + "]" * 200, "axes.tp"),
    "token budget negative": (HEAD + "[cost]\ntoken_budget = -1", "token_budget"),
    "token budget inf": (HEAD + "[cost]\ntoken_budget = inf", "token_budget"),
    "price nan": (HEAD + "[cost]\nprice_per_gpu_hour_usd = nan", "price_per_gpu_hour_usd"),
    "price of a GPU not swept": (HEAD + '[cost]\nprice_per_gpu_hour_usd = {"b200" = 5.0}',
                                 "not a GPU of axes.gpu"),
    "cost is not a table": (HEAD.replace("[axes]", 'cost = 3\n[axes]'), "cost"),
    "days without a budget": (HEAD + '[frontier]\nobjectives = ["-n_gpus", "-days_to_train"]',
                              "token budget"),
    "time objective in inference": (HEAD + 'mode = ["train", "inference"]\n[frontier]\n'
                                    'objectives = ["-n_gpus", "+tokens_per_s"]', "inference"),
    "inline zero heads": ('[axes]\nmodel = [{name = "x", hidden_size = 64, num_layers = 2, '
                          'num_heads = 0, num_kv_heads = 0, ffn_hidden_size = 256, '
                          'vocab_size = 100}]\ngpu = ["a100-80gb"]', "num_heads"),
    "inline kv heads 3 of 4": ('[axes]\nmodel = [{name = "x", hidden_size = 64, '
                               'num_layers = 2, num_heads = 4, num_kv_heads = 3, '
                               'ffn_hidden_size = 256, vocab_size = 100}]\n'
                               'gpu = ["a100-80gb"]', "num_kv_heads"),
    "inline top-k over experts": ('[axes]\nmodel = [{name = "x", hidden_size = 64, '
                                  'num_layers = 2, num_heads = 4, num_kv_heads = 4, '
                                  'ffn_hidden_size = 256, vocab_size = 100, num_experts = 8, '
                                  'num_experts_per_tok = 100, moe_ffn_hidden_size = 64}]\n'
                                  'gpu = ["a100-80gb"]', "num_experts_per_tok"),
}


@pytest.mark.parametrize("case", list(GRIDS), ids=list(GRIDS))
def test_malformed_grid_is_one_clear_line(tmp_path, capsys, case):
    text, fragment = GRIDS[case]
    path = tmp_path / "g.toml"
    path.write_text(text.replace("[output]", f'[output]\n# in {tmp_path}'), "utf-8")
    assert fragment in refused(capsys, [str(path), "--no-progress"])


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", "name = 'x'".encode("utf-16")])
def test_grid_that_is_not_utf8_text(tmp_path, capsys, content):
    path = tmp_path / "g.toml"
    path.write_bytes(content)
    refused(capsys, [str(path)])


def test_a_directory_as_the_grid(tmp_path, capsys):
    refused(capsys, [str(tmp_path)])


@pytest.mark.parametrize(("size", "fragment"), [
    ("n_gpus = {range = [1, 99999, 1]}\ntp = {range = [1, 99999, 1]}\n"
     "pp = {range = [1, 99999, 1]}\nseq_len = {range = [1, 99999, 1]}", "64-bit"),
    ("n_gpus = {range = [1, 99999, 1]}\ntp = {range = [1, 99999, 1]}\n"
     "pp = {range = [1, 999, 1]}\nseq_len = {range = [1, 999, 1]}", "over the limit"),
])
def test_grids_too_large_are_refused_before_any_work(tmp_path, capsys, size, fragment):
    path = tmp_path / "g.toml"
    path.write_text(HEAD + size + f'\n[output]\ndir = "{tmp_path / "out"}"\n')
    assert fragment in refused(capsys, [str(path)])
    assert not (tmp_path / "out").exists()


def test_frontier_bookkeeping_too_large_is_refused(tmp_path, capsys, monkeypatch):
    from sweep.engine import orchestrate

    monkeypatch.setattr(orchestrate, "machine_memory_bytes", lambda: 2**20)
    path = tmp_path / "g.toml"
    path.write_text(HEAD + "n_gpus = {range = [1, 9999, 1]}\nseq_len = {range = [1, 99, 1]}\n"
                    f'[frontier]\nobjectives = ["-n_gpus", "+seq_len"]\n'
                    f'[output]\ndir = "{tmp_path / "out"}"\n')
    assert "cells" in refused(capsys, [str(path)])


@pytest.mark.parametrize("flags", [["--days", "-1", "--tokens", "1e12"],
                                   ["--days", "nan", "--tokens", "1e12"],
                                   ["--days", "3", "--tokens", "inf"],
                                   ["--days", "3"],
                                   ["--days", "3", "--tokens", "1e9", "--tokens-per-param", "20"]])
def test_time_budgets_that_make_no_sense(flags, capsys):
    assert "time budget" in refused(capsys, ["largest", *flags])


def test_model_files_that_make_no_sense(tmp_path, capsys):
    base = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 2,
            "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 11008,
            "vocab_size": 32000}
    cases = [{"model_type": ["llama"]}, {"hidden_size": 0}, {"num_attention_heads": 0},
             {"num_attention_heads": 30}, {"num_key_value_heads": 0},
             {"num_key_value_heads": 3}, {"num_key_value_heads": 64},
             {"model_type": "mixtral", "num_local_experts": 0, "num_experts_per_tok": 2},
             {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 100}]
    for change in cases:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({**base, **change}))
        refused(capsys, ["explain", "--model", str(path), "--gpu", "a100-80gb"])


NUMERIC = [f for f in FIELDS.values() if f.metadata["kind"] in ("count", "number")]
FLAG_VALUES = st.one_of(st.integers(-3, 70000).map(str), st.sampled_from(
    ["nan", "inf", "-inf", "0", "1e30", "0.5", "-0.0", "1.5", "abc", ""]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(NUMERIC), FLAG_VALUES), max_size=4),
       st.sampled_from(["llama-2-7b", "mixtral-8x7b", "llama-3.1-70b"]),
       st.sampled_from(["a100-80gb", "rtx-4090", "tpu-v5e"]),
       st.sampled_from([[], ["--framework", "megatron"], ["--finetune", "qlora"],
                        ["--mode", "inference"], ["--offload", "optimizer", "--zero-stage", "1"],
                        ["--token-budget", "1e12"], ["--token-budget", "nan"],
                        ["--token-budget", "-5"], ["--price-per-gpu-hour", "inf"],
                        ["--price-per-gpu-hour", "2.5", "--token-budget", "1e9"]]))
def test_explain_flags_never_traceback_or_nonsense(flags, model, gpu, extra):
    import contextlib
    import io

    argv = ["explain", "--model", model, "--gpu", gpu, "--json", *extra]
    for field, value in flags:
        argv += [f"--{field.name.replace('_', '-')}", value]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as done:  # argparse: a value its type refuses
            code = done.code
    assert "Traceback" not in err.getvalue()
    assert code in (0, 2), (argv, err.getvalue())
    if code == 0:
        result = json.loads(out.getvalue())  # valid JSON: no NaN
        for section in ("time", "cost"):  # training: seconds, rates, USD finite and >= 0
            for key, value in {**result.get(section, {}),
                               **result.get(section, {}).get("breakdown_s", {})}.items():
                if key != "breakdown_s":
                    assert math.isfinite(value) and value >= 0, (section, key, value, argv)
        for key, value in result.items():
            if key.endswith("_bytes") or key.startswith("params"):
                assert math.isfinite(value), (key, value, argv)
                # headroom is capacity - total: negative when it does not fit
                assert value >= 0 or key == "headroom_bytes", (key, value, argv)


TOML_VALUES = st.one_of(
    st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(string.ascii_letters + "-_.,", max_size=12),
    st.lists(st.one_of(st.integers(-2, 64), st.floats(-1, 1e6), st.text(max_size=6)),
             max_size=4))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), TOML_VALUES, max_size=5),
       st.dictionaries(st.sampled_from(["tp_within_node", "whole_nodes", "global_batch_tokens",
                                        "native_frameworks", "other"]), TOML_VALUES,
                       max_size=2))
def test_grid_files_parse_or_say_why(axes, constraints):
    """Any grid file either parses into finite axes with allowed values, or is a SweepError
    naming the file; nothing else escapes."""
    text = HEAD + "".join(f"{k} = {toml_value(v)}\n" for k, v in axes.items())
    if constraints:
        text += "[constraints]\n" + "".join(f"{k} = {toml_value(v)}\n"
                                            for k, v in constraints.items())
    try:
        grid = parse(text, "fuzz.toml")
    except SweepError as err:
        assert str(err).startswith("fuzz.toml")
        return
    for axis in grid.axes:
        assert all(math.isfinite(v) for v in axis.values)
        assert len(set(axis.values)) == len(axis.values)
    assert math.isfinite(grid.global_batch_tokens) and grid.global_batch_tokens >= 0


def test_nothing_fits_says_what_excluded_what(tmp_path, capsys):
    """405B on at most four RTX 4090s: of the 12 configurations, n_gpus 1 with tp 2 (two ZeRO
    stages) is invalid, the other 10 are valid and too big; the closest one is the smallest
    total against capacity that `explain` gives among those 10."""
    path = tmp_path / "g.toml"
    path.write_text('[axes]\nmodel = ["llama-3.1-405b"]\ngpu = ["rtx-4090"]\n'
                    "n_gpus = [1, 2, 4]\ntp = [1, 2]\nzero_stage = [0, 3]\n"
                    f'[output]\ndir = "{tmp_path / "out"}"\n')
    assert main([str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "nothing fits; of 12 sampled configurations:" in out
    assert "17% (2) invalid: degrees" in out
    closest = min(
        (r["per_gpu_total_bytes"] / r["gpu_capacity_bytes"], r["per_gpu_total_bytes"],
         r["gpu_capacity_bytes"])
        for n, tp, zero in [(n, tp, z) for n in (1, 2, 4) for tp in (1, 2) for z in (0, 3)
                            if not (n == 1 and tp == 2)]
        for r in [explain_json(capsys, n, tp, zero)])
    assert (f"83% (10) valid but over GPU memory (the closest needs {closest[1] / 2**30:.1f} "
            f"GiB of {closest[2] / 2**30:.1f} GiB)") in out


def explain_json(capsys, n_gpus, tp, zero_stage) -> dict:
    assert main(["explain", "--model", "llama-3.1-405b", "--gpu", "rtx-4090", "--json",
                 "--n-gpus", str(n_gpus), "--tp", str(tp), "--zero-stage", str(zero_stage)]) == 0
    return json.loads(capsys.readouterr().out)
