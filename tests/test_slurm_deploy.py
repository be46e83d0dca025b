"""``deploy / status / logs / down --target slurm`` end to end on the real test cluster
(tests/slurmcluster.py): the CLI renders, submits, follows the job until its routers list every
engine, prints the router URLs; then status, logs and a drained down. A job that fails at start
and one that can never be scheduled end with exit 3 and say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import write_topo
from tests.test_slurm import cluster  # noqa: F401 - the module's cluster fixture

pytestmark = pytest.mark.slow

TOPO = f"""
deployment: {{name: sd, hf_checkpoint: /models/m}}
cluster:
  nodes: 3
  gpus_per_node: 8
  slurm: {{time: "00:20:00", restart_limit: 1, restart_backoff: 1}}
runtime: {{python: {sys.executable}}}
sglang:
  - name: actor
    server_groups:
      - {{worker_type: prefill, num_gpus: 4, num_gpus_per_engine: 4}}
      - {{worker_type: decode, num_gpus: 16, num_gpus_per_engine: 16}}
  - name: judge
    router: {{policy: round_robin}}
    server_groups:
      - {{worker_type: regular, num_gpus: 4, num_gpus_per_engine: 2}}
"""


def _cli(c, cwd, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from generator.cli import main; main()", *args],
                          cwd=cwd, env=c.env, capture_output=True, text=True,
                          timeout=timeout)


def _squeue(c) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %T %j"], env=c.env,
                          capture_output=True, text=True).stdout


def _generate(url: str) -> dict:
    req = urllib.request.Request(url + "/generate", method="POST", data=json.dumps(
        {"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["sgl_gen"]


def test_deploy_status_logs_down(cluster, tmp_path):  # noqa: F811
    topo = write_topo(tmp_path, TOPO)
    t0 = time.monotonic()
    r = _cli(cluster, tmp_path, "deploy", str(topo), "--target", "slurm", "--rehearse",
             "--timeout", "180")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\ndeploy --target slurm -> router URLs: {took:.1f} s")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("sd is up (job ") and lines[0].endswith("); routers:"), lines
    job = lines[0].split("(job ")[1].split(")")[0]
    a = cluster.addrs
    assert lines[1:3] == [f"  actor: http://{a[0]}:30000", f"  judge: http://{a[0]}:30001"]
    run_dir = tmp_path / "sgl-runs" / "sd"
    assert lines[3] == f"endpoints: {run_dir / f'endpoints-{job}.json'}"
    # progress went to stderr: the job's state, then its engines
    assert "RUNNING" in r.stderr and "engines healthy 4/4" in r.stderr, r.stderr
    assert (tmp_path / "out" / "sd" / "slurm" / "sd.sbatch").is_file()
    record = json.loads((run_dir / "sgl-gen-job.json").read_text())
    assert (record["job"], record["deployment"]) == (job, "sd")
    # the URLs it printed serve: PD through the real router, the regular model round robin
    assert _generate(f"http://{a[0]}:30000")["engine_id"] == "actor-decode-0"
    assert {_generate(f"http://{a[0]}:30001")["engine_id"] for _ in range(4)} == {
        "judge-regular-0", "judge-regular-1"}

    # a second deploy while the job runs is refused
    r2 = _cli(cluster, tmp_path, "deploy", str(topo), "--target", "slurm", "--rehearse")
    assert r2.returncode == 3 and "down" in r2.stderr, r2.stderr

    st = _cli(cluster, tmp_path, "status", str(topo), "--target", "slurm", "--format", "json")
    assert st.returncode == 0, st.stdout + st.stderr
    doc = json.loads(st.stdout)
    assert doc["job"] == job and doc["job_state"] == "RUNNING" and doc["phase"] == "up"
    units = {u["unit"]: u for u in doc["units"]}
    assert set(units) == {"engine-actor-prefill-0", "engine-actor-decode-0",
                          "engine-judge-regular-0", "engine-judge-regular-1", "router-actor",
                          "router-judge"}
    assert all(u["healthy"] and u["restarts"] == 0 for u in units.values())
    assert units["engine-actor-prefill-0"]["cpus"] == 8  # TP 4 of 8 GPUs on a 16-CPU node
    assert units["engine-actor-decode-0"]["cpus"] == 16
    text = _cli(cluster, tmp_path, "status", str(topo), "--target", "slurm")
    assert text.returncode == 0 and "engine-actor-decode-0" in text.stdout

    lg = _cli(cluster, tmp_path, "logs", str(topo), "--target", "slurm",
              "engine-actor-decode-0", "-n", "20")
    assert lg.returncode == 0, lg.stderr
    assert "==> engine-actor-decode-0 rank 0 <==" in lg.stdout
    assert "==> engine-actor-decode-0 rank 1 <==" in lg.stdout
    assert "listening on" in lg.stdout
    bad = _cli(cluster, tmp_path, "logs", str(topo), "--target", "slurm", "engine-nope")
    assert bad.returncode == 2 and "engine-actor-decode-0" in bad.stderr

    dn = _cli(cluster, tmp_path, "down", str(topo), "--target", "slurm")
    assert dn.returncode == 0, dn.stdout + dn.stderr
    assert dn.stdout.strip() == f"sd: job {job} stopped (drained)"
    assert job not in _squeue(cluster)
    state = json.loads((run_dir / f"sgl-sd-{job}" / "state.json").read_text())
    assert state["phase"] == "stopped"
    again = _cli(cluster, tmp_path, "down", str(topo), "--target", "slurm")
    assert again.returncode == 0


def test_a_job_that_fails_at_start_exits_3_with_the_units_log(cluster, tmp_path):  # noqa: F811
    # a setting the engine refuses at start (the rehearsal engine's own), past validation
    topo = write_topo(tmp_path, TOPO.replace(
        f"runtime: {{python: {sys.executable}}}",
        f"runtime: {{python: {sys.executable}, "
        "env: {SGLGEN_REHEARSAL_STARTUP_DELAY: soon}}"))
    r = _cli(cluster, tmp_path, "deploy", str(topo), "--target", "slurm", "--rehearse",
             "--timeout", "180")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "after 1 restart(s), no more left" in r.stderr, r.stderr
    assert "last lines of its log:" in r.stderr and "SGLGEN_REHEARSAL_STARTUP_DELAY" in r.stderr
    assert not _squeue(cluster).strip()
    st = _cli(cluster, tmp_path, "status", str(topo), "--target", "slurm")
    assert st.returncode == 3


def test_a_job_that_cannot_be_scheduled_says_so(cluster, tmp_path):  # noqa: F811
    topo = write_topo(tmp_path, TOPO.replace("nodes: 3", "nodes: 4"))
    t0 = time.monotonic()
    r = _cli(cluster, tmp_path, "deploy", str(topo), "--target", "slurm", "--rehearse",
             "--timeout", "120")
    assert r.returncode == 3, r.stdout + r.stderr
    assert time.monotonic() - t0 < 60
    assert "cannot start: Slurm says Partition" in r.stderr, r.stderr
    assert "4 node(s)" in r.stderr and "has 3" in r.stderr, r.stderr
    assert not _squeue(cluster).strip()  # the job it submitted is cancelled


def test_no_wait_submits_and_returns_the_job(cluster, tmp_path):  # noqa: F811
    topo = write_topo(tmp_path, TOPO)
    r = _cli(cluster, tmp_path, "deploy", str(topo), "--target", "slurm", "--rehearse",
             "--no-wait", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["job"] in _squeue(cluster)
    dn = _cli(cluster, tmp_path, "down", str(topo), "--target", "slurm", "--now")
    assert dn.returncode == 0, dn.stderr
    deadline = time.monotonic() + 60
    while doc["job"] in _squeue(cluster):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert os.path.isdir(tmp_path / "sgl-runs" / "sd")
