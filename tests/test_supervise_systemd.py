"""``deploy`` driving real systemd (issue "Supervised for real"): four systemd-nspawn hosts
(tests/systemdhosts.py: systemd as PID 1, journald, sshd), examples/ssh-4hosts.yaml on them with
the rehearsal engine and the real router. The tests share the hosts and run in file order: a
deploy, a no-op redeploy, SIGKILL, logs, one group's change, a failing unit, a reboot, a mixed
fleet, down; then a non-root user's units with and without lingering. Run with ``-s`` to see
the timings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests import systemdhosts
from tests.helpers import EXAMPLES, generate, reseal, run_cli
from tests.loadloop import Load
from tests.systemdhosts import SystemdHosts, python_binds, wait_for
from tests.tools import missing

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("SGLGEN_ROOTFS_CACHE", Path(__file__).resolve().parent.parent / ".cache"))
EXAMPLE = EXAMPLES / "ssh-4hosts.yaml"
DEP = "ssh-4hosts"
NAMES = ["node-a", "node-b", "node-c", "node-d"]
ALL_UNITS = {
    ("node-a", "engine-chat-prefill-0"), ("node-a", "engine-chat-decode-0"),
    ("node-a", "router-chat"), ("node-b", "engine-big-regular-0-r0"), ("node-b", "router-big"),
    ("node-c", "engine-big-regular-0-r1"), ("node-d", "engine-judge-regular-0"),
    ("node-d", "engine-judge-regular-1"), ("node-d", "router-judge"),
}
JUDGE = {("node-d", "engine-judge-regular-0"), ("node-d", "engine-judge-regular-1")}


def _router(i: int) -> str:
    return f"http://{systemdhosts.SUBNET}.{systemdhosts.FIRST_HOST + i}:30000"


ROUTERS = {"chat": _router(0), "big": _router(1), "judge": _router(3)}


def example_text() -> str:
    """examples/ssh-4hosts.yaml with the systemd hosts' addresses (10.207.6.x: the sshd hosts')."""
    return EXAMPLE.read_text().replace("10.207.6.", f"{systemdhosts.SUBNET}.")


def workers(router: str) -> list[dict]:
    try:
        with urllib.request.urlopen(f"{router}/workers", timeout=5) as r:
            return list(json.loads(r.read()).get("workers", []))
    except OSError:
        return []


def all_healthy(router: str, n: int) -> bool:
    ws = workers(router)
    return len(ws) == n and all(w.get("is_healthy") for w in ws)


def actions(doc: dict) -> dict[tuple[str, str], str]:
    return {(u["host"], u["unit"]): u["action"] for u in doc["units"]}


@pytest.fixture(scope="module")
def hosts():
    why = systemdhosts.available()
    if why:
        missing(f"systemd test hosts: {why}")
    path = CACHE / f"systemd-rootfs-{systemdhosts.rootfs_cache_key()}"
    if not (path / systemdhosts.ROOTFS_MARK).exists():
        if shutil.which("mmdebstrap") is None and shutil.which("apt-get") is None:
            missing("no cached rootfs and neither mmdebstrap nor apt-get to build one")
        systemdhosts.build_rootfs(path)
    with SystemdHosts(4, rootfs=path, binds=python_binds()) as h:
        yield h


class Fleet:
    """examples/ssh-4hosts.yaml on the systemd hosts."""

    def __init__(self, hosts: SystemdHosts, topo: Path, *sets: str):
        self.hosts, self.topo = hosts, topo
        self.sets = [f"runtime.python={sys.executable}", *sets]

    def args(self, cmd: str, *extra: str, source: Path | None = None) -> list[str]:
        if source is not None:  # a rendered directory is used as it is
            return [cmd, str(source), "--ssh-config", str(self.hosts.ssh_config), *extra]
        return [cmd, str(self.topo), "--rehearse", "--ssh-config", str(self.hosts.ssh_config),
                *(x for s in self.sets for x in ("--set", s)), *extra]

    def cli(self, cmd: str, *extra: str, source: Path | None = None):
        return run_cli(*self.args(cmd, *extra, source=source))

    def deploy_json(self, *extra: str) -> dict:
        r = self.cli("deploy", "--format", "json", "--timeout", "120", *extra)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def status(self, exit_code: int = 0, *sets: str) -> dict[tuple[str, str], dict]:
        r = self.cli("status", "--format", "json", *(x for s in sets for x in ("--set", s)))
        assert r.exit_code == exit_code, r.output
        return {(u["host"], u["unit"]): u for u in json.loads(r.stdout)["units"]}

    def host(self, name: str):
        return self.hosts.hosts[NAMES.index(name)]

    def sh(self, name: str, cmd: str, check: bool = True) -> str:
        return self.hosts.ssh(self.host(name), cmd, check=check).stdout

    def show(self, name: str, unit: str, prop: str) -> str:
        return self.sh(name, f"systemctl show -p {prop} --value sgl-{DEP}-{unit}.service").strip()

    def main_pids(self) -> dict[tuple[str, str], int]:
        return {k: int(self.show(k[0], k[1], "MainPID")) for k in ALL_UNITS}

    def reloads(self) -> dict[str, int]:
        """How many times each host's systemd reloaded its configuration (PID 1's journal)."""
        return {n: len(re.findall(r"^Reloading", self.sh(n, "journalctl -q _PID=1 -o cat "
                                                            "--no-pager"), re.M)) for n in NAMES}


@pytest.fixture(scope="module")
def fleet(hosts, tmp_path_factory):
    topo = tmp_path_factory.mktemp("fleet") / "topo.yaml"
    topo.write_text(example_text())
    f = Fleet(hosts, topo)
    yield f
    run_cli(*f.args("down"))


def test_deploy_on_four_systemd_hosts(fleet):
    t0 = time.monotonic()
    r = fleet.cli("deploy", "--timeout", "120")
    took = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    print(f"\ndeploy on 4 systemd hosts (9 units): {took:.1f} s")
    for n in NAMES:
        assert f"{n}: supervisor systemd (system units in /etc/systemd/system)" in r.stderr
    assert "SUPERVISOR" in r.stdout and "systemd" in r.stdout
    # requests through every router reach the engines the plan gives it
    assert generate(ROUTERS["chat"])["engine_id"] == "chat-decode-0"
    assert generate(ROUTERS["big"])["engine_id"] == "big-regular-0"
    judged = {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)}
    assert judged and judged <= {"judge-regular-0", "judge-regular-1"}
    for host, unit in ALL_UNITS:
        svc = f"sgl-{DEP}-{unit}.service"
        assert fleet.sh(host, f"systemctl is-active {svc}").strip() == "active"
        assert fleet.sh(host, f"systemctl is-enabled {svc}").strip() == "enabled"
        # the unit file is a copy sgl-gen installed (and recorded), not a link into the root
        assert fleet.sh(host, f"test -f /etc/systemd/system/{svc} && ! test -L "
                              f"/etc/systemd/system/{svc} && echo ok").strip() == "ok"
    for n in NAMES:
        assert fleet.sh(n, f"systemctl is-enabled sgl-{DEP}.target").strip() == "enabled"
        man = json.loads(fleet.sh(n, f"cat /var/lib/sgl-gen/{DEP}/.sgl-gen/manifest.json"))
        assert man["supervisor"] == "systemd"
        assert man["systemd"]["dir"] == "/etc/systemd/system"
        assert f"sgl-{DEP}.target" in man["systemd"]["files"]
    st = fleet.status()
    assert set(st) == ALL_UNITS
    for k, u in st.items():
        assert (u["supervisor"], u["state"], u["restarts"]) == ("systemd", "running", 0), k
        assert u["active"] == "active (running)", k
        assert u["pid"] == int(fleet.show(k[0], k[1], "MainPID")), k
        assert u["healthy"] is (None if k[1] == "engine-big-regular-0-r1" else True), k
    r = fleet.cli("status")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].split() == ["HOST", "UNIT", "KIND", "SUPERVISOR", "STATE",
                                                "PID", "RESTARTS", "LAST_EXIT", "HEALTHY", "URL"]


def test_noop_redeploy_keeps_every_mainpid_and_runs_no_daemon_reload(fleet):
    pids, reloads = fleet.main_pids(), fleet.reloads()
    t0 = time.monotonic()
    doc = fleet.deploy_json()
    print(f"\nno-op redeploy on 4 systemd hosts: {time.monotonic() - t0:.1f} s")
    assert actions(doc) == {k: "unchanged" for k in ALL_UNITS}
    assert all(f == {"upload": [], "chmod": [], "remove": [], "keep": [], "adopt": [],
                     "install": [], "uninstall": []} for f in doc["files"].values()), doc["files"]
    assert fleet.main_pids() == pids
    assert fleet.reloads() == reloads
    r = fleet.cli("diff")
    assert r.exit_code == 0 and r.stdout.startswith(f"{DEP}: no changes\n"), r.output


def test_sigkill_engine_systemd_restarts_it_and_the_router_takes_it_back(fleet):
    unit = "engine-judge-regular-0"
    svc = f"sgl-{DEP}-{unit}.service"
    pid = int(fleet.show("node-d", unit, "MainPID"))
    follow = subprocess.Popen(
        [sys.executable, "-c", "from generator.cli import main; main()",
         *fleet.args("logs", unit, "-f", "-n", "0")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follow.stdout.readline, "")))
    reader.start()
    try:
        time.sleep(3)  # logs -f is connected and following
        t0 = time.monotonic()
        fleet.sh("node-d", f"kill -KILL {pid}")
        # no sgl-gen command in between: systemd restarts it, the router lists it healthy again
        wait_for("a new main process", lambda: fleet.show("node-d", unit, "MainPID") not in
              ("0", str(pid)), timeout=60)
        wait_for("the engine active again", lambda: fleet.show(
            "node-d", unit, "ActiveState") == "active", timeout=90)
        # the old process is gone: a reply from judge-regular-0 comes from the new one
        engine = f"http://{fleet.host('node-d').address}:31000"
        assert generate(engine)["engine_id"] == "judge-regular-0"
        print(f"\nSIGKILL -> engine serving again: {time.monotonic() - t0:.1f} s")
        wait_for("router-judge to list both workers healthy", lambda: all_healthy(
            ROUTERS["judge"], 2), timeout=60)
        # and the router sends requests again (which engine answers is its policy's choice)
        assert {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)} <= {
            "judge-regular-0", "judge-regular-1"}
        assert fleet.show("node-d", unit, "NRestarts") == "1"
        wait_for("logs -f to show the restart", lambda: any(
            f"node-d {unit} |" in x and "listening on" in x for x in lines), timeout=30)
    finally:
        follow.terminate()
        follow.wait(10)
        reader.join(10)
    assert all(x.startswith(f"node-d {unit} | ") for x in lines if x.strip()), lines[:5]
    st = fleet.status()
    assert st[("node-d", unit)]["restarts"] == 1
    assert st[("node-d", unit)]["last_exit"] == "killed 9"
    assert st[("node-d", unit)]["healthy"] is True
    # systemd's own record of the kill, in the unit's journal
    assert "status=9/KILL" in fleet.sh("node-d", f"journalctl -u {svc} -o cat -q --no-pager")
    r = fleet.cli("logs", unit, "-n", "40")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"==> node-d {unit} <==\n")
    assert "listening on" in r.stdout  # the engine's own lines, from the journal
    # the journal has it, the bash log file does not exist: systemd runs the scripts unredirected
    assert fleet.sh("node-d", f"test -e /var/lib/sgl-gen/{DEP}/logs/{unit}.log && echo yes || "
                              f"echo no").strip() == "no"


def test_one_groups_override_restarts_exactly_that_group(fleet):
    pids, reloads = fleet.main_pids(), fleet.reloads()
    fleet.topo.write_text(example_text().replace("mem_fraction_static: 0.8",
                                                      "mem_fraction_static: 0.7"))
    try:
        doc = fleet.deploy_json()
        assert actions(doc) == {k: "restarted" if k in JUDGE else "unchanged" for k in ALL_UNITS}
        assert doc["files"]["node-d"]["upload"] == ["bin/engine-judge-regular-0.sh",
                                                    "bin/engine-judge-regular-1.sh"]
        assert doc["files"]["node-d"]["install"] == []  # the unit files did not change
        after = fleet.main_pids()
        assert {k for k in ALL_UNITS if after[k] != pids[k]} == JUDGE
        assert fleet.reloads() == reloads
        judged = {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)}
        assert judged and judged <= {"judge-regular-0", "judge-regular-1"}
    finally:
        fleet.topo.write_text(example_text())
    doc = fleet.deploy_json()
    assert actions(doc) == {k: "restarted" if k in JUDGE else "unchanged" for k in ALL_UNITS}


def test_rolling_under_systemd_loses_no_request_and_changes_membership_live(fleet):
    """Issue "Change without downtime" under systemd: a group's change rolls out one engine at a
    time behind its router, and an engine removed and added back changes the router's workers
    live: its unit file is rewritten (daemon-reload), its process is not restarted."""
    pids = fleet.main_pids()
    router = ("node-d", "router-judge")
    service = f"sgl-{DEP}-router-judge.service"
    try:
        fleet.topo.write_text(example_text().replace("mem_fraction_static: 0.8",
                                                     "mem_fraction_static: 0.65"))
        with Load({"judge": ROUTERS["judge"]}, rate=20) as load:
            load.wait_ok(2)
            doc = fleet.deploy_json("--drain", "5")
            time.sleep(1)
        assert load.summary()["total"]["failed"] == 0, load.report()
        assert doc["rollout"]["batches"] == [["judge-regular-0"], ["judge-regular-1"]]
        after = fleet.main_pids()
        assert {k for k in ALL_UNITS if after[k] != pids[k]} == JUDGE
        # one judge engine fewer, then back: the router's workers change, the router stays
        changed = fleet.topo.read_text()
        fewer = changed.replace("total_gpus: 8", "total_gpus: 7").replace(
            "num_gpus: 2\n        num_gpus_per_engine: 1", "num_gpus: 1\n        num_gpus_per_engine: 1")
        assert fewer.count("num_gpus: 1\n") == 1
        for text, verb in ((fewer, "stopped"), (changed, "started")):
            fleet.topo.write_text(text)
            reloads = fleet.reloads()
            with Load({"judge": ROUTERS["judge"]}, rate=20) as load:
                load.wait_ok(2)
                doc = fleet.deploy_json("--drain", "5")
                time.sleep(1)
            assert load.summary()["total"]["failed"] == 0, load.report()
            acts = actions(doc)
            assert acts[router] == "updated"
            assert acts[("node-d", "engine-judge-regular-1")] == verb
            assert service in doc["files"]["node-d"]["install"]
            assert fleet.reloads()["node-d"] > reloads["node-d"]
            assert fleet.main_pids()[router] == pids[router]
            expected = 1 if verb == "stopped" else 2
            assert all_healthy(ROUTERS["judge"], expected), workers(ROUTERS["judge"])
        # the unit file systemd has now names both engines again
        unit = fleet.sh("node-d", f"systemctl cat {service}")
        assert "sgl-ssh-4hosts-engine-judge-regular-1.service" in unit
    finally:
        fleet.topo.write_text(example_text())
    doc = fleet.deploy_json()
    assert {k for k, a in actions(doc).items() if a != "unchanged"} == JUDGE


def test_a_unit_that_fails_at_start_fails_the_deploy_with_its_journal(fleet, tmp_path):
    out = tmp_path / "out"
    r = run_cli("render", str(fleet.topo), "--rehearse", "-o", str(out), "-q",
                *(x for s in fleet.sets for x in ("--set", s)))
    assert r.exit_code == 0, r.output
    rendered = out / DEP
    script = rendered / "hosts" / "node-d" / "bin" / "engine-judge-regular-1.sh"
    script.write_text(script.read_text().replace("  --port 31001 \\\n",
                                                 "  --port 31001 \\\n  --no-such-flag \\\n"))
    reseal(rendered)  # a hand-edited render is deployed only with its MANIFEST.sha256 updated
    r = fleet.cli("deploy", "--timeout", "60", source=rendered)
    assert r.exit_code == 3, r.output
    err = r.stderr
    assert re.search(r"node-d: engine-judge-regular-1 exited with status 2 \(systemd: "
                     r"(activating \(auto-restart\)|failed \(failed\))\) while waiting for "
                     r"judge-regular-1 to become healthy", err), err
    assert "the rollout stopped here: judge-regular-1 left out of router-judge" in err
    assert f"last lines of the journal of sgl-{DEP}-engine-judge-regular-1.service:" in err
    assert "unrecognized arguments: --no-such-flag" in err
    st = fleet.status(3)
    assert st[("node-d", "engine-judge-regular-1")]["state"] in ("dead", "running")
    doc = fleet.deploy_json()  # the topology again: fixed
    assert actions(doc)[("node-d", "engine-judge-regular-1")] in ("started", "restarted")
    assert doc["files"]["node-d"]["upload"] == ["bin/engine-judge-regular-1.sh"]
    assert all(u["state"] == "running" and u["healthy"] is not False
               for u in fleet.status().values())


def test_reboot_units_come_back_in_order_and_other_routers_lose_nothing(fleet, hosts):
    node = fleet.host("node-d")
    stop, results = threading.Event(), {"ok": 0, "errors": []}

    def loop() -> None:
        while not stop.is_set():
            for model in ("chat", "big"):
                try:
                    generate(ROUTERS[model])
                    results["ok"] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is recorded
                    results["errors"].append(f"{model}: {exc!r}")
    t = threading.Thread(target=loop)
    t.start()
    try:
        t0 = time.monotonic()
        down = hosts.poweroff(node)
        up = hosts.boot(node)
        wait_for("router-judge to list both engines healthy after the reboot",
              lambda: all_healthy(ROUTERS["judge"], 2), timeout=120)
        healthy = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
    print(f"\nreboot: poweroff {down:.1f} s, boot to ssh {up:.1f} s, poweroff -> router-judge "
          f"lists its workers healthy {healthy:.1f} s; {results['ok']} requests through the "
          f"other routers meanwhile")
    assert results["errors"] == [] and results["ok"] > 0
    # in order: the router became active only after both engines were (engines are active only
    # once /health answers: ExecStartPost), all by themselves after boot
    when = {u: int(fleet.show("node-d", u, "ActiveEnterTimestampMonotonic"))
            for u in ("engine-judge-regular-0", "engine-judge-regular-1", "router-judge")}
    assert 0 < max(when["engine-judge-regular-0"], when["engine-judge-regular-1"]) \
        <= when["router-judge"], when
    st = fleet.status()
    assert all(st[k]["state"] == "running" and st[k]["healthy"] is not False for k in ALL_UNITS)
    assert {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)} <= {
        "judge-regular-0", "judge-regular-1"}


def test_a_fleet_mixing_systemd_and_bash_hosts(fleet):
    """node-d moves to the bash launcher (its units move: systemd stops them, bash starts them),
    and back."""
    doc = fleet.deploy_json("--set", "cluster.hosts[3].supervisor=bash")
    moved = {k: a for k, a in actions(doc).items() if a != "unchanged"}
    assert moved == {("node-d", "engine-judge-regular-0"): "restarted",
                     ("node-d", "engine-judge-regular-1"): "restarted",
                     ("node-d", "router-judge"): "restarted"}
    reasons = {u["unit"]: u["reason"] for u in doc["units"] if u["host"] == "node-d"}
    assert set(reasons.values()) == {"moves from systemd to bash"}
    assert doc["supervisors"]["node-d"] == "bash (sgl-gen-host.sh)"
    assert doc["supervisors"]["node-a"] == "systemd (system units in /etc/systemd/system)"
    assert doc["files"]["node-d"]["uninstall"] == sorted(
        [f"sgl-{DEP}-{u}.service" for _, u in JUDGE | {("node-d", "router-judge")}]
        + [f"sgl-{DEP}.target"])
    assert fleet.sh("node-d", f"ls /etc/systemd/system | grep -c sgl-{DEP} || true").strip() == "0"
    st = fleet.status(0, "cluster.hosts[3].supervisor=bash")
    assert {k: u["supervisor"] for k, u in st.items()} == {
        k: "bash" if k[0] == "node-d" else "systemd" for k in ALL_UNITS}
    assert all(u["state"] == "running" for u in st.values())
    assert {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)} <= {
        "judge-regular-0", "judge-regular-1"}
    doc = fleet.deploy_json()
    assert {k for k, a in actions(doc).items() if a != "unchanged"} == JUDGE | {
        ("node-d", "router-judge")}
    assert {u["reason"] for u in doc["units"] if u["action"] != "unchanged"} == {
        "moves from bash to systemd"}
    assert fleet.sh("node-d", f"systemctl is-active sgl-{DEP}-router-judge.service").strip() \
        == "active"


def test_down_stops_and_disables_and_a_second_down_changes_nothing(fleet):
    r = fleet.cli("down")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{DEP}: stopped 9 unit(s)\n"
    for n in NAMES:
        active = fleet.sh(n, f"systemctl list-units --state=active --plain --no-legend "
                             f"'sgl-{DEP}*'").strip()
        assert active == "", active
        listening = fleet.sh(n, "python3 -c \"import sys; [print(l.split()[1]) for f in "
                                "('/proc/net/tcp', '/proc/net/tcp6') for l in open(f).read()"
                                ".splitlines()[1:] if l.split()[3] == '0A']\"").split()
        assert {int(x.rsplit(":", 1)[1], 16) for x in listening} == {22}, (n, listening)
        assert fleet.sh(n, f"systemctl is-enabled sgl-{DEP}.target", check=False).strip() \
            == "disabled"
        # the files stay: units, scripts, manifest
        assert fleet.sh(n, f"ls /etc/systemd/system/sgl-{DEP}.target "
                           f"/var/lib/sgl-gen/{DEP}/sgl-gen-host.sh | wc -l").strip() == "2"
    reloads = fleet.reloads()
    r = fleet.cli("down")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{DEP}: stopped 0 unit(s)\n"
    assert fleet.reloads() == reloads  # nothing enabled, nothing running: no systemctl at all
    st = fleet.status(exit_code=3)
    assert {u["state"] for u in st.values()} == {"stopped"}


# ---------------------------------------------------------------------------------------------
# A non-root SSH user: user units (systemctl --user), which need lingering

SOLO = """\
deployment: {{name: solo, hf_checkpoint: /models/m, total_gpus: 1}}
runtime: {{python: {python}, workdir: /home/alice/sgl}}
cluster:
  gpus_per_node: 1
  hosts:
    - {{name: one, address: {address}, user: alice}}
sglang:
  - name: m
    server_groups:
      - {{worker_type: regular, num_gpus: 1, num_gpus_per_engine: 1}}
"""


def test_non_root_user_units_need_lingering(hosts, tmp_path):
    host = hosts.hosts[0]
    topo = tmp_path / "solo.yaml"
    topo.write_text(SOLO.format(python=sys.executable, address=host.address))
    ssh = ["--ssh-config", str(hosts.ssh_config_for("alice"))]
    hosts.disable_linger(host, "alice")
    r = run_cli("deploy", str(topo), "--rehearse", *ssh, "--timeout", "60")
    assert r.exit_code == 3, r.output
    assert "one: alice is not root, so its units are user units (systemctl --user)" in r.stderr
    assert "(hint: as root on one: loginctl enable-linger alice)" in r.stderr
    # preflight changed nothing: no root, no unit file
    assert "sgl" not in hosts.ssh(host, "ls -A /home/alice", user="alice").stdout.split()
    assert hosts.ssh(host, "test -e /home/alice/.config/systemd/user/sgl-solo.target && echo "
                           "yes || echo no", user="alice").stdout.strip() == "no"

    hosts.enable_linger(host, "alice")
    try:
        r = run_cli("deploy", str(topo), "--rehearse", *ssh, "--timeout", "60")
        assert r.exit_code == 0, r.output
        assert "one: supervisor systemd (user units of alice in " \
               "/home/alice/.config/systemd/user)" in r.stderr
        env = "XDG_RUNTIME_DIR=/run/user/$(id -u)"
        for unit in ("engine-m-regular-0", "router-m"):
            got = hosts.ssh(host, f"{env} systemctl --user is-active sgl-solo-{unit}.service",
                            user="alice").stdout.strip()
            assert got == "active", unit
            pid = hosts.ssh(host, f"{env} systemctl --user show -p MainPID --value "
                                  f"sgl-solo-{unit}.service", user="alice").stdout.strip()
            assert hosts.ssh(host, f"stat -c %U /proc/{pid}").stdout.strip() == "alice"
        assert generate(f"http://{host.address}:30000")["engine_id"] == "m-regular-0"
        r = run_cli("status", str(topo), "--rehearse", *ssh, "--format", "json")
        assert r.exit_code == 0, r.output
        assert {u["supervisor"] for u in json.loads(r.stdout)["units"]} == {"systemd"}
        r = run_cli("logs", str(topo), "--rehearse", *ssh, "engine-m-regular-0", "-n", "20")
        assert r.exit_code == 0 and "listening on" in r.stdout, r.output
        r = run_cli("down", str(topo), "--rehearse", *ssh)
        assert r.exit_code == 0 and r.stdout == "solo: stopped 2 unit(s)\n", r.output
    finally:
        run_cli("down", str(topo), "--rehearse", *ssh)
