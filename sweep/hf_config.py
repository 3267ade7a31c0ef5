"""Read a Hugging Face `config.json` into an `Architecture`, without depending on transformers.

Key names and defaults follow the `configuration_*.py` files of Hugging Face transformers for
each supported `model_type`. Where a model's code fixes a choice rather than reading it from
the config (Qwen2's q/k/v biases, GPT-2's biases and learned positions) it is set here.
Llama's `attention_bias` puts biases on q, k, v and o; the o bias (h per layer) is not
modelled separately and is counted with the q/k/v biases only (under 1e-5 of the total).
"""

from __future__ import annotations

import json
from pathlib import Path

from sweep.errors import SweepError
from sweep.model import Architecture, ModelSpec
from sweep.vocabulary import did_you_mean

INT = "an integer"
FLOAT = "a number"
BOOL = "true or false"


def _reader(config: dict, path: Path):
    model_type = config.get("model_type", "?")

    def get(key, default=None, kind=INT, *, aliases=()):
        for name in (key, *aliases):
            if name in config and config[name] is not None:
                value = config[name]
                break
        else:
            if default is None:
                raise SweepError(
                    f"{path}: missing key {key!r}, required for model_type {model_type!r}."
                )
            return default
        ok = isinstance(value, bool) if kind == BOOL else (
            isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        )
        if not ok:
            raise SweepError(f"{path}: key {key!r} must be {kind}, got {value!r}.")
        return float(value)

    return get


def _llama_like(get, *, qkv_bias=False, gated=True) -> dict:
    hidden = get("hidden_size")
    heads = get("num_attention_heads")
    return dict(
        hidden_size=hidden,
        num_layers=get("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=get("num_key_value_heads", heads),
        head_dim=get("head_dim", hidden / heads),
        ffn_hidden_size=get("intermediate_size"),
        vocab_size=get("vocab_size"),
        max_position_embeddings=get("max_position_embeddings", 4096.0),
        gated_mlp=float(gated),
        tied_embeddings=get("tie_word_embeddings", 0.0, BOOL),
        qkv_bias=float(qkv_bias) or get("attention_bias", 0.0, BOOL),
        linear_bias=get("mlp_bias", 0.0, BOOL) * get("attention_bias", 0.0, BOOL),
        sliding_window=get("sliding_window", 0.0) if get("use_sliding_window", 1.0, BOOL) else 0.0,
    )


def _mixtral(get) -> dict:
    fields = _llama_like(get)
    return fields | dict(
        num_experts=get("num_local_experts"),
        num_experts_per_tok=get("num_experts_per_tok"),
        moe_ffn_hidden_size=get("intermediate_size"),
    )


def _qwen2(get) -> dict:
    return _llama_like(get, qkv_bias=True)


def _gelu_mha(hidden, heads, **fields) -> dict:
    """GPT-2 / GPT-NeoX blocks: multi-head attention, GeLU MLP, LayerNorm with bias."""
    return dict(hidden_size=hidden, num_heads=heads, num_kv_heads=heads, head_dim=hidden / heads,
                gated_mlp=0.0, norm_bias=1.0, **fields)


def _gpt2(get) -> dict:
    hidden = get("n_embd")
    return _gelu_mha(
        hidden, get("n_head"),
        num_layers=get("n_layer"),
        ffn_hidden_size=get("n_inner", 4 * hidden),
        vocab_size=get("vocab_size"),
        max_position_embeddings=get("n_positions"),
        tied_embeddings=get("tie_word_embeddings", 1.0, BOOL),
        linear_bias=1.0,
        learned_position_embeddings=1.0,
        dropout=float(
            any(get(k, 0.1, FLOAT) > 0 for k in ("attn_pdrop", "resid_pdrop", "embd_pdrop"))
        ),
    )


def _gpt_neox(get) -> dict:
    return _gelu_mha(
        get("hidden_size"), get("num_attention_heads"),
        num_layers=get("num_hidden_layers"),
        ffn_hidden_size=get("intermediate_size"),
        vocab_size=get("vocab_size"),
        max_position_embeddings=get("max_position_embeddings"),
        tied_embeddings=get("tie_word_embeddings", 0.0, BOOL),
        linear_bias=get("attention_bias", 1.0, BOOL),
    )


def _deepseek_v3(get) -> dict:
    heads = get("num_attention_heads")
    return dict(
        hidden_size=get("hidden_size"),
        num_layers=get("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=get("num_key_value_heads", heads),
        head_dim=get("v_head_dim"),
        ffn_hidden_size=get("intermediate_size"),
        vocab_size=get("vocab_size"),
        max_position_embeddings=get("max_position_embeddings", 4096.0),
        tied_embeddings=get("tie_word_embeddings", 0.0, BOOL),
        num_experts=get("n_routed_experts"),
        num_experts_per_tok=get("num_experts_per_tok"),
        moe_ffn_hidden_size=get("moe_intermediate_size"),
        num_shared_experts=get("n_shared_experts", 0.0),
        shared_expert_ffn_hidden_size=get("moe_intermediate_size"),
        first_k_dense_layers=get("first_k_dense_replace", 0.0),
        # `topk_method = "noaux_tc"` adds the router's e_score_correction_bias.
        router_bias=1.0,
        mla=1.0,
        q_lora_rank=get("q_lora_rank", 0.0),
        kv_lora_rank=get("kv_lora_rank"),
        qk_nope_head_dim=get("qk_nope_head_dim"),
        qk_rope_head_dim=get("qk_rope_head_dim"),
        v_head_dim=get("v_head_dim"),
    )


READERS = {
    "llama": _llama_like,
    "mistral": _llama_like,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "deepseek_v3": _deepseek_v3,
}


def read_hf_config(path: str | Path) -> ModelSpec:
    """A `ModelSpec` from a Hugging Face config.json; `SweepError` naming the bad key if any."""
    path = Path(path)
    try:
        config = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SweepError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(config, dict):
        raise SweepError(f"{path}: expected a JSON object at the top level.")
    model_type = config.get("model_type")
    if model_type not in READERS:
        raise SweepError(
            f"{path}: key 'model_type' must be one of {sorted(READERS)}, got {model_type!r}."
            f"{did_you_mean(str(model_type), sorted(READERS))}"
        )
    arch = Architecture(**READERS[model_type](_reader(config, path)))
    name = config.get("_name_or_path") or path.parent.name or path.stem
    return ModelSpec(name=str(name), display_name=str(name), arch=arch, source=str(path))
