"""The sweep engine, in the order a run goes through it:

  kernel.py       one chunk decided and reduced on device (sides, plan, `ChunkResult`)
  exact.py        the float64 host path: near-capacity configurations, rows, the NumPy twin
  frontier.py     the kept cells and their exact Pareto frontier
  files.py        the rows, frontier, summary and manifest a run writes
  orchestrate.py  chunks over devices and processes, resumable state, progress: `run`
  peers.py        the processes of a multi-process run: barriers that carry a failure
"""

from sweep.engine.exact import evaluate_flat
from sweep.engine.files import configurations_frame
from sweep.engine.orchestrate import run

__all__ = ["configurations_frame", "evaluate_flat", "run"]
