"""Megatron-LM argument lists read into our architecture and training vocabulary.

The launches are the flags of public Megatron-LM recipes (NVIDIA/Megatron-LM at commit
d98e8a64ddf34856e74b24714e3bedb2f5a39553): examples/llama/train_llama3_8b_h100_fp8.sh,
examples/mixtral/train_mixtral_8x7b_distributed.sh and the functional test
tests/functional_tests/test_cases/gpt/gpt3_7b_tp4_pp1_memory_speed/model_config.yaml. The
shell scripts below restate those flags in the same script structure (arrays, `${VAR}`
references, an `if` branch, continuation lines); parameter counts are checked against the
published Hugging Face totals.
"""

import math

import pytest

from sweep import catalog, megatron_args
from sweep.errors import SweepError
from sweep.megatron_args import (
    UNKNOWN,
    UNMODELLED,
    explain_values,
    moe_layer_pattern,
    padded_vocab_size,
    read_launch,
)
from sweep.model import ACTIVATION_RELU2, QK_NORM_HEAD, total_params

# The Llama-3 8B recipe's flags (examples/llama/train_llama3_8b_h100_fp8.sh), mock-data branch.
LLAMA3_8B_SCRIPT = """#!/bin/bash
TP_SIZE=1
CP_SIZE=1
MICRO_BATCH_SIZE=1
GLOBAL_BATCH_SIZE=128
NUM_LAYERS=32
DTYPE="fp8"
SEQ_LENGTH=8192
GPUS_PER_NODE=8
NUM_NODES=1
TOKENIZER_ARG=${3:-"MOCK"}
DISTRIBUTED_ARGS=(
    --nproc_per_node $GPUS_PER_NODE
    --nnodes $NUM_NODES
)
MODEL_ARGS=(
    --num-layers $NUM_LAYERS
    --hidden-size 4096
    --ffn-hidden-size 14336
    --num-attention-heads 32
    --group-query-attention
    --num-query-groups 8
    --kv-channels 128
    --seq-length $SEQ_LENGTH
    --max-position-embeddings $SEQ_LENGTH
    --position-embedding-type rope
    --rotary-percent 1.0
    --attention-dropout 0.0
    --hidden-dropout 0.0
    --swiglu
    --normalization RMSNorm
    --apply-layernorm-1p   # zero-centred gamma
    --untie-embeddings-and-output-weights
    --disable-bias-linear
)
TRAINING_ARGS=(
    --micro-batch-size $MICRO_BATCH_SIZE
    --global-batch-size $GLOBAL_BATCH_SIZE
    --bf16
    --lr 0.00015
)
DTYPE_ARGS=()
if [[ "$DTYPE" == "fp8" ]]; then
    DTYPE_ARGS+=(
        "--fp8-format hybrid"
        "--fp8-param-gather"
    )
fi
if [[ "$TOKENIZER_ARG" == "MOCK" ]]; then
    DATA_ARGS=("--mock-data" "--tokenizer-type NullTokenizer" "--vocab-size 128256")
else
    DATA_ARGS=("--tokenizer-type HuggingFaceTokenizer" "--tokenizer-model $TOKENIZER_ARG")
fi
MODEL_PARALLEL_ARGS=(
    --tensor-model-parallel-size $TP_SIZE
    --context-parallel-size $CP_SIZE
    --sequence-parallel
    --use-distributed-optimizer
)
torchrun ${DISTRIBUTED_ARGS[@]} \\
    pretrain_gpt.py \\
    ${MODEL_ARGS[@]} \\
    ${TRAINING_ARGS[@]} \\
    ${DTYPE_ARGS[@]} \\
    ${MODEL_PARALLEL_ARGS[@]} \\
    ${DATA_ARGS[@]} \\
    --save $CHECKPOINT_PATH 2>&1 | tee log.txt
"""

# The Mixtral 8x7B recipe's flags (examples/mixtral/train_mixtral_8x7b_distributed.sh) as a
# plain argument list; its Llama2Tokenizer has 32,000 tokens (mistralai/Mixtral-8x7B-v0.1
# config.json vocab_size), given with --vocab-size.
MIXTRAL_ARGS = """
--disable-bias-linear --seq-length 4096 --max-position-embeddings 32768 \\
--num-layers 32 --hidden-size 4096 --ffn-hidden-size 14336 --num-attention-heads 32 \\
--attention-dropout 0.0 --hidden-dropout 0.0 --normalization RMSNorm \\
--position-embedding-type rope --swiglu --untie-embeddings-and-output-weights \\
--group-query-attention --num-query-groups 8 --no-position-embedding \\
# MoE
--num-experts 8 --moe-router-topk 2 --moe-grouped-gemm --moe-token-dispatcher-type alltoall \\
--tokenizer-type Llama2Tokenizer --tokenizer-model /data/tokenizer.model --vocab-size 32000 \\
--micro-batch-size 1 --global-batch-size 256 --bf16 \\
--tensor-model-parallel-size 1 --pipeline-model-parallel-size 4 \\
--expert-model-parallel-size 8 --use-distributed-optimizer --sequence-parallel
"""

# MODEL_ARGS of the functional test gpt3_7b_tp4_pp1_memory_speed (model-relevant subset).
GPT3_7B_YAML = """
ENV_VARS:
  CUDA_DEVICE_MAX_CONNECTIONS: 1
MODEL_ARGS:
  --num-layers: 32
  --hidden-size: 4096
  --num-attention-heads: 32
  --group-query-attention: true
  --num-query-groups: 8
  --untie-embeddings-and-output-weights: true
  --micro-batch-size: 2
  --global-batch-size: 8
  --seq-length: 8192
  --max-position-embeddings: 8192
  --tokenizer-type: NullTokenizer
  --vocab-size: 131073
  --transformer-impl: transformer_engine
  --tensor-model-parallel-size: 4
  --pipeline-model-parallel-size: 1
  --use-distributed-optimizer: true
  --overlap-grad-reduce: true
  --bf16: true
  --log-memory-to-tensorboard: true
  --tensorboard-dir: ${TENSORBOARD_PATH}
TEST_TYPE: regular
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _notes(launch, kind):
    return {note.flag for note in launch.notes if note.kind == kind}


def test_llama3_8b_launch_script(tmp_path):
    launch = read_launch(_write(tmp_path, "train_llama3_8b.sh", LLAMA3_8B_SCRIPT))
    # Meta Llama 3.1 8B: 8,030,261,248 parameters (safetensors total), = our catalog entry.
    assert total_params(launch.architecture) == 8_030_261_248
    assert total_params(launch.architecture) == catalog.model("llama-3.1-8b").published_params
    t = launch.train
    assert (t["tp"], t["pp"], t["cp"], t["zero_stage"], t["framework"]) == (1, 1, 1, 1, "megatron")
    assert t["precision"] == "fp8-mixed"  # --fp8-format with --fp8-param-gather
    assert t["sp"] == 0  # Megatron turns sequence parallelism off at tp = 1
    assert (t["micro_batch"], t["seq_len"]) == (1, 8192)
    assert (launch.world_size, launch.gpus_per_node) == (8, 8)
    # 128 sequences / (micro-batch 1 x dp 8) = 16 micro-batches per step.
    assert launch.config_values()["grad_accum"] == 16
    assert {"--apply-layernorm-1p", "--rotary-percent"} <= _notes(launch, UNMODELLED)
    assert launch.architecture.vocab_size == 128256  # 128256 = 1002 x 128: no padding


def test_mixtral_argument_list(tmp_path):
    launch = read_launch(_write(tmp_path, "mixtral.txt", MIXTRAL_ARGS))
    # mistralai/Mixtral-8x7B-v0.1: 46,702,792,704 parameters (safetensors total).
    assert total_params(launch.architecture) == 46_702_792_704
    a, t = launch.architecture, launch.train
    assert (a.num_experts, a.num_experts_per_tok, a.first_k_dense_layers) == (8, 2, 0)
    assert (t["pp"], t["ep"], t["zero_stage"], t["precision"]) == (4, 8, 1, "bf16-mixed")
    assert "--moe-grouped-gemm" in _notes(launch, UNMODELLED)
    # dp = 64/(1·4·1) = 16; 256/(1·16) = 16 micro-batches.
    assert launch.config_values(64)["grad_accum"] == 16


def test_functional_test_yaml(tmp_path):
    launch = read_launch(_write(tmp_path, "model_config.yaml", GPT3_7B_YAML))
    a, t = launch.architecture, launch.train
    # 131073 padded to a multiple of 128·tp = 512: ceil(131073/512)·512 = 257·512.
    assert a.vocab_size == 257 * 512
    # No --swiglu: GeLU at 4h; no --normalization: LayerNorm; biases; learned positions.
    assert (a.gated_mlp, a.ffn_hidden_size, a.norm_bias, a.linear_bias) == (0, 4 * 4096, 1, 1)
    assert (a.learned_position_embeddings, a.max_position_embeddings) == (1, 8192)
    assert (a.num_kv_heads, a.dropout, a.tied_embeddings) == (8, 1, 0)  # dropout 0.1 default
    assert (t["tp"], t["zero_stage"], t["micro_batch"]) == (4, 1, 2)
    assert launch.config_values(8)["grad_accum"] == 2  # 8/(2 x dp 2)
    assert "--overlap-grad-reduce" in launch.settings


def megatron_vocab_size_with_padding(orig_vocab_size, make_vocab_size_divisible_by, tp):
    """Megatron-LM megatron/core/tokenizers/utils/build_tokenizer.py `vocab_size_with_padding`
    at d98e8a64, copied (args unpacked, logging removed)."""
    after = orig_vocab_size
    multiple = make_vocab_size_divisible_by * tp
    after = int(math.ceil(after / multiple) * multiple)
    return after


@pytest.mark.parametrize("vocab,divisible,tp", [(50257, 128, 1), (50257, 128, 8),
                                                (131073, 128, 4), (32000, 3232, 2)])
def test_padded_vocab_matches_megatron(vocab, divisible, tp):
    assert padded_vocab_size(vocab, divisible, tp) == megatron_vocab_size_with_padding(
        vocab, divisible, tp)


def test_moe_layer_pattern_matches_megatron():
    # gpt_layer_specs.py: an int N gives [1 if i % N == 0 else 0 for i in range(L)].
    assert moe_layer_pattern("2", 6, "x") == [1 if i % 2 == 0 else 0 for i in range(6)]
    assert moe_layer_pattern("([0]*3+[1]*5)", 8, "x") == [0, 0, 0, 1, 1, 1, 1, 1]
    with pytest.raises(SweepError, match="--moe-layer-freq"):
        moe_layer_pattern("__import__('os')", 8, "x")
    with pytest.raises(SweepError, match="8 entries"):
        moe_layer_pattern("[1]*4", 8, "x")


def test_gpt2_tokenizer_default_and_unmodelled_flags(tmp_path):
    text = ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --vocab-file v.json "
            "--squared-relu --qk-layernorm --moe-latent-size 8 --my-new-flag 3")
    launch = read_launch(_write(tmp_path, "a.txt", text))
    # pretrain_gpt.py defaults to GPT2BPETokenizer: 50,257 padded to 128 -> 50,304.
    assert launch.architecture.vocab_size == 50304
    assert {"--moe-latent-size"} <= _notes(launch, UNMODELLED)
    assert _notes(launch, UNKNOWN) == {"--my-new-flag"}
    a = launch.architecture
    assert a.gated_mlp == 0 and a.mlp_activation == ACTIVATION_RELU2  # squared ReLU, 2 matrices
    assert a.qk_norm == QK_NORM_HEAD  # a norm over each head of q and k


@pytest.mark.parametrize("text,message", [
    ("--num-layers abc --hidden-size 64 --num-attention-heads 4", "--num-layers must be"),
    ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --normalization RMS",
     "--normalization must be one of"),
    ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --swiglu yes",
     "--swiglu is a switch"),
    ("--num-layers 2 --hidden-size 64", "--num-attention-heads is required"),
    ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --tokenizer-type "
     "HuggingFaceTokenizer --tokenizer-model meta/llama", "add --vocab-size"),
    ("--num-layers $L --hidden-size 64 --num-attention-heads 4", "file does not define"),
])
def test_malformed_arguments_name_file_and_flag(tmp_path, text, message):
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(SweepError, match=message) as err:
        read_launch(path)
    assert str(path) in str(err.value)


def test_explain_values_cli_overrides_file(tmp_path):
    path = _write(tmp_path, "train_llama3_8b.sh", LLAMA3_8B_SCRIPT)
    name = megatron_args.PREFIX + str(path)
    cli = {"n_gpus": 16, "tp": 2, "pp": 1, "micro_batch": 1, "seq_len": 4096}
    values, lines = explain_values(name, cli, explicit={"n_gpus", "tp"})
    assert (values["tp"], values["n_gpus"], values["seq_len"]) == (2, 16, 8192)
    assert values["zero_stage"] == 1 and values["grad_accum"] == 16  # 128/(1 x dp 8)
    assert any("--apply-layernorm-1p" in line for line in lines)
    assert catalog.model(name).arch == read_launch(path).architecture


def test_gelu_gqa_bias_counts_by_hand(tmp_path):
    """GeLU MLP, grouped-query attention and biases (Megatron's defaults without --swiglu and
    --disable-bias-linear) are expressible: the count equals the module shapes by hand."""
    text = ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --group-query-attention "
            "--num-query-groups 2 --ffn-hidden-size 256 --max-position-embeddings 128 "
            "--seq-length 128 --vocab-file v.json")
    launch = read_launch(_write(tmp_path, "gqa.txt", text))
    h, a, k, d, f, vocab, positions, layers = 64, 4, 2, 16, 256, 50304, 128, 2
    qkv = h * (a + 2 * k) * d + (a + 2 * k) * d  # linear_qkv weight and bias
    proj = a * d * h + h
    mlp = h * f + f + f * h + h
    norms = 2 * 2 * h  # two LayerNorms with bias
    expected = vocab * h + positions * h + layers * (qkv + proj + mlp + norms) + 2 * h
    assert total_params(launch.architecture) == expected
