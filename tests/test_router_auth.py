"""A router started with ``--api-key {env: NAME}`` answers ``GET /workers`` with 401 without the
key (sglang-router 0.3.2, smg 1.13): sgl-gen's own checks (``up --local``, ``deploy``'s wait,
``status``, ``restart --rolling``) send ``Authorization: Bearer`` with the value read where the
router runs (environment, ``runtime.secrets_env_file``), and the value is in no rendered file, no
output and no SSH command line. And a model whose engines want a key its router does not send is
an error (generator/compile/authcheck.py)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from generator.compile.pipeline import compile_plan, load_topology
from generator.errors import TopologyError
from tests.helpers import run_cli
from tests.sshhosts import SUBNET, SshHosts, available
from tests.tools import missing, need_python

KEY = "sk-router-auth-3f9c2e7a"  # distinctive: found by grep wherever it leaks


def topo_doc(name: str, python: str, impl: str, *, hosts: list[dict] | None = None,
             secrets: str | None = None, router_env: str | None = "K",
             engine_env: str | None = "K") -> dict:
    doc: dict = {
        "deployment": {"name": name, "hf_checkpoint": "/models/m", "num_gpus_per_engine": 1},
        "cluster": {"gpus_per_node": 2, **({"hosts": hosts} if hosts else {})},
        "runtime": {"python": python, **({"secrets_env_file": secrets} if secrets else {}),
                    # the SSH test hosts (tests/sshhosts.py) have no systemd
                    **({"supervisor": "bash"} if hosts else {})},
        "router": {"implementation": impl, "policy": "round_robin",
                   **({"args": {"api_key": {"env": router_env}}} if router_env else {})},
        "sglang": [{"name": "m", "server_groups": [{"worker_type": "regular", "num_gpus": 2}]}],
    }
    if engine_env:
        doc["defaults"] = {"api_key": {"env": engine_env}}
    return doc


def write(tmp: Path, doc: dict) -> Path:
    p = tmp / "topo.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def generate(router: str, key: str | None) -> int:
    req = urllib.request.Request(
        f"{router}/generate", method="POST",
        data=json.dumps({"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def files_with_key(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)
                  and KEY.encode() in p.read_bytes())


def impl_python(impl: str) -> str:
    return need_python("SGLGEN_SMG_PYTHON", "smg==1.13.0") if impl == "smg" else sys.executable


# -- up --local --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("source", ["environment", "secrets_env_file"])
@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_up_local_with_router_api_key(tmp_path, monkeypatch, impl, source):
    secrets = None
    if source == "environment":
        monkeypatch.setenv("K", KEY)
    else:
        monkeypatch.delenv("K", raising=False)
        sf = tmp_path / "secrets.env"
        sf.write_text(f"# the units source this\nK='{KEY}'\n")
        sf.chmod(0o600)
        secrets = str(sf)
    name = f"auth-{impl}-{source}"[:40].replace("_", "-")
    topo = write(tmp_path, topo_doc(name, impl_python(impl), impl, secrets=secrets))
    out = tmp_path / "out"
    args = [str(topo), "--local", "-o", str(out)]
    try:
        r = run_cli("up", *args, "--rehearse", "--timeout", "60")
        assert r.exit_code == 0, r.output
        router = compile_plan(topo, local=True).models[0].router.url
        assert generate(router, KEY) == 200
        assert generate(router, None) == 401  # the router does enforce its key
        assert generate(router, "wrong") == 401
    finally:
        d = run_cli("down", *args)
    assert d.exit_code == 0, d.output
    assert KEY not in r.output + d.output
    assert files_with_key(out / name) == []
    # the state dirs hold copies of the render, plus logs and run/ (the engines' secrets files)
    state = out / ".run" / name
    assert files_with_key(state, skip=("node0/logs/", "node0/run/")) == []


# -- deploy over SSH ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts():
    why = available()
    if why:
        missing(f"SSH test hosts: {why}")
    with SshHosts(1) as h:
        yield h


class _Sent:
    """Every command sgl-gen sends over SSH (fabric Connection.run), and every command line on
    the host (its processes) seen while it runs."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.cmdlines: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.is_set():
            for p in Path("/proc").iterdir():
                if p.name.isdigit():
                    try:
                        self.cmdlines.add((p / "cmdline").read_bytes().replace(b"\0", b" ")
                                          .decode("utf-8", "replace"))
                    except OSError:
                        pass
            self.stop.wait(0.05)


@pytest.fixture
def sent(monkeypatch):
    import fabric

    s = _Sent()
    orig = fabric.Connection.run

    def run(self, command, **kw):
        s.commands.append(command)
        return orig(self, command, **kw)
    monkeypatch.setattr(fabric.Connection, "run", run)
    s.thread.start()
    yield s
    s.stop.set()
    s.thread.join()


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_deploy_status_rolling_restart_with_router_api_key(hosts, tmp_path, sent, monkeypatch,
                                                           impl):
    monkeypatch.delenv("K", raising=False)  # on the host, the key comes from the secrets file
    sf = tmp_path / "secrets.env"
    sf.write_text(f"export K={KEY}\n")
    sf.chmod(0o600)
    address = f"{SUBNET}.11"
    doc = topo_doc("authdeploy", impl_python(impl), impl, secrets=str(sf), hosts=[
        {"name": "node-a", "address": address, "workdir": str(tmp_path / "w")}])
    topo = write(tmp_path, doc)
    ssh = ["--ssh-config", str(hosts.ssh_config)]
    outputs = []
    try:
        r = run_cli("deploy", str(topo), "--rehearse", *ssh, "--format", "json",
                    "--timeout", "60")
        outputs.append(r.output)
        assert r.exit_code == 0, r.output
        st = run_cli("status", str(topo), "--rehearse", *ssh, "--format", "json")
        outputs.append(st.output)
        assert st.exit_code == 0, st.output
        units = {u["unit"]: u for u in json.loads(st.stdout)["units"]}
        assert units["router-m"]["healthy"] is True, units
        assert all(u["healthy"] for u in units.values()), units
        router = f"http://{address}:{units['router-m']['url'].rsplit(':', 1)[1]}"
        assert generate(router, KEY) == 200
        assert generate(router, None) == 401
        rr = run_cli("restart", str(topo), "--rehearse", *ssh, "--rolling", "--timeout", "60")
        outputs.append(rr.output)
        assert rr.exit_code == 0, rr.output
        assert generate(router, KEY) == 200
    finally:
        dn = run_cli("down", str(topo), "--rehearse", *ssh)
        outputs.append(dn.output)
    assert dn.exit_code == 0, dn.output
    assert KEY not in "".join(outputs)
    # what crossed SSH: the host-side programs name the variable, never its value
    assert sent.commands and not [c for c in sent.commands if KEY in c]
    assert any('"auth": {"router-m": "K"}' in c for c in sent.commands)  # the wait
    assert any('"auth": "K"' in c for c in sent.commands)  # restart --rolling's /workers calls
    # on the host: only the router's own argv holds it (it reads --api-key from nowhere else)
    leaked = [c for c in sent.cmdlines if KEY in c and "launch_router" not in c]
    assert leaked == []
    root = tmp_path / "w" / "authdeploy"
    assert files_with_key(root, skip=("logs/", "run/")) == []


# -- engines that want a key the router does not send ------------------------------------------


def _errors(tmp_path: Path, doc: dict) -> list[str]:
    from generator.compile.authcheck import check_router_auth

    topo = write(tmp_path, doc)
    try:
        check_router_auth(load_topology(topo))
    except TopologyError as exc:
        return exc.lines()
    return []


@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_engine_api_key_without_router_key_is_a_positioned_error(tmp_path, impl):
    doc = topo_doc("ak", sys.executable, impl, router_env=None)
    topo = tmp_path / "topo.yaml"
    lines = _errors(tmp_path, doc)
    text = topo.read_text().splitlines()
    line = text.index("defaults:") + 3  # the value of defaults.api_key, `env: K`, 1-based
    assert text[line - 1] == "    env: K"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{topo}:{line}:5: ")
    assert ": defaults.api_key: the engines of sglang[0].server_groups[0] require an API key " \
           f"($K) but the {impl} router of model 'm' has none" in lines[0]
    assert "(hint: set router.args.api_key: {env: K}" in lines[0]


def test_group_override_with_another_variable_is_an_error_at_the_override(tmp_path):
    doc = topo_doc("ak", sys.executable, "smg")
    doc["sglang"][0]["server_groups"] = [
        {"worker_type": "regular", "num_gpus": 1},
        {"worker_type": "regular", "num_gpus": 1, "overrides": {"api_key": {"env": "J"}}}]
    lines = _errors(tmp_path, doc)
    assert len(lines) == 1, lines
    assert ": sglang[0].server_groups[1].overrides.api_key: the engines of " \
           "sglang[0].server_groups[1] require the API key in $J but the smg router of model " \
           "'m' sends the one in $K (router.args.api_key)" in lines[0]
    assert "(hint: set router.args.api_key: {env: J}" in lines[0]


def test_matching_keys_or_a_router_key_alone_pass(tmp_path):
    assert _errors(tmp_path, topo_doc("ak", sys.executable, "sglang-router")) == []
    assert _errors(tmp_path, topo_doc("ak", sys.executable, "smg", engine_env=None)) == []
    assert _errors(tmp_path, topo_doc("ak", sys.executable, "smg", router_env=None,
                                      engine_env=None)) == []


def test_router_auth_reads_environment_then_secrets_file(tmp_path, monkeypatch):
    from generator.routerauth import api_key_env, router_auth

    assert api_key_env(["--port", "1", "--api-key", {"env": "K"}]) == "K"
    assert api_key_env(["--port", "1"]) is None
    assert api_key_env(["--api-key", {"env": "K; rm -rf /"}]) is None
    monkeypatch.setenv("K", "from-env")
    assert router_auth("K", None) == {"Authorization": "Bearer from-env"}
    sf = tmp_path / "s.env"
    sf.write_text("# a comment\nexport K='from file \"q\" $HOME'\n")
    sf.chmod(0o600)
    assert router_auth("K", str(sf)) == {"Authorization": 'Bearer from file "q" $HOME'}
    assert router_auth("K", str(tmp_path / "missing")) == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("K")
    assert router_auth("K", None) == {}
    assert router_auth(None, str(sf)) == {}
