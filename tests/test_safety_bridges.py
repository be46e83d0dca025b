"""Issue 13, the bridges to other systems: importers never turn raw text into live topology keys,
the Slurm target keeps user values and unit names apart, the rehearsal engine guards its API key
as SGLang does (also behind the real sglang-router), and Slurm logs are private."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.compile.loader import load_file
from generator.compile.place import place
from generator.compile.resolve import resolve
from generator.errors import SglGenError, TopologyError
from generator.slurmjob import fill_addresses
from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import EXAMPLES, plan_of, run_cli, sbatch_job, sbatch_steps, write_topo
from tests.test_rehearsal import HOST, engine, free_port, spawn, wait_healthy, wait_until
from tests.test_slurm import _jobs as _slurm_jobs
from tests.test_slurm import cluster
from tests.tools import need_python, need_tool

__all__ = ["cluster", "engine", "spawn"]  # fixtures of tests/test_rehearsal.py, test_slurm.py

REPO = Path(__file__).resolve().parent.parent
#: every character YAML (or a terminal) reads as the end of a line, and other controls
BREAKS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1b"]
EVIL = "runtime: {python: /tmp/evil}"


def _yaml_escape(s: str) -> str:
    """``s`` as a double-quoted YAML scalar (escaped: the source file itself holds no raw
    control characters)."""
    return json.dumps(s, ensure_ascii=True)


def _assert_only_comments_and(text: str, data: dict) -> None:
    """Every header line is one comment however a reader splits lines, and the text says
    exactly what was meant: no key smuggled in."""
    loaded = yaml.safe_load(text)
    assert "runtime" not in loaded, text
    assert loaded == data
    header, _, _ = text.partition("\ndeployment:")
    for line in header.splitlines():  # str.splitlines() splits on U+2028, U+0085, \r, \x0b...
        assert line.startswith("#"), repr(line)
    assert not [ch for ch in text if ch != "\n" and (ord(ch) < 0x20 or ch in "\x7f\x85\u2028\u2029")]


@pytest.mark.parametrize("brk", BREAKS, ids=[f"U+{ord(b[0]):04X}" for b in BREAKS])
def test_skyrl_key_with_a_line_break_stays_in_its_comment(tmp_path, brk):
    key = f"notes{brk}{EVIL}{brk}#"
    src = write_topo(tmp_path, f"generator:\n  backend: sglang\n  {_yaml_escape(key)}: 1\n")
    r = run_cli("import", "skyrl", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 0, r.output
    _assert_only_comments_and(r.stdout, {
        "deployment": {"name": "topo", "hf_checkpoint": "/m"},
        "sglang": [{"name": "policy", "server_groups": [
            {"worker_type": "regular", "num_gpus": 1, "num_gpus_per_engine": 1}]}]})
    # the warning on stderr is one line too
    (warning,) = [ln for ln in r.stderr.split("\n") if ln]
    assert warning.endswith("not mapped: a SkyRL generator setting with no SGLang server "
                            "equivalent")


@pytest.mark.parametrize("brk", ["\n", "\r", "\u2028", "\u2029", "\x85"],
                         ids=["LF", "CR", "U+2028", "U+2029", "U+0085"])
@pytest.mark.parametrize("importer", ["slime", "roll", "skyrl", "rlinf"])
def test_a_source_file_name_with_a_line_break_stays_in_its_comment(tmp_path, importer, brk):
    texts = {
        "slime": (EXAMPLES / "sources" / "slime_sglang_pd.yaml").read_text(),
        "roll": (EXAMPLES / "sources" / "roll_rlvr_config_sglang.yaml").read_text(),
        "skyrl": "generator: {backend: sglang, top_p: 1.0}\n",
        "rlinf": (EXAMPLES / "sources" / "rlinf_sglang_server.yaml").read_text(),
    }
    folder = tmp_path / f"d{brk}runtime: {{env: {{X: y}}}}{brk}#"  # no '/' in a file name
    folder.mkdir()
    src = folder / "cfg.yaml"
    src.write_text(texts[importer])
    args = ["import", importer, str(src)] + ([] if importer == "rlinf" else ["--hf-checkpoint", "/m"])
    if importer == "slime":
        args += ["--rollout-num-gpus", "16"]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.stdout)
    assert "runtime" not in data
    _assert_only_comments_and(r.stdout, data)
    assert f"d\\{'n' if brk == chr(10) else 'r' if brk == chr(13) else ''}" in r.stdout \
        or f"\\u{ord(brk):04x}" in r.stdout or f"\\x{ord(brk):02x}" in r.stdout


@pytest.mark.parametrize("value", ["a\x85b", "a\u2028b", "a\x85b\u2028c\u2029d\re"])
def test_values_with_line_separators_read_back_exactly(tmp_path, value):
    # PyYAML folds a raw U+0085 into a space and writes U+2028 raw: the written file must say
    # exactly what the source said, escaped
    src = write_topo(tmp_path, f"""\
        sglang:
          - name: actor
            server_groups:
              - {{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 2,
                 overrides: {{chat_template: {_yaml_escape(value)}}}}}
        """)
    r = run_cli("import", "slime", str(src), "--hf-checkpoint", "/m")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.stdout)
    assert data["sglang"][0]["server_groups"][0]["overrides"]["chat_template"] == value
    _assert_only_comments_and(r.stdout, data)


def test_text_that_does_not_read_back_is_an_internal_error(monkeypatch):
    import generator.bridges.importers.common as common

    # a dumper that loses a character: the importer must refuse rather than write it
    monkeypatch.setattr(common, "dump", lambda data: yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True))
    with pytest.raises(SglGenError, match="internal error: the imported topology does not "
                                          "read back"):
        common.topology_text(["x"], {"sglang": [{"name": "a\x85b"}]})


# -- the rehearsal engine guards its API key as SGLang 0.5.23 does ---------------------------------

KEY = "sk-rehearse 'q' $x"  # spaces, quotes and a dollar: byte-exact or refused


def _get(url: str, key: str | None = None, method: str = "GET", body: Any = None
         ) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def test_engine_refuses_requests_without_its_api_key(engine, tmp_path):
    port = free_port()
    url = f"http://{HOST}:{port}"
    p = engine("auth0", port, "--api-key", KEY)
    wait_healthy(url, p)  # /health is exempt (k8s probes, routers' health checks)
    for path in ("/health", "/health_generate", "/ready", "/healthz-anything"):
        assert _get(url + path)[0] in (200, 404), path  # never 401: exempt by prefix
    assert _get(url + "/health")[0] == 200
    # every other endpoint: 401 without the key, with a wrong one, or a non-Bearer scheme
    for path, method in (("/server_info", "GET"), ("/get_server_info", "GET"),
                         ("/model_info", "GET"), ("/v1/models", "GET"), ("/v1/loads", "GET"),
                         ("/generate", "POST"), ("/v1/chat/completions", "POST"),
                         ("/flush_cache", "POST"), ("/no/such/route", "GET")):
        body = {"text": "hi"} if method == "POST" else None
        for key in (None, "wrong", KEY + " "):
            status, reply = _get(url + path, key, method, body)
            assert (status, reply["error"]) == (401, "Unauthorized"), (path, key, reply)
    status, _ = _get(url + "/server_info", None)
    req = urllib.request.Request(url + "/server_info", headers={"Authorization": f"Basic {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401
    # with the key: served; the scheme is case-insensitive as in SGLang
    status, info = _get(url + "/server_info", KEY)
    assert status == 200 and info["api_key"] == "<redacted>" and info["admin_api_key"] is None
    req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert _get(url + "/generate", KEY, "POST", {"text": "hi"})[0] == 200
    assert _get(url + "/flush_cache", KEY, "POST")[0] == 200
    p.stop()
    assert KEY not in p.text() and "sk-rehearse" not in p.text()


def test_admin_api_key_guards_admin_endpoints_as_sglang_does(engine):
    port = free_port()
    url = f"http://{HOST}:{port}"
    # admin key only: NORMAL endpoints are open, ADMIN_OPTIONAL ones (/flush_cache) need it
    p = engine("adm0", port, "--admin-api-key", "ADMKEY-7")
    wait_healthy(url, p)
    assert _get(url + "/generate", None, "POST", {"text": "x"})[0] == 200
    assert _get(url + "/flush_cache", None, "POST")[0] == 401
    assert _get(url + "/flush_cache", "ADMKEY-7", "POST")[0] == 200
    status, info = _get(url + "/server_info")
    assert status == 200 and info["admin_api_key"] == "<redacted>"
    # both keys: /flush_cache takes the admin key only, the rest the api key only
    port2 = free_port()
    url2 = f"http://{HOST}:{port2}"
    p2 = engine("adm1", port2, "--admin-api-key", "ADMKEY-7", "--api-key", "USRKEY-9")
    wait_healthy(url2, p2)
    assert _get(url2 + "/flush_cache", "USRKEY-9", "POST")[0] == 401
    assert _get(url2 + "/flush_cache", "ADMKEY-7", "POST")[0] == 200
    assert _get(url2 + "/generate", "ADMKEY-7", "POST", {"text": "x"})[0] == 401
    assert _get(url2 + "/generate", "USRKEY-9", "POST", {"text": "x"})[0] == 200
    for proc in (p, p2):
        proc.stop()
        assert "ADMKEY" not in proc.text() and "USRKEY" not in proc.text()


def test_auth_decision_matches_sglangs_own_function():
    """Against sglang 0.5.23's decide_request_auth itself (sglang/srt/utils/auth.py, a module
    with no torch import), read from the wheel: every combination of keys, paths and headers."""
    import importlib.util
    import zipfile

    wheels = sorted((REPO / ".cache" / "wheels").glob("sglang-0.5.23-*.whl"))
    if not wheels:
        pytest.skip("the sglang 0.5.23 wheel is not in .cache/wheels")
    with zipfile.ZipFile(wheels[0]) as z:
        source = z.read("sglang/srt/utils/auth.py").decode()
    spec = importlib.util.spec_from_loader("sglang_auth_0_5_23", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module while the class is built
    try:
        exec(compile(source, "sglang/srt/utils/auth.py", "exec"), mod.__dict__)  # noqa: S102
    finally:
        del sys.modules[spec.name]
    from generator.rehearsal import ADMIN_OPTIONAL_PATHS, auth_status

    keys = (None, "", "k1", "k2")
    headers = (None, "", "Bearer k1", "bearer k2", "Bearer  k1", "Basic k1", "Bearer", "k1")
    paths = ("/health", "/health_generate", "/ready", "/metrics", "/generate", "/server_info",
             "/flush_cache", "/v1/models", "/nope")
    n = 0
    for method in ("GET", "POST", "OPTIONS"):
        for path in paths:
            level = mod.AuthLevel.ADMIN_OPTIONAL if path in ADMIN_OPTIONAL_PATHS \
                else mod.AuthLevel.NORMAL
            for api_key in keys:
                for admin in keys:
                    for header in headers:
                        want = mod.decide_request_auth(
                            method=method, path=path, authorization_header=header,
                            api_key=api_key, admin_api_key=admin, auth_level=level)
                        got = auth_status(method, path, header, api_key, admin)
                        assert got == (None if want.allowed else want.error_status_code), (
                            method, path, api_key, admin, header)
                        n += 1
    assert n == 3 * len(paths) * len(keys) ** 2 * len(headers)


def _wired(tmp_path: Path, spawn, router_args: str, secrets: dict[str, str],
           impl: str = "sglang-router") -> dict[str, Any]:
    """Render a one-engine topology with ``api_key: {env: ENGINE_KEY}`` (--local --rehearse),
    run its rendered engine and router scripts (the real sglang-router 0.3.2, or smg 1.13.0)
    with the secrets file; return the router URL and the engine's log."""
    if impl == "smg":
        python = need_python("SGLGEN_SMG_PYTHON", "smg==1.13.0")
    else:
        pytest.importorskip("sglang_router", reason="pip install sglang-router==0.3.2")
        python = sys.executable
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in secrets.items()))
    secrets_file.chmod(0o600)
    rport, pport, eport = free_port(), free_port(), free_port()
    topo = write_topo(tmp_path, f"""
        deployment: {{name: auth, hf_checkpoint: /models/m, num_gpus_per_engine: 1}}
        cluster: {{gpus_per_node: 1}}
        runtime: {{python: {python}, secrets_env_file: {secrets_file}}}
        router: {{implementation: {impl}, policy: round_robin, args: {router_args}}}
        defaults: {{api_key: {{env: ENGINE_KEY}}}}
        sglang:
          - name: m
            router: {{port: {rport}, prometheus_port: {pport}}}
            server_groups: [{{worker_type: regular, num_gpus: 1, port: {eport}}}]
        """)
    try:
        plan = plan_of(topo, local=True)
    except TopologyError as exc:
        # validation refuses a router that does not send its engines' key (generator/compile/authcheck.py);
        # these tests show against the real routers why: bypass the check to run it anyway
        assert re.search(r"require (an|the) API key( in)? \(?\$ENGINE_KEY", str(exc)), exc.lines()
        data, smap = load_file(topo)
        plan = place(resolve(data, smap, local=True))
    out = tmp_path / "out"
    write_tree(out, render(plan, ("bash",), rehearse=True))
    root = out / "hosts" / plan.nodes[0].host
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    env["SGLGEN_ROOT"] = str(root)
    eng = spawn(["bash", str(root / "bin" / "engine-m-regular-0.sh")], "engine", env)
    wait_healthy(f"http://{HOST}:{eport}", eng)
    router = spawn(["bash", str(root / "bin" / "router-m.sh")], "router", env)
    return {"router": f"http://{HOST}:{rport}", "router_proc": router, "engine_proc": eng,
            "engine_log": root / "logs" / "engine-m-regular-0.log",
            "router_log": root / "logs" / "router-m.log"}


def _workers(url: str, key: str | None) -> list[dict]:
    try:
        status, body = _get(f"{url}/workers", key)
    except OSError:
        return []
    return body.get("workers", []) if status == 200 and isinstance(body, dict) else []


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_router_with_the_engines_key_reaches_them_and_guards_itself(tmp_path, spawn, impl):
    run = _wired(tmp_path, spawn, "{api_key: {env: ENGINE_KEY}}", {"ENGINE_KEY": KEY}, impl)
    url = run["router"]
    wait_until(lambda: [w.get("is_healthy") for w in _workers(url, KEY)] == [True],
               "the router to list its engine", run["router_proc"])
    (worker,) = _workers(url, KEY)
    # the router read /server_info and /model_info with the key: it knows the model
    assert worker["model_id"] == "/models/m"
    status, reply = _get(f"{url}/generate", KEY, "POST", {"text": "hi"})
    assert status == 200 and reply["sgl_gen"]["engine_id"] == "m-regular-0"
    # sglang-router 0.3.2 with --api-key refuses clients without it (even GET /workers)
    assert _get(f"{url}/generate", None, "POST", {"text": "hi"})[0] == 401
    assert _get(f"{url}/generate", "wrong", "POST", {"text": "hi"})[0] == 401
    assert _get(f"{url}/workers")[0] == 401
    log = run["engine_log"].read_text()
    assert "refused GET /server_info" not in log and "sk-rehearse" not in log
    assert stat.S_IMODE(run["engine_log"].stat().st_mode) == 0o600


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_router_without_the_key_gets_401_from_its_engines(tmp_path, spawn, impl):
    run = _wired(tmp_path, spawn, "{}", {"ENGINE_KEY": KEY}, impl)
    url = run["router"]
    if impl == "smg":
        # smg 1.13.0 registers a worker only once its /v1/models answers: refused, the worker
        # is never listed and nothing is served, with or without the client's key
        wait_until(lambda: "refused GET /v1/models: HTTP 401" in run["engine_log"].read_text(),
                   "smg to ask the engine for its models", run["router_proc"])
        time.sleep(2)
        assert not [w for w in _workers(url, None) if w.get("is_healthy")]
        for key in (None, KEY):
            status, reply = _get(f"{url}/generate", key, "POST", {"text": "hi"})
            assert status != 200, reply
        return
    # /health is exempt, so the worker turns healthy; its /server_info and /model_info were
    # refused: the router never learns the model
    wait_until(lambda: [w.get("is_healthy") for w in _workers(url, None)] == [True],
               "the router to list its engine", run["router_proc"])
    (worker,) = _workers(url, None)
    assert worker["model_id"] == "unknown"
    assert "refused GET /server_info: HTTP 401" in run["engine_log"].read_text()
    status, reply = _get(f"{url}/generate", None, "POST", {"text": "hi"})
    assert status == 401, reply
    # (sglang-router 0.3.2 passes the client's Authorization header on to the worker)
    assert _get(f"{url}/generate", KEY, "POST", {"text": "hi"})[0] == 200


@pytest.mark.slow
def test_router_with_another_key_than_its_engines_fails(tmp_path, spawn):
    run = _wired(tmp_path, spawn, "{api_key: {env: ROUTER_KEY}}",
                 {"ENGINE_KEY": KEY, "ROUTER_KEY": "sk-router-other"})
    url = run["router"]
    wait_until(lambda: len(_workers(url, "sk-router-other")) == 1, "the router to list its engine",
               run["router_proc"])
    assert _workers(url, "sk-router-other")[0]["model_id"] == "unknown"
    assert _get(f"{url}/generate", "sk-router-other", "POST", {"text": "hi"})[0] == 401
    assert _get(f"{url}/generate", KEY, "POST", {"text": "hi"})[0] == 401  # the router's gate


# -- Slurm: distinct functions per unit, user values byte-exact, private logs ---------------------

SLURM_TOPO = f"""
deployment: {{name: clash, hf_checkpoint: /models/m}}
cluster:
  nodes: 3
  gpus_per_node: 8
  slurm: {{time: "00:30:00"}}
runtime: {{python: {sys.executable}}}
sglang:
  - name: a-b
    server_groups:
      - {{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 2,
          overrides: {{served_model_name: node0, tokenizer_path: "http://node0:1/x node1"}}}}
  - name: a_b
    server_groups:
      - {{worker_type: regular, num_gpus: 16, num_gpus_per_engine: 16,
          overrides: {{served_model_name: "node1:5"}}}}
"""
#: what each engine must receive, whatever the node addresses are at run time
SERVED = {"engine-a-b-regular-0": ("node0", "http://node0:1/x node1"),
          "engine-a_b-regular-0": ("node1:5", None)}


def _sbatch(tmp_path: Path) -> tuple[Any, str]:
    plan = plan_of(write_topo(tmp_path, SLURM_TOPO))
    text = render(plan, ("slurm",), rehearse=True)[f"slurm/{plan.name}.sbatch"].content
    return plan, text


def test_slurm_models_a_dash_b_and_a_underscore_b_get_their_own_functions(tmp_path):
    plan, text = _sbatch(tmp_path)
    steps = sbatch_steps(text)
    units = [u for u, _ in steps]
    assert sorted(units) == ["engine-a-b-regular-0", "engine-a_b-regular-0", "router-a-b",
                             "router-a_b"]
    funcs = [f for _, f in steps]
    assert len(set(funcs)) == 4, steps
    defined = re.findall(r"^(sgl_\w+)\(\) \{$", text, re.M)
    assert sorted(defined) == sorted(funcs)
    (exported,) = re.findall(r"^export -f (.*)$", text, re.M)
    assert sorted(exported.split()) == sorted(funcs)
    shellcheck = need_tool("shellcheck")
    sbatch = tmp_path / "job.sbatch"
    sbatch.write_text(text)
    r = subprocess.run([shellcheck, "--severity=style", str(sbatch)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout


def _run_functions(text: str, addrs: list[str]) -> dict[str, list[str]]:
    """Run every unit function of the sbatch with ``exec`` replaced by a printer: the argv each
    unit would start, as bash passes it (rank 0; ``SGL_ADDR_i`` set to ``addrs``)."""
    start = text.index("\nsgl_")
    end = text.index("\nexport -f ")
    funcs = text[start:end]
    steps = sbatch_steps(text)
    script = "\n".join([
        "set -euo pipefail",
        *(f"SGL_ADDR_{i}={shlex.quote(a)}" for i, a in enumerate(addrs)),
        "SLURM_PROCID=0 SGLGEN_LIB=/lib",
        "exec() { printf '%s\\0' \"$@\"; }",
        funcs,
        *(f"{f}; printf '\\1'" for _, f in steps),
    ])
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    chunks = out.decode().split("\x01")[:-1]
    return {u: c.split("\0")[:-1] for (u, _), c in zip(steps, chunks, strict=True)}


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_slurm_user_values_equal_to_a_node_address_stay_byte_exact(tmp_path):
    plan, text = _sbatch(tmp_path)
    assert {n.address for n in plan.nodes} >= {"node0", "node1"}
    addrs = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
    argv = _run_functions(text, addrs)
    for unit, (served, tokenizer) in SERVED.items():
        assert _flag(argv[unit], "--served-model-name") == served
        assert _flag(argv[unit], "--tokenizer-path") == tokenizer
    # what sgl-gen wrote with a node address becomes the run-time address
    assert _flag(argv["engine-a-b-regular-0"], "--host") == addrs[0]
    assert _flag(argv["engine-a_b-regular-0"], "--host") == addrs[1]
    assert _flag(argv["engine-a_b-regular-0"], "--dist-init-addr") == f"{addrs[1]}:33000"
    urls = {u: argv[u][argv[u].index("--worker-urls") + 1] for u in ("router-a-b", "router-a_b")}
    assert urls == {"router-a-b": f"http://{addrs[0]}:31000",
                    "router-a_b": f"http://{addrs[1]}:31000"}
    # a model named like a node keeps its name in endpoints.json
    plan2 = plan_of(write_topo(tmp_path, SLURM_TOPO.replace("name: a_b", "name: node0"),
                               "n.yaml"))
    ep_text = render(plan2, ("slurm",))[f"slurm/{plan2.name}.sbatch"].content
    ep = fill_addresses(sbatch_job(ep_text)["endpoints"], addrs)
    assert set(ep["models"]) == {"a-b", "node0"}
    (r,) = [m.router for m in plan2.models if m.name == "node0"]
    assert ep["models"]["node0"]["router"] == f"http://{addrs[r.node]}:{r.port}"
    assert ep["models"]["node0"]["router_address"] == addrs[r.node]
    assert ep["models"]["node0"]["engines"] == {"regular": [f"http://{addrs[1]}:31000"]}


@pytest.mark.slow
def test_slurm_job_on_a_real_cluster_keeps_names_values_and_logs_private(cluster, tmp_path):
    plan = plan_of(write_topo(tmp_path, SLURM_TOPO))
    out = tmp_path / "out"
    write_tree(out / plan.name, render(plan, ("slurm",), rehearse=True))
    sbatch = out / plan.name / "slurm" / f"{plan.name}.sbatch"
    submit = tmp_path / "submit"
    submit.mkdir()
    submit.chmod(0o755)
    r = subprocess.run(["sbatch", "--parsable", str(sbatch)], cwd=submit, env=cluster.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    joblog = submit / f"sgl-{plan.name}-{job}.out"
    endpoints = submit / f"endpoints-{job}.json"
    try:
        deadline = time.monotonic() + 120
        while not endpoints.exists():
            text = joblog.read_text() if joblog.exists() else ""
            assert time.monotonic() < deadline, text
            assert _slurm_jobs(cluster), "the job ended: " + text
            time.sleep(1)
        ep = json.loads(endpoints.read_text())["models"]
        # each model's router reaches its own engine: distinct steps and functions
        for model in ("a-b", "a_b"):
            status, reply = _get(ep[model]["router"] + "/generate", None, "POST", {"text": "x"})
            assert status == 200 and reply["sgl_gen"]["engine_id"] == f"{model}-regular-0"
            (url,) = ep[model]["engines"]["regular"]
            status, info = _get(url + "/server_info")
            served, tokenizer = SERVED[f"engine-{model}-regular-0"]
            assert (info["served_model_name"], info["tokenizer_path"]) == (served, tokenizer)
            assert info["host"] in cluster.addrs  # --host: the node's real address
        # per-rank logs: a private directory of private files
        logdir = submit / f"sgl-{plan.name}-{job}"
        assert stat.S_IMODE(logdir.stat().st_mode) == 0o700
        logs = sorted(logdir.iterdir())
        assert [p.name for p in logs] == sorted(
            ["engine-a-b-regular-0-0.log", "engine-a_b-regular-0-0.log",
             "engine-a_b-regular-0-1.log", "router-a-b-0.log", "router-a_b-0.log",
             "state.json"])
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in logs} == {
            p.name: 0o600 for p in logs}
    finally:
        subprocess.run(["scancel", job], env=cluster.env, check=False)
        deadline = time.monotonic() + 60
        while any(line.split()[0] == job for line in _slurm_jobs(cluster)):
            assert time.monotonic() < deadline
            time.sleep(1)


@pytest.mark.slow
def test_slurm_job_with_api_keys_keeps_them_out_of_argv_and_logs(cluster, tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"ENGINE_KEY={shlex.quote(KEY)}\n")
    secrets.chmod(0o600)
    topo = write_topo(tmp_path, f"""
        deployment: {{name: keyed, hf_checkpoint: /models/m}}
        cluster: {{nodes: 2, gpus_per_node: 8}}
        runtime: {{python: {sys.executable}, secrets_env_file: {secrets}}}
        router: {{args: {{api_key: {{env: ENGINE_KEY}}}}}}
        defaults: {{api_key: {{env: ENGINE_KEY}}}}
        sglang:
          - name: m
            server_groups: [{{worker_type: regular, num_gpus: 16, num_gpus_per_engine: 16}}]
        """)
    plan = plan_of(topo)
    out = tmp_path / "out"
    write_tree(out / plan.name, render(plan, ("slurm",), rehearse=True))
    sbatch = out / plan.name / "slurm" / f"{plan.name}.sbatch"
    assert "sk-rehearse" not in sbatch.read_text()
    submit = tmp_path / "submit"
    submit.mkdir()
    r = subprocess.run(["sbatch", "--parsable", str(sbatch)], cwd=submit, env=cluster.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    joblog = submit / f"sgl-{plan.name}-{job}.out"
    endpoints = submit / f"endpoints-{job}.json"
    try:
        deadline = time.monotonic() + 120
        while not endpoints.exists():  # the job's own wait reads /workers with the key
            text = joblog.read_text() if joblog.exists() else ""
            assert time.monotonic() < deadline, text
            assert _slurm_jobs(cluster), "the job ended: " + text
            time.sleep(1)
        (m,) = json.loads(endpoints.read_text())["models"].values()
        status, reply = _get(m["router"] + "/generate", KEY, "POST", {"text": "x"})
        assert status == 200 and reply["sgl_gen"]["engine_id"] == "m-regular-0"
        assert _get(m["router"] + "/generate", None, "POST", {"text": "x"})[0] == 401
        (url,) = m["engines"]["regular"]
        assert _get(url + "/generate", None, "POST", {"text": "x"})[0] == 401
        status, info = _get(url + "/server_info", KEY)
        assert status == 200 and info["api_key"] == "<redacted>"
        # both ranks read the key from their --config file, not argv
        ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
        # this job's ranks only (their argv names files under tmp_path): other tests may run
        # a rehearsal engine of the same id on this machine at the same time
        ranks = [ln for ln in ps.splitlines()
                 if "--rehearsal-id m-regular-0" in ln and str(tmp_path) in ln]
        assert len(ranks) == 2 and not [ln for ln in ranks if "sk-rehearse" in ln], [
            ln for ln in ps.splitlines() if "rehearsal" in ln]
        logdir = submit / f"sgl-{plan.name}-{job}"
        run = logdir / "run"
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        confs = sorted(run.iterdir())
        assert [c.name for c in confs] == [f"engine-m-regular-0-{i}.secrets.yaml" for i in (0, 1)]
        for c in confs:
            assert stat.S_IMODE(c.stat().st_mode) == 0o600
            assert c.read_text() == "api-key: 'sk-rehearse ''q'' $x'\n"
        for log in logdir.glob("engine-*.log"):
            assert "sk-rehearse" not in log.read_text()
    finally:
        subprocess.run(["scancel", job], env=cluster.env, check=False)
        deadline = time.monotonic() + 60
        while any(line.split()[0] == job for line in _slurm_jobs(cluster)):
            assert time.monotonic() < deadline
            time.sleep(1)
    assert "sk-rehearse" not in joblog.read_text()


def test_slurm_failure_tail_redacts_credential_values(tmp_path):
    """A unit that exits ends the job with its log tail in the job output, which Slurm creates
    with the submitter's umask: credential values in it are redacted (by slurm/lib/redact.py,
    the module sgl-gen's own log tails use; tests/test_safety_redact.py has the full table)."""
    plan = plan_of(write_topo(tmp_path, SLURM_TOPO))
    write_tree(tmp_path / "out", render(plan, ("slurm",), rehearse=True))
    lines = ["server_args=ServerArgs(model_path='/m', api_key='sk-1 2', admin_api_key=None, "
             "port=3)", "--api-key sk-abc --port 3", '{"api_key": "sk-x", "x_password": "pw"}',
             "--ssl-keyfile-password=pw2 tail"]
    log = tmp_path / "unit-0.log"
    log.write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, str(tmp_path / "out" / "slurm" / "lib" / "sgljob.py"),
                        "tail", str(log)], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == [
        "server_args=ServerArgs(model_path='/m', api_key='***', admin_api_key=None, port=3)",
        "--api-key *** --port 3",
        '{"api_key": "***", "x_password": "***"}',
        "--ssl-keyfile-password=*** tail"]
