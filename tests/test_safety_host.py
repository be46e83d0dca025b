"""Issue 13, the host side: the rendered bash launchers run for real with bash.

- a pidfile names a unit's process only with that process's start time (``/proc/PID/stat``
  field 22): a reused or planted pid is never signalled, nor pids <= 1 or the script's own group;
- logs, pidfiles and secrets files are the user's only (``umask 077``: 0600 files, 0700 dirs);
- ``{env: NAME}`` values reach SGLang (a ``--config`` file) and the routers (their own environment
  variables) without appearing in ``/proc/PID/cmdline`` where the program can read them elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from generator.deploy.transport import agent_command as _py_cmd
from generator.targets.common import shq
from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import REPO, plan_of, write_topo
from tests.tools import need_python, need_tool

HOST = "node0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Host:
    """One node's rendered tree installed into a root directory, driven with bash."""

    def __init__(self, tmp_path: Path, overrides: str = "{}",
                 router: str | None = None, secrets: dict[str, str] | None = None,
                 rehearse: bool = True):
        if router is None:  # a router must send the key its engines require (authcheck)
            router = ("{args: {api_key: {env: ENGINE_KEY}}}"
                      if "api_key: {env: ENGINE_KEY}" in overrides else "{}")
        self.tmp = tmp_path
        self.port = free_port()
        env_file = tmp_path / "secrets.env"
        lines = [f"{k}={_sq(v)}" for k, v in (secrets or {}).items()]
        env_file.write_text("".join(f"{x}\n" for x in lines))
        env_file.chmod(0o600)
        topo = write_topo(tmp_path, f"""
            deployment: {{name: safety, hf_checkpoint: /models/m, num_gpus_per_engine: 1}}
            cluster: {{gpus_per_node: 1}}
            runtime: {{python: {sys.executable}, secrets_env_file: {env_file}}}
            router: {router}
            sglang:
              - name: m
                router: {{port: {free_port()}, prometheus_port: {free_port()}}}
                server_groups:
                  - {{worker_type: regular, num_gpus: 1, port: {self.port},
                      overrides: {overrides}}}
            """)
        self.plan = plan_of(topo, local=True)
        out = tmp_path / "out"
        write_tree(out, render(self.plan, ("bash",), rehearse=rehearse))
        self.rendered = out / "hosts" / HOST
        self.root = tmp_path / "root"
        shutil.copytree(self.rendered, self.root)
        self.engine = "engine-m-regular-0"
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.root / "sgl-gen-host.sh"), *args], capture_output=True, text=True,
            timeout=timeout,
            env=dict(os.environ, SGLGEN_ROOT=str(self.root), SGLGEN_STOP_GRACE="2", **(env or {})))

    def pidfile(self, unit: str | None = None) -> Path:
        return self.root / "run" / f"{unit or self.engine}.pid"

    def status(self) -> dict[str, str]:
        r = self.run("status")
        return {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()}


def _sq(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def wait_http(url: str, headers: dict[str, str] | None = None, want: int = 200) -> int:
    status = 0
    for _ in range(200):
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                status = r.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        if status == want:
            return status
        time.sleep(0.05)
    return status


@pytest.fixture
def host(tmp_path):
    made: list[Host] = []

    def make(**kw) -> Host:
        h = Host(tmp_path, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.run("stop")


@pytest.fixture
def bystander():
    """An unrelated process (as a test would find on a host): a sleep, optionally its own
    session leader (the shape of a unit's process)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(session: bool = False) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["sleep", "300"], start_new_session=session)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


# ---------------------------------------------------------------------------------------------
# item 1: process identity


def test_start_status_stop_records_and_checks_the_start_time(host):
    h = host()
    r = h.run("start")
    assert r.returncode == 0, r.stderr
    pid_text = h.pidfile().read_text()
    pid, start = (int(x) for x in pid_text.split())
    assert pid_text == f"{pid} {start}\n"
    assert start == start_time(pid)
    assert wait_http(f"{h.url}/health") == 200
    assert h.status() == {h.engine: "running", "router-m": "running"}
    r = h.run("stop")
    assert r.returncode == 0 and f"{h.engine}: stopped" in r.stdout, r.stdout + r.stderr
    assert not running(pid)
    assert h.status() == {h.engine: "stopped", "router-m": "stopped"}


@pytest.mark.parametrize("shape", ["pid only", "pid and a wrong start time",
                                   "pid and its start time"])
def test_a_planted_pidfile_of_an_unrelated_process_is_never_signalled(host, bystander, shape):
    h = host()
    other = bystander()
    (h.root / "run").mkdir(mode=0o700)
    line = {"pid only": f"{other.pid}", "pid and a wrong start time": f"{other.pid} 1",
            "pid and its start time": f"{other.pid} {start_time(other.pid)}"}[shape]
    h.pidfile().write_text(line + "\n")
    status = h.run("status")
    assert status.returncode == 3
    assert f"{h.engine} dead -" in status.stdout.splitlines(), status.stdout
    r = h.run("stop", h.engine)
    assert r.returncode == 0, r.stderr
    assert "nothing signalled" in r.stdout
    time.sleep(0.2)
    assert other.poll() is None and running(other.pid)
    assert not h.pidfile().exists()  # sgl-gen's own stale pidfile goes, the process stays


def test_a_reused_pid_is_not_the_unit(host, bystander):
    """A session leader (shaped like a unit) whose pid the pidfile names, recorded with another
    start time (a reused pid), or by an older sgl-gen before that process started."""
    h = host()
    other = bystander(session=True)
    (h.root / "run").mkdir(mode=0o700)
    h.pidfile().write_text(f"{other.pid} {start_time(other.pid) + 1}\n")
    assert h.status()[h.engine] == "dead"
    h.run("stop", h.engine)
    # old format, written an hour before the process started
    h.pidfile().write_text(f"{other.pid}\n")
    hour_ago = time.time() - 3600
    os.utime(h.pidfile(), (hour_ago, hour_ago))
    assert h.status()[h.engine] == "dead"
    h.run("stop", h.engine)
    time.sleep(0.2)
    assert other.poll() is None


def _kill_recorder(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """BASH_ENV that shadows bash's ``kill`` builtin: TERM/KILL are recorded, never sent (so
    even the original script's ``kill -TERM -- -1`` is harmless here); probes (-0) run."""
    log = tmp_path / "kills.log"
    rc = tmp_path / "bash_env.sh"
    rc.write_text(
        'kill() {\n'
        '  if [[ "$1" == -0 ]]; then builtin kill "$@"; return; fi\n'
        f'  printf "%s\\n" "$*" >>{_sq(str(log))}\n'
        '}\n')
    return {"BASH_ENV": str(rc)}, log


@pytest.mark.parametrize("line", ["0", "1", "0 0", "1 1", "00", "-1", "1 %(init)s",
                                  "%(group)s", "%(group)s %(group_start)s"])
def test_pidfiles_naming_pid_0_1_or_the_scripts_own_group_signal_nothing(tmp_path, host, line):
    h = host()
    env, log = _kill_recorder(tmp_path)
    (h.root / "run").mkdir(mode=0o700)
    # the host script runs in a process group (and session) led by its parent shell, which has
    # the shape of a unit's process: a pidfile naming it must not signal the script's own group
    leader = subprocess.Popen(
        ["bash", "-c", 'read -r _; bash "$0" stop "$1"', str(h.root / "sgl-gen-host.sh"),
         h.engine], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
        env=dict(os.environ, SGLGEN_ROOT=str(h.root), SGLGEN_STOP_GRACE="1", **env))
    fields = {"init": start_time(1), "group": leader.pid,
              "group_start": start_time(leader.pid)}
    h.pidfile().write_text((line % fields) + "\n")
    out, err = leader.communicate(b"\n", timeout=60)
    assert leader.returncode == 0, err
    assert not log.exists(), log.read_text()
    for args in (("status",), ("stop", h.engine)):
        h.pidfile().write_text((line % fields) + "\n")
        r = h.run(*args, env=env)
        assert h.engine + " running" not in r.stdout
        assert not log.exists(), (args, log.read_text())


def test_an_old_one_number_pidfile_of_the_running_unit_is_still_honoured(host):
    """A deployment started by an older sgl-gen (pidfile: the pid alone) can still be stopped."""
    h = host()
    assert h.run("start", h.engine).returncode == 0
    pid = int(h.pidfile().read_text().split()[0])
    h.pidfile().write_text(f"{pid}\n")
    assert h.status()[h.engine] == "running"
    assert h.run("stop", h.engine).returncode == 0
    assert not running(pid)


def _remote_states(root: Path, units: list[str]) -> dict[str, dict]:
    """hostagent's ``states``: the very code and command line deploy sends to a host, run here."""
    r = subprocess.run(_py_cmd(sys.executable, "states", {"root": str(root), "units": units}),
                       shell=True, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def test_deploys_remote_state_uses_the_same_identity_rule(host, bystander):
    h = host()
    other = bystander()
    leader = bystander(session=True)
    (h.root / "run").mkdir(mode=0o700)
    for line in (f"{other.pid}", f"{other.pid} {start_time(other.pid)}",
                 f"{leader.pid} {start_time(leader.pid) + 1}", "1", "0", "1 1", "x", ""):
        h.pidfile().write_text(line + "\n")
        assert _remote_states(h.root, [h.engine])[h.engine]["state"] == "dead", line
    assert h.run("start", h.engine).returncode == 0
    pid, start = (int(x) for x in h.pidfile().read_text().split())
    got = _remote_states(h.root, [h.engine, "router-m"])
    assert got[h.engine] == {"state": "running", "pid": pid, "exit": None}
    assert got["router-m"]["state"] == "stopped"
    h.pidfile().write_text(f"{pid}\n")  # written by an older sgl-gen: still the unit
    assert _remote_states(h.root, [h.engine])[h.engine]["state"] == "running"
    h.pidfile().write_text(f"{pid} {start + 1}\n")
    assert _remote_states(h.root, [h.engine])[h.engine]["state"] == "dead"
    h.pidfile().write_text(f"{pid} {start}\n")


# ---------------------------------------------------------------------------------------------
# item 2: file modes


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("how", ["host script", "unit script (as systemd runs it)"])
def test_logs_run_files_and_secrets_files_are_private(host, how):
    h = host(overrides="{api_key: {env: ENGINE_KEY}}", secrets={"ENGINE_KEY": "sk-1"})
    logs, run = h.root / "logs", h.root / "run"
    # left by an older sgl-gen: world-readable directories and log
    logs.mkdir(mode=0o755)
    run.mkdir(mode=0o755)
    os.chmod(logs, 0o755)
    os.chmod(run, 0o755)
    (logs / f"{h.engine}.log").write_text("old server_args=... api_key='sk-0'\n")
    os.chmod(logs / f"{h.engine}.log", 0o644)
    env = dict(os.environ, SGLGEN_ROOT=str(h.root))
    if how == "host script":
        r = subprocess.run(["bash", str(h.root / "sgl-gen-host.sh"), "start"], env=env,
                           capture_output=True, text=True, preexec_fn=lambda: os.umask(0o022))
        assert r.returncode == 0, r.stderr
        for f in ("router-m.pid", f"{h.engine}.pid"):
            assert _mode(run / f) == 0o600, f
    else:
        unit = subprocess.Popen(["bash", str(h.root / "bin" / f"{h.engine}.sh")], env=env,
                                start_new_session=True, preexec_fn=lambda: os.umask(0o022))
    try:
        assert wait_http(f"{h.url}/health") == 200
        assert _mode(logs) == 0o700 and _mode(run) == 0o700
        assert _mode(logs / f"{h.engine}.log") == 0o600
        assert _mode(run / f"{h.engine}.secrets.yaml") == 0o600
        if how == "host script":
            assert _mode(logs / "router-m.log") == 0o600
    finally:
        if how != "host script":
            os.killpg(unit.pid, signal.SIGTERM)
            unit.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# item 3: secrets out of argv

ENGINE_KEY = "sk-eng 'quoted' \"double\" $(touch /tmp/sgl-gen-pwned) `id` \\ --host 0.0.0.0"


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_engine_credentials_reach_the_engine_but_not_its_command_line(host):
    h = host(overrides="{api_key: {env: ENGINE_KEY}, admin_api_key: {env: ADMIN_KEY}}",
             secrets={"ENGINE_KEY": ENGINE_KEY, "ADMIN_KEY": "adm-7"})
    script = (h.root / "bin" / f"{h.engine}.sh").read_text()
    assert "--api-key" not in script.rsplit("\nexec ", 1)[-1]
    assert h.run("start", h.engine).returncode == 0
    pid = int(h.pidfile().read_text().split()[0])
    assert wait_http(f"{h.url}/health") == 200
    cmdline = _cmdline(pid)
    assert b"--config" in cmdline
    for secret in (ENGINE_KEY, "adm-7", "sk-eng"):
        assert secret.encode() not in cmdline
    # the rehearsal engine (like SGLang) answers only with the key it read from the file
    models = f"{h.url}/v1/models"
    assert wait_http(models, want=401) == 401
    assert wait_http(models, {"Authorization": f"Bearer {ENGINE_KEY}"}) == 200
    assert not Path("/tmp/sgl-gen-pwned").exists()


def _sglang_config_merger(tmp_path: Path):
    """SGLang's own ``--config`` merger, from the sglang 0.5.23 wheel (stdlib + PyYAML)."""
    wheels = sorted((REPO / ".cache" / "wheels").glob("sglang-0.5.23-*.whl"))
    if not wheels:
        pytest.skip("the sglang 0.5.23 wheel is not in .cache/wheels")
    path = tmp_path / "server_args_config_parser.py"
    with zipfile.ZipFile(wheels[0]) as z:
        path.write_bytes(z.read("sglang/srt/utils/server_args_config_parser.py"))
    return path


def test_sglangs_own_config_merger_reads_the_secrets_file_byte_exact(host, tmp_path):
    merger = _sglang_config_merger(tmp_path)
    h = host(overrides="{api_key: {env: ENGINE_KEY}, admin_api_key: {env: ADMIN_KEY}}",
             secrets={"ENGINE_KEY": ENGINE_KEY, "ADMIN_KEY": "'"}, rehearse=False)
    shim = tmp_path / "python-shim"
    shim.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['ARGV_OUT'], 'w').write(json.dumps(sys.argv[1:]))\n")
    shim.chmod(0o755)
    script = h.root / "bin" / f"{h.engine}.sh"
    script.write_text(script.read_text().replace(f"exec {sys.executable} ", f"exec {shim} "))
    out = tmp_path / "argv"
    r = subprocess.run(["bash", str(script)], env=dict(os.environ, SGLGEN_ROOT=str(h.root),
                                                       ARGV_OUT=str(out)))
    assert r.returncode == 0
    argv = json.loads(out.read_text())[2:]  # after -m sglang.launch_server
    assert ENGINE_KEY not in "\n".join(argv)
    code = (
        "import argparse, json, sys\n"
        f"sys.path.insert(0, {str(merger.parent)!r})\n"
        "from server_args_config_parser import ConfigArgumentMerger\n"
        "p = argparse.ArgumentParser()\n"
        "for f in ('--config', '--api-key', '--admin-api-key', '--model-path', '--host',\n"
        "          '--port', '--tp-size', '--nccl-port', '--engine-info-bootstrap-port'):\n"
        "    p.add_argument(f)\n"
        "argv = ConfigArgumentMerger(p).merge_config_with_args(sys.argv[1:])\n"
        "a = p.parse_args(argv)\n"
        "print(json.dumps([a.api_key, a.admin_api_key, a.port]))\n")
    got = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == [ENGINE_KEY, "'", str(h.port)]


@pytest.mark.parametrize("value", ["line\nbreak", "caf\u00e9", "tab\there", "sep\u2028x"])
def test_a_secret_sglang_would_not_read_back_exactly_is_refused_at_launch(host, value):
    h = host(overrides="{api_key: {env: ENGINE_KEY}}", secrets={"ENGINE_KEY": value})
    r = subprocess.run(["bash", str(h.root / "bin" / f"{h.engine}.sh")],
                       env=dict(os.environ, SGLGEN_ROOT=str(h.root)), timeout=30)
    assert r.returncode != 0
    log = (h.root / "logs" / f"{h.engine}.log").read_text(errors="replace")
    assert "$ENGINE_KEY holds a character that is not printable ASCII" in log
    assert value not in log
    assert not (h.root / "run" / f"{h.engine}.secrets.yaml").exists()


ROUTER_DUMP = """
import importlib, json, sys
module = sys.argv[2]
parse = importlib.import_module(module).parse_router_args
a = parse(sys.argv[3:])
with open("/proc/self/cmdline", "rb") as f:
    cmdline = f.read().decode("utf-8", "replace")
json.dump({"oracle_password": a.oracle_password, "redis_url": a.redis_url,
           "api_key": a.api_key, "cmdline": cmdline}, open(sys.argv[1], "w"))
"""


@pytest.mark.parametrize("implementation", ["sglang-router", "smg"])
def test_router_credentials_the_router_reads_from_its_environment_leave_argv(
        host, tmp_path, implementation):
    """The real router parser receives each value; only --api-key (which neither router reads
    from anywhere else) is still on the command line, with a comment saying so."""
    python = sys.executable if implementation == "sglang-router" else need_python(
        "SGLGEN_SMG_PYTHON", "smg")
    pw, url = "pw 'x' $(y)", "redis://:hunter2@127.0.0.1:6379/0"
    args = "{oracle_password: {env: ORA_PW}, redis_url: {env: REDIS_DSN}, api_key: {env: ROUTER_KEY}}"
    h = host(router=f"{{implementation: {implementation}, args: {args}}}",
             secrets={"ORA_PW": pw, "REDIS_DSN": url, "ROUTER_KEY": "rk-1"})
    script = h.root / "bin" / "router-m.sh"
    text = script.read_text()
    assert "export ATP_PASSWORD=\"${ORA_PW}\"" in text and 'export REDIS_URL="${REDIS_DSN}"' in text
    assert f"{implementation} reads it from no environment variable or file" in text
    dumper = tmp_path / "dump_router.py"
    dumper.write_text(ROUTER_DUMP)
    out = tmp_path / "router.json"
    shim = tmp_path / "python-shim"
    shim.write_text(f'#!/bin/bash\nexec {python} {dumper} {out} "${{@:2}}"\n')
    shim.chmod(0o755)
    script.write_text(text.replace(f"exec {sys.executable} ", f"exec {shim} "))
    r = subprocess.run(["bash", str(script)], env=dict(os.environ, SGLGEN_ROOT=str(h.root)),
                       timeout=120)
    assert r.returncode == 0, (h.root / "logs" / "router-m.log").read_text()
    got = json.loads(out.read_text())
    assert (got["oracle_password"], got["redis_url"], got["api_key"]) == (pw, url, "rk-1")
    assert pw not in got["cmdline"] and "hunter2" not in got["cmdline"]
    assert "rk-1" in got["cmdline"]  # documented: --api-key has no other way in


def test_a_real_router_started_by_the_host_script_never_shows_env_read_secrets(host):
    h = host(router="{args: {oracle_password: {env: ORA_PW}}}",
             secrets={"ORA_PW": "ora-secret-42"})
    assert h.run("start").returncode == 0
    pid = int(h.pidfile("router-m").read_text().split()[0])
    seen = b""
    for _ in range(40):  # from its first moments (before setproctitle renames it) to serving
        try:
            seen += _cmdline(pid)
        except OSError:
            break
        time.sleep(0.05)
    assert seen and b"ora-secret-42" not in seen
    # (its environment cannot be checked here: setproctitle reuses that memory for the title;
    # test_router_credentials_... shows the real parser receives the value)
    need_tool("ps")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "ora-secret-42" not in ps


# ---------------------------------------------------------------------------------------------
# red-team F7: a unit is its whole process group, not only its leader

#: a unit whose leader exits on SIGTERM but leaves a child in its group that ignores SIGTERM
#: (the shape of an SGLang scheduler subprocess that outlives a crashed launcher)
STUBBORN_CHILD = """#!/usr/bin/env bash
( trap '' TERM; exec -a sglgen-rt-child sleep 300 ) &
echo "$!" >"$SGLGEN_ROOT/child.pid"
trap 'exit 0' TERM
while :; do sleep 0.1; done
"""

#: a unit whose leader crashes (exits at once) and leaves a child in its group
CRASHED_LEADER = """#!/usr/bin/env bash
( trap '' TERM; exec -a sglgen-rt-child sleep 300 ) &
echo "$!" >"$SGLGEN_ROOT/child.pid"
sleep 0.5
exit 1
"""


def _stub(h: Host, text: str) -> None:
    script = h.root / "bin" / f"{h.engine}.sh"
    script.write_text(text)
    script.chmod(0o755)


def _child(h: Host) -> int:
    f = h.root / "child.pid"
    for _ in range(200):
        if f.exists() and f.read_text().strip():
            return int(f.read_text())
        time.sleep(0.02)
    raise AssertionError("the stub unit never started its child")


def _gone(pid: int, within: float = 5) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def reaper():
    """Kills (by pid, at teardown) the stub units' children a failing test left behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_stop_kills_what_is_left_of_the_group_after_the_grace_period(host, reaper):
    h = host()
    _stub(h, STUBBORN_CHILD)
    assert h.run("start", h.engine).returncode == 0
    leader = int(h.pidfile().read_text().split()[0])
    child = _child(h)
    reaper.append(child)
    assert os.getpgid(child) == leader
    r = h.run("stop", h.engine)  # SGLGEN_STOP_GRACE=2
    assert r.returncode == 0, r.stderr
    assert f"{h.engine}: still running after 2s, sending SIGKILL" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1] == f"{h.engine}: stopped"
    assert _gone(child, within=0.5), "stop said stopped while a process of the unit runs"
    assert not running(leader)
    assert h.status()[h.engine] == "stopped"


def test_a_crashed_leader_with_a_live_group_is_reported_and_stopped(host, reaper):
    h = host()
    _stub(h, CRASHED_LEADER)
    assert h.run("start", h.engine).returncode == 0
    leader, start = (int(x) for x in h.pidfile().read_text().split())
    child = _child(h)
    reaper.append(child)
    assert _gone(leader), "the stub leader should have exited"
    assert running(child)
    r = h.run("status")
    assert r.returncode == 3
    assert f"{h.engine} dead (1 process left in its group)" in r.stdout.splitlines(), r.stdout
    # deploy's host-side state says the same
    got = _remote_states(h.root, [h.engine])[h.engine]
    assert got == {"state": "dead", "pid": leader, "exit": None, "left": 1}
    r = h.run("stop", h.engine)
    assert r.returncode == 0, r.stderr
    assert f"{h.engine}: its process exited, 1 process left in its group: stopping them" \
        in r.stdout, r.stdout
    assert f"{h.engine}: stopped" in r.stdout
    assert _gone(child, within=0.5)
    assert h.status()[h.engine] == "stopped"
    assert _remote_states(h.root, [h.engine])[h.engine]["state"] == "stopped"


def test_start_stops_the_group_a_crashed_leader_left_before_starting_again(host, reaper):
    h = host()
    _stub(h, CRASHED_LEADER)
    assert h.run("start", h.engine).returncode == 0
    old = _child(h)
    reaper.append(old)
    (h.root / "child.pid").unlink()
    assert _gone(int(h.pidfile().read_text().split()[0]))
    r = h.run("start", h.engine)
    assert r.returncode == 0, r.stderr
    assert f"{h.engine}: its process exited, 1 process left in its group: stopping them first" \
        in r.stdout, r.stdout
    assert f"{h.engine}: started" in r.stdout
    new = _child(h)
    reaper.append(new)
    assert not running(old), "start launched a second copy beside the old one's processes"
    assert running(new)


def _orphaned_group() -> tuple[int, int]:
    """(pgid, member): a process group (not a unit's) whose leader exited, one member left."""
    r = subprocess.run(
        ["setsid", "bash", "-c", '( exec sleep 300 ) </dev/null >/dev/null 2>&1 & echo "$!"'],
        capture_output=True, text=True, check=True, timeout=30)
    member = int(r.stdout)
    return os.getpgid(member), member


def test_a_foreign_group_with_the_recorded_pid_as_its_id_is_never_signalled(tmp_path, host,
                                                                           reaper, bystander):
    """The pidfile's pid is a group id whose members started before the recorded start time
    (not forked by that leader), or it is a live process with another start time (a reused
    pid, leading a group of its own): neither is the unit's, nothing is counted or signalled."""
    h = host()
    env, log = _kill_recorder(tmp_path)
    (h.root / "run").mkdir(mode=0o700)
    pgid, member = _orphaned_group()
    reaper.append(member)
    other = subprocess.Popen(["bash", "-c", "sleep 300 & wait"], start_new_session=True)
    try:
        time.sleep(0.2)
        for line in (f"{pgid} {start_time(member) + 100}",
                     f"{other.pid} {start_time(other.pid) - 1}"):
            h.pidfile().write_text(line + "\n")
            r = h.run("status", env=env)
            assert f"{h.engine} dead -" in r.stdout.splitlines(), (line, r.stdout)
            assert _remote_states(h.root, [h.engine])[h.engine].get("left") is None
            r = h.run("stop", h.engine, env=env)
            assert "nothing signalled" in r.stdout, (line, r.stdout)
            assert not log.exists(), log.read_text()
            assert running(member) and other.poll() is None
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


@pytest.mark.parametrize("cmd", ["start", "stop", "logs"])
def test_an_unknown_unit_is_a_usage_error(host, cmd):
    h = host()
    r = h.run(cmd, "bogus")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "unknown unit: bogus (units: " in r.stderr
    assert "==>" not in r.stdout and "started" not in r.stdout
    assert not h.pidfile().exists()


# ---------------------------------------------------------------------------------------------
# red-team F3: an empty {env: NAME} credential never turns auth off


@pytest.mark.parametrize("how", ["empty in the secrets file", "unset"])
def test_an_empty_or_unset_credential_variable_refuses_to_launch(host, how):
    secrets = {"ENGINE_KEY": ""} if how.startswith("empty") else {}
    h = host(overrides="{api_key: {env: ENGINE_KEY}}",
             router="{args: {api_key: {env: ENGINE_KEY}, oracle_password: {env: ROUTER_KEY}}}",
             secrets={**secrets, "ROUTER_KEY": "rk-LIVE-9"})
    env = {k: v for k, v in os.environ.items() if k not in ("ENGINE_KEY", "ROUTER_KEY")}
    env["SGLGEN_ROOT"] = str(h.root)
    r = subprocess.run(["bash", str(h.root / "bin" / f"{h.engine}.sh")], env=env, timeout=30)
    assert r.returncode == 1
    log = (h.root / "logs" / f"{h.engine}.log").read_text()
    assert "$ENGINE_KEY is unset or empty, but the topology reads a value from it" in log, log
    assert str(h.tmp / "secrets.env") in log
    assert not (h.root / "run" / f"{h.engine}.secrets.yaml").exists()
    # the router's key is set: its script gets past the check (and never shows the value)
    script = (h.root / "bin" / "router-m.sh").read_text()
    assert "\nrequire_env ROUTER_KEY\n" in script and "rk-LIVE-9" not in script
    assert wait_http(f"{h.url}/health", want=0) == 0


# ---------------------------------------------------------------------------------------------
# red-team F14: characters a reviewer cannot see are written as escapes, byte-exact

HIDDEN = ["\u202e", "\u2028", "\u2029", "\x85", "\u200b", "\ufeff", "\u00a0", "\u3000",
          "\x1b[31m", "\x7f"]


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
@pytest.mark.parametrize("value", [f"a{c}b" for c in HIDDEN]
                         + ["x'\u202e$(id)`id`\\\u2028\ny", "caf\u00e9 \u65e5\u672c 42", "0a\u202e1f"])
def test_shq_writes_hidden_characters_as_byte_escapes_that_bash_reads_back_exactly(value, locale):
    quoted = shq(value)
    hidden = [c for c in quoted if c != " " and
              unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Zs") and c != "\n"]
    assert not hidden, (quoted, hidden)
    assert "\n" not in quoted or "$'" not in quoted
    # printable non-ASCII text stays as it is (a reviewer reads it)
    for c in value:
        if not c.isascii() and unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            assert c in quoted
    got = subprocess.run(["bash", "-c", f"printf '%s' {quoted}"], capture_output=True,
                         env=dict(os.environ, LC_ALL=locale), timeout=30, check=True).stdout
    assert got == value.encode("utf-8"), (locale, quoted)


def test_a_rendered_script_shows_hidden_characters_and_exports_them_byte_exact(tmp_path):
    topo = write_topo(tmp_path, """
        deployment: {name: rt, hf_checkpoint: /models/m, total_gpus: 1}
        cluster: {gpus_per_node: 1}
        runtime: {env: {NOTE: "left\\u202eright\\u2028\\x85"}}
        sglang:
          - name: m
            server_groups:
              - {worker_type: regular, num_gpus: 1, num_gpus_per_engine: 1, port: 45100,
                 overrides: {served_model_name: "m\\u200bx\\u2029"}}
        """)
    arts = render(plan_of(topo, local=True), ("bash",))
    script = arts[f"hosts/{HOST}/bin/engine-m-regular-0.sh"].content
    for c in ("\u202e", "\u2028", "\x85", "\u200b", "\u2029"):
        assert c not in script
    assert "export NOTE=$'left\\xe2\\x80\\xaeright\\xe2\\x80\\xa8\\xc2\\x85'" in script
    assert "--served-model-name $'m\\xe2\\x80\\x8bx\\xe2\\x80\\xa9'" in script
    for locale in ("C", "C.UTF-8"):
        line = next(x for x in script.splitlines() if x.startswith("export NOTE="))
        got = subprocess.run(["bash", "-c", line + '; printf %s "$NOTE"'], capture_output=True,
                             env=dict(os.environ, LC_ALL=locale), timeout=30, check=True).stdout
        assert got == "left\u202eright\u2028\x85".encode()
