"""The public measurements (reference/megatron/functional_tests.json) and their statistics.

Our error against them is reported by `validate --public` (docs/public_measurements.md), not
asserted here: the formulas are still being corrected.
"""

import json
import re

import pytest

from sweep import megatron_args
from sweep.public_runs import REFERENCE, error_stats, load_runs, relative_error

COMMIT = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text("utf-8"))


def test_every_record_is_cited_and_consistent(reference):
    records = reference["records"]
    assert len(records) > 100
    for r in records:
        c = r["citation"]
        assert c["repository"] == "NVIDIA/Megatron-LM" and COMMIT.match(c["commit"])
        assert c["path"] == f"tests/functional_tests/test_cases/{r['case']}/golden_values_" \
                            f"{r['environment']}_{r['platform']}.json"
        assert c["model_config"].endswith(f"{r['case']}/model_config.yaml")
        assert c["recipe"].startswith("tests/test_utils/recipes/")
        assert r["case"] in reference["cases"]
        assert r["world_size"] == r["nodes"] * r["gpus_per_node"]
        m = r["measured"]
        assert m["rank"] == r["world_size"] - 1  # the TensorBoard writer's rank
        assert m["peak_allocated_bytes"] >= m["allocated_bytes"] > 0
        assert m["rank_coordinates"]["pipeline_stage"] == reference["cases"][r["case"]][
            "train"]["pp"] - 1
    assert sum(reference["skipped_counts"].values()) == len(reference["skipped"])


def test_measured_values_as_in_the_golden_file(reference):
    # tests/functional_tests/test_cases/gpt/gpt3_7b_tp1_pp4_memory_speed/
    # golden_values_dev_dgx_h100.json @ d98e8a64: mem-max-allocated-bytes 52931256320.0 at
    # step 1 (optimizer states not yet allocated), 60720852992.0 from step 2;
    # mem-allocated-bytes 24808996864.0 at every step.
    (record,) = [r for r in reference["records"]
                 if r["case"] == "gpt/gpt3_7b_tp1_pp4_memory_speed"
                 and r["platform"] == "dgx_h100" and r["environment"] == "dev"]
    m = record["measured"]
    assert (m["peak_allocated_bytes"], m["peak_step"]) == (60720852992, 2)
    assert m["first_step_peak_allocated_bytes"] == 52931256320
    assert m["allocated_bytes"] == 24808996864
    assert (record["world_size"], record["hardware"]) == (8, "h100-sxm-80gb")


def test_cases_parse_back_to_their_stored_configuration(reference):
    """The stored architecture and training values are what the reader makes of the stored
    arguments (guards against a reader change without a rebuild)."""
    for name in sorted(reference["cases"])[::10]:
        case = reference["cases"][name]
        tokens = []
        for flag, value in case["arguments"].items():
            tokens += [flag] if value is True else [flag, *str(value).split()]
        launch = megatron_args.parse_arguments(tokens, name)
        stored = case["architecture"]
        assert {k: getattr(launch.architecture, k) for k in stored} == stored, name
        assert launch.train == case["train"], name


def test_runs_load_with_families():
    runs = load_runs()
    assert {"dense", "MoE", "PP", "CP", "FSDP", "distributed optimizer"} <= {
        f for run in runs for f in run.families}


def test_error_statistics_by_hand():
    errors = [0.01, -0.02, 0.05, -0.10, 0.03]
    stats = error_stats(errors)
    # |e| sorted: 0.01 0.02 0.03 0.05 0.10; median 0.03; p90 at rank 0.9·4 = 3.6:
    # 0.05 + 0.6·(0.10 - 0.05) = 0.08; signed sorted -0.10 -0.02 0.01 0.03 0.05: median 0.01.
    assert stats.count == 5
    assert stats.median_abs == pytest.approx(0.03)
    assert stats.p90_abs == pytest.approx(0.08)
    assert stats.median == pytest.approx(0.01)
    assert error_stats([None, 0.5]).count == 1
    assert relative_error(110, 100) == pytest.approx(0.10)
