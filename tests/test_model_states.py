"""Model-state features checked against hand-worked numbers on small and catalog models."""

import pytest
from conftest import all_gradients, all_weights, config, gpu_bytes

from sweep import catalog
from sweep.memory.model_states import fsdp, generic
from sweep.memory.shard import FIRST, stage_shard
from sweep.model import Architecture, total_params

TINY = Architecture(hidden_size=64.0, num_layers=2.0, num_heads=4.0, num_kv_heads=4.0,
                    head_dim=16.0, ffn_hidden_size=128.0, vocab_size=100.0)
# Per block: q, k, v, o 4·64·64 = 16384; gate, up, down 3·64·128 = 24576; 2 RMSNorms 128.
TINY_BLOCK = 16384 + 24576 + 128
TINY_TOTAL = 2 * TINY_BLOCK + 2 * 100 * 64 + 64  # + embedding, head, final norm


def states_of(arch, profile=generic, **values):
    cfg = config(**values)
    return profile(stage_shard(arch, cfg, FIRST), cfg), stage_shard(arch, cfg, FIRST)


def test_tiny_total():
    assert float(total_params(TINY)) == TINY_TOTAL == 95_040


def test_adafactor_counts_factored_second_moment_from_shapes():
    """Row + column vector per matrix: q, k, v, o 4·(64 + 64), gate and up 2·(64 + 128), down
    128 + 64, norms 2·64, per block 1216; embedding and head 100 + 64 each; final norm 64:
    2·1216 + 2·164 + 64 = 2824 fp32 elements (Shazeer & Stern 2018, beta1 = None)."""
    s, _ = states_of(TINY, n_gpus=1, precision="fp32", optimizer="adafactor")
    assert float(s.optimizer_states) == 4 * 2824


@pytest.mark.parametrize(("optimizer", "state_bytes"), [
    ("adamw", 8), ("sgd", 0), ("sgd-momentum", 4), ("lion", 4), ("adam8bit", 2 * (1 + 4 / 256)),
])
def test_optimizer_state_bytes(optimizer, state_bytes):
    s, _ = states_of(TINY, n_gpus=1, optimizer=optimizer)
    assert float(s.optimizer_states) == pytest.approx(state_bytes * TINY_TOTAL)


def test_pure_bf16_keeps_bf16_states_and_no_master():
    s, _ = states_of(TINY, n_gpus=1, precision="bf16")
    assert (float(all_weights(s)), float(s.master_weights), float(s.optimizer_states)) == (
        2 * TINY_TOTAL, 0, 4 * TINY_TOTAL)


def test_fp8_stores_block_linears_in_one_byte():
    s, _ = states_of(TINY, n_gpus=1, precision="fp8-mixed")
    linear = 2 * (16384 + 24576)
    assert float(all_weights(s)) == linear * 1 + (TINY_TOTAL - linear) * 2


def test_lora_adapters():
    """LoRA r = 8 on q and v: r·(64 + 64) each, two blocks: 4096 trainable parameters; the base
    weights frozen in bf16 (no gradients, no states)."""
    s, shard = states_of(TINY, n_gpus=1, finetune="lora", lora_rank=8, lora_targets="q_proj,v_proj")
    adapters = 2 * 2 * 8 * (64 + 64)
    assert float(shard.trainable_dense) == adapters == 4096
    assert float(all_weights(s)) == 2 * (TINY_TOTAL + adapters)
    assert float(all_gradients(s)) == 2 * adapters
    assert float(s.master_weights + s.optimizer_states) == 12 * adapters


def test_frozen_layers():
    """Freezing the embedding and the first 16 of Llama-2-7B's 32 blocks."""
    arch = catalog.model("llama-2-7b").arch
    s, shard = states_of(arch, n_gpus=1, frozen_layers=16)
    block = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    trainable = 6_738_415_616 - 16 * block - 32000 * 4096
    assert float(shard.trainable_dense) == trainable
    assert float(all_gradients(s)) == 2 * trainable and float(all_weights(s)) == 2 * 6_738_415_616


def test_offload_optimizer_moves_states_to_host():
    """ZeRO-2 + optimizer offload on 8 GPUs of one node: GPU keeps 2P + 2P/8, the host holds
    the fp32 master and Adam states of all 8 shards: 12P."""
    p = 6_738_415_616
    s, _ = states_of(catalog.model("llama-2-7b").arch, n_gpus=8, zero_stage=2,
                     offload="optimizer")
    assert gpu_bytes(s) == 2 * p + 2 * p / 8
    assert float(s.host_bytes_per_node) == 12 * p


def test_nvme_offload_puts_partitions_on_nvme_through_pinned_host_buffers():
    """ZeRO-Infinity on one GPU: every partition (2P bf16 params, 2P grads, 12P master and
    Adam) on NVMe; host RAM holds DeepSpeed's default pinned swap buffers (DeepSpeed
    runtime/zero/offload_config.py, swap_tensor/optimizer_utils.py @edaa7221): 4 fp32 buffers of
    the optimizer sub-group (min(1e9, P) elements), 5 bf16 parameter buffers of 1e8 elements
    and up to 1e9 bf16 parameters kept in host RAM (issue #3000: NVMe needs pinned memory)."""
    p = TINY_TOTAL
    s, _ = states_of(TINY, n_gpus=1, zero_stage=3, offload="nvme")
    assert float(s.nvme_bytes_per_node) == 16 * p
    assert float(s.host_bytes_per_node) == 4 * 4 * p + 2 * (5 * 1e8 + p)


TINY_ROOT = 2 * 100 * 64 + 64  # embedding, head, final norm: FSDP2's root unit


def test_fsdp_full_shard():
    """FSDP2 FULL_SHARD on 8 GPUs (torch 2.13 _fsdp_state.py, _fsdp_param_group.py; measured
    in sweep/measure/step.py): fp32 sharded parameters 4P/8, Adam 8P/8; from the forward pass
    to the start of backward the root stays gathered in bf16 and one block is being gathered,
    2·R + 2·B; the fp32 gradient shards 4P/8 are made in backward, whose end holds the root,
    two gathered units, one unit's bf16 gradient and its fp32 reduce-scatter copy, or the
    root's own gradient and copy (its parameters resharded, before its own gradient shard)."""
    p = TINY_TOTAL
    s, _ = states_of(TINY, fsdp, n_gpus=8, zero_stage=3, framework="fsdp")
    assert float(s.weights) == 0  # in mixed precision the shards are the fp32 master
    assert float(s.master_weights) == 4 * p / 8
    assert float(s.gathered) == 2 * TINY_ROOT + 2 * TINY_BLOCK
    assert float(s.transient_gradients) == 4 * p / 8
    assert float(s.backward_transient) == max(
        (2 + 4) * TINY_ROOT - 4 * TINY_ROOT / 8,
        2 * TINY_ROOT + 2 * 2 * TINY_BLOCK + (2 + 4) * TINY_BLOCK)
    assert float(s.optimizer_states) == 8 * p / 8


def test_fsdp_shard_grad_op_and_ddp():
    p = TINY_TOTAL
    s2, _ = states_of(TINY, fsdp, n_gpus=8, zero_stage=2, framework="fsdp")
    assert float(s2.gathered) == 2 * p  # every unit stays gathered from forward to backward
    s0, _ = states_of(TINY, fsdp, n_gpus=8, zero_stage=0, framework="fsdp")
    assert gpu_bytes(s0) == (2 + 4 + 4 + 8) * p  # bf16 copies + fp32 params, grads, Adam
    assert float(s0.backward_transient) == 4 * TINY_BLOCK  # replicate's all-reduce buffer


def test_expert_parallel_sharding():
    """Mixtral-8x7B, ep = 8 on 8 GPUs, ZeRO-1: each GPU holds one expert per layer; experts are
    not replicated, so their optimizer states are not sharded (n/(t·p·x) = 1); dense ones are."""
    arch = catalog.model("mixtral-8x7b").arch
    s, shard = states_of(arch, n_gpus=8, ep=8, zero_stage=1)
    expert = 32 * 3 * 4096 * 14336
    assert float(shard.base_expert) == expert
    dense = 46_702_792_704 - 8 * expert
    assert float(shard.base_dense) == dense
    assert float(s.optimizer_states) == 8 * expert + 8 * dense / 8


def test_pipeline_stage_with_dense_prefix():
    """DeepSeek-V3 (3 dense blocks, then MoE) on pp = 61: the first stage holds one dense
    block and the embedding, the last one MoE block, the final norm and the head."""
    arch = catalog.model("deepseek-v3").arch
    cfg = config(n_gpus=61, pp=61)
    first, last = stage_shard(arch, cfg, 0), stage_shard(arch, cfg, 1)
    assert float(first.base_expert) == 0
    assert float(last.base_expert) == 256 * 3 * 7168 * 2048
    # MLA: q_a 7168·1536, q_b 1536·128·192, kv_a 7168·576, kv_b 512·128·256, o 16384·7168,
    # q_a and kv_a norms 1536 + 512; dense MLP 3·7168·18432; two block norms 2·7168.
    mla = 11_010_048 + 37_748_736 + 4_128_768 + 16_777_216 + 117_440_512 + 2048
    block = mla + 396_361_728 + 14_336
    assert float(first.base_dense) == block + 129280 * 7168
