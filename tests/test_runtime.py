"""Runtime terms: communication buffers, the optimizer step's transient, overhead, and the
inference-mode total."""

import pytest
from conftest import config

from sweep import catalog
from sweep.memory import runtime
from sweep.memory.shard import stage_shard
from sweep.memory.total import GPU_COMPONENTS, estimate

LLAMA_8B = catalog.model("llama-3.1-8b").arch
P_8B = 8_030_261_248
H100 = catalog.gpu("h100-sxm-80gb").hardware()


def buffers(**values):
    cfg = config(**values)
    return float(runtime.communication_bytes(stage_shard(LLAMA_8B, cfg, 0), cfg))


def test_ddp_buckets_copy_the_gradients():
    assert buffers(n_gpus=8) == 2 * P_8B  # bf16 gradients
    assert buffers(n_gpus=1) == 0  # no data parallelism, no DDP
    assert buffers(n_gpus=8, framework="fsdp") == 4 * P_8B  # autocast: fp32 gradients


def test_deepspeed_buckets():
    """ZeRO-2: 5e8-element reduce and all-gather buckets, 2 bytes each; ZeRO-3: the reduce
    bucket and up to 1e9 live parameters, less the largest module (the 128256 x 4096
    embedding) that the weights already hold."""
    assert buffers(n_gpus=8, zero_stage=2, framework="deepspeed") == 2 * 5e8 + 2 * 5e8
    assert buffers(n_gpus=8, zero_stage=3, framework="deepspeed") == \
        2 * 5e8 + 2 * (1e9 - 128256 * 4096)


def test_megatron_and_fsdp_buffers():
    assert buffers(n_gpus=8, zero_stage=1, framework="megatron") == 0
    block = 4 * 4096 * (4096 + 1024) // 2 + 3 * 4096 * 14336 + 2 * 4096
    # q 4096², k and v 4096·1024 each, o 4096²; SwiGLU; two norms: the fp32 reduce copy.
    assert buffers(n_gpus=8, zero_stage=3, framework="fsdp") == 4 * block


def test_optimizer_step_transient():
    cfg = config(n_gpus=8, zero_stage=1)
    shard = stage_shard(LLAMA_8B, cfg, 0)
    assert float(runtime.optimizer_step_bytes(shard, cfg)) == 4 * P_8B / 8
    fused = config(n_gpus=8, zero_stage=1, framework="deepspeed")
    assert float(runtime.optimizer_step_bytes(stage_shard(LLAMA_8B, fused, 0), fused)) == 0


def test_overhead_and_total():
    """total = allocated + runtime overhead + allocated·f/(1 - f), f = 0.15 by default."""
    est = estimate(LLAMA_8B, config(n_gpus=8, zero_stage=3, recompute="full"), H100)
    allocated = sum(float(getattr(est, k)) for k in GPU_COMPONENTS if k != "overhead")
    assert float(est.overhead) == pytest.approx(1_677_721_600 + allocated * 0.15 / 0.85)
    assert float(est.per_gpu_total_bytes) == pytest.approx(allocated + float(est.overhead))


def test_inference_mode():
    """Serving Llama-3.1-8B: bf16 weights, KV cache 2·8·128·32·2 = 128 KiB per token, no
    gradients, optimizer or master weights."""
    est = estimate(LLAMA_8B, config(n_gpus=1, mode="inference", micro_batch=16, seq_len=8192),
                   H100)
    assert float(est.weights) == 2 * P_8B
    assert float(est.kv_cache) == 16 * 8192 * 128 * 1024
    assert float(est.gradients + est.master_weights + est.optimizer_states + est.buffers) == 0
    assert float(est.logits) == 4 * 16 * 128256
    assert bool(est.fits)
    too_many = estimate(LLAMA_8B, config(n_gpus=1, mode="inference", micro_batch=64,
                                         seq_len=8192), H100)
    assert not bool(too_many.fits)  # 64 GiB of cache on top of 15 GiB of weights


def test_inference_rejects_training_only_options():
    est = estimate(LLAMA_8B, config(n_gpus=8, mode="inference", zero_stage=3), H100)
    assert int(est.invalid) != 0
