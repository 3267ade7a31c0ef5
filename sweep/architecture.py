"""Architecture files: a model described by the numbers the formulas use, in TOML or JSON.

The same schema serves architecture files (`explain --model my_model.toml`, grid
`model = ["my_model.toml"]`), inline tables in grid files (`model = [{name = "x", ...}]`) and the
entries of `sweep/catalog/models.toml`. Example: `examples/gelu_gqa_bias_3b.toml`.

Every key, its values, default and meaning: docs/architecture_files.md (the schema is the
constants below: `WHOLE_NUMBERS`, `CHOICES`, `BOOLEANS` and the descriptive keys).

Descriptive keys: `name` (the model's label in outputs; required in inline grid tables),
`display_name`, `family`, `source`, `notes`, `published_params`, `published_params_source`,
`published_params_rounding`. Any other key is an error.

Every architecture, from any source (this schema, a Hugging Face config.json, a family rule),
passes `validate`: finite whole numbers, heads and KV heads that divide, top-k within the
experts, consistent MoE and MLA fields. Errors are one-line `SweepError`s naming the file, the
key and what is allowed.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import fields
from pathlib import Path

from sweep import model as m
from sweep.errors import SweepError
from sweep.model import Architecture, ModelSpec
from sweep.vocabulary import did_you_mean

# Named choices, each the Architecture fields it sets.
CHOICES = {
    "mlp": {
        "swiglu": dict(gated_mlp=1, mlp_activation=m.ACTIVATION_DEFAULT),
        "geglu": dict(gated_mlp=1, mlp_activation=m.ACTIVATION_GELU),
        "gelu": dict(gated_mlp=0, mlp_activation=m.ACTIVATION_DEFAULT),
        "relu2": dict(gated_mlp=0, mlp_activation=m.ACTIVATION_RELU2),
    },
    "norm": {"rmsnorm": dict(norm_bias=0), "layernorm": dict(norm_bias=1)},
    "norm_placement": {
        "pre": dict(norm_placement=m.PRE_NORM),
        "post": dict(norm_placement=m.POST_NORM),
        "sandwich": dict(norm_placement=m.SANDWICH_NORM),
    },
    "block": {
        "sequential": dict(parallel_attention=m.SEQUENTIAL),
        "parallel": dict(parallel_attention=m.PARALLEL_SHARED_NORM),
        "parallel_two_norms": dict(parallel_attention=m.PARALLEL_TWO_NORMS),
    },
    "qk_norm": {
        "none": dict(qk_norm=m.QK_NORM_NONE),
        "head": dict(qk_norm=m.QK_NORM_HEAD),
        "full": dict(qk_norm=m.QK_NORM_FULL),
    },
    "position_embedding": {
        "rope": dict(learned_position_embeddings=0),
        "learned": dict(learned_position_embeddings=1),
    },
    "attention": {"standard": dict(mla=0), "mla": dict(mla=1)},
}
BOOLEANS = ("tied_embeddings", "linear_bias", "qkv_bias", "o_bias", "mlp_bias", "expert_bias",
            "router_bias", "dropout", "attention_sinks")
REQUIRED = ("hidden_size", "num_layers", "num_heads", "vocab_size")
WHOLE_NUMBERS = (
    *REQUIRED, "num_kv_heads", "head_dim", "ffn_hidden_size", "max_position_embeddings",
    "sliding_window", "full_attention_interval", "num_experts", "num_experts_per_tok",
    "moe_ffn_hidden_size", "num_shared_experts", "shared_expert_ffn_hidden_size",
    "first_k_dense_layers", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "mtp_layers",
)
TEXT_KEYS = ("name", "display_name", "family", "source", "notes", "published_params_source")
NUMBER_KEYS = ("published_params", "published_params_rounding")
KEYS = (*WHOLE_NUMBERS, *CHOICES, *BOOLEANS, *TEXT_KEYS, *NUMBER_KEYS)
DEFAULT_MAX_POSITIONS = 4096

# The schema key that sets each Architecture field (for error messages).
SCHEMA_NAMES = {field: key for key, options in CHOICES.items()
                for values in options.values() for field in values}

POSITIVE = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size",
            "max_position_embeddings")
FLAGS = ("gated_mlp", "norm_bias", "tied_embeddings", "linear_bias", "qkv_bias",
         "learned_position_embeddings", "router_bias", "mla", "dropout", "o_bias", "mlp_bias",
         "expert_bias", "attention_sinks")
CODES = {"mlp_activation": m.ACTIVATION_RELU2, "qk_norm": m.QK_NORM_FULL,
         "norm_placement": m.SANDWICH_NORM, "parallel_attention": m.PARALLEL_TWO_NORMS}
MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
MOE_FIELDS = ("num_experts_per_tok", "moe_ffn_hidden_size", "num_shared_experts",
              "shared_expert_ffn_hidden_size", "first_k_dense_layers", "expert_bias")


def _fail(where: str, key: str, message: str):
    raise SweepError(f"{where}: `{key}`: {message}")


def _whole_number(where: str, key: str, value) -> float:
    """A count: an integer >= 0 (a float is accepted when it is whole, as JSON writes 4096.0)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or not float(value).is_integer():
        _fail(where, key, f"must be a whole number >= 0, got {value!r}")
    return float(value)


def parse_table(table: dict, where: str) -> tuple[Architecture, dict]:
    """(Architecture, descriptive keys) from one table of the schema; `SweepError` on any bad
    key or value. `where` names the file (and table) in messages."""
    if not isinstance(table, dict):
        raise SweepError(f"{where}: must be a table of architecture keys, got {table!r}")
    for key in table:
        if key not in KEYS:
            _fail(where, key, f"unknown key.{did_you_mean(key, list(KEYS))} Allowed: "
                              f"{', '.join(KEYS)}.")
    for key in REQUIRED:
        if key not in table:
            _fail(where, key, "missing (required: " + ", ".join(REQUIRED) + ")")
    values = {key: _whole_number(where, key, table[key]) for key in WHOLE_NUMBERS if key in table}
    for key in BOOLEANS:
        if key in table:
            if not isinstance(table[key], bool):
                _fail(where, key, f"must be true or false, got {table[key]!r}")
            values[key] = float(table[key])
    for key, options in CHOICES.items():
        if key in table:
            if table[key] not in options:
                _fail(where, key, f"must be one of {list(options)}, got {table[key]!r}")
            values.update({k: float(v) for k, v in options[table[key]].items()})
    info = {}
    for key in TEXT_KEYS:
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                _fail(where, key, f"must be a non-empty string, got {table[key]!r}")
            info[key] = table[key]
    for key in NUMBER_KEYS:
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                _fail(where, key, f"must be a number >= 0, got {value!r}")
            info[key] = float(value)
    _fill_defaults(values, table, where)
    arch = Architecture(**values)
    validate(arch, where, SCHEMA_NAMES)
    return arch, info


def _fill_defaults(values: dict, table: dict, where: str) -> None:
    """Defaults that depend on other keys: KV heads, head width, MLA, the dense MLP width."""
    values.setdefault("mla", float(values.get("kv_lora_rank", 0) > 0))
    values.setdefault("num_kv_heads", values["num_heads"])
    values.setdefault("max_position_embeddings", float(DEFAULT_MAX_POSITIONS))
    if "head_dim" not in values:
        if values["mla"]:
            values["head_dim"] = values.get("v_head_dim", 0.0)
        elif values["num_heads"] and values["hidden_size"] % values["num_heads"]:
            _fail(where, "num_heads", f"{values['num_heads']:g} heads do not divide hidden_size "
                                      f"{values['hidden_size']:g}; give head_dim")
        else:
            values["head_dim"] = values["hidden_size"] / max(values["num_heads"], 1)
    all_moe = values.get("num_experts", 0) > 0 and values.get("first_k_dense_layers", 0) == 0
    if "ffn_hidden_size" not in values:
        if not all_moe:
            _fail(where, "ffn_hidden_size", "missing: the dense MLP's inner width")
        values["ffn_hidden_size"] = values.get("moe_ffn_hidden_size", 0.0)


def validate(arch: Architecture, where: str, names: dict | None = None) -> Architecture:
    """`arch` itself when its numbers describe a buildable model, else a `SweepError` naming
    the offending key (`names` maps Architecture fields to the source's key names)."""
    names = names or {}

    def fail(field: str, message: str):
        _fail(where, names.get(field, field), message)

    values = {f.name: float(getattr(arch, f.name)) for f in fields(Architecture)}
    for field, value in values.items():
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            fail(field, f"must be a finite whole number >= 0, got {value!r}")
    for field in POSITIVE:
        if values[field] < 1:
            fail(field, f"must be >= 1, got {values[field]:g}")
    for field in FLAGS:
        if values[field] not in (0, 1):
            fail(field, f"must be 0 or 1 (false or true), got {values[field]:g}")
    for field, top in CODES.items():
        if values[field] > top:
            fail(field, f"must be a code 0..{top}, got {values[field]:g}")
    _validate_attention(values, fail)
    _validate_moe(values, fail)
    return arch


def _validate_attention(v: dict, fail) -> None:
    if v["num_heads"] % v["num_kv_heads"]:
        fail("num_kv_heads", f"{v['num_kv_heads']:g} KV heads must divide the "
                             f"{v['num_heads']:g} query heads")
    if v["mla"]:
        for field in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if v[field] < 1:
                fail(field, f"must be >= 1 for multi-head latent attention, got {v[field]:g}")
        if v["qk_norm"]:
            fail("qk_norm", "q/k norms are not defined for multi-head latent attention")
    else:
        for field in MLA_FIELDS:
            if v[field]:
                fail(field, "is an MLA dimension; set attention = \"mla\" (or kv_lora_rank) "
                            "or leave it out")
    if v["full_attention_interval"] and not v["sliding_window"]:
        fail("full_attention_interval", "needs a sliding_window > 0")
    if v["parallel_attention"] and v["norm_placement"] != m.PRE_NORM:
        fail("parallel_attention", "a parallel block has input norms only (norm_placement pre)")


def _validate_moe(v: dict, fail) -> None:
    experts = v["num_experts"]
    if not experts:
        for field in MOE_FIELDS:
            if v[field]:
                fail(field, "is an MoE setting but num_experts is 0")
        if v["ffn_hidden_size"] < 1:
            fail("ffn_hidden_size", "must be >= 1 (the dense MLP's inner width)")
        return
    if not 1 <= v["num_experts_per_tok"] <= experts:
        fail("num_experts_per_tok", f"must be within 1..num_experts ({experts:g}), got "
                                    f"{v['num_experts_per_tok']:g}")
    if v["moe_ffn_hidden_size"] < 1:
        fail("moe_ffn_hidden_size", "must be >= 1 (the routed experts' inner width)")
    if v["first_k_dense_layers"] > v["num_layers"]:
        fail("first_k_dense_layers", f"must be within 0..num_layers ({v['num_layers']:g}), "
                                     f"got {v['first_k_dense_layers']:g}")
    if v["first_k_dense_layers"] and v["ffn_hidden_size"] < 1:
        fail("ffn_hidden_size", "must be >= 1: the leading dense blocks use it")
    if v["num_shared_experts"] and v["shared_expert_ffn_hidden_size"] < 1:
        fail("shared_expert_ffn_hidden_size", "must be >= 1 with shared experts")


def spec_from_table(table: dict, where: str, default_name: str, source: str) -> ModelSpec:
    """A `ModelSpec` from a schema table (an architecture file, an inline grid table)."""
    arch, info = parse_table(table, where)
    name = info.get("name", default_name)
    return ModelSpec(
        name=name, display_name=info.get("display_name", name), arch=arch,
        source=info.get("source", source),
        published_params=info.get("published_params", 0.0),
        published_params_source=info.get("published_params_source", ""),
        published_params_rounding=info.get("published_params_rounding", 0.0),
        notes=info.get("notes", ""),
        extra={"family": info["family"]} if "family" in info else {},
    )


def read_file(path: str | Path, table: dict | None = None) -> ModelSpec:
    """A `ModelSpec` from an architecture file (TOML, or JSON without `model_type`)."""
    path = Path(path)
    if table is None:
        table = load_file(path)
    return spec_from_table(table, str(path), path.stem, str(path))


def load_file(path: Path) -> dict:
    """The top-level table of a TOML or JSON file; `SweepError` when unreadable."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file.") from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise SweepError(f"{path}: not a readable text file ({err}).") from None
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SweepError(f"{path}: not valid TOML ({err}).") from None
    try:
        table = json.loads(text)
    except json.JSONDecodeError as err:
        raise SweepError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(table, dict):
        raise SweepError(f"{path}: expected a JSON object at the top level.")
    return table
