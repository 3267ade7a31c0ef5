"""Read a Megatron-LM launch (argument list) into our architecture and training vocabulary.

`--model megatron:PATH` takes a file of Megatron-LM flags as a Megatron user already has it:

- a text file of flags (`--num-layers 32 --hidden-size 4096 \\` lines, `#` comments);
- a YAML mapping of flags (`--num-layers: 32`), or a functional-test `model_config.yaml` whose
  `MODEL_ARGS` holds them (as Megatron-LM's tests/functional_tests/shell_test_utils/
  _run_training.sh turns them into flags: `true` is a bare flag, a list is several values);
- a shell launch script (`torchrun ... pretrain_gpt.py --flag value \\`), with its `NAME=value`
  and `NAME=( ... )` assignments, `${NAME[@]}` expansions, `${1:-default}` defaults and simple
  `if [[ "$X" == "y" ]]` branches followed; anything else (`$(...)`, environment variables the
  script does not set) is left unresolved and reported.

`parse_arguments` turns the flags into an `Architecture`, the `TrainConfig` vocabulary values
the launch fixes (tp, pp, vpp, cp, ep, etp, sp, zero_stage, framework, precision, micro_batch,
seq_len, recompute, ...; grad_accum once the number of GPUs is known), Megatron settings with
no vocabulary key, and a list of `Note`s: flags we do not know (listed, not fatal), flags whose
effect our model does not express (with what we assume instead), and unresolved values.

Defaults and derived values follow NVIDIA/Megatron-LM at commit
d98e8a64ddf34856e74b24714e3bedb2f5a39553 (`MEGATRON_COMMIT`): megatron/training/arguments.py
(`validate_args`, the argparse groups), megatron/core/transformer/transformer_config.py (the
TransformerConfig fields the argparse factory turns into flags), megatron/training/
argument_utils.py (`core_transformer_config_from_args`), megatron/core/tokenizers/utils/
build_tokenizer.py (`vocab_size_with_padding`) and megatron/core/models/gpt/gpt_layer_specs.py.
"""

from __future__ import annotations

import ast
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from sweep.errors import SweepError
from sweep.model import (
    ACTIVATION_DEFAULT,
    ACTIVATION_RELU2,
    QK_NORM_HEAD,
    QK_NORM_NONE,
    Architecture,
    ModelSpec,
)
from sweep.vocabulary import did_you_mean

PREFIX = "megatron:"
DEFAULT_GPUS = 8  # explain's --n-gpus default
MEGATRON_REPOSITORY = "NVIDIA/Megatron-LM"
MEGATRON_COMMIT = "d98e8a64ddf34856e74b24714e3bedb2f5a39553"

# Kinds of `Note`.
UNKNOWN = "unknown"  # a flag this reader does not know; not read
UNMODELLED = "unmodelled"  # read, but our model cannot express it: the note says what we assume
UNRESOLVED = "unresolved"  # a value the file does not define ($VAR, $(...))
ASSUMED = "assumed"  # a value Megatron reads from elsewhere (a tokenizer file) that we assumed

# Megatron-LM defaults (arguments.py / transformer_config.py at MEGATRON_COMMIT).
DEFAULT_MAKE_VOCAB_SIZE_DIVISIBLE_BY = 128  # --make-vocab-size-divisible-by
DEFAULT_DROPOUT = 0.1  # TransformerConfig.hidden_dropout and attention_dropout
DEFAULT_MOE_ROUTER_TOPK = 2  # TransformerConfig.moe_router_topk
DEFAULT_NUM_QUERY_GROUPS = 1  # num_query_groups argparse default (with --group-query-attention)
# MLA defaults: --kv-lora-rank 32, --qk-head-dim 128, --qk-pos-emb-head-dim 64, --v-head-dim 128;
# --q-lora-rank None (queries projected directly from the hidden state).
DEFAULT_KV_LORA_RANK = 32
DEFAULT_QK_HEAD_DIM = 128
DEFAULT_QK_POS_EMB_HEAD_DIM = 64
DEFAULT_V_HEAD_DIM = 128
# pretrain_gpt.py: `args_defaults={'tokenizer_type': 'GPT2BPETokenizer'}`.
DEFAULT_TOKENIZER = "GPT2BPETokenizer"
GPT2_VOCAB_SIZE = 50257  # the GPT-2 BPE vocab.json (Radford et al. 2019; gpt2 config.json)
# megatron/core/tokenizers/text/libraries/tiktoken_tokenizer.py: DEFAULT_TIKTOKEN_MAX_VOCAB.
TIKTOKEN_DEFAULT_VOCAB_SIZE = 2**17
# Tokenizers whose size Megatron takes from --vocab-size (build_tokenizer.py).
VOCAB_SIZE_FROM_ARGS = ("NullTokenizer", "TikTokenizer")
TOKENIZERS = (
    "BertWordPieceLowerCase", "BertWordPieceCase", "GPT2BPETokenizer", "SentencePieceTokenizer",
    "GPTSentencePieceTokenizer", "Llama2Tokenizer", "HuggingFaceTokenizer", "TikTokenizer",
    "MultimodalTokenizer", "NullTokenizer", "NullMultimodalTokenizer", "SFTTokenizer",
)

CHOICES = {
    "--normalization": ("LayerNorm", "RMSNorm"),
    "--position-embedding-type": ("learned_absolute", "rope", "yarn", "mrope", "relative",
                                  "none"),
    "--recompute-granularity": ("full", "selective"),
    "--recompute-method": ("uniform", "block"),
    "--tokenizer-type": TOKENIZERS,
    "--fp8-format": ("e4m3", "hybrid"),
    "--transformer-impl": ("local", "transformer_engine", "inference_optimized"),
    "--attention-backend": ("flash", "fused", "unfused", "local", "auto"),
    "--data-parallel-sharding-strategy": ("no_shard", "optim", "optim_grads",
                                          "optim_grads_params"),
}

# Flags read into the architecture or the training vocabulary, by value type.
INT_FLAGS = (
    "--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads",
    "--num-query-groups", "--kv-channels", "--max-position-embeddings", "--seq-length",
    "--vocab-size", "--padded-vocab-size", "--make-vocab-size-divisible-by", "--num-experts",
    "--moe-ffn-hidden-size", "--moe-router-topk", "--moe-shared-expert-intermediate-size",
    "--q-lora-rank", "--kv-lora-rank", "--qk-head-dim", "--qk-pos-emb-head-dim", "--v-head-dim",
    "--mtp-num-layers", "--moe-latent-size", "--tensor-model-parallel-size",
    "--pipeline-model-parallel-size", "--num-layers-per-virtual-pipeline-stage",
    "--num-virtual-stages-per-pipeline-rank", "--context-parallel-size",
    "--expert-model-parallel-size", "--expert-tensor-parallel-size", "--micro-batch-size",
    "--global-batch-size", "--recompute-num-layers", "--decoder-first-pipeline-num-layers",
    "--decoder-last-pipeline-num-layers", "--num-distributed-optimizer-instances",
    "--empty-unused-memory-level",
)
FLOAT_FLAGS = ("--hidden-dropout", "--attention-dropout", "--rotary-percent",
               "--moe-expert-capacity-factor")
STR_FLAGS = (
    "--normalization", "--position-embedding-type", "--recompute-granularity",
    "--recompute-method", "--tokenizer-type", "--fp8-format", "--transformer-impl",
    "--attention-backend", "--optimizer", "--data-parallel-sharding-strategy", "--moe-layer-freq",
    "--vocab-file", "--tokenizer-model", "--pipeline-model-parallel-layout", "--fp8-recipe",
    "--moe-token-dispatcher-type", "--cuda-graph-impl", "--cross-entropy-fusion-impl",
    "--window-size", "--main-grads-dtype", "--main-params-dtype", "--exp-avg-dtype",
    "--exp-avg-sq-dtype", "--cp-comm-type", "--moe-router-dtype", "--cuda-graph-scope",
    "--megatron-fsdp-main-params-dtype", "--megatron-fsdp-main-grads-dtype",
    "--megatron-fsdp-grad-comm-dtype", "--hierarchical-context-parallel-sizes",
)
PATH_FLAGS = ("--vocab-file", "--tokenizer-model")  # read for messages only
LIST_FLAGS = ("--recompute-modules", "--offload-modules", "--cuda-graph-modules")
BOOL_FLAGS = (
    "--group-query-attention", "--swiglu", "--squared-relu", "--quick-geglu", "--openai-gelu",
    "--disable-bias-linear", "--add-qkv-bias", "--untie-embeddings-and-output-weights",
    "--use-rotary-position-embeddings", "--no-position-embedding", "--apply-layernorm-1p",
    "--qk-layernorm", "--multi-latent-attention", "--moe-shared-expert-gate",
    "--sequence-parallel", "--use-distributed-optimizer", "--bf16", "--fp16",
    "--fp8-param-gather", "--use-megatron-fsdp", "--use-torch-fsdp2", "--use-flash-attn",
    "--overlap-grad-reduce", "--overlap-param-gather", "--grad-reduce-in-bf16",
    "--moe-grouped-gemm", "--moe-permute-fusion", "--cross-entropy-loss-fusion",
    "--tp-comm-overlap", "--enable-cuda-graph", "--external-cuda-graph",
    "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split",
    "--first-last-layers-bf16", "--fine-grained-activation-offloading",
    "--optimizer-cpu-offload", "--use-precision-aware-optimizer",
    "--moe-pad-expert-input-to-capacity", "--overlap-moe-expert-parallel-comm",
    "--delay-wgrad-compute", "--defer-embedding-wgrad-compute",
    "--no-gradient-accumulation-fusion", "--moe-router-enable-expert-bias",
    "--overlap-param-gather-with-optimizer-step", "--fp8-dot-product-attention",
    "--use-transformer-engine-op-fuser", "--mtp-use-repeated-layer",
)

# Flags that set memory-relevant Megatron behaviour our vocabulary has no key for: kept in
# `settings` and reported with what we assume.
UNMODELLED_FLAGS = {
    "--apply-layernorm-1p": "zero-centred norm weights: no memory effect",
    "--rotary-percent": "partial RoPE: RoPE tables taken at the full head dimension",
    "--moe-latent-size": "MoE latent projections are not counted",
    "--moe-shared-expert-gate": "the shared-expert gate (h parameters per MoE layer) is not "
                                "counted",
    "--window-size": "sliding-window attention is counted as full attention",
    "--overlap-grad-reduce": "gradient reduce overlapped with backward: no extra buffer "
                             "counted (Megatron's buckets are views of the grad buffer)",
    "--overlap-param-gather": "parameter all-gather overlapped with forward: no extra buffer "
                              "counted",
    "--grad-reduce-in-bf16": "main gradients kept in bf16: counted as fp32",
    "--moe-grouped-gemm": "grouped-GEMM experts: counted as per-expert MLPs",
    "--moe-token-dispatcher-type": "token dispatcher buffers (all-to-all / all-gather / flex "
                                   "permutation copies) are counted as one routed copy",
    "--moe-permute-fusion": "fused permutation: not distinguished",
    "--moe-router-dtype": "router logits dtype: counted as fp32",
    "--moe-pad-expert-input-to-capacity": "padding to capacity: counted only with a capacity "
                                          "factor",
    "--overlap-moe-expert-parallel-comm": "overlapped expert all-to-all: not modelled",
    "--cross-entropy-fusion-impl": "counted as the unfused loss",
    "--tp-comm-overlap": "TP communication-overlap userbuffers are not counted",
    "--enable-cuda-graph": "CUDA-graph static buffers and private pools are not counted",
    "--external-cuda-graph": "CUDA-graph static buffers and private pools are not counted",
    "--cuda-graph-impl": "CUDA-graph static buffers and private pools are not counted",
    "--cuda-graph-scope": "CUDA-graph static buffers and private pools are not counted",
    "--cuda-graph-modules": "CUDA-graph static buffers and private pools are not counted",
    "--pipeline-model-parallel-layout": "custom pipeline layout: layers taken as L/pp per "
                                        "stage",
    "--fp8-recipe": "fp8 scaling recipe: its scale/amax buffers are not counted",
    "--first-last-layers-bf16": "fp8 weights are counted in every block",
    "--fine-grained-activation-offloading": "activation offloading is not modelled",
    "--offload-modules": "activation offloading is not modelled",
    "--optimizer-cpu-offload": "optimizer offload is not modelled (states counted on the GPU)",
    "--use-precision-aware-optimizer": "main params/grads/states counted in fp32",
    "--main-grads-dtype": "main gradients counted in fp32",
    "--main-params-dtype": "main parameters counted in fp32",
    "--exp-avg-dtype": "Adam states counted in fp32",
    "--exp-avg-sq-dtype": "Adam states counted in fp32",
    "--num-distributed-optimizer-instances": "optimizer states sharded over the whole "
                                             "data-parallel group",
    "--delay-wgrad-compute": "delayed weight-gradient buffers are not counted",
    "--defer-embedding-wgrad-compute": "deferred embedding-gradient buffers are not counted",
    "--no-gradient-accumulation-fusion": "the 16-bit weight-gradient temporaries added into "
                                         "main_grad are not counted",
    "--empty-unused-memory-level": "no effect on allocated bytes (frees cached blocks)",
    "--cp-comm-type": "context-parallel communication buffers (p2p ring, all-to-all) are not "
                      "counted",
    "--hierarchical-context-parallel-sizes": "context-parallel communication buffers are not "
                                             "counted",
    "--megatron-fsdp-main-params-dtype": "Megatron-FSDP dtypes: counted as fp32 main "
                                         "params/grads",
    "--megatron-fsdp-main-grads-dtype": "Megatron-FSDP dtypes: counted as fp32 main "
                                        "params/grads",
    "--megatron-fsdp-grad-comm-dtype": "Megatron-FSDP dtypes: counted as fp32 main "
                                       "params/grads",
    "--overlap-param-gather-with-optimizer-step": "not modelled",
    "--fp8-dot-product-attention": "fp8 attention: attention activations counted in bf16",
    "--use-transformer-engine-op-fuser": "TE op fuser: saved tensors counted per operation",
    "--mtp-use-repeated-layer": "multi-token-prediction layers are not counted",
}

# Flags with no effect on memory (logging, data, checkpoints, schedules, hyper-parameters,
# numerics that keep tensor sizes): accepted silently.
_IGNORED = """
--use-mcore-models --use-legacy-models --log-interval --log-params-norm --log-num-zeros-in-grad
--log-validation-ppl-to-tensorboard --log-timers-to-tensorboard --log-memory-to-tensorboard
--log-throughput --log-progress --log-world-size-to-tensorboard --log-loss-scale-to-tensorboard
--log-energy --log-straggler --logging-level --timing-log-level --timing-log-option
--tensorboard-dir --tensorboard-log-interval --tensorboard-queue-size --wandb-project
--wandb-exp-name --wandb-save-dir --wandb-entity --profile --profile-step-start
--profile-step-end --profile-ranks --use-pytorch-profiler --micro-batch-size-schedule
--train-iters --train-samples --exit-interval --exit-duration-in-mins --exit-signal-handler
--eval-interval --eval-iters --eval-global-batch-size --skip-train --test-mode
--lr --min-lr --lr-decay-style --lr-decay-iters --lr-decay-samples --lr-warmup-fraction
--lr-warmup-iters --lr-warmup-samples --lr-warmup-init --lr-wsd-decay-style
--lr-wsd-decay-iters --lr-wsd-decay-samples --decoupled-lr --decoupled-min-lr
--weight-decay --weight-decay-incr-style --start-weight-decay --end-weight-decay --clip-grad
--adam-beta1 --adam-beta2 --adam-eps --sgd-momentum --loss-scale --initial-loss-scale
--min-loss-scale --loss-scale-window --hysteresis --init-method-std --init-method-xavier-uniform
--seed --data-parallel-random-init --te-rng-tracker --inference-rng-tracker
--save --load --save-interval --save-retain-interval --ckpt-format --ckpt-convert-format
--ckpt-convert-save --ckpt-fully-parallel-save --no-ckpt-fully-parallel-save
--ckpt-fully-parallel-load --ckpt-assume-constant-structure --dist-ckpt-strictness
--dist-ckpt-optim-fully-reshardable --async-save --use-persistent-ckpt-worker --async-strategy
--async-ckpt-use-cpu-shm --use-checkpoint-args --use-checkpoint-opt --auto-detect-ckpt-format
--no-load-optim --no-load-rng --no-save-optim --no-save-rng --finetune --pretrained-checkpoint
--override-opt_param-scheduler --use-checkpoint-opt_param-scheduler --override-opt
--use-dist-ckpt --verify-integrity
--data-path --train-data-path --valid-data-path --test-data-path --data-cache-path --split
--mock-data --num-workers --no-mmap-bin-files --no-create-attention-mask-in-dataloader
--reset-position-ids --reset-attention-mask --eod-mask-loss --dataloader-type
--object-storage-cache-path --per-split-data-args-path --data-args-path --fim-data --fim-rate
--fim-spm-rate --merge-file --tiktoken-pattern --tiktoken-num-special-tokens
--tokenizer-special-tokens --no-use-tokenizer-model-from-checkpoint-args --tokenizer-metadata
--distributed-backend --distributed-timeout-minutes --local-rank --use-tp-pp-dp-mapping
--deterministic-mode --no-check-for-nan-in-loss-and-grad --check-for-nan-in-loss-and-grad
--check-for-spiky-loss --check-for-large-grads --rerun-mode --manual-gc --manual-gc-interval
--manual-gc-eval --calculate-per-token-loss --rotary-base --rotary-scaling-factor
--rotary-interleaved --use-rope-scaling --rope-scaling-factor --rotary-seq-len-interpolation-factor
--mscale --mscale-all-dim --yarn-original-max-position-embeddings --yarn-beta-fast
--yarn-beta-slow --no-yarn-correction-range-round-to-int --yarn-correction-range-round-to-int
--norm-epsilon --attention-softmax-in-fp32 --apply-query-key-layer-scaling
--no-masked-softmax-fusion --no-bias-gelu-fusion --no-bias-swiglu-fusion
--no-bias-dropout-fusion --no-rope-fusion --no-persist-layer-norm
--no-async-tensor-model-parallel-allreduce
--moe-router-load-balancing-type --moe-aux-loss-coeff --moe-z-loss-coeff
--moe-router-score-function --moe-router-pre-softmax --moe-router-topk-scaling-factor
--moe-router-num-groups --moe-router-group-topk --moe-router-bias-update-rate
--moe-input-jitter-eps --moe-token-drop-policy --moe-router-fusion
--moe-per-layer-logging --moe-router-padding-for-fp8 --moe-flex-dispatcher-backend
--mtp-loss-scaling-factor --fp8-amax-history-len --fp8-amax-compute-algo --fp8-margin
--fp8-interval --fp8-wgrad --ddp-average-in-collective --ddp-bucket-size
--use-flashinfer-fused-rope --straggler-minmax-count --enable-experimental
--check-weight-hash-across-dp-replicas-interval --no-use-layer-wise-param-layout
--disable-gloo-process-groups --outer-dp-sharding-strategy --wgrad-deferral-limit
--microbatch-group-size-per-virtual-pipeline-stage --overlap-p2p-communication-warmup-flush
--overlap-p2p-communication --no-overlap-p2p-communication --step-batch-size-schedule
--rampup-batch-size --exit-on-missing-checkpoint --non-persistent-save-interval
--non-persistent-ckpt-type --ckpt-step --load-main-params-from-ckpt --muon-momentum
--muon-scale-mode --muon-extra-scale-factor --export-te-mcore-model --log-max-attention-logit
--tp-comm-overlap-cfg --cuda-graph-warmup-steps --num-dataset-builder-threads
--use-cpu-initialization --qk-clip --no-load-main-params-from-ckpt
"""
IGNORED_FLAGS = frozenset(_IGNORED.split())


@dataclass(frozen=True)
class Note:
    """One flag this reader reports: unknown, unmodelled (with what we assume), unresolved."""

    flag: str
    value: str | None
    kind: str
    detail: str

    def line(self) -> str:
        value = "" if self.value is None else f" {self.value}"
        return f"{self.kind}: {self.flag}{value} ({self.detail})"


@dataclass(frozen=True)
class MegatronLaunch:
    """A parsed Megatron-LM launch.

    `train`: TrainConfig vocabulary values the flags fix (user-facing names); `grad_accum`
    needs the number of GPUs: `config_values(n_gpus)`. `world_size`/`gpus_per_node`: from a
    launcher in a shell script (torchrun --nproc_per_node x --nnodes), else None.
    `settings`: Megatron flags that matter for memory but have no vocabulary key.
    """

    source: str
    architecture: Architecture
    train: dict
    global_batch_size: int | None
    world_size: int | None
    gpus_per_node: int | None
    settings: dict
    notes: tuple[Note, ...]
    arguments: dict = field(default_factory=dict)

    def spec(self) -> ModelSpec:
        name = PREFIX + self.source
        return ModelSpec(name=name, display_name=name, arch=self.architecture,
                         source=self.source, extra={"megatron": self})

    def config_values(self, n_gpus=None) -> dict:
        """The vocabulary values of the launch, with grad_accum from --global-batch-size /
        (micro_batch·dp), dp = n_gpus/(tp·pp·cp), when the number of GPUs is known."""
        values = dict(self.train)
        n_gpus = n_gpus if n_gpus is not None else self.world_size
        if n_gpus is not None:
            values["n_gpus"] = n_gpus
            accum = grad_accum(self.global_batch_size, self.train, n_gpus, self.source)
            if accum is not None:
                values["grad_accum"] = accum
        if self.gpus_per_node is not None:
            values["gpus_per_node"] = self.gpus_per_node
        return values


# ---- reading files -------------------------------------------------------------------------

def read_launch(path: str | Path, extra_arguments: tuple[str, ...] = ()) -> MegatronLaunch:
    """A `MegatronLaunch` from a text file of flags, a YAML mapping or a shell script.

    `extra_arguments` are appended to the file's flags (later flags win, as in argparse)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file (after {PREFIX!r}: a Megatron-LM argument "
                         f"list, YAML or launch script).") from None
    except UnicodeDecodeError as err:
        raise SweepError(f"{path}: not a text file ({err}).") from None
    if path.suffix in (".yaml", ".yml"):
        tokens, notes, launcher = yaml_arguments(text, str(path)), [], {}
    else:
        tokens, notes, launcher = shell_arguments(text, str(path))
    return parse_arguments([*tokens, *extra_arguments], str(path), notes=notes, launcher=launcher)


def yaml_arguments(text: str, where: str) -> list[str]:
    """Flags of a YAML mapping (`MODEL_ARGS` of a functional-test config, or the top level),
    converted as _run_training.sh does: `true` is a bare flag, a list gives several values,
    an empty value a bare flag; `false` leaves the flag out."""
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SweepError(f"{where}: not valid YAML ({err}).") from None
    if not isinstance(document, dict):
        raise SweepError(f"{where}: expected a mapping of flags (or MODEL_ARGS: mapping).")
    mapping = document.get("MODEL_ARGS", document)
    if not isinstance(mapping, dict):
        raise SweepError(f"{where}: MODEL_ARGS must be a mapping of flags to values.")
    tokens = []
    for key, value in mapping.items():
        key = str(key)
        if not key.startswith("--"):
            raise SweepError(f"{where}: key {key!r} is not a flag (flags start with '--').")
        if value is False:
            continue
        tokens.append(key)
        if value is True or value is None or value == "":
            continue
        values = value if isinstance(value, list) else [value]
        tokens.extend(_yaml_scalar(v) for v in values)
    return tokens


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_ASSIGN = re.compile(
    r"^(?:export\s+|local\s+|declare\s+(?:-\w+\s+)?)?([A-Za-z_]\w*)(\+?)=(.*)$", re.S)
_VAR = re.compile(
    r"\$\(\((?P<arith>.*?)\)\)"
    r"|\$\((?P<command>[^)]*)\)"
    r"|\$\{(?P<name>[A-Za-z_]\w*|\d+)(?P<index>\[[@*]\])?(?::?-(?P<default>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_]\w*|\d)"
)
_LAUNCHERS = ("torchrun", "python", "python3", "ft_launcher", "deepspeed", "srun", "uv")
_NPROC_FLAGS = ("--nproc_per_node", "--nproc-per-node")
_NNODES_FLAGS = ("--nnodes",)


@dataclass
class _Shell:
    """The little of a shell script's state that launch scripts use."""

    where: str
    scalars: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    unresolved: dict = field(default_factory=dict)  # placeholder -> what it stood for

    def expand(self, text: str) -> str:
        """Expand $NAME, ${NAME}, ${NAME:-default}, ${NAME[@]} and $((arithmetic)); anything
        the script does not define becomes a placeholder recorded in `unresolved`."""

        def one(match):
            if match.group("arith") is not None:
                expr = self.expand(match.group("arith"))
                expr = re.sub(r"\b([A-Za-z_]\w*)\b", lambda m: self.scalars.get(m[1], m[0]),
                              expr)
                if re.fullmatch(r"[\d\s+\-*/()]+", expr):  # integers and + - * / only
                    return str(int(eval(expr.replace("/", "//"), {"__builtins__": {}})))
                return self._placeholder(match.group(0))
            if match.group("command") is not None:
                return self._placeholder(match.group(0))
            name = match.group("name") or match.group("bare")
            if match.group("index") and name in self.arrays:
                return " ".join(self.arrays[name])
            if name in self.scalars:
                return self.scalars[name]
            if name in self.arrays:
                return self.arrays[name][0] if self.arrays[name] else ""
            if match.group("default") is not None:
                return self.expand(match.group("default"))
            return self._placeholder(match.group(0))

        return _VAR.sub(one, text)

    def _placeholder(self, original: str) -> str:
        key = f"@@unresolved{len(self.unresolved)}@@"
        self.unresolved[key] = original
        return key

    def words(self, text: str) -> list[str]:
        try:
            return shlex.split(self.expand(text), comments=True)
        except ValueError as err:
            raise SweepError(f"{self.where}: cannot split {text.strip()[:60]!r} ({err}).") from None


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and multi-line `( ... )` arrays gathered."""
    joined = re.sub(r"\\\r?\n", " ", text)
    lines, pending = [], None
    for raw in joined.splitlines():
        if pending is not None:
            pending += "\n" + raw
            if _closes_array(pending):
                lines.append(pending)
                pending = None
            continue
        match = _ASSIGN.match(raw.strip())
        if match and match.group(3).startswith("(") and not _closes_array(raw):
            pending = raw
        else:
            lines.append(raw)
    if pending is not None:
        lines.append(pending)
    return lines


def _closes_array(text: str) -> bool:
    """Whether an `( ...` array opened in text is closed, ignoring quoted and commented text."""
    try:
        body = shlex.shlex(text.split("=", 1)[1], posix=True, punctuation_chars="()")
        body.whitespace_split = True
        body.commenters = "#"
        depth = 0
        for token in body:
            depth += token.count("(") - token.count(")")
        return depth <= 0
    except ValueError:
        return False


def _condition(shell: _Shell, text: str) -> bool | None:
    """`[[ "$A" == "x" ]] || [ -z "$B" ]`-style conditions; None when not understood."""
    words = shell.words(text)
    clauses, current = [], []
    for word in words:
        if word in ("||", "&&"):
            clauses.append(current)
            clauses.append(word)
            current = []
        elif word not in ("[[", "]]", "[", "]"):
            current.append(word)
    clauses.append(current)
    result, joiner = None, None
    for clause in clauses:
        if clause in ("||", "&&"):
            joiner = clause
            continue
        value = _test(clause)
        if value is None or any("@@unresolved" in w for w in clause):
            return None
        result = value if joiner is None else (
            (result or value) if joiner == "||" else (result and value))
    return result


def _test(words: list[str]) -> bool | None:
    """One `[[ ... ]]` test. File tests are taken as true: a launch script checks that its
    inputs exist, and we read it as if they do."""
    if words[:1] == ["!"]:
        inner = _test(words[1:])
        return None if inner is None else not inner
    if len(words) == 2 and words[0] in ("-f", "-d", "-e", "-s"):
        return True
    if len(words) == 3 and words[1] in ("==", "="):
        return words[0] == words[2]
    if len(words) == 3 and words[1] == "!=":
        return words[0] != words[2]
    if len(words) == 2 and words[0] in ("-z", "-n"):
        return (words[1] == "") == (words[0] == "-z")
    if len(words) == 1:
        return words[0] != ""
    return None


def shell_arguments(text: str, where: str) -> tuple[list[str], list[Note], dict]:
    """(Megatron flags, notes, launcher values) of a launch script or a plain list of flags.

    The flags are the words after the first `*.py` script of a launcher command (torchrun,
    python, ft_launcher, ...); a file without one is taken as a plain list of flags.
    """
    shell = _Shell(where)
    notes: list[Note] = []
    stack: list[list[bool]] = []  # per open `if`: [this branch active, some branch taken]
    launch, loose = None, []
    for line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword = stripped.split(None, 1)[0].rstrip(";")
        if keyword in ("if", "elif"):
            condition = re.sub(r";\s*then\s*$", "", stripped.split(None, 1)[1]).strip()
            active_above = all(frame[0] for frame in stack[:-1] if frame) if keyword == "elif" \
                else all(frame[0] for frame in stack)
            value = _condition(shell, condition) if active_above else False
            if value is None:
                notes.append(Note("if", condition, UNRESOLVED,
                                  "condition not understood: its branch was taken"))
                value = True
            if keyword == "if":
                stack.append([value, value])
            else:
                frame = stack[-1] if stack else [False, True]
                frame[0] = value and not frame[1]
                frame[1] = frame[1] or frame[0]
            continue
        if keyword == "else" and stack:
            stack[-1][0] = not stack[-1][1]
            stack[-1][1] = True
            continue
        if keyword == "fi" and stack:
            stack.pop()
            continue
        if keyword in ("then", "do", "done", "for", "while", "case", "esac", "function") or \
                not all(frame[0] for frame in stack):
            continue
        assign = _ASSIGN.match(stripped)
        if assign:
            name, append, value = assign.groups()
            if value.startswith("("):
                elements = shell.words(value.strip()[1:].rsplit(")", 1)[0])
                words = [w for e in elements for w in e.split()]
                shell.arrays[name] = (shell.arrays.get(name, []) if append else []) + words
            else:
                words = shell.words(value)
                shell.scalars[name] = (shell.scalars.get(name, "") if append else "") + \
                    " ".join(words)
            continue
        words = _until_operator(shell.words(line))
        script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
        if script is not None and launch is None and (
                i := _launcher_start(words[:script])) is not None:
            launch = (words[i:script], words[script + 1:])
        elif words and words[0].startswith("--"):
            loose.extend(words)
    launcher, tokens = (_launcher_values(launch[0]), launch[1]) if launch else ({}, loose)
    return _mark_unresolved(tokens, shell, notes), notes, launcher


_OPERATOR = re.compile(r"^(\d?>.*|<.*|\|\|?|&&?|;)$")


def _until_operator(words: list[str]) -> list[str]:
    """The words of the first command: up to a pipe, redirection, `;`, `&&` or `&`."""
    for i, word in enumerate(words):
        if _OPERATOR.match(word):
            return words[:i]
    return words


def _launcher_start(words: list[str]) -> int | None:
    for i, word in enumerate(words):
        if Path(word).name in _LAUNCHERS:
            return i
    return 0 if not words else None


def _launcher_values(words: list[str]) -> dict:
    """--nproc_per_node and --nnodes of torchrun-style launchers, when given as numbers."""
    out = {}
    for i, word in enumerate(words):
        name, _, inline = word.partition("=")
        value = inline or (words[i + 1] if i + 1 < len(words) else "")
        if name in _NPROC_FLAGS + _NNODES_FLAGS and value.isdigit():
            out["gpus_per_node" if name in _NPROC_FLAGS else "nnodes"] = int(value)
    return out


def _mark_unresolved(tokens: list[str], shell: _Shell, notes: list[Note]) -> list[str]:
    """Put back each unresolved reference's original text (`$NAME`) in the tokens."""
    out = []
    for token in tokens:
        for key, original in shell.unresolved.items():
            token = token.replace(key, original)
        out.append(token)
    return out


# ---- flags -> values -----------------------------------------------------------------------

def split_flags(tokens: list[str], where: str) -> dict[str, list[str]]:
    """`--flag v1 v2 --other` -> {"--flag": ["v1", "v2"], "--other": []}; `--flag=v` too.
    A repeated flag keeps its last values (as argparse)."""
    flags: dict[str, list[str]] = {}
    current = None
    for token in tokens:
        if token.startswith("--"):
            name, eq, inline = token.partition("=")
            current = name
            flags[current] = [inline] if eq else []
        elif current is None:
            raise SweepError(f"{where}: {token!r} comes before any flag; a Megatron-LM "
                             f"argument list is '--flag value ...'.")
        else:
            flags[current].append(token)
    return flags


def _is_unresolved(value: str) -> bool:
    return "$" in value or "@@unresolved" in value


class _Flags:
    """Typed access to the flags, with errors naming the file, the flag and what is allowed."""

    def __init__(self, flags: dict[str, list[str]], where: str):
        self.flags, self.where = flags, where

    def has(self, name: str) -> bool:
        return name in self.flags

    def _one(self, name: str, kind: str) -> str | None:
        if name not in self.flags:
            return None
        values = self.flags[name]
        if len(values) != 1:
            got = "no value" if not values else f"{len(values)} values {values}"
            raise SweepError(f"{self.where}: {name} takes one value ({kind}), got {got}.")
        value = values[0]
        if _is_unresolved(value):
            raise SweepError(f"{self.where}: {name} is {value!r}, which the file does not "
                             f"define; give {kind}.")
        return value

    def int(self, name: str, default=None):
        value = self._one(name, "an integer")
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not number.is_integer() or number < 0:
            raise SweepError(f"{self.where}: {name} must be a non-negative integer, got {value!r}.")
        return int(number)

    def float(self, name: str, default=None):
        value = self._one(name, "a number")
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise SweepError(f"{self.where}: {name} must be a number, got {value!r}.") from None

    def str(self, name: str, default=None):
        allowed = CHOICES.get(name)
        value = self._one(name, f"one of {list(allowed)}" if allowed else "a value")
        if value is None:
            return default
        if allowed and value not in allowed:
            raise SweepError(f"{self.where}: {name} must be one of {list(allowed)}, got "
                             f"{value!r}.{did_you_mean(value, allowed)}")
        return value

    def bool(self, name: str) -> bool:
        if name not in self.flags:
            return False
        values = self.flags[name]
        if values and values != ["true"]:
            raise SweepError(f"{self.where}: {name} is a switch and takes no value, got "
                             f"{' '.join(values)!r}.")
        return True

    def list(self, name: str) -> list[str]:
        return list(self.flags.get(name, []))


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron-LM `vocab_size_with_padding` (megatron/core/tokenizers/utils/build_tokenizer.py
    @ MEGATRON_COMMIT): the vocabulary padded up to a multiple of divisible_by·tp."""
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)


def _vocab_size(f: _Flags, tp: int, notes: list[Note]) -> int:
    """The padded vocabulary: --padded-vocab-size, else the tokenizer's size padded by
    `padded_vocab_size`. The size comes from --vocab-size for NullTokenizer and TikTokenizer
    (default 2^17), is 50,257 for GPT2BPETokenizer (pretrain_gpt.py's default) and otherwise
    lives in a tokenizer file: then --vocab-size is required."""
    padded = f.int("--padded-vocab-size")
    if padded is not None:
        return padded
    tokenizer = f.str("--tokenizer-type", DEFAULT_TOKENIZER)
    given = f.int("--vocab-size")
    if given is not None:
        if tokenizer not in VOCAB_SIZE_FROM_ARGS:
            notes.append(Note("--vocab-size", str(given), ASSUMED,
                              f"{tokenizer} takes its size from its tokenizer file; "
                              f"--vocab-size is taken as that size"))
        base = given
    elif tokenizer == "TikTokenizer":
        base = TIKTOKEN_DEFAULT_VOCAB_SIZE
    elif tokenizer == "GPT2BPETokenizer":
        base = GPT2_VOCAB_SIZE
        notes.append(Note("--tokenizer-type", tokenizer, ASSUMED,
                          f"the GPT-2 vocab.json ({GPT2_VOCAB_SIZE:,} tokens) is assumed for "
                          f"--vocab-file"))
    else:
        source = f.flags.get("--tokenizer-model", ["its tokenizer file"])[0]
        raise SweepError(
            f"{f.where}: the vocabulary size of --tokenizer-type {tokenizer} comes from "
            f"{source}, which cannot be read here; add --vocab-size N (the tokenizer's size) or "
            f"--padded-vocab-size N.")
    divisible_by = f.int("--make-vocab-size-divisible-by", DEFAULT_MAKE_VOCAB_SIZE_DIVISIBLE_BY)
    if divisible_by == 0:
        raise SweepError(f"{f.where}: --make-vocab-size-divisible-by must be >= 1.")
    return padded_vocab_size(base, divisible_by, tp)


def moe_layer_pattern(value: str | None, num_layers: int, where: str) -> list[int]:
    """Megatron-LM's MoE layer pattern (gpt_layer_specs.py `get_moe_layer_pattern`; the
    `moe_freq_type` of arguments.py): an integer freq puts an MoE layer in block i where
    i % freq == 0; a Python list expression such as "([0]*3+[1]*57)" gives the pattern
    itself."""
    if value is None:
        return [1] * num_layers
    if "[" not in value:
        try:
            every = int(value)
        except ValueError:
            every = 0
        if every < 1:
            raise SweepError(f"{where}: --moe-layer-freq must be an integer >= 1 or a list "
                             f"expression like '([0]*3+[1]*57)', got {value!r}.")
        return [1 if i % every == 0 else 0 for i in range(num_layers)]
    pattern = _list_expression(value, where)
    if len(pattern) != num_layers or any(p not in (0, 1) for p in pattern):
        raise SweepError(f"{where}: --moe-layer-freq {value!r} must list num_layers = "
                         f"{num_layers} entries of 0 or 1, got {len(pattern)}.")
    return pattern


def _list_expression(text: str, where: str) -> list:
    """Evaluate list literals joined by + and * (no names, no calls)."""

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.List | ast.Tuple):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        result = value(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, TypeError):
        raise SweepError(f"{where}: --moe-layer-freq {text!r} is not a list expression of "
                         f"0/1 entries such as '([0]*3+[1]*57)'.") from None
    if not isinstance(result, list):
        raise SweepError(f"{where}: --moe-layer-freq {text!r} must evaluate to a list.")
    return result


def _architecture(f: _Flags, tp: int, notes: list[Note]) -> Architecture:
    """The architecture of a GPTModel built from the flags (argument_utils.py
    `core_transformer_config_from_args`, gpt_layer_specs.py), each default as Megatron's."""
    for required in ("--num-layers", "--hidden-size", "--num-attention-heads"):
        if not f.has(required):
            raise SweepError(f"{f.where}: {required} is required (a Megatron-LM GPT model "
                             f"needs --num-layers, --hidden-size and --num-attention-heads).")
    hidden, layers, heads = f.int("--hidden-size"), f.int("--num-layers"), \
        f.int("--num-attention-heads")
    if min(hidden, layers, heads) < 1:
        raise SweepError(f"{f.where}: --num-layers, --hidden-size and --num-attention-heads "
                         f"must be >= 1.")
    head_dim = f.int("--kv-channels")
    if head_dim is None:
        if hidden % heads:
            raise SweepError(f"{f.where}: --hidden-size {hidden} is not a multiple of "
                             f"--num-attention-heads {heads}; give --kv-channels.")
        head_dim = hidden // heads
    kv_heads = (f.int("--num-query-groups", DEFAULT_NUM_QUERY_GROUPS)
                if f.bool("--group-query-attention") else heads)
    swiglu, quick_geglu = f.bool("--swiglu"), f.bool("--quick-geglu")
    ffn = f.int("--ffn-hidden-size")
    if ffn is None:  # arguments.py validate_args
        ffn = int((4 * hidden * 2 / 3) / 64) * 64 if swiglu else 4 * hidden
    position = f.str("--position-embedding-type", "learned_absolute")
    if f.bool("--use-rotary-position-embeddings"):
        position = "rope"
    if position not in ("learned_absolute", "rope", "yarn", "none"):
        notes.append(Note("--position-embedding-type", position, UNMODELLED,
                          "counted as rotary embeddings (no parameters)"))
    hidden_dropout = f.float("--hidden-dropout", DEFAULT_DROPOUT)
    attention_dropout = f.float("--attention-dropout", DEFAULT_DROPOUT)
    if (hidden_dropout > 0) != (attention_dropout > 0):
        notes.append(Note("--hidden-dropout", f"{hidden_dropout:g}", UNMODELLED,
                          f"attention dropout {attention_dropout:g}: counted as dropout on "
                          f"both (one switch in our model)"))
    values = dict(
        hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim, ffn_hidden_size=ffn, vocab_size=_vocab_size(f, tp, notes),
        max_position_embeddings=f.int("--max-position-embeddings", f.int("--seq-length", 4096)),
        gated_mlp=float(swiglu or quick_geglu),
        norm_bias=float(f.str("--normalization", "LayerNorm") == "LayerNorm"),
        tied_embeddings=float(not f.bool("--untie-embeddings-and-output-weights")),
        linear_bias=float(not f.bool("--disable-bias-linear")),
        qkv_bias=float(f.bool("--add-qkv-bias")),
        learned_position_embeddings=float(position == "learned_absolute"),
        dropout=float(hidden_dropout > 0 or attention_dropout > 0),
        # --qk-layernorm: a norm over each head's kv-channels on q and on k (TENorm per head,
        # megatron/core/models/gpt/gpt_layer_specs.py); MLA's latent norms are its own.
        qk_norm=float(QK_NORM_HEAD if f.bool("--qk-layernorm")
                      and not f.bool("--multi-latent-attention") else QK_NORM_NONE),
        mtp_layers=f.int("--mtp-num-layers") or 0,
        mlp_activation=float(ACTIVATION_RELU2 if f.bool("--squared-relu") else ACTIVATION_DEFAULT),
    )
    values |= _moe_fields(f, layers, ffn, notes)
    values |= _mla_fields(f, heads, notes)
    return Architecture(**{k: float(v) for k, v in values.items()})


def _moe_fields(f: _Flags, layers: int, ffn: int, notes: list[Note]) -> dict:
    experts = f.int("--num-experts") or 0
    if not experts:
        return {}
    pattern = moe_layer_pattern(f.flags.get("--moe-layer-freq", [None])[0], layers, f.where)
    dense = len(pattern) - sum(pattern)
    if pattern != [0] * dense + [1] * (layers - dense):
        notes.append(Note("--moe-layer-freq", f.flags["--moe-layer-freq"][0], UNMODELLED,
                          f"{dense} dense layers counted as the first {dense} (our model puts "
                          f"dense layers first)"))
    if not f.bool("--disable-bias-linear"):
        notes.append(Note("--disable-bias-linear", "absent", UNMODELLED,
                          "routed experts counted without biases"))
    shared = f.int("--moe-shared-expert-intermediate-size") or 0
    return dict(
        num_experts=experts,
        num_experts_per_tok=f.int("--moe-router-topk", DEFAULT_MOE_ROUTER_TOPK),
        moe_ffn_hidden_size=f.int("--moe-ffn-hidden-size", ffn),
        num_shared_experts=1 if shared else 0,
        shared_expert_ffn_hidden_size=shared,
        first_k_dense_layers=dense,
        # Megatron's router has no bias parameter (expert_bias is an fp32 buffer of E).
        router_bias=0,
    )


def _mla_fields(f: _Flags, heads: int, notes: list[Note]) -> dict:
    if not f.bool("--multi-latent-attention"):
        return {}
    q_lora = f.int("--q-lora-rank") or 0
    kv_lora = f.int("--kv-lora-rank", DEFAULT_KV_LORA_RANK)
    if not f.bool("--qk-layernorm"):
        notes.append(Note("--multi-latent-attention", None, UNMODELLED,
                          f"without --qk-layernorm Megatron has no latent q/kv norms; we count "
                          f"{q_lora + kv_lora} norm parameters per layer"))
    v_head = f.int("--v-head-dim", DEFAULT_V_HEAD_DIM)
    return dict(
        mla=1, num_kv_heads=heads, head_dim=v_head, q_lora_rank=q_lora, kv_lora_rank=kv_lora,
        qk_nope_head_dim=f.int("--qk-head-dim", DEFAULT_QK_HEAD_DIM),
        qk_rope_head_dim=f.int("--qk-pos-emb-head-dim", DEFAULT_QK_POS_EMB_HEAD_DIM),
        v_head_dim=v_head,
    )


def _virtual_stages(f: _Flags, layers: int, pp: int) -> int:
    """arguments.py: vpp = (L'/pp)/--num-layers-per-virtual-pipeline-stage, L' = L plus one for
    each of --account-for-embedding-in-pipeline-split and --account-for-loss-in-pipeline-split;
    or --num-virtual-stages-per-pipeline-rank."""
    stages = f.int("--num-virtual-stages-per-pipeline-rank")
    if stages is not None:
        return max(stages, 1)
    per_stage = f.int("--num-layers-per-virtual-pipeline-stage")
    if per_stage is None:
        return 1
    counted = layers + f.bool("--account-for-embedding-in-pipeline-split") + f.bool(
        "--account-for-loss-in-pipeline-split")
    if per_stage < 1 or counted % pp or (counted // pp) % per_stage:
        raise SweepError(f"{f.where}: --num-layers-per-virtual-pipeline-stage {per_stage} must "
                         f"divide the {counted}/{pp} layers of a pipeline stage.")
    return counted // pp // per_stage


def _precision(f: _Flags, notes: list[Note]) -> str:
    fp8 = f.str("--fp8-format")
    if f.bool("--bf16") and f.bool("--fp16"):
        raise SweepError(f"{f.where}: --bf16 and --fp16 are exclusive.")
    if fp8 is not None:
        if f.bool("--fp8-param-gather"):
            return "fp8-mixed"
        notes.append(Note("--fp8-format", fp8, UNMODELLED,
                          "fp8 compute with 16-bit weights: counted as bf16-mixed (TE's fp8 "
                          "weight and activation copies are not counted)"))
    if f.bool("--fp16"):
        return "fp16-mixed"
    return "bf16-mixed" if f.bool("--bf16") or fp8 is not None else "fp32"


def _recompute(f: _Flags, notes: list[Note]) -> tuple[str, int]:
    """(recompute, recompute_layers): TransformerConfig.recompute_granularity / _method /
    _num_layers. 'block' recomputes the first recompute_num_layers layers of each stage;
    'uniform' checkpoints every recompute_num_layers layers (1: every layer)."""
    granularity = f.str("--recompute-granularity")
    method = f.str("--recompute-method")
    layers = f.int("--recompute-num-layers")
    if granularity is None:
        return "none", 0
    if granularity == "selective":
        modules = f.list("--recompute-modules") or ["core_attn"]
        if modules != ["core_attn"]:
            notes.append(Note("--recompute-modules", " ".join(modules), UNMODELLED,
                              "selective recompute counted as core attention only"))
        return "selective", 0
    if method == "block":
        return "full", layers or 0
    if method == "uniform" and (layers or 1) > 1:
        notes.append(Note("--recompute-num-layers", str(layers), UNMODELLED,
                          f"uniform recompute of {layers}-layer chunks counted as every layer "
                          f"recomputed with its own input kept"))
    return "full", 0


def _framework(f: _Flags, notes: list[Note]) -> tuple[str, int]:
    """(framework, zero_stage): megatron with the distributed optimizer (ZeRO-1) or not;
    Megatron-FSDP / torch FSDP2 as fsdp."""
    if f.bool("--use-torch-fsdp2"):
        return "fsdp", 3
    if f.bool("--use-megatron-fsdp"):
        strategy = f.str("--data-parallel-sharding-strategy", "no_shard")
        notes.append(Note("--use-megatron-fsdp", strategy, UNMODELLED,
                          "Megatron-FSDP counted as PyTorch FSDP2 (fp32 main params and "
                          "gradients sharded)"))
        stage = {"no_shard": 0, "optim": 2, "optim_grads": 2, "optim_grads_params": 3}[strategy]
        return "fsdp", stage
    return "megatron", int(f.bool("--use-distributed-optimizer"))


def _optimizer(f: _Flags, notes: list[Note]) -> str:
    name = f.str("--optimizer", "adam")
    if name == "adam":
        return "adamw"  # Megatron's adam is AdamW (decoupled weight decay, TE/Apex FusedAdam)
    if name == "sgd":
        return "sgd-momentum"  # --sgd-momentum default 0.9
    notes.append(Note("--optimizer", name, UNMODELLED, "counted as AdamW"))
    return "adamw"


def _flash_attention(f: _Flags) -> int:
    """Fused attention kernels (flash, cuDNN fused, auto) keep no s x s scores; the unfused and
    local implementations (and --transformer-impl local without --use-flash-attn) do."""
    backend = f.str("--attention-backend", "auto")
    local = f.str("--transformer-impl", "transformer_engine") == "local"
    if backend in ("unfused", "local"):
        return 0
    return int(not local or f.bool("--use-flash-attn") or backend == "flash")


def _train(f: _Flags, arch: Architecture, notes: list[Note]) -> dict:
    tp = f.int("--tensor-model-parallel-size", 1)
    pp = f.int("--pipeline-model-parallel-size", 1)
    framework, zero = _framework(f, notes)
    recompute, recompute_layers = _recompute(f, notes)
    etp = f.int("--expert-tensor-parallel-size")
    values = dict(
        tp=tp, pp=pp, vpp=_virtual_stages(f, int(arch.num_layers), pp),
        cp=f.int("--context-parallel-size", 1), ep=f.int("--expert-model-parallel-size", 1),
        etp=0 if etp is None or etp == tp else etp,
        # arguments.py turns sequence parallelism off when tp = 1.
        sp=int(f.bool("--sequence-parallel") and tp > 1),
        zero_stage=zero, framework=framework, precision=_precision(f, notes),
        optimizer=_optimizer(f, notes), micro_batch=f.int("--micro-batch-size", 1),
        recompute=recompute, recompute_layers=recompute_layers,
        flash_attention=_flash_attention(f),
        capacity_factor=f.float("--moe-expert-capacity-factor", 0.0),
        loss_fusion=int(f.bool("--cross-entropy-loss-fusion")),
        first_stage_layers=f.int("--decoder-first-pipeline-num-layers") or 0,
        last_stage_layers=f.int("--decoder-last-pipeline-num-layers") or 0,
        embedding_in_split=int(f.bool("--account-for-embedding-in-pipeline-split")),
        loss_in_split=int(f.bool("--account-for-loss-in-pipeline-split")),
    )
    seq_len = f.int("--seq-length")
    if seq_len is not None:
        values["seq_len"] = seq_len
    return values


def parse_arguments(tokens: list[str], where: str, *, notes=(), launcher=None) -> MegatronLaunch:
    """A `MegatronLaunch` from Megatron-LM command-line words (see the module docstring)."""
    notes = list(notes)
    flags = split_flags(tokens, where)
    f = _Flags(flags, where)
    tp = f.int("--tensor-model-parallel-size", 1)
    if tp < 1:
        raise SweepError(f"{where}: --tensor-model-parallel-size must be >= 1.")
    arch = _architecture(f, tp, notes)
    train = _train(f, arch, notes)
    settings, read = {}, set(INT_FLAGS + FLOAT_FLAGS + STR_FLAGS + LIST_FLAGS + BOOL_FLAGS)
    for name, values in flags.items():
        shown = " ".join(values) or None
        if name in UNMODELLED_FLAGS:
            settings[name] = shown if shown is not None else True
            if not (name == "--moe-token-dispatcher-type" and arch.num_experts == 0):
                notes.append(Note(name, shown, UNMODELLED, UNMODELLED_FLAGS[name]))
        elif name in settings or name in read or name in IGNORED_FLAGS:
            if name in read and name not in PATH_FLAGS and any(map(_is_unresolved, values)):
                notes.append(Note(name, shown, UNRESOLVED, "not defined by the file"))
        else:
            notes.append(Note(name, shown, UNKNOWN, "not read; any memory effect is not "
                                                    "modelled"))
    for name in ("--transformer-impl", "--attention-backend", "--moe-token-dispatcher-type"):
        if name in flags:
            settings[name] = " ".join(flags[name])
    launcher = launcher or {}
    per_node = launcher.get("gpus_per_node")
    world = per_node * launcher.get("nnodes", 1) if per_node else None
    arguments = {name: (" ".join(v) if v else True) for name, v in flags.items()
                 if name not in IGNORED_FLAGS}
    return MegatronLaunch(
        source=where, architecture=arch, train=train,
        global_batch_size=f.int("--global-batch-size"), world_size=world,
        gpus_per_node=per_node, settings=settings, notes=tuple(notes), arguments=arguments,
    )


def grad_accum(global_batch_size: int | None, values: dict, n_gpus: int, where: str):
    """--global-batch-size / (micro_batch·dp), dp = n_gpus/(tp·pp·cp) (Megatron's number of
    micro-batches per step); None without a global batch size; SweepError if not whole."""
    if global_batch_size is None:
        return None
    model_parallel = values["tp"] * values["pp"] * values.get("cp", 1)
    if n_gpus % model_parallel:
        raise SweepError(f"{where}: {n_gpus} GPUs are not a multiple of "
                         f"tp·pp·cp = {model_parallel}.")
    per_step = values["micro_batch"] * (n_gpus // model_parallel)
    if global_batch_size % per_step:
        raise SweepError(f"{where}: --global-batch-size {global_batch_size} is "
                         f"not a multiple of micro_batch·dp = {per_step} on {n_gpus} GPUs.")
    return global_batch_size // per_step


# ---- the catalog and explain ----------------------------------------------------------------

def is_megatron(name: str) -> bool:
    return name.startswith(PREFIX)


def read_model(name: str) -> ModelSpec:
    """`catalog.model` for `megatron:PATH`."""
    return read_launch(name[len(PREFIX):]).spec()


def explain_values(model_name: str, cli_values: dict, explicit: set[str]) -> tuple[dict, list]:
    """`explain` values for a `megatron:` model and the lines to print about the launch: its
    parallel and training values are the defaults, the flags given on the command line
    (`explicit`, vocabulary keys) override them; grad_accum follows from
    --global-batch-size on the merged layout. Without a world size in the file or --n-gpus,
    the run is taken on 8 GPUs when tp·pp·cp divides 8 (and the batch), else on tp·pp·cp."""
    launch = read_launch(model_name[len(PREFIX):])
    lines = [f"megatron: {note.line()}" for note in launch.notes]
    file_values = dict(launch.train)
    if launch.world_size is not None:
        file_values["n_gpus"] = launch.world_size
    if launch.gpus_per_node is not None:
        file_values["gpus_per_node"] = launch.gpus_per_node
    merged = dict(cli_values)
    merged.update({k: v for k, v in file_values.items() if k not in explicit})
    if "n_gpus" not in explicit and launch.world_size is None:
        model_parallel = merged["tp"] * merged["pp"] * merged["cp"]
        n_gpus = DEFAULT_GPUS if DEFAULT_GPUS % model_parallel == 0 else model_parallel
        per_step = merged["micro_batch"] * n_gpus // model_parallel
        if launch.global_batch_size is not None and launch.global_batch_size % per_step:
            n_gpus = model_parallel
        merged["n_gpus"] = n_gpus
        lines.append(f"megatron: the file gives no number of GPUs: {n_gpus} assumed "
                     f"(give --n-gpus)")
    if "grad_accum" not in explicit:
        accum = grad_accum(launch.global_batch_size, merged, merged["n_gpus"], launch.source)
        if accum is not None:
            merged["grad_accum"] = accum
    return merged, lines
