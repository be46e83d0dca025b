"""Deploy benchmark on real SSH hosts (tests/sshhosts.py: network namespaces, each with its own
address and sshd), the rehearsal engine and the real sglang-router. Prints, measured in this one
run (median of --repeat runs each):

* `sgl-gen deploy` wall time onto 1 host and onto 8 hosts (same work per host: one model of two
  engines and its router), and the ratio 8/1 (parallel fan-out keeps it near 1);
* the no-op redeploy time on 8 hosts (nothing uploaded, nothing restarted: checked, not assumed);
* the same 8-host deployment done by an equivalent Ansible playbook (copy the rendered files,
  start engines, wait for their health, start routers, wait until each router lists its workers
  healthy) on the same hosts, its no-op rerun, and the ratios Ansible / sgl-gen.

Figures are printed, never asserted. Needs root, sshd and ansible-core:
`make bench-deploy` (installs ansible-core into .cache/ansible-venv first), or
`python tests/bench_deploy.py --ansible-playbook PATH`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.sshhosts import SshHosts, available  # noqa: E402

GPUS_PER_HOST = 2


def topology(name: str, hosts: SshHosts, n: int, workdir: Path) -> dict[str, Any]:
    """n hosts, each running one model (two 1-GPU engines) and that model's router."""
    return {
        "deployment": {"name": name, "hf_checkpoint": "/models/bench", "total_gpus": n * 2},
        "cluster": {"gpus_per_node": GPUS_PER_HOST, "hosts": [
            {"name": f"h{i}", "address": h.address, "user": "root",
             "workdir": str(workdir / f"h{i}")} for i, h in enumerate(hosts.hosts[:n])]},
        # the SSH test hosts (tests/sshhosts.py) have no systemd: the bash launcher
        "runtime": {"python": sys.executable, "supervisor": "bash"},
        "sglang": [{"name": f"m{i}", "model_path": f"/models/m{i}", "update_weights": False,
                    "server_groups": [{"worker_type": "regular", "num_gpus": GPUS_PER_HOST,
                                       "num_gpus_per_engine": 1}]} for i in range(n)],
    }


def sgl_gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "generator.cli", *args], cwd=REPO,
                          capture_output=True, text=True)


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
          ) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd or REPO)
    secs = time.perf_counter() - t
    print(f"  {secs:6.2f}s  {' '.join(Path(a).name if '/' in a else a for a in argv[:5])}",
          file=sys.stderr, flush=True)
    return secs, r


def check(r: subprocess.CompletedProcess[str], what: str) -> None:
    if r.returncode != 0:
        sys.exit(f"{what} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


class Bench:
    def __init__(self, hosts: SshHosts, tmp: Path):
        self.hosts, self.tmp = hosts, tmp

    def topo(self, n: int) -> Path:
        path = self.tmp / f"bench-{n}h.yaml"
        if not path.exists():
            doc = topology(f"bench-{n}h", self.hosts, n, self.tmp / f"w{n}")
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def ssh(self) -> list[str]:
        return ["--ssh-config", str(self.hosts.ssh_config)]

    def deploy(self, n: int) -> tuple[float, dict[str, Any]]:
        secs, r = timed([sys.executable, "-m", "generator.cli", "deploy", str(self.topo(n)),
                         "--rehearse", *self.ssh(), "--format", "json", "--timeout", "120"])
        check(r, f"sgl-gen deploy ({n} host(s))")
        return secs, json.loads(r.stdout)

    def down(self, n: int) -> None:
        check(sgl_gen("down", str(self.topo(n)), "--rehearse", *self.ssh()), "sgl-gen down")
        for h in self.hosts.hosts[:n]:  # nothing may be left to skew the next run
            listening = [line.split()[3] for line in self.hosts.listening(h)]
            if listening != [f"{h.address}:22"]:
                sys.exit(f"{h.address}: still listening after down: {listening}")

    def routers_answer(self, n: int) -> None:
        plan = json.loads(sgl_gen("plan", str(self.topo(n)), "--json").stdout)
        for m in plan["models"]:
            req = urllib.request.Request(
                f"{m['router']['url']}/generate", method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode())
            with urllib.request.urlopen(req, timeout=30) as resp:
                engine = json.loads(resp.read())["sgl_gen"]["engine_id"]
            if not engine.startswith(f"{m['name']}-"):
                sys.exit(f"router of {m['name']} answered from {engine}")

    # -- the floor: the same starts and checks, run directly inside the namespaces, no SSH ----
    def direct(self, n: int) -> float:
        """Start every host's engines (all hosts at once), wait for their health, start the
        routers, wait until each lists its workers healthy: what any deploy tool has to wait
        for on this machine. The files are already on the hosts (a deploy put them there)."""
        plan = json.loads(sgl_gen("plan", str(self.topo(n)), "--json").stdout)
        host_of = {node["index"]: node for node in plan["nodes"]}
        ns = {h.address: h.namespace for h in self.hosts.hosts}
        units: dict[str, dict[str, list[str]]] = {
            node["host"]: {"engine": [], "router": []} for node in plan["nodes"]}
        health, workers = [], []
        for m in plan["models"]:
            for e in m["engines"]:
                for pl in e["placements"]:
                    units[host_of[pl["node"]]["host"]]["engine"].append(
                        f"engine-{e['id']}" if e["nnodes"] == 1
                        else f"engine-{e['id']}-r{pl['node_rank']}")
                health.append(f"{e['url']}/health")
            units[host_of[m["router"]["node"]]["host"]]["router"].append(f"router-{m['name']}")
            workers.append((f"{m['router']['url']}/workers", len(m["engines"])))
        t = time.perf_counter()
        for kind, checks in (("engine", [(u, None) for u in health]), ("router", workers)):
            procs = []
            for node in plan["nodes"]:
                root = f"{node['workdir']}/{plan['deployment']['name']}"
                procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns[node["address"]], "env", f"SGLGEN_ROOT={root}",
                     "bash", f"{root}/sgl-gen-host.sh", "start", *units[node["host"]][kind]],
                    stdout=subprocess.DEVNULL))
            for pr in procs:
                if pr.wait() != 0:
                    sys.exit("sgl-gen-host.sh start failed")
            pending = list(checks)
            while pending:
                pending = [(url, want) for url, want in pending if not _ready(url, want)]
                if pending:
                    time.sleep(0.05)
        return time.perf_counter() - t

    # -- Ansible: the same deployment, from the same render --------------------------------
    def ansible_files(self, n: int, render_dir: Path) -> Path:
        d = self.tmp / "ansible"
        d.mkdir(exist_ok=True)
        plan = json.loads((render_dir / "plan.json").read_text())
        hostvars: dict[str, dict[str, Any]] = {}
        for node in plan["nodes"]:
            hostvars[node["host"]] = {
                "ansible_host": node["address"], "ansible_user": "root",
                "ansible_python_interpreter": sys.executable,
                "root": f"{node['workdir']}/{plan['deployment']['name']}",
                "engines": [], "engine_health": [], "routers": [], "router_urls": []}
        host_of = {node["index"]: node["host"] for node in plan["nodes"]}
        for m in plan["models"]:
            for e in m["engines"]:
                for p in e["placements"]:
                    hv = hostvars[host_of[p["node"]]]
                    hv["engines"].append(f"engine-{e['id']}" if e["nnodes"] == 1
                                         else f"engine-{e['id']}-r{p['node_rank']}")
                    if p["node_rank"] == 0:
                        hv["engine_health"].append(f"{e['url']}/health")
            hv = hostvars[host_of[m["router"]["node"]]]
            hv["routers"].append(f"router-{m['name']}")
            hv["router_urls"].append({"url": f"{m['router']['url']}/workers",
                                      "expect": len(m["engines"])})
        (d / "inventory.yaml").write_text(yaml.safe_dump({"all": {"hosts": hostvars}}))
        (d / "ansible.cfg").write_text(
            "[defaults]\n"
            f"inventory = {d / 'inventory.yaml'}\n"
            "forks = 16\nhost_key_checking = True\nretry_files_enabled = False\n"
            "[ssh_connection]\n"
            f"ssh_args = -F {self.hosts.ssh_config} -o ControlMaster=auto -o ControlPersist=60s\n"
            "pipelining = True\n")
        # the play a user would write for the same job, with the same order and checks
        play = [{
            "name": "deploy the rendered SGLang plan", "hosts": "all", "gather_facts": False,
            "tasks": [
                {"name": "upload the rendered files (checksum compared, like sgl-gen)",
                 "ansible.builtin.copy": {"src": f"{render_dir}/hosts/{{{{ inventory_hostname }}}}/",
                                          "dest": "{{ root }}/", "mode": "preserve"}},
                {"name": "start engines",
                 "ansible.builtin.command": "{{ root }}/sgl-gen-host.sh start {{ engines | join(' ') }}",
                 "when": "engines | length > 0",
                 "register": "started", "changed_when": "'started' in started.stdout"},
                {"name": "wait for engines to become healthy",
                 "ansible.builtin.uri": {"url": "{{ item }}", "status_code": 200},
                 "loop": "{{ engine_health }}", "register": "health",
                 "until": "health.status == 200", "retries": 240, "delay": 0.5},
                {"name": "start routers",
                 "ansible.builtin.command": "{{ root }}/sgl-gen-host.sh start {{ routers | join(' ') }}",
                 "when": "routers | length > 0",
                 "register": "rstarted", "changed_when": "'started' in rstarted.stdout"},
                {"name": "wait until each router lists its workers as healthy",
                 "ansible.builtin.uri": {"url": "{{ item.url }}", "return_content": True},
                 "loop": "{{ router_urls }}", "register": "workers",
                 "until": "workers.status == 200 and (workers.json.workers | default([]) "
                          "| selectattr('is_healthy', 'equalto', true) | list | length) "
                          "== item.expect",
                 "retries": 240, "delay": 0.5},
            ]}]
        (d / "deploy.yaml").write_text(yaml.safe_dump(play, sort_keys=False))
        return d

    def ansible(self, playbook_cmd: str, d: Path) -> tuple[float, str]:
        env = {**os.environ, "ANSIBLE_CONFIG": str(d / "ansible.cfg"),
               "ANSIBLE_LOCAL_TEMP": str(d / "tmp"), "ANSIBLE_HOME": str(d / "home")}
        secs, r = timed([playbook_cmd, str(d / "deploy.yaml")], env=env, cwd=d)
        check(r, "ansible-playbook")
        recap = next((line for line in r.stdout.splitlines()[::-1] if "changed=" in line), "")
        return secs, recap


def _ready(url: str, want: int | None) -> bool:
    """A health URL answers 200, or a router's /workers lists ``want`` healthy workers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            body = resp.read()
    except OSError:
        return False
    if want is None:
        return True
    ws = json.loads(body).get("workers", [])
    return sum(1 for w in ws if w.get("is_healthy")) == want


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median is printed)")
    ap.add_argument("--ansible-playbook", default=os.environ.get("ANSIBLE_PLAYBOOK")
                    or shutil.which("ansible-playbook") or "", help="ansible-playbook to compare")
    args = ap.parse_args()
    why = available()
    if why:
        sys.exit(f"cannot create the SSH test hosts: {why}")
    if not args.ansible_playbook or not Path(args.ansible_playbook).exists():
        sys.exit("ansible-playbook not found: `make bench-deploy` installs ansible-core, "
                 "or pass --ansible-playbook PATH")
    tmp = Path(tempfile.mkdtemp(prefix="sgl-gen-bench-deploy-"))
    runs: dict[str, list[float]] = {k: [] for k in (
        "one", "one_floor", "eight", "eight_floor", "noop", "ansible", "ansible_noop", "cpu")}
    with SshHosts(8) as hosts:
        b = Bench(hosts, tmp)
        for _ in range(args.repeat):
            cpu = _children_cpu()
            secs, _doc = b.deploy(1)
            runs["cpu"].append(_children_cpu() - cpu)
            runs["one"].append(secs)
            b.routers_answer(1)
            b.down(1)
            runs["one_floor"].append(b.direct(1))
            b.routers_answer(1)
            b.down(1)
        for _ in range(args.repeat):
            secs, doc = b.deploy(8)
            runs["eight"].append(secs)
            b.routers_answer(8)
            secs, doc = b.deploy(8)
            uploaded = sum(len(f["upload"]) for f in doc["files"].values())
            touched = sum(len(f["remove"]) + len(f["chmod"]) for f in doc["files"].values())
            acted = {u["action"] for u in doc["units"]}
            if uploaded or touched or acted != {"unchanged"}:
                sys.exit(f"redeploy was not a no-op: {uploaded} upload(s), {touched} file(s) "
                         f"removed or chmodded, actions {acted}")
            runs["noop"].append(secs)
            b.down(8)
            runs["eight_floor"].append(b.direct(8))
            b.routers_answer(8)
            b.down(8)
        render_dir = tmp / "render"
        t_render, r = timed([sys.executable, "-m", "generator.cli", "render", str(b.topo(8)),
                             "--rehearse", "-o", str(render_dir), "-q"])
        check(r, "sgl-gen render")
        for i in range(8):  # Ansible starts from empty hosts, as sgl-gen's first deploy did
            shutil.rmtree(tmp / "w8" / f"h{i}", ignore_errors=True)
        d = b.ansible_files(8, render_dir / "bench-8h")
        recap = ""
        for _ in range(args.repeat):
            secs, _recap = b.ansible(args.ansible_playbook, d)
            runs["ansible"].append(secs)
            b.routers_answer(8)
            secs, recap = b.ansible(args.ansible_playbook, d)
            runs["ansible_noop"].append(secs)
            b.down(8)
            for i in range(8):
                shutil.rmtree(tmp / "w8" / f"h{i}", ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)

    ver = subprocess.run([args.ansible_playbook, "--version"], capture_output=True,
                         text=True).stdout.splitlines()[0]
    med = {k: median(v) for k, v in runs.items()}
    print(f"deploy benchmark: real sshd hosts (network namespaces), rehearsal engines, "
          f"sglang-router; 2 engines + 1 router per host; {os.cpu_count()} CPU cores shared by "
          f"every host; median of {args.repeat} run(s)")
    print(f"  {'':44} {'median s':>8}   runs")
    rows = [("sgl-gen deploy, 1 host", "one"),
            ("  same starts without SSH (floor), 1 host", "one_floor"),
            ("sgl-gen deploy, 8 hosts", "eight"),
            ("  same starts without SSH (floor), 8 hosts", "eight_floor"),
            ("sgl-gen deploy, 8 hosts, no-op redeploy", "noop"),
            ("ansible-playbook, 8 hosts", "ansible"),
            ("ansible-playbook, 8 hosts, no-op rerun", "ansible_noop")]
    for label, key in rows:
        print(f"  {label:44} {med[key]:8.2f}   {' '.join(f'{x:.2f}' for x in runs[key])}")
    print(f"  ratio 8 hosts / 1 host, sgl-gen deploy:        {med['eight'] / med['one']:.2f}")
    print(f"  ratio 8 hosts / 1 host, floor:                 "
          f"{med['eight_floor'] / med['one_floor']:.2f}")
    print(f"  sgl-gen over the floor, 1 / 8 hosts (s):       "
          f"{med['one'] - med['one_floor']:.2f} / {med['eight'] - med['eight_floor']:.2f}")
    print(f"  ratio Ansible / sgl-gen, first deploy:         {med['ansible'] / med['eight']:.2f}")
    print(f"  ratio Ansible / sgl-gen, no-op redeploy:       "
          f"{med['ansible_noop'] / med['noop']:.2f}")
    print(f"  sgl-gen client CPU per 1-host deploy: {med['cpu']:.2f}s; the render Ansible "
          f"deploys took {t_render:.2f}s (not counted in its time); {ver}; Ansible no-op "
          f"recap: {recap.split(':', 1)[-1].strip()}")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


if __name__ == "__main__":
    main()
