"""The Hugging Face model types added to the reader, against their published parameter totals.

Each dict holds the keys of the model's published config.json that the reader uses (keys equal
to the config class's defaults are left out, as the published files leave them out). The totals
are the Hugging Face safetensors totals (`safetensors.total` of the hub API, shown on each model
page) unless said otherwise:

- Qwen/Qwen3-8B 8,190,735,360; Qwen/Qwen3-0.6B 596,049,920; Qwen/Qwen3-30B-A3B 30,532,122,624
- google/gemma-2-2b 2,614,341,888; google/gemma-2-9b 9,241,705,984; google/gemma-2-27b
  27,227,128,320; google/gemma-3-1b-pt 999,885,952; google/gemma-3-4b-it 4,300,079,472 (with
  its vision tower)
- microsoft/Phi-3-mini-4k-instruct 3,821,079,552; microsoft/phi-4 14,659,507,200;
  microsoft/Phi-4-mini-instruct 3,836,021,760
- bigcode/starcoder2-3b: 3.03B (model page and Open LLM Leaderboard request, two decimals)
- tiiuae/falcon-7b 7,217,189,760; tiiuae/falcon-40b 41,835,970,560; tiiuae/falcon-180B
  179,522,565,120 (each checkpoint stores the tied lm_head as its own tensor: V·h more)
- allenai/OLMo-2-1124-7B 7,298,617,344; allenai/OLMo-2-1124-13B 13,716,198,400
- deepseek-ai/DeepSeek-V2-Lite 15,706,484,224; deepseek-ai/DeepSeek-V2 235,741,434,880
- openai/gpt-oss-20b 20,914,757,184 and openai/gpt-oss-120b 116,829,156,672 (model card,
  arXiv:2508.10925 Table 1: 20.91B and 116.83B; the hub totals count MXFP4 blocks as bytes)
- deepseek-ai/DeepSeek-V3 684,531,386,000 (BF16 3,918,786,560 + F8_E4M3 680,571,043,840 +
  F32 41,555,600, with the MTP module, its stored copies of the embedding and head, and the
  FP8 block scales)
"""

import json

import pytest

from sweep import catalog
from sweep.errors import SweepError
from sweep.hf_config import READERS, read_hf_config
from sweep.model import total_params

SLIDING_FULL = ["sliding_attention", "full_attention"]

CONFIGS = {
    "qwen3-8b": ({"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
                  "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
                  "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
                  "tie_word_embeddings": False, "attention_bias": False,
                  "use_sliding_window": False, "sliding_window": None},
                 8_190_735_360),
    "qwen3-0.6b": ({"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
                    "num_attention_heads": 16, "num_hidden_layers": 28,
                    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                    "tie_word_embeddings": True},
                   596_049_920),
    "qwen3-30b-a3b": ({"model_type": "qwen3_moe", "hidden_size": 2048,
                       "intermediate_size": 6144, "moe_intermediate_size": 768,
                       "num_attention_heads": 32, "num_hidden_layers": 48,
                       "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
                       "num_experts_per_tok": 8, "decoder_sparse_step": 1,
                       "mlp_only_layers": [], "vocab_size": 151936,
                       "tie_word_embeddings": False},
                      30_532_122_624),
    "gemma-2-2b": ({"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
                    "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4,
                    "head_dim": 256, "vocab_size": 256000, "sliding_window": 4096,
                    "hidden_activation": "gelu_pytorch_tanh"},
                   2_614_341_888),
    "gemma-2-9b": ({"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
                    "num_attention_heads": 16, "num_hidden_layers": 42,
                    "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
                    "sliding_window": 4096, "final_logit_softcapping": 30.0},
                   9_241_705_984),
    "gemma-2-27b": ({"model_type": "gemma2", "hidden_size": 4608, "intermediate_size": 36864,
                     "num_attention_heads": 32, "num_hidden_layers": 46,
                     "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 256000},
                    27_227_128_320),
    "gemma-3-1b": ({"model_type": "gemma3_text", "hidden_size": 1152,
                    "intermediate_size": 6912, "num_attention_heads": 4,
                    "num_hidden_layers": 26, "num_key_value_heads": 1, "head_dim": 256,
                    "vocab_size": 262144, "sliding_window": 512, "sliding_window_pattern": 6,
                    "max_position_embeddings": 32768},
                   999_885_952),
    "phi-3-mini": ({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
                    "num_attention_heads": 32, "num_hidden_layers": 32,
                    "num_key_value_heads": 32, "vocab_size": 32064, "sliding_window": 2047,
                    "tie_word_embeddings": False},
                   3_821_079_552),
    "phi-4": ({"model_type": "phi3", "hidden_size": 5120, "intermediate_size": 17920,
               "num_attention_heads": 40, "num_hidden_layers": 40, "num_key_value_heads": 10,
               "vocab_size": 100352, "max_position_embeddings": 16384,
               "tie_word_embeddings": False},
              14_659_507_200),
    "phi-4-mini": ({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
                    "num_attention_heads": 24, "num_hidden_layers": 32,
                    "num_key_value_heads": 8, "vocab_size": 200064,
                    "partial_rotary_factor": 0.75, "tie_word_embeddings": True},
                   3_836_021_760),
    "olmo-2-7b": ({"model_type": "olmo2", "hidden_size": 4096, "intermediate_size": 11008,
                   "num_attention_heads": 32, "num_hidden_layers": 32,
                   "num_key_value_heads": 32, "vocab_size": 100352,
                   "max_position_embeddings": 4096, "attention_bias": False,
                   "tie_word_embeddings": False},
                  7_298_617_344),
    "olmo-2-13b": ({"model_type": "olmo2", "hidden_size": 5120, "intermediate_size": 13824,
                    "num_attention_heads": 40, "num_hidden_layers": 40,
                    "num_key_value_heads": 40, "vocab_size": 100352,
                    "max_position_embeddings": 4096, "tie_word_embeddings": False},
                   13_716_198_400),
    "deepseek-v2-lite": ({"model_type": "deepseek_v2", "hidden_size": 2048,
                          "intermediate_size": 10944, "moe_intermediate_size": 1408,
                          "num_attention_heads": 16, "num_key_value_heads": 16,
                          "num_hidden_layers": 27, "n_routed_experts": 64,
                          "n_shared_experts": 2, "num_experts_per_tok": 6,
                          "first_k_dense_replace": 1, "moe_layer_freq": 1, "q_lora_rank": None,
                          "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                          "v_head_dim": 128, "vocab_size": 102400, "topk_method": "greedy",
                          "n_group": 1, "topk_group": 1, "tie_word_embeddings": False},
                         15_706_484_224),
    "deepseek-v2": ({"model_type": "deepseek_v2", "hidden_size": 5120,
                     "intermediate_size": 12288, "moe_intermediate_size": 1536,
                     "num_attention_heads": 128, "num_key_value_heads": 128,
                     "num_hidden_layers": 60, "n_routed_experts": 160, "n_shared_experts": 2,
                     "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
                     "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                     "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 102400,
                     "topk_method": "group_limited_greedy", "n_group": 8, "topk_group": 3},
                    235_741_434_880),
    "gpt-oss-20b": ({"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
                     "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
                     "num_hidden_layers": 24, "num_local_experts": 32, "num_experts_per_tok": 4,
                     "vocab_size": 201088, "sliding_window": 128,
                     "layer_types": SLIDING_FULL * 12, "attention_bias": True,
                     "tie_word_embeddings": False},
                    20_914_757_184),
    "gpt-oss-120b": ({"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
                      "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
                      "num_hidden_layers": 36, "num_local_experts": 128,
                      "num_experts_per_tok": 4, "vocab_size": 201088, "sliding_window": 128,
                      "layer_types": SLIDING_FULL * 18, "attention_bias": True,
                      "tie_word_embeddings": False},
                     116_829_156_672),
}
FALCON = {  # checkpoint totals: the model's parameters plus the stored copy of the tied head
    "falcon-7b": ({"model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71,
                   "num_hidden_layers": 32, "multi_query": True,
                   "new_decoder_architecture": False, "parallel_attn": True, "bias": False,
                   "alibi": False, "vocab_size": 65024},
                  7_217_189_760),
    "falcon-40b": ({"model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128,
                    "num_hidden_layers": 60, "num_kv_heads": 8,
                    "new_decoder_architecture": True, "parallel_attn": True, "bias": False,
                    "vocab_size": 65024},
                   41_835_970_560),
    "falcon-180b": ({"model_type": "falcon", "hidden_size": 14848, "num_attention_heads": 232,
                     "num_hidden_layers": 80, "num_kv_heads": 8,
                     "new_decoder_architecture": True, "parallel_attn": True, "bias": False,
                     "vocab_size": 65024},
                    179_522_565_120),
}
STARCODER2_3B = {  # bigcode/starcoder2-3b config.json (no tie_word_embeddings: tied)
    "model_type": "starcoder2", "hidden_size": 3072, "intermediate_size": 12288,
    "num_attention_heads": 24, "num_hidden_layers": 30, "num_key_value_heads": 2,
    "vocab_size": 49152, "max_position_embeddings": 16384, "sliding_window": 4096,
    "use_bias": True, "norm_type": "layer_norm", "hidden_act": "gelu_pytorch_tanh",
    "attention_dropout": 0.1, "embedding_dropout": 0.1, "residual_dropout": 0.1,
}
GEMMA3_4B = {  # google/gemma-3-4b-it config.json: the text_config keeps only these keys
    "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "sliding_window": 1024,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16,
                      "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False},
}


def write(tmp_path, config, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def count(tmp_path, config) -> float:
    return float(total_params(read_hf_config(write(tmp_path, config)).arch))


@pytest.mark.parametrize(("name", "config", "published"),
                         [(k, c, p) for k, (c, p) in CONFIGS.items()])
def test_published_totals(tmp_path, name, config, published):
    assert count(tmp_path, config) == published


@pytest.mark.parametrize(("name", "config", "published"),
                         [(k, c, p) for k, (c, p) in FALCON.items()])
def test_falcon_checkpoint_totals(tmp_path, name, config, published):
    """Falcon ties lm_head to the embedding; its checkpoints store both tensors."""
    stored_head = config["vocab_size"] * config["hidden_size"]
    assert count(tmp_path, config) + stored_head == published


def test_starcoder2_gelu_gqa_bias(tmp_path):
    """3.03B on the model page; the architecture-file example describes the same model."""
    ours = count(tmp_path, STARCODER2_3B)
    assert abs(ours - 3.03e9) <= 0.005e9
    example = catalog.model("examples/gelu_gqa_bias_3b.toml")
    assert float(total_params(example.arch)) == ours
    assert abs(ours - example.published_params) <= example.published_params_rounding
    arch = read_hf_config(write(tmp_path, STARCODER2_3B)).arch
    assert (arch.gated_mlp, arch.norm_bias, arch.linear_bias, arch.dropout) == (0, 1, 1, 1)


def siglip_vision_tower_and_projector(vision: dict, text_hidden: int) -> int:
    """SigLIP (`SiglipVisionModel`, no head) and Gemma 3's `Gemma3MultiModalProjector`, by hand:
    patch conv 3·p²·c + c, one position per patch, per layer q/k/v/o (c² + c each), fc1 and
    fc2 with biases, two LayerNorms (2c each), a post LayerNorm; the projector c x h_text and
    its RMSNorm c."""
    c, f, p = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    patches = (vision["image_size"] // p) ** 2
    embeddings = 3 * p * p * c + c + patches * c
    layer = 4 * (c * c + c) + (c * f + f) + (f * c + c) + 2 * 2 * c
    return embeddings + vision["num_hidden_layers"] * layer + 2 * c + c * text_hidden + c


def test_gemma3_multimodal_text_model(tmp_path):
    """The text model from `text_config` (Gemma3TextConfig defaults: 8 heads, 4 KV heads, head
    dim 256, 262,208 tokens) plus the vision tower equals the published 4,300,079,472."""
    text = count(tmp_path, GEMMA3_4B)
    vision = siglip_vision_tower_and_projector(GEMMA3_4B["vision_config"], 2560)
    assert text + vision == 4_300_079_472


def test_deepseek_v3_with_its_mtp_module():
    """DeepSeek-V3's checkpoint holds the main model, one MTP module with its own copies of the
    embedding and head (README_WEIGHTS.md), and a float32 scale per 128 x 128 block of every
    FP8 linear (all block linears but the router; eh_proj stays BF16)."""
    arch = catalog.model("deepseek-v3").arch.replace(mtp_layers=1)
    h, vocab = 7168, 129280

    def blocks(rows, cols):
        return -(-rows // 128) * -(-cols // 128)

    attention = (blocks(1536, h) + blocks(128 * 192, 1536) + blocks(576, h)
                 + blocks(128 * 256, 512) + blocks(h, 128 * 128))
    dense = attention + 2 * blocks(18432, h) + blocks(h, 18432)
    moe = attention + 257 * (2 * blocks(2048, h) + blocks(h, 2048))
    scales = 3 * dense + (58 + 1) * moe
    assert float(total_params(arch)) + 2 * vocab * h + scales == 684_531_386_000


def test_window_patterns(tmp_path):
    gemma2 = read_hf_config(write(tmp_path, CONFIGS["gemma-2-9b"][0])).arch
    assert (gemma2.sliding_window, gemma2.full_attention_interval) == (4096, 2)
    gemma3 = read_hf_config(write(tmp_path, CONFIGS["gemma-3-1b"][0])).arch
    assert (gemma3.sliding_window, gemma3.full_attention_interval) == (512, 6)
    oss = read_hf_config(write(tmp_path, CONFIGS["gpt-oss-20b"][0])).arch
    assert (oss.sliding_window, oss.full_attention_interval) == (128, 2)
    qwen = read_hf_config(write(tmp_path, CONFIGS["qwen3-8b"][0])).arch
    assert qwen.sliding_window == 0


REQUIRED_TYPES = ("qwen3", "qwen3_moe", "gemma2", "gemma3", "gemma3_text", "phi3", "starcoder2",
                  "falcon", "olmo2", "deepseek_v2", "gpt_oss")


def test_required_types_are_read():
    assert set(REQUIRED_TYPES) <= set(READERS)


def bad(config: dict, **changes) -> dict:
    return {**config, **changes}


@pytest.mark.parametrize(("config", "message"), [
    ({"model_type": "mamba"},
     r"`model_type`: 'mamba' is not supported; supported: .*qwen3_moe.* Write an architecture "
     r"file"),
    (bad(CONFIGS["qwen3-8b"][0], hidden_size=4096.5), r"`hidden_size`: must be a whole number"),
    (bad(CONFIGS["qwen3-8b"][0], hidden_size=float("nan")), r"`hidden_size`: must be a whole"),
    (bad(CONFIGS["qwen3-8b"][0], num_hidden_layers=-2), r"`num_hidden_layers`: must be a whole"),
    (bad(CONFIGS["qwen3-8b"][0], num_key_value_heads=5),
     r"`num_key_value_heads`: 5 KV heads must divide the 32 query heads"),
    (bad(CONFIGS["qwen3-8b"][0], num_hidden_layers=0), r"`num_hidden_layers`: must be >= 1"),
    (bad(CONFIGS["qwen3-30b-a3b"][0], num_experts_per_tok=200),
     r"`num_experts_per_tok`: must be within 1..num_experts \(128\)"),
    (bad(CONFIGS["qwen3-30b-a3b"][0], mlp_only_layers=[3]), r"`mlp_only_layers`: only a leading"),
    (bad(CONFIGS["deepseek-v2"][0], n_group=7), r"`n_group`: must divide n_routed_experts"),
    (bad(CONFIGS["gpt-oss-20b"][0], layer_types=["full_attention"] + SLIDING_FULL * 11
         + ["sliding_attention"]), r"`layer_types`: only every n-th block"),
    ({k: v for k, v in CONFIGS["phi-4"][0].items() if k != "num_hidden_layers"},
     r"`num_hidden_layers`: missing"),
    (bad(FALCON["falcon-7b"][0], num_attention_heads=70),
     r"`num_attention_heads`: 70 heads do not divide hidden_size 4544"),
    (bad(STARCODER2_3B, hidden_act="silu"), r"`hidden_act`: must be one of \['gelu'"),
    (bad(GEMMA3_4B, text_config={**GEMMA3_4B["text_config"], "num_key_value_heads": 3}),
     r"`text_config.num_key_value_heads`: 3 KV heads must divide the 8 query heads"),
])
def test_bad_configs_name_the_file_and_key(tmp_path, config, message):
    path = write(tmp_path, config)
    with pytest.raises(SweepError, match=message) as err:
        read_hf_config(path)
    assert str(err.value).startswith(str(path))


def hub_cache(root, repo_id, config, commit="0123abcd" * 5, ref="main"):
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(commit)
    write(repo / "snapshots" / commit, config)
    return repo


def test_cached_hub_id_respects_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub_cache(tmp_path / "hf" / "hub", "Qwen/Qwen3-8B", CONFIGS["qwen3-8b"][0])
    spec = catalog.model("Qwen/Qwen3-8B")
    assert float(total_params(spec.arch)) == 8_190_735_360 and spec.name == "Qwen/Qwen3-8B"


def test_cached_hub_id_at_a_revision_and_hf_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    repo = hub_cache(tmp_path / "cache", "google/gemma-2-2b", CONFIGS["gemma-2-2b"][0],
                     commit="feed" * 10)
    spec = catalog.model("google/gemma-2-2b@" + "feed" * 10)
    assert float(total_params(spec.arch)) == 2_614_341_888
    # The snapshot directory and the cached repository directory themselves.
    assert float(total_params(catalog.model(str(repo / "snapshots" / ("feed" * 10))).arch)) \
        == 2_614_341_888
    from_repo_dir = catalog.model(str(repo))
    assert float(total_params(from_repo_dir.arch)) == 2_614_341_888
    assert from_repo_dir.name == "google/gemma-2-2b"
    with pytest.raises(SweepError, match=r"revision 'v2' has no cached config.json"):
        catalog.model("google/gemma-2-2b@v2")


def test_uncached_hub_id_says_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SweepError, match=r"allenai/OLMo-2-1124-7B: not in the Hugging Face "
                                         r"cache .* Nothing is downloaded"):
        catalog.model("allenai/OLMo-2-1124-7B")
