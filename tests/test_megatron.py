"""Megatron-LM: `--compare` reproduces Megatron-LM's own estimate, and the `megatron` profile
follows the framework.

The reference functions below are `compute_weight_and_optimizer_memory`,
`compute_activation_memory` and `compute_activation_memory_without_sp` of
NVIDIA/Megatron-LM megatron/training/theoretical_memory_usage.py at commit
d98e8a64ddf34856e74b24714e3bedb2f5a39553 (core 0.20), copied verbatim but for their verbose
prints. `args` is built from our architecture the way Megatron's arguments would be.

The profile (sweep/memory/model_states.py `megatron`) differs from that estimate where the
estimate simplifies: it counts the stage's own parameters from the module shapes (biases,
learned position embeddings, the last stage's head and final norm), and its distributed
optimizer shards over the data- and context-parallel ranks together (`intra_dp_cp_group`,
megatron/core/distributed/distributed_data_parallel.py), n/(t·p), where the estimate divides
by `args.data_parallel_size` = n/(t·p·c).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import config, gpu_bytes
from megatron_reference import (
    compute_activation_memory,
    compute_activation_memory_without_sp,
    compute_weight_and_optimizer_memory,
)

from sweep import catalog
from sweep.compare import megatron_activation_bytes, megatron_weight_and_optimizer_bytes
from sweep.memory.model_states import megatron
from sweep.memory.shard import FIRST, LAST, stage_shard
from sweep.memory.total import framework_architecture


def megatron_args(name, *, n_gpus, tp=1, pp=1, vpp=1, cp=1, ep=1, etp=None, distributed=True,
                  mtp=0, seq_len=4096, micro_batch=1, sp=False, recompute="none"):
    a = catalog.model(name).arch
    multiple = 128 * tp  # _vocab_size_with_padding with make_vocab_size_divisible_by = 128
    moe = a.num_experts > 0
    return SimpleNamespace(
        hidden_size=a.hidden_size, num_layers=int(a.num_layers),
        num_attention_heads=a.num_heads, num_query_groups=a.num_kv_heads,
        group_query_attention=a.num_kv_heads != a.num_heads, kv_channels=a.head_dim,
        ffn_hidden_size=a.ffn_hidden_size, swiglu=bool(a.gated_mlp),
        num_experts=int(a.num_experts) if moe else None,
        moe_ffn_hidden_size=a.moe_ffn_hidden_size, moe_router_topk=int(a.num_experts_per_tok),
        moe_shared_expert_intermediate_size=(
            a.num_shared_experts * a.shared_expert_ffn_hidden_size or None),
        moe_layer_freq=[0 if i < a.first_k_dense_layers else 1 for i in range(int(a.num_layers))],
        moe_latent_size=None, moe_shared_expert_gate=False, mtp_num_layers=mtp or None,
        normalization="LayerNorm" if a.norm_bias else "RMSNorm",
        multi_latent_attention=bool(a.mla), q_lora_rank=a.q_lora_rank or None,
        kv_lora_rank=a.kv_lora_rank, qk_head_dim=a.qk_nope_head_dim,
        qk_pos_emb_head_dim=a.qk_rope_head_dim, v_head_dim=a.v_head_dim,
        padded_vocab_size=math.ceil(a.vocab_size / multiple) * multiple,
        untie_embeddings_and_output_weights=not a.tied_embeddings,
        pipeline_model_parallel_size=pp, tensor_model_parallel_size=tp,
        virtual_pipeline_model_parallel_size=vpp if vpp > 1 else None,
        expert_tensor_parallel_size=tp if etp is None else etp, expert_model_parallel_size=ep,
        world_size=n_gpus, data_parallel_size=n_gpus // (tp * pp * cp),
        use_distributed_optimizer=distributed, add_bias_linear=bool(a.linear_bias),
        seq_length=seq_len, micro_batch_size=micro_batch, sequence_parallel=sp,
        recompute_granularity=recompute if recompute != "none" else None,
    )


def _config(*, n_gpus, tp=1, pp=1, vpp=1, cp=1, ep=1, etp=None, distributed=True, mtp=0,
            seq_len=4096, micro_batch=1, sp=False, recompute="none", grad_accum=1):
    return config(n_gpus=n_gpus, tp=tp, pp=pp, vpp=vpp, cp=cp, ep=ep, etp=etp or 0,
                  framework="megatron", zero_stage=int(distributed), seq_len=seq_len,
                  micro_batch=micro_batch, sp=sp, recompute=recompute, grad_accum=grad_accum)


def _arch(name, mtp=0):
    arch = catalog.model(name).arch
    return arch.replace(mtp_layers=float(mtp)) if mtp else arch


DENSE = [
    ("gpt3-175b", dict(n_gpus=1024, tp=8, pp=16)),
    ("gpt3-1.3b", dict(n_gpus=8)),
    ("llama-2-7b", dict(n_gpus=8, tp=2)),
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=4)),
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=1, cp=2)),
    ("llama-3.1-405b", dict(n_gpus=2048, tp=8, pp=16)),
    ("qwen2.5-72b", dict(n_gpus=32, tp=4, pp=2)),
]
EXPERT_PARALLEL = [
    ("mixtral-8x7b", dict(n_gpus=64, tp=2, pp=4, ep=8)),
    ("mixtral-8x7b", dict(n_gpus=16, tp=2, pp=2, ep=4, etp=1)),
    ("mixtral-8x22b", dict(n_gpus=128, tp=4, pp=4, ep=8, etp=1)),
    ("deepseek-v3", dict(n_gpus=2048, tp=2, pp=16, ep=64, etp=1)),
    ("deepseek-v3", dict(n_gpus=2048, tp=2, pp=16, ep=64, etp=1, mtp=1)),
]


@pytest.mark.parametrize(("name", "degrees"), DENSE + EXPERT_PARALLEL)
@pytest.mark.parametrize("distributed", [False, True])
def test_compare_reproduces_megatron_weight_and_optimizer_memory(name, degrees, distributed):
    expected = compute_weight_and_optimizer_memory(
        megatron_args(name, distributed=distributed, **degrees))
    cfg = _config(distributed=distributed, **degrees)
    ours = float(megatron_weight_and_optimizer_bytes(_arch(name, degrees.get("mtp", 0)), cfg))
    assert ours == pytest.approx(expected, rel=1e-12)


ACTIVATIONS = [
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=4, sp=True, recompute="selective"), 8),
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=4, vpp=2, sp=True, recompute="selective"), 8),
    ("llama-3.1-70b", dict(n_gpus=64, tp=8, pp=4), 2),
    ("gpt3-1.3b", dict(n_gpus=8, seq_len=2048, micro_batch=4), 1),
    ("gpt3-175b", dict(n_gpus=1024, tp=8, pp=16, vpp=3), 64),
]


@pytest.mark.parametrize(("name", "degrees", "microbatches"), ACTIVATIONS)
def test_compare_reproduces_megatron_activation_memory(name, degrees, microbatches):
    """`report_theoretical_memory` picks compute_activation_memory with sequence parallelism
    and selective recompute, else compute_activation_memory_without_sp."""
    args = megatron_args(name, **degrees)
    report = compute_activation_memory if args.sequence_parallel and \
        args.recompute_granularity == "selective" else compute_activation_memory_without_sp
    expected = report(args, num_microbatches=microbatches)
    cfg = _config(grad_accum=microbatches, **degrees)
    assert float(megatron_activation_bytes(catalog.model(name).arch, cfg)) == \
        pytest.approx(expected, rel=1e-12)


def _profile(name, stage=FIRST, **degrees):
    cfg = _config(**degrees)
    arch = framework_architecture(_arch(name, degrees.pop("mtp", 0)), cfg)
    return megatron(stage_shard(arch, cfg, stage), cfg), stage_shard(arch, cfg, stage)


@pytest.mark.parametrize(("name", "degrees"), [d for d in DENSE if d[1].get("pp", 1) == 1])
def test_profile_is_the_estimate_on_a_single_stage_with_the_framework_s_sharding(name, degrees):
    """Without pipelining the stage holds every parameter, as the estimate counts them (no
    biases or learned positions in these models); the optimizer is sharded over n/(t·p)."""
    if catalog.model(name).arch.linear_bias or catalog.model(name).arch.learned_position_embeddings:
        pytest.skip("the estimate leaves out biases and learned positions")
    args = megatron_args(name, **degrees)
    args.data_parallel_size = degrees["n_gpus"] // degrees.get("tp", 1)  # dp·cp
    states, _ = _profile(name, **degrees)
    assert gpu_bytes(states) == pytest.approx(compute_weight_and_optimizer_memory(args),
                                              rel=1e-12)


def test_profile_counts_the_stage_s_own_parameters():
    """GPT-3 175B at t = 8, p = 16: 18 bytes per parameter of each stage as the module shapes
    give it: the first stage 6 blocks, the 50257-token vocabulary padded to 51200 (a multiple
    of 128·8), split by t, and the 2048 learned positions (replicated); the last 6 blocks and
    the final LayerNorm and the head, tied to the embedding but with pp > 1 a copy of its
    weight kept on the last stage (`share_embeddings_and_output_weights`)."""
    h, f, layers, t = 12288, 4 * 12288, 6, 8
    # q, k, v, o and the MLP split by t with their biases (column ones split, row ones
    # replicated: o and down), two LayerNorms with biases.
    block = (4 * h * h + 2 * h * f + 3 * h + f) / t + 2 * h + 2 * 2 * h
    first, _ = _profile("gpt3-175b", FIRST, n_gpus=1024, tp=8, pp=16, distributed=False)
    last, _ = _profile("gpt3-175b", LAST, n_gpus=1024, tp=8, pp=16, distributed=False)
    assert gpu_bytes(first) == pytest.approx(18 * (layers * block + 51200 * h / t + 2048 * h))
    assert gpu_bytes(last) == pytest.approx(18 * (layers * block + 2 * h + 51200 * h / t))


@pytest.mark.parametrize("name", ["llama-3.1-70b", "mixtral-8x7b"])
def test_more_context_parallelism_never_costs_model_state_memory(name):
    """At fixed n_gpus and tp, cp takes ranks from dp but the distributed optimizer keeps
    sharding over dp·cp: model states stay the same (the issue's 61.6 -> 147.9 GiB for cp 1 -> 8
    was the source estimate's n/(t·p·c))."""
    ep = 8 if name.startswith("mixtral") else 1
    states = [gpu_bytes(_profile(name, n_gpus=64, tp=8, cp=cp, ep=ep, etp=1)[0])
              for cp in (1, 2, 4, 8)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(states, states[1:], strict=False))
    assert states[-1] == pytest.approx(states[0], rel=1e-12)


def test_bytes_per_parameter():
    """18 bytes per parameter without the distributed optimizer, 6 + 12/d with it."""
    ours18 = gpu_bytes(_profile("llama-2-7b", n_gpus=16, tp=2, distributed=False)[0])
    ours_do = gpu_bytes(_profile("llama-2-7b", n_gpus=16, tp=2, distributed=True)[0])
    assert ours_do / ours18 == pytest.approx((6 + 12 / 8) / 18, rel=1e-12)
    assert float(np.ceil(32000 / 256) * 256) == 32000  # 32000 is already a multiple of 256
