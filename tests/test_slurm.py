"""The Slurm target on a real Slurm cluster (slurmctld + 3 slurmd in network namespaces, munge,
gres GPUs): submit the rendered sbatch with the rehearsal engine, wait for the endpoints file,
route requests through the real sglang-router, then scancel and check nothing is left."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import plan_of, run_cli, write_topo
from tests.tools import need_tool

pytestmark = pytest.mark.slow

TOPO = f"""
deployment: {{name: slurm-e2e, hf_checkpoint: /models/m}}
cluster:
  nodes: 3
  gpus_per_node: 8
  slurm: {{job_name: "sgl e2e", time: "00:30:00"}}
runtime: {{python: {sys.executable}}}
sglang:
  - name: actor
    server_groups:
      - {{worker_type: prefill, num_gpus: 4, num_gpus_per_engine: 2}}
      - {{worker_type: decode, num_gpus: 16, num_gpus_per_engine: 16}}
  - name: judge
    router: {{policy: round_robin}}
    server_groups:
      - {{worker_type: regular, num_gpus: 4, num_gpus_per_engine: 2}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.slurmcluster import running

    with running(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read() or b"null")


def _generate(url: str) -> dict:
    req = urllib.request.Request(url + "/generate", method="POST", data=json.dumps(
        {"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["sgl_gen"]


def _jobs(c) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=c.env, capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line.strip()]


def test_sbatch_brings_up_pd_and_multinode_engines_behind_real_routers(cluster, tmp_path):
    topo = write_topo(tmp_path, TOPO)
    plan = plan_of(topo)
    out = tmp_path / "out"
    write_tree(out / plan.name, render(plan, ("slurm",), rehearse=True))
    sbatch = out / plan.name / "slurm" / f"{plan.name}.sbatch"
    submit = tmp_path / "submit dir"
    submit.mkdir()
    r = subprocess.run(["sbatch", "--parsable", str(sbatch)], cwd=submit, env=cluster.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    endpoints = submit / f"endpoints-{job}.json"
    deadline = time.monotonic() + 120
    while not endpoints.exists():
        assert time.monotonic() < deadline, (submit / f"sgl-slurm-e2e-{job}.out").read_text()
        assert _jobs(cluster), "the job ended: " + (submit / f"sgl-slurm-e2e-{job}.out").read_text()
        time.sleep(1)
    ep = json.loads(endpoints.read_text())["models"]
    addrs = cluster.addrs
    assert ep["actor"]["router"] == f"http://{addrs[0]}:30000"
    assert ep["actor"]["engines"]["decode"] == [f"http://{addrs[1]}:31000"]
    # PD through the real router: decode (rank 0 of the 2-node engine) + a prefill on node 0
    for _ in range(4):
        reply = _generate(ep["actor"]["router"])
        assert (reply["engine_id"], reply["role"], reply["node_rank"]) == (
            "actor-decode-0", "decode", 0)
        (pre,) = reply["prefill"]
        assert pre["bootstrap"] in (f"http://{addrs[0]}:8998", f"http://{addrs[0]}:8999")
    # the regular model: round robin over both engines
    seen = {_generate(ep["judge"]["router"])["engine_id"] for _ in range(4)}
    assert seen == {"judge-regular-0", "judge-regular-1"}
    # every engine answers with its rank; the decode engine's rank 1 serves /health on node 2
    for url in ep["actor"]["engines"]["prefill"] + ep["judge"]["engines"]["regular"]:
        assert _generate(url)["node_rank"] == 0
    with urllib.request.urlopen(f"http://{addrs[2]}:31000/health", timeout=5) as resp:
        assert resp.status == 200
    # scancel tears everything down
    subprocess.run(["scancel", job], env=cluster.env, check=True)
    deadline = time.monotonic() + 60
    while _jobs(cluster):
        assert time.monotonic() < deadline, _jobs(cluster)
        time.sleep(1)
    def left() -> list[str]:  # the steps' processes end once slurmd has killed them all
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        return [line for line in ps.splitlines() if str(out) in line or "sglang_router" in line]

    deadline = time.monotonic() + 30
    while left():
        assert time.monotonic() < deadline, left()
        time.sleep(0.5)


def test_sbatch_is_shellcheck_clean_with_hostile_names(tmp_path):
    shellcheck = need_tool("shellcheck")
    topo = write_topo(tmp_path, TOPO.replace('job_name: "sgl e2e"', """job_name: "a'; echo foo\"""")
                      .replace("name: slurm-e2e", "name: a0"))
    plan = plan_of(topo)
    arts = render(plan, ("slurm",), rehearse=True)
    text = arts["slurm/a0.sbatch"].content
    assert "#SBATCH --job-name=\"a'; echo foo\"\n" in text
    out = tmp_path / "out"
    write_tree(out, arts)
    r = subprocess.run([shellcheck, "--severity=style", str(out / "slurm" / "a0.sbatch")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout


def test_slurm_job_name_with_a_quote_or_newline_is_rejected(tmp_path):
    topo = write_topo(tmp_path, TOPO.replace('job_name: "sgl e2e"', 'job_name: "a\\"b"'))
    r = run_cli("validate", str(topo))
    assert r.exit_code == 1
    assert "cluster.slurm.job_name" in r.stderr


def test_an_engine_that_exits_at_start_ends_the_job_with_its_log(cluster, tmp_path):
    # restart: never, so the first exit ends the job (tests/test_slurm_life.py runs restarts out)
    topo = write_topo(tmp_path, TOPO.replace('time: "00:30:00"', 'time: "00:30:00", restart: never'))
    plan = plan_of(topo)
    out = tmp_path / "out"
    write_tree(out / plan.name, render(plan, ("slurm",), rehearse=True))
    sbatch = out / plan.name / "slurm" / f"{plan.name}.sbatch"
    text = sbatch.read_text()
    # hand-break one engine: a value SGLang's parser rejects
    func = text.index("sgl_engine__judge__regular__1() {")
    broken = text[:func] + text[func:].replace("--tp-size 2", "--tp-size two", 1)
    assert broken != text
    sbatch.write_text(broken)
    submit = tmp_path / "submit"
    submit.mkdir()
    r = subprocess.run(["sbatch", "--parsable", str(sbatch)], cwd=submit, env=cluster.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 90
    while any(line.split()[0] == job for line in _jobs(cluster)):
        assert time.monotonic() < deadline
        time.sleep(1)
    log = (submit / f"sgl-slurm-e2e-{job}.out").read_text()
    assert ("sgl-gen: engine-judge-regular-1 exited (exit 2; restart: never); last lines of its "
            "log:\n") in log
    log_dir = submit / f"sgl-slurm-e2e-{job}"
    assert f"\n==> {log_dir}/engine-judge-regular-1-0.log <==\n" in log
    assert "error: argument --tp-size/--tensor-parallel-size: invalid int value: 'two'" in log
    state = json.loads((log_dir / "state.json").read_text())
    assert (state["phase"], state["failed_unit"]) == ("failed", "engine-judge-regular-1")
    assert state["units"]["engine-judge-regular-1"]["last_exit"] == "exit 2"
    assert not (submit / f"endpoints-{job}.json").exists()


def test_render_rejects_a_slurm_topology_that_cannot_fit(tmp_path):
    topo = write_topo(tmp_path, TOPO.replace("num_gpus: 16, num_gpus_per_engine: 16",
                                             "num_gpus: 24, num_gpus_per_engine: 8"))
    r = run_cli("render", str(topo), "-o", str(tmp_path / "out"))
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"{topo}:3:10: cluster.nodes: 3 node(s) of 8 GPUs have 24 GPUs but the server groups "
        "need 32"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["pyxis", "apptainer"])
def test_container_variants(tmp_path, kind):
    shellcheck = need_tool("shellcheck")
    topo = write_topo(tmp_path, TOPO.replace(
        f"runtime: {{python: {sys.executable}}}",
        f'runtime: {{python: python3, container: {{kind: {kind}, image: "nvcr.io#lmsys/sglang:x", '
        'mounts: ["/models:/models", "/data:/data"]}}'))
    arts = render(plan_of(topo), ("slurm",))
    text = arts["slurm/slurm-e2e.sbatch"].content
    if kind == "pyxis":
        # every srun step of the job runs in the image (lib/sgljob.py adds these to each srun)
        job = json.loads(text.split("<<'SGLGEN_JOB_JSON'\n", 1)[1].split("\nSGLGEN_JOB_JSON\n")[0])
        assert job["srun_extra"] == ["--container-image=nvcr.io#lmsys/sglang:x",
                                     "--container-mounts=/models:/models,/data:/data"]
        assert "apptainer" not in text
    else:
        assert ("exec apptainer exec --nv --bind /models:/models --bind /data:/data "
                "'nvcr.io#lmsys/sglang:x' python3 -m sglang.launch_server") in text
        assert "--container-image" not in text
    out = tmp_path / "out"
    write_tree(out, arts)
    r = subprocess.run([shellcheck, "--severity=style", str(out / "slurm" / "slurm-e2e.sbatch")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout


@pytest.mark.parametrize("job_name", ["a 0", "a'; echo foo"])
def test_hostile_job_names_and_output_paths_reach_slurm_byte_exact(cluster, tmp_path, job_name):
    out_path = tmp_path / "out dir" / "it's $(x)-%j.out"
    out_path.parent.mkdir()
    topo = write_topo(tmp_path, TOPO.replace(
        'job_name: "sgl e2e"', f"job_name: {json.dumps(job_name)}, output: {json.dumps(str(out_path))}"))
    plan = plan_of(topo)
    write_tree(tmp_path / "r", render(plan, ("slurm",), rehearse=True))
    sbatch = tmp_path / "r" / "slurm" / f"{plan.name}.sbatch"
    r = subprocess.run(["sbatch", "--parsable", "--hold", str(sbatch)], cwd=tmp_path,
                       env=cluster.env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    try:
        show = subprocess.run(["scontrol", "show", "job", job], env=cluster.env,
                              capture_output=True, text=True, check=True).stdout
        assert f"JobName={job_name}\n" in show or f"JobName={job_name} " in show, show
        assert f"StdOut={str(out_path).replace('%j', job)}\n" in show, show
    finally:
        subprocess.run(["scancel", job], env=cluster.env, check=False)
