"""Grid files (TOML): parse, validate, resolve catalog names; every axis becomes a small array.

```toml
name = "example"                       # default: the file's stem
[axes]                                 # any vocabulary key; unnamed keys keep their default
model = ["llama-3.1-8b", "arch.toml"]  # catalog names, architecture files, config.json,
                                       # snapshot dirs, cached hub ids ("org/name"), inline
                                       # tables {name = "x", hidden_size = ..., ...} (keys of
                                       # sweep/architecture.py), {family = "llama3", params = ...}
gpu = ["h100-sxm-80gb", "a100-80gb"]
n_gpus = {pow2 = [8, 1024]}            # also {range = [start, stop, step]} (inclusive),
seq_len = [4096, 8192]                 #      {log_range = [low, high, count]}
zero_stage = [1, 2, 3]
[constraints]
tp_within_node = true                  # tp <= gpus_per_node (default true)
whole_nodes = false                    # n_gpus a multiple of gpus_per_node
global_batch_tokens = 4194304          # grad_accum = tokens/(micro_batch·seq_len·D), whole
native_frameworks = false              # each accelerator with its own software: GPUs with
                                       # DeepSpeed/Megatron/FSDP, TPUs with generic (XLA)
[cost]
token_budget = 1e12                    # tokens to train on: days_to_train, cost_to_train
price_per_gpu_hour_usd = 2.5           # every GPU, or {"h100-sxm-80gb" = 2.5, ...}
                                       # (default: the catalog's cited price)
[frontier]
group_by = ["gpu"]
objectives = ["-n_gpus", "+params", "+seq_len", "+tokens_per_gpu"]
[output]
dir = "outputs/example"                # default outputs/<name>
feasible_dump = false                  # also write every feasible configuration
```

Errors name the file and the key, and say what is allowed (`SweepError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from sweep import architecture, catalog, families
from sweep import vocabulary as vocab
from sweep.catalog import GpuSpec
from sweep.config import BOOLEAN, TrainConfig, value_problem
from sweep.errors import SweepError
from sweep.model import Architecture, ModelSpec, total_params
from sweep.outdir import check_name, check_path, safe_name
from sweep.outputs import BUDGET_QUANTITIES, OBJECTIVES, TIME_QUANTITIES
from sweep.timing.cost import MAX_PRICE_PER_GPU_HOUR_USD

CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))
KINDS = {f.name: f.metadata["kind"] for f in fields(TrainConfig)}
BOOLEAN_KEYS = tuple(k for k, kind in KINDS.items() if kind == BOOLEAN)
AXIS_KEYS = ("model", "gpu", *CONFIG_KEYS)
# Canonical axis order: the order of dimensions in the evaluated arrays (outer first).
AXIS_ORDER = AXIS_KEYS
DERIVED_OBJECTIVES = OBJECTIVES  # computed per configuration (sweep/outputs.py)
DEFAULT_OBJECTIVES = ("-n_gpus", "+params", "+seq_len", "+tokens_per_gpu")
TOP_LEVEL = ("name", "description", "axes", "constraints", "cost", "frontier", "output")
COST_KEYS = ("token_budget", "price_per_gpu_hour_usd")
CONSTRAINT_KEYS = ("tp_within_node", "whole_nodes", "global_batch_tokens", "native_frameworks")
FRONTIER_KEYS = ("group_by", "objectives")
OUTPUT_KEYS = ("dir", "feasible_dump", "chunk_size")
DEFAULT_CHUNK_SIZE = 1 << 24
MIN_CHUNK_SIZE = 64  # smaller chunks cost more in bookkeeping than they evaluate


@dataclass(frozen=True)
class Axis:
    """One grid axis: numeric `values` (codes for categories) and their printable `labels`."""

    name: str
    values: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Objective:
    key: str
    maximize: bool

    @property
    def text(self) -> str:
        return ("+" if self.maximize else "-") + self.key


@dataclass(frozen=True)
class Grid:
    name: str
    path: str
    text: str
    axes: tuple[Axis, ...]  # every axis key, in AXIS_ORDER; length-1 axes are constants
    models: tuple[ModelSpec, ...]
    gpus: tuple[GpuSpec, ...]
    tp_within_node: bool = True
    whole_nodes: bool = False
    native_frameworks: bool = False
    global_batch_tokens: float = 0.0
    token_budget: float = 0.0  # tokens to train on (0: none)
    group_by: tuple[str, ...] = ("gpu",)
    objectives: tuple[Objective, ...] = ()
    output_dir: str = ""
    feasible_dump: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    gpus_per_node_from_gpu: bool = True
    description: str = ""

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    @property
    def size(self) -> int:
        return math.prod(len(a) for a in self.axes)

    @property
    def swept(self) -> tuple[Axis, ...]:
        """Axes with more than one value: the dimensions of the evaluated arrays."""
        return tuple(a for a in self.axes if len(a) > 1)


class _Where:
    """Error-message context: the file and the key path."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, message: str):
        raise SweepError(f"{self.path}: `{key}`: {message}")


def _check_keys(where: _Where, table: dict, allowed, prefix: str):
    if not isinstance(table, dict):
        where.fail(prefix.rstrip("."), f"must be a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            where.fail(prefix + key, f"unknown key.{vocab.did_you_mean(key, list(allowed))} "
                                     f"Allowed: {', '.join(allowed)}.")


MAX_AXIS_VALUES = 100_000  # values of one axis (a range table is counted before listing)
MAX_MODELS = 2_000  # models of one grid (each is resolved and counted before the sweep)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    return _is_number(v) and math.isfinite(v)


def _numbers(where: _Where, key: str, spec) -> list[float]:
    """A numeric axis: a list, or {pow2 = [lo, hi]}, {range = [a, b, step]}, {log_range}:
    finite values, at most `MAX_AXIS_VALUES`, none listed twice; in ascending order."""
    if _is_number(spec):
        spec = [spec]
    if isinstance(spec, list):
        if not all(_is_number(v) for v in spec):
            where.fail(key, f"values must be numbers, got {spec!r}")
        values = [float(v) for v in spec]
    elif isinstance(spec, dict) and len(spec) == 1:
        (kind, args), = spec.items()
        ok = isinstance(args, list) and all(_is_finite(v) for v in args)
        count = None
        if kind == "pow2" and ok and len(args) == 2 and 0 < args[0] <= args[1]:
            lo, hi = math.ceil(math.log2(args[0])), math.floor(math.log2(args[1]))
            count = hi - lo + 1
        elif kind == "range" and ok and len(args) == 3 and args[2] > 0 and args[0] <= args[1]:
            count = int(math.floor((args[1] - args[0]) / args[2] + 1e-9)) + 1
        elif kind == "log_range" and ok and len(args) == 3 and 0 < args[0] <= args[1] \
                and args[2] >= 1 and float(args[2]).is_integer():
            count = int(args[2])
        else:
            where.fail(key, "range must be {pow2 = [low, high]}, {range = [start, stop, step]} "
                            "or {log_range = [low, high, count]} of finite numbers, got "
                            f"{spec!r}")
        if count > MAX_AXIS_VALUES:
            where.fail(key, f"{spec!r} lists {count:,} values; at most {MAX_AXIS_VALUES:,} per "
                            "axis")
        if kind == "pow2":
            values = [float(2**i) for i in range(lo, hi + 1)]
        elif kind == "range":
            values = [float(args[0] + i * args[2]) for i in range(count)]
        else:
            values = [float(args[0])] if count == 1 else [
                float(args[0] * (args[1] / args[0]) ** (i / (count - 1))) for i in range(count)]
    else:
        where.fail(key, f"must be a list of values or a range table, got {spec!r}")
    if not values:
        where.fail(key, "is empty; give at least one value")
    if len(values) > MAX_AXIS_VALUES:
        where.fail(key, f"lists {len(values):,} values; at most {MAX_AXIS_VALUES:,} per axis")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        where.fail(key, f"values must be finite, got {bad[0]!r}")
    repeated = sorted({v for v in values if values.count(v) > 1}) if len(values) < 1000 else \
        sorted(v for v, n in zip(*np.unique(values, return_counts=True), strict=True) if n > 1)
    if repeated:
        where.fail(key, f"values listed twice: {', '.join(f'{v:g}' for v in repeated)}")
    return sorted(values)


def _unique(where: _Where, key: str, values: list, shown) -> list:
    """`values` sorted; a value listed twice (in any spelling) is an error naming it."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        where.fail(key, f"listed twice: {', '.join(str(shown(v)) for v in repeated)}")
    return sorted(values)


def _axis(where: _Where, name: str, spec) -> Axis:
    """A vocabulary-key axis: categories as codes, booleans as 0/1, numbers sorted."""
    key = f"axes.{name}"
    if name in vocab.CATEGORIES:
        items = spec if isinstance(spec, list) else [spec]
        if not items:
            where.fail(key, "is empty; give at least one value")
        codes = []
        for item in items:
            if not isinstance(item, str):
                where.fail(key, f"values must be strings among {list(vocab.CATEGORIES[name])}")
            try:
                codes.append(vocab.encode(name, item))
            except SweepError as err:
                where.fail(key, str(err))
        codes = _unique(where, key, codes, lambda c: vocab.decode(name, c))
        return Axis(name, np.array(codes, float), tuple(vocab.decode(name, c) for c in codes))
    if name in BOOLEAN_KEYS:
        items = spec if isinstance(spec, list) else [spec]
        if not items or not all(isinstance(v, bool) for v in items):
            where.fail(key, f"must be true, false or a list of them, got {spec!r}")
        values = _unique(where, key, [float(v) for v in items], lambda v: str(bool(v)).lower())
        return Axis(name, np.array(values), tuple(str(bool(v)).lower() for v in values))
    if name == "lora_targets":
        items = spec if isinstance(spec, list) else [spec]
        if not items or not all(isinstance(v, str) for v in items):
            where.fail(key, f"must be module lists like \"q_proj,v_proj\" or \"all-linear\", "
                            f"got {spec!r}")
        try:
            codes = [float(vocab.encode_lora_targets(v)) for v in items]
        except SweepError as err:
            where.fail(key, str(err))
        codes = _unique(where, key, codes, vocab.decode_lora_targets)
        return Axis(name, np.array(codes), tuple(vocab.decode_lora_targets(c) for c in codes))
    values = _numbers(where, key, spec)
    for value in values:
        problem = value_problem(name, value)
        if problem:
            where.fail(key, problem)
    return Axis(name, np.array(values), tuple(f"{v:g}" for v in values))


def _models(where: _Where, spec) -> tuple[ModelSpec, ...]:
    """The model axis: names/paths (catalog, architecture files, config.json, snapshot
    directories, cached hub ids), inline architecture tables, and family rules
    `{family = ..., params = ...}`, alone or in a list."""
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        where.fail("axes.model", "is empty; name at least one model")
    out = []
    for index, item in enumerate(items):
        key = "axes.model" if len(items) == 1 and not isinstance(spec, list) \
            else f"axes.model[{index}]"
        if isinstance(item, str):
            out.extend(_looked_up(where, key, item, catalog.model, _MODEL_ITEMS))
        elif isinstance(item, dict) and "params" in item:
            out.extend(_family_models(where, key, item))
        elif isinstance(item, dict):
            if "name" not in item:
                where.fail(f"{key}.name", "missing: an inline architecture table needs a name "
                                          "(its label in the outputs)")
            out.append(architecture.spec_from_table(item, f"{where.path}: {key}", item["name"],
                                                    f"{where.path} ({key})"))
        else:
            where.fail(key, _MODEL_ITEMS)
    names = [m.name for m in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        where.fail("axes.model", f"the same model listed twice (in any spelling): {repeated}")
    if len(out) > MAX_MODELS:
        where.fail("axes.model", f"{len(out):,} models; at most {MAX_MODELS:,} per grid (a "
                                 "family's largest model is `largest`'s job)")
    return tuple(out)


_MODEL_ITEMS = ("must be catalog names, architecture files, config.json paths or cached hub ids, "
                "inline architecture tables {name = ..., hidden_size = ..., ...}, or "
                "{family = ..., params = ...}")


def _family_models(where: _Where, key: str, spec: dict) -> list[ModelSpec]:
    _check_keys(where, spec, ("family", "params"), key + ".")
    if "family" not in spec:
        where.fail(f"{key}.family", f"missing: one of {list(families.FAMILIES)}")
    params = _numbers(where, f"{key}.params", spec["params"])
    if min(params) < families.MIN_PARAMS:
        where.fail(f"{key}.params", f"parameter counts must be >= {families.MIN_PARAMS:g}, got "
                                    f"{min(params):g}")
    if len(params) > MAX_MODELS:
        where.fail(f"{key}.params", f"{len(params):,} sizes; at most {MAX_MODELS:,} models")
    try:
        return [families.model_spec(spec["family"], target) for target in params]
    except SweepError as err:
        where.fail(key, str(err))


def _looked_up(where: _Where, key: str, spec, lookup, expected: str) -> tuple:
    """Catalog entries for a name or list of names, in order, without repeats."""
    names = spec if isinstance(spec, list) else [spec]
    if not names or not all(isinstance(n, str) for n in names):
        where.fail(key, expected)
    out = []
    for name in dict.fromkeys(names):
        try:
            out.append(lookup(name))
        except SweepError as err:
            where.fail(key, str(err))
    return tuple(out)


def _cost(where: _Where, cost, gpus) -> tuple[float, tuple[GpuSpec, ...]]:
    """(token budget, the GPUs with the grid's prices) from the `[cost]` table."""
    if not isinstance(cost, dict):
        where.fail("cost", "must be a table with token_budget and price_per_gpu_hour_usd")
    _check_keys(where, cost, COST_KEYS, "cost.")
    budget = cost.get("token_budget", 0)
    if not _is_finite(budget) or budget < 0:
        where.fail("cost.token_budget", f"must be a finite number of tokens >= 0 (0: none), "
                                        f"got {budget!r}")

    def price(key, value):
        if not _is_finite(value) or not 0 <= value <= MAX_PRICE_PER_GPU_HOUR_USD:
            where.fail(key, f"must be USD per GPU-hour in 0..{MAX_PRICE_PER_GPU_HOUR_USD:g}, "
                            f"got {value!r}")
        return float(value)

    prices = cost.get("price_per_gpu_hour_usd")
    if prices is None:
        return float(budget), gpus
    if isinstance(prices, dict):
        names = {g.name for g in gpus}
        for name in prices:
            if name not in names:
                where.fail(f"cost.price_per_gpu_hour_usd.{name}",
                           f"is not a GPU of axes.gpu ({sorted(names)})")
        table = {name: price(f"cost.price_per_gpu_hour_usd.{name}", v)
                 for name, v in prices.items()}
    else:
        table = {g.name: price("cost.price_per_gpu_hour_usd", prices) for g in gpus}
    return float(budget), tuple(
        dataclasses.replace(g, price_per_gpu_hour_usd=table[g.name]) if g.name in table else g
        for g in gpus)


def _objectives(where: _Where, items, axis_keys) -> tuple[Objective, ...]:
    if not isinstance(items, list) or not items:
        where.fail("frontier.objectives",
                   "must be a non-empty list like [\"-n_gpus\", \"+params\"]")
    allowed = [*axis_keys, "params", *DERIVED_OBJECTIVES]
    out = []
    for item in items:
        if not isinstance(item, str) or item[:1] not in "+-" or item[1:] not in allowed:
            where.fail("frontier.objectives", f"{item!r}: each objective is '+key' (maximise) or "
                       f"'-key' (minimise) with key among {allowed}")
        out.append(Objective(item[1:], item[0] == "+"))
    derived = [o for o in out if o.key in DERIVED_OBJECTIVES]
    if len(derived) > 1:
        where.fail("frontier.objectives", f"at most one objective may be computed per "
                   f"configuration ({list(DERIVED_OBJECTIVES)}); the others must be grid axes")
    keys = [o.key for o in out]
    if len(set(keys)) != len(keys):
        where.fail("frontier.objectives", "an objective is listed twice")
    return tuple(out)


def parse(text: str, path: str = "<grid>") -> Grid:
    """Parse and validate a grid file's text."""
    where = _Where(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: not valid TOML ({err}).") from None
    _check_keys(where, raw, TOP_LEVEL, "")
    name = check_name(raw.get("name", safe_name(Path(path).stem)), path)
    axes_raw = raw.get("axes", {})
    _check_keys(where, axes_raw, AXIS_KEYS, "axes.")
    if "model" not in axes_raw:
        where.fail("axes.model", "missing: name at least one model")
    if "gpu" not in axes_raw:
        where.fail("axes.gpu", "missing: name at least one GPU")
    models = _models(where, axes_raw["model"])
    gpus = _looked_up(where, "axes.gpu", axes_raw["gpu"], catalog.gpu,
                      "must be a list of GPU catalog names")
    # The model axis is ordered by parameter count so that `params` is monotone along it.
    models = tuple(sorted(models, key=lambda m: float(total_params(m.arch))))
    axes = []
    defaults = TrainConfig()
    for key in AXIS_ORDER:
        if key == "model":
            axes.append(Axis("model", np.arange(len(models), dtype=float),
                             tuple(m.name for m in models)))
        elif key == "gpu":
            axes.append(Axis("gpu", np.arange(len(gpus), dtype=float),
                             tuple(g.name for g in gpus)))
        elif key in axes_raw:
            axes.append(_axis(where, key, axes_raw[key]))
        else:
            value = float(getattr(defaults, key))
            label = vocab.decode(key, value) if key in vocab.CATEGORIES else f"{value:g}"
            axes.append(Axis(key, np.array([value]), (label,)))

    constraints = raw.get("constraints", {})
    _check_keys(where, constraints, CONSTRAINT_KEYS, "constraints.")
    for key in ("tp_within_node", "whole_nodes", "native_frameworks"):
        if key in constraints and not isinstance(constraints[key], bool):
            where.fail(f"constraints.{key}", f"must be true or false, got {constraints[key]!r}")
    tokens = constraints.get("global_batch_tokens", 0)
    if not _is_finite(tokens) or tokens < 0 or not float(tokens).is_integer():
        where.fail("constraints.global_batch_tokens", f"must be a whole number of tokens >= 1 "
                                                      f"(0: no fixed batch), got {tokens!r}")
    if tokens and "grad_accum" in axes_raw:
        where.fail("constraints.global_batch_tokens", "fixes grad_accum; remove axes.grad_accum")

    token_budget, gpus = _cost(where, raw.get("cost", {}), gpus)

    frontier = raw.get("frontier", {})
    _check_keys(where, frontier, FRONTIER_KEYS, "frontier.")
    swept_numeric = [a.name for a in axes
                     if a.name not in vocab.CATEGORIES and a.name not in ("model", "gpu")]
    objectives = _objectives(where, frontier.get("objectives", list(DEFAULT_OBJECTIVES)),
                             swept_numeric)
    group_by = frontier.get("group_by", ["gpu"])
    if not isinstance(group_by, list) or not all(g in AXIS_KEYS for g in group_by):
        where.fail("frontier.group_by", f"must be a list of axis keys among {list(AXIS_KEYS)}, "
                                        f"got {group_by!r}")
    if len(set(group_by)) != len(group_by):
        where.fail("frontier.group_by", f"a key is listed twice: {group_by!r}")
    for o in objectives:
        if o.key in BUDGET_QUANTITIES and not token_budget:
            where.fail("frontier.objectives", f"{o.text!r} needs a token budget: set "
                                              "cost.token_budget (tokens to train on)")
        if o.key in TIME_QUANTITIES and (next(a for a in axes if a.name == "mode").values
                                         > 0).any():
            where.fail("frontier.objectives", f"{o.text!r} is a training step's time; "
                                              "axes.mode includes inference")
    clash = {g for g in group_by} & {o.key for o in objectives}
    if clash:
        where.fail("frontier.group_by", f"{sorted(clash)} cannot be both a group and an objective")

    output = raw.get("output", {})
    _check_keys(where, output, OUTPUT_KEYS, "output.")
    out_dir = str(check_path(output.get("dir", f"outputs/{name}"), path, "output.dir",
                             relative_only=True))
    dump = output.get("feasible_dump", False)
    if not isinstance(dump, bool):
        where.fail("output.feasible_dump", f"must be true or false, got {dump!r}")
    chunk = output.get("chunk_size", DEFAULT_CHUNK_SIZE)
    if isinstance(chunk, bool) or not isinstance(chunk, int) \
            or not MIN_CHUNK_SIZE <= chunk <= 1 << 30:
        where.fail("output.chunk_size", f"must be an integer in {MIN_CHUNK_SIZE}..2^30 "
                                        f"(configurations per chunk), got {chunk!r}")

    grid = Grid(
        name=name, path=path, text=text, axes=tuple(axes), models=models, gpus=gpus,
        tp_within_node=constraints.get("tp_within_node", True),
        whole_nodes=constraints.get("whole_nodes", False), global_batch_tokens=float(tokens),
        token_budget=token_budget,
        native_frameworks=constraints.get("native_frameworks", False),
        group_by=tuple(group_by), objectives=objectives, output_dir=out_dir,
        feasible_dump=dump, chunk_size=chunk,
        gpus_per_node_from_gpu="gpus_per_node" not in axes_raw,
        description=str(raw.get("description", "")),
    )
    _check_satisfiable(where, grid)
    return grid


def _check_satisfiable(where: _Where, grid: Grid) -> None:
    """Constraints that no point of the grid can meet are an error, not an empty result."""
    n_gpus = grid.axis("n_gpus").values
    tp = grid.axis("tp").values
    pp = grid.axis("pp").values
    cp = grid.axis("cp").values
    if min(tp) * min(pp) * min(cp) > max(n_gpus):
        where.fail("axes.n_gpus", f"every n_gpus ({max(n_gpus):g} at most) is below the smallest "
                                  f"tp·pp·cp ({min(tp) * min(pp) * min(cp):g})")
    gpn = [g.devices_per_node for g in grid.gpus] if grid.gpus_per_node_from_gpu \
        else list(grid.axis("gpus_per_node").values)
    if grid.tp_within_node and min(tp) > max(gpn):
        where.fail("constraints.tp_within_node", f"every tp ({min(tp):g} at least) exceeds the "
                                                 f"GPUs per node ({max(gpn):g} at most)")
    if grid.whole_nodes and max(n_gpus) < min(gpn):
        where.fail("constraints.whole_nodes", f"no n_gpus fills a node of {min(gpn):g} GPUs")


def with_axes(grid: Grid, **specs) -> Grid:
    """The grid with the named axes replaced (each spec as a grid file writes it: a list of
    names or numbers), checked as a grid file's axes are; the text records the change, so
    that the output directory knows it is another grid."""
    import dataclasses

    where = _Where(f"{grid.path} (command-line options)")
    replaced = {name: _axis(where, name, spec) for name, spec in specs.items()
                if name not in ("model", "gpu")}
    axes = tuple(replaced.get(a.name, a) for a in grid.axes)
    gpus = grid.gpus
    if "gpu" in specs:
        names = set(specs["gpu"])
        gpus = tuple(g for g in grid.gpus if g.name in names)
        keep = [i for i, g in enumerate(grid.gpus) if g.name in names]
        gpu_axis = Axis("gpu", np.arange(len(keep), dtype=float),
                        tuple(grid.gpus[i].name for i in keep))
        axes = tuple(gpu_axis if a.name == "gpu" else a for a in axes)
    note = "\n".join(f"# option: {name} = {spec!r}" for name, spec in specs.items())
    return dataclasses.replace(grid, axes=axes, gpus=gpus, text=grid.text + "\n" + note + "\n")


def shipped_grids() -> dict[str, Path]:
    """The grids that ship with the package, by name: `grids/` of the repository, installed
    as the package data `sweep.grids`, so that `grids/default.toml` works from any directory."""
    try:
        from importlib.resources import files

        folder = Path(str(files("sweep.grids")))
    except ModuleNotFoundError:  # running from a source tree: the repository's grids/
        folder = Path(__file__).resolve().parents[1] / "grids"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve(path: str | Path) -> Path:
    """`path` if it exists, else the shipped grid it names (`default`, `default.toml` or
    `grids/default.toml`); SweepError listing the shipped grids otherwise."""
    path = Path(path)
    if path.exists():
        return path
    shipped = shipped_grids()
    name = path.stem if path.suffix == ".toml" else path.name
    if name in shipped and (len(path.parts) == 1 or path.parent.name == "grids"):
        return shipped[name]
    hint = vocab.did_you_mean(name, list(shipped))
    raise SweepError(f"{path}: no such grid file. Shipped grids: {', '.join(shipped)} "
                     f"(`llm-memory-sweep grids` lists them).{hint}")


def load(path: str | Path) -> Grid:
    path = resolve(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"{path}: cannot read the grid file ({err}).") from None
    return parse(text, str(path))


def stacked_architectures(grid: Grid) -> Architecture:
    """The model axis as one Architecture of arrays (one entry per model)."""
    return Architecture(**{
        f.name: np.array([float(getattr(m.arch, f.name)) for m in grid.models])
        for f in fields(Architecture)
    })
