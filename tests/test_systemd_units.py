"""The systemd target as a user would install it: what every unit says (no User=, no Limit*=,
the journal, restarts, start limits, health gates), the unit scripts under SGLGEN_SUPERVISOR=systemd
(no log file, raised soft limits), and bin/sgl-gen-await.sh for real against live sockets: a
server answering 200 / 503 / later 200, a closed port, a peer that accepts and never answers, a
connect that never completes, IPv6, the unit's main process exiting. The units on real systemd
(system and user manager, across a reboot) are in the slow test at the end."""

from __future__ import annotations

import http.server
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator.compile.pipeline import compile_plan
from generator.targets.common import root_of, systemd_name, units_by_node
from generator.targets.render import render
from generator.targets.systemd import LOAD_SECONDS, START_MARGIN_SECONDS
from generator.write import write_tree
from tests.helpers import EXAMPLES, REPO, plan_of, write_topo
from tests.tools import missing

ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))


def _sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} (keys may repeat), comments dropped."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = []
            continue
        key, _, value = line.partition("=")
        out[section].append((key, value))
    return out


def _one(sec: list[tuple[str, str]], key: str) -> str | None:
    values = [v for k, v in sec if k == key]
    assert len(values) <= 1, (key, values)
    return values[0] if values else None


def test_every_unit_follows_the_systemd_contract():
    """For every example: per unit the directives of the contract, the health gates with the
    exact URLs of the plan, and nothing that would fail in a user manager."""
    checked = {"engine": 0, "router": 0, "post": 0, "pre": 0}
    for ex in ALL_EXAMPLES:
        plan = compile_plan(ex)
        arts = render(plan, ("bash", "systemd"))
        for node in plan.nodes:
            root = root_of(plan, node)
            base = f"hosts/{node.host}"
            wait = f"{root}/bin/sgl-gen-await.sh {LOAD_SECONDS}"
            assert arts[f"{base}/bin/sgl-gen-await.sh"].mode == 0o755
            units = units_by_node(plan)[node.index]
            for u in units:
                text = arts[f"{base}/systemd/{systemd_name(plan, u)}"].content
                assert not [ln for ln in text.splitlines() if ln.startswith(("User=", "Limit"))]
                s = _sections(text)
                assert list(s) == ["Unit", "Service", "Install"], ex.stem
                unit, svc = s["Unit"], s["Service"]
                assert (_one(unit, "StartLimitIntervalSec"), _one(unit, "StartLimitBurst")) == (
                    "300", "5")
                envs = [v for k, v in svc if k == "Environment"]
                assert envs == [f"SGLGEN_ROOT={root}", "SGLGEN_SUPERVISOR=systemd"]
                assert _one(svc, "SyslogIdentifier") == u.name
                assert (_one(svc, "Restart"), _one(svc, "RestartSec")) == ("on-failure", "5")
                assert _one(svc, "TimeoutStartSec") == str(LOAD_SECONDS + START_MARGIN_SECONDS)
                assert START_MARGIN_SECONDS > 0  # the wait gives up (and says why) first
                assert _one(svc, "UMask") == "0077" and _one(svc, "KillMode") == "mixed"
                assert _one(svc, "ExecStart") == f"{root}/bin/{u.name}.sh"
                assert _one(s["Install"], "WantedBy") == f"sgl-{plan.name}.target"
                # the script sources the secrets file: systemd's own parser would log the lines
                # it cannot read, values included
                assert _one(svc, "EnvironmentFile") is None
                post, pre = _one(svc, "ExecStartPost"), _one(svc, "ExecStartPre")
                checked[u.kind] += 1
                if u.kind == "engine":
                    assert pre is None
                    # rank 0 waits for its own /health; ranks >= 1 have none to wait for
                    assert post == (f"{wait} {u.health_url}" if u.health_url else None), u.name
                    checked["post"] += post is not None
                else:
                    assert post is None
                    m = next(m for m in plan.models if f"router-{m.name}" == u.name)
                    urls = [f"{e.url}/health" for e in m.engines]
                    # "-": a wait that gives up does not keep the router from starting
                    assert pre == (f"-{wait} {' '.join(urls)}" if urls else None), u.name
                    checked["pre"] += pre is not None
            target = _sections(arts[f"{base}/systemd/sgl-{plan.name}.target"].content)
            assert _one(target["Install"], "WantedBy") == "multi-user.target default.target"
            assert _one(target["Unit"], "Wants") == " ".join(systemd_name(plan, u) for u in units)
    assert checked["engine"] >= 40 and checked["router"] >= 20, checked
    assert checked["post"] >= 30 and checked["pre"] >= 20, checked


def test_a_router_waits_for_its_engines_on_every_host():
    """ssh-4hosts: big's router (node-b) waits for its engine's rank 0 only (node-b), chat's for
    both of its engines, and only routers and rank-0 engines wait at all."""
    plan = compile_plan(EXAMPLES / "ssh-4hosts.yaml")
    arts = render(plan, ("bash", "systemd"))
    pre = {}
    for node in plan.nodes:
        for u in units_by_node(plan)[node.index]:
            s = _sections(arts[f"hosts/{node.host}/systemd/{systemd_name(plan, u)}"].content)
            pre[u.name] = _one(s["Service"], "ExecStartPre")
    wait = "-/var/lib/sgl-gen/ssh-4hosts/bin/sgl-gen-await.sh 1800"
    assert pre == {
        "engine-chat-prefill-0": None, "engine-chat-decode-0": None,
        "router-chat": f"{wait} http://10.207.6.11:31000/health http://10.207.6.11:31001/health",
        "engine-big-regular-0-r0": None, "engine-big-regular-0-r1": None,
        "router-big": f"{wait} http://10.207.6.12:31000/health",
        "engine-judge-regular-0": None, "engine-judge-regular-1": None,
        "router-judge": f"{wait} http://10.207.6.14:31000/health http://10.207.6.14:31001/health"}


# ---------------------------------------------------------------------------------------------
# the unit scripts under systemd


FAKE_PYTHON = """#!/bin/sh
echo "ran: $*"
echo "nofile: $(ulimit -Sn) $(ulimit -Hn)"
echo "memlock: $(ulimit -Sl) $(ulimit -Hl)"
"""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """basic.yaml rendered with a fake interpreter that prints what it was run with."""
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    plan = plan_of(EXAMPLES / "basic.yaml", f"runtime.python={fake}")
    write_tree(tmp_path / "out", render(plan, ("bash", "systemd")))
    return tmp_path / "out" / "hosts" / "node0"


def _run_unit(scripts: Path, root: Path, unit: str, supervisor: str | None,
              nofile: tuple[int, int], memlock: tuple[int, int]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SGLGEN_SUPERVISOR"}
    env["SGLGEN_ROOT"] = str(root)
    if supervisor:
        env["SGLGEN_SUPERVISOR"] = supervisor

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, memlock)

    return subprocess.run(["bash", str(scripts / "bin" / f"{unit}.sh")], env=env,
                          capture_output=True, text=True, preexec_fn=limits, timeout=30)


def test_under_systemd_the_script_writes_to_the_journal_not_a_log(scripts, tmp_path):
    root = tmp_path / "root"
    unit = "engine-default-regular-0"
    r = _run_unit(scripts, root, unit, "systemd", (256, 4096), (65536, 65536))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ran: -m sglang.launch_server --model-path ")
    assert not (root / "logs" / f"{unit}.log").exists()
    # the bash launcher (no SGLGEN_SUPERVISOR, or any other value): the log, as before
    for supervisor in (None, "bash"):
        r = _run_unit(scripts, root, unit, supervisor, (256, 4096), (65536, 65536))
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
        assert "ran: -m sglang.launch_server" in (root / "logs" / f"{unit}.log").read_text()
        assert (root / "logs" / f"{unit}.log").stat().st_mode & 0o777 == 0o600
        (root / "logs" / f"{unit}.log").unlink()


def test_the_script_raises_its_soft_limits_to_the_hard_ones(scripts, tmp_path):
    root = tmp_path / "root"
    nofile_hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    memlock_hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    assert memlock_hard > 4096
    shown = "unlimited" if memlock_hard == resource.RLIM_INFINITY else str(memlock_hard // 1024)
    r = _run_unit(scripts, root, "engine-default-regular-0", "systemd", (256, nofile_hard),
                  (4096, memlock_hard))
    assert r.returncode == 0, r.stderr
    assert f"nofile: {nofile_hard} {nofile_hard}\nmemlock: {shown} {shown}\n" in r.stdout
    # a router leaves locked memory alone
    r = _run_unit(scripts, root, "router-default", "systemd", (256, nofile_hard),
                  (4096, memlock_hard))
    assert r.returncode == 0, r.stderr
    assert f"nofile: {nofile_hard} {nofile_hard}\nmemlock: 4 {shown}\n" in r.stdout


def _can_raise_hard_limits() -> bool:
    probe = ("import resource as r; r.setrlimit(r.RLIMIT_MEMLOCK, (r.RLIM_INFINITY, "
             "r.RLIM_INFINITY)); n = int(open('/proc/sys/fs/nr_open').read()); "
             "r.setrlimit(r.RLIMIT_NOFILE, (n, n))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_open_files_stop_at_1048576_and_locked_memory_goes_unlimited(scripts, tmp_path):
    if not _can_raise_hard_limits():
        pytest.skip("raising a hard limit needs CAP_SYS_RESOURCE, which this process lacks")
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    inf = resource.RLIM_INFINITY
    r = _run_unit(scripts, tmp_path / "root", "engine-default-regular-0", "systemd",
                  (256, nr_open), (4096, inf))
    assert r.returncode == 0, r.stderr
    assert (f"nofile: {min(nr_open, 1048576)} {nr_open}\nmemlock: unlimited unlimited\n"
            in r.stdout)


# ---------------------------------------------------------------------------------------------
# bin/sgl-gen-await.sh against live sockets


@pytest.fixture(scope="module")
def await_sh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("await")
    write_tree(out, render(compile_plan(EXAMPLES / "basic.yaml"), ("bash", "systemd")))
    return out / "hosts" / "node0" / "bin" / "sgl-gen-await.sh"


class _Handler(http.server.BaseHTTPRequestHandler):
    ready_after: float = 0.0  # /later answers 503 until then (time.monotonic())
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(f"{self.command} {self.path} {self.request_version} "
                         f"Host={self.headers.get('Host')}")
        ok = self.path == "/ok" or (self.path == "/later" and time.monotonic() >= self.ready_after)
        body = b"ok\n" if ok else b"busy\n"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused
    return port


def _await(script: Path, *args: str, mainpid: int | None = None,
           limit: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if k != "MAINPID"}
    if mainpid is not None:
        env["MAINPID"] = str(mainpid)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                       timeout=limit, env=env)
    return r, time.monotonic() - t0


def test_await_returns_at_once_when_every_url_answers_200(await_sh, server):
    _Handler.seen.clear()
    r, took = _await(await_sh, "10", f"{server}/ok",
                     f"{server.replace('127.0.0.1', 'localhost')}/ok")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert took < 2
    port = server.rsplit(":", 1)[1]
    assert sorted(_Handler.seen) == [f"GET /ok HTTP/1.0 Host=127.0.0.1:{port}",
                                     f"GET /ok HTTP/1.0 Host=localhost:{port}"]


def test_await_waits_for_a_url_that_turns_200(await_sh, server):
    _Handler.ready_after = time.monotonic() + 2.5
    r, took = _await(await_sh, "20", f"{server}/ok", f"{server}/later")
    assert (r.returncode, r.stderr) == (0, "")
    assert 2.5 <= took < 6  # tried once a second, not at the end of some long timeout


def test_await_times_out_naming_each_url_and_its_answer(await_sh, server):
    """503, a closed port and a peer that accepts and never answers: one line, each URL with
    what it answered, in argv order; a URL that answered 200 is not named; no hang."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    closed = _closed_port()
    quiet = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
    try:
        r, took = _await(await_sh, "2", f"{server}/busy", f"{server}/ok",
                         f"http://127.0.0.1:{closed}/health", quiet)
    finally:
        silent.close()
        for c in held:
            c.close()
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"sgl-gen-await.sh: not ready after 2 s: {server}/busy (HTTP 503), "
                        f"http://127.0.0.1:{closed}/health (no connection), "
                        f"{quiet} (no answer within 5 s)\n")
    assert took < 9  # the silent peer costs one try (5 s), not forever


def test_await_stops_a_connect_that_never_completes(await_sh):
    """A listener whose accept queue is full drops new SYNs: connect() would retry for minutes.
    The try is stopped after 6 s and reported."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.3)
    try:
        r, took = _await(await_sh, "1", f"http://127.0.0.1:{port}/health")
    finally:
        for c in [*fillers, full]:
            c.close()
    assert r.returncode == 1
    assert r.stderr == (f"sgl-gen-await.sh: not ready after 1 s: http://127.0.0.1:{port}/health "
                        "(no connection within 6 s)\n")
    assert took < 10


def test_await_speaks_ipv6(await_sh):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        srv = _V6Server(("::1", 0), _Handler)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _Handler.seen.clear()
        port = srv.server_address[1]
        r, _ = _await(await_sh, "5", f"http://[::1]:{port}/ok")
        assert (r.returncode, r.stderr) == (0, "")
        assert _Handler.seen == [f"GET /ok HTTP/1.0 Host=[::1]:{port}"]
        r, _ = _await(await_sh, "0", f"http://[::1]:{port}/busy")
        assert (r.returncode, r.stderr) == (
            1, f"sgl-gen-await.sh: not ready after 0 s: http://[::1]:{port}/busy (HTTP 503)\n")
    finally:
        srv.shutdown()


def test_await_gives_up_when_the_units_main_process_exits(await_sh, server):
    """As ExecStartPost= systemd passes $MAINPID and waits for the wait to end even when the
    main process is gone: it must end then, not after its timeout."""
    main = subprocess.Popen(["sleep", "1.5"])
    # reaped as soon as it exits, as systemd reaps a unit's main process (a zombie is still in
    # /proc)
    threading.Thread(target=main.wait, daemon=True).start()
    try:
        r, took = _await(await_sh, "60", f"{server}/busy", mainpid=main.pid)
    finally:
        main.kill()
        main.wait()
    assert r.returncode == 1
    assert r.stderr == (f"sgl-gen-await.sh: the main process ({main.pid}) exited before "
                        f"{server}/busy answered 200\n")
    assert took < 6


@pytest.mark.parametrize("args", [
    (), ("5",), ("x", "http://a/"), ("-1", "http://a/"), ("5", "https://a/"),
    ("5", "http://a b/"), ("5", "http://a:99999/"), ("5", "http://[zz]:1/"), ("5", "a:80"),
])
def test_await_refuses_bad_usage(await_sh, args):
    r, took = _await(await_sh, *args)
    assert r.returncode == 2 and r.stdout == "" and took < 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(("usage: sgl-gen-await.sh",
                                                                     "sgl-gen-await.sh: not an"))


# ---------------------------------------------------------------------------------------------
# real systemd: the units installed by hand, as the rendered README says


SLOW_TOPO = """\
deployment: {name: NAME, hf_checkpoint: /models/m}
cluster:
  gpus_per_node: 2
  hosts:
    - {name: sd0, address: 10.207.8.11, workdir: WORKDIR}
runtime:
  env: {SGLGEN_REHEARSAL_STARTUP_DELAY: 3}
sglang:
  - name: m
    router: {port: ROUTER, prometheus_port: PROMETHEUS}
    server_groups:
      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1, port: ENGINE}
"""


@pytest.fixture(scope="module")
def rootfs() -> Path:
    from tests import systemdhosts

    why = systemdhosts.available()
    if why:  # under SGLGEN_STRICT=1 (CI) a missing tool fails instead of skipping
        missing(f"systemd test hosts: {why}")
    cache = Path(os.environ.get("SGLGEN_ROOTFS_CACHE", REPO / ".cache"))
    path = cache / f"systemd-rootfs-{systemdhosts.rootfs_cache_key()}"
    if not (path / systemdhosts.ROOTFS_MARK).exists():
        systemdhosts.build_rootfs(path)
    return path


def _deployment(tmp_path: Path, name: str, workdir: str, router: int, engine: int) -> Path:
    """A 2-engine rehearsal deployment for host sd0 (10.207.8.11), its hosts/sd0 directory; the
    ports are pinned, so that two of them run side by side (router prometheus: router - 1000)."""
    text = (SLOW_TOPO.replace("NAME", name).replace("WORKDIR", workdir)
            .replace("ROUTER", str(router)).replace("PROMETHEUS", str(router - 1000))
            .replace("ENGINE", str(engine)))
    plan = plan_of(write_topo(tmp_path, text, name=f"{name}.yaml"),
                   f"runtime.python={sys.executable}")
    write_tree(tmp_path / name, render(plan, ("bash", "systemd"), rehearse=True))
    return tmp_path / name / "hosts" / "sd0"


@pytest.mark.slow
def test_units_on_real_systemd_as_root_and_as_a_lingering_user(rootfs, tmp_path):
    """The units installed by hand, as the rendered README says: root's into
    /etc/systemd/system, alice's into ~/.config/systemd/user (lingering). `enable` of the target
    works in both managers (its WantedBy= names multi-user.target and default.target); after a
    reboot every unit is active by itself, each router started only after its engines were
    active, which a rank-0 engine is only once its /health answers 200 (ExecStartPost=); output
    is in the journal under the unit's name, no log file; a SIGKILLed engine is restarted."""
    from tests.systemdhosts import SystemdHosts, python_binds

    system = _deployment(tmp_path, "sysd", "/var/lib/sgl-gen", 30000, 31000)
    user = _deployment(tmp_path, "usrd", "/home/alice/sgl", 30100, 31100)
    units = ["engine-m-regular-0", "engine-m-regular-1", "router-m"]
    with SystemdHosts(1, rootfs=rootfs, binds=python_binds()) as hs:
        h = hs.hosts[0]

        def ssh(login: str, command: str, stdin: bytes | None = None) -> str:
            r = subprocess.run(["ssh", "-F", str(hs.ssh_config), "-o", "BatchMode=yes",
                                "-o", "LogLevel=ERROR", "-l", login, h.address, command],
                               input=stdin, capture_output=True, timeout=120)
            assert r.returncode == 0, (command, r.stdout, r.stderr)
            return r.stdout.decode() + r.stderr.decode()

        def push(login: str, src: Path, dest: str) -> None:
            tar = subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], capture_output=True,
                                 check=True).stdout
            ssh(login, f"mkdir -p {dest} && tar -C {dest} -xf -", stdin=tar)

        def show(login: str, dep: str, unit: str, *props: str) -> list[str]:
            """The properties' values, in the order asked (systemctl prints its own order)."""
            flag = "--user " if login != "root" else ""
            got = dict(line.split("=", 1) for line in ssh(
                login, f"systemctl {flag}show -p {','.join(props)} sgl-{dep}-{unit}.service"
            ).splitlines())
            return [got[p] for p in props]

        push("root", system, "/var/lib/sgl-gen/sysd")
        out = ssh("root", "cp /var/lib/sgl-gen/sysd/systemd/* /etc/systemd/system/ && "
                          "systemctl daemon-reload && systemctl enable sgl-sysd.target")
        assert "multi-user.target.wants/sgl-sysd.target" in out, out
        ssh("root", "loginctl enable-linger alice")
        push("alice", user, "/home/alice/sgl/usrd")
        out = ssh("alice", "mkdir -p ~/.config/systemd/user && "
                           "cp ~/sgl/usrd/systemd/* ~/.config/systemd/user/ && "
                           "systemctl --user daemon-reload && systemctl --user enable "
                           "sgl-usrd.target")
        assert "default.target.wants/sgl-usrd.target" in out, out
        # nothing started by hand: the reboot must bring everything up
        hs.poweroff(h)
        hs.boot(h)
        deadline = time.monotonic() + 90
        for login, dep in (("root", "sysd"), ("alice", "usrd")):
            while [show(login, dep, u, "ActiveState")[0] for u in units] != ["active"] * 3:
                flag = "--user " if login != "root" else ""
                assert time.monotonic() < deadline, (
                    [show(login, dep, u, "ActiveState", "SubState") for u in units],
                    ssh(login, f"journalctl {flag}-b --no-pager -n 40 -u 'sgl-{dep}-*'"))
                time.sleep(0.5)
            healthy = [int(show(login, dep, u, "ActiveEnterTimestampMonotonic")[0])
                       for u in units[:2]]
            (router_start,) = show(login, dep, "router-m", "ExecMainStartTimestampMonotonic")
            assert int(router_start) > max(healthy), (dep, healthy, router_start)
            flag = "--user " if login != "root" else ""
            journal = ssh(login, f"journalctl {flag}-b -o cat -t engine-m-regular-0")
            assert "rehearsal m-regular-0" in journal, journal
            root = "/var/lib/sgl-gen/sysd" if login == "root" else "/home/alice/sgl/usrd"
            assert ssh(login, f"ls -A {root}/logs") == ""
        # alice's units run as alice, root's as root (no User= in either)
        pid = show("alice", "usrd", "engine-m-regular-0", "MainPID")[0]
        assert ssh("root", f"ps -o user= -p {pid}").strip() == "alice"
        pid = show("root", "sysd", "engine-m-regular-0", "MainPID")[0]
        assert ssh("root", f"ps -o user= -p {pid}").strip() == "root"
        ssh("root", f"kill -9 {pid}")
        deadline = time.monotonic() + 30
        while show("root", "sysd", "engine-m-regular-0", "ActiveState", "NRestarts") != [
                "active", "1"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
