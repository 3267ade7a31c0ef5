"""Command line: `run_sweep.py explain ...` (one flag per vocabulary key)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback

from sweep import vocabulary as vocab
from sweep.config import BOOLEAN, CATEGORY, COUNT, TARGETS, TrainConfig
from sweep.errors import SweepError

DEFAULT_GRID = "grids/default.toml"
LARGEST_GRID = "grids/largest_model.toml"
COMMANDS = ("run", "explain", "largest", "fewest", "report", "validate", "grids")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The model and GPU, then one flag per configuration field (`TrainConfig`: its kind and
    doc); underscores become dashes."""
    add = parser.add_argument
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="catalog name, architecture file (.toml/.json), Hugging "
                                       "Face config.json or snapshot directory, a cached hub id "
                                       "org/name[@revision], or megatron:PATH (Megatron-LM "
                                       "flags, YAML or launch script; its parallel and training "
                                       "values are the defaults)")
    which.add_argument("--params", type=float,
                       help="a bare parameter count (e.g. 13e9), shaped by --family")
    add("--family", default="llama3", help="family rule for --params (default llama3)")
    add("--gpu", required=True, help="catalog GPU name, e.g. h100-sxm-80gb")
    for f in dataclasses.fields(TrainConfig):
        kind, doc = f.metadata["kind"], f.metadata["doc"]
        flag = "--" + f.name.replace("_", "-")
        if kind == CATEGORY:
            allowed = vocab.CATEGORIES[f.name]
            default = allowed[int(f.default)]
            add(flag, default=default, help=f"{doc}: {', '.join(allowed)} (default {default})")
        elif kind == BOOLEAN:
            add(flag, action=argparse.BooleanOptionalAction, default=bool(f.default), help=doc)
        elif kind == TARGETS:
            add(flag, default="all-linear", help=f"{doc}: comma-separated among "
                f"{', '.join(vocab.LORA_TARGETS)}, or all-linear, attention")
        elif f.name == "gpus_per_node":
            add(flag, type=int, help=doc)
        else:
            kind_type = int if kind == COUNT else float
            add(flag, type=kind_type, default=kind_type(f.default),
                help=f"{doc} (default {kind_type(f.default):g})")


def _add_strategy_flags(parser: argparse.ArgumentParser, defaults: str) -> None:
    """What `largest` and `fewest` may choose from. GPUs take the frameworks given, TPUs the
    generic accounting (the frameworks that exist on each)."""
    group = parser.add_argument_group("strategies tried", f"default: {defaults}; offload off")
    group.add_argument("--finetune", choices=vocab.FINETUNES, help="full, lora or qlora")
    group.add_argument("--precision", choices=vocab.PRECISIONS)
    group.add_argument("--frameworks", nargs="+", choices=vocab.FRAMEWORKS[1:],
                       help="frameworks for GPUs (TPUs use the generic accounting)")
    group.add_argument("--recompute", nargs="+", choices=vocab.RECOMPUTES,
                       help="the recompute modes allowed")
    group.add_argument("--offload", action="store_true",
                       help="also try ZeRO optimizer offload to host RAM")


def _strategy_axes(args) -> dict:
    """The axes `--finetune` ... `--offload` set (None: keep the grid's)."""
    axes = {}
    if args.finetune:
        axes["finetune"] = [args.finetune]
    if args.precision:
        axes["precision"] = [args.precision]
    if args.frameworks:
        axes["framework"] = [*args.frameworks, "generic"]
    if args.recompute:
        axes["recompute"] = list(args.recompute)
    if args.offload:
        axes["offload"] = ["none", "optimizer"]
    return axes


def _add_cost_flags(parser) -> None:
    group = parser.add_argument_group("time and cost")
    group.add_argument("--token-budget", type=float, default=0.0, metavar="TOKENS",
                       help="tokens to train on: gives days and cost to train (e.g. 1e12)")
    group.add_argument("--price-per-gpu-hour", type=float, metavar="USD",
                       help="USD per GPU-hour (default: the catalog's cited price)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-memory-sweep",
        description="GPU memory of LLM training, per component and per configuration. "
                    "Without a command, runs a grid: `llm-memory-sweep [GRID]` "
                    f"(default {DEFAULT_GRID}).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="sweep a grid file (the default command)")
    run.add_argument("grid", nargs="?", default=DEFAULT_GRID, help=f"default: {DEFAULT_GRID}")
    run.add_argument("--force", action="store_true",
                     help="replace the output of a different grid in the output directory "
                          "(removes only the files this tool wrote there)")
    run.add_argument("--no-progress", action="store_true", help="no progress line")
    run.add_argument("--out", help="output directory (default: the grid's [output] dir)")
    dist = run.add_argument_group(
        "several processes (jax.distributed)",
        "with --distributed alone, the coordinator, process count and id come from the "
        "environment (Slurm, TPU pods, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / "
        "JAX_PROCESS_ID)")
    dist.add_argument("--distributed", action="store_true",
                      help="join a multi-process run (jax.distributed.initialize)")
    dist.add_argument("--coordinator", help="host:port of process 0")
    dist.add_argument("--num-processes", type=int)
    dist.add_argument("--process-id", type=int)
    explain = commands.add_parser(
        "explain", help="every memory component of one configuration, with its formula source"
    )
    _add_config_flags(explain)
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.add_argument("--compare", action="store_true",
                         help="also show Megatron-LM's and DeepSpeed's estimates")
    explain.add_argument("--check", action="store_true",
                         help="exit with status 1 when the configuration does not fit")
    _add_cost_flags(explain)
    big = commands.add_parser(
        "largest", help="the largest trainable model per node type and cluster size")
    big.add_argument("grid", nargs="?", default=LARGEST_GRID, help=f"default: {LARGEST_GRID}")
    big.add_argument("--out", help="output directory (default: the grid's [output] dir)")
    big.add_argument("--force", action="store_true",
                     help="replace the output of a different grid (only files this tool wrote)")
    _add_strategy_flags(big, "the grid's")
    budget = big.add_argument_group(
        "time budget", "the largest model that trains on T tokens within D days")
    budget.add_argument("--days", type=float, metavar="D", help="days of training allowed")
    budget.add_argument("--tokens", type=float, metavar="T", help="tokens to train on (1e12)")
    budget.add_argument("--tokens-per-param", type=float, metavar="R",
                        help="tokens per parameter instead (20: Chinchilla-optimal)")
    few = commands.add_parser(
        "fewest", help="the fewest GPUs of each type that train a model at a context length")
    few.add_argument("--model", required=True, help="catalog name or config.json path")
    few.add_argument("--seq-len", type=int, default=8192)
    few.add_argument("--global-batch-tokens", type=int, metavar="TOKENS",
                     help="tokens per optimizer step the speeds are compared at "
                          "(default: 1024 sequences)")
    few.add_argument("--gpu", nargs="+", help="GPU catalog names (default: all)")
    few.add_argument("--out", help="output directory (default: outputs/fewest-<model>-<seq>)")
    few.add_argument("--force", action="store_true")
    _add_strategy_flags(few, "full, bf16-mixed, megatron deepspeed fsdp, every recompute mode")
    commands.add_parser("grids", help="the grids that ship with the package (run any of them "
                                      "by name: `llm-memory-sweep capacity_planning`)")
    rep = commands.add_parser("report", help="HTML page and PNGs from a run's outputs")
    rep.add_argument("run", help="an output directory, e.g. outputs/largest_model")
    validate = commands.add_parser(
        "validate", help="measure saved activations of reference PyTorch models (needs torch) "
                         "and rewrite docs/activation_accuracy.md; with --step, whole "
                         "training steps and docs/step_accuracy.md; with --public, public GPU "
                         "runs and docs/public_measurements.md; with --time, step times against "
                         "published runs and docs/time_accuracy.md")
    kind = validate.add_mutually_exclusive_group()
    kind.add_argument("--step", action="store_true",
                      help="track whole training steps (PyTorch's memory trackers)")
    kind.add_argument("--public", action="store_true",
                      help="our peak allocated vs the measured peaks of public runs "
                           "(reference/); rewrites docs/public_measurements.md")
    kind.add_argument("--gpu", action="store_true",
                      help="the whole-step cases with real tensors on this machine's CUDA GPU "
                           "(torch.cuda.max_memory_allocated/reserved); rewrites "
                           "docs/gpu_accuracy.md")
    kind.add_argument("--time", action="store_true",
                      help="step times against published runs (no torch needed); rewrites "
                           "docs/time_accuracy.md")
    validate.add_argument("--out", help="default: docs/activation_accuracy.md, "
                                        "docs/step_accuracy.md with --step, "
                                        "docs/public_measurements.md with --public, "
                                        "docs/time_accuracy.md with --time")
    return parser


def _config_values(args: argparse.Namespace) -> dict:
    """The configuration fields' values (gpus_per_node only when given)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if values["gpus_per_node"] is None:
        del values["gpus_per_node"]
    return values


def _explicit_keys(argv: list[str]) -> set[str]:
    """Vocabulary keys given on the command line (`--n-gpus 8`, `--no-sp`, `--tp=2`)."""
    flags = (a[2:].split("=", 1)[0] for a in argv if a.startswith("--"))
    return {f.removeprefix("no-").replace("-", "_") for f in flags}


def _largest(args) -> None:
    from sweep import sink
    from sweep.grid import load, with_axes
    from sweep.largest import largest
    from sweep.outdir import OutputDir
    from sweep.report_text import human

    grid = load(args.grid)
    changes = _strategy_axes(args)
    if changes:
        grid = with_axes(grid, **changes)
    out = OutputDir(args.out or grid.output_dir)
    budget = None
    if args.days is not None or args.tokens or args.tokens_per_param:
        from sweep.largest import TimeBudget

        budget = TimeBudget(args.days or 0.0, args.tokens or 0.0, args.tokens_per_param or 0.0)
    frame = largest(grid, progress=True, budget=budget)
    with out.lock():
        out.claim(grid.hash, grid.name, force=args.force, what="largest")
        sink.write_partitioned(out, "largest", frame, "gpu", sink.metadata(grid))
    if len(frame):
        if budget:
            print(f"trained on {budget.tokens:g} tokens" if budget.tokens else
                  f"trained on {budget.tokens_per_param:g} tokens per parameter",
                  f"within {budget.days:g} days")
        print(human(frame, ["gpu", "nodes", "n_gpus", "params", "hidden_size", "num_layers",
                            "framework", "finetune", "zero_stage", "tp", "pp", "recompute",
                            "offload", "grad_accum", "per_gpu_total_bytes", "tokens_per_s",
                            "mfu", *(["days_to_train", "cost_to_train"] if budget else [])]))
    else:
        print("no model of the family fits within the grid")
    print(f"output: {out.root / 'largest'}/ (partitioned by gpu)")


def _fewest(args) -> None:
    import polars as pl

    from sweep.fewest import fewest, fewest_grid
    from sweep.report_text import human

    options = {k: v for k, v in (("finetune", args.finetune), ("precision", args.precision),
                                 ("frameworks", args.frameworks),
                                 ("recompute", args.recompute)) if v}
    grid = fewest_grid(args.model, args.seq_len, args.gpu, out=args.out, offload=args.offload,
                       global_batch_tokens=args.global_batch_tokens, **options)
    frame = fewest(grid, force=args.force, progress=True)
    columns = ["gpu", "n_gpus", "nodes", "framework", "zero_stage", "tp", "pp", "cp",
               "micro_batch", "recompute", "offload", "per_gpu_total_bytes", "tokens_per_s",
               "mfu", "cost_per_million_tokens"]
    if not len(frame):
        print("no GPU type can train it within the grid")
    for pick, title in (("fewest", "the fewest GPUs (the fastest strategy at that size)"),
                        ("cheapest", "the cheapest (lowest cost per million tokens)")):
        if len(frame):
            print(f"{title}, global batch {int(grid.global_batch_tokens):,} tokens:")
            print(human(frame.filter(pl.col("pick") == pick), columns))
    missing = sorted(set(g.name for g in grid.gpus) - set(frame["gpu"] if len(frame) else []))
    if missing:
        print(f"cannot train it (up to {int(max(grid.axis('n_gpus').values))} GPUs): "
              f"{', '.join(missing)}")
    print(f"output: {grid.output_dir}/fewest.parquet")


def _validate(out: str | None, step: bool, public: bool, time: bool, gpu: bool) -> None:
    from pathlib import Path

    if public:
        from sweep.public_runs import write_report

        print(write_report(out or "docs/public_measurements.md"))
        return
    if time:
        from sweep.timing.validate import DOC
        from sweep.timing.validate import write as write_time

        print(f"wrote {write_time(Path(out) if out else DOC)}")
        return
    try:
        if gpu:
            from sweep.measure.gpu import DOC, write
        elif step:
            from sweep.measure.step_report import DOC, write
        else:
            from sweep.measure.report import DOC, write
    except ModuleNotFoundError as err:
        raise SweepError(f"validate needs torch: pip install \".[validate]\" ({err}).") from None
    print(f"wrote {write(Path(out) if out else DOC)}")


def _initialize_distributed(args) -> None:
    """jax.distributed.initialize from flags, or from the environment it detects."""
    import jax

    # No collective runs across processes (each takes its own chunks, and they meet in the
    # coordination service's key-value store, `engine.peers`): no collectives backend.
    explicit = {k: v for k, v in (("coordinator_address", args.coordinator),
                                  ("num_processes", args.num_processes),
                                  ("process_id", args.process_id)) if v is not None}
    try:
        jax.distributed.initialize(**explicit)
    except (ValueError, RuntimeError) as err:
        raise SweepError(f"jax.distributed could not start: {err}. Give --coordinator, "
                         f"--num-processes and --process-id, or run under Slurm or on a "
                         f"TPU pod.") from None


def _run(args) -> None:
    import dataclasses

    import jax

    from sweep import engine, report_text
    from sweep.grid import load
    from sweep.outdir import check_path

    grid = load(args.grid)
    if args.distributed or args.coordinator:
        _initialize_distributed(args)
    if args.out:
        grid = dataclasses.replace(grid, output_dir=str(check_path(args.out, "--out", "--out")))
    from sweep.engine.orchestrate import check_size

    check_size(grid)
    lead = jax.process_index() == 0
    if lead:
        print(f"{grid.name}: {grid.size:,} configurations over "
              f"{', '.join(f'{a.name} ({len(a)})' for a in grid.swept)}", file=sys.stderr)
    freeze_survivors()
    manifest = engine.run(grid, force=args.force, progress=not args.no_progress)
    if lead:
        print(report_text.summary(grid, manifest))


def freeze_survivors() -> None:
    """Python's collector stops walking the objects alive now (the imported JAX, NumPy,
    polars; the grid), which live as long as the process: measured here on a cached
    `bench/grids/finetune_lora.toml` run, 1.24 s instead of 1.36 s (medians of seven
    alternating fresh processes). Once per process: what is garbage now is never collected."""
    import gc

    gc.freeze()


def _grids() -> None:
    """Name, configurations and description of every shipped grid."""
    from sweep.grid import load, shipped_grids

    rows = []
    for name, path in shipped_grids().items():
        grid = load(path)
        rows.append((name, f"{grid.size:.3g}", grid.description))
    width = max(len(r[0]) for r in rows)
    for name, size, description in rows:
        print(f"{name:<{width}}  {size:>8}  {description}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")  # `run_sweep.py [grid.toml]` runs a grid
    args = build_parser().parse_args(argv)
    try:
        if args.command == "explain":
            from sweep.explain import explain, render
            from sweep.families import model_spec

            values = _config_values(args)
            if args.model and args.model.startswith("megatron:"):
                from sweep.megatron_args import explain_values

                values, lines = explain_values(args.model, values, _explicit_keys(argv))
                print("\n".join(lines), file=sys.stderr)
            model = args.model if args.params is None else model_spec(args.family, args.params)
            given = _explicit_keys(argv) | set(values) - set(_config_values(args))
            assumed = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in given]
            result = explain(model, args.gpu, assumed=assumed, token_budget=args.token_budget,
                             price_per_gpu_hour_usd=args.price_per_gpu_hour, **values)
            print(render(result, as_json=args.json, compare=args.compare))
            if args.check and not result.result.fits:
                return 1
        elif args.command == "run":
            _run(args)
        elif args.command == "largest":
            _largest(args)
        elif args.command == "fewest":
            _fewest(args)
        elif args.command == "grids":
            _grids()
        elif args.command == "report":
            from sweep.report import write_report

            print(f"wrote {write_report(args.run)}")
        elif args.command == "validate":
            _validate(args.out, args.step, args.public, args.time, args.gpu)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return _stopped(2, str(err))
    except KeyboardInterrupt:
        print("interrupted: the finished work is saved; run the same command again to resume",
              file=sys.stderr)
        return _stopped(130, "interrupted")
    except Exception as err:
        if _peers() is None:
            raise
        traceback.print_exc()
        return _stopped(1, f"{type(err).__name__}: {err}")
    return 0


def _peers():
    """`sweep.engine.peers` in a multi-process run, else None (never imported for it)."""
    peers = sys.modules.get("sweep.engine.peers")
    return peers if peers is not None and peers.active() else None


def _stopped(code: int, error: str) -> int:
    """`code`, or, in a multi-process run, exit with it at once after telling the other
    processes (`engine.peers.leave`: they stop too, none waits for this one)."""
    if peers := _peers():
        peers.leave(code, error)
    return code


def entry() -> None:
    """The console script and `run_sweep.py`: XLA's CPU flags, then `main`, quiet on a closed
    pipe (`... | head`)."""
    import os

    # 512-bit vectors where the CPU has them (AVX-512): the sweep kernel ran 12% faster on
    # this project's machines; XLA reads the flag when its backend starts.
    if "xla_cpu_prefer_vector_width" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_prefer_vector_width=512").strip()
    try:
        sys.exit(main())
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
