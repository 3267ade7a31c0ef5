"""Step time and cost of training: FLOPs, achievable efficiency, communication, schedules.

`step_time(arch, cfg, hw)` -> `StepTime` (seconds per step, tokens/s, model FLOPs, MFU and a
`Breakdown` by cause), which is `combine(step_atoms(arch, cfg, hw))`: the atoms are the terms
on the sub-grids of their own axes, the combination a few operations per configuration (what
the sweep's kernel evaluates per configuration). `cost(step_s, tokens_per_step, n_gpus,
price_per_gpu_hour_usd, token_budget)` -> `Cost`. Pure functions of the same pytrees as the
memory formulas, written once for NumPy and `jax.jit` (`sweep/xp.py`). Modules: `flops`
(FLOPs per GEMM from the Linear inventory), `efficiency` (achievable rates, the calibrated
constants), `comms` (collectives per parallel dimension and the links they cross, overlap per
framework), `schedule` (pipeline bubbles), `step` (the step), `cost`, `validate` (the
comparison with published runs, docs/time_accuracy.md).
"""

from sweep.timing.comms import Overlap, framework_overlap
from sweep.timing.cost import Cost, cost
from sweep.timing.step import Breakdown, StepAtoms, StepTime, combine, step_atoms, step_time

__all__ = ["Breakdown", "Cost", "Overlap", "StepAtoms", "StepTime", "combine", "cost",
           "framework_overlap", "step_atoms", "step_time"]
