"""``cluster.slurm`` resources and supervision (issue 21): what the sbatch asks Slurm for, what
each engine step gets (lib/sgljob.py's shares), the refusals, and plan.json. Pure: the real
cluster runs in tests/test_slurm_life.py."""

from __future__ import annotations

import json

import pytest

from generator import slurmjob
from generator.targets.plans import plan_dict
from generator.targets.render import render
from tests.helpers import plan_of, run_cli, sbatch_job, write_topo

TOPO = """\
deployment: {name: res, hf_checkpoint: /m}
cluster:
  nodes: 2
  gpus_per_node: 8
  slurm: {SLURM}
sglang:
  - name: big
    server_groups: [{worker_type: regular, num_gpus: 4, num_gpus_per_engine: 4}]
  - name: small
    server_groups: [{worker_type: regular, num_gpus: 4, num_gpus_per_engine: 2}]
  - name: wide
    server_groups: [{worker_type: regular, num_gpus: 8, num_gpus_per_engine: 8}]
"""


def _topo(tmp_path, slurm: str = "{}"):
    return write_topo(tmp_path, TOPO.replace("{SLURM}", slurm))


def _sbatch(tmp_path, slurm: str = "{}") -> str:
    plan = plan_of(_topo(tmp_path, slurm))
    return render(plan, ("slurm",))[f"slurm/{plan.name}.sbatch"].content


def _header(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH ")]


def test_default_takes_whole_nodes_and_drains_before_the_limit(tmp_path):
    head = _header(_sbatch(tmp_path))
    assert "#SBATCH --exclusive" in head and "#SBATCH --mem=0" in head
    assert "#SBATCH --signal=B:USR1@120" in head
    assert not any(x.startswith(("#SBATCH --cpus-per-task", "#SBATCH --ntasks-per-node"))
                   for x in head)


def test_a_shared_node_job_asks_exactly_what_its_busiest_node_needs(tmp_path):
    text = _sbatch(tmp_path, "{exclusive: false, cpus_per_gpu: 6, mem_per_gpu: 20G, "
                             "stop_before_limit: 300}")
    head = _header(text)
    # node 0: big (4 GPUs) + small x2 (2 GPUs each) = 8 GPUs -> 48 CPUs, 160 GB
    assert head[-4:] == ["#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=48",
                         f"#SBATCH --mem={8 * 20 * 1024}M", "#SBATCH --signal=B:USR1@300"]
    assert "#SBATCH --exclusive" not in head
    job = sbatch_job(text)
    assert job["resources"] == {"exclusive": False, "cpus_per_gpu": 6, "cpus_per_engine": None,
                                "mem_per_gpu_mb": 20480}


@pytest.mark.parametrize("slurm, where, words", [
    ("{exclusive: false}", "cluster.slurm.exclusive",
     "needs cpus_per_gpu (or cpus_per_engine) and mem_per_gpu"),
    ("{exclusive: false, cpus_per_gpu: 4}", "cluster.slurm.exclusive", "needs mem_per_gpu"),
    ("{cpus_per_gpu: 4, cpus_per_engine: 8}", "cluster.slurm.cpus_per_engine",
     "cpus_per_gpu and cpus_per_engine both say"),
    ("{mem_per_gpu: 20GB}", "cluster.slurm.mem_per_gpu", ""),
    ("{mem_per_gpu: 0}", "cluster.slurm.mem_per_gpu", ""),
    ("{cpus_per_gpu: 0}", "cluster.slurm.cpus_per_gpu", ""),
    ("{restart: always}", "cluster.slurm.restart", ""),
    ("{restart_limit: -1}", "cluster.slurm.restart_limit", ""),
    ("{stop_before_limit: 5}", "cluster.slurm.stop_before_limit", ""),
    ("{extra: {mem: 100G}}", "cluster.slurm.extra.mem", "use cluster.slurm.mem_per_gpu"),
    ("{extra: {cpus-per-task: 4}}", "cluster.slurm.extra.cpus-per-task", "cpus_per_gpu"),
    ("{extra: {signal: 'B:USR1@60'}}", "cluster.slurm.extra.signal", "stop_before_limit"),
])
def test_bad_values_are_refused_at_their_position(tmp_path, slurm, where, words):
    topo = _topo(tmp_path, slurm)
    r = run_cli("validate", str(topo))
    assert r.exit_code == 1, r.output
    (line,) = [x for x in r.stderr.splitlines() if where in x]
    assert line.startswith(f"{topo}:5:"), line
    assert words in line


def test_plan_json_says_the_slurm_settings_with_defaults(tmp_path):
    plan = plan_of(_topo(tmp_path, "{mem_per_gpu: 2T, restart: never}"))
    assert plan_dict(plan)["slurm"] == {
        "exclusive": True, "cpus_per_gpu": None, "cpus_per_engine": None,
        "mem_per_gpu_mb": 2 * 1024 * 1024, "restart": "never", "restart_limit": 3,
        "restart_backoff": 5, "stop_before_limit": 120, "job_name": "sgl-res", "time": None}


def _job(tmp_path, slurm: str = "{}") -> dict:
    return sbatch_job(_sbatch(tmp_path, slurm))


def test_engine_shares_are_their_gpus_share_of_what_slurm_gave(tmp_path):
    job = _job(tmp_path)
    cpus, mem = slurmjob.node_resources(job, {"SLURM_JOB_CPUS_PER_NODE": "16(x2)",
                                              "SLURM_MEM_PER_NODE": "64000"}, [])
    assert cpus == [16, 16] and mem == [64000, 64000]
    got, problems = slurmjob.shares(job, cpus, mem)
    assert problems == []
    assert got["engine-big-regular-0"] == slurmjob.Share(8, 32000)  # TP 4 of 8 GPUs
    assert got["engine-small-regular-0"] == slurmjob.Share(4, 16000)
    assert got["engine-wide-regular-0"] == slurmjob.Share(16, 64000)
    # together the engines of a node hold no more than the node has
    for node in (0, 1):
        units = [u for u in job["units"] if u["kind"] == "engine" and node in u["nodes"]]
        assert sum(got[u["unit"]].cpus for u in units) <= 16
        assert sum(got[u["unit"]].mem_mb for u in units) <= 64000


def test_explicit_cpus_that_do_not_fit_a_node_end_the_job_before_anything_starts(tmp_path):
    job = _job(tmp_path, "{cpus_per_engine: 8}")
    got, problems = slurmjob.shares(job, [16, 16], None)
    assert got["engine-small-regular-1"] == slurmjob.Share(8, None)
    assert problems == ["the engines on node 0 (node0) need 24 CPUs; Slurm gave the job 16 there"]


def test_counts_per_node_are_read_in_slurms_own_form():
    assert slurmjob.expand_counts("16(x3),8") == [16, 16, 16, 8]
    assert slurmjob.expand_counts("72") == [72]
    with pytest.raises(ValueError):
        slurmjob.expand_counts("16(x")


def test_exit_texts():
    assert [slurmjob.exit_text(c) for c in (0, 2, 137, -9)] == [
        "exit 0", "exit 2", "killed 9", "killed 9"]


def test_engine_steps_are_exact_and_routers_overlap(tmp_path):
    job = _job(tmp_path)
    j = slurmjob.Job(job, {"SGLGEN_LOG_DIR": str(tmp_path), "SGLGEN_NODES": "gpu1 gpu2",
                           "SGL_ADDR_0": "10.0.0.1", "SGL_ADDR_1": "10.0.0.2"})
    eng = j.units["engine-big-regular-0"]
    eng.share = slurmjob.Share(8, 32000)
    argv = j.srun_argv(eng)
    assert argv[:1] == ["srun"] and argv[-3:] == ["bash", "-c", "sgl_engine__big__regular__0"]
    assert {"--job-name=engine-big-regular-0", "--nodelist=gpu1", "--exact",
            "--cpus-per-task=8", "--mem=32000M", "--gres=gpu:4", "--open-mode=append",
            "--kill-on-bad-exit=1"} <= set(argv)
    router = j.srun_argv(j.units["router-big"])
    assert {"--overlap", "--cpus-per-task=1", "--gres=none"} <= set(router)
    assert "--exact" not in router and not any(a.startswith("--mem") for a in router)
    assert j.units["router-big"].url == "http://10.0.0.1:30000"


def test_endpoints_are_filled_with_run_time_addresses_only_in_address_fields(tmp_path):
    job = _job(tmp_path)
    ep = slurmjob.fill_addresses(job["endpoints"], ["10.1.0.1", "10.1.0.2"])
    assert ep["models"]["wide"]["engines"] == {"regular": ["http://10.1.0.2:31000"]}
    assert ep["models"]["big"]["router"] == "http://10.1.0.1:30000"
    assert json.dumps(ep).count("node0") == 0


def test_a_reply_that_is_not_http_is_no_answer():
    """A port held by something that is not an HTTP server (or a reply cut short) must never
    crash the job's supervisor: it is "nothing answered"."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def serve() -> None:
        for reply in (b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"):
            conn, _ = srv.accept()
            conn.recv(4096)
            conn.sendall(reply)
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert slurmjob.request("GET", f"http://127.0.0.1:{port}/health") == (0, None)
    assert slurmjob.request("GET", f"http://127.0.0.1:{port}/health") == (0, None)
    t.join(5)
    srv.close()


def test_an_unwritable_state_file_does_not_stop_the_job(tmp_path, capsys):
    job = _job(tmp_path)
    j = slurmjob.Job(job, {"SGLGEN_LOG_DIR": str(tmp_path / "gone"), "SGLGEN_NODES": "a b",
                           "SGL_ADDR_0": "10.0.0.1", "SGL_ADDR_1": "10.0.0.2"})
    j.write_state()
    j.write_state()
    out = capsys.readouterr().out
    assert out.count("cannot write") == 1 and "trying again" in out
    (tmp_path / "gone").mkdir()
    j.write_state()
    assert json.loads((tmp_path / "gone" / "state.json").read_text())["phase"] == "starting"


def test_missing_cpu_counts_are_a_problem_not_one_cpu_each(tmp_path):
    _, problems = slurmjob.shares(_job(tmp_path), None, None)
    assert problems and "SLURM_JOB_CPUS_PER_NODE" in problems[0]
