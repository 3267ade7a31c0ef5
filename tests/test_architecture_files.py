"""Architecture files, inline grid tables, catalog entries and bare sizes: one schema, one
validation, and the parameter totals their publishers state."""

import json

import pytest

from sweep import catalog
from sweep.architecture import parse_table
from sweep.cli import main
from sweep.errors import SweepError
from sweep.grid import parse
from sweep.model import total_params

# Mixtral-8x7B-v0.1 in the schema: 46,702,792,704 parameters (Hugging Face safetensors total).
MIXTRAL = """
name = "my-mixtral"
hidden_size = 4096
num_layers = 32
num_heads = 32
num_kv_heads = 8
vocab_size = 32000
max_position_embeddings = 32768
num_experts = 8
num_experts_per_tok = 2
moe_ffn_hidden_size = 14336
"""
# Qwen3-8B (8,190,735,360, Hugging Face safetensors total): per-head q/k norms.
QWEN3_8B = dict(hidden_size=4096, num_layers=36, num_heads=32, num_kv_heads=8,
                ffn_hidden_size=12288, vocab_size=151936, qk_norm="head")
# OLMo-2-1124-7B (7,298,617,344): post-norms and whole-projection q/k norms.
OLMO2_7B = dict(hidden_size=4096, num_layers=32, num_heads=32, ffn_hidden_size=11008,
                vocab_size=100352, qk_norm="full", norm_placement="post")
# gemma-2-9b (9,241,705,984): GeGLU, sandwich norms, head_dim 256 != h/a, tied.
GEMMA2_9B = dict(hidden_size=3584, num_layers=42, num_heads=16, num_kv_heads=8, head_dim=256,
                 ffn_hidden_size=14336, vocab_size=256000, mlp="geglu",
                 norm_placement="sandwich", tied_embeddings=True, sliding_window=4096,
                 full_attention_interval=2)
# Falcon-7B: parallel block on one LayerNorm, MQA; its checkpoint's 7,217,189,760 stores the
# tied head once more (V·h).
FALCON_7B = dict(hidden_size=4544, num_layers=32, num_heads=71, num_kv_heads=1,
                 ffn_hidden_size=18176, vocab_size=65024, mlp="gelu", norm="layernorm",
                 block="parallel", tied_embeddings=True)
# gpt-oss-20b (20.91B, model card; 20,914,757,184 on the hub): biases everywhere, sinks.
GPT_OSS_20B = dict(hidden_size=2880, num_layers=24, num_heads=64, num_kv_heads=8, head_dim=64,
                   vocab_size=201088, num_experts=32, num_experts_per_tok=4,
                   moe_ffn_hidden_size=2880, qkv_bias=True, o_bias=True, expert_bias=True,
                   router_bias=True, attention_sinks=True, sliding_window=128,
                   full_attention_interval=2)
# DeepSeek-V2-Lite (15,706,484,224): MLA without q_lora, 2 shared experts, 1 dense block.
DEEPSEEK_V2_LITE = dict(hidden_size=2048, num_layers=27, num_heads=16, ffn_hidden_size=10944,
                        vocab_size=102400, num_experts=64, num_experts_per_tok=6,
                        moe_ffn_hidden_size=1408, num_shared_experts=2,
                        shared_expert_ffn_hidden_size=1408, first_k_dense_layers=1,
                        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                        v_head_dim=128)


@pytest.mark.parametrize(("table", "published"), [
    (QWEN3_8B, 8_190_735_360), (OLMO2_7B, 7_298_617_344), (GEMMA2_9B, 9_241_705_984),
    (FALCON_7B, 7_217_189_760 - 65024 * 4544), (GPT_OSS_20B, 20_914_757_184),
    (DEEPSEEK_V2_LITE, 15_706_484_224),
])
def test_schema_tables_match_published_totals(table, published):
    arch, _ = parse_table(table, "t.toml")
    assert float(total_params(arch)) == published


def test_toml_and_json_files_from_explain(tmp_path, capsys):
    toml = tmp_path / "mixtral.toml"
    toml.write_text(MIXTRAL)
    assert main(["explain", "--model", str(toml), "--gpu", "h100-sxm-80gb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 46_702_792_704
    as_json = tmp_path / "qwen3.json"  # no model_type: an architecture file, not a config.json
    as_json.write_text(json.dumps(QWEN3_8B))
    assert float(total_params(catalog.model(str(as_json)).arch)) == 8_190_735_360


def test_grid_accepts_every_kind_of_model(tmp_path):
    (tmp_path / "mixtral.toml").write_text(MIXTRAL)
    config = tmp_path / "snapshot"
    config.mkdir()
    (config / "config.json").write_text(json.dumps(
        {"model_type": "olmo2", "hidden_size": 4096, "intermediate_size": 11008,
         "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 100352}))
    inline = ('{name = "qwen3-8b-inline", hidden_size = 4096, num_layers = 36, num_heads = 32, '
              'num_kv_heads = 8, ffn_hidden_size = 12288, vocab_size = 151936, qk_norm = "head"}')
    text = f"""
[axes]
model = ["llama-2-7b", "{tmp_path / 'mixtral.toml'}", "{config}",
         {inline},
         {{family = "llama3", params = 8e9}}]
gpu = ["h100-sxm-80gb"]
"""
    grid = parse(text, "g.toml")
    totals = {m.name: float(total_params(m.arch)) for m in grid.models}
    assert totals == {"llama-2-7b": 6_738_415_616, "my-mixtral": 46_702_792_704,
                      "snapshot": 7_298_617_344, "qwen3-8b-inline": 8_190_735_360,
                      "llama3-8b": 8_030_261_248}


def test_bare_parameter_count_from_explain(capsys):
    """The llama3 rule at 8e9 is Llama-3.1-8B (8,030,261,248, safetensors total)."""
    assert main(["explain", "--params", "8e9", "--family", "llama3", "--gpu", "a100-80gb",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 8_030_261_248


@pytest.mark.parametrize(("change", "message"), [
    (dict(num_heads=30), "`num_heads`: 30 heads do not divide hidden_size 4096; give head_dim"),
    (dict(num_kv_heads=5), "`num_kv_heads`: 5 KV heads must divide the 32 query heads"),
    (dict(num_experts_per_tok=9), r"`num_experts_per_tok`: must be within 1..num_experts \(8\)"),
    (dict(num_experts_per_tok=0), r"`num_experts_per_tok`: must be within 1..num_experts"),
    (dict(num_layers=0), "`num_layers`: must be >= 1"),
    (dict(num_layers=-4), "`num_layers`: must be a whole number >= 0, got -4"),
    (dict(hidden_size=4096.5), "`hidden_size`: must be a whole number >= 0, got 4096.5"),
    (dict(vocab_size=float("nan")), "`vocab_size`: must be a whole number >= 0, got nan"),
    (dict(moe_ffn_hidden_size=float("inf")), "`moe_ffn_hidden_size`: must be a whole number"),
    (dict(num_layers=True), "`num_layers`: must be a whole number >= 0, got True"),
    (dict(tied_embeddings=1), "`tied_embeddings`: must be true or false, got 1"),
    (dict(mlp="swish"), r"`mlp`: must be one of \['swiglu', 'geglu', 'gelu', 'relu2'\]"),
    (dict(num_expert=8), r"`num_expert`: unknown key. Did you mean 'num_experts'"),
    (dict(first_k_dense_layers=40, ffn_hidden_size=14336),
     r"`first_k_dense_layers`: must be within 0..num_layers"),
    (dict(kv_lora_rank=0, qk_rope_head_dim=64),
     "`qk_rope_head_dim`: is an MLA dimension"),
    (dict(full_attention_interval=2), "`full_attention_interval`: needs a sliding_window"),
    (dict(num_shared_experts=1), "`shared_expert_ffn_hidden_size`: must be >= 1"),
])
def test_malformed_architecture_file(tmp_path, change, message):
    import tomllib

    table = tomllib.loads(MIXTRAL) | change
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    with pytest.raises(SweepError, match=message) as err:
        catalog.model(str(path))
    assert str(err.value).startswith(str(path))


def test_moe_keys_without_experts():
    with pytest.raises(SweepError, match="`num_experts_per_tok`: is an MoE setting"):
        parse_table({**QWEN3_8B, "num_experts_per_tok": 2}, "t.toml")
    with pytest.raises(SweepError, match="`hidden_size`: missing"):
        parse_table({"num_layers": 2}, "t.toml")


def test_toml_nan_and_syntax(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text(MIXTRAL + "sliding_window = nan\n")
    with pytest.raises(SweepError, match="`sliding_window`: must be a whole number"):
        catalog.model(str(path))
    path.write_text("hidden_size = \n")
    with pytest.raises(SweepError, match="not valid TOML"):
        catalog.model(str(path))


def test_inline_grid_table_errors_name_the_grid_and_item():
    text = ('[axes]\nmodel = ["llama-2-7b", {name = "x", hidden_size = 64, num_layers = 2, '
            'num_heads = 4, num_kv_heads = 3, ffn_hidden_size = 256, vocab_size = 100}]\n'
            'gpu = ["a100-80gb"]\n')
    with pytest.raises(SweepError, match=r"^g.toml: axes.model\[1\]: `num_kv_heads`: 3 KV"):
        parse(text, "g.toml")
    with pytest.raises(SweepError, match=r"g.toml: `axes.model\[0\].name`: missing"):
        parse('[axes]\nmodel = [{hidden_size = 64}]\ngpu = ["a100-80gb"]\n', "g.toml")
    with pytest.raises(SweepError, match=r"the same model listed twice"):
        parse('[axes]\nmodel = ["llama-2-7b", {name = "llama-2-7b", hidden_size = 64, '
              'num_layers = 2, num_heads = 4, ffn_hidden_size = 256, vocab_size = 100}]\n'
              'gpu = ["a100-80gb"]\n', "g.toml")


def test_catalog_entries_pass_the_same_validation(monkeypatch):
    """A catalog entry with inconsistent shapes is refused with its table named."""
    entry = {"display_name": "x", "family": "x", "source": "s", "published_params": 1.0,
             "published_params_source": "s", "hidden_size": 64, "num_layers": 2,
             "num_heads": 4, "num_kv_heads": 3, "ffn_hidden_size": 256, "vocab_size": 100}
    monkeypatch.setattr(catalog, "_read_toml", lambda name: {"bad-model": entry})
    with pytest.raises(SweepError, match=r"models.toml \[bad-model\]: `num_kv_heads`"):
        catalog.models.__wrapped__()
    monkeypatch.setattr(catalog, "_read_toml", lambda name: {"bad-model": {"hidden_size": 64}})
    with pytest.raises(SweepError, match=r"models.toml \[bad-model\]: `display_name`: missing"):
        catalog.models.__wrapped__()


@pytest.mark.parametrize(("flags", "message"), [
    (["--params", "13e9", "--family", "gpt5"], "`family`: must be one of ['llama3']"),
    (["--params", "nan"], "`params`: must be a parameter count"),
    (["--model", "no/such-model"], "not in the Hugging Face cache"),
    (["--model", "missing.toml"], "missing.toml: no such file."),
])
def test_model_input_errors_from_explain(capsys, tmp_path, monkeypatch, flags, message):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["explain", *flags, "--gpu", "a100-80gb"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_mtp_modules_sit_on_the_last_pipeline_stage():
    """DeepSeek-V3's MTP module (11,610,068,224 parameters: one MoE block of 11,507,286,272,
    eh_proj 2·7168², three norms of 7168) is held by the last stage only."""
    import numpy as np
    from conftest import config

    from sweep.memory.shard import FIRST, LAST, stage_shard

    base = catalog.model("deepseek-v3").arch
    with_mtp = base.replace(mtp_layers=1)
    assert float(total_params(with_mtp) - total_params(base)) == 11_610_068_224
    cfg = config(n_gpus=16, pp=2)
    f64 = lambda a: a.replace(**{k: np.float64(v) for k, v in vars(a).items()})  # noqa: E731
    for stage, extra in ((FIRST, 0), (LAST, 11_610_068_224)):
        plain, mtp = stage_shard(f64(base), cfg, stage), stage_shard(f64(with_mtp), cfg, stage)
        assert float(mtp.base_dense + mtp.base_expert - plain.base_dense - plain.base_expert) \
            == extra


def test_kv_cache_of_alternating_windows():
    """gemma-2-9b at 8192 tokens: 21 of its 42 layers attend fully (8192 cached tokens), 21
    through the 4096-token window; 2 (k, v) x 8 KV heads x 256 x 2 bytes per token and layer."""
    from conftest import config

    from sweep.memory import inference

    arch, _ = parse_table(GEMMA2_9B, "t.toml")
    cfg = config(mode="inference", seq_len=8192)
    per_token_layer = 2 * 8 * 256 * 2
    expected = (21 * 8192 + 21 * 4096) * per_token_layer
    assert float(inference.kv_cache_bytes(arch, cfg)) == expected
