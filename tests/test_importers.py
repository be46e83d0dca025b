"""`sgl-gen import slime`, the exports for slime, and the client helpers."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from generator.bridges.exports import model_routers, slime_external_args
from generator.client import UnknownModelError, get_model_url, routing_headers
from generator.compile.pipeline import compile_plan
from generator.paths import SCHEMAS
from tests.helpers import EXAMPLES, run_cli, write_topo
from tests.tools import need_path

SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"


def _import(tmp_path: Path, *args: str) -> tuple[Path, str]:
    r = run_cli("import", "slime", *args)
    assert r.exit_code == 0, r.output
    out = tmp_path / "imported.yaml"
    out.write_text(r.stdout)
    return out, r.stdout


SEED_002_PD = (EXAMPLES / "sources" / "slime_sglang_pd.yaml").read_text()


def test_import_slime_pd_keeps_everything_and_validates(tmp_path):
    src = write_topo(tmp_path, SEED_002_PD, "sglang_pd.yaml")
    out, text = _import(tmp_path, str(src), "--rollout-num-gpus", "16", "--hf-checkpoint", "/m")
    schema = (SCHEMAS / "topology.schema.json").resolve()
    assert text.startswith(f"# yaml-language-server: $schema={schema.as_uri()}\n"
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
    # a destination that cannot be written: one line naming it, no traceback, nothing left
    missing = tmp_path / "no-such-dir" / "topo.yaml"
    r = run_cli("import", "slime", str(src), "--hf-checkpoint", "/m", "-o", str(missing))
    assert r.exit_code == 1
    assert r.stderr == f"{missing}: cannot write: No such file or directory\n"
    assert not missing.parent.exists()


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
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1].startswith("--model: no model 'nope' in multi-model")


def test_client_get_model_url_never_falls_back():
    plan = compile_plan(EXAMPLES / "multi-model.yaml")
    from generator.targets.plans import endpoints

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

ROLL_SEED = (EXAMPLES / "sources" / "roll_rlvr_config_sglang.yaml").read_text()


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


# -- RLinf --------------------------------------------------------------------------------------

RLINF_SEED = (EXAMPLES / "sources" / "rlinf_sglang_server.yaml").read_text()
RLINF_NODE_GROUP = (EXAMPLES / "sources" / "rlinf_sglang_node_group.yaml").read_text()


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
    src, r = _rlinf(tmp_path, RLINF_NODE_GROUP, "--gpus-per-node", "4")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.yaml"
    out.write_text(r.stdout)
    plan = compile_plan(out)
    (m,) = plan.models
    assert {p.node for e in m.engines for p in e.placements} == {1}
    assert len(m.engines) == 2
    assert m.router.node == 0  # RLinf starts its router on node 0, wherever the engines are


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


# -- every YAML snippet of the seeds --------------------------------------------------------------
#
# The seeds are the guides of slime (000, 002), RLinf (001), ROLL (003) and SkyRL (004). 000, 001
# and 003 print their YAML with the indentation flattened away; each such snippet has an indented
# copy in examples/sources/ that must equal it line by line once flattened. 002 and 004 keep their
# indentation and are read as they are. A snippet added to a seed fails
# test_every_seed_snippet_is_known until it has a source (flattened seeds) and an entry in
# SEED_CONFIGS (expected engines, TP sizes and GPUs, as the seed's text says) or, for SkyRL, is
# checked against its own numbers.

SOURCES = EXAMPLES / "sources"
_KEY = re.compile(r"(- )?[A-Za-z_][\w.]*:( .*)?")
_START = re.compile(r"[a-z_]+:\s*(#.*)?")
_PLACEHOLDER = re.compile(r":\s+<\w+>")
SAME_AS_ABOVE = "# ... same as the single-node config above ..."
IMPORTER = {"000": "slime", "001": "rlinf", "002": "slime", "003": "roll", "004": "skyrl"}


@dataclasses.dataclass(frozen=True)
class Snippet:
    seed: str
    line: int
    text: str              # importable YAML (a flattened snippet: its indented copy in sources/)
    source: str | None     # the examples/sources/ file it is
    launch: tuple[str, ...]  # the seed's `python train.py` flags right after it


def _flat(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _seed_text(n: str) -> list[str]:
    need_path(SEEDS, "the seeds beside the checkout (../shared/seeds, as in CI)")
    (seed,) = SEEDS.glob(f"{n}_*.txt")
    return seed.read_text().splitlines()


def _launch(lines: list[str], j: int) -> tuple[str, ...]:
    """The flags of a `python train.py \\ ... \\ ...` command following line j (a heading such
    as "Launch with:" and blank lines may come between)."""
    while j < len(lines) and (not lines[j].strip() or lines[j].strip().endswith(":")):
        j += 1
    if j >= len(lines) or not lines[j].strip().startswith("python train.py"):
        return ()
    tokens: list[str] = []
    for line in lines[j + 1:]:
        if line.strip() == "...":
            break
        tokens += line.replace("\\", " ").split()
    return tuple(tokens)


def _plain_snippets(n: str) -> tuple[list[Snippet], list[int]]:
    """Snippets of a plain-text seed, and the lines of format references (`key: <type>`)."""
    lines = _seed_text(n)
    found: list[tuple[int, list[str], tuple[str, ...]]] = []
    refs: list[int] = []
    i = 0
    while i < len(lines):
        if not _START.fullmatch(lines[i]):
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() and (
                _KEY.fullmatch(lines[j].strip()) or lines[j].strip().startswith("#")):
            j += 1
        body = lines[i:j]
        if any(_PLACEHOLDER.search(b) for b in body):
            refs.append(i + 1)
        else:
            found.append((i + 1, body, _launch(lines, j)))
        i = j
    sources = {p.name: p.read_text() for p in sorted(SOURCES.glob("*.yaml"))}
    out: list[Snippet] = []
    previous: list[str] = []
    for line, body, launch in found:
        indented = any(b[:1].isspace() for b in body[1:])
        if indented:
            text = textwrap.dedent("\n".join(body)) + "\n"
            name = next((k for k, v in sources.items() if v == text), None)
        else:
            want = [b.strip() for b in body]
            if want[-1] == SAME_AS_ABOVE:
                # "same as the single-node config above": the block the line before it opens
                # continues with that block of the previous snippet
                keys = [b.split("#")[0].strip() for b in previous]
                want += previous[keys.index(want[-2].split("#")[0].strip()) + 1:]
            name = next((k for k, v in sources.items() if _flat(v) == want), None)
            text = sources[name] if name else ""
            previous = [b.strip() for b in body]
        out.append(Snippet(n, line, text, name, launch))
    return out, refs


def _rst_yaml_blocks(n: str) -> list[Snippet]:
    """Every `.. code-block:: yaml` of an RST seed, dedented."""
    lines = _seed_text(n)
    sources = {p.read_text(): p.name for p in sorted(SOURCES.glob("*.yaml"))}
    out = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: yaml":
            continue
        indent = len(line) - len(line.lstrip())
        j, body = i + 1, []
        while j < len(lines) and (not lines[j].strip()
                                  or len(lines[j]) - len(lines[j].lstrip()) > indent):
            body.append(lines[j])
            j += 1
        text = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        out.append(Snippet(n, i + 1, text, sources.get(text), ()))
    return out


def seed_snippets() -> list[Snippet]:
    out: list[Snippet] = []
    for n in ("000", "001", "002", "003"):
        out += _plain_snippets(n)[0]
    return out + _rst_yaml_blocks("004")


def _gpus(node: int, *gpus: int) -> str:
    return f"{node}:{','.join(map(str, gpus))}"


def layout(plan) -> dict[str, list[str]]:
    """model -> ["<worker_type> tp<N>[ pp<M>] <node>:<gpu,...> ...", ..., "placeholder <n>:<...>"]"""
    return {m.name: [f"{e.worker_type} tp{e.tp_size}" + (f" pp{e.pp_size}" if e.pp_size > 1 else "")
                     + "".join(f" {_gpus(p.node, *p.gpus)}" for p in e.placements)
                     for e in m.engines]
            + [f"placeholder {_gpus(p.node, *p.gpus)}" for p in m.placeholders]
            for m in plan.models}


# source -> (example it is imported as, options beyond the seed's own command line, layout).
# Layouts are what each seed's text says: engines = num_gpus / GPUs per engine, in file order.
SEED_CONFIGS: dict[str, tuple[str, list[str], dict[str, list[str]]]] = {
    # 000 "1. Basic": 8 GPUs / 2 per engine = 4 engines behind one router
    "slime_sglang_basic.yaml": ("from-slime-basic", ["--hf-checkpoint", "/models/Qwen3-8B"], {
        "default": [f"regular tp2 0:{g},{g + 1}" for g in (0, 2, 4, 6)]}),
    # 000 "2. PD": 2 prefill engines TP=2, 3 decode engines TP=4, 16 GPUs
    "slime_sglang_pd_000.yaml": ("from-slime-pd-basic", ["--hf-checkpoint", "/models/Qwen3-8B"], {
        "actor": ["prefill tp2 0:0,1", "prefill tp2 0:2,3", "decode tp4 0:4,5,6,7",
                  "decode tp4 1:0,1,2,3", "decode tp4 1:4,5,6,7"]}),
    # 000 "3. Multi-Model": actor 8 GPUs TP4, ref and reward 4 GPUs TP2 each
    "slime_sglang_multi_model.yaml": ("from-slime-multi-model", [], {
        "actor": ["regular tp4 0:0,1,2,3", "regular tp4 0:4,5,6,7"],
        "ref": ["regular tp2 1:0,1", "regular tp2 1:2,3"],
        "reward": ["regular tp2 1:4,5", "regular tp2 1:6,7"]}),
    # 000 "4. Multi-Model with PD": actor 2 prefill TP2 + 2 decode TP4, ref 2 x TP2
    "slime_sglang_full.yaml": ("from-slime-full", ["--hf-checkpoint", "/models/Qwen3-8B"], {
        "actor": ["prefill tp2 0:0,1", "prefill tp2 0:2,3", "decode tp4 0:4,5,6,7",
                  "decode tp4 1:0,1,2,3"],
        "ref": ["regular tp2 1:4,5", "regular tp2 1:6,7"]}),
    # 000 "5. Placeholder": 3 engines of 2 GPUs, 2 GPUs reserved
    "slime_sglang_placeholder.yaml": ("from-slime-placeholder",
                                      ["--hf-checkpoint", "/models/Qwen3-8B"], {
        "actor": ["regular tp2 0:0,1", "regular tp2 0:2,3", "regular tp2 0:4,5",
                  "placeholder 0:6,7"]}),
    # 000 "6. Per-Group ServerArgs Overrides": 8 GPUs TP4 = 2 engines
    "slime_sglang_overrides.yaml": ("from-slime-overrides", ["--hf-checkpoint", "/models/Qwen3-8B"], {
        "actor": ["regular tp4 0:0,1,2,3", "regular tp4 0:4,5,6,7"]}),
    # 000 "Complete Example": 32 GPUs, actor 2 prefill TP2 + 3 decode TP4, ref/reward 2 x TP4
    "slime_sglang_agent.yaml": ("from-slime-agent", [], {
        "actor": ["prefill tp2 0:0,1", "prefill tp2 0:2,3", "decode tp4 0:4,5,6,7",
                  "decode tp4 1:0,1,2,3", "decode tp4 1:4,5,6,7"],
        "ref": ["regular tp4 2:0,1,2,3", "regular tp4 2:4,5,6,7"],
        "reward": ["regular tp4 3:0,1,2,3", "regular tp4 3:4,5,6,7"]}),
    # 002: the PD example with per-group overrides, 16 GPUs
    "slime_sglang_pd.yaml": ("from-slime-pd", ["--hf-checkpoint", "/models/Qwen3-8B"], {
        "actor": ["prefill tp2 0:0,1", "prefill tp2 0:2,3", "decode tp4 0:4,5,6,7",
                  "decode tp4 1:0,1,2,3", "decode tp4 1:4,5,6,7"]}),
    # 001: one node, `rollout: all`, TP 2 -> all 8 GPUs as 4 engines
    "rlinf_sglang_server.yaml": ("from-rlinf-rollout", [], {
        "rollout": [f"regular tp2 0:{g},{g + 1}" for g in (0, 2, 4, 6)]}),
    # 001 node_group: node rank 1 hosts the engines, node rank 0 is free
    "rlinf_sglang_node_group.yaml": ("from-rlinf-node-group", [], {
        "rollout": [f"regular tp2 1:{g},{g + 1}" for g in (0, 2, 4, 6)]}),
    # 003: len(device_mapping) 24 // num_gpus_per_worker 2 = 12 engines
    "roll_rlvr_config_sglang.yaml": ("from-roll-rlvr", ["--hf-checkpoint", "/models/Qwen3-30B-A3B"], {
        "actor-infer": [f"regular tp2 {k // 4}:{2 * (k % 4)},{2 * (k % 4) + 1}" for k in range(12)]}),
    # 004 "Example with parallelism": 2 engines of TP 4 x PP 2
    "skyrl_sglang_parallel.yaml": ("from-skyrl-parallel", ["--hf-checkpoint", "/models/Qwen3-30B-A3B"],
                                   {"policy": ["regular tp4 pp2 0:0,1,2,3,4,5,6,7",
                                               "regular tp4 pp2 1:0,1,2,3,4,5,6,7"]}),
    # 004 "Full-Featured Configuration": 8 engines of TP 2 x PP 2
    "skyrl_sglang_full.yaml": ("from-skyrl-full", ["--hf-checkpoint", "/models/Qwen2.5-7B-Instruct"], {
        "policy": [f"regular tp2 pp2 {k // 2}:{4 * (k % 2)},{4 * (k % 2) + 1},{4 * (k % 2) + 2},"
                   f"{4 * (k % 2) + 3}" for k in range(8)]}),
    # 004 "MoE Model with Expert Parallelism": one engine of TP 4 (EP 4)
    "skyrl_sglang_moe.yaml": ("from-skyrl-moe", ["--hf-checkpoint", "/models/Qwen3-30B-A3B"], {
        "policy": ["regular tp4 0:0,1,2,3"]}),
}
#: the seed command-line flags `sgl-gen import slime` takes (the others configure training)
SLIME_FLAGS = {"--rollout-num-gpus", "--rollout-num-gpus-per-engine", "--hf-checkpoint",
               "--sglang-router-port", "--prefill-num-servers"}


def _slime_launch(launch: tuple[str, ...]) -> list[str]:
    out = []
    for i, tok in enumerate(launch):
        if tok in SLIME_FLAGS:
            out += [tok, launch[i + 1]]
    return out


def _import_args(sn: Snippet, src: str) -> list[str]:
    args = [IMPORTER[sn.seed], src]
    if sn.source in SEED_CONFIGS:
        args += _slime_launch(sn.launch) + SEED_CONFIGS[sn.source][1]
    elif "--hf-checkpoint" not in _slime_launch(sn.launch):
        args += ["--hf-checkpoint", "/models/m"]
    return args


def test_every_seed_snippet_is_known():
    snippets = seed_snippets()
    by_seed: dict[str, list[tuple[int, str | None]]] = {}
    for sn in snippets:
        by_seed.setdefault(sn.seed, []).append((sn.line, sn.source))
    unknown = [(sn.seed, sn.line) for sn in snippets if sn.seed != "004" and sn.source is None]
    assert unknown == [], "a seed snippet with no indented copy in examples/sources/"
    assert [s for _, s in by_seed["000"]] == [
        "slime_sglang_basic.yaml", "slime_sglang_pd_000.yaml", "slime_sglang_multi_model.yaml",
        "slime_sglang_full.yaml", "slime_sglang_placeholder.yaml", "slime_sglang_overrides.yaml",
        "slime_sglang_agent.yaml"]
    assert _plain_snippets("000")[1] == [15]  # the field reference (`name: <model_name>`)
    assert [s for _, s in by_seed["001"]] == ["rlinf_sglang_server.yaml",
                                              "rlinf_sglang_node_group.yaml"]
    assert [s for _, s in by_seed["002"]] == ["slime_sglang_pd.yaml"]
    assert [s for _, s in by_seed["003"]] == ["roll_rlvr_config_sglang.yaml"]
    assert len(by_seed["004"]) == 19 and all("generator:" in sn.text for sn in snippets
                                              if sn.seed == "004")
    assert sorted(s for _, s in by_seed["004"] if s) == [
        "skyrl_sglang_full.yaml", "skyrl_sglang_moe.yaml", "skyrl_sglang_parallel.yaml"]
    assert sorted(sn.source for sn in snippets if sn.source) == sorted(SEED_CONFIGS)
    # every source is a seed snippet, and every seed configuration is an example
    assert sorted(p.name for p in SOURCES.glob("*.yaml")) == sorted(SEED_CONFIGS)
    assert sorted(p.stem for p in EXAMPLES.glob("from-*.yaml")) == sorted(
        ex for ex, _, _ in SEED_CONFIGS.values())


def test_seed_launch_commands_are_read():
    got = {sn.source: _slime_launch(sn.launch) for sn in seed_snippets() if sn.launch}
    assert got == {
        "slime_sglang_basic.yaml": ["--rollout-num-gpus", "8", "--rollout-num-gpus-per-engine", "2"],
        "slime_sglang_pd_000.yaml": ["--rollout-num-gpus", "16"],
        "slime_sglang_multi_model.yaml": ["--rollout-num-gpus", "16",
                                          "--hf-checkpoint", "/path/to/actor_model"],
        "slime_sglang_agent.yaml": ["--hf-checkpoint", "/data/models/Qwen3-8B",
                                    "--rollout-num-gpus", "32"],
        "slime_sglang_pd.yaml": ["--rollout-num-gpus", "16"],
    }


def _skyrl_doc(text: str) -> dict:
    import yaml

    doc = yaml.safe_load(text)
    # the snippets are fragments of an SGLang guide: the ones that omit it run with
    # backend: sglang, the guide's premise (SkyRL's own default is vllm)
    doc["generator"].setdefault("backend", "sglang")
    return doc


def test_every_seed_snippet_imports_validates_and_renders(tmp_path):
    import yaml

    from generator.targets.render import render

    snippets = seed_snippets()
    assert len(snippets) == 30
    for sn in snippets:
        where = f"seed {sn.seed} line {sn.line}"
        text = sn.text
        if sn.seed == "004" and sn.source is None:
            text = yaml.safe_dump(_skyrl_doc(text))
        src = tmp_path / f"seed-{sn.seed}-{sn.line}.yaml"
        src.write_text(text)
        r = run_cli("import", *_import_args(sn, str(src)))
        assert r.exit_code == 0, (where, r.output)
        out = tmp_path / f"seed-{sn.seed}-{sn.line}.topo.yaml"
        out.write_text(r.stdout)
        plan = compile_plan(out)  # the imported topology needs no options
        assert set(render(plan, ("bash", "systemd"))) >= {"plan.json", "endpoints.json"}, where
        if sn.source in SEED_CONFIGS:
            assert layout(plan) == SEED_CONFIGS[sn.source][2], where
        if sn.seed == "004":
            gen = _skyrl_doc(sn.text)["generator"]
            tp = gen.get("inference_engine_tensor_parallel_size", 1)
            pp = gen.get("inference_engine_pipeline_parallel_size", 1)
            n = gen.get("num_inference_engines", 1) * gen.get("inference_engine_data_parallel_size",
                                                              1)
            w = tp * pp  # engines laid out on consecutive GPUs, 8 per node
            assert layout(plan) == {"policy": [
                f"regular tp{tp}" + (f" pp{pp}" if pp > 1 else "") + " "
                + _gpus((k * w) // 8, *range((k * w) % 8, (k * w) % 8 + w)) for k in range(n)]}, where
            known = {"backend", "engine_init_kwargs", "gpu_memory_utilization", "enable_lora",
                     "enable_prefix_caching",
                     "max_num_batched_tokens", "max_num_seqs", "num_inference_engines",
                     "inference_engine_tensor_parallel_size",
                     "inference_engine_pipeline_parallel_size",
                     "inference_engine_data_parallel_size", "inference_engine_expert_parallel_size"}
            doc = _skyrl_doc(sn.text)
            reported = {w.split(": ")[2] for w in r.stderr.splitlines()}
            assert reported == {f"generator.{k}" for k in gen if k not in known} | {
                ".".join(map(str, p)) for p in _leaves(doc.get("trainer"), ("trainer",))}, where


def test_slime_seed_models_keep_update_weights_and_paths(tmp_path):
    sn = next(s for s in seed_snippets() if s.source == "slime_sglang_agent.yaml")
    src = write_topo(tmp_path, sn.text, "sglang_agent.yaml")
    out, _ = _import(tmp_path, str(src), *_slime_launch(sn.launch))
    plan = compile_plan(out)
    assert [(m.name, m.model_path, m.update_weights) for m in plan.models] == [
        ("actor", "/data/models/Qwen3-8B", True), ("ref", "/data/models/Qwen3-32B", False),
        ("reward", "/data/models/reward-model", False)]
    assert [m.pd for m in plan.models] == [True, False, False]
    assert plan.topology.total_gpus == 32


@pytest.mark.parametrize("source", sorted(SEED_CONFIGS))
def test_imported_examples_are_what_the_importers_print_today(source, monkeypatch, tmp_path):
    example, extra, _ = SEED_CONFIGS[source]
    sn = next(s for s in seed_snippets() if s.source == source)
    monkeypatch.chdir(EXAMPLES)
    out = tmp_path / f"{example}.yaml"
    r = run_cli("import", *_import_args(sn, f"sources/{source}"),
                "--set", f"deployment.name={example}", "-o", str(out))
    assert r.exit_code == 0, r.output
    # the schema line points at the installed schema, relative to the file written
    schema = (SCHEMAS / "topology.schema.json").resolve()
    committed = (EXAMPLES / f"{example}.yaml").read_text()
    line = "# yaml-language-server: $schema=../schemas/topology.schema.json\n"
    assert committed.startswith(line)
    assert (EXAMPLES / "../schemas/topology.schema.json").resolve() == schema
    rel = Path(os.path.relpath(schema, tmp_path)).as_posix()
    assert out.read_text() == committed.replace(line, f"# yaml-language-server: $schema={rel}\n", 1)
    assert layout(compile_plan(EXAMPLES / f"{example}.yaml")) == SEED_CONFIGS[source][2]


# -- every "not mapped" report, exactly ---------------------------------------------------------

def _import_ok(tmp_path: Path, importer: str, text: str, *args: str):
    src = write_topo(tmp_path, text, f"{importer}.yaml")
    r = run_cli("import", importer, str(src), *args)
    assert r.exit_code == 0, r.output
    out = tmp_path / f"{importer}.topo.yaml"
    out.write_text(r.stdout)
    return src, r, compile_plan(out)


def test_roll_reports_every_field_it_does_not_map(tmp_path):
    src, r, plan = _import_ok(tmp_path, "roll", """\
        pretrain: /models/qwen
        actor_train:
          strategy_args: {strategy_name: megatron_train}
        actor_infer:
          infer_batch_size: 16
          data_args: {template: qwen}
          strategy_args:
            strategy_name: sglang
            strategy_version: "0.5"
            strategy_config: {mem_fraction_static: 0.7}
          num_gpus_per_worker: 2
          device_mapping: list(range(8,16))
        """)
    expected = [
        f"{src}:2:1: warning: actor_train: not mapped: 'actor_train' is not the SGLang inference "
        "component",
        f"{src}:5:3: warning: actor_infer.infer_batch_size: not mapped: SGLang batches continuously",
        f"{src}:6:3: warning: actor_infer.data_args: not mapped: not an SGLang serving setting",
        f"{src}:9:5: warning: actor_infer.strategy_args.strategy_version: not mapped: not a ROLL "
        "SGLang strategy field sgl-gen knows"]
    assert r.stderr.splitlines() == expected
    # the same lines head the output, as comments
    assert [f"# {line}" for line in expected] == [
        line for line in r.stdout.splitlines() if line.startswith(f"# {src}:")]
    (m,) = plan.models
    assert m.model_path == "/models/qwen"  # pretrain
    assert layout(plan) == {"actor-infer": [
        "regular tp2 1:0,1", "regular tp2 1:2,3", "regular tp2 1:4,5", "regular tp2 1:6,7",
        "placeholder 0:0,1,2,3,4,5,6,7"]}


def test_skyrl_reports_every_field_it_does_not_map(tmp_path):
    src, r, plan = _import_ok(tmp_path, "skyrl", """\
        generator:
          backend: sglang
          num_inference_engines: 2
          enable_prefix_caching: false
          weight_sync_backend: nccl
        trainer:
          placement: {colocate_all: true, policy_num_gpus_per_node: 4}
          policy: {model: {path: /models/policy}}
        environment: {env_class: gsm8k}
        """)
    assert r.stderr.splitlines() == [
        f"{src}:5:3: warning: generator.weight_sync_backend: not mapped: a SkyRL generator "
        "setting with no SGLang server equivalent",
        f"{src}:7:15: warning: trainer.placement.colocate_all: not mapped: a trainer setting "
        "(only trainer.policy.model.path is read)",
        f"{src}:7:35: warning: trainer.placement.policy_num_gpus_per_node: not mapped: a trainer "
        "setting (only trainer.policy.model.path is read)",
        f"{src}:9:1: warning: environment: not mapped: not part of SkyRL's inference engines"]
    (m,) = plan.models
    assert m.model_path == "/models/policy"
    assert [list(e.argv).count("--disable-radix-cache") for e in m.engines] == [1, 1]


def test_skyrl_prefix_caching_on_is_sglangs_default(tmp_path):
    _, r, plan = _import_ok(tmp_path, "skyrl", """\
        generator: {backend: sglang, enable_prefix_caching: true}
        """, "--hf-checkpoint", "/m")
    assert r.stderr == ""
    assert "--disable-radix-cache" not in plan.models[0].engines[0].argv
    src = write_topo(tmp_path, "generator: {backend: sglang, enable_prefix_caching: maybe}\n")
    r = run_cli("import", "skyrl", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"{src}:1:53: generator.enable_prefix_caching: expected true or false, got 'maybe'"]


def test_rlinf_reports_every_field_it_does_not_map(tmp_path):
    src, r, plan = _import_ok(tmp_path, "rlinf", """\
        cluster:
          num_nodes: 2
          component_placement:
            actor: 0-7
            rollout: {node_group: gpus, placement: 0-3, accelerator_type: cuda}
          node_groups:
            - {label: gpus, node_ranks: 1, env_configs: {PYTHONPATH: /x}}
          hardware: {type: robot}
        runner: {max_epochs: 1}
        rollout_args:
          model_path: /m
          tensor_parallel_size: 2
          launch_server: False
          launch_router: False
          group_name: G
          sampling: {temperature: 1}
          server: {mem_fraction_static: 0.8}
          router: {policy: round_robin}
        """, "--args-key", "rollout_args")
    assert r.stderr.splitlines() == [
        f"{src}:4:5: warning: cluster.component_placement.actor: not mapped: another component "
        "(importing 'rollout')",
        f"{src}:5:49: warning: cluster.component_placement.rollout.accelerator_type: not mapped: "
        "not a placement field RLinf's launcher reads",
        f"{src}:7:36: warning: cluster.node_groups[0].env_configs: not mapped: node-group "
        "hardware/env settings are RLinf's",
        f"{src}:8:3: warning: cluster.hardware: not mapped: not a placement setting sgl-gen reads",
        f"{src}:9:1: warning: runner: not mapped: not part of the SGLang launcher config "
        "(rollout_args)",
        f"{src}:13:3: warning: rollout_args.launch_server: not mapped: sgl-gen always starts the "
        "engines",
        f"{src}:14:3: warning: rollout_args.launch_router: not mapped: sgl-gen always starts one "
        "router per model",
        f"{src}:15:3: warning: rollout_args.group_name: not mapped: a Ray worker-group name",
        f"{src}:16:3: warning: rollout_args.sampling: not mapped: not a launcher setting sgl-gen "
        "knows"]
    assert layout(plan) == {"rollout": ["regular tp2 1:0,1", "regular tp2 1:2,3"]}
    assert plan.models[0].router.policy == "round_robin"


@pytest.mark.parametrize("change,message", [
    (("  component_placement:\n    rollout: all # <-- the key \"rollout\" is arbitrary; see below\n",
      "  component_placement: 3\n"),
     "3:24: cluster.component_placement: expected a mapping of component names to placements"),
    (("  router: # forwarded as launch_router CLI flags\n", "  router: round_robin\n  x:\n"),
     "21:11: router_server_args.router: expected a mapping of launch_router arguments"),
    (("  num_nodes: 1\n", "  num_nodes: 1\n  node_groups: 3\n"),
     "3:16: cluster.node_groups: expected a list of {label, node_ranks}"),
    (("rollout: all", "rollout: {node_group: {a: 1}}"),
     "4:27: cluster.component_placement.rollout.node_group: expected a node-group label, got "
     "{'a': 1}"),
    (("rollout: all", "rollout: []"),
     "4:14: cluster.component_placement.rollout: cannot read placement [] (hint: 'all' or 'A-B')"),
])
def test_rlinf_malformed_sections_are_errors_not_tracebacks(tmp_path, change, message):
    assert change[0] in RLINF_SEED
    src, r = _rlinf(tmp_path, RLINF_SEED.replace(*change))
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines()[0] == f"{src}:{message}"
