"""Which parameters one GPU holds: a pipeline stage, split by tensor and expert parallelism.

Notation: docs/notation.md. Here n GPUs, t, p, c, x, t_e the tensor, pipeline, context, expert
and expert tensor-parallel degrees, D = n/(t·p·c) the data-parallel degree, L blocks.
ZeRO and FSDP shard over every rank that holds the same parameters, N of them: the dense
parameters over N = D·c = n/(t·p) ranks (Megatron-LM's distributed optimizer uses the
data-parallel group with context parallelism), the routed experts over N = n/(t_e·p·x).

A pipeline stage holds L/p consecutive blocks, or the uneven split `stage_layer_counts` gives;
the first also holds the input embedding, the last the final norm and the head (with p = 1 one
stage holds all). Memory is evaluated for the first, the last and, when the split is uneven,
the second stage (the middle stage with the most micro-batches in flight), and the largest
total is reported (the most loaded rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from sweep import model, xp
from sweep import vocabulary as vocab
from sweep.config import TrainConfig

FIRST, LAST, MIDDLE = 0, 1, 2  # MIDDLE: the second stage, rank 1 of p
FULL, LORA, QLORA = vocab.codes("finetune", "full", "lora", "qlora")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StageShard:
    """Parameter counts on one GPU of one pipeline stage (before ZeRO/FSDP sharding).

    base_*: the model's own parameters (dense: replicated over the n/(t·p) data-parallel ranks;
    expert: routed experts, over n/(t_e·p·x)); block_linear: the part in the blocks' linear weights
    (quantised by QLoRA, fp8 in fp8-mixed); adapters: LoRA parameters; trainable_*: what gets
    gradients and optimizer states; factored_*: Adafactor's second-moment elements of the
    trainable parameters; frozen_*: the model's own parameters that get no gradient (the
    frozen leading blocks and embedding of a partial fine-tune, or the whole base under
    LoRA/QLoRA); largest_module and block: DeepSpeed's largest layer and one FSDP unit (the
    heaviest block), block_linear_unit the part of that block in linear weights, adapters_unit
    its LoRA adapters; head_linear: the output projection's weight on this stage (the input
    embedding's when tied), V·h/t; root: what FSDP's root unit holds on this stage (the input
    embedding, final norm and head), root_trainable its part that trains in full fine-tuning.
    """

    base_dense: object
    base_expert: object
    block_linear: object
    adapters: object
    trainable_dense: object
    trainable_expert: object
    factored_dense: object
    factored_expert: object
    largest_module: object
    block: object
    frozen_dense: object = 0.0
    frozen_expert: object = 0.0
    block_linear_unit: object = 0.0
    adapters_unit: object = 0.0
    head_linear: object = 0.0
    root: object = 0.0
    root_trainable: object = 0.0


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RankParams:
    """Parameter counts on one TP/EP rank that depend only on the model, t, x, t_e and the
    LoRA setting (rank, targets): one block of each kind (`model.block_kinds`) and the
    largest single linear (`model.largest_linear_params`). Neither reads the vocabulary, so
    Megatron-LM's padding of it does not change them. A grid has few such combinations: the
    engine computes them on the host in float64 over the axes they read
    (`enumerate.Tables.rank_tables`) and passes them to its kernel as arguments, instead of
    tracing a sum over every linear (a third of the terms program's operations)."""

    kinds: model.BlockKinds
    largest_linear: object


def rank_params(arch: model.Architecture, cfg: TrainConfig) -> RankParams:
    """`RankParams` of `arch` under `cfg`'s tp, ep, `expert_tp` and LoRA rank and targets."""
    kinds = model.block_kinds(arch, cfg.tp, cfg.ep, expert_tp(cfg), cfg.lora_rank,
                              cfg.lora_targets)
    return RankParams(kinds, model.largest_linear_params(arch, cfg.tp))


@xp.reused
def dense_shard_degree(cfg: TrainConfig):
    """Ranks sharing the dense parameters, over which ZeRO/FSDP shard them: n/(t·p)."""
    return cfg.n_gpus / (cfg.tp * cfg.pp)


@xp.reused
def expert_tp(cfg: TrainConfig):
    """Tensor-parallel degree of the routed experts: `etp`, or tp when etp = 0."""
    return xp.where(cfg.etp > 0, cfg.etp, cfg.tp)


@xp.reused
def expert_shard_degree(cfg: TrainConfig):
    """Ranks sharing one routed-expert shard: n/(t_e·p·x), t_e = `expert_tp`."""
    return cfg.n_gpus / (expert_tp(cfg) * cfg.pp * cfg.ep)


@xp.reused
def gpus_on_node(cfg: TrainConfig):
    """GPUs of this run on one node: gpus_per_node, or fewer when the run is smaller."""
    return xp.minimum(cfg.n_gpus, cfg.gpus_per_node)


def data_parallel_degree(cfg: TrainConfig):
    """D = n/(t·p·c)."""
    return cfg.n_gpus / (cfg.tp * cfg.pp * cfg.cp)


@xp.reused
def stage_layer_counts(arch: model.Architecture, cfg: TrainConfig):
    """Blocks on the (first, middle, last) pipeline stages, as Megatron-LM's
    `get_num_layers_to_build` (megatron/core/transformer/transformer_block.py, commit
    d98e8a64ddf34856e74b24714e3bedb2f5a39553). Uneven: the first and/or last stage hold the
    layers given, the other stages the rest evenly. Else L/p each, or with the embedding and/or
    the loss counted as layers, (L + 1 or 2)/p each, the first (last) stage one block fewer."""
    L, p = arch.num_layers, cfg.pp
    first_given, last_given = cfg.first_stage_layers > 0, cfg.last_stage_layers > 0
    rest = L - first_given * cfg.first_stage_layers - last_given * cfg.last_stage_layers
    stages_left = p - first_given - last_given
    middle_uneven = rest / xp.maximum(stages_left, 1)
    even = (L + cfg.embedding_in_split + cfg.loss_in_split) / p
    uneven = first_given | last_given
    first = xp.where(uneven, xp.where(first_given, cfg.first_stage_layers, middle_uneven),
                     even - cfg.embedding_in_split)
    last = xp.where(uneven, xp.where(last_given, cfg.last_stage_layers, middle_uneven),
                    even - cfg.loss_in_split)
    middle = xp.where(uneven, middle_uneven, even)
    single = p == 1
    return (xp.where(single, L, first), xp.where(single, L, middle), xp.where(single, L, last))


def by_stage(stage, first, middle, last):
    """The value of `first`, `middle` or `last` for a stage code (`FIRST`, `MIDDLE`, `LAST`),
    or for every code of a stage array (`stage_axis`): one evaluation of a formula then
    covers every stage, each along the array's leading axis."""
    if isinstance(stage, int):
        return {FIRST: first, MIDDLE: middle, LAST: last}[stage]
    return xp.where(stage == FIRST, first, xp.where(stage == MIDDLE, middle, last))


def is_constant(value, number) -> bool:
    """`value` is a plain number equal to `number` (a sweep's unswept axes are Python numbers;
    a swept one is an array, whose values may differ)."""
    return isinstance(value, int | float | np.number) and float(value) == number


def end_stages(cfg: TrainConfig) -> tuple[int, ...]:
    """The first and the last stage, or the first alone when pp is the constant 1: the one
    stage is then both (`holds_embedding`, `holds_head`), and evaluating it once is
    evaluating both."""
    return (FIRST,) if is_constant(cfg.pp, 1) else (FIRST, LAST)


def stage_axis(codes, like) -> np.ndarray:
    """The stage codes as an array that broadcasts ahead of every input in `like` (a pytree
    of arrays and numbers): shape (len(codes), 1, ..., 1), one 1 per dimension of the widest
    input. A formula given it for `stage` returns each stage's value along axis 0 where it
    depends on the stage (`stage_values` takes them apart)."""
    ndim = max((np.ndim(leaf) for leaf in jax.tree_util.tree_leaves(like)), default=0)
    return np.asarray(codes).reshape((len(codes),) + (1,) * ndim)


def on_stage_axis(a, stages: np.ndarray):
    """`a` with the leading stage axis of `stages` (`stage_axis`), of size 1 where it is the
    same on every stage: every leaf then indexes by stage alike."""
    shape = np.shape(a)
    return xp.namespace(a).reshape(a, (1,) * (stages.ndim - len(shape)) + shape)


def stage_values(tree, stages: np.ndarray) -> list:
    """One pytree per stage of `stages` (`stage_axis`): a leaf with the leading stage axis is
    indexed, one without it (independent of the stage) is shared."""
    ndim = stages.ndim
    return [jax.tree_util.tree_map(lambda leaf, i=i: leaf[i] if np.ndim(leaf) == ndim else leaf,
                                   tree) for i in range(stages.shape[0])]


def stage_layers(arch: model.Architecture, cfg: TrainConfig, stage):
    """(number of blocks, index of the first block) on the first, middle or last stage."""
    first, middle, last = stage_layer_counts(arch, cfg)
    return (by_stage(stage, first, middle, last),
            by_stage(stage, 0, first, arch.num_layers - last))


def holds_embedding(cfg: TrainConfig, stage):
    """The first stage holds the input embedding (every stage when pp = 1)."""
    single = cfg.pp == 1
    return by_stage(stage, 1, single, single)


def holds_head(cfg: TrainConfig, stage):
    """The last stage holds the final norm and the head (every stage when pp = 1)."""
    single = cfg.pp == 1
    return by_stage(stage, single, single, 1)


def stage_shard(arch: model.Architecture, cfg: TrainConfig, stage,
                rank: RankParams | None = None) -> StageShard:
    """Parameters on one GPU of the first (`FIRST`), middle or last (`LAST`) pipeline stage
    (or of every stage of a `stage_axis`). `rank`: the rank's `rank_params`, when already
    computed."""
    tp, ep, etp = cfg.tp, cfg.ep, expert_tp(cfg)
    layers, first_layer = stage_layers(arch, cfg, stage)
    with_embedding, with_head = holds_embedding(cfg, stage), holds_head(cfg, stage)
    rank = rank_params(arch, cfg) if rank is None else rank
    # One dense and one MoE block on this rank: every run of blocks below is made of them.
    kinds = rank.kinds
    blocks = model.over_layers(arch, kinds, layers, first_layer)
    embedding = with_embedding * model.embedding_params(arch, tp)
    # The head's vocabulary dimension is split; its hidden dimension is the factored column.
    # Tied to the embedding, the head is the embedding's weight on a single stage; with pp > 1
    # the last stage keeps its own copy, kept equal by an all-reduce of their gradients
    # (Megatron-LM `share_embeddings_and_output_weights`, DeepSpeed `TiedLayerSpec`).
    head_weight = xp.where(cfg.pp > 1, model.head_params(arch.replace(tied_embeddings=0), tp),
                           model.head_params(arch, tp))
    head = with_head * (head_weight + model.final_norm_params(arch))
    # Multi-token-prediction modules sit with the head (Megatron-LM: on the last stage).
    mtp = model.mtp_params(arch, tp, ep, etp, kinds)
    mtp_dense, mtp_expert = with_head * mtp.dense, with_head * mtp.expert
    base_dense = blocks.dense + embedding + head + mtp_dense
    base_expert = blocks.expert + mtp_expert

    # Leading frozen blocks (and the embedding, when any block is frozen) of a partial fine-tune.
    frozen_layers = xp.minimum(xp.maximum(cfg.frozen_layers - first_layer, 0), layers)
    frozen = model.over_layers(arch, kinds, frozen_layers, first_layer)
    frozen_embedding = embedding * (cfg.frozen_layers > 0)
    full_dense = base_dense - frozen.dense - frozen_embedding
    full_expert = base_expert - frozen.expert

    adapters = xp.where(cfg.finetune == FULL, 0, blocks.lora)
    is_full = cfg.finetune == FULL

    factored_blocks = model.over_layers(arch, kinds, layers - frozen_layers,
                                        first_layer + frozen_layers).factored
    vocab_rows = arch.vocab_size / tp
    factored_embedding = (cfg.frozen_layers <= 0) * with_embedding * (
        vocab_rows + arch.hidden_size
        + arch.learned_position_embeddings * (arch.max_position_embeddings + arch.hidden_size)
    )
    untied_here = xp.where(cfg.pp > 1, 1, 1 - arch.tied_embeddings)
    factored_head = with_head * (
        untied_here * (vocab_rows + arch.hidden_size) + model.final_norm_params(arch)
    )
    factored_mtp = with_head * mtp.factored
    full_factored = factored_blocks + factored_embedding + factored_head + factored_mtp
    expert_share = xp.where(full_dense + full_expert > 0, full_expert, 0) / xp.maximum(
        full_dense + full_expert, 1
    )
    # The heaviest block (the last one: MoE when the model has any) is one FSDP/ZeRO-3 unit.
    unit = model.over_layers(arch, kinds, 1, arch.num_layers - 1)
    # LoRA adapters are two small matrices each: r + in and r + out elements when factored.
    return StageShard(
        base_dense=base_dense,
        base_expert=base_expert,
        block_linear=blocks.block_linear + with_head * mtp.block_linear,
        adapters=adapters,
        trainable_dense=xp.where(is_full, full_dense, adapters),
        trainable_expert=xp.where(is_full, full_expert, 0),
        factored_dense=xp.where(is_full, full_factored * (1 - expert_share), adapters),
        factored_expert=xp.where(is_full, full_factored * expert_share, 0),
        largest_module=model.largest_module_params(arch, tp, rank.largest_linear),
        block=unit.dense + unit.expert,
        frozen_dense=xp.where(is_full, base_dense - full_dense, base_dense),
        frozen_expert=xp.where(is_full, blocks.expert - full_expert, blocks.expert),
        block_linear_unit=unit.block_linear,
        adapters_unit=xp.where(cfg.finetune == FULL, 0, unit.lora),
        head_linear=with_head * arch.vocab_size * arch.hidden_size / tp,
        root=embedding + head,
        root_trainable=embedding * (cfg.frozen_layers <= 0) + head,
    )
