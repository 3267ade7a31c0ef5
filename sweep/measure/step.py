"""Ground truth for a whole training step: the peak memory of forward, backward and the optimizer
step of the reference model at real sizes, tracked by PyTorch's own trackers, and our estimate.

How it runs (as torchtitan's memory estimation, scripts/estimate/estimation.py at commit
76d5c72e2^ of pytorch/torchtitan): everything inside `FakeTensorMode`, so that 8B and 70B
blocks allocate nothing; FSDP2 (`fully_shard` per block and on the root) on a fake process group
(`init_process_group("fake")`, the device mesh built before entering the fake mode); tracked by
`torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker` (FSDP2) or
`torch.distributed._tools.mem_tracker.MemTracker` (one rank), with garbage collection off while
tracking. Both attribute every tensor storage to a category when it is created (parameters,
gradients, optimizer states, activations from the forward pass, temporaries of the backward
pass, FSDP2's all-gather and reduce-scatter buffers, ...) and keep a snapshot at the peak.

One untracked warm-up step comes first: it creates the optimizer states, and it fills DTensor's
sharding-propagation cache, whose first-call fake allocations the trackers would otherwise count
inside the optimizer step (they are not memory on a real GPU). The tracked step is then a
steady-state step: `grad_accum` forward/backward passes and AdamW (foreach, the default on GPUs)
with `zero_grad(set_to_none=True)`. The peak is recorded separately for the forward passes, the
backward passes and the optimizer step.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._composable.replicate_with_fsdp import replicate
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

from sweep.config import Hardware, TrainConfig
from sweep.measure.reference import DecoderModel, Options, add_adapters
from sweep.measure.step_cases import StepCase
from sweep.memory.runtime import optimizer_step_bytes
from sweep.memory.shard import FIRST, stage_shard
from sweep.memory.total import estimate, stage_memory
from sweep.model import Architecture
from sweep.vocabulary import LORA_TARGETS

PHASES = ("forward", "backward", "optimizer")
TOTAL = "Total"  # the trackers' key for the sum of all categories
LEARNING_RATE = 1e-4

# The trackers' categories (`_MemRefType`, `_FSDPRefType`) grouped as our components.
GROUPS = ("parameters", "gradients", "optimizer", "activations", "buffers")
TRACKER_GROUP = {
    "Parameter": "parameters", "Buffer": "parameters", "Sharded Param": "parameters",
    "Unsharded Param": "parameters", "All Gather": "parameters",
    "Gradient": "gradients", "Sharded Grad": "gradients", "Unsharded Grad": "gradients",
    "Optstate": "optimizer", "OptState": "optimizer",
    "Activation": "activations", "Temp": "activations", "Inputs": "activations",
    "Other": "activations",  # the input ids and targets (MemTracker.track_external)
    "Reduce Scatter": "buffers",
}
# Our estimate never fills the machine: capacity plays no part in the allocated bytes.
UNLIMITED = Hardware(memory_bytes=2.0**60, usable_fraction=1.0,
                     host_memory_bytes_per_node=2.0**70, runtime_overhead_bytes=0.0)


@dataclass(frozen=True)
class PhasePeak:
    """The tracker's snapshot at the peak of one phase: total, bytes per category, and the
    innermost module running at that moment ("" outside every module: the optimizer step)."""

    total: int
    categories: dict
    module: str = ""

    def group(self, name: str) -> int:
        return sum(v for k, v in self.categories.items() if TRACKER_GROUP[k] == name)


@dataclass(frozen=True)
class Tracked:
    """What the tracker saw in one steady-state step."""

    phases: dict  # phase name -> PhasePeak
    state_bytes: int  # the optimizer's state tensors (exp_avg, exp_avg_sq, step) after the step

    @property
    def peak(self) -> PhasePeak:
        return max(self.phases.values(), key=lambda p: p.total)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: self.phases[name].total)


# ---- building and running ----------------------------------------------------------------------


class FrozenAwareMemTracker(MemTracker):
    """`MemTracker` for models with frozen parameters: torch 2.13's tracker registers a gradient
    hook on every parameter of each module it meets (`_track_module_params_and_buffers`), which
    raises on a parameter that does not require grad. Here the parameters and buffers are
    tracked as there, and the same gradient hooks (re-categorising a parameter's gradient as
    `Gradient`) are put on the trainable parameters only."""

    def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
        memory = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
        if not install_grad_hooks:
            return memory

        def as_gradient(grad):
            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

        for param in module.parameters():
            if param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:
                self._param_to_grad_hook_handles[param] = (
                    param.register_hook(as_gradient),
                    param.register_post_accumulate_grad_hook(lambda p: as_gradient(p.grad)),
                )
        return memory



@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def fake_world(world_size: int):
    """A fake process group of `world_size` ranks (this process is rank 0) and its 1-D CPU mesh,
    built outside FakeTensorMode (inside it the mesh constructor fails on a data-dependent
    `tolist`); None for one rank."""
    if world_size == 1:
        yield None
        return
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield init_device_mesh("cpu", (world_size,))
    finally:
        dist.destroy_process_group()


def storage_dtype(case: StepCase) -> torch.dtype:
    """The dtype the (base) parameters are stored in: bf16 for pure bf16 and for LoRA/QLoRA
    frozen bases, else fp32 (FSDP2 mixed precision and autocast keep fp32 parameters)."""
    if case.precision == "bf16" or case.finetune != "full":
        return torch.bfloat16
    return torch.float32


def build_model(case: StepCase) -> DecoderModel:
    """The reference model of the case, with its adapters or frozen leading blocks."""
    with _default_dtype(storage_dtype(case)):
        model = DecoderModel(case.arch, Options(recompute=case.recompute)).train()
    if case.finetune != "full":
        adapter_dtype = torch.float32 if case.precision == "bf16-mixed" else storage_dtype(case)
        add_adapters(model, case.lora_rank, LORA_TARGETS, quantize=case.finetune == "qlora",
                     adapter_dtype=adapter_dtype)
    elif case.frozen_layers:
        model.embed.requires_grad_(False)
        for block in model.blocks[: case.frozen_layers]:
            block.requires_grad_(False)
    return model


def wrap(model: DecoderModel, case: StepCase, mesh) -> None:
    """`fully_shard` (or `replicate`) every block, then the root (embedding, final norm, head),
    the root with FSDP2's default, which keeps its parameters gathered from forward to
    backward. `replicate` (torch/distributed/_composable/replicate_with_fsdp.py) is DDP on
    FSDP2's machinery: every rank holds all parameters, the mixed-precision copies of a unit
    are made in its forward and kept to its backward, gradients are all-reduced per unit."""
    bf16_compute = case.precision == "bf16-mixed"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if bf16_compute else MixedPrecisionPolicy()
    if case.wrap == "replicate":
        for module in (*model.blocks, model):
            replicate(module, mesh=mesh, mp_policy=policy)
        return
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy,
                    reshard_after_forward=case.reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy)  # the root: FSDP2's default, no reshard


def _forward_context(case: StepCase):
    if case.precision == "bf16-autocast":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _restart_peak(tracker: MemTracker) -> None:
    """Start a new peak from the current snapshot (the trackers keep one running peak)."""
    tracker._peak_mem_snap = tracker.get_tracker_snapshot()
    tracker._peak_mem = {dev: snap[TOTAL] for dev, snap in tracker._peak_mem_snap.items()}


def _local_peaks(tracker: MemTracker) -> dict:
    return {stats.mod_fqn: dict(stats.local_peak) for stats in tracker.memory_tracking.values()}


def _peak(tracker: MemTracker, local_peaks_before: dict) -> PhasePeak:
    """The phase's peak snapshot, and the deepest module whose own peak (the trackers keep
    one per module) became this peak during the phase: the module running at the peak."""
    snapshot = tracker.get_tracker_snapshot("peak")
    if len(snapshot) != 1:
        raise AssertionError(f"expected one device, tracked {list(snapshot)}")
    ((device, categories),) = snapshot.items()
    total = int(categories[TOTAL])
    named = {getattr(k, "value", k): int(v) for k, v in categories.items() if k != TOTAL}
    at_peak = [fqn for fqn, peaks in _local_peaks(tracker).items()
               if peaks.get(device) == total and local_peaks_before.get(fqn) != peaks]
    module = max(at_peak, key=lambda fqn: fqn.count("."), default="")
    return PhasePeak(total=total, categories=named, module=module)


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.untyped_storage().nbytes()


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(_local_bytes(v) for state in optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def _step(model, optimizer, batch, case: StepCase, tracker=None, peaks=None) -> None:
    """One training step; with a tracker, the peak of each phase is kept in `peaks`."""

    def phase(name, run):
        if tracker is not None:
            _restart_peak(tracker)
            before = _local_peaks(tracker)
        result = run()
        if tracker is not None:
            measured = _peak(tracker, before)
            if name not in peaks or measured.total > peaks[name].total:
                peaks[name] = measured
        return result

    for _ in range(case.grad_accum):
        if tracker is not None:
            tracker.reset_mod_stats()  # a tracker refuses a second forward of the root otherwise

        def forward():
            with _forward_context(case):
                return model(*batch)

        loss = phase("forward", forward)
        phase("backward", loss.backward)
        del loss

    def update():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    phase("optimizer", update)


def measure(case: StepCase) -> Tracked:
    """Track one steady-state training step of `case` (see the module docstring)."""
    with fake_world(case.world_size) as mesh, FakeTensorMode():
        model = build_model(case)
        if case.wrap != "none":
            wrap(model, case, mesh)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, foreach=True)
        vocab = int(case.arch.vocab_size)
        batch = tuple(torch.randint(0, vocab, (case.micro_batch, case.seq_len))
                      for _ in range(2))
        _step(model, optimizer, batch, case)  # warm-up: optimizer states, DTensor caches
        if case.wrap != "none":
            tracker = FSDPMemTracker(model, optimizer)
            tracker.track_inputs(batch)
        else:
            tracker = FrozenAwareMemTracker()
            tracker.track_external(model, optimizer, *batch)
        peaks: dict = {}
        gc.collect()
        gc.disable()
        try:
            with tracker:
                _step(model, optimizer, batch, case, tracker, peaks)
        finally:
            gc.enable()
        return Tracked(phases={name: peaks[name] for name in PHASES},
                       state_bytes=state_bytes(optimizer))


# ---- our estimate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    """Our estimate for the case in float64 (total.py `stage_memory`, no overhead): the
    components at our two peaks, the start of backward (`components`) and the end of backward
    / optimizer step (`step_components`), and the optimizer step's transient (`step`)."""

    components: dict
    step_components: dict
    step: float

    @property
    def allocated(self) -> float:
        return max(self.phase_total("backward"), self.phase_total("optimizer"))

    def phase_groups(self, phase: str) -> dict:
        """Our bytes at the peak of a tracked phase, grouped as `TRACKER_GROUP`: the forward
        and backward passes as our start of backward, the optimizer step as our step phase."""
        c = self.step_components if phase == "optimizer" else self.components
        return {
            "parameters": c["weights"] + c["master_weights"],
            "gradients": c["gradients"],
            "optimizer": c["optimizer_states"],
            "activations": c["activations"] + c["logits"],
            "buffers": c["buffers"],
        }

    def phase_total(self, phase: str) -> float:
        return sum(self.phase_groups(phase).values())

    @property
    def peak_phase(self) -> str:
        """Where our estimate puts the peak: the optimizer step (with the end of backward) or
        the training passes."""
        return "optimizer" if self.phase_total("optimizer") > self.phase_total("backward") \
            else "backward"


def _float64(pytree):
    return type(pytree)(**{k: np.float64(v) for k, v in asdict(pytree).items()})


def ours(case: StepCase) -> Ours:
    """`sweep.memory.total.stage_memory` for the case's Architecture and TrainConfig (pp = 1:
    the first stage is the last), without overhead or fragmentation."""
    arch: Architecture = _float64(case.arch)
    cfg: TrainConfig = _float64(case.config)
    hw: Hardware = _float64(UNLIMITED)
    memory = stage_memory(arch, cfg, hw, FIRST)
    backward, step = ({k: float(v) for k, v in phase.items() if k != "overhead"}
                      for phase in memory.phases)
    transient = float(optimizer_step_bytes(stage_shard(arch, cfg, FIRST), cfg))
    out = Ours(backward, step, transient)
    total = float(estimate(arch, cfg, hw).per_gpu_total_bytes)
    if abs(out.allocated - total) > 1e-6 * out.allocated:
        raise AssertionError("the two phases' maximum differs from per_gpu_total_bytes")
    return out


def run(cases: list[StepCase]) -> list[dict]:
    """Every case: tracked and ours, per phase and overall."""
    rows = []
    for case in cases:
        tracked, predicted = measure(case), ours(case)
        rows.append({"case": case, "tracked": tracked, "ours": predicted,
                     "error": predicted.allocated / tracked.peak.total - 1})
    return rows
