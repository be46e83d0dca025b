"""`sgl-gen import slime`, the exports for slime, and the client helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from generator.client import UnknownModelError, get_model_url, routing_headers
from generator.exports import model_routers, slime_external_args
from generator.pipeline import compile_plan
from tests.helpers import EXAMPLES, run_cli, write_topo
from tests.tools import need_path

SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"


def _import(tmp_path: Path, *args: str) -> tuple[Path, str]:
    r = run_cli("import", "slime", *args)
    assert r.exit_code == 0, r.output
    out = tmp_path / "imported.yaml"
    out.write_text(r.stdout)
    return out, r.stdout


SEED_002_PD = """\
sglang:
  - name: actor
    update_weights: true
    server_groups:
      - worker_type: prefill
        num_gpus: 4
        num_gpus_per_engine: 2
        overrides:
          chunked_prefill_size: 8192
      - worker_type: decode
        num_gpus: 12
        num_gpus_per_engine: 4
        overrides:
          mem_fraction_static: 0.88
"""


def test_seed_002_pd_config_is_quoted_as_the_seed_writes_it():
    need_path(SEEDS, "the seeds beside the checkout (../shared/seeds, as in CI)")
    (seed,) = SEEDS.glob("002_*.txt")
    assert SEED_002_PD in seed.read_text()


def test_import_slime_pd_keeps_everything_and_validates(tmp_path):
    src = write_topo(tmp_path, SEED_002_PD, "sglang_pd.yaml")
    out, text = _import(tmp_path, str(src), "--rollout-num-gpus", "16", "--hf-checkpoint", "/m")
    assert text.startswith("# yaml-language-server: $schema=../schemas/topology.schema.json\n"
                           f"# Imported from slime --sglang-config {src} by sgl-gen")
    assert "chunked_prefill_size: 8192" in text and "mem_fraction_static: 0.88" in text
    plan = compile_plan(out)  # no options needed any more
    engines = plan.models[0].engines
    assert [(e.worker_type, e.tp_size) for e in engines] == [("prefill", 2)] * 2 + [("decode", 4)] * 3
    assert plan.name == "sglang_pd"
    assert plan.topology.hf_checkpoint == "/m"


def test_import_slime_keeps_legacy_engine_groups_placeholders_and_empty_models(tmp_path):
    src = write_topo(tmp_path, """\
        sglang:
          - name: actor
            engine_groups:
              - {worker_type: placeholder, num_gpus: 2}
              - {worker_type: regular, num_gpus: 6, overrides: {context_length: 4096}}
          - name: external
            server_groups: []
        """)
    out, text = _import(tmp_path, str(src), "--rollout-num-gpus", "8",
                        "--rollout-num-gpus-per-engine", "2", "--hf-checkpoint", "/m")
    assert "engine_groups:" in text and "server_groups: []" in text
    plan = compile_plan(out)
    assert [len(m.engines) for m in plan.models] == [3, 0]
    assert [p.gpus for p in plan.models[0].placeholders] == [(0, 1)]


def test_legacy_prefill_num_servers_becomes_prefill_and_decode_groups(tmp_path):
    out, _ = _import(tmp_path, "--prefill-num-servers", "1", "--rollout-num-gpus", "8",
                     "--rollout-num-gpus-per-engine", "2", "--hf-checkpoint", "/m",
                     "--sglang-router-port", "9000")
    plan = compile_plan(out)
    (m,) = plan.models
    assert [e.worker_type for e in m.engines] == ["prefill", "decode", "decode", "decode"]
    assert m.router.port == 9000


@pytest.mark.parametrize("args,message", [
    (["FILE", "--prefill-num-servers", "1"],
     "--prefill-num-servers and an --sglang-config file are mutually exclusive in slime: PD is "
     "configured by the file's prefill/decode groups"),
    (["FILE", "--rollout-external"],
     "--rollout-external is mutually exclusive with --sglang-config in slime: external engines "
     "have their own topology (export it from a plan with `sgl-gen export slime-args`)"),
    (["--prefill-num-servers", "4", "--rollout-num-gpus", "8", "--rollout-num-gpus-per-engine", "2"],
     "--prefill-num-servers 4 x 2 GPUs leaves no GPU of --rollout-num-gpus 8 for decode"),
    ([], "give a slime --sglang-config FILE or --prefill-num-servers N"),
])
def test_slime_mutual_exclusions_are_usage_errors(tmp_path, args, message):
    src = write_topo(tmp_path, SEED_002_PD)
    r = run_cli("import", "slime", *[str(src) if a == "FILE" else a for a in args])
    assert r.exit_code == 2
    assert r.stderr == message + "\n"


def test_import_errors_point_into_the_users_file(tmp_path):
    src = write_topo(tmp_path, SEED_002_PD.replace("num_gpus: 12", "num_gpus: 10"))
    r = run_cli("import", "slime", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"{src}:11:19: sglang[0].server_groups[1].num_gpus: 10 is not a multiple of the engine "
        "width 4 (from sglang[0].server_groups[1].num_gpus_per_engine)"]


def test_import_writes_atomically_to_a_file(tmp_path):
    src = write_topo(tmp_path, SEED_002_PD)
    dest = tmp_path / "topo.yaml"
    r = run_cli("import", "slime", str(src), "--hf-checkpoint", "/m", "-o", str(dest))
    assert r.exit_code == 0 and r.stdout == ""
    assert compile_plan(dest).name == "topo"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".topo.yaml.")]


def test_exports_for_slime():
    plan = compile_plan(EXAMPLES / "multi-model.yaml")
    routers = model_routers(plan)
    assert routers == {m.name: (m.router.address, m.router.port) for m in plan.models}
    args = slime_external_args(plan)
    updated = next(m for m in plan.models if m.update_weights)
    assert args[:2] == ["--rollout-external", "--rollout-external-engine-addrs"]
    assert args[2:] == [f"{e.address}:{e.port}" for e in updated.engines]
    r = run_cli("export", "model-routers", str(EXAMPLES / "multi-model.yaml"))
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {k: list(v) for k, v in routers.items()}
    r = run_cli("export", "slime-args", str(EXAMPLES / "multi-model.yaml"), "--model", "nope")
    assert r.exit_code == 2 and r.stderr.startswith("--model: no model 'nope' in multi-model")


def test_client_get_model_url_never_falls_back():
    plan = compile_plan(EXAMPLES / "multi-model.yaml")
    from generator.render import endpoints

    ep = endpoints(plan)
    m = plan.models[0]
    assert get_model_url(ep, m.name, "/generate") == f"{m.router.url}/generate"
    slime_style = {k: v for k, v in model_routers(plan).items()}
    assert get_model_url(slime_style, m.name, "/v1/chat/completions") == (
        f"http://{m.router.address}:{m.router.port}/v1/chat/completions")
    with pytest.raises(UnknownModelError) as info:
        get_model_url(ep, "critic", "/generate")
    known = ", ".join(sorted(x.name for x in plan.models))
    assert str(info.value) == f"unknown model 'critic' (models: {known})"
    with pytest.raises(ValueError, match="path must start with '/'"):
        get_model_url(ep, m.name, "generate")


def test_routing_headers():
    assert routing_headers("session-7") == {"X-SMG-Routing-Key": "session-7"}
    assert routing_headers(42) == {"X-SMG-Routing-Key": "42"}
    for bad in ("", "a\r\nInjected: 1"):
        with pytest.raises(ValueError):
            routing_headers(bad)
    assert re.fullmatch(r"[A-Za-z-]+", next(iter(routing_headers("x"))))


# -- ROLL ---------------------------------------------------------------------------------------

# The seed (003) prints this configuration with its indentation flattened; this is the same text
# indented, and the test below checks it line by line against the seed.
ROLL_SEED = """\
actor_infer:
  model_args:
    disable_gradient_checkpointing: true
    dtype: bf16
  generating_args:
    max_new_tokens: ${response_length}
    top_p: 0.99
    top_k: 100
    num_beams: 1
    temperature: 0.99
    num_return_sequences: ${num_return_sequences_in_group}
  strategy_args:
    strategy_name: sglang
    strategy_config:
      mem_fraction_static: 0.7
      load_format: dummy
  num_gpus_per_worker: 2
  device_mapping: list(range(0,24))
"""


def test_roll_config_is_the_seeds():
    need_path(SEEDS, "the seeds beside the checkout (../shared/seeds, as in CI)")
    (seed,) = SEEDS.glob("003_*.txt")
    flat = [line.strip() for line in ROLL_SEED.splitlines()]
    text = seed.read_text().splitlines()
    start = text.index(flat[0])
    assert text[start:start + len(flat)] == flat


def test_import_roll_seed_24_gpus_2_per_worker_is_12_engines(tmp_path):
    src = write_topo(tmp_path, ROLL_SEED, "rlvr_config_sglang.yaml")
    r = run_cli("import", "roll", str(src), "--hf-checkpoint", "/models/qwen3-30b-a3b")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [
        f"{src}:2:3: warning: actor_infer.model_args: not mapped: training-side model settings",
        f"{src}:5:3: warning: actor_infer.generating_args: not mapped: sampling parameters "
        "travel with each request"]
    out = tmp_path / "out.yaml"
    out.write_text(r.stdout)
    plan = compile_plan(out)
    (m,) = plan.models
    assert len(m.engines) == 12 and {e.tp_size for e in m.engines} == {2}
    assert [p.gpus for e in m.engines for p in e.placements][:5] == [(0, 1), (2, 3), (4, 5),
                                                                    (6, 7), (0, 1)]
    assert len(plan.nodes) == 3
    argv = m.engines[0].argv
    assert argv[argv.index("--load-format") + 1] == "dummy"
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.7"


@pytest.mark.parametrize("mapping,engines,first_gpu", [
    ("[8, 9, 10, 11]", 2, (0, 1)), ("list(range(4,8))", 2, (4, 5)),
])
def test_roll_device_mapping_forms(tmp_path, mapping, engines, first_gpu):
    src = write_topo(tmp_path, ROLL_SEED.replace("list(range(0,24))", mapping))
    r = run_cli("import", "roll", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.yaml"
    out.write_text(r.stdout)
    (m,) = compile_plan(out).models
    assert len(m.engines) == engines
    e0 = m.engines[0].placements[0]
    assert (e0.node, e0.gpus) == ((1, (0, 1)) if mapping.startswith("[8") else (0, first_gpu))


@pytest.mark.parametrize("change,message", [
    (("strategy_name: sglang", "strategy_name: vllm"),
     "13:20: actor_infer.strategy_args.strategy_name: strategy_name is 'vllm', not 'sglang' "
     "(hint: sgl-gen deploys SGLang engines only)"),
    (("device_mapping: list(range(0,24))", "device_mapping: [0, 1, 4, 5]"),
     "18:19: actor_infer.device_mapping: device_mapping is not a contiguous range of GPU ids "
     "(hint: sgl-gen lays engines out on consecutive GPUs)"),
    (("device_mapping: list(range(0,24))", "device_mapping: list(range(0,5))"),
     "18:19: actor_infer.device_mapping: 5 GPUs are not a multiple of num_gpus_per_worker 2"),
    (("device_mapping: list(range(0,24))", "device_mapping: all"),
     "18:19: actor_infer.device_mapping: cannot read device_mapping 'all' (hint: a list of GPU "
     "ids or 'list(range(START, STOP))')"),
    (("mem_fraction_static: 0.7", "mem_fraction_statik: 0.7"),
     "15:7: actor_infer.strategy_args.strategy_config.mem_fraction_statik: unknown SGLang server "
     "argument 'mem_fraction_statik' (sglang 0.5.23) (hint: did you mean 'mem_fraction_static'?)"),
])
def test_roll_errors_are_positioned_in_the_roll_file(tmp_path, change, message):
    src = write_topo(tmp_path, ROLL_SEED.replace(*change))
    r = run_cli("import", "roll", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == f"{src}:{message}"


# -- SkyRL --------------------------------------------------------------------------------------

def skyrl_snippets() -> list[tuple[int, str]]:
    """Every ``.. code-block:: yaml`` of the SkyRL seed (004) that configures the generator."""
    need_path(SEEDS, "the seeds beside the checkout (../shared/seeds, as in CI)")
    (seed,) = SEEDS.glob("004_*.txt")
    lines = seed.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: yaml":
            continue
        j, body = i + 1, []
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith("   ")):
            body.append(lines[j][3:])
            j += 1
        text = "\n".join(body).strip("\n") + "\n"
        if "generator:" in text:
            out.append((i + 1, text))
    return out


def test_every_skyrl_snippet_imports_validates_and_renders(tmp_path):
    import yaml

    from generator.render import render

    snippets = skyrl_snippets()
    assert len(snippets) >= 15
    for line, text in snippets:
        doc = yaml.safe_load(text)
        # the snippets are fragments of an SGLang guide: the ones that omit it run with
        # backend: sglang, the guide's premise (SkyRL's own default is vllm)
        doc["generator"].setdefault("backend", "sglang")
        src = tmp_path / f"seed-{line}.yaml"
        src.write_text(yaml.safe_dump(doc))
        r = run_cli("import", "skyrl", str(src), "--hf-checkpoint", "/m")
        assert r.exit_code == 0, (line, r.output)
        out = tmp_path / f"seed-{line}.topo.yaml"
        out.write_text(r.stdout)
        plan = compile_plan(out)
        render(plan)
        gen = doc["generator"]
        (m,) = plan.models
        tp = gen.get("inference_engine_tensor_parallel_size", 1)
        pp = gen.get("inference_engine_pipeline_parallel_size", 1)
        n = gen.get("num_inference_engines", 1) * gen.get("inference_engine_data_parallel_size", 1)
        assert [(e.tp_size, e.pp_size) for e in m.engines] == [(tp, pp)] * n, line
        known = {"backend", "engine_init_kwargs", "gpu_memory_utilization", "enable_lora",
                 "max_num_batched_tokens", "max_num_seqs", "num_inference_engines",
                 "inference_engine_tensor_parallel_size", "inference_engine_pipeline_parallel_size",
                 "inference_engine_data_parallel_size", "inference_engine_expert_parallel_size"}
        reported = {w.split(": ")[2] for w in r.stderr.splitlines()}
        assert reported == {f"generator.{k}" for k in gen if k not in known} | {
            ".".join(map(str, p)) for p in _leaves(doc.get("trainer"), ("trainer",))}, line


def _leaves(data, path):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, path + (k,))
    elif data is not None:
        yield path


def test_skyrl_memory_settings_map_to_sglang_names(tmp_path):
    src = write_topo(tmp_path, """\
        generator:
          backend: sglang
          num_inference_engines: 2
          inference_engine_tensor_parallel_size: 2
          inference_engine_data_parallel_size: 2
          gpu_memory_utilization: 0.8
          max_num_batched_tokens: 8192
          max_num_seqs: 1024
          engine_init_kwargs: {attention_backend: fa3, max_running_requests: 512}
        trainer: {policy: {model: {path: /models/policy}}}
        """)
    r = run_cli("import", "skyrl", str(src))
    assert r.exit_code == 0 and r.stderr == "", r.output
    out = tmp_path / "out.yaml"
    out.write_text(r.stdout)
    plan = compile_plan(out)
    (m,) = plan.models
    assert len(m.engines) == 4 and m.model_path == "/models/policy"
    argv = list(m.engines[0].argv)
    got = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert got["--mem-fraction-static"] == "0.8" and got["--max-prefill-tokens"] == "8192"
    assert got["--attention-backend"] == "fa3"
    assert got["--max-running-requests"] == "512"  # engine_init_kwargs win, as in SkyRL


def test_skyrl_vllm_backend_is_an_error(tmp_path):
    src = write_topo(tmp_path, "generator:\n  num_inference_engines: 2\n")
    r = run_cli("import", "skyrl", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"{src}:2:3: generator: backend is 'vllm' (SkyRL's default) (hint: set "
        "generator.backend: sglang)"]


IMPORTED_EXAMPLES = [
    ("from-slime-pd.yaml", ["slime", "sources/slime_sglang_pd.yaml", "--rollout-num-gpus", "16",
                            "--hf-checkpoint", "/models/Qwen3-8B"]),
    ("from-roll-rlvr.yaml", ["roll", "sources/roll_rlvr_config_sglang.yaml",
                             "--hf-checkpoint", "/models/Qwen3-30B-A3B"]),
    ("from-skyrl-parallel.yaml", ["skyrl", "sources/skyrl_sglang_parallel.yaml",
                                  "--hf-checkpoint", "/models/Qwen3-30B-A3B"]),
    ("from-rlinf-rollout.yaml", ["rlinf", "sources/rlinf_sglang_server.yaml"]),
]


@pytest.mark.parametrize("name,args", IMPORTED_EXAMPLES, ids=[n for n, _ in IMPORTED_EXAMPLES])
def test_imported_examples_are_what_the_importers_print_today(name, args, monkeypatch):
    monkeypatch.chdir(EXAMPLES)
    r = run_cli("import", *args, "--set", f"deployment.name={name.removesuffix('.yaml')}")
    assert r.exit_code == 0, r.output
    assert r.stdout == (EXAMPLES / name).read_text()


def test_sources_match_the_seed_snippets():
    assert (EXAMPLES / "sources/slime_sglang_pd.yaml").read_text() == SEED_002_PD
    assert (EXAMPLES / "sources/roll_rlvr_config_sglang.yaml").read_text() == ROLL_SEED
    assert (EXAMPLES / "sources/rlinf_sglang_server.yaml").read_text() == RLINF_SEED
    snippets = [t for _, t in skyrl_snippets()]
    assert (EXAMPLES / "sources/skyrl_sglang_parallel.yaml").read_text() in snippets


# -- RLinf --------------------------------------------------------------------------------------

# Seed 001 prints these configurations with their indentation flattened; here they are indented,
# and the tests check them line by line against the seed.
RLINF_SEED = """\
cluster:
  num_nodes: 1
  component_placement:
    rollout: all # <-- the key "rollout" is arbitrary; see below
router_server_args: # <-- the top-level key is arbitrary; see below
  model_path: /path/to/hf_model
  tensor_parallel_size: 2
  pipeline_parallel_size: 1
  group_name: SGLangServerGroup
  launch_server: True
  server: # forwarded as ServerArgs(**)
    model_path: ${..model_path}
    tp_size: ${..tensor_parallel_size}
    pp_size: ${..pipeline_parallel_size}
    mem_fraction_static: 0.85
    max_running_requests: 64
    attention_backend: triton
    log_level: warning
  router_group_name: SGLangRouterGroup
  launch_router: True
  router: # forwarded as launch_router CLI flags
    policy: cache_aware
    log_level: warn
    worker_startup_timeout_secs: 1800
    request_timeout_secs: 1800
"""
RLINF_NODE_GROUP_HEAD = """\
cluster:
  num_nodes: 2
  component_placement:
    rollout:
      node_group: rollout_gpu # which group to land on
      placement: all # use all hardware ranks in that group
  node_groups:
    - label: rollout_gpu
      node_ranks: 1 # node rank 1 hosts the engines
    - label: test
      node_ranks: 0 # node rank 0 is free for other work
"""


def _seed_lines(n: str) -> list[str]:
    need_path(SEEDS, "the seeds beside the checkout (../shared/seeds, as in CI)")
    (seed,) = SEEDS.glob(f"{n}_*.txt")
    return seed.read_text().splitlines()


@pytest.mark.parametrize("snippet", [RLINF_SEED, RLINF_NODE_GROUP_HEAD])
def test_rlinf_configs_are_the_seeds(snippet):
    text = _seed_lines("001")
    flat = [line.strip().replace("- ", "", 1) if line.strip().startswith("- ") else line.strip()
            for line in snippet.splitlines()]
    start = text.index(flat[0], text.index(flat[1]) - 1)
    got = [t.replace("- ", "", 1) if t.startswith("- ") else t
           for t in text[start:start + len(flat)]]
    assert got == flat


def _rlinf(tmp_path: Path, text: str, *args: str):
    src = write_topo(tmp_path, text, "rlinf.yaml")
    r = run_cli("import", "rlinf", str(src), *args)
    return src, r


def test_import_rlinf_flat_placement(tmp_path):
    src, r = _rlinf(tmp_path, RLINF_SEED)
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [
        f"{src}:9:3: warning: router_server_args.group_name: not mapped: a Ray worker-group name",
        f"{src}:19:3: warning: router_server_args.router_group_name: not mapped: a Ray "
        "worker-group name"]
    out = tmp_path / "out.yaml"
    out.write_text(r.stdout)
    plan = compile_plan(out)
    (m,) = plan.models
    assert m.model_path == "/path/to/hf_model" and len(plan.nodes) == 1
    assert [(e.tp_size, e.placements[0].gpus) for e in m.engines] == [
        (2, (0, 1)), (2, (2, 3)), (2, (4, 5)), (2, (6, 7))]
    assert m.router.policy == "cache_aware"
    argv = list(m.router.argv)
    assert argv[argv.index("--log-level") + 1] == "warn"
    eargv = list(m.engines[0].argv)
    assert eargv[eargv.index("--attention-backend") + 1] == "triton"


def test_import_rlinf_node_group_lands_on_its_nodes(tmp_path):
    text = RLINF_NODE_GROUP_HEAD + RLINF_SEED[RLINF_SEED.index("router_server_args"):]
    src, r = _rlinf(tmp_path, text, "--gpus-per-node", "4")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.yaml"
    out.write_text(r.stdout)
    plan = compile_plan(out)
    (m,) = plan.models
    assert {p.node for e in m.engines for p in e.placements} == {1}
    assert len(m.engines) == 2


@pytest.mark.parametrize("change,message", [
    (("rollout: all", "rollout: 0-1:0-3,3-5"),
     "4:14: cluster.component_placement.rollout: placement '0-1:0-3,3-5' names node and "
     "accelerator ranks: RLinf builds a FlexiblePlacementStrategy for it, which sgl-gen cannot "
     "express (hint: use 'all' or a contiguous range of hardware ranks)"),
    (("rollout: all", "rollout: 0-1,4-5"),
     "4:14: cluster.component_placement.rollout: hardware ranks are not contiguous (RLinf "
     "requires it for the flat-rank launcher)"),
    (("rollout: all", "rollout: 0-4"),
     "4:14: cluster.component_placement.rollout: 5 GPUs are not a multiple of "
     "tensor_parallel_size x pipeline_parallel_size = 2"),
    (("    log_level: warning\n", "    log_level: warning\n    port: 30000\n"),
     "19:5: router_server_args.server.port: 'port' is filled in at run time (by RLinf, and by "
     "sgl-gen) (hint: leave it unset, as RLinf's guide says)"),
    (("    log_level: warn\n", "    log_levle: warn\n"),
     "23:5: router_server_args.router.log_levle: unknown sglang-router 0.3.2 argument "
     "'log_levle' (hint: did you mean 'log_level'?)"),
    (("    tp_size: ${..tensor_parallel_size}", "    tp_size: 4"),
     "13:14: router_server_args.server.tp_size: tp_size: 4 differs from the args block's "
     "tensor_parallel_size 2 (hint: write ${..tensor_parallel_size} as RLinf's guide does)"),
])
def test_rlinf_errors_are_positioned_in_the_rlinf_file(tmp_path, change, message):
    src, r = _rlinf(tmp_path, RLINF_SEED.replace(*change))
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines()[0] == f"{src}:{message}"


def test_rlinf_unknown_component_did_you_mean(tmp_path):
    src, r = _rlinf(tmp_path, RLINF_SEED, "--component", "rolout")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"{src}:3:3: cluster.component_placement: no placement for component 'rolout' "
        "(hint: did you mean 'rollout'?)"]
