"""generator/hostagent.py, the code sgl-gen runs on the hosts, tested here by calling its
subcommands directly (and through ``python -c``, the way deploy runs it): probe of a root with a
manifest, unit states of live, dead and planted pids, wait against a local HTTP server, http GET
and POST, the router's key read from an env file."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from generator import hostagent, routerauth
from generator.deploy.transport import AGENT_SOURCE as _AGENT
from generator.deploy.transport import agent_command as _py_cmd

MANIFEST = ".sgl-gen/manifest.json"


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


def agent(command: str, args: dict[str, Any], **kw: Any) -> subprocess.CompletedProcess[str]:
    """The subcommand run the way deploy runs it on a host (its command line, here)."""
    return subprocess.run(_py_cmd(sys.executable, command, args), shell=True, capture_output=True,
                          text=True, timeout=60, **kw)


# -- the module ----------------------------------------------------------------------------------

def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(hostagent.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, "relative import"
            names.add((node.module or "").split(".")[0])
    assert names, "no imports seen"
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)


def test_deploy_sends_the_module_itself() -> None:
    assert _AGENT == Path(hostagent.__file__).read_text(encoding="utf-8")
    assert routerauth.router_auth is hostagent.router_auth  # one source of truth
    assert routerauth.api_key_env is hostagent.api_key_env
    r = agent("no-such-command", {})
    assert r.returncode == 2 and "usage: hostagent" in r.stderr


def test_main_usage_and_dispatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hostagent.main([]) == 2
    assert hostagent.main(["nope", "{}"]) == 2
    usage = "usage: hostagent {probe|poll|wait|start|http|http-many|states|sd-start|systemctl|journal} JSON"
    assert usage in capsys.readouterr().err
    assert hostagent.main(["states", json.dumps({"root": str(tmp_path), "units": ["a"]})]) == 0
    assert json.loads(capsys.readouterr().out) == {"a": {"state": "stopped", "pid": None,
                                                         "exit": None}}
    r = agent("states", {"root": str(tmp_path), "units": ["a"]})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"a": {"state": "stopped", "pid": None, "exit": None}}
    r = subprocess.run([sys.executable, "-c", _AGENT, "bogus", "{}"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


# -- probe ---------------------------------------------------------------------------------------

def _probe_args(root: Path, **kw: Any) -> dict[str, Any]:
    args = {"root": str(root), "modules": ["json", "no_such_module_xyz"], "gpus": False,
            "manifest": MANIFEST, "want": [], "max_files": 100, "units": [], "secrets": None}
    args.update(kw)
    return args


def test_probe_of_a_root_with_a_manifest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".sgl-gen").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "logs").mkdir()
    (root / "units").mkdir()
    (root / "units" / "a.sh").write_bytes(b"echo a\n")
    (root / "units" / "a.sh").chmod(0o750)
    (root / "old.txt").write_bytes(b"old\n")  # in the manifest: sgl-gen's, hashed
    (root / "theirs.txt").write_bytes(b"x")  # foreign: listed, never read
    (root / "logs" / "a.log").write_text("log\n")  # run/ and logs/ are sgl-gen's: not listed
    (root / "link").symlink_to("/etc/passwd")
    (root / "dirlink").symlink_to(tmp_path)
    (root / MANIFEST).write_text(json.dumps({"files": ["old.txt"]}))
    secrets = tmp_path / "secrets.env"
    secrets.write_text("K=v\n")
    secrets.chmod(0o600)
    out = hostagent.probe(_probe_args(root, want=["units/a.sh", "units/b.sh"], units=["a"],
                                      secrets=str(secrets)))
    assert out["python"] == sys.version.split()[0]
    assert out["modules"] == {"json": True, "no_such_module_xyz": False}
    assert out["gpus"] is None and out["disk_free"] > 0
    assert isinstance(out["listen"], list)
    assert out["manifest"] == {"files": ["old.txt"]}
    assert out["files"] == {
        "units/a.sh": [hashlib.sha256(b"echo a\n").hexdigest(), 0o750],
        "old.txt": [hashlib.sha256(b"old\n").hexdigest(), 0o644 & ~_umask()],
        "theirs.txt": ["", 0o644 & ~_umask()],
        "link": ["", 0o777],
    }
    assert sorted(out["links"]) == ["dirlink", "link"]
    assert out["more"] == 0
    assert out["secrets"] == {"exists": True, "regular": True, "mode": 0o600, "readable": True}
    assert out["units"] == {"a": {"state": "stopped", "pid": None, "exit": None}}
    # the same over the command line deploy sends
    r = agent("probe", _probe_args(root, want=["units/a.sh", "units/b.sh"], units=["a"],
                                   secrets=str(secrets)))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["files"] == out["files"] and got["units"] == out["units"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_probe_without_a_manifest_lists_run_and_logs_and_caps_foreign_files(tmp_path: Path
                                                                             ) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "run" / "x.pid").write_text("1\n")
    for i in range(5):
        (root / f"f{i}").write_text("x")
    out = hostagent.probe(_probe_args(root, max_files=3,
                                      secrets=str(tmp_path / "missing.env")))
    assert out["manifest"] is None
    assert len(out["files"]) == 3 and out["more"] == 3  # 6 foreign files, 3 listed
    assert all(h == "" for h, _ in out["files"].values())  # foreign files are never read
    assert out["secrets"]["exists"] is False and out["secrets"]["error"]
    assert out["units"] == {"x": {"state": "dead", "pid": 1, "exit": None}}  # never pid 1


def test_probe_of_a_root_not_yet_made(tmp_path: Path) -> None:
    out = hostagent.probe(_probe_args(tmp_path / "a" / "b"))
    assert out["files"] == {} and out["disk_free"] > 0 and out["units"] == {}


# -- unit states ---------------------------------------------------------------------------------

@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def _spawn(procs: list[subprocess.Popen[bytes]], session: bool) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sleep", "60"], start_new_session=session)
    procs.append(p)
    return p


def test_state_of_live_dead_and_planted_pids(tmp_path: Path,
                                             procs: list[subprocess.Popen[bytes]]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    leader = _spawn(procs, session=True)
    other = _spawn(procs, session=False)  # not a session leader: never a unit
    pidfile = run / "u.pid"

    def state() -> dict[str, Any]:
        return hostagent.unit_states(str(tmp_path), ["u"])["u"]

    assert state() == {"state": "stopped", "pid": None, "exit": None}
    pidfile.write_text(f"{leader.pid} {start_time(leader.pid)}\n")
    assert state() == {"state": "running", "pid": leader.pid, "exit": None}
    pidfile.write_text(f"{leader.pid}\n")  # an older sgl-gen's pidfile, written after it started
    assert state()["state"] == "running"
    for planted in (f"{other.pid}", f"{other.pid} {start_time(other.pid)}",
                    f"{leader.pid} {start_time(leader.pid) + 1}", "1", "0", "1 1", "x", "",
                    "1 2 3", "\u0661\u0662"):
        pidfile.write_text(planted + "\n")
        assert state()["state"] == "dead", planted
    (run / "u.exit").write_text("3\n")
    leader.kill()
    leader.wait()
    pidfile.write_text(f"{leader.pid} 12345\n")
    assert state() == {"state": "dead", "pid": leader.pid, "exit": 3}
    # units with a pidfile are reported though not asked for
    (run / "extra.pid").write_text("garbage")
    assert set(hostagent.unit_states(str(tmp_path), ["u"])) == {"u", "extra"}


def test_a_dead_leader_with_its_group_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # a session leader that leaves a child in its group and exits
    r = subprocess.Popen(["setsid", "sh", "-c", "sleep 60 >/dev/null & echo $$ $!; exit 0"],
                         stdout=subprocess.PIPE, text=True)
    out, _ = r.communicate(timeout=30)
    r.wait()
    leader, child = (int(x) for x in out.split())
    try:
        # its start time: the child's (it started later, in the same clock tick or after)
        began = start_time(child)
        (run / "u.pid").write_text(f"{leader} {began}\n")
        st = hostagent.unit_state(str(tmp_path), "u")
        assert st["state"] == "dead" and st["pid"] == leader
        assert st.get("left") == 1
    finally:
        os.kill(child, 9)


def test_log_tail(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "u.log").write_bytes(b"".join(b"line %d\n" % i for i in range(100))
                                              + b"\xff\n")
    assert hostagent.log_tail(str(tmp_path), "u", 3) == ["line 98", "line 99", "\ufffd"]
    assert hostagent.log_tail(str(tmp_path), "v", 3) is None


# -- a local HTTP server -------------------------------------------------------------------------

class Server:
    """127.0.0.1: answers from ``replies`` (status, body) in turn, the last one forever; records
    each request's method, path, headers and body."""

    def __init__(self, replies: list[tuple[int, Any]]) -> None:
        self.replies = list(replies)
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                server.seen.append({"method": self.command, "path": self.path,
                                    "headers": dict(self.headers),
                                    "body": self.rfile.read(n) if n else b""})
                status, body = server.replies[0] if len(server.replies) == 1 \
                    else server.replies.pop(0)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Any]:
    made: list[Server] = []

    def make(*replies: tuple[int, Any]) -> Server:
        made.append(Server(list(replies)))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _wait_args(root: Path, **kw: Any) -> dict[str, Any]:
    args = {"root": str(root), "secrets": None, "auth": {}, "checks": {}, "expected": {},
            "watch": [], "timeout": 20, "abort": str(root / "abort"), "lines": 5, "finish": ""}
    args.update(kw)
    return args


def test_wait_until_ready(tmp_path: Path, server: Any) -> None:
    s = server((503, b"starting"), (503, b"starting"), (200, {"ok": True}))
    events: list[dict[str, Any]] = []
    hostagent.wait(_wait_args(tmp_path, checks={"e": s.url + "/health"}), events.append)
    assert events[-1] == {"ready": "e"}
    assert [x["path"] for x in s.seen] == ["/health"] * 3


def test_wait_for_a_router_s_workers(tmp_path: Path, server: Any) -> None:
    workers = ["http://a:1", "http://b:2"]
    s = server((200, {"workers": [{"url": workers[0], "is_healthy": True}]}),
               (200, {"workers": [{"url": w, "is_healthy": w != workers[1]} for w in workers]}),
               (200, {"workers": [{"url": w, "is_healthy": True} for w in workers]}))
    events: list[dict[str, Any]] = []
    hostagent.wait(_wait_args(tmp_path, checks={"r": s.url + "/workers"},
                              expected={"r": workers}), events.append)
    assert events[-1] == {"ready": "r"} and len(s.seen) == 3


def test_wait_times_out_with_the_last_answer(tmp_path: Path, server: Any) -> None:
    s = server((503, b"not yet"))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "e.log").write_text("one\ntwo\n")
    events: list[dict[str, Any]] = []
    hostagent.wait(_wait_args(tmp_path, checks={"e": s.url + "/health"}, timeout=1.5),
                   events.append)
    assert json.loads(json.dumps(events[-1])) == {
        "timeout": {"e": [s.url + "/health", [503, ""]]}, "tail": ["one", "two"]}
    assert {"tick": ["e"]} in events


def test_wait_stops_at_a_dead_unit_and_on_abort(tmp_path: Path, server: Any) -> None:
    s = server((503, b""))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "e.exit").write_text("7\n")
    (tmp_path / "run" / "e.pid").write_text("999999999 1\n")
    (tmp_path / "run" / ".deploy-t.watch").write_text("")
    events: list[dict[str, Any]] = []
    hostagent.wait(_wait_args(tmp_path, checks={"e": s.url}, watch=["e"],
                              finish=".deploy-t."), events.append)
    assert events == [{"dead": "e", "state": "dead", "exit": 7, "active": None, "tail": None}]
    assert not (tmp_path / "run" / ".deploy-t.watch").exists()  # finish: the token's files go
    (tmp_path / "abort").write_text("")
    events.clear()
    started = time.monotonic()
    hostagent.wait(_wait_args(tmp_path, checks={"e": s.url}), events.append)
    assert events == [] and time.monotonic() - started < 5


def test_wait_streams_json_lines_over_the_command_line(tmp_path: Path, server: Any) -> None:
    s = server((503, b""), (200, b"ok"))
    r = agent("wait", _wait_args(tmp_path, checks={"e": s.url}))
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()][-1] == {"ready": "e"}


def test_poll(tmp_path: Path, server: Any) -> None:
    s = server((200, {"workers": []}))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "e.log").write_text("a\nb\nc\n")
    out = hostagent.poll({"root": str(tmp_path), "units": ["e"], "secrets": None, "auth": {},
                          "urls": {"r/workers": s.url + "/workers", "e": s.url + "/health",
                                   "gone": "http://127.0.0.1:1/"},
                          "tails": ["e"], "lines": 2})
    assert out["units"] == {"e": {"state": "stopped", "pid": None, "exit": None}}
    assert out["http"]["r/workers"] == [200, {"workers": []}]
    assert out["http"]["e"] == [200, '{"workers": []}']  # only /workers answers are parsed
    assert out["http"]["gone"][0] == 0 and out["http"]["gone"][1]
    assert out["tails"] == {"e": ["b", "c"]}


# -- http and the router's key -------------------------------------------------------------------

def test_http_get_and_post(tmp_path: Path, server: Any) -> None:
    s = server((200, {"workers": []}))
    assert hostagent.http({"method": "GET", "url": s.url + "/workers", "body": None}) == \
        [200, {"workers": []}]
    assert "Authorization" not in s.seen[-1]["headers"] and s.seen[-1]["body"] == b""
    got = hostagent.http({"method": "POST", "url": s.url + "/workers",
                          "body": {"url": "http://e:1"}, "worker_key": True, "auth": None})
    assert got == [200, {"workers": []}]
    assert json.loads(s.seen[-1]["body"]) == {"url": "http://e:1"}  # no key: none added
    bad = server((401, b"Unauthorized"))
    assert hostagent.http({"method": "DELETE", "url": bad.url + "/workers/x", "body": None}) \
        == [401, "Unauthorized"]
    status, text = hostagent.http({"method": "GET", "url": "http://127.0.0.1:1/", "body": None})
    assert status == 0 and text


def test_http_with_the_router_s_key(tmp_path: Path, server: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    s = server((200, {"ok": True}))
    env = tmp_path / "secrets.env"
    env.write_text("# the router's key\nexport ROUTER_KEY='s3cret word'\n")
    monkeypatch.setenv("ROUTER_KEY", "from-the-environment")  # the file wins, as in the units
    args = {"method": "POST", "url": s.url + "/workers", "body": {"url": "http://e:1"},
            "worker_key": True, "auth": "ROUTER_KEY", "secrets": str(env)}
    assert hostagent.http(args) == [200, {"ok": True}]
    assert s.seen[-1]["headers"]["Authorization"] == "Bearer s3cret word"
    assert json.loads(s.seen[-1]["body"]) == {"url": "http://e:1", "api_key": "s3cret word"}
    r = agent("http", args)  # the key is read on the host: never in the command line
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [200, {"ok": True}]
    assert "s3cret" not in _py_cmd(sys.executable, "http", args)


def test_http_many_calls_in_order_with_the_router_s_key(tmp_path: Path, server: Any) -> None:
    s = server((200, {"ok": 1}), (404, b"no such worker"), (200, {"ok": 3}))
    env = tmp_path / "secrets.env"
    env.write_text("ROUTER_KEY=k3y\n")
    calls = [{"method": "DELETE", "url": s.url + "/workers/a", "body": None, "worker_key": False},
             {"method": "DELETE", "url": s.url + "/workers/b", "body": None, "worker_key": False},
             {"method": "POST", "url": s.url + "/workers", "body": {"url": "http://e:1"},
              "worker_key": True}]
    args = {"calls": calls, "auth": "ROUTER_KEY", "secrets": str(env)}
    assert hostagent.http_many(args) == [[200, {"ok": 1}], [404, "no such worker"],
                                         [200, {"ok": 3}]]
    assert [x["path"] for x in s.seen[-3:]] == ["/workers/a", "/workers/b", "/workers"]
    assert all(x["headers"]["Authorization"] == "Bearer k3y" for x in s.seen[-3:])
    assert json.loads(s.seen[-1]["body"]) == {"url": "http://e:1", "api_key": "k3y"}


def test_router_auth_from_an_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "secrets.env"
    env.write_text("OTHER=abc\nKEY=\"$OTHER-def\"\n")
    monkeypatch.delenv("KEY", raising=False)
    assert hostagent.router_auth("KEY", str(env)) == {"Authorization": "Bearer abc-def"}
    assert hostagent.router_auth("KEY", None) == {}
    monkeypatch.setenv("KEY", "env")
    assert hostagent.router_auth("KEY", None) == {"Authorization": "Bearer env"}
    assert hostagent.router_auth("KEY", str(tmp_path / "missing")) == \
        {"Authorization": "Bearer env"}
    env.chmod(0)
    if not os.access(env, os.R_OK):  # unreadable: not sourced (root reads it anyway)
        assert hostagent.router_auth("KEY", str(env)) == {"Authorization": "Bearer env"}
    assert hostagent.router_auth(None, str(env)) == {}
    assert hostagent.router_auth("BAD-NAME", str(env)) == {}
    assert hostagent.api_key_env(["--api-key", {"env": "KEY"}]) == "KEY"
    assert hostagent.api_key_env(["--api-key", {"env": "1BAD"}]) is None
    assert hostagent.api_key_env(["--host", "x"]) is None and hostagent.api_key_env(None) is None


# -- start ---------------------------------------------------------------------------------------

def test_start_records_the_units_exit_status(tmp_path: Path) -> None:
    root = tmp_path
    (root / "sgl-gen-host.sh").write_text(
        'set -e; u="$2"; echo "starting $u in $SGLGEN_ROOT"\n'
        '(sleep 0.3; exit 3) & echo "$! 0" > "$SGLGEN_ROOT/run/$u.pid"\n')
    (root / "run").mkdir()
    (root / "run" / "e.exit").write_text("old\n")
    watch, out = root / "run" / ".deploy-t.watch", root / "run" / ".deploy-t.out"
    watch.write_text("")
    r = agent("start", {"root": str(root), "units": ["e"], "timeout": 30, "watch": str(watch),
                        "out": str(out), "manifest": '{"files": []}\n',
                        "manifest_path": MANIFEST})
    assert r.returncode == 0, r.stderr
    assert out.read_text() == f"starting e in {root}\n@@rc 0\n"
    assert (root / MANIFEST).read_text() == '{"files": []}\n'
    assert (root / "run" / "e.exit").read_text() == "3\n"  # reaped as the subreaper
    assert not watch.exists()


def test_systemd_states_in_the_launchers_words() -> None:
    def st(**p: str) -> dict:
        return hostagent.sd_state({"LoadState": "loaded", **p})
    assert st(ActiveState="active", SubState="running", MainPID="42", NRestarts="1",
              ExecMainCode="0")["state"] == "running"
    loading = st(ActiveState="activating", SubState="start-post", MainPID="42")
    assert (loading["state"], loading["pid"]) == ("running", 42)  # loading: its process runs
    crashed = st(ActiveState="activating", SubState="auto-restart", MainPID="0",
                 ExecMainCode="2", ExecMainStatus="9", NRestarts="3")
    assert (crashed["state"], crashed["exit"], crashed["restarts"], crashed["pid"]) == (
        "dead", -9, 3, None)
    assert crashed["active"] == "activating (auto-restart)"
    failed = st(ActiveState="failed", SubState="failed", ExecMainCode="1", ExecMainStatus="2")
    assert (failed["state"], failed["exit"]) == ("dead", 2)
    assert st(ActiveState="inactive", SubState="dead")["state"] == "stopped"
    assert hostagent.sd_state({"LoadState": "not-found", "ActiveState": "inactive"})["state"] \
        == "stopped"
    assert hostagent.sd_state({})["state"] == "stopped"  # systemctl answered nothing


def test_a_watch_counts_a_systemd_restart_as_an_exit_and_waits_for_a_queued_start() -> None:
    running = {"state": "running", "restarts": 2, "invocation": "b"}
    assert not hostagent.watch_dead(running, {"restarts": 2, "before": "a"})
    assert hostagent.watch_dead(dict(running, restarts=3), {"restarts": 2, "before": "a"})
    assert not hostagent.watch_dead(running, None)  # bash: no baseline
    queued = {"state": "stopped", "restarts": 0, "invocation": "a"}  # job not dispatched yet
    assert not hostagent.watch_dead(queued, {"restarts": 0, "before": "a"})
    assert hostagent.watch_dead(dict(queued, invocation="b"), {"restarts": 0, "before": "a"})
    assert hostagent.watch_dead({"state": "dead"}, {"restarts": 0, "before": "a"})
    assert hostagent.watch_dead({"state": "stopped"}, None)  # bash: stopped is gone


def test_unit_file_names_are_plain_names() -> None:
    ok = ["sgl-d-engine-x-0.service", "sgl-d.target"]
    bad = ["../../etc/passwd", "/tmp/x.service", "sgl-d/../x.service", "ssh.service",
           "sgl-.service", "sgl-d.service\n", "sgl-d.socket"]
    assert all(hostagent.UNIT_FILE.fullmatch(n) for n in ok)
    assert not any(hostagent.UNIT_FILE.fullmatch(n) for n in bad)
