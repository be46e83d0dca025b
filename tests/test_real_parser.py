"""Every engine argv sgl-gen renders (every rank of every example, and of random valid
topologies) through SGLang 0.5.23's own ``prepare_server_args`` and ``ServerArgs.resolve_once()``,
and every router argv through the real sglang-router / smg parser and ``_validate_router_args()``:
the catalog's parser (generator/compile/catalog.py) is a replica, and this keeps it honest.

Each SGLang version of the catalog runs in its own virtualenv (``$SGLGEN_SGLANG_VENVS/<version>``,
built by .ci/sglang-venv.sh from .ci/sglang-parser-<version>.txt) with torch replaced by
tests/realsglang/standin.py (an 8 x H100 machine that computes nothing) and
tests/standins/nvidia-smi on PATH; ``--model-path`` points at stand-in model configs
(tests/data/model-configs) chosen by the model's name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from generator.compile.catalog import SUPPORTED_VERSIONS, catalog_path
from generator.compile.loader import SourceMap
from generator.compile.pipeline import compile_plan
from generator.compile.place import place
from generator.compile.resolve import resolve
from generator.compile.routers import EnvRef
from generator.errors import TopologyError
from tests.helpers import EXAMPLES, REPO, plan_of
from tests.test_properties import topologies
from tests.tools import missing, need_python

CHECKS = REPO / "tests" / "realsglang"
CONFIGS = REPO / "tests" / "data" / "model-configs"
STANDINS = REPO / "tests" / "standins"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))
OLD = "0.4.10.post2"


def sglang_python(version: str) -> str:
    root = os.environ.get("SGLGEN_SGLANG_VENVS", "")
    py = Path(root) / version / "bin" / "python"
    if not root or not os.access(py, os.X_OK):
        missing(f"sglang {version}'s parser: set SGLGEN_SGLANG_VENVS to the root of "
                "`bash .ci/sglang-venv.sh VERSION ROOT`")
    return str(py)


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{STANDINS}:{os.environ['PATH']}"}


def model_config(model_path: str) -> Path:
    """The stand-in config directory for a model, by its name (Qwen3-8B when nothing fits)."""
    name = Path(model_path).name.lower()
    for key, folder in (("-vl", "qwen2.5-vl-7b"), ("a3b", "qwen3-30b-a3b"),
                        ("deepseek", "deepseek-v3"), ("qwen2.5-7b", "qwen2.5-7b"),
                        ("32b", "qwen3-32b")):
        if key in name:
            return CONFIGS / folder
    return CONFIGS / "qwen3-8b"


def _token(t: Any) -> str:
    return "test-secret-value" if isinstance(t, EnvRef) else str(t)


def engine_cases(plan: Any, label: str) -> list[dict[str, Any]]:
    cases = []
    for m in plan.models:
        for e in m.engines:
            for p in e.placements:
                argv = [_token(t) for t in p.argv]
                i = argv.index("--model-path")
                argv[i + 1] = str(model_config(argv[i + 1]))
                cases.append({"id": f"{label}/{e.id}/rank{p.node_rank}", "argv": argv,
                              "want": {"port": e.port, "tp_size": e.tp_size,
                                       "pp_size": e.pp_size, "nnodes": e.nnodes,
                                       "node_rank": p.node_rank,
                                       "host": p.address}})
    return cases


def run_engines(cases: list[dict[str, Any]], version: str = "0.5.23"
                ) -> dict[str, dict[str, Any]]:
    r = subprocess.run([sglang_python(version), str(CHECKS / "check_engines.py")],
                       capture_output=True, text=True, env=_env(),
                       input=json.dumps([{"id": c["id"], "argv": c["argv"]} for c in cases]),
                       timeout=600, cwd=CHECKS)
    assert r.returncode == 0, r.stderr[-4000:]
    return {x["id"]: x for x in json.loads(r.stdout)}


def assert_all_pass(cases: list[dict[str, Any]], version: str = "0.5.23") -> None:
    results = run_engines(cases, version)
    bad = {k: v["error"] for k, v in results.items() if v["stage"] != "ok"}
    assert not bad, json.dumps(bad, indent=1)
    for c in cases:
        got = results[c["id"]]["resolved"]
        for key, want in c["want"].items():
            assert got[key] == want, (c["id"], key, got[key], want)


def test_every_example_engine_argv_passes_sglangs_own_parser_and_resolution():
    cases = [c for ex in ALL_EXAMPLES for c in engine_cases(compile_plan(ex), ex.stem)]
    assert len(cases) >= 150
    assert {c["argv"][c["argv"].index("--model-path") + 1] for c in cases} == {
        str(p) for p in CONFIGS.iterdir()}, "every stand-in model config is exercised"
    assert_all_pass(cases)


def test_examples_on_the_older_sglang_pass_its_own_parser():
    """The examples rendered for SGLang 0.4.10.post2 (deployment.sglang_version): what that
    release's own parser accepts; those it cannot serve are refused naming the version."""
    cases, refused = [], {}
    for ex in ALL_EXAMPLES:
        try:
            plan = plan_of(ex, f"deployment.sglang_version={OLD}")
        except TopologyError as exc:
            refused[ex.stem] = str(exc)
            continue
        cases += engine_cases(plan, ex.stem)
    assert len(cases) >= 100 and len(refused) <= 8, sorted(refused)
    for name, text in refused.items():
        assert f"sglang {OLD}" in text, (name, text)
    assert not any("--engine-info-bootstrap-port" in c["argv"] for c in cases)
    assert_all_pass(cases, OLD)


def _random_topologies(n: int) -> list[dict[str, Any]]:
    drawn: list[dict[str, Any]] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(topologies())
    def draw(data: dict[str, Any]) -> None:
        drawn.append(data)

    draw()
    return drawn


#: flags whose values differ between engines of one shape (where they listen)
_WHERE = ("--host", "--port", "--nccl-port", "--engine-info-bootstrap-port",
          "--disaggregation-bootstrap-port", "--dist-init-addr")


def _shape(argv: list[str]) -> tuple[str, ...]:
    return tuple("*" if i and argv[i - 1] in _WHERE else a for i, a in enumerate(argv))


def test_random_topologies_engine_argv_pass_sglangs_own_parser_and_resolution():
    """100 random valid topologies (the property tests' strategy, derandomized): ~1,300 argvs,
    one of each of their ~30 shapes (the same flags but for where it listens) through each
    version."""
    cases, shapes = [], set()
    for i, data in enumerate(_random_topologies(100)):
        plan = place(resolve(data, SourceMap("prop.yaml")))
        for c in engine_cases(plan, f"random{i}"):
            if _shape(c["argv"]) not in shapes:
                shapes.add(_shape(c["argv"]))
                cases.append(c)
    assert len(cases) >= 20
    for version in SUPPORTED_VERSIONS:
        assert_all_pass(cases if version != OLD else [
            dict(c, argv=_without(c["argv"], "--engine-info-bootstrap-port")) for c in cases],
            version)


def _without(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return argv
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


def _live_catalog(version: str) -> dict[str, Any]:
    r = subprocess.run([sglang_python(version), str(CHECKS / "dump_catalog.py")],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout)


def test_the_static_catalog_matches_sglangs_live_parser():
    """schemas/sglang-0.5.23.json is read from the wheel without importing it
    (generator/devtools/extract_catalog.py); the parser SGLang builds for real has the same
    flags, kinds, choices and defaults."""
    live = {(a["dest"], tuple(a["flags"])): a for a in _live_catalog("0.5.23")["args"]}
    static = {(a["dest"], tuple(a["flags"])): a
              for a in json.loads(catalog_path("0.5.23").read_text())["args"]}
    assert set(live) == set(static) and len(live) > 500
    for key, a in live.items():
        b = static[key]
        assert (a["kind"], a["name"]) == (b["kind"], b["name"]), key
        assert (sorted(map(str, a["choices"])) if a["choices"] else a["choices"]) == (
            sorted(map(str, b["choices"])) if b["choices"] else b["choices"]), key
        assert a["default"] == b["default"], key
        # the live dump says "str" for a converter it cannot name (json, human-readable ints)
        assert a["type"] in (b["type"], "str"), key


def test_every_dumped_catalog_is_what_its_live_parser_says():
    """A catalog made by `make sglang-catalog` is reproducible from its version's parser."""
    dumped = [v for v in SUPPORTED_VERSIONS if v != "0.5.23"]
    assert dumped == [OLD]
    for version in dumped:
        assert _live_catalog(version) == json.loads(catalog_path(version).read_text())


BROKEN = {
    # a choice SGLang does not have: its argparse refuses it
    "bad-choice": (["--attention-backend", "no-such-backend"], "parse", "invalid choice"),
    # a pair SGLang's resolution refuses
    "conflict": (["--encoder-only", "--language-only"], "resolve",
                 "Cannot set --encoder-only and --language-only together"),
    # encoder disaggregation on a text-only architecture
    "encoder-on-text": (["--encoder-only"], "resolve", "not supported for encoder disaggreg"),
    "prefill-fake": (["--disaggregation-mode", "prefill", "--disaggregation-transfer-backend",
                      "fake"], "resolve", "does not support 'fake'"),
}


def test_a_hand_broken_argv_fails_the_same_check():
    """Each broken argv (one SGLang run for all of them) fails where SGLang says it does, and
    assert_all_pass, the check every rendered argv goes through, fails on it."""
    plan = compile_plan(EXAMPLES / "basic.yaml")
    case = engine_cases(plan, "basic")[0]
    broken = [dict(case, id=name, argv=case["argv"] + extra)
              for name, (extra, _, _) in sorted(BROKEN.items())]
    got = run_engines([case, *broken])
    assert got[case["id"]]["stage"] == "ok"
    for name, (_, stage, message) in BROKEN.items():
        assert got[name]["stage"] == stage and message in got[name]["error"], got[name]
    with pytest.raises(AssertionError):
        assert_all_pass(broken[:1])


# -- routers ----------------------------------------------------------------------------------


def _router_python(impl: str) -> tuple[str, str]:
    if impl == "smg":
        return need_python("SGLGEN_SMG_PYTHON", "smg==1.13.0"), "smg"
    return sys.executable, "sglang_router"


def run_routers(impl: str, cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    py, package = _router_python(impl)
    r = subprocess.run([py, str(CHECKS / "check_routers.py"), package], capture_output=True,
                       text=True, input=json.dumps(cases), timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return {x["id"]: x for x in json.loads(r.stdout)}


def _router_cases() -> dict[str, list[dict[str, Any]]]:
    by_impl: dict[str, list[dict[str, Any]]] = {}
    for ex in ALL_EXAMPLES:
        for m in compile_plan(ex).models:
            by_impl.setdefault(m.router.implementation, []).append(
                {"id": f"{ex.stem}/{m.name}", "argv": [_token(t) for t in m.router.argv]})
    return by_impl


def test_every_router_argv_passes_the_routers_own_parser_and_validation():
    by_impl = _router_cases()
    assert set(by_impl) == {"sglang-router", "smg"}
    for impl, cases in by_impl.items():
        got = run_routers(impl, cases)
        bad = {k: v["error"] or v["warnings"] for k, v in got.items()
               if v["stage"] != "ok" or v["warnings"]}
        assert not bad, (impl, bad)
        assert len(got) == len(cases)


PD = ["--pd-disaggregation", "--decode", "http://127.0.0.1:1"]


@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_a_hand_broken_router_argv_fails(impl):
    case = _router_cases()[impl][0]
    got = run_routers(impl, [
        case,
        {"id": "bad-policy", "argv": case["argv"] + ["--policy", "no-such-policy"]},
        {"id": "bad-bootstrap", "argv": PD + ["--prefill", "http://127.0.0.1:2", "abc"]},
        # a policy PD mode ignores: the router's validation says so (and starts anyway)
        {"id": "ignored-policy", "argv": PD + ["--policy", "round_robin", "--prefill-policy",
                                               "random", "--decode-policy", "random"]},
    ])
    assert got[case["id"]] == {"id": case["id"], "stage": "ok", "error": None, "warnings": []}
    assert got["bad-policy"]["stage"] == "parse" and "invalid choice" in got["bad-policy"]["error"]
    assert got["bad-bootstrap"]["stage"] == "parse"
    assert "Invalid bootstrap port: abc" in got["bad-bootstrap"]["error"]
    assert got["ignored-policy"]["stage"] == "ok"
    assert any("will be ignored" in w for w in got["ignored-policy"]["warnings"]), got


#: argument and model errors SGLang 0.5.23's parser and resolution let through (the engine
#: fails later, loading weights or on its first request): sgl-gen refuses each at validate time
#: (tests/test_modelcheck.py). If SGLang starts catching one, this says so.
MISSED = {
    "tp-vs-heads": ("qwen2.5-7b", ["--tp-size", "8"]),
    "ep-vs-experts": ("qwen3-30b-a3b", ["--tp-size", "8", "--ep-size", "6"]),
    "pp-vs-layers": ("qwen3-8b", ["--pp-size", "64"]),
    "mem-fraction": ("qwen3-8b", ["--mem-fraction-static", "1.5"]),
    "eagle-no-draft": ("qwen3-8b", ["--speculative-algorithm", "EAGLE"]),
    "pp-with-attn-dp": ("qwen3-8b", ["--tp-size", "2", "--pp-size", "2", "--attn-dp-size", "2"]),
}


def test_what_sglangs_own_checks_let_through():
    cases = [{"id": k, "argv": ["--model-path", str(CONFIGS / cfg), *extra]}
             for k, (cfg, extra) in MISSED.items()]
    got = run_engines(cases)
    assert {k: v["stage"] for k, v in got.items()} == dict.fromkeys(MISSED, "ok"), got
