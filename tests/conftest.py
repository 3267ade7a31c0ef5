"""Shared helpers: scalar configurations evaluated in float64 (exact byte counts)."""

import os

# The tests run small grids, where XLA's compiling dominates: compile with its cheaper passes
# (set before JAX starts its backend; subprocesses inherit it). Results do not change.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                           " --xla_llvm_disable_expensive_passes=true").strip()

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: torch's own thread pool would only fight the other workers.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np
import pytest

from sweep.config import TrainConfig
from sweep.memory.shard import StageShard

jax.config.update("jax_platforms", "cpu")


@pytest.fixture(autouse=True, scope="session")
def kernel_cache(tmp_path_factory):
    """Compiled kernels cached for this run only (never in the user's cache), shared by the
    tests (and the subprocesses they start) that run the same grid, across xdist workers
    (the cache writes atomically)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker's base is under one run folder
        folder = tmp_path_factory.getbasetemp().parent / "kernel-cache"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("kernel-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_MEMORY_SWEEP_CACHE", str(folder))
        yield folder


def synthetic_shard(params, largest_module=0.0, block=0.0, trainable=None) -> StageShard:
    """A shard of `params` dense parameters, all trainable unless said, as the papers assume."""
    trainable = params if trainable is None else trainable
    f = np.float64
    return StageShard(
        base_dense=f(params), base_expert=f(0), block_linear=f(0), adapters=f(0),
        trainable_dense=f(trainable), trainable_expert=f(0), factored_dense=f(0),
        factored_expert=f(0), largest_module=f(largest_module), block=f(block),
    )


def config(**values) -> TrainConfig:
    cfg = TrainConfig.from_names(**values)
    return jax.tree_util.tree_map(np.float64, cfg)


def all_weights(states) -> float:
    """Weights on the GPU from the forward pass to the end of backward: persistent + gathered."""
    return float(states.weights + states.gathered)


def all_gradients(states) -> float:
    """Gradients on the GPU at the optimizer step: persistent + created in backward."""
    return float(states.gradients + states.transient_gradients)


def gpu_bytes(states) -> float:
    """Every model-state byte the GPU holds at some point of the step (what the papers' and
    DeepSpeed's per-GPU figures count): persistent, gathered and gradients."""
    return float(
        states.weights + states.gathered + states.master_weights + states.gradients
        + states.transient_gradients + states.optimizer_states
    )


@pytest.fixture
def cfg():
    return config
