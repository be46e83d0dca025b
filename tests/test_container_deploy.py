"""deploy on container hosts without a host: the host agent's container probe against a
stand-in runtime client, and deploy's decision and preflight on synthetic probes (a new image
id restarts the units, the image's SGLang must be the catalog's). The real podman runs them in
tests/test_containers.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from generator import hostagent
from generator.deploy import target_from_plan
from generator.deploy.decide import container_problems, decide
from generator.deploy.hostfiles import manifest_doc
from generator.deploy.spec import Target
from tests.helpers import EXAMPLES, plan_of
from tests.test_deploy_decide import _Host, deployed, remotes

IMAGE = "docker.io/lmsysorg/sglang:v0.5.23"
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64

#: a runtime client: `version` exits $FAKE_VERSION_RC; `image inspect` prints $FAKE_IMAGE_ID
#: (none: "no such image"); `run` prints $FAKE_SGLANG; `pull` records itself in $FAKE_LOG
FAKE = r"""#!/usr/bin/env python3
import os, sys
a = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(a) + "\n")
if a[0] == "version":
    if os.environ.get("FAKE_VERSION_RC", "0") != "0":
        print("permission denied while trying to connect to the Docker daemon socket", file=sys.stderr)
    sys.exit(int(os.environ.get("FAKE_VERSION_RC", "0")))
if a[0] == "pull":
    sys.exit(0)
if a[:2] == ["image", "inspect"]:
    if os.environ.get("FAKE_IMAGE_ID"):
        print(os.environ["FAKE_IMAGE_ID"]); sys.exit(0)
    print("Error: No such image: " + a[-1], file=sys.stderr); sys.exit(1)
if a[0] == "run":
    v = os.environ.get("FAKE_SGLANG")
    if v:
        print(v); sys.exit(0)
    print("ModuleNotFoundError: No module named 'sglang'", file=sys.stderr); sys.exit(1)
if a[:2] == ["container", "inspect"]:
    for name in a[4:]:
        if name == "sgl-dep-engine-x":
            print(f"/{name}\tcafe0123456789\trunning\t0\t2026-12-02T00:00:00Z\tdep")
        if name == "sgl-dep-router-m":
            print(f"{name}\tbeef0123456789\texited\t137\t2026-12-02T00:00:00Z\tother")
    sys.exit(1)
sys.exit(2)
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for kind in ("docker", "podman"):
        (bindir / kind).write_text(FAKE)
        (bindir / kind).chmod(0o755)
    log = tmp_path / "log"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def test_probe_reads_runtime_image_and_version(fake, monkeypatch):
    monkeypatch.setenv("FAKE_IMAGE_ID", NEW)
    monkeypatch.setenv("FAKE_SGLANG", "0.5.23")
    got = hostagent.container_probe({"kind": "podman", "image": IMAGE, "python": "python3",
                                     "pull": True})
    assert got == {"kind": "podman", "runtime": {"ok": True}, "pull": {"ok": True},
                   "image": {"id": NEW}, "sglang": {"version": "0.5.23"}}
    calls = fake.read_text().splitlines()
    assert calls == ["version", f"pull {IMAGE}", f"image inspect --format {{{{.Id}}}} {IMAGE}",
                     f"run --rm --network none --entrypoint python3 {IMAGE} -c "
                     "import sglang; print(sglang.__version__)"]


def test_probe_says_why_not(fake, monkeypatch):
    monkeypatch.setenv("FAKE_VERSION_RC", "1")
    got = hostagent.container_probe({"kind": "docker", "image": IMAGE})
    assert got["runtime"] == {"ok": False, "missing": False, "error":
                              "permission denied while trying to connect to the Docker daemon "
                              "socket"}
    monkeypatch.setenv("FAKE_VERSION_RC", "0")
    got = hostagent.container_probe({"kind": "docker", "image": IMAGE})
    assert got["image"] == {"id": None, "error": f"Error: No such image: {IMAGE}"}
    assert "pull" not in fake.read_text()  # only with pull
    monkeypatch.setenv("PATH", "/nonexistent")
    got = hostagent.container_probe({"kind": "docker", "image": IMAGE})
    assert got["runtime"] == {"ok": False, "missing": True, "error": "docker: not found on PATH"}


def test_container_states_keep_only_this_deployments(fake):
    got = hostagent.container_states({"kind": "podman", "deployment": "dep"},
                                     ["engine-x", "router-m", "engine-y"])
    # router-m's container carries another deployment's label: not this unit's
    assert got == {"engine-x": {"id": "cafe0123456789", "status": "running", "exit": 0,
                                "started": "2026-12-02T00:00:00Z"},
                   "router-m": None, "engine-y": None}


@pytest.fixture(scope="module")
def target() -> Target:
    plan = plan_of(EXAMPLES / "ssh-podman.yaml", "runtime.supervisor=bash")
    return target_from_plan(plan, ("bash", "systemd"), rehearse=True)


def _probe(target: Target, image_id: str, version: str = "0.5.23",
           deployed_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Every host running this render, deployed with image ``deployed_id`` (default the same),
    now finding ``image_id`` behind the image's name."""
    out = {}
    for h in target.hosts:
        h.image["id"] = deployed_id or image_id
        p = deployed(h, target)
        p["manifest"] = manifest_doc(_Host(h), target,  # type: ignore[arg-type]
                                     {u.name: h.unit_hash(u) for u in h.units})
        p["systemd"] = {}
        p["container"] = {"kind": "podman", "runtime": {"ok": True}, "image": {"id": image_id},
                          "sglang": {"version": version}}
        h.image["id"] = image_id
        out[h.host] = p
    return out


def test_an_unchanged_image_is_a_no_op_and_is_recorded(target):
    ch = decide(target, remotes(target, _probe(target, OLD)))
    assert ch.noop(), [a for a in ch.units if a.action != "none"]
    h = target.hosts[0]
    man = manifest_doc(_Host(h), target, {u.name: h.unit_hash(u) for u in h.units})  # type: ignore[arg-type]
    assert man["container"] == {"kind": "podman", "image": IMAGE, "id": OLD}
    assert {rec["image"] for rec in man["units"].values()} == {OLD}


def test_a_new_image_behind_the_name_restarts_every_unit(target):
    ch = decide(target, remotes(target, _probe(target, NEW, deployed_id=OLD)))
    acts = {(a.host, a.unit): (a.action, a.reason) for a in ch.units}
    assert acts and all(act == "restart" for act, _ in acts.values()), acts
    # routers too: not a live worker-list update
    assert acts[("node-a", "router-chat")] == (
        "restart", f"its image changed ({IMAGE}: {'a' * 12} -> {'b' * 12})")


def test_preflight_refuses_a_version_mismatch_unless_accepted(target):
    rs = remotes(target, _probe(target, OLD, version="0.4.0"))
    problems, warnings = container_problems(target, rs)
    assert warnings == [] and len(problems) == 4
    assert problems[0] == (
        f"node-a: the image {IMAGE} has SGLang 0.4.0, but the topology was validated against "
        "the catalog of SGLang 0.5.23 (hint: set deployment.sglang_version: \"0.4.0\" if "
        "sgl-gen has its catalog, use an image of SGLang 0.5.23, or pass "
        "--accept-image-version)")
    problems, warnings = container_problems(target, rs, accept_version=True)
    assert problems == [] and len(warnings) == 4
    assert warnings[0].endswith("SGLang 0.5.23: deploying anyway (--accept-image-version)")


def test_preflight_names_a_missing_runtime_image_or_sglang(target):
    probes = _probe(target, OLD)
    probes["node-a"]["container"] = {"kind": "podman", "runtime": {
        "ok": False, "missing": True, "error": "podman: not found on PATH"}}
    probes["node-b"]["container"] = {"kind": "podman", "runtime": {"ok": True},
                                     "image": {"id": None, "error": "no such image"}}
    probes["node-c"]["container"]["sglang"] = {"version": None, "error": "No module named "
                                               "'sglang'"}
    probes["node-d"]["container"]["pull"] = {"ok": False, "error": "connection refused"}
    problems, _ = container_problems(target, remotes(target, probes), pull=True)
    assert problems == [
        "node-a: podman is not usable: podman: not found on PATH (hint: install podman on "
        "node-a)",
        f"node-b: the image {IMAGE} is not on the host (podman: no such image) (hint: deploy "
        f"--pull, or `podman pull {IMAGE}` / `podman load` there)",
        f"node-c: the image {IMAGE} has no SGLang its python3 can import (No module named "
        "'sglang') (hint: is runtime.python the image's interpreter?)",
        f"node-d: podman pull {IMAGE} failed: connection refused"]


def test_the_host_agent_runs_with_python3_on_container_hosts(target):
    assert {h.agent_python for h in target.hosts} == {"python3"}
    plain = target_from_plan(plan_of(EXAMPLES / "ssh-4hosts.yaml"), ("bash", "systemd"),
                             rehearse=True)
    assert {h.agent_python for h in plain.hosts} == {None}
