"""Activation formulas: Korthikanti et al. 2022 Table 2 exactly, and the measured saved tensors
of reference PyTorch models (sweep/measure) in every case."""

import pytest
from conftest import config

from sweep import catalog
from sweep.memory import activations as act
from sweep.memory import inference

GPT3 = catalog.model("gpt3-175b").arch  # h = 12288, a = 96, GeLU at 4h, LayerNorm, dropout
S, B, H, A = 2048, 1, 12288, 96
SBH = S * B * H


def block(**values):
    cfg = config(micro_batch=B, seq_len=S, flash_attention=False, **values)
    return float(act.blocks_bytes(GPT3, cfg, 1, 0))


def stats(t=1):
    """LayerNorm's fp32 mean and rstd per token, two norms: Table 2 leaves them out."""
    return 2 * 2 * 4 * S * B / t


def test_table_2_no_parallelism():
    assert block() == SBH * (34 + 5 * A * S / H) + stats()


def test_table_2_tensor_parallel():
    t = 8
    expected = SBH * (10 + 24 / t + 5 * A * S / (H * t)) + stats()
    assert block(tp=t, n_gpus=t) == pytest.approx(expected, rel=1e-12)


def test_table_2_sequence_parallel():
    t = 8
    expected = SBH / t * (34 + 5 * A * S / H) + stats(t)
    assert block(tp=t, n_gpus=t, sp=True) == pytest.approx(expected, rel=1e-12)


def test_table_2_selective_recompute():
    t = 8
    expected = SBH / t * 34 + stats(t)
    assert block(tp=t, n_gpus=t, sp=True, recompute="selective") == pytest.approx(
        expected, rel=1e-12)


def test_table_2_full_recompute():
    assert block(recompute="full") == 2 * SBH


def test_seed_003_llama_13b_table_2():
    """Seed note 003: s·b·h·(34 + 5as/h)·L for LLaMA-13B (s = 1024, h = 5120, a = 40, L = 40)
    = 14.45 GiB: right. Its '4,000,000 batch -> 57,812,500 GB' is the same number times
    4e6 sequences, not a training batch of 4M tokens."""
    s, h, a, layers = 1024, 5120, 40, 40
    value = s * h * (34 + 5 * a * s / h) * layers
    assert value / 2**30 == pytest.approx(14.45, abs=0.005)
    gpt_style = GPT3.replace(hidden_size=h, num_heads=a, num_kv_heads=a, head_dim=128,
                             ffn_hidden_size=4 * h, num_layers=layers)
    cfg = config(micro_batch=1, seq_len=s, flash_attention=False)
    ours = float(act.blocks_bytes(gpt_style, cfg, layers, 0))
    assert ours == value + layers * 2 * 2 * 4 * s


def test_cpu_device_keeps_dtype_sized_masks():
    """On the CPU a dropout mask is a bf16 noise tensor (2 bytes), on a GPU a bool (1): two
    residual masks (T·h) and the attention-probability mask (T·a·s) differ by one byte per
    element; LayerNorm statistics are bf16 on the CPU (2 per stat), fp32 on the GPU."""
    difference = block() - block(device="cpu")
    assert difference == -(2 * SBH + A * S * S * B) + 2 * 2 * (4 - 2) * S * B


def test_pipeline_in_flight():
    """Megatron-LM's warm-up (megatron/core/pipeline_parallel/schedules.py @d98e8a64): 1F1B
    rank r holds min(p - r, m) micro-batches; interleaved with v chunks of L/(p·v) layers,
    min(2·(p - r - 1) + (v - 1)·p + 1, m·v) chunks."""
    arch = catalog.model("llama-3.1-70b").arch
    cfg = config(n_gpus=8, pp=8, grad_accum=32, seq_len=4096)
    first = float(act.stage_saved_bytes(arch, cfg, 0))
    blocks = float(act.blocks_bytes(arch, cfg, 10, 0))
    rope, embedding = float(act.rope_bytes(arch, cfg)), float(act.embedding_bytes(arch, cfg))
    assert first == 8 * (blocks + embedding + rope)  # p micro-batches on the first stage
    few = config(n_gpus=8, pp=8, grad_accum=3, seq_len=4096)
    assert float(act.stage_saved_bytes(arch, few, 0)) == 3 * (blocks + embedding + rope)
    head = float(act.head_bytes(arch, cfg))
    assert float(act.stage_saved_bytes(arch, cfg, 1)) == blocks + rope + head  # 1 on the last
    p, v, m = 8, 5, 32
    interleaved = config(n_gpus=8, pp=p, vpp=v, grad_accum=m, seq_len=4096)
    chunks_first = min(2 * (p - 1) + (v - 1) * p + 1, m * v)
    chunks_last = min((v - 1) * p + 1, m * v)
    assert float(act.stage_saved_bytes(arch, interleaved, 0)) == pytest.approx(
        chunks_first / v * (blocks + embedding + rope), rel=1e-12)
    assert chunks_first / v == pytest.approx(8 * (1 + 7 / 40))  # Korthikanti et al. §4.2.3
    assert float(act.stage_saved_bytes(arch, interleaved, 1)) == pytest.approx(
        chunks_last / v * (blocks + rope) + head, rel=1e-12)
    full = config(n_gpus=8, pp=p, vpp=v, grad_accum=p, seq_len=4096)  # m = p: all of them
    assert float(act.stage_saved_bytes(arch, full, 0)) == pytest.approx(
        p * (blocks + embedding + rope), rel=1e-12)


def test_logits_at_128k_vocabulary():
    """fp32 log-probabilities 4·s·b·V (3.9 GiB at s = 8192 for Llama-3's 128,256 tokens);
    at the loss-gradient peak PyTorch's cross-entropy adds two more fp32 T·V tensors (measured
    with MemTracker, sweep/measure/step.py), Megatron-LM's a 16-bit one; a fused
    cross-entropy keeps 4 bytes per token."""
    arch = catalog.model("llama-3.1-8b").arch
    cfg = config(seq_len=8192)
    saved = 4 * 8192 * 128256 + 8 * 8192 + 4
    assert float(act.logits_saved_bytes(arch, cfg)) == saved
    assert float(act.logits_gradient_bytes(arch, cfg)) == 8 * 8192 * 128256
    megatron = config(seq_len=8192, framework="megatron")
    assert float(act.logits_gradient_bytes(arch, megatron)) == 2 * 8192 * 128256
    fused = config(seq_len=8192, fused_cross_entropy=True)
    assert float(act.stage_loss_bytes(arch, fused, 1)) == 4 * 8192 + 8 * 8192 + 4


def test_kv_cache():
    """Llama-3.1-70B: 2 (k, v) x 8 KV heads x 128 x 80 layers x 2 bytes = 320 KiB per token;
    Mistral-7B's 4096-token sliding window caps its cache; DeepSeek-V3's MLA caches
    (512 + 64) x 61 layers per token."""
    llama = catalog.model("llama-3.1-70b").arch
    cfg = config(mode="inference", micro_batch=4, seq_len=8192)
    assert float(inference.kv_cache_bytes(llama, cfg)) == 4 * 8192 * 320 * 1024
    fp8 = config(mode="inference", micro_batch=4, seq_len=8192, kv_cache_dtype="fp8", tp=8)
    assert float(inference.kv_cache_bytes(llama, fp8)) == 4 * 8192 * 320 * 1024 / 2 / 8
    mistral = catalog.model("mistral-7b").arch
    long = config(mode="inference", seq_len=32768)
    assert float(inference.kv_cache_bytes(mistral, long)) == 4096 * 2 * 8 * 128 * 32 * 2
    deepseek = catalog.model("deepseek-v3").arch
    assert float(inference.kv_cache_bytes(deepseek, config(mode="inference", seq_len=1))) == \
        (512 + 64) * 61 * 2


@pytest.fixture(scope="module")
def measured_rows():
    from sweep.measure.cases import run

    return run()


def test_formula_matches_measured_saved_tensors(measured_rows):
    """Every case within 5% of what PyTorch saves (the issue's bar); in fact exact."""
    assert len(measured_rows) >= 150
    for row in measured_rows:
        assert abs(row["error"]) < 0.05, row
    assert max(abs(row["error"]) for row in measured_rows) < 1e-9


def test_cases_cover_the_grid(measured_rows):
    seen = {(r["style"], r["dtype"], r["attention"], r["recompute"]) for r in measured_rows}
    assert ("llama", "bf16", "sdpa", "full") in seen and ("gpt2", "fp32", "explicit", "none") \
        in seen and ("mixtral", "bf16", "explicit", "selective") in seen
    assert {r["kv_heads"] for r in measured_rows if r["style"] == "llama"} >= {1, 2, 4, 8}
    # Sandwich and post norms, q/k norms, parallel blocks, GeGLU and squared ReLU.
    assert {r["style"] for r in measured_rows} >= {"gemma", "olmo2", "falcon", "falcon2",
                                                    "relu2"}


def megatron_layers_to_build(num_layers, pp, pp_rank, first=None, last=None, embedding=False,
                             loss=False):
    """Megatron-LM's `get_num_layers_to_build` (megatron/core/transformer/transformer_block.py
    @d98e8a64), its uneven and pipeline-split branches, without virtual stages."""
    if first is not None or last is not None:
        layers_to_distribute, stages_left = num_layers, pp
        if first is not None:
            layers_to_distribute -= first
            stages_left -= 1
        if last is not None:
            layers_to_distribute -= last
            stages_left -= 1
        per_rank = layers_to_distribute // stages_left if stages_left > 0 else 0
        if pp_rank == 0 and first is not None:
            per_rank = first
        if pp_rank == pp - 1 and last is not None:
            per_rank = last
        return per_rank
    per_rank = (num_layers + embedding + loss) // pp
    return per_rank - (embedding and pp_rank == 0) - (loss and pp_rank == pp - 1)


SPLITS = [
    dict(num_layers=61, pp=4, first=16),  # DeepSeek-V3: 16, 15, 15, 15
    dict(num_layers=12, pp=4, first=2, last=2),
    dict(num_layers=30, pp=8, last=2),
    dict(num_layers=31, pp=4, embedding=True),
    dict(num_layers=30, pp=4, embedding=True, loss=True),
]


@pytest.mark.parametrize("split", SPLITS)
def test_uneven_pipeline_stages_follow_megatron(split):
    from sweep.memory.shard import stage_layer_counts
    from sweep.model import Architecture

    arch = Architecture(hidden_size=64.0, num_layers=float(split["num_layers"]), num_heads=4.0,
                        num_kv_heads=4.0, head_dim=16.0, ffn_hidden_size=128.0, vocab_size=100.0)
    cfg = config(pp=split["pp"], n_gpus=split["pp"], first_stage_layers=split.get("first", 0),
                 last_stage_layers=split.get("last", 0),
                 embedding_in_split=split.get("embedding", False),
                 loss_in_split=split.get("loss", False))
    pp = split["pp"]
    args = dict(first=split.get("first"), last=split.get("last"),
                embedding=split.get("embedding", False), loss=split.get("loss", False))
    expected = [megatron_layers_to_build(split["num_layers"], pp, r, **args)
                for r in (0, 1, pp - 1)]
    assert [float(x) for x in stage_layer_counts(arch, cfg)] == expected


def test_the_most_loaded_stage_is_found():
    """12 blocks on pp = 4 with 2 on the first and last stage (a 1000-token vocabulary, so
    that the head and logits weigh little): the second stage's 4 blocks with 3 micro-batches in
    flight outweigh the first's 2 blocks with 4 and the last's 2 with 1."""
    from sweep.memory.shard import MIDDLE
    from sweep.memory.total import estimate

    arch = catalog.model("llama-3.1-8b").arch.replace(num_layers=12.0, vocab_size=1000.0)
    cfg = config(n_gpus=4, pp=4, grad_accum=8, first_stage_layers=2, last_stage_layers=2)
    est = estimate(arch, cfg, catalog.gpu("h100-sxm-80gb").hardware())
    assert int(est.stage) == MIDDLE and int(est.invalid) == 0
    bad = config(n_gpus=4, pp=4, first_stage_layers=3, last_stage_layers=2)  # 7 over 2 stages
    assert int(estimate(arch, bad, catalog.gpu("h100-sxm-80gb").hardware()).invalid) != 0


def test_mla_attention_saves_192_wide_q_and_k():
    """DeepSeek-V3 per token, tp = 1, bf16, SDPA: q and k 128 heads x (128 + 64), v and the
    output 128 x 128, the fp32 logsumexp per head; the q and kv latents (1536, 512) each saved
    by their RMSNorm (input and fp32 rstd) and by the up-projection (the norm's output)."""
    arch = catalog.model("deepseek-v3").arch
    cfg = config(seq_len=1, micro_batch=1)
    core = 2 * (2 * 128 * 192 + 2 * 128 * 128) + 4 * 128
    latents = 2 * 2 * (1536 + 512) + 4 * 2
    assert float(act.attention_core_bytes(arch, cfg, 1.0)) == core
    assert float(act.mla_latent_bytes(arch, cfg, 1.0)) == latents


def test_megatron_fused_swiglu_and_grouped_experts():
    """Megatron-LM's fused SwiGLU saves fc1's 2f output and fc2's f input (3 f-wide tensors, not
    PyTorch's 4); its experts save the fc1 input, that MLP and an fp32 probability per routed
    pair, Mixtral-style PyTorch the gathered input, expert and weighted outputs, the int64
    token and slot indices, the routing weight and the 4-tensor MLP."""
    llama = catalog.model("llama-3.1-8b").arch
    pytorch, megatron = config(), config(framework="megatron")
    f = 14336
    assert float(act.mlp_bytes(llama, pytorch, 1.0, f)) == 4 * 2 * f
    assert float(act.mlp_bytes(llama, megatron, 1.0, f)) == 3 * 2 * f
    mixtral = catalog.model("mixtral-8x7b").arch  # h 4096, f_e 14336, top-2 of 8
    h, k = 4096, 2
    difference = act.moe_block_bytes(mixtral, pytorch, 1.0) - act.moe_block_bytes(
        mixtral, megatron, 1.0)
    assert float(difference) == k * ((3 * 2 * h + 2 * 8 + 2 + 4 * 2 * f)
                                     - (2 * h + 4 + 3 * 2 * f))
