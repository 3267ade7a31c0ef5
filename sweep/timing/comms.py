"""Collective communication per parallel dimension, over the link each group crosses.

Notation: docs/notation.md. Here n_g ranks in the group, S bytes of the full buffer (the
all-reduced tensor; the gathered tensor), β the per-GPU one-direction bandwidth of the link the
group crosses, times its achievable fraction η (β_up scale-up, β_out scale-out), n_up the GPUs
that reach each other over the scale-up link (NVLink/ICI domain: the node, 72 for a GB200 NVL72
rack, the slice for a TPU), j a group's members on one scale-up domain, and n, t, c, p, x, t_e
the GPUs and parallel degrees.

Bandwidth terms of the ring algorithms, as nccl-tests defines bus bandwidth (NVIDIA/nccl-tests
doc/PERFORMANCE.md): all-reduce 2·(n_g-1)/n_g·S/β, reduce-scatter and all-gather
(n_g-1)/n_g·S/β, all-to-all (n_g-1)/n_g·S/β (S: what one rank sends, its own share included),
point-to-point S/β.
Latency terms are left out: NCCL's base latency of tens of microseconds is a few percent of
the bandwidth term for the 10 MB and larger messages of a typical layer (T·h·e = 33 MB at
4096 tokens and h = 4096), so small models with few tokens per micro-batch come out fast.
Context parallelism is Megatron-LM's default ring ("p2p"); the all-to-all (Ulysses) variant
is not modelled.

Which link: Megatron-LM orders ranks tensor-innermost (tp, cp, ep, dp, pp:
megatron/core/parallel_state.py `RankGenerator`, default order "tp-cp-ep-dp-pp"), so a group
of n_g ranks whose members are `stride` ranks apart spans n_g·stride consecutive GPUs: TP
(stride 1), CP (stride t), EP (stride t_e), DP (stride t: the n/(t·p) ranks of one stage),
expert DP (stride t_e·x). A group spanning at most n_up GPUs stays on the scale-up link. A
group spanning nodes has j = min(n_g, max(n_up/stride, 1)) members per node; NCCL runs one ring
per channel and spreads the channels over the node's NICs, so each member sends 1/j of its
ring traffic over its own NIC and the rest over the scale-up link: time =
X·max((j-1)/(j·β_up), 1/(j·β_out)) for X bytes a member sends, i.e. the node's aggregate NIC
bandwidth j·β_out.
Three DGX-like nodes with 4 HDR NICs per 8 GPUs measure 84.8 GB/s all-reduce bus bandwidth
against that aggregate's 100 GB/s (NVIDIA/nccl-tests issue #119). All-to-all sends
(n_g - j)/n_g of its bytes off the node. Pipeline neighbours (n/p apart) share a node only when
n <= n_up; across nodes each stage sends through its own NIC.

Achievable fractions η of the nominal bandwidth (measured bus bandwidth / nominal):
`SCALE_UP_FRACTION` 0.70: 8x A100-SXM over NVSwitch reach 200-208 GB/s all-reduce bus bandwidth
of 300 GB/s (NVIDIA/nccl-tests issues #149 and #178); `SCALE_OUT_FRACTION` 0.85: the 84.8 of
100 GB/s above (nccl-tests issue #119).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax

from sweep import vocabulary as vocab
from sweep import xp
from sweep.config import Hardware, TrainConfig

SCALE_UP_FRACTION = 0.70
SCALE_OUT_FRACTION = 0.85


def scale_up_domain(cfg: TrainConfig, hw: Hardware):
    """n_up: GPUs joined by the scale-up link, at least the node."""
    return xp.maximum(cfg.gpus_per_node, hw.scale_up_domain_gpus)


def _links(hw: Hardware):
    """(β_up, β_out): achievable per-GPU scale-up and scale-out bandwidth."""
    return (SCALE_UP_FRACTION * hw.intra_node_bandwidth_bytes_per_s,
            SCALE_OUT_FRACTION * hw.inter_node_bandwidth_bytes_per_s)


def members_per_node(ranks, stride, cfg: TrainConfig, hw: Hardware):
    """j: members of a group (`ranks` ranks, `stride` apart) on one scale-up domain."""
    return xp.minimum(ranks, xp.maximum(scale_up_domain(cfg, hw) / stride, 1))


def ring_bandwidth(ranks, stride, cfg: TrainConfig, hw: Hardware):
    """Effective per-member bandwidth of a ring collective: β_up inside the scale-up domain,
    else 1/max((j-1)/(j·β_up), 1/(j·β_out)) (module docstring)."""
    up, out = _links(hw)
    k = members_per_node(ranks, stride, cfg, hw)
    across = 1 / xp.maximum((k - 1) / (k * up), 1 / (k * out))
    return xp.where(ranks * stride <= scale_up_domain(cfg, hw), up, across)


def point_to_point_bandwidth(span, cfg: TrainConfig, hw: Hardware):
    """A send between ranks within `span` consecutive GPUs: β_up, else the sender's NIC."""
    up, out = _links(hw)
    return xp.where(span <= scale_up_domain(cfg, hw), up, out)


def all_reduce_seconds(buffer_bytes, ranks, bandwidth):
    """Ring all-reduce: 2·(n_g-1)/n_g·S/β."""
    return 2 * (ranks - 1) / ranks * buffer_bytes / bandwidth


def reduce_scatter_seconds(buffer_bytes, ranks, bandwidth):
    """Ring reduce-scatter of an S-byte buffer: (n_g-1)/n_g·S/β (all-gather: the same)."""
    return (ranks - 1) / ranks * buffer_bytes / bandwidth


all_gather_seconds = reduce_scatter_seconds


def all_to_all_seconds(sent_bytes, ranks, stride, cfg: TrainConfig, hw: Hardware):
    """All-to-all where each member sends S bytes in total (its own share included):
    (j-1)/n_g of S over the scale-up link and (n_g-j)/n_g through its NIC, concurrently."""
    up, out = _links(hw)
    k = members_per_node(ranks, stride, cfg, hw)
    return xp.maximum((k - 1) / ranks * sent_bytes / up,
                      (ranks - k) / ranks * sent_bytes / out)


def transfer_seconds(bytes_moved, bandwidth):
    """S/β over a link; infinite when bytes must cross a link the hardware lacks (β = 0)."""
    finite = bytes_moved / xp.maximum(bandwidth, 1.0)
    return xp.where(bandwidth > 0, finite, xp.where(bytes_moved > 0, math.inf, 0.0))


def exposed(comm_seconds, window_seconds, overlapped):
    """Communication left on the critical path: all of it, or max(comm - window, 0) when it
    runs concurrently with `window_seconds` of independent compute."""
    return xp.where(overlapped > 0, xp.maximum(comm_seconds - window_seconds, 0), comm_seconds)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Overlap:
    """Which communication runs concurrently with compute (1) or blocks it (0).

    tp: TP/SP collectives behind the GEMMs they feed (Megatron-LM `--tp-comm-overlap`,
    Transformer Engine userbuffers); cp: ring-attention KV exchange behind the attention of
    the previous chunk; ep: expert all-to-all; pp: stage-to-stage sends; dp_grad: gradient
    reduction behind the backward pass; dp_param: parameter all-gather behind the forward
    pass (ZeRO-1/2 after the step, ZeRO-3/FSDP prefetch of the next unit).
    """

    tp: object = 0
    cp: object = 1
    ep: object = 0
    pp: object = 0
    dp_grad: object = 0
    dp_param: object = 0

    def replace(self, **changes) -> Overlap:
        return dataclasses.replace(self, **changes)


GENERIC, DEEPSPEED, MEGATRON, FSDP = 0, 1, 2, 3  # codes of vocabulary.FRAMEWORKS
ZERO3 = 3

# Per framework: (tp, cp, ep, dp_grad, dp_param), what each overlaps by default or with the
# flags its performance guide uses.
#   generic:   PyTorch DDP overlaps bucketed gradient all-reduce with backward
#              (torch/nn/parallel/distributed.py, reducer hooks); nothing else.
#   deepspeed: `overlap_comm` defaults to true only at ZeRO stage 3
#              (deepspeed/runtime/zero/config.py `overlap_comm_valid`, commit edaa7221);
#              stage 3 prefetches parameters (`prefetch_bucket_size`).
#   megatron:  Megatron-LM's README benchmark (commit d98e8a64) runs with
#              --overlap-grad-reduce, --overlap-param-gather and --tp-comm-overlap; the
#              context parallelism passes cp_comm_type "p2p" to Transformer Engine
#              (megatron/core/extensions/transformer_engine.py), whose ring attention sends
#              the next KV chunk while it computes on the current one.
#   fsdp:      FSDP2 `fully_shard` prefetches the next unit's all-gather and reduce-scatters
#              on separate streams (torch/distributed/fsdp/_fully_shard).
_TP_OVERLAP = vocab.by_code("framework", {"generic": 0, "deepspeed": 0, "megatron": 1,
                                          "fsdp": 0})
_DP_GRAD_OVERLAP = vocab.by_code("framework", {"generic": 1, "deepspeed": 0, "megatron": 1,
                                               "fsdp": 1})
_DP_PARAM_OVERLAP = vocab.by_code("framework", {"generic": 0, "deepspeed": 0, "megatron": 1,
                                                "fsdp": 1})


def framework_overlap(cfg: TrainConfig) -> Overlap:
    """The `Overlap` a framework achieves (see the table above). Pipeline sends overlap with
    compute in Megatron-LM's interleaved schedule only (`--overlap-p2p-communication`, on by
    default, applies to it alone: megatron/training/arguments.py)."""
    f = cfg.framework
    deepspeed_overlap = (f == DEEPSPEED) & (cfg.zero_stage >= ZERO3)
    return Overlap(
        tp=xp.lookup(_TP_OVERLAP, f),
        cp=1,
        ep=0,
        pp=(f == MEGATRON) & (cfg.vpp > 1),
        dp_grad=xp.maximum(xp.lookup(_DP_GRAD_OVERLAP, f), deepspeed_overlap),
        dp_param=xp.maximum(xp.lookup(_DP_PARAM_OVERLAP, f), deepspeed_overlap),
    )
