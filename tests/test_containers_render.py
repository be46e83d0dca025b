"""docker/podman units as rendered: what the topology may say (rejections, warnings), and what
``bin/<unit>.sh`` of a container node runs, executed for real by bash against a recording
stand-in for the runtime's client (the real podman runs them in tests/test_containers.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from generator.targets.render import render
from tests.helpers import errors_of, plan_of, run_cli, write_topo

TOPO = """\
deployment: {name: ct, hf_checkpoint: /models/Qwen3-8B, total_gpus: 4}
cluster:
  gpus_per_node: 2
  hosts:
    - {name: node-a, address: 10.0.0.1, user: root}
    - {name: node-b, address: 10.0.0.2, user: root, gpus: [2, 3],
       container: {kind: docker, image: "reg.example/sglang:1", mounts: ["/models:/models:ro"]}}
runtime:
  secrets_env_file: SECRETS
  env: {NCCL_DEBUG: "it's $(x) \\\\ \\"q\\"", PLAIN: "1"}
  container:
    kind: podman
    image: "localhost/sglang:x $(id)"
    mounts: ["/models:/models:ro", "/data dir/it's $(x):/d"]
    options: ["--ulimit", "stack=67108864", "--label", "team=a b $(c)"]
sglang:
  - name: chat
    router: {args: {api_key: {env: ROUTER_KEY}}}
    server_groups:
      - {worker_type: prefill, num_gpus: 2, num_gpus_per_engine: 1, overrides: {api_key: {env: ROUTER_KEY}}}
      - {worker_type: decode, num_gpus: 2, num_gpus_per_engine: 1}
"""

#: a stand-in for the runtime's client: records each call's argv (one JSON list a line) and,
#: for `run`, the env file it was given; `container inspect` answers from $FAKE_STATE/<name>
FAKE = r"""#!/usr/bin/env python3
import json, os, sys
state = os.environ["FAKE_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls"), "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + args) + "\n")
if args[:2] == ["container", "inspect"]:
    p = os.path.join(state, args[-1])
    if os.path.exists(p):
        print(open(p).read())
        sys.exit(0)
    print(f"Error: no such container {args[-1]}", file=sys.stderr)
    sys.exit(125)
if args[:1] in (["stop"], ["rm"]):
    p = os.path.join(state, args[-1])
    if os.path.exists(p):
        os.remove(p)
    sys.exit(0)
if args[:1] == ["run"]:
    envfile = args[args.index("--env-file") + 1]
    with open(os.path.join(state, "envfile"), "w") as f:
        f.write(open(envfile).read())
    sys.exit(0)
sys.exit(3)
"""


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# the deployment's secrets\nexport ROUTER_KEY='k3y $(not run)'\n"
                       "HF_TOKEN=hf_abc\nHOME=/elsewhere\n")
    topo = write_topo(tmp_path, TOPO.replace("SECRETS", str(secrets)))
    arts = render(plan_of(topo), ("bash", "systemd"))
    out = tmp_path / "out"
    for rel, a in arts.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(a.content)
        p.chmod(a.mode)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for kind in ("podman", "docker"):
        (fake / kind).write_text(FAKE)
        (fake / kind).chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "FAKE_STATE": str(state),
           "SGLGEN_ROOT": str(tmp_path / "root"), "SGLGEN_SUPERVISOR": "systemd"}
    return out, state, env


def _run(out: Path, host: str, unit: str, env: dict[str, str], *args: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(out / "hosts" / host / "bin" / f"{unit}.sh"), *args],
                          env=env, capture_output=True, text=True, timeout=30)


def _calls(state: Path) -> list[list[str]]:
    path = state / "calls"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _run_call(state: Path) -> list[str]:
    (run,) = [c for c in _calls(state) if c[1] == "run"]
    return run


def test_podman_engine_runs_its_argv_in_a_named_container(rendered, tmp_path):
    out, state, env = rendered
    r = _run(out, "node-a", "engine-chat-prefill-1", env)
    assert r.returncode == 0, r.stderr
    calls = _calls(state)
    assert calls[0] == ["podman", "container", "inspect", "--format",
                        '{{index .Config.Labels "sgl-gen.deployment"}}',
                        "sgl-ct-engine-chat-prefill-1"]
    run = _run_call(state)
    root = str(tmp_path / "root")
    hard = subprocess.run(["bash", "-c", "ulimit -Hl"], capture_output=True, text=True).stdout
    memlock = "-1" if hard.strip() == "unlimited" else hard.strip()
    hard = subprocess.run(["bash", "-c", "ulimit -Hu"], capture_output=True, text=True).stdout
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = str(pid_max if hard.strip() == "unlimited" else min(int(hard), pid_max))
    image = run.index("localhost/sglang:x $(id)")
    assert run[:image] == [
        "podman", "run", "--rm", "--init", "--name", "sgl-ct-engine-chat-prefill-1",
        "--label", "sgl-gen.deployment=ct", "--label", "sgl-gen.unit=engine-chat-prefill-1",
        "--network", "host", "--ipc", "host",
        "--device", "nvidia.com/gpu=1",  # the plan's GPU of this engine, and only it
        "--ulimit", run[run.index("--ulimit") + 1], "--ulimit", f"nproc={nproc}:{nproc}",
        "--ulimit", f"memlock={memlock}:{memlock}",
        "-v", "/models:/models:ro", "-v", "/data dir/it's $(x):/d",
        "-v", f"{root}/run/engine-chat-prefill-1.secrets.yaml:{root}/run/"
              "engine-chat-prefill-1.secrets.yaml:ro",
        "--env-file", f"{root}/run/engine-chat-prefill-1.env",
        "--ulimit", "stack=67108864", "--label", "team=a b $(c)"]
    assert run[run.index("--ulimit") + 1].startswith("nofile=")
    # inside: exactly the host-python argv, the key in the --config file, not on a command line
    assert run[image + 1:image + 6] == [
        "python3", "-m", "sglang.launch_server", "--config",
        f"{root}/run/engine-chat-prefill-1.secrets.yaml"]
    assert "--api-key" not in run and "k3y" not in json.dumps(calls)
    assert "CUDA_VISIBLE_DEVICES" not in (out / "hosts/node-a/bin/engine-chat-prefill-1.sh"
                                          ).read_text()
    # the env file: runtime.env byte-exact, what the secrets file sets (not HOME), mode 0600
    envfile = Path(root) / "run" / "engine-chat-prefill-1.env"
    assert envfile.stat().st_mode & 0o777 == 0o600
    assert (state / "envfile").read_text().splitlines() == [
        "NCCL_DEBUG=it's $(x) \\ \"q\"", "PLAIN=1", "ROUTER_KEY=k3y $(not run)",
        "HF_TOKEN=hf_abc"]
    assert "k3y" not in (out / "hosts/node-a/bin/engine-chat-prefill-1.sh").read_text()


def test_docker_host_gets_gpus_by_device_request(rendered, tmp_path):
    out, state, env = rendered
    r = _run(out, "node-b", "engine-chat-decode-1", env)
    assert r.returncode == 0, r.stderr
    run = _run_call(state)
    assert run[0:2] == ["docker", "run"]
    # node-b's physical GPU ids are 2 and 3: decode-1 has the second
    assert run[run.index("--gpus") + 1] == '"device=3"'
    assert "--device" not in run and "reg.example/sglang:1" in run
    assert "memlock" in " ".join(run)


def test_router_secret_is_appended_inside_the_container(rendered, tmp_path):
    out, state, env = rendered
    r = _run(out, "node-a", "router-chat", env)
    assert r.returncode == 0, r.stderr
    run = _run_call(state)
    root = str(tmp_path / "root")
    script = f"{root}/bin/router-chat.sh"
    assert run[run.index("--entrypoint") + 1] == script
    assert f"{script}:{script}:ro" in run
    image = run.index("localhost/sglang:x $(id)")
    assert run[image + 1:image + 5] == ["inside", "python3", "-m", "sglang_router.launch_router"]
    assert "--api-key" not in run and "k3y" not in json.dumps(run)
    assert "ROUTER_KEY=k3y $(not run)" in (state / "envfile").read_text().splitlines()
    # what the entrypoint does inside: the key appended from the environment, byte-exact
    probe = subprocess.run(
        ["bash", str(out / "hosts/node-a/bin/router-chat.sh"), "inside", "printf", "<%s>"],
        env={**env, "ROUTER_KEY": "k3y $(not run)"}, capture_output=True, text=True)
    assert probe.stdout == "<--api-key><k3y $(not run)>", probe.stderr


def test_stop_and_leftovers_go_by_name_and_label(rendered):
    out, state, env = rendered
    name = "sgl-ct-engine-chat-prefill-0"
    # nothing of that name: stop is a no-op
    r = _run(out, "node-a", "engine-chat-prefill-0", env, "stop")
    assert r.returncode == 0 and [c[1:3] for c in _calls(state)] == [["container", "inspect"]] * 2
    # ours: stopped by name with the grace period
    (state / name).write_text("ct")
    r = _run(out, "node-a", "engine-chat-prefill-0", {**env, "SGLGEN_STOP_GRACE": "7"}, "stop")
    assert r.returncode == 0, r.stderr
    assert _calls(state)[-1] == ["podman", "stop", "-t", "7", name]
    # not ours (another deployment's label): left alone, stop and start both refuse
    (state / name).write_text("other")
    before = len(_calls(state))
    r = _run(out, "node-a", "engine-chat-prefill-0", env, "stop")
    assert r.returncode == 1 and "not this deployment's (label sgl-gen.deployment=other)" \
        in r.stderr
    r = _run(out, "node-a", "engine-chat-prefill-0", env)
    assert r.returncode == 1 and "left alone" in r.stderr
    assert [c[1] for c in _calls(state)[before:]] == ["container", "container"]
    assert (state / name).read_text() == "other"
    # a leftover of ours (its client was killed): removed, then run
    (state / name).write_text("ct")
    r = _run(out, "node-a", "engine-chat-prefill-0", env)
    assert r.returncode == 0, r.stderr
    assert [c[1:3] for c in _calls(state)[-2:]] == [["rm", "-f"], ["run", "--rm"]]
    assert "removing the container sgl-ct-engine-chat-prefill-0 left from an earlier start" \
        in r.stdout


def test_a_line_break_in_a_secret_is_refused_by_name(rendered, tmp_path):
    out, state, env = rendered
    (tmp_path / "secrets.env").write_text("ROUTER_KEY=k\nHF_TOKEN='a\nb'\n")
    r = _run(out, "node-a", "engine-chat-prefill-0", env)
    assert r.returncode == 1
    assert "$HF_TOKEN holds a line break, which an --env-file cannot carry" in r.stderr
    assert "a\nb" not in r.stderr and not [c for c in _calls(state) if c[1] == "run"]


def test_systemd_unit_stops_the_container_by_name(rendered):
    out, _, _ = rendered
    unit = (out / "hosts/node-a/systemd/sgl-ct-router-chat.service").read_text()
    assert "ExecStop=-/var/lib/sgl-gen/ct/bin/router-chat.sh stop\n" in unit
    host = (out / "hosts/node-a/sgl-gen-host.sh").read_text()
    assert 'SGLGEN_STOP_GRACE="$GRACE" "$SGLGEN_ROOT/bin/$1.sh" stop' in host


def test_plan_json_and_readme_name_the_image_per_unit(rendered):
    out, _, _ = rendered
    plan = json.loads((out / "plan.json").read_text())
    a, b = plan["nodes"]
    assert a["container"] == {"kind": "podman", "image": "localhost/sglang:x $(id)",
                              "mounts": ["/models:/models:ro", "/data dir/it's $(x):/d"],
                              "options": ["--ulimit", "stack=67108864", "--label",
                                          "team=a b $(c)"]}
    assert b["container"]["kind"] == "docker"
    m = plan["models"][0]
    assert m["router"]["container"] == "sgl-ct-router-chat"
    units = {p["container"]: p["image"] for e in m["engines"] for p in e["placements"]}
    assert units == {"sgl-ct-engine-chat-prefill-0": "localhost/sglang:x $(id)",
                     "sgl-ct-engine-chat-prefill-1": "localhost/sglang:x $(id)",
                     "sgl-ct-engine-chat-decode-0": "reg.example/sglang:1",
                     "sgl-ct-engine-chat-decode-1": "reg.example/sglang:1"}
    readme = (out / "README.md").read_text()
    assert "| engine-chat-decode-1 | node-b | docker | `sgl-ct-engine-chat-decode-1` | " \
           "`reg.example/sglang:1` |" in readme


def test_container_false_runs_the_host_python(tmp_path):
    topo = write_topo(tmp_path, TOPO.replace("SECRETS", "/etc/s.env").replace(
        'container: {kind: docker, image: "reg.example/sglang:1", mounts: ["/models:/models:ro"]}',
        "container: false"))
    arts = render(plan_of(topo), ("bash",))
    script = arts["hosts/node-b/bin/engine-chat-decode-0.sh"].content
    assert "podman" not in script and "docker" not in script
    assert "exec python3 -m sglang.launch_server" in script
    assert "container" not in json.loads(arts["plan.json"].content)["nodes"][1]


OPTS = """\
deployment: {name: ct, hf_checkpoint: /models/m, total_gpus: 2}
cluster: {gpus_per_node: 2, hosts: [{name: a, address: 10.0.0.1}]}
runtime:
  container:
    kind: podman
    image: img
    mounts: ["/models:/models"]
    options: OPTIONS
sglang:
  - name: m
    server_groups: [{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}]
"""


@pytest.mark.parametrize(("options", "message"), [
    ('["--network", "bridge"]', "--network is set by sgl-gen: sgl-gen passes --network host "
     "(the plan's ports are the host's) (hint: remove it)"),
    ('["--net=bridge"]', "--net is set by sgl-gen"),
    ('["-d"]', "-d (--detach) is set by sgl-gen: the unit's supervisor runs the container in "
     "the foreground (hint: remove it)"),
    ('["-it"]', "-i (--interactive) is set by sgl-gen"),
    ('["--gpus", "all"]', "--gpus is set by sgl-gen: sgl-gen gives each engine the GPUs the "
     "plan assigns it (hint: remove it: GPUs come from the server groups)"),
    ('["--device", "nvidia.com/gpu=all"]', "'nvidia.com/gpu=all' is a GPU"),
    ('["--device=/dev/nvidia0"]', "'--device=/dev/nvidia0' is a GPU"),
    ('["--shm-size", "16g"]', "--shm-size is set by sgl-gen: --ipc host shares the host's"),
    ('["--env-file", "/etc/x"]', "--env-file is set by sgl-gen"),
    ('["--restart=always"]', "--restart is set by sgl-gen"),
    ('["--entrypoint", "sh"]', "--entrypoint is set by sgl-gen"),
    ('["-e", "HF_TOKEN=hf_x"]', "HF_TOKEN looks like a credential: a value written in options "
     "is rendered into every script and shown by `ps` and `docker inspect` (hint: put "
     "HF_TOKEN=... in runtime.secrets_env_file on the hosts"),
    ('["--env=FOO=1"]', "-e FOO=...: environment values go in runtime.env"),
])
def test_options_sgl_gen_sets_are_refused(tmp_path, options, message):
    p = write_topo(tmp_path, OPTS.replace("OPTIONS", options))
    errs = errors_of(p)
    assert len(errs) == 1 and message in errs[0], errs
    assert errs[0].startswith(f"{p}:8:") and ": runtime.container.options[" in errs[0]


def test_options_that_pass(tmp_path):
    p = write_topo(tmp_path, OPTS.replace(
        "OPTIONS", '["-e", "FOO", "--device", "/dev/infiniband/uverbs0", "--cap-add=IPC_LOCK", '
                   '"-v", "/x:/x"]'))
    assert plan_of(p).nodes[0].container.options[:2] == ("-e", "FOO")


def test_host_container_kind_and_slurm_options(tmp_path):
    p = write_topo(tmp_path, OPTS.replace("OPTIONS", "[]").replace(
        "hosts: [{name: a, address: 10.0.0.1}]",
        "hosts: [{name: a, address: 10.0.0.1, container: {kind: pyxis, image: i}}]"))
    assert errors_of(p) == [
        f"{p}:2:84: cluster.hosts[0].container.kind: pyxis runs the Slurm target's steps, not "
        "a host's units (hint: a host's container is docker or podman; set pyxis or apptainer "
        "in runtime.container)"]
    p = write_topo(tmp_path, OPTS.replace("podman", "apptainer").replace("OPTIONS", '["--nv"]'))
    errs = errors_of(p)
    assert len(errs) == 1 and "runtime.container.options: options are `docker run`/`podman " \
        "run` options; apptainer takes none here" in errs[0]


def test_a_model_path_no_mount_covers_is_warned(tmp_path):
    p = write_topo(tmp_path, OPTS.replace("OPTIONS", "[]").replace(
        '["/models:/models"]', '["/data:/data"]'))
    r = run_cli("render", str(p), "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.stderr
    assert (f"{p}:7:13: warning: runtime.container.mounts: no mount covers /models/m (the "
            "model path of m): the podman container does not see it (hint: add a mount such "
            "as /models:/models:ro)") in r.stderr.splitlines()
    p = write_topo(tmp_path, OPTS.replace("OPTIONS", "[]"))
    r = run_cli("render", str(p), "-o", str(tmp_path / "out2"))
    assert r.exit_code == 0 and "no mount covers" not in r.stderr, r.stderr


def test_rendering_is_deterministic(tmp_path):
    topo = write_topo(tmp_path, TOPO.replace("SECRETS", "/etc/s.env"))
    one = render(plan_of(topo), ("bash", "systemd"))
    two = render(plan_of(topo), ("bash", "systemd"))
    assert {k: v.content for k, v in one.items()} == {k: v.content for k, v in two.items()}
