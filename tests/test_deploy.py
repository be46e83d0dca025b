"""`sgl-gen deploy / diff / status / logs / down` on real SSH hosts: four network namespaces, each
with its own address and sshd (tests/sshhosts.py), the rehearsal engine and the real
sglang-router 0.3.2. examples/ssh-4hosts.yaml: a PD model, an engine spanning two hosts and a
plain two-engine model, one router each."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from generator.deploy.transport import parallel as _orig_parallel
from tests.helpers import EXAMPLES, generate, reseal, run_cli
from tests.sshhosts import SshHosts, available
from tests.tools import missing

pytestmark = pytest.mark.slow

EXAMPLE = EXAMPLES / "ssh-4hosts.yaml"
HOSTS = ["node-a", "node-b", "node-c", "node-d"]
ALL_UNITS = {
    ("node-a", "engine-chat-prefill-0"), ("node-a", "engine-chat-decode-0"),
    ("node-a", "router-chat"), ("node-b", "engine-big-regular-0-r0"), ("node-b", "router-big"),
    ("node-c", "engine-big-regular-0-r1"), ("node-d", "engine-judge-regular-0"),
    ("node-d", "engine-judge-regular-1"), ("node-d", "router-judge"),
}
ROUTERS = {"chat": "http://10.207.6.11:30000", "big": "http://10.207.6.12:30000",
           "judge": "http://10.207.6.14:30000"}


@pytest.fixture(scope="module")
def hosts():
    why = available()
    if why:
        missing(f"SSH test hosts: {why}")
    with SshHosts(4) as h:
        yield h


class Deployment:
    """The example on the netns hosts, each host with its own workdir under tmp_path."""

    def __init__(self, hosts: SshHosts, tmp_path: Path, topo: Path = EXAMPLE, *sets: str):
        self.hosts, self.topo, self.tmp = hosts, str(topo), tmp_path
        # the SSH test hosts (tests/sshhosts.py) have no systemd: the bash launcher
        self.sets = [f"runtime.python={sys.executable}", "runtime.supervisor=bash",
                     *(f"cluster.hosts[{i}].workdir={tmp_path}/w{i}" for i in range(4)), *sets]

    def root(self, i: int) -> Path:
        return self.tmp / f"w{i}" / "ssh-4hosts"

    def ssh(self) -> list[str]:
        return ["--ssh-config", str(self.hosts.ssh_config)]

    def args(self, cmd: str, *extra: str, source: str | None = None) -> list[str]:
        if source is not None:
            return [cmd, source, *self.ssh(), *extra]
        return [cmd, self.topo, "--rehearse", *self.ssh(),
                *(x for s in self.sets for x in ("--set", s)), *extra]

    def cli(self, cmd: str, *extra: str, source: str | None = None):
        return run_cli(*self.args(cmd, *extra, source=source))

    def deploy_json(self, *extra: str, source: str | None = None) -> dict:
        r = self.cli("deploy", "--format", "json", "--timeout", "90", *extra, source=source)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def status(self, exit_code: int = 0) -> dict[tuple[str, str], dict]:
        r = self.cli("status", "--format", "json")
        assert r.exit_code == exit_code, r.output
        return {(u["host"], u["unit"]): u for u in json.loads(r.stdout)["units"]}

    def down(self) -> None:
        r = self.cli("down")
        assert r.exit_code == 0, r.output

    def nothing_running(self) -> None:
        """Only sshd is left in each namespace, and it is the only listener. A process that has
        exited but is not yet reaped by its parent (state Z: on a machine whose PID 1 reaps
        orphans late, every stopped daemon passes through it) runs nothing and holds no port, as
        the host script's own `alive` says; a process still exiting gets a moment to finish."""
        for h in self.hosts.hosts:
            assert h.sshd is not None
            sshd = h.sshd.pid
            others = _live_others(self.hosts.ns_pids(h), sshd)
            deadline = time.monotonic() + 5
            while others and time.monotonic() < deadline:
                time.sleep(0.2)
                others = _live_others(self.hosts.ns_pids(h), sshd)
            assert others == {}, h.address
            assert [line.split()[3] for line in self.hosts.listening(h)] == [f"{h.address}:22"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _state(pid: int) -> str:
    """The one-letter state from /proc/PID/stat ("" once the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split(" ", 1)[0]


def _live_others(pids: list[int], sshd: int) -> dict[int, str]:
    """Processes other than sshd (and its sessions) that have not exited: pid -> "STATE cmdline"."""
    out = {}
    for p in pids:
        cmd, state = _cmdline(p), _state(p)
        if p == sshd or cmd.startswith(("ip netns exec", "sshd:")) or state in ("", "Z", "X"):
            continue
        out[p] = f"{state} {cmd}"
    return out


@pytest.fixture
def deployment(hosts, tmp_path):
    made: list[Deployment] = []

    def make(*sets: str, topo: Path = EXAMPLE) -> Deployment:
        d = Deployment(hosts, tmp_path, topo, *sets)
        made.append(d)
        return d
    yield make
    for d in made:  # whatever happened: leave the hosts empty for the next test
        run_cli(*d.args("down"))


def actions(doc: dict) -> dict[tuple[str, str], str]:
    return {(u["host"], u["unit"]): u["action"] for u in doc["units"]}


def test_deploy_redeploy_change_one_group_down(deployment, tmp_path):
    topo = tmp_path / "topo.yaml"
    topo.write_text(EXAMPLE.read_text())
    d = deployment(topo=topo)

    first = d.deploy_json()
    assert first["ok"] is True and first["error"] is None
    assert actions(first) == {k: "started" for k in ALL_UNITS}
    assert {h: len(f["upload"]) > 0 for h, f in first["files"].items()} == {h: True for h in HOSTS}

    # every router answers, through the engines the plan gives it
    assert generate(ROUTERS["chat"])["engine_id"] == "chat-decode-0"
    assert generate(ROUTERS["big"])["engine_id"] == "big-regular-0"
    judged = {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)}
    assert judged and judged <= {"judge-regular-0", "judge-regular-1"}

    before = d.status()
    assert set(before) == ALL_UNITS
    assert {k: (u["state"], u["healthy"]) for k, u in before.items()} == {
        k: ("running", None if k[1] == "engine-big-regular-0-r1" else True) for k in ALL_UNITS}
    # what is deployed is recorded on each host
    man = json.loads((d.root(3) / ".sgl-gen" / "manifest.json").read_text())
    assert man["deployment"] == "ssh-4hosts" and man["host"] == "node-d"
    assert sorted(man["units"]) == ["engine-judge-regular-0", "engine-judge-regular-1",
                                    "router-judge"]
    assert man["files"]["bin/router-judge.sh"] == __import__("hashlib").sha256(
        (d.root(3) / "bin" / "router-judge.sh").read_bytes()).hexdigest()

    # nothing changed: nothing uploaded, nothing restarted
    again = d.deploy_json()
    assert actions(again) == {k: "unchanged" for k in ALL_UNITS}
    assert again["files"] == {h: {"upload": [], "chmod": [], "remove": [], "keep": [],
                                  "adopt": [], "install": [], "uninstall": []} for h in HOSTS}
    assert {k: u["pid"] for k, u in d.status().items()} == {k: u["pid"] for k, u in before.items()}

    # one group's override changes: exactly that group's engines restart
    topo.write_text(EXAMPLE.read_text().replace("mem_fraction_static: 0.8",
                                                "mem_fraction_static: 0.7"))
    r = d.cli("diff", "--format", "json")
    assert r.exit_code == 0, r.output
    judge = {("node-d", "engine-judge-regular-0"), ("node-d", "engine-judge-regular-1")}
    assert actions(json.loads(r.stdout)) == {k: "restart" if k in judge else "none"
                                             for k in ALL_UNITS}
    r = d.cli("diff")
    assert "restart engine" in r.stdout and "engine-judge-regular-1" in r.stdout
    changed = d.deploy_json()
    assert actions(changed) == {k: "restarted" if k in judge else "unchanged" for k in ALL_UNITS}
    assert changed["files"]["node-d"]["upload"] == ["bin/engine-judge-regular-0.sh",
                                                    "bin/engine-judge-regular-1.sh"]
    assert all(changed["files"][h]["upload"] == [] for h in HOSTS if h != "node-d")
    after = d.status()
    assert {k for k in ALL_UNITS if after[k]["pid"] != before[k]["pid"]} == judge
    assert all(u["state"] == "running" for u in after.values())
    assert "--mem-fraction-static 0.7" in (d.root(3) / "bin" / "engine-judge-regular-0.sh"
                                           ).read_text()
    judged = {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)}
    assert judged and judged <= {"judge-regular-0", "judge-regular-1"}

    # rolling restart: refused for an engine that is the only worker of its role ...
    pids = {k: u["pid"] for k, u in after.items()}
    r = d.cli("restart", "--rolling")
    assert r.exit_code == 3
    assert ("chat: chat-prefill-0 would restart, but it is the only serving prefill engine of "
            "chat: its router would have no prefill worker meanwhile" in r.stderr)
    assert "big: big-regular-0 would restart, but it is the only serving regular engine" \
        in r.stderr
    assert {k: u["pid"] for k, u in d.status().items()} == pids
    # ... and under a steady request loop, the router never loses a request
    stop, results = threading.Event(), {"ok": 0, "errors": []}

    def loop() -> None:
        while not stop.is_set():
            try:
                generate(ROUTERS["judge"])
                results["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                results["errors"].append(repr(exc))
    t = threading.Thread(target=loop)
    t.start()
    try:
        r = d.cli("restart", "--rolling", "engine-judge-regular-0", "engine-judge-regular-1")
    finally:
        stop.set()
        t.join()
    assert r.exit_code == 0, r.output
    assert r.stdout == ("ssh-4hosts: restarted 2 engine(s): judge-regular-0, judge-regular-1\n")
    assert results["errors"] == [] and results["ok"] > 0
    rolled = d.status()
    assert {k for k in ALL_UNITS if rolled[k]["pid"] != pids[k]} == judge
    judged = {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)}
    assert judged and judged <= {"judge-regular-0", "judge-regular-1"}

    r = d.cli("logs", "engine-judge-regular-0", "-n", "5")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("==> node-d engine-judge-regular-0 <==\n")

    d.down()
    d.nothing_running()
    r = d.cli("status")
    assert r.exit_code == 3
    head, *rows = r.stdout.splitlines()
    assert head.split()[:5] == ["HOST", "UNIT", "KIND", "SUPERVISOR", "STATE"]
    assert rows and all(line.split()[3:5] == ["bash", "stopped"] for line in rows)


def test_unreachable_host_then_changed_host_key(deployment, hosts):
    d = deployment()
    node_b, node_d = hosts.hosts[1], hosts.hosts[3]

    hosts.stop_sshd(node_d)
    try:
        r = d.cli("deploy", "--connect-timeout", "3")
    finally:
        hosts.start_sshd(node_d)
    assert r.exit_code == 3
    assert "node-d: cannot connect to root@10.207.6.14:" in r.stderr
    d.nothing_running()  # a host that cannot be reached stops the deploy before any change

    # the host was reinstalled: a new key. Refused, with what to do about it.
    hosts.new_host_key(node_b)
    hosts.restart_sshd(node_b)
    r = d.cli("deploy")
    assert r.exit_code == 3
    assert "node-b: host key of root@10.207.6.12 CHANGED" in r.stderr
    assert f"ssh-keygen -f {hosts.known_hosts} -R 10.207.6.12" in r.stderr
    d.nothing_running()

    # the operator removes the old key: the new one is unknown, refused unless accepted
    subprocess.run(["ssh-keygen", "-f", str(hosts.known_hosts), "-R", "10.207.6.12"],
                   check=True, capture_output=True)
    r = d.cli("deploy")
    assert r.exit_code == 3
    assert "node-b: cannot connect to root@10.207.6.12:" in r.stderr
    assert "--accept-new-host-keys" in r.stderr
    doc = d.deploy_json("--accept-new-host-keys")
    assert actions(doc) == {k: "started" for k in ALL_UNITS}
    new_key = " ".join(Path(f"{node_b.host_key}.pub").read_text().split()[:2])
    assert f"10.207.6.12 {new_key}" in hosts.known_hosts.read_text().splitlines()
    assert generate(ROUTERS["big"])["engine_id"] == "big-regular-0"
    d.down()
    d.nothing_running()


def test_engine_that_exits_at_start_then_fixed(deployment, tmp_path):
    d = deployment()
    out = tmp_path / "out"
    r = run_cli("render", d.topo, "--rehearse", "-o", str(out), "-q",
                *(x for s in d.sets for x in ("--set", s)))
    assert r.exit_code == 0, r.output
    rendered = out / "ssh-4hosts"
    script = rendered / "hosts" / "node-d" / "bin" / "engine-judge-regular-1.sh"
    script.write_text(script.read_text().replace("  --port 31001 \\\n",
                                                 "  --port 31001 \\\n  --no-such-flag \\\n"))
    reseal(rendered)  # a hand-edited render is deployed only with its MANIFEST.sha256 updated
    r = d.cli("deploy", "--timeout", "60", source=str(rendered))
    assert r.exit_code == 3
    err = r.stderr
    assert "node-d: engine-judge-regular-1 exited with status 2 while waiting for engines" in err
    assert f"{d.root(3)}/logs/engine-judge-regular-1.log" in err
    assert "unrecognized arguments: --no-such-flag" in err
    st = d.status(exit_code=3)
    assert st[("node-d", "engine-judge-regular-1")]["state"] == "dead"
    assert st[("node-d", "router-judge")]["state"] == "stopped"  # routers wait for engines

    r = run_cli("render", d.topo, "--rehearse", "-o", str(out), "-q",
                *(x for s in d.sets for x in ("--set", s)))
    assert r.exit_code == 0, r.output
    doc = d.deploy_json(source=str(rendered))
    acts = actions(doc)
    assert acts[("node-d", "engine-judge-regular-1")] == "started"
    assert {k for k, a in acts.items() if a == "started"} == {
        ("node-d", "engine-judge-regular-1"), ("node-a", "router-chat"),
        ("node-b", "router-big"), ("node-d", "router-judge")}
    assert doc["files"]["node-d"]["upload"] == ["bin/engine-judge-regular-1.sh"]
    judged = {generate(ROUTERS["judge"])["engine_id"] for _ in range(6)}
    assert judged and judged <= {"judge-regular-0", "judge-regular-1"}
    d.down()
    d.nothing_running()


def test_health_timeout_then_rerun_converges(deployment):
    d = deployment("runtime.env.SGLGEN_REHEARSAL_STARTUP_DELAY='6'")
    r = d.cli("deploy", "--timeout", "2")
    assert r.exit_code == 3
    assert "timed out after 2s waiting for engines to become healthy: " in r.stderr
    assert "\nnode-a: engine-chat-decode-0: GET http://10.207.6.11:31001/health -> 503 " in r.stderr
    doc = d.deploy_json()
    acts = actions(doc)
    assert {k for k, a in acts.items() if a == "started"} == {
        ("node-a", "router-chat"), ("node-b", "router-big"), ("node-d", "router-judge")}
    assert {k for k, a in acts.items() if a == "unchanged"} == {
        k for k in ALL_UNITS if not k[1].startswith("router-")}
    assert generate(ROUTERS["chat"])["engine_id"] == "chat-decode-0"
    d.down()
    d.nothing_running()


def test_dry_run_and_out_dir_options(deployment, tmp_path):
    d = deployment()
    r = d.cli("deploy", "--dry-run")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ssh-4hosts: dry run, nothing changed\n")
    assert not d.root(0).exists()
    out = tmp_path / "o"
    assert run_cli("render", str(EXAMPLE), "-o", str(out), "-q").exit_code == 0
    r = run_cli("deploy", str(out / "ssh-4hosts"), "--rehearse")
    assert r.exit_code == 2
    assert "is a rendered deployment: it is used as it is" in r.stderr
    r = d.cli("deploy", "--hosts", "node-z")
    assert r.exit_code == 2
    assert "--hosts: unknown host(s) node-z" in r.stderr


def test_connection_dropped_mid_upload_leaves_no_half_file(deployment, monkeypatch):
    import paramiko

    from generator.deploy import commands as dep

    d = deployment()
    real_putfo = paramiko.SFTPClient.putfo
    calls = {"n": 0}

    def dropping_putfo(self, fl, remotepath, file_size=0, callback=None, confirm=True):
        calls["n"] += 1
        if calls["n"] == 3:  # the third file: half of it arrives, then the connection drops
            data = fl.read()
            with self.open(remotepath, "wb") as f:
                f.write(data[: len(data) // 2])
            self.sock.get_transport().close()
            raise EOFError("connection dropped")
        return real_putfo(self, fl, remotepath, file_size, callback, confirm)

    monkeypatch.setattr(dep, "parallel", lambda items, fn, workers=32: [
        fn(x) for x in items] if fn.__name__ == "put_files" else _orig_parallel(items, fn, workers))
    monkeypatch.setattr(paramiko.SFTPClient, "putfo", dropping_putfo)
    r = d.cli("deploy", "--timeout", "60")
    monkeypatch.undo()
    assert r.exit_code == 3
    assert "node-a: uploading " in r.stderr and "EOFError: connection dropped" in r.stderr
    root = d.root(0)
    partial = sorted(p.name for p in root.rglob("*.sgl-gen-tmp"))
    assert len(partial) == 1
    out = d.tmp / "render"
    assert run_cli("render", d.topo, "--rehearse", "-o", str(out), "-q",
                   *(x for s in d.sets for x in ("--set", s))).exit_code == 0
    rendered = out / "ssh-4hosts" / "hosts" / "node-a"
    for p in root.rglob("*"):  # every file in place is complete: the upload went to a temp name
        if p.is_file() and not p.name.endswith(".sgl-gen-tmp") \
                and p.relative_to(root).parts[0] != ".sgl-gen":
            assert p.read_bytes() == (rendered / p.relative_to(root)).read_bytes(), p
    # what sgl-gen owns there was recorded before the first upload: the next deploy may replace
    # or remove every file the interrupted one wrote, and nothing else
    owned = set(json.loads((root / ".sgl-gen" / "manifest.json").read_text())["files"])
    assert owned == {p.relative_to(rendered).as_posix() for p in rendered.rglob("*")
                     if p.is_file()}
    doc = d.deploy_json()
    assert actions(doc) == {k: "started" for k in ALL_UNITS}
    assert sorted(root.rglob("*.sgl-gen-tmp")) == []
    assert generate(ROUTERS["chat"])["engine_id"] == "chat-decode-0"
    d.down()
    d.nothing_running()
