"""``deploy / status / logs / down --target slurm`` without a cluster: the parsers of Slurm's
output, the job record, the progress text, and the commands against fake ``sbatch``, ``squeue``,
``scontrol`` and ``scancel`` on PATH (one Python script playing a scenario). tests/test_slurm.py
runs them on the real test cluster."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from generator.deploy import slurmctl as sc
from generator.deploy import slurmjobs as sj
from generator.errors import SglGenError
from tests.helpers import run_cli, write_topo

# -- pure parts ------------------------------------------------------------------------------------


def test_parse_parsable():
    assert sc.parse_parsable("123\n") == ("123", None)
    assert sc.parse_parsable("sbatch: warning: x\n4567;gpu-cluster\n") == ("4567", "gpu-cluster")
    assert sc.parse_parsable("12_3") == ("12_3", None)
    for bad in ("", "\n", "Submitted batch job 5", "5x"):
        with pytest.raises(ValueError):
            sc.parse_parsable(bad)


def test_parse_squeue():
    assert sc.parse_squeue("") is None
    assert sc.parse_squeue("\n") is None
    q = sc.parse_squeue("PENDING|Resources|\n")
    assert q == sc.QueueState("PENDING", "Resources", "")
    assert q.active and q.text() == "PENDING (Resources)"
    q = sc.parse_squeue("RUNNING|None|sgn[1-3]\n")
    assert q is not None and q.text() == "RUNNING on sgn[1-3]"
    q = sc.parse_squeue("PENDING|ReqNodeNotAvail, UnavailableNodes:sgn1|\n")
    assert q is not None and q.reason == "ReqNodeNotAvail, UnavailableNodes:sgn1"
    q = sc.parse_squeue("COMPLETING|None|sgn1")
    assert q is not None and not q.active
    q = sc.parse_squeue("CANCELLED|None|sgn1")
    assert q is not None and not q.active


def test_definitive_reasons():
    for r in ("PartitionNodeLimit", "PartitionConfig", "BadConstraints", "InvalidAccount",
              "InvalidQOS", "QOSMaxNodePerJobLimit", "AssocMaxGRESPerJob",
              "QOSMaxWallDurationPerJobLimit", "PartitionTimeLimit"):
        assert sc.definitive(r), r
    for r in ("Resources", "Priority", "Dependency", "BeginTime", "None", "",
              "ReqNodeNotAvail, UnavailableNodes:sgn1", "QOSMaxCpuPerUserLimit", "AssocGrpGRES",
              "JobHeldUser"):
        assert not sc.definitive(r), r


SCONTROL_JOB = """\
JobId=42 JobName=sgl pd multinode
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   JobState=PENDING Reason=PartitionNodeLimit Dependency=(null)
   Partition=debug AllocNode:Sid=login:123
   NumNodes=4-4 NumCPUs=4 NumTasks=4 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   Command=/runs/my dir/x.sbatch
   WorkDir=/runs/my dir
   StdErr=/runs/my dir/sgl-x-42.out
   StdIn=/dev/null
   StdOut=/runs/my dir/sgl-x-42.out
   Power=

"""


def test_parse_scontrol():
    d = sc.parse_scontrol(SCONTROL_JOB)
    assert d["JobId"] == "42"
    assert d["JobName"] == "sgl pd multinode"
    assert d["JobState"] == "PENDING" and d["Reason"] == "PartitionNodeLimit"
    assert d["AllocNode:Sid"] == "login:123"
    assert d["NumNodes"] == "4-4" and sc.first_int(d["NumNodes"]) == 4
    assert d["StdOut"] == "/runs/my dir/sgl-x-42.out"
    assert d["WorkDir"] == "/runs/my dir"
    assert d["Power"] == ""
    p = sc.parse_scontrol("PartitionName=debug\n   AllowGroups=ALL Default=YES\n"
                          "   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0\n"
                          "   State=UP TotalCPUs=48 TotalNodes=3 SelectTypeParameters=NONE\n")
    assert sc.first_int(p["TotalNodes"]) == 3 and sc.first_int(p["MaxNodes"]) is None


def test_record_round_trip_and_refusals(tmp_path):
    rec = sc.Record("dep", "17", "/o/dep/slurm/dep.sbatch", str(tmp_path), 1.5,
                    str(tmp_path / "sgl-dep-17.out"))
    path = sc.write_record(rec)
    assert path == tmp_path / sc.RECORD
    assert [p.name for p in tmp_path.iterdir()] == [sc.RECORD]  # no temporary left
    doc = json.loads(path.read_text())
    assert doc == {"format": 1, "deployment": "dep", "job": "17",
                   "sbatch": "/o/dep/slurm/dep.sbatch", "run_dir": str(tmp_path),
                   "submitted": 1.5, "out": str(tmp_path / "sgl-dep-17.out")}
    assert sc.read_record(tmp_path) == rec
    assert rec.log_dir == tmp_path / "sgl-dep-17"
    assert rec.endpoints_file == tmp_path / "endpoints-17.json"
    assert sc.read_record(tmp_path / "none") is None
    path.write_text("{")
    with pytest.raises(SglGenError, match="cannot read it"):
        sc.read_record(tmp_path)
    path.write_text(json.dumps(dict(doc, format=2)))
    with pytest.raises(SglGenError, match="not a job record of sgl-gen"):
        sc.read_record(tmp_path)


def _state(phase: str = "starting", **units: dict) -> dict:
    return {"format": 1, "deployment": "sj", "job": "101", "phase": phase, "message": "",
            "failed_unit": None, "endpoints": None, "updated": 0.0, "units": units}


def _unit(kind: str = "engine", state: str = "starting", restarts: int = 0,
          last_exit: str | None = None, nodes=("n1",), url: str = "http://10.0.0.1:31000") -> dict:
    return {"kind": kind, "model": "m", "role": "router" if kind == "router" else "regular",
            "nodes": list(nodes), "url": url, "state": state, "restarts": restarts,
            "last_exit": last_exit, "cpus": 8, "mem_mb": 1000, "step": None}


def test_progress_text():
    assert sc.progress(None) == "starting (no state.json yet)"
    st = _state(**{"engine-m-regular-0": _unit(state="healthy"),
                   "engine-m-regular-1": _unit(state="backoff", restarts=1, last_exit="exit 2"),
                   "router-m": _unit("router")})
    assert sc.progress(st) == ("starting: engines healthy 1/2, routers 0/1; engine-m-regular-1 "
                               "waits to restart (restarts 1, last exit 2)")
    st = _state("up", **{"engine-m-regular-0": _unit(state="healthy", restarts=2),
                         "router-m": _unit("router", state="healthy")})
    assert sc.progress(st) == ("up: engines healthy 1/1, routers 1/1; engine-m-regular-0 "
                               "healthy (restarts 2)")


def test_failure_text(tmp_path):
    out = tmp_path / "job.out"
    out.write_text("sgl-gen: started engine-m-regular-0\n"
                   "sgl-gen: engine-m-regular-0 exited (exit 2) after 3 restart(s), no more "
                   "left; last lines of its log:\n"
                   "==> /r/engine-m-regular-0-0.log <==\n"
                   "error: --bogus-flag\n"
                   "server_args api_key='sk-live-1234'\n")
    lines = sc.failure_text(str(out), "engine-m-regular-0")
    assert lines[0].startswith("sgl-gen: engine-m-regular-0 exited (exit 2)")
    assert "error: --bogus-flag" in lines
    assert "sk-live-1234" not in "\n".join(lines)
    out.write_text("".join(f"line {i}\n" for i in range(100)))
    lines = sc.failure_text(str(out), None)
    assert lines[0] == f"(last 30 line(s) of {out})" and lines[1:] == [
        f"line {i}" for i in range(70, 100)]
    assert sc.failure_text(str(tmp_path / "nope"), None)[0].startswith("(no job output: ")


def test_tail_lines_and_unit_logs(tmp_path):
    log = tmp_path / "u-0.log"
    log.write_bytes(b"".join(b"%d\n" % i for i in range(100000)))
    lines, size = sc.tail_lines(log, 3)
    assert lines == ["99997", "99998", "99999"] and size == log.stat().st_size
    assert sc.tail_lines(log, 0) == ([], size)
    for name in ("engine-a-0-0.log", "engine-a-0-1.log", "engine-a-0-regular-0-0.log",
                 "engine-a-0-x.log", "engine-a-0-2.log.tmp"):
        (tmp_path / name).write_text("")
    assert [r for r, _ in sc.unit_logs(tmp_path, "engine-a-0")] == [0, 1]
    assert [r for r, _ in sc.unit_logs(tmp_path, "engine-a-0-regular-0")] == [0]


# -- a fake Slurm --------------------------------------------------------------------------------

FAKE = r'''
import json, os, sys
ctl = os.environ["FAKE_SLURM"]
me = ME  # noqa: F821 (set by the wrapper)
args = sys.argv[1:]
sc = json.load(open(os.path.join(ctl, "scenario.json")))
with open(os.path.join(ctl, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"cmd": me, "args": args, "cwd": os.getcwd()}) + "\n")

def flag(name):
    return os.path.exists(os.path.join(ctl, name))

def cwd():
    return open(os.path.join(ctl, "cwd")).read()

def write_files(files):
    for rel, content in files.items():
        p = os.path.join(cwd(), rel.replace("{job}", sc["job"]))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "a" if rel.endswith((".log", ".out")) else "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))

if me == "sbatch":
    s = sc.get("sbatch", {})
    sys.stderr.write(s.get("stderr", ""))
    if s.get("rc", 0):
        sys.exit(s["rc"])
    open(os.path.join(ctl, "cwd"), "w").write(os.getcwd())
    print(s.get("stdout", sc["job"]))
elif me == "squeue":
    if flag("cancelled"):
        line = sc.get("squeue_cancelled")
    elif flag("signalled"):
        line = sc.get("squeue_signalled")
    else:
        n = int(open(os.path.join(ctl, "n")).read()) if flag("n") else 0
        steps = sc["steps"]
        step = steps[min(n, len(steps) - 1)]
        open(os.path.join(ctl, "n"), "w").write(str(n + 1))
        if n < len(steps):
            write_files(step.get("files", {}))
        line = step.get("squeue")
    if line is None:
        sys.stderr.write("slurm_load_jobs error: Invalid job id specified\n")
        sys.exit(1)
    print(line)
elif me == "scontrol":
    what = args[1]
    text = sc.get("scontrol_" + what)
    if text is None:
        sys.stderr.write(f"{what} not found\n")
        sys.exit(1)
    print(text.replace("{cwd}", cwd() if flag("cwd") else "/nowhere").replace("{job}", sc["job"]))
elif me == "scancel":
    open(os.path.join(ctl, "signalled" if "--signal=USR1" in args else "cancelled"), "w").close()
'''


class FakeSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        script = root / "fake_slurm.py"
        script.write_text(FAKE)
        for cmd in ("sbatch", "squeue", "scontrol", "scancel"):
            p = self.bin / cmd
            p.write_text(f"#!{sys.executable}\n"
                         f"exec(open({str(script)!r}).read(), {{'__name__': '__main__', "
                         f"'ME': {cmd!r}}})\n")
            p.chmod(0o755)

    def play(self, steps: list[dict], job: str = "101", **extra: object) -> None:
        for name in ("n", "cancelled", "signalled", "calls.jsonl"):
            (self.root / name).unlink(missing_ok=True)
        (self.root / "scenario.json").write_text(json.dumps({"job": job, "steps": steps,
                                                             **extra}))

    def calls(self, cmd: str | None = None) -> list[dict]:
        p = self.root / "calls.jsonl"
        got = [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
        return [c for c in got if cmd is None or c["cmd"] == cmd]


TOPO = """\
deployment: {name: sj}
cluster: {nodes: 1, gpus_per_node: 2}
runtime: {python: /usr/bin/python3}
sglang:
  - name: m
    model_path: /models/m
    update_weights: false
    server_groups: [{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}]
"""

JOB_INFO = ("JobId={job} JobName=sgl-sj\n   JobState=RUNNING Reason=None\n"
            "   Partition=debug\n   NumNodes=1 NumCPUs=16\n   WorkDir={cwd}\n"
            "   StdOut={cwd}/sgl-sj-{job}.out\n")
UNITS = ("engine-m-regular-0", "engine-m-regular-1", "router-m")


def up_state(phase: str = "up", healthy: int = 3, **kw: object) -> dict:
    units = {n: _unit("router" if n.startswith("router") else "engine",
                      state="healthy" if i < healthy else "starting",
                      url=f"http://10.77.0.11:{31000 + i}") for i, n in enumerate(UNITS)}
    return dict(_state(phase, **units), job="101", **kw)


ENDPOINTS = {"deployment": "sj", "models": {"m": {"router": "http://10.77.0.11:30000"}}}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    f = FakeSlurm(tmp_path / "fake")
    monkeypatch.setenv("PATH", f"{f.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(f.root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sj, "POLL", 0.01)
    monkeypatch.setattr(sj, "LOG_POLL", 0.01)
    monkeypatch.setattr(sj, "SETTLE", 1.0)
    write_topo(tmp_path, TOPO)
    return f


def _up_steps() -> list[dict]:
    return [
        {"squeue": "PENDING|None|"},  # deploy's check of the run dir finds no record: not called
        {"squeue": "PENDING|Resources|"},
        {"squeue": "RUNNING|None|sgn1"},
        {"squeue": "RUNNING|None|sgn1", "files": {"sgl-sj-{job}/state.json": up_state(
            "starting", healthy=1)}},
        {"squeue": "RUNNING|None|sgn1", "files": {
            "sgl-sj-{job}/state.json": up_state(), "endpoints-{job}.json": ENDPOINTS,
            "sgl-sj-{job}.out": "sgl-gen: sj is up\n",
            "sgl-sj-{job}/engine-m-regular-0-0.log": "engine 0 ready --api-key sk-secret-9\n",
            "sgl-sj-{job}/router-m-0.log": "router ready\n"}},
    ]


def test_deploy_submits_follows_and_prints_the_routers(fake, tmp_path):
    fake.play(_up_steps()[1:], scontrol_job=JOB_INFO)
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "sgl-runs" / "sj"
    assert r.stdout == (f"sj is up (job 101); routers:\n  m: http://10.77.0.11:30000\n"
                        f"endpoints: {run_dir}/endpoints-101.json\nlogs: {run_dir}/sgl-sj-101\n")
    # the render report and the progress on stderr, each change once
    assert "create    out/sj/slurm/sj.sbatch" in r.stderr
    assert "sj: job 101: PENDING (Resources)\n" in r.stderr
    assert r.stderr.count("sj: job 101: RUNNING on sgn1\n") == 1
    assert "sj: job 101: starting: engines healthy 1/2, routers 0/1\n" in r.stderr
    sb = fake.calls("sbatch")
    assert sb == [{"cmd": "sbatch", "args": ["--parsable",
                                             str(tmp_path / "out/sj/slurm/sj.sbatch")],
                   "cwd": str(run_dir)}]
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    rec = json.loads((run_dir / "sgl-gen-job.json").read_text())
    assert rec["job"] == "101" and rec["deployment"] == "sj" and rec["format"] == 1
    assert rec["out"] == f"{run_dir}/sgl-sj-101.out" and rec["run_dir"] == str(run_dir)
    assert rec["sbatch"] == str(tmp_path / "out/sj/slurm/sj.sbatch")
    assert all("--jobs=101" in c["args"] for c in fake.calls("squeue"))
    assert not fake.calls("scancel")

    # status: every unit healthy, the job running: exit 0
    fake.play([{"squeue": "RUNNING|None|sgn1"}], scontrol_job=JOB_INFO)
    st = run_cli("status", "topo.yaml", "--target", "slurm")
    assert st.exit_code == 0, st.output
    head, cols, *rows = st.stdout.splitlines()
    assert head == "sj: job 101 RUNNING on sgn1; phase up"
    assert cols.split() == ["UNIT", "KIND", "NODES", "STATE", "RESTARTS", "LAST_EXIT", "CPUS",
                            "MEM_MB", "HEALTHY", "URL"]
    assert [x.split()[:4] for x in rows] == [[u, "router" if u.startswith("r") else "engine",
                                              "n1", "healthy"] for u in UNITS]
    js = run_cli("status", "topo.yaml", "--target", "slurm", "--format", "json")
    doc = json.loads(js.stdout)
    assert (doc["deployment"], doc["job"], doc["job_state"], doc["phase"]) == (
        "sj", "101", "RUNNING", "up")
    assert [u["unit"] for u in doc["units"]] == list(UNITS) and all(
        u["healthy"] is True and u["cpus"] == 8 for u in doc["units"])

    # logs: the job's output first, then every unit's ranks, redacted
    lg = run_cli("logs", "topo.yaml", "--target", "slurm")
    assert lg.exit_code == 0, lg.output
    assert lg.stdout == ("==> job 101 <==\nsgl-gen: sj is up\n"
                         "==> engine-m-regular-0 rank 0 <==\nengine 0 ready --api-key ***\n"
                         "==> router-m rank 0 <==\nrouter ready\n")
    assert "engine-m-regular-1: no log in" in lg.stderr
    one = run_cli("logs", "topo.yaml", "--target", "slurm", "router-m", "-n", "0")
    assert one.stdout == "==> router-m rank 0 <==\n"
    bad = run_cli("logs", "topo.yaml", "--target", "slurm", "router-x")
    assert bad.exit_code == 2
    assert "unknown unit 'router-x' (units: engine-m-regular-0, engine-m-regular-1, router-m)" \
        in bad.stderr

    # a second deploy while the job runs: refused, nothing submitted
    fake.play([{"squeue": "RUNNING|None|sgn1"}])
    again = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert again.exit_code == 3
    assert "sj: job 101 (RUNNING on sgn1), submitted from" in again.stderr
    assert "sgl-gen down topo.yaml --target slurm` first" in again.stderr
    assert not fake.calls("sbatch")
    assert "create" not in again.stderr  # refused before the render

    # down: drained (the job leaves the queue once signalled)
    fake.play([{"squeue": "RUNNING|None|sgn1"}], squeue_signalled=None)
    dn = run_cli("down", "topo.yaml", "--target", "slurm")
    assert dn.exit_code == 0, dn.output
    assert dn.stdout == "sj: job 101 stopped (drained)\n"
    assert [c["args"] for c in fake.calls("scancel")] == [["--signal=USR1", "--batch", "101"]]
    # ... and again: already gone
    fake.play([{"squeue": None}])
    dn = run_cli("down", "topo.yaml", "--target", "slurm")
    assert dn.exit_code == 0 and dn.stdout == "sj: job 101 is not running (it has ended already)\n"
    # status of an ended job: exit 3
    fake.play([{"squeue": None}], scontrol_job=JOB_INFO.replace("RUNNING", "CANCELLED"))
    st = run_cli("status", "topo.yaml", "--target", "slurm")
    assert st.exit_code == 3
    assert st.stdout.startswith("sj: job 101 has ended (CANCELLED); phase up\n")


def test_deploy_no_wait_and_out_dir(fake, tmp_path):
    fake.play([{"squeue": "PENDING|Priority|"}], scontrol_job=JOB_INFO)
    r = run_cli("deploy", "topo.yaml", "--target", "slurm", "--no-wait", "-o", "o2",
                "--run-dir", "runs/x")
    assert r.exit_code == 0, r.output
    assert r.stdout == "submitted job 101\n"
    assert (tmp_path / "runs/x/sgl-gen-job.json").is_file()
    # the rendered directory, as it is (its job pends: refused in that run dir, not in another)
    r = run_cli("deploy", "o2/sj", "--target", "slurm", "--no-wait", "--format", "json",
                "--run-dir", "runs/x")
    assert r.exit_code == 3 and "is still in the queue" in r.stderr
    r = run_cli("deploy", "o2/sj", "--target", "slurm", "--no-wait", "--format", "json",
                "--run-dir", "runs/y")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"deployment": "sj", "job": "101", "ok": True,
                                    "run_dir": str(tmp_path / "runs/y")}
    assert fake.calls("sbatch")[-1]["args"] == ["--parsable", str(tmp_path / "o2/sj/slurm/sj.sbatch")]
    # a rendered dir without the Slurm target
    assert run_cli("render", "topo.yaml", "-o", "o3", "-q").exit_code == 0
    r = run_cli("deploy", "o3/sj", "--target", "slurm")
    assert r.exit_code == 1
    assert "o3/sj/slurm/sj.sbatch: missing" in r.stderr and "--target slurm" in r.stderr
    r = run_cli("deploy", "o2/sj", "--target", "slurm", "-o", "o4")
    assert r.exit_code == 2 and "-o: o2/sj is a rendered deployment" in r.stderr
    r = run_cli("deploy", "o2/sj", "--target", "slurm", "--rehearse")
    assert r.exit_code == 2 and "is a rendered deployment" in r.stderr


def test_a_unit_that_fails_ends_deploy_with_its_log_tail(fake, tmp_path):
    failed = dict(up_state("failed", healthy=0), failed_unit="engine-m-regular-1",
                  message="exited (exit 2) after 3 restart(s), no more left")
    out = ("sgl-gen: started engine-m-regular-0\n"
           "sgl-gen: engine-m-regular-1 exited (exit 2) after 3 restart(s), no more left; last "
           "lines of its log:\n==> /x/engine-m-regular-1-0.log <==\nunrecognized arguments: "
           "--bogus\nHF_TOKEN=hf_abcdef\n")
    fake.play([{"squeue": "RUNNING|None|sgn1"},
               {"squeue": "RUNNING|None|sgn1", "files": {"sgl-sj-{job}/state.json": failed,
                                                         "sgl-sj-{job}.out": out}},
               {"squeue": None}], scontrol_job=JOB_INFO.replace(
                   "JobState=RUNNING Reason=None", "JobState=FAILED Reason=NonZeroExitCode"))
    r = run_cli("deploy", "topo.yaml", "--target", "slurm", "--format", "json")
    assert r.exit_code == 3, r.output
    assert ("sj: job 101 failed: engine-m-regular-1 exited (exit 2) after 3 restart(s), "
            "no more left [FAILED, Reason=NonZeroExitCode]") in r.stderr
    assert "unrecognized arguments: --bogus" in r.stderr
    assert "hf_abcdef" not in r.output and "HF_TOKEN=***" in r.stderr
    assert "sgl-gen: started engine-m-regular-0" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["job"] == "101" and "--bogus" in doc["error"]


def test_a_job_that_ends_without_saying_why_shows_its_last_lines(fake):
    fake.play([{"squeue": "RUNNING|None|sgn1", "files": {
        "sgl-sj-{job}.out": "".join(f"out {i}\n" for i in range(40)) + "srun: error: x\n"}},
        {"squeue": None}], scontrol_job=JOB_INFO)
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 3
    assert "sj: job 101 ended before its endpoints were written" in r.stderr
    assert "srun: error: x" in r.stderr and "\nout 11\n" in r.stderr and "\nout 10\n" not in r.stderr


def test_a_job_that_can_never_start_is_cancelled(fake):
    fake.play([{"squeue": "PENDING|None|"}, {"squeue": "PENDING|PartitionNodeLimit|"}],
              scontrol_job=JOB_INFO.replace("NumNodes=1", "NumNodes=4-4"),
              scontrol_partition="PartitionName=debug\n   MaxNodes=UNLIMITED TotalNodes=3\n",
              squeue_cancelled=None)
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 3
    assert ("sj: job 101 cannot start: Slurm says PartitionNodeLimit (the job asks for 4 "
            "node(s); partition debug has 3); it was cancelled") in r.stderr
    assert "hint: fit the request to the partition" in r.stderr
    assert [c["args"] for c in fake.calls("scancel")] == [["101"]]


def test_timeout_leaves_the_job_and_ctrl_c_too(fake, monkeypatch):
    fake.play([{"squeue": "PENDING|Resources|"}], scontrol_job=JOB_INFO)
    r = run_cli("deploy", "topo.yaml", "--target", "slurm", "--timeout", "1")
    assert r.exit_code == 3
    assert "sj: timed out after 1s waiting for job 101's endpoints; it reached: PENDING " \
           "(Resources)" in r.stderr
    assert "the job keeps running" in r.stderr and "sgl-gen down topo.yaml --target slurm" \
        in r.stderr
    assert not fake.calls("scancel")

    fake.play([{"squeue": None}])  # the first job has ended
    fake.play([{"squeue": "RUNNING|None|sgn1"}], scontrol_job=JOB_INFO, job="102")

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(sj, "_sleep", interrupt)
    (Path("sgl-runs/sj/sgl-gen-job.json")).unlink()
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 130, r.output
    assert "sj: interrupted; job 102: RUNNING on sgn1" in r.stderr
    assert "the job keeps running" in r.stderr and not fake.calls("scancel")


def test_sbatch_refusal_and_missing_commands(fake, monkeypatch, tmp_path):
    fake.play([], sbatch={"rc": 1, "stderr": "sbatch: error: Batch job submission failed: "
                                             "Requested node configuration is not available\n"})
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 3
    assert "Requested node configuration is not available" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.output
    fake.play([], sbatch={"rc": 1, "stderr": "sbatch: fatal: Could not establish a "
                                             "configuration source\n"})
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 3 and "hint: Slurm's controller cannot be reached from here" in r.stderr
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = run_cli("deploy", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 3
    assert "sbatch not found: run on a Slurm login node" in r.stderr
    r = run_cli("status", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 3 and "no job recorded in" in r.stderr


def test_down_cancels_a_job_that_does_not_drain_and_checks_job_names(fake, monkeypatch):
    monkeypatch.setattr(sj, "DEFAULT_STOP", 0.3)
    fake.play([{"squeue": "RUNNING|None|sgn1"}], scontrol_job=JOB_INFO,
              squeue_signalled="RUNNING|None|sgn1", squeue_cancelled=None)
    r = run_cli("down", "topo.yaml", "--target", "slurm", "--job", "101")
    assert r.exit_code == 0, r.output
    assert r.stdout == "sj: job 101 stopped (cancelled)\n"
    assert [c["args"] for c in fake.calls("scancel")] == [["--signal=USR1", "--batch", "101"],
                                                          ["101"]]
    fake.play([{"squeue": "RUNNING|None|sgn1"}], scontrol_job=JOB_INFO, squeue_cancelled=None)
    r = run_cli("down", "topo.yaml", "--target", "slurm", "--job", "101", "--now")
    assert r.exit_code == 0 and r.stdout == "sj: job 101 stopped (cancelled)\n"
    assert [c["args"] for c in fake.calls("scancel")] == [["101"]]
    # another job's id: refused, nothing cancelled
    fake.play([{"squeue": "RUNNING|None|sgn1"}],
              scontrol_job=JOB_INFO.replace("JobName=sgl-sj", "JobName=train"))
    r = run_cli("down", "topo.yaml", "--target", "slurm", "--job", "101")
    assert r.exit_code == 3 and "job 101 is named 'train', not 'sgl-sj'" in r.stderr
    assert not fake.calls("scancel")
    r = run_cli("down", "topo.yaml", "--target", "slurm")
    assert r.exit_code == 0 and "nothing to stop" in r.stdout


def test_logs_follow_until_the_job_ends(fake, tmp_path):
    fake.play([{"squeue": "RUNNING|None|sgn1"}], scontrol_job=JOB_INFO)
    assert run_cli("deploy", "topo.yaml", "--target", "slurm", "--no-wait").exit_code == 0
    d = tmp_path / "sgl-runs/sj/sgl-sj-101"
    d.mkdir()
    (d / "router-m-0.log").write_text("old 1\nold 2\n")
    fake.play([{"squeue": "RUNNING|None|sgn1"},
               {"squeue": "RUNNING|None|sgn1", "files": {
                   "sgl-sj-{job}/router-m-0.log": "new --api-key=k-123\npartial"}},
               {"squeue": "RUNNING|None|sgn1", "files": {
                   "sgl-sj-{job}/engine-m-regular-1-0.log": "late engine\n"}},
               {"squeue": "RUNNING|None|sgn1"},
               {"squeue": None}], scontrol_job=JOB_INFO)
    r = run_cli("logs", "topo.yaml", "--target", "slurm", "-f", "-n", "1", "router-m",
                "engine-m-regular-1")
    assert r.exit_code == 0, r.output
    assert r.stdout == ("router-m rank 0 | old 2\nrouter-m rank 0 | new --api-key=***\n"
                        "engine-m-regular-1 rank 0 | late engine\nrouter-m rank 0 | partial\n")
    assert r.stderr.endswith("sj: job 101 has ended\n")


# -- routing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["deploy", "--target", "slurm,bash"], "slurm cannot be combined with other targets"),
    (["status", "--target", "bash,slurm"], "slurm cannot be combined with other targets"),
    (["deploy", "--target", "slurm", "--hosts", "a"], "--hosts: does not apply with --target"),
    (["deploy", "--target", "slurm", "--dry-run"], "--dry-run: does not apply"),
    (["deploy", "--target", "slurm", "--max-unavailable", "2"], "--max-unavailable: does not"),
    (["deploy", "--target", "slurm", "--allow-downtime"], "--allow-downtime: does not apply"),
    (["deploy", "--target", "slurm", "--adopt"], "--adopt: does not apply"),
    (["status", "--target", "slurm", "--ssh-config", "x"], "--ssh-config: does not apply"),
    (["down", "--target", "slurm", "--local"], "--local: does not apply"),
    (["deploy", "--run-dir", "x"], "--run-dir: only with --target slurm"),
    (["deploy", "--no-wait"], "--no-wait: only with --target slurm"),
    (["deploy", "-o", "x"], "--out: only with --target slurm"),
    (["down", "--now"], "--now: only with --target slurm"),
    (["logs", "--job", "5"], "--job: only with --target slurm"),
    (["deploy"], "the topology has no hosts (cluster.hosts)"),
    (["status"], "--target slurm runs it as a Slurm job"),
    (["diff", "--target", "slurm"], "`sgl-gen diff` works on SSH hosts only"),
])
def test_routing_usage_errors(fake, args, message):
    r = run_cli(args[0], "topo.yaml", *args[1:])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert not fake.calls()


def test_help_mentions_slurm():
    r = run_cli("deploy", "--help")
    assert "--no-wait" in r.stdout and "--run-dir" in r.stdout and "default 1800" in r.stdout


def test_job_stdout_from_scontrol(tmp_path):
    info = {"StdOut": "serve-%j-%x.out", "WorkDir": "/runs/w", "JobName": "sgl-sj",
            "UserId": "ann(1000)"}
    assert sj._job_stdout(info, tmp_path, "sj", "7") == "/runs/w/serve-7-sgl-sj.out"
    assert sj._job_stdout({"StdOut": "/o/%u/%N.out"}, tmp_path, "sj", "7") == \
        f"{tmp_path}/sgl-sj-7.out"  # a node name is not known here: the default
    assert sj._job_stdout(None, tmp_path, "sj", "7") == f"{tmp_path}/sgl-sj-7.out"


def test_status_of_a_job_given_by_id_finds_its_work_dir(fake, tmp_path):
    work = tmp_path / "elsewhere"
    (work / "sgl-sj-101").mkdir(parents=True)
    (work / "sgl-sj-101" / "state.json").write_text(json.dumps(up_state("starting", healthy=2)))
    (fake.root / "cwd").write_text(str(work))
    fake.play([{"squeue": "RUNNING|None|sgn1"}], scontrol_job=JOB_INFO)
    r = run_cli("status", "topo.yaml", "--target", "slurm", "--job", "101", "--format", "json")
    assert r.exit_code == 3, r.output  # the router is not healthy yet
    doc = json.loads(r.stdout)
    assert doc["phase"] == "starting"
    assert [u["healthy"] for u in doc["units"]] == [True, True, False]
    r = run_cli("status", "topo.yaml", "--target", "slurm", "--job", "x1")
    assert r.exit_code == 2 and "--job: 'x1' is not a Slurm job id" in r.stderr
