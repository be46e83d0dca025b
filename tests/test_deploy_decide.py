"""deploy's decision on synthetic probes (no host): what it installs, removes, keeps, refuses and
restarts under the systemd supervisor, and what a host that moves between supervisors gets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from generator.deploy import target_from_plan
from generator.deploy.decide import Remote, decide
from generator.deploy.hostfiles import manifest_doc, owned_unit_files
from generator.deploy.spec import HostSpec, Target
from tests.helpers import EXAMPLES, plan_of

UNIT_DIR = "/etc/systemd/system"
DEP = "ssh-4hosts"


class _Host:  # what decide() reads of a connection: its spec
    def __init__(self, spec: HostSpec):
        self.spec, self.name = spec, spec.host


@pytest.fixture(scope="module")
def target() -> Target:
    plan = plan_of(EXAMPLES / "ssh-4hosts.yaml")
    return target_from_plan(plan, ("bash", "systemd"), rehearse=True)


def deployed(spec: HostSpec, target: Target) -> dict[str, Any]:
    """The probe of a host where this very render runs under systemd."""
    units = {u.name: spec.unit_hash(u) for u in spec.units}
    man = manifest_doc(_Host(spec), target, units, UNIT_DIR)  # type: ignore[arg-type]
    names = [rel.split("/", 1)[1] for rel in spec.systemd_files]
    return {
        "files": {rel: [spec.sha(rel), mode] for rel, (_, mode) in spec.files.items()},
        "manifest": man,
        "units": {u.name: {"state": "running", "pid": 100 + i, "enabled": "enabled",
                           "active": "active (running)", "restarts": 0}
                  for i, u in enumerate(spec.units)},
        "other_units": {},
        "systemd": {"booted": True, "mode": "system", "user": "root", "unit_dir": UNIT_DIR,
                    "installed": {n: [spec.sha(f"systemd/{n}"), 0o644] for n in names},
                    "enabled": {n: "enabled" for n in names}, "need_reload": []},
    }


def remotes(target: Target, probes: dict[str, dict[str, Any]]) -> dict[str, Remote]:
    return {h.host: Remote(_Host(h), probes[h.host]) for h in target.hosts}  # type: ignore[arg-type]


def test_a_deployed_fleet_is_a_no_op(target):
    ch = decide(target, remotes(target, {h.host: deployed(h, target) for h in target.hosts}))
    assert ch.noop(), [a for a in ch.units if a.action != "none"]
    assert all(not v for v in ch.refused.values())


def test_a_fresh_host_gets_every_unit_file_installed_and_enabled(target):
    h = target.hosts[3]
    probe = {"files": {}, "manifest": None, "units": {}, "other_units": {},
             "systemd": {"booted": True, "mode": "system", "unit_dir": UNIT_DIR, "installed": {},
                         "enabled": {}}}
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    want = [f"sgl-{DEP}-engine-judge-regular-0.service", f"sgl-{DEP}-engine-judge-regular-1.service",
            f"sgl-{DEP}-router-judge.service", f"sgl-{DEP}.target"]
    assert sorted(ch.install[h.host]) == sorted(want)
    assert sorted(ch.enable[h.host]) == sorted(want)
    assert {a.unit: a.action for a in ch.units if a.host == h.host} == {
        "engine-judge-regular-0": "start", "engine-judge-regular-1": "start",
        "router-judge": "start"}


def test_only_this_hosts_units_and_target_are_installed(target):
    """A render (an edited, resealed OUT_DIR) cannot put another unit into the unit directory."""
    h = target.hosts[0]
    files = dict(h.files)
    files["systemd/ssh.service"] = (b"[Service]\nExecStart=/bin/true\n", 0o644)
    files["systemd/sgl-other-engine-x.service"] = (b"[Service]\n", 0o644)
    spec = dataclasses.replace(h, files=files)
    assert "systemd/ssh.service" not in spec.systemd_files
    assert "systemd/sgl-other-engine-x.service" not in spec.systemd_files
    t = dataclasses.replace(target, hosts=(spec, *target.hosts[1:]))
    probes = {x.host: deployed(x, t) for x in t.hosts}
    ch = decide(t, remotes(t, probes))
    assert ch.install[h.host] == [] and ch.uninstall[h.host] == []


def test_a_manifest_owns_only_this_deployments_unit_names(target):
    h = target.hosts[3]
    probe = deployed(h, target)
    man = probe["manifest"]
    man["systemd"]["files"].update({"sgl-monitor.service": "0" * 64,
                                    "sgl-otherdep-engine-a.service": "0" * 64,
                                    "../../etc/passwd": "0" * 64, "ssh.service": "0" * 64})
    assert set(owned_unit_files(probe, DEP)) == {
        f"sgl-{DEP}-engine-judge-regular-0.service", f"sgl-{DEP}-engine-judge-regular-1.service",
        f"sgl-{DEP}-router-judge.service", f"sgl-{DEP}.target"}
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert ch.uninstall[h.host] == []


def test_an_edited_unit_file_sgl_gen_no_longer_renders_is_kept(target):
    h = target.hosts[3]
    probe = deployed(h, target)
    gone = f"sgl-{DEP}-engine-old-0.service"
    probe["manifest"]["systemd"]["files"][gone] = "1" * 64
    probe["systemd"]["installed"][gone] = ["2" * 64, 0o644]  # not what sgl-gen wrote
    gone2 = f"sgl-{DEP}-engine-old-1.service"
    probe["manifest"]["systemd"]["files"][gone2] = "3" * 64
    probe["systemd"]["installed"][gone2] = ["3" * 64, 0o644]  # what it wrote
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert ch.uninstall[h.host] == [gone2]
    assert f"{UNIT_DIR}/{gone}" in ch.keep[h.host]


def test_a_unit_file_sgl_gen_did_not_install_is_refused_or_adopted(target):
    h = target.hosts[3]
    probe = deployed(h, target)
    name = f"sgl-{DEP}-router-judge.service"
    del probe["manifest"]["systemd"]["files"][name]
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert any("were not installed by sgl-gen" in m and name in m for m in ch.refused[h.host])
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}), adopt=True)
    assert ch.refused[h.host] == [] and f"{UNIT_DIR}/{name}" in ch.adopt[h.host]
    probe["systemd"]["installed"][name] = ["9" * 64, 0o644]  # different: never adopted
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}), adopt=True)
    assert any(name in m for m in ch.refused[h.host])


def test_another_users_unit_directory_is_refused(target):
    """Deployed by root (system units), now deployed by a non-root user: refused, not ignored."""
    h = target.hosts[3]
    probe = deployed(h, target)
    probe["systemd"].update(mode="user", user="alice", linger=True,
                            unit_dir="/home/alice/.config/systemd/user", installed={})
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert any(f"was deployed with unit files in {UNIT_DIR}" in m for m in ch.refused[h.host])
    assert ch.uninstall[h.host] == []


def test_a_pending_daemon_reload_is_done(target):
    h = target.hosts[3]
    probe = deployed(h, target)
    probe["systemd"]["need_reload"] = [f"sgl-{DEP}-router-judge.service"]
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert ch.reload[h.host] is True and not ch.noop()


def test_units_move_between_supervisors(target):
    h = target.hosts[3]
    probe = deployed(h, target)
    # the host is now bash: its units run under systemd (one of them crash-looping)
    bash = dataclasses.replace(h, supervisor="bash", units=tuple(
        dataclasses.replace(u, files=tuple(f for f in u.files if not f.startswith("systemd/")))
        for u in h.units))
    t = dataclasses.replace(target, hosts=(*target.hosts[:3], bash))
    probe["other_units"] = {u: dict(st) for u, st in probe["units"].items()}
    probe["other_units"]["engine-judge-regular-1"].update(state="dead",
                                                          active="activating (auto-restart)")
    probe["units"] = {}
    ch = decide(t, remotes(t, {x.host: deployed(x, t) if x is not bash else probe
                               for x in t.hosts}))
    acts = {a.unit: (a.action, a.reason, a.stop_with) for a in ch.units if a.host == h.host}
    assert acts == {u.name: ("restart", "moves from systemd to bash", "systemd") for u in h.units}
    assert sorted(ch.uninstall[h.host]) == sorted(
        [u.service for u in h.units] + [f"sgl-{DEP}.target"])
    assert ch.install[h.host] == [] and ch.enable[h.host] == []


def test_a_systemd_host_needs_the_systemd_target_rendered():
    from generator.errors import SglGenError

    plan = plan_of(EXAMPLES / "ssh-4hosts.yaml")
    with pytest.raises(SglGenError, match=r"hosts/node-a/systemd/sgl-ssh-4hosts-engine-chat-"
                                          r"prefill-0.service: missing from the render \(node "
                                          r"supervisor systemd needs the systemd target"):
        target_from_plan(plan, ("bash",), rehearse=True)
    bash = plan_of(EXAMPLES / "ssh-4hosts.yaml", "runtime.supervisor=bash")
    t = target_from_plan(bash, ("bash",), rehearse=True)
    assert {h.supervisor for h in t.hosts} == {"bash"}
    assert all(not f.startswith("systemd/") for u in t.units() for f in u.files)


def test_a_drifted_installed_unit_file_is_rewritten_and_its_unit_restarts(target):
    h = target.hosts[3]
    probe = deployed(h, target)
    name = f"sgl-{DEP}-engine-judge-regular-0.service"
    probe["systemd"]["installed"][name] = ["e" * 64, 0o644]  # someone edited sgl-gen's copy
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert ch.install[h.host] == [name]
    acts = {a.unit: (a.action, a.reason) for a in ch.units if a.host == h.host}
    assert acts["engine-judge-regular-0"] == ("restart",
                                             "its installed unit file differs from sgl-gen's")
    assert acts["engine-judge-regular-1"] == ("none", "unchanged")


def test_an_interrupted_deploys_unit_file_is_still_sgl_gens(target):
    """The intent manifest records a unit file's next checksum before writing it; the old
    version on disk (recorded as prior) is still sgl-gen's to remove."""
    h = target.hosts[3]
    probe = deployed(h, target)
    gone = f"sgl-{DEP}-engine-old-0.service"
    probe["manifest"]["systemd"]["files"][gone] = "4" * 64  # the next version, never written
    probe["manifest"]["systemd"]["prior"] = {gone: "5" * 64}
    probe["systemd"]["installed"][gone] = ["5" * 64, 0o644]  # the version it wrote before
    ch = decide(target, remotes(target, {x.host: deployed(x, target) if x is not h else probe
                                         for x in target.hosts}))
    assert ch.uninstall[h.host] == [gone] and ch.disable[h.host] == []


def test_units_under_systemd_that_sgl_gen_did_not_install_are_not_its_to_stop(target):
    h = target.hosts[3]
    bash = dataclasses.replace(h, supervisor="bash", units=tuple(
        dataclasses.replace(u, files=tuple(f for f in u.files if not f.startswith("systemd/")))
        for u in h.units))
    t = dataclasses.replace(target, hosts=(*target.hosts[:3], bash))
    probe = deployed(h, target)
    probe["manifest"]["systemd"]["files"] = {}  # none installed by sgl-gen
    probe["other_units"] = {u: dict(st) for u, st in probe["units"].items()}
    probe["units"] = {}
    ch = decide(t, remotes(t, {x.host: deployed(x, t) if x is not bash else probe
                               for x in t.hosts}))
    assert {a.unit: a.stop_with for a in ch.units if a.host == h.host} == {
        u.name: "" for u in h.units}
