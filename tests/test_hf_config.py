"""Hugging Face config.json files read without transformers; counts against published totals.

Each dict holds the fields of the model's published config.json that the reader uses.
"""

import json

import pytest

from sweep import catalog
from sweep.errors import SweepError
from sweep.hf_config import read_hf_config
from sweep.model import total_params

CONFIGS = {
    "llama-2-7b": ({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                    "num_attention_heads": 32, "num_hidden_layers": 32,
                    "num_key_value_heads": 32, "vocab_size": 32000,
                    "max_position_embeddings": 4096, "tie_word_embeddings": False},
                   6_738_415_616),
    "mistral-7b": ({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                    "num_attention_heads": 32, "num_hidden_layers": 32,
                    "num_key_value_heads": 8, "vocab_size": 32000, "sliding_window": 4096,
                    "max_position_embeddings": 32768, "tie_word_embeddings": False},
                   7_241_732_096),
    "mixtral-8x7b": ({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                      "num_attention_heads": 32, "num_hidden_layers": 32,
                      "num_key_value_heads": 8, "vocab_size": 32000, "num_local_experts": 8,
                      "num_experts_per_tok": 2, "tie_word_embeddings": False},
                     46_702_792_704),
    "qwen2.5-7b": ({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                    "num_attention_heads": 28, "num_hidden_layers": 28,
                    "num_key_value_heads": 4, "vocab_size": 152064,
                    "tie_word_embeddings": False, "use_sliding_window": False,
                    "sliding_window": 131072},
                   7_615_616_512),
    # GPT-2 small (openai-community/gpt2): 124,439,808 parameters.
    "gpt2": ({"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
              "n_positions": 1024, "vocab_size": 50257}, 124_439_808),
    # Pythia-160M (EleutherAI/pythia-160m): 162,322,944 total, 85,056,000 non-embedding
    # (Biderman et al. 2023, Table 1).
    "gpt_neox": ({"model_type": "gpt_neox", "hidden_size": 768, "intermediate_size": 3072,
                  "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 50304,
                  "max_position_embeddings": 2048, "tie_word_embeddings": False},
                 162_322_944),
    "deepseek-v3": ({"model_type": "deepseek_v3", "hidden_size": 7168,
                     "intermediate_size": 18432, "moe_intermediate_size": 2048,
                     "num_attention_heads": 128, "num_key_value_heads": 128,
                     "num_hidden_layers": 61, "n_routed_experts": 256, "n_shared_experts": 1,
                     "num_experts_per_tok": 8, "first_k_dense_replace": 3,
                     "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                     "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280,
                     "max_position_embeddings": 163840, "tie_word_embeddings": False},
                    671_026_419_200),
}


def write(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("name", "config", "published"),
                         [(k, c, p) for k, (c, p) in CONFIGS.items()])
def test_counts(tmp_path, name, config, published):
    spec = read_hf_config(write(tmp_path, config))
    assert float(total_params(spec.arch)) == published


@pytest.mark.parametrize("name", ["llama-2-7b", "mistral-7b", "mixtral-8x7b", "qwen2.5-7b",
                                  "deepseek-v3"])
def test_same_architecture_as_catalog(tmp_path, name):
    """A config.json and the catalog entry describe the same parameter shapes."""
    from_file = read_hf_config(write(tmp_path, CONFIGS[name][0])).arch
    from_catalog = catalog.model(name).arch
    for field in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "vocab_size", "gated_mlp", "norm_bias", "tied_embeddings", "qkv_bias",
                  "num_experts", "moe_ffn_hidden_size"):
        assert getattr(from_file, field) == getattr(from_catalog, field), field


def test_catalog_model_accepts_a_path_or_folder(tmp_path):
    write(tmp_path, CONFIGS["gpt2"][0])
    assert float(total_params(catalog.model(str(tmp_path)).arch)) == 124_439_808
    assert float(total_params(catalog.model(str(tmp_path / "config.json")).arch)) == 124_439_808


@pytest.mark.parametrize(("config", "message"), [
    ({"model_type": "bert"}, "`model_type`: 'bert' is not supported; supported: "),
    ({"hidden_size": 8}, "`model_type`: None is not supported"),
    ({**CONFIGS["gpt2"][0], "n_layer": "twelve"}, "`n_layer`: must be a whole number"),
    ({**CONFIGS["llama-2-7b"][0], "tie_word_embeddings": "no"},
     "`tie_word_embeddings`: must be true or false"),
    ({k: v for k, v in CONFIGS["mixtral-8x7b"][0].items() if k != "num_local_experts"},
     "`num_local_experts`: missing"),
])
def test_malformed(tmp_path, config, message):
    with pytest.raises(SweepError, match=message):
        read_hf_config(write(tmp_path, config))


def test_not_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(SweepError, match="not valid JSON"):
        read_hf_config(path)
