"""Shared helpers: scalar configurations evaluated in float64 (exact byte counts)."""

import jax
import numpy as np
import pytest

from sweep.config import TrainConfig
from sweep.memory.shard import StageShard

jax.config.update("jax_platforms", "cpu")


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


def gpu_bytes(states) -> float:
    return float(
        states.weights + states.master_weights + states.gradients + states.optimizer_states
    )


@pytest.fixture
def cfg():
    return config
