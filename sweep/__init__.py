"""LLM training memory: jitted JAX formulas, evaluated one configuration at a time (`explain`)
or vmapped over grids of millions.

Public API:
    catalog.model(name_or_path), catalog.gpu(name)   -- catalogs, architecture files, Hugging
                                                        Face configs, snapshots, cached hub ids
    TrainConfig, Hardware, Architecture               -- the numeric pytrees the formulas take
    estimate(arch, cfg, hw)                           -- every memory component and the fit
    explain(model, gpu, **vocabulary)                 -- the same, exact, with sources
"""

from sweep import catalog
from sweep.config import Hardware, TrainConfig
from sweep.errors import SweepError
from sweep.memory.total import Estimate, estimate
from sweep.model import Architecture, ModelSpec, active_params, total_params

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "Estimate",
    "Hardware",
    "ModelSpec",
    "SweepError",
    "TrainConfig",
    "active_params",
    "catalog",
    "estimate",
    "total_params",
]
