"""What the engines will meet on the hosts, checked before a real deploy and by `sgl-gen check`
(generator/hostagent.py host_checks, generator/deploy/decide.py host_problems): the SGLang
version of the hosts' python, the model paths, the plan's GPUs (present, nobody else computing
on them), NCCL's interfaces, InfiniBand devices.

On the real SSH test hosts (network namespaces, tests/sshhosts.py) with a stand-in `sglang`
package that only states its version and tests/standins/nvidia-smi, which prints NVIDIA's
documented CSV for the machine /etc/sgl-gen-test/nvidia-smi.json describes (per host: that
directory is bind-mounted per namespace by `ip netns exec`)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from generator.deploy.decide import _gpu_problems, _ib_names, _ifname_problem
from generator.deploy.spec import _host_model_paths
from generator.hostagent import APPS_QUERY, GPU_QUERY, owned_by, parse_apps, parse_gpus
from tests.helpers import EXAMPLES, REPO, run_cli
from tests.sshhosts import NETNS_ETC, SshHosts, available
from tests.tools import missing

STANDIN = REPO / "tests" / "standins" / "nvidia-smi"
EXAMPLE = EXAMPLES / "ssh-4hosts.yaml"
TEST_ETC = Path("/etc/sgl-gen-test")


# -- parsing NVIDIA's CSV, as the stand-in prints it --------------------------------------------


def test_the_stand_in_prints_nvidias_csv_and_the_agent_reads_it(tmp_path, monkeypatch):
    import subprocess

    machine = {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
                         "memory_used_mib": 1},
                        {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
                         "memory_used_mib": 70213}],
               "apps": [{"gpu": 1, "pid": 4242, "process_name": "/usr/bin/python3",
                         "used_memory_mib": 70200}]}
    path = tmp_path / "smi.json"
    path.write_text(json.dumps(machine))
    env = {"SGLGEN_NVIDIA_SMI": str(path), "PATH": "/usr/bin:/bin"}
    with_units = subprocess.run([sys.executable, str(STANDIN), "--query-gpu=index,memory.used",
                                 "--format=csv"], capture_output=True, text=True, env=env)
    assert with_units.stdout == ("index, memory.used [MiB]\n0, 1 MiB\n1, 70213 MiB\n")
    gpus = subprocess.run([sys.executable, str(STANDIN), *GPU_QUERY], capture_output=True,
                          text=True, env=env).stdout
    apps = subprocess.run([sys.executable, str(STANDIN), *APPS_QUERY], capture_output=True,
                          text=True, env=env).stdout
    g = parse_gpus(gpus)
    assert [(x["index"], x["memory_used"]) for x in g] == [(0, 1), (1, 70213)]
    a = parse_apps(apps)
    assert a == [{"pid": 4242, "name": "/usr/bin/python3", "used": 70200,
                  "gpu_uuid": g[1]["uuid"]}]
    bad = subprocess.run([sys.executable, str(STANDIN), "--query-gpu=nope", "--format=csv"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and 'Field "nope" is not a valid field to query.' in bad.stderr


def test_csv_with_units_and_odd_process_names():
    assert parse_gpus("0, GPU-a, NVIDIA A100-SXM4-80GB, 81920 MiB, 4 MiB\n") == [
        {"index": 0, "uuid": "GPU-a", "name": "NVIDIA A100-SXM4-80GB", "memory_total": 81920,
         "memory_used": 4}]
    assert parse_apps("17, python3 -c a,b, [N/A], GPU-a\n")[0]["name"] == "python3 -c a,b"
    assert parse_apps("17, python3, [N/A], GPU-a\n")[0]["used"] is None
    assert parse_apps("No running processes found\n") == []


def test_nccl_interface_syntax():
    have = ["lo", "eth0", "ib0"]
    assert _ifname_problem("NCCL_SOCKET_IFNAME", "eth", have) is None  # a prefix
    assert _ifname_problem("NCCL_SOCKET_IFNAME", "=eth0", have) is None
    assert "names no network interface" in _ifname_problem("NCCL_SOCKET_IFNAME", "=eth", have)
    assert _ifname_problem("NCCL_SOCKET_IFNAME", "^docker,lo", have) is None  # exclusions
    assert _ifname_problem("NCCL_SOCKET_IFNAME", "bond,ib", have) is None
    assert "it has: lo, eth0, ib0" in _ifname_problem("GLOO_SOCKET_IFNAME", "enp", have)
    # Gloo takes exact names only: no prefixes, no = or ^
    assert _ifname_problem("GLOO_SOCKET_IFNAME", "eth0", have) is None
    assert "exact interface names" in _ifname_problem("GLOO_SOCKET_IFNAME", "eth", have)
    assert _ifname_problem("GLOO_SOCKET_IFNAME", "=eth0", have) is not None
    assert _ib_names("mlx5_0") == ["mlx5_0"]
    assert _ib_names("mlx5_0, mlx5_1") == ["mlx5_0", "mlx5_1"]
    assert _ib_names('{"0": "mlx5_0", "1": "mlx5_1,mlx5_2"}') == ["mlx5_0", "mlx5_1", "mlx5_2"]
    assert _ib_names('{"0": "mlx5_0, mlx5_1"}') == ["mlx5_0", "mlx5_1"]
    assert _ib_names("[1]") == ["[1]"] and _ib_names("{bad") == []


def test_a_gpu_is_busy_only_with_a_process_that_is_not_this_deployments():
    needs = {"gpus": [0, 1, 2, 3], "unit_gpus": {"engine-m-regular-0": [0, 1],
                                                  "engine-m-regular-1": [2, 3]}}
    gpus = [{"index": i} for i in range(4)]
    # one TP4 engine becomes two TP2 engines: the old engine's processes are ours
    ours = [{"pid": 100 + i, "name": "sglang", "used": 1, "gpu": i, "ours": True}
            for i in range(4)]
    assert _gpu_problems("h", {"gpus": gpus, "apps": ours}, needs) == []
    stranger = [{"pid": 4242, "name": "python3", "used": 70000, "gpu": 2, "ours": False}]
    assert _gpu_problems("h", {"gpus": gpus, "apps": stranger}, needs) == [
        "h: GPU 2 is in use by pid 4242 (python3, 70000 MiB), not by this deployment; "
        "engine-m-regular-1 would start on it (hint: stop that process, or move the engine "
        "with cluster.hosts[].gpus)"]
    failed = _gpu_problems("h", {"gpus": gpus, "apps": [], "apps_error": "exit 9"}, needs)
    assert failed == ["h: nvidia-smi --query-compute-apps failed (exit 9): cannot tell whether "
                      "the plan's GPUs are free"]


def test_a_process_is_ours_by_its_units_pid_or_a_container_ancestor():
    import subprocess

    # bash's $0 stands for a container runtime's process naming the container
    p = subprocess.Popen(["bash", "-c", "sleep 30; :", "conmon -n sgl-dep-engine-x"])
    try:
        import time

        deadline = time.monotonic() + 10
        child = None
        while child is None and time.monotonic() < deadline:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            child = int(kids[0]) if kids else None
            time.sleep(0.02)
        assert child is not None
        assert owned_by(child, set(), "sgl-dep-")
        assert owned_by(child, {p.pid}, "sgl-other-")
        assert not owned_by(child, set(), "sgl-other-")
    finally:
        p.kill()
        p.wait()


def test_container_hosts_check_the_models_where_the_mounts_take_them_from():
    c = {"mounts": ["/data/models:/models:ro", "/fast/special:/models/special"]}
    assert _host_model_paths(["/models/Qwen3-8B", "/models/special/a", "/opt/in-image",
                              "Qwen/Qwen3-8B"], c) == ["/data/models/Qwen3-8B", "/fast/special/a"]
    assert _host_model_paths(["/models/a"], None) == ["/models/a"]


# -- on the real SSH hosts --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts():
    why = available()
    if why:
        missing(f"SSH test hosts: {why}")
    made_etc = not TEST_ETC.exists()
    TEST_ETC.mkdir(exist_ok=True)  # the mount point of each namespace's own copy
    try:
        with SshHosts(4) as h:
            for host in h.hosts:
                (NETNS_ETC / host.namespace / "sgl-gen-test").mkdir(parents=True, exist_ok=True)
                h.restart_sshd(host)
            yield h
    finally:
        if made_etc:
            shutil.rmtree(TEST_ETC, ignore_errors=True)


def machine(hosts: SshHosts, i: int, gpus: int = 8, apps: list[dict] | None = None) -> None:
    """Host ``i``'s stand-in GPUs."""
    d = NETNS_ETC / hosts.hosts[i].namespace / "sgl-gen-test"
    doc = {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
                     "memory_used_mib": 1} for _ in range(gpus)], "apps": apps or []}
    (d / "nvidia-smi.json").write_text(json.dumps(doc))


class Fleet:
    """examples/ssh-4hosts.yaml with a python whose `sglang` says ``version``, model
    directories under tmp_path, the stand-in nvidia-smi on its PATH."""

    def __init__(self, hosts: SshHosts, tmp: Path):
        self.hosts, self.tmp = hosts, tmp
        self.models = {m: tmp / "models" / m for m in ("chat", "big", "judge")}
        for d in self.models.values():
            d.mkdir(parents=True)
            (d / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"]}')
        self.python(version="0.5.23")
        self.topology()
        for i in range(4):
            machine(hosts, i)

    def topology(self, judge: str | None = None) -> None:
        """The example with this fleet's model paths (a value in the file cannot be --set)."""
        text = EXAMPLE.read_text()
        for old, m in (("/models/Qwen3-8B", "chat"), ("/models/big", "big"),
                       ("/models/judge", "judge")):
            assert old in text
            text = text.replace(old, judge if m == "judge" and judge else str(self.models[m]))
        self.file = self.tmp / "ssh-4hosts.yaml"
        self.file.write_text(text)

    def python(self, version: str) -> None:
        site = self.tmp / "site"
        shutil.rmtree(site, ignore_errors=True)
        (site / "sglang").mkdir(parents=True)
        (site / "sglang" / "__init__.py").write_text(f"__version__ = {version!r}\n")
        py = self.tmp / "python"
        py.write_text(f"#!/bin/sh\nPYTHONPATH={site} PATH={STANDIN.parent}:$PATH "
                      f"exec {sys.executable} \"$@\"\n")
        py.chmod(0o755)

    def args(self, cmd: str, *sets: str, extra: tuple[str, ...] = ()) -> list[str]:
        base = [f"runtime.python={self.tmp / 'python'}", "runtime.supervisor=bash",
                *(f"cluster.hosts[{i}].workdir={self.tmp}/w{i}" for i in range(4))]
        return [cmd, str(self.file), "--ssh-config", str(self.hosts.ssh_config),
                *(x for s in [*base, *sets] for x in ("--set", s)), *extra]

    def check(self, *sets: str, extra: tuple[str, ...] = ()) -> dict:
        r = run_cli(*self.args("check", *sets, extra=("--format", "json", *extra)))
        assert r.exit_code in (0, 3), r.output
        doc = json.loads(r.stdout)
        assert (r.exit_code == 0) == doc["ok"]
        return doc


def test_a_ready_fleet_passes(hosts, tmp_path):
    f = Fleet(hosts, tmp_path)
    doc = f.check()
    assert doc["ok"] and doc["problems"] == [] and doc["warnings"] == [], doc
    assert doc["hosts"] == ["node-a", "node-b", "node-c", "node-d"]
    r = run_cli(*f.args("check"))
    assert r.exit_code == 0 and "ssh-4hosts: 4 host(s) ready" in r.stdout


def test_another_sglang_on_the_hosts_is_refused_naming_both(hosts, tmp_path):
    f = Fleet(hosts, tmp_path)
    f.python(version="0.4.10.post2")
    doc = f.check()
    engine_hosts = ["node-a", "node-b", "node-c", "node-d"]
    assert [p.split(":")[0] for p in doc["problems"]] == engine_hosts, doc
    assert all("has SGLang 0.4.10.post2, but the topology was validated against the catalog "
               "of SGLang 0.5.23" in p and "--accept-sglang-version" in p
               for p in doc["problems"]), doc
    accepted = f.check(extra=("--accept-sglang-version",))
    assert accepted["ok"] and len(accepted["warnings"]) == 4, accepted
    assert all("deploying anyway (--accept-sglang-version)" in w for w in accepted["warnings"])
    # and sgl-gen has that version's catalog: validating against it passes
    assert f.check("deployment.sglang_version=0.4.10.post2")["ok"]


def test_models_gpus_and_devices(hosts, tmp_path):
    f = Fleet(hosts, tmp_path)
    (f.models["judge"] / "config.json").unlink()
    shutil.rmtree(f.models["big"])
    machine(hosts, 3, gpus=1)  # node-d: judge's two engines use GPUs 0 and 1
    machine(hosts, 0, apps=[{"gpu": 0, "pid": 4242, "process_name": "python3",
                             "used_memory_mib": 70000}])
    doc = f.check("runtime.env.NCCL_SOCKET_IFNAME=ib9",
                  "defaults.disaggregation_ib_device=mlx5_0")
    problems = doc["problems"]
    want = [
        f"node-b: model_path {f.models['big']} does not exist",
        f"node-c: model_path {f.models['big']} does not exist",
        f"node-d: model_path {f.models['judge']} has no config.json: not a model directory",
        "node-d: the plan puts engines on GPU(s) 1 but nvidia-smi lists 0",
        "node-a: GPU 0 is in use by pid 4242 (python3, 70000 MiB), not by this deployment; "
        "engine-chat-prefill-0 would start on it",
        "node-b: NCCL_SOCKET_IFNAME=ib9 names no network interface here (it has: ",
        "node-a: disaggregation_ib_device mlx5_0 is not an InfiniBand device here (it has: "
        "none)",
    ]
    for w in want:
        assert any(p.startswith(w) for p in problems), (w, problems)
    # the one GPU node-d lacks is also short in `nvidia-smi -L`'s count
    assert any(p.startswith("node-d: 1 GPU(s) visible, the plan uses 2") for p in problems)


def test_a_hub_id_on_an_offline_host_is_a_warning(hosts, tmp_path):
    f = Fleet(hosts, tmp_path)
    f.topology(judge="Qwen/Qwen3-8B")
    doc = f.check()
    assert doc["ok"], doc
    assert [w for w in doc["warnings"] if "Qwen/Qwen3-8B" in w] == [
        "node-d: model Qwen/Qwen3-8B is a hub id with no copy in /root/.cache/huggingface/hub "
        "and the host is offline (huggingface.co does not resolve): the engines cannot "
        "download it"], doc
    cache = tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-8B" / "snapshots"
    cache.mkdir(parents=True)
    cached = f.check(f"runtime.env.HF_HOME={tmp_path}/hf")
    assert cached["ok"] and not [w for w in cached["warnings"] if "Qwen/Qwen3-8B" in w], cached


def test_a_real_deploy_is_refused_before_anything_starts(hosts, tmp_path):
    f = Fleet(hosts, tmp_path)
    f.python(version="0.4.10.post2")
    r = run_cli(*f.args("deploy", extra=("--timeout", "30")))
    assert r.exit_code == 3, r.output
    assert "preflight failed" in r.output and "has SGLang 0.4.10.post2" in r.output
    for i in range(4):
        assert not (tmp_path / f"w{i}").exists(), "nothing was uploaded"
    # --rehearse deploys the stand-in engine: the hosts' SGLang is not checked
    r = run_cli(*f.args("deploy", extra=("--rehearse", "--timeout", "90", "--dry-run")))
    assert r.exit_code == 0, r.output
