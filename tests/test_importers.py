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
