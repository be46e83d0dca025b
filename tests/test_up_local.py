"""`sgl-gen up/down --local --rehearse`: the rendered bash artifacts, the real routers
(sglang-router 0.3.2, smg 1.13.0) and rehearsal engines, all on this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from generator import local
from generator.compile.pipeline import compile_plan
from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import EXAMPLES, run_cli, settings_from_cli, write_topo
from tests.tools import need_python

pytestmark = pytest.mark.slow


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


def generate(router: str, headers: dict | None = None) -> dict:
    status, body = post(f"{router}/generate",
                        {"text": "hello", "sampling_params": {"max_new_tokens": 1}}, headers)
    assert status == 200, body
    return body["sgl_gen"]


def listening_ports() -> set[int]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


class Up:
    """One `up --local --rehearse` run; `down` in teardown whatever happens."""

    def __init__(self, tmp_path: Path, topo: Path, *sets: str):
        self.topo, self.out, self.sets = str(topo), str(tmp_path / "out"), list(sets)
        self.plan = compile_plan(topo, settings_from_cli(self.sets), local=True)

    def args(self, cmd: str) -> list[str]:
        return [cmd, self.topo, "--local", "-o", self.out,
                *(x for s in self.sets for x in ("--set", s))]

    def up(self) -> dict[str, str]:
        r = run_cli(*self.args("up"), "--rehearse", "--timeout", "60")
        assert r.exit_code == 0, r.output
        return {m.name: m.router.url for m in self.plan.models}

    def down(self) -> str:
        r = run_cli(*self.args("down"))
        assert r.exit_code == 0, r.output
        return r.output

    def host_script(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        root = local.state_root(self.out, self.plan) / host
        return subprocess.run(["bash", str(root / "sgl-gen-host.sh"), *args], capture_output=True,
                              text=True, env=dict(os.environ, SGLGEN_ROOT=str(root)))


@pytest.fixture
def started():
    runs: list[Up] = []
    yield runs.append
    for run in runs:
        run.down()


def _assert_all_gone(run: Up) -> None:
    ports = {p for p, _ in local.plan_ports(run.plan)}
    assert not ports & listening_ports()
    for node in run.plan.nodes:
        status = run.host_script(node.host, "status")
        assert status.returncode == 3
        assert all(line.split()[1] == "stopped" for line in status.stdout.splitlines()), status.stdout
    root = str(local.state_root(run.out, run.plan))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert root not in ps


PY = sys.executable


def regular_topo(tmp_path: Path, name: str, engines: int, gpus_per_node: int, *,
                 python: str = sys.executable, router: str = "{}", env: str = "{}") -> Path:
    """One model of ``engines`` 1-GPU regular engines."""
    return write_topo(tmp_path, f"""
        deployment: {{name: {name}, hf_checkpoint: /models/m, num_gpus_per_engine: 1}}
        cluster: {{gpus_per_node: {gpus_per_node}}}
        runtime: {{python: {python}, env: {env}}}
        router: {router}
        sglang:
          - name: m
            server_groups: [{{worker_type: regular, num_gpus: {engines}}}]
        """)


def test_regular_model_round_robin_spreads_over_every_engine(tmp_path, started):
    topo = regular_topo(tmp_path, "rr", 4, 2, router="{policy: round_robin}")
    run = Up(tmp_path, topo)
    started(run)
    urls = run.up()
    seen = Counter(generate(urls["m"])["engine_id"] for _ in range(12))
    assert seen == {f"m-regular-{i}": 3 for i in range(4)}
    assert "stopped" in run.down()
    _assert_all_gone(run)


def test_pd_each_request_reaches_a_prefill_and_a_decode(tmp_path, started):
    run = Up(tmp_path, EXAMPLES / "pd.yaml", f"runtime.python={PY}")
    started(run)
    urls = run.up()
    prefill_ports = {e.id: e.bootstrap_port for e in run.plan.models[0].engines
                     if e.worker_type == "prefill"}
    for _ in range(10):
        reply = generate(urls["actor"])
        assert reply["role"] == "decode"
        (pre,) = reply["prefill"]
        assert pre["engine_id"] in prefill_ports
        assert pre["bootstrap"] == f"http://127.0.0.1:{prefill_ports[pre['engine_id']]}"


def test_exported_pd_engines_tell_slime_their_roles(tmp_path, started):
    """`export slime-args` lists a PD model's engines without roles: slime's external-engine
    discovery reads each one's /server_info (disaggregation_mode, the bootstrap port, tp_size).
    Here every exported address answers it with the plan's role, port and width."""
    run = Up(tmp_path, EXAMPLES / "pd.yaml", f"runtime.python={PY}")
    started(run)
    run.up()
    r = run_cli("export", "slime-args", str(EXAMPLES / "pd.yaml"), "--local",
                "--set", f"runtime.python={PY}")
    assert r.exit_code == 0, r.output
    assert "note: model 'actor' is prefill/decode (2 prefill, 3 decode): slime reads each " \
           "engine's role and bootstrap port from its /server_info" in r.stderr
    words = r.stdout.split()
    assert words[:2] == ["--rollout-external", "--rollout-external-engine-addrs"]
    engines = {f"{e.address}:{e.port}": e for e in run.plan.models[0].engines}
    assert sorted(words[2:]) == sorted(engines)
    for addr in words[2:]:
        with urllib.request.urlopen(f"http://{addr}/server_info", timeout=5) as resp:
            info = json.load(resp)
        e = engines[addr]
        assert info["disaggregation_mode"] == e.worker_type
        assert info["tp_size"] == e.tp_size
        if e.worker_type == "prefill":
            assert int(info["disaggregation_bootstrap_port"]) == e.bootstrap_port


def test_a_copied_host_folder_runs_where_it_is(tmp_path):
    """hosts/<host>/ copied anywhere: `./sgl-gen-host.sh start` runs there (SGLGEN_ROOT is the
    script's folder), status says running, logs are written there, and the default workdir
    is not created."""
    topo = regular_topo(tmp_path, "copied", 1, 1)
    out = tmp_path / "out"
    r = run_cli("render", str(topo), "--local", "--rehearse", "-o", str(out))
    assert r.exit_code == 0, r.output
    copy = tmp_path / "elsewhere" / "node0"
    shutil.copytree(out / "copied" / "hosts" / "node0", copy)
    env = {k: v for k, v in os.environ.items() if k != "SGLGEN_ROOT"}

    def host(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["./sgl-gen-host.sh", *args], cwd=copy, env=env,
                              capture_output=True, text=True, timeout=60)

    try:
        assert host("start").returncode == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:30000/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        st = host("status")
        assert st.returncode == 0, st.stdout
        assert [line.split()[:2] for line in st.stdout.splitlines()] == [
            ["engine-m-regular-0", "running"], ["router-m", "running"]]
        assert (copy / "logs" / "engine-m-regular-0.log").stat().st_size > 0
        assert (copy / "run" / "router-m.pid").is_file()
        assert not Path("/var/lib/sgl-gen/copied").exists()
    finally:
        host("stop")
    assert all(line.split()[1] == "stopped" for line in host("status").stdout.splitlines())


def test_pd_wrong_bootstrap_port_in_a_hand_broken_render_fails(tmp_path, started):
    """The rehearsal catches what a real decode engine would: the router's prefill bootstrap
    port does not match the port the prefill engine listens on."""
    run = Up(tmp_path, EXAMPLES / "pd.yaml", f"runtime.python={PY}")
    plan = run.plan
    out = Path(run.out)
    write_tree(out / plan.name, render(plan, ("bash",), rehearse=True))
    script = out / plan.name / "hosts" / "node0" / "bin" / "router-actor.sh"
    text = script.read_text()
    # every prefill's bootstrap port off by one (the router retries a failed request on another
    # prefill, so one broken prefill alone would be masked)
    for url, port in (("http://127.0.0.1:31000", 8998), ("http://127.0.0.1:31001", 8999)):
        assert f"--prefill {url} {port} \\" in text
        text = text.replace(f"--prefill {url} {port} \\", f"--prefill {url} {port + 10} \\")
    script.write_text(text)
    started(run)
    local.up(plan, run.out, rehearse=True, timeout=60, echo=lambda _: None)
    for _ in range(4):
        status, body = post(f"{plan.models[0].router.url}/generate",
                            {"text": "x", "sampling_params": {"max_new_tokens": 1}})
        assert status >= 500, body
        assert "9008" in json.dumps(body) or "9009" in json.dumps(body), body


def test_multi_model_routers_reach_only_their_own_engines(tmp_path, started):
    run = Up(tmp_path, EXAMPLES / "multi-model.yaml", f"runtime.python={PY}")
    started(run)
    urls = run.up()
    for m in run.plan.models:
        own = {e.id for e in m.engines}
        seen = {generate(urls[m.name])["engine_id"] for _ in range(3 * len(own))}
        assert seen <= own and seen, (m.name, seen)


def test_smg_consistent_hashing_keeps_a_session_on_one_engine(tmp_path, started):
    smg_python = need_python("SGLGEN_SMG_PYTHON", "smg==1.13.0")
    topo = regular_topo(tmp_path, "ch", 4, 4, python=smg_python,
                        router="{implementation: smg, policy: consistent_hashing}")
    run = Up(tmp_path, topo)
    started(run)
    urls = run.up()
    per_session = {}
    for session in range(8):
        hdr = {"X-SMG-Routing-Key": f"session-{session}"}
        engines = {generate(urls["m"], hdr)["engine_id"] for _ in range(5)}
        assert len(engines) == 1, (session, engines)
        per_session[session] = engines.pop()
    assert len(set(per_session.values())) >= 2  # sessions do spread over engines


def test_a_killed_engine_is_reported_by_status_and_down_cleans_up(tmp_path, started):
    topo = regular_topo(tmp_path, "kill", 2, 2)
    run = Up(tmp_path, topo)
    started(run)
    run.up()
    assert run.host_script("node0", "status").returncode == 0
    pidfile = local.state_root(run.out, run.plan) / "node0" / "run" / "engine-m-regular-1.pid"
    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)  # "PID STARTTIME"
    for _ in range(100):  # the kill is asynchronous: poll until the process is gone
        status = run.host_script("node0", "status")
        if status.returncode != 0:
            break
        time.sleep(0.1)
    lines = dict(line.split()[:2] for line in status.stdout.splitlines())
    assert status.returncode == 3
    assert lines == {"engine-m-regular-0": "running", "engine-m-regular-1": "dead",
                     "router-m": "running"}
    # a second `up` refuses to start over a running deployment
    r = run_cli(*run.args("up"), "--rehearse")
    assert r.exit_code == 3 and "already up" in r.output
    run.down()
    _assert_all_gone(run)


def test_up_refuses_busy_ports_before_starting_anything(tmp_path):
    import socket

    run = Up(tmp_path, EXAMPLES / "basic.yaml", f"runtime.python={PY}")
    router_port = run.plan.models[0].router.port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", router_port))
        s.listen()
        r = run_cli(*run.args("up"), "--rehearse")
    assert r.exit_code == 3
    assert f"ports already in use on this machine: {router_port} (router " in r.output
    assert not (local.state_root(run.out, run.plan)).exists()


def test_up_needs_no_local_flag_and_finds_its_run_without_o(tmp_path, monkeypatch, started):
    """`up` runs here (no --local needed); it records where its run is, so `status` and `down`
    given the same FILE find it without the -o used at `up`."""
    topo = regular_topo(tmp_path, "rec", 1, 1)
    run = Up(tmp_path, topo)
    started(run)
    r = run_cli("up", str(topo), "-o", run.out, "--rehearse", "--timeout", "60")
    assert r.exit_code == 0, r.output
    down_cmd = f"sgl-gen down {topo} --local -o {run.out}"
    assert f"stop it with: {down_cmd}" in r.output
    again = run_cli("up", str(topo), "-o", run.out, "--rehearse")
    assert again.exit_code == 3
    assert f"rec is already up on this machine (state in {local.state_root(run.out, run.plan)}); " \
           f"stop it first: {down_cmd}" in again.output
    monkeypatch.chdir(tmp_path / "..")  # -o's default (out) names nothing here
    st = run_cli("status", str(topo), "--local", "--format", "json")
    assert st.exit_code == 0, st.output
    doc = json.loads(st.stdout)
    assert doc["out"] == str(Path(run.out).resolve())
    assert [(u["unit"], u["state"], u["healthy"]) for u in doc["units"]] == [
        ("engine-m-regular-0", "running", True), ("router-m", "running", True)]
    assert "the run `up` recorded is in" in st.stderr
    wrong = run_cli("down", str(topo), "--local", "-o", str(tmp_path / "elsewhere"))
    assert wrong.exit_code == 2
    assert f"`up` ran it from {Path(run.out).resolve()}: {down_cmd}" in wrong.stderr
    d = run_cli("down", str(topo), "--local")
    assert d.exit_code == 0, d.output
    assert "rec: stopped on 1 local node(s)" in d.output
    assert local.recorded_run("rec") is None
    _assert_all_gone(run)
    st = run_cli("status", str(topo), "--local", "-o", run.out)
    assert st.exit_code == 3
    assert all(u.split()[3] == "stopped" for u in st.stdout.splitlines()[1:]), st.stdout


def test_health_timeout_names_the_engine_and_stops_what_started(tmp_path, started):
    topo = regular_topo(tmp_path, "slow", 1, 1,
                        env='{SGLGEN_REHEARSAL_STARTUP_DELAY: "120"}')
    run = Up(tmp_path, topo)
    started(run)
    r = run_cli(*run.args("up"), "--rehearse", "--timeout", "2")
    assert r.exit_code == 3
    assert ("timed out waiting for engines: engine-m-regular-0 http://127.0.0.1:31000/health; "
            "last lines of engine-m-regular-0's log on node0:") in r.output
    assert "stopped everything it had started (--keep-on-failure leaves it running" in r.output
    _assert_all_gone(run)
    assert local.recorded_run("slow") is None
    # the next up is not refused: nothing runs
    kept = run_cli(*run.args("up"), "--rehearse", "--timeout", "2", "--keep-on-failure")
    assert kept.exit_code == 3
    assert f"left running (--keep-on-failure): stop it with: sgl-gen down {topo} --local -o " \
           f"{run.out}" in kept.output
    status = run.host_script("node0", "status")
    assert "engine-m-regular-0 running" in status.stdout


def test_multinode_engine_ranks_join_before_the_router_starts(tmp_path, started):
    text = (EXAMPLES / "multinode-16gpu.yaml").read_text()
    assert "python: /opt/sglang/bin/python" in text
    topo = write_topo(tmp_path, text.replace("python: /opt/sglang/bin/python", f"python: {PY}"))
    run = Up(tmp_path, topo)
    started(run)
    urls = run.up()
    (m,) = [m for m in run.plan.models if m.engines and m.engines[0].nnodes > 1]
    replies = [generate(urls[m.name]) for _ in range(6)]
    assert {r["engine_id"] for r in replies} <= {e.id for e in m.engines}
    assert {r["node_rank"] for r in replies} == {0}
    for e in m.engines:  # every engine serves through its rank 0 once all ranks joined
        reply = generate(e.url)
        assert (reply["engine_id"], reply["node_rank"]) == (e.id, 0)
    for e in m.engines:
        assert [p.node_rank for p in e.placements] == [0, 1]
        # one machine: rank 1 serves its health endpoint on a port of its own
        assert e.placements[1].port not in (None, e.port)


def _interrupt_up(tmp_path: Path, name: str, sig: int) -> tuple[Up, int, str, str]:
    """`up` of a slow engine in its own process, sent ``sig`` once engines are starting."""
    topo = regular_topo(tmp_path, name, 1, 1, env='{SGLGEN_REHEARSAL_STARTUP_DELAY: "120"}')
    run = Up(tmp_path, topo)
    proc = subprocess.Popen([sys.executable, "-m", "generator.cli", "up", str(topo), "--rehearse",
                             "-o", run.out, "--timeout", "100"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"starting engines of {name}"), line
        time.sleep(1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return run, proc.returncode, out, err


def test_ctrl_c_during_up_stops_what_started_and_exits_130(tmp_path):
    run, code, out, err = _interrupt_up(tmp_path, "intr", signal.SIGINT)
    assert code == 130, err
    assert "interrupted: stopping what was started" in out
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    _assert_all_gone(run)


def test_sigterm_during_up_stops_what_started_as_ctrl_c_does(tmp_path):
    """`timeout 60 sgl-gen up ...`, a CI job's cancel, systemd stopping a wrapper: SIGTERM is
    an interruption too, so the engines up started (in their own sessions) do not outlive it."""
    run, code, out, err = _interrupt_up(tmp_path, "term", signal.SIGTERM)
    assert code == 130, err
    assert "interrupted: stopping what was started" in out
    assert "Traceback" not in err
    _assert_all_gone(run)


# -- the run record: a corrupt, planted or odd one is never trusted, followed or waited on -------

def _records() -> Path:
    d = local.runs_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.parametrize("record", [
    '{"out": "/nowhere"}',                      # no "down" command
    '{"out": "/tmp/x\\u0000y", "down": "d"}',   # a NUL in the path
    '{"out": "relative/dir", "down": "d"}',     # not the absolute path `up` writes
    '{"out": 7, "down": "d"}',
    '[1, 2]',
    '\xff\xfe not json',
])
def test_a_corrupt_run_record_is_no_record(tmp_path, record):
    topo = regular_topo(tmp_path, "rec", 1, 1)
    run_dir = tmp_path / "ran"
    (run_dir / ".run" / "rec").mkdir(parents=True)  # state where a corrupt record may point
    (_records() / "rec.json").write_bytes(record.replace("/nowhere", str(run_dir))
                                          .encode("utf-8", "surrogateescape"))
    for argv in (["down", str(topo), "--local"], ["down", str(topo), "--local", "-o",
                                                   str(tmp_path / "other")],
                 ["status", str(topo), "--local"]):
        r = run_cli(*argv)
        assert "Traceback" not in r.output
        assert r.exit_code in (0, 3), r.output
        assert "the run `up` recorded" not in r.output and "`up` ran it from" not in r.output


def test_a_run_record_that_is_a_fifo_does_not_hang_down(tmp_path):
    topo = regular_topo(tmp_path, "rec", 1, 1)
    os.mkfifo(_records() / "rec.json")
    proc = subprocess.run([sys.executable, "-c", "from generator.cli import main; main()",
                           "down", str(topo), "--local", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1], env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "rec: nothing was started from" in proc.stdout


def test_a_run_record_planted_as_a_symlink_is_not_followed_or_removed(tmp_path):
    topo = regular_topo(tmp_path, "rec", 1, 1)
    run_dir = tmp_path / "ran"
    (run_dir / ".run" / "rec").mkdir(parents=True)
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps({"out": str(run_dir.resolve()), "down": "sgl-gen down x"}))
    (_records() / "rec.json").symlink_to(theirs)
    r = run_cli("down", str(topo), "--local")
    assert r.exit_code == 0, r.output
    assert "the run `up` recorded" not in r.output  # the link's target is not sgl-gen's record
    local.forget_run("rec", run_dir)
    assert (_records() / "rec.json").is_symlink() and theirs.exists()


def test_the_old_output_spelling_names_the_run_as_o_does(tmp_path):
    """`down FILE --local --output DIR` (the old spelling of -o) is the user naming DIR: when
    nothing ran from there it is refused as with -o, never the recorded run stopped instead."""
    topo = regular_topo(tmp_path, "rec", 1, 1)
    run_dir = tmp_path / "ran"
    (run_dir / ".run" / "rec").mkdir(parents=True)
    (_records() / "rec.json").write_text(json.dumps(
        {"out": str(run_dir.resolve()), "down": f"sgl-gen down {topo} --local -o {run_dir}"}))
    for flag in ("-o", "--out", "--output"):
        r = run_cli("down", str(topo), "--local", flag, str(tmp_path / "elsewhere"))
        assert r.exit_code == 2, (flag, r.output)
        assert f"`up` ran it from {run_dir.resolve()}" in r.stderr
        st = run_cli("status", str(topo), "--local", flag, str(tmp_path / "elsewhere"))
        assert st.exit_code == 2, (flag, st.output)


def test_the_recorded_down_command_works_from_any_directory(tmp_path, monkeypatch, started):
    """`up` run with relative FILE, -o and --inventory records a down command that still names
    them from elsewhere (the refusal of a wrong -o prints it, to be copied)."""
    work = tmp_path / "proj"
    work.mkdir()
    topo = regular_topo(work, "rel", 1, 1)
    (work / "hosts").write_text("127.0.0.1\n")
    monkeypatch.chdir(work)

    class Cleanup:  # the same plan as `up`'s: with the inventory
        @staticmethod
        def down() -> None:
            run_cli("down", str(topo), "--inventory", str(work / "hosts"), "--local", "-o",
                    str(work / "out"))

    started(Cleanup)
    r = run_cli("up", topo.name, "-o", "out", "--inventory", "hosts", "--rehearse",
                "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert "stop it with: sgl-gen down topo.yaml --inventory hosts --local -o out" in r.output
    recorded = local.recorded_run("rel")["down"]
    assert recorded == (f"sgl-gen down {work / 'topo.yaml'} --inventory {work / 'hosts'} "
                        f"--local -o {work / 'out'}")
    monkeypatch.chdir(tmp_path)
    wrong = run_cli("down", str(topo), "--inventory", str(work / "hosts"), "--local", "-o",
                    "elsewhere")
    assert wrong.exit_code == 2
    assert f"`up` ran it from {work / 'out'}: {recorded}" in wrong.stderr
    args = recorded.split()[2:]
    d = run_cli("down", *args)
    assert d.exit_code == 0, d.output
    assert "rel: stopped on 1 local node(s)" in d.output


def test_a_copied_host_folder_finds_itself_with_cdpath_exported(tmp_path):
    """`node0/sgl-gen-host.sh start` from the folder above and `node0/bin/<unit>.sh` with
    CDPATH exported: bash's cd then prints the directory it found, which the scripts'
    own-folder default must not take in as a second line of SGLGEN_ROOT (it made a folder
    named "node0\\n" beside the copy and wrote the logs there)."""
    topo = regular_topo(tmp_path, "cdpath", 1, 1, python="/bin/true")  # exits at once
    out = tmp_path / "out"
    assert run_cli("render", str(topo), "--local", "-o", str(out)).exit_code == 0
    where = tmp_path / "elsewhere"
    shutil.copytree(out / "cdpath" / "hosts" / "node0", where / "node0")
    env = {k: v for k, v in os.environ.items() if k != "SGLGEN_ROOT"}
    env["CDPATH"] = f".:{tmp_path}"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=where, env=env, capture_output=True, text=True,
                              timeout=60)

    try:
        run("node0/sgl-gen-host.sh", "start", "engine-m-regular-0")
        run("node0/bin/router-m.sh")
    finally:
        run("node0/sgl-gen-host.sh", "stop")
    assert sorted(p.name for p in where.iterdir()) == ["node0"]
    assert (where / "node0" / "logs" / "engine-m-regular-0.log").is_file()
    assert (where / "node0" / "logs" / "router-m.log").is_file()


def test_a_relative_xdg_state_home_is_ignored_as_the_spec_says(tmp_path, monkeypatch):
    """A relative $XDG_STATE_HOME would put the record under whatever directory `up` ran in,
    where `down` from another one never finds it: the XDG spec says to ignore it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "state")
    assert local.runs_dir() == tmp_path / ".local" / "state" / "sgl-gen" / "runs"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "abs"))
    assert local.runs_dir() == tmp_path / "abs" / "sgl-gen" / "runs"


@pytest.mark.parametrize("flag", ["-o", "--out", "--output"])
def test_down_with_o_but_without_local_is_refused_not_sent_to_the_ssh_hosts(tmp_path, flag):
    """-o only names what `up` started here: `down FILE -o out` (--local forgotten) must not
    go on to stop the deployment on the topology's SSH hosts, as status refuses it too."""
    topo = write_topo(tmp_path, """
        deployment: {name: prod, hf_checkpoint: /models/m, num_gpus_per_engine: 1}
        cluster:
          hosts: [{name: a, address: 127.0.0.1, port: 1}]
        sglang:
          - name: m
            server_groups: [{worker_type: regular, num_gpus: 1}]
        """)
    for cmd in ("down", "status") if flag != "--output" else ("down",):  # (status: --format)
        r = run_cli(cmd, str(topo), flag, str(tmp_path / "out"), "--connect-timeout", "1")
        assert r.exit_code == 2, (cmd, r.output)
        assert "-o/--out: only with --local" in r.stderr, (cmd, r.stderr)
        assert "cannot connect" not in r.output


def test_up_does_not_replace_a_record_planted_as_a_symlink(tmp_path, started):
    topo = regular_topo(tmp_path, "plant", 1, 1)
    run = Up(tmp_path, topo)
    started(run)
    theirs = tmp_path / "theirs.json"
    theirs.write_text("{}\n")
    (_records() / "plant.json").symlink_to(theirs)
    r = run_cli("up", str(topo), "-o", run.out, "--rehearse", "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert "warning: cannot record this run" in r.output
    assert (_records() / "plant.json").is_symlink() and theirs.read_text() == "{}\n"
