"""The step-time model: FLOPs against closed forms and Megatron-LM's counter, NumPy == jit,
schedules, physical invariants, cost arithmetic, and the committed accuracy table."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import config

from sweep import catalog
from sweep.model import Architecture
from sweep.timing import Overlap, cost, schedule, step_time, validate
from sweep.timing import flops as fl

F64 = np.float64


def _f64(tree):
    return jax.tree_util.tree_map(F64, tree)


def gpt3(h=12288, layers=96, heads=96, vocab=51200, seq=2048):
    return _f64(validate.gpt_architecture(h, layers, heads, vocab, seq, True, True))


# ---- FLOPs --------------------------------------------------------------------------------

@pytest.mark.parametrize(("h", "layers", "heads"), [(12288, 96, 96), (2304, 24, 24),
                                                      (25600, 128, 160)])
def test_model_and_hardware_flops_match_narayanan_eq3(h, layers, heads):
    """Narayanan et al. 2021 eq. 3 and its no-recompute form (Korthikanti et al. 2022 §6.1),
    per token: 72·l·h²·(1 + s/(6h) + V/(12·l·h)) and 96·l·h²·(1 + s/(6h) + V/(16·l·h))."""
    s, vocab = 2048, 51200
    arch = gpt3(h, layers, heads, vocab, s)
    cfg = config(seq_len=s, recompute="full", flash_attention=False)
    model = 72 * layers * h**2 * (1 + s / (6 * h) + vocab / (12 * layers * h))
    hardware = 96 * layers * h**2 * (1 + s / (6 * h) + vocab / (16 * layers * h))
    assert float(fl.model_flops_per_token(arch, cfg)) == pytest.approx(model, rel=1e-12)
    assert float(fl.hardware_flops_per_token(arch, cfg)) == pytest.approx(hardware, rel=1e-12)


def megatron_r080_num_floating_point_operations(args, batch_size):
    """Megatron-LM megatron/training/training.py, tag core_r0.8.0 (commit baf94af3),
    `num_floating_point_operations`, copied verbatim as the reference (attention counted over
    the full s x s scores, routed experts as ffn_hidden_size x top-k, no router term)."""
    # Attention projection size.
    query_projection_size = args.kv_channels * args.num_attention_heads
    query_projection_to_hidden_size_ratio = query_projection_size / args.hidden_size
    # Group Query Attention.
    if not args.group_query_attention:
        args.num_query_groups = args.num_attention_heads
    # MoE.
    num_experts_routed_to = 1 if args.num_experts is None else args.moe_router_topk
    gated_linear_multiplier = 3 / 2 if args.swiglu else 1
    return (
        12
        * batch_size
        * args.seq_length
        * args.num_layers
        * args.hidden_size
        * args.hidden_size
        * (
            # Attention.
            (
                (
                    1
                    + (args.num_query_groups / args.num_attention_heads)
                    + (args.seq_length / args.hidden_size)
                ) * query_projection_to_hidden_size_ratio
            )
            # MLP.
            + (
                (args.ffn_hidden_size / args.hidden_size)
                * num_experts_routed_to
                * gated_linear_multiplier
            )
            # Logit.
            + (args.padded_vocab_size / (2 * args.num_layers * args.hidden_size))
        )
    )


def _megatron_args(arch: Architecture, seq):
    moe = arch.num_experts > 0
    return type("Args", (), dict(
        kv_channels=arch.head_dim, num_attention_heads=arch.num_heads,
        hidden_size=arch.hidden_size, group_query_attention=True,
        num_query_groups=arch.num_kv_heads, num_experts=arch.num_experts if moe else None,
        moe_router_topk=arch.num_experts_per_tok, swiglu=bool(arch.gated_mlp),
        ffn_hidden_size=arch.moe_ffn_hidden_size if moe else arch.ffn_hidden_size,
        seq_length=seq, num_layers=arch.num_layers, padded_vocab_size=arch.vocab_size))()


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.1-70b", "mistral-7b",
                                  "mixtral-8x7b", "gpt3-175b"])
def test_model_flops_equal_megatron_r080(name):
    """GQA, SwiGLU and top-k MoE as Megatron-Core r0.8.0 counts them; our router GEMM
    (2·h·E per token and pass, which Megatron leaves out) is added to its count."""
    arch = _f64(catalog.model(name).arch)
    seq, batch = 4096, 8
    cfg = config(seq_len=seq)
    ours = float(fl.model_flops_per_step(arch, cfg, batch * seq))
    reference = megatron_r080_num_floating_point_operations(_megatron_args(arch, seq), batch)
    router = 3 * 2 * arch.hidden_size * arch.num_experts * arch.num_layers * batch * seq
    assert ours == pytest.approx(reference + router, rel=1e-12)


def test_mla_forward_flops_by_hand():
    """DeepSeek-V3 MLA block (modeling_deepseek_v3.py shapes), forward per token: q_a h·q_r,
    q_b q_r·a·(d_nope + d_rope), kv_a h·(kv_r + d_rope), kv_b kv_r·a·(d_nope + d_v),
    o a·d_v·h; 2 FLOPs each."""
    arch = _f64(catalog.model("deepseek-v3").arch)
    h, a, qr, kvr = 7168, 128, 1536, 512
    nope, rope, dv = 128, 64, 128
    attention = 2 * (h * qr + qr * a * (nope + rope) + h * (kvr + rope)
                     + kvr * a * (nope + dv) + a * dv * h)
    dense_mlp = 2 * 3 * h * 18432
    assert float(fl.block_linear_flops(arch, False)) == pytest.approx(attention + dense_mlp)
    # MoE block: 8 of 256 routed experts of width 2048, one shared of 2048, router h x 256.
    moe = attention + 2 * 3 * h * 2048 * (8 + 1) + 2 * h * 256
    assert float(fl.block_linear_flops(arch, True)) == pytest.approx(moe)


def test_lora_and_frozen_flops_by_hand():
    """LoRA: base linears forward + input gradient (2 passes), adapters 3 passes; frozen
    blocks: forward only; the attention core always runs forward and backward when trained."""
    arch = gpt3(h=1024, layers=4, heads=8, vocab=1000, seq=512)
    h, s, V, L = 1024, 512, 1000, 4
    linear = 2 * 12 * h * h  # qkv 3h², o h², MLP 8h², per token forward
    attention = 2 * s * 8 * (128 + 128)
    head = 2 * h * V
    full = config(seq_len=s)
    assert float(fl.model_flops_per_token(arch, full)) == pytest.approx(
        L * 3 * (linear + attention) + 3 * head)
    frozen = config(seq_len=s, frozen_layers=3)  # 3 blocks forward only, 1 trained
    assert float(fl.model_flops_per_token(arch, frozen)) == pytest.approx(
        3 * (linear + attention) + 3 * (linear + attention) + 3 * head)
    r = 16
    lora = config(seq_len=s, finetune="lora", lora_rank=r, lora_targets="q_proj,v_proj")
    adapters = 2 * r * (h + h) * 2  # q and v: A h -> r, B r -> h
    assert float(fl.model_flops_per_token(arch, lora)) == pytest.approx(
        L * (2 * linear + 3 * attention + 3 * adapters) + 2 * head)


def test_korthikanti_table5_times_give_the_published_mfu():
    """The Table 5 iteration times of `published.toml` with our model FLOPs reproduce the
    MFU Megatron-LM's README prints for these runs (commit 2e90a342): 41.5, 51.4, 56.0,
    56.3%, to the rounding of the times (two decimals)."""
    readme_mfu = {"22B": 0.415, "175B": 0.514, "530B": 0.560, "1T": 0.563}
    a100_peak = 312e12
    for row in validate.rows():
        if row.source != "korthikanti2022" or "selective" not in row.label:
            continue
        flops = float(fl.model_flops_per_step(row.arch, row.cfg, _tokens(row)))
        mfu = flops / (row.measured_step_s * row.cfg.n_gpus * a100_peak)
        assert mfu == pytest.approx(readme_mfu[row.label.split()[0]], abs=0.0025), row.label


def _tokens(row):
    c = row.cfg
    return c.micro_batch * c.seq_len * c.grad_accum * c.n_gpus / (c.tp * c.pp * c.cp)


# ---- NumPy and jit --------------------------------------------------------------------------

JIT_CASES = [
    ("mixtral-8x7b", dict(n_gpus=64, tp=4, pp=2, ep=4, sp=True, zero_stage=1,
                          framework="megatron", grad_accum=8, recompute="selective")),
    ("llama-3.1-70b", dict(n_gpus=32, tp=8, pp=2, vpp=2, cp=2, sp=True, framework="megatron",
                           zero_stage=1, grad_accum=4, seq_len=32768, recompute="full",
                           recompute_layers=4)),
    ("deepseek-v3", dict(n_gpus=16, zero_stage=3, framework="deepspeed",
                         offload="optimizer+params", grad_accum=2)),
    ("llama-3.1-8b", dict(n_gpus=8, framework="fsdp", zero_stage=3, finetune="qlora",
                          precision="fp8-mixed")),
]


def _stack(trees, column):
    """Stack scalar pytrees along a first axis, as a column (k, 1) to broadcast."""
    return jax.tree_util.tree_map(
        lambda *leaves: np.asarray(leaves, F64).reshape(-1, 1) if column else np.asarray(leaves),
        *trees)


def test_numpy_equals_jit_on_broadcast_arrays():
    """One jitted float64 evaluation over (case x GPU count) arrays gives, per element, the
    NumPy float64 scalar evaluation of the same function (one compile for the whole grid)."""
    hw = _f64(catalog.gpu("h100-sxm-80gb").hardware())
    archs = [_f64(catalog.model(name).arch) for name, _ in JIT_CASES]
    cfgs = [config(**values) for _, values in JIT_CASES]
    factors = np.array([1.0, 2.0, 4.0])
    arch, cfg = _stack(archs, True), _stack(cfgs, True)
    cfg = cfg.replace(n_gpus=cfg.n_gpus * factors[None, :])
    with jax.enable_x64(True):
        grid = jax.jit(step_time)(arch, cfg, hw)
        grid = jax.tree_util.tree_map(np.asarray, grid)
    for i, (a, c) in enumerate(zip(archs, cfgs, strict=True)):
        for j, factor in enumerate(factors):
            one = step_time(a, c.replace(n_gpus=c.n_gpus * factor), hw)
            for got, want in zip(jax.tree_util.tree_leaves(grid),
                                 jax.tree_util.tree_leaves(one), strict=True):
                assert float(got[i, j]) == pytest.approx(float(want), rel=1e-12)
            assert np.isfinite(float(one.step_s)) and float(one.step_s) > 0


# ---- schedules ------------------------------------------------------------------------------

@pytest.mark.parametrize(("p", "m", "v", "fraction"), [(8, 64, 1, 7 / 64), (8, 64, 4, 7 / 256),
                                                       (1, 16, 1, 0.0), (64, 512, 2, 63 / 1024)])
def test_bubble_fraction(p, m, v, fraction):
    """1F1B (p - 1)/m and interleaved (p - 1)/(v·m), Narayanan et al. 2021 §2.2."""
    assert float(schedule.bubble_fraction(config(pp=p, grad_accum=m, vpp=v))) == pytest.approx(
        fraction)


def test_step_bubble_is_the_schedule_fraction_of_equal_stages():
    """With a negligible head (a vocabulary of 8) the stages are nearly equal and the step's
    bubble is (p - 1)/(v·m) of the rest of the pipelined time (to the head's share)."""
    arch = gpt3(h=4096, layers=32, heads=32, vocab=8, seq=2048)
    hw = _f64(catalog.gpu("a100-80gb").hardware())
    for v in (1, 2):
        cfg = config(n_gpus=64, tp=8, pp=8, vpp=v, grad_accum=32, framework="megatron",
                     seq_len=2048)
        b = step_time(arch, cfg, hw).breakdown
        pipelined = b.compute + b.recompute + b.tp + b.pp
        assert float(b.bubble / pipelined) == pytest.approx(7 / (v * 32), rel=5e-3)


# ---- invariants -----------------------------------------------------------------------------

INVARIANT_CASES = [
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=2, zero_stage=1, framework="megatron",
                           grad_accum=8, sp=True)),
    ("llama-3.1-8b", dict(n_gpus=32, zero_stage=3, framework="fsdp", grad_accum=4)),
    ("mixtral-8x7b", dict(n_gpus=64, tp=2, ep=8, zero_stage=2, framework="deepspeed",
                          offload="optimizer", grad_accum=2)),
]


def _hw(name="h100-sxm-80gb", **changes):
    return _f64(dataclasses.replace(catalog.gpu(name).hardware(), **changes))


@pytest.mark.parametrize(("name", "values"), INVARIANT_CASES)
def test_more_bandwidth_or_flops_is_never_slower(name, values):
    arch = _f64(catalog.model(name).arch)
    cfg = config(**values)
    base_hw = _hw()
    base = float(step_time(arch, cfg, base_hw).step_s)
    for field in ("intra_node_bandwidth_bytes_per_s", "inter_node_bandwidth_bytes_per_s",
                  "hbm_bandwidth_bytes_per_s", "pcie_bandwidth_bytes_per_s",
                  "bf16_dense_flops", "matmul_efficiency"):
        faster = _hw(**{field: getattr(base_hw, field) * 2})
        assert float(step_time(arch, cfg, faster).step_s) <= base * (1 + 1e-12), field


WEAK_SCALING_CASES = [  # no ZeRO: the optimizer step is the same on every GPU count
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=2, framework="megatron", grad_accum=8, sp=True)),
    ("llama-3.1-8b", dict(n_gpus=8, framework="generic", grad_accum=4)),
    ("mixtral-8x7b", dict(n_gpus=64, tp=2, ep=8, framework="megatron", grad_accum=2)),
]


@pytest.mark.parametrize(("name", "values"), WEAK_SCALING_CASES)
def test_weak_scaling(name, values):
    """Twice the data-parallel replicas at the same per-GPU work: the step is never shorter,
    the throughput higher but at most doubled."""
    arch = _f64(catalog.model(name).arch)
    hw = _hw()
    small = step_time(arch, config(**values), hw)
    for factor in (2, 8):
        big = step_time(arch, config(**{**values, "n_gpus": values["n_gpus"] * factor}), hw)
        assert float(big.step_s) >= float(small.step_s) * (1 - 1e-12)
        assert float(small.tokens_per_s) < float(big.tokens_per_s) <= factor * float(
            small.tokens_per_s) * (1 + 1e-12)
        assert float(big.breakdown.compute) == pytest.approx(float(small.breakdown.compute))


def test_zero_sharding_never_slows_the_optimizer_step():
    arch = _f64(catalog.model("llama-3.1-8b").arch)
    hw = _hw()
    steps = [float(step_time(arch, config(n_gpus=32, zero_stage=z, framework="deepspeed"),
                             hw).breakdown.optimizer) for z in (0, 1, 2, 3)]
    assert steps[1] == pytest.approx(steps[0] / 32) and steps == sorted(steps, reverse=True)


@pytest.mark.parametrize(("name", "values"), INVARIANT_CASES)
def test_recompute_and_overlap_order(name, values):
    """none <= selective <= full recomputation; overlapping communication never slows."""
    arch = _f64(catalog.model(name).arch)
    hw = _hw()
    times = [float(step_time(arch, config(**{**values, "recompute": r}), hw).step_s)
             for r in ("none", "selective", "full")]
    assert times == sorted(times)
    cfg = config(**values)
    none = Overlap(tp=0, cp=0, ep=0, pp=0, dp_grad=0, dp_param=0)
    every = Overlap(tp=1, cp=1, ep=1, pp=1, dp_grad=1, dp_param=1)
    assert float(step_time(arch, cfg, hw, every).step_s) <= float(
        step_time(arch, cfg, hw, none).step_s)


def test_breakdown_sums_to_step_and_mfu_definition():
    arch = _f64(catalog.model("llama-3.1-70b").arch)
    hw = _hw()
    cfg = config(**INVARIANT_CASES[0][1])
    st = step_time(arch, cfg, hw)
    assert float(sum(jax.tree_util.tree_leaves(st.breakdown))) == pytest.approx(
        float(st.step_s), rel=1e-12)
    assert float(st.mfu) == pytest.approx(float(
        fl.model_flops_per_step(arch, cfg, st.tokens_per_step)
        / (st.step_s * cfg.n_gpus * hw.bf16_dense_flops)))
    assert 0 < float(st.mfu) < 1


def test_nvme_offload_without_drives_takes_forever():
    arch = _f64(catalog.model("llama-3.1-8b").arch)
    cfg = config(n_gpus=8, zero_stage=3, framework="deepspeed", offload="nvme")
    assert np.isinf(float(step_time(arch, cfg, _hw("tpu-v5e")).step_s))
    assert np.isfinite(float(step_time(arch, cfg, _hw()).step_s))


# ---- cost -----------------------------------------------------------------------------------

def test_cost_by_hand():
    """8 GPUs at $2/GPU-hour, 1 s per step of 10^6 tokens: 8·2/3600 $ per million tokens;
    10^9 tokens take 1000 s = 1000/86400 days and cost 1000·8·2/3600 $."""
    c = cost(step_s=1.0, tokens_per_step=1e6, n_gpus=8, price_per_gpu_hour_usd=2.0,
             token_budget=1e9)
    assert float(c.cost_per_million_tokens) == pytest.approx(16 / 3600)
    assert float(c.days_to_train) == pytest.approx(1000 / 86400)
    assert float(c.cost_to_train) == pytest.approx(1000 * 16 / 3600)


def test_catalog_time_fields():
    for name, g in catalog.gpus().items():
        assert 0 < g.matmul_efficiency <= 1, name
        assert g.pcie_bandwidth_bytes_per_s > 0 and g.price_per_gpu_hour_usd > 0, name
        assert g.nvme_bytes_per_node >= 0 and g.nvme_bandwidth_bytes_per_s >= 0, name
        assert (g.nvme_bytes_per_node > 0) == (g.nvme_bandwidth_bytes_per_s > 0), name
        assert g.matmul_efficiency_note and g.io_note and g.price_note, name
    assert catalog.gpu("h100-sxm-80gb").nvme_bytes_per_node == 8 * 3.84e12  # DGX H100
    assert catalog.gpu("h100-sxm-80gb").hardware(price_per_gpu_hour_usd=1.5) \
        .price_per_gpu_hour_usd == 1.5


# ---- the committed comparison -------------------------------------------------------------

def test_documented_accuracy_is_what_the_model_gives():
    """docs/time_accuracy.md states the median and worst error of the current model
    (recomputed here from published.toml), and the median meets the 10% aim."""
    errors = [abs(e) for e in validate.errors()]
    stated = validate.documented_summary()
    assert float(np.median(errors)) == pytest.approx(stated["median"], abs=5e-5)
    assert max(errors) == pytest.approx(stated["worst"], abs=5e-5)
    assert stated["median"] <= 0.10
