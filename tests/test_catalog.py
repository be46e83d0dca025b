"""The ServerArgs catalog: extraction from the real sglang wheel, facts, argv round-trips.

The wheel comes from ``$SGLGEN_SGLANG_WHEEL``, else ``.cache/wheels/`` (where ``.ci/install.sh``
puts it), else it is downloaded there with ``pip download --no-deps sglang==0.5.23``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from generator.compile.catalog import (
    SUPPORTED_VERSIONS,
    ArgSpec,
    Catalog,
    catalog_path,
    did_you_mean,
    load_catalog,
)
from generator.devtools.extract_catalog import dumps, extract
from generator.rehearsal import build_parser

REPO = Path(__file__).resolve().parent.parent
VERSION = "0.5.23"
WHEEL_CACHE = REPO / ".cache" / "wheels"


@pytest.fixture(scope="session")
def sglang_wheel() -> Path:
    """The sglang 0.5.23 wheel; fails (never skips) when it cannot be obtained."""
    env = os.environ.get("SGLGEN_SGLANG_WHEEL", "").strip()
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"SGLGEN_SGLANG_WHEEL={env} does not exist")
        return path
    found = sorted(WHEEL_CACHE.glob(f"sglang-{VERSION}-*.whl"))
    if found:
        return found[0]
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
           "--no-deps", f"sglang=={VERSION}", "-d", str(WHEEL_CACHE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out: {' '.join(cmd)}")
    found = sorted(WHEEL_CACHE.glob(f"sglang-{VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        pytest.fail(f"cannot obtain the sglang {VERSION} wheel: {' '.join(cmd)} exited "
                    f"{proc.returncode}\n{proc.stderr}\nSet SGLGEN_SGLANG_WHEEL=/path/to/wheel.")
    return found[0]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(VERSION)


# -- (a) the committed catalog is exactly what the wheel yields ---------------------------------


def test_committed_catalog_matches_fresh_extraction(sglang_wheel: Path) -> None:
    committed = catalog_path(VERSION).read_text(encoding="utf-8")
    fresh = dumps(extract(sglang_wheel))
    assert fresh == committed, (
        "schemas/sglang-0.5.23.json is stale; refresh it with:\n"
        f"  python -m generator.devtools.extract_catalog {sglang_wheel} -o schemas/sglang-{VERSION}.json")


def test_extract_cli_writes_the_catalog(sglang_wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    proc = subprocess.run([sys.executable, "-m", "generator.devtools.extract_catalog",
                           str(sglang_wheel), "-o", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == catalog_path(VERSION).read_bytes()


def test_catalog_document_shape(catalog: Catalog) -> None:
    doc = json.loads(catalog_path(VERSION).read_text(encoding="utf-8"))
    assert {k: doc[k] for k in ("format", "package", "version")} == {
        "format": 1, "package": "sglang", "version": VERSION}
    assert doc["wheel"].startswith(f"sglang-{VERSION}-") and doc["wheel"].endswith(".whl")
    names = [a["name"] for a in doc["args"]]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert VERSION in SUPPORTED_VERSIONS
    assert catalog.names == tuple(names)


# -- (b) facts about sglang 0.5.23 ----------------------------------------------------------------


def test_flag_count_is_plausible(catalog: Catalog) -> None:
    assert 450 <= len(catalog.names) <= 700


@pytest.mark.parametrize(("key", "kind", "type_", "default"), [
    ("tp_size", "value", "int", 1),
    ("pp_size", "value", "int", 1),
    ("dp_size", "value", "int", 1),
    ("attn_dp_size", "value", "int", 1),
    ("ep_size", "value", "int", 1),
    ("mem_fraction_static", "value", "float", None),
    ("enable_torch_compile", "store_true", "bool", False),
    ("enable_dp_attention", "store_true", "bool", False),  # deprecated, still accepted
    ("host", "value", "str", "127.0.0.1"),
    ("port", "value", "int", 30000),
    ("nccl_port", "value", "int", None),
    ("dist_init_addr", "value", "str", None),
    ("disaggregation_bootstrap_port", "value", "int", 8998),
    ("engine_info_bootstrap_port", "value", "int", 6789),
    ("encoder_only", "store_true", "bool", False),
    ("language_only", "store_true", "bool", False),
    ("mm_enable_dp_encoder", "boolean_optional", "bool", None),
    ("cuda_graph_config", "value", "json", None),
])
def test_spot_facts(catalog: Catalog, key: str, kind: str, type_: str, default: Any) -> None:
    spec = catalog.get(key)
    assert spec is not None, key
    assert (spec.kind, spec.type, spec.default) == (kind, type_, default)


def test_choices_and_lists(catalog: Catalog) -> None:
    mode = catalog.get("disaggregation_mode")
    assert mode is not None and mode.choices == ("null", "prefill", "decode")
    assert mode.default == "null"
    backend = catalog.get("disaggregation_transfer_backend")
    assert backend is not None and backend.default == "mooncake"
    assert backend.choices is not None
    assert {"mooncake", "nixl", "mooncake_tcp"} <= set(backend.choices)
    urls = catalog.get("encoder_urls")
    assert urls is not None and (urls.nargs, urls.type, urls.default) == ("+", "str", [])
    reasoning = catalog.get("reasoning_parser")  # a manual add_argument with computed choices
    assert reasoning is not None and reasoning.choices is not None
    assert {"auto", "deepseek-r1", "qwen3"} <= set(reasoning.choices)


def test_model_path_is_required_with_alias(catalog: Catalog) -> None:
    spec = catalog.get("--model")
    assert spec is not None and spec.name == "model_path" and spec.required
    assert spec.flags == ("--model-path", "--model")


@pytest.mark.parametrize(("key", "name"), [
    ("--tensor-parallel-size", "tp_size"), ("tensor-parallel-size", "tp_size"),
    ("tensor_parallel_size", "tp_size"), ("--tp-size", "tp_size"), ("tp-size", "tp_size"),
    ("--ep", "ep_size"), ("expert_parallel_size", "ep_size"),
    ("nccl_init_addr", "dist_init_addr"), ("--data-parallel-size", "dp_size"),
    ("--fp8-gemm-backend", "fp8_gemm_runner_backend"),  # cli_name differs from the field
    ("fp8_gemm_runner_backend", "fp8_gemm_runner_backend"),
    ("--monokernel-backend", "monokernel_backend"),  # writes enable_amd_monokernel's dest
    ("enable_amd_monokernel", "enable_amd_monokernel"),
])
def test_aliases_resolve(catalog: Catalog, key: str, name: str) -> None:
    spec = catalog.get(key)
    assert spec is not None and spec.name == name


def test_unknown_keys_and_did_you_mean(catalog: Catalog) -> None:
    assert catalog.get("tp_sise") is None and "tp_sise" not in catalog
    assert did_you_mean("tp_sise", catalog.names) == "did you mean 'tp_size'?"
    assert did_you_mean("mem-fraction-statik", catalog.names) == \
        "did you mean 'mem_fraction_static'?"
    assert did_you_mean("zzzzzz", catalog.names) is None


# -- (c) to_argv -> build_parser().parse_args round-trips -----------------------------------------


def _sample(spec: ArgSpec) -> Any:
    """A non-default value of the right shape for any catalog entry."""
    if spec.kind == "store_true":
        return True
    if spec.kind == "boolean_optional":
        return False
    if spec.choices:
        scalar: Any = [c for c in spec.choices if c is not None][-1]
    elif spec.parser == "parse_cuda_graph_config_arg":
        scalar = {"decode": {"backend": "breakable"}}
    elif spec.type == "json":
        scalar = {"b": [1, 2], "a": "x y"}
    elif spec.type == "int":
        scalar = 7
    elif spec.type == "float":
        scalar = 0.25
    else:
        scalar = "some value"
    if spec.nargs in ("+", "*"):
        second = 9 if spec.type == "int" else 0.5 if spec.type == "float" else scalar
        return [scalar, second]
    return scalar


def _roundtrip(catalog: Catalog, name: str, value: Any) -> Any:
    spec = catalog.get(name)
    assert spec is not None
    assert spec.check_value(value) is None
    argv = spec.to_argv(value)
    if spec.name != "model_path":
        argv = ["--model-path", "m", *argv]
    return vars(build_parser(dict(catalog.document)).parse_args(argv))[spec.name]


def test_every_flag_roundtrips(catalog: Catalog) -> None:
    parser = build_parser(dict(catalog.document))
    for spec in catalog.args:
        value = _sample(spec)
        argv = spec.to_argv(value)
        if spec.name != "model_path":
            argv = ["--model-path", "m", *argv]
        parsed = vars(parser.parse_args(argv))[spec.name]
        assert parsed == value, (spec.name, argv, parsed)


@pytest.mark.parametrize(("name", "value", "argv", "parsed"), [
    ("tp_size", 4, ["--tp-size", "4"], 4),
    ("mem_fraction_static", 0.1 + 0.2, ["--mem-fraction-static", "0.30000000000000004"],
     0.30000000000000004),
    ("mem_fraction_static", 1, ["--mem-fraction-static", "1"], 1.0),
    ("enable_torch_compile", True, ["--enable-torch-compile"], True),
    ("enable_torch_compile", False, [], False),
    ("mm_enable_dp_encoder", True, ["--mm-enable-dp-encoder"], True),
    ("mm_enable_dp_encoder", False, ["--no-mm-enable-dp-encoder"], False),
    ("disaggregation_mode", "prefill", ["--disaggregation-mode", "prefill"], "prefill"),
    ("encoder_urls", ["http://a:1", "http://b:2"],
     ["--encoder-urls", "http://a:1", "http://b:2"], ["http://a:1", "http://b:2"]),
    ("cuda_graph_bs_decode", [1, 2, 4], ["--cuda-graph-bs-decode", "1", "2", "4"], [1, 2, 4]),
    ("json_model_override_args", '{"a": 1}', ["--json-model-override-args", '{"a": 1}'],
     '{"a": 1}'),
    ("default_chat_template_kwargs", {"z": 1, "a": {"b": True}},
     ["--default-chat-template-kwargs", '{"a":{"b":true},"z":1}'], {"z": 1, "a": {"b": True}}),
    ("chunked_prefill_size", -1, ["--chunked-prefill-size", "-1"], -1),
    ("max_total_tokens", "8k", ["--max-total-tokens", "8k"], 8000),  # human_readable_int
    ("served_model_name", "-odd", ["--served-model-name=-odd"], "-odd"),
    ("model_checksum", True, ["--model-checksum"], ""),  # nargs="?": bare flag stores const
    ("model_path", "/models/Qwen 3", ["--model-path", "/models/Qwen 3"], "/models/Qwen 3"),
    ("dist_init_addr", "10.0.0.1:5000", ["--dist-init-addr", "10.0.0.1:5000"], "10.0.0.1:5000"),
])
def test_representative_argv(catalog: Catalog, name: str, value: Any, argv: list[str],
                             parsed: Any) -> None:
    spec = catalog.get(name)
    assert spec is not None
    assert spec.to_argv(value) == argv
    assert _roundtrip(catalog, name, value) == parsed


def test_none_leaves_flag_unset(catalog: Catalog) -> None:
    for name in ("tp_size", "enable_torch_compile", "encoder_urls", "mm_enable_dp_encoder"):
        spec = catalog.get(name)
        assert spec is not None and spec.check_value(None) is None and spec.to_argv(None) == []


def test_parser_rejects_what_sglang_rejects(catalog: Catalog) -> None:
    parser = build_parser(dict(catalog.document))
    for argv in (["--model-path", "m", "--tp-size", "two"],
                 ["--model-path", "m", "--disaggregation-mode", "both"],
                 ["--model-path", "m", "--no-such-flag"],
                 ["--model-path", "m", "--enable-torch-compile=1"],
                 ["--tp-size", "1"]):  # --model-path is required
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2, argv


# -- (d) check_value rejections ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "message"), [
    ("tp_size", "2", "--tp-size: expected an integer, got str '2'"),
    ("tp_size", True, "--tp-size: expected an integer, got bool true"),
    ("tp_size", 2.0, "--tp-size: expected an integer, got float 2.0"),
    ("mem_fraction_static", "0.8", "--mem-fraction-static: expected a number, got str '0.8'"),
    ("enable_torch_compile", "yes",
     "--enable-torch-compile is a boolean flag: expected true or false, got str 'yes'"),
    ("enable_torch_compile", 1,
     "--enable-torch-compile is a boolean flag: expected true or false, got int 1"),
    ("disaggregation_mode", "prefil",
     "--disaggregation-mode: 'prefil' is not one of: null, prefill, decode"),
    ("encoder_urls", "http://a:1", "--encoder-urls takes a list, got str 'http://a:1'"),
    ("encoder_urls", [], "--encoder-urls takes a non-empty list"),
    ("cuda_graph_bs_decode", [1, "x"],
     "--cuda-graph-bs-decode[1]: expected an integer, got str 'x'"),
    ("served_model_name", 2024, "--served-model-name: expected a string, got int 2024 "
                                "(quote it in YAML)"),
    ("served_model_name", {"a": 1}, "--served-model-name: expected a string, got a mapping"),
    ("cuda_graph_config", 3, "--cuda-graph-config: expected a mapping or a list, got int 3"),
    ("cuda_graph_config", "{nope", "--cuda-graph-config: expected a mapping, a list or a JSON "
                                   "string, got invalid JSON '{nope'"),
    ("max_total_tokens", "lots", "--max-total-tokens: expected an integer, got str 'lots'"),
])
def test_check_value_rejections(catalog: Catalog, name: str, value: Any, message: str) -> None:
    spec = catalog.get(name)
    assert spec is not None
    assert spec.check_value(value) == message
    with pytest.raises(ValueError, match="expected|not one of|takes"):
        spec.to_argv(value)


# -- (e) agreement with SGLang's own parser -------------------------------------------------------

# Builds SGLang's real parser (ServerArgs.add_cli_args) from the extracted wheel source, with every
# heavy import (torch, CUDA kernels, runtime) replaced by a stub; then prints its actions and the
# parse of each argv read from stdin. Only the argparse layer runs; that is what the catalog models.
_REAL_PARSER = r'''
import ast, importlib.abc, importlib.util, json, os, sys, types
ROOT = sys.argv[1]
REAL = {"sglang.srt.arg_groups.arg_utils", "sglang.srt.arg_groups.argparse_actions",
        "sglang.srt.arg_groups.choices", "sglang.srt.arg_groups.field_order",
        "sglang.srt.arg_groups.fields", "sglang.srt.model_executor.cuda_graph_config",
        "sglang.srt.parser.reasoning_parser_names", "sglang.srt.function_call.parser_names",
        "sglang.kernels.ops.kv_canary.consts", "sglang.srt.server_args"}
PARTIAL = {"sglang.srt.utils.common": {"nullable_str", "human_readable_int", "json_list_type",
                                       "LORA_TARGET_ALL_MODULES", "SUPPORTED_LORA_TARGET_MODULES"}}

class Stub:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return Stub()
    def __getattr__(self, n): return Stub()
    def __bool__(self): return False  # e.g. envs.SGLANG_KV_CANARY_ENABLE_TOKEN_ORACLE.get()
    def __iter__(self): return iter(())
    def __mro_entries__(self, bases): return (object,)

class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "sglang" or name.startswith("sglang."):
            return importlib.util.spec_from_loader(name, self, is_package=True)
    def create_module(self, spec):
        return None
    def exec_module(self, mod):
        name = mod.__name__
        base = os.path.join(ROOT, *name.split("."))
        mod.__path__ = [base]
        if name in REAL or name.startswith("sglang.srt.arg_groups.fields."):
            f = base + ".py" if os.path.exists(base + ".py") else os.path.join(base, "__init__.py")
            exec(compile(open(f).read(), f, "exec"), mod.__dict__)
        elif name in PARTIAL:
            f = base + ".py"
            body = ast.parse("import re, json, argparse, orjson\n"
                             "from decimal import Decimal\n").body
            for n in ast.parse(open(f).read()).body:
                tgt = getattr(n, "name", None)
                if isinstance(n, (ast.Assign, ast.AnnAssign)):
                    t = n.targets[0] if isinstance(n, ast.Assign) else n.target
                    tgt = getattr(t, "id", None)
                if tgt in PARTIAL[name]:
                    body.append(n)
            exec(compile(ast.Module(body, []), f, "exec"), mod.__dict__)
        elif name == "sglang.srt.lora.lora_registry":
            mod.LoRARef = type("LoRARef", (), {})
        else:
            mod.__getattr__ = lambda n: Stub()

sys.modules["orjson"] = types.SimpleNamespace(loads=json.loads)
sys.meta_path.insert(0, Finder())
import argparse
from sglang.srt.server_args import ServerArgs
parser = argparse.ArgumentParser(prog="sglang serve")
ServerArgs.add_cli_args(parser)

def plain(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)

actions = [{"dest": a.dest, "flags": list(a.option_strings), "cls": type(a).__name__,
            "type": getattr(a.type, "__name__", None), "nargs": a.nargs,
            "choices": plain(list(a.choices) if isinstance(a.choices, (list, tuple))
                             else a.choices),
            "const": plain(a.const), "default": plain(a.default), "required": a.required,
            "help": a.help}
           for a in parser._actions if a.option_strings and a.dest != "help"]
parses = []
for argv in json.load(sys.stdin):
    try:
        parses.append({k: plain(v) for k, v in vars(parser.parse_args(argv)).items()})
    except SystemExit as exc:
        parses.append({"exit": exc.code})
json.dump({"actions": actions, "parses": parses}, sys.stdout)
'''

_EXTRACT = ("sglang/srt/arg_groups/", "sglang/srt/server_args.py", "sglang/srt/utils/common.py",
            "sglang/srt/model_executor/cuda_graph_config.py",
            "sglang/srt/parser/reasoning_parser_names.py",
            "sglang/srt/function_call/parser_names.py", "sglang/kernels/ops/kv_canary/consts.py")


def test_catalog_agrees_with_sglangs_own_parser(sglang_wheel: Path, tmp_path: Path,
                                                catalog: Catalog) -> None:
    pytest.importorskip("msgspec", reason="SGLang's parser needs msgspec (pip install msgspec)")
    with zipfile.ZipFile(sglang_wheel) as zf:
        zf.extractall(tmp_path, [n for n in zf.namelist() if n.startswith(_EXTRACT)])
    samples = [spec for spec in catalog.args if spec.name != "model_path"]
    argvs = [["--model-path", "m", *spec.to_argv(_sample(spec))] for spec in samples]
    proc = subprocess.run([sys.executable, "-c", _REAL_PARSER, str(tmp_path)],
                          input=json.dumps(argvs), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = json.loads(proc.stdout)

    # Same option strings, dests, actions, nargs, choices, defaults, help.
    kinds = {"_StoreTrueAction": "store_true", "DeprecatedStoreTrueAction": "store_true",
             "BooleanOptionalAction": "boolean_optional"}
    assert len(real["actions"]) == len(catalog.args)
    for act in real["actions"]:
        spec = catalog.get(act["flags"][0])
        assert spec is not None, act["flags"]
        flags = [f for f in act["flags"] if not (spec.kind == "boolean_optional"
                                                 and f.startswith("--no-"))]
        assert list(spec.flags) == flags
        assert (spec.dest, spec.kind, spec.default, spec.required, spec.help) == (
            act["dest"], kinds.get(act["cls"], "value"), act["default"], act["required"],
            act["help"]), act["flags"]
        if spec.kind == "value":
            choices = act["choices"]
            if spec.choices is not None and isinstance(choices, list):
                assert sorted(map(repr, spec.choices)) == sorted(map(repr, choices))
            else:
                assert spec.choices is None and choices is None
            assert (spec.nargs, spec.const) == (act["nargs"], act["const"]), act["flags"]

    # The rehearsal parser reads every sample argv back to what SGLang's parser reads.
    mine = build_parser(dict(catalog.document))
    for spec, argv, theirs in zip(samples, argvs, real["parses"], strict=True):
        assert "exit" not in theirs, (argv, theirs)
        ours = vars(mine.parse_args(argv))[spec.name]
        if spec.action == "DeprecatedStoreConstAction":  # stores its const into another dest
            assert theirs[spec.dest] is True
        elif spec.action == "LoRAPathAction":
            assert theirs[spec.dest] == ours
        else:
            assert theirs[spec.dest] == ours, argv
