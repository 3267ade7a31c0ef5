"""Runtime terms: communication buffers, the optimizer step's transient, overhead, and the
inference-mode total."""

import pytest
from conftest import config

from sweep import catalog
from sweep.memory import runtime
from sweep.memory.model_states import PROFILES
from sweep.memory.shard import stage_shard
from sweep.memory.total import GPU_COMPONENTS, estimate

LLAMA_8B = catalog.model("llama-3.1-8b").arch
P_8B = 8_030_261_248
H100 = catalog.gpu("h100-sxm-80gb").hardware()


def buffers(**values):
    cfg = config(**values)
    return float(runtime.communication_bytes(stage_shard(LLAMA_8B, cfg, 0), cfg))


BLOCK_8B = 4 * 4096 * (4096 + 1024) // 2 + 3 * 4096 * 14336 + 2 * 4096  # q, k, v, o, MLP, norms


def states(**values):
    cfg = config(**values)
    return PROFILES[int(cfg.framework)](stage_shard(LLAMA_8B, cfg, 0), cfg)


def test_ddp_buckets_copy_the_gradients():
    assert buffers(n_gpus=8) == 2 * P_8B  # bf16 gradients
    assert buffers(n_gpus=1) == 0  # no data parallelism, no DDP
    # FSDP2's replicate all-reduces one unit at a time through an fp32 buffer, in backward.
    assert buffers(n_gpus=8, framework="fsdp") == 0
    assert float(states(n_gpus=8, framework="fsdp").backward_transient) == 4 * BLOCK_8B


def test_deepspeed_buckets():
    """ZeRO-2: 5e8-element reduce and all-gather buckets, 2 bytes each; ZeRO-3: the reduce
    bucket; its gathered parameters, the largest module (the 128256 x 4096 embedding) and up
    to 1e9 live parameters in all, exist from the forward pass to the end of backward."""
    assert buffers(n_gpus=8, zero_stage=2, framework="deepspeed") == 2 * 5e8 + 2 * 5e8
    assert buffers(n_gpus=8, zero_stage=3, framework="deepspeed") == 2 * 5e8
    assert float(states(n_gpus=8, zero_stage=3, framework="deepspeed").gathered) == 2 * 1e9


def test_megatron_and_fsdp_buffers():
    """Megatron's buckets are views into its gradient buffer; FSDP2's reduce-scatter input (the
    fp32 copy of one unit's gradients, 4·B) exists at the end of backward with the unit's bf16
    gradient (2·B), two gathered bf16 units (2·2·B) and the root (2·(2·V·h + h)); or, at the
    root's own reduce, its bf16 gradient and fp32 copy, 6·R, before its fp32 shard 4·R/8."""
    assert buffers(n_gpus=8, zero_stage=1, framework="megatron") == 0
    assert buffers(n_gpus=8, zero_stage=3, framework="fsdp") == 0
    root = 2 * 128256 * 4096 + 4096
    assert float(states(n_gpus=8, zero_stage=3, framework="fsdp").backward_transient) == \
        max((2 + 4) * root - 4 * root / 8, 2 * root + 2 * 2 * BLOCK_8B + (2 + 4) * BLOCK_8B)


def test_optimizer_step_transient():
    cfg = config(n_gpus=8, zero_stage=1)
    shard = stage_shard(LLAMA_8B, cfg, 0)
    assert float(runtime.optimizer_step_bytes(shard, cfg)) == 4 * P_8B / 8
    fused = config(n_gpus=8, zero_stage=1, framework="deepspeed")
    assert float(runtime.optimizer_step_bytes(stage_shard(LLAMA_8B, fused, 0), fused)) == 0


def test_overhead_and_total():
    """total = allocated + runtime overhead + allocated·f/(1 - f), f = 0.15 by default; the
    H100's runtime overhead outside the allocator is 512 MiB of CUDA context + 1024 MiB of NCCL
    (its 64 MiB of cuBLAS workspaces are allocated bytes, in buffers)."""
    est = estimate(LLAMA_8B, config(n_gpus=8, zero_stage=3, recompute="full"), H100)
    allocated = sum(float(getattr(est, k)) for k in GPU_COMPONENTS if k != "overhead")
    assert float(est.overhead) == pytest.approx((512 + 1024) * 2**20 + allocated * 0.15 / 0.85)
    assert float(est.buffers) >= 64 * 2**20
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


@pytest.mark.parametrize("model, gpu, values", [
    ("llama-3.1-8b", "h100-sxm-80gb", dict(n_gpus=8, zero_stage=1)),
    ("llama-3.1-8b", "a100-80gb", dict(n_gpus=16, pp=4, grad_accum=8, framework="megatron")),
    ("mixtral-8x7b", "b200", dict(n_gpus=64, ep=8, tp=2, framework="megatron", grad_accum=4)),
    ("llama-3.1-8b", "h100-sxm-80gb", dict(n_gpus=1, mode="inference", micro_batch=8)),
])
def test_fit_terms_move_the_workspaces_to_the_allocatable_side(model, gpu, values):
    """The sweep's fit terms leave out the library workspaces K, which training holds in both
    peaks of every stage, and take them off A = (C - O)(1 - φ) instead: their margin is the
    estimate's largest allocated bytes less A. K written anew from the catalog: cuBLAS's 64
    MiB on Hopper/Blackwell (16.25 MiB on the A100), and with Megatron Transformer Engine's
    32 MiB (4 MiB), five times over with routed experts; none when serving."""
    from sweep.memory.shard import stage_values
    from sweep.memory.total import every_stage, fit_terms

    arch, hw, cfg = catalog.model(model).arch, catalog.gpu(gpu).hardware(), config(**values)
    mib = 2**20
    blas, te = {"a100-80gb": (16.25 * mib, 4 * mib)}.get(gpu, (64 * mib, 32 * mib))
    megatron = values.get("framework") == "megatron"
    workspace = 0.0 if values.get("mode") == "inference" else (
        blas + megatron * te * (5 if model.startswith("mixtral") else 1))
    allocatable = (hw.memory_bytes * hw.usable_fraction - hw.runtime_overhead_bytes) * 0.85
    terms = fit_terms(arch, cfg, hw)
    parts = [p.parts(cfg.grad_accum) for p in stage_values(terms.stages, terms.stage_axis)]
    margin = max(float(max(p.backward + p.dynamic, p.step)) for p in parts)
    margin -= float(terms.allocatable_bytes)
    allocated = max(float(s.allocated) for s in every_stage(arch, cfg, hw))
    assert float(terms.allocatable_bytes) == pytest.approx(allocatable - workspace, rel=1e-12)
    assert margin == pytest.approx(allocated - allocatable, rel=1e-12)
