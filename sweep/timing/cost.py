"""What a training run costs: GPU-hours at a price, per token and for a token budget.

Notation: docs/notation.md. Here τ_step seconds per step, G tokens per step, n GPUs, ρ price
per GPU-hour (USD, catalog `price_per_gpu_hour_usd` or the grid's override), G_train tokens to
train on.

    cost per million tokens = ρ·n·τ_step/3600 / G · 10^6
    days to train           = G_train / (G / τ_step) / 86400
    cost to train           = ρ·n · 24 · days to train = G_train/10^6 · cost per million tokens

GPU-hours are billed for every GPU of the run for the whole step, idle bubble included.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

MAX_PRICE_PER_GPU_HOUR_USD = 1e4  # a price past this is an input error, not a GPU
SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400
MILLION = 1e6


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Cost:
    """Cost of training at one configuration (USD, days)."""

    cost_per_million_tokens: object
    days_to_train: object
    cost_to_train: object


def gpu_hours_per_step(step_s, n_gpus):
    """n·τ_step/3600."""
    return n_gpus * step_s / SECONDS_PER_HOUR


def cost_per_million_tokens(step_s, tokens_per_step, n_gpus, price_per_gpu_hour_usd):
    """ρ·n·τ_step/3600/G·10^6."""
    return price_per_gpu_hour_usd * gpu_hours_per_step(step_s, n_gpus) / tokens_per_step * (
        MILLION)


def days_to_train(step_s, tokens_per_step, token_budget):
    """G_train/(G/τ_step)/86400."""
    return token_budget * step_s / tokens_per_step / SECONDS_PER_DAY


def cost_to_train(step_s, tokens_per_step, n_gpus, price_per_gpu_hour_usd, token_budget):
    """G_train/10^6 · cost per million tokens."""
    return cost_per_million_tokens(step_s, tokens_per_step, n_gpus,
                                   price_per_gpu_hour_usd) * token_budget / MILLION


def cost(step_s, tokens_per_step, n_gpus, price_per_gpu_hour_usd, token_budget) -> Cost:
    """All three figures for a step time, tokens per step, GPUs, price and token budget."""
    return Cost(
        cost_per_million_tokens=cost_per_million_tokens(step_s, tokens_per_step, n_gpus,
                                                        price_per_gpu_hour_usd),
        days_to_train=days_to_train(step_s, tokens_per_step, token_budget),
        cost_to_train=cost_to_train(step_s, tokens_per_step, n_gpus, price_per_gpu_hour_usd,
                                    token_budget),
    )
