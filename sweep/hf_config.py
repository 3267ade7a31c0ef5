"""Read a Hugging Face `config.json` into an `Architecture`, without depending on transformers.

Key names and defaults follow the `configuration_*.py` files of Hugging Face transformers for
each supported `model_type`, and the parameter-holding modules its `modeling_*.py` builds
(`src/transformers/models/<type>/`). Where a model's code fixes a choice rather than reading it
from the config (Qwen2's q/k/v biases, Gemma's four norms per block, OLMo 2's post-norms and
whole-projection q/k norms, gpt-oss's expert biases and sinks) it is set here. Defaults matter:
published configs omit keys equal to them (Gemma 3's `text_config` names only five).

A config is found from a path (`config.json`, or a directory holding one), or from a hub id
cached locally by `huggingface_hub` (`org/name`, `org/name@revision`): the snapshot
`<cache>/models--org--name/snapshots/<commit>/config.json`, the commit read from
`refs/<revision>` (default `main`), the cache at `HF_HUB_CACHE`, else `HF_HOME/hub`, else
`$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (huggingface_hub
`constants.py` and `file_download.try_to_load_from_cache`). Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from sweep import architecture
from sweep import model as m
from sweep.errors import SweepError
from sweep.model import Architecture, ModelSpec
from sweep.vocabulary import did_you_mean

INT = "a whole number >= 0"
FLOAT = "a number"
BOOL = "true or false"
GELU_NAMES = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")
FULL, SLIDING = "full_attention", "sliding_attention"


class _Config:
    """Typed access to one config dict; errors name the file and the key."""

    def __init__(self, config: dict, path: str, prefix: str = ""):
        self.config, self.path, self.prefix = config, path, prefix
        self.model_type = config.get("model_type", "?")

    def fail(self, key: str, message: str):
        raise SweepError(f"{self.path}: `{self.prefix}{key}`: {message}")

    def raw(self, key: str, default=None, *, aliases=()):
        for name in (key, *aliases):
            if self.config.get(name) is not None:
                return self.config[name]
        return default

    def get(self, key: str, default=None, kind=INT, *, aliases=()) -> float:
        value = self.raw(key, aliases=aliases)
        if value is None:
            if default is None:
                self.fail(key, f"missing, required for model_type {self.model_type!r}")
            return float(default)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == BOOL:
            ok = isinstance(value, bool)
        else:
            ok = number and math.isfinite(value) and value >= 0
            ok = ok and (kind == FLOAT or float(value).is_integer())
        if not ok:
            self.fail(key, f"must be {kind}, got {value!r}")
        return float(value)

    def sub(self, key: str) -> _Config:
        table = self.raw(key)
        if not isinstance(table, dict):
            self.fail(key, f"must be a JSON object (the text model's config), got {table!r}")
        return _Config(table, self.path, f"{self.prefix}{key}.")

    def head_dim(self, hidden: float, heads: float) -> float:
        """`head_dim`, else h/a (transformers' h // a), which then must be whole."""
        if self.raw("head_dim") is not None:
            return self.get("head_dim")
        if heads and hidden % heads:
            self.fail("num_attention_heads", f"{heads:g} heads do not divide hidden_size "
                                             f"{hidden:g} and there is no head_dim")
        return hidden / max(heads, 1)

    def activation(self, key: str, default: str) -> float:
        """A GeLU-family activation (the only kind these model types use unless gated)."""
        name = self.raw(key, default)
        if name not in GELU_NAMES:
            self.fail(key, f"must be one of {list(GELU_NAMES)} for this model type, got {name!r}")
        return float(m.ACTIVATION_GELU)

    def sliding_layers(self, pattern_default: float, window: float) -> dict:
        """`sliding_window` and `full_attention_interval` from `layer_types` (one block in
        that many full) or the model's fixed pattern; 0 when no block uses the window."""
        layer_types = self.raw("layer_types")
        if layer_types is None:
            return dict(sliding_window=window, full_attention_interval=pattern_default)
        if not isinstance(layer_types, list) or not set(layer_types) <= {FULL, SLIDING}:
            self.fail("layer_types", f"must be a list of {FULL!r} and {SLIDING!r}")
        if SLIDING not in layer_types:
            return dict(sliding_window=0.0, full_attention_interval=0.0)
        if FULL not in layer_types:
            return dict(sliding_window=window, full_attention_interval=0.0)
        interval = layer_types.index(FULL) + 1
        expected = [FULL if (i + 1) % interval == 0 else SLIDING for i in range(len(layer_types))]
        if layer_types != expected:
            self.fail("layer_types", "only every n-th block attending fully (the rest to the "
                                     "window) can be expressed; write an architecture file")
        return dict(sliding_window=window, full_attention_interval=float(interval))


def _dense(c: _Config, *, hidden=None, layers=None, heads=None, kv=None, ffn=None, vocab=None,
           tied=0.0, max_positions=4096.0) -> dict:
    """The fields every Llama-style config names, with the model type's defaults."""
    hidden = c.get("hidden_size", hidden)
    heads = c.get("num_attention_heads", heads)
    return dict(
        hidden_size=hidden,
        num_layers=c.get("num_hidden_layers", layers),
        num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads", kv or heads),
        head_dim=c.head_dim(hidden, heads),
        ffn_hidden_size=c.get("intermediate_size", ffn),
        vocab_size=c.get("vocab_size", vocab),
        max_position_embeddings=c.get("max_position_embeddings", max_positions),
        tied_embeddings=c.get("tie_word_embeddings", tied, BOOL),
    )


def _window(c: _Config) -> dict:
    use = c.get("use_sliding_window", 1.0, BOOL)
    return dict(sliding_window=c.get("sliding_window", 0.0) if use else 0.0)


def _llama(c: _Config) -> dict:
    """`LlamaAttention`: q, k, v, o biased by `attention_bias`; `LlamaMLP` by `mlp_bias`."""
    attention_bias = c.get("attention_bias", 0.0, BOOL)
    return _dense(c) | _window(c) | dict(
        qkv_bias=attention_bias, o_bias=attention_bias, mlp_bias=c.get("mlp_bias", 0.0, BOOL))


def _mistral(c: _Config) -> dict:
    return _dense(c) | _window(c)


def _mixtral(c: _Config) -> dict:
    return _mistral(c) | dict(
        num_experts=c.get("num_local_experts"),
        num_experts_per_tok=c.get("num_experts_per_tok"),
        moe_ffn_hidden_size=c.get("intermediate_size"),
    )


def _qwen2(c: _Config) -> dict:
    """`Qwen2Attention`: q, k, v always biased, o never."""
    return _dense(c) | _window(c) | dict(qkv_bias=1.0)


def _qwen3(c: _Config) -> dict:
    """`Qwen3Attention`: q_norm and k_norm RMSNorm(head_dim); biases by `attention_bias`."""
    attention_bias = c.get("attention_bias", 0.0, BOOL)
    return _dense(c) | _window(c) | dict(
        qkv_bias=attention_bias, o_bias=attention_bias, qk_norm=float(m.QK_NORM_HEAD))


def _qwen3_moe(c: _Config) -> dict:
    """`Qwen3MoeDecoderLayer`: block i is MoE unless listed in `mlp_only_layers` or
    (i + 1) % `decoder_sparse_step` != 0; the dense blocks use `intermediate_size`."""
    fields = _qwen3(c)
    layers = int(fields["num_layers"])
    dense = c.raw("mlp_only_layers", [])
    step = c.get("decoder_sparse_step", 1.0)
    if not isinstance(dense, list) or dense != list(range(len(dense))) or step != 1:
        c.fail("mlp_only_layers", "only a leading run of dense blocks (mlp_only_layers = "
                                  "[0, 1, ..., k-1], decoder_sparse_step = 1) can be expressed")
    return fields | dict(
        num_experts=c.get("num_experts"),
        num_experts_per_tok=c.get("num_experts_per_tok"),
        moe_ffn_hidden_size=c.get("moe_intermediate_size"),
        first_k_dense_layers=float(min(len(dense), layers)),
    )


def _gemma2(c: _Config) -> dict:
    """`Gemma2DecoderLayer`: four RMSNorms (input, post-attention, pre- and post-feedforward),
    GeGLU, tied head; every other block uses the sliding window (`Gemma2Config` defaults)."""
    fields = _dense(c, hidden=2304, layers=26, heads=8, kv=4, ffn=9216, vocab=256000, tied=1.0,
                    max_positions=8192.0)
    attention_bias = c.get("attention_bias", 0.0, BOOL)
    return fields | c.sliding_layers(2.0, c.get("sliding_window", 4096.0)) | dict(
        head_dim=c.get("head_dim", 256.0),
        mlp_activation=c.activation("hidden_activation", "gelu_pytorch_tanh"),
        norm_placement=float(m.SANDWICH_NORM),
        qkv_bias=attention_bias, o_bias=attention_bias,
    )


def _gemma3_text(c: _Config) -> dict:
    """`Gemma3DecoderLayer`: Gemma 2's block plus q_norm and k_norm RMSNorm(head_dim); one
    block in `sliding_window_pattern` (6) attends fully (`Gemma3TextConfig` defaults)."""
    fields = _dense(c, hidden=2304, layers=26, heads=8, kv=4, ffn=9216, vocab=262208, tied=1.0,
                    max_positions=131072.0)
    attention_bias = c.get("attention_bias", 0.0, BOOL)
    pattern = c.get("sliding_window_pattern", 6.0)
    return fields | c.sliding_layers(pattern, c.get("sliding_window", 4096.0)) | dict(
        head_dim=c.get("head_dim", 256.0),
        mlp_activation=c.activation("hidden_activation", "gelu_pytorch_tanh"),
        norm_placement=float(m.SANDWICH_NORM), qk_norm=float(m.QK_NORM_HEAD),
        qkv_bias=attention_bias, o_bias=attention_bias,
    )


def _gemma3(c: _Config) -> dict:
    """`Gemma3ForConditionalGeneration`: the text model of `text_config` (the SigLIP vision
    tower and its projector are not counted)."""
    return _gemma3_text(c.sub("text_config"))


def _phi3(c: _Config) -> dict:
    """`Phi3Attention` (fused qkv_proj h x (a + 2k)·d) and `Phi3MLP` (fused gate_up_proj
    h x 2f): the shapes of separate projections, no biases (`Phi3Config` defaults)."""
    return _dense(c, vocab=32064, max_positions=4096.0) | _window(c)


def _starcoder2(c: _Config) -> dict:
    """`Starcoder2Attention`/`Starcoder2MLP`: GQA, plain GeLU (c_fc, c_proj), every linear
    biased by `use_bias`, LayerNorm, tied head; dropout on embeddings, attention and residuals
    (`Starcoder2Config` defaults)."""
    fields = _dense(c, hidden=3072, layers=30, heads=24, kv=2, ffn=12288, vocab=49152,
                    tied=1.0, max_positions=4096.0)
    dropout = any(c.get(k, 0.0, FLOAT) > 0
                  for k in ("attention_dropout", "residual_dropout", "embedding_dropout"))
    return fields | _window(c) | dict(
        gated_mlp=0.0, mlp_activation=c.activation("hidden_act", "gelu_pytorch_tanh"),
        norm_bias=1.0, linear_bias=c.get("use_bias", 1.0, BOOL), dropout=float(dropout))


def _falcon(c: _Config) -> dict:
    """`FalconDecoderLayer`: parallel attention and MLP, on one input LayerNorm or, with
    `new_decoder_architecture`, two (`num_ln_in_parallel_attn`, default 2); fused
    query_key_value with one KV head (`multi_query`) or `num_kv_heads` (new architecture);
    GeLU MLP of `ffn_hidden_size` (4h); biases by `bias`; tied head (`FalconConfig`)."""
    hidden = c.get("hidden_size", aliases=("n_embed",))
    heads = c.get("num_attention_heads", aliases=("n_head",))
    new = c.get("new_decoder_architecture", 0.0, BOOL)
    if new:
        kv = c.get("num_kv_heads", heads, aliases=("n_head_kv",))
    else:
        kv = 1.0 if c.get("multi_query", 1.0, BOOL) else heads
    if new or c.get("parallel_attn", 1.0, BOOL):
        two = new and c.get("num_ln_in_parallel_attn", 2.0) == 2
        block = m.PARALLEL_TWO_NORMS if two else m.PARALLEL_SHARED_NORM
    else:
        block = m.SEQUENTIAL
    dropout = any(c.get(k, 0.0, FLOAT) > 0 for k in ("hidden_dropout", "attention_dropout"))
    return dict(
        hidden_size=hidden, num_layers=c.get("num_hidden_layers", aliases=("n_layer",)),
        num_heads=heads, num_kv_heads=kv, head_dim=c.head_dim(hidden, heads),
        ffn_hidden_size=c.get("ffn_hidden_size", 4 * hidden),
        vocab_size=c.get("vocab_size", 65024.0),
        max_position_embeddings=c.get("max_position_embeddings", 2048.0),
        tied_embeddings=c.get("tie_word_embeddings", 1.0, BOOL),
        gated_mlp=0.0, mlp_activation=c.activation("activation", "gelu"), norm_bias=1.0,
        linear_bias=c.get("bias", 0.0, BOOL), parallel_attention=float(block),
        dropout=float(dropout),
    )


def _olmo2(c: _Config) -> dict:
    """`Olmo2DecoderLayer`: RMSNorms after attention and MLP (post-norm, none on the input);
    `Olmo2Attention` q_norm RMSNorm(a·d) and k_norm RMSNorm(k·d) (`Olmo2Config` defaults)."""
    attention_bias = c.get("attention_bias", 0.0, BOOL)
    return _dense(c, vocab=50304, max_positions=2048.0) | dict(
        qk_norm=float(m.QK_NORM_FULL), norm_placement=float(m.POST_NORM),
        qkv_bias=attention_bias, o_bias=attention_bias)


def _gelu_mha(hidden, heads, **fields) -> dict:
    """GPT-2 / GPT-NeoX blocks: multi-head attention, GeLU MLP, LayerNorm with bias."""
    return dict(hidden_size=hidden, num_heads=heads, num_kv_heads=heads, head_dim=hidden / heads,
                gated_mlp=0.0, norm_bias=1.0, **fields)


def _gpt2(c: _Config) -> dict:
    hidden = c.get("n_embd")
    return _gelu_mha(
        hidden, c.get("n_head"),
        num_layers=c.get("n_layer"),
        ffn_hidden_size=c.get("n_inner", 4 * hidden),
        vocab_size=c.get("vocab_size"),
        max_position_embeddings=c.get("n_positions"),
        tied_embeddings=c.get("tie_word_embeddings", 1.0, BOOL),
        linear_bias=1.0,
        learned_position_embeddings=1.0,
        dropout=float(
            any(c.get(k, 0.1, FLOAT) > 0 for k in ("attn_pdrop", "resid_pdrop", "embd_pdrop"))
        ),
    )


def _gpt_neox(c: _Config) -> dict:
    return _gelu_mha(
        c.get("hidden_size"), c.get("num_attention_heads"),
        num_layers=c.get("num_hidden_layers"),
        ffn_hidden_size=c.get("intermediate_size"),
        vocab_size=c.get("vocab_size"),
        max_position_embeddings=c.get("max_position_embeddings"),
        tied_embeddings=c.get("tie_word_embeddings", 0.0, BOOL),
        linear_bias=c.get("attention_bias", 1.0, BOOL),
    )


def _deepseek(c: _Config, *, router_bias: float) -> dict:
    """DeepSeek-V2/V3: MLA attention, the first `first_k_dense_replace` blocks dense, the rest
    routed + shared experts (`DeepseekV2MoE`/`DeepseekV3MoE`: shared width
    n_shared·moe_intermediate_size); group-limited routing needs `n_group` to divide the
    experts and `topk_group` <= `n_group`."""
    heads = c.get("num_attention_heads")
    experts = c.get("n_routed_experts")
    if c.get("moe_layer_freq", 1.0) != 1:
        c.fail("moe_layer_freq", "only 1 (every block after the dense prefix is MoE) can be "
                                 "expressed; write an architecture file")
    if c.get("attention_bias", 0.0, BOOL):
        c.fail("attention_bias", "biases on the MLA projections are not modelled; must be false")
    groups = c.get("n_group", 1.0)
    if groups < 1 or experts % groups:
        c.fail("n_group", f"must divide n_routed_experts ({experts:g}), got {groups:g}")
    if c.get("topk_group", 1.0) > groups:
        c.fail("topk_group", f"must be <= n_group ({groups:g})")
    shared = c.get("n_shared_experts", 0.0)
    return dict(
        hidden_size=c.get("hidden_size"),
        num_layers=c.get("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads", heads),
        head_dim=c.get("v_head_dim"),
        ffn_hidden_size=c.get("intermediate_size"),
        vocab_size=c.get("vocab_size"),
        max_position_embeddings=c.get("max_position_embeddings", 4096.0),
        tied_embeddings=c.get("tie_word_embeddings", 0.0, BOOL),
        num_experts=experts,
        num_experts_per_tok=c.get("num_experts_per_tok"),
        moe_ffn_hidden_size=c.get("moe_intermediate_size"),
        num_shared_experts=shared,
        shared_expert_ffn_hidden_size=c.get("moe_intermediate_size") if shared else 0.0,
        first_k_dense_layers=c.get("first_k_dense_replace", 0.0),
        router_bias=router_bias,
        mla=1.0,
        q_lora_rank=c.get("q_lora_rank", 0.0),
        kv_lora_rank=c.get("kv_lora_rank"),
        qk_nope_head_dim=c.get("qk_nope_head_dim"),
        qk_rope_head_dim=c.get("qk_rope_head_dim"),
        v_head_dim=c.get("v_head_dim"),
    )


def _deepseek_v2(c: _Config) -> dict:
    """DeepSeek-V2 routes with a plain softmax gate: no router bias."""
    return _deepseek(c, router_bias=0.0)


def _deepseek_v3(c: _Config) -> dict:
    """DeepSeek-V3 `noaux_tc` routing adds the router's e_score_correction_bias. The MTP
    module (`num_nextn_predict_layers`) is not built by transformers and not counted here
    (an architecture file with `mtp_layers` counts it)."""
    return _deepseek(c, router_bias=1.0)


def _gpt_oss(c: _Config) -> dict:
    """`GptOssAttention`: q, k, v, o biased (`attention_bias`), one sink logit per head;
    `GptOssExperts`: fused gate_up (h x 2f) and down with biases, a biased router;
    `layer_types` alternate the 128-token window and full attention (`GptOssConfig`)."""
    attention_bias = c.get("attention_bias", 1.0, BOOL)
    fields = _dense(c, hidden=2880, layers=36, heads=64, kv=8, ffn=2880, vocab=201088,
                    max_positions=131072.0)
    window = c.sliding_layers(2.0, c.get("sliding_window", 128.0))
    return fields | window | dict(
        head_dim=c.get("head_dim", 64.0),
        num_experts=c.get("num_local_experts", 128.0),
        num_experts_per_tok=c.get("num_experts_per_tok", 4.0),
        moe_ffn_hidden_size=fields["ffn_hidden_size"],
        qkv_bias=attention_bias, o_bias=attention_bias, expert_bias=1.0, router_bias=1.0,
        attention_sinks=1.0,
    )


# model_type -> (reader, config key of each Architecture field where it differs from HF_KEYS)
READERS = {
    "llama": (_llama, {}),
    "mistral": (_mistral, {}),
    "mixtral": (_mixtral, {"num_experts": "num_local_experts"}),
    "qwen2": (_qwen2, {}),
    "qwen3": (_qwen3, {}),
    "qwen3_moe": (_qwen3_moe, {"num_experts": "num_experts"}),
    "gemma2": (_gemma2, {}),
    "gemma3_text": (_gemma3_text, {}),
    "gemma3": (_gemma3, {k: "text_config." + v for k, v in {
        "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads",
        "head_dim": "head_dim", "ffn_hidden_size": "intermediate_size"}.items()}),
    "phi3": (_phi3, {}),
    "starcoder2": (_starcoder2, {}),
    "falcon": (_falcon, {"num_kv_heads": "num_kv_heads", "ffn_hidden_size": "ffn_hidden_size"}),
    "olmo2": (_olmo2, {}),
    "gpt2": (_gpt2, {"hidden_size": "n_embd", "num_layers": "n_layer", "num_heads": "n_head",
                     "ffn_hidden_size": "n_inner"}),
    "gpt_neox": (_gpt_neox, {}),
    "deepseek_v2": (_deepseek_v2, {"num_experts": "n_routed_experts"}),
    "deepseek_v3": (_deepseek_v3, {"num_experts": "n_routed_experts"}),
    "gpt_oss": (_gpt_oss, {"num_experts": "num_local_experts"}),
}
HF_KEYS = {
    "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads", "ffn_hidden_size": "intermediate_size",
    "moe_ffn_hidden_size": "moe_intermediate_size", "num_shared_experts": "n_shared_experts",
    "first_k_dense_layers": "first_k_dense_replace", "tied_embeddings": "tie_word_embeddings",
}
NOT_SUPPORTED_HINT = (
    "Write an architecture file instead (TOML with hidden_size, num_layers, num_heads, "
    "num_kv_heads, ffn_hidden_size, vocab_size, mlp, norm, ...; every key in "
    "sweep/architecture.py, an example in examples/) and pass its path."
)


def architecture_from_config(config: dict, path: str) -> Architecture:
    """The `Architecture` of a parsed config.json; `SweepError` naming the bad key if any."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in READERS:
        raise SweepError(
            f"{path}: `model_type`: {model_type!r} is not supported; supported: "
            f"{', '.join(sorted(READERS))}.{did_you_mean(str(model_type), sorted(READERS))} "
            f"{NOT_SUPPORTED_HINT}"
        )
    reader, keys = READERS[model_type]
    arch = Architecture(**reader(_Config(config, path)))
    return architecture.validate(arch, path, HF_KEYS | keys)


def _snapshot_repo_id(path: Path) -> str | None:
    """`org/name` of a config.json inside a cache snapshot (models--org--name/snapshots/c/)."""
    repo = path.parent.parent.parent.name
    if path.parent.parent.name == "snapshots" and repo.startswith("models--"):
        return repo.removeprefix("models--").replace("--", "/", 1)
    return None


def spec_from_config(config: dict, path: Path, name: str | None = None) -> ModelSpec:
    arch = architecture_from_config(config, str(path))
    name = (name or _snapshot_repo_id(path) or config.get("_name_or_path") or path.parent.name
            or path.stem)
    return ModelSpec(name=str(name), display_name=str(name), arch=arch, source=str(path))


def read_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
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
    return spec_from_config(config, path, name)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache directory (HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def cached_config(hub_id: str) -> Path:
    """The cached config.json of `org/name[@revision]`, or a `SweepError` saying it is not
    cached (this tool never downloads)."""
    repo_id, _, revision = hub_id.partition("@")
    repo_dir = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    return snapshot_config(repo_dir, revision or "main", hub_id)


def snapshot_config(repo_dir: Path, revision: str = "main", hub_id: str | None = None) -> Path:
    """config.json of a cached repository directory (`models--org--name`) at `revision` (a
    ref such as `main`, or a commit hash)."""
    label = hub_id or str(repo_dir)
    ref = repo_dir / "refs" / revision
    commit = ref.read_text("utf-8").strip() if ref.is_file() else revision
    config = repo_dir / "snapshots" / commit / "config.json"
    if config.is_file():
        return config
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        raise SweepError(
            f"{label}: not in the Hugging Face cache ({repo_dir} does not exist; the cache is "
            f"HF_HUB_CACHE, else HF_HOME/hub). Nothing is downloaded: fetch it first "
            f"(`huggingface-cli download {hub_id or 'org/name'} config.json`) or pass the path "
            f"of its config.json.")
    have = sorted(p.name for p in snapshots.iterdir() if (p / "config.json").is_file())
    raise SweepError(
        f"{label}: revision {revision!r} has no cached config.json (cached snapshots with one: "
        f"{', '.join(have) or 'none'}). Nothing is downloaded; name a cached commit as "
        f"{hub_id.partition('@')[0] if hub_id else 'org/name'}@<commit> or fetch it first.")
