"""Invariants over random configurations (hypothesis)."""

import jax
import numpy as np
from conftest import config
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep import catalog
from sweep.memory.shard import FIRST, LAST
from sweep.memory.total import BACKWARD, estimate, stage_memory

MODELS = ["llama-3.1-8b", "mixtral-8x7b", "gpt3-1.3b", "qwen2.5-7b"]
H100 = catalog.gpu("h100-sxm-80gb").hardware()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from([1, 2, 4]), st.sampled_from([1, 2]),
       st.sampled_from(["none", "selective", "full"]), st.booleans(),
       st.sampled_from([1024, 2048, 4096]), st.sampled_from([1, 2, 4]))
def test_activations_grow_with_batch_and_context(name, tp, pp, recompute, flash, seq, batch):
    arch = catalog.model(name).arch
    base = dict(n_gpus=8, tp=tp, pp=pp, recompute=recompute, flash_attention=flash)

    def activations(cfg):
        """Activations at the start of backward, on each pipeline stage."""
        return [float(stage_memory(arch, cfg, H100, stage).phases[BACKWARD]["activations"])
                for stage in (FIRST, LAST)]

    small = config(**base, seq_len=seq, micro_batch=batch)
    longer = config(**base, seq_len=2 * seq, micro_batch=batch)
    bigger = config(**base, seq_len=seq, micro_batch=2 * batch)
    for cfg in (longer, bigger):
        assert all(a > b for a, b in zip(activations(cfg), activations(small), strict=True))
        assert float(estimate(arch, cfg, H100).per_gpu_total_bytes) >= \
            float(estimate(arch, small, H100).per_gpu_total_bytes)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from(["generic", "deepspeed", "fsdp"]),
       st.sampled_from([8, 16, 32, 64]))
def test_zero3_model_states_shrink_with_more_gpus(name, framework, n_gpus):
    arch = catalog.model(name).arch

    def states(n):
        est = estimate(arch, config(n_gpus=n, zero_stage=3, framework=framework), H100)
        return float(est.master_weights + est.optimizer_states)

    assert states(2 * n_gpus) < states(n_gpus)
    assert np.isclose(states(2 * n_gpus) * 2, states(n_gpus), rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([*MODELS, "deepseek-v3"]),
       st.sampled_from(["megatron", "deepspeed", "fsdp", "generic"]), st.sampled_from([0, 1, 2, 3]),
       st.sampled_from(["full", "lora", "qlora"]), st.sampled_from(["none", "optimizer"]),
       st.sampled_from(["none", "selective", "full"]), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 4]), st.sampled_from([2048, 8192]), st.sampled_from([0, 2]))
def test_with_one_pipeline_stage_the_first_stage_is_the_last(
        name, framework, zero, finetune, offload, recompute, tp, grad_accum, seq, frozen):
    """pp = 1: the first and the last stage are one stage, every component alike; evaluated
    once (pp a constant, `shard.end_stages`) the memory and the step time are those of
    evaluating both stages (pp an array, which could differ per configuration)."""
    from sweep.timing.step import step_time

    arch = catalog.model(name).arch
    cfg = config(n_gpus=8, tp=tp, pp=1, zero_stage=zero, framework=framework,
                 finetune=finetune, offload=offload, recompute=recompute,
                 grad_accum=grad_accum, seq_len=seq, frozen_layers=frozen)
    first, last = stage_memory(arch, cfg, H100, FIRST), stage_memory(arch, cfg, H100, LAST)
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(last),
                    strict=True):
        assert np.array_equal(a, b)
    as_array = cfg.replace(pp=np.array([1.0]))
    for once, both in ((estimate(arch, cfg, H100), estimate(arch, as_array, H100)),
                       (step_time(arch, cfg, H100), step_time(arch, as_array, H100))):
        for a, b in zip(jax.tree_util.tree_leaves(once), jax.tree_util.tree_leaves(both),
                        strict=True):
            assert np.array_equal(np.broadcast_to(a, np.shape(b)), b)
