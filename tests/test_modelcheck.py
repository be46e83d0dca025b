"""Model-aware checks (generator/compile/modelcheck.py), each positive and negative, against the
stand-in configs of tests/data/model-configs (the shapes of public checkpoints); and the argument
rules SGLang's own resolution lets through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.compile.modelcheck import GPUS, context_length, facts_of
from generator.compile.validate import topology_schema
from tests.helpers import errors_of, plan_of, run_cli, write_topo

CONFIGS = Path(__file__).resolve().parent / "data" / "model-configs"


def topo(tmp_path: Path, model: str, groups: str, *, defaults: str = "", cluster: str = "",
         extra: str = "", name: str = "topo.yaml") -> Path:
    cfg = f"model_config: {CONFIGS / model}" if model else ""
    groups = "\n".join(" " * 14 + line.strip() for line in groups.splitlines())
    return write_topo(tmp_path, f"""
        deployment: {{name: mc, hf_checkpoint: /models/m}}
        cluster: {{gpus_per_node: 8{cluster}}}
        {defaults}
        {extra}
        sglang:
          - name: m
            {cfg}
            server_groups:
{groups}
        """, name=name)


def group(width: int, num: int | None = None, wt: str = "regular", overrides: str = "") -> str:
    ov = f", overrides: {{{overrides}}}" if overrides else ""
    return (f"      - {{worker_type: {wt}, num_gpus: {num or width}, "
            f"num_gpus_per_engine: {width}{ov}}}")


def only_error(path: Path, *sets: str, **kw) -> str:
    errs = errors_of(path, *sets, **kw)
    assert len(errs) == 1, errs
    return errs[0]


# -- facts read from a config -----------------------------------------------------------------


def test_facts_of_the_stand_in_configs():
    q8 = facts_of(json.loads((CONFIGS / "qwen3-8b" / "config.json").read_text()), "q8")
    assert (q8.heads, q8.kv_heads, q8.layers, q8.experts, q8.context) == (32, 8, 36, None, 40960)
    assert 8.0e9 < q8.params < 8.4e9  # Qwen3-8B: 8.2B
    moe = facts_of(json.loads((CONFIGS / "qwen3-30b-a3b" / "config.json").read_text()), "moe")
    assert moe.experts == 128 and 29e9 < moe.params < 32e9  # Qwen3-30B-A3B: 30.5B
    ds = facts_of(json.loads((CONFIGS / "deepseek-v3" / "config.json").read_text()), "ds")
    assert ds.mla and ds.kv_heads is None and ds.experts == 256
    assert 650e9 < ds.params < 700e9  # DeepSeek-V3: 671B
    vl = facts_of(json.loads((CONFIGS / "qwen2.5-vl-7b" / "config.json").read_text()), "vl")
    assert vl.multimodal and not q8.multimodal


def test_context_length_is_derived_as_sglang_derives_it():
    assert context_length({"max_position_embeddings": 4096}) == 4096
    assert context_length({"max_position_embeddings": 4096,
                           "rope_scaling": {"type": "linear", "factor": 4.0}}) == 16384
    # a factor beside original_max_position_embeddings (yarn) or llama3 scaling is not applied
    assert context_length({"max_position_embeddings": 163840, "rope_scaling": {
        "factor": 40, "original_max_position_embeddings": 4096}}) == 163840
    assert context_length({"max_position_embeddings": 131072,
                           "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}) == 131072
    assert context_length({"seq_length": 2048, "max_position_embeddings": 9}) == 2048
    assert context_length({}) is None


def test_the_schema_knows_every_gpu():
    schema = topology_schema()
    assert schema["properties"]["cluster"]["properties"]["gpu"]["enum"] == sorted(GPUS)


# -- tensor parallelism against heads ---------------------------------------------------------


def test_tp_must_divide_the_attention_heads(tmp_path):
    ok = topo(tmp_path, "qwen3-8b", group(4), name="ok.yaml")
    assert plan_of(ok).models[0].engines[0].tp_size == 4
    bad = topo(tmp_path, "qwen2.5-7b", group(8))  # 28 heads, 4 KV heads
    e = only_error(bad)
    assert ":9:" in e and "sglang[0].server_groups[0].num_gpus_per_engine: tensor " \
        "parallelism 8 does not divide the model's 28 attention heads (Qwen2ForCausalLM, " in e
    assert "(hint: SGLang shards heads evenly over TP ranks: use a TP of 1, 2, 4, 28)" in e


def test_kv_heads_and_tp_must_divide_one_another(tmp_path):
    # 32 heads, 8 KV heads: TP 16 replicates the KV heads (16 % 8 == 0): fine
    assert plan_of(topo(tmp_path, "qwen3-8b", group(16), name="ok.yaml"))
    cfg = json.loads((CONFIGS / "qwen3-8b" / "config.json").read_text())
    cfg["num_key_value_heads"] = 6
    cfg["num_attention_heads"] = 48
    d = tmp_path / "kv6"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    bad = write_topo(tmp_path, """
        deployment: {name: mc, hf_checkpoint: /models/m}
        cluster: {gpus_per_node: 8}
        sglang:
          - name: m
            model_config: kv6
            server_groups: [{worker_type: regular, num_gpus: 8, num_gpus_per_engine: 4}]
        """, name="kv.yaml")
    e = only_error(bad)
    assert "tensor parallelism 4 and the model's 6 KV heads do not divide one another" in e
    assert f"{d / 'config.json'}" in e, "a relative model_config is read beside the file"


def test_attention_dp_divides_the_tp_for_the_head_check(tmp_path):
    # TP 8 with attention DP 4: attention TP 2 divides 28 heads and 4 KV heads
    t = topo(tmp_path, "qwen2.5-7b", group(8, overrides="attn_dp_size: 4"))
    assert plan_of(t).models[0].engines[0].tp_size == 8


def test_mla_models_have_no_kv_head_check(tmp_path):
    t = topo(tmp_path, "deepseek-v3", group(16, num=16))
    assert plan_of(t).models[0].engines[0].nnodes == 2


def test_pipeline_stages_within_the_layers(tmp_path):
    ok = topo(tmp_path, "qwen3-8b", group(4, overrides="pp_size: 2"), name="ok.yaml")
    assert plan_of(ok).models[0].engines[0].pp_size == 2
    cfg = {"architectures": ["TinyForCausalLM"], "num_attention_heads": 8,
           "num_key_value_heads": 8, "num_hidden_layers": 2}
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(cfg))
    bad = write_topo(tmp_path, """
        deployment: {name: mc, hf_checkpoint: /models/m}
        sglang:
          - name: m
            model_config: tiny/config.json
            server_groups:
              - {worker_type: regular, num_gpus: 4, num_gpus_per_engine: 4,
                 overrides: {pp_size: 4}}
        """, name="pp.yaml")
    e = only_error(bad)
    assert "server_groups[0].overrides.pp_size: pp_size 4 is more pipeline stages than the " \
        "model's 2 layers (TinyForCausalLM" in e and ":7:" in e


# -- experts, encoders, context ---------------------------------------------------------------


def test_ep_size_must_divide_the_experts(tmp_path):
    ok = topo(tmp_path, "qwen3-30b-a3b", group(8, overrides="ep_size: 8"), name="ok.yaml")
    assert plan_of(ok)
    bad = topo(tmp_path, "qwen3-30b-a3b", group(8, overrides="ep_size: 6"))
    assert "ep_size 6 does not divide the model's 128 routed experts (Qwen3MoeForCausalLM" \
        in only_error(bad)
    dense = topo(tmp_path, "qwen3-8b", group(4, overrides="ep_size: 4"), name="dense.yaml")
    e = only_error(dense)
    assert "ep_size 4 but the model has no routed experts" in e
    assert "overrides.ep_size" in e


def test_encoder_groups_need_a_multimodal_model(tmp_path):
    groups = "\n".join([group(1, wt="encoder"), group(1, wt="regular")])
    ok = topo(tmp_path, "qwen2.5-vl-7b", groups, name="ok.yaml")
    assert {e.worker_type for e in plan_of(ok).models[0].engines} == {"encoder", "regular"}
    bad = topo(tmp_path, "qwen3-8b", groups)
    e = only_error(bad)
    assert "server_groups[0].worker_type: encoder groups need a multimodal model, and " \
        "Qwen3ForCausalLM" in e and "has no vision or audio encoder" in e


def test_context_length_within_the_model(tmp_path):
    ok = topo(tmp_path, "qwen3-8b", group(1), defaults="defaults: {context_length: 40960}",
              name="ok.yaml")
    assert plan_of(ok)
    bad = topo(tmp_path, "qwen3-8b", group(1), defaults="defaults: {context_length: 65536}")
    e = only_error(bad)
    assert e.startswith(f"{bad}:3:") and "defaults.context_length: context_length 65536 is " \
        "longer than the model's 40960" in e and "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN" in e
    allowed = topo(tmp_path, "qwen3-8b", group(1), defaults="defaults: {context_length: 65536}",
                   extra="runtime: {env: {SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN: '1'}}",
                   name="allowed.yaml")
    warnings = [w.format() for w in plan_of(allowed).topology.warnings]
    assert any("allowed by SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN" in w for w in warnings)


# -- weights against GPU memory ---------------------------------------------------------------


def test_weights_must_fit_the_gpu(tmp_path):
    # Qwen3-8B in bf16 (~15 GiB) on one 24 GB GPU at 0.9: fits; at 0.5 it does not
    ok = topo(tmp_path, "qwen3-8b", group(1), cluster=", gpu: l4-24gb", name="ok.yaml")
    assert plan_of(ok)
    bad = topo(tmp_path, "qwen3-8b", group(1), cluster=", gpu: l4-24gb",
               defaults="defaults: {mem_fraction_static: 0.5}")
    e = only_error(bad)
    assert "defaults.mem_fraction_static: about 15.3 GiB of weights per GPU (8.2B parameters " \
        "over 1 GPU(s)) do not fit mem_fraction_static 0.5 of the l4-24gb's 22.5 GiB" in e
    # DeepSeek-V3 in bf16 over 16 H100s: ~78 GiB per GPU does not fit 0.9 x 79.6 GiB
    ds = topo(tmp_path, "deepseek-v3", group(16), cluster=", gpu: h100-80gb", name="ds.yaml")
    assert "do not fit at most 0.9 of the h100-80gb's 79.6 GiB" in only_error(ds)
    # ... but in fp8 it does (a quantized checkpoint halves it)
    fp8 = topo(tmp_path, "deepseek-v3", group(16, overrides="quantization: fp8"),
               cluster=", gpu: h100-80gb", name="fp8.yaml")
    assert plan_of(fp8)
    # without cluster.gpu there is no estimate
    assert plan_of(topo(tmp_path, "deepseek-v3", group(16), name="nogpu.yaml"))


def test_little_room_for_the_kv_cache_is_a_warning(tmp_path):
    t = topo(tmp_path, "qwen3-8b", group(1), cluster=", gpu: l4-24gb",
             defaults="defaults: {mem_fraction_static: 0.75}")
    warnings = [w.format() for w in plan_of(t).topology.warnings]
    assert any("leave under" in w and "for the KV cache" in w for w in warnings), warnings


def test_an_unknown_gpu_is_refused_by_the_schema(tmp_path):
    t = topo(tmp_path, "qwen3-8b", group(1), cluster=", gpu: h100")
    assert "cluster.gpu" in only_error(t)


# -- where the config comes from --------------------------------------------------------------


def test_a_local_model_path_with_a_config_is_read(tmp_path):
    t = write_topo(tmp_path, f"""
        deployment: {{name: mc, hf_checkpoint: {CONFIGS / 'qwen2.5-7b'}}}
        sglang:
          - name: m
            server_groups: [{{worker_type: regular, num_gpus: 8, num_gpus_per_engine: 8}}]
        """)
    assert "does not divide the model's 28 attention heads" in only_error(t)


def test_a_host_only_model_is_not_checked_unless_given_a_config(tmp_path):
    t = topo(tmp_path, "", group(8))  # /models/m does not exist here
    assert plan_of(t)
    e = only_error(t, model_configs=(f"m={CONFIGS / 'qwen2.5-7b'}",))
    assert "does not divide the model's 28 attention heads" in e


def test_model_config_on_the_command_line(tmp_path):
    t = topo(tmp_path, "", group(8))
    r = run_cli("validate", str(t), "--model-config", f"m={CONFIGS / 'qwen2.5-7b'}")
    assert r.exit_code == 1 and "28 attention heads" in r.output
    r = run_cli("validate", str(t), "--model-config", f"mm={CONFIGS / 'qwen2.5-7b'}")
    assert r.exit_code == 2  # a usage error: the option names no model
    assert f"--model-config mm={CONFIGS / 'qwen2.5-7b'}: sglang: no model named 'mm' " \
        "(hint: did you mean 'm'?)" in r.output
    r = run_cli("validate", str(t), "--model-config", "m")
    assert r.exit_code == 2 and "expected NAME=DIR" in r.output
    assert "Traceback" not in r.output


def test_an_unreadable_model_config_is_an_error(tmp_path):
    t = topo(tmp_path, "no-such-model", group(1))
    e = only_error(t)
    assert "sglang[0].model_config: cannot read the model's config.json at " in e
    assert "No such file or directory" in e
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    t2 = write_topo(tmp_path, """
        deployment: {name: mc, hf_checkpoint: /models/m}
        sglang:
          - name: m
            model_config: broken
            server_groups: [{worker_type: regular, num_gpus: 1, num_gpus_per_engine: 1}]
        """, name="b.yaml")
    assert "cannot read the model's config.json" in only_error(t2)


# -- the argument rules SGLang lets through -------------------------------------------------------


@pytest.mark.parametrize("value", ["1.5", "0", "-0.1", "1"])
def test_mem_fraction_static_is_a_fraction(tmp_path, value):
    t = topo(tmp_path, "", group(1), defaults=f"defaults: {{mem_fraction_static: {value}}}")
    e = only_error(t)
    assert "defaults.mem_fraction_static: mem_fraction_static" in e
    assert "is not a fraction between 0 and 1" in e


def test_mem_fraction_static_inside_is_fine(tmp_path):
    assert plan_of(topo(tmp_path, "", group(1), defaults="defaults: {mem_fraction_static: 0.88}"))


def test_eagle_needs_a_draft_model(tmp_path):
    bad = topo(tmp_path, "qwen3-8b", group(1, overrides="speculative_algorithm: EAGLE"))
    e = only_error(bad)
    assert "overrides.speculative_algorithm: speculative_algorithm EAGLE needs a draft model " \
        "for Qwen3ForCausalLM, and none is set" in e
    ok = topo(tmp_path, "qwen3-8b", group(1, overrides="speculative_algorithm: EAGLE, "
                                                     "speculative_draft_model_path: /models/d"),
              name="ok.yaml")
    assert plan_of(ok)
    # DeepSeek-V3 bundles its MTP layers: SGLang drafts with the model itself
    assert plan_of(topo(tmp_path, "deepseek-v3", group(16, overrides="speculative_algorithm: "
                                                                   "NEXTN"), name="ds.yaml"))
    # no config at hand: EAGLE3 always needs one; EAGLE is a warning
    e3 = topo(tmp_path, "", group(1, overrides="speculative_algorithm: EAGLE3"), name="e3.yaml")
    assert "speculative_algorithm EAGLE3 needs a draft model, and none is set" in only_error(e3)
    e1 = topo(tmp_path, "", group(1, overrides="speculative_algorithm: EAGLE"), name="e1.yaml")
    warnings = [w.format() for w in plan_of(e1).topology.warnings]
    assert any("speculative_algorithm EAGLE with no draft model" in w for w in warnings)


def test_pipeline_parallelism_with_attention_dp_is_refused(tmp_path):
    bad = topo(tmp_path, "", group(4, overrides="pp_size: 2, attn_dp_size: 2"))
    e = only_error(bad)
    assert "overrides.attn_dp_size: pipeline parallelism (pp_size 2) with attention data " \
        "parallelism (2): SGLang does not combine them" in e
    old_style = topo(tmp_path, "", group(4, overrides="pp_size: 2, dp_size: 2, "
                                                     "enable_dp_attention: true"), name="o.yaml")
    assert "SGLang does not combine them" in only_error(old_style)
    assert plan_of(topo(tmp_path, "", group(4, overrides="pp_size: 2"), name="pp.yaml"))


# -- what the red-team pass found -------------------------------------------------------------


def _write_cfg(tmp_path: Path, cfg: object, name: str = "cfg") -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return d


@pytest.mark.parametrize("text", [
    '{"max_position_embeddings": 4096, "rope_scaling": {"factor": Infinity}}',
    '{"max_position_embeddings": 4096, "rope_scaling": {"factor": NaN}}',
    '{"max_position_embeddings": 4096, "rope_scaling": {"factor": -2}}',
    '{"num_attention_heads": 1000000000001}',
    '{"num_attention_heads": 32, "num_hidden_layers": 100000000000, "hidden_size": 4096, '
    '"vocab_size": 1000, "num_experts": 8}',
    "[" * 100000 + "]" * 100000,
    '"just a string"',
    '{"num_attention_heads": "32", "num_key_value_heads": true, "architectures": [1]}',
])
def test_odd_configs_never_crash_or_hang(tmp_path, text):
    d = _write_cfg(tmp_path, text)
    t = topo(tmp_path, "", group(1), cluster=", gpu: h100-80gb",
             defaults="defaults: {context_length: 100000}")
    try:
        plan_of(t, model_configs=(f"m={d}",))
    except Exception as exc:  # a positioned TopologyError is fine; nothing else
        from generator.errors import TopologyError

        assert isinstance(exc, TopologyError), repr(exc)


def test_a_model_config_that_is_not_a_regular_file_is_refused(tmp_path):
    t = topo(tmp_path, "", group(1))
    e = only_error(t, model_configs=("m=/dev/zero",))
    assert "cannot read the model's config.json at /dev/zero: not a regular file" in e


def test_the_longer_context_flag_must_be_true(tmp_path):
    t = topo(tmp_path, "qwen3-8b", group(1), defaults="defaults: {context_length: 65536}",
             extra="runtime: {env: {SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN: 'false'}}")
    assert "is longer than the model's 40960" in only_error(t)


def test_encoder_groups_skip_the_language_model_checks(tmp_path):
    # a 72B VLM's encoder engine on one GPU holds the vision tower, not the 72B weights
    cfg = json.loads((CONFIGS / "qwen2.5-vl-7b" / "config.json").read_text())
    cfg.update(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
               num_key_value_heads=8, intermediate_size=29568)
    d = _write_cfg(tmp_path, cfg, "vl72")
    groups = "\n".join([group(1, wt="encoder"), group(8, wt="regular")])
    t = topo(tmp_path, "", groups, cluster=", gpu: h100-80gb")
    assert plan_of(t, model_configs=(f"m={d}",))


def test_attention_context_parallelism_divides_the_tp_too(tmp_path):
    d = _write_cfg(tmp_path, {"architectures": ["X"], "num_attention_heads": 12,
                              "num_key_value_heads": 4, "num_hidden_layers": 8})
    t = topo(tmp_path, "", group(8, overrides="attn_cp_size: 2"))
    assert plan_of(t, model_configs=(f"m={d}",))
    bad = topo(tmp_path, "", group(8), name="bad.yaml")
    assert "tensor parallelism 8 does not divide the model's 12 attention heads" in only_error(
        bad, model_configs=(f"m={d}",))


def test_errors_point_at_the_spelling_and_the_width_the_file_uses(tmp_path):
    t = write_topo(tmp_path, f"""
        deployment: {{name: mc, hf_checkpoint: /models/m, num_gpus_per_engine: 8}}
        defaults:
          context-length: 65536
        sglang:
          - name: m
            model_config: {CONFIGS / 'qwen2.5-7b'}
            server_groups: [{{worker_type: regular, num_gpus: 8}}]
        """)
    errs = errors_of(t)
    assert len(errs) == 2, errs
    heads = next(e for e in errs if "attention heads" in e)
    assert heads.startswith(f"{t}:1:") and "deployment.num_gpus_per_engine: tensor" in heads
    ctx = next(e for e in errs if "context_length" in e)
    assert ctx.startswith(f"{t}:3:") and "defaults.context-length: context_length 65536" in ctx
