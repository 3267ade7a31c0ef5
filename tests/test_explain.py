"""`run_sweep.py explain`: the JSON shape, exact values, and clear errors without tracebacks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.cli import main
from sweep.memory.total import GPU_COMPONENTS
from sweep.outputs import QUANTITIES

ROOT = Path(__file__).resolve().parents[1]
LLAMA_70B = 70_553_706_496


def run_json(capsys, *flags):
    assert main(["explain", *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_done_when_command(capsys):
    """The issue's acceptance command: Llama-3.1-70B on 64 H100s with ZeRO-3 (generic)."""
    out = run_json(capsys, "--model", "llama-3.1-70b", "--gpu", "h100-sxm-80gb",
                   "--n-gpus", "64", "--zero-stage", "3")
    assert set(out) == {"model", "gpu", "configuration", "assumed", *(q.name for q in QUANTITIES),
                        "fits", "nearest", "time", "cost"}
    assert "seq_len" in out["assumed"] and "n_gpus" not in out["assumed"]
    assert out["configuration"]["n_gpus"] == 64 and out["configuration"]["zero_stage"] == 3
    assert (out["params"], out["params_trainable"], out["params_per_gpu"]) == (LLAMA_70B,) * 3
    # ZeRO-3 (P_os+g+p), bf16-mixed AdamW: 2 + 4 + 2 + 8 bytes per parameter, each over 64,
    # and two gathered bf16 blocks (computed and prefetched): attention 2·8192² + 2·8192·1024,
    # SwiGLU 3·8192·28672, two RMSNorms 2·8192 = 855,654,400 parameters per block. The peak is
    # at the start of backward, when no gradient exists yet (grad_accum 1).
    b = {k: out[f"{k}_bytes"] for k in GPU_COMPONENTS}
    assert b["gradients"] == 0
    assert b["weights"] == 2 * LLAMA_70B // 64 + 2 * 2 * 855_654_400
    assert b["master_weights"] == 4 * LLAMA_70B // 64
    assert b["optimizer_states"] == 8 * LLAMA_70B // 64
    assert out["per_gpu_total_bytes"] == pytest.approx(sum(b.values()), abs=1)
    assert out["gpu_capacity_bytes"] == pytest.approx(0.99012 * 80 * 2**30)
    assert out["host_bytes_per_node"] == 0
    # Activations, b = 1, s = 4096, FlashAttention, no recompute, bf16 (e = 2), tp = 1:
    # per block two RMSNorms (input e·T·h + fp32 rstd 4·T) and their outputs e·T·h, q, k, v,
    # the attention output and fp32 logsumexp e·T·(2a + 2k)·d + 4·T·a, SwiGLU 4·e·T·f;
    # plus token ids 8·T, RoPE tables 2·e·s·d, final norm and its output.
    t, h, f, a, k, d, v = 4096, 8192, 28672, 64, 8, 128, 128256
    block = 2 * (2 * t * h + 4 * t) + 2 * 2 * t * h + 2 * t * (2 * a + 2 * k) * d + 4 * t * a \
        + 4 * 2 * t * f
    head = 2 * t * h + 4 * t + 2 * t * h
    assert b["activations"] == 80 * block + 8 * t + 2 * 2 * t * d + head
    # fp32 log-probabilities, targets, nll's total weight; the loss gradient's two fp32 T·V
    # temporaries (nll_loss_backward's and _log_softmax_backward_data's outputs).
    assert b["logits"] == 4 * t * v + 8 * t + 4 + 8 * t * v
    assert out["fits"] is False  # 101 GiB of activations: recompute or model parallelism


def test_tensor_and_pipeline_sharding(capsys):
    """tp = 8, pp = 4, 32 GPUs: d = 1 and no ZeRO, so each GPU holds its full stage shard,
    16 model-state bytes per parameter. The last stage (20 blocks, head, final norm) is the
    most loaded: one micro-batch in flight, like the first, plus the logits."""
    out = run_json(capsys, "--model", "llama-3.1-70b", "--gpu", "h100-sxm-80gb",
                   "--n-gpus", "32", "--tp", "8", "--pp", "4")
    h, v, f, kv = 8192, 128256, 28672, 8 * 128
    block = h * (h + 2 * kv) + h * h + 3 * h * f  # q, k, v, o + gate, up, down
    last = (20 * block + v * h) / 8 + 20 * 2 * h + h  # norms are replicated across tp
    assert out["params_per_gpu"] == last  # the head's logits make the last stage heavier
    assert out["peak_stage"] == "last"
    states = ("weights", "master_weights", "optimizer_states")  # no gradient at the peak
    assert sum(out[f"{k}_bytes"] for k in states) == 14 * last


def test_table_output(capsys):
    assert main(["explain", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--framework",
                 "deepspeed", "--zero-stage", "2"]) == 0
    text = capsys.readouterr().out
    assert "optimizer_states" in text and "estimate_zero2_model_states_mem_needs" in text
    assert "fits: yes" in text


@pytest.mark.parametrize(("flags", "message"), [
    (["--model", "llama3-70b", "--gpu", "h100-sxm-80gb"], "llama-3.1-70b"),
    (["--model", "llama-2-7b", "--gpu", "h100"], "h100-sxm-80gb"),
    (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--n-gpus", "12", "--tp", "8"],
     "multiple of tp·pp·cp"),
    (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--pp", "3", "--n-gpus", "3"],
     "multiple of pp·vpp"),
    (["--model", "llama-3.1-8b", "--gpu", "a100-80gb", "--tp", "16", "--n-gpus", "16"],
     "num_kv_heads must be multiples of tp"),
    (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--framework", "megatron",
      "--zero-stage", "3"], "megatron: 0 or 1"),
    (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--precision", "fp64"], "`precision`"),
    (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--offload", "optimizer"],
     "offload needs ZeRO"),
])
def test_bad_input_is_a_clear_error(capsys, flags, message):
    assert main(["explain", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_config_json_names_the_key(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    assert main(["explain", "--model", str(path), "--gpu", "a100-80gb"]) == 2
    assert "`num_attention_heads`: missing" in capsys.readouterr().err


def test_script_entry_point():
    """`python run_sweep.py explain ...` as a user types it, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "run_sweep.py", "explain", "--model", "mistral-7b", "--gpu", "l40s",
         "--finetune", "qlora", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    out = json.loads(done.stdout)
    assert out["params"] == 7_241_732_096 and out["fits"] is True
    assert out["params_trainable"] < 0.01 * out["params"]


def test_nearest_configurations_fit_and_change_least(capsys):
    """What does not fit comes with what would: each suggestion, explained on its own, fits;
    single changes come before pairs; --check exits 1 for scripts."""
    flags = ["--model", "llama-3.1-70b", "--gpu", "h100-sxm-80gb", "--n-gpus", "64",
             "--zero-stage", "3"]
    out = run_json(capsys, *flags)
    assert out["fits"] is False and out["nearest"]
    sizes = [len(s["changes"]) for s in out["nearest"]]
    assert sizes == sorted(sizes)
    for suggestion in out["nearest"]:
        changed = [f"--{k.replace('_', '-')}" if v is True else None
                   for k, v in suggestion["changes"].items()]
        extra = []
        for (key, value), flag in zip(suggestion["changes"].items(), changed, strict=True):
            extra += [flag] if flag else [f"--{key.replace('_', '-')}", str(value)]
        again = run_json(capsys, *flags, *extra)
        assert again["fits"] is True
        assert again["per_gpu_total_bytes"] == suggestion["per_gpu_total_bytes"]
    assert main(["explain", *flags, "--check"]) == 1
    assert main(["explain", *flags, "--n-gpus", "512", "--recompute", "full", "--check"]) == 0


def test_compare_with_json(capsys):
    out = run_json(capsys, "--model", "llama-2-7b", "--gpu", "a100-80gb", "--framework",
                   "megatron", "--zero-stage", "1", "--compare")
    names = [c["estimator"] for c in out["compare"]]
    assert names == ["megatron", "deepspeed"]
    for c in out["compare"]:
        assert c["total_bytes"] == c["model_state_bytes"] + c["activation_bytes"]
        assert c["what_it_counts"]


def test_table_states_assumptions_and_inference_terms_only(capsys):
    assert main(["explain", "--model", "llama-3.1-8b", "--gpu", "a100-80gb", "--mode",
                 "inference", "--micro-batch", "8"]) == 0
    text = capsys.readouterr().out
    assert "assumed (not given): seq_len 4096" in text and "kv_cache_dtype bf16" in text
    for training_only in ("master_weights", "gradients", "optimizer_states"):
        assert training_only not in text
    assert "kv_cache" in text and "fits: yes" in text


def test_time_and_cost_add_up(capsys):
    """The JSON's breakdown sums to the step, and its cost follows from the step, the tokens,
    the GPUs, the price given and the token budget (cost = price·n·τ/3600 per step)."""
    out = run_json(capsys, "--model", "llama-3.1-8b", "--gpu", "h100-sxm-80gb", "--n-gpus", "16",
                   "--zero-stage", "1", "--grad-accum", "4", "--token-budget", "1e12",
                   "--price-per-gpu-hour", "2.5")
    t, c = out["time"], out["cost"]
    assert sum(t["breakdown_s"].values()) == pytest.approx(t["step_s"], rel=1e-12)
    tokens_per_step = 1 * 4096 * 4 * 16  # micro-batch · context · micro-batches · replicas
    assert t["tokens_per_s"] == pytest.approx(tokens_per_step / t["step_s"], rel=1e-12)
    assert t["tokens_per_gpu_per_s"] == pytest.approx(t["tokens_per_s"] / 16, rel=1e-12)
    assert c["price_per_gpu_hour_usd"] == 2.5 and c["token_budget"] == 10**12
    usd_per_step = 2.5 * 16 * t["step_s"] / 3600
    assert c["cost_per_million_tokens"] == pytest.approx(usd_per_step / tokens_per_step * 1e6,
                                                         rel=1e-12)
    assert c["days_to_train"] == pytest.approx(1e12 / t["tokens_per_s"] / 86400, rel=1e-12)
    assert c["cost_to_train"] == pytest.approx(1e12 / tokens_per_step * usd_per_step,
                                               rel=1e-12)
