"""The life of a Slurm job on the real test cluster (tests/slurmcluster.py: 3 nodes declared with
16 CPUs, 8 GPUs and 16000 MB each): what Slurm itself says each step holds, an engine killed and
restarted in place behind its router under load, retries running out, a drain on SIGUSR1, and
model names that mangle alike. Every job runs the rehearsal engine and the real sglang-router;
the test submits the rendered sbatch with ``sbatch`` as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import plan_of, write_topo
from tests.loadloop import Load

pytestmark = pytest.mark.slow

#: seconds a rehearsal job may take from sbatch to endpoints-<job>.json
UP_TIMEOUT = 90


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.slurmcluster import running

    with running(tmp_path_factory.mktemp("slurm")) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _topo(name: str, nodes: int, models: str, slurm: str = "", env: str = "",
          gpus_per_node: int = 8) -> str:
    slurm_line = f"  slurm: {{{slurm}}}\n" if slurm else ""
    env_part = f", env: {{{env}}}" if env else ""
    return (f"deployment: {{name: {name}, hf_checkpoint: /models/m}}\n"
            f"cluster:\n  nodes: {nodes}\n  gpus_per_node: {gpus_per_node}\n{slurm_line}"
            f"runtime: {{python: {sys.executable}{env_part}}}\n"
            f"sglang:\n{models}")


def _model(name: str, *groups: tuple[str, int, int]) -> str:
    lines = [f"  - name: {name}", "    router: {policy: round_robin}", "    server_groups:"]
    lines += [f"      - {{worker_type: {w}, num_gpus: {n}, num_gpus_per_engine: {g}}}"
              for w, n, g in groups]
    return "\n".join(lines) + "\n"


def _run(cluster, *cmd: str, check: bool = True) -> str:
    r = subprocess.run(list(cmd), env=cluster.env, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"{cmd}: rc={r.returncode} {r.stdout}{r.stderr}"
    return r.stdout


def _fields(text: str) -> dict[str, str]:
    """``scontrol -o show ...`` (one line of KEY=VALUE tokens) as a dict."""
    out: dict[str, str] = {}
    for tok in text.split():
        key, eq, value = tok.partition("=")
        if eq:
            out.setdefault(key, value)
    return out


def _tres(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def _get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def _generate(url: str, timeout: float = 30) -> dict[str, Any]:
    req = urllib.request.Request(url + "/generate", method="POST", data=json.dumps(
        {"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        return dict(json.loads(r.read())["sgl_gen"])


def _listed(router: str, url: str) -> list[dict[str, Any]]:
    return [w for w in _get(router + "/workers")["workers"] if w.get("url") == url]


def _job_pids(job: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process on this machine that belongs to Slurm job ``job`` (the
    nodes are network namespaces only): in one of its cgroups (proctrack/cgroup puts the
    steps' tasks there), or with ``SLURM_JOB_ID=<job>`` in its environment (the batch script,
    srun). The router rewrites its argv and environment (``sglang::router``): the cgroup finds it."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cgroup = (p / "cgroup").read_text()
            env = (p / "environ").read_bytes().split(b"\0")
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"/job_{job}/" in cgroup or f"SLURM_JOB_ID={job}".encode() in env:
            found.append((int(p.name), cmd.strip()))
    return found


@dataclass
class Run:
    """One submitted job: its id, submit directory and the rendered sbatch."""

    cluster: Any
    job: str
    dep: str
    submit: Path
    sbatch: Path

    @property
    def log_dir(self) -> Path:
        return self.submit / f"sgl-{self.dep}-{self.job}"

    def stdout(self) -> str:
        p = self.submit / f"sgl-{self.dep}-{self.job}.out"
        return p.read_text(errors="replace") if p.exists() else "(no job output yet)"

    def state(self) -> dict[str, Any]:
        p = self.log_dir / "state.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def in_queue(self) -> bool:
        out = _run(self.cluster, "squeue", "-h", "-j", self.job, "-o", "%i|%T", check=False)
        return any(line.split("|")[0] == self.job for line in out.splitlines())

    def job_state(self) -> str | None:
        """JobState from ``scontrol show job`` (None once Slurm has purged the job)."""
        r = subprocess.run(["scontrol", "-o", "show", "job", self.job], env=self.cluster.env,
                           capture_output=True, text=True, timeout=30)
        return _fields(r.stdout).get("JobState") if r.returncode == 0 else None

    def steps(self) -> dict[str, str]:
        """Running steps by name (the unit): step id."""
        out = _run(self.cluster, "squeue", "-h", "-s", "-j", self.job, "-o", "%i|%j")
        got: dict[str, str] = {}
        for line in out.splitlines():
            step, _, name = line.strip().partition("|")
            if name and step.split(".")[-1].isdigit():
                assert name not in got, f"two steps named {name}: {out}"
                got[name] = step
        return got

    def show_step(self, step: str) -> dict[str, str]:
        return _fields(_run(self.cluster, "scontrol", "-o", "show", "step", step))

    def wait_up(self, timeout: float = UP_TIMEOUT) -> dict[str, Any]:
        """Wait for endpoints-<job>.json (every unit healthy); its models."""
        endpoints = self.submit / f"endpoints-{self.job}.json"
        deadline = time.monotonic() + timeout
        while not (endpoints.exists() and self.state().get("phase") == "up"):
            assert time.monotonic() < deadline, f"not up after {timeout}s:\n{self.stdout()}"
            assert self.in_queue(), f"the job ended before it was up:\n{self.stdout()}"
            time.sleep(0.5)
        return dict(json.loads(endpoints.read_text())["models"])

    def wait_unit(self, unit: str, timeout: float = 60, **want: Any) -> dict[str, Any]:
        """Poll state.json until ``units[unit]`` has the wanted values; that unit."""
        deadline = time.monotonic() + timeout
        while True:
            u = self.state().get("units", {}).get(unit, {})
            if all(u.get(k) == v for k, v in want.items()):
                return dict(u)
            assert time.monotonic() < deadline, (
                f"{unit} has {u}, not {want} after {timeout}s:\n{self.stdout()}")
            time.sleep(0.2)

    def wait_gone(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.in_queue():
            assert time.monotonic() < deadline, f"still queued after {timeout}s:\n{self.stdout()}"
            time.sleep(0.3)

    def cancel(self) -> None:
        if self.in_queue():
            subprocess.run(["scancel", self.job], env=self.cluster.env, check=False)
        self.wait_gone()


def _submit(cluster, tmp_path: Path, text: str) -> Run:
    topo = write_topo(tmp_path, text)
    plan = plan_of(topo)
    out = tmp_path / "out"
    write_tree(out / plan.name, render(plan, ("slurm",), rehearse=True))
    sbatch = out / plan.name / "slurm" / f"{plan.name}.sbatch"
    submit = tmp_path / "submit"
    submit.mkdir()
    r = subprocess.run(["sbatch", "--parsable", str(sbatch)], cwd=submit, env=cluster.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return Run(cluster, r.stdout.strip().split(";")[0], plan.name, submit, sbatch)


def _srun_argv(unit: str) -> list[str]:
    """The argv of the srun that runs ``unit`` (srun runs on this machine, like the batch; it
    forks a helper with the same argv)."""
    found = set()
    for p in Path("/proc").iterdir():
        try:
            argv = tuple(a.decode() for a in (p / "cmdline").read_bytes().split(b"\0")[:-1])
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "srun" and f"--job-name={unit}" in argv:
            found.add(argv)
    assert len(found) == 1, found
    return list(found.pop())


# ---------------------------------------------------------------------------------------------
# 1. resources, as Slurm accounts them
# ---------------------------------------------------------------------------------------------

RESOURCES = (_model("big", ("regular", 4, 4)) + _model("small", ("regular", 4, 2))
             + _model("other", ("regular", 2, 2)))


def test_engine_steps_hold_their_gpu_share_of_cpus_and_memory(cluster, tmp_path):
    """Exclusive nodes (the default): on sgn1 a TP-4 and two TP-2 engines share the node's 16
    CPUs and 16000 MB by GPUs (8/8000, 4/4000, 4/4000); a TP-2 engine on sgn2 gets 4/4000;
    the routers' steps overlap them with 1 CPU each."""
    run = _submit(cluster, tmp_path, _topo("life-res", 2, RESOURCES))
    try:
        run.wait_up()
        assert "#SBATCH --exclusive\n#SBATCH --mem=0\n" in run.sbatch.read_text()
        job = _fields(_run(cluster, "scontrol", "-o", "show", "job", run.job))
        assert job["OverSubscribe"] == "NO", job  # whole nodes: every CPU, all the memory
        assert _tres(job["TRES"])["cpu"] == "32" and _tres(job["TRES"])["mem"] == "32000M", job
        node = _fields(_run(cluster, "scontrol", "-o", "show", "node", "sgn1"))
        node_cpus, node_mem = int(node["CPUTot"]), int(node["RealMemory"])
        assert (node_cpus, node_mem) == (16, 16000)
        want = {"engine-big-regular-0": (8, 8000, 4), "engine-small-regular-0": (4, 4000, 2),
                "engine-small-regular-1": (4, 4000, 2), "engine-other-regular-0": (4, 4000, 2)}
        steps = run.steps()
        assert set(steps) == {*want, "router-big", "router-small", "router-other"}, steps
        state = run.state()["units"]
        per_node: dict[str, list[int]] = {}
        for unit, (cpus, mem, gpus) in want.items():
            s = run.show_step(steps[unit])
            tres = _tres(s["TRES"])
            assert (s["State"], s["Name"], s["Tasks"]) == ("RUNNING", unit, "1"), s
            assert int(s["CPUs"]) == cpus and tres["cpu"] == str(cpus), (unit, s)
            assert tres["mem"] == f"{mem}M", (unit, s)
            assert s["TresPerNode"] == f"gres:gpu:{gpus}", (unit, s)
            assert (state[unit]["cpus"], state[unit]["mem_mb"]) == (cpus, mem), state[unit]
            assert state[unit]["step"] == unit and state[unit]["nodes"] == [s["NodeList"]]
            per_node.setdefault(s["NodeList"], []).append(int(s["CPUs"]))
            argv = _srun_argv(unit)
            assert {"--exact", f"--cpus-per-task={cpus}", f"--mem={mem}M",
                    f"--gres=gpu:{gpus}"} <= set(argv), argv
        assert sorted(per_node) == ["sgn1", "sgn2"]
        assert sum(per_node["sgn1"]) == 16 <= node_cpus  # the node is full ...
        assert sum(per_node["sgn2"]) == 4
        for unit in ("router-big", "router-small", "router-other"):
            s = run.show_step(steps[unit])
            # ... yet the routers run next to the engines: they overlap, with 1 CPU and no GPU
            assert (s["State"], int(s["CPUs"]), _tres(s["TRES"])["cpu"]) == ("RUNNING", 1, "1"), s
            assert "gpu" not in s.get("TresPerNode", ""), s
            assert {"--overlap", "--cpus-per-task=1", "--gres=none"} <= set(_srun_argv(unit))
            assert state[unit]["state"] == "healthy"
        assert s["NodeList"] == "sgn2"  # router-other sits with its engine
    finally:
        run.cancel()


def test_shared_nodes_ask_for_what_the_engines_take(cluster, tmp_path):
    """exclusive: false with cpus_per_gpu 1 and mem_per_gpu 500M: the job asks each node for
    what its busiest node's engines take (8 CPUs, 4000 MB), each engine step gets 1 CPU and
    500 MB per GPU."""
    run = _submit(cluster, tmp_path, _topo("life-shared", 2, RESOURCES,
                                           slurm="exclusive: false, cpus_per_gpu: 1, "
                                                 "mem_per_gpu: 500M"))
    try:
        run.wait_up()
        text = run.sbatch.read_text()
        assert "#SBATCH --exclusive" not in text
        assert "#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=8\n#SBATCH --mem=4000M\n" \
            in text
        job = _fields(_run(cluster, "scontrol", "-o", "show", "job", run.job))
        assert (job["NumNodes"], job["NumCPUs"], job["CPUs/Task"]) == ("2", "16", "8"), job
        # the nodes are shared (not OverSubscribe=NO, as an exclusive job's are)
        assert job["MinMemoryNode"] == "4000M" and job["OverSubscribe"] != "NO", job
        assert _tres(job["TRES"])["mem"] == "8000M", job
        steps = run.steps()
        state = run.state()["units"]
        per_node: dict[str, int] = {}
        for unit, gpus in (("engine-big-regular-0", 4), ("engine-small-regular-0", 2),
                           ("engine-small-regular-1", 2), ("engine-other-regular-0", 2)):
            s = run.show_step(steps[unit])
            assert s["State"] == "RUNNING" and int(s["CPUs"]) == gpus, (unit, s)
            assert _tres(s["TRES"])["mem"] == f"{500 * gpus}M", (unit, s)
            assert s["TresPerNode"] == f"gres:gpu:{gpus}", (unit, s)
            assert (state[unit]["cpus"], state[unit]["mem_mb"]) == (gpus, 500 * gpus)
            per_node[s["NodeList"]] = per_node.get(s["NodeList"], 0) + int(s["CPUs"])
        assert per_node == {"sgn1": 8, "sgn2": 2}
    finally:
        run.cancel()


# ---------------------------------------------------------------------------------------------
# 2. self-healing (3.) and retries running out (4.)
# ---------------------------------------------------------------------------------------------

CHAT = _model("chat", ("regular", 2, 1))


def _routed(run: Run, unit: str) -> int:
    """Requests the router sent the engine ``unit`` since it (last) started: ``POST /generate``
    lines from its node's address after the last "listening on" of its log (appended across
    restarts). The test's own requests come from the bridge address."""
    lines = (run.log_dir / f"{unit}-0.log").read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if " listening on http://" in line]
    if not starts:
        return 0
    addr = lines[starts[-1]].split(" listening on http://")[1].split(":")[0]
    return sum(f': {addr} "POST /generate ' in line for line in lines[starts[-1]:])


HEAL = CHAT + _model("pd", ("prefill", 2, 1), ("decode", 1, 1))


def test_killed_engines_are_restarted_and_relisted_while_their_routers_keep_serving(
        cluster, tmp_path):
    """SIGKILL a regular engine and a PD prefill engine at once, under load through both
    routers: each step ends (killed 9), the supervisor takes the engine out of its router,
    restarts it after the back-off and lists it again once healthy; the load loses nothing."""
    run = _submit(cluster, tmp_path, _topo(
        "life-heal", 1, HEAL, slurm="restart_backoff: 1",
        env="SGLGEN_REHEARSAL_REQUEST_DELAY: '0.2'"))
    try:
        models = run.wait_up()
        routers = {m: models[m]["router"] for m in ("chat", "pd")}
        victims = {"chat": models["chat"]["engines"]["regular"][0],
                   "pd": models["pd"]["engines"]["prefill"][0]}
        before = {m: _generate(url) for m, url in victims.items()}
        units = {m: f"engine-{b['engine_id']}" for m, b in before.items()}
        assert {u["restarts"] for u in run.state()["units"].values()} == {0}
        with Load(routers, rate=20, threads_per_router=8) as load:
            load.wait_ok(20)
            assert len(load.engines("chat")) == 2, load.engines("chat")  # both regular engines
            deadline = time.monotonic() + 10
            while not all(_routed(run, u) for u in units.values()):  # the router sends them work
                assert time.monotonic() < deadline, {u: _routed(run, u) for u in units.values()}
                time.sleep(0.1)
            killed = time.monotonic()
            for b in before.values():
                os.kill(b["pid"], signal.SIGKILL)
            gone: dict[str, float] = {}
            back: dict[str, float] = {}
            deadline = killed + 60
            while len(back) < len(victims):
                assert time.monotonic() < deadline, (
                    f"not listed healthy again: gone {gone}, back {back}:\n{run.stdout()}")
                for m, url in victims.items():
                    if m in back:
                        continue
                    entries = _listed(routers[m], url)
                    now = time.monotonic()
                    if not entries:
                        gone.setdefault(m, now)
                    elif m in gone and all(w["is_healthy"] for w in entries):
                        back[m] = now
                time.sleep(0.05)
            served = load.engines("chat")[before["chat"]["engine_id"]]
            for m, url in victims.items():
                after = _generate(url)
                assert after["engine_id"] == before[m]["engine_id"], after
                assert after["pid"] != before[m]["pid"], after
            # the routers send them requests again
            deadline = time.monotonic() + 20
            while not (load.engines("chat")[before["chat"]["engine_id"]] > served
                       and all(_routed(run, u) for u in units.values())):
                assert time.monotonic() < deadline, (load.engines("chat"), {
                    u: _routed(run, u) for u in units.values()})
                time.sleep(0.1)
            load.wait_ok(load.summary()["chat"]["ok"] + 20)
        for unit in units.values():
            u = run.wait_unit(unit, state="healthy", restarts=1)
            assert u["last_exit"] == "killed 9", u
            assert f"sgl-gen: {unit} exited (killed 9); restart 1/3 in 1 s" in run.stdout()
        state = run.state()
        assert state["phase"] == "up"
        assert {n: u["restarts"] for n, u in state["units"].items()
                if n not in units.values()} == dict.fromkeys(
            set(state["units"]) - set(units.values()), 0)
        assert run.job_state() == "RUNNING"
        print("\n" + "\n".join(
            f"{m}: kill -> out of the router {gone[m] - killed:.2f}s, -> healthy in the router "
            f"{back[m] - killed:.2f}s (restart_backoff 1 s)" for m in victims)
              + f"\nload: {load.report()}")
        assert load.summary()["total"]["failed"] == 0, load.report()
    finally:
        run.cancel()


def test_when_the_restarts_run_out_the_job_ends_with_the_log_tail(cluster, tmp_path):
    run = _submit(cluster, tmp_path, _topo(
        "life-out", 1, CHAT, slurm="restart_limit: 1, restart_backoff: 1"))
    try:
        chat = run.wait_up()["chat"]
        victim = chat["engines"]["regular"][0]
        first = _generate(victim)
        unit = f"engine-{first['engine_id']}"
        os.kill(first["pid"], signal.SIGKILL)
        run.wait_unit(unit, state="healthy", restarts=1, last_exit="killed 9")
        second = _generate(victim)
        assert second["pid"] != first["pid"]
        os.kill(second["pid"], signal.SIGKILL)
        run.wait_gone(60)
        out = run.stdout()
        lines = out.splitlines()
        failures = [i for i, line in enumerate(lines)
                    if line.startswith("sgl-gen: ") and "; last lines of its log:" in line]
        assert len(failures) == 1, out
        i = failures[0]
        assert lines[i] == (f"sgl-gen: {unit} exited (killed 9) after 1 restart(s), no more "
                            "left; last lines of its log:"), out
        log = run.log_dir / f"{unit}-0.log"
        assert lines[i + 1] == f"==> {log} <==", out
        # the tail: both runs of the engine (the log is appended across restarts)
        tail = lines[i + 2:]
        assert sum(f"listening on {victim}" in line for line in tail) == 2, out
        state = run.state()
        assert (state["phase"], state["failed_unit"]) == ("failed", unit), state
        assert state["units"][unit]["state"] == "failed"
        assert state["units"][unit]["restarts"] == 1
    finally:
        run.cancel()


# ---------------------------------------------------------------------------------------------
# 5. drain on SIGUSR1
# ---------------------------------------------------------------------------------------------


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_usr1_drains_requests_in_flight_and_ends_the_job(cluster, tmp_path):
    run = _submit(cluster, tmp_path, _topo(
        "life-drain", 1, CHAT, env="SGLGEN_REHEARSAL_REQUEST_DELAY: '3'"))
    try:
        assert "#SBATCH --signal=B:USR1@120\n" in run.sbatch.read_text()
        chat = run.wait_up()["chat"]
        router, engines = chat["router"], chat["engines"]["regular"]
        pids = [cmd for _, cmd in _job_pids(run.job)]
        assert sum(cmd.startswith("sglang::router") for cmd in pids) == 1, pids
        assert sum("/lib/rehearsal.py " in cmd for cmd in pids) == 2, pids
        results: list[Any] = []

        def one() -> None:
            try:
                results.append(_generate(router, timeout=60)["engine_id"])
            except Exception as exc:  # noqa: BLE001 - every failure counts
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while sum(_get(e + "/get_load")[0]["num_reqs"] for e in engines) < 6:
            assert time.monotonic() < deadline, results
            time.sleep(0.05)
        signalled = time.monotonic()
        _run(cluster, "scancel", "--signal=USR1", "--batch", run.job)
        while not _refused(router):
            assert time.monotonic() < signalled + 10, "the router still takes connections"
            time.sleep(0.05)
        refused = time.monotonic() - signalled
        in_flight = sum(t.is_alive() for t in threads)
        with pytest.raises(urllib.error.URLError) as exc:
            _generate(router, timeout=10)
        assert isinstance(exc.value.reason, ConnectionRefusedError), exc.value
        for t in threads:
            t.join(60)
        assert sorted(map(str, results)) == ["chat-regular-0"] * 3 + ["chat-regular-1"] * 3, \
            results
        # the job ends by itself: COMPLETED, not FAILED or CANCELLED
        deadline = time.monotonic() + 60
        while (js := run.job_state()) in ("RUNNING", "COMPLETING"):
            assert time.monotonic() < deadline, run.stdout()
            time.sleep(0.2)
        ended = time.monotonic() - signalled
        assert js == "COMPLETED", (js, run.stdout())
        state = run.state()
        assert (state["phase"], state["message"]) == ("stopped", "drained"), state
        assert {u["state"] for u in state["units"].values()} == {"stopped"}, state
        deadline = time.monotonic() + 10  # no engine, router, srun or slurmstepd left
        while left := _job_pids(run.job):
            assert time.monotonic() < deadline, left
            time.sleep(0.2)
        print(f"\nUSR1 -> router refuses connections {refused:.2f}s ({in_flight} of 6 requests "
              f"still in flight), -> job COMPLETED {ended:.2f}s")
        assert in_flight > 0  # refused while it was still finishing the others
    finally:
        run.cancel()


# ---------------------------------------------------------------------------------------------
# 6. model names that mangle alike
# ---------------------------------------------------------------------------------------------


def test_models_named_a_dash_b_and_a_underscore_b_both_run(cluster, tmp_path):
    run = _submit(cluster, tmp_path, _topo(
        "life-names", 1, _model("a-b", ("regular", 1, 1)) + _model("a_b", ("regular", 1, 1))))
    try:
        models = run.wait_up()
        assert set(run.steps()) == {"engine-a-b-regular-0", "engine-a_b-regular-0",
                                    "router-a-b", "router-a_b"}
        assert _generate(models["a-b"]["router"])["engine_id"] == "a-b-regular-0"
        assert _generate(models["a_b"]["router"])["engine_id"] == "a_b-regular-0"
        text = run.sbatch.read_text()
        assert re.search(r"^sgl_engine__a__b__regular__0\(\) \{$", text, re.M)
        assert re.search(r"^sgl_engine__a_ub__regular__0\(\) \{$", text, re.M)
    finally:
        run.cancel()
