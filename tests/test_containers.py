"""Containers for real: examples/ssh-podman.yaml (a PD model, a 2-GPU engine, a model whose
router and engines take an API key) deployed with `kind: podman` onto the four SSH test hosts
(network namespaces, tests/sshhosts.py), every engine and router in a container of a locally
built image (tests/containerimage.py: python3, the real sglang-router, a stand-in sglang
package that only says its version; the engines are the rehearsal engine, mounted from the
deployment's lib/). Fake CDI GPUs (tests/containerimage.py) let each engine see the devices its
runtime flags gave it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import containerimage
from tests.helpers import EXAMPLES, generate, plan_of, run_cli
from tests.sshhosts import SshHosts, available
from tests.tools import missing

pytestmark = pytest.mark.slow

EXAMPLE = EXAMPLES / "ssh-podman.yaml"
DEP = "ssh-podman"
KEY = "judge key $(not run) 'q'"


@pytest.fixture(scope="module")
def hosts():
    why = available() or containerimage.unavailable()
    if why:
        missing(f"container test hosts: {why}")
    with SshHosts(4) as h:
        yield h


@pytest.fixture(scope="module")
def image(hosts) -> str:
    return containerimage.prepare(hosts)


class Deployment:
    def __init__(self, hosts: SshHosts, tmp: Path, image: str):
        self.hosts, self.tmp = hosts, tmp
        models = tmp / "models"
        models.mkdir(exist_ok=True)
        secrets = tmp / "secrets.env"
        secrets.write_text(f"export JUDGE_API_KEY={_sh(KEY)}\n")
        secrets.chmod(0o600)
        self.secrets = secrets
        self.topo = tmp / "topo.yaml"
        self.write(image)
        self.sets = ["runtime.supervisor=bash",
                     *(f"cluster.hosts[{i}].workdir={tmp}/w{i}" for i in range(4))]

    def write(self, image: str) -> None:
        self.topo.write_text(EXAMPLE.read_text().replace(
            "image: docker.io/lmsysorg/sglang:v0.5.23", f"image: {image}").replace(
            '"/models:/models:ro"', f'"{self.tmp}/models:/models:ro"').replace(
            "secrets_env_file: /etc/sgl-gen/ssh-podman.env",
            f"secrets_env_file: {self.secrets}"))

    def root(self, i: int) -> Path:
        return self.tmp / f"w{i}" / DEP

    def cli(self, cmd: str, *extra: str):
        return run_cli(cmd, str(self.topo), "--rehearse", "--ssh-config",
                       str(self.hosts.ssh_config), *(x for s in self.sets for x in ("--set", s)),
                       *extra)

    def deploy(self, *extra: str) -> dict[str, Any]:
        r = self.cli("deploy", "--format", "json", "--timeout", "120", *extra)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def status(self, exit_code: int = 0) -> dict[tuple[str, str], dict[str, Any]]:
        r = self.cli("status", "--format", "json")
        assert r.exit_code == exit_code, r.output
        return {(u["host"], u["unit"]): u for u in json.loads(r.stdout)["units"]}


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


@pytest.fixture
def deployment(hosts, image, tmp_path):
    d = Deployment(hosts, tmp_path, image)
    yield d
    d.cli("down")
    containerimage.remove(DEP)


def _generate(url: str, key: str | None = None) -> dict[str, Any]:
    if key is None:
        return generate(url)
    req = urllib.request.Request(
        f"{url}/generate", method="POST", data=json.dumps(
            {"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return dict(json.loads(r.read())["sgl_gen"])


def _ids() -> dict[str, str]:
    return {c["name"]: c["id"] for c in containerimage.containers(DEP)}


def _inspect(name: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "container", "inspect", name], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return dict(json.loads(out)[0])


def test_deploy_status_noop_kill_mismatch_down(deployment, image):
    d = deployment
    plan = plan_of(d.topo, *d.sets)
    units = {(n.host, u) for n, us in _units(plan).items() for u in us}

    started = time.monotonic()
    first = d.deploy()
    took = time.monotonic() - started
    assert {(u["host"], u["unit"]): u["action"] for u in first["units"]} == {
        k: "started" for k in units}
    print(f"deploy of {len(units)} container units: {took:.1f} s")

    # every router answers, from inside containers, each engine on the plan's GPUs
    gpus = {e.id: [g for p in e.placements for g in p.gpus] for m in plan.models
            for e in m.engines}
    routers = {m.name: m.router.url for m in plan.models}
    seen = {}
    for _ in range(6):
        for model, url in routers.items():
            got = _generate(url, KEY if model == "judge" else None)
            seen[got["engine_id"]] = got
    assert {e for e in seen} >= {"chat-decode-0", "big-regular-0"}
    assert any(e.startswith("judge-regular-") for e in seen)
    for eid, got in seen.items():
        assert got["container"] == "podman", got
        assert got["gpu_devices"] == gpus[eid], (eid, got)
    # prefill engines too (the router only sends them the prefill half)
    for eid in ("chat-prefill-0", "chat-prefill-1"):
        e = next(e for m in plan.models for e in m.engines if e.id == eid)
        with urllib.request.urlopen(f"{e.url}/get_server_info", timeout=10) as r:
            ident = json.loads(r.read())["sgl_gen"]
        assert ident["container"] == "podman" and ident["gpu_devices"] == gpus[eid]

    # status: every unit running and healthy, its container the one podman reports
    st = d.status()
    ids = _ids()
    assert set(ids) == {f"sgl-{DEP}-{u}" for _, u in units}
    for (_host, unit), row in st.items():
        assert row["state"] == "running", row
        assert row["container"]["status"] == "running"
        assert row["container"]["id"] == ids[f"sgl-{DEP}-{unit}"]

    # the API key: in no rendered file, no argv, no inspect output but the env-file's entry
    for i in range(4):
        for f in d.root(i).rglob("*"):
            if f.is_file() and "run" not in f.relative_to(d.root(i)).parts:
                assert KEY not in f.read_text(errors="replace"), f
    for name in ids:
        doc = _inspect(name)
        env = doc["Config"].pop("Env")
        assert KEY not in json.dumps(doc), name
        # from the --env-file: every variable of the secrets file, as a unit on the host has
        # them (it sources the file)
        assert f"JUDGE_API_KEY={KEY}" in env, name
        assert doc["Config"]["Labels"]["sgl-gen.deployment"] == DEP
        # --ipc host (podman 4.3's inspect says "shareable" for it): the host's IPC namespace
        pid = doc["State"]["Pid"]
        assert os.readlink(f"/proc/{pid}/ns/ipc") == os.readlink("/proc/self/ns/ipc"), name
    clients = [c for c in (_cmdline(p) for p in _pids_in_namespaces(d.hosts))
               if c.startswith(b"podman\0run\0")]
    assert len(clients) == len(units) and not [c for c in clients if KEY.encode() in c]

    # a no-op redeploy recreates nothing
    again = d.deploy()
    assert {u["action"] for u in again["units"]} == {"unchanged"}
    assert _ids() == ids

    # logs: the container's output
    r = d.cli("logs", "engine-big-regular-0", "-n", "50")
    assert r.exit_code == 0 and "rehearsal" in r.stdout.lower(), r.output

    # the server inside a container dies: the bash supervisor reports the unit dead
    name = f"sgl-{DEP}-engine-judge-regular-1"
    init = _inspect(name)["State"]["Pid"]
    (child,) = _children(init)  # --init: the server is its only child
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and name in _ids():
        time.sleep(0.2)
    assert name not in _ids()  # --rm: gone with its server
    st = d.status(exit_code=3)
    assert st[("node-d", "engine-judge-regular-1")]["state"] == "dead"
    assert st[("node-d", "engine-judge-regular-1")]["container"] is None
    back = d.deploy()
    assert {(u["host"], u["unit"]): u["action"] for u in back["units"]
            if u["action"] != "unchanged"} == {("node-d", "engine-judge-regular-1"): "started"}
    ids = _ids()
    assert len(ids) == len(units)

    # an image whose SGLang is another version: refused before anything stops
    d.write(containerimage.image("0.0.1"))
    r = d.cli("deploy", "--timeout", "60")
    assert r.exit_code == 3
    assert ("has SGLang 0.0.1, but the topology was validated against the catalog of SGLang "
            "0.5.23") in r.stderr, r.stderr
    assert _ids() == ids

    # down: no container is left
    r = d.cli("down")
    assert r.exit_code == 0, r.output
    assert containerimage.containers(DEP) == []


def test_a_new_image_behind_the_name_rolls_the_units(deployment, image):
    """The same tag, another image: every unit restarts (rolled; refused where a role has
    one engine)."""
    d = deployment
    tag = image.rsplit(":", 1)[0] + ":rolling"
    subprocess.run(["podman", "tag", image, tag], check=True, timeout=60)
    d.write(tag)
    d.deploy()
    before = _ids()
    # retag onto another image (the mismatch image's rootfs with this version's stand-in)
    other = containerimage.image("0.5.23", variant="b")
    subprocess.run(["podman", "tag", other, tag], check=True, timeout=60)
    r = d.cli("diff", "--format", "json")
    assert r.exit_code == 0, r.output
    reasons = {u["unit"]: u["reason"] for u in json.loads(r.stdout)["units"]}
    assert all(v.startswith(f"its image changed ({tag}: ") for v in reasons.values()), reasons
    # the change goes through the rolling deploy: big's only engine cannot roll
    r = d.cli("deploy", "--timeout", "120")
    assert r.exit_code == 3 and ("big-regular-0 would restart, but it is the only serving "
                                 "regular engine of big") in r.stderr, r.output
    assert _ids() == before
    rolled = d.deploy("--allow-downtime")
    assert {u["action"] for u in rolled["units"]} == {"restarted"}
    after = _ids()
    assert set(after) == set(before) and not set(after.values()) & set(before.values())
    man = json.loads((d.root(0) / ".sgl-gen" / "manifest.json").read_text())
    image_id = _inspect(next(iter(after)))["Image"]
    assert man["container"]["id"].removeprefix("sha256:") == image_id.removeprefix("sha256:")


def _units(plan: Any) -> dict[Any, list[str]]:
    from generator.targets.common import units_by_node

    return {plan.nodes[i]: [u.name for u in us] for i, us in units_by_node(plan, True).items()}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _pids_in_namespaces(hosts: SshHosts) -> list[int]:
    return [p for h in hosts.hosts for p in hosts.ns_pids(h)
            if Path(f"/proc/{p}/cmdline").exists()]
