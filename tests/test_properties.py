"""Invariants over random configurations (hypothesis)."""

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
