"""The framework behaviours the estimate encodes, each on the case that exposed it."""

import pytest
from conftest import config

from sweep import catalog
from sweep.memory.model_states import fsdp
from sweep.memory.shard import FIRST, stage_shard
from sweep.memory.total import estimate, stage_memory
from sweep.validity import BIT

H100 = catalog.gpu("h100-sxm-80gb").hardware()
GIB = 2**30


def test_deepspeed_host_ram_counts_every_shard_on_the_node():
    """A 187B Llama-3-shaped model at tp 4, pp 2 on one 8-GPU node with ZeRO-2 and the optimizer
    offloaded: the node holds all 8 shards' fp32 gradients, master weights and Adam states,
    16 bytes per parameter of the whole model (times DeepSpeed's 1.5 buffer factor), not one
    shard's."""
    from sweep.families import llama3

    arch = llama3(187e9)
    cfg = config(n_gpus=8, tp=4, pp=2, zero_stage=2, framework="deepspeed", offload="optimizer")
    est = estimate(arch, cfg, H100)
    params = float(est.params_total)
    assert float(est.host_bytes_per_node) >= 16 * params * 1.5 * 0.99
    assert not bool(est.fits)  # 4.5 TB of host RAM; a DGX H100 node has 2 TiB


def test_nvme_offload_is_bounded_by_the_node_s_nvme_and_pins_host_ram():
    """Llama-3.1-405B on one H100 with ZeRO-Infinity, recompute and a short context: its
    partitions, 18 bytes per parameter (7.3 TB), fit the DGX H100's 8 x 3.84 TB of NVMe; on a
    node with 4 TB of NVMe they do not. The swap buffers (4 fp32 buffers of 1e9 optimizer
    elements, 5 + 1e9 bf16 parameter buffers) are pinned host RAM, 19 GB."""
    import dataclasses

    arch = catalog.model("llama-3.1-405b").arch
    cfg = config(n_gpus=1, gpus_per_node=8, zero_stage=3, framework="deepspeed", offload="nvme",
                 recompute="full", seq_len=1024, fused_cross_entropy=True)
    est = estimate(arch, cfg, H100)
    assert float(est.nvme_bytes_per_node) == pytest.approx(18 * float(est.params_total))
    assert float(est.host_bytes_per_node) == pytest.approx(4 * 4 * 1e9 + 2 * (5e8 + 1e9))
    assert bool(est.fits)
    small = dataclasses.replace(H100, nvme_bytes_per_node=4e12)
    assert not bool(estimate(arch, cfg, small).fits)


def test_an_offloaded_optimizer_steps_on_the_cpu():
    """Llama-3.1-70B on 8 GPUs, ZeRO-3 with the optimizer offloaded: no state-sized transient
    is left on the GPU (the issue's 23.5 GiB of buffers); what the step phase holds is the end
    of backward's two gathered blocks and a block's gradient (3 x 2 x 855,654,400 bytes) and
    DeepSpeed-style reduce bucket (2 x 5e8)."""
    from sweep.memory.runtime import optimizer_step_bytes

    arch = catalog.model("llama-3.1-70b").arch
    cfg = config(n_gpus=8, zero_stage=3, offload="optimizer", recompute="full")
    assert float(optimizer_step_bytes(stage_shard(arch, cfg, FIRST), cfg)) == 0
    step = stage_memory(arch, cfg, H100, FIRST).phases[1]
    assert float(step["buffers"]) == pytest.approx(3 * 2 * 855_654_400 + 2 * 5e8
                                                   + H100.blas_workspace_bytes)


def test_fsdp_keeps_the_frozen_4bit_base():
    """Llama-3.1-70B QLoRA on 2 RTX 4090s under FSDP2: each GPU holds half of the NF4 base
    (0.5 + 1/64 + 4/16384 bytes per block-linear weight), about 17.5 GiB, not nothing."""
    arch = catalog.model("llama-3.1-70b").arch
    cfg = config(n_gpus=2, zero_stage=3, framework="fsdp", finetune="qlora")
    shard = stage_shard(arch, cfg, FIRST)
    states = fsdp(shard, cfg)
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)
    assert float(states.weights) >= float(shard.block_linear) * nf4 / 2


@pytest.mark.parametrize(("values", "reason"), [
    (dict(n_gpus=64, tp=8, pp=4, zero_stage=3, framework="deepspeed"), "pipeline_zero"),
    (dict(n_gpus=64, tp=8, pp=4, vpp=2, grad_accum=3, framework="megatron", zero_stage=1),
     "interleaved_microbatches"),
])
def test_combinations_the_frameworks_refuse(values, reason):
    arch = catalog.model("llama-3.1-70b").arch
    assert int(estimate(arch, config(**values), H100).invalid) & BIT[reason]


def test_only_the_generic_accounting_runs_on_a_tpu():
    arch = catalog.model("llama-3.1-8b").arch
    tpu = catalog.gpu("tpu-v5p").hardware()
    for framework in ("deepspeed", "megatron", "fsdp"):
        cfg = config(n_gpus=8, framework=framework, zero_stage=3 if framework != "megatron"
                     else 1)
        assert int(estimate(arch, cfg, tpu).invalid) & BIT["platform"], framework
    assert not int(estimate(arch, config(n_gpus=8, zero_stage=3), tpu).invalid) & BIT["platform"]


def test_frozen_leading_blocks_save_nothing():
    """Llama-3.1-8B with 31 of 32 blocks frozen saves the activations of one block, not 32."""
    arch = catalog.model("llama-3.1-8b").arch
    full = stage_memory(arch, config(n_gpus=1), H100, FIRST).phases[0]["activations"]
    frozen = stage_memory(arch, config(n_gpus=1, frozen_layers=31), H100,
                          FIRST).phases[0]["activations"]
    assert float(frozen) < float(full) / 16
