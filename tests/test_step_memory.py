"""Whole training steps (sweep/measure/step.py): PyTorch's own memory trackers on the reference
model at real sizes (Llama-3.1-8B blocks, FakeTensorMode), checked first against byte counts
derived by hand here, then compared with our estimate.

The hand counts name what PyTorch holds at each peak (torch 2.13):
- loss backward (`LogSoftmaxBackward0`): the saved fp32 log-probabilities 4·T·V, the gradient
  w.r.t. them from `nll_loss_backward` 4·T·V and `_log_softmax_backward_data`'s output 4·T·V;
- with grad_accum 1 and `zero_grad(set_to_none=True)` no parameter gradient exists yet then;
- FSDP2: the root unit (embedding, final norm, head) stays gathered in bf16, the last block is
  being all-gathered for backward (`_backward_prefetch`), every other block is resharded;
- foreach AdamW: `torch._foreach_sqrt(exp_avg_sqs)` (torch/optim/adam.py `_multi_tensor_adam`)
  is one state-sized temporary per parameter;
- autocast: every linear saves a bf16 cast of its input (one per consumer: q, k, v and gate, up
  each cast the fp32 norm output) and of its weight (kept by the autocast cache and by autograd),
  norms save fp32 inputs.
"""

import dataclasses
import functools
import math

import pytest

torch = pytest.importorskip("torch")

from sweep.measure import step  # noqa: E402
from sweep.measure.reference import NF4_CODE, dequantize_nf4  # noqa: E402
from sweep.measure.step_cases import FEATURES, quick_cases  # noqa: E402

# Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json), written out as the reference for the counts.
H, A, K, D, F, V = 4096, 32, 8, 128, 14336, 128256
LINEARS = {  # in x out of the seven block linears
    "q_proj": (H, A * D), "k_proj": (H, K * D), "v_proj": (H, K * D), "o_proj": (A * D, H),
    "gate_proj": (H, F), "up_proj": (H, F), "down_proj": (F, H),
}
BLOCK_LINEAR = sum(i * o for i, o in LINEARS.values())
BLOCK = BLOCK_LINEAR + 2 * H  # two RMSNorm weights
ROOT = 2 * V * H + H  # embedding, head, final norm
FP32, BF16, INT64 = 4, 2, 8
LOSS_SCALAR = FP32  # the loss being backpropagated
NLL_TOTAL_WEIGHT = FP32  # nll_loss saves an fp32 scalar
TOLERANCE = 0.03
CASES = {case.name: case for case in quick_cases()}


def params(blocks):
    return ROOT + blocks * BLOCK


def tensors(blocks):
    """Parameter tensors: embedding, head, final norm; 7 linears and 2 norms per block."""
    return 3 + 9 * blocks


def block_saved(tokens, e=BF16):
    """One block: both norms' input and fp32 rstd, their outputs (the q/k/v and gate/up
    input), roped q and k, v, the SDPA output and fp32 logsumexp, SiLU's input and output, up's
    output and the product."""
    norms = 2 * (e * tokens * H + FP32 * tokens) + 2 * e * tokens * H
    attention = e * tokens * (2 * A * D + 2 * K * D) + FP32 * tokens * A
    return norms + attention + 4 * e * tokens * F


def loss_side_saved(tokens):
    """The fp32 log-probabilities and nll_loss's total weight."""
    return FP32 * tokens * V + NLL_TOTAL_WEIGHT


def model_saved(tokens, seq_len, blocks, e=BF16):
    """Every saved tensor of a whole model but the input ids and targets (tracked as inputs):
    the blocks, RoPE cos and sin, the final norm's input and rstd, the head's input, the loss."""
    rope = 2 * e * seq_len * D
    head = e * tokens * H + FP32 * tokens + e * tokens * H
    return blocks * block_saved(tokens, e) + rope + head + loss_side_saved(tokens)


def autocast_block_saved(tokens):
    """Under autocast with fp32 parameters: fp32 norm inputs, a bf16 input cast per linear
    (three for q, k, v; two for gate, up), bf16 casts of q and k (roped in fp32), v, the output,
    the logsumexp, the bf16 MLP tensors and the bf16 cast of every weight."""
    norms = 2 * (FP32 * tokens * H + FP32 * tokens)
    input_casts = 5 * BF16 * tokens * H
    attention = BF16 * tokens * (2 * A * D + 2 * K * D) + FP32 * tokens * A
    return norms + input_casts + attention + 4 * BF16 * tokens * F + BF16 * BLOCK_LINEAR


def autocast_model_saved(tokens, seq_len, blocks):
    rope = 2 * FP32 * seq_len * D  # the tables follow the fp32 residual stream
    head = FP32 * tokens * H + FP32 * tokens + BF16 * tokens * H + BF16 * V * H
    return blocks * autocast_block_saved(tokens) + rope + head + loss_side_saved(tokens)


def adapter_params(rank):
    return sum(rank * (i + o) for i, o in LINEARS.values())


def nf4_bytes(n):
    """Packed 4-bit codes, uint8 absmax per 64, fp32 second-level constant per 256 absmax."""
    return n // 2 + n // 64 + FP32 * math.ceil(n / 64 / 256)


@functools.cache
def measured(name):
    case = CASES[name]
    return case, step.measure(case), step.ours(case)


def tokens_of(case):
    return case.micro_batch * case.seq_len


# ---- the trackers against hand counts ----------------------------------------------------------


def test_cases_cover_every_feature():
    assert {case.feature for case in CASES.values()} == set(FEATURES)


def test_one_rank_bf16_matches_hand_count():
    case, tracked, _ = measured("single-bf16")
    t, p, n = tokens_of(case), params(case.blocks), tensors(case.blocks)
    states = 2 * BF16 * p + FP32 * n  # exp_avg, exp_avg_sq in the parameter dtype; fp32 steps
    assert tracked.state_bytes == states
    backward = tracked.phases["backward"].categories
    assert backward["Parameter"] == BF16 * p
    assert backward["Gradient"] == 0
    assert backward["Optstate"] == states
    assert backward["Activation"] == model_saved(t, case.seq_len, case.blocks) + LOSS_SCALAR
    assert backward["Temp"] == 2 * FP32 * t * V
    assert backward["Other"] == 2 * INT64 * t
    optimizer = tracked.phases["optimizer"].categories
    assert optimizer["Gradient"] == BF16 * p
    assert optimizer["Optstate"] == states + BF16 * p  # sqrt(exp_avg_sq)
    assert tracked.peak_phase == "backward"


def test_gradient_accumulation_keeps_the_first_gradients():
    case, tracked, _ = measured("single-bf16-accum2")
    backward = tracked.phases["backward"].categories
    assert backward["Gradient"] == BF16 * params(case.blocks)
    assert backward["Temp"] == 2 * FP32 * tokens_of(case) * V


def test_fsdp_matches_hand_count():
    case, tracked, _ = measured("fsdp-reshard")
    t, p, n, world = tokens_of(case), params(case.blocks), tensors(case.blocks), case.world_size
    states = 2 * FP32 * p // world + FP32 * n
    assert tracked.state_bytes == states
    backward = tracked.phases["backward"].categories
    assert backward["Sharded Param"] == FP32 * p // world
    assert backward["Unsharded Param"] == BF16 * ROOT
    assert backward["All Gather"] == BF16 * BLOCK
    assert backward["Sharded Grad"] == backward["Unsharded Grad"] == 0
    assert backward["Reduce Scatter"] == 0
    assert backward["OptState"] == states
    assert backward["Activation"] == model_saved(t, case.seq_len, case.blocks) + LOSS_SCALAR
    assert backward["Temp"] == 2 * FP32 * t * V
    optimizer = tracked.phases["optimizer"].categories
    assert optimizer["Sharded Grad"] == FP32 * p // world
    assert optimizer["OptState"] == states + FP32 * p // world


def test_fsdp_without_reshard_keeps_every_block_gathered():
    case, tracked, _ = measured("fsdp-no-reshard")
    backward = tracked.phases["backward"].categories
    assert backward["Unsharded Param"] == BF16 * params(case.blocks)
    assert backward["All Gather"] == 0


def test_replicate_keeps_full_fp32_parameters_and_bf16_copies():
    """FSDP2's DDP: fp32 parameters and gradients on every rank, the bf16 copies of all units
    alive from forward to backward, freed before the optimizer step."""
    case, tracked, _ = measured("replicate")
    p, n = params(case.blocks), tensors(case.blocks)
    forward = tracked.phases["forward"].categories
    assert forward["Sharded Param"] == FP32 * p
    assert forward["Unsharded Param"] == BF16 * p
    optimizer = tracked.phases["optimizer"].categories
    assert optimizer["Sharded Grad"] == FP32 * p
    assert optimizer["OptState"] == 3 * FP32 * p + FP32 * n
    assert optimizer["Unsharded Param"] == 0


def test_checkpointing_keeps_block_inputs_at_the_loss():
    case, tracked, _ = measured("single-checkpoint")
    t = tokens_of(case)
    rope = 2 * BF16 * case.seq_len * D  # inputs of every checkpointed block
    head = BF16 * t * H + FP32 * t + BF16 * t * H
    expected = case.blocks * BF16 * t * H + rope + head + loss_side_saved(t) + LOSS_SCALAR
    assert tracked.phases["backward"].categories["Activation"] == expected


def test_frozen_leading_blocks_save_nothing():
    case, tracked, _ = measured("single-frozen")
    t, trained = tokens_of(case), case.blocks - case.frozen_layers
    expected = model_saved(t, case.seq_len, trained) + LOSS_SCALAR
    assert tracked.phases["backward"].categories["Activation"] == expected
    trainable = trained * BLOCK + V * H + H  # trained blocks, head, final norm
    assert tracked.state_bytes == 2 * BF16 * trainable + FP32 * (9 * trained + 2)


def test_autocast_saves_bf16_casts():
    case, tracked, _ = measured("single-autocast")
    t = tokens_of(case)
    expected = autocast_model_saved(t, case.seq_len, case.blocks) + LOSS_SCALAR
    assert tracked.phases["backward"].categories["Activation"] == expected
    optimizer = tracked.phases["optimizer"].categories
    assert optimizer["Optstate"] == 3 * FP32 * params(case.blocks) + FP32 * tensors(case.blocks)


def test_lora_shards_the_frozen_bf16_base():
    case, tracked, _ = measured("fsdp-lora")
    adapters = case.blocks * adapter_params(case.lora_rank)
    shard = (BF16 * params(case.blocks) + FP32 * adapters) // case.world_size
    assert tracked.phases["backward"].categories["Sharded Param"] == shard


def test_qlora_shards_the_nf4_base():
    case, tracked, _ = measured("fsdp-qlora")
    adapters = case.blocks * adapter_params(case.lora_rank)
    nf4 = case.blocks * sum(nf4_bytes(i * o) for i, o in LINEARS.values())
    rest = BF16 * (ROOT + case.blocks * 2 * H)
    shard = (nf4 + rest + FP32 * adapters) // case.world_size
    assert tracked.phases["backward"].categories["Sharded Param"] == shard


def test_nf4_dequantisation():
    """Byte 0x0F holds codes 0 and 15 (high nibble first); absmax 255 with a second-level
    constant 2 scales by 2."""
    packed = torch.full((32,), 0x0F, dtype=torch.uint8)
    absmax = torch.full((1,), 255, dtype=torch.uint8)
    weight = dequantize_nf4(packed, absmax, torch.tensor([2.0]),
                            torch.tensor(NF4_CODE), 1, 64)
    assert weight.dtype == torch.bfloat16 and weight.shape == (1, 64)
    assert weight[0, :2].tolist() == [2 * NF4_CODE[0], 2 * NF4_CODE[15]]


# ---- ours against the trackers -----------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_optimizer_states(name):
    """o(T)/N: AdamW's two states of the trainable parameters (their fp32 step scalars, 4 bytes
    a tensor, are below the tolerance)."""
    _, tracked, ours = measured(name)
    assert ours.components["optimizer_states"] == pytest.approx(tracked.state_bytes, rel=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_optimizer_step_transient(name):
    """runtime.optimizer_step_bytes: one state-sized temporary (sqrt of exp_avg_sq)."""
    _, tracked, ours = measured(name)
    temporaries = tracked.phases["optimizer"].group("optimizer") - tracked.state_bytes
    assert ours.step == pytest.approx(temporaries, rel=1e-4)




@pytest.mark.parametrize("name", ["single-bf16", "fsdp-reshard"])
def test_loss_side_at_the_loss_peak(name):
    case, tracked, ours = measured(name)
    t = tokens_of(case)
    backward = tracked.phases["backward"].categories
    tracked_loss = loss_side_saved(t) + INT64 * t + backward["Temp"]  # + targets
    assert ours.components["logits"] == pytest.approx(tracked_loss, rel=TOLERANCE)




def ours_sharded_and_gathered(case):
    """Our parameter bytes (weights + master_weights) split into what FSDP shards (the part that
    halves when the ranks double) and what is gathered (the rest)."""
    def parameters(world):
        components = step.ours(dataclasses.replace(case, world_size=world)).components
        return components["weights"] + components["master_weights"]

    sharded = 2 * (parameters(case.world_size) - parameters(2 * case.world_size))
    return sharded, parameters(case.world_size) - sharded


@pytest.mark.parametrize("name", [
    "fsdp-reshard",
    "fsdp-frozen",
    "fsdp-lora",
    "fsdp-qlora",
])
def test_fsdp_sharded_parameters(name):
    case, tracked, _ = measured(name)
    sharded, _ = ours_sharded_and_gathered(case)
    assert sharded == pytest.approx(
        tracked.phases["backward"].categories["Sharded Param"], rel=TOLERANCE)




@pytest.mark.parametrize("name", [
    "fsdp-reshard",
    "fsdp-no-reshard",
])
def test_fsdp_gathered_parameters(name):
    case, tracked, _ = measured(name)
    backward = tracked.phases["backward"].categories
    _, gathered = ours_sharded_and_gathered(case)
    assert gathered == pytest.approx(
        backward["Unsharded Param"] + backward["All Gather"], rel=TOLERANCE)


AUTOCAST_ACTIVATIONS = ("bf16-autocast activations use the bf16 element size throughout; autocast "
                        "saves fp32 norm inputs, one bf16 input cast per linear (q, k, v and "
                        "gate, up each cast the fp32 norm output: +10·T·h per block over bf16), "
                        "bf16 casts of every block and head weight (2·(P - embedding), the "
                        "autocast weight cache) and fp32 RoPE tables")


@pytest.mark.parametrize("name", [
    "single-bf16", "single-fp32", "fsdp-reshard",
    "single-frozen",
    "fsdp-frozen",
    "single-checkpoint",
    "fsdp-lora",
    "single-autocast",
])
def test_saved_activations_at_the_loss_peak(name):
    """Ours `activations` (blocks, embedding ids, RoPE, head side) against the tracked
    forward-pass tensors at the loss peak, less the loss side and the loss scalar, plus the ids
    (the trackers count them as inputs)."""
    case, tracked, ours = measured(name)
    t = tokens_of(case)
    backward = tracked.phases["backward"].categories
    saved = backward["Activation"] - LOSS_SCALAR - loss_side_saved(t) + INT64 * t
    if case.precision == "bf16-autocast":
        # autocast's bf16 weight casts are saved tensors to the tracker; ours counts them with
        # the weights (they scale with the parameters, not the tokens).
        saved -= BF16 * (case.blocks * BLOCK_LINEAR + V * H)
    assert ours.components["activations"] == pytest.approx(saved, rel=TOLERANCE)


@pytest.mark.parametrize("name", list(CASES))
def test_peak_within_3_percent(name):
    """Our peak allocated (static + max(dynamic, step)) against the tracked peak of the step."""
    _, tracked, ours = measured(name)
    assert ours.allocated == pytest.approx(tracked.peak.total, rel=TOLERANCE)
