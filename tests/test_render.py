"""Rendered artifacts: determinism, committed goldens, real shellcheck / systemd-analyze, router
argv through the real router parsers, hostile strings byte-exact, secrets never rendered."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from generator.compile.argv import ROUTER_DEFAULTS, SMG_ROUTING_KEY_HEADER
from generator.compile.catalog import load_catalog
from generator.compile.pipeline import compile_plan
from generator.devtools import golden
from generator.targets.common import units_by_node
from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import EXAMPLES, REPO, plan_of, run_all, run_cli, write_topo
from tests.tools import need_python, need_tool

ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))


def _render_to(path: Path, out: Path, *sets: str, targets=("bash", "systemd"),
               rehearse: bool = False) -> Path:
    plan = plan_of(path, *sets)
    write_tree(out, render(plan, targets, rehearse=rehearse))
    return out


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_out_is_current(capsys):
    assert golden.check() == 0, capsys.readouterr().out


def test_render_is_byte_identical_across_processes_and_hash_seeds(tmp_path):
    trees = []
    for seed in ("0", "12345"):
        out = tmp_path / f"seed{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        for r in run_all([[sys.executable, "-m", "generator.cli", "render", str(ex), "-o",
                           str(out), "-q", "--rehearse"] for ex in ALL_EXAMPLES],
                         env=env, cwd=REPO):
            assert r.returncode == 0, r.stderr
        trees.append(_tree(out))
    assert trees[0] == trees[1]
    assert len(trees[0]) > 100


def test_rerender_reports_identical_and_changes_nothing(tmp_path):
    ex = str(EXAMPLES / "pd.yaml")
    assert run_cli("render", ex, "-o", str(tmp_path)).exit_code == 0
    before = _tree(tmp_path)
    r = run_cli("render", ex, "-o", str(tmp_path))
    assert r.exit_code == 0
    assert "0 create, 0 update" in r.stdout or "identical" in r.stdout
    assert _tree(tmp_path) == before


def test_render_reports_updates_modes_and_removes_stale_files(tmp_path):
    """Stale = listed in MANIFEST.sha256 (an earlier render wrote it) and no longer rendered:
    removed. A file the manifest does not list is foreign: kept and reported, never removed."""
    ex = str(EXAMPLES / "basic.yaml")
    assert run_cli("render", ex, "-o", str(tmp_path)).exit_code == 0
    root = tmp_path / "basic"
    script = root / "hosts/node0/bin/engine-default-regular-0.sh"
    original = script.read_bytes()
    script.write_text("edited by hand\n")
    (root / "hosts/node0/sgl-gen-host.sh").chmod(0o644)
    (root / "hosts/node0/bin/old-unit.sh").write_text("left over\n")
    manifest = root / "MANIFEST.sha256"
    rendered_manifest = manifest.read_bytes()
    digest = hashlib.sha256(b"left over\n").hexdigest()
    with manifest.open("a") as f:  # as the render that wrote old-unit.sh listed it
        f.write(f"{digest}  hosts/node0/bin/old-unit.sh\n")
    (root / "hosts/node0/bin/mine.sh").write_text("the user's\n")
    (root / "notes.txt").write_text("the user's notes\n")
    r = run_cli("render", ex, "-o", str(tmp_path), "--check")
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        f"update    {root}/MANIFEST.sha256",
        f"update    {root}/hosts/node0/bin/engine-default-regular-0.sh",
        f"foreign   {root}/hosts/node0/bin/mine.sh",
        f"stale     {root}/hosts/node0/bin/old-unit.sh",
        f"mode      {root}/hosts/node0/sgl-gen-host.sh",
        f"foreign   {root}/notes.txt"]
    assert ("basic: out of date (2 foreign, 15 identical, 1 mode, 1 stale, 2 update); "
            "run: sgl-gen render") in r.stderr
    assert script.read_text() == "edited by hand\n"  # --check writes nothing
    r = run_cli("render", ex, "-o", str(tmp_path))
    assert r.exit_code == 0
    assert script.read_bytes() == original
    assert manifest.read_bytes() == rendered_manifest
    assert not (root / "hosts/node0/bin/old-unit.sh").exists()
    assert (root / "hosts/node0/bin/mine.sh").read_text() == "the user's\n"
    assert (root / "notes.txt").read_text() == "the user's notes\n"
    assert stat.S_IMODE((root / "hosts/node0/sgl-gen-host.sh").stat().st_mode) == 0o755
    assert not [p for p in root.rglob(".*.tmp")]  # no temp file left behind
    r = run_cli("render", ex, "-o", str(tmp_path), "--check")
    assert r.exit_code == 0  # the foreign files stay, reported, and are not "out of date"
    assert r.stdout.splitlines() == [
        f"foreign   {root}/hosts/node0/bin/mine.sh", f"foreign   {root}/notes.txt",
        f"{root}: up to date (2 foreign, 18 identical)"]


def test_invalid_topology_writes_nothing(tmp_path):
    bad = write_topo(tmp_path, "deployment: {name: bad, hf_checkpoint: /m}\nsglang: 3\n")
    r = run_cli("render", str(bad), "-o", str(tmp_path / "out"))
    assert r.exit_code == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rehearse", [False, True], ids=["sglang", "rehearse"])
def test_every_script_passes_shellcheck(tmp_path, rehearse):
    shellcheck = need_tool("shellcheck")
    scripts: list[str] = []
    for ex in ALL_EXAMPLES:
        out = _render_to(ex, tmp_path / ex.stem, rehearse=rehearse)
        scripts += [str(p) for p in sorted(out.rglob("*.sh"))]
    assert len(scripts) >= 40
    n = max(1, os.cpu_count() or 1)  # one shellcheck per core, each over its share
    for r in run_all([[shellcheck, "--severity=style", "--shell=bash", *scripts[i::n]]
                      for i in range(n)]):
        assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr


def _systemd_root(tmp_path: Path) -> Path:
    """An image root holding this machine's system units, for ``systemd-analyze --root``."""
    root = tmp_path / "root"
    for rel in ("usr/lib/systemd/system", "lib/systemd/system"):
        src = Path("/") / rel
        if src.is_dir() and not (root / rel).exists():
            shutil.copytree(src, root / rel, symlinks=True)
    return root


def test_every_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    """Each host's units installed as the README says (scripts in <workdir>/<deployment>/bin,
    units in /etc/systemd/system), verified offline with empty output."""
    analyze = need_tool("systemd-analyze")
    checked = 0
    for ex in ALL_EXAMPLES:
        plan = compile_plan(ex)
        out = _render_to(ex, tmp_path / "out" / ex.stem)
        for node in plan.nodes:
            root = _systemd_root(tmp_path)
            host_dir = out / "hosts" / node.host
            bindir = root / node.workdir.lstrip("/") / plan.name / "bin"
            unitdir = root / "etc/systemd/system"
            shutil.rmtree(unitdir, ignore_errors=True)
            shutil.copytree(host_dir / "bin", bindir, dirs_exist_ok=True)
            shutil.copytree(host_dir / "systemd", unitdir)
            units = sorted(f"/etc/systemd/system/{p.name}" for p in unitdir.iterdir())
            r = subprocess.run([analyze, "verify", f"--root={root}", *units],
                               capture_output=True, text=True)
            assert r.returncode == 0 and r.stderr == "" and r.stdout == "", (
                f"{ex.stem}/{node.host}: {r.stdout}{r.stderr}")
            checked += len(units)
    assert checked >= 40


def _router_argvs():
    for ex in ALL_EXAMPLES:
        plan = compile_plan(ex)
        for m in plan.models:
            yield ex.stem, m


def test_sglang_router_argv_parses_with_the_real_sglang_router():
    from sglang_router.launch_router import parse_router_args

    seen = 0
    for name, m in _router_argvs():
        r = m.router
        if r.implementation != "sglang-router":
            continue
        args = parse_router_args([str(t) for t in r.argv])
        assert (args.host, args.port, args.prometheus_port) == (r.bind_host, r.port,
                                                                r.prometheus_port), name
        if m.pd:
            assert args.pd_disaggregation
            assert args.prefill_urls == [(e.url, e.bootstrap_port) for e in m.engines
                                         if e.worker_type == "prefill"], name
            assert args.decode_urls == [e.url for e in m.engines if e.worker_type == "decode"]
        else:
            assert not args.pd_disaggregation
            assert args.worker_urls == [e.url for e in m.engines if e.worker_type == "regular"]
        if r.policy:
            assert args.policy == r.policy
        for key, default in ROUTER_DEFAULTS.items():
            assert getattr(args, key) == dict(r.args).get(key, default), (name, key)
        seen += 1
    assert seen >= 8


SMG_PARSE = """
import json, sys
from smg.launch_router import parse_router_args
out = []
for argv in json.load(sys.stdin):
    a = parse_router_args(argv)
    out.append({"host": a.host, "port": a.port, "prometheus_port": a.prometheus_port,
                "pd": a.pd_disaggregation, "worker_urls": list(a.worker_urls or []),
                "prefill": [list(p) for p in (a.prefill_urls or [])],
                "decode": list(a.decode_urls or []), "policy": a.policy,
                "routing_key_headers": a.routing_key_headers,
                "health_check_interval_secs": a.health_check_interval_secs})
json.dump(out, sys.stdout)
"""


def test_smg_argv_parses_with_the_real_smg(tmp_path):
    py = need_python("SGLGEN_SMG_PYTHON", "smg")
    models = [(n, m) for n, m in _router_argvs() if m.router.implementation == "smg"]
    assert models, "no example uses smg"
    argvs = [[str(t) for t in m.router.argv] for _, m in models]
    r = subprocess.run([py, "-c", SMG_PARSE], input=json.dumps(argvs), capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    for (name, m), got in zip(models, json.loads(r.stdout), strict=True):
        rt = m.router
        assert (got["host"], got["port"], got["prometheus_port"]) == (
            rt.bind_host, rt.port, rt.prometheus_port), name
        assert got["worker_urls"] == [e.url for e in m.engines if e.worker_type == "regular"]
        if rt.policy:
            assert got["policy"] == rt.policy
        assert got["health_check_interval_secs"] == dict(rt.args).get(
            "health_check_interval_secs", ROUTER_DEFAULTS["health_check_interval_secs"])
        if rt.policy == "consistent_hashing":
            assert got["routing_key_headers"] == [SMG_ROUTING_KEY_HEADER], name


def test_engine_argv_parses_with_the_sglang_parser():
    seen = 0
    for ex in ALL_EXAMPLES:
        plan = compile_plan(ex)
        parser = load_catalog(plan.topology.sglang_version).parser()
        for m in plan.models:
            for e in m.engines:
                for p in e.placements:
                    ns = parser.parse_args([str(t) for t in p.argv])
                    assert ns.model_path == m.model_path
                    assert ns.port == e.port and ns.tp_size == e.tp_size
                    assert ns.nnodes == e.nnodes and ns.node_rank == p.node_rank
                    seen += 1
    assert seen >= 30


HOSTILE = [
    "it's",
    'say "hi"',
    "$(touch /tmp/sgl-gen-pwned)",
    "`id`",
    "a b  c",
    "tab\there",
    "line1\nline2",
    "back\\slash",
    "dollar $HOME ${HOME}",
    "semi; rm -rf /",
    "--looks-like-a-flag",
    "ünïcödé ✓",
    "*glob?[x]",
    "",
]


#: as server arguments: a flag-shaped value is refused (tests/test_safety_input.py), every other
#: one arrives byte-exact; as environment values all of HOSTILE do
HOSTILE_ARGS = [v for v in HOSTILE if not v.startswith("-")]


def _argv_dumper(tmp_path: Path) -> Path:
    """A stand-in interpreter that records the argv it was exec'd with (NUL separated)."""
    shim = tmp_path / "dump-argv"
    shim.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\n'
                    'env -0 > "$ARGV_OUT.env"\n', encoding="utf-8")
    shim.chmod(0o755)
    return shim


def test_hostile_strings_arrive_byte_exact(tmp_path):
    shim = _argv_dumper(tmp_path)
    env_values = {f"HOSTILE_{i}": v for i, v in enumerate(HOSTILE)}
    topo = {
        "deployment": {"name": "hostile", "hf_checkpoint": "/models/it's a \"model\" $(x)"},
        "cluster": {"gpus_per_node": 2},
        "runtime": {"python": str(shim), "env": env_values},
        # one 1-GPU engine per hostile value, on a growing set of 2-GPU nodes
        "sglang": [{"name": "m", "server_groups": [
            {"worker_type": "regular", "num_gpus": 1, "num_gpus_per_engine": 1,
             "overrides": {"served_model_name": v, "chat_template": v[::-1]}}
            for v in HOSTILE_ARGS]}],
    }
    p = write_topo(tmp_path, json.dumps(topo))
    plan = plan_of(p)
    out = tmp_path / "out"
    write_tree(out, render(plan, ("bash",)))
    scripts = sorted(str(p) for p in out.rglob("*.sh"))
    r = subprocess.run([need_tool("shellcheck"), "--severity=style", *scripts],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout
    root = tmp_path / "root"
    checked = 0
    for node, units in units_by_node(plan, rehearse=False).items():
        host = plan.nodes[node].host
        for u in units:
            if u.kind != "engine":
                continue
            dump = tmp_path / f"{u.name}.argv"
            env = dict(os.environ, SGLGEN_ROOT=str(root), ARGV_OUT=str(dump))
            r = subprocess.run(["bash", str(out / "hosts" / host / "bin" / f"{u.name}.sh")],
                               env=env, capture_output=True)
            assert r.returncode == 0, r.stderr
            got = dump.read_bytes().split(b"\0")[:-1]
            want = [b"-m", b"sglang.launch_server", *(str(t).encode() for t in u.argv)]
            assert got == want, u.name
            got_env = dict(kv.split(b"=", 1) for kv in
                           Path(f"{dump}.env").read_bytes().split(b"\0") if b"=" in kv)
            for k, v in env_values.items():
                assert got_env[k.encode()] == v.encode(), k
            checked += 1
    assert checked == len(HOSTILE_ARGS)
    assert not Path("/tmp/sgl-gen-pwned").exists()


def test_secrets_come_from_the_environment_and_never_appear_in_output(tmp_path):
    shim = _argv_dumper(tmp_path)
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("ENGINE_KEY='s3cr3t-engine'\nROUTER_PW=s3cr3t-router\n")
    p = write_topo(tmp_path, f"""
        deployment: {{name: sec, hf_checkpoint: /m, num_gpus_per_engine: 1}}
        cluster: {{gpus_per_node: 1}}
        runtime: {{python: {shim}, secrets_env_file: {secrets_file}}}
        router: {{args: {{api_key: {{env: ENGINE_KEY}}, oracle_password: {{env: ROUTER_PW}}}}}}
        sglang:
          - name: m
            server_groups:
              - worker_type: regular
                num_gpus: 1
                overrides: {{api_key: {{env: ENGINE_KEY}}}}
        """)
    plan = plan_of(p)
    arts = render(plan, ("bash", "systemd"))
    for path, a in arts.items():
        assert "s3cr3t" not in a.content, path
    engine = plan.models[0].engines[0]
    assert json.loads(arts["plan.json"].content)["models"][0]["engines"][0]["argv"][-2:] == [
        "--api-key", {"env": "ENGINE_KEY"}]
    out = tmp_path / "out"
    write_tree(out, arts)
    for unit, key, want in (("engine-m-regular-0", "ENGINE_KEY", b"s3cr3t-engine"),
                            ("router-m", "ENGINE_KEY", b"s3cr3t-engine")):
        dump = tmp_path / f"{unit}.argv"
        env = dict(os.environ, SGLGEN_ROOT=str(tmp_path / "root"), ARGV_OUT=str(dump))
        env.pop(key, None)
        r = subprocess.run(["bash", str(out / "hosts" / "node0" / "bin" / f"{unit}.sh")],
                           env=env, capture_output=True)
        assert r.returncode == 0, r.stderr
        got = dump.read_bytes().split(b"\0")
        if unit.startswith("router"):  # sglang-router reads --api-key from argv only
            assert got[got.index(b"--api-key") + 1] == want
            assert b"s3cr3t-router" not in b"\0".join(got)  # the oracle password: env only
            assert b"ATP_PASSWORD=s3cr3t-router" in Path(f"{dump}.env").read_bytes().split(b"\0")
            continue
        # SGLang reads it from the --config file the script writes (0600), never from argv
        assert b"--api-key" not in got and want not in b"\0".join(got)
        config = Path(got[got.index(b"--config") + 1].decode())
        assert config.read_bytes() == b"api-key: '" + want + b"'\n"
        assert config.stat().st_mode & 0o777 == 0o600
    assert engine.argv[-1].name == "ENGINE_KEY"


def test_literal_credentials_are_rejected(tmp_path):
    from tests.helpers import errors_of

    p = write_topo(tmp_path, """
        deployment: {name: sec, hf_checkpoint: /m, num_gpus_per_engine: 1}
        router: {args: {api_key: hunter2}}
        sglang:
          - name: m
            server_groups:
              - {worker_type: regular, num_gpus: 1, overrides: {admin_api_key: hunter3}}
        """)
    errs = errors_of(p)
    # names that merely mention tokens are not credentials
    ok = write_topo(tmp_path, """
        deployment: {name: ok, hf_checkpoint: /m, num_gpus_per_engine: 1}
        router: {args: {tokenizer_path: /tok}}
        sglang:
          - name: m
            server_groups:
              - worker_type: regular
                num_gpus: 1
                overrides: {tokenizer_path: /tok, max_prefill_tokens: 8192, skip_tokenizer_init: true}
        """, "ok.yaml")
    argv = plan_of(ok).models[0].engines[0].argv
    assert argv[argv.index("--max-prefill-tokens") + 1] == "8192"
    assert errs == [
        f"{p}:2:26: router.args.api_key: --api-key is a credential and must not be written in "
        "the topology (hint: write {env: NAME} and put NAME=... in runtime.secrets_env_file on "
        "the hosts)",
        f"{p}:6:72: sglang[0].server_groups[0].overrides.admin_api_key: --admin-api-key is a "
        "credential and must not be written in the topology (hint: write {env: NAME} and put "
        "NAME=... in runtime.secrets_env_file on the hosts)",
    ]


def test_secrets_in_the_environment_never_reach_any_rendered_file(tmp_path, monkeypatch):
    secrets = {"ROUTER_API_KEY": "sk-router-0xDEADBEEF", "ENGINE_API_KEY": "sk-engine-0xFEEDFACE",
               "HF_TOKEN": "hf_0123456789abcdef", "SGLANG_API_KEY": "sk-sglang-cafe"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    files = 0
    runs = [(ex, rehearse, tmp_path / f"{ex.stem}-{rehearse}") for ex in ALL_EXAMPLES
            for rehearse in (False, True)]
    done = run_all([[sys.executable, "-m", "generator.cli", "render", str(ex), "-o", str(out),
                     "-q"] + (["--rehearse"] if rehearse else []) for ex, rehearse, out in runs],
                   cwd=REPO)
    for (_ex, _rehearse, out), r in zip(runs, done, strict=True):
        assert r.returncode == 0, r.stderr
        for p in out.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                files += 1
                for v in secrets.values():
                    assert v.encode() not in data, (p, v)
    assert files > 400
