"""Rebuild reference/megatron/functional_tests.json: measured GPU memory of Megatron-LM's
functional tests, with each test's model and parallel configuration and world size.

    python reference/megatron/build.py PATH [--out reference/megatron/functional_tests.json]

PATH is a Megatron-LM checkout or its (bare) git directory; nothing else is read. What the
file holds, and why (at the commit the file names):

- tests/functional_tests/test_cases/<model>/<case>/model_config.yaml: `MODEL_ARGS`, the flags
  of the run (tests/functional_tests/shell_test_utils/_run_training.sh passes them to
  pretrain_gpt.py), read with sweep/megatron_args.py.
- golden_values_{dev,lts}_dgx_{a100,h100,gb200}.json next to it: per logged step,
  "mem-allocated-bytes" and "mem-max-allocated-bytes", which megatron/training/training.py
  `training_log` writes from `torch.cuda.memory_stats()` ("allocated_bytes.all.current" and
  "allocated_bytes.all.peak", the peak since the process started: no reset) to the
  TensorBoard writer, which megatron/training/global_vars.py `_set_tensorboard_writer` creates
  on rank world_size - 1 only. With Megatron's default rank order (tp-cp-ep-dp-pp, and
  tp-pp-dp with --use-tp-pp-dp-mapping) that rank is the last rank of every group: the last
  pipeline stage, the last tensor-, context-, expert- and data-parallel rank. The golden
  files are the first training run's TensorBoard scalars
  (tests/functional_tests/python_test_utils/get_test_results_from_tensorboard_logs.py keeps
  only iteration-time, the two memory metrics, the losses and num-zeros): "mem-reserved-bytes"
  is logged by training.py but not kept, so no reserved memory is available. TensorBoard
  stores scalars as float32 (relative rounding below 6e-8).
- tests/test_utils/recipes/<hw>/*.yaml: `nodes` and `gpus` (per node) of each (test case,
  environment, platform), products overriding the spec as
  tests/test_utils/python_scripts/recipe_parser.py flattens them ("world_size_from":
  "recipe row"). A golden file no recipe row runs any more takes the size of the same test's
  rows on the same node type (DGX A100/H100: 8 GPUs per node, GB200: 4) when they agree
  ("same node type").

Only GPT-family decoder models we can express are kept (dense, MoE, MLA); every other golden
file is listed under "skipped" with its reason.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sweep import megatron_args  # noqa: E402
from sweep.errors import SweepError  # noqa: E402
from sweep.model import Architecture  # noqa: E402

REPOSITORY = "NVIDIA/Megatron-LM"
CASES_DIR = "tests/functional_tests/test_cases"
RECIPES_DIR = "tests/test_utils/recipes"
OUT = ROOT / "reference" / "megatron" / "functional_tests.json"
METRIC_PEAK, METRIC_CURRENT = "mem-max-allocated-bytes", "mem-allocated-bytes"
# CI platform -> our GPU catalog name. The CI's A100 nodes are taken as 80 GB DGX A100s
# (the recipes do not say; every memory figure in the golden files is below 40 GiB anyway
# for the a100 runs we keep, so the choice only matters for capacity, not for the estimate).
HARDWARE = {"dgx_a100": "a100-80gb", "dgx_h100": "h100-sxm-80gb", "dgx_gb200": "gb200"}
NODE_TYPE = {"dgx_a100": "dgx", "dgx_h100": "dgx", "dgx_gb200": "gb200"}
ENVIRONMENTS = ("dev", "lts")
# Model directories that are not GPT-family decoders, and why they are left out.
SKIPPED_MODELS = {
    "bert": "BERT encoder (not a GPT decoder)",
    "t5": "T5 encoder-decoder (not a GPT decoder)",
    "hybrid": "Mamba/hybrid model (not expressible)",
    "nemotron": "Nemotron-H hybrid model (not expressible)",
    "multimodal-llava": "multimodal model (not expressible)",
    "mimo": "multimodal model (not expressible)",
    "gpt-nemo": "NeMo launcher, not Megatron-LM arguments",
    "common": "not a model test",
}
HYBRID_FLAGS = ("--hybrid-layer-pattern", "--is-hybrid-model", "--hybrid-override-pattern",
                "--heterogeneous-layers-config-path", "--heterogeneous-layers-config-encoded-json")


class Repository:
    """Files of a Megatron-LM checkout or git directory at its HEAD commit."""

    def __init__(self, path: Path):
        self.path = path
        bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
        self.git = ["git", "--git-dir", str(path)] if bare else ["git", "-C", str(path)]
        self.commit = self._run("rev-parse", "HEAD").strip()
        self.files = self._run("ls-tree", "-r", "--name-only", "HEAD").splitlines()

    def _run(self, *args: str) -> str:
        try:
            return subprocess.run([*self.git, *args], check=True, capture_output=True,
                                  text=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError) as err:
            raise SystemExit(f"{self.path}: not a Megatron-LM git checkout ({err})") from None

    def read(self, paths: list[str]) -> dict[str, str]:
        """Contents at HEAD, in one `git cat-file --batch`."""
        request = "".join(f"HEAD:{p}\n" for p in paths).encode()
        out = subprocess.run([*self.git, "cat-file", "--batch"], input=request, check=True,
                             capture_output=True).stdout
        contents, pos = {}, 0
        for path in paths:
            header_end = out.index(b"\n", pos)
            size = int(out[pos:header_end].split()[2])
            contents[path] = out[header_end + 1:header_end + 1 + size].decode("utf-8")
            pos = header_end + 1 + size + 1
        return contents


def recipe_world_sizes(repo: Repository) -> dict:
    """(model, test_case, environment, platform) -> {nodes, gpus_per_node, recipe} from every
    recipe, flattened as recipe_parser.py does (a product's keys replace the spec's)."""
    paths = [p for p in repo.files if p.startswith(RECIPES_DIR) and p.endswith(".yaml")]
    out: dict = {}
    for path, text in repo.read(paths).items():
        manifest = yaml.safe_load(text) or {}
        spec = manifest.get("spec") or {}
        for product in manifest.get("products") or []:
            for row in _flatten(product):
                merged = {**spec, **row}
                key = (merged.get("model"), merged.get("test_case"), merged.get("environment"),
                       merged.get("platforms"))
                value = {"nodes": int(merged.get("nodes", 1)),
                         "gpus_per_node": int(merged.get("gpus", 0)), "recipe": path}
                previous = out.get(key)
                if previous and (previous["nodes"], previous["gpus_per_node"]) != (
                        value["nodes"], value["gpus_per_node"]):
                    value = {**value, "conflict": previous["recipe"]}
                out[key] = value
    return out


def _same_node_type(world_sizes: dict, model: str, case: str, platform: str) -> dict | None:
    """A golden file no recipe row runs any more (an older platform or environment): the size
    of the recipe rows of the same test on the same node type (DGX A100/H100: 8 GPUs per node;
    GB200: 4), if they agree."""
    family = NODE_TYPE[platform]
    rows = [v for (m, c, _, p), v in world_sizes.items()
            if m == model and c == case and NODE_TYPE.get(p) == family]
    sizes = {(r["nodes"], r["gpus_per_node"]) for r in rows}
    if len(sizes) != 1:
        return None
    return {**rows[0], "from": "same node type"}


def _flatten(product: dict) -> list[dict]:
    if "products" not in product:
        return []
    rows = []
    test_case = product["test_case"][0]
    for params in product["products"]:
        keys = [k for k in params if k != "cadence"]
        for combination in itertools.product(*(params[k] for k in keys)):
            rows.append({**dict(zip(keys, combination, strict=True)), "test_case": test_case})
    return rows


def measured(golden: dict) -> dict | None:
    """Peak: the largest mem-max-allocated-bytes over the logged steps (the metric is a running
    maximum) and the first step reaching it; current: mem-allocated-bytes at the last step."""
    if METRIC_PEAK not in golden or METRIC_CURRENT not in golden:
        return None
    peaks = _values(golden[METRIC_PEAK])
    currents = _values(golden[METRIC_CURRENT])
    if not peaks or not currents:
        return None
    peak = max(peaks.values())
    last = max(currents)
    return {
        "peak_allocated_bytes": int(peak),
        "peak_step": min(step for step, v in peaks.items() if v == peak),
        "allocated_bytes": int(currents[last]),
        "allocated_step": last,
        "first_step_peak_allocated_bytes": int(peaks[min(peaks)]),
        "steps": [min(peaks), max(peaks)],
        "reserved_bytes": None,
    }


def _values(metric: dict) -> dict[int, float]:
    out = {}
    for step, value in (metric.get("values") or {}).items():
        if isinstance(value, int | float) and value == value:
            out[int(step)] = float(value)
    return out


def _arguments_tokens(model_args: dict) -> list[str]:
    return megatron_args.yaml_arguments(yaml.safe_dump({"MODEL_ARGS": model_args}), "x")


def build(repo: Repository) -> dict:
    world_sizes = recipe_world_sizes(repo)
    goldens = sorted(p for p in repo.files if p.startswith(CASES_DIR + "/")
                     and Path(p).name.startswith("golden_values") and p.endswith(".json"))
    configs = sorted({str(Path(p).parent / "model_config.yaml") for p in goldens} & set(repo.files))
    texts = repo.read(goldens + configs)
    cases, records, skipped = {}, [], []

    def skip(path, reason):
        skipped.append({"path": path, "reason": reason})

    for path in goldens:
        model, case = Path(path).parts[-3], Path(path).parts[-2]
        name = Path(path).stem.removeprefix("golden_values_")
        environment, _, platform = name.partition("_")
        if model in SKIPPED_MODELS:
            skip(path, SKIPPED_MODELS[model])
            continue
        if environment not in ENVIRONMENTS or platform not in HARDWARE:
            skip(path, "golden file of another CI cluster or rerun (not dgx_{a100,h100,gb200})")
            continue
        config_path = str(Path(path).parent / "model_config.yaml")
        document = yaml.safe_load(texts.get(config_path, "")) or {}
        reason = _case_reason(document)
        if reason:
            skip(path, reason)
            continue
        try:
            values = measured(json.loads(texts[path]))
        except json.JSONDecodeError:
            skip(path, "golden file is empty or not JSON")
            continue
        if values is None:
            skip(path, "no mem-max-allocated-bytes / mem-allocated-bytes in the golden file")
            continue
        where = f"{model}/{case}"
        try:
            launch = megatron_args.parse_arguments(
                _arguments_tokens(document["MODEL_ARGS"]), config_path)
        except SweepError as err:
            skip(path, f"arguments not expressible: {err}")
            continue
        size = world_sizes.get((model, case, environment, platform)) or _same_node_type(
            world_sizes, model, case, platform)
        if size is None:
            skip(path, "no recipe runs this test on this node type (world size unknown)")
            continue
        if "conflict" in size:
            skip(path, f"recipes {size['recipe']} and {size['conflict']} disagree on the size")
            continue
        world = size["nodes"] * size["gpus_per_node"]
        try:
            train = launch.config_values(world)
        except SweepError as err:
            skip(path, f"world size {world} inconsistent with the arguments: {err}")
            continue
        if where not in cases:
            cases[where] = _case_entry(launch, document, config_path)
        t = launch.train
        records.append({
            "case": where,
            "environment": environment,
            "platform": platform,
            "hardware": HARDWARE[platform],
            "nodes": size["nodes"],
            "gpus_per_node": size["gpus_per_node"],
            "world_size": world,
            "world_size_from": size.get("from", "recipe row"),
            "grad_accum": train.get("grad_accum"),
            "measured": values | {
                "rank": world - 1,
                "rank_coordinates": {"pipeline_stage": t["pp"] - 1, "tensor": t["tp"] - 1,
                                     "context": t["cp"] - 1, "expert": t["ep"] - 1,
                                     "data": world // (t["tp"] * t["pp"] * t["cp"]) - 1},
            },
            "citation": {"repository": REPOSITORY, "commit": repo.commit, "path": path,
                         "model_config": config_path, "recipe": size["recipe"]},
        })
    return {
        "description": "Measured peak allocated GPU memory of NVIDIA/Megatron-LM functional "
                       "tests (golden values), on the last rank, with each test's arguments.",
        "source": {"repository": REPOSITORY, "commit": repo.commit,
                   "builder": "reference/megatron/build.py"},
        "metric": {"peak_allocated_bytes": "max over logged steps of mem-max-allocated-bytes "
                                           "= torch.cuda.memory_stats()['allocated_bytes.all."
                                           "peak'] (megatron/training/training.py training_log)",
                   "allocated_bytes": "mem-allocated-bytes = ['allocated_bytes.all.current'] "
                                      "at the last logged step (after the optimizer step)",
                   "rank": "world_size - 1 (the TensorBoard writer, global_vars.py)",
                   "reserved_bytes": "not in the golden files (training.py logs "
                                     "mem-reserved-bytes, the golden-value extractor drops it)"},
        "cases": dict(sorted(cases.items())),
        "records": records,
        "skipped_counts": _counts(skipped),
        "skipped": skipped,
    }


def _case_reason(document: dict) -> str | None:
    mode = document.get("MODE", "pretraining")
    if mode != "pretraining":
        return f"MODE {mode} (not a pretraining run)"
    if document.get("TEST_TYPE") == "checkpoint-consistency":
        return "several argument sets in one test (checkpoint-consistency)"
    args = document.get("MODEL_ARGS") or {}
    if not args:
        return "no MODEL_ARGS"
    if any(flag in args for flag in HYBRID_FLAGS):
        return "hybrid or heterogeneous layers (not expressible)"
    return None


def _case_entry(launch, document: dict, config_path: str) -> dict:
    # Fields that differ from the Architecture defaults (the required ones always).
    defaults = {f.name: f.default for f in fields(Architecture)}
    arch = {k: v for k, v in vars(launch.architecture).items()
            if defaults[k] is MISSING or v != defaults[k]}
    return {
        "model_config": config_path,
        "test_type": document.get("TEST_TYPE"),
        "arguments": launch.arguments,
        "architecture": arch,
        "train": launch.train,
        "global_batch_size": launch.global_batch_size,
        "settings": launch.settings,
        "notes": [note.line() for note in launch.notes],
    }


def _counts(skipped: list[dict]) -> dict:
    counts: dict = {}
    for item in skipped:
        reason = item["reason"].split(":")[0] if item["reason"].startswith(
            ("arguments not expressible", "world size")) else item["reason"]
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _dump(data: dict) -> str:
    """JSON with one case, record or skipped file per line (small and diffable)."""
    lines = ["{"]
    for i, (key, value) in enumerate(data.items()):
        end = "," if i < len(data) - 1 else ""
        if isinstance(value, list) and value:
            items = ",\n".join(f"  {json.dumps(v)}" for v in value)
            lines.append(f"{json.dumps(key)}: [\n{items}\n]{end}")
        elif key == "cases":
            items = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{json.dumps(key)}: {{\n{items}\n}}{end}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}{end}")
    return "\n".join(lines) + "\n}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("megatron", type=Path, help="Megatron-LM checkout or git directory")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    data = build(Repository(args.megatron))
    args.out.write_text(_dump(data), "utf-8")
    print(f"wrote {args.out}: {len(data['records'])} records of {len(data['cases'])} cases, "
          f"{len(data['skipped'])} golden files skipped")
    for reason, count in data["skipped_counts"].items():
        print(f"  skipped {count:4d}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
