"""One implementation, three evaluators: NumPy, jit in float64, jit(vmap) in float32."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import config

from sweep import catalog
from sweep.config import TrainConfig
from sweep.memory.total import GPU_COMPONENTS, estimate

CONFIGS = [
    dict(n_gpus=64, zero_stage=3),
    dict(n_gpus=64, tp=8, pp=2, zero_stage=1, framework="megatron"),
    dict(n_gpus=16, zero_stage=3, framework="deepspeed", offload="optimizer+params"),
    dict(n_gpus=16, zero_stage=2, framework="fsdp", precision="bf16"),
    dict(n_gpus=8, finetune="qlora", optimizer="adam8bit"),
    dict(n_gpus=8, zero_stage=1, optimizer="adafactor", frozen_layers=10),
    dict(n_gpus=32, tp=4, sp=True, cp=2, pp=2, grad_accum=8, recompute="full",
         recompute_layers=3, seq_len=32768),
    dict(n_gpus=8, flash_attention=False, recompute="selective", micro_batch=4),
    dict(n_gpus=8, tp=8, mode="inference", micro_batch=32, kv_cache_dtype="fp8"),
]
MODELS = ["llama-3.1-70b", "mixtral-8x22b", "deepseek-v3", "gpt3-175b"]


def _numpy(tree):
    return jax.tree_util.tree_map(np.float64, tree)


def _f32(tree):
    return jax.tree_util.tree_map(jnp.float32, tree)


@pytest.mark.parametrize(("name", "values"), list(itertools.product(MODELS, CONFIGS)))
def test_numpy_equals_jit(name, values):
    arch = catalog.model(name).arch
    hw = catalog.gpu("h100-sxm-80gb").hardware()
    cfg = config(**values)
    reference = estimate(_numpy(arch), cfg, _numpy(hw))
    with jax.enable_x64(True):
        exact = jax.jit(estimate)(_numpy(arch), cfg, _numpy(hw))
        exact = jax.tree_util.tree_map(np.asarray, exact)
    single = jax.jit(estimate)(_f32(arch), _f32(cfg), _f32(hw))
    for k in (*GPU_COMPONENTS, "per_gpu_total_bytes", "host_bytes_per_node", "params_total"):
        # XLA may turn a division by a constant into a product by its reciprocal: one ulp.
        assert float(getattr(exact, k)) == pytest.approx(float(getattr(reference, k)),
                                                          rel=1e-15, abs=0), k
        assert float(getattr(single, k)) == pytest.approx(float(getattr(reference, k)), rel=2e-6)
    assert int(exact.invalid) == int(reference.invalid) == int(single.invalid)


def test_vmap_over_axes_equals_loop():
    """Nested vmap over n_gpus x zero_stage gives the per-configuration values."""
    arch = _f32(catalog.model("llama-3.1-8b").arch)
    hw = _f32(catalog.gpu("a100-40gb").hardware())
    base = _f32(TrainConfig.from_names(framework="deepspeed"))
    n_gpus = jnp.array([1.0, 2, 8, 64])
    stages = jnp.array([0.0, 1, 2, 3])

    def total(n, z):
        return estimate(arch, base.replace(n_gpus=n, zero_stage=z), hw).per_gpu_total_bytes

    def one(n, z):  # one configuration in NumPy float64
        cfg = _numpy(base).replace(n_gpus=np.float64(n), zero_stage=np.float64(z))
        return float(estimate(_numpy(arch), cfg, _numpy(hw)).per_gpu_total_bytes)

    grid = jax.jit(jax.vmap(jax.vmap(total, (None, 0)), (0, None)))(n_gpus, stages)
    for i, j in itertools.product(range(4), range(4)):
        assert float(grid[i, j]) == pytest.approx(one(n_gpus[i], stages[j]), rel=2e-6)


def test_no_recompile_for_new_values():
    arch = _f32(catalog.model("llama-2-7b").arch)
    hw = _f32(catalog.gpu("a100-80gb").hardware())
    jitted = jax.jit(estimate)
    jitted(arch, _f32(TrainConfig(n_gpus=8)), hw)
    compiled = jitted._cache_size()
    jitted(arch, _f32(TrainConfig(n_gpus=64, zero_stage=3, framework=2)), hw)
    assert jitted._cache_size() == compiled


def test_at_leading_is_indexing_in_numpy_and_under_jit():
    """`xp.at_leading` (the kernel's lookup of a chunk's outer axes) reads the same element
    as NumPy's indexing, with the indices traced, for every valid index."""
    from sweep import xp

    table = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    at = jax.jit(lambda t, i, j: xp.at_leading(t, (i, j)))
    for i, j in itertools.product(range(3), range(4)):
        np.testing.assert_array_equal(np.asarray(at(table, i, j)), table[i, j])
        np.testing.assert_array_equal(xp.at_leading(table, (i, j)), table[i, j])
    assert float(jax.jit(lambda t, i: xp.at_leading(t, (i,)))(table[:, 0, 0], 2)) == 40.0


def test_computed_once_gives_the_function_and_keeps_its_boundary():
    """`kernel.computed_once` returns `function(operand)` under jit, NaN in its probe
    included (both branches are the function), and the conditional that keeps the function
    out of its consumers' fusions survives XLA's optimizations; without a float to probe it
    is a plain call."""
    from sweep.engine.kernel import computed_once

    def square_sum(x):
        return (x * x).sum(axis=1)

    def twice(x):
        once = computed_once(square_sum, x)
        return once + 1, once * 2

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    expected = (x * x).sum(axis=1)
    for value in (x, np.where(np.arange(12).reshape(3, 4) == 0, np.nan, x)):
        got = jax.jit(twice)(value)
        want = (value * value).sum(axis=1)
        np.testing.assert_array_equal(np.asarray(got[0]), want + 1)
        np.testing.assert_array_equal(np.asarray(got[1]), want * 2)
    assert "conditional(" in jax.jit(twice).lower(x).compile().as_text()
    ints = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(jax.jit(twice)(ints)[0]), expected.astype(int) + 1)


def test_reused_computes_once_per_argument_objects_only_while_reusing():
    """`xp.reused` under `xp.reusing`: a call with the same argument objects (scalars: the
    same value) returns the first result without computing again; other objects, even of
    equal value, are computed anew; outside `reusing`, and after it ends, every call
    computes."""
    from sweep import xp

    calls = []

    @xp.reused
    def scaled(a, factor=2):
        calls.append(factor)
        return a * factor

    a, same_values = np.arange(3.0), np.arange(3.0)
    scaled(a), scaled(a)
    assert len(calls) == 2
    with xp.reusing():
        first = scaled(a)
        assert scaled(a) is first and scaled(a, factor=2) is not None
        assert len(calls) == 4  # the keyword call is a key of its own
        scaled(same_values), scaled(a, 3), scaled(a, 3)
        assert calls[4:] == [2, 3]
    scaled(a)
    assert len(calls) == 7
    np.testing.assert_array_equal(first, a * 2)


def test_reused_never_carries_a_result_out_of_a_loop_body():
    """A result first made inside a traced loop body is that body's tracer: the same call
    after the loop computes anew instead of leaking it."""
    from sweep import xp

    @xp.reused
    def doubled(a):
        return a * 2

    def program(x):
        with xp.reusing():
            inner = jax.lax.fori_loop(0, 3, lambda _, total: total + doubled(x), x * 0)
            return inner + doubled(x)

    np.testing.assert_array_equal(np.asarray(jax.jit(program)(np.arange(3.0))),
                                  np.arange(3.0) * 8)


def test_reusing_leaves_every_estimate_unchanged_and_the_trace_shorter():
    """Reuse is only a cache: `estimate` under `xp.reusing` gives the same value for every
    component, in NumPy and traced, and its traced program has fewer operations (the shared
    sharding formulas appear once)."""
    from sweep import xp

    hw = catalog.gpu("h100-sxm-80gb").hardware()
    for name, values in itertools.product(MODELS[:2], CONFIGS[:4]):
        arch, cfg = catalog.model(name).arch, config(**values)
        plain = estimate(_numpy(arch), _numpy(cfg), _numpy(hw))
        with xp.reusing():
            reused = estimate(_numpy(arch), _numpy(cfg), _numpy(hw))
        for field in GPU_COMPONENTS:
            assert getattr(reused, field) == getattr(plain, field), (name, values, field)
    arch, cfg, hw32 = (_f32(catalog.model("llama-3.1-70b").arch), _f32(config(**CONFIGS[1])),
                       _f32(hw))

    def reusing_estimate(*args):
        with xp.reusing():
            return estimate(*args)

    plain_ops = len(jax.make_jaxpr(estimate)(arch, cfg, hw32).eqns)
    reused_ops = len(jax.make_jaxpr(reusing_estimate)(arch, cfg, hw32).eqns)
    assert reused_ops < plain_ops
