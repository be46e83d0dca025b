#!/usr/bin/env python3
"""sgl-gen's supervisor inside a Slurm job: ``python3 sgljob.py run -`` (job description on stdin).

generator/targets/slurm.py ships it as ``slurm/lib/sgljob.py``. The sbatch sets up the environment
(``SGL_ADDR_<i>``, ``SGLGEN_NODES``, ``SGLGEN_LOG_DIR``, one exported bash function per unit
holding its exact argv) and execs it with the job description (one entry per unit) as a heredoc.
It:

* gives every engine step its CPUs and memory: ``cpus_per_engine``, else ``cpus_per_gpu`` x its
  GPUs, else its GPU share of what Slurm gave the job on the node (``SLURM_JOB_CPUS_PER_NODE``;
  ``SLURM_MEM_PER_NODE`` or the node's memory); engine steps run ``--exact``, routers
  ``--overlap``. Shares that do not fit a node end the job before anything starts;
* starts encoders, engines, then routers, one ``srun`` step each (named after the unit, logs per
  rank appended to ``<unit>-<rank>.log``), each once the previous ones are healthy, then writes
  ``endpoints-<jobid>.json`` to the submit directory;
* restarts a unit whose step ends (``restart: on-failure``, at most ``restart_limit`` times,
  ``restart_backoff`` doubling up to 300 s); an engine leaves its router as soon as its step ends
  and comes back once healthy. Retries exhausted (or ``restart: never``), it prints the unit's
  redacted log tail and the job ends;
* drains on SIGUSR1 (``--signal=B:USR1@<stop_before_limit>``, ``sgl-gen down``): routers stop
  taking requests and finish theirs, engines finish theirs (``/get_load``, at most ``drain``
  seconds), everything stops and the job ends by itself;
* keeps ``state.json`` in the log directory current, which ``sgl-gen status`` reads.

Standard library only: it runs with the job's python, where sgl-gen is not installed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

STATE_FORMAT = 1
#: a restart's back-off doubles up to this many seconds
MAX_BACKOFF = 300.0
#: seconds between two looks at the steps and their health
TICK = 1.0
#: seconds a probe may take
PROBE_TIMEOUT = 3.0


def say(text: str) -> None:
    print(f"sgl-gen: {text}", flush=True)


def expand_counts(value: str) -> list[int]:
    """``SLURM_JOB_CPUS_PER_NODE`` (``16(x3),8``) -> ``[16, 16, 16, 8]``, in node order."""
    out: list[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"cannot read {value!r} as counts per node")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


@dataclass(frozen=True)
class Share:
    cpus: int | None  # per task (one task per node)
    mem_mb: int | None


def node_resources(job: dict[str, Any], env: dict[str, str], names: list[str]
                   ) -> tuple[list[int] | None, list[int] | None]:
    """What Slurm gave the job on each node: CPUs (``SLURM_JOB_CPUS_PER_NODE``) and memory in
    MB (``SLURM_MEM_PER_NODE`` when the job asked an amount; with ``--mem=0`` the job has the
    whole node: its ``RealMemory`` less ``MemSpecLimit``, from ``scontrol show node``)."""
    n_nodes = len(job["nodes"])
    node_cpus: list[int] | None = None
    cpus_env = env.get("SLURM_JOB_CPUS_PER_NODE", "")
    if cpus_env:
        counts = expand_counts(cpus_env)
        if len(counts) >= n_nodes:
            node_cpus = counts[:n_nodes]
    mem_env = env.get("SLURM_MEM_PER_NODE", "")
    if mem_env.isdigit() and int(mem_env) > 0:
        return node_cpus, [int(mem_env)] * n_nodes
    if len(names) < n_nodes:
        return node_cpus, None
    mem: list[int] = []
    for name in names[:n_nodes]:
        try:
            out = subprocess.run(["scontrol", "-o", "show", "node", name], capture_output=True,
                                 text=True, timeout=30, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return node_cpus, None
        fields = dict(re.findall(r"(\w+)=(\S*)", out))
        if not fields.get("RealMemory", "").isdigit():
            return node_cpus, None
        spec = fields.get("MemSpecLimit", "0")
        mem.append(int(fields["RealMemory"]) - (int(spec) if spec.isdigit() else 0))
    return node_cpus, mem


def shares(job: dict[str, Any], node_cpus: list[int] | None, node_mem: list[int] | None
           ) -> tuple[dict[str, Share], list[str]]:
    """Each engine's CPUs and memory per node, and the problems that keep them from fitting
    (a node's engines together would need more than Slurm gave the job on it)."""
    res = job["resources"]
    gpn = int(job["gpus_per_node"])
    n_nodes = len(job["nodes"])
    out: dict[str, Share] = {}
    used_cpus = [0] * n_nodes
    used_mem = [0] * n_nodes
    problems: list[str] = []
    for u in job["units"]:
        if u["kind"] != "engine":
            continue
        g = int(u["gpus"])
        if res.get("cpus_per_engine"):
            cpus: int | None = int(res["cpus_per_engine"])
        elif res.get("cpus_per_gpu"):
            cpus = int(res["cpus_per_gpu"]) * max(g, 1)
        elif node_cpus is not None:
            cpus = max(1, min(node_cpus[i] for i in u["nodes"]) * g // gpn)
        else:
            cpus = None
            if not problems:
                problems.append("Slurm did not say how many CPUs the job has on each node "
                                "(SLURM_JOB_CPUS_PER_NODE); without it every engine would get "
                                "1 CPU")
        if res.get("mem_per_gpu_mb"):
            mem: int | None = int(res["mem_per_gpu_mb"]) * max(g, 1)
        elif node_mem is not None:
            mem = max(1, min(node_mem[i] for i in u["nodes"]) * g // gpn)
        else:
            mem = None
        out[u["unit"]] = Share(cpus, mem)
        for i in u["nodes"]:
            used_cpus[i] += cpus or 0
            used_mem[i] += mem or 0
    for i in range(n_nodes):
        name = job["nodes"][i]
        if node_cpus is not None and used_cpus[i] > node_cpus[i]:
            problems.append(f"the engines on node {i} ({name}) need {used_cpus[i]} CPUs; Slurm "
                            f"gave the job {node_cpus[i]} there")
        if node_mem is not None and used_mem[i] > node_mem[i]:
            problems.append(f"the engines on node {i} ({name}) need {used_mem[i]} MB of memory; "
                            f"Slurm gave the job {node_mem[i]} MB there")
    return out, problems


def request(method: str, url: str, body: Any = None, key: str | None = None,
            timeout: float = PROBE_TIMEOUT) -> tuple[int, Any]:
    """(status, parsed JSON body or None); status 0 when nothing answered."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own URLs
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        try:
            status, raw = exc.code, exc.read()
        except Exception:  # noqa: BLE001 - a reply cut short is no answer
            return exc.code, None
    except Exception:  # noqa: BLE001 - refused, reset, cut short, not HTTP: nothing answered
        return 0, None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


@dataclass
class Unit:
    spec: dict[str, Any]
    url: str
    share: Share | None = None
    proc: subprocess.Popen[bytes] | None = None
    state: str = "pending"  # pending starting healthy backoff failed stopped
    restarts: int = 0
    last_exit: str | None = None
    due: float = 0.0  # backoff: when to start again
    started: float = 0.0
    listed: bool = True  # in its router's worker list (engines behind a router)

    @property
    def name(self) -> str:
        return str(self.spec["unit"])

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])


def exit_text(code: int) -> str:
    """srun's exit status as sgl-gen's status shows it: ``exit N``, or ``killed N`` for a task
    ended by a signal (srun reports 128+N, or -N when it was itself signalled)."""
    if code < 0:
        return f"killed {-code}"
    if code > 128:
        return f"killed {code - 128}"
    return f"exit {code}"


class Job:
    def __init__(self, job: dict[str, Any], env: dict[str, str]):
        self.job = job
        self.env = env
        self.log_dir = env["SGLGEN_LOG_DIR"]
        self.job_id = env.get("SLURM_JOB_ID", "")
        self.submit_dir = env.get("SLURM_SUBMIT_DIR") or os.getcwd()
        self.names = env.get("SGLGEN_NODES", "").split()
        self.addrs = [env.get(f"SGL_ADDR_{i}", "") for i in range(len(job["nodes"]))]
        self.phase = "starting"
        self.message = ""
        self.failed_unit: str | None = None
        self.endpoints: str | None = None
        self.draining = env.get("SGLGEN_DRAIN_REQUESTED") == "1"  # USR1 before we ran
        self.state_error: str | None = None
        self.step_ids: dict[str, list[str]] = {}
        self.units: dict[str, Unit] = {}
        for spec in job["units"]:
            node = spec["nodes"][0]
            url = f"http://{self._host(node)}:{spec['port']}"
            self.units[spec["unit"]] = Unit(spec, url)
        self.restart = job["restart"]
        self.pool = ThreadPoolExecutor(max_workers=16)

    def _host(self, node: int) -> str:
        a = self.addrs[node]
        return f"[{a}]" if ":" in a else a

    # -- state.json ---------------------------------------------------------------------------
    def write_state(self) -> None:
        doc = {
            "format": STATE_FORMAT, "deployment": self.job["deployment"], "job": self.job_id,
            "phase": self.phase, "message": self.message, "failed_unit": self.failed_unit,
            "endpoints": self.endpoints, "updated": time.time(),
            "units": {u.name: {
                "kind": u.kind, "model": u.spec["model"], "role": u.spec["role"],
                "nodes": [self._node_name(i) for i in u.spec["nodes"]], "url": u.url,
                "state": u.state, "restarts": u.restarts, "last_exit": u.last_exit,
                "cpus": u.share.cpus if u.share else None,
                "mem_mb": u.share.mem_mb if u.share else None, "step": u.name,
            } for u in self.units.values()},
        }
        path = os.path.join(self.log_dir, "state.json")
        try:
            write_json(path, doc)
            self.state_error = None
        except OSError as exc:  # a full or flaky shared filesystem: serving goes on
            if str(exc) != self.state_error:
                say(f"cannot write {path}: {exc}; trying again")
            self.state_error = str(exc)

    def _node_name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else str(i)

    # -- steps --------------------------------------------------------------------------------
    def srun_argv(self, u: Unit) -> list[str]:
        spec = u.spec
        nodes = ",".join(self._node_name(i) for i in spec["nodes"])
        n = len(spec["nodes"])
        argv = ["srun", f"--job-name={u.name}", f"--nodes={n}", f"--ntasks={n}",
                "--ntasks-per-node=1", f"--nodelist={nodes}", "--kill-on-bad-exit=1",
                "--open-mode=append",
                f"--output={self.log_dir.replace('%', '%%')}/{u.name}-%t.log"]
        if u.kind == "engine":
            argv.append("--exact")
            if u.share and u.share.cpus:
                argv.append(f"--cpus-per-task={u.share.cpus}")
            if u.share and u.share.mem_mb:
                argv.append(f"--mem={u.share.mem_mb}M")
            g = int(spec["gpus"])
            argv.append(f"--gres=gpu:{g}" if g > 0 else "--gres=none")
        else:  # routers share the engines' CPUs and memory: they never hold any of their own
            argv += ["--overlap", "--cpus-per-task=1", "--gres=none"]
        argv += list(self.job.get("srun_extra", ()))
        argv += ["bash", "-c", spec["func"]]
        return argv

    def start(self, u: Unit) -> None:
        u.proc = subprocess.Popen(self.srun_argv(u), stdin=subprocess.DEVNULL)
        u.state = "starting"
        u.started = time.monotonic()
        where = ",".join(self._node_name(i) for i in u.spec["nodes"])
        got = ""
        if u.share and (u.share.cpus or u.share.mem_mb):
            got = " (" + ", ".join(x for x in (
                f"{u.share.cpus} CPUs" if u.share.cpus else "",
                f"{u.share.mem_mb} MB" if u.share.mem_mb else "") if x) + " per node)"
        say(f"started {u.name} on {where}{got}")

    # -- health -------------------------------------------------------------------------------
    def healthy(self, u: Unit) -> bool:
        if u.kind == "engine":
            status, _ = request("GET", u.url + "/health")
            return status == 200
        key = self.env.get(u.spec["key_env"]) if u.spec.get("key_env") else None
        status, body = request("GET", u.url + "/workers", key=key)
        if status != 200 or not isinstance(body, dict):
            return False
        if self.phase == "up":  # a router restarted: it serves the engines that are healthy
            return True
        workers = body.get("workers", [])
        return isinstance(workers, list) and len(workers) == int(u.spec["expected"]) and all(
            isinstance(w, dict) and w.get("is_healthy") for w in workers)

    def router_of(self, u: Unit) -> Unit | None:
        r = u.spec.get("router")
        return self.units.get(r) if r else None

    def router_call(self, router: Unit, method: str, path: str, body: Any = None
                    ) -> tuple[int, Any]:
        key = self.env.get(router.spec["key_env"]) if router.spec.get("key_env") else None
        return request(method, router.url + path, body, key=key, timeout=10)

    def listing(self, router: Unit, url: str) -> list[dict[str, Any]] | None:
        """The router's entries for ``url`` (None: its worker list could not be read)."""
        status, body = self.router_call(router, "GET", "/workers")
        if status != 200 or not isinstance(body, dict):
            return None
        return [w for w in body.get("workers", []) if isinstance(w, dict)
                and w.get("url") == url]

    def take_out(self, u: Unit) -> bool:
        """Out of its router (``DELETE /workers/{id}``) while it is down, so the router sends
        its requests to the other engines at once instead of retrying this one. True when the
        router no longer lists it."""
        r = self.router_of(u)
        if r is None or r.state != "healthy":
            return False
        entries = self.listing(r, u.url)
        if entries is None:
            return False
        for w in entries:
            status, _ = self.router_call(r, "DELETE", f"/workers/{w.get('id')}")
            if status not in (200, 202, 204, 404):
                say(f"{r.name} did not let go of {u.name} (HTTP {status}); its own health "
                    "checks will")
                return False
        # asked to go (or not listed): put_back adds it again, removing any leftover first
        u.listed = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self.draining:
            if self.listing(r, u.url) == []:
                if entries:
                    say(f"{u.name} is out of {r.name} until it is healthy again")
                return True
            time.sleep(0.1)
        return False

    def put_back(self, u: Unit) -> None:
        """Into its router again once healthy. The router keeps a URL it still lists as it
        was (a POST of it changes nothing, circuit breaker included), so the old entry goes
        first; then ``POST /workers`` and a wait until the router lists it healthy."""
        r = self.router_of(u)
        if r is None or r.state != "healthy":
            return
        if (self.listing(r, u.url) or []) and not self.take_out(u):
            return
        u.listed = False
        body: dict[str, Any] = {"url": u.url, "worker_type": u.spec["role"]}
        if u.spec["role"] == "prefill" and u.spec.get("bootstrap_port") is not None:
            body["bootstrap_port"] = u.spec["bootstrap_port"]
        key = self.env.get(r.spec["key_env"]) if r.spec.get("key_env") else None
        if key:  # the router calls its workers with its own key
            body["api_key"] = key
        status, _ = self.router_call(r, "POST", "/workers", body)
        if status not in (200, 201, 202):
            say(f"{r.name} did not take {u.name} back (HTTP {status}); trying again")
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entries = self.listing(r, u.url) or []
            if any(w.get("is_healthy") for w in entries):
                u.listed = True
                say(f"{u.name} is back in {r.name}")
                return
            time.sleep(0.2)
        say(f"{r.name} does not list {u.name} healthy yet; trying again")

    # -- failure ------------------------------------------------------------------------------
    def fail(self, u: Unit, why: str) -> int:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the job's end reaches us too
        self.phase = "failed"
        self.failed_unit = u.name
        self.message = why
        u.state = "failed"
        self.write_state()
        print(f"sgl-gen: {u.name} {why}; last lines of its log:", file=sys.stderr, flush=True)
        for rank in range(len(u.spec["nodes"])):
            log = os.path.join(self.log_dir, f"{u.name}-{rank}.log")
            if os.path.exists(log):
                print(f"==> {log} <==", file=sys.stderr, flush=True)
                print_tail(log)
        self.stop_all(grace=10)
        return 1  # the job ends (FAILED) with this script

    # -- the life of the job ------------------------------------------------------------------
    def exited(self, u: Unit) -> bool:
        """Notice a step that ended; True when the job must end (no restart left)."""
        assert u.proc is not None
        code = u.proc.returncode
        u.proc = None
        u.last_exit = exit_text(code)
        was_healthy = u.state == "healthy"
        if self.draining:
            u.state = "stopped"
            return False
        if u.kind == "engine" and was_healthy:
            self.take_out(u)
        if u.kind == "router":  # started again, it lists every engine its argv names
            for e in self.units.values():
                if e.spec.get("router") == u.name:
                    e.listed = True
        if self.restart["policy"] != "on-failure" or u.restarts >= int(self.restart["limit"]):
            return True
        delay = min(MAX_BACKOFF, float(self.restart["backoff"]) * 2 ** u.restarts)
        u.restarts += 1
        u.state = "backoff"
        u.due = time.monotonic() + delay
        say(f"{u.name} exited ({u.last_exit}); restart {u.restarts}/{self.restart['limit']} "
            f"in {delay:g} s")
        return False

    def step_once(self, wanted: list[Unit]) -> Unit | None:
        """One look at every unit started so far: exits, back-offs due, health. Returns a unit
        that ended the job (no restart left), else None."""
        now = time.monotonic()
        for u in self.units.values():
            if u.proc is not None and u.proc.poll() is not None and self.exited(u):
                return u
            if u.state == "backoff" and now >= u.due:
                self.start(u)
        probing = [u for u in self.units.values() if u.proc is not None and u.state == "starting"]
        for u, ok in zip(probing, self.pool.map(self.healthy, probing), strict=True):
            if ok and u.proc is not None and u.proc.poll() is None:
                u.state = "healthy"
                say(f"{u.name} ready" + (f" (restart {u.restarts})" if u.restarts else ""))
        for u in self.units.values():
            if u.kind == "engine" and u.state == "healthy" and not u.listed:
                self.put_back(u)
        timeout = float(self.job["start_timeout"])
        for u in self.units.values():
            if u.state == "starting" and u.proc is not None and now - u.started > timeout:
                if u in wanted:
                    return u
                # a restart that hangs: its step goes, and the exit spends a restart
                say(f"{u.name} did not become healthy within {timeout:g} s of its restart")
                self.cancel(u)
        return None

    def cancel(self, u: Unit) -> None:
        """End a unit's step: ``scancel JOB.STEP`` (its tasks too), else srun itself."""
        ids = self.steps().get(u.name, [])
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
        elif u.proc is not None:
            u.proc.kill()

    def run(self) -> int:
        signal.signal(signal.SIGUSR1, self._on_drain)
        signal.signal(signal.SIGTERM, self._on_term)
        if os.environ.get("SGLGEN_DRAIN_REQUESTED") == "1":  # USR1 while main() read the job
            self.draining = True
        cpus, mem = node_resources(self.job, self.env, self.names)
        share, problems = shares(self.job, cpus, mem)
        for name, s in share.items():
            self.units[name].share = s
        if problems:
            self.phase, self.message = "failed", "; ".join(problems)
            self.write_state()
            for p in problems:
                print(f"sgl-gen: {p}", file=sys.stderr, flush=True)
            print("sgl-gen: hint: lower cluster.slurm.cpus_per_gpu / cpus_per_engine / "
                  "mem_per_gpu, or ask for nodes that have more", file=sys.stderr, flush=True)
            return 1
        self.write_state()
        if self.draining:  # asked to stop (USR1) before anything started
            self.phase, self.message = "stopped", "drained before it started"
            self.write_state()
            say("asked to drain before anything started: nothing to stop")
            return 0
        for phase in (0, 1, 2):
            wanted = [u for u in self.units.values() if u.spec["phase"] == phase]
            for u in wanted:
                self.start(u)
            self.write_state()
            while not all(u.state == "healthy" for u in wanted):
                if self.draining:
                    return self.drain()
                ended = self.step_once(wanted)
                if ended is not None:
                    if ended.proc is not None:
                        return self.fail(ended, f"did not become healthy within "
                                                f"{self.job['start_timeout']} s")
                    return self.fail(ended, self._why(ended))
                self.write_state()
                time.sleep(TICK)
        self.endpoints = self.write_endpoints()
        self.phase = "up"
        self.write_state()
        say(f"{self.job['deployment']} is up; endpoints in {self.endpoints}")
        while True:
            if self.draining:
                return self.drain()
            ended = self.step_once([])
            if ended is not None:
                return self.fail(ended, self._why(ended))
            self.write_state()
            time.sleep(TICK)

    def _why(self, u: Unit) -> str:
        if self.restart["policy"] != "on-failure":
            return f"exited ({u.last_exit}; restart: never)"
        return f"exited ({u.last_exit}) after {u.restarts} restart(s), no more left"

    def write_endpoints(self) -> str:
        path = os.path.join(self.submit_dir, f"endpoints-{self.job_id}.json")
        write_json(path, fill_addresses(self.job["endpoints"], self.addrs))
        return path

    # -- drain and stop -----------------------------------------------------------------------
    def _on_drain(self, signum: int, frame: Any) -> None:
        self.draining = True

    def _on_term(self, signum: int, frame: Any) -> None:
        # scancel: Slurm signals every step itself; stop supervising, leave quietly
        self.draining = True
        self.stop_all(grace=5)
        self.phase, self.message = "stopped", "cancelled"
        for u in self.units.values():
            u.state = "failed" if u.state == "failed" else "stopped"
        self.write_state()
        sys.exit(143)

    def drain(self) -> int:
        """Routers stop taking requests and finish theirs, engines finish theirs, all stop."""
        self.phase = "draining"
        seconds = float(self.job["drain"])
        say(f"draining: routers stop taking requests, engines get up to {seconds:g} s to "
            "finish theirs")
        self.write_state()
        routers = [u for u in self.units.values() if u.kind == "router"]
        self._signal(routers, signal.SIGTERM)
        deadline = time.monotonic() + seconds + 5
        self._wait_gone(routers, deadline)
        engines = [u for u in self.units.values() if u.kind == "engine" and u.proc is not None]
        while time.monotonic() < deadline:
            loads = list(self.pool.map(self._in_flight, engines))
            if all(n == 0 for n in loads):
                break
            time.sleep(0.5)
        self.stop_all(grace=30)
        for u in self.units.values():
            if u.state != "failed":
                u.state = "stopped"
        self.phase = "stopped"
        self.message = "drained"
        self.write_state()
        say("drained and stopped")
        return 0

    def _in_flight(self, u: Unit) -> int:
        r = self.router_of(u)  # engines take their router's key (the router calls them with it)
        key = self.env.get(r.spec["key_env"]) if r and r.spec.get("key_env") else None
        status, body = request("GET", u.url + "/get_load", key=key)
        if status == 200:
            items = body if isinstance(body, list) else [body]
            try:
                return sum(int(x.get("num_reqs", 0)) + int(x.get("num_waiting_reqs", 0))
                           for x in items if isinstance(x, dict))
            except (TypeError, ValueError):
                return 0
        return 0 if status == 0 else 1

    def steps(self) -> dict[str, list[str]]:
        """The job's running steps by name (a unit's steps are named after it): their ids."""
        try:
            out = subprocess.run(["squeue", "-h", "-s", "-j", self.job_id, "-o", "%i|%j"],
                                 capture_output=True, text=True, timeout=30,
                                 check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        got: dict[str, list[str]] = {}
        for line in out.splitlines():
            step, _, name = line.partition("|")
            got.setdefault(name.strip(), []).append(step.strip())
        if got:
            self.step_ids = got
        return got or self.step_ids

    def _signal(self, units: list[Unit], sig: int) -> None:
        """SIGTERM reaches the tasks through ``scancel --signal=TERM JOB.STEP`` (a signal to
        srun itself makes it SIGKILL them); SIGKILL goes to srun."""
        live = [u for u in units if u.proc is not None and u.proc.poll() is None]
        if sig == signal.SIGTERM and live and self.job_id:
            ids = self.steps()
            todo = [i for u in live for i in ids.get(u.name, ())]
            if todo:  # scancel may say "Invalid job id" for a step it did signal: not checked
                subprocess.run(["scancel", "--signal=TERM", *todo], capture_output=True,
                               timeout=30, check=False)
            # a step squeue did not list: srun itself (it ends its tasks without SIGTERM)
            live = [u for u in live if not ids.get(u.name)]
            if live:
                say(f"no step found for {', '.join(u.name for u in live)}: stopping them "
                    "without a graceful shutdown")
        for u in live:
            assert u.proc is not None
            try:
                u.proc.send_signal(sig)
            except OSError:
                pass

    def _wait_gone(self, units: list[Unit], deadline: float) -> None:
        while time.monotonic() < deadline and any(
                u.proc is not None and u.proc.poll() is None for u in units):
            time.sleep(0.2)
        for u in units:
            if u.proc is not None and u.proc.poll() is not None:
                u.last_exit = exit_text(u.proc.returncode)
                u.proc = None
                u.state = "stopped"

    def stop_all(self, grace: float) -> None:
        live = [u for u in self.units.values() if u.proc is not None]
        self._signal(live, signal.SIGTERM)
        self._wait_gone(live, time.monotonic() + grace)
        self._signal([u for u in live if u.proc is not None], signal.SIGKILL)
        self._wait_gone(live, time.monotonic() + 5)


def write_json(path: str, doc: Any) -> None:
    """``doc`` as ``path``, atomically: a reader (``sgl-gen status``) never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _early_drain(signum: int, frame: Any) -> None:
    os.environ["SGLGEN_DRAIN_REQUESTED"] = "1"


def fill_addresses(value: Any, addrs: list[str]) -> Any:
    """endpoints.json from the job description's: each ``{"$node": i, "prefix", "suffix"}``
    (the only form an address field has there) becomes node i's run-time address."""
    if isinstance(value, dict) and "$node" in value:
        return f"{value['prefix']}{addrs[int(value['$node'])]}{value['suffix']}"
    if isinstance(value, dict):
        return {k: fill_addresses(x, addrs) for k, x in value.items()}
    if isinstance(value, list):
        return [fill_addresses(x, addrs) for x in value]
    return value


def print_tail(log: str, lines: int = 30, out: Any = None) -> None:
    """The last lines of a unit's log on stderr, through redact.py beside this file (the job
    output may be readable by others: credential values never reach it). All or nothing:
    redact.py prints once every line is redacted, so a failure shows none."""
    redact = os.path.join(os.path.dirname(os.path.abspath(__file__)), "redact.py")
    out = out or sys.stderr
    out.flush()
    r = subprocess.run([sys.executable, redact, "--tail", str(lines), log], stdout=out,
                       stderr=subprocess.DEVNULL, check=False)
    if r.returncode != 0:
        print(f"sgl-gen: (log tail withheld: it could not be redacted; read {log} itself)",
              file=out, flush=True)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGUSR1, _early_drain)  # a drain asked for while we read the job
    if len(argv) == 2 and argv[0] == "tail":  # what a failed unit's log shows in the job output
        print_tail(argv[1], out=sys.stdout)
        return 0
    if len(argv) != 2 or argv[0] != "run":
        print("usage: sgljob.py run JOB_JSON|- | sgljob.py tail LOG", file=sys.stderr)
        return 2
    if argv[1] == "-":  # the sbatch's heredoc
        job = json.load(sys.stdin)
    else:
        with open(argv[1], encoding="utf-8") as f:
            job = json.load(f)
    env = dict(os.environ)
    if "SGLGEN_START_TIMEOUT" in env:
        job["start_timeout"] = float(env["SGLGEN_START_TIMEOUT"])
    j = Job(job, env)
    try:
        return j.run()
    except Exception as exc:  # noqa: BLE001 - a bug of ours: say so, stop the steps, end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        j.phase, j.message = "failed", f"sgl-gen's job supervisor failed: {exc!r}"
        j.write_state()
        print(f"sgl-gen: {j.message}", file=sys.stderr, flush=True)
        j.stop_all(grace=10)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
