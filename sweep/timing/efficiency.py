"""How fast a GPU runs the work of a training step: GEMMs, attention and memory-bound kernels.

Notation: docs/notation.md. Here F FLOPs of a kernel (or of a sum of kernels), Q the bytes it
moves to and from HBM, F_peak the peak dense FLOP/s of the precision it computes in (catalog),
μ the GPU's maximum achievable matmul fraction of F_peak (catalog `matmul_efficiency`: the
best-shape GEMM measured with mamf-finder), κ `IN_TRAINING_MATMUL_FRACTION`, the share of
μ·F_peak that GEMMs keep inside a training step (calibrated, see below), W the HBM bandwidth
(catalog), of which η_W (`HBM_FRACTION`) is achievable.

A GEMM takes F/(κ·μ·F_peak) + Q/(η_W·W): the two sides of the roofline added, a smooth form of
max(compute, memory) that is exact at both ends. Q = e·(rows·inner + inner·cols + rows·cols) for
a rows x inner by inner x cols product with e-byte operands, so a GEMM with a small dimension
(few tokens, few KV heads per tensor-parallel rank, small experts) is slowed by its operands,
and a large square one runs at κ·μ·F_peak: the GEMM size and shape effect. Being linear in F and
Q, the time of many GEMMs is the time of their sums, which is what keeps this cheap in a sweep.

FlashAttention runs at `FLASH_ATTENTION_FRACTION` of the GEMM rate: FlashAttention-2 reaches
50-73% of the A100's peak (Dao 2023, arXiv 2307.08691, abstract), against μ = 86.9% for GEMMs;
its mid-range 62% / 86.9% = 0.71. Memory-bound kernels (norms, activations, dropout, residual
adds, the softmax of explicit attention, the loss, the optimizer step) take Q/(η_W·W).

Calibration: κ and η_W are the only fitted constants of the time model, chosen on a grid
against the 27 published runs of `sweep/timing/published.toml` (`python -m
sweep.timing.validate --fit` prints it): the median error stays within 3.4-6.3% for κ in
0.85-1.0 and η_W in 0.7-0.9, and the round values κ = 0.90 (A100: 0.90·0.869 = 78% of peak
for a large GEMM during training; H100: 0.90·0.803 = 72%) and η_W = 0.85 are kept.
Sustained clocks under a training load below the boost clock the peak assumes, and the SMs
that concurrent NCCL kernels take, are what κ < 1 stands for; η_W < 1 is the usual gap
between a copy kernel's bandwidth and the HBM's nominal one.
"""

from __future__ import annotations

from sweep import xp
from sweep.config import Hardware, TrainConfig

IN_TRAINING_MATMUL_FRACTION = 0.90
HBM_FRACTION = 0.85
FLASH_ATTENTION_FRACTION = 0.71
# fp32 training runs without tensor cores (PyTorch keeps TF32 off for matmuls by default):
# A100 19.5 of 312 TFLOP/s bf16 (A100 datasheet), H100 SXM 67 of 989 (H100 datasheet).
FP32_TO_BF16_FLOPS = 1 / 16

FP32, FP8_MIXED = 0, 4  # codes of vocabulary.PRECISIONS
FP32_BYTES, BF16_BYTES, FP8_BYTES = 4, 2, 1


def activation_bytes(cfg: TrainConfig):
    """Bytes of an activation element: 4 in fp32 training, else 2 (fp8 training keeps bf16
    activations outside its GEMMs)."""
    return xp.where(cfg.precision == FP32, FP32_BYTES, BF16_BYTES)


def block_gemm_operand_bytes(cfg: TrainConfig):
    """Bytes of a block GEMM operand: fp8 inputs in fp8-mixed, else the activation bytes."""
    return xp.where(cfg.precision == FP8_MIXED, FP8_BYTES, activation_bytes(cfg))


def bf16_peak(hw: Hardware, cfg: TrainConfig):
    """Peak dense FLOP/s of everything but the blocks' GEMMs: bf16, or fp32 without tensor
    cores."""
    bf16 = hw.bf16_dense_flops
    return xp.where(cfg.precision == FP32, bf16 * FP32_TO_BF16_FLOPS, bf16)


def block_gemm_peak(hw: Hardware, cfg: TrainConfig):
    """Peak dense FLOP/s of the blocks' GEMMs: fp8 in fp8-mixed where the GPU has native fp8
    matmuls (Transformer Engine runs the block linears in fp8, attention and the head in
    bf16), else as `bf16_peak`."""
    fp8 = (cfg.precision == FP8_MIXED) & (hw.fp8_dense_flops > 0)
    return xp.where(fp8, hw.fp8_dense_flops, bf16_peak(hw, cfg))


def matmul_rate(hw: Hardware, peak):
    """FLOP/s a large GEMM sustains inside a training step: κ·μ·F_peak."""
    return IN_TRAINING_MATMUL_FRACTION * hw.matmul_efficiency * peak


def memory_rate(hw: Hardware):
    """Bytes/s a memory-bound kernel sustains: η_W·W."""
    return HBM_FRACTION * hw.hbm_bandwidth_bytes_per_s


def gemm_seconds(flops, operand_bytes, hw: Hardware, peak):
    """F/(κ·μ·F_peak) + Q/(η_W·W): a GEMM (or a sum of GEMMs) on the roofline."""
    return flops / matmul_rate(hw, peak) + operand_bytes / memory_rate(hw)


def flash_attention_seconds(flops, hw: Hardware, peak):
    """A FlashAttention kernel: F at `FLASH_ATTENTION_FRACTION` of the GEMM rate."""
    return flops / (FLASH_ATTENTION_FRACTION * matmul_rate(hw, peak))


def memory_seconds(bytes_moved, hw: Hardware):
    """A memory-bound kernel: Q/(η_W·W)."""
    return bytes_moved / memory_rate(hw)
