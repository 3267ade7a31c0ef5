"""Ground truth on a real GPU: the same whole-step cases as sweep/measure/step.py, run with real
tensors on CUDA, and PyTorch's allocator statistics against our estimate.

Each case runs one warm-up step, then `torch.cuda.reset_peak_memory_stats()` and one measured
step, and records `torch.cuda.max_memory_allocated()` (every tensor's bytes, rounded up to the
allocator's 512-byte blocks), `torch.cuda.max_memory_reserved()` (the caching allocator's
segments) and `torch.cuda.memory_allocated()` after the step (what persists). Multi-rank FSDP2
cases run on one GPU with a fake process group of n ranks (`init_process_group("fake")`): the
collectives move no data, but every buffer FSDP2 allocates, shards and all-gather outputs
included, has its real size, so the allocation pattern of rank 0 of n is reproduced.

The measured (allocated, reserved) pairs give the allocator's fragmentation, 1 - allocated /
reserved at the peak, the figure `TrainConfig.fragmentation` stands for. Run with
`python run_sweep.py validate --gpu` on a machine with a CUDA GPU (torch with CUDA); it rewrites
docs/gpu_accuracy.md. Needs about 30 GiB of GPU memory for the default cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore

from sweep import catalog
from sweep.errors import SweepError
from sweep.measure import step
from sweep.measure.step_cases import StepCase, quick_cases
from sweep.memory.shard import FIRST
from sweep.memory.total import stage_memory

DOC = Path("docs/gpu_accuracy.md")
COMMAND = "python run_sweep.py validate --gpu"
GIB = 2**30


@dataclass(frozen=True)
class CudaPeak:
    """PyTorch's allocator statistics of one measured step."""

    max_allocated: int
    max_reserved: int
    allocated_after: int

    @property
    def fragmentation(self) -> float:
        """Share of the reserved peak not allocated at the allocated peak's scale."""
        return 1 - self.max_allocated / self.max_reserved if self.max_reserved else 0.0


@contextlib.contextmanager
def _cuda_world(world_size: int):
    if world_size == 1:
        yield None
        return
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield init_device_mesh("cuda", (world_size,))
    finally:
        dist.destroy_process_group()


def _forward_context(case: StepCase):
    if case.precision == "bf16-autocast":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_step(model, optimizer, batch, case: StepCase) -> None:
    for _ in range(case.grad_accum):
        with _forward_context(case):
            loss = model(*batch)
        loss.backward()
        del loss
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(case: StepCase) -> CudaPeak:
    """One measured steady-state step of `case` on the current CUDA device."""
    torch.cuda.empty_cache()
    with _cuda_world(case.world_size) as mesh, torch.device("cuda"):
        model = step.build_model(case)
        if case.wrap != "none":
            step.wrap(model, case, mesh)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=step.LEARNING_RATE, foreach=True)
        vocab = int(case.arch.vocab_size)
        batch = tuple(torch.randint(0, vocab, (case.micro_batch, case.seq_len))
                      for _ in range(2))
        _train_step(model, optimizer, batch, case)  # warm-up: optimizer states, workspaces
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _train_step(model, optimizer, batch, case)
        torch.cuda.synchronize()
        peak = CudaPeak(torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(),
                        torch.cuda.memory_allocated())
        del model, optimizer, batch
    return peak


def ours_allocated(case: StepCase, gpu: str) -> float:
    """Our peak allocated bytes for the case on `gpu`, with CUDA's byte layouts (bool dropout
    masks, fp32 norm statistics) and the GPU's BLAS workspaces; no overhead or fragmentation."""
    cfg = case.config.replace(device=0.0, fragmentation=0.0)
    hw = catalog.gpu(gpu).hardware()
    hw = dataclasses.replace(hw, memory_bytes=2.0**60, host_memory_bytes_per_node=2.0**70)
    as_f64 = step._float64
    return float(stage_memory(as_f64(case.arch), as_f64(cfg), as_f64(hw), FIRST).allocated)


def run(cases: list[StepCase] | None = None, gpu: str | None = None) -> tuple[str, list[dict]]:
    """Every case measured on this machine's GPU (matched to a catalog name) and ours."""
    if not torch.cuda.is_available():
        raise SweepError("validate --gpu needs a CUDA GPU and a CUDA build of torch "
                         "(torch.cuda.is_available() is False).")
    name = torch.cuda.get_device_name()
    gpu = gpu or _catalog_name(name)
    rows = []
    for case in cases or quick_cases():
        measured = measure(case)
        ours = ours_allocated(case, gpu)
        rows.append({"case": case, "measured": measured, "ours": ours,
                     "error": ours / measured.max_allocated - 1})
    return f"{name} (catalog {gpu}), torch {torch.__version__}", rows


# torch.cuda.get_device_name() fragments -> catalog names, most specific first.
DEVICE_NAMES = (("gb200", "gb200"), ("b200", "b200"), ("h200", "h200-141gb"),
                ("h100 nvl", "h100-nvl-94gb"), ("h100", "h100-sxm-80gb"),
                ("a100-sxm4-80gb", "a100-80gb"), ("a100 80gb", "a100-80gb"),
                ("a100", "a100-40gb"), ("l40s", "l40s"), ("4090", "rtx-4090"),
                ("mi325x", "mi325x"), ("mi300x", "mi300x"))


def _catalog_name(device_name: str) -> str:
    key = device_name.lower()
    for fragment, name in DEVICE_NAMES:
        if fragment in key:
            return name
    raise SweepError(f"no catalog GPU matches {device_name!r}; give one with --gpu.")


def markdown(device: str, rows: list[dict]) -> str:
    errors = np.array([abs(r["error"]) for r in rows])
    fragmentation = np.array([r["measured"].fragmentation for r in rows])
    lines = [
        "# On a GPU: our peak allocated vs torch.cuda.max_memory_allocated",
        "",
        f"Regenerate with `{COMMAND}` on a machine with a CUDA GPU. Measured on {device}: "
        "the whole-step cases of `sweep/measure/step_cases.py` with real tensors (FSDP2 "
        "cases on one GPU with a fake process group of N ranks), one warm-up step, then "
        "the peak statistics of one step (see `sweep/measure/gpu.py`).",
        "",
        f"{len(rows)} cases; median |error| {np.median(errors):.1%}, largest "
        f"{errors.max():.1%}. Fragmentation 1 - max allocated / max reserved: median "
        f"{np.median(fragmentation):.1%}, range {fragmentation.min():.1%} to "
        f"{fragmentation.max():.1%} (the default `fragmentation` is 15%).",
        "",
        "| case | max allocated | ours | error | max reserved | fragmentation | "
        "allocated after the step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["measured"]
        lines.append(f"| {r['case'].name} | {m.max_allocated / GIB:.3f} | "
                     f"{r['ours'] / GIB:.3f} | {r['error']:+.1%} | {m.max_reserved / GIB:.3f} | "
                     f"{m.fragmentation:.1%} | {m.allocated_after / GIB:.3f} |")
    return "\n".join(lines) + "\n"


def write(path: Path = DOC) -> Path:
    device, rows = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(markdown(device, rows), encoding="utf-8")
    tmp.replace(path)
    return path
