"""Pipeline schedules: how many micro-batch times a step takes on the slowest stage.

Notation: docs/notation.md. Here p pipeline stages (pp), v model chunks per stage in the
interleaved schedule (vpp; 1: plain 1F1B), m micro-batches per step per pipeline (grad_accum),
τ_max the forward + backward time of one micro-batch on the slowest stage, τ_fill the same on a
stage without the head (the pipeline fills and drains at it).

1F1B (PipeDream-Flush; Narayanan et al. 2021, arXiv 2104.04473, §2.2.1): the bubble is
(p - 1) micro-batch times, a fraction (p - 1)/m of the ideal time. Interleaved with v chunks
per stage (§2.2.2): (p - 1)/v micro-batch times, a fraction (p - 1)/(v·m). With unequal
stages the steady state runs at the slowest stage and the fill and drain at the others:
step = m·τ_max + (p - 1)/v·τ_fill.
"""

from __future__ import annotations

from sweep.config import TrainConfig


def bubble_fraction(cfg: TrainConfig):
    """Bubble time / ideal time: (p - 1)/(v·m); v = 1 is 1F1B."""
    return (cfg.pp - 1) / (cfg.vpp * cfg.grad_accum)


def bubble_microbatches(cfg: TrainConfig):
    """Micro-batch times of fill and drain: (p - 1)/v."""
    return (cfg.pp - 1) / cfg.vpp


def pipeline_seconds(cfg: TrainConfig, slowest_microbatch_s, fill_microbatch_s):
    """m·τ_max + (p - 1)/v·τ_fill."""
    return cfg.grad_accum * slowest_microbatch_s + bubble_microbatches(cfg) * fill_microbatch_s
