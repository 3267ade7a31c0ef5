"""Bytes per element, by precision and optimizer: the named constants every formula uses.

Notation: docs/notation.md (w, g, M: weight, gradient and fp32 master bytes per element;
o(P_t): optimizer-state bytes; Ψ: the model's parameters).

Tables are indexed by the integer codes of `vocabulary.PRECISIONS` / `vocabulary.OPTIMIZERS`,
built from names (`vocabulary.by_code`).

Precisions (bytes per parameter of each copy):

| precision   | weights | gradients | fp32 master | per optimizer-state element |
|-------------|---------|-----------|-------------|-----------------------------|
| fp32        | 4       | 4         | 0           | 4                           |
| bf16-mixed  | 2       | 2         | 4           | 4                           |
| fp16-mixed  | 2       | 2         | 4           | 4                           |
| bf16        | 2       | 2         | 0           | 2 (states in bf16 too)      |
| fp8-mixed   | 2 (1 in block linears) | 2 | 4      | 4                           |
| bf16-autocast | 4     | 4         | 0           | 4                           |

Mixed precision keeps a 16-bit compute copy, 16-bit gradients and an fp32 master copy with fp32
optimizer states (Micikevicius et al. 2018; Rajbhandari et al. 2020 §3.1: 2Ψ + 2Ψ + 12Ψ,
12 for Adam = 4 master + 4 momentum + 4 variance). bf16-autocast (PyTorch autocast) keeps every
parameter, gradient and state in fp32 and casts to bf16 per operation
(torch/amp/autocast_mode.py). fp8-mixed stores the weights of the blocks'
linear layers in fp8 only (Transformer Engine `fp8_model_init`, Megatron-LM
`--fp8-param-gather`); embeddings, norms and the head stay bf16.
"""

from __future__ import annotations

from sweep import vocabulary as vocab
from sweep import xp

FP32_BYTES = 4
FP16_BYTES = 2
BF16_BYTES = 2
FP8_BYTES = 1
INT8_BYTES = 1

WEIGHT_BYTES = vocab.by_code("precision", {
    "fp32": FP32_BYTES, "bf16-mixed": BF16_BYTES, "fp16-mixed": FP16_BYTES, "bf16": BF16_BYTES,
    "fp8-mixed": BF16_BYTES, "bf16-autocast": FP32_BYTES})
LINEAR_WEIGHT_BYTES = vocab.by_code("precision", {
    "fp32": FP32_BYTES, "bf16-mixed": BF16_BYTES, "fp16-mixed": FP16_BYTES, "bf16": BF16_BYTES,
    "fp8-mixed": FP8_BYTES, "bf16-autocast": FP32_BYTES})
GRADIENT_BYTES = WEIGHT_BYTES
MASTER_BYTES = vocab.by_code("precision", {
    "fp32": 0, "bf16-mixed": FP32_BYTES, "fp16-mixed": FP32_BYTES, "bf16": 0,
    "fp8-mixed": FP32_BYTES, "bf16-autocast": 0})
STATE_ELEMENT_BYTES = vocab.by_code("precision", {
    "fp32": FP32_BYTES, "bf16-mixed": FP32_BYTES, "fp16-mixed": FP32_BYTES, "bf16": BF16_BYTES,
    "fp8-mixed": FP32_BYTES, "bf16-autocast": FP32_BYTES})

# 8-bit Adam (bitsandbytes, Dettmers et al. 2022 "8-bit Optimizers via Block-wise
# Quantization"): each state is int8 with one fp32 absmax per block; the block is 256 elements
# in current bitsandbytes (bitsandbytes/optim/optimizer.py, commit 51294d90; 2048 in older
# releases). Tensors under `min_8bit_size` = 4096 elements keep fp32 states (norms, biases:
# negligible, not modelled).
ADAM8BIT_BLOCK = 256
ADAM8BIT_STATE_BYTES = INT8_BYTES + FP32_BYTES / ADAM8BIT_BLOCK

# QLoRA NF4 (Dettmers et al. 2023 §3): 4-bit weights in blocks of 64 with double-quantised
# constants: an 8-bit constant per 64 weights plus an fp32 constant per 256 such blocks,
# 8/64 + 32/(64·256) = 0.127 bits per parameter.
NF4_BYTES = 0.5
NF4_BLOCK = 64
NF4_SECOND_LEVEL_BLOCK = 256
NF4_CONSTANT_BYTES = INT8_BYTES / NF4_BLOCK + FP32_BYTES / (NF4_BLOCK * NF4_SECOND_LEVEL_BLOCK)

# Optimizer state elements per trainable parameter (Adafactor: counted from shapes instead).
STATES_PER_PARAM = vocab.by_code("optimizer", {
    "adamw": 2, "adam8bit": 2, "adafactor": 0, "sgd": 0, "sgd-momentum": 1, "lion": 1})
ADAFACTOR, ADAM8BIT = vocab.codes("optimizer", "adafactor", "adam8bit")


@xp.reused
def weight_bytes(precision):
    return xp.lookup(WEIGHT_BYTES, precision)


@xp.reused
def linear_weight_bytes(precision):
    return xp.lookup(LINEAR_WEIGHT_BYTES, precision)


@xp.reused
def gradient_bytes(precision):
    return xp.lookup(GRADIENT_BYTES, precision)


@xp.reused
def master_bytes(precision):
    return xp.lookup(MASTER_BYTES, precision)


@xp.reused
def optimizer_state_bytes(optimizer, precision, params, factored_elements):
    """Optimizer-state bytes for `params` trainable parameters.

    AdamW: 2 states (first and second moments); 8-bit Adam: 2 int8 states with block constants;
    Adafactor (as Shazeer & Stern 2018 and the Hugging Face default, beta1 = None): no first
    moment and a factored second moment of `factored_elements` (a row and a column vector per
    matrix, the full vector for 1-D parameters); SGD: none; SGD with momentum and Lion: one
    state.
    """
    element_bytes = xp.lookup(STATE_ELEMENT_BYTES, precision)
    per_param = xp.lookup(STATES_PER_PARAM, optimizer) * xp.where(
        optimizer == ADAM8BIT, ADAM8BIT_STATE_BYTES, element_bytes
    )
    return xp.where(
        optimizer == ADAFACTOR, factored_elements * element_bytes, params * per_param
    )
